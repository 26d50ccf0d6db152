//! The pure step from per-record statuses to the partial batch response.

use aws_lambda_events::event::sqs::SqsBatchResponse;

use super::{MessageId, RecordStatus};

/// Builds the response that lists exactly the records to retry. Acknowledged records are
/// absent, so Lambda deletes them; ids are [`MessageId`]s, so none is empty.
pub fn batch_response<'a>(
    statuses: impl IntoIterator<Item = (&'a MessageId, RecordStatus)>,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for (id, status) in statuses {
        if status.is_failure() {
            response.add_failure(id.as_str());
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> MessageId {
        MessageId::parse(Some(s)).unwrap()
    }

    #[test]
    fn lists_only_records_that_must_come_back() {
        let ids: Vec<MessageId> = RecordStatus::ALL.iter().map(|s| id(s.as_str())).collect();
        let response = batch_response(ids.iter().zip(RecordStatus::ALL));
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(
            failed,
            [
                "retried",
                "panicked",
                "park_failed",
                "not_started",
                "skipped"
            ]
        );
    }

    #[test]
    fn all_acknowledged_gives_an_empty_failure_list() {
        let ids = [id("a"), id("b")];
        let response = batch_response([
            (&ids[0], RecordStatus::Processed),
            (&ids[1], RecordStatus::Duplicate),
        ]);
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            serde_json::json!({ "batchItemFailures": [] })
        );
    }

    #[test]
    fn empty_or_blank_message_ids_are_not_ids() {
        assert_eq!(MessageId::parse(None), None);
        assert_eq!(MessageId::parse(Some("")), None);
        assert_eq!(MessageId::parse(Some("  ")), None);
    }
}

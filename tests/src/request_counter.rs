use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;

/// Counts the HTTP requests that AWS clients really send, per service and operation (retries
/// included), so request budgets are measured rather than assumed.
///
/// It counts the services whose protocol names the operation in the `x-amz-target` header
/// (DynamoDB's `DynamoDB_20120810.PutItem`, SQS's `AmazonSQS.SendMessage`). Clients built by
/// one counter share its counts; give each part of a system its own counter to count it apart.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    /// Requests by (service, operation).
    counts: Arc<Mutex<BTreeMap<(String, String), usize>>>,
}

impl RequestCounter {
    /// The service name of DynamoDB's requests, as in [`by_service`](Self::by_service).
    pub const DYNAMODB: &'static str = "dynamodb";
    /// The service name of SQS's requests, as in [`by_service`](Self::by_service).
    pub const SQS: &'static str = "sqs";

    /// A DynamoDB client on `config` whose every request is counted here.
    pub fn dynamodb_client(&self, config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::config::Builder::from(config)
            .interceptor(self.clone())
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// An SQS client on `config` whose every request is counted here.
    pub fn sqs_client(&self, config: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::config::Builder::from(config)
            .interceptor(self.clone())
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }

    /// Requests sent so far, by operation name: DynamoDB's as they are (`PutItem`, `GetItem`,
    /// ...), every other service's prefixed with it (`sqs:SendMessage`), so a counter of
    /// DynamoDB clients reads as plain operation names and nothing of another service hides
    /// among them.
    pub fn snapshot(&self) -> BTreeMap<String, usize> {
        self.counts()
            .into_iter()
            .map(|((service, operation), n)| {
                if service == Self::DYNAMODB {
                    (operation, n)
                } else {
                    (format!("{service}:{operation}"), n)
                }
            })
            .collect()
    }

    /// Requests sent so far to one service (`RequestCounter::SQS`, ...), by operation name.
    pub fn by_service(&self, service: &str) -> BTreeMap<String, usize> {
        self.counts()
            .into_iter()
            .filter(|((s, _), _)| s == service)
            .map(|((_, operation), n)| (operation, n))
            .collect()
    }

    /// Requests sent so far, by `service:operation` (`dynamodb:PutItem`, `sqs:SendMessage`).
    pub fn qualified_snapshot(&self) -> BTreeMap<String, usize> {
        self.counts()
            .into_iter()
            .map(|((service, operation), n)| (format!("{service}:{operation}"), n))
            .collect()
    }

    /// Forgets the requests counted so far.
    pub fn reset(&self) {
        self.counts.lock().expect("counter lock").clear();
    }

    fn counts(&self) -> BTreeMap<(String, String), usize> {
        self.counts.lock().expect("counter lock").clone()
    }
}

/// The service and operation an `x-amz-target` header names: `DynamoDB_20120810.PutItem` is
/// (`dynamodb`, `PutItem`), `AmazonSQS.SendMessage` is (`sqs`, `SendMessage`). Other targets
/// keep their prefix, lower-cased; a request without one is (`unknown`, `unknown`).
fn service_and_operation(target: Option<&str>) -> (String, String) {
    let Some((prefix, operation)) = target.and_then(|t| t.rsplit_once('.')) else {
        return ("unknown".into(), "unknown".into());
    };
    let service = if prefix.starts_with("DynamoDB_") {
        RequestCounter::DYNAMODB.to_owned()
    } else if prefix == "AmazonSQS" {
        RequestCounter::SQS.to_owned()
    } else {
        prefix.to_ascii_lowercase()
    };
    (service, operation.to_owned())
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Runs once per attempt, so retries are counted too.
        let key = service_and_operation(context.request().headers().get("x-amz-target"));
        *self
            .counts
            .lock()
            .expect("counter lock")
            .entry(key)
            .or_default() += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_their_service_and_operation() {
        assert_eq!(
            service_and_operation(Some("DynamoDB_20120810.PutItem")),
            pair("dynamodb", "PutItem")
        );
        assert_eq!(
            service_and_operation(Some("AmazonSQS.ChangeMessageVisibility")),
            pair("sqs", "ChangeMessageVisibility")
        );
        assert_eq!(service_and_operation(None), pair("unknown", "unknown"));
    }

    #[test]
    fn dynamodb_operations_read_plain_and_others_qualified() {
        let counter = RequestCounter::default();
        {
            let mut counts = counter.counts.lock().unwrap();
            counts.insert(pair("dynamodb", "PutItem"), 2);
            counts.insert(pair("sqs", "SendMessage"), 1);
        }
        let plain: Vec<_> = counter.snapshot().into_iter().collect();
        assert_eq!(
            plain,
            [("PutItem".to_owned(), 2), ("sqs:SendMessage".to_owned(), 1)]
        );
        assert_eq!(
            counter
                .by_service(RequestCounter::SQS)
                .into_iter()
                .collect::<Vec<_>>(),
            [("SendMessage".to_owned(), 1)]
        );
        assert_eq!(
            counter.qualified_snapshot().keys().collect::<Vec<_>>(),
            ["dynamodb:PutItem", "sqs:SendMessage"]
        );
    }

    fn pair(s: &str, o: &str) -> (String, String) {
        (s.to_owned(), o.to_owned())
    }
}

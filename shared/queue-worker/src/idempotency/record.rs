//! The stored form of a claim, and the decision taken when a claim meets an existing record.
//!
//! Both stores use this model, so they cannot disagree about what blocks a claim or what a
//! conflict means.

use std::time::SystemTime;

pub(crate) use crate::dynamo::{from_millis, millis};

use super::{ClaimRequest, Decision, FencingToken, PayloadHash};

/// Lifecycle state of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    InProgress,
    Completed,
}

impl Status {
    pub(crate) const IN_PROGRESS: &'static str = "IN_PROGRESS";
    pub(crate) const COMPLETED: &'static str = "COMPLETED";

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => Self::IN_PROGRESS,
            Self::Completed => Self::COMPLETED,
        }
    }

    pub(crate) fn parse(value: &str) -> Option<Self> {
        match value {
            Self::IN_PROGRESS => Some(Self::InProgress),
            Self::COMPLETED => Some(Self::Completed),
            _ => None,
        }
    }
}

/// An idempotency record. Times are stored as integers: the lease in epoch milliseconds, the
/// retention expiry in epoch seconds (the unit DynamoDB TTL requires).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) status: Status,
    pub(crate) payload_hash: PayloadHash,
    pub(crate) token: FencingToken,
    pub(crate) lease_expires_at_ms: u64,
    pub(crate) expires_at_s: u64,
    pub(crate) result: Option<String>,
}

impl Record {
    /// The record a successful claim writes.
    pub(crate) fn in_progress(request: &ClaimRequest) -> Self {
        Self {
            status: Status::InProgress,
            payload_hash: request.payload_hash.clone(),
            token: request.token.clone(),
            lease_expires_at_ms: millis(request.lease_expires_at),
            expires_at_s: seconds_ceil(request.expires_at),
            result: None,
        }
    }

    /// Whether this record prevents a new claim at `now` (epoch milliseconds / seconds).
    pub(crate) fn blocks_claim(&self, now_ms: u64, now_s: u64) -> bool {
        let retained = self.expires_at_s > now_s;
        let leased = self.status == Status::Completed || self.lease_expires_at_ms > now_ms;
        retained && leased
    }

    /// The decision for `request`, which this (blocking) record refused.
    pub(crate) fn conflict(self, request: &ClaimRequest) -> Decision {
        if self.token == request.token && self.status == Status::InProgress {
            // Our own claim: an SDK retry of a claim whose first attempt was written. Whether
            // that attempt replaced an expired record is lost with its response, so the claim
            // counts as a takeover: the worker reads its progress first, which is never wrong.
            return Decision::Proceed(request.granted_over_earlier());
        }
        if self.payload_hash != request.payload_hash {
            return Decision::PayloadMismatch;
        }
        match self.status {
            Status::Completed => Decision::AlreadyCompleted {
                result: self.result.unwrap_or_default(),
            },
            Status::InProgress => Decision::InProgress {
                lease_expires_at: from_millis(self.lease_expires_at_ms),
            },
        }
    }
}

/// Epoch seconds of `time`, rounded up so a retention is never cut short.
pub(crate) fn seconds_ceil(time: SystemTime) -> u64 {
    millis(time).div_ceil(1000)
}

/// Epoch seconds of `time`, rounded down.
pub(crate) fn seconds_floor(time: SystemTime) -> u64 {
    millis(time) / 1000
}

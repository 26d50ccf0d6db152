//! Small helpers for reading and writing DynamoDB items by hand, used by the guard's store and
//! by a domain's own stores.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;

/// A string attribute value.
pub fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

/// A number attribute value.
pub fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Epoch milliseconds of `time` (0 before the epoch), the unit times are stored in.
pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time `ms` epoch milliseconds stand for.
pub fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Typed, checked access to a stored item's attributes. Errors say which attribute is wrong.
pub struct Item<'a>(pub &'a HashMap<String, AttributeValue>);

impl Item<'_> {
    /// A required string attribute.
    pub fn string(&self, name: &str) -> Result<&str, String> {
        self.optional_string(name)?
            .ok_or_else(|| format!("attribute {name} is missing"))
    }

    /// A string attribute that may be absent.
    pub fn optional_string(&self, name: &str) -> Result<Option<&str>, String> {
        match self.0.get(name) {
            None => Ok(None),
            Some(AttributeValue::S(value)) => Ok(Some(value)),
            Some(_) => Err(format!("attribute {name} is not a string")),
        }
    }

    /// A required whole-number attribute.
    pub fn number(&self, name: &str) -> Result<u64, String> {
        self.optional_number(name)?
            .ok_or_else(|| format!("attribute {name} is missing"))
    }

    /// A whole-number attribute that may be absent.
    pub fn optional_number(&self, name: &str) -> Result<Option<u64>, String> {
        match self.0.get(name) {
            None => Ok(None),
            Some(AttributeValue::N(value)) => value
                .parse()
                .map(Some)
                .map_err(|_| format!("attribute {name} is not a whole number")),
            Some(_) => Err(format!("attribute {name} is not a number")),
        }
    }

    /// A required boolean attribute.
    pub fn boolean(&self, name: &str) -> Result<bool, String> {
        match self.0.get(name) {
            Some(AttributeValue::Bool(value)) => Ok(*value),
            None => Err(format!("attribute {name} is missing")),
            Some(_) => Err(format!("attribute {name} is not a boolean")),
        }
    }
}

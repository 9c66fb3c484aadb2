//! Places in a helpdesk's JSON payload, as configured (dotted paths or JSON pointers), and the
//! text found there.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::InboundError;

/// A place in a JSON document: a dotted path (`ticket.messages.0.text`) or a JSON pointer
/// (`/ticket/id`), kept as the pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    /// As configured.
    pub text: String,
    pointer: String,
}

impl FieldPath {
    /// Reads a configured path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let pointer = if text.starts_with('/') {
            text.to_string()
        } else {
            if text.is_empty() || text.split('.').any(str::is_empty) {
                return Err(format!(
                    "{text:?}: empty step; write steps separated by dots, e.g. ticket.id"
                ));
            }
            text.split('.')
                .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
                .collect()
        };
        Ok(Self {
            text: text.to_string(),
            pointer,
        })
    }

    /// The value at this place, if any (null counts as none).
    pub fn get<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        v.pointer(&self.pointer).filter(|v| !v.is_null())
    }
}

/// A scalar as text (ids are often numbers).
pub fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The text at `path` (a number or boolean as text); `None` when absent or null; an error naming
/// `fields.<key>` and the path when it is a list or an object.
pub fn text_at(json: &Value, path: &FieldPath, key: &str) -> Result<Option<String>, InboundError> {
    match path.get(json) {
        None => Ok(None),
        Some(v) => scalar(v).map(Some).ok_or_else(|| {
            InboundError::Unmappable(format!(
                "fields.{key} ({}): expected text, found {}",
                path.text,
                type_name(v)
            ))
        }),
    }
}

/// Non-blank text at a JSON pointer (a number or boolean as text).
pub fn text(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(scalar)
        .filter(|s| !s.trim().is_empty())
}

/// Tags as a JSON list, or as one string that a placeholder wrote, split at `separator`
/// (`None`: at whitespace); blank ones dropped.
pub fn tags(v: Option<&Value>, separator: Option<char>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => {
            let parts: Vec<&str> = match separator {
                Some(c) => s.split(c).collect(),
                None => s.split_whitespace().collect(),
            };
            parts
                .into_iter()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        }
        _ => Vec::new(),
    }
}

/// A delivery id made of what a signature covers (for helpdesks whose delivery header is not
/// signed, or that send none): the ticket and a hash of `parts`, in order.
pub fn hashed_delivery(ticket: &str, parts: &[&[u8]]) -> String {
    let mut digest = Sha256::new();
    for p in parts {
        digest.update(p);
    }
    format!("{ticket}:{}", super::sign::hex(&digest.finalize()[..12]))
}

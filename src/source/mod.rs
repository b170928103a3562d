//! Sources: one file per webhook kind. Each authenticates a raw request on
//! its exact bytes (constant-time) and parses it into normalized events.
//!
//! Invariants: only this module knows providers' header names and payload
//! shapes; `authenticate` runs before anything looks at the body; nothing
//! here does I/O, so the server and `hookd explain` share the same path.
//!
//! Adding a kind: one new file implementing [`Source`], one variant in
//! [`crate::config::SourceKind`], one arm in [`build`].

mod auth;
mod github;

pub use auth::{hmac_sha256_hex, verify_hmac_sha256_hex};
pub use github::GithubSource;

use crate::config::{SourceConfig, SourceKind};
use crate::event::Event;

/// A received request as the sources see it: no web framework types.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `POST`, `GET`, …
    pub method: &'a str,
    /// Header names lower-cased, values as received.
    pub headers: &'a [(String, String)],
    /// The raw query string (without `?`).
    pub query: &'a str,
    /// The exact body bytes.
    pub body: &'a [u8],
    /// The peer is 127.0.0.0/8 or ::1.
    pub from_loopback: bool,
}

impl Request<'_> {
    /// First value of a header, case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request was refused as unauthenticated (HTTP 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A required header is absent.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// The signature or token does not verify.
    #[error("{0} does not match the body and the configured secret")]
    Mismatch(&'static str),
    /// The header is present but not in the expected format.
    #[error("malformed {header} header: {reason}")]
    Malformed {
        /// Which header.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The source has no credentials and the sender is not on loopback.
    #[error("source has no credentials configured; only loopback senders are accepted")]
    NotLoopback,
}

/// Why an authenticated request could not be understood (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A header the kind needs is absent.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// The body is not valid JSON.
    #[error("body is not valid JSON: {0}")]
    Json(String),
    /// The JSON lacks a field the event needs, or has the wrong type.
    #[error("payload field {field}: {reason}")]
    Field {
        /// JSON path of the field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Form-encoded body without a `payload` field.
    #[error("form-encoded body has no payload field")]
    NoFormPayload,
}

/// The meaning of one authenticated delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The provider's event type (`push`, `ping`, …).
    pub event_type: String,
    /// The provider's delivery id, used to drop redeliveries.
    pub delivery_id: Option<String>,
    /// Normalized events (one delivery may carry several).
    pub events: Vec<Event>,
    /// A connectivity check (GitHub's `ping`): answered 200, runs nothing.
    pub is_ping: bool,
}

/// A webhook receiver of one kind, configured with its credentials.
pub trait Source: Send + Sync {
    /// The configured name (`/hooks/{name}`).
    fn name(&self) -> &str;
    /// Which kind it is.
    fn kind(&self) -> SourceKind;
    /// Verifies the request. Sources without credentials accept loopback senders only.
    fn authenticate(&self, req: &Request) -> Result<(), AuthError>;
    /// Parses an authenticated request.
    fn parse(&self, req: &Request) -> Result<Parsed, ParseError>;
    /// Headers worth keeping with the stored delivery (never credentials).
    fn kept_headers(&self) -> &'static [&'static str];
    /// Headers a sender would attach to `body` (for `hookd sign` and tests):
    /// event type, a fresh delivery id, and the signature when a secret is set.
    fn sign(&self, body: &[u8], event_type: &str, delivery_id: &str) -> Vec<(String, String)>;
}

/// Builds the source for one configured entry.
pub fn build(config: &SourceConfig) -> Box<dyn Source> {
    match config.kind {
        SourceKind::Github => Box::new(GithubSource::new(config)),
    }
}

/// Parses a JSON body, mapping errors to [`ParseError::Json`].
pub(crate) fn parse_json(body: &[u8]) -> Result<serde_json::Value, ParseError> {
    serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))
}

/// Reads a string at a JSON pointer, or a field error naming it.
pub(crate) fn str_at<'v>(v: &'v serde_json::Value, pointer: &str) -> Result<&'v str, ParseError> {
    match v.pointer(pointer) {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(other) => Err(ParseError::Field {
            field: pointer.to_string(),
            reason: format!("expected a string, found {}", json_type(other)),
        }),
        None => Err(ParseError::Field {
            field: pointer.to_string(),
            reason: "missing".to_string(),
        }),
    }
}

/// Reads an optional string at a JSON pointer (null and absent are `None`).
pub(crate) fn opt_str_at(v: &serde_json::Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

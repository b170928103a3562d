//! Sources: one file per webhook kind. Each authenticates a raw request on
//! its exact bytes (constant-time) and parses it into normalized events.
//!
//! Invariants: only this module knows providers' header names and payload
//! shapes; `authenticate` runs before anything looks at the body; nothing
//! here does I/O, so the server and `hookd explain` share the same path.
//!
//! Adding a kind: one new file implementing [`Source`], one variant in
//! [`crate::config::SourceKind`], one arm in [`build`].

mod alertmanager;
mod auth;
mod bitbucket_cloud;
mod bitbucket_server;
mod generic;
mod gitea;
mod github;
mod gitlab;
mod grafana;

pub use alertmanager::AlertmanagerSource;
pub use auth::{
    hmac_digest, hmac_sha256_hex, standard_webhooks_key, verify_hmac, verify_hmac_sha256_hex,
    MAX_TIMESTAMP_SKEW_SECS,
};
pub use bitbucket_cloud::BitbucketCloudSource;
pub use bitbucket_server::BitbucketServerSource;
pub use generic::GenericSource;
pub use gitea::GiteaSource;
pub use github::GithubSource;
pub use gitlab::GitlabSource;
pub use grafana::GrafanaSource;

use std::borrow::Cow;
use std::fmt;

use crate::config::{SourceConfig, SourceKind};
use crate::event::Event;

/// A received request as the sources see it: no web framework types.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `POST`, `GET`, …
    pub method: &'a str,
    /// The headers (in the daemon, borrowed from the HTTP request).
    pub headers: &'a dyn Headers,
    /// The raw query string (without `?`).
    pub query: &'a str,
    /// The exact body bytes.
    pub body: &'a [u8],
    /// The peer is 127.0.0.0/8 or ::1.
    pub from_loopback: bool,
}

/// A request's headers as the sources read them: looked up by name, so the
/// daemon lends the HTTP request's own header map (no copy per request) and
/// tests, replays and `hookd explain` lend name/value pairs.
pub trait Headers: fmt::Debug + Sync {
    /// The first value of header `name` (matched case-insensitively) that is
    /// text; values that are not are passed over.
    fn first(&self, name: &str) -> Option<&str>;

    /// Whether there is no header at all.
    fn is_empty(&self) -> bool;
}

fn first_pair<'s>(pairs: &'s [(String, String)], name: &str) -> Option<&'s str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Headers for Vec<(String, String)> {
    fn first(&self, name: &str) -> Option<&str> {
        first_pair(self, name)
    }

    fn is_empty(&self) -> bool {
        <[_]>::is_empty(self)
    }
}

impl Headers for &[(String, String)] {
    fn first(&self, name: &str) -> Option<&str> {
        first_pair(self, name)
    }

    fn is_empty(&self) -> bool {
        <[_]>::is_empty(self)
    }
}

impl<const N: usize> Headers for [(String, String); N] {
    fn first(&self, name: &str) -> Option<&str> {
        first_pair(self, name)
    }

    fn is_empty(&self) -> bool {
        N == 0
    }
}

impl Request<'_> {
    /// First value of a header, case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.first(name)
    }

    /// The first of `names` that is present with a non-blank value, and that value.
    pub fn first_header(&self, names: &[&'static str]) -> Option<(&'static str, &str)> {
        names.iter().find_map(|n| {
            self.header(n)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| (*n, v))
        })
    }

    /// True for `Content-Type: application/x-www-form-urlencoded`.
    pub fn is_form(&self) -> bool {
        self.header("content-type").is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
    }

    /// True for `GET`.
    pub fn is_get(&self) -> bool {
        self.method.eq_ignore_ascii_case("GET")
    }
}

/// Why a request was refused as unauthenticated (HTTP 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A required header is absent.
    #[error("missing {0} header")]
    MissingHeader(Cow<'static, str>),
    /// A required query-string parameter is absent.
    #[error("missing {0} query parameter")]
    MissingQueryParameter(Cow<'static, str>),
    /// The signature header is present but empty: senders without a secret
    /// (Gitea, Forgejo) still send it.
    #[error("{0} header is empty: the sender has no secret configured")]
    Unsigned(Cow<'static, str>),
    /// The signature does not verify.
    #[error("{0} does not match the body and the configured secret")]
    Mismatch(Cow<'static, str>),
    /// A token sent as-is differs from the configured one.
    #[error("{0} does not match the configured token")]
    WrongToken(Cow<'static, str>),
    /// Basic auth with another user name or password.
    #[error("basic auth user name or password does not match the configured ones")]
    WrongBasicAuth,
    /// The header is present but not in the expected format.
    #[error("malformed {header} header: {reason}")]
    Malformed {
        /// Which header.
        header: Cow<'static, str>,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A correctly signed timestamp too far from this host's clock (a replay,
    /// or a clock that is off).
    #[error(
        "{header} is {skew_secs} s away from this host's clock; at most {max_secs} s is accepted"
    )]
    Stale {
        /// Which header carries the timestamp.
        header: &'static str,
        /// How far off it is, in seconds.
        skew_secs: i64,
        /// The tolerance.
        max_secs: i64,
    },
    /// The source has no credentials and the sender is not on loopback.
    #[error("source has no credentials configured; only loopback senders are accepted")]
    NotLoopback,
    /// The source has no credentials and the request is one a web page in a
    /// local browser could send (GET, or POST without a JSON content type).
    #[error("source has no credentials configured; loopback senders must POST with Content-Type: application/json (a request a web page cannot forge)")]
    BrowserSendable,
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
    /// GET request whose query string has no `payload` parameter.
    #[error("query string has no payload parameter")]
    NoQueryPayload,
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
    /// What to store as the delivery's body when it is not the raw request
    /// body: the payload of a GET request (its query string), credentials
    /// removed. `None`: store the raw body.
    pub stored_body: Option<Vec<u8>>,
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
    /// event type (the provider's own name, or `push` for its push event), a
    /// fresh delivery id, and the signature or credentials that are configured.
    fn sign(&self, body: &[u8], event_type: &str, delivery_id: &str) -> Vec<(String, String)>;
    /// Whether `GET /hooks/{name}` is a delivery (payload in the query
    /// string). Default: POST only.
    fn accepts_get(&self) -> bool {
        false
    }
    /// For `hookd explain` only (the server never guesses): when `req` has
    /// no event-type header, the type its payload's shape says it is.
    /// Default: [`EventTypeHint::Given`], for kinds without an event-type
    /// header.
    fn infer_event_type(&self, _req: &Request) -> EventTypeHint {
        EventTypeHint::Given
    }
}

/// What a source can tell about a request's event type before parsing it
/// (see [`Source::infer_event_type`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTypeHint {
    /// The request names its event type, or the kind needs none: parse it as it is.
    Given,
    /// No event-type header, and the payload has the shape of `event_type`:
    /// the request parses as that once `header: event_type` is added.
    Inferred {
        /// The header that carries the type on the wire (`X-GitHub-Event`).
        header: &'static str,
        /// The provider's name for the type (`push`, `Tag Push Hook`, …).
        event_type: String,
    },
    /// No event-type header, and no payload shape this kind recognises.
    Unknown {
        /// The header that would name the type.
        header: &'static str,
        /// What the payload lacks, e.g. `it has no object_kind field`.
        why: String,
    },
}

/// Builds the source for one configured entry.
pub fn build(config: &SourceConfig) -> Box<dyn Source> {
    match config.kind {
        SourceKind::Github => Box::new(GithubSource::new(config)),
        SourceKind::Gitlab => Box::new(GitlabSource::new(config)),
        SourceKind::Gitea => Box::new(GiteaSource::new(config)),
        SourceKind::BitbucketCloud => Box::new(BitbucketCloudSource::new(config)),
        SourceKind::BitbucketServer => Box::new(BitbucketServerSource::new(config)),
        SourceKind::Generic => Box::new(GenericSource::new(config)),
        SourceKind::Alertmanager => Box::new(AlertmanagerSource::new(config)),
        SourceKind::Grafana => Box::new(GrafanaSource::new(config)),
    }
}

/// Ignored event for a provider event type that starts nothing.
pub(crate) fn ignored(reason: String) -> Vec<Event> {
    vec![Event::Ignored(crate::event::IgnoredEvent { reason })]
}

/// A trimmed, non-empty header value as an owned delivery id.
pub(crate) fn delivery_id_from(req: &Request, names: &[&'static str]) -> Option<String> {
    req.first_header(names).map(|(_, v)| v.to_string())
}

/// The `payload` field of a form-encoded body or query string.
pub(crate) fn form_payload(form: &[u8]) -> Option<String> {
    form_urlencoded::parse(form)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
}

/// Parses a JSON body, mapping errors to [`ParseError::Json`].
pub(crate) fn parse_json(body: &[u8]) -> Result<serde_json::Value, ParseError> {
    serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))
}

/// True when every one of `keys` is a top-level field of `json`, not null
/// (payload-shape checks of [`Source::infer_event_type`]).
pub(crate) fn has_fields(json: &serde_json::Value, keys: &[&str]) -> bool {
    keys.iter()
        .all(|k| json.get(k).is_some_and(|v| !v.is_null()))
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

/// Helpers shared by the sources' unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;

    use super::Request;
    use crate::event::RefKind;

    /// Expected push: repository, ref, kind, before, after.
    pub(crate) type PushCase = (
        &'static str,
        &'static str,
        RefKind,
        Option<&'static str>,
        Option<&'static str>,
    );

    fn dir(kind: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures")
            .join(kind)
    }

    /// A shared fixture's bytes.
    pub(crate) fn fixture(kind: &str, name: &str) -> Vec<u8> {
        let path = dir(kind).join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// How many fixtures a provider's directory holds.
    pub(crate) fn fixture_count(kind: &str) -> usize {
        std::fs::read_dir(dir(kind))
            .unwrap_or_else(|e| panic!("fixtures of {kind}: {e}"))
            .count()
    }

    /// Header pairs as the server hands them over (names lower-cased).
    pub(crate) fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    /// A POST from a non-loopback sender.
    pub(crate) fn request<'a>(headers: &'a dyn super::Headers, body: &'a [u8]) -> Request<'a> {
        Request {
            method: "POST",
            headers,
            query: "",
            body,
            from_loopback: false,
        }
    }
}

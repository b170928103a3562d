//! GitHub (and GitHub Enterprise Server) webhooks.
//!
//! Authentication: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw
//! body>` with the source's secret. Event type: `X-GitHub-Event`. Delivery id:
//! `X-GitHub-Delivery` (kept across manual redeliveries, so it dedupes).
//! Both content types GitHub offers are accepted: `application/json`, and
//! `application/x-www-form-urlencoded` with the JSON in `payload=` (the
//! signature then covers the form bytes).

use super::auth::{check_hex_sha256_header, loopback_only};
use super::{
    has_fields, parse_json, AuthError, EventTypeHint, ParseError, Parsed, Request, Source,
};
use crate::config::{Credentials, SourceConfig, SourceKind};
use crate::event::{Event, IgnoredEvent, PushEvent};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

const SIGNATURE: &str = "X-Hub-Signature-256";
const EVENT: &str = "X-GitHub-Event";
const DELIVERY: &str = "X-GitHub-Delivery";

/// A `kind: github` source.
pub struct GithubSource {
    name: String,
    credentials: Credentials,
}

impl GithubSource {
    /// Builds the source from its config.
    pub fn new(config: &SourceConfig) -> GithubSource {
        GithubSource {
            name: config.name.clone(),
            credentials: config.credentials.clone(),
        }
    }
}

impl Source for GithubSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Github
    }

    fn authenticate(&self, req: &Request) -> Result<(), AuthError> {
        match &self.credentials.hmac_secret {
            None => loopback_only(req),
            Some(secret) => check_hex_sha256_header(req, SIGNATURE, "sha256=", secret, req.body),
        }
    }

    fn parse(&self, req: &Request) -> Result<Parsed, ParseError> {
        let event_type = req
            .header(EVENT)
            .ok_or(ParseError::MissingHeader(EVENT))?
            .trim()
            .to_string();
        let delivery_id = req
            .header(DELIVERY)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let body = payload(req)?;
        if event_type != "push" {
            // Not read, but refused unless it is JSON, as a push is.
            from_json::<Skip>(&body)?;
        }
        let (events, is_ping) = match event_type.as_str() {
            "push" => (vec![Event::Push(parse_push(&body)?)], false),
            "ping" => (
                vec![Event::Ignored(IgnoredEvent {
                    reason: "ping: GitHub checks that the hook is reachable".to_string(),
                })],
                true,
            ),
            other => (
                vec![Event::Ignored(IgnoredEvent {
                    reason: format!(
                        "github event type {other:?} starts no pipeline (only push does)"
                    ),
                })],
                false,
            ),
        };
        Ok(Parsed {
            event_type,
            delivery_id,
            events,
            is_ping,
            stored_body: None,
        })
    }

    fn kept_headers(&self) -> &'static [&'static str] {
        &[
            "x-github-event",
            "x-github-delivery",
            "x-github-hook-id",
            "x-github-hook-installation-target-type",
            "x-github-hook-installation-target-id",
            "x-github-enterprise-host",
            "x-github-enterprise-version",
            "user-agent",
            "content-type",
        ]
    }

    fn sign(&self, body: &[u8], event_type: &str, delivery_id: &str) -> Vec<(String, String)> {
        let mut headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            (EVENT.to_string(), event_type.to_string()),
            (DELIVERY.to_string(), delivery_id.to_string()),
        ];
        if let Some(secret) = &self.credentials.hmac_secret {
            let sig = super::hmac_sha256_hex(secret.expose().as_bytes(), body);
            headers.push((SIGNATURE.to_string(), format!("sha256={sig}")));
        }
        headers
    }

    fn infer_event_type(&self, req: &Request) -> EventTypeHint {
        if req.header(EVENT).is_some() {
            return EventTypeHint::Given;
        }
        let unknown = |why: String| EventTypeHint::Unknown { header: EVENT, why };
        let json = match payload_json(req) {
            Ok(json) => json,
            Err(e) => return unknown(e.to_string()),
        };
        match event_type_of(&json) {
            Some(t) => EventTypeHint::Inferred {
                header: EVENT,
                event_type: t.to_string(),
            },
            None => unknown(
                "it has none of the shapes of ping (zen, hook_id), pull_request \
                 (pull_request) or push (ref, before, after, repository)"
                    .to_string(),
            ),
        }
    }
}

/// The event type a GitHub payload's fields announce, for payloads without
/// their `X-GitHub-Event` header.
fn event_type_of(json: &serde_json::Value) -> Option<&'static str> {
    if has_fields(json, &["zen", "hook_id"]) {
        Some("ping")
    } else if has_fields(json, &["pull_request"]) {
        Some("pull_request")
    } else if has_fields(json, &["ref", "before", "after", "repository"]) {
        Some("push")
    } else {
        None
    }
}

/// The JSON document of the request, from either content type, as a
/// `serde_json::Value` (for [`Source::infer_event_type`], off the hot path).
fn payload_json(req: &Request) -> Result<serde_json::Value, ParseError> {
    parse_json(&payload(req)?)
}

/// The JSON bytes of the request: the body itself, or the `payload` field of
/// a form-encoded body.
fn payload<'a>(req: &Request<'a>) -> Result<Cow<'a, [u8]>, ParseError> {
    if req.is_form() {
        let payload = super::form_payload(req.body).ok_or(ParseError::NoFormPayload)?;
        Ok(Cow::Owned(payload.into_bytes()))
    } else {
        Ok(Cow::Borrowed(req.body))
    }
}

/// Deserialises `body` as `T`, mapping errors to [`ParseError::Json`].
///
/// The whole body's UTF-8 is checked once up front: parsing from a `&str`
/// then skips serde_json's check of every string on its own (a third of the
/// parse of a push, which has hundreds of short strings). A body that is
/// not UTF-8 goes to the byte parser, so its error names the same position
/// as before.
fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ParseError> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
    .map_err(|e| ParseError::Json(e.to_string()))
}

/// The push event of a push payload. Reads the few fields it needs straight
/// from the bytes (see [`Json`]) instead of building a `serde_json::Value`
/// of the whole ~8 KB document: this is on the ingest hot path.
fn parse_push(body: &[u8]) -> Result<PushEvent, ParseError> {
    let push = match from_json::<Json<Push>>(body)? {
        Json::Object(push) => push,
        // Like a JSON pointer into a non-object: every field is missing.
        _ => Push::default(),
    };
    let git_ref = push.git_ref.str("/ref")?;
    let before = push.before.str("/before")?;
    let after = push.after.str("/after")?;
    let repository = push.repository.get(|r| &r.full_name);
    let repository = repository.str("/repository/full_name")?;
    let pusher = push
        .pusher
        .get(|p| &p.name)
        .opt_string()
        .or_else(|| push.sender.get(|s| &s.login).opt_string());
    let mut event = PushEvent::new(
        repository.to_string(),
        git_ref.to_string(),
        before,
        after,
        push.repository.get(|r| &r.clone_url).opt_string(),
        pusher,
    );
    event.forced = matches!(push.forced, Json::Bool(true));
    Ok(event)
}

/// The top-level fields of a push payload that hookd reads.
#[derive(Default)]
struct Push<'a> {
    git_ref: Json<'a>,
    before: Json<'a>,
    after: Json<'a>,
    forced: Json<'a>,
    repository: Json<'a, Repository<'a>>,
    pusher: Json<'a, Person<'a>>,
    sender: Json<'a, Person<'a>>,
}

/// `repository`'s fields that hookd reads.
#[derive(Default)]
struct Repository<'a> {
    full_name: Json<'a>,
    clone_url: Json<'a>,
}

/// `pusher` (whose `name` is read) or `sender` (whose `login` is read).
#[derive(Default)]
struct Person<'a> {
    name: Json<'a>,
    login: Json<'a>,
}

/// Implements [`Fields`] for a struct of [`Json`] fields, each read from
/// the key given for it.
macro_rules! kept_fields {
    ($ty:ident { $($key:literal => $field:ident),+ $(,)? }) => {
        impl<'de> Fields<'de> for $ty<'de> {
            fn read<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
                match key {
                    $($key => self.$field = map.next_value()?,)+
                    _ => return Ok(false),
                }
                Ok(true)
            }
        }
    };
}

kept_fields!(Push {
    "ref" => git_ref,
    "before" => before,
    "after" => after,
    "forced" => forced,
    "repository" => repository,
    "pusher" => pusher,
    "sender" => sender,
});
kept_fields!(Repository {
    "full_name" => full_name,
    "clone_url" => clone_url,
});
kept_fields!(Person {
    "name" => name,
    "login" => login,
});

/// The fields of a JSON object that a [`Json::Object`] keeps.
trait Fields<'de>: Default {
    /// Reads the value of `key` from `map` when it is one of the kept
    /// fields (a repeated key overwrites, as in a `serde_json::Value`);
    /// `false` when it is not, and the caller skips the value.
    fn read<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;
}

/// No fields: an object read as [`Json::Object`] of this is only skipped.
#[derive(Default)]
struct NoFields;

impl<'de> Fields<'de> for NoFields {
    fn read<A: MapAccess<'de>>(&mut self, _: &str, _: &mut A) -> Result<bool, A::Error> {
        Ok(false)
    }
}

/// One JSON value of a payload, read in place of a `serde_json::Value`: a
/// string is borrowed from the body (owned only when it has escapes), an
/// object keeps only the fields `T` wants, everything else is skipped and
/// only its type kept (for the error messages of [`super::str_at`]).
///
/// Skipped values are still checked as a `serde_json::Value` would check
/// them (strings' UTF-8 and escapes, numbers' range, nesting depth): a body
/// that was not JSON before is not one now. `serde::de::IgnoredAny` would
/// be a little faster but checks none of these.
#[derive(Default)]
enum Json<'a, T = NoFields> {
    /// The field is absent.
    #[default]
    Missing,
    Null,
    Bool(bool),
    Number,
    Str(Cow<'a, str>),
    Array,
    Object(T),
}

impl<'a, T> Json<'a, T> {
    /// The string, or an error naming `field` (the wording of [`super::str_at`]).
    fn str(&self, field: &str) -> Result<&str, ParseError> {
        let found = match self {
            Json::Str(s) => return Ok(s),
            Json::Missing => {
                return Err(ParseError::Field {
                    field: field.to_string(),
                    reason: "missing".to_string(),
                })
            }
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number => "a number",
            Json::Array => "an array",
            Json::Object(_) => "an object",
        };
        Err(ParseError::Field {
            field: field.to_string(),
            reason: format!("expected a string, found {found}"),
        })
    }

    /// A non-empty string, owned (as [`super::opt_str_at`]).
    fn opt_string(&self) -> Option<String> {
        match self {
            Json::Str(s) if !s.is_empty() => Some(s.to_string()),
            _ => None,
        }
    }

    /// A field of this object; [`Json::Missing`] when this is no object.
    fn get<'s, U>(&'s self, field: impl FnOnce(&'s T) -> &'s Json<'a, U>) -> &'s Json<'a, U> {
        match self {
            Json::Object(fields) => field(fields),
            _ => &Json::Missing,
        }
    }
}

impl<'de, T: Fields<'de>> Deserialize<'de> for Json<'de, T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor(PhantomData))
    }
}

struct JsonVisitor<T>(PhantomData<T>);

impl<'de, T: Fields<'de>> Visitor<'de> for JsonVisitor<T> {
    type Value = Json<'de, T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Json::Number)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Json::Number)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Json::Number)
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(v.to_string())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Json::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = T::default();
        while let Some(key) = map.next_key::<Json<'de>>()? {
            let read = match &key {
                Json::Str(key) => fields.read(key, &mut map)?,
                _ => false,
            };
            if !read {
                map.next_value::<Skip>()?;
            }
        }
        Ok(Json::Object(fields))
    }
}

/// Any JSON value, checked as a `serde_json::Value` would be and dropped
/// without allocating (an escaped string is decoded into serde_json's
/// reused scratch buffer).
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::event::RefKind;
    use crate::source::test_support::request;
    use std::path::PathBuf;

    fn source(secret: Option<&str>) -> GithubSource {
        GithubSource::new(&SourceConfig {
            name: "github".into(),
            kind: SourceKind::Github,
            credentials: Credentials {
                hmac_secret: secret.map(Secret::new),
                ..Credentials::default()
            },
            generic: None,
        })
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/github")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    #[test]
    fn signature_verifies_the_docs_test_vector() {
        let s = source(Some("It's a Secret to Everybody"));
        let h = headers(&[(
            SIGNATURE,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        assert_eq!(s.authenticate(&request(&h, b"Hello, World!")), Ok(()));
        assert_eq!(
            s.authenticate(&request(&h, b"Hello, World")),
            Err(AuthError::Mismatch(SIGNATURE.into()))
        );
        assert_eq!(
            s.authenticate(&request(&[], b"Hello, World!")),
            Err(AuthError::MissingHeader(SIGNATURE.into()))
        );
        let sha1 = headers(&[(SIGNATURE, "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59")]);
        assert!(matches!(
            s.authenticate(&request(&sha1, b"Hello, World!")),
            Err(AuthError::Malformed { .. })
        ));
        // sign() produces exactly what GitHub would send.
        let signed = s.sign(b"Hello, World!", "push", "id-1");
        assert!(signed.contains(&(
            SIGNATURE.to_string(),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_string()
        )));
    }

    #[test]
    fn without_credentials_only_loopback_is_accepted() {
        let s = source(None);
        let json = [("content-type".to_string(), "application/json".to_string())];
        let mut req = request(&json, b"{}");
        assert_eq!(s.authenticate(&req), Err(AuthError::NotLoopback));
        req.from_loopback = true;
        assert_eq!(s.authenticate(&req), Ok(()));
        // Not a request a web page in a local browser could forge.
        let mut form = request(&[], b"{}");
        form.from_loopback = true;
        assert_eq!(s.authenticate(&form), Err(AuthError::BrowserSendable));
    }

    /// Every GitHub fixture parses into the expected normalized event.
    #[test]
    fn every_fixture_parses_into_the_expected_event() {
        // (file, event type, Some((repository, ref, kind, before, after, deletion)) or None for ignored, is_ping)
        type Push = (
            &'static str,
            &'static str,
            RefKind,
            Option<&'static str>,
            Option<&'static str>,
        );
        let cases: &[(&str, &str, Option<Push>, bool)] = &[
            ("ping.json", "ping", None, true),
            ("ping-github-app.json", "ping", None, true),
            ("pull_request-opened.json", "pull_request", None, false),
            (
                "push-branch-commits.json",
                "push",
                Some((
                    "binkkatal/sample_app",
                    "refs/heads/master",
                    RefKind::Branch,
                    Some("737d38c599c1b2991664dfc6155d6bf516fcce36"),
                    Some("fd489864e7642b48eaad6e3f155c10e46810ec72"),
                )),
                false,
            ),
            (
                "push-branch-create.json",
                "push",
                Some((
                    "Codertocat/Hello-World",
                    "refs/heads/master",
                    RefKind::Branch,
                    None,
                    Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246"),
                )),
                false,
            ),
            (
                "push-branch-delete.json",
                "push",
                Some((
                    "bradrydzewski/drone-test-go",
                    "refs/heads/feature-branch",
                    RefKind::Branch,
                    Some("d2b75aa7797ec26b088fa2dd527e9d2c052fcedd"),
                    None,
                )),
                false,
            ),
            (
                "push-tag-create.json",
                "push",
                Some((
                    "gagbo/app-test-repo",
                    "refs/tags/v0.2.1",
                    RefKind::Tag,
                    None,
                    Some("f19c884ab35c8d243bf9d857d631a5d4f190079f"),
                )),
                false,
            ),
            (
                "push-tag-create-with-base-ref.json",
                "push",
                Some((
                    "bradrydzewski/drone-test-go",
                    "refs/tags/v0.0.1",
                    RefKind::Tag,
                    None,
                    Some("d2b75aa7797ec26b088fa2dd527e9d2c052fcedd"),
                )),
                false,
            ),
            (
                "push-tag-delete.json",
                "push",
                Some((
                    "Codertocat/Hello-World",
                    "refs/tags/simple-tag",
                    RefKind::Tag,
                    Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246"),
                    None,
                )),
                false,
            ),
        ];
        let fixtures_dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/github");
        let on_disk = std::fs::read_dir(&fixtures_dir)
            .expect("fixtures dir")
            .count();
        assert_eq!(
            on_disk,
            cases.len(),
            "a GitHub fixture has no expectation here"
        );
        let s = source(None);
        for (file, event_type, expected, is_ping) in cases {
            let body = fixture(file);
            let h = headers(&[(EVENT, event_type), (DELIVERY, "d-1")]);
            let parsed = s
                .parse(&request(&h, &body))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(parsed.is_ping, *is_ping, "{file}");
            assert_eq!(parsed.delivery_id.as_deref(), Some("d-1"));
            assert_eq!(parsed.events.len(), 1, "{file}");
            match (expected, &parsed.events[0]) {
                (None, Event::Ignored(_)) => {}
                (Some((repo, r, kind, before, after)), Event::Push(p)) => {
                    assert_eq!(p.repository, *repo, "{file}");
                    assert_eq!(p.git_ref, *r, "{file}");
                    assert_eq!(p.ref_kind, *kind, "{file}");
                    assert_eq!(p.before.as_deref(), *before, "{file}");
                    assert_eq!(p.after.as_deref(), *after, "{file}");
                    assert!(
                        p.clone_url
                            .as_deref()
                            .is_some_and(|u| u.starts_with("https://github.com/")),
                        "{file}"
                    );
                    assert!(p.pusher.is_some(), "{file}");
                }
                (e, got) => panic!("{file}: expected {e:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn form_encoded_payloads_are_read() {
        let json = fixture("push-branch-commits.json");
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &String::from_utf8_lossy(&json))
            .finish();
        let h = headers(&[
            (EVENT, "push"),
            ("content-type", "application/x-www-form-urlencoded"),
        ]);
        let parsed = source(None)
            .parse(&request(&h, form.as_bytes()))
            .expect("parses");
        assert!(
            matches!(&parsed.events[0], Event::Push(p) if p.repository == "binkkatal/sample_app")
        );
    }

    /// Every field the push parser reads, escaped in the JSON (and one key).
    #[test]
    fn escaped_strings_are_decoded_in_every_field_read() {
        let body = br#"{
            "re\u0066": "refs\/heads\/caf\u00e9",
            "before": "\u0037\u0033\u0037d38c599c1b2991664dfc6155d6bf516fcce36",
            "after": "FD489864E7642B48EAAD6E3F155C10E46810EC7\u0032",
            "forced": true,
            "repository": {
                "full_name": "\u00e9quipe\/app \"x\"",
                "clone_url": "https:\/\/github.com\/\u00e9quipe\/app.git"
            },
            "pusher": {"name": "Jos\u00e9 \ud83d\ude00"},
            "commits": [{"message": "fix\n\n\u00e9t\u00e9 \\ \/"}]
        }"#;
        let h = headers(&[(EVENT, "push")]);
        let parsed = source(None).parse(&request(&h, body)).expect("parses");
        let Event::Push(p) = &parsed.events[0] else {
            panic!("not a push: {parsed:?}")
        };
        assert_eq!(p.git_ref, "refs/heads/café");
        assert_eq!(p.ref_name, "café");
        assert_eq!(
            p.before.as_deref(),
            Some("737d38c599c1b2991664dfc6155d6bf516fcce36")
        );
        assert_eq!(
            p.after.as_deref(),
            Some("fd489864e7642b48eaad6e3f155c10e46810ec72")
        );
        assert_eq!(p.repository, "équipe/app \"x\"");
        assert_eq!(
            p.clone_url.as_deref(),
            Some("https://github.com/équipe/app.git")
        );
        assert_eq!(p.pusher.as_deref(), Some("José 😀"));
        assert!(p.forced);
        // The sender's login stands in for a missing or empty pusher name.
        let body = br#"{"ref": "refs/tags/v1", "before": "0", "after": "1",
            "repository": {"full_name": "o/r"}, "pusher": {"name": ""},
            "sender": {"login": "\u006fctocat"}}"#;
        let parsed = source(None).parse(&request(&h, body)).expect("parses");
        let Event::Push(p) = &parsed.events[0] else {
            panic!("not a push: {parsed:?}")
        };
        assert_eq!(p.pusher.as_deref(), Some("octocat"));
        assert_eq!(p.clone_url, None);
        assert!(!p.forced);
    }

    /// The push event of a payload as it was read before the typed parse:
    /// through a whole `serde_json::Value` and JSON pointers.
    fn parse_push_through_value(body: &[u8]) -> Result<PushEvent, ParseError> {
        use crate::source::{opt_str_at, str_at};
        let json = parse_json(body)?;
        let git_ref = str_at(&json, "/ref")?;
        let before = str_at(&json, "/before")?;
        let after = str_at(&json, "/after")?;
        let repository = str_at(&json, "/repository/full_name")?;
        let pusher =
            opt_str_at(&json, "/pusher/name").or_else(|| opt_str_at(&json, "/sender/login"));
        let mut event = PushEvent::new(
            repository.to_string(),
            git_ref.to_string(),
            before,
            after,
            opt_str_at(&json, "/repository/clone_url"),
            pusher,
        );
        event.forced = json
            .pointer("/forced")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        Ok(event)
    }

    /// The typed parse gives what the `serde_json::Value` one gave: the same
    /// event, or the same error, to the word, on the fixtures and on odd or
    /// broken payloads; other events' bodies are refused exactly when they
    /// were.
    #[test]
    fn push_parse_agrees_with_a_parse_through_serde_json_value() {
        let ok = r#""ref": "refs/heads/main", "before": "a", "after": "b""#;
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let mut cases: Vec<Vec<u8>> = [
            "{not json",
            "",
            "[]",
            r#""a string""#,
            "null",
            "{}",
            r#"{"ref": 1}"#,
            r#"{"ref": null}"#,
            r#"{"ref": true}"#,
            r#"{"ref": [1, {"a": 2}]}"#,
            r#"{"ref": {"a": "b"}}"#,
            r#"{"ref": "r", "before": 1.5}"#,
            r#"{"ref": "r", "before": "a", "after": -3}"#,
            &format!(r#"{{{ok}}}"#),
            &format!(r#"{{{ok}, "repository": "o/r"}}"#),
            &format!(r#"{{{ok}, "repository": ["o/r"]}}"#),
            &format!(r#"{{{ok}, "repository": {{"full_name": null}}}}"#),
            &format!(r#"{{{ok}, "repository": {{"full_name": 7}}}}"#),
            &format!(r#"{{{ok}, "repository": {{"full_name": "o/r", "clone_url": 7}}}}"#),
            &format!(r#"{{{ok}, "repository": {{"full_name": "o/r", "clone_url": ""}}}}"#),
            &format!(
                r#"{{{ok}, "repository": {{"full_name": "o/r"}}, "pusher": "p", "sender": {{"login": "s"}}}}"#
            ),
            &format!(
                r#"{{{ok}, "repository": {{"full_name": "o/r"}}, "pusher": {{"name": null}}, "sender": {{"login": 1}}}}"#
            ),
            &format!(r#"{{{ok}, "repository": {{"full_name": "o/r"}}, "forced": "true"}}"#),
            &format!(r#"{{{ok}, "repository": {{"full_name": "o/r"}}, "forced": false}}"#),
            // A repeated key: the last one counts.
            &format!(r#"{{{ok}, "ref": "refs/tags/t", "repository": {{"full_name": "o/r"}}}}"#),
            &format!(r#"{{{ok}, "repository": {{"full_name": "a/b"}}, "repository": {{"full_name": "o/r"}}}}"#),
            // Broken JSON in fields that are not read is still broken.
            &format!(r#"{{{ok}, "repository": {{"full_name": "o/r"}}, "size": 1e400}}"#),
            &format!(r#"{{{ok}, "repository": {{"full_name": "o/r"}}, "x": "\ud800"}}"#),
            &format!(r#"{{{ok}, "repository": {{"full_name": "o/r"}}, "x": "\q"}}"#),
            &format!(r#"{{{ok}, "repository": {{"full_name": "o/r"}}, "x": {deep}}}"#),
            &format!(r#"{{{ok}, "repository": {{"full_name": "o/r"}}, "x": [1,]}}"#),
            &format!(r#"{{{ok}, "repository": {{"full_name": "o/r"}}}} trailing"#),
            &format!(r#"{{{ok}, "repository": {{"full_name": "o/r", "owner": {{"id": 01}}}}}}"#),
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        // Invalid UTF-8 inside a string that is not read.
        let mut bad_utf8 =
            format!(r#"{{{ok}, "repository": {{"full_name": "o/r"}}, "x": ""#).into_bytes();
        bad_utf8.extend_from_slice(b"\xff\"}");
        cases.push(bad_utf8);
        for entry in std::fs::read_dir(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/github"),
        )
        .expect("fixtures dir")
        {
            cases.push(std::fs::read(entry.expect("fixture").path()).expect("fixture"));
        }
        for body in &cases {
            let text = String::from_utf8_lossy(body);
            assert_eq!(parse_push(body), parse_push_through_value(body), "{text}");
            // Other events' bodies are only checked to be JSON.
            assert_eq!(
                from_json::<Skip>(body).map(|_| ()),
                parse_json(body).map(|_| ()),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_payloads_are_parse_errors() {
        let h = headers(&[(EVENT, "push")]);
        let s = source(None);
        assert!(matches!(
            s.parse(&request(&h, b"{not json")),
            Err(ParseError::Json(_))
        ));
        assert_eq!(
            s.parse(&request(&h, br#"{"ref": 1}"#)),
            Err(ParseError::Field {
                field: "/ref".into(),
                reason: "expected a string, found a number".into()
            })
        );
        assert_eq!(
            s.parse(&request(&[], b"{}")),
            Err(ParseError::MissingHeader(EVENT))
        );
    }
}

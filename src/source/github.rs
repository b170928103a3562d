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
    has_fields, opt_str_at, parse_json, str_at, AuthError, EventTypeHint, ParseError, Parsed,
    Request, Source,
};
use crate::config::{Credentials, SourceConfig, SourceKind};
use crate::event::{Event, IgnoredEvent, PushEvent};

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
        let json = payload_json(req)?;
        let (events, is_ping) = match event_type.as_str() {
            "push" => (vec![Event::Push(parse_push(&json)?)], false),
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

/// The JSON document of the request, from either content type.
fn payload_json(req: &Request) -> Result<serde_json::Value, ParseError> {
    if req.is_form() {
        let payload = super::form_payload(req.body).ok_or(ParseError::NoFormPayload)?;
        parse_json(payload.as_bytes())
    } else {
        parse_json(req.body)
    }
}

fn parse_push(json: &serde_json::Value) -> Result<PushEvent, ParseError> {
    let git_ref = str_at(json, "/ref")?;
    let before = str_at(json, "/before")?;
    let after = str_at(json, "/after")?;
    let repository = str_at(json, "/repository/full_name")?;
    let pusher = opt_str_at(json, "/pusher/name").or_else(|| opt_str_at(json, "/sender/login"));
    let mut event = PushEvent::new(
        repository.to_string(),
        git_ref.to_string(),
        before,
        after,
        opt_str_at(json, "/repository/clone_url"),
        pusher,
    );
    event.forced = json
        .pointer("/forced")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    Ok(event)
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

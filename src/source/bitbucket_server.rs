//! Bitbucket Data Center (formerly Bitbucket Server) webhooks.
//!
//! Authentication, each one that is configured must verify:
//! - `secret_file` / `secret_env`: `X-Hub-Signature: sha256=<hex
//!   HMAC-SHA256 of the raw body>` (the webhook's secret);
//! - `basic: {username, password_file}`: `Authorization: Basic …` (the
//!   webhook's basic authentication).
//!
//! Events (`X-Event-Key`): `repo:refs_changed` is a push; `diagnostics:ping`
//! ("Test connection") is answered as a ping; others are ignored. Delivery
//! id: `X-Request-Id`. Each `changes[]` entry becomes its own push event:
//! `ref.id` is the full ref, `fromHash` / `toHash` are zeros on ADD / DELETE.
//! There is no commit list. Repository: `PROJECTKEY/slug` (personal
//! repositories: `~user/slug`). Clone URL: the `http` entry of
//! `repository.links.clone`, when the payload has one.

use super::auth::{basic_header, check_basic, check_hex_sha256_header, loopback_only};
use super::{
    delivery_id_from, hmac_sha256_hex, ignored, opt_str_at, parse_json, str_at, AuthError,
    EventTypeHint, ParseError, Parsed, Request, Source,
};
use crate::config::{Credentials, SourceConfig, SourceKind};
use crate::event::{Event, IgnoredEvent, PushEvent};

const SIGNATURE: &str = "X-Hub-Signature";
const EVENT: &str = "X-Event-Key";
const DELIVERY: &str = "X-Request-Id";
const PUSH: &str = "repo:refs_changed";
const PING: &str = "diagnostics:ping";

/// A `kind: bitbucket-server` source (Bitbucket Data Center).
pub struct BitbucketServerSource {
    name: String,
    credentials: Credentials,
}

impl BitbucketServerSource {
    /// Builds the source from its config.
    pub fn new(config: &SourceConfig) -> BitbucketServerSource {
        BitbucketServerSource {
            name: config.name.clone(),
            credentials: config.credentials.clone(),
        }
    }
}

impl Source for BitbucketServerSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SourceKind {
        SourceKind::BitbucketServer
    }

    fn authenticate(&self, req: &Request) -> Result<(), AuthError> {
        if self.credentials.is_empty() {
            return loopback_only(req);
        }
        if let Some(secret) = &self.credentials.hmac_secret {
            check_hex_sha256_header(req, SIGNATURE, "sha256=", secret, req.body)?;
        }
        if let Some(basic) = &self.credentials.basic {
            check_basic(req, basic)?;
        }
        Ok(())
    }

    fn parse(&self, req: &Request) -> Result<Parsed, ParseError> {
        let event_type = req
            .header(EVENT)
            .ok_or(ParseError::MissingHeader(EVENT))?
            .trim()
            .to_string();
        let delivery_id = delivery_id_from(req, &[DELIVERY]);
        let (events, is_ping) = match event_type.as_str() {
            PUSH => (parse_push(&parse_json(req.body)?)?, false),
            PING => (
                vec![Event::Ignored(IgnoredEvent {
                    reason: "diagnostics:ping: Bitbucket checks that the hook is reachable"
                        .to_string(),
                })],
                true,
            ),
            other => (
                ignored(format!(
                    "bitbucket-server event type {other:?} starts no pipeline (only repo:refs_changed does)"
                )),
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
        &["x-event-key", "x-request-id", "user-agent", "content-type"]
    }

    fn sign(&self, body: &[u8], event_type: &str, delivery_id: &str) -> Vec<(String, String)> {
        let event = if event_type == "push" {
            PUSH
        } else {
            event_type
        };
        let mut headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            (EVENT.to_string(), event.to_string()),
            (DELIVERY.to_string(), delivery_id.to_string()),
        ];
        if let Some(secret) = &self.credentials.hmac_secret {
            let sig = hmac_sha256_hex(secret.expose().as_bytes(), body);
            headers.push((SIGNATURE.to_string(), format!("sha256={sig}")));
        }
        if let Some(basic) = &self.credentials.basic {
            headers.push(("Authorization".to_string(), basic_header(basic)));
        }
        headers
    }

    /// Bitbucket Data Center repeats the event key in the body's `eventKey`.
    fn infer_event_type(&self, req: &Request) -> EventTypeHint {
        if req.header(EVENT).is_some() {
            return EventTypeHint::Given;
        }
        let unknown = |why: String| EventTypeHint::Unknown { header: EVENT, why };
        match parse_json(req.body) {
            Ok(json) => match opt_str_at(&json, "/eventKey") {
                Some(key) => EventTypeHint::Inferred {
                    header: EVENT,
                    event_type: key,
                },
                None => unknown("it has no eventKey field".to_string()),
            },
            Err(e) => unknown(e.to_string()),
        }
    }
}

/// One push event per entry of `changes`.
fn parse_push(json: &serde_json::Value) -> Result<Vec<Event>, ParseError> {
    let project = str_at(json, "/repository/project/key")?;
    let slug = str_at(json, "/repository/slug")?;
    let repository = format!("{project}/{slug}");
    let clone_url = json
        .pointer("/repository/links/clone")
        .and_then(serde_json::Value::as_array)
        .and_then(|links| {
            links
                .iter()
                .find(|l| l.get("name").and_then(serde_json::Value::as_str) == Some("http"))
        })
        .and_then(|l| opt_str_at(l, "/href"));
    let pusher = opt_str_at(json, "/actor/name").or_else(|| opt_str_at(json, "/actor/slug"));
    let changes = json
        .pointer("/changes")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| ParseError::Field {
            field: "/changes".to_string(),
            reason: "missing or not an array".to_string(),
        })?;
    if changes.is_empty() {
        return Ok(ignored(
            "repo:refs_changed with an empty changes list: no ref moved".to_string(),
        ));
    }
    let mut events = Vec::with_capacity(changes.len());
    for (i, change) in changes.iter().enumerate() {
        let field = |e: ParseError| match e {
            ParseError::Field { field, reason } => ParseError::Field {
                field: format!("/changes/{i}{field}"),
                reason,
            },
            other => other,
        };
        let git_ref = opt_str_at(change, "/ref/id")
            .map(Ok)
            .unwrap_or_else(|| str_at(change, "/refId").map(str::to_string))
            .map_err(field)?;
        let from = str_at(change, "/fromHash").map_err(field)?;
        let to = str_at(change, "/toHash").map_err(field)?;
        let event = PushEvent::new(
            repository.clone(),
            git_ref,
            from,
            to,
            clone_url.clone(),
            pusher.clone(),
        );
        events.push(Event::Push(event));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BasicAuth, Secret};
    use crate::event::RefKind;
    use crate::source::test_support::{fixture, fixture_count, headers, request, PushCase};

    fn source(secret: Option<&str>, basic: Option<(&str, &str)>) -> BitbucketServerSource {
        BitbucketServerSource::new(&SourceConfig {
            name: "bitbucket".into(),
            kind: SourceKind::BitbucketServer,
            credentials: Credentials {
                hmac_secret: secret.map(Secret::new),
                basic: basic.map(|(u, p)| BasicAuth {
                    username: u.into(),
                    password: Secret::new(p),
                }),
                ..Credentials::default()
            },
            generic: None,
        })
    }

    /// The derived Bitbucket vector of test-vectors.json.
    #[test]
    fn signature_verifies_the_test_vector() {
        let s = source(Some("It's a Secret to Everybody"), None);
        let h = headers(&[(
            SIGNATURE,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        assert_eq!(s.authenticate(&request(&h, b"Hello, World!")), Ok(()));
        assert_eq!(
            s.authenticate(&request(&h, b"Hello, World?")),
            Err(AuthError::Mismatch(SIGNATURE.into()))
        );
        assert_eq!(
            source(Some("wrong"), None).authenticate(&request(&h, b"Hello, World!")),
            Err(AuthError::Mismatch(SIGNATURE.into()))
        );
        assert_eq!(
            s.authenticate(&request(&[], b"Hello, World!")),
            Err(AuthError::MissingHeader(SIGNATURE.into()))
        );
    }

    #[test]
    fn basic_auth_is_checked() {
        let s = source(None, Some(("hookd", "pa:ss word")));
        let signed = s.sign(b"{}", "push", "r-1");
        assert!(signed.contains(&(EVENT.to_string(), PUSH.to_string())));
        let h = headers(
            &signed
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        );
        assert_eq!(s.authenticate(&request(&h, b"{}")), Ok(()));
        // Basic auth does not cover the body: a changed body still passes,
        // which is why a secret is better when the sender supports it.
        assert_eq!(s.authenticate(&request(&h, b"{\"x\":1}")), Ok(()));
        let wrong_password = source(None, Some(("hookd", "other")));
        assert_eq!(
            wrong_password.authenticate(&request(&h, b"{}")),
            Err(AuthError::WrongBasicAuth)
        );
        let wrong_user = source(None, Some(("admin", "pa:ss word")));
        assert_eq!(
            wrong_user.authenticate(&request(&h, b"{}")),
            Err(AuthError::WrongBasicAuth)
        );
        assert_eq!(
            s.authenticate(&request(&[], b"{}")),
            Err(AuthError::MissingHeader("Authorization".into()))
        );
        let bearer = headers(&[("Authorization", "Bearer x")]);
        assert!(matches!(
            s.authenticate(&request(&bearer, b"{}")),
            Err(AuthError::Malformed { .. })
        ));
        let junk = headers(&[("Authorization", "Basic %%%")]);
        assert!(matches!(
            s.authenticate(&request(&junk, b"{}")),
            Err(AuthError::Malformed { .. })
        ));
        // Both configured: both are required.
        let both = source(Some("k"), Some(("hookd", "pa:ss word")));
        assert_eq!(
            both.authenticate(&request(&h, b"{}")),
            Err(AuthError::MissingHeader(SIGNATURE.into()))
        );
    }

    /// Every Bitbucket Data Center fixture parses into the expected normalized events.
    #[test]
    fn every_fixture_parses_into_the_expected_events() {
        let cases: &[(&str, PushCase)] = &[
            (
                "repo-refs_changed-update.json",
                (
                    "PRJ/my-repo",
                    "refs/heads/master",
                    RefKind::Branch,
                    Some("5c64a07cd6c0f21b753bf261ef059c7e7633c50a"),
                    Some("823b2230a56056231c9425d63758fa87078a66b4"),
                ),
            ),
            (
                "repo-refs_changed-update-v5.json",
                (
                    "ISCLOUD/transamerica.cloud.individual.tftest",
                    "refs/heads/trangineni/devtfvars-1685475548410",
                    RefKind::Branch,
                    Some("b2b710209761a3fab9fc867aad7b7725fd0fd028"),
                    Some("51a33664b6d7fb5aa15063064eb230362cd02e9e"),
                ),
            ),
            (
                "repo-refs_changed-branch-create.json",
                (
                    "PRJ/my-repo",
                    "refs/heads/develop",
                    RefKind::Branch,
                    None,
                    Some("208b0a5c05eddadad01f2aed8802fe0c3b3eaf5e"),
                ),
            ),
            (
                "repo-refs_changed-branch-delete.json",
                (
                    "PRJ/my-repo",
                    "refs/heads/develop",
                    RefKind::Branch,
                    Some("208b0a5c05eddadad01f2aed8802fe0c3b3eaf5e"),
                    None,
                ),
            ),
            (
                "repo-refs_changed-branch-delete-go-playground.json",
                (
                    "~gopher/webhook-test",
                    "refs/heads/feature/wip",
                    RefKind::Branch,
                    Some("32a0b8a740c2963c6f56bd8baf3dc05683d299e0"),
                    None,
                ),
            ),
            (
                "repo-refs_changed-tag-create.json",
                (
                    "PRJ/my-repo",
                    "refs/tags/v1.1.0",
                    RefKind::Tag,
                    None,
                    Some("823b2230a56056231c9425d63758fa87078a66b4"),
                ),
            ),
            (
                "repo-refs_changed-tag-delete.json",
                (
                    "PRJ/my-repo",
                    "refs/tags/v1.1.0",
                    RefKind::Tag,
                    Some("823b2230a56056231c9425d63758fa87078a66b4"),
                    None,
                ),
            ),
        ];
        assert_eq!(
            fixture_count("bitbucket-server"),
            cases.len(),
            "a Bitbucket Data Center fixture has no expectation here"
        );
        let s = source(None, None);
        for (file, (repo, r, kind, before, after)) in cases {
            let body = fixture("bitbucket-server", file);
            let h = headers(&[(EVENT, PUSH), (DELIVERY, "r-1")]);
            let parsed = s
                .parse(&request(&h, &body))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(parsed.delivery_id.as_deref(), Some("r-1"), "{file}");
            assert!(!parsed.is_ping);
            let [Event::Push(p)] = parsed.events.as_slice() else {
                panic!("{file}: expected one push event, got {:?}", parsed.events);
            };
            assert_eq!(p.repository, *repo, "{file}");
            assert_eq!(p.git_ref, *r, "{file}");
            assert_eq!(p.ref_kind, *kind, "{file}");
            assert_eq!(p.before.as_deref(), *before, "{file}");
            assert_eq!(p.after.as_deref(), *after, "{file}");
            assert!(p.pusher.is_some(), "{file}");
        }
        let body = fixture(
            "bitbucket-server",
            "repo-refs_changed-branch-delete-go-playground.json",
        );
        let parsed = s
            .parse(&request(&headers(&[(EVENT, PUSH)]), &body))
            .expect("parses");
        assert!(matches!(
            &parsed.events[..],
            [Event::Push(p)] if p.clone_url.as_deref() == Some("https://server.bitbucket.local/scm/~gopher/webhook-test.git")
        ));
    }

    #[test]
    fn ping_and_other_events() {
        let s = source(None, None);
        let ping = s
            .parse(&request(&headers(&[(EVENT, PING)]), br#"{"test": true}"#))
            .expect("parses");
        assert!(ping.is_ping);
        assert!(matches!(&ping.events[..], [Event::Ignored(_)]));
        let pr = s
            .parse(&request(&headers(&[(EVENT, "pr:opened")]), b"{}"))
            .expect("parses");
        assert!(!pr.is_ping);
        assert!(
            matches!(&pr.events[..], [Event::Ignored(i)] if i.reason.contains("\"pr:opened\"")),
            "{pr:?}"
        );
        let body = br#"{"repository":{"slug":"r","project":{"key":"P"}},"changes":[{"ref":{"id":"refs/heads/x"},"toHash":"ab"}]}"#;
        assert_eq!(
            s.parse(&request(&headers(&[(EVENT, PUSH)]), body)),
            Err(ParseError::Field {
                field: "/changes/0/fromHash".into(),
                reason: "missing".into()
            })
        );
    }
}

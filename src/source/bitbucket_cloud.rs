//! Bitbucket Cloud (bitbucket.org) webhooks.
//!
//! Authentication: `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw
//! body>`, sent only when the webhook has a secret. Event: `X-Event-Key:
//! repo:push`; other events are ignored. Delivery id: `X-Request-UUID`
//! (`X-Hook-UUID` names the webhook, not the delivery).
//!
//! One delivery may carry several ref changes: each `push.changes[]` entry
//! becomes its own push event. `new` is null when the ref was deleted and
//! `old` when it was created; the ref's kind comes from `new.type` (or
//! `old.type`): `branch` or `tag`. Repository: `repository.full_name`
//! (`workspace/slug`). Bitbucket Cloud sends no clone URL: the event carries
//! `repository.links.html.href` + `.git`, the HTTPS clone URL of that page;
//! pipelines of private repositories normally set `repo.url` (with
//! credentials) instead.

use super::auth::{check_hex_sha256_header, loopback_only};
use super::{
    delivery_id_from, hmac_sha256_hex, ignored, opt_str_at, parse_json, str_at, AuthError,
    EventTypeHint, ParseError, Parsed, Request, Source,
};
use crate::config::{Credentials, SourceConfig, SourceKind};
use crate::event::{Event, PushEvent};

const SIGNATURE: &str = "X-Hub-Signature";
const EVENT: &str = "X-Event-Key";
const DELIVERY: &str = "X-Request-UUID";
const PUSH: &str = "repo:push";

/// A `kind: bitbucket-cloud` source.
pub struct BitbucketCloudSource {
    name: String,
    credentials: Credentials,
}

impl BitbucketCloudSource {
    /// Builds the source from its config.
    pub fn new(config: &SourceConfig) -> BitbucketCloudSource {
        BitbucketCloudSource {
            name: config.name.clone(),
            credentials: config.credentials.clone(),
        }
    }
}

impl Source for BitbucketCloudSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SourceKind {
        SourceKind::BitbucketCloud
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
        let delivery_id = delivery_id_from(req, &[DELIVERY]);
        let json = parse_json(req.body)?;
        let events = if event_type == PUSH {
            parse_push(&json)?
        } else {
            ignored(format!(
                "bitbucket-cloud event type {event_type:?} starts no pipeline (only repo:push does)"
            ))
        };
        Ok(Parsed {
            event_type,
            delivery_id,
            events,
            is_ping: false,
            stored_body: None,
        })
    }

    fn kept_headers(&self) -> &'static [&'static str] {
        &[
            "x-event-key",
            "x-request-uuid",
            "x-hook-uuid",
            "x-attempt-number",
            "user-agent",
            "content-type",
        ]
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
            ("X-Attempt-Number".to_string(), "1".to_string()),
        ];
        if let Some(secret) = &self.credentials.hmac_secret {
            let sig = hmac_sha256_hex(secret.expose().as_bytes(), body);
            headers.push((SIGNATURE.to_string(), format!("sha256={sig}")));
        }
        headers
    }

    fn infer_event_type(&self, req: &Request) -> EventTypeHint {
        if req.header(EVENT).is_some() {
            return EventTypeHint::Given;
        }
        let unknown = |why: String| EventTypeHint::Unknown { header: EVENT, why };
        match parse_json(req.body) {
            Ok(json) if json.pointer("/push/changes").is_some_and(|c| c.is_array()) => {
                EventTypeHint::Inferred {
                    header: EVENT,
                    event_type: PUSH.to_string(),
                }
            }
            Ok(_) => unknown("it has no push.changes list".to_string()),
            Err(e) => unknown(e.to_string()),
        }
    }
}

/// One push event per entry of `push.changes`.
fn parse_push(json: &serde_json::Value) -> Result<Vec<Event>, ParseError> {
    let repository = str_at(json, "/repository/full_name")?;
    let clone_url = opt_str_at(json, "/repository/links/html/href")
        .map(|html| format!("{}.git", html.trim_end_matches('/')));
    let pusher = opt_str_at(json, "/actor/nickname")
        .or_else(|| opt_str_at(json, "/actor/username"))
        .or_else(|| opt_str_at(json, "/actor/display_name"));
    let changes = json
        .pointer("/push/changes")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| ParseError::Field {
            field: "/push/changes".to_string(),
            reason: "missing or not an array".to_string(),
        })?;
    if changes.is_empty() {
        return Ok(ignored(
            "repo:push with an empty push.changes list: no ref moved".to_string(),
        ));
    }
    let mut events = Vec::with_capacity(changes.len());
    for (i, change) in changes.iter().enumerate() {
        let at = format!("/push/changes/{i}");
        let new = change.get("new").filter(|v| v.is_object());
        let old = change.get("old").filter(|v| v.is_object());
        let (side, side_name) = match (new, old) {
            (Some(n), _) => (n, "new"),
            (None, Some(o)) => (o, "old"),
            (None, None) => {
                return Err(ParseError::Field {
                    field: at,
                    reason: "both new and old are null".to_string(),
                })
            }
        };
        let ref_name = str_at(side, "/name").map_err(|e| prefix(e, &at, side_name))?;
        let ref_type = str_at(side, "/type").map_err(|e| prefix(e, &at, side_name))?;
        let git_ref = match ref_type {
            "branch" => format!("refs/heads/{ref_name}"),
            "tag" => format!("refs/tags/{ref_name}"),
            _ => ref_name.to_string(),
        };
        let mut event = PushEvent::new(
            repository.to_string(),
            git_ref,
            hash(old),
            hash(new),
            clone_url.clone(),
            pusher.clone(),
        );
        event.forced = change
            .get("forced")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        events.push(Event::Push(event));
    }
    Ok(events)
}

/// The commit a side of a change points at; "" for a null side.
fn hash(side: Option<&serde_json::Value>) -> &str {
    side.and_then(|s| s.pointer("/target/hash"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
}

/// Re-roots a field error found inside `changes[i].new` / `.old`.
fn prefix(e: ParseError, at: &str, side: &str) -> ParseError {
    match e {
        ParseError::Field { field, reason } => ParseError::Field {
            field: format!("{at}/{side}{field}"),
            reason,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::event::RefKind;
    use crate::source::test_support::{fixture, fixture_count, headers, request, PushCase};

    fn source(secret: Option<&str>) -> BitbucketCloudSource {
        BitbucketCloudSource::new(&SourceConfig {
            name: "bitbucket".into(),
            kind: SourceKind::BitbucketCloud,
            credentials: Credentials {
                hmac_secret: secret.map(Secret::new),
                ..Credentials::default()
            },
            generic: None,
        })
    }

    /// The derived Bitbucket vector of test-vectors.json.
    #[test]
    fn signature_verifies_the_test_vector() {
        let s = source(Some("It's a Secret to Everybody"));
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
            source(Some("wrong")).authenticate(&request(&h, b"Hello, World!")),
            Err(AuthError::Mismatch(SIGNATURE.into()))
        );
        assert_eq!(
            s.authenticate(&request(&[], b"Hello, World!")),
            Err(AuthError::MissingHeader(SIGNATURE.into()))
        );
        let signed = s.sign(b"Hello, World!", "push", "u-1");
        assert!(signed.contains(&(
            SIGNATURE.to_string(),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_string()
        )));
        assert!(signed.contains(&(EVENT.to_string(), PUSH.to_string())));
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

    /// Every Bitbucket Cloud fixture parses into the expected normalized events.
    #[test]
    fn every_fixture_parses_into_the_expected_events() {
        let cases: &[(&str, PushCase)] = &[
            (
                "repo-push.json",
                (
                    "team_name/repo_name",
                    "refs/heads/name-of-branch",
                    RefKind::Branch,
                    Some("1e65c05c1d5171631d92438a13901ca7dae9618c"),
                    Some("709d658dc5b6d6afcd46049c2f332ee3f515a67d"),
                ),
            ),
            (
                "repo-push-go-scm.json",
                (
                    "brydzewski/foo",
                    "refs/heads/master",
                    RefKind::Branch,
                    Some("40e7580cf11311d84a6e5e97e2cbba6df1675750"),
                    Some("141977fedf5cf35aa290ac87d4b5177ac4cd9de1"),
                ),
            ),
            (
                "repo-push-branch-create.json",
                (
                    "brydzewski/foo",
                    "refs/heads/develop",
                    RefKind::Branch,
                    None,
                    Some("141977fedf5cf35aa290ac87d4b5177ac4cd9de1"),
                ),
            ),
            (
                "repo-push-branch-delete.json",
                (
                    "brydzewski/foo",
                    "refs/heads/develop",
                    RefKind::Branch,
                    Some("141977fedf5cf35aa290ac87d4b5177ac4cd9de1"),
                    None,
                ),
            ),
            (
                "repo-push-tag-create.json",
                (
                    "brydzewski/foo",
                    "refs/tags/feature/x",
                    RefKind::Tag,
                    None,
                    Some("141977fedf5cf35aa290ac87d4b5177ac4cd9de1"),
                ),
            ),
            (
                "repo-push-tag-delete.json",
                (
                    "brydzewski/foo",
                    "refs/tags/feature/x",
                    RefKind::Tag,
                    Some("141977fedf5cf35aa290ac87d4b5177ac4cd9de1"),
                    None,
                ),
            ),
        ];
        assert_eq!(
            fixture_count("bitbucket-cloud"),
            cases.len(),
            "a Bitbucket Cloud fixture has no expectation here"
        );
        let s = source(None);
        for (file, (repo, r, kind, before, after)) in cases {
            let body = fixture("bitbucket-cloud", file);
            let h = headers(&[(EVENT, PUSH), (DELIVERY, "u-1")]);
            let parsed = s
                .parse(&request(&h, &body))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(parsed.delivery_id.as_deref(), Some("u-1"), "{file}");
            let [Event::Push(p)] = parsed.events.as_slice() else {
                panic!("{file}: expected one push event, got {:?}", parsed.events);
            };
            assert_eq!(p.repository, *repo, "{file}");
            assert_eq!(p.git_ref, *r, "{file}");
            assert_eq!(p.ref_kind, *kind, "{file}");
            assert_eq!(p.before.as_deref(), *before, "{file}");
            assert_eq!(p.after.as_deref(), *after, "{file}");
            assert!(
                p.clone_url.as_deref().is_some_and(|u| u.ends_with(".git")),
                "{file}"
            );
            assert!(p.pusher.is_some(), "{file}");
        }
        let body = fixture("bitbucket-cloud", "repo-push-go-scm.json");
        let parsed = s
            .parse(&request(&headers(&[(EVENT, PUSH)]), &body))
            .expect("parses");
        assert!(matches!(
            &parsed.events[..],
            [Event::Push(p)] if p.clone_url.as_deref() == Some("https://bitbucket.org/brydzewski/foo.git")
                && p.pusher.as_deref() == Some("brydzewski")
        ));
    }

    #[test]
    fn each_change_is_its_own_event() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&fixture("bitbucket-cloud", "repo-push-go-scm.json"))
                .expect("json");
        let first = json["push"]["changes"][0].clone();
        let mut tag = first.clone();
        tag["new"]["type"] = "tag".into();
        tag["new"]["name"] = "v2".into();
        tag["old"] = serde_json::Value::Null;
        json["push"]["changes"] = serde_json::json!([first, tag]);
        let body = serde_json::to_vec(&json).expect("encode");
        let parsed = source(None)
            .parse(&request(&headers(&[(EVENT, PUSH)]), &body))
            .expect("parses");
        let refs: Vec<(&str, bool)> = parsed
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Push(p) => Some((p.git_ref.as_str(), p.is_creation())),
                _ => None,
            })
            .collect();
        assert_eq!(refs, [("refs/heads/master", false), ("refs/tags/v2", true)]);

        json["push"]["changes"] = serde_json::json!([{"new": null, "old": null}]);
        let body = serde_json::to_vec(&json).expect("encode");
        assert_eq!(
            source(None).parse(&request(&headers(&[(EVENT, PUSH)]), &body)),
            Err(ParseError::Field {
                field: "/push/changes/0".into(),
                reason: "both new and old are null".into()
            })
        );
        json["push"]["changes"] = serde_json::json!([{"new": {"type": "branch"}}]);
        let body = serde_json::to_vec(&json).expect("encode");
        assert_eq!(
            source(None).parse(&request(&headers(&[(EVENT, PUSH)]), &body)),
            Err(ParseError::Field {
                field: "/push/changes/0/new/name".into(),
                reason: "missing".into()
            })
        );
    }

    #[test]
    fn other_events_are_ignored() {
        let h = headers(&[(EVENT, "pullrequest:created")]);
        let parsed = source(None).parse(&request(&h, b"{}")).expect("parses");
        assert!(
            matches!(&parsed.events[..], [Event::Ignored(i)] if i.reason.contains("only repo:push")),
            "{parsed:?}"
        );
    }
}

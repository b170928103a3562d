//! GitLab webhooks (gitlab.com and self-managed).
//!
//! Authentication, each one that is configured must verify:
//! - `token_file`: the hook's secret token, sent verbatim in `X-Gitlab-Token`
//!   and compared in constant time;
//! - `signing_token_file`: GitLab's signing token (feature flag
//!   `webhook_signing_token`), which follows Standard Webhooks: `webhook-id`,
//!   `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//!   "{id}.{timestamp}.{body}">`, keyed with the base64 after `whsec_`. A
//!   timestamp more than five minutes from this host's clock is refused.
//!
//! Events (`X-Gitlab-Event`): `Push Hook` and `Tag Push Hook`, and a
//! `System Hook` whose `event_name` is `push` or `tag_push`; others are
//! ignored. Delivery id: `Idempotency-Key` (GitLab 17.4+, kept by "Resend
//! request"), else `X-Gitlab-Webhook-UUID`, else `X-Gitlab-Event-UUID` (the
//! last one is shared by webhooks that trigger each other, so it is only a
//! fallback for old GitLab). Repository: `project.path_with_namespace`, the
//! full group path. Clone URL: `project.git_http_url` (HTTPS; pipelines that
//! clone over SSH set `repo.url`).

use super::auth::{
    check_standard_webhooks, check_token_header, loopback_only, now_secs,
    standard_webhooks_signature, SW_ID, SW_SIGNATURE, SW_TIMESTAMP,
};
use super::{
    delivery_id_from, ignored, opt_str_at, parse_json, standard_webhooks_key, str_at, AuthError,
    EventTypeHint, ParseError, Parsed, Request, Source,
};
use crate::config::{Credentials, SourceConfig, SourceKind};
use crate::event::{Event, PushEvent};

const TOKEN: &str = "X-Gitlab-Token";
const EVENT: &str = "X-Gitlab-Event";
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
const WEBHOOK_UUID: &str = "X-Gitlab-Webhook-UUID";
const EVENT_UUID: &str = "X-Gitlab-Event-UUID";

/// A `kind: gitlab` source.
pub struct GitlabSource {
    name: String,
    credentials: Credentials,
    /// The decoded signing key; empty when the configured token does not
    /// decode (config validation prevents that), which then verifies nothing.
    signing_key: Option<Vec<u8>>,
}

impl GitlabSource {
    /// Builds the source from its config.
    pub fn new(config: &SourceConfig) -> GitlabSource {
        GitlabSource {
            name: config.name.clone(),
            signing_key: config
                .credentials
                .signing_token
                .as_ref()
                .map(|t| standard_webhooks_key(t.expose()).unwrap_or_default()),
            credentials: config.credentials.clone(),
        }
    }

    /// [`Source::authenticate`] with the clock given (Unix seconds), for the
    /// signing token's timestamp check.
    pub fn authenticate_at(&self, req: &Request, now_secs: i64) -> Result<(), AuthError> {
        if self.credentials.is_empty() {
            return loopback_only(req);
        }
        if let Some(token) = &self.credentials.token {
            check_token_header(req, TOKEN.into(), token)?;
        }
        if let Some(key) = &self.signing_key {
            if key.is_empty() {
                return Err(AuthError::Mismatch(SW_SIGNATURE.into()));
            }
            check_standard_webhooks(req, key, now_secs)?;
        }
        Ok(())
    }
}

impl Source for GitlabSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Gitlab
    }

    fn authenticate(&self, req: &Request) -> Result<(), AuthError> {
        self.authenticate_at(req, now_secs())
    }

    fn parse(&self, req: &Request) -> Result<Parsed, ParseError> {
        let event_type = req
            .header(EVENT)
            .ok_or(ParseError::MissingHeader(EVENT))?
            .trim()
            .to_string();
        let delivery_id = delivery_id_from(req, &[IDEMPOTENCY_KEY, WEBHOOK_UUID, EVENT_UUID]);
        let json = parse_json(req.body)?;
        let is_push = match event_type.as_str() {
            "Push Hook" | "Tag Push Hook" => true,
            "System Hook" => matches!(
                json.pointer("/event_name")
                    .and_then(serde_json::Value::as_str),
                Some("push" | "tag_push")
            ),
            _ => false,
        };
        let events = if is_push {
            vec![Event::Push(parse_push(&json)?)]
        } else {
            ignored(format!(
                "gitlab event type {event_type:?} starts no pipeline (only Push Hook and Tag Push Hook do)"
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
            "x-gitlab-event",
            "idempotency-key",
            "x-gitlab-webhook-uuid",
            "x-gitlab-event-uuid",
            "x-gitlab-instance",
            "webhook-id",
            "webhook-timestamp",
            "user-agent",
            "content-type",
        ]
    }

    fn sign(&self, body: &[u8], event_type: &str, delivery_id: &str) -> Vec<(String, String)> {
        let mut headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            (EVENT.to_string(), event_name(event_type, body)),
            (IDEMPOTENCY_KEY.to_string(), delivery_id.to_string()),
            (WEBHOOK_UUID.to_string(), delivery_id.to_string()),
        ];
        if let Some(token) = &self.credentials.token {
            headers.push((TOKEN.to_string(), token.expose().to_string()));
        }
        if let Some(key) = self.signing_key.as_ref().filter(|k| !k.is_empty()) {
            let ts = now_secs();
            headers.push((SW_ID.to_string(), delivery_id.to_string()));
            headers.push((SW_TIMESTAMP.to_string(), ts.to_string()));
            headers.push((
                SW_SIGNATURE.to_string(),
                standard_webhooks_signature(key, delivery_id, ts, body),
            ));
        }
        headers
    }

    fn infer_event_type(&self, req: &Request) -> EventTypeHint {
        if req.header(EVENT).is_some() {
            return EventTypeHint::Given;
        }
        let unknown = |why: String| EventTypeHint::Unknown { header: EVENT, why };
        let json = match parse_json(req.body) {
            Ok(json) => json,
            Err(e) => return unknown(e.to_string()),
        };
        match json.get("object_kind").and_then(serde_json::Value::as_str) {
            Some("push") => EventTypeHint::Inferred {
                header: EVENT,
                event_type: "Push Hook".to_string(),
            },
            Some("tag_push") => EventTypeHint::Inferred {
                header: EVENT,
                event_type: "Tag Push Hook".to_string(),
            },
            Some(other) => unknown(format!(
                "its object_kind is {other:?}; only push and tag_push are inferred"
            )),
            None => unknown("it has no object_kind field".to_string()),
        }
    }
}

/// GitLab's name for an event: given as-is (`Push Hook`), or the generic
/// word `push` resolved from the payload's `object_kind`.
fn event_name(event_type: &str, body: &[u8]) -> String {
    if event_type.ends_with(" Hook") {
        return event_type.to_string();
    }
    let object_kind = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("object_kind")?.as_str().map(str::to_string));
    match object_kind.as_deref().unwrap_or(event_type) {
        "tag_push" => "Tag Push Hook".to_string(),
        "push" => "Push Hook".to_string(),
        other => other.to_string(),
    }
}

fn parse_push(json: &serde_json::Value) -> Result<PushEvent, ParseError> {
    let git_ref = str_at(json, "/ref")?;
    let before = str_at(json, "/before")?;
    let after = str_at(json, "/after")?;
    let repository = str_at(json, "/project/path_with_namespace")?;
    let clone_url = opt_str_at(json, "/project/git_http_url")
        .or_else(|| opt_str_at(json, "/repository/git_http_url"));
    let pusher = opt_str_at(json, "/user_username").or_else(|| opt_str_at(json, "/user_name"));
    Ok(PushEvent::new(
        repository.to_string(),
        git_ref.to_string(),
        before,
        after,
        clone_url,
        pusher,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::event::RefKind;
    use crate::source::test_support::{fixture, fixture_count, headers, request, PushCase};

    fn source(token: Option<&str>, signing: Option<&str>) -> GitlabSource {
        GitlabSource::new(&SourceConfig {
            name: "gitlab".into(),
            kind: SourceKind::Gitlab,
            credentials: Credentials {
                token: token.map(Secret::new),
                signing_token: signing.map(Secret::new),
                ..Credentials::default()
            },
            generic: None,
        })
    }

    #[test]
    fn token_is_compared_as_is() {
        let s = source(Some("s3cret"), None);
        let good = headers(&[(TOKEN, "s3cret")]);
        assert_eq!(s.authenticate(&request(&good, b"{}")), Ok(()));
        // Tampering with the body cannot be detected by a plain token; a
        // wrong or missing token is.
        let wrong = headers(&[(TOKEN, "s3cret-not")]);
        assert_eq!(
            s.authenticate(&request(&wrong, b"{}")),
            Err(AuthError::WrongToken(TOKEN.into()))
        );
        assert_eq!(
            s.authenticate(&request(&[], b"{}")),
            Err(AuthError::MissingHeader(TOKEN.into()))
        );
        let signed = s.sign(b"{}", "push", "id-1");
        assert!(signed.contains(&(TOKEN.to_string(), "s3cret".to_string())));
        assert!(signed.contains(&(EVENT.to_string(), "Push Hook".to_string())));
        assert!(signed.contains(&(IDEMPOTENCY_KEY.to_string(), "id-1".to_string())));
    }

    /// The Standard Webhooks reference vector (test-vectors.json), through
    /// the GitLab source.
    #[test]
    fn signing_token_verifies_the_reference_vector() {
        let s = source(None, Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        let body = br#"{"test": 2432232314}"#;
        let h = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        assert_eq!(s.authenticate_at(&request(&h, body), 1614265330), Ok(()));
        assert_eq!(
            s.authenticate_at(&request(&h, br#"{"test": 2432232315}"#), 1614265330),
            Err(AuthError::Mismatch(SW_SIGNATURE.into()))
        );
        // Today the vector is years old: a replay.
        assert!(matches!(
            s.authenticate(&request(&h, body)),
            Err(AuthError::Stale { .. })
        ));
        assert_eq!(
            s.authenticate_at(&request(&h[..2].to_vec(), body), 1614265330),
            Err(AuthError::MissingHeader(SW_SIGNATURE.into()))
        );
        let other = source(None, Some("whsec_c2VjcmV0LWtleS1udW1iZXItdHdv"));
        assert_eq!(
            other.authenticate_at(&request(&h, body), 1614265330),
            Err(AuthError::Mismatch(SW_SIGNATURE.into()))
        );
        // What sign() attaches verifies now.
        let signed = s.sign(body, "Push Hook", "msg_1");
        let lowered = headers(
            &signed
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        );
        assert_eq!(s.authenticate(&request(&lowered, body)), Ok(()));
    }

    #[test]
    fn token_and_signing_token_are_both_required_when_both_are_set() {
        let s = source(
            Some("s3cret"),
            Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        );
        let signed = s.sign(b"{}", "push", "id");
        let all = headers(
            &signed
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        );
        assert_eq!(s.authenticate(&request(&all, b"{}")), Ok(()));
        let without_token: Vec<(String, String)> = all
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(TOKEN))
            .cloned()
            .collect();
        assert_eq!(
            s.authenticate(&request(&without_token, b"{}")),
            Err(AuthError::MissingHeader(TOKEN.into()))
        );
    }

    #[test]
    fn without_credentials_only_loopback_is_accepted() {
        let s = source(None, None);
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

    /// Every GitLab fixture parses into the expected normalized event.
    #[test]
    fn every_fixture_parses_into_the_expected_event() {
        let cases: &[(&str, &str, PushCase)] = &[
            (
                "push-hook.json",
                "Push Hook",
                (
                    "gitlab-org/hello-world",
                    "refs/heads/master",
                    RefKind::Branch,
                    Some("9217710ce8c7e1eae7a5d1c45f6e43e1c769f866"),
                    Some("2adc9465c4edfc33834e173fe89436a7cb899a1d"),
                ),
            ),
            (
                "push-hook.docs.json",
                "Push Hook",
                (
                    "mike/diaspora",
                    "refs/heads/master",
                    RefKind::Branch,
                    Some("95790bf891e76fee5e1747ab589903a6a1f80f22"),
                    Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7"),
                ),
            ),
            (
                "push-hook-branch-create.json",
                "Push Hook",
                (
                    "gitlab-org/hello-world",
                    "refs/heads/feature",
                    RefKind::Branch,
                    None,
                    Some("c4c79227ed610f1151f05bbc5be33b4f340d39c8"),
                ),
            ),
            (
                "push-hook-branch-delete.json",
                "Push Hook",
                (
                    "gitlab-org/hello-world",
                    "refs/heads/feature",
                    RefKind::Branch,
                    Some("c4c79227ed610f1151f05bbc5be33b4f340d39c8"),
                    None,
                ),
            ),
            (
                "tag-push-hook-create.json",
                "Tag Push Hook",
                (
                    "gitlab-org/hello-world",
                    "refs/tags/v1.0.0",
                    RefKind::Tag,
                    None,
                    Some("2adc9465c4edfc33834e173fe89436a7cb899a1d"),
                ),
            ),
            (
                "tag-push-hook-delete.json",
                "Tag Push Hook",
                (
                    "gitlab-org/hello-world",
                    "refs/tags/v1.0.0",
                    RefKind::Tag,
                    Some("2adc9465c4edfc33834e173fe89436a7cb899a1d"),
                    None,
                ),
            ),
            (
                "tag-push-hook.docs.json",
                "Tag Push Hook",
                (
                    "jsmith/example",
                    "refs/tags/v1.0.0",
                    RefKind::Tag,
                    None,
                    Some("82b3d5ae55f7080f1e6022629cdb57bfae7cccc7"),
                ),
            ),
        ];
        assert_eq!(
            fixture_count("gitlab"),
            cases.len(),
            "a GitLab fixture has no expectation here"
        );
        let s = source(None, None);
        for (file, event_type, (repo, r, kind, before, after)) in cases {
            let body = fixture("gitlab", file);
            let h = headers(&[(EVENT, event_type), (IDEMPOTENCY_KEY, "d-1")]);
            let parsed = s
                .parse(&request(&h, &body))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(parsed.delivery_id.as_deref(), Some("d-1"), "{file}");
            assert_eq!(parsed.event_type, *event_type, "{file}");
            let [Event::Push(p)] = parsed.events.as_slice() else {
                panic!("{file}: expected one push event, got {:?}", parsed.events);
            };
            assert_eq!(p.repository, *repo, "{file}");
            assert_eq!(p.git_ref, *r, "{file}");
            assert_eq!(p.ref_kind, *kind, "{file}");
            assert_eq!(p.before.as_deref(), *before, "{file}");
            assert_eq!(p.after.as_deref(), *after, "{file}");
            assert!(
                p.clone_url
                    .as_deref()
                    .is_some_and(|u| u.ends_with(".git") && u.starts_with("http")),
                "{file}: {:?}",
                p.clone_url
            );
            assert!(p.pusher.is_some(), "{file}");
        }
    }

    #[test]
    fn delivery_id_falls_back_through_the_documented_headers() {
        let s = source(None, None);
        let body = fixture("gitlab", "push-hook.json");
        for (pairs, expected) in [
            (
                vec![
                    (IDEMPOTENCY_KEY, "idem"),
                    (WEBHOOK_UUID, "hook"),
                    (EVENT_UUID, "chain"),
                ],
                Some("idem"),
            ),
            (
                vec![(WEBHOOK_UUID, "hook"), (EVENT_UUID, "chain")],
                Some("hook"),
            ),
            (vec![(EVENT_UUID, "chain")], Some("chain")),
            (vec![], None),
        ] {
            let mut pairs = pairs;
            pairs.push((EVENT, "Push Hook"));
            let h = headers(&pairs);
            let parsed = s.parse(&request(&h, &body)).expect("parses");
            assert_eq!(parsed.delivery_id.as_deref(), expected);
        }
    }

    #[test]
    fn other_events_are_ignored_and_system_hooks_read() {
        let s = source(None, None);
        let h = headers(&[(EVENT, "Merge Request Hook")]);
        let parsed = s
            .parse(&request(&h, br#"{"object_kind":"merge_request"}"#))
            .expect("parses");
        assert!(
            matches!(&parsed.events[..], [Event::Ignored(i)] if i.reason.contains("\"Merge Request Hook\" starts no pipeline")),
            "{parsed:?}"
        );
        let body = fixture("gitlab", "push-hook.json");
        let h = headers(&[(EVENT, "System Hook")]);
        let parsed = s.parse(&request(&h, &body)).expect("parses");
        assert!(matches!(&parsed.events[..], [Event::Push(_)]), "{parsed:?}");
        assert_eq!(
            s.parse(&request(&[], &body)),
            Err(ParseError::MissingHeader(EVENT))
        );
        assert_eq!(
            event_name("push", &fixture("gitlab", "tag-push-hook-create.json")),
            "Tag Push Hook"
        );
        assert_eq!(event_name("push", b"not json"), "Push Hook");
    }
}

//! Gitea, Forgejo and Gogs webhooks (Gitea's and Forgejo's "Gitea" /
//! "Forgejo" hook types send the same payload).
//!
//! Authentication, each one that is configured must verify:
//! - `secret_file` / `secret_env`: `X-Gitea-Signature` (same value in
//!   `X-Forgejo-Signature` and `X-Gogs-Signature`), the lower-case hex
//!   HMAC-SHA256 of the JSON payload, no prefix. The JSON is what is signed
//!   for every transport: for a form POST or a GET it is the `payload`
//!   field's value, not the form bytes. Senders without a secret still send
//!   these headers, empty: an empty header is not a signature.
//! - `bearer_token_file`: the hook's optional "Authorization header" (Gitea
//!   1.19+), set to `Bearer <token>`.
//!
//! Events: `X-Gitea-Event` / `X-Forgejo-Event` / `X-Gogs-Event` = `push`;
//! others (`create`, `delete`, …) are ignored: the push event that comes with
//! a new branch or tag is what runs. Delivery id: `X-Gitea-Delivery` (or the
//! Forgejo / Gogs copy). Transports: POST `application/json`, POST
//! `application/x-www-form-urlencoded` (`payload=`), and GET (`?payload=`).

use std::borrow::Cow;

use super::auth::{check_bearer, check_hex_sha256_header, hmac_digest, loopback_only};
use super::{
    delivery_id_from, form_payload, has_fields, hmac_sha256_hex, ignored, opt_str_at, parse_json,
    str_at, AuthError, EventTypeHint, ParseError, Parsed, Request, Source,
};
use crate::config::{Credentials, HmacAlgorithm, SourceConfig, SourceKind};
use crate::event::{Event, PushEvent};

const SIGNATURES: &[&str] = &[
    "X-Gitea-Signature",
    "X-Forgejo-Signature",
    "X-Gogs-Signature",
];
const EVENTS: &[&str] = &["X-Gitea-Event", "X-Forgejo-Event", "X-Gogs-Event"];
const DELIVERIES: &[&str] = &["X-Gitea-Delivery", "X-Forgejo-Delivery", "X-Gogs-Delivery"];

/// A `kind: gitea` source (Gitea, Forgejo, Gogs).
pub struct GiteaSource {
    name: String,
    credentials: Credentials,
}

impl GiteaSource {
    /// Builds the source from its config.
    pub fn new(config: &SourceConfig) -> GiteaSource {
        GiteaSource {
            name: config.name.clone(),
            credentials: config.credentials.clone(),
        }
    }
}

/// The JSON payload bytes, whichever transport carried them; `Err` names
/// what is missing.
fn payload<'r>(req: &Request<'r>) -> Result<Cow<'r, [u8]>, ParseError> {
    if req.is_get() {
        form_payload(req.query.as_bytes())
            .map(|p| Cow::Owned(p.into_bytes()))
            .ok_or(ParseError::NoQueryPayload)
    } else if req.is_form() {
        form_payload(req.body)
            .map(|p| Cow::Owned(p.into_bytes()))
            .ok_or(ParseError::NoFormPayload)
    } else {
        Ok(Cow::Borrowed(req.body))
    }
}

impl Source for GiteaSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Gitea
    }

    fn authenticate(&self, req: &Request) -> Result<(), AuthError> {
        if self.credentials.is_empty() {
            return loopback_only(req);
        }
        if let Some(secret) = &self.credentials.hmac_secret {
            // The first signature header with a value; else the first present
            // (empty) one, refused as unsigned; else the Gitea name, missing.
            let header = SIGNATURES
                .iter()
                .find(|h| req.header(h).is_some_and(|v| !v.trim().is_empty()))
                .or_else(|| SIGNATURES.iter().find(|h| req.header(h).is_some()))
                .copied()
                .unwrap_or(SIGNATURES[0]);
            // Without a payload to check, the raw body is checked (and fails).
            let signed = payload(req).unwrap_or(Cow::Borrowed(req.body));
            check_hex_sha256_header(req, header, "", secret, &signed)?;
        }
        if let Some(token) = &self.credentials.bearer_token {
            check_bearer(req, token)?;
        }
        Ok(())
    }

    fn parse(&self, req: &Request) -> Result<Parsed, ParseError> {
        let event_type = req
            .first_header(EVENTS)
            .map(|(_, v)| v.to_string())
            .ok_or(ParseError::MissingHeader(EVENTS[0]))?;
        let delivery_id = delivery_id_from(req, DELIVERIES);
        let body = payload(req)?;
        let json = parse_json(&body)?;
        let events = if event_type == "push" {
            vec![Event::Push(parse_push(&json)?)]
        } else {
            ignored(format!(
                "gitea event type {event_type:?} starts no pipeline (only push does)"
            ))
        };
        Ok(Parsed {
            event_type,
            delivery_id,
            events,
            is_ping: false,
            stored_body: req.is_get().then(|| body.into_owned()),
        })
    }

    fn kept_headers(&self) -> &'static [&'static str] {
        &[
            "x-gitea-event",
            "x-gitea-event-type",
            "x-gitea-delivery",
            "x-forgejo-event",
            "x-forgejo-event-type",
            "x-forgejo-delivery",
            "x-gogs-event",
            "x-gogs-delivery",
            "user-agent",
            "content-type",
        ]
    }

    fn sign(&self, body: &[u8], event_type: &str, delivery_id: &str) -> Vec<(String, String)> {
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        for forge in ["Gitea", "Gogs", "GitHub"] {
            headers.push((format!("X-{forge}-Delivery"), delivery_id.to_string()));
            headers.push((format!("X-{forge}-Event"), event_type.to_string()));
            headers.push((format!("X-{forge}-Event-Type"), event_type.to_string()));
        }
        if let Some(secret) = &self.credentials.hmac_secret {
            let key = secret.expose().as_bytes();
            let sig = hmac_sha256_hex(key, body);
            headers.push(("X-Gitea-Signature".to_string(), sig.clone()));
            headers.push(("X-Gogs-Signature".to_string(), sig.clone()));
            headers.push((
                "X-Hub-Signature".to_string(),
                format!(
                    "sha1={}",
                    hex::encode(hmac_digest(HmacAlgorithm::Sha1, key, &[body]))
                ),
            ));
            headers.push(("X-Hub-Signature-256".to_string(), format!("sha256={sig}")));
        }
        if let Some(token) = &self.credentials.bearer_token {
            headers.push((
                "Authorization".to_string(),
                format!("Bearer {}", token.expose()),
            ));
        }
        headers
    }

    fn accepts_get(&self) -> bool {
        true
    }

    fn infer_event_type(&self, req: &Request) -> EventTypeHint {
        if req.first_header(EVENTS).is_some() {
            return EventTypeHint::Given;
        }
        let unknown = |why: String| EventTypeHint::Unknown {
            header: EVENTS[0],
            why,
        };
        let json = match payload(req).and_then(|body| parse_json(&body)) {
            Ok(json) => json,
            Err(e) => return unknown(e.to_string()),
        };
        if has_fields(&json, &["ref", "before", "after", "repository"]) {
            EventTypeHint::Inferred {
                header: EVENTS[0],
                event_type: "push".to_string(),
            }
        } else {
            unknown("it lacks a push's fields (ref, before, after, repository)".to_string())
        }
    }
}

fn parse_push(json: &serde_json::Value) -> Result<PushEvent, ParseError> {
    let git_ref = str_at(json, "/ref")?;
    let before = str_at(json, "/before")?;
    let after = str_at(json, "/after")?;
    let repository = str_at(json, "/repository/full_name")?;
    let pusher = opt_str_at(json, "/pusher/login")
        .or_else(|| opt_str_at(json, "/pusher/username"))
        .or_else(|| opt_str_at(json, "/sender/login"));
    Ok(PushEvent::new(
        repository.to_string(),
        git_ref.to_string(),
        before,
        after,
        opt_str_at(json, "/repository/clone_url"),
        pusher,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::event::RefKind;
    use crate::source::test_support::{fixture, fixture_count, headers, request, PushCase};

    const VECTOR_SECRET: &str = "It's a Secret to Everybody";
    const VECTOR_SIG: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn source(secret: Option<&str>, bearer: Option<&str>) -> GiteaSource {
        GiteaSource::new(&SourceConfig {
            name: "gitea".into(),
            kind: SourceKind::Gitea,
            credentials: Credentials {
                hmac_secret: secret.map(Secret::new),
                bearer_token: bearer.map(Secret::new),
                ..Credentials::default()
            },
            generic: None,
        })
    }

    /// The derived Gitea/Forgejo vector of test-vectors.json, under each header name.
    #[test]
    fn signature_verifies_the_test_vector_under_every_header_name() {
        let s = source(Some(VECTOR_SECRET), None);
        for name in SIGNATURES {
            let h = headers(&[(name, VECTOR_SIG)]);
            assert_eq!(
                s.authenticate(&request(&h, b"Hello, World!")),
                Ok(()),
                "{name}"
            );
            assert_eq!(
                s.authenticate(&request(&h, b"Hello, World?")),
                Err(AuthError::Mismatch((*name).into())),
                "{name}"
            );
        }
        let other = source(Some("another secret"), None);
        let h = headers(&[("X-Gitea-Signature", VECTOR_SIG)]);
        assert_eq!(
            other.authenticate(&request(&h, b"Hello, World!")),
            Err(AuthError::Mismatch("X-Gitea-Signature".into()))
        );
        assert_eq!(
            s.authenticate(&request(&[], b"Hello, World!")),
            Err(AuthError::MissingHeader("X-Gitea-Signature".into()))
        );
        let signed = s.sign(b"Hello, World!", "push", "d");
        assert!(signed.contains(&("X-Gitea-Signature".to_string(), VECTOR_SIG.to_string())));
        assert!(signed.contains(&(
            "X-Hub-Signature".to_string(),
            "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59".to_string()
        )));
    }

    /// Gitea sends the signature headers empty when the hook has no secret.
    #[test]
    fn empty_signature_headers_are_not_signatures() {
        let s = source(Some(VECTOR_SECRET), None);
        let unsigned = headers(&[
            ("X-Gitea-Signature", ""),
            ("X-Gogs-Signature", ""),
            ("X-Hub-Signature", "sha1="),
            ("X-Hub-Signature-256", "sha256="),
        ]);
        assert_eq!(
            s.authenticate(&request(&unsigned, b"Hello, World!")),
            Err(AuthError::Unsigned("X-Gitea-Signature".into()))
        );
        // An empty Gitea header next to a real Forgejo one: the real one counts.
        let mixed = headers(&[
            ("X-Gitea-Signature", ""),
            ("X-Forgejo-Signature", VECTOR_SIG),
        ]);
        assert_eq!(s.authenticate(&request(&mixed, b"Hello, World!")), Ok(()));
    }

    #[test]
    fn form_and_get_deliveries_are_signed_over_the_json_payload() {
        let s = source(Some(VECTOR_SECRET), None);
        let json = fixture("gitea", "push.json");
        let sig = hmac_sha256_hex(VECTOR_SECRET.as_bytes(), &json);
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &String::from_utf8_lossy(&json))
            .finish();
        let h = headers(&[
            ("X-Gitea-Signature", &sig),
            ("X-Gitea-Event", "push"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ]);
        let req = request(&h, form.as_bytes());
        assert_eq!(s.authenticate(&req), Ok(()));
        let parsed = s.parse(&req).expect("parses");
        assert!(
            matches!(&parsed.events[..], [Event::Push(p)] if p.repository == "gogits/hello-world")
        );
        assert_eq!(parsed.stored_body, None);

        let h = headers(&[("X-Gitea-Signature", &sig), ("X-Gitea-Event", "push")]);
        let query = format!("from=gitea&{form}");
        let get = Request {
            method: "GET",
            headers: &h,
            query: &query,
            body: b"",
            from_loopback: false,
        };
        assert_eq!(s.authenticate(&get), Ok(()));
        let parsed = s.parse(&get).expect("parses");
        assert_eq!(parsed.stored_body.as_deref(), Some(json.as_slice()));
        assert!(matches!(&parsed.events[..], [Event::Push(_)]));
        let tampered = query.replace("master", "main");
        let get = Request {
            query: &tampered,
            ..get
        };
        assert_eq!(
            s.authenticate(&get),
            Err(AuthError::Mismatch("X-Gitea-Signature".into()))
        );
        let none = Request { query: "", ..get };
        assert_eq!(s.parse(&none), Err(ParseError::NoQueryPayload));
    }

    #[test]
    fn bearer_authorization_header_is_checked() {
        let s = source(None, Some("t0ken"));
        let good = headers(&[("Authorization", "Bearer t0ken")]);
        assert_eq!(s.authenticate(&request(&good, b"{}")), Ok(()));
        let wrong = headers(&[("Authorization", "Bearer t0ken2")]);
        assert_eq!(
            s.authenticate(&request(&wrong, b"{}")),
            Err(AuthError::WrongToken("Authorization bearer token".into()))
        );
        assert_eq!(
            s.authenticate(&request(&[], b"{}")),
            Err(AuthError::MissingHeader("Authorization".into()))
        );
    }

    /// Every Gitea fixture parses into the expected normalized event.
    #[test]
    fn every_fixture_parses_into_the_expected_event() {
        let cases: &[(&str, PushCase)] = &[
            (
                "push.json",
                (
                    "gogits/hello-world",
                    "refs/heads/master",
                    RefKind::Branch,
                    Some("9836a96a253cce25d17988fcf41b8c4205cf779f"),
                    Some("4522cbcefc20728a5b72b3a86af35e608622c514"),
                ),
            ),
            (
                "push.docs.json",
                (
                    "gitea/webhooks",
                    "refs/heads/develop",
                    RefKind::Branch,
                    Some("28e1879d029cb852e4844d9c718537df08844e03"),
                    Some("bffeb74224043ba2feb48d137756c8a9331c449a"),
                ),
            ),
            (
                "push-branch-create.json",
                (
                    "example/example",
                    "refs/heads/master",
                    RefKind::Branch,
                    None,
                    Some("67b56589a45103f891bdee7c0546e5d40bc02001"),
                ),
            ),
        ];
        assert_eq!(
            fixture_count("gitea"),
            cases.len(),
            "a Gitea fixture has no expectation here"
        );
        let s = source(None, None);
        for (file, (repo, r, kind, before, after)) in cases {
            let body = fixture("gitea", file);
            for event_header in EVENTS {
                let h = headers(&[(event_header, "push"), ("X-Forgejo-Delivery", "d-1")]);
                let parsed = s
                    .parse(&request(&h, &body))
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                assert_eq!(parsed.delivery_id.as_deref(), Some("d-1"), "{file}");
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
        }
    }

    #[test]
    fn other_events_are_ignored() {
        let s = source(None, None);
        let h = headers(&[("X-Gitea-Event", "delete")]);
        let parsed = s.parse(&request(&h, b"{}")).expect("parses");
        assert!(
            matches!(&parsed.events[..], [Event::Ignored(i)] if i.reason.contains("\"delete\" starts no pipeline")),
            "{parsed:?}"
        );
        assert_eq!(
            s.parse(&request(&[], b"{}")),
            Err(ParseError::MissingHeader("X-Gitea-Event"))
        );
    }
}

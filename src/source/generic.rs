//! Generic webhooks: any sender without an adapter of its own (a deploy
//! bot, a CI job, a script with curl).
//!
//! Alerts: with an `alert:` mapping (instead of `push:`) the source produces
//! alert events: `alerts` points at an array of alerts (or is omitted: the
//! document is one alert), and `status`, `name`, `labels`, `annotations`,
//! `fingerprint`, `startsAt` point into each alert; a missing fingerprint is
//! derived from the labels, a missing name taken from the `alertname` label.
//!
//! Payload: JSON pointers (RFC 6901) from the source's `push:` mapping pick
//! the push event's fields. A GET request's query string, a form-encoded
//! body, and a POST with an empty body (its query string) are read as a flat
//! JSON object of strings, so `/ref` reads `?ref=…` (the first value of a
//! repeated parameter counts; the token parameter is never part of it). A
//! ref without `refs/` names a branch: `main` is `refs/heads/main`; tags are
//! sent as `refs/tags/v1`. Every delivery is one push event.
//!
//! Authentication, each one that is configured must verify:
//! - `hmac` with `secret_file` / `secret_env`: a header carrying
//!   `<prefix><hex or base64 HMAC-SHA1/256/512 of the raw body>`;
//! - `token` with `token_file`: the token verbatim in a header or a query
//!   parameter;
//! - `bearer_token_file`: `Authorization: Bearer <token>`;
//! - `basic`: `Authorization: Basic …`.
//!
//! GET is accepted when the request itself carries the proof (token, bearer
//! or basic) and no body signature is configured (a GET has no body to
//! sign). A source without credentials accepts only loopback POSTs with
//! `Content-Type: application/json`: a web page in a local browser cannot
//! send that without a CORS preflight, which hookd does not answer.

use super::auth::{
    base64_decode, base64_encode, basic_header, check_basic, check_bearer, check_token_header,
    hmac_digest, loopback_only, secrets_equal, verify_hmac,
};
use super::{parse_json, AuthError, ParseError, Parsed, Request, Source};
use crate::config::{
    Credentials, DeliveryIdPlace, GenericConfig, HmacConfig, Secret, SignatureEncoding,
    SourceConfig, SourceKind, TokenPlace,
};
use crate::event::{label_fingerprint, AlertEvent, AlertStatus, Event, PushEvent};

/// A `kind: generic` source.
pub struct GenericSource {
    name: String,
    credentials: Credentials,
    settings: GenericConfig,
}

impl GenericSource {
    /// Builds the source from its config (a missing generic section means
    /// the documented default mapping).
    pub fn new(config: &SourceConfig) -> GenericSource {
        GenericSource {
            name: config.name.clone(),
            credentials: config.credentials.clone(),
            settings: config.generic.clone().unwrap_or_default(),
        }
    }

    /// The query parameter that carries the token, if that is where it goes.
    fn token_parameter(&self) -> Option<&str> {
        match &self.settings.token {
            Some(TokenPlace::Query(name)) => Some(name),
            _ => None,
        }
    }

    /// The document the push mapping reads, and whether it came from the
    /// query string (then it is also what the delivery stores).
    fn document(&self, req: &Request) -> Result<(serde_json::Value, bool), ParseError> {
        let skip = self.token_parameter();
        if req.is_get() || req.body.iter().all(u8::is_ascii_whitespace) {
            Ok((flat_object(req.query.as_bytes(), skip), true))
        } else if req.is_form() {
            Ok((flat_object(req.body, skip), false))
        } else {
            Ok((parse_json(req.body)?, false))
        }
    }
}

/// `a=1&b=2` as `{"a": "1", "b": "2"}`; the first value of a name counts.
fn flat_object(form: &[u8], skip: Option<&str>) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(form) {
        if Some(k.as_ref()) == skip || map.contains_key(k.as_ref()) {
            continue;
        }
        map.insert(k.into_owned(), serde_json::Value::String(v.into_owned()));
    }
    serde_json::Value::Object(map)
}

/// `<prefix><encoded HMAC of the raw body>` in the configured header.
fn check_hmac(req: &Request, h: &HmacConfig, secret: &Secret) -> Result<(), AuthError> {
    let header = || std::borrow::Cow::Owned(h.header.clone());
    let value = req
        .header(&h.header)
        .ok_or_else(|| AuthError::MissingHeader(header()))?
        .trim();
    if value.is_empty() || value == h.prefix {
        return Err(AuthError::Unsigned(header()));
    }
    let encoded = value
        .strip_prefix(h.prefix.as_str())
        .ok_or_else(|| AuthError::Malformed {
            header: header(),
            reason: "does not start with the configured prefix",
        })?;
    let signature = match h.encoding {
        SignatureEncoding::Hex => hex::decode(encoded).ok(),
        SignatureEncoding::Base64 => base64_decode(encoded),
    }
    .ok_or_else(|| AuthError::Malformed {
        header: header(),
        reason: match h.encoding {
            SignatureEncoding::Hex => "signature is not hex",
            SignatureEncoding::Base64 => "signature is not base64",
        },
    })?;
    if verify_hmac(
        h.algorithm,
        secret.expose().as_bytes(),
        &[req.body],
        &signature,
    ) {
        Ok(())
    } else {
        Err(AuthError::Mismatch(header()))
    }
}

/// The token verbatim in a query parameter.
fn check_query_token(req: &Request, name: &str, token: &Secret) -> Result<(), AuthError> {
    let given = form_urlencoded::parse(req.query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .ok_or_else(|| AuthError::MissingQueryParameter(name.to_string().into()))?;
    if secrets_equal(given.as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(AuthError::WrongToken(
            format!("{name} query parameter").into(),
        ))
    }
}

impl Source for GenericSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Generic
    }

    fn authenticate(&self, req: &Request) -> Result<(), AuthError> {
        let c = &self.credentials;
        if c.is_empty() {
            return loopback_only(req);
        }
        match (&self.settings.hmac, &c.hmac_secret) {
            (Some(h), Some(secret)) => check_hmac(req, h, secret)?,
            (None, None) => {}
            // Config validation pairs them; a half-configured check verifies nothing.
            (Some(h), None) => return Err(AuthError::Mismatch(h.header.clone().into())),
            (None, Some(_)) => return Err(AuthError::Mismatch("signature".into())),
        }
        if let Some(token) = &c.token {
            match &self.settings.token {
                Some(TokenPlace::Header(name)) => {
                    check_token_header(req, name.clone().into(), token)?
                }
                Some(TokenPlace::Query(name)) => check_query_token(req, name, token)?,
                None => return Err(AuthError::WrongToken("token".into())),
            }
        }
        if let Some(token) = &c.bearer_token {
            check_bearer(req, token)?;
        }
        if let Some(basic) = &c.basic {
            check_basic(req, basic)?;
        }
        Ok(())
    }

    fn parse(&self, req: &Request) -> Result<Parsed, ParseError> {
        let (doc, from_query) = self.document(req)?;
        if let Some(alert) = &self.settings.alert {
            let stored_body = if from_query {
                Some(serde_json::to_vec(&doc).map_err(|e| ParseError::Json(e.to_string()))?)
            } else {
                None
            };
            return Ok(Parsed {
                event_type: "alert".to_string(),
                delivery_id: self.delivery_id(req, &doc),
                events: parse_alerts(&doc, alert)?,
                is_ping: false,
                stored_body,
            });
        }
        let m = &self.settings.push;
        let repository = string_at(&doc, &m.repository)?.ok_or_else(|| missing(&m.repository))?;
        let raw_ref = string_at(&doc, &m.git_ref)?.ok_or_else(|| missing(&m.git_ref))?;
        if raw_ref.is_empty() {
            return Err(ParseError::Field {
                field: m.git_ref.clone(),
                reason: "empty".to_string(),
            });
        }
        let git_ref = if raw_ref.starts_with("refs/") {
            raw_ref
        } else {
            format!("refs/heads/{raw_ref}")
        };
        // `after` must be there; null (like empty or zeros) is a deletion.
        if doc.pointer(&m.after).is_none() {
            return Err(missing(&m.after));
        }
        let after = string_at(&doc, &m.after)?.unwrap_or_default();
        let before = string_at(&doc, &m.before)?.unwrap_or_default();
        let clone_url = string_at(&doc, &m.clone_url)?.filter(|s| !s.is_empty());
        let pusher = string_at(&doc, &m.pusher)?.filter(|s| !s.is_empty());
        let delivery_id = self.delivery_id(req, &doc);
        let event = PushEvent::new(repository, git_ref, &before, &after, clone_url, pusher);
        let stored_body = if from_query {
            Some(serde_json::to_vec(&doc).map_err(|e| ParseError::Json(e.to_string()))?)
        } else {
            None
        };
        Ok(Parsed {
            event_type: "push".to_string(),
            delivery_id,
            events: vec![Event::Push(event)],
            is_ping: false,
            stored_body,
        })
    }

    fn kept_headers(&self) -> &'static [&'static str] {
        &["content-type", "user-agent"]
    }

    fn sign(&self, body: &[u8], _event_type: &str, delivery_id: &str) -> Vec<(String, String)> {
        let c = &self.credentials;
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if let (Some(h), Some(secret)) = (&self.settings.hmac, &c.hmac_secret) {
            let mac = hmac_digest(h.algorithm, secret.expose().as_bytes(), &[body]);
            let encoded = match h.encoding {
                SignatureEncoding::Hex => hex::encode(mac),
                SignatureEncoding::Base64 => base64_encode(&mac),
            };
            headers.push((h.header.clone(), format!("{}{encoded}", h.prefix)));
        }
        if let (Some(TokenPlace::Header(name)), Some(token)) = (&self.settings.token, &c.token) {
            headers.push((name.clone(), token.expose().to_string()));
        }
        if let Some(token) = &c.bearer_token {
            headers.push((
                "Authorization".to_string(),
                format!("Bearer {}", token.expose()),
            ));
        }
        if let Some(basic) = &c.basic {
            headers.push(("Authorization".to_string(), basic_header(basic)));
        }
        if let Some(DeliveryIdPlace::Header(name)) = &self.settings.delivery_id {
            headers.push((name.clone(), delivery_id.to_string()));
        }
        headers
    }

    fn accepts_get(&self) -> bool {
        let c = &self.credentials;
        self.settings.hmac.is_none()
            && (c.token.is_some() || c.bearer_token.is_some() || c.basic.is_some())
    }
}

fn missing(pointer: &str) -> ParseError {
    ParseError::Field {
        field: pointer.to_string(),
        reason: "missing".to_string(),
    }
}

/// The string at `pointer`: `None` when absent or null, an error for other types.
fn string_at(doc: &serde_json::Value, pointer: &str) -> Result<Option<String>, ParseError> {
    match doc.pointer(pointer) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ParseError::Field {
            field: pointer.to_string(),
            reason: format!("expected a string, found {}", super::json_type(other)),
        }),
    }
}

impl GenericSource {
    /// The sender's delivery id, where the config says it is.
    fn delivery_id(&self, req: &Request, doc: &serde_json::Value) -> Option<String> {
        match &self.settings.delivery_id {
            None => None,
            Some(DeliveryIdPlace::Header(name)) => req
                .header(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string),
            Some(DeliveryIdPlace::Pointer(p)) => match doc.pointer(p) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            },
        }
    }
}

/// Alert events from a generic payload, per the source's `alert:` mapping.
fn parse_alerts(
    doc: &serde_json::Value,
    m: &crate::config::AlertMapping,
) -> Result<Vec<Event>, ParseError> {
    let items: Vec<(String, &serde_json::Value)> = match &m.alerts {
        None => vec![(String::new(), doc)],
        Some(p) => doc
            .pointer(p)
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| ParseError::Field {
                field: p.clone(),
                reason: "missing or not an array of alerts".into(),
            })?
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("{p}/{i}"), a))
            .collect(),
    };
    let object = |v: &serde_json::Value, p: &str| -> std::collections::BTreeMap<String, String> {
        v.pointer(p)
            .and_then(serde_json::Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                        (k.clone(), v)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut events = Vec::with_capacity(items.len());
    for (at, a) in items {
        let status_text =
            string_at(a, &m.status)?.ok_or_else(|| missing(&format!("{at}{}", m.status)))?;
        let status = match status_text.to_ascii_lowercase().as_str() {
            "firing" | "alerting" | "triggered" | "problem" => AlertStatus::Firing,
            "resolved" | "ok" | "recovered" => AlertStatus::Resolved,
            other => {
                return Err(ParseError::Field {
                    field: format!("{at}{}", m.status),
                    reason: format!("{other:?} is neither firing (firing, alerting, triggered, problem) nor resolved (resolved, ok, recovered)"),
                })
            }
        };
        let mut labels = object(a, &m.labels);
        let name = string_at(a, &m.name)?
            .filter(|n| !n.is_empty())
            .or_else(|| labels.get("alertname").cloned())
            .ok_or_else(|| missing(&format!("{at}{}", m.name)))?;
        labels
            .entry("alertname".to_string())
            .or_insert_with(|| name.clone());
        let fingerprint = string_at(a, &m.fingerprint)?
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| label_fingerprint(&labels));
        events.push(Event::Alert(AlertEvent {
            status,
            name,
            fingerprint,
            annotations: object(a, &m.annotations),
            starts_at: string_at(a, &m.starts_at)?.filter(|s| !s.is_empty()),
            ends_at: None,
            generator_url: None,
            group_labels: Default::default(),
            group_key: None,
            external_url: None,
            labels,
            extra: Default::default(),
        }));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BasicAuth, HmacAlgorithm, PushMapping};
    use crate::event::{RefKind, ZERO_SHA};
    use crate::source::test_support::{headers, request};

    const SECRET: &str = "It's a Secret to Everybody";
    const SHA: &str = "2adc9465c4edfc33834e173fe89436a7cb899a1d";

    fn source(credentials: Credentials, settings: GenericConfig) -> GenericSource {
        GenericSource::new(&SourceConfig {
            name: "generic".into(),
            kind: SourceKind::Generic,
            credentials,
            generic: Some(settings),
        })
    }

    fn hmac_source(
        algorithm: HmacAlgorithm,
        encoding: SignatureEncoding,
        prefix: &str,
    ) -> GenericSource {
        source(
            Credentials {
                hmac_secret: Some(Secret::new(SECRET)),
                ..Credentials::default()
            },
            GenericConfig {
                hmac: Some(HmacConfig {
                    header: "X-Signature".into(),
                    algorithm,
                    encoding,
                    prefix: prefix.into(),
                }),
                ..GenericConfig::default()
            },
        )
    }

    fn get<'a>(headers: &'a dyn crate::source::Headers, query: &'a str) -> Request<'a> {
        Request {
            method: "GET",
            headers,
            query,
            body: b"",
            from_loopback: false,
        }
    }

    /// Every algorithm × encoding, with and without a prefix. The sha1 and
    /// sha256 values are the GitHub vectors of test-vectors.json.
    #[test]
    fn hmac_signatures_in_every_algorithm_and_encoding() {
        let body = b"Hello, World!";
        let sha256_hex = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let sha1_hex = "01dc10d0c83e72ed246219cdd91669667fe2ca59";
        let to_b64 = |h: &str| base64_encode(&hex::decode(h).expect("hex"));
        let cases: Vec<(HmacAlgorithm, SignatureEncoding, &str, String)> = vec![
            (
                HmacAlgorithm::Sha256,
                SignatureEncoding::Hex,
                "sha256=",
                format!("sha256={sha256_hex}"),
            ),
            (
                HmacAlgorithm::Sha256,
                SignatureEncoding::Hex,
                "",
                sha256_hex.to_uppercase(),
            ),
            (
                HmacAlgorithm::Sha256,
                SignatureEncoding::Base64,
                "",
                to_b64(sha256_hex),
            ),
            (
                HmacAlgorithm::Sha1,
                SignatureEncoding::Hex,
                "sha1=",
                format!("sha1={sha1_hex}"),
            ),
            (
                HmacAlgorithm::Sha1,
                SignatureEncoding::Base64,
                "v1,",
                format!("v1,{}", to_b64(sha1_hex)),
            ),
            (
                HmacAlgorithm::Sha512,
                SignatureEncoding::Hex,
                "sha512=",
                format!(
                    "sha512={}",
                    hex::encode(hmac_digest(
                        HmacAlgorithm::Sha512,
                        SECRET.as_bytes(),
                        &[body]
                    ))
                ),
            ),
            (
                HmacAlgorithm::Sha512,
                SignatureEncoding::Base64,
                "",
                base64_encode(&hmac_digest(
                    HmacAlgorithm::Sha512,
                    SECRET.as_bytes(),
                    &[body],
                )),
            ),
        ];
        for (alg, enc, prefix, value) in cases {
            let what = format!("{alg:?} {enc:?} {prefix:?}");
            let s = hmac_source(alg, enc, prefix);
            let h = headers(&[("X-Signature", &value)]);
            assert_eq!(s.authenticate(&request(&h, body)), Ok(()), "{what}");
            assert_eq!(
                s.authenticate(&request(&h, b"Hello, World?")),
                Err(AuthError::Mismatch("X-Signature".into())),
                "{what}"
            );
            assert_eq!(
                s.authenticate(&request(&[], body)),
                Err(AuthError::MissingHeader("X-Signature".into())),
                "{what}"
            );
            let mut wrong = hmac_source(alg, enc, prefix);
            wrong.credentials.hmac_secret = Some(Secret::new("another secret"));
            assert_eq!(
                wrong.authenticate(&request(&h, body)),
                Err(AuthError::Mismatch("X-Signature".into())),
                "{what}"
            );
            // sign() writes what verifies (hex lower-case).
            let signed = s.sign(body, "push", "d");
            let signed = headers(
                &signed
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect::<Vec<_>>(),
            );
            assert_eq!(s.authenticate(&request(&signed, body)), Ok(()), "{what}");
            assert!(!s.accepts_get(), "{what}: a GET has no body to sign");
        }
        let s = hmac_source(HmacAlgorithm::Sha256, SignatureEncoding::Hex, "sha256=");
        for (value, expected) in [
            (
                "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59",
                AuthError::Malformed {
                    header: "X-Signature".into(),
                    reason: "does not start with the configured prefix",
                },
            ),
            (
                "sha256=xyz",
                AuthError::Malformed {
                    header: "X-Signature".into(),
                    reason: "signature is not hex",
                },
            ),
            ("sha256=", AuthError::Unsigned("X-Signature".into())),
            ("sha256=abcd", AuthError::Mismatch("X-Signature".into())),
        ] {
            let h = headers(&[("X-Signature", value)]);
            assert_eq!(s.authenticate(&request(&h, body)), Err(expected), "{value}");
        }
    }

    fn token_source(place: TokenPlace) -> GenericSource {
        source(
            Credentials {
                token: Some(Secret::new("t0ken")),
                ..Credentials::default()
            },
            GenericConfig {
                token: Some(place),
                push: PushMapping {
                    after: "/sha".into(),
                    ..PushMapping::default()
                },
                ..GenericConfig::default()
            },
        )
    }

    #[test]
    fn header_token() {
        let s = token_source(TokenPlace::Header("X-Deploy-Token".into()));
        let good = headers(&[("X-Deploy-Token", "t0ken")]);
        assert_eq!(s.authenticate(&request(&good, b"{}")), Ok(()));
        let wrong = headers(&[("X-Deploy-Token", "t0ken!")]);
        assert_eq!(
            s.authenticate(&request(&wrong, b"{}")),
            Err(AuthError::WrongToken("X-Deploy-Token".into()))
        );
        assert_eq!(
            s.authenticate(&request(&[], b"{}")),
            Err(AuthError::MissingHeader("X-Deploy-Token".into()))
        );
        assert!(s.accepts_get());
        assert!(s
            .sign(b"{}", "push", "d")
            .contains(&("X-Deploy-Token".to_string(), "t0ken".to_string())));
    }

    #[test]
    fn query_token_and_a_get_payload() {
        let s = token_source(TokenPlace::Query("token".into()));
        let query = format!("repository=acme%2Finfra&ref=main&sha={SHA}&token=t0ken");
        let req = get(&[], &query);
        assert_eq!(s.authenticate(&req), Ok(()));
        let parsed = s.parse(&req).expect("parses");
        let [Event::Push(p)] = parsed.events.as_slice() else {
            panic!("{parsed:?}");
        };
        assert_eq!(p.repository, "acme/infra");
        assert_eq!(p.git_ref, "refs/heads/main");
        assert_eq!(p.ref_kind, RefKind::Branch);
        assert_eq!(p.after.as_deref(), Some(SHA));
        assert_eq!(p.before, None);
        // The stored body is the query as JSON, without the token.
        let stored: serde_json::Value =
            serde_json::from_slice(parsed.stored_body.as_deref().expect("stored")).expect("json");
        assert_eq!(
            stored,
            serde_json::json!({"repository": "acme/infra", "ref": "main", "sha": SHA})
        );

        let wrong = query.replace("t0ken", "guess");
        assert_eq!(
            s.authenticate(&get(&[], &wrong)),
            Err(AuthError::WrongToken("token query parameter".into()))
        );
        let none = query.replace("&token=t0ken", "");
        assert_eq!(
            s.authenticate(&get(&[], &none)),
            Err(AuthError::MissingQueryParameter("token".into()))
        );
    }

    #[test]
    fn basic_and_bearer() {
        let basic = source(
            Credentials {
                basic: Some(BasicAuth {
                    username: "bot".into(),
                    password: Secret::new("pw"),
                }),
                ..Credentials::default()
            },
            GenericConfig::default(),
        );
        let good = headers(&[(
            "Authorization",
            &basic_header(&BasicAuth {
                username: "bot".into(),
                password: Secret::new("pw"),
            }),
        )]);
        assert_eq!(basic.authenticate(&request(&good, b"{}")), Ok(()));
        let wrong = headers(&[(
            "Authorization",
            &basic_header(&BasicAuth {
                username: "bot".into(),
                password: Secret::new("pw2"),
            }),
        )]);
        assert_eq!(
            basic.authenticate(&request(&wrong, b"{}")),
            Err(AuthError::WrongBasicAuth)
        );
        assert_eq!(
            basic.authenticate(&request(&[], b"{}")),
            Err(AuthError::MissingHeader("Authorization".into()))
        );
        assert!(basic.accepts_get());

        let bearer = source(
            Credentials {
                bearer_token: Some(Secret::new("b")),
                ..Credentials::default()
            },
            GenericConfig::default(),
        );
        let good = headers(&[("authorization", "bearer b")]);
        assert_eq!(bearer.authenticate(&request(&good, b"{}")), Ok(()));
        let wrong = headers(&[("Authorization", "Bearer c")]);
        assert!(matches!(
            bearer.authenticate(&request(&wrong, b"{}")),
            Err(AuthError::WrongToken(_))
        ));
    }

    #[test]
    fn without_credentials_only_loopback_json_posts() {
        let s = source(Credentials::default(), GenericConfig::default());
        assert!(!s.accepts_get());
        let json = headers(&[("Content-Type", "application/json; charset=utf-8")]);
        let mut req = request(&json, b"{}");
        assert_eq!(s.authenticate(&req), Err(AuthError::NotLoopback));
        req.from_loopback = true;
        assert_eq!(s.authenticate(&req), Ok(()));
        let text = headers(&[("Content-Type", "text/plain")]);
        let mut req = request(&text, b"{}");
        req.from_loopback = true;
        assert_eq!(s.authenticate(&req), Err(AuthError::BrowserSendable));
        let mut req = get(&json, "ref=main");
        req.from_loopback = true;
        assert_eq!(s.authenticate(&req), Err(AuthError::BrowserSendable));
    }

    #[test]
    fn mapping_reads_json_bodies() {
        let s = source(
            Credentials::default(),
            GenericConfig {
                push: PushMapping {
                    repository: "/repo/full_name".into(),
                    git_ref: "/ref".into(),
                    before: "/before".into(),
                    after: "/after".into(),
                    clone_url: "/repo/url".into(),
                    pusher: "/who/0".into(),
                },
                delivery_id: Some(DeliveryIdPlace::Pointer("/id".into())),
                ..GenericConfig::default()
            },
        );
        let body = serde_json::json!({
            "id": 42,
            "repo": {"full_name": "acme/infra", "url": "https://git.example/acme/infra.git"},
            "ref": "refs/tags/v1.2",
            "before": ZERO_SHA,
            "after": SHA,
            "who": ["ops"],
        });
        let body = serde_json::to_vec(&body).expect("encode");
        let parsed = s.parse(&request(&[], &body)).expect("parses");
        assert_eq!(parsed.delivery_id.as_deref(), Some("42"));
        assert_eq!(parsed.stored_body, None);
        let [Event::Push(p)] = parsed.events.as_slice() else {
            panic!("{parsed:?}");
        };
        assert_eq!(p.git_ref, "refs/tags/v1.2");
        assert_eq!(p.ref_kind, RefKind::Tag);
        assert!(p.is_creation());
        assert_eq!(
            p.clone_url.as_deref(),
            Some("https://git.example/acme/infra.git")
        );
        assert_eq!(p.pusher.as_deref(), Some("ops"));

        // Deletion: after null, empty or zeros.
        for after in [serde_json::Value::Null, "".into(), ZERO_SHA.into()] {
            let body =
                serde_json::json!({"repo": {"full_name": "a/b"}, "ref": "main", "after": after});
            let parsed = s
                .parse(&request(&[], &serde_json::to_vec(&body).expect("encode")))
                .expect("parses");
            assert!(
                matches!(&parsed.events[..], [Event::Push(p)] if p.is_deletion()),
                "{after}"
            );
        }
        for (body, field, reason) in [
            (
                r#"{"ref": "main", "after": "ab"}"#,
                "/repo/full_name",
                "missing",
            ),
            (
                r#"{"repo": {"full_name": "a/b"}, "after": "ab"}"#,
                "/ref",
                "missing",
            ),
            (
                r#"{"repo": {"full_name": "a/b"}, "ref": "main"}"#,
                "/after",
                "missing",
            ),
            (
                r#"{"repo": {"full_name": "a/b"}, "ref": "", "after": "ab"}"#,
                "/ref",
                "empty",
            ),
            (
                r#"{"repo": {"full_name": "a/b"}, "ref": "main", "after": 7}"#,
                "/after",
                "expected a string, found a number",
            ),
        ] {
            assert_eq!(
                s.parse(&request(&[], body.as_bytes())),
                Err(ParseError::Field {
                    field: field.into(),
                    reason: reason.into()
                }),
                "{body}"
            );
        }
        assert!(matches!(
            s.parse(&request(&[], b"{oops")),
            Err(ParseError::Json(_))
        ));
    }

    #[test]
    fn form_bodies_and_empty_posts_read_as_flat_objects() {
        let s = source(
            Credentials::default(),
            GenericConfig {
                delivery_id: Some(DeliveryIdPlace::Header("X-Request-Id".into())),
                ..GenericConfig::default()
            },
        );
        let form = format!("repository=a%2Fb&ref=refs%2Ftags%2Fv1&after={SHA}&ref=ignored");
        let h = headers(&[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Request-Id", "r-9"),
        ]);
        let parsed = s.parse(&request(&h, form.as_bytes())).expect("parses");
        assert_eq!(parsed.delivery_id.as_deref(), Some("r-9"));
        assert!(matches!(&parsed.events[..], [Event::Push(p)] if p.git_ref == "refs/tags/v1"));
        assert_eq!(parsed.stored_body, None);

        let post = Request {
            query: &form,
            ..request(&[], b"")
        };
        let parsed = s.parse(&post).expect("parses");
        assert!(matches!(&parsed.events[..], [Event::Push(p)] if p.repository == "a/b"));
        assert!(parsed.stored_body.is_some());
    }

    #[test]
    fn alert_mappings_make_alert_events() {
        let config = crate::config::DaemonConfig::from_yaml(
            std::path::Path::new("/etc/hookd/hookd.yaml"),
            "sources:\n  mon:\n    kind: generic\n    alert: { alerts: /items, status: /state, name: /check, labels: /tags, startsAt: /since }\n",
        )
        .expect("valid config");
        let s = GenericSource::new(&config.sources["mon"]);
        let body = br#"{"items": [
            {"state": "ALERTING", "check": "DiskFull", "tags": {"host": "db-3"}, "since": "2026-11-27T10:00:00Z"},
            {"state": "ok", "check": "Load", "tags": {"host": "web-1"}}
        ]}"#;
        let req = Request {
            method: "POST",
            headers: &[],
            query: "",
            body,
            from_loopback: true,
        };
        let parsed = s.parse(&req).expect("parses");
        assert_eq!(parsed.event_type, "alert");
        let alerts: Vec<&AlertEvent> = parsed
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Alert(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].status, AlertStatus::Firing);
        assert_eq!(alerts[0].name, "DiskFull");
        assert_eq!(alerts[0].labels["host"], "db-3");
        assert_eq!(alerts[0].labels["alertname"], "DiskFull");
        assert_eq!(alerts[0].starts_at.as_deref(), Some("2026-11-27T10:00:00Z"));
        assert_eq!(alerts[0].fingerprint, label_fingerprint(&alerts[0].labels));
        assert_eq!(alerts[1].status, AlertStatus::Resolved);
        let bad = br#"{"items": [{"state": "maybe", "check": "X"}]}"#;
        let err = s
            .parse(&Request {
                body: bad,
                ..req.clone()
            })
            .expect_err("unknown status");
        assert!(err.to_string().contains("/items/0/state"), "{err}");
        let err = crate::config::DaemonConfig::from_yaml(
            std::path::Path::new("/etc/hookd/hookd.yaml"),
            "sources:\n  mon: { kind: generic, push: { ref: /ref }, alert: { status: state } }\n",
        )
        .expect_err("invalid")
        .to_string();
        assert!(err.contains("set push or alert, not both"), "{err}");
        assert!(
            err.contains("sources.mon.alert.status: \"state\" is not a JSON pointer"),
            "{err}"
        );
    }
}

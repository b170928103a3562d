//! Grafana Alerting webhooks (the unified-alerting webhook contact point).
//!
//! Authentication, each one that is configured must verify:
//! - `secret_file` / `secret_env`: Grafana's HMAC signature, hex
//!   HMAC-SHA256 in `X-Grafana-Alerting-Signature` (the name most setups
//!   configure) or `X-Grafana-Alert-Signature` (Grafana's code default).
//!   When the request carries `X-Grafana-Alerting-Timestamp` (or
//!   `X-Grafana-Alert-Timestamp`), the signed string is `<ts>:<body>` and a
//!   timestamp more than five minutes off is refused (replay protection);
//!   without it, the body alone is signed. Configure those header names in
//!   Grafana's HMAC settings;
//! - `bearer_token_file` (`Authorization: Bearer …`), `basic: {username,
//!   password_file}`.
//!
//! The body is Alertmanager's shape plus Grafana's fields; each alert becomes
//! its own event, keeping `values`, `dashboardURL`, `panelURL`, `silenceURL`
//! and `imageURL` as extras. Grafana sends no delivery id.

use super::alertmanager::{check_http_credentials, http_credential_headers, parse_alerts};
use super::auth::{loopback_only, now_secs, verify_hmac_sha256_hex, MAX_TIMESTAMP_SKEW_SECS};
use super::{hmac_sha256_hex, parse_json, AuthError, ParseError, Parsed, Request, Source};
use crate::config::{Credentials, SourceConfig, SourceKind};

const SIGNATURES: &[&str] = &["X-Grafana-Alerting-Signature", "X-Grafana-Alert-Signature"];
const TIMESTAMPS: &[&str] = &["X-Grafana-Alerting-Timestamp", "X-Grafana-Alert-Timestamp"];
const EXTRAS: &[&str] = &[
    "values",
    "dashboardURL",
    "panelURL",
    "silenceURL",
    "imageURL",
];

/// A `kind: grafana` source.
pub struct GrafanaSource {
    name: String,
    credentials: Credentials,
}

impl GrafanaSource {
    /// Builds the source from its config.
    pub fn new(config: &SourceConfig) -> GrafanaSource {
        GrafanaSource {
            name: config.name.clone(),
            credentials: config.credentials.clone(),
        }
    }
}

/// The string Grafana signs: `<ts>:<body>` with a timestamp header, else the body.
fn signed_bytes(ts: Option<&str>, body: &[u8]) -> Vec<u8> {
    match ts {
        Some(ts) => [ts.as_bytes(), b":", body].concat(),
        None => body.to_vec(),
    }
}

impl Source for GrafanaSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Grafana
    }

    fn authenticate(&self, req: &Request) -> Result<(), AuthError> {
        if self.credentials.is_empty() {
            return loopback_only(req);
        }
        if let Some(secret) = &self.credentials.hmac_secret {
            let (header, sig) = req
                .first_header(SIGNATURES)
                .ok_or(AuthError::MissingHeader(SIGNATURES[0].into()))?;
            let ts = req.first_header(TIMESTAMPS);
            if let Some((ts_header, ts)) = ts {
                let at: i64 = ts.trim().parse().map_err(|_| AuthError::Malformed {
                    header: ts_header.into(),
                    reason: "expected Unix seconds",
                })?;
                let skew = (now_secs() - at).abs();
                if skew > MAX_TIMESTAMP_SKEW_SECS {
                    return Err(AuthError::Stale {
                        header: ts_header,
                        skew_secs: skew,
                        max_secs: MAX_TIMESTAMP_SKEW_SECS,
                    });
                }
            }
            let signed = signed_bytes(ts.map(|(_, v)| v.trim()), req.body);
            match verify_hmac_sha256_hex(secret.expose().as_bytes(), &signed, sig) {
                Some(true) => {}
                Some(false) => return Err(AuthError::Mismatch(header.into())),
                None => {
                    return Err(AuthError::Malformed {
                        header: header.into(),
                        reason: "expected 64 hex digits",
                    })
                }
            }
        }
        if self.credentials.bearer_token.is_some() || self.credentials.basic.is_some() {
            let http_only = Credentials {
                hmac_secret: None,
                ..self.credentials.clone()
            };
            check_http_credentials(&http_only, req)?;
        }
        Ok(())
    }

    fn parse(&self, req: &Request) -> Result<Parsed, ParseError> {
        let json = parse_json(req.body)?;
        Ok(Parsed {
            event_type: "alert".to_string(),
            delivery_id: None,
            events: parse_alerts(&json, EXTRAS)?,
            is_ping: false,
            stored_body: None,
        })
    }

    fn kept_headers(&self) -> &'static [&'static str] {
        &["user-agent", "content-type", "x-grafana-alerting-timestamp"]
    }

    fn sign(&self, body: &[u8], _event_type: &str, _delivery_id: &str) -> Vec<(String, String)> {
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if let Some(secret) = &self.credentials.hmac_secret {
            let ts = now_secs().to_string();
            let sig = hmac_sha256_hex(secret.expose().as_bytes(), &signed_bytes(Some(&ts), body));
            headers.push((TIMESTAMPS[0].to_string(), ts));
            headers.push((SIGNATURES[0].to_string(), sig));
        }
        headers.extend(http_credential_headers(&self.credentials));
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::event::{AlertStatus, Event};
    use crate::source::test_support::{fixture, request as req};

    fn source(credentials: Credentials) -> GrafanaSource {
        GrafanaSource::new(&SourceConfig {
            name: "grafana".into(),
            kind: SourceKind::Grafana,
            credentials,
            generic: None,
        })
    }

    #[test]
    fn the_docs_fixture_parses_with_grafana_extras() {
        let body = fixture("grafana", "webhook-firing.docs.json");
        let parsed = source(Credentials::default())
            .parse(&req(&[], &body))
            .expect("parses");
        assert!(!parsed.events.is_empty());
        let Event::Alert(a) = &parsed.events[0] else {
            panic!("{:?}", parsed.events[0])
        };
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.name, "High memory usage");
        assert_eq!(a.fingerprint, "c6eadffa33fcdf37");
        assert_eq!(a.labels["team"], "blue");
        assert!(a.extra.contains_key("values"), "{:?}", a.extra);
        assert!(a.extra.contains_key("silenceURL"));
        assert!(
            !a.extra.contains_key("dashboardURL"),
            "empty strings are not kept"
        );
    }

    #[test]
    fn signatures_match_the_derived_vectors() {
        let secret = b"It's a Secret to Everybody";
        assert_eq!(
            hmac_sha256_hex(secret, &signed_bytes(Some("1700000000"), b"Hello, World!")),
            "94ac3bf0d5bdfc570017f816ec45cb6bf3e09aca7e735f1aae5fdbe2567d226a"
        );
        assert_eq!(
            hmac_sha256_hex(secret, &signed_bytes(None, b"Hello, World!")),
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn hmac_with_and_without_timestamp_and_tampering() {
        let s = source(Credentials {
            hmac_secret: Some(Secret::new("It's a Secret to Everybody")),
            ..Default::default()
        });
        let body = br#"{"alerts":[]}"#;
        let headers: Vec<(String, String)> = s
            .sign(body, "alert", "")
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        assert_eq!(s.authenticate(&req(&headers, body)), Ok(()));
        assert!(matches!(
            s.authenticate(&req(&headers, br#"{"alerts":[1]}"#)),
            Err(AuthError::Mismatch(_))
        ));
        // Without a timestamp header, the body alone is signed (code-default header name).
        let plain = vec![(
            "x-grafana-alert-signature".to_string(),
            hmac_sha256_hex(b"It's a Secret to Everybody", body),
        )];
        assert_eq!(s.authenticate(&req(&plain, body)), Ok(()));
        // A timestamp from 2023 is a replay.
        let old = vec![
            (
                "x-grafana-alerting-timestamp".to_string(),
                "1700000000".to_string(),
            ),
            (
                "x-grafana-alerting-signature".to_string(),
                hmac_sha256_hex(
                    b"It's a Secret to Everybody",
                    &signed_bytes(Some("1700000000"), body),
                ),
            ),
        ];
        assert!(matches!(
            s.authenticate(&req(&old, body)),
            Err(AuthError::Stale { .. })
        ));
        assert!(matches!(
            s.authenticate(&req(&[], body)),
            Err(AuthError::MissingHeader(_))
        ));
        let wrong = source(Credentials {
            hmac_secret: Some(Secret::new("other")),
            ..Default::default()
        });
        assert!(matches!(
            wrong.authenticate(&req(&headers, body)),
            Err(AuthError::Mismatch(_))
        ));
    }
}

//! Prometheus Alertmanager webhooks (payload version 4).
//!
//! Authentication, each one that is configured must verify (Alertmanager
//! signs nothing; credentials come from its receiver's `http_config`):
//! `bearer_token_file` (`Authorization: Bearer …`), `basic: {username,
//! password_file}`; without credentials, loopback senders only.
//!
//! One notification groups alerts: each alert becomes its own event with its
//! status, labels, annotations, `startsAt`, `endsAt`, `generatorURL`,
//! `fingerprint` (derived from the sorted labels when absent, e.g. with a
//! custom payload template), plus the group's labels, `groupKey` and
//! `externalURL`. Alertmanager sends no delivery id: repeats are recognised
//! per alert (fingerprint + `startsAt`), not per delivery.

use std::collections::BTreeMap;

use super::auth::{basic_header, check_basic, check_bearer, loopback_only};
use super::{opt_str_at, parse_json, AuthError, ParseError, Parsed, Request, Source};
use crate::config::{Credentials, SourceConfig, SourceKind};
use crate::event::{label_fingerprint, AlertEvent, AlertStatus, Event};

/// A `kind: alertmanager` source.
pub struct AlertmanagerSource {
    name: String,
    credentials: Credentials,
}

impl AlertmanagerSource {
    /// Builds the source from its config.
    pub fn new(config: &SourceConfig) -> AlertmanagerSource {
        AlertmanagerSource {
            name: config.name.clone(),
            credentials: config.credentials.clone(),
        }
    }
}

/// Checks the bearer token and basic auth that are configured.
pub(crate) fn check_http_credentials(
    credentials: &Credentials,
    req: &Request,
) -> Result<(), AuthError> {
    if credentials.is_empty() {
        return loopback_only(req);
    }
    if let Some(token) = &credentials.bearer_token {
        check_bearer(req, token)?;
    }
    if let Some(basic) = &credentials.basic {
        check_basic(req, basic)?;
    }
    Ok(())
}

/// The `Authorization` header a sender configured with these credentials attaches.
pub(crate) fn http_credential_headers(credentials: &Credentials) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    if let Some(token) = &credentials.bearer_token {
        headers.push((
            "Authorization".to_string(),
            format!("Bearer {}", token.expose()),
        ));
    }
    if let Some(basic) = &credentials.basic {
        headers.push(("Authorization".to_string(), basic_header(basic)));
    }
    headers
}

fn string_map(v: Option<&serde_json::Value>) -> BTreeMap<String, String> {
    v.and_then(serde_json::Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Alertmanager's "zero time" (`0001-01-01T00:00:00Z`) means "not set".
fn time_at(v: &serde_json::Value, pointer: &str) -> Option<String> {
    opt_str_at(v, pointer).filter(|t| !t.starts_with("0001-01-01"))
}

/// Splits an Alertmanager-shaped notification into one event per alert;
/// `extra` names per-alert fields kept as sender extras (Grafana's).
pub(crate) fn parse_alerts(
    json: &serde_json::Value,
    extra: &[&str],
) -> Result<Vec<Event>, ParseError> {
    let alerts = json
        .get("alerts")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| ParseError::Field {
            field: "/alerts".into(),
            reason: "missing or not an array".into(),
        })?;
    let group_labels = string_map(json.get("groupLabels"));
    let group_key = opt_str_at(json, "/groupKey");
    let external_url = opt_str_at(json, "/externalURL");
    let fallback_status = opt_str_at(json, "/status");
    let mut events = Vec::with_capacity(alerts.len());
    for (i, a) in alerts.iter().enumerate() {
        let labels = string_map(a.get("labels"));
        let status = match opt_str_at(a, "/status")
            .or_else(|| fallback_status.clone())
            .as_deref()
        {
            Some("firing") => AlertStatus::Firing,
            Some("resolved") => AlertStatus::Resolved,
            other => {
                return Err(ParseError::Field {
                    field: format!("/alerts/{i}/status"),
                    reason: format!("expected firing or resolved, found {other:?}"),
                })
            }
        };
        let fingerprint =
            opt_str_at(a, "/fingerprint").unwrap_or_else(|| label_fingerprint(&labels));
        let extra = extra
            .iter()
            .filter_map(|k| {
                a.get(*k)
                    .filter(|v| !v.is_null() && v.as_str() != Some(""))
                    .map(|v| (k.to_string(), v.clone()))
            })
            .collect();
        events.push(Event::Alert(AlertEvent {
            status,
            name: labels.get("alertname").cloned().unwrap_or_default(),
            fingerprint,
            annotations: string_map(a.get("annotations")),
            starts_at: time_at(a, "/startsAt"),
            ends_at: time_at(a, "/endsAt"),
            generator_url: opt_str_at(a, "/generatorURL"),
            group_labels: group_labels.clone(),
            group_key: group_key.clone(),
            external_url: external_url.clone(),
            labels,
            extra,
        }));
    }
    Ok(events)
}

impl Source for AlertmanagerSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Alertmanager
    }

    fn authenticate(&self, req: &Request) -> Result<(), AuthError> {
        check_http_credentials(&self.credentials, req)
    }

    fn parse(&self, req: &Request) -> Result<Parsed, ParseError> {
        let json = parse_json(req.body)?;
        Ok(Parsed {
            event_type: "alert".to_string(),
            delivery_id: None,
            events: parse_alerts(&json, &[])?,
            is_ping: false,
            stored_body: None,
        })
    }

    fn kept_headers(&self) -> &'static [&'static str] {
        &["user-agent", "content-type"]
    }

    fn sign(&self, _body: &[u8], _event_type: &str, _delivery_id: &str) -> Vec<(String, String)> {
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        headers.extend(http_credential_headers(&self.credentials));
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BasicAuth, Secret};
    use crate::source::test_support::{fixture, fixture_count, request as req};

    fn source(credentials: Credentials) -> AlertmanagerSource {
        AlertmanagerSource::new(&SourceConfig {
            name: "alerts".into(),
            kind: SourceKind::Alertmanager,
            credentials,
            generic: None,
        })
    }

    /// Every Alertmanager fixture: (file, alerts as (status, alertname, fingerprint or derived)).
    #[test]
    fn every_fixture_parses_into_one_event_per_alert() {
        let cases: &[(&str, usize, &str, &str)] = &[
            ("captured-0.25-firing.json", 1, "firing", "DemoDiskFull"),
            ("captured-0.25-resolved.json", 1, "resolved", "DemoDiskFull"),
            ("v4-firing-12-alerts-legacy.json", 12, "firing", ""),
            ("v4-firing-single-legacy.json", 1, "firing", ""),
            ("v4-resolved-grouped.json", 0, "resolved", ""),
            ("v4-resolved-two-alerts.json", 2, "resolved", ""),
        ];
        assert_eq!(
            fixture_count("alertmanager") - 1,
            cases.len(),
            "a fixture lacks a case (the .txt is docs)"
        );
        let s = source(Credentials::default());
        for (file, count, status, name) in cases {
            let body = fixture("alertmanager", file);
            let parsed = s
                .parse(&req(&[], &body))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            if *count > 0 {
                assert_eq!(parsed.events.len(), *count, "{file}");
            }
            for e in &parsed.events {
                let Event::Alert(a) = e else {
                    panic!("{file}: {e:?}")
                };
                assert_eq!(a.status.as_str(), *status, "{file}");
                if !name.is_empty() {
                    assert_eq!(a.name, *name, "{file}");
                }
                assert_eq!(a.fingerprint.len(), 16, "{file}: {}", a.fingerprint);
                assert!(a.starts_at.is_some(), "{file}");
            }
        }
        let body = fixture("alertmanager", "captured-0.25-firing.json");
        let parsed = s.parse(&req(&[], &body)).expect("parses");
        let Event::Alert(a) = &parsed.events[0] else {
            panic!()
        };
        assert_eq!(a.fingerprint, "c5f886762ec8abfd");
        assert_eq!(a.labels["instance"], "build-01");
        assert_eq!(a.annotations["summary"], "Disk almost full on build-01");
        assert_eq!(a.ends_at, None, "the zero time means not set");
        assert_eq!(
            a.group_key.as_deref(),
            Some("{}:{alertname=\"DemoDiskFull\"}")
        );
        assert_eq!(a.external_url.as_deref(), Some("http://127.0.0.1:9093"));
    }

    #[test]
    fn alerts_without_a_fingerprint_get_one_from_their_labels() {
        let body = br#"{"status":"firing","alerts":[{"status":"firing","labels":{"b":"2","a":"1"}},{"status":"firing","labels":{"a":"1","b":"2"}}]}"#;
        let parsed = source(Credentials::default())
            .parse(&req(&[], body))
            .expect("parses");
        let fps: Vec<String> = parsed
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Alert(a) => Some(a.fingerprint.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(fps.len(), 2);
        assert_eq!(fps[0], fps[1]);
    }

    #[test]
    fn bearer_and_basic_credentials() {
        let bearer = source(Credentials {
            bearer_token: Some(Secret::new("am-token")),
            ..Default::default()
        });
        let h = |v: &str| vec![("authorization".to_string(), v.to_string())];
        assert_eq!(
            bearer.authenticate(&req(&h("Bearer am-token"), b"{}")),
            Ok(())
        );
        assert!(bearer.authenticate(&req(&h("Bearer nope"), b"{}")).is_err());
        assert!(bearer.authenticate(&req(&[], b"{}")).is_err());
        let basic = source(Credentials {
            basic: Some(BasicAuth {
                username: "am".into(),
                password: Secret::new("pw"),
            }),
            ..Default::default()
        });
        let signed = basic.sign(b"{}", "alert", "x");
        let headers: Vec<(String, String)> = signed
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        assert_eq!(basic.authenticate(&req(&headers, b"{}")), Ok(()));
        assert!(basic
            .authenticate(&req(&h("Basic YW06bm9wZQ=="), b"{}"))
            .is_err());
        let open = source(Credentials::default());
        assert!(
            open.authenticate(&req(&[], b"{}")).is_err(),
            "no credentials: loopback only"
        );
    }
}

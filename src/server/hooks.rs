//! `POST /hooks/{source}` (and GET for sources that take it): size check →
//! authenticate on the raw bytes → parse → match → one durable transaction →
//! 202 (200 for pings and duplicates).

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{direct_loopback, error, unavailable, unavailable_for};
use crate::daemon::Shared;
use crate::matcher::SkipList;
use crate::metrics::DeliveryOutcome as Outcome;
use crate::source::{Headers, Request};
use crate::store::{RunOrigin, RunRef};

/// The answer to an accepted webhook.
#[derive(Debug, Serialize)]
struct Accepted<'a> {
    delivery: i64,
    event: &'a str,
    runs: Vec<AcceptedRun>,
    skipped: SkipList,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// A queued run in the answer; `paths: "pending"` when its path filter is
/// decided after the fetch (it may still end `skipped`).
#[derive(Debug, Serialize)]
struct AcceptedRun {
    id: i64,
    pipeline: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    paths: Option<&'static str>,
}

/// The sources read the request's own header map (no copy of every header
/// per request). Names come lower-cased from the HTTP layer, so a lookup
/// compares without allocating; a value that is not text is passed over.
impl Headers for actix_web::http::header::HeaderMap {
    fn first(&self, name: &str) -> Option<&str> {
        self.iter()
            .filter(|(k, _)| k.as_str().eq_ignore_ascii_case(name))
            .find_map(|(_, v)| v.to_str().ok())
    }

    fn is_empty(&self) -> bool {
        actix_web::http::header::HeaderMap::is_empty(self)
    }
}

/// The bytes of webhook bodies held in memory at once, across all
/// connections: four times `max_body_bytes`. A request is charged for the
/// bytes it has actually sent (not for the length it declares: headers
/// alone, which cost a sender nothing, must not be able to spend it), as
/// they arrive, until it is answered. A chunk that would go past the budget
/// gets the request a `503` with `Retry-After` at once, so many senders, or
/// slow ones, cannot make hookd buffer without bound before authentication
/// (which needs the whole body for an HMAC); `body_timeout` bounds how long
/// one body holds its share.
pub(super) struct BodyBudget {
    bytes: Semaphore,
    total: usize,
}

impl BodyBudget {
    pub(super) fn new(max_body_bytes: usize) -> BodyBudget {
        let total = max_body_bytes
            .saturating_mul(4)
            .clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Semaphore::new(total),
            total,
        }
    }

    /// The whole budget, in bytes.
    pub(super) fn bytes(&self) -> usize {
        self.total
    }

    /// A share of `bytes`, if that much is free now.
    fn try_take(&self, bytes: usize) -> Option<SemaphorePermit<'_>> {
        self.bytes.try_acquire_many(u32::try_from(bytes).ok()?).ok()
    }
}

/// What a body's buffer starts with when its length is declared: a larger
/// declared length grows it as the bytes come.
const BODY_CAPACITY: usize = 64 * 1024;

/// What a body may be.
struct BodyLimits<'b> {
    max_bytes: usize,
    timeout: Duration,
    budget: &'b BodyBudget,
}

enum BodyError {
    TooLarge,
    Read(String),
    /// Not all there within `body_timeout`.
    Timeout,
    /// The [`BodyBudget`] is spent.
    Busy,
}

/// Reads the whole body within `limits`; also returns the budget share it
/// holds (none for an empty body).
async fn read_body<'b>(
    req: &HttpRequest,
    mut payload: web::Payload,
    limits: BodyLimits<'b>,
) -> Result<(Vec<u8>, Option<SemaphorePermit<'b>>), BodyError> {
    let limit = limits.max_bytes;
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut share: Option<SemaphorePermit<'b>> = None;
    let read = async {
        let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit).min(BODY_CAPACITY));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
            if body.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge);
            }
            let taken = limits.budget.try_take(chunk.len()).ok_or(BodyError::Busy)?;
            match &mut share {
                Some(s) => s.merge(taken),
                None => share = Some(taken),
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = tokio::time::timeout(limits.timeout, read)
        .await
        .map_err(|_| BodyError::Timeout)??;
    Ok((body, share))
}

/// `/hooks/{source}` for a name no source has.
pub(super) async fn unknown_source(path: web::Path<String>) -> HttpResponse {
    refuse_unknown(&path)
}

fn refuse_unknown(name: &str) -> HttpResponse {
    crate::metrics::delivery(crate::metrics::UNKNOWN_SOURCE, Outcome::UnknownSource);
    error(StatusCode::NOT_FOUND, format!("unknown source {name:?}"))
}

/// Receives one webhook for the source `source_name` (its route is literal).
pub(super) async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    source_name: Arc<str>,
    budget: Arc<BodyBudget>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let source_name = &*source_name;
    let Some(source) = shared.sources.get(source_name) else {
        return refuse_unknown(source_name);
    };
    let count = |outcome| crate::metrics::delivery(source_name, outcome);
    let method = req.method();
    let get_allowed = source.accepts_get();
    if method != actix_web::http::Method::POST
        && !(method == actix_web::http::Method::GET && get_allowed)
    {
        count(Outcome::Malformed);
        let allowed = if get_allowed { "GET, POST" } else { "POST" };
        return HttpResponse::MethodNotAllowed()
            .insert_header(("Allow", allowed))
            .json(serde_json::json!({
                "error": format!(
                    "source {source_name:?} ({}) receives {} requests",
                    source.kind().as_str(),
                    allowed.replace(", ", " and ")
                )
            }));
    }
    // The budget share is held until the delivery is answered: the body
    // stays in memory until then.
    let limits = BodyLimits {
        max_bytes: shared.config.max_body_bytes,
        timeout: shared.config.body_timeout,
        budget: &budget,
    };
    let (body, _budget_share) = match read_body(&req, payload, limits).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            count(Outcome::TooLarge);
            tracing::warn!(source = %source_name, limit = shared.config.max_body_bytes, "refused webhook: body too large");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "body larger than max_body_bytes ({} bytes)",
                    shared.config.max_body_bytes
                ),
            );
        }
        Err(BodyError::Read(e)) => {
            count(Outcome::Malformed);
            return error(StatusCode::BAD_REQUEST, format!("cannot read body: {e}"));
        }
        Err(BodyError::Timeout) => {
            count(Outcome::Malformed);
            let limit = humantime::format_duration(shared.config.body_timeout);
            tracing::warn!(source = %source_name, peer = ?req.peer_addr(), %limit, "refused webhook: body too slow");
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within body_timeout ({limit})"),
            );
        }
        Err(BodyError::Busy) => {
            count(Outcome::Unavailable);
            tracing::warn!(source = %source_name, peer = ?req.peer_addr(), budget = budget.bytes(), "refused webhook: too many bodies being received at once");
            // Shares come back within body_timeout: a short wait.
            return unavailable_for(
                1,
                format!(
                    "the {} bytes hookd holds of bodies being received at once are spent; retry",
                    budget.bytes()
                ),
            );
        }
    };
    let request = Request {
        method: req.method().as_str(),
        headers: req.headers(),
        query: req.query_string(),
        body: &body,
        from_loopback: direct_loopback(&req),
    };
    if let Err(e) = source.authenticate(&request) {
        tracing::warn!(source = %source_name, peer = ?req.peer_addr(), reason = %e, "refused webhook: authentication failed");
        count(Outcome::Unauthorized);
        return error(StatusCode::UNAUTHORIZED, e);
    }
    let parsed = match source.parse(&request) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(source = %source_name, reason = %e, "refused webhook: malformed");
            count(Outcome::Malformed);
            return error(StatusCode::BAD_REQUEST, e);
        }
    };

    // Header names come lower-cased from the HTTP layer.
    let kept: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter(|(k, _)| source.kept_headers().contains(&k.as_str()))
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let (event_type, delivery_id, is_ping) = (
        parsed.event_type.clone(),
        parsed.delivery_id.clone(),
        parsed.is_ping,
    );
    let (delivery, paths_pending) =
        shared.match_delivery(source_name, parsed, kept, body, RunOrigin::Webhook, None);
    let recorded = match shared.store.record_delivery(delivery).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(source = %source_name, error = %e, "cannot store delivery; answering 503");
            count(Outcome::Unavailable);
            return unavailable(format!("cannot store the delivery: {e}"));
        }
    };
    count(if recorded.duplicate {
        Outcome::Duplicate
    } else {
        Outcome::Accepted
    });
    if recorded.duplicate {
        tracing::info!(delivery = recorded.delivery, source = %source_name, provider_delivery_id = ?delivery_id, "duplicate delivery; nothing new runs");
    } else {
        tracing::info!(
            delivery = recorded.delivery,
            source = %source_name,
            event = %event_type,
            runs = ?recorded.runs.iter().map(|r| r.id).collect::<Vec<_>>(),
            "accepted delivery"
        );
        shared.runs_queued(&recorded);
    }
    let status = if recorded.duplicate || is_ping {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    HttpResponse::build(status).json(Accepted {
        delivery: recorded.delivery,
        event: &event_type,
        runs: recorded
            .runs
            .into_iter()
            .enumerate()
            .map(|(i, RunRef { id, pipeline })| AcceptedRun {
                id,
                pipeline,
                paths: (!recorded.duplicate && paths_pending.get(i).copied().unwrap_or(false))
                    .then_some("pending"),
            })
            .collect(),
        skipped: recorded.skipped,
        duplicate: recorded.duplicate,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    /// What the sources get from a real request's header map: the first
    /// text value of a name in any case; a value that is not text is passed
    /// over, as when the headers were copied into pairs.
    #[test]
    fn the_header_map_answers_lookups_like_the_copied_pairs_did() {
        let mut map = HeaderMap::new();
        assert!(Headers::is_empty(&map));
        let name = HeaderName::from_static("x-hub-signature-256");
        map.append(
            name.clone(),
            HeaderValue::from_bytes(b"\xffbinary").unwrap(),
        );
        map.append(name.clone(), HeaderValue::from_static("sha256=first"));
        map.append(name, HeaderValue::from_static("sha256=second"));
        map.insert(
            HeaderName::from_static("x-github-event"),
            HeaderValue::from_static("push"),
        );
        let headers: &dyn Headers = &map;
        assert_eq!(headers.first("X-Hub-Signature-256"), Some("sha256=first"));
        assert_eq!(headers.first("x-github-event"), Some("push"));
        assert_eq!(headers.first("X-GitHub-Delivery"), None);
        assert!(!headers.is_empty());
    }
}

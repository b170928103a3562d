//! `POST /hooks/{source}` (and GET for sources that take it): size check →
//! authenticate on the raw bytes → parse → match → one durable transaction →
//! 202 (200 for pings and duplicates).

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Serialize;

use super::{direct_loopback, error, unavailable};
use crate::daemon::Shared;
use crate::matcher::SkipList;
use crate::metrics::DeliveryOutcome as Outcome;
use crate::source::Request;
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

enum BodyError {
    TooLarge,
    Read(String),
}

async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
    let body = match read_body(&req, payload, shared.config.max_body_bytes).await {
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
    };
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let request = Request {
        method: req.method().as_str(),
        headers: &headers,
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

    let kept: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| source.kept_headers().contains(&k.as_str()))
        .cloned()
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

//! `/api/v1`: runs, run logs and deliveries as JSON.
//!
//! Authentication ([`super::auth`]): `Authorization: Bearer <admin token>` or
//! the web UI's session cookie, compared in constant time; without an
//! `admin_token_file`, loopback clients only. The routes are described by
//! the OpenAPI document served at `/api/v1/openapi.json`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, Scope};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{self, Access};
use super::{error, unavailable};
use crate::clock::{now_ms, rfc3339};
use crate::daemon::Shared;
use crate::event::{Event, ManualEvent};
use crate::scheduler::StopReason;
use crate::source::Request;
use crate::store::{DeliveryRecord, RunFilter, RunOrigin, RunRecord, RunStatus};

pub(super) fn scope() -> Scope {
    web::scope("/api/v1")
        .route("/runs", web::get().to(list_runs))
        .route("/runs/{id}", web::get().to(get_run))
        .route("/runs/{id}/log", web::get().to(get_log))
        .route("/runs/{id}/cancel", web::post().to(cancel_run))
        .route("/deliveries/{id}", web::get().to(get_delivery))
        .route("/deliveries/{id}/replay", web::post().to(replay_delivery))
        .route(
            "/pipelines/{name}/trigger",
            web::post().to(trigger_pipeline),
        )
        .route(
            "/deliveries",
            web::get().to(super::listings::list_deliveries),
        )
        .route("/pipelines", web::get().to(super::listings::list_pipelines))
        .route("/openapi.json", web::get().to(openapi))
}

/// The OpenAPI 3.1 description of `/api/v1`, hand-written next to the handlers.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

/// Checks the caller; `Some` is the refusal to send.
pub(crate) fn refuse(req: &HttpRequest, shared: &Shared) -> Option<HttpResponse> {
    match auth::check(req, shared) {
        Access::Allowed => None,
        Access::LoopbackOnly => Some(error(
            StatusCode::FORBIDDEN,
            "no admin_token_file is configured: the API serves loopback clients only",
        )),
        Access::Wrong => Some(error(StatusCode::UNAUTHORIZED, "wrong bearer token")),
        Access::BrowserSendable => Some(error(
            StatusCode::FORBIDDEN,
            "no admin_token_file is configured: POST with Content-Type: application/json (a request a web page cannot forge)",
        )),
        Access::Missing => Some(
            HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Bearer"))
                .json(json!({"error": "missing Authorization: Bearer <admin token>"})),
        ),
    }
}

fn time(ms: Option<i64>) -> Value {
    ms.map(|m| Value::String(rfc3339(m))).unwrap_or(Value::Null)
}

/// The run JSON of the contract.
pub(crate) fn run_json(run: &RunRecord) -> Value {
    let steps: Vec<Value> = run
        .steps
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "status": s.status,
                "exit_code": s.exit_code,
                "started_at": time(s.started_at),
                "finished_at": time(s.finished_at),
            })
        })
        .collect();
    json!({
        "id": run.id,
        "pipeline": run.pipeline,
        "status": run.status,
        "reason": run.reason,
        "trigger": run.trigger,
        "ref": run.git_ref,
        "commit": run.commit,
        "delivery": run.delivery,
        "attempt": run.attempt,
        "origin": run.origin,
        "retry_of": run.retry_of,
        "superseded_by": run.superseded_by,
        "not_before": time(run.not_before),
        "alert_fingerprint": run.alert_fingerprint,
        "effective": run.effective,
        "verify_until": time(run.verify_until),
        "escalation": run.escalation_status.as_ref().map(|status| json!({
            "status": status,
            "reason": run.escalation_reason,
        })),
        "created_at": time(Some(run.created_at)),
        "started_at": time(run.started_at),
        "finished_at": time(run.finished_at),
        "duration_ms": run.started_at.zip(run.finished_at).map(|(s, f)| f - s),
        "steps": steps,
    })
}

/// The delivery JSON of the contract.
pub(crate) fn delivery_json(d: &DeliveryRecord) -> Value {
    json!({
        "id": d.id,
        "source": d.source,
        "event": d.event,
        "received_at": rfc3339(d.received_at),
        "provider_delivery_id": d.provider_delivery_id,
        "headers": d.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "events": d.events,
        "runs": d.runs,
        "skipped": d.skipped,
        "replay_of": d.replay_of,
    })
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    pipeline: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    before: Option<i64>,
}

async fn list_runs(
    req: HttpRequest,
    query: web::Query<RunsQuery>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    if let Some(resp) = refuse(&req, &shared) {
        return resp;
    }
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => match RunStatus::parse(s) {
            Some(st) => Some(st),
            None => {
                let known: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown status {s:?} (one of {})", known.join(", ")),
                );
            }
        },
    };
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > super::listings::MAX_LIMIT {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "limit must be between 1 and {}, not {limit}",
                super::listings::MAX_LIMIT
            ),
        );
    }
    let filter = RunFilter {
        pipeline: query.pipeline.clone().filter(|p| !p.is_empty()),
        status,
        before_id: query.before,
        limit,
    };
    let total = match shared.store.count_runs(filter.clone()).await {
        Ok(n) => n,
        Err(e) => return unavailable(e),
    };
    match shared.store.runs(filter).await {
        Ok(runs) => {
            let next_before = (runs.len() == limit)
                .then(|| runs.last().map(|r| r.id))
                .flatten();
            HttpResponse::Ok().json(json!({
                "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
                "total": total,
                "next_before": next_before,
            }))
        }
        Err(e) => unavailable(e),
    }
}

async fn get_run(req: HttpRequest, id: web::Path<i64>, shared: web::Data<Shared>) -> HttpResponse {
    if let Some(resp) = refuse(&req, &shared) {
        return resp;
    }
    let id = id.into_inner();
    match shared.store.run(id).await {
        Ok(Some(run)) => HttpResponse::Ok().json(run_json(&run)),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no run {id}")),
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    follow: Option<String>,
    offset: Option<u64>,
}

async fn get_log(
    req: HttpRequest,
    id: web::Path<i64>,
    query: web::Query<LogQuery>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    if let Some(resp) = refuse(&req, &shared) {
        return resp;
    }
    let id = id.into_inner();
    match shared.store.run(id).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no run {id}")),
        Err(e) => return unavailable(e),
    }
    let follow = match query.follow.as_deref() {
        None | Some("" | "0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("follow must be 1 or 0, not {other:?}"),
            )
        }
    };
    if follow {
        // An EventSource that reconnects says where it stopped.
        let resume = req
            .headers()
            .get("Last-Event-ID")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let offset = resume.or(query.offset).unwrap_or(0);
        return super::sse::follow(shared, id, offset);
    }
    let path = shared.run_dir(id).join("log");
    match tokio::fs::read(&path).await {
        Ok(bytes) => HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(bytes),
        // Queued runs have no log yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(""),
        Err(e) => unavailable(format!("cannot read log of run {id}: {e}")),
    }
}

async fn get_delivery(
    req: HttpRequest,
    id: web::Path<i64>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    if let Some(resp) = refuse(&req, &shared) {
        return resp;
    }
    let id = id.into_inner();
    match shared.store.delivery(id).await {
        Ok(Some(d)) => HttpResponse::Ok().json(delivery_json(&d)),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no delivery {id}")),
        Err(e) => unavailable(e),
    }
}

/// `POST /api/v1/runs/{id}/cancel`: a queued run ends `cancelled` at once; a
/// running one is stopped (its process group gets SIGTERM, then SIGKILL).
async fn cancel_run(
    req: HttpRequest,
    id: web::Path<i64>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    if let Some(resp) = refuse(&req, &shared) {
        return resp;
    }
    let id = id.into_inner();
    let reason = "cancelled by an operator";
    match shared.store.cancel_queued(id, reason, now_ms()).await {
        Ok(true) => {
            tracing::info!(run = id, "queued run cancelled");
            return HttpResponse::Ok().json(json!({"id": id, "status": "cancelled"}));
        }
        Ok(false) => {}
        Err(e) => return unavailable(e),
    }
    if shared
        .active
        .cancel(id, StopReason::Cancelled(reason.to_string()))
    {
        tracing::info!(run = id, "stopping running run");
        return HttpResponse::Accepted().json(json!({"id": id, "status": "cancelling"}));
    }
    match shared.store.run(id).await {
        Ok(Some(run)) if run.status.is_terminal() => error(
            StatusCode::CONFLICT,
            format!("run {id} already ended: {}", run.status.as_str()),
        ),
        // Between queued and running: the scheduler is starting it right now.
        Ok(Some(_)) => error(
            StatusCode::CONFLICT,
            format!("run {id} is starting; try again"),
        ),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no run {id}")),
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    commit: Option<String>,
}

/// `POST /api/v1/pipelines/{name}/trigger` with an optional JSON body
/// `{"ref": "main"}` or `{"commit": "<sha>"}`.
async fn trigger_pipeline(
    req: HttpRequest,
    name: web::Path<String>,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    if let Some(resp) = refuse(&req, &shared) {
        return resp;
    }
    let name = name.into_inner();
    let body: TriggerBody = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("body must be {{\"ref\": ...}} or {{\"commit\": ...}}: {e}"),
                )
            }
        }
    };
    if let Some(c) = &body.commit {
        if c.len() != 40 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("commit {c:?} is not a full 40-hex commit id"),
            );
        }
    }
    let Some(pipeline) = shared.pipeline(&name) else {
        return error(StatusCode::NOT_FOUND, format!("no pipeline {name:?}"));
    };
    if !pipeline.has_manual_trigger() {
        return error(
            StatusCode::CONFLICT,
            format!("pipeline {name:?} has no manual trigger (add `- manual: {{}}` to its on:)"),
        );
    }
    let event = Event::Manual(ManualEvent {
        git_ref: body.git_ref,
        commit: body.commit.map(|c| c.to_ascii_lowercase()),
        requested_by: req.peer_addr().map(|a| a.ip().to_string()),
    });
    let run = Shared::new_run(&pipeline, &event, RunOrigin::Manual);
    match shared.store.queue_run(run, now_ms()).await {
        Ok(recorded) => {
            tracing::info!(pipeline = %name, run = ?recorded.runs.first().map(|r| r.id), "manual run queued");
            shared.runs_queued(&recorded);
            HttpResponse::Accepted().json(json!({ "runs": recorded.runs }))
        }
        Err(e) => unavailable(e),
    }
}

/// `POST /api/v1/deliveries/{id}/replay`: parses the stored delivery again
/// (no authentication: it was authenticated when it arrived), matches it
/// against today's pipelines and queues the runs, as a new delivery that
/// points at the old one. Replayed runs are exempt from the stale-push check.
async fn replay_delivery(
    req: HttpRequest,
    id: web::Path<i64>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    if let Some(resp) = refuse(&req, &shared) {
        return resp;
    }
    let id = id.into_inner();
    let (original, body) = match (
        shared.store.delivery(id).await,
        shared.store.delivery_body(id).await,
    ) {
        (Ok(Some(d)), Ok(Some(b))) => (d, b),
        (Ok(None), _) | (_, Ok(None)) => {
            return error(StatusCode::NOT_FOUND, format!("no delivery {id}"))
        }
        // The stored body cannot be read back (a body segment removed by
        // hand, a crash before the delivery was acknowledged): retrying
        // will not help.
        (_, Err(e @ crate::store::StoreError::Corrupt { .. })) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let Some(source) = shared.sources.get(&original.source) else {
        return error(
            StatusCode::CONFLICT,
            format!(
                "delivery {id} came from source {:?}, which is no longer configured",
                original.source
            ),
        );
    };
    let request = Request {
        method: "POST",
        headers: &original.headers,
        query: "",
        body: &body,
        from_loopback: true,
    };
    let parsed = match source.parse(&request) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::CONFLICT,
                format!("delivery {id} no longer parses: {e}"),
            )
        }
    };
    let event_type = parsed.event_type.clone();
    let (delivery, _) = shared.match_delivery(
        &original.source,
        parsed,
        original.headers.clone(),
        body,
        RunOrigin::Replay,
        Some(id),
    );
    match shared.store.record_delivery(delivery).await {
        Ok(recorded) => {
            tracing::info!(delivery = recorded.delivery, replay_of = id, runs = ?recorded.runs.iter().map(|r| r.id).collect::<Vec<_>>(), "delivery replayed");
            shared.runs_queued(&recorded);
            HttpResponse::Accepted().json(json!({
                "delivery": recorded.delivery,
                "replay_of": id,
                "event": event_type,
                "runs": recorded.runs,
                "skipped": recorded.skipped,
            }))
        }
        Err(e) => unavailable(e),
    }
}

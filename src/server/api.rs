//! `/api/v1`: runs, run logs and deliveries as JSON.
//!
//! Authentication: `Authorization: Bearer <admin token>` compared in constant
//! time; without an `admin_token_file`, loopback clients only.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, Scope};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::{error, is_loopback, unavailable};
use crate::clock::rfc3339;
use crate::daemon::Shared;
use crate::store::{DeliveryRecord, RunFilter, RunRecord, RunStatus};

pub(super) fn scope() -> Scope {
    web::scope("/api/v1")
        .route("/runs", web::get().to(list_runs))
        .route("/runs/{id}", web::get().to(get_run))
        .route("/runs/{id}/log", web::get().to(get_log))
        .route("/deliveries/{id}", web::get().to(get_delivery))
}

/// Checks the caller; `Some` is the refusal to send.
fn refuse(req: &HttpRequest, shared: &Shared) -> Option<HttpResponse> {
    match &shared.config.admin_token {
        None if is_loopback(req.peer_addr()) => None,
        None => Some(error(
            StatusCode::FORBIDDEN,
            "no admin_token_file is configured: the API serves loopback clients only",
        )),
        Some(token) => {
            let given = req
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            match given {
                Some(g) if bool::from(g.as_bytes().ct_eq(token.expose().as_bytes())) => None,
                Some(_) => Some(error(StatusCode::UNAUTHORIZED, "wrong bearer token")),
                None => Some(
                    HttpResponse::Unauthorized()
                        .insert_header(("WWW-Authenticate", "Bearer"))
                        .json(json!({"error": "missing Authorization: Bearer <admin token>"})),
                ),
            }
        }
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
        "created_at": time(Some(run.created_at)),
        "started_at": time(run.started_at),
        "finished_at": time(run.finished_at),
        "duration_ms": run.started_at.zip(run.finished_at).map(|(s, f)| f - s),
        "steps": steps,
    })
}

fn delivery_json(d: &DeliveryRecord) -> Value {
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
    let filter = RunFilter {
        pipeline: query.pipeline.clone().filter(|p| !p.is_empty()),
        status,
        before_id: query.before,
        limit: query.limit.unwrap_or(50),
    };
    match shared.store.runs(filter).await {
        Ok(runs) => HttpResponse::Ok().json(json!({
            "runs": runs.iter().map(run_json).collect::<Vec<_>>()
        })),
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

async fn get_log(req: HttpRequest, id: web::Path<i64>, shared: web::Data<Shared>) -> HttpResponse {
    if let Some(resp) = refuse(&req, &shared) {
        return resp;
    }
    let id = id.into_inner();
    match shared.store.run(id).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no run {id}")),
        Err(e) => return unavailable(e),
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

//! `/api/v1/deliveries` and `/api/v1/pipelines`: the lists the operator's
//! tools page through, and the pipeline summary the web UI shares.

use std::time::UNIX_EPOCH;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::api::{delivery_json, refuse};
use super::{error, unavailable};
use crate::clock::rfc3339;
use crate::config::{Pipeline, Trigger};
use crate::daemon::Shared;
use crate::store::{DeliveryFilter, RunFilter, RunRecord};

/// Largest page a listing returns.
pub(crate) const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
pub(super) struct DeliveriesQuery {
    source: Option<String>,
    limit: Option<usize>,
    before: Option<i64>,
}

pub(super) async fn list_deliveries(
    req: HttpRequest,
    query: web::Query<DeliveriesQuery>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    if let Some(resp) = refuse(&req, &shared) {
        return resp;
    }
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_LIMIT {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_LIMIT}, not {limit}"),
        );
    }
    let filter = DeliveryFilter {
        source: query.source.clone().filter(|s| !s.is_empty()),
        before_id: query.before,
        limit,
    };
    match shared.store.deliveries(filter).await {
        Ok(list) => {
            let next_before = (list.len() == limit)
                .then(|| list.last().map(|d| d.id))
                .flatten();
            HttpResponse::Ok().json(json!({
                "deliveries": list.iter().map(delivery_json).collect::<Vec<_>>(),
                "next_before": next_before,
            }))
        }
        Err(e) => unavailable(e),
    }
}

/// One pipeline as the API and the web UI show it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PipelineInfo {
    /// Name.
    pub name: String,
    /// The YAML file.
    pub file: String,
    /// One line per trigger.
    pub triggers: Vec<String>,
    /// Number of steps.
    pub steps: usize,
    /// Concurrency group.
    pub concurrency_group: String,
    /// The file's modification time (RFC 3339), when it can be read.
    pub last_change: Option<String>,
    /// The newest run, if any.
    pub last_run: Option<LastRun>,
}

/// The newest run of a pipeline.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LastRun {
    /// Run id.
    pub id: i64,
    /// Its status.
    pub status: &'static str,
    /// When it finished, else started, else was queued (RFC 3339).
    pub at: String,
    /// The same in Unix ms, for relative display.
    #[serde(skip)]
    pub at_ms: i64,
}

/// A one-line description of a trigger, e.g. `push: sources [github], branches [main]`.
pub(crate) fn trigger_summary(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Manual => "manual".to_string(),
        Trigger::Push(p) => {
            let mut parts = Vec::new();
            if let Some(s) = &p.sources {
                parts.push(format!("sources [{}]", s.join(", ")));
            }
            if let Some(r) = &p.repository {
                parts.push(format!("repository {}", r.as_str()));
            }
            if let Some(b) = &p.branches {
                parts.push(format!("branches {}", b.describe()));
            }
            if let Some(t) = &p.tags {
                parts.push(format!("tags {}", t.describe()));
            }
            if let Some(t) = &p.paths {
                parts.push(format!("paths {}", t.describe()));
            }
            if let Some(t) = &p.paths_ignore {
                parts.push(format!("paths_ignore {}", t.describe()));
            }
            if parts.is_empty() {
                "push: any".to_string()
            } else {
                format!("push: {}", parts.join(", "))
            }
        }
        Trigger::Alert(a) => {
            let mut parts = Vec::new();
            if let Some(s) = &a.sources {
                parts.push(format!("sources [{}]", s.join(", ")));
            }
            if !a.matchers.is_empty() {
                let m: Vec<String> = a.matchers.iter().map(ToString::to_string).collect();
                parts.push(format!("matchers [{}]", m.join(", ")));
            }
            parts.push(format!("status {:?}", a.status).to_lowercase());
            format!("alert: {}", parts.join(", "))
        }
    }
}

fn last_run_of(run: &RunRecord) -> LastRun {
    let at_ms = run.finished_at.or(run.started_at).unwrap_or(run.created_at);
    LastRun {
        id: run.id,
        status: run.status.as_str(),
        at: rfc3339(at_ms),
        at_ms,
    }
}

/// Every loaded pipeline with its newest run and its file's modification time.
pub(crate) async fn pipeline_infos(
    shared: &Shared,
) -> Result<Vec<PipelineInfo>, crate::store::StoreError> {
    let pipelines = shared.pipelines();
    let mut out = Vec::with_capacity(pipelines.len());
    for p in pipelines.iter() {
        let last = shared
            .store
            .runs(RunFilter {
                pipeline: Some(p.name.clone()),
                limit: 1,
                ..Default::default()
            })
            .await?;
        out.push(info(p, last.first(), mtime(p).await));
    }
    Ok(out)
}

async fn mtime(p: &Pipeline) -> Option<String> {
    let modified = tokio::fs::metadata(&p.file).await.ok()?.modified().ok()?;
    let ms = modified.duration_since(UNIX_EPOCH).ok()?.as_millis();
    Some(rfc3339(i64::try_from(ms).ok()?))
}

fn info(p: &Pipeline, last: Option<&RunRecord>, last_change: Option<String>) -> PipelineInfo {
    PipelineInfo {
        name: p.name.clone(),
        file: p.file.display().to_string(),
        triggers: p.triggers.iter().map(trigger_summary).collect(),
        steps: p.steps.len(),
        concurrency_group: p.concurrency_group.clone(),
        last_change,
        last_run: last.map(last_run_of),
    }
}

pub(super) async fn list_pipelines(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    if let Some(resp) = refuse(&req, &shared) {
        return resp;
    }
    match pipeline_infos(&shared).await {
        Ok(list) => HttpResponse::Ok().json(json!({ "pipelines": list })),
        Err(e) => unavailable(e),
    }
}

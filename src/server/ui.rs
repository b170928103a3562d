//! The web UI: runs, a run with its live log, deliveries with the reason
//! every pipeline matched or not, pipelines. Pages are rendered here with
//! askama templates (`src/server/templates/`, escaped by default: branch
//! names and commit data come from senders) and are complete without
//! JavaScript; `/ui/app.js` only follows a running run's log over the SSE
//! endpoint. No external resources: the stylesheet and the script are
//! compiled into the binary, and the Content-Security-Policy allows nothing
//! else.
//!
//! Access ([`super::auth`]): the admin token entered once on `/login` becomes
//! an HttpOnly session cookie; `Authorization: Bearer` works too; without a
//! token, loopback clients only.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::auth::{self, Access};
use super::listings::{pipeline_infos, PipelineInfo};
use crate::clock::{now_ms, rfc3339};
use crate::daemon::Shared;
use crate::event::Event;
use crate::store::{
    DeliveryFilter, DeliveryRecord, RunFilter, RunRecord, RunRef, RunStatus, StoreError,
};

/// Rows per list page.
const PAGE: usize = 50;
/// Most log bytes rendered into a run page; older bytes are left to the raw log.
const LOG_PAGE_BYTES: u64 = 1024 * 1024;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The UI's routes.
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(runs_page))
        .route("/runs/{id}", web::get().to(run_page))
        .route("/deliveries", web::get().to(deliveries_page))
        .route("/deliveries/{id}", web::get().to(delivery_page))
        .route("/pipelines", web::get().to(pipelines_page))
        .route("/login", web::get().to(login_form))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/ui/style.css", web::get().to(style))
        .route("/ui/app.js", web::get().to(script));
}

/// What the layout needs.
struct Page {
    title: String,
    active: &'static str,
    logout: bool,
}

impl Page {
    fn new(shared: &Shared, title: impl Into<String>, active: &'static str) -> Page {
        Page {
            title: title.into(),
            active,
            logout: shared.config.admin_token.is_some(),
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    page: Page,
    message: String,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    page: Page,
    message: String,
    next: String,
}

struct RunRow {
    id: i64,
    status: &'static str,
    pipeline: String,
    trigger: String,
    git_ref: String,
    commit: String,
    commit_short: String,
    commit_url: Option<String>,
    duration: String,
    created_abs: String,
    created_rel: String,
    delivery: Option<i64>,
}

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    page: Page,
    runs: Vec<RunRow>,
    total: u64,
    pipelines: Vec<String>,
    statuses: Vec<String>,
    pipeline: String,
    status: String,
    next_url: Option<String>,
}

struct StepRow {
    name: String,
    status: &'static str,
    exit_code: String,
    duration: String,
}

struct LogLine {
    time: String,
    step: String,
    stream: String,
    text: String,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    page: Page,
    run: RunRow,
    attempt: i64,
    reason: String,
    steps: Vec<StepRow>,
    log: Vec<LogLine>,
    skipped_bytes: u64,
    following: bool,
    follow_url: String,
}

struct DeliveryRow {
    id: i64,
    source: String,
    event: String,
    provider_id: String,
    received_abs: String,
    received_rel: String,
    runs: Vec<RunRef>,
    skipped: usize,
}

#[derive(Template)]
#[template(path = "deliveries.html")]
struct DeliveriesPage {
    page: Page,
    deliveries: Vec<DeliveryRow>,
    next_url: Option<String>,
}

struct Decision {
    pipeline: String,
    run: Option<i64>,
    run_status: &'static str,
    reason: String,
}

#[derive(Template)]
#[template(path = "delivery.html")]
struct DeliveryPage {
    page: Page,
    d: DeliveryRow,
    events: Vec<String>,
    pipelines: Vec<Decision>,
    headers: Vec<(String, String)>,
}

struct PipelineRow {
    name: String,
    file: String,
    triggers: Vec<String>,
    steps: usize,
    last_run: Option<LastRunRow>,
    last_change: Option<String>,
    last_change_rel: String,
}

struct LastRunRow {
    id: i64,
    status: &'static str,
    at: String,
    rel: String,
}

#[derive(Template)]
#[template(path = "pipelines.html")]
struct PipelinesPage {
    page: Page,
    pipelines: Vec<PipelineRow>,
    reload_error: String,
}

fn html(status: StatusCode, rendered: Result<String, askama::Error>) -> HttpResponse {
    match rendered {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header(("Content-Security-Policy", CSP))
            .insert_header(("X-Content-Type-Options", "nosniff"))
            .insert_header(("Referrer-Policy", "no-referrer"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "cannot render a web UI page");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body(format!("cannot render the page: {e}\n"))
        }
    }
}

fn message(shared: &Shared, status: StatusCode, title: &str, text: String) -> HttpResponse {
    html(
        status,
        MessagePage {
            page: Page::new(shared, title, ""),
            message: text,
        }
        .render(),
    )
}

fn store_error(shared: &Shared, e: StoreError) -> HttpResponse {
    message(
        shared,
        StatusCode::SERVICE_UNAVAILABLE,
        "Store unavailable",
        format!("the store cannot answer: {e}"),
    )
}

/// `None` when the request may see the UI; else the answer to send.
fn gate(req: &HttpRequest, shared: &Shared) -> Option<HttpResponse> {
    match auth::check(req, shared) {
        Access::Allowed => None,
        Access::Missing | Access::Wrong => {
            let target = match req.query_string() {
                "" => req.path().to_string(),
                q => format!("{}?{q}", req.path()),
            };
            let location = format!("/login{}", crate::client::query(&[("next", Some(&target))]));
            Some(
                HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, location))
                    .finish(),
            )
        }
        Access::LoopbackOnly => Some(message(
            shared,
            StatusCode::FORBIDDEN,
            "Forbidden",
            "no admin_token_file is configured: the web UI serves loopback clients only".into(),
        )),
        Access::BrowserSendable => Some(message(
            shared,
            StatusCode::FORBIDDEN,
            "Forbidden",
            "no admin_token_file is configured: the web UI takes no form posts".into(),
        )),
    }
}

/// A duration for people: `850ms`, `12s`, `3m 05s`, `1h 02m`.
pub(crate) fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// `ms` relative to `now`: `just now`, `42s ago`, `5m ago`, `3h ago`, `2d ago`.
pub(crate) fn relative(ms: i64, now: i64) -> String {
    let secs = (now - ms) / 1000;
    match secs {
        s if s < 2 => "just now".to_string(),
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// A browsable commit page for http(s) clone URLs (`…/commit/<sha>`, which
/// GitHub, Gitea, Forgejo and GitLab all answer).
fn commit_url(event: &Event, commit: &str) -> Option<String> {
    let Event::Push(p) = event else { return None };
    let url = p.clone_url.as_deref()?;
    if !(url.starts_with("https://") || url.starts_with("http://")) || commit.is_empty() {
        return None;
    }
    if !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let base = url.trim_end_matches('/').trim_end_matches(".git");
    Some(format!("{base}/commit/{commit}"))
}

fn run_row(r: &RunRecord, now: i64) -> RunRow {
    let commit = r.commit.clone().unwrap_or_default();
    let duration = match (r.started_at, r.finished_at) {
        (Some(s), Some(f)) => human_duration(Duration::from_millis((f - s).max(0) as u64)),
        (Some(s), None) => format!(
            "{} so far",
            human_duration(Duration::from_millis((now - s).max(0) as u64))
        ),
        _ => "–".to_string(),
    };
    RunRow {
        id: r.id,
        status: r.status.as_str(),
        pipeline: r.pipeline.clone(),
        trigger: r.trigger.clone(),
        git_ref: r.git_ref.clone().unwrap_or_default(),
        commit_short: commit.chars().take(10).collect(),
        commit_url: commit_url(&r.event, &commit),
        commit,
        duration,
        created_abs: rfc3339(r.created_at),
        created_rel: relative(r.created_at, now),
        delivery: r.delivery,
    }
}

#[derive(Debug, Deserialize)]
struct RunsPageQuery {
    pipeline: Option<String>,
    status: Option<String>,
    before: Option<String>,
}

async fn runs_page(
    req: HttpRequest,
    query: web::Query<RunsPageQuery>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    if let Some(refusal) = gate(&req, &shared) {
        return refusal;
    }
    let pipeline = query.pipeline.clone().unwrap_or_default();
    let status_text = query.status.clone().unwrap_or_default();
    let status = if status_text.is_empty() {
        None
    } else {
        match RunStatus::parse(&status_text) {
            Some(s) => Some(s),
            None => {
                return message(
                    &shared,
                    StatusCode::BAD_REQUEST,
                    "Bad filter",
                    format!("unknown run status {status_text:?}"),
                )
            }
        }
    };
    let before = query.before.as_deref().and_then(|b| b.parse::<i64>().ok());
    let filter = RunFilter {
        pipeline: (!pipeline.is_empty()).then(|| pipeline.clone()),
        status,
        before_id: before,
        limit: PAGE,
    };
    let total = match shared.store.count_runs(filter.clone()).await {
        Ok(n) => n,
        Err(e) => return store_error(&shared, e),
    };
    let runs = match shared.store.runs(filter).await {
        Ok(r) => r,
        Err(e) => return store_error(&shared, e),
    };
    let now = now_ms();
    let next_url = (runs.len() == PAGE)
        .then(|| runs.last().map(|r| r.id))
        .flatten()
        .map(|last| {
            let last = last.to_string();
            format!(
                "/{}",
                crate::client::query(&[
                    (
                        "pipeline",
                        Some(pipeline.as_str()).filter(|p| !p.is_empty())
                    ),
                    (
                        "status",
                        Some(status_text.as_str()).filter(|s| !s.is_empty())
                    ),
                    ("before", Some(&last)),
                ])
            )
        });
    let mut pipelines: Vec<String> = shared.pipelines().iter().map(|p| p.name.clone()).collect();
    if !pipeline.is_empty() && !pipelines.contains(&pipeline) {
        pipelines.push(pipeline.clone());
    }
    html(
        StatusCode::OK,
        RunsPage {
            page: Page::new(&shared, "Runs", "runs"),
            runs: runs.iter().map(|r| run_row(r, now)).collect(),
            total,
            pipelines,
            statuses: RunStatus::ALL
                .iter()
                .map(|s| s.as_str().to_string())
                .collect(),
            pipeline,
            status: status_text,
            next_url,
        }
        .render(),
    )
}

/// Splits a stored log line `<time> <step> <stream> | <text>` for display.
fn parse_line(line: &str) -> LogLine {
    let (head, text) = line.split_once(" | ").unwrap_or((line, ""));
    let (time, rest) = head.split_once(' ').unwrap_or((head, ""));
    let (step, stream) = rest.rsplit_once(' ').unwrap_or(("", rest));
    let time = time
        .split_once('T')
        .map(|(_, t)| t.trim_end_matches('Z').to_string())
        .unwrap_or_else(|| time.to_string());
    LogLine {
        time,
        step: step.to_string(),
        stream: stream.to_string(),
        text: text.replace('\r', ""),
    }
}

/// The complete lines of the log's last [`LOG_PAGE_BYTES`], the bytes left
/// out before them, and the offset just past the last complete line.
async fn read_log(path: &std::path::Path) -> std::io::Result<(Vec<LogLine>, u64, u64)> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0, 0)),
        Err(e) => return Err(e),
    };
    let len = file.metadata().await?.len();
    let start = len.saturating_sub(LOG_PAGE_BYTES);
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut buf = Vec::new();
    file.take(len - start).read_to_end(&mut buf).await?;
    // Start at a line boundary when the page begins mid-file.
    let first = if start > 0 {
        buf.iter()
            .position(|&b| b == b'\n')
            .map_or(buf.len(), |i| i + 1)
    } else {
        0
    };
    let end = buf
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(first, |i| (i + 1).max(first));
    let text = String::from_utf8_lossy(&buf[first..end]);
    let lines = text.lines().map(parse_line).collect();
    Ok((lines, start + first as u64, start + end as u64))
}

/// The access check, the id in the path and the record it names, for the
/// run and delivery pages: `Err` is the page to answer instead (refusal,
/// 404 for a malformed or unknown id, store error).
async fn detail<T, F>(
    req: &HttpRequest,
    path: web::Path<String>,
    shared: &Shared,
    what: &str,
    fetch: impl FnOnce(i64) -> F,
) -> Result<(i64, T), HttpResponse>
where
    F: std::future::Future<Output = Result<Option<T>, StoreError>>,
{
    if let Some(refusal) = gate(req, shared) {
        return Err(refusal);
    }
    let raw = path.into_inner();
    let not_found = || {
        message(
            shared,
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no {what} {raw:?}"),
        )
    };
    let Ok(id) = raw.parse::<i64>() else {
        return Err(not_found());
    };
    match fetch(id).await {
        Ok(Some(found)) => Ok((id, found)),
        Ok(None) => Err(not_found()),
        Err(e) => Err(store_error(shared, e)),
    }
}

async fn run_page(
    req: HttpRequest,
    path: web::Path<String>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    // Status first, then the log: a terminal status means the log is complete.
    let (id, run) = match detail(&req, path, &shared, "run", |id| shared.store.run(id)).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let (log, skipped_bytes, offset) = match read_log(&shared.run_dir(id).join("log")).await {
        Ok(l) => l,
        Err(e) => {
            return message(
                &shared,
                StatusCode::SERVICE_UNAVAILABLE,
                "Log unavailable",
                format!("cannot read the log of run {id}: {e}"),
            )
        }
    };
    let now = now_ms();
    let steps = run
        .steps
        .iter()
        .map(|s| StepRow {
            name: s.name.clone(),
            status: s.status.as_str(),
            exit_code: s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            duration: match (s.started_at, s.finished_at) {
                (Some(a), Some(b)) => human_duration(Duration::from_millis((b - a).max(0) as u64)),
                (Some(a), None) => format!(
                    "{} so far",
                    human_duration(Duration::from_millis((now - a).max(0) as u64))
                ),
                _ => "–".into(),
            },
        })
        .collect();
    let following = !run.status.is_terminal();
    html(
        StatusCode::OK,
        RunPage {
            page: Page::new(&shared, format!("Run {id}"), "runs"),
            attempt: run.attempt,
            reason: run.reason.clone().unwrap_or_default(),
            run: run_row(&run, now),
            steps,
            log,
            skipped_bytes,
            following,
            follow_url: format!("/api/v1/runs/{id}/log?follow=1&offset={offset}"),
        }
        .render(),
    )
}

fn delivery_row(d: &DeliveryRecord, now: i64) -> DeliveryRow {
    DeliveryRow {
        id: d.id,
        source: d.source.clone(),
        event: d.event.clone(),
        provider_id: d.provider_delivery_id.clone().unwrap_or_default(),
        received_abs: rfc3339(d.received_at),
        received_rel: relative(d.received_at, now),
        runs: d.runs.clone(),
        skipped: d.skipped.len(),
    }
}

#[derive(Debug, Deserialize)]
struct DeliveriesPageQuery {
    before: Option<String>,
}

async fn deliveries_page(
    req: HttpRequest,
    query: web::Query<DeliveriesPageQuery>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    if let Some(refusal) = gate(&req, &shared) {
        return refusal;
    }
    let filter = DeliveryFilter {
        source: None,
        before_id: query.before.as_deref().and_then(|b| b.parse::<i64>().ok()),
        limit: PAGE,
    };
    let list = match shared.store.deliveries(filter).await {
        Ok(l) => l,
        Err(e) => return store_error(&shared, e),
    };
    let now = now_ms();
    let next_url = (list.len() == PAGE)
        .then(|| list.last().map(|d| format!("/deliveries?before={}", d.id)))
        .flatten();
    html(
        StatusCode::OK,
        DeliveriesPage {
            page: Page::new(&shared, "Deliveries", "deliveries"),
            deliveries: list.iter().map(|d| delivery_row(d, now)).collect(),
            next_url,
        }
        .render(),
    )
}

fn describe_event(e: &Event) -> String {
    match e {
        Event::Push(p) => {
            let range = match (&p.before, &p.after) {
                (Some(b), Some(a)) => format!("{}..{}", short(b), short(a)),
                (None, Some(a)) => format!("created at {}", short(a)),
                (Some(b), None) => format!("deleted (was {})", short(b)),
                (None, None) => String::new(),
            };
            let by = p
                .pusher
                .as_deref()
                .map(|u| format!(" by {u}"))
                .unwrap_or_default();
            format!("push to {} {} {range}{by}", p.repository, p.git_ref)
        }
        Event::Alert(a) => format!(
            "alert {} {} (fingerprint {})",
            a.name,
            a.status.as_str(),
            a.fingerprint
        ),
        Event::Manual(m) => format!(
            "manual run{}",
            m.requested_by
                .as_deref()
                .map(|u| format!(" requested by {u}"))
                .unwrap_or_default()
        ),
        Event::Ignored(i) => format!("ignored: {}", i.reason),
    }
}

fn short(sha: &str) -> String {
    sha.chars().take(10).collect()
}

async fn delivery_page(
    req: HttpRequest,
    path: web::Path<String>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let (id, d) = match detail(&req, path, &shared, "delivery", |id| {
        shared.store.delivery(id)
    })
    .await
    {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let mut pipelines = Vec::new();
    for r in &d.runs {
        let status = match shared.store.run(r.id).await {
            Ok(Some(run)) => run.status.as_str(),
            Ok(None) => "unknown",
            Err(e) => return store_error(&shared, e),
        };
        pipelines.push(Decision {
            pipeline: r.pipeline.clone(),
            run: Some(r.id),
            run_status: status,
            reason: String::new(),
        });
    }
    pipelines.extend(d.skipped.iter().map(|s| Decision {
        pipeline: s.pipeline.clone(),
        run: None,
        run_status: "",
        reason: s.reason.clone(),
    }));
    html(
        StatusCode::OK,
        DeliveryPage {
            page: Page::new(&shared, format!("Delivery {id}"), "deliveries"),
            events: d.events.iter().map(describe_event).collect(),
            headers: d.headers.clone(),
            d: delivery_row(&d, now_ms()),
            pipelines,
        }
        .render(),
    )
}

fn pipeline_row(p: PipelineInfo, now: i64) -> PipelineRow {
    let last_change_ms = p
        .last_change
        .as_deref()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(crate::clock::to_ms);
    PipelineRow {
        name: p.name,
        file: p.file,
        triggers: p.triggers,
        steps: p.steps,
        last_run: p.last_run.map(|l| LastRunRow {
            id: l.id,
            status: l.status,
            rel: relative(l.at_ms, now),
            at: l.at,
        }),
        last_change_rel: last_change_ms
            .map(|ms| relative(ms, now))
            .unwrap_or_default(),
        last_change: p.last_change,
    }
}

async fn pipelines_page(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    if let Some(refusal) = gate(&req, &shared) {
        return refusal;
    }
    let infos = match pipeline_infos(&shared).await {
        Ok(i) => i,
        Err(e) => return store_error(&shared, e),
    };
    let now = now_ms();
    let reload_error = match shared.reload.last() {
        Some(o) if !o.succeeded() => crate::reload::readiness_text(&shared.reload),
        _ => String::new(),
    };
    html(
        StatusCode::OK,
        PipelinesPage {
            page: Page::new(&shared, "Pipelines", "pipelines"),
            pipelines: infos.into_iter().map(|p| pipeline_row(p, now)).collect(),
            reload_error,
        }
        .render(),
    )
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// Only local paths are followed after a login (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

async fn login_form(query: web::Query<LoginQuery>, shared: web::Data<Shared>) -> HttpResponse {
    if shared.config.admin_token.is_none() {
        return message(
            &shared,
            StatusCode::OK,
            "No login needed",
            "no admin_token_file is configured: the web UI serves loopback clients without a login"
                .into(),
        );
    }
    html(
        StatusCode::OK,
        LoginPage {
            page: Page {
                logout: false,
                ..Page::new(&shared, "Log in", "")
            },
            message: String::new(),
            next: safe_next(query.next.as_deref()),
        }
        .render(),
    )
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login(form: web::Form<LoginForm>, shared: web::Data<Shared>) -> HttpResponse {
    let next = safe_next(form.next.as_deref());
    let Some(token) = &shared.config.admin_token else {
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, next))
            .finish();
    };
    if auth::same(form.token.trim(), token.expose()) {
        return HttpResponse::SeeOther()
            .insert_header((header::SET_COOKIE, auth::login_cookie(token.expose())))
            .insert_header((header::LOCATION, next))
            .finish();
    }
    tracing::warn!("web UI login refused: wrong admin token");
    html(
        StatusCode::UNAUTHORIZED,
        LoginPage {
            page: Page {
                logout: false,
                ..Page::new(&shared, "Log in", "")
            },
            message: "That is not the admin token.".into(),
            next,
        }
        .render(),
    )
}

async fn logout() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::SET_COOKIE, auth::logout_cookie()))
        .insert_header((header::LOCATION, "/login"))
        .finish()
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header((header::CACHE_CONTROL, "max-age=3600"))
        .body(body)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", include_str!("static/style.css"))
}

async fn script() -> HttpResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("static/app.js"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_split_into_time_step_stream_and_text() {
        let l = parse_line("2026-11-27T14:12:14.626Z terraform plan out | a | b\r");
        assert_eq!(l.time, "14:12:14.626");
        assert_eq!(l.step, "terraform plan");
        assert_eq!(l.stream, "out");
        assert_eq!(l.text, "a | b");
    }

    #[test]
    fn durations_and_ages_read_naturally() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_millis(12_300)), "12.3s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3m 05s");
        assert_eq!(human_duration(Duration::from_secs(3720)), "1h 02m");
        assert_eq!(relative(1000, 1500), "just now");
        assert_eq!(relative(0, 42_000), "42s ago");
        assert_eq!(relative(0, 7_200_000), "2h ago");
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/runs/3?x=1")), "/runs/3?x=1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn payload_text_is_escaped_in_pages() {
        let row = RunRow {
            id: 1,
            status: "running",
            pipeline: "deploy".into(),
            trigger: "push".into(),
            git_ref: "refs/heads/<script>alert(1)</script>".into(),
            commit: "abc".into(),
            commit_short: "abc".into(),
            commit_url: None,
            duration: "1s".into(),
            created_abs: String::new(),
            created_rel: String::new(),
            delivery: None,
        };
        let page = RunsPage {
            page: Page {
                title: "Runs".into(),
                active: "runs",
                logout: false,
            },
            runs: vec![row],
            total: 1,
            pipelines: vec!["\"><img src=x onerror=alert(1)>".into()],
            statuses: vec!["running".into()],
            pipeline: String::new(),
            status: String::new(),
            next_url: None,
        }
        .render()
        .expect("render");
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(
            page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{page}"
        );
        assert!(!page.contains("<img src=x"), "{page}");
    }

    #[test]
    fn commit_links_only_for_web_urls_and_hex_shas() {
        let push = |url: &str| {
            Event::Push(crate::event::PushEvent::new(
                "a/b".into(),
                "refs/heads/main".into(),
                "",
                "ab12",
                Some(url.into()),
                None,
            ))
        };
        assert_eq!(
            commit_url(&push("https://github.com/a/b.git"), "ab12").as_deref(),
            Some("https://github.com/a/b/commit/ab12")
        );
        assert_eq!(commit_url(&push("file:///tmp/r"), "ab12"), None);
        assert_eq!(commit_url(&push("javascript:alert(1)//"), "ab12"), None);
        assert_eq!(commit_url(&push("https://x/a.git"), "zz\"><"), None);
    }
}

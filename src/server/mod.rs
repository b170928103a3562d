//! The HTTP side: webhook intake (`/hooks/{source}`), the JSON API
//! (`/api/v1`), the web UI (`/`), metrics, health. Only this module knows
//! actix-web.
//!
//! Invariants: a webhook is answered 2xx only after its delivery and runs are
//! committed; our own faults are 503 with `Retry-After`, never a 4xx (forges
//! disable hooks that keep failing); every error body is JSON `{"error": …}`.
//! Handlers do no blocking I/O: the store works on its own threads.

mod api;
mod auth;
mod hooks;
mod listings;
mod sse;
mod ui;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use actix_web::{http::StatusCode, web, App, HttpResponse, HttpServer};

use crate::daemon::Shared;

/// A bound, not yet running, HTTP server.
pub struct Bound {
    /// The server future; `await` it to serve until stopped.
    pub server: actix_web::dev::Server,
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
}

/// Binds the listener and builds the server. Signals are ours, not actix's.
pub fn bind(shared: Arc<Shared>) -> std::io::Result<Bound> {
    let listen = shared.config.listen;
    // One literal route per configured source: a `{source}` segment is
    // matched by a regular expression on every request (a tenth of the
    // intake's own work at full load); the sources never change while the
    // server runs.
    let sources: Arc<[String]> = shared.sources.keys().cloned().collect();
    let budget = Arc::new(hooks::BodyBudget::new(shared.config.max_body_bytes));
    let data = web::Data::from(shared);
    let server = HttpServer::new(move || {
        let sources = Arc::clone(&sources);
        let budget = Arc::clone(&budget);
        App::new()
            .app_data(data.clone())
            .app_data(extractor_errors::path())
            .app_data(extractor_errors::query())
            .app_data(extractor_errors::form())
            .configure(move |cfg| routes(cfg, &sources, &budget))
    })
    .disable_signals()
    .shutdown_timeout(5)
    .bind(listen)?;
    let addr = server.addrs().first().copied().unwrap_or(listen);
    Ok(Bound {
        server: server.run(),
        addr,
    })
}

fn routes(cfg: &mut web::ServiceConfig, sources: &[String], budget: &Arc<hooks::BodyBudget>) {
    for name in sources {
        let name: Arc<str> = Arc::from(name.as_str());
        let budget = Arc::clone(budget);
        cfg.route(
            &format!("/hooks/{name}"),
            web::route().to(move |req, payload, shared| {
                hooks::receive(req, payload, Arc::clone(&name), Arc::clone(&budget), shared)
            }),
        );
    }
    cfg.route("/hooks/{source}", web::route().to(hooks::unknown_source))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .service(api::scope())
        .configure(ui::routes)
        .default_service(web::to(|| async {
            error(StatusCode::NOT_FOUND, "no such route")
        }));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Ready while the store answers; a failed pipeline reload keeps it ready
/// (the previous pipelines still serve) but the body says why it failed.
async fn readyz(shared: web::Data<Shared>) -> HttpResponse {
    match shared.store.queue_heads(1).await {
        Ok(_) => HttpResponse::Ok().content_type("text/plain").body(format!(
            "ready: store reachable, {} pipelines loaded\n{}",
            shared.pipelines().len(),
            crate::reload::readiness_text(&shared.reload)
        )),
        Err(e) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready: store: {e}\n")),
    }
}

/// `GET /metrics`: Prometheus text format; the same access rule as the API.
async fn metrics(req: actix_web::HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    if let Some(refusal) = api::refuse(&req, &shared) {
        return refusal;
    }
    let queued = crate::store::RunFilter {
        status: Some(crate::store::RunStatus::Queued),
        ..Default::default()
    };
    let running = crate::store::RunFilter {
        status: Some(crate::store::RunStatus::Running),
        ..Default::default()
    };
    match (
        shared.store.count_runs(queued).await,
        shared.store.count_runs(running).await,
    ) {
        (Ok(q), Ok(r)) => crate::metrics::set_load(q, r, shared.pipelines().len()),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot count queued and running runs for /metrics");
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::render())
}

/// JSON errors for actix's own extractor failures (bad path or query values).
mod extractor_errors {
    use actix_web::error::InternalError;
    use actix_web::http::StatusCode;
    use actix_web::web;

    pub(super) fn path() -> web::PathConfig {
        web::PathConfig::default().error_handler(|err, req| {
            let message = format!("invalid path {}: {err}", req.path());
            InternalError::from_response(err, super::error(StatusCode::NOT_FOUND, message)).into()
        })
    }

    pub(super) fn query() -> web::QueryConfig {
        web::QueryConfig::default().error_handler(|err, _req| {
            let message = format!("invalid query string: {err}");
            InternalError::from_response(err, super::error(StatusCode::BAD_REQUEST, message)).into()
        })
    }

    pub(super) fn form() -> web::FormConfig {
        web::FormConfig::default().error_handler(|err, _req| {
            let message = format!("invalid form: {err}");
            InternalError::from_response(err, super::error(StatusCode::BAD_REQUEST, message)).into()
        })
    }
}

/// A JSON error body with `status`.
pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message.to_string() }))
}

/// 503 with `Retry-After: 5`: our fault, the sender should try again.
pub(crate) fn unavailable(message: impl std::fmt::Display) -> HttpResponse {
    unavailable_for(5, message)
}

/// 503 with `Retry-After: {seconds}`.
pub(crate) fn unavailable_for(seconds: u32, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", seconds.to_string()))
        .json(serde_json::json!({ "error": message.to_string() }))
}

/// True when the request comes from this machine itself: a loopback peer,
/// no proxy headers (a reverse proxy on the same host makes every client
/// look like loopback), and a loopback `Host` (a DNS-rebinding page in a
/// local browser names its own host).
pub(crate) fn direct_loopback(req: &actix_web::HttpRequest) -> bool {
    use actix_web::http::header::{HeaderName, FORWARDED, X_FORWARDED_FOR};
    // Names built once: a `&str` key would be parsed (and copied) per call.
    const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
    let proxied = [FORWARDED, X_FORWARDED_FOR, X_REAL_IP]
        .iter()
        .any(|h| req.headers().contains_key(h));
    let host_ok = match req.headers().get(actix_web::http::header::HOST) {
        None => true,
        Some(h) => h.to_str().is_ok_and(is_loopback_host),
    };
    is_loopback(req.peer_addr()) && !proxied && host_ok
}

/// `localhost`, `127.x.y.z` or `[::1]`, with an optional port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// True for 127.0.0.0/8, ::1 and IPv4-mapped loopback.
pub(crate) fn is_loopback(addr: Option<SocketAddr>) -> bool {
    match addr.map(|a| a.ip()) {
        Some(IpAddr::V4(v4)) => v4.is_loopback(),
        Some(IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    }
}

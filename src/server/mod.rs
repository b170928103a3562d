//! The HTTP side: webhook intake (`/hooks/{source}`), the JSON API
//! (`/api/v1`), health. Only this module knows actix-web.
//!
//! Invariants: a webhook is answered 2xx only after its delivery and runs are
//! committed; our own faults are 503 with `Retry-After`, never a 4xx (forges
//! disable hooks that keep failing); every error body is JSON `{"error": …}`.
//! Handlers do no blocking I/O: the store works on its own threads.

mod api;
mod hooks;

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
    let data = web::Data::from(shared);
    let server = HttpServer::new(move || App::new().app_data(data.clone()).configure(routes))
        .disable_signals()
        .shutdown_timeout(5)
        .bind(listen)?;
    let addr = server.addrs().first().copied().unwrap_or(listen);
    Ok(Bound {
        server: server.run(),
        addr,
    })
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/hooks/{source}", web::route().to(hooks::receive))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .service(api::scope())
        .default_service(web::to(|| async {
            error(StatusCode::NOT_FOUND, "no such route")
        }));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(shared: web::Data<Shared>) -> HttpResponse {
    match shared.store.queued_runs(1).await {
        Ok(_) => HttpResponse::Ok().content_type("text/plain").body(format!(
            "ready: store reachable, {} pipelines loaded\n",
            shared.pipelines().len()
        )),
        Err(e) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready: store: {e}\n")),
    }
}

/// A JSON error body with `status`.
pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message.to_string() }))
}

/// 503 with `Retry-After`: our fault, the sender should try again.
pub(crate) fn unavailable(message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "5"))
        .json(serde_json::json!({ "error": message.to_string() }))
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

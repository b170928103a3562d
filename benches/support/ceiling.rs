//! The no-durability ceiling for `benches/run.sh`: a minimal actix-web server
//! that only does what any webhook receiver must do before answering — read
//! the body, verify `X-Hub-Signature-256` (HMAC-SHA256, constant time) — and
//! answers `202` (`401` on a bad signature). No parsing, no matching, no
//! store, no fsync: hookd's ingest rate divided by this one is the cost of
//! everything hookd does beyond verifying.
//!
//! Same actix-web build as hookd (`default-features = false`, HTTP/1.1) and
//! the same worker count rule (one per CPU it may run on, so one when pinned
//! with `taskset`).
//!
//! `benches/ingest.rs` runs it by starting its own executable with
//! `--serve-ceiling ADDR SECRET_FILE`, so it is built with the same profile.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

struct Secret(Vec<u8>);

async fn receive(req: HttpRequest, body: web::Bytes, secret: web::Data<Secret>) -> HttpResponse {
    let verified = req
        .headers()
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|hex_sig| hex::decode(hex_sig.trim()).ok())
        .is_some_and(|sig| {
            let mut mac =
                <Hmac<Sha256> as KeyInit>::new_from_slice(&secret.0).expect("HMAC takes any key");
            mac.update(&body);
            mac.verify_slice(&sig).is_ok()
        });
    if verified {
        HttpResponse::Accepted()
            .content_type("application/json")
            .body("{\"accepted\":true}")
    } else {
        HttpResponse::Unauthorized()
            .content_type("application/json")
            .body("{\"error\":\"signature mismatch\"}")
    }
}

/// Serves on `addr` until killed.
pub fn serve(addr: &str, secret_file: &str) -> std::io::Result<()> {
    let addr = addr.to_string();
    let secret = std::fs::read_to_string(secret_file)?
        .trim_end()
        .as_bytes()
        .to_vec();
    let secret = web::Data::new(Secret(secret));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(secret.clone())
                .app_data(web::PayloadConfig::new(25 * 1024 * 1024))
                .route("/hooks/{source}", web::post().to(receive))
        })
        .bind(addr.as_str())?;
        eprintln!("ceiling listening on http://{addr}");
        server.run().await
    })
}

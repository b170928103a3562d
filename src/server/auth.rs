//! Who may use the API, the web UI and `/metrics`.
//!
//! With an `admin_token_file`, a caller proves it knows the token either with
//! `Authorization: Bearer <token>` or with the web UI's session cookie, which
//! holds an HMAC of a fixed label keyed with the token (so the cookie never
//! carries the token itself, and changing the token logs every browser out).
//! Both are compared in constant time. Without a token, loopback clients only.
//!
//! The cookie is `HttpOnly` and `SameSite=Strict`: scripts cannot read it and
//! other sites cannot make a browser send it (no cross-site request forgery on
//! the API's POST routes). It is not `Secure`, because hookd itself speaks
//! plain HTTP; put it behind TLS when it is reached over a network.

use actix_web::http::header;
use actix_web::HttpRequest;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::direct_loopback;
use crate::daemon::Shared;

/// Name of the web UI's session cookie.
pub(crate) const COOKIE: &str = "hookd_session";

const SESSION_LABEL: &[u8] = b"hookd web ui session v1";

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Go ahead.
    Allowed,
    /// A token is configured and the request carries no credential.
    Missing,
    /// A token is configured and the request's credential is wrong.
    Wrong,
    /// No token is configured and the client is not on loopback.
    LoopbackOnly,
    /// No token is configured and the request is one a web page in a local
    /// browser could send (a POST without a JSON content type).
    BrowserSendable,
}

/// The cookie value that proves knowledge of `token`.
pub(crate) fn session_value(token: &str) -> String {
    // HMAC accepts keys of any length; an error here is impossible.
    match <Hmac<Sha256> as KeyInit>::new_from_slice(token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(SESSION_LABEL);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Constant-time equality of two strings.
pub(crate) fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// Decides whether `req` may read the API, the UI or the metrics.
pub(crate) fn check(req: &HttpRequest, shared: &Shared) -> Access {
    let Some(token) = &shared.config.admin_token else {
        if !direct_loopback(req) {
            return Access::LoopbackOnly;
        }
        // Without a token, a web page open in a local browser could POST to
        // us; it cannot send application/json without a CORS preflight,
        // which hookd never grants.
        let safe = matches!(req.method().as_str(), "GET" | "HEAD");
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        return if safe || json {
            Access::Allowed
        } else {
            Access::BrowserSendable
        };
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(given) = bearer {
        return if same(given, token.expose()) {
            Access::Allowed
        } else {
            Access::Wrong
        };
    }
    match cookie(req, COOKIE) {
        Some(given) if same(&given, &session_value(token.expose())) => Access::Allowed,
        Some(_) => Access::Wrong,
        None => Access::Missing,
    }
}

/// The `Set-Cookie` value that logs a browser in.
pub(crate) fn login_cookie(token: &str) -> String {
    format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000",
        session_value(token)
    )
}

/// The `Set-Cookie` value that logs a browser out.
pub(crate) fn logout_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn the_session_value_depends_on_the_token_and_hides_it() {
        let a = session_value("t0ken-for-tests");
        assert_eq!(a.len(), 64);
        assert!(!a.contains("t0ken"));
        assert_ne!(a, session_value("another-token"));
        assert_eq!(a, session_value("t0ken-for-tests"));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let req = TestRequest::default()
            .insert_header((header::COOKIE, "a=1; hookd_session=abc ; b=2"))
            .to_http_request();
        assert_eq!(cookie(&req, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&req, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&req, "c"), None);
    }
}

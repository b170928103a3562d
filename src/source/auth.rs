//! Authentication helpers shared by the sources. Verification is always on
//! the raw bytes and constant-time: HMACs with `Mac::verify_slice`, tokens
//! and passwords by comparing their SHA-256 digests with `subtle` (so neither
//! content nor length leaks through timing). Signatures are never compared
//! as strings.

use std::borrow::Cow;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::{AuthError, Request};
use crate::config::{BasicAuth, HmacAlgorithm, Secret};

/// Standard base64 that accepts input with or without padding.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Largest clock difference accepted for a timestamped signature (Standard
/// Webhooks' recommended tolerance): older deliveries are replays.
pub const MAX_TIMESTAMP_SKEW_SECS: i64 = 300;

fn mac_over<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> M {
    let mut m = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m
}

/// The HMAC of the concatenated `parts` under `key`.
pub fn hmac_digest(algorithm: HmacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match algorithm {
        HmacAlgorithm::Sha1 => mac_over::<Hmac<Sha1>>(key, parts)
            .finalize()
            .into_bytes()
            .to_vec(),
        HmacAlgorithm::Sha256 => mac_over::<Hmac<Sha256>>(key, parts)
            .finalize()
            .into_bytes()
            .to_vec(),
        HmacAlgorithm::Sha512 => mac_over::<Hmac<Sha512>>(key, parts)
            .finalize()
            .into_bytes()
            .to_vec(),
    }
}

/// Checks `signature` against the HMAC of the concatenated `parts`, in
/// constant time. A signature of the wrong length does not verify.
pub fn verify_hmac(
    algorithm: HmacAlgorithm,
    key: &[u8],
    parts: &[&[u8]],
    signature: &[u8],
) -> bool {
    match algorithm {
        HmacAlgorithm::Sha1 => mac_over::<Hmac<Sha1>>(key, parts)
            .verify_slice(signature)
            .is_ok(),
        HmacAlgorithm::Sha256 => mac_over::<Hmac<Sha256>>(key, parts)
            .verify_slice(signature)
            .is_ok(),
        HmacAlgorithm::Sha512 => mac_over::<Hmac<Sha512>>(key, parts)
            .verify_slice(signature)
            .is_ok(),
    }
}

/// Lower-case hex HMAC-SHA256 of `body` under `secret`.
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    hex::encode(hmac_digest(HmacAlgorithm::Sha256, secret, &[body]))
}

/// Verifies a hex HMAC-SHA256 in constant time. `None` when `hex_sig` is not
/// hex of the right length, `Some(ok)` otherwise.
pub fn verify_hmac_sha256_hex(secret: &[u8], body: &[u8], hex_sig: &str) -> Option<bool> {
    let mut sig = [0u8; 32];
    // Fails on anything but 64 hex digits.
    hex::decode_to_slice(hex_sig.trim(), &mut sig).ok()?;
    Some(verify_hmac(HmacAlgorithm::Sha256, secret, &[body], &sig))
}

/// Standard base64 decoding, padding optional.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    BASE64_LENIENT.decode(text.trim()).ok()
}

/// Standard base64 encoding with padding.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Compares two secrets in constant time (their SHA-256 digests, so the
/// comparison time depends on neither content nor length).
pub(crate) fn secrets_equal(given: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(given);
    let b = Sha256::digest(expected);
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// Sources without credentials serve loopback senders only, and only
/// requests a web page in a local browser cannot forge: a POST with a JSON
/// content type (which a page cannot send cross-origin without a CORS
/// preflight, which hookd never grants).
pub(crate) fn loopback_only(req: &Request) -> Result<(), AuthError> {
    if !req.from_loopback {
        return Err(AuthError::NotLoopback);
    }
    let json = req.header("content-type").is_some_and(|ct| {
        ct.trim()
            .to_ascii_lowercase()
            .starts_with("application/json")
    });
    if req.is_get() || !json {
        return Err(AuthError::BrowserSendable);
    }
    Ok(())
}

/// A `name: <prefix><hex HMAC-SHA256 of the body>` header (GitHub's and
/// Bitbucket's `sha256=` style; Gitea's has no prefix). An empty value
/// (or a bare prefix) is what senders without a secret send: not a signature.
pub(crate) fn check_hex_sha256_header(
    req: &Request,
    header: &'static str,
    prefix: &'static str,
    secret: &Secret,
    signed: &[u8],
) -> Result<(), AuthError> {
    let value = req
        .header(header)
        .ok_or(AuthError::MissingHeader(header.into()))?
        .trim();
    if value.is_empty() || value == prefix {
        return Err(AuthError::Unsigned(header.into()));
    }
    let Some(hex_sig) = value.strip_prefix(prefix) else {
        return Err(AuthError::Malformed {
            header: header.into(),
            reason: if prefix.is_empty() {
                "expected hex digits"
            } else {
                "expected sha256=<hex>"
            },
        });
    };
    match verify_hmac_sha256_hex(secret.expose().as_bytes(), signed, hex_sig) {
        Some(true) => Ok(()),
        Some(false) => Err(AuthError::Mismatch(header.into())),
        None => Err(AuthError::Malformed {
            header: header.into(),
            reason: "expected 64 hex digits",
        }),
    }
}

/// A token sent verbatim in a header (GitLab's `X-Gitlab-Token`, a generic
/// source's configured header).
pub(crate) fn check_token_header(
    req: &Request,
    header: Cow<'static, str>,
    token: &Secret,
) -> Result<(), AuthError> {
    let Some(value) = req.header(&header) else {
        return Err(AuthError::MissingHeader(header));
    };
    if secrets_equal(value.trim().as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(AuthError::WrongToken(header))
    }
}

/// The credentials part of `Authorization: <scheme> <credentials>` when the
/// scheme is `scheme` (case-insensitive).
fn authorization<'r>(req: &'r Request, scheme: &'static str) -> Result<&'r str, AuthError> {
    let value = req
        .header("Authorization")
        .ok_or(AuthError::MissingHeader("Authorization".into()))?
        .trim();
    match value.split_once(' ') {
        Some((s, rest)) if s.eq_ignore_ascii_case(scheme) => Ok(rest.trim()),
        _ => Err(AuthError::Malformed {
            header: "Authorization".into(),
            reason: if scheme == "Basic" {
                "expected Basic <base64 user:password>"
            } else {
                "expected Bearer <token>"
            },
        }),
    }
}

/// `Authorization: Bearer <token>`.
pub(crate) fn check_bearer(req: &Request, token: &Secret) -> Result<(), AuthError> {
    let given = authorization(req, "Bearer")?;
    if secrets_equal(given.as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(AuthError::WrongToken("Authorization bearer token".into()))
    }
}

/// `Authorization: Basic <base64 user:password>`. Both parts are compared
/// in constant time, and both always are (no early exit on the user name).
pub(crate) fn check_basic(req: &Request, basic: &BasicAuth) -> Result<(), AuthError> {
    let encoded = authorization(req, "Basic")?;
    let malformed = AuthError::Malformed {
        header: "Authorization".into(),
        reason: "expected Basic <base64 user:password>",
    };
    let decoded = base64_decode(encoded).ok_or(malformed.clone())?;
    let colon = decoded.iter().position(|b| *b == b':').ok_or(malformed)?;
    let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
    let user_ok = secrets_equal(user, basic.username.as_bytes());
    let password_ok = secrets_equal(password, basic.password.expose().as_bytes());
    if user_ok & password_ok {
        Ok(())
    } else {
        Err(AuthError::WrongBasicAuth)
    }
}

/// The `Authorization` value for basic auth, as a sender builds it.
pub(crate) fn basic_header(basic: &BasicAuth) -> String {
    let pair = format!("{}:{}", basic.username, basic.password.expose());
    format!("Basic {}", base64_encode(pair.as_bytes()))
}

/// The HMAC key of a Standard Webhooks secret: base64 after an optional
/// `whsec_` prefix. `None` when it is not base64 or decodes to nothing.
pub fn standard_webhooks_key(secret: &str) -> Option<Vec<u8>> {
    let text = secret.trim();
    let text = text.strip_prefix("whsec_").unwrap_or(text);
    base64_decode(text).filter(|k| !k.is_empty())
}

/// Header names of the Standard Webhooks scheme.
pub(crate) const SW_ID: &str = "webhook-id";
pub(crate) const SW_TIMESTAMP: &str = "webhook-timestamp";
pub(crate) const SW_SIGNATURE: &str = "webhook-signature";

/// The `webhook-signature` value a Standard Webhooks sender attaches.
pub(crate) fn standard_webhooks_signature(
    key: &[u8],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let ts = timestamp.to_string();
    let mac = hmac_digest(
        HmacAlgorithm::Sha256,
        key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    format!("v1,{}", base64_encode(&mac))
}

/// Verifies a Standard Webhooks signature (`webhook-id`, `webhook-timestamp`,
/// `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>`,
/// possibly several space-separated). A timestamp more than
/// [`MAX_TIMESTAMP_SKEW_SECS`] away from `now_secs` is refused: the
/// signature would verify, but the delivery is a replay or the clocks are off.
pub(crate) fn check_standard_webhooks(
    req: &Request,
    key: &[u8],
    now_secs: i64,
) -> Result<(), AuthError> {
    let id = req
        .header(SW_ID)
        .ok_or(AuthError::MissingHeader(SW_ID.into()))?
        .trim();
    let ts_text = req
        .header(SW_TIMESTAMP)
        .ok_or(AuthError::MissingHeader(SW_TIMESTAMP.into()))?
        .trim();
    let signatures = req
        .header(SW_SIGNATURE)
        .ok_or(AuthError::MissingHeader(SW_SIGNATURE.into()))?;
    let ts: i64 = ts_text.parse().map_err(|_| AuthError::Malformed {
        header: SW_TIMESTAMP.into(),
        reason: "expected Unix seconds",
    })?;
    let candidates: Vec<Vec<u8>> = signatures
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(base64_decode)
        .collect();
    if candidates.is_empty() {
        return Err(AuthError::Malformed {
            header: SW_SIGNATURE.into(),
            reason: "expected v1,<base64>",
        });
    }
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts_text.as_bytes(), b".", req.body];
    if !candidates
        .iter()
        .any(|sig| verify_hmac(HmacAlgorithm::Sha256, key, &parts, sig))
    {
        return Err(AuthError::Mismatch(SW_SIGNATURE.into()));
    }
    let skew = now_secs.saturating_sub(ts).saturating_abs();
    if skew > MAX_TIMESTAMP_SKEW_SECS {
        return Err(AuthError::Stale {
            header: SW_TIMESTAMP,
            skew_secs: skew,
            max_secs: MAX_TIMESTAMP_SKEW_SECS,
        });
    }
    Ok(())
}

/// Now, in Unix seconds.
pub(crate) fn now_secs() -> i64 {
    crate::clock::now_ms().div_euclid(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::test_support::request;

    fn vectors() -> serde_json::Value {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/test-vectors.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_json::from_str(&text).expect("test vectors are JSON")
    }

    /// The published GitHub docs test vector (shared/fixtures/README.md).
    #[test]
    fn github_docs_test_vector() {
        let secret = b"It's a Secret to Everybody";
        let sig = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(hmac_sha256_hex(secret, b"Hello, World!"), sig);
        assert_eq!(
            verify_hmac_sha256_hex(secret, b"Hello, World!", sig),
            Some(true)
        );
        assert_eq!(
            verify_hmac_sha256_hex(secret, b"Hello, World?", sig),
            Some(false)
        );
        assert_eq!(
            verify_hmac_sha256_hex(b"other", b"Hello, World!", sig),
            Some(false)
        );
        assert_eq!(verify_hmac_sha256_hex(secret, b"Hello, World!", "zz"), None);
        assert_eq!(
            verify_hmac_sha256_hex(secret, b"Hello, World!", "abcd"),
            None
        );
    }

    /// The SHA-1 vector of test-vectors.json, and the lengths of each algorithm.
    #[test]
    fn every_algorithm_signs_and_verifies() {
        let v = vectors();
        let sha1 = v["vectors"]
            .as_array()
            .expect("vectors")
            .iter()
            .find(|e| e["header"] == "X-Hub-Signature" && e["provider"] == "github")
            .expect("the github sha1 vector");
        let secret = sha1["secret"].as_str().expect("secret").as_bytes();
        let body = sha1["body"].as_str().expect("body").as_bytes();
        let expected = sha1["expected_header_value"].as_str().expect("value");
        assert_eq!(
            format!(
                "sha1={}",
                hex::encode(hmac_digest(HmacAlgorithm::Sha1, secret, &[body]))
            ),
            expected
        );
        for (alg, len) in [
            (HmacAlgorithm::Sha1, 20),
            (HmacAlgorithm::Sha256, 32),
            (HmacAlgorithm::Sha512, 64),
        ] {
            let sig = hmac_digest(alg, secret, &[b"Hello, ", b"World!"]);
            assert_eq!(sig.len(), len, "{alg:?}");
            assert!(verify_hmac(alg, secret, &[body], &sig), "{alg:?}");
            assert!(
                !verify_hmac(alg, secret, &[b"Hello, World?"], &sig),
                "{alg:?}"
            );
            assert!(!verify_hmac(alg, b"wrong", &[body], &sig), "{alg:?}");
            assert!(
                !verify_hmac(alg, secret, &[body], &sig[..len - 1]),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn secrets_compare_by_content_only() {
        assert!(secrets_equal(b"s3cret", b"s3cret"));
        assert!(!secrets_equal(b"s3cret", b"s3cre"));
        assert!(!secrets_equal(b"", b"s3cret"));
    }

    /// The Standard Webhooks reference vector from test-vectors.json.
    #[test]
    fn standard_webhooks_reference_vector() {
        let v = vectors();
        let sw = v["vectors"]
            .as_array()
            .expect("vectors")
            .iter()
            .find(|e| e["header"] == "webhook-signature")
            .expect("the standard webhooks vector");
        let key = standard_webhooks_key(sw["secret"].as_str().expect("secret")).expect("key");
        let id = sw["webhook-id"].as_str().expect("id");
        let ts_text = sw["webhook-timestamp"].as_str().expect("ts");
        let ts: i64 = ts_text.parse().expect("ts");
        let body = sw["body"].as_str().expect("body").as_bytes();
        let expected = sw["expected_header_value"].as_str().expect("value");
        assert_eq!(standard_webhooks_signature(&key, id, ts, body), expected);

        let headers = |sig: &str| {
            vec![
                (SW_ID.to_string(), id.to_string()),
                (SW_TIMESTAMP.to_string(), ts_text.to_string()),
                (SW_SIGNATURE.to_string(), sig.to_string()),
            ]
        };
        let good = headers(expected);
        assert_eq!(
            check_standard_webhooks(&request(&good, body), &key, ts),
            Ok(())
        );
        // Several signatures (key rotation): one matching is enough.
        let rotated = headers(&format!("v1,AAAA {expected}"));
        assert_eq!(
            check_standard_webhooks(&request(&rotated, body), &key, ts + 10),
            Ok(())
        );
        assert_eq!(
            check_standard_webhooks(&request(&good, b"{\"test\": 2432232315}"), &key, ts),
            Err(AuthError::Mismatch(SW_SIGNATURE.into()))
        );
        assert_eq!(
            check_standard_webhooks(&request(&good, body), b"another key", ts),
            Err(AuthError::Mismatch(SW_SIGNATURE.into()))
        );
        assert_eq!(
            check_standard_webhooks(&request(&good, body), &key, ts + 301),
            Err(AuthError::Stale {
                header: SW_TIMESTAMP,
                skew_secs: 301,
                max_secs: 300
            })
        );
        assert!(matches!(
            check_standard_webhooks(&request(&good, body), &key, ts - 400),
            Err(AuthError::Stale { .. })
        ));
        assert_eq!(
            check_standard_webhooks(&request(&good[..2].to_vec(), body), &key, ts),
            Err(AuthError::MissingHeader(SW_SIGNATURE.into()))
        );
        assert!(matches!(
            check_standard_webhooks(&request(&headers("v2,abc"), body), &key, ts),
            Err(AuthError::Malformed { .. })
        ));
        assert_eq!(standard_webhooks_key("whsec_!!!"), None);
        assert_eq!(standard_webhooks_key("whsec_"), None);
    }
}

//! Signature helpers shared by the sources. Verification is always on the raw
//! bytes and constant-time (`Mac::verify_slice`); signatures are never
//! compared as strings.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], body: &[u8]) -> HmacSha256 {
    let mut m =
        <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(body);
    m
}

/// Lower-case hex HMAC-SHA256 of `body` under `secret`.
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    hex::encode(mac(secret, body).finalize().into_bytes())
}

/// Verifies a hex HMAC-SHA256 in constant time. `None` when `hex_sig` is not
/// hex of the right length, `Some(ok)` otherwise.
pub fn verify_hmac_sha256_hex(secret: &[u8], body: &[u8], hex_sig: &str) -> Option<bool> {
    let sig = hex::decode(hex_sig.trim()).ok()?;
    if sig.len() != 32 {
        return None;
    }
    Some(mac(secret, body).verify_slice(&sig).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

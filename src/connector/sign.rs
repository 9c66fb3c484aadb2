//! Signatures on webhooks, checked on the raw bytes before any parsing: HMAC-SHA256 in the
//! encodings helpdesks use, and our own outbound scheme, which every webhook we send carries:
//! `X-Intent-Router-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//! (the timestamp inside the signed text, so a captured request cannot be replayed later with
//! another time). Comparisons take constant time.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header of our outbound signature.
pub const SIGNATURE_HEADER: &str = "X-Intent-Router-Signature";

/// How a helpdesk writes a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Lowercase or uppercase hex, optionally after `sha256=` (GitHub-style `X-Hub-Signature`).
    Hex,
    /// Standard base64.
    Base64,
}

/// HMAC-SHA256 of the parts, in order, under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA1 of `body` under `key` (Zammad's `X-Hub-Signature`).
pub fn hmac_sha1(key: &[u8], body: &[u8]) -> [u8; 20] {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes a signature header stands for (`None`: not in that encoding).
pub fn decode(value: &str, encoding: Encoding) -> Option<Vec<u8>> {
    let value = value.trim();
    match encoding {
        Encoding::Hex => {
            let v = value
                .strip_prefix("sha256=")
                .or_else(|| value.strip_prefix("sha1="))
                .unwrap_or(value);
            if !v.len().is_multiple_of(2) || !v.is_ascii() {
                return None;
            }
            (0..v.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&v[i..i + 2], 16).ok())
                .collect()
        }
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(value).ok(),
    }
}

/// Whether `given` is the HMAC of `parts` under one of `secrets` (two are valid while one is
/// rotated).
pub fn matches_any(given: &[u8], secrets: &[impl AsRef<[u8]>], parts: &[&[u8]]) -> bool {
    secrets.iter().fold(false, |ok, s| {
        let expected = hmac_sha256(s.as_ref(), parts);
        ok | bool::from(expected.as_slice().ct_eq(given))
    })
}

/// Our outbound signature of `body` sent at `t` (unix seconds).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let t = t.to_string();
    let mac = hmac_sha256(secret, &[t.as_bytes(), b".", body]);
    format!("t={t},v1={}", hex(&mac))
}

/// Why a signature of our scheme was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not `t=<unix seconds>,v1=<hex>`.
    #[error("the signature is not of the form t=<unix seconds>,v1=<hex>")]
    Malformed,
    /// Signed too long ago, or in the future.
    #[error("the signature's time is {skew} s away from ours; at most {window} s are accepted")]
    Stale {
        /// Seconds between its time and ours.
        skew: i64,
        /// The window.
        window: i64,
    },
    /// No secret gives this signature.
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks a signature of our scheme: well formed, signed within `window` seconds of `now`,
/// and made with one of `secrets` (any `v1` may match, as during rotation the sender may send
/// one per secret).
pub fn verify(
    header: &str,
    secrets: &[impl AsRef<[u8]>],
    body: &[u8],
    now: i64,
    window: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", _)) if signatures.len() == MAX_SIGNATURES => {
                return Err(SignatureError::Malformed)
            }
            Some(("v1", v)) => {
                signatures.push(decode(v, Encoding::Hex).ok_or(SignatureError::Malformed)?)
            }
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let skew = i64::try_from(now.abs_diff(t)).unwrap_or(i64::MAX);
    if skew > window {
        return Err(SignatureError::Stale { skew, window });
    }
    // One MAC per secret, each compared with every signature given (a handful at most).
    let stamp = t.to_string();
    let matched = secrets.iter().fold(false, |ok, secret| {
        let mac = hmac_sha256(secret.as_ref(), &[stamp.as_bytes(), b".", body]);
        signatures
            .iter()
            .fold(ok, |ok, given| ok | bool::from(mac.as_slice().ct_eq(given)))
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The most `v1` signatures one header may carry (one per secret being rotated, and some).
const MAX_SIGNATURES: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_the_rfc_4231_test_vector() {
        // RFC 4231, test case 2.
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn our_signature_verifies_and_refuses_stale_wrong_or_malformed_ones() {
        let body = br#"{"a":1}"#;
        let s = sign(b"k1", 1_700_000_000, body);
        assert!(s.starts_with("t=1700000000,v1="));
        assert_eq!(verify(&s, &["old", "k1"], body, 1_700_000_100, 300), Ok(()));
        assert_eq!(
            verify(&s, &["k1"], body, 1_700_000_400, 300),
            Err(SignatureError::Stale {
                skew: 400,
                window: 300
            })
        );
        assert_eq!(
            verify(&s, &["k2"], body, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&s, &["k1"], br#"{"a":2}"#, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("v1=00", &["k1"], body, 0, 300),
            Err(SignatureError::Malformed)
        );
        let many = format!("t=1700000000{}", ",v1=".repeat(5));
        assert_eq!(
            verify(&many, &["k1"], body, 1_700_000_000, 300),
            Err(SignatureError::Malformed)
        );
        assert!(matches!(
            verify(
                "t=-9223372036854775808,v1=00",
                &["k1"],
                body,
                1_700_000_000,
                300
            ),
            Err(SignatureError::Stale { .. })
        ));
    }

    #[test]
    fn signatures_decode_from_hex_with_or_without_prefix_and_base64() {
        assert_eq!(decode("sha1=0a", Encoding::Hex), Some(vec![10]));
        // RFC 2202, HMAC-SHA1 test case 2.
        assert_eq!(
            hex(&hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(decode("sha256=0aFF", Encoding::Hex), Some(vec![10, 255]));
        assert_eq!(decode("0aff", Encoding::Hex), Some(vec![10, 255]));
        assert_eq!(decode("0af", Encoding::Hex), None);
        assert_eq!(decode("Cv8=", Encoding::Base64), Some(vec![10, 255]));
        assert_eq!(decode("Cv8", Encoding::Base64), None);
    }
}

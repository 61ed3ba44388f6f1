//! TOTP (RFC 6238) with HMAC-SHA1, 30-second steps, 6 digits — what authenticator apps speak —
//! and the RFC 4648 base32 its secrets are exchanged in.
//!
//! The algorithm, the base32 and the `otpauth://` URI (with its percent-encoding) are
//! `totp-rs`'s. Fenfa's policy is what stays here: the accepted drift (the current step and one
//! on either side), reporting *which* step matched so the caller can refuse a code that was
//! already used, and a lenient reading of typed secrets (case, spaces, dashes, padding).

use totp_rs::{Algorithm, Secret, TOTP};

pub const STEP: i64 = 30;
pub const DIGITS: u32 = 6;

fn totp(secret: &[u8], digits: u32, issuer: Option<&str>, account: &str) -> TOTP {
    // `new_unchecked`: secrets made before this crate was adopted may be shorter than the
    // 128 bits `TOTP::new` insists on; Fenfa makes 160-bit ones.
    TOTP::new_unchecked(
        Algorithm::SHA1,
        digits as usize,
        0,
        STEP as u64,
        secret.to_vec(),
        issuer.map(str::to_owned),
        account.to_owned(),
    )
}

/// The code for `secret` at unix time `t` with `digits` digits (RFC 6238 §4, RFC 4226 §5.3).
pub fn code_at(secret: &[u8], t: i64, digits: u32) -> u32 {
    totp(secret, digits, None, "")
        .generate(t.max(0) as u64)
        .parse()
        .unwrap_or(u32::MAX)
}

/// The 6-digit code at `t`, zero-padded, as an app shows it.
pub fn current(secret: &[u8], t: i64) -> String {
    totp(secret, DIGITS, None, "").generate(t.max(0) as u64)
}

/// The step (`t / 30`) whose code `code` is, within ±1 step of `t`; `None` if it matches none.
pub fn verify(secret: &[u8], code: &str, t: i64) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let totp = totp(secret, DIGITS, None, "");
    let step = t / STEP;
    let mut found = None;
    for s in [step - 1, step, step + 1] {
        // Check every candidate, so timing does not tell which one matched.
        if s >= 0 && totp.generate((s * STEP) as u64) == code {
            found = Some(s);
        }
    }
    found
}

/// RFC 4648 base32 without padding.
pub fn base32_encode(bytes: &[u8]) -> String {
    match Secret::Raw(bytes.to_vec()).to_encoded() {
        Secret::Encoded(s) => s,
        Secret::Raw(_) => String::new(),
    }
}

/// Decodes base32 (case-insensitive; padding, spaces and dashes ignored).
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let clean: String = text
        .chars()
        .filter(|c| !matches!(c, '=' | ' ' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    Secret::Encoded(clean).to_bytes().ok()
}

/// The `otpauth://` URI authenticator apps scan; the issuer and account are percent-encoded.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    totp(secret, DIGITS, Some(issuer), account).get_url()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows: the 20-byte ASCII seed and 8-digit codes.
    #[test]
    fn rfc6238_sha1_test_vectors() {
        let seed = b"12345678901234567890";
        let vectors = [
            (59, 94287082),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ];
        for (t, want) in vectors {
            assert_eq!(code_at(seed, t, 8), want, "T = {t}");
        }
        // Six digits are the last six of the eight.
        assert_eq!(current(seed, 59), "287082");
    }

    #[test]
    fn verify_accepts_adjacent_steps_only() {
        let seed = b"12345678901234567890";
        let t = 1_111_111_111;
        let now = current(seed, t);
        assert_eq!(verify(seed, &now, t), Some(t / 30));
        assert_eq!(verify(seed, &current(seed, t - 30), t), Some(t / 30 - 1));
        assert_eq!(verify(seed, &current(seed, t + 30), t), Some(t / 30 + 1));
        assert_eq!(verify(seed, &current(seed, t - 90), t), None);
        assert_eq!(verify(seed, "12345", t), None);
        assert_eq!(verify(seed, "abcdef", t), None);
    }

    #[test]
    fn base32_round_trips_rfc4648_vectors() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_encode(b"f"), "MY");
        assert_eq!(base32_decode("MZXW6YTBOI======").unwrap(), b"foobar");
        assert_eq!(base32_decode("mzxw6ytboi").unwrap(), b"foobar");
        assert!(base32_decode("1!").is_none());
        assert_eq!(base32_decode("mzxw-6ytb oi").unwrap(), b"foobar");
        let seed = b"12345678901234567890";
        assert_eq!(base32_decode(&base32_encode(seed)).unwrap(), seed);
    }

    /// The issuer and account name survive a standard URI parser exactly, whatever they hold;
    /// once, `a&b c@局` went into the URI unencoded and `?`/`#` in a name injected parameters.
    #[test]
    fn otpauth_uri_reads_back_exactly_in_an_independent_parser() {
        let secret = b"12345678901234567890";
        for account in ["a&b c@局", "x?digits=8#y"] {
            let uri = otpauth_uri("Fenfa 分发", account, secret);
            // RFC 3986: a URI is ASCII, without spaces.
            assert!(uri.is_ascii() && !uri.contains(' '), "{uri}");
            let script = r#"
import sys, urllib.parse as p
u = p.urlsplit(sys.argv[1])
issuer, account = p.unquote(u.path.lstrip("/")).split(":", 1)
q = p.parse_qs(u.query, strict_parsing=True)
print(u.scheme, u.netloc, issuer, account, q["issuer"][0], q["secret"][0], q.get("digits", ["6"])[0], sep="\n")
"#;
            let out = match std::process::Command::new("python3")
                .args(["-c", script, &uri])
                .output()
            {
                Ok(out) => out,
                Err(e) if std::env::var_os("CI").is_none() => {
                    eprintln!("!!! SKIPPING the independent otpauth parse: no python3 ({e})");
                    return;
                }
                Err(e) => panic!("python3 is needed in CI: {e}"),
            };
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            let fields: Vec<&str> = text.lines().collect();
            let secret32 = base32_encode(secret);
            assert_eq!(
                fields,
                [
                    "otpauth",
                    "totp",
                    "Fenfa 分发",
                    account,
                    "Fenfa 分发",
                    secret32.as_str(),
                    "6"
                ],
                "{uri}"
            );
        }
    }
}

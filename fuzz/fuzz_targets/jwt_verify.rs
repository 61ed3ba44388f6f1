//! Token parsing and verification (`jwt-auth`), on raw bytes and on tokens the harness signs.
//!
//! Properties: nothing panics on any token; a token signed with the configured HS256 key and
//! valid claims verifies, with or without the per-thread cache, and names the claimed user; it
//! still verifies when the same claims are serialised again (other key order, other spacing);
//! and it never verifies after any single-byte change of its signed part.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use fenfa_plugins::jwt_auth::JwtAuth;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

const KEY: &[u8] = b"fuzzing-hs256-key-of-32-bytes!!!";
const NOW: u64 = 1_800_000_000;

fn plugin(cache: usize) -> JwtAuth {
    JwtAuth::from_config(&json!({
        "issuer": "https://id.city.example",
        "audience": "fenfa",
        "cache_size": cache,
        "keys": {"keys": [{"kid": "hs-1", "alg": "HS256", "kty": "oct", "k": B64.encode(KEY)}]},
    }))
    .expect("fuzz config is valid")
}

fn plugins() -> &'static (JwtAuth, JwtAuth) {
    static P: OnceLock<(JwtAuth, JwtAuth)> = OnceLock::new();
    P.get_or_init(|| (plugin(0), plugin(64)))
}

fn sign(header: &str, claims: &str) -> String {
    let signing_input = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY);
    let tag = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", B64.encode(tag.as_ref()))
}

#[derive(Debug, Arbitrary)]
enum Input {
    Raw(String),
    Signed {
        sub: String,
        app: String,
        channel: u8,
        flip_at: usize,
        flip_with: u8,
        pretty: bool,
    },
}

fuzz_target!(|input: Input| {
    let (plain, cached) = plugins();
    match input {
        Input::Raw(token) => {
            let a = plain.verify(&token, NOW);
            let b = cached.verify(&token, NOW);
            assert_eq!(
                a.is_ok(),
                b.is_ok(),
                "cache changes the verdict on {token:?}"
            );
        }
        Input::Signed {
            sub,
            app,
            channel,
            flip_at,
            flip_with,
            pretty,
        } => {
            if sub.is_empty() || app.is_empty() {
                return;
            }
            let chn = ["wechat", "alipay", "baidu"][usize::from(channel % 3)];
            let claims = json!({
                "iss": "https://id.city.example", "aud": "fenfa", "sub": sub, "chn": chn,
                "app": app, "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 600,
            });
            let text = if pretty {
                serde_json::to_string_pretty(&claims).unwrap()
            } else {
                claims.to_string()
            };
            let token = sign(r#"{"alg":"HS256","kid":"hs-1","typ":"JWT"}"#, &text);
            let who = match plain.verify(&token, NOW) {
                Ok(id) => id,
                // The plugin may refuse identities it finds unsafe (length, characters): then
                // it must refuse them with or without the cache, and that is all.
                Err(_) => {
                    assert!(cached.verify(&token, NOW).is_err());
                    return;
                }
            };
            assert_eq!(
                (who.user.as_str(), who.app.as_str()),
                (sub.as_str(), app.as_str())
            );
            assert!(cached.verify(&token, NOW).is_ok());
            assert!(
                cached.verify(&token, NOW).is_ok(),
                "second, cached verification"
            );
            // The same claims serialised the other way verify too.
            let other = if pretty {
                claims.to_string()
            } else {
                serde_json::to_string_pretty(&claims).unwrap()
            };
            let token2 = sign(r#"{"typ":"JWT","kid":"hs-1","alg":"HS256"}"#, &other);
            assert!(
                plain.verify(&token2, NOW).is_ok(),
                "re-serialised token refused"
            );
            // Any single-byte change of the signed part is refused.
            let signed_len = token.rfind('.').expect("three parts");
            let mut bytes = token.into_bytes();
            let at = flip_at % signed_len;
            let new = bytes[at] ^ flip_with.max(1);
            bytes[at] = new;
            if let Ok(tampered) = String::from_utf8(bytes) {
                assert!(
                    plain.verify(&tampered, NOW).is_err(),
                    "tampered token verified"
                );
                assert!(
                    cached.verify(&tampered, NOW).is_err(),
                    "tampered token verified (cache)"
                );
            }
        }
    }
});

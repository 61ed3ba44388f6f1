//! Cost of the `jwt-auth` request phase per algorithm: uncached (`cache_size: 0`, every request
//! pays for the signature, header and claims parsing) and cached (the same token again: a
//! thread-local hit that re-checks `exp`/`nbf` and `jti` revocation only).
//!
//! Tokens are minted with ring at start-up: ES256, EdDSA and HS256 keys are generated per run; the
//! RSA key is the fixed 2048-bit test key in `plugins/src/jwt/testdata/`; SM2 (国密) tokens are
//! signed with RustCrypto's `sm2` under the GB/T 32918.5 example key.
//!
//! Beside them, the `jsonwebtoken` crate verifying the same tokens (why Fenfa does not use it:
//! BENCHMARKS.md, "The crates the design named").
//!
//! Run: `cargo bench -p fenfa-benches --bench jwt -- --warm-up-time 1 --measurement-time 3`

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use base64::Engine;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use fenfa_plugins::contract::{Flow, RequestCtx, RequestView};
use fenfa_plugins::jwt_auth::JwtAuthFactory;
use fenfa_plugins::{Plugin, PluginFactory};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Method};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self as sig, KeyPair};
use serde_json::{json, Value};

const RSA_PEM: &str = include_str!("../../plugins/src/jwt/testdata/rsa-2048.pkcs8.pem");

struct Keys {
    rng: SystemRandom,
    es: sig::EcdsaKeyPair,
    ed: sig::Ed25519KeyPair,
    rsa: sig::RsaKeyPair,
    hs: Vec<u8>,
    sm: sm2::dsa::SigningKey,
}

impl Keys {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let alg = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("p256 keygen");
        let es = sig::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("p256");
        let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&rng).expect("ed25519 keygen");
        let ed = sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ed25519");
        let body: String = RSA_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let rsa = sig::RsaKeyPair::from_pkcs8(&STANDARD.decode(body).expect("pem")).expect("rsa");
        let mut hs = vec![0u8; 32];
        rng.fill(&mut hs).expect("random");
        let d: [u8; 32] = [
            0x39, 0x45, 0x20, 0x8f, 0x7b, 0x21, 0x44, 0xb1, 0x3f, 0x36, 0xe3, 0x8a, 0xc6, 0xd3,
            0x9f, 0x95, 0x88, 0x93, 0x93, 0x69, 0x28, 0x60, 0xb5, 0x1a, 0x42, 0xfb, 0x81, 0xef,
            0x4d, 0xf7, 0xc5, 0xb8,
        ];
        let sm = sm2::dsa::SigningKey::from_bytes("1234567812345678", &d.into()).expect("sm2");
        Self {
            rng,
            es,
            ed,
            rsa,
            hs,
            sm,
        }
    }

    fn jwks(&self) -> Value {
        let point = self.es.public_key().as_ref();
        let rsa: sig::RsaPublicKeyComponents<Vec<u8>> = self.rsa.public().into();
        let sm_point = self.sm.verifying_key().to_sec1_bytes();
        let (n, e) = (B64.encode(&rsa.n), B64.encode(&rsa.e));
        json!({"keys": [
            {"kid": "es", "alg": "ES256", "kty": "EC", "crv": "P-256",
             "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])},
            {"kid": "rs", "alg": "RS256", "kty": "RSA", "n": n, "e": e},
            {"kid": "ps", "alg": "PS256", "kty": "RSA", "n": n, "e": e},
            {"kid": "ed", "alg": "EdDSA", "kty": "OKP", "crv": "Ed25519",
             "x": B64.encode(self.ed.public_key().as_ref())},
            {"kid": "hs", "alg": "HS256", "kty": "oct", "k": B64.encode(&self.hs)},
            {"kid": "sm", "alg": "SM2", "kty": "EC", "crv": "SM2",
             "x": B64.encode(&sm_point[1..33]), "y": B64.encode(&sm_point[33..65])},
        ]})
    }

    /// A realistic unified-identity token (380–680 bytes) for `alg`.
    fn mint(&self, alg: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let kid = match alg {
            "ES256" => "es",
            "RS256" => "rs",
            "PS256" => "ps",
            "EdDSA" => "ed",
            "SM2" => "sm",
            _ => "hs",
        };
        let header = json!({"alg": alg, "kid": kid, "typ": "JWT"});
        let claims = json!({
            "iss": "https://id.city.example", "aud": "fenfa",
            "sub": "u-3f9a7c21e0b84d5f", "chn": "wechat", "app": "wx0123456789abcdef",
            "iat": now, "nbf": now, "exp": now + 86_400, "jti": "8d3c1f0e-6a2b-4c59-9f0e-2b7d1a4c6e88",
        });
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let m = input.as_bytes();
        let signature = match alg {
            "ES256" => self.es.sign(&self.rng, m).expect("sign").as_ref().to_vec(),
            "RS256" | "PS256" => {
                let pad: &dyn sig::RsaEncoding = if alg == "RS256" {
                    &sig::RSA_PKCS1_SHA256
                } else {
                    &sig::RSA_PSS_SHA256
                };
                let mut out = vec![0u8; self.rsa.public().modulus_len()];
                self.rsa.sign(pad, &self.rng, m, &mut out).expect("sign");
                out
            }
            "EdDSA" => self.ed.sign(m).as_ref().to_vec(),
            "SM2" => {
                use sm2::dsa::signature::Signer;
                let s: sm2::dsa::Signature = self.sm.sign(m);
                s.to_bytes().to_vec()
            }
            _ => hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.hs), m)
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", B64.encode(signature))
    }
}

fn plugin(keys: &Keys, cache_size: usize) -> Arc<dyn Plugin> {
    JwtAuthFactory::new()
        .build(&json!({
            "issuer": "https://id.city.example",
            "audience": "fenfa",
            "keys": keys.jwks(),
            "cache_size": cache_size,
        }))
        .expect("config")
}

fn run(p: &dyn Plugin, headers: &HeaderMap) -> bool {
    let req = RequestView {
        method: &Method::GET,
        path: "/permits/42",
        query: None,
        headers,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        tls: true,
    };
    let mut ctx = RequestCtx::default();
    matches!(p.request(&req, &mut ctx), Flow::Continue) && ctx.identity.is_some()
}

const ALGS: [&str; 6] = ["ES256", "RS256", "PS256", "EdDSA", "HS256", "SM2"];

fn verify(c: &mut Criterion) {
    let keys = Keys::new();
    for (group, cache_size) in [("jwt_uncached", 0usize), ("jwt_cached", 10_000)] {
        let p = plugin(&keys, cache_size);
        let mut g = c.benchmark_group(group);
        for alg in ALGS {
            let token = keys.mint(alg);
            let mut headers = HeaderMap::new();
            let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
            headers.insert(AUTHORIZATION, value);
            assert!(run(p.as_ref(), &headers), "{alg} token must verify");
            g.bench_with_input(BenchmarkId::from_parameter(alg), &headers, |b, h| {
                b.iter(|| black_box(run(p.as_ref(), h)))
            });
        }
        g.finish();
    }
}

/// The `jsonwebtoken` crate (the one the design named) on the same tokens and keys: signature,
/// `exp`/`nbf`, issuer and audience checked, claims parsed into a JSON value — what the
/// uncached request phase above does, without the header and context work around it. It has
/// no cache of verified tokens.
fn jsonwebtoken_crate(c: &mut Criterion) {
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
    let keys = Keys::new();
    let jwks = keys.jwks();
    let jwk = |kid: &str| -> Value {
        jwks["keys"]
            .as_array()
            .and_then(|ks| ks.iter().find(|k| k["kid"] == kid))
            .cloned()
            .expect("kid")
    };
    let s = |v: &Value| v.as_str().expect("string").to_owned();
    let mut g = c.benchmark_group("jsonwebtoken_decode");
    // jsonwebtoken has no SM2.
    for alg in ALGS.into_iter().filter(|a| *a != "SM2") {
        let (key, algorithm) = match alg {
            "ES256" => {
                let k = jwk("es");
                (
                    DecodingKey::from_ec_components(&s(&k["x"]), &s(&k["y"])).expect("ec"),
                    Algorithm::ES256,
                )
            }
            "RS256" | "PS256" => {
                let k = jwk("rs");
                let key = DecodingKey::from_rsa_components(&s(&k["n"]), &s(&k["e"])).expect("rsa");
                let a = if alg == "RS256" {
                    Algorithm::RS256
                } else {
                    Algorithm::PS256
                };
                (key, a)
            }
            "EdDSA" => (
                DecodingKey::from_ed_components(&s(&jwk("ed")["x"])).expect("ed"),
                Algorithm::EdDSA,
            ),
            _ => (DecodingKey::from_secret(&keys.hs), Algorithm::HS256),
        };
        let mut v = Validation::new(algorithm);
        v.set_issuer(&["https://id.city.example"]);
        v.set_audience(&["fenfa"]);
        v.validate_nbf = true;
        let token = keys.mint(alg);
        assert!(
            decode::<Value>(&token, &key, &v).is_ok(),
            "{alg} token must verify with jsonwebtoken"
        );
        g.bench_function(BenchmarkId::from_parameter(alg), |b| {
            b.iter(|| black_box(decode::<Value>(black_box(&token), &key, &v).is_ok()))
        });
    }
    g.finish();
}

criterion_group!(benches, verify, jsonwebtoken_crate);
criterion_main!(benches);

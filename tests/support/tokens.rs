//! Tokens minted by an implementation other than the gateway's: PyJWT (with `cryptography`), run
//! as `python3` at test time; `SM2` tokens (国密) signed with Python's `gmssl`, which PyJWT does
//! not know.
//!
//! [`Keys::generate`] makes fresh key pairs in Python and returns the public JWKS (what the
//! gateway is configured with) while keeping the private halves for later minting;
//! [`Keys::mint`] signs tokens from JSON specs, relative to Python's clock at that moment. A spec
//! is an object with:
//!
//! - `kid` (required): the key that signs, and the header's `kid`;
//! - `alg`: override the key's algorithm (e.g. to sign an `RS256` key's token as `PS256`);
//! - `claims`: claims merged over the defaults (`iss` [`ISSUER`], `aud` [`AUDIENCE`], `sub`
//!   `u_test`, `chn` `wechat`, `app` `wx_app_1`, `iat` now, `exp` now + 600, a random `jti`);
//! - `exp_in`, `nbf_in`, `iat_in`: that claim as now + the given seconds;
//! - `drop`: claim names to remove;
//! - `header`: extra JOSE header members (`{"kid": null}` removes the kid);
//! - `attack`: `none` (PyJWT's unsigned `alg: none` token), `hs_with_public_pem` (an HS256 token
//!   whose HMAC secret is the key's *public* PEM: the HS/RS confusion attack, built by hand
//!   because PyJWT refuses to do it), or `tamper` (a correctly signed token with one payload byte
//!   changed afterwards: the first character of `sub`, XOR 1).
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

/// The `iss` the default claims carry and [`jwt_auth`] accepts.
pub const ISSUER: &str = "https://id.city.example";
/// The `aud` the default claims carry and [`jwt_auth`] accepts.
pub const AUDIENCE: &str = "fenfa";

const SCRIPT: &str = r#"
import base64, hashlib, hmac, json, os, sys, time, uuid
import jwt
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

req = json.load(sys.stdin)

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def unb64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

def sm2_sign(key, data):
    from gmssl import sm2, func
    signer = sm2.CryptSM2(private_key=key["d"], public_key=key["public"])
    # gmssl: SM3 over Z_A (user id 1234567812345678) || data, then SM2; r||s in hex.
    return bytes.fromhex(signer.sign_with_sm3(data, func.random_hex(64)))

private = req.get("private", {})
jwks = []
for spec in req.get("keys", []):
    kid, alg = spec["kid"], spec["alg"]
    if alg == "SM2":
        from gmssl import sm2, func
        d = func.random_hex(64)
        public = sm2.CryptSM2(private_key=d, public_key="")._kg(int(d, 16), sm2.default_ecc_table["g"])
        jwk = {"kty": "EC", "crv": "SM2", "x": b64u(bytes.fromhex(public[:64])),
               "y": b64u(bytes.fromhex(public[64:]))}
        private[kid] = {"alg": alg, "d": d, "public": public}
    elif alg == "HS256":
        secret = os.urandom(32)
        jwk = HMACAlgorithm.to_jwk(secret, as_dict=True)
        private[kid] = {"alg": alg, "secret": b64u(secret)}
    else:
        if alg == "ES256":
            key, algo = ec.generate_private_key(ec.SECP256R1()), ECAlgorithm
        elif alg in ("RS256", "PS256"):
            key, algo = rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm
        elif alg == "EdDSA":
            key, algo = ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm
        else:
            raise SystemExit("unknown alg " + alg)
        jwk = algo.to_jwk(key.public_key(), as_dict=True)
        private[kid] = {
            "alg": alg,
            "pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode(),
            "public_pem": key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
        }
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    jwks.append(jwk)

now = int(time.time())
tokens = []
for t in req.get("tokens", []):
    kid = t["kid"]
    key = private[kid]
    alg = t.get("alg") or key["alg"]
    claims = {"iss": req["iss"], "aud": req["aud"], "sub": "u_test", "chn": "wechat",
              "app": "wx_app_1", "iat": now, "exp": now + 600, "jti": str(uuid.uuid4())}
    claims.update(t.get("claims", {}))
    for name in ("exp", "nbf", "iat"):
        if name + "_in" in t:
            claims[name] = now + t[name + "_in"]
    for name in t.get("drop", []):
        claims.pop(name, None)
    headers = {"kid": kid}
    headers.update(t.get("header", {}))
    headers = {k: v for k, v in headers.items() if v is not None}
    attack = t.get("attack")
    if attack == "none":
        tok = jwt.encode(claims, None, algorithm="none", headers=headers)
    elif attack == "hs_with_public_pem":
        head = b64u(json.dumps(dict({"alg": "HS256", "typ": "JWT"}, **headers)).encode())
        body = b64u(json.dumps(claims).encode())
        mac = hmac.new(key["public_pem"].encode(), (head + "." + body).encode(), hashlib.sha256)
        tok = head + "." + body + "." + b64u(mac.digest())
    else:
        if alg == "SM2":
            compact = dict(separators=(",", ":"))
            head = b64u(json.dumps(dict({"alg": "SM2", "typ": "JWT"}, **headers), **compact).encode())
            body = b64u(json.dumps(claims, **compact).encode())
            tok = head + "." + body + "." + b64u(sm2_sign(key, (head + "." + body).encode()))
        else:
            signing_key = unb64u(key["secret"]) if alg == "HS256" else key["pem"]
            tok = jwt.encode(claims, signing_key, algorithm=alg, headers=headers)
        if attack == "tamper":
            head, body, sig = tok.split(".")
            raw = bytearray(unb64u(body))
            at = raw.index(b'"sub":"') + len(b'"sub":"')
            raw[at] ^= 1
            tok = head + "." + b64u(bytes(raw)) + "." + sig
        elif attack is not None:
            raise SystemExit("unknown attack " + attack)
    tokens.append(tok)

json.dump({"jwks": {"keys": jwks}, "private": private, "tokens": tokens, "now": now}, sys.stdout)
"#;

/// Runs the minting script with `req` on stdin; its JSON answer.
fn python(req: &Value) -> Value {
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (with PyJWT and cryptography: pip install pyjwt cryptography)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "minting with PyJWT failed (needs `pip install pyjwt cryptography`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("minting script prints JSON")
}

/// Key pairs made by Python: the public JWKS for the gateway, the private halves for minting.
pub struct Keys {
    jwks: Value,
    private: Value,
}

impl Keys {
    /// Fresh keys, one per `(kid, alg)`; `alg` is `ES256`, `RS256`, `PS256`, `EdDSA`, `HS256`
    /// or `SM2`.
    pub fn generate(keys: &[(&str, &str)]) -> Self {
        let keys: Vec<Value> = keys
            .iter()
            .map(|(kid, alg)| json!({"kid": kid, "alg": alg}))
            .collect();
        let out = python(&json!({"keys": keys, "iss": ISSUER, "aud": AUDIENCE}));
        Self {
            jwks: out["jwks"].clone(),
            private: out["private"].clone(),
        }
    }

    /// The public JWKS of every key.
    pub fn jwks(&self) -> Value {
        self.jwks.clone()
    }

    /// The public JWKS of the listed keys only.
    pub fn jwks_of(&self, kids: &[&str]) -> Value {
        let keys: Vec<Value> = self.jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| kids.contains(&k["kid"].as_str().unwrap()))
            .cloned()
            .collect();
        json!({ "keys": keys })
    }

    /// Tokens for the specs (see the module docs), minted in one Python run.
    pub fn mint(&self, specs: &[Value]) -> Vec<String> {
        let out = python(&json!({
            "private": self.private,
            "tokens": specs,
            "iss": ISSUER,
            "aud": AUDIENCE,
        }));
        out["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    }

    /// One token.
    pub fn token(&self, spec: Value) -> String {
        self.mint(&[spec]).pop().unwrap()
    }
}

/// A `jwt-auth` plugin entry (YAML flow mapping) accepting [`ISSUER`]/[`AUDIENCE`] with `jwks`;
/// `extra` is more config members, e.g. `"leeway_seconds: 60, revoked_jtis: [j1]"` (or empty).
pub fn jwt_auth(jwks: &Value, extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { ", " };
    format!(
        r#"{{ name: jwt-auth, config: {{ issuer: "{ISSUER}", audience: "{AUDIENCE}", keys: {jwks}{sep}{extra} }} }}"#
    )
}

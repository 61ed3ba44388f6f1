//! The platform's token signing keys: ES256 (P-256) made with ring, the private key sealed
//! with the master key, tokens encoded and checked with `jsonwebtoken`.
//!
//! The newest `active` key without a `retire_at` signs. A rotation makes a new key and gives
//! the old one a `retire_at` at least one access-token lifetime away: until then both are in
//! the key set, so tokens signed before the rotation verify until they expire.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Map, Value};

use crate::crypto::{new_id, MasterKey};
use crate::model::{IdentityKey, KeyStatus};

fn context(id: &str) -> String {
    format!("identity-key:{id}")
}

/// A new key pair: the resource to store (private key sealed).
pub fn generate(master: &MasterKey, now: i64) -> Result<IdentityKey, String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "cannot generate a P-256 key".to_string())?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| "cannot read the generated key".to_string())?;
    // SEC1 uncompressed point: 0x04 || x || y.
    let point = pair.public_key().as_ref();
    let (x, y) = point[1..].split_at(32);
    let id = new_id("ik");
    let kid = format!(
        "fenfa-{}-{}",
        crate::local_time::day(now),
        &id[id.len().saturating_sub(6)..]
    );
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
    });
    let Value::Object(jwk) = jwk else {
        unreachable!("a JSON object literal")
    };
    Ok(IdentityKey {
        sealed_private: master.seal(&context(&id), STANDARD.encode(pkcs8.as_ref()).as_bytes()),
        id,
        kid,
        jwk,
        status: KeyStatus::Active,
        retire_at: None,
        created_at: now,
        updated_at: now,
    })
}

/// The key that signs now: the newest active key without a retirement date.
pub fn signer(keys: &[IdentityKey]) -> Option<&IdentityKey> {
    keys.iter()
        .filter(|k| k.status == KeyStatus::Active && k.retire_at.is_none())
        .max_by_key(|k| (k.created_at, k.id.as_str()))
}

/// The keys tokens may be checked with at `now` (active, not past their retirement).
pub fn published(keys: &[IdentityKey], now: i64) -> impl Iterator<Item = &IdentityKey> {
    keys.iter()
        .filter(move |k| k.status == KeyStatus::Active && k.retire_at.is_none_or(|t| t > now))
}

/// The JWKS document of [`published`] keys.
pub fn jwks(keys: &[IdentityKey], now: i64) -> Value {
    let keys: Vec<Value> = published(keys, now)
        .map(|k| Value::Object(k.jwk.clone()))
        .collect();
    json!({ "keys": keys })
}

/// Signs `claims` with `key`.
pub fn sign(
    master: &MasterKey,
    key: &IdentityKey,
    claims: &Map<String, Value>,
) -> Result<String, String> {
    let b64 = master.open(&context(&key.id), &key.sealed_private)?;
    let der = STANDARD
        .decode(&b64)
        .map_err(|e| format!("identity key {}: {e}", key.id))?;
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&der))
        .map_err(|e| format!("cannot sign a token: {e}"))
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Missing, malformed, unknown `kid`, bad signature, wrong issuer or audience.
    Invalid,
    Expired,
}

/// Checks a token signed by one of the [`published`] keys, for `issuer` and `audience`, and
/// returns its claims.
pub fn verify(
    keys: &[IdentityKey],
    now: i64,
    token: &str,
    issuer: &str,
    audience: &str,
) -> Result<Map<String, Value>, Refused> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Refused::Invalid)?;
    let kid = header.kid.ok_or(Refused::Invalid)?;
    let key = published(keys, now)
        .find(|k| k.kid == kid)
        .ok_or(Refused::Invalid)?;
    let coord = |n: &str| key.jwk.get(n).and_then(Value::as_str).unwrap_or("");
    let dk =
        DecodingKey::from_ec_components(coord("x"), coord("y")).map_err(|_| Refused::Invalid)?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    // Expiry is checked here against the control plane's clock, not jsonwebtoken's.
    v.validate_exp = false;
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(token, &dk, &v).map_err(|_| Refused::Invalid)?;
    let exp = data
        .claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(Refused::Invalid)?;
    if exp <= now {
        return Err(Refused::Expired);
    }
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_bytes(&[9u8; 32])
    }

    #[test]
    fn a_signed_token_verifies_with_its_key_and_is_refused_when_tampered_or_expired() {
        let m = master();
        let key = generate(&m, 1_800_000_000).unwrap();
        let mut claims = Map::new();
        claims.insert("sub".into(), json!("u_1"));
        claims.insert("iss".into(), json!("https://id"));
        claims.insert("aud".into(), json!("fenfa"));
        claims.insert("exp".into(), json!(1_800_000_900));
        let t = sign(&m, &key, &claims).unwrap();
        let keys = vec![key];
        let c = verify(&keys, 1_800_000_100, &t, "https://id", "fenfa").unwrap();
        assert_eq!(c["sub"], "u_1");
        assert_eq!(
            verify(&keys, 1_800_000_900, &t, "https://id", "fenfa"),
            Err(Refused::Expired)
        );
        assert_eq!(
            verify(&keys, 1_800_000_100, &t, "https://id", "fenfa:h5"),
            Err(Refused::Invalid)
        );
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        parts[1] = URL_SAFE_NO_PAD
            .encode(br#"{"sub":"u_2","iss":"https://id","aud":"fenfa","exp":1800000900}"#);
        assert_eq!(
            verify(
                &keys,
                1_800_000_100,
                &parts.join("."),
                "https://id",
                "fenfa"
            ),
            Err(Refused::Invalid)
        );
    }

    #[test]
    fn the_newest_unretired_key_signs_and_retired_keys_leave_the_set_after_their_date() {
        let m = master();
        let mut a = generate(&m, 100).unwrap();
        let b = generate(&m, 200).unwrap();
        a.retire_at = Some(1000);
        let keys = vec![a.clone(), b.clone()];
        assert_eq!(signer(&keys).unwrap().kid, b.kid);
        assert_eq!(published(&keys, 999).count(), 2);
        assert_eq!(published(&keys, 1000).count(), 1);
        let doc = jwks(&keys, 500);
        assert_eq!(doc["keys"].as_array().unwrap().len(), 2);
        assert!(doc.to_string().find("\"d\"").is_none(), "no private member");
    }
}

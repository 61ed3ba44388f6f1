//! The admin audit trail: every mutation (and every sign-in attempt) as one record — actor, role,
//! time, source IP, action, resource, before and after — chained so that changing, removing or
//! reordering a record is detectable.
//!
//! Chain: `hash = HMAC-SHA256(k, prev_hash ‖ "\n" ‖ canonical)`, where `canonical` is the JSON
//! array `[seq, at, actor, role, source_ip, action, kind, id, agency, before, after]` and `k` is
//! derived from the master key (so a database editor without the key cannot re-forge the chain).
//! The first record's `prev_hash` is 64 zeros. Records are appended inside the transaction of the
//! change they describe: no change without its record, no record without its change.
//!
//! 国密: with `settings.algorithms.audit_chain: hmac-sm3` the HMAC is HMAC-SM3 (same derived
//! key). The switch is itself a record, action [`SWITCH`], `before`/`after` `{"alg": …}`, whose
//! own hash is computed with the algorithm it switches to; every record after it uses that one
//! until the next switch. The verifier reads the algorithm from the chain, never from settings,
//! so a trail of several algorithms verifies record by record. [`follow`] writes the switch when
//! the setting changes and at every start.
//!
//! There is no code path that updates or deletes a record, and the API has no such endpoint.

use serde_json::{json, Value};
use sqlx::AnyConnection;

use fenfa_config::model::ChainAlgorithm;

use crate::crypto::MasterKey;
use crate::store::{self, AuditRow};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The action of a record that switches the chain's algorithm.
pub const SWITCH: &str = "audit.chain-algorithm";

fn parse_alg(s: &str) -> Option<ChainAlgorithm> {
    serde_json::from_value(Value::String(s.to_string())).ok()
}

/// The algorithm a switch record names in `after` (`None` if it names none).
fn switched_to(r: &AuditRow) -> Option<ChainAlgorithm> {
    let after: Value = serde_json::from_str(r.after.as_deref()?).ok()?;
    parse_alg(after["alg"].as_str()?)
}

/// What happened, before it is chained.
#[derive(Debug, Clone)]
pub struct Entry {
    pub at: i64,
    pub actor: String,
    pub role: String,
    pub source_ip: String,
    pub action: String,
    pub resource_kind: String,
    pub resource_id: String,
    pub agency_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

fn canonical(r: &AuditRow) -> String {
    json!([
        r.seq,
        r.at,
        r.actor,
        r.role,
        r.source_ip,
        r.action,
        r.resource_kind,
        r.resource_id,
        r.agency_id,
        r.before,
        r.after
    ])
    .to_string()
}

fn mac(master: &MasterKey, alg: ChainAlgorithm, prev: &str, r: &AuditRow) -> String {
    let mut data = prev.as_bytes().to_vec();
    data.push(b'\n');
    data.extend_from_slice(canonical(r).as_bytes());
    master.audit_mac_with(alg, &data)
}

/// Appends `e` to the chain inside the caller's transaction.
pub async fn append(
    conn: &mut AnyConnection,
    master: &MasterKey,
    e: Entry,
) -> Result<i64, sqlx::Error> {
    let (seq, prev, alg) = store::audit_next(conn).await?;
    let alg = parse_alg(&alg).ok_or_else(|| {
        sqlx::Error::Protocol(format!("audit_head names an unknown algorithm {alg:?}"))
    })?;
    let mut row = AuditRow {
        seq,
        at: e.at,
        actor: e.actor,
        role: e.role,
        source_ip: e.source_ip,
        action: e.action,
        resource_kind: e.resource_kind,
        resource_id: e.resource_id,
        agency_id: e.agency_id,
        before: e.before.map(|v| v.to_string()),
        after: e.after.map(|v| v.to_string()),
        prev_hash: prev.clone(),
        hash: String::new(),
    };
    row.hash = mac(master, alg, &prev, &row);
    store::audit_insert(conn, &row).await?;
    Ok(seq)
}

/// Makes the chain use `wanted` from now on: if it does not already, appends the switch record
/// (chained with `wanted`) in its own transaction. Several control-plane processes may call it
/// at once: the head row serialises them, and only the first writes a record.
pub async fn follow(
    pool: &sqlx::AnyPool,
    master: &MasterKey,
    wanted: ChainAlgorithm,
    at: i64,
    actor: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (seq, prev, current) = store::audit_next(&mut tx).await?;
    if parse_alg(&current) == Some(wanted) {
        tx.rollback().await?;
        return Ok(false);
    }
    let mut row = AuditRow {
        seq,
        at,
        actor: actor.to_string(),
        role: "system".into(),
        source_ip: String::new(),
        action: SWITCH.into(),
        resource_kind: "settings".into(),
        resource_id: "audit_chain".into(),
        agency_id: None,
        before: Some(json!({ "alg": current }).to_string()),
        after: Some(json!({ "alg": wanted.as_str() }).to_string()),
        prev_hash: prev.clone(),
        hash: String::new(),
    };
    row.hash = mac(master, wanted, &prev, &row);
    store::audit_insert(&mut tx, &row).await?;
    store::audit_set_alg(&mut tx, wanted.as_str()).await?;
    tx.commit().await?;
    tracing::info!(from = %current, to = %wanted, seq, "admin audit: the chain algorithm switched");
    Ok(true)
}

/// The outcome of checking the whole chain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub ok: bool,
    pub records: i64,
    /// The first record that does not verify (missing, altered or out of order).
    pub first_bad_seq: Option<i64>,
    pub message: String,
    /// Where each algorithm starts: `(first record, algorithm)`, oldest first.
    pub algorithms: Vec<(i64, ChainAlgorithm)>,
}

/// Recomputes every link from the first record to the head.
pub async fn verify(pool: &sqlx::AnyPool, master: &MasterKey) -> Result<Verification, sqlx::Error> {
    let (head_seq, head_hash) = store::audit_head(pool).await?;
    let mut prev = GENESIS.to_string();
    let mut expected_seq = 1;
    let mut count = 0;
    let mut alg = ChainAlgorithm::HmacSha256;
    let mut algorithms = vec![(1, alg)];
    loop {
        let batch = store::audit_range(pool, expected_seq - 1, 1000).await?;
        if batch.is_empty() {
            break;
        }
        for r in batch {
            let bad = |msg: String| Verification {
                ok: false,
                records: count,
                first_bad_seq: Some(expected_seq),
                message: msg,
                algorithms: algorithms.clone(),
            };
            if r.seq != expected_seq {
                return Ok(bad(format!(
                    "record {expected_seq} is missing (next is {})",
                    r.seq
                )));
            }
            if r.prev_hash != prev {
                return Ok(bad(format!(
                    "record {} does not link to the record before it",
                    r.seq
                )));
            }
            let this = if r.action == SWITCH {
                match switched_to(&r) {
                    Some(a) => a,
                    None => {
                        return Ok(bad(format!(
                            "record {} switches the algorithm but names none it knows",
                            r.seq
                        )))
                    }
                }
            } else {
                alg
            };
            if mac(master, this, &prev, &r) != r.hash {
                return Ok(bad(format!("record {} was altered ({this})", r.seq)));
            }
            if this != alg {
                algorithms.push((r.seq, this));
                alg = this;
            }
            prev = r.hash;
            expected_seq += 1;
            count += 1;
        }
    }
    if count != head_seq || prev != head_hash {
        return Ok(Verification {
            ok: false,
            records: count,
            first_bad_seq: Some(count + 1),
            message: format!(
                "the chain ends at record {count} but the head says {head_seq}: records were removed from the end"
            ),
            algorithms,
        });
    }
    let used: Vec<String> = algorithms
        .iter()
        .map(|(from, a)| format!("{a} from record {from}"))
        .collect();
    Ok(Verification {
        ok: true,
        records: count,
        first_bad_seq: None,
        message: format!("{count} records verified ({})", used.join(", ")),
        algorithms,
    })
}

/// A stored record as the API shows it.
pub fn view(r: &AuditRow) -> Value {
    let parse = |s: &Option<String>| {
        s.as_deref()
            .map(|t| serde_json::from_str(t).unwrap_or(Value::String(t.to_string())))
            .unwrap_or(Value::Null)
    };
    json!({
        "seq": r.seq,
        "at": r.at,
        "time": crate::clock::rfc3339(r.at),
        "actor": r.actor,
        "role": r.role,
        "source_ip": r.source_ip,
        "action": r.action,
        "resource_kind": r.resource_kind,
        "resource_id": r.resource_id,
        "agency_id": r.agency_id,
        "before": parse(&r.before),
        "after": parse(&r.after),
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    })
}

/// `fenfa-admin audit verify`: opens the database directly (no API, no running control plane)
/// with the master key of `data_dir` (or `FENFA_MASTER_KEY`) and checks the whole chain. Nothing
/// is created: a missing key or database is an error, not a fresh start.
pub async fn verify_offline(
    data_dir: &std::path::Path,
    database: Option<&str>,
    master_key_env: Option<&str>,
) -> Result<Verification, String> {
    let master = match master_key_env.filter(|k| !k.trim().is_empty()) {
        Some(k) => MasterKey::parse(k)?,
        None => {
            let path = data_dir.join(crate::crypto::MASTER_KEY_FILE);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "cannot read the master key {}: {e} (or set FENFA_MASTER_KEY)",
                    path.display()
                )
            })?;
            MasterKey::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    let url = match database {
        Some(u) => u.to_string(),
        None => {
            let file = data_dir.join("fenfa-admin.db");
            if !file.is_file() {
                return Err(format!(
                    "no database at {} (give --database)",
                    file.display()
                ));
            }
            format!("sqlite://{}", file.display())
        }
    };
    let store = store::Store::open(&url).await?;
    if let Ok(Some(kcv)) = store::key_check(&store.pool).await {
        if kcv != master.check_value() {
            return Err("the master key does not match this database's; the chain cannot be checked with it".into());
        }
    }
    verify(&store.pool, &master)
        .await
        .map_err(|e| format!("reading the admin audit: {e}"))
}

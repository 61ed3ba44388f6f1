//! Choosing a target for a request, without locks.
//!
//! Weighted round robin uses a precomputed smooth-WRR sequence (nginx's algorithm, run once at
//! compile time) and one atomic cursor. Consistent hashing uses pingora's ketama continuum; when
//! the hashed target is unavailable the walk continues clockwise, so only that target's keys move.
//! Both skip unavailable targets and the ones already tried by this request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use pingora_ketama::{Bucket, Continuum};

use super::target::{PassivePolicy, TargetState};

pub use fenfa_config::check::HashOn;

enum Strategy {
    RoundRobin {
        seq: Box<[u16]>,
        cursor: AtomicUsize,
    },
    /// `points`: ring size (160 per unit of weight): the longest walk that can find a target.
    Hash {
        ring: Continuum,
        on: HashOn,
        points: usize,
    },
}

/// The targets of one service and the strategy that picks among them.
pub struct Pool {
    targets: Vec<Arc<TargetState>>,
    strategy: Strategy,
    pub passive: Option<PassivePolicy>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

/// Longest round-robin sequence kept; weights are scaled down proportionally beyond it.
const MAX_SEQ: u64 = 4096;

impl Pool {
    /// `targets` with their weights (all ≥ 1, at most 65535 targets; checked by the compiler).
    pub fn round_robin(
        targets: Vec<(Arc<TargetState>, u32)>,
        passive: Option<PassivePolicy>,
    ) -> Self {
        let seq = smooth_wrr_sequence(&targets.iter().map(|(_, w)| *w).collect::<Vec<_>>());
        Self {
            targets: targets.into_iter().map(|(t, _)| t).collect(),
            strategy: Strategy::RoundRobin {
                seq,
                cursor: AtomicUsize::new(fastrand::usize(..1024)),
            },
            passive,
        }
    }

    pub fn consistent_hash(
        targets: Vec<(Arc<TargetState>, u32)>,
        on: HashOn,
        passive: Option<PassivePolicy>,
    ) -> Self {
        let buckets: Vec<Bucket> = targets
            .iter()
            .map(|(t, w)| Bucket::new(t.addr, *w))
            .collect();
        let points = targets.iter().map(|(_, w)| *w as usize).sum::<usize>() * 160 + 1;
        Self {
            targets: targets.into_iter().map(|(t, _)| t).collect(),
            strategy: Strategy::Hash {
                ring: Continuum::new(&buckets),
                on,
                points,
            },
            passive,
        }
    }

    pub fn targets(&self) -> &[Arc<TargetState>] {
        &self.targets
    }

    pub fn hash_on(&self) -> Option<&HashOn> {
        match &self.strategy {
            Strategy::Hash { on, .. } => Some(on),
            Strategy::RoundRobin { .. } => None,
        }
    }

    /// Picks an available target not in `tried` (a bit set of target indexes).
    /// `key` is the hash key for consistent hashing (ignored by round robin).
    pub fn select(&self, key: &[u8], tried: u64, now_ms: u64) -> Option<usize> {
        let usable = |i: usize| tried & bit(i) == 0 && self.targets[i].is_available(now_ms);
        match &self.strategy {
            Strategy::RoundRobin { seq, cursor } => {
                // Only a request's first pick advances the cursor: if retries did too, the
                // request after a failed one would start on the failing target again, and a
                // slow or dead target would get every first attempt instead of its share.
                let start = if tried == 0 {
                    cursor.fetch_add(1, Relaxed)
                } else {
                    cursor.load(Relaxed)
                };
                (0..seq.len())
                    .map(|k| seq[(start + k) % seq.len()] as usize)
                    .find(|&i| usable(i))
            }
            Strategy::Hash { ring, points, .. } => ring
                .node_iter(key)
                .take(*points)
                .filter_map(|addr| self.index_of(addr))
                .find(|&i| usable(i)),
        }
    }

    fn index_of(&self, addr: &SocketAddr) -> Option<usize> {
        self.targets.iter().position(|t| t.addr == *addr)
    }
}

/// Bit for target `i` in a `tried` set; targets beyond 63 share the last bit (retries are few).
pub fn bit(i: usize) -> u64 {
    1u64 << i.min(63)
}

/// nginx's smooth weighted round robin, unrolled into a fixed sequence of target indexes.
fn smooth_wrr_sequence(weights: &[u32]) -> Box<[u16]> {
    let total: u64 = weights.iter().map(|&w| w as u64).sum();
    let weights: Vec<i64> = if total > MAX_SEQ {
        weights
            .iter()
            .map(|&w| ((w as u64 * MAX_SEQ) / total).max(1) as i64)
            .collect()
    } else {
        weights.iter().map(|&w| w as i64).collect()
    };
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        seq.push(best as u16);
    }
    seq.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(n: usize) -> Vec<Arc<TargetState>> {
        (0..n)
            .map(|i| {
                let a: SocketAddr = format!("127.0.0.1:{}", 1000 + i).parse().unwrap();
                Arc::new(TargetState::new(a, a.to_string(), "127.0.0.1".into()))
            })
            .collect()
    }

    #[test]
    fn smooth_wrr_interleaves_by_weight() {
        assert_eq!(&*smooth_wrr_sequence(&[5, 1, 1]), &[0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn round_robin_follows_weights_and_skips_tried() {
        let t = targets(2);
        let pool = Pool::round_robin(vec![(t[0].clone(), 3), (t[1].clone(), 1)], None);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[pool.select(b"", 0, 0).unwrap()] += 1;
        }
        assert_eq!(counts, [300, 100]);
        for _ in 0..10 {
            assert_eq!(pool.select(b"", bit(0), 0), Some(1));
        }
        assert_eq!(pool.select(b"", bit(0) | bit(1), 0), None);
    }

    #[test]
    fn consistent_hash_is_stable_and_moves_only_the_lost_targets_keys() {
        let t = targets(4);
        let pool = Pool::consistent_hash(
            t.iter().map(|t| (t.clone(), 1)).collect(),
            HashOn::ClientIp,
            None,
        );
        let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|k| pool.select(k.as_bytes(), 0, 0).unwrap())
            .collect();
        let again: Vec<usize> = keys
            .iter()
            .map(|k| pool.select(k.as_bytes(), 0, 0).unwrap())
            .collect();
        assert_eq!(before, again);
        // Eject target 2: its keys move, the others stay.
        let p = PassivePolicy {
            max_failures: 1,
            cooldown: std::time::Duration::from_secs(60),
            unhealthy_statuses: vec![],
        };
        t[2].record_failure(&p, 0);
        for (k, b) in keys.iter().zip(&before) {
            let now = pool.select(k.as_bytes(), 0, 1).unwrap();
            if *b == 2 {
                assert_ne!(now, 2);
            } else {
                assert_eq!(now, *b);
            }
        }
    }
}

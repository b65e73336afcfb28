//! Consistent hashing on a ring of virtual nodes.

use super::{Candidate, LeastLoad, Selector};

/// Ring points per unit of weight.
pub const VNODES_PER_WEIGHT: usize = 100;
/// Weights above this count as this on the ring (bounds its size to
/// 10 000 points per server).
const MAX_RING_WEIGHT: u32 = 100;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The fixed hash of the ring: 64-bit FNV-1a over `bytes`, then the
/// `MurmurHash3` `fmix64` finalizer (FNV-1a alone spreads inputs that differ
/// only in their last bytes poorly). Not seeded: the same key maps to the
/// same server across restarts and across instances.
#[must_use]
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Consistent hashing (`policy = "consistent-hash"`).
///
/// Built once from the server ids and weights: server `id` with weight `w`
/// gets `100 * min(w, 100)` points, point `v` (from 0) at
/// `hash64(format!("{id}#{v}"))`. Weight 0: no points. A key goes to the
/// server of the first point at or after `hash64(key)`, clockwise (wrapping
/// around); ineligible servers are skipped, so a server going away moves
/// only its own keys, to the servers that follow its points. Points depend
/// only on the ids, so removing a server from the configuration moves only
/// that server's keys too.
///
/// No key, or no eligible server on the ring (candidates beyond the ids
/// given, or weight 0 on the ring): least load ([`LeastLoad`]).
#[derive(Debug, Clone)]
pub struct ConsistentHash {
    /// `(point, server index)`, sorted by point, then server id.
    ring: Box<[(u64, usize)]>,
}

impl ConsistentHash {
    /// The ring of `server_ids` with `weights` (a missing weight counts as 1).
    #[must_use]
    pub fn new(server_ids: &[String], weights: &[u32]) -> Self {
        let mut ring = Vec::new();
        for (index, id) in server_ids.iter().enumerate() {
            let weight = weights
                .get(index)
                .copied()
                .unwrap_or(1)
                .min(MAX_RING_WEIGHT);
            let points = VNODES_PER_WEIGHT * weight as usize;
            ring.extend((0..points).map(|v| (hash64(format!("{id}#{v}").as_bytes()), index)));
        }
        ring.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| server_ids[a.1].cmp(&server_ids[b.1]))
                .then(a.1.cmp(&b.1))
        });
        Self {
            ring: ring.into_boxed_slice(),
        }
    }

    /// The server that owns `key` among the eligible `candidates`, if any is
    /// on the ring.
    fn owner(&self, candidates: &[Candidate], key: &[u8]) -> Option<usize> {
        let hash = hash64(key);
        let start = self.ring.partition_point(|&(point, _)| point < hash);
        let (before, after) = self.ring.split_at(start);
        after
            .iter()
            .chain(before)
            .map(|&(_, index)| index)
            .find(|&index| candidates.get(index).is_some_and(Candidate::eligible))
    }
}

impl Selector for ConsistentHash {
    fn select(&self, candidates: &[Candidate], key: Option<&[u8]>) -> Option<usize> {
        if !candidates.iter().any(Candidate::eligible) {
            return None;
        }
        key.and_then(|key| self.owner(candidates, key))
            .or_else(|| LeastLoad.select(candidates, None))
    }
}

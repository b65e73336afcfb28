//! Backend selection within a pool: pure logic over a snapshot of the
//! pool's servers ([`Candidate`]s, in the pool's order), behind
//! [`Selector`].
//!
//! A candidate is *eligible* when `available` is true and `weight` is not 0
//! (weight 0 means drained). No selector ever returns an ineligible
//! candidate; all return `None` when none is eligible.
//!
//! Policies (`policy = "least-load" | "round-robin" | "consistent-hash"`):
//! - [`LeastLoad`]: fewest requests in flight relative to weight, random
//!   among ties; power of two choices above [`least_load::P2C_THRESHOLD`] (8) eligible
//!   candidates.
//! - [`RoundRobin`]: smooth weighted round-robin (nginx).
//! - [`ConsistentHash`]: a ring of virtual nodes hashed from the server ids
//!   with a fixed hash; the request key picks the point; no key falls back
//!   to least-load.

pub mod consistent_hash;
pub mod least_load;
pub mod round_robin;

#[cfg(test)]
mod tests;

use serde::Deserialize;

pub use consistent_hash::ConsistentHash;
pub use least_load::LeastLoad;
pub use round_robin::RoundRobin;

/// One server of the pool at the moment of the choice. Its index is its
/// position in the slice handed to [`Selector::select`], which must be the
/// order of the `server_ids` given to [`build`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Relative capacity; 0 = drained, never chosen.
    pub weight: u32,
    /// Requests sent to it and not yet complete.
    pub in_flight: u64,
    /// False for servers that are down or already tried for this request.
    pub available: bool,
}

impl Candidate {
    /// Available and with a non-zero weight.
    #[must_use]
    pub fn eligible(&self) -> bool {
        self.available && self.weight > 0
    }
}

/// A selection policy.
pub trait Selector: Send + Sync + std::fmt::Debug {
    /// Picks a candidate index, never one with available == false; None if none is available.
    fn select(&self, candidates: &[Candidate], key: Option<&[u8]>) -> Option<usize>;
}

/// `policy = "least-load" | "round-robin" | "consistent-hash"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    #[default]
    LeastLoad,
    RoundRobin,
    ConsistentHash,
}

/// The selector for `policy` over the servers `server_ids` (stable
/// identities such as `"192.0.2.6:80"`) with their configured `weights`
/// (a missing weight counts as 1). Only the hash ring uses ids and weights
/// (its virtual nodes are placed once, here); least-load and round-robin
/// read the weights of the candidates at each choice.
#[must_use]
pub fn build(policy: Policy, server_ids: &[String], weights: &[u32]) -> Box<dyn Selector> {
    match policy {
        Policy::LeastLoad => Box::new(LeastLoad),
        Policy::RoundRobin => Box::new(RoundRobin::new(server_ids.len())),
        Policy::ConsistentHash => Box::new(ConsistentHash::new(server_ids, weights)),
    }
}

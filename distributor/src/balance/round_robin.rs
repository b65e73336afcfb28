//! Smooth weighted round-robin, as in nginx's upstream module.

use std::sync::{Mutex, PoisonError};

use super::{Candidate, Selector};

/// Smooth weighted round-robin (`policy = "round-robin"`).
///
/// Each server has a current weight, starting at 0. At each choice every
/// eligible candidate's current weight grows by its weight; the candidate
/// with the greatest current weight (the first one on a tie) is chosen and
/// its current weight drops by the sum of the eligible weights. Weights
/// 5, 1, 1 give `a a b a c a a`, repeating: the heavy server's turns are
/// spread out instead of bunched. Ineligible candidates keep their current
/// weight unchanged (nginx does the same for servers marked down).
///
/// The weights are the candidates' at each call. The current weights sit
/// behind a `Mutex` (one short critical section per choice, no allocation
/// unless the pool grows); a poisoned lock is recovered, never a panic.
#[derive(Debug, Default)]
pub struct RoundRobin {
    current: Mutex<Vec<i64>>,
}

impl RoundRobin {
    /// State for a pool of `servers` (it grows if more candidates come).
    #[must_use]
    pub fn new(servers: usize) -> Self {
        Self {
            current: Mutex::new(vec![0; servers]),
        }
    }
}

impl Selector for RoundRobin {
    fn select(&self, candidates: &[Candidate], _key: Option<&[u8]>) -> Option<usize> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.len() < candidates.len() {
            current.resize(candidates.len(), 0);
        }
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for (i, (c, cur)) in candidates.iter().zip(current.iter_mut()).enumerate() {
            if !c.eligible() {
                continue;
            }
            let weight = i64::from(c.weight);
            *cur = cur.saturating_add(weight);
            total = total.saturating_add(weight);
            if best.is_none_or(|(_, greatest)| *cur > greatest) {
                best = Some((i, *cur));
            }
        }
        let (best, _) = best?;
        current[best] = current[best].saturating_sub(total);
        Some(best)
    }
}

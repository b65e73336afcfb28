//! Least load: the eligible candidate with the fewest requests in flight
//! relative to its weight.

use std::cmp::Ordering;

use rand::Rng;

use super::{Candidate, Selector};

/// Above this many eligible candidates, [`LeastLoad`] compares two random
/// ones (power of two choices) instead of scanning for the minimum.
pub const P2C_THRESHOLD: usize = 8;

/// How loaded `a` is compared with `b`, weights considered, without
/// floating point: `a` is less loaded (`Ordering::Less`) when
///
/// `(a.in_flight + 1) * b.weight < (b.in_flight + 1) * a.weight`
///
/// i.e. `(in_flight + 1) / weight`, the load a server would have with this
/// request added, is smaller. The `+ 1` makes weights count on idle pools
/// too (weight 3 and weight 1, both idle: `1/3 < 1/1`). Computed in `u128`,
/// so it cannot overflow. Both weights are expected non-zero (eligible).
#[must_use]
pub fn less_loaded(a: &Candidate, b: &Candidate) -> Ordering {
    let lhs = (u128::from(a.in_flight) + 1) * u128::from(b.weight);
    let rhs = (u128::from(b.in_flight) + 1) * u128::from(a.weight);
    lhs.cmp(&rhs)
}

/// Least load selection (`policy = "least-load"`).
///
/// Up to [`P2C_THRESHOLD`] eligible candidates: one pass finds every
/// candidate with the minimal load per [`less_loaded`] and picks one of them
/// uniformly at random (reservoir sampling, no allocation). Above: two
/// distinct eligible candidates drawn uniformly at random, the less loaded
/// of the two (a coin flip on a tie). The key is ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastLoad;

impl LeastLoad {
    /// [`Selector::select`] with the random source given (tests seed it).
    pub fn select_with(candidates: &[Candidate], rng: &mut impl Rng) -> Option<usize> {
        let eligible = candidates.iter().filter(|c| c.eligible()).count();
        match eligible {
            0 => None,
            n if n > P2C_THRESHOLD => Some(two_choices(candidates, n, rng)?),
            _ => minimum(candidates, rng),
        }
    }
}

impl Selector for LeastLoad {
    fn select(&self, candidates: &[Candidate], _key: Option<&[u8]>) -> Option<usize> {
        Self::select_with(candidates, &mut rand::rng())
    }
}

/// A uniformly random one among the least loaded eligible candidates.
fn minimum(candidates: &[Candidate], rng: &mut impl Rng) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut ties: u32 = 0;
    for (i, c) in candidates.iter().enumerate() {
        if !c.eligible() {
            continue;
        }
        let order = best.map_or(Ordering::Less, |b| less_loaded(c, &candidates[b]));
        match order {
            Ordering::Less => {
                best = Some(i);
                ties = 1;
            }
            Ordering::Equal => {
                ties += 1;
                // Keeps each of the `ties` tied candidates with probability 1/ties.
                if rng.random_range(0..ties) == 0 {
                    best = Some(i);
                }
            }
            Ordering::Greater => {}
        }
    }
    best
}

/// Power of two choices among the `eligible` (>= 2) eligible candidates.
fn two_choices(candidates: &[Candidate], eligible: usize, rng: &mut impl Rng) -> Option<usize> {
    let first = rng.random_range(0..eligible);
    let mut second = rng.random_range(0..eligible - 1);
    if second >= first {
        second += 1;
    }
    let a = nth_eligible(candidates, first)?;
    let b = nth_eligible(candidates, second)?;
    Some(match less_loaded(&candidates[a], &candidates[b]) {
        Ordering::Less => a,
        Ordering::Greater => b,
        Ordering::Equal => {
            if rng.random_bool(0.5) {
                a
            } else {
                b
            }
        }
    })
}

/// The index of the `n`th (from 0) eligible candidate.
fn nth_eligible(candidates: &[Candidate], n: usize) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.eligible())
        .nth(n)
        .map(|(i, _)| i)
}

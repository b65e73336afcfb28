use std::{
    cmp::{Ordering, Reverse},
    collections::{BinaryHeap, HashMap},
    sync::Arc,
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Deserialize;

use super::{
    Candidate, ConsistentHash, LeastLoad, Policy, RoundRobin, Selector, build,
    consistent_hash::hash64,
    least_load::{P2C_THRESHOLD, less_loaded},
};

fn cand(weight: u32, in_flight: u64) -> Candidate {
    Candidate {
        weight,
        in_flight,
        available: true,
    }
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("192.0.2.{i}:80")).collect()
}

fn all_policies(n: usize) -> Vec<Box<dyn Selector>> {
    let weights = vec![1; n];
    [
        Policy::LeastLoad,
        Policy::RoundRobin,
        Policy::ConsistentHash,
    ]
    .into_iter()
    .map(|p| build(p, &ids(n), &weights))
    .collect()
}

#[test]
fn policy_names() {
    #[derive(Deserialize)]
    struct Pool {
        policy: Policy,
    }
    for (text, want) in [
        ("least-load", Policy::LeastLoad),
        ("round-robin", Policy::RoundRobin),
        ("consistent-hash", Policy::ConsistentHash),
    ] {
        let pool: Pool = toml::from_str(&format!("policy = \"{text}\"")).unwrap();
        assert_eq!(pool.policy, want);
    }
    assert!(toml::from_str::<Pool>("policy = \"LeastLoad\"").is_err());
    assert!(toml::from_str::<Pool>("policy = \"random\"").is_err());
}

#[test]
fn weighted_load_comparison() {
    // (in_flight + 1) / weight
    assert_eq!(less_loaded(&cand(3, 0), &cand(1, 0)), Ordering::Less);
    assert_eq!(less_loaded(&cand(2, 1), &cand(1, 0)), Ordering::Equal);
    assert_eq!(less_loaded(&cand(1, 5), &cand(1, 4)), Ordering::Greater);
    assert_eq!(
        less_loaded(&cand(u32::MAX, u64::MAX), &cand(1, u64::MAX)),
        Ordering::Less
    );
}

#[test]
fn nothing_eligible_gives_none_and_ineligible_is_never_chosen() {
    for selector in all_policies(12) {
        assert_eq!(selector.select(&[], Some(b"k")), None, "{selector:?}");
        assert_eq!(selector.select(&[], None), None, "{selector:?}");
        let down: Vec<Candidate> = (0..12)
            .map(|i| Candidate {
                weight: u32::from(i % 2 == 0),
                in_flight: 0,
                available: i % 2 != 0,
            })
            .collect();
        assert_eq!(selector.select(&down, Some(b"k")), None, "{selector:?}");
        assert_eq!(selector.select(&down, None), None, "{selector:?}");
    }
    let mut rng = StdRng::seed_from_u64(1);
    for selector in all_policies(12) {
        for round in 0..5_000 {
            let n = rng.random_range(1..=12);
            let candidates: Vec<Candidate> = (0..n)
                .map(|_| Candidate {
                    weight: rng.random_range(0..3),
                    in_flight: rng.random_range(0..5),
                    available: rng.random_bool(0.6),
                })
                .collect();
            let key = round.to_string();
            let key = rng.random_bool(0.5).then_some(key.as_bytes());
            let picked = selector.select(&candidates, key);
            match picked {
                Some(i) => assert!(
                    candidates[i].eligible(),
                    "{selector:?} {candidates:?} -> {i}"
                ),
                None => assert!(
                    !candidates.iter().any(Candidate::eligible),
                    "{selector:?} {candidates:?} -> None"
                ),
            }
        }
    }
}

#[test]
fn least_load_picks_a_minimal_weighted_load() {
    let mut rng = StdRng::seed_from_u64(2);
    for _ in 0..20_000 {
        let n = rng.random_range(1..=P2C_THRESHOLD + 2);
        let candidates: Vec<Candidate> = (0..n)
            .map(|_| Candidate {
                weight: rng.random_range(0..5),
                in_flight: rng.random_range(0..20),
                available: rng.random_bool(0.9),
            })
            .collect();
        if candidates.iter().filter(|c| c.eligible()).count() > P2C_THRESHOLD {
            continue;
        }
        let Some(i) = LeastLoad.select(&candidates, None) else {
            assert!(!candidates.iter().any(Candidate::eligible));
            continue;
        };
        assert!(candidates[i].eligible());
        for other in candidates.iter().filter(|c| c.eligible()) {
            assert_ne!(
                less_loaded(other, &candidates[i]),
                Ordering::Less,
                "{candidates:?} -> {i}"
            );
        }
    }
}

#[test]
fn least_load_spreads_ties() {
    // Indexes 0, 2, 3, 5 are tied at (in_flight + 1) / weight = 2;
    // 1 is busier, 4 is drained, 6 is down.
    let candidates = [
        cand(1, 1),
        cand(1, 2),
        cand(2, 3),
        cand(1, 1),
        cand(0, 0),
        cand(3, 5),
        Candidate {
            weight: 1,
            in_flight: 0,
            available: false,
        },
    ];
    let mut counts = [0_u32; 7];
    for _ in 0..1_000 {
        counts[LeastLoad.select(&candidates, None).unwrap()] += 1;
    }
    for tied in [0, 2, 3, 5] {
        assert!(counts[tied] > 0, "{counts:?}");
    }
    for never in [1, 4, 6] {
        assert_eq!(counts[never], 0, "{counts:?}");
    }
}

/// Requests arrive one per step and last 1 to 199 steps (100 on average,
/// independent of the server): the weight-3 server must carry about three
/// times the requests of the weight-1 server, as a real pool would.
#[test]
fn least_load_respects_weights_under_load() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut candidates = [cand(3, 0), cand(1, 0)];
    let mut picks = [0_u64; 2];
    let mut running: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    for step in 0..100_000_u64 {
        while let Some(&Reverse((end, i))) = running.peek() {
            if end > step {
                break;
            }
            running.pop();
            candidates[i].in_flight -= 1;
        }
        let i = LeastLoad::select_with(&candidates, &mut rng).unwrap();
        candidates[i].in_flight += 1;
        running.push(Reverse((step + rng.random_range(1..200), i)));
        if step >= 5_000 {
            picks[i] += 1;
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "test statistics")]
    let ratio = picks[0] as f64 / picks[1] as f64;
    assert!((2.7..3.4).contains(&ratio), "ratio {ratio} ({picks:?})");
}

#[test]
fn power_of_two_choices_prefers_the_less_loaded() {
    // 20 candidates with loads 0..20; 2 of them unavailable.
    let mut candidates: Vec<Candidate> = (0..20).map(|i| cand(1, i)).collect();
    candidates[3].available = false;
    candidates[7].weight = 0;
    let mut counts = [0_u32; 20];
    let picks = 20_000;
    for _ in 0..picks {
        counts[LeastLoad.select(&candidates, None).unwrap()] += 1;
    }
    // The busiest is chosen only if paired with itself, which p2c never does.
    assert_eq!(counts[19], 0, "{counts:?}");
    assert_eq!(counts[3], 0, "{counts:?}");
    assert_eq!(counts[7], 0, "{counts:?}");
    // The least loaded wins every pair it is in: 2/18 of the picks (11%),
    // against 1/18 (5.6%) for a uniform choice.
    assert!(counts[0] > picks / 12, "{counts:?}");
    // Load decreases along the candidates' order: counts do too, roughly.
    let low: u32 = counts[..6].iter().sum();
    let high: u32 = counts[14..].iter().sum();
    assert!(low > 3 * high, "{counts:?}");
    // A tie between the two drawn: both are chosen.
    let tied: Vec<Candidate> = (0..10).map(|_| cand(1, 4)).collect();
    let mut seen = [false; 10];
    for _ in 0..1_000 {
        seen[LeastLoad.select(&tied, None).unwrap()] = true;
    }
    assert!(seen.iter().all(|&s| s), "{seen:?}");
}

#[test]
fn round_robin_is_smooth_and_weighted() {
    let rr = RoundRobin::new(3);
    let candidates = [cand(5, 0), cand(1, 0), cand(1, 0)];
    let names = ["a", "b", "c"];
    let sequence: Vec<&str> = (0..14)
        .map(|_| names[rr.select(&candidates, None).unwrap()])
        .collect();
    assert_eq!(
        sequence,
        [
            "a", "a", "b", "a", "c", "a", "a", "a", "a", "b", "a", "c", "a", "a"
        ]
    );
    // Unavailable and drained candidates are skipped; the rest alternate.
    let rr = RoundRobin::new(0);
    let mut candidates = [cand(1, 0), cand(1, 0), cand(0, 0), cand(1, 0)];
    candidates[1].available = false;
    let sequence: Vec<usize> = (0..6)
        .map(|_| rr.select(&candidates, None).unwrap())
        .collect();
    assert_eq!(sequence, [0, 3, 0, 3, 0, 3]);
}

#[test]
fn round_robin_is_exact_across_threads() {
    let rr = Arc::new(RoundRobin::new(3));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let rr = Arc::clone(&rr);
            std::thread::spawn(move || {
                let candidates = [cand(5, 0), cand(1, 0), cand(1, 0)];
                let mut counts = [0_u32; 3];
                for _ in 0..700 {
                    counts[rr.select(&candidates, None).unwrap()] += 1;
                }
                counts
            })
        })
        .collect();
    let mut total = [0_u32; 3];
    for t in threads {
        for (sum, n) in total.iter_mut().zip(t.join().unwrap()) {
            *sum += n;
        }
    }
    // 2800 picks = 400 whole cycles of 7.
    assert_eq!(total, [2000, 400, 400]);
}

#[test]
fn hash_is_fixed() {
    // Pinned: changing the hash would remap every key on upgrade.
    // Values computed independently (FNV-1a 64, then fmix64).
    assert_eq!(hash64(b""), 0xefd0_1f60_ba99_2926);
    assert_eq!(hash64(b"192.0.2.6:80#0"), 0xd552_6747_5572_e1a5);
    assert_eq!(hash64(b"session-1"), hash64(b"session-1"));
    assert_ne!(hash64(b"session-1"), hash64(b"session-2"));
}

fn owners(selector: &dyn Selector, candidates: &[Candidate], keys: &[String]) -> Vec<usize> {
    keys.iter()
        .map(|k| selector.select(candidates, Some(k.as_bytes())).unwrap())
        .collect()
}

#[test]
fn consistent_hash_is_stable_and_moves_only_the_removed_servers_keys() {
    let servers = ids(5);
    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let candidates = vec![cand(1, 0); 5];
    let ring = ConsistentHash::new(&servers, &[1; 5]);
    let before = owners(&ring, &candidates, &keys);

    // Same ids, new instance (a restart): same mapping, whatever the load.
    let again = build(Policy::ConsistentHash, &servers, &[1; 5]);
    let busy: Vec<Candidate> = (0..5).map(|i| cand(1, i * 10)).collect();
    assert_eq!(owners(again.as_ref(), &busy, &keys), before);

    // Roughly even spread.
    let mut counts = [0_usize; 5];
    for &o in &before {
        counts[o] += 1;
    }
    assert!(
        counts.iter().all(|&c| (1_400..2_600).contains(&c)),
        "{counts:?}"
    );

    // Server 2 down: only its keys move.
    let mut down = candidates.clone();
    down[2].available = false;
    let after = owners(&ring, &down, &keys);
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(*a, 2);
        if *b != 2 {
            assert_eq!(a, b);
        }
    }

    // Server 2 removed from the configuration: same, by identity.
    let mut fewer = servers.clone();
    fewer.remove(2);
    let smaller = ConsistentHash::new(&fewer, &[1; 4]);
    let after = owners(&smaller, &candidates[..4], &keys);
    for (b, a) in before.iter().zip(&after) {
        if *b != 2 {
            assert_eq!(fewer[*a], servers[*b]);
        }
    }
}

#[test]
fn consistent_hash_weights_and_fallback() {
    let servers = ids(2);
    let ring = build(Policy::ConsistentHash, &servers, &[3, 1]);
    let keys: Vec<String> = (0..8_000).map(|i| format!("k{i}")).collect();
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for o in owners(ring.as_ref(), &[cand(3, 0), cand(1, 0)], &keys) {
        *counts.entry(o).or_default() += 1;
    }
    #[expect(clippy::cast_precision_loss, reason = "test statistics")]
    let ratio = counts[&0] as f64 / counts[&1] as f64;
    assert!((2.4..3.8).contains(&ratio), "{counts:?}");

    // No key: least load.
    let candidates = [cand(1, 9), cand(1, 2), cand(1, 5)];
    for _ in 0..100 {
        assert_eq!(ring.select(&candidates, None), Some(1));
    }
    // An eligible candidate off the ring (no id given) is still reachable.
    let ring = build(Policy::ConsistentHash, &ids(1), &[1]);
    let candidates = [
        Candidate {
            weight: 1,
            in_flight: 0,
            available: false,
        },
        cand(1, 0),
    ];
    assert_eq!(ring.select(&candidates, Some(b"k")), Some(1));
    // Weight 0 on the ring: never owns a key.
    let ring = build(Policy::ConsistentHash, &ids(3), &[1, 0, 1]);
    let candidates = [cand(1, 0), cand(1, 0), cand(1, 0)];
    assert!(!owners(ring.as_ref(), &candidates, &keys[..1_000]).contains(&1));
}

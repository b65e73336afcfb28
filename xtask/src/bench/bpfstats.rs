//! The eBPF datapath's cost, from the kernel's own accounting: while
//! `bpf_stats` is on, every run of a program adds one to its `run_cnt` and
//! its duration to its `run_time_ns` (what `bpftool prog show` prints).
//! The counters are sampled just outside the timed window; the difference
//! over the run, per program, is its cost per run.

use std::{collections::BTreeMap, os::fd::OwnedFd, path::Path};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

/// distributor's programs, as in `distributor-ebpf/src/main.rs` (the kernel
/// keeps 15 bytes of a name: these fit).
const PROGRAMS: [&str; 3] = ["dist_xdp", "dist_tc_in", "dist_tc_out"];

/// A pinned map every one of distributor's programs uses. The pin in the
/// testbed's own pin directory ties the programs to the instance under
/// test: another instance elsewhere on the machine (a test) has its own
/// map, and a program is freed with its instance.
const INSTANCE_MAP: &str = distributor_common::maps::IFACE_STATS;

/// Keeps the kernel's program statistics on while it lives.
///
/// `BPF_ENABLE_STATS` rather than writing `kernel.bpf_stats_enabled`: the
/// kernel counts the holders of such descriptors and turns the statistics
/// off again when the last one closes, so they end with the benchmark even
/// if it is killed, and a value someone else set through the sysctl is
/// left alone (the sysctl still reads as it was set: it shows only its own
/// share).
pub struct StatsOn {
    _fd: OwnedFd,
}

/// Turns the statistics on until the returned guard drops.
pub fn enable() -> Result<StatsOn> {
    let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("turning on eBPF program statistics (BPF_ENABLE_STATS, kernel >= 5.8)")?;
    Ok(StatsOn { _fd: fd })
}

/// One program's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counters {
    name: String,
    run_time_ns: u64,
    run_cnt: u64,
}

/// The counters of the instance's programs, by program id.
#[derive(Debug, Clone, Default)]
pub struct Sample(BTreeMap<u32, Counters>);

impl Sample {
    /// Reads the counters of the programs of the instance whose maps are
    /// pinned in `pin_dir`.
    pub fn take(pin_dir: &Path) -> Result<Self> {
        let pin = pin_dir.join(INSTANCE_MAP);
        let map = aya::maps::MapInfo::from_pin(&pin)
            .with_context(|| format!("no map pinned at {}", pin.display()))?
            .id();
        let mut programs = BTreeMap::new();
        // Programs of other work on the machine come and go while we walk
        // the list: one that vanished between its id and its info is an
        // error item, and not ours.
        for info in aya::programs::loaded_programs().filter_map(Result::ok) {
            let Some(name) = info.name_as_str().filter(|n| PROGRAMS.contains(n)) else {
                continue;
            };
            let ours = info
                .map_ids()
                .ok()
                .flatten()
                .is_some_and(|ids| ids.contains(&map));
            if !ours {
                continue;
            }
            programs.insert(
                info.id(),
                Counters {
                    name: name.to_owned(),
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                    run_cnt: info.run_count(),
                },
            );
        }
        anyhow::ensure!(
            !programs.is_empty(),
            "none of {PROGRAMS:?} uses map {map} (pinned at {})",
            pin.display()
        );
        Ok(Self(programs))
    }
}

/// What one program did during a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramCost {
    pub name: String,
    pub id: u32,
    pub runs: u64,
    pub run_time_ns: u64,
}

impl ProgramCost {
    /// Average nanoseconds per run (None: it did not run).
    pub fn ns_per_run(&self) -> Option<f64> {
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let avg = (self.runs > 0).then(|| self.run_time_ns as f64 / self.runs as f64);
        avg
    }
}

/// What distributor's programs did during a run.
#[derive(Debug, Clone, PartialEq)]
pub struct DatapathCost {
    /// By program name.
    pub programs: Vec<ProgramCost>,
}

impl DatapathCost {
    /// The counters' growth from `before` to `after`, for the programs in
    /// both (the same instance throughout).
    pub fn between(before: &Sample, after: &Sample) -> Self {
        let mut programs: Vec<ProgramCost> = after
            .0
            .iter()
            .filter_map(|(&id, a)| {
                let b = before.0.get(&id)?;
                Some(ProgramCost {
                    name: a.name.clone(),
                    id,
                    runs: a.run_cnt.saturating_sub(b.run_cnt),
                    run_time_ns: a.run_time_ns.saturating_sub(b.run_time_ns),
                })
            })
            .collect();
        programs.sort_by(|x, y| x.name.cmp(&y.name).then(x.id.cmp(&y.id)));
        Self { programs }
    }

    /// The cost of one packet: the average run of each program that ran,
    /// summed (a packet the gateway forwards meets an ingress and an egress
    /// hook). None if no program ran: statistics off, or no traffic.
    pub fn ns_per_packet(&self) -> Option<f64> {
        let per_run: Vec<f64> = self
            .programs
            .iter()
            .filter_map(ProgramCost::ns_per_run)
            .collect();
        (!per_run.is_empty()).then(|| per_run.iter().sum())
    }

    pub fn to_json(&self) -> Value {
        self.programs
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "id": p.id,
                    "runs": p.runs,
                    "run_time_ns": p.run_time_ns,
                    "ns_per_run": p.ns_per_run(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(progs: &[(u32, &str, u64, u64)]) -> Sample {
        Sample(
            progs
                .iter()
                .map(|&(id, name, run_time_ns, run_cnt)| {
                    (
                        id,
                        Counters {
                            name: name.to_owned(),
                            run_time_ns,
                            run_cnt,
                        },
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn cost_per_packet_sums_each_programs_average_run() {
        let before = sample(&[(7, "dist_tc_out", 1_000, 10), (6, "dist_tc_in", 500, 5)]);
        let after = sample(&[
            (7, "dist_tc_out", 1_000 + 30_000, 10 + 1_000),
            (6, "dist_tc_in", 500 + 100_000, 5 + 2_000),
        ]);
        let cost = DatapathCost::between(&before, &after);
        let names: Vec<&str> = cost.programs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["dist_tc_in", "dist_tc_out"]);
        assert_eq!(cost.programs[0].runs, 2_000);
        assert_eq!(cost.programs[0].ns_per_run(), Some(50.0));
        assert_eq!(cost.programs[1].ns_per_run(), Some(30.0));
        assert_eq!(cost.ns_per_packet(), Some(80.0));
    }

    #[test]
    fn programs_not_in_both_samples_and_idle_programs_do_not_count() {
        // Program 8 appeared after the first sample (another instance's,
        // or a reload): its counters did not grow over the run alone.
        let before = sample(&[(7, "dist_tc_out", 1_000, 10), (6, "dist_tc_in", 500, 5)]);
        let after = sample(&[
            (7, "dist_tc_out", 1_000 + 4_000, 10 + 100),
            (6, "dist_tc_in", 500, 5),
            (8, "dist_tc_in", 9_999, 9),
        ]);
        let cost = DatapathCost::between(&before, &after);
        assert_eq!(cost.programs.len(), 2);
        assert_eq!(cost.programs[0].ns_per_run(), None);
        assert_eq!(cost.ns_per_packet(), Some(40.0));
        // Statistics off: nothing grew.
        assert_eq!(
            DatapathCost::between(&before, &before).ns_per_packet(),
            None
        );
    }
}

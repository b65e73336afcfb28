//! The eBPF datapath's cost, from the kernel's own accounting: while
//! `bpf_stats` is on, every run of a program adds one to its `run_cnt` and
//! its duration to its `run_time_ns` (what `bpftool prog show` prints).
//! The counters are sampled just outside the timed window; their growth
//! over the run gives each program's cost per run, and the datapath's cost
//! per packet (see [`DatapathCost::ns_per_packet`]).

use std::{collections::BTreeMap, os::fd::OwnedFd, path::Path};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

/// distributor's programs, as in `distributor-ebpf/src/main.rs` (the kernel
/// keeps 15 bytes of a name: these fit).
const PROGRAMS: [&str; 3] = [XDP, TC_IN, "dist_tc_out"];

/// The XDP program (mode `xdp`, on every gateway interface): where a
/// packet enters the datapath when the instance has it.
const XDP: &str = "dist_xdp";

/// The TC ingress program (both modes, on every gateway interface): where a
/// packet enters the datapath without XDP.
const TC_IN: &str = "dist_tc_in";

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

    /// The program through which packets enter the datapath: `dist_xdp`
    /// when the instance has an XDP program (it sees every packet arriving
    /// on a gateway interface first; what it passes on meets `dist_tc_in`
    /// too), otherwise `dist_tc_in`. None: neither is in both samples.
    pub fn entry_program(&self) -> Option<&'static str> {
        [XDP, TC_IN]
            .into_iter()
            .find(|&entry| self.programs.iter().any(|p| p.name == entry))
    }

    /// Packets that entered the datapath during the run: the growth of the
    /// entry program's run count (see [`Self::entry_program`]), one per
    /// packet as that hook sees it (at TC one skb, which segmentation
    /// offload can make many segments long). A packet on its way out
    /// meets `dist_tc_out`: that run is not a further packet.
    pub fn packets(&self) -> u64 {
        self.entry_program().map_or(0, |entry| {
            self.programs
                .iter()
                .filter(|p| p.name == entry)
                .map(|p| p.runs)
                .sum()
        })
    }

    /// Nanoseconds all the instance's programs ran during the run.
    pub fn run_time_ns(&self) -> u64 {
        self.programs.iter().map(|p| p.run_time_ns).sum()
    }

    /// The datapath's cost per packet: the run time of all the instance's
    /// programs (`dist_xdp`, `dist_tc_in`, `dist_tc_out`) over the run,
    /// divided by the packets that entered the datapath (the run count of
    /// the entry program, [`Self::packets`]). Egress runs add their time
    /// but no packets, so the figure can only overstate the cost. None if
    /// no packet entered: statistics off, or no traffic.
    pub fn ns_per_packet(&self) -> Option<f64> {
        let packets = self.packets();
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let avg = (packets > 0).then(|| self.run_time_ns() as f64 / packets as f64);
        avg
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
    fn tc_mode_cost_per_packet_is_all_run_time_over_tc_ingress_runs() {
        let before = sample(&[(7, "dist_tc_out", 1_000, 10), (6, "dist_tc_in", 500, 5)]);
        let after = sample(&[
            (7, "dist_tc_out", 1_000 + 30_000, 10 + 1_000),
            (6, "dist_tc_in", 500 + 100_000, 5 + 2_000),
        ]);
        let cost = DatapathCost::between(&before, &after);
        let names: Vec<&str> = cost.programs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["dist_tc_in", "dist_tc_out"]);
        // Per program: as the kernel counted.
        assert_eq!(cost.programs[0].runs, 2_000);
        assert_eq!(cost.programs[0].run_time_ns, 100_000);
        assert_eq!(cost.programs[0].ns_per_run(), Some(50.0));
        assert_eq!(cost.programs[1].runs, 1_000);
        assert_eq!(cost.programs[1].ns_per_run(), Some(30.0));
        // Combined: (100 000 + 30 000) ns over 2 000 packets in; the
        // egress runs add time, not packets.
        assert_eq!(cost.entry_program(), Some("dist_tc_in"));
        assert_eq!(cost.packets(), 2_000);
        assert_eq!(cost.run_time_ns(), 130_000);
        assert_eq!(cost.ns_per_packet(), Some(65.0));
    }

    #[test]
    fn xdp_mode_counts_packets_at_xdp_and_time_of_every_program() {
        // Most packets are spliced by XDP alone; a tenth pass on to TC
        // ingress, and the gateway's own packets meet TC egress.
        let before = sample(&[
            (11, "dist_xdp", 7_000, 70),
            (12, "dist_tc_out", 3_000, 30),
            (13, "dist_tc_in", 9_000, 9),
        ]);
        let after = sample(&[
            (11, "dist_xdp", 7_000 + 4_000_000, 70 + 10_000),
            (12, "dist_tc_out", 3_000 + 1_000_000, 30 + 2_000),
            (13, "dist_tc_in", 9_000 + 5_000_000, 9 + 1_000),
        ]);
        let cost = DatapathCost::between(&before, &after);
        let per_run: Vec<(&str, u64, Option<f64>)> = cost
            .programs
            .iter()
            .map(|p| (p.name.as_str(), p.runs, p.ns_per_run()))
            .collect();
        assert_eq!(
            per_run,
            [
                ("dist_tc_in", 1_000, Some(5_000.0)),
                ("dist_tc_out", 2_000, Some(500.0)),
                ("dist_xdp", 10_000, Some(400.0)),
            ]
        );
        assert_eq!(cost.entry_program(), Some("dist_xdp"));
        assert_eq!(cost.packets(), 10_000);
        assert_eq!(cost.run_time_ns(), 10_000_000);
        // 10 ms over 10 000 packets, not 400 + 5 000 + 500 ns.
        assert_eq!(cost.ns_per_packet(), Some(1_000.0));
    }

    #[test]
    fn programs_not_in_both_samples_and_idle_programs_do_not_count() {
        // Programs 8 and 9 appeared after the first sample (another
        // instance's, or a reload): their counters did not grow over the
        // run alone, and an XDP program among them does not make XDP the
        // entry.
        let before = sample(&[(7, "dist_tc_out", 1_000, 10), (6, "dist_tc_in", 500, 5)]);
        let after = sample(&[
            (7, "dist_tc_out", 1_000 + 4_000, 10 + 100),
            (6, "dist_tc_in", 500 + 6_000, 5 + 50),
            (8, "dist_tc_in", 9_999, 9),
            (9, "dist_xdp", 9_999, 99),
        ]);
        let cost = DatapathCost::between(&before, &after);
        assert_eq!(cost.programs.len(), 2);
        assert_eq!(cost.entry_program(), Some("dist_tc_in"));
        assert_eq!(cost.ns_per_packet(), Some(200.0));
        // Only egress ran: no packet entered, no cost per packet.
        let egress_only = sample(&[
            (7, "dist_tc_out", 1_000 + 4_000, 10 + 100),
            (6, "dist_tc_in", 500, 5),
        ]);
        let cost = DatapathCost::between(&before, &egress_only);
        assert_eq!(cost.programs[0].ns_per_run(), None);
        assert_eq!(cost.packets(), 0);
        assert_eq!(cost.ns_per_packet(), None);
        // Statistics off: nothing grew.
        assert_eq!(
            DatapathCost::between(&before, &before).ns_per_packet(),
            None
        );
        // No entry program at all.
        let out_only = sample(&[(7, "dist_tc_out", 1_000, 10)]);
        assert_eq!(
            DatapathCost::between(&out_only, &after).entry_program(),
            None
        );
        assert_eq!(
            DatapathCost::between(&out_only, &after).ns_per_packet(),
            None
        );
    }
}

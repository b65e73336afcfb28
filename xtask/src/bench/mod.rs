//! `cargo xtask bench`: relay contenders side by side on one testbed.
//!
//! The machine is small (2 cores) and shared with other work, so absolute
//! numbers drift from run to run; only ratios between contenders measured
//! in the same run mean something. Hence: every contender runs on the same
//! testbed, one at a time (started, checked, warmed up, measured, stopped),
//! and the contenders alternate `A B C D A B C D ...` over the repetitions
//! of each workload, so a slow minute hurts all of them alike. Ratios are
//! taken per repetition (neighbouring runs) and then the median.
//!
//! Client (wrk), gateway (the contender) and backends (nginx) all share the
//! same two cores: the CPU cost per request, summed over the whole machine,
//! is the figure that compares fairly; throughput includes the client's
//! and the backends' share of the cores.

mod bpfstats;
mod chart;
mod contender;
mod measure;
mod paths;
mod procfs;
mod report;
mod workload;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use distributor_tests::{Testbed, TestbedConfig};

pub use self::contender::Contender;
use self::{measure::Run, workload::Workload};
use crate::{bootstrap, build_distributor, step, workspace};

/// `cargo xtask bench` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A short run (1 KiB and 1 MiB, 3 s per run, 1 repetition): about
    /// 2 minutes, testbed included (plus a release build if needed).
    #[arg(long)]
    pub quick: bool,
    /// Only these contenders (comma-separated): routed, haproxy,
    /// haproxy-splice, nginx-proxy, distributor-relay, distributor-splice-tc,
    /// distributor-splice-xdp.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Repetitions per workload (default: 1 quick, 3 full).
    #[arg(long)]
    pub reps: Option<usize>,
    /// Seconds per measured run (default: 3 quick, 8 full).
    #[arg(long)]
    pub duration: Option<u64>,
    /// These workloads instead of the mode's (comma-separated):
    /// SIZE/cCONNS[/pDEPTH], SIZE in bytes or with k (KiB) or m (MiB),
    /// e.g. 1k/c16,1m/c16,1k/c16/p8 (pipeline depth 8).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<Workload>,
}

/// What one invocation measures.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: &'static str,
    pub reps: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub workloads: Vec<Workload>,
    pub contenders: Vec<Contender>,
}

impl Settings {
    fn new(args: &Args) -> Result<Self> {
        const KIB: usize = 1024;
        const MIB: usize = 1024 * 1024;
        let contenders = if args.only.is_empty() {
            Contender::ALL.to_vec()
        } else {
            args.only
                .iter()
                .map(|name| {
                    Contender::from_name(name.trim()).with_context(|| {
                        format!(
                            "unknown contender {name:?}; known: {}",
                            Contender::ALL.map(Contender::name).join(", ")
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?
        };
        let (mode, reps, warmup, duration, workloads) = if args.quick {
            let workloads = vec![
                Workload::new(KIB, 1),
                Workload::new(KIB, 16),
                Workload::new(KIB, 256),
                Workload::pipelined(KIB, 16, 8),
                Workload::new(MIB, 16),
            ];
            ("quick", 1, Duration::from_secs(1), 3, workloads)
        } else {
            let mut workloads = Vec::new();
            for size in [KIB, 64 * KIB, MIB, 16 * MIB] {
                for conns in [1, 16, 256] {
                    workloads.push(Workload::new(size, conns));
                }
                if size == KIB {
                    workloads.push(Workload::pipelined(KIB, 16, 8));
                }
            }
            ("full", 3, Duration::from_secs(2), 8, workloads)
        };
        let workloads = if args.workloads.is_empty() {
            workloads
        } else {
            for (i, w) in args.workloads.iter().enumerate() {
                anyhow::ensure!(
                    !args.workloads[..i].contains(w),
                    "--workloads names {} twice",
                    w.label()
                );
            }
            args.workloads.clone()
        };
        let reps = args.reps.unwrap_or(reps);
        let duration = args.duration.unwrap_or(duration);
        anyhow::ensure!((1..=20).contains(&reps), "--reps must be 1..=20");
        anyhow::ensure!(
            (1..=120).contains(&duration),
            "--duration must be 1..=120 s"
        );
        Ok(Self {
            mode,
            reps,
            warmup,
            duration: Duration::from_secs(duration),
            workloads,
            contenders,
        })
    }

    /// The object sizes the backends must serve.
    fn sizes(&self) -> Vec<usize> {
        let mut sizes: Vec<usize> = self.workloads.iter().map(|w| w.size).collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }
}

pub fn run(args: &Args) -> Result<()> {
    anyhow::ensure!(
        crate::is_root(),
        "`cargo xtask bench` builds network namespaces: run it as root"
    );
    let started = Instant::now();
    let settings = Settings::new(args)?;
    bootstrap::ensure(&[bootstrap::TESTBED, bootstrap::BENCH].concat())?;
    let bin = build_distributor(true)?;
    // The testbed starts this binary.
    // SAFETY: single-threaded here.
    unsafe { std::env::set_var("DISTRIBUTOR_BIN", &bin) };

    let stamp = utc_stamp(SystemTime::now());
    let results = workspace().join("results");
    let out_dir = results.join(format!("bench-{stamp}"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    step(&format!(
        "bringing up the testbed: client, gateway, 3 nginx backends; objects {}",
        settings
            .sizes()
            .iter()
            .map(|&s| workload::size_label(s))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let bed = Testbed::new(&TestbedConfig {
        backends: 3,
        object_sizes: settings.sizes(),
        ..TestbedConfig::default()
    })?;

    let paths = if settings.contenders.iter().any(|c| c.has_datapath()) {
        step("timing the datapath's paths alone (BPF_PROG_TEST_RUN)");
        let paths = paths::measure()
            .inspect_err(|e| eprintln!("    warning: no per-path figures: {e:#}"))
            .unwrap_or_default();
        for p in &paths {
            eprintln!("    {:>8.0} ns  {} ({})", p.ns_per_run, p.path, p.how);
        }
        paths
    } else {
        Vec::new()
    };

    let total = settings.workloads.len() * settings.reps * settings.contenders.len();
    step(&format!(
        "{} mode: {} workloads x {} contenders x {} repetitions = {total} runs of {} s",
        settings.mode,
        settings.workloads.len(),
        settings.contenders.len(),
        settings.reps,
        settings.duration.as_secs()
    ));
    // On for the whole benchmark (machine-wide: the kernel has one switch)
    // and off again when this guard drops, on errors too; without them the
    // column stays empty and the rest is measured all the same.
    let stats_on = if settings.contenders.iter().any(|c| c.has_datapath()) {
        bpfstats::enable()
            .inspect_err(|e| eprintln!("    warning: no datapath cost column: {e:#}"))
            .ok()
    } else {
        None
    };
    let mut runs: Vec<Run> = Vec::with_capacity(total);
    // A contender that failed its guard on a workload is not timed on it
    // again (the failure is reported once); one that passed is not guarded
    // again on it.
    let mut failed: BTreeSet<(usize, Contender)> = BTreeSet::new();
    let mut guarded: BTreeSet<(usize, Contender)> = BTreeSet::new();
    let mut n = 0;
    for (wi, w) in settings.workloads.iter().enumerate() {
        let script = bed.write_file(&format!("wrk-{wi}.lua"), &w.wrk_script())?;
        for rep in 0..settings.reps {
            for &c in &settings.contenders {
                n += 1;
                if failed.contains(&(wi, c)) {
                    continue;
                }
                let check = !guarded.contains(&(wi, c));
                let run = measure::run_one(&bed, c, w, rep, check, &settings, &script);
                if run.guard_passed {
                    guarded.insert((wi, c));
                }
                eprintln!("    [{n}/{total}] {}", run.summary_line());
                if run.guard_failure().is_some() {
                    failed.insert((wi, c));
                }
                runs.push(run);
            }
        }
    }
    drop(stats_on);
    drop(bed);

    let meta = report::Meta::collect(&settings, &stamp, started.elapsed());
    step(&format!("writing {}", out_dir.display()));
    report::write(&out_dir, &meta, &settings, &runs, &paths)?;
    for ext in ["md", "json", "svg"] {
        let from = out_dir.join(match ext {
            "md" => "results.md",
            "json" => "results.json",
            _ => "chart.svg",
        });
        let to = results.join(format!("latest.{ext}"));
        std::fs::copy(&from, &to).with_context(|| format!("copying to {}", to.display()))?;
    }
    println!(
        "{}",
        std::fs::read_to_string(out_dir.join("results.md")).unwrap_or_default()
    );
    step(&format!(
        "done in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        out_dir.display()
    ));
    Ok(())
}

/// `YYYYMMDDTHHMMSSZ` in UTC. No date library for one timestamp: this is
/// Howard Hinnant's `civil_from_days` (proleptic Gregorian, eras of 400
/// years).
fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(argv: &[&str]) -> Result<Settings> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let cli = <Cli as clap::Parser>::try_parse_from([&["bench"], argv].concat())?;
        Settings::new(&cli.args)
    }

    #[test]
    fn workloads_replace_the_modes_list() {
        let s = settings(&["--quick", "--workloads", "1m/c16,1k/c16/p8"]).unwrap();
        assert_eq!(s.mode, "quick");
        assert_eq!(
            s.workloads,
            [
                Workload::new(1024 * 1024, 16),
                Workload::pipelined(1024, 16, 8)
            ]
        );
        assert_eq!(s.sizes(), [1024, 1024 * 1024]);
        let full = settings(&["--workloads", "1k/c1", "--workloads", "64k/c256"]).unwrap();
        assert_eq!(full.mode, "full");
        assert_eq!(
            full.workloads,
            [Workload::new(1024, 1), Workload::new(64 * 1024, 256)]
        );
        assert_eq!(settings(&["--quick"]).unwrap().workloads.len(), 5);
    }

    #[test]
    fn bad_workloads_are_refused() {
        let e = settings(&["--workloads", "1m/c16,1x/c16"]).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("workload \"1x/c16\""), "{text}");
        assert!(text.contains("SIZE/cCONNS[/pDEPTH]"), "{text}");
        let e = settings(&["--workloads", "1k/c16,1024/c16"]).unwrap_err();
        assert_eq!(format!("{e:#}"), "--workloads names 1 KiB c16 twice");
    }

    #[test]
    fn utc_stamps() {
        let at = |s: u64| utc_stamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_767_225_599), "20251231T235959Z");
    }
}

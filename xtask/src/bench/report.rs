//! Medians, ratios and the three outputs: `results.json` (every raw run and
//! the medians), `results.md` (a table per object size) and `chart.svg`.

use std::{fmt::Write as _, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    Contender, Settings,
    chart::{self, Bar, Group},
    contender::PROXY_THREADS,
    measure::{Figures, MIB, Run},
    paths::PathCost,
    workload::{RECORD_MAX_SIZE, Workload, size_label},
};

/// Other work above this many cores marks a row as disturbed.
const NOISY_CORES: f64 = 0.2;

/// Where and how the runs were made.
pub struct Meta {
    pub stamp: String,
    pub mode: &'static str,
    pub reps: usize,
    pub warmup_s: u64,
    pub duration_s: u64,
    pub elapsed_s: f64,
    pub cpus: usize,
    pub kernel: String,
    pub commit: String,
    pub versions: Vec<(String, String)>,
}

impl Meta {
    pub fn collect(settings: &Settings, stamp: &str, elapsed: Duration) -> Self {
        let first_line = |program: &str, args: &[&str]| -> String {
            Command::new(program).args(args).output().map_or_else(
                |_| "?".to_owned(),
                |o| {
                    // nginx -v writes to stderr, the others to stdout.
                    let text = [o.stdout, o.stderr].concat();
                    String::from_utf8_lossy(&text)
                        .lines()
                        .next()
                        .unwrap_or("?")
                        .trim()
                        .to_owned()
                },
            )
        };
        let commit = Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(crate::workspace())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or_else(
                || "?".to_owned(),
                |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            );
        Self {
            stamp: stamp.to_owned(),
            mode: settings.mode,
            reps: settings.reps,
            warmup_s: settings.warmup.as_secs(),
            duration_s: settings.duration.as_secs(),
            elapsed_s: elapsed.as_secs_f64(),
            cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            commit,
            versions: vec![
                ("haproxy".to_owned(), first_line("haproxy", &["-v"])),
                ("nginx".to_owned(), first_line("nginx", &["-v"])),
                ("wrk".to_owned(), first_line("wrk", &["--version"])),
            ],
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "timestamp_utc": self.stamp,
            "mode": self.mode,
            "repetitions": self.reps,
            "warmup_s": self.warmup_s,
            "duration_s": self.duration_s,
            "elapsed_s": self.elapsed_s,
            "cpus": self.cpus,
            "kernel": self.kernel,
            "commit": self.commit,
            "versions": self.versions.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// The medians of one contender on one workload.
struct Summary<'a> {
    contender: Contender,
    workload: &'a Workload,
    ok: usize,
    /// Why no run succeeded (the first failure).
    failure: Option<String>,
    rps: f64,
    body_bytes_per_s: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    cpu_ms_per_10k: f64,
    cpu_s_per_gib: f64,
    /// Median of the runs' [`Figures::datapath_ns_per_packet`]. None: no
    /// eBPF programs, their counters unread, or no packet entered them.
    datapath_ns_per_packet: Option<f64>,
    /// Largest over the runs.
    peak_rss_bytes: Option<u64>,
    proxy_cores: Option<f64>,
    foreign_cores: Option<f64>,
    vs_routed: Option<f64>,
    vs_haproxy: Option<f64>,
}

impl Summary<'_> {
    fn to_json(&self) -> Value {
        json!({
            "contender": self.contender.name(),
            "workload": self.workload.label(),
            "size": self.workload.size,
            "conns": self.workload.conns,
            "depth": self.workload.depth,
            "ok_runs": self.ok,
            "failure": self.failure,
            "requests_per_s": (self.ok > 0).then_some(self.rps),
            "body_bytes_per_s": (self.ok > 0).then_some(self.body_bytes_per_s),
            "latency_p50_ms": self.p50_ms,
            "latency_p99_ms": self.p99_ms,
            "cpu_ms_per_10k_requests": (self.ok > 0).then_some(self.cpu_ms_per_10k),
            "cpu_s_per_gib": (self.ok > 0).then_some(self.cpu_s_per_gib),
            "datapath_ns_per_packet": self.datapath_ns_per_packet,
            "peak_rss_bytes": self.peak_rss_bytes,
            "proxy_cores": self.proxy_cores,
            "foreign_cores": self.foreign_cores,
            "ratio_vs_routed": self.vs_routed,
            "ratio_vs_haproxy": self.vs_haproxy,
        })
    }
}

/// Median of the values (None if empty).
fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        f64::midpoint(v[mid - 1], v[mid])
    })
}

fn summarize<'a>(settings: &'a Settings, runs: &[Run]) -> Vec<Summary<'a>> {
    let mut out = Vec::new();
    for w in &settings.workloads {
        let of = |c: Contender| -> Vec<&Run> {
            runs.iter()
                .filter(|r| r.contender == c && r.workload == *w)
                .collect()
        };
        // Body throughput of `c` in repetition `rep`, if it succeeded
        // (requests per second at one object size, but also fair when few
        // responses complete per connection).
        let rate_at = |c: Contender, rep: usize| -> Option<f64> {
            of(c)
                .iter()
                .find(|r| r.rep == rep)
                .and_then(|r| r.figures())
                .map(|f| f.body_bytes_per_s)
        };
        // Ratios pair each run with the reference's run of the same
        // repetition (seconds apart), then take the median.
        let ratio = |c: Contender, reference: Contender| -> Option<f64> {
            median(
                (0..settings.reps)
                    .filter_map(|rep| Some(rate_at(c, rep)? / rate_at(reference, rep)?))
                    .collect(),
            )
        };
        for &c in &settings.contenders {
            let mine = of(c);
            let figures: Vec<&Figures> = mine.iter().filter_map(|r| r.figures()).collect();
            let med = |f: fn(&Figures) -> f64| {
                median(figures.iter().map(|x| f(x)).collect()).unwrap_or(f64::NAN)
            };
            out.push(Summary {
                contender: c,
                workload: w,
                ok: figures.len(),
                failure: if figures.is_empty() {
                    mine.iter().find_map(|r| match &r.outcome {
                        super::measure::Outcome::GuardFailed(why) => Some(format!("guard: {why}")),
                        super::measure::Outcome::Failed(why) => Some(why.clone()),
                        super::measure::Outcome::Measured(_) => None,
                    })
                } else {
                    None
                },
                rps: med(|f| f.rps),
                body_bytes_per_s: med(|f| f.body_bytes_per_s),
                p50_ms: median(figures.iter().filter_map(|f| f.p50_ms).collect()),
                p99_ms: median(figures.iter().filter_map(|f| f.p99_ms).collect()),
                cpu_ms_per_10k: med(|f| f.cpu_ms_per_10k),
                cpu_s_per_gib: med(|f| f.cpu_s_per_gib),
                datapath_ns_per_packet: median(
                    figures
                        .iter()
                        .filter_map(|f| f.datapath_ns_per_packet())
                        .collect(),
                ),
                peak_rss_bytes: figures.iter().filter_map(|f| f.peak_rss_bytes).max(),
                proxy_cores: median(figures.iter().filter_map(|f| f.proxy_cores()).collect()),
                foreign_cores: median(figures.iter().map(|f| f.foreign_cores()).collect()),
                vs_routed: (c != Contender::Routed)
                    .then(|| ratio(c, Contender::Routed))
                    .flatten(),
                vs_haproxy: (c != Contender::Haproxy)
                    .then(|| ratio(c, Contender::Haproxy))
                    .flatten(),
            });
        }
    }
    out
}

pub fn write(
    dir: &Path,
    meta: &Meta,
    settings: &Settings,
    runs: &[Run],
    paths: &[PathCost],
) -> Result<()> {
    let summaries = summarize(settings, runs);
    let json = json!({
        "meta": meta.to_json(),
        "contenders": settings
            .contenders
            .iter()
            .map(|c| json!({ "name": c.name(), "setup": c.describe() }))
            .collect::<Vec<_>>(),
        "medians": summaries.iter().map(Summary::to_json).collect::<Vec<_>>(),
        "runs": runs.iter().map(Run::to_json).collect::<Vec<_>>(),
        "datapath_paths": paths.iter().map(PathCost::to_json).collect::<Vec<_>>(),
    });
    let write = |name: &str, text: &str| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("results.json", &serde_json::to_string_pretty(&json)?)?;
    let mut md = markdown(meta, settings, &summaries);
    md.push_str(&paths_markdown(paths));
    write("results.md", &md)?;
    write("chart.svg", &svg(meta, settings, &summaries))?;
    Ok(())
}

fn markdown(meta: &Meta, settings: &Settings, summaries: &[Summary]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Relay contenders, {} ({} mode)\n\n\
         {} repetitions per workload, contenders alternating; {} s warm-up and {} s measured \
         per run; one contender at a time on {} CPUs (kernel {}, commit {}); {:.0} s in all. \
         Figures are medians over the repetitions; a ratio compares body throughput (for one \
         object size: requests per second) with the reference's run of the same repetition, \
         then takes the median of those pairs. Only ratios from one run mean much: the \
         machine is small and shared.\n",
        meta.stamp,
        meta.mode,
        meta.reps,
        meta.warmup_s,
        meta.duration_s,
        meta.cpus,
        meta.kernel,
        meta.commit,
        meta.elapsed_s,
    );
    let disturbed = summaries
        .iter()
        .filter(|s| s.foreign_cores.is_some_and(|c| c > NOISY_CORES))
        .count();
    if disturbed > 0 {
        let _ = writeln!(
            md,
            "**Disturbed:** in {disturbed} of {} rows other work on the machine used more than \
             {NOISY_CORES} cores (column \"other cores\"); compare only rows with similar \
             values, or run again when the machine is quiet.\n",
            summaries.len()
        );
    }
    let _ = writeln!(md, "| contender | setup |\n|---|---|");
    for c in &settings.contenders {
        let _ = writeln!(md, "| {} | {} |", c.name(), c.describe());
    }
    let _ = writeln!(
        md,
        "\nThe client (wrk, 2 threads) sends a quarter of its requests with \
         `Cookie: tier=gold` (priority pool: b1), the rest to the default pool (b2, b3); client, \
         gateway and backends share the {cpus} cores.\n\n\
         - **req/s**: completed responses per second.\n\
         - **MiB/s**: response body bytes received per second (wrk's byte count less the \
         completed heads: bodies still in flight count, which matters for 16 MiB on 256 \
         connections, where few responses complete in a run).\n\
         - **CPU**: busy time of the whole machine (user, nice, system, irq, softirq over all \
         CPUs: client, gateway, backends, and anything else running), per 10 000 responses' \
         worth of body bytes and per GiB of bodies.\n\
         - **ns/pkt**: what distributor's eBPF programs cost per packet, from the kernel's \
         program statistics (`bpf_stats`, on for the benchmark): the run time of all the \
         instance's programs (`dist_xdp`, `dist_tc_in`, `dist_tc_out`) during the measured \
         run, divided by the packets that entered the datapath: the run count of the entry \
         program, `dist_xdp` when the instance has an XDP program (mode `xdp`), else \
         `dist_tc_in`. Egress runs (`dist_tc_out`) add their time but no packets, so the \
         figure can only overstate the cost. At TC a packet is one skb, which segmentation \
         offload can make many segments long. Per program (runs, run time, ns per run) and \
         the totals in results.json (`datapath_programs`, `datapath_entry_program`, \
         `datapath_packets`, `datapath_run_time_ns`). \"–\": no eBPF programs \
         (distributor-relay runs with the datapath off).\n\
         - **proxy cores**: the contender's own processes' CPU time over the run (near \
         {PROXY_THREADS}: the proxy alone is the bottleneck).\n\
         - **other cores**: CPU time of user-space processes outside the testbed over the \
         run: other work on the shared machine (above {NOISY_CORES} the run was disturbed).\n\
         - **peak RSS**: `VmHWM` summed over the contender's processes.\n\
         - Rows `p8` pipeline 8 requests per write; they have no latency figures (wrk's \
         coordinated-omission correction assumes one request per round trip and corrupts the \
         histogram).\n\n\
         Versions: {versions}.\n",
        cpus = meta.cpus,
        versions = meta
            .versions
            .iter()
            .map(|(k, v)| format!("{k}: `{v}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // One section per size, in order of first appearance (`--workloads`
    // may name sizes in any order).
    let mut sizes: Vec<usize> = Vec::new();
    for w in &settings.workloads {
        if !sizes.contains(&w.size) {
            sizes.push(w.size);
        }
    }
    for size in sizes {
        let _ = writeln!(md, "## {}\n", size_label(size));
        let _ = writeln!(
            md,
            "| contender | conns | req/s | MiB/s | p50 ms | p99 ms | CPU-ms / 10k req | \
             CPU-s / GiB | ns/pkt | peak RSS MiB | proxy cores | other cores | vs routed | \
             vs haproxy |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for s in summaries.iter().filter(|s| s.workload.size == size) {
            let name = s.contender.name();
            let conns = s.workload.conns_label();
            if s.ok == 0 {
                let why = one_line(s.failure.as_deref().unwrap_or("no run"));
                let _ = writeln!(
                    md,
                    "| {name} | {conns} | **FAILED**: {why} | | | | | | | | | | | |"
                );
                continue;
            }
            #[expect(clippy::cast_precision_loss, reason = "a few MiB")]
            let rss = s
                .peak_rss_bytes
                .map_or_else(|| "–".to_owned(), |b| format!("{:.1}", b as f64 / MIB));
            let opt = |v: Option<f64>, f: fn(f64) -> String| v.map_or_else(|| "–".to_owned(), f);
            let _ = writeln!(
                md,
                "| {name} | {conns} | {:.0} | {:.1} | {} | {} | {:.0} | {:.2} | {} | {rss} | {} | {} | {} | {} |",
                s.rps,
                s.body_bytes_per_s / MIB,
                opt(s.p50_ms, |l| format!("{l:.2}")),
                opt(s.p99_ms, |l| format!("{l:.2}")),
                s.cpu_ms_per_10k,
                s.cpu_s_per_gib,
                opt(s.datapath_ns_per_packet, |ns| format!("{ns:.0}")),
                opt(s.proxy_cores, |c| format!("{c:.2}")),
                opt(s.foreign_cores, |c| format!("{c:.2}")),
                opt(s.vs_routed, |r| format!("{r:.2}×")),
                opt(s.vs_haproxy, |r| format!("{r:.2}×")),
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "Honesty guard: before a contender is timed on a workload, 6 responses fetched \
         through it with curl (half with the gold cookie) must be 200, have the object's \
         length, come from the expected pool (routed: its one backend), and for objects of \
         1 MiB or more hash to the answering backend's copy. A run with more than 1% failed \
         requests (socket errors, timeouts, non-200) is FAILED, and so is one where the \
         backends' access logs show a backend outside the contender's pools, or (with \
         several completed responses per connection) a priority-pool share outside \
         15-35%: a quarter of the requests carry the gold cookie. wrk records `X-Backend` per \
         response for objects up to {} (larger bodies would cost the client more than the \
         proxies); the backends' access logs count every request served \
         (`served_by_backend` in results.json).",
        size_label(RECORD_MAX_SIZE)
    );
    md
}

/// A failure reason fit for a table cell: one line, no `|`, at most 300
/// characters (the full text is in results.json).
fn one_line(reason: &str) -> String {
    let flat = reason
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "/");
    match flat.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

fn svg(meta: &Meta, settings: &Settings, summaries: &[Summary]) -> String {
    let groups: Vec<Group> = settings
        .workloads
        .iter()
        .map(|w| Group {
            label: w.label(),
            bars: summaries
                .iter()
                .filter(|s| s.workload == w)
                .map(|s| Bar {
                    series: s.contender.name().to_owned(),
                    value: (s.ok > 0).then_some(s.body_bytes_per_s / MIB),
                })
                .collect(),
        })
        .collect();
    chart::grouped_bars_log(
        &format!(
            "Response throughput, MiB/s (log scale), median of {} — {} ({} mode)",
            meta.reps, meta.stamp, meta.mode
        ),
        &settings
            .contenders
            .iter()
            .map(|c| c.name().to_owned())
            .collect::<Vec<_>>(),
        &groups,
    )
}

/// The per-path table: empty when nothing was timed.
fn paths_markdown(paths: &[PathCost]) -> String {
    if paths.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "\n\n## The datapath's paths alone\n\n\
         Each TC path run through `BPF_PROG_TEST_RUN` on one fixed packet and map state \
         (`xtask/src/bench/paths.rs`), timed by the kernel around the program runs: no \
         other path, no transmit, no wake-up of the control plane mixed in, unlike \
         ns/pkt above. Single runs, each checked for its path's verdict (a repeated test \
         run would hand each repetition the packet the one before rewrote); a run's time \
         includes the test-run timer's own share: the first row is that floor.\n\n\
         | path | timed as | runs | ns/run |\n|---|---|---|---|\n",
    );
    for p in paths {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} |",
            p.path, p.how, p.runs, p.ns_per_run
        );
    }
    md
}

//! One measured run: start a contender, check it serves the right bytes
//! from the right pool, warm it up, time it with wrk, read the costs, stop
//! it.

use std::{
    collections::BTreeMap,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use distributor_tests::{Request, Testbed, VIP};
use serde_json::{Value, json};

use super::{
    Contender, Settings,
    bpfstats::{self, DatapathCost},
    contender::Running,
    procfs,
    workload::Workload,
};

/// Requests the honesty guard sends before a contender is timed on a
/// workload; every second one carries the gold cookie.
const GUARD_REQUESTS: usize = 6;

/// A run fails when more than this share of its requests failed.
const MAX_ERROR_SHARE: f64 = 0.01;

/// Extra time wrk gets beyond its duration before it is killed.
const WRK_GRACE: Duration = Duration::from_mins(1);

/// What a run measured, or why it has no figures.
#[derive(Debug, Clone)]
pub struct Run {
    pub contender: Contender,
    pub workload: Workload,
    pub rep: usize,
    /// The honesty guard ran in this run and passed.
    pub guard_passed: bool,
    /// Wall time of the whole run: start, guard, warm-up, measure, stop.
    pub wall_s: f64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    /// Served wrong bytes or from the wrong pool: not timed.
    GuardFailed(String),
    /// Could not start, died, or too many errors.
    Failed(String),
    /// Boxed: the figures are ten times the size of a reason.
    Measured(Box<Figures>),
}

/// The figures of one successful run.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub requests: u64,
    pub seconds: f64,
    /// Completed responses per second.
    pub rps: f64,
    /// Response body bytes the client received per second: wrk's byte
    /// count less the completed responses' heads. Unlike completed
    /// responses x size it counts bodies still in flight at the end, which
    /// matters when few responses complete per connection (16 MiB on 256
    /// connections).
    pub body_bytes_per_s: f64,
    /// Completed responses x object size per second.
    pub completed_body_bytes_per_s: f64,
    /// Length of one response head through this contender.
    pub head_bytes: u64,
    /// Latency percentiles; None for pipelined workloads, where wrk's
    /// coordinated-omission correction assumes one request per round trip
    /// and corrupts its histogram.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Busy CPU seconds of the whole machine during the run.
    pub machine_cpu_s: f64,
    pub cpu_ms_per_10k: f64,
    pub cpu_s_per_gib: f64,
    /// CPU seconds of the contender's own processes (None: `routed`).
    pub proxy_cpu_s: Option<f64>,
    /// CPU seconds user-space processes outside the testbed used during
    /// the run: how noisy the shared machine was.
    pub foreign_cpu_s: f64,
    /// Peak RSS summed over the contender's processes.
    pub peak_rss_bytes: Option<u64>,
    /// Failed requests (socket errors, timeouts, non-200) wrk counted.
    pub errors: u64,
    /// `X-Backend` values wrk saw (small objects only).
    pub wrk_backends: Option<BTreeMap<String, u64>>,
    /// Requests each backend's access log gained during the run.
    pub served: BTreeMap<String, u64>,
    /// What distributor's eBPF programs did (None: the contender runs
    /// none, or their counters could not be read).
    pub datapath: Option<DatapathCost>,
}

impl Figures {
    /// Cores the contender's processes kept busy on average.
    pub fn proxy_cores(&self) -> Option<f64> {
        self.proxy_cpu_s.map(|s| s / self.seconds)
    }

    /// Cores other work on the machine kept busy on average.
    pub fn foreign_cores(&self) -> f64 {
        self.foreign_cpu_s / self.seconds
    }

    /// The eBPF datapath's nanoseconds per packet: all its programs' run
    /// time over the packets that entered it (see
    /// [`DatapathCost::ns_per_packet`]).
    pub fn datapath_ns_per_packet(&self) -> Option<f64> {
        self.datapath.as_ref()?.ns_per_packet()
    }
}

impl Run {
    /// The guard's reason if the guard failed.
    pub fn guard_failure(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::GuardFailed(r) => Some(r),
            _ => None,
        }
    }

    pub fn figures(&self) -> Option<&Figures> {
        match &self.outcome {
            Outcome::Measured(f) => Some(f.as_ref()),
            _ => None,
        }
    }

    /// One progress line.
    pub fn summary_line(&self) -> String {
        let head = format!(
            "{:<17} {:<16} rep {} ({:4.1} s)",
            self.contender.name(),
            self.workload.label(),
            self.rep + 1,
            self.wall_s
        );
        match &self.outcome {
            Outcome::GuardFailed(r) => format!("{head}: GUARD FAILED: {r}"),
            Outcome::Failed(r) => format!("{head}: FAILED: {r}"),
            Outcome::Measured(f) => format!(
                "{head}: {:>9.0} req/s {:>8.1} MiB/s p99 {:>7} ms, {:.0} CPU-ms/10k{}{}, \
                 other {:.2} cores",
                f.rps,
                f.body_bytes_per_s / MIB,
                f.p99_ms
                    .map_or_else(|| "-".to_owned(), |l| format!("{l:.2}")),
                f.cpu_ms_per_10k,
                f.proxy_cores()
                    .map_or_else(String::new, |c| format!(", proxy {c:.2} cores")),
                f.datapath_ns_per_packet()
                    .map_or_else(String::new, |ns| format!(", datapath {ns:.0} ns/pkt")),
                f.foreign_cores(),
            ),
        }
    }

    pub fn to_json(&self) -> Value {
        let (status, reason, figures) = match &self.outcome {
            Outcome::GuardFailed(r) => ("guard_failed", Some(r.as_str()), None),
            Outcome::Failed(r) => ("failed", Some(r.as_str()), None),
            Outcome::Measured(f) => ("ok", None, Some(f.as_ref())),
        };
        let mut v = json!({
            "contender": self.contender.name(),
            "workload": self.workload.label(),
            "size": self.workload.size,
            "conns": self.workload.conns,
            "depth": self.workload.depth,
            "rep": self.rep,
            "wall_s": self.wall_s,
            "status": status,
            "reason": reason,
        });
        if let Some(f) = figures {
            v["figures"] = json!({
                "requests": f.requests,
                "seconds": f.seconds,
                "requests_per_s": f.rps,
                "body_bytes_per_s": f.body_bytes_per_s,
                "completed_body_bytes_per_s": f.completed_body_bytes_per_s,
                "head_bytes": f.head_bytes,
                "latency_p50_ms": f.p50_ms,
                "latency_p99_ms": f.p99_ms,
                "machine_cpu_s": f.machine_cpu_s,
                "cpu_ms_per_10k_requests": f.cpu_ms_per_10k,
                "cpu_s_per_gib": f.cpu_s_per_gib,
                "proxy_cpu_s": f.proxy_cpu_s,
                "proxy_cores": f.proxy_cores(),
                "foreign_cpu_s": f.foreign_cpu_s,
                "foreign_cores": f.foreign_cores(),
                "peak_rss_bytes": f.peak_rss_bytes,
                "errors": f.errors,
                "wrk_backends": f.wrk_backends,
                "served_by_backend": f.served,
                "datapath_ns_per_packet": f.datapath_ns_per_packet(),
                "datapath_entry_program": f.datapath.as_ref().and_then(DatapathCost::entry_program),
                "datapath_packets": f.datapath.as_ref().map(DatapathCost::packets),
                "datapath_run_time_ns": f.datapath.as_ref().map(DatapathCost::run_time_ns),
                "datapath_programs": f.datapath.as_ref().map(DatapathCost::to_json),
            });
        }
        v
    }
}

pub const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// Starts `contender`, guards it (if `check`: until a guard passed on this
/// workload), warms it up, measures one wrk run of `workload`, and stops
/// it.
pub fn run_one(
    bed: &Testbed,
    contender: Contender,
    workload: &Workload,
    rep: usize,
    check: bool,
    settings: &Settings,
    script: &Path,
) -> Run {
    let started = Instant::now();
    let mut guard_passed = false;
    let outcome = match vip_port_free(bed).and_then(|()| contender.start(bed)) {
        Err(e) => Outcome::Failed(format!(
            "start: {e:#} (sockets on {VIP}:80 then: {})",
            vip_sockets(bed)
        )),
        Ok(mut running) => {
            let verdict = if check {
                guard(bed, contender, &running, workload.size)
            } else {
                Ok(())
            };
            guard_passed = check && verdict.is_ok();
            let outcome = if let Err(reason) = verdict {
                Outcome::GuardFailed(reason)
            } else {
                match measure(bed, contender, &mut running, workload, settings, script) {
                    Ok(f) => Outcome::Measured(Box::new(f)),
                    Err(e) => Outcome::Failed(format!("{e:#}")),
                }
            };
            if let Some(mut d) = running.daemon.take() {
                d.stop();
            }
            outcome
        }
    };
    Run {
        contender,
        workload: workload.clone(),
        rep,
        guard_passed,
        wall_s: started.elapsed().as_secs_f64(),
        outcome,
    }
}

/// How long a contender's predecessor may keep a listening socket on the
/// virtual IP's port after it was stopped.
const VIP_FREE_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until no socket listens on the virtual IP's port 80 in the
/// gateway, or fails naming the holders (`ss -p`). A listener left from an
/// earlier run would share the port (`SO_REUSEPORT`) with the next
/// contender, take part of its traffic unseen, and stop nginx (which does
/// not use `SO_REUSEPORT`) from binding at all.
///
/// Then resets the connections the earlier contender left on the port
/// (`ss -K`): once it has exited they belong to no process, but one still
/// closing (FIN-WAIT-1 toward a reader that went away retries for
/// minutes) keeps the port's bind bucket, and a listener that does not
/// share it the way theirs did cannot bind (nginx: `EADDRINUSE`, seen
/// once in 273 runs). TIME-WAIT sockets block no one and stay.
fn vip_port_free(bed: &Testbed) -> Result<()> {
    let start = Instant::now();
    loop {
        let listeners = vip_ss(bed, &["-Hltnp"])?;
        if listeners.trim().is_empty() {
            vip_ss(
                bed,
                &["-HtnK", "state", "connected", "exclude", "time-wait"],
            )?;
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < VIP_FREE_TIMEOUT,
            "{VIP}:80 still has listeners {VIP_FREE_TIMEOUT:?} after the previous run: {}",
            listeners.trim()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ss <options>` in the gateway, for the virtual IP's port 80.
fn vip_ss(bed: &Testbed, options: &[&str]) -> Result<String> {
    let filter = format!("( src {VIP} and sport = :80 )");
    let mut args = options.to_vec();
    args.push(&filter);
    bed.gateway.run("ss", &args).context("ss in the gateway")
}

/// The gateway's sockets on the virtual IP's port 80, counted by state,
/// with the processes holding them: why a contender could not bind.
fn vip_sockets(bed: &Testbed) -> String {
    let out = match vip_ss(bed, &["-Htanp"]) {
        Ok(out) => out,
        Err(e) => return format!("ss failed: {e:#}"),
    };
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    let mut holders: BTreeMap<&str, usize> = BTreeMap::new();
    for line in out.lines() {
        let mut words = line.split_whitespace();
        *states.entry(words.next().unwrap_or("?")).or_default() += 1;
        if let Some(users) = words.find(|w| w.starts_with("users:")) {
            *holders.entry(users).or_default() += 1;
        }
    }
    if states.is_empty() {
        return "none".to_owned();
    }
    format!("{states:?}, held by {holders:?}")
}

/// The honesty guard: a few responses through the contender must be 200,
/// carry exactly the object (length, and for objects of 1 MiB or more the
/// sha256 of the answering backend's copy), and come from the pool the
/// cookie selects.
fn guard(
    bed: &Testbed,
    contender: Contender,
    running: &Running,
    size: usize,
) -> Result<(), String> {
    let url = format!("{}/obj/{size}", running.base_url);
    let requests: Vec<Request> = (0..GUARD_REQUESTS)
        .map(|i| {
            let r = Request::get(url.clone());
            if i % 2 == 0 {
                r.with(&["-b", "tier=gold"])
            } else {
                r.with(&["-b", "tier=silver"])
            }
        })
        .collect();
    let responses = bed
        .curl_requests(&requests)
        .map_err(|e| format!("curl: {e:#}"))?;
    for (i, r) in responses.iter().enumerate() {
        let gold = i % 2 == 0;
        let what = format!(
            "request {} ({})",
            i + 1,
            if gold { "tier=gold" } else { "tier=silver" }
        );
        if r.status != 200 {
            return Err(format!("{what}: status {}", r.status));
        }
        let length = r.headers.get("content-length").map(String::as_str);
        if length != Some(size.to_string().as_str()) {
            return Err(format!(
                "{what}: Content-Length {length:?}, expected {size}"
            ));
        }
        if r.body.len() != size {
            return Err(format!(
                "{what}: body {} bytes, expected {size}",
                r.body.len()
            ));
        }
        let expected = contender.expected_backends(gold);
        let who = r.backend();
        if !expected.contains(&who) {
            return Err(format!(
                "{what}: answered by {who:?}, expected one of {expected:?}"
            ));
        }
        if size >= 1024 * 1024 {
            let object = bed
                .backend(who)
                .and_then(|b| b.object(size))
                .ok_or_else(|| format!("{what}: {who} has no object of {size} bytes"))?;
            if r.sha256() != object.sha256 {
                return Err(format!("{what}: body differs from {who}'s object (sha256)"));
            }
        }
    }
    Ok(())
}

/// Under load too, requests must land where the cookie sends them: no
/// backend outside the contender's pools is used, and the priority pool
/// gets about the quarter of requests that carry the gold cookie.
fn check_split(
    contender: Contender,
    workload: &Workload,
    served: &BTreeMap<String, u64>,
) -> Result<()> {
    let allowed = [
        contender.expected_backends(true),
        contender.expected_backends(false),
    ]
    .concat();
    for (name, &n) in served {
        anyhow::ensure!(
            n == 0 || allowed.contains(&name.as_str()),
            "routing: {name} served {n} requests, expected only {allowed:?}"
        );
    }
    let priority: u64 = contender
        .expected_backends(true)
        .iter()
        .filter_map(|b| served.get(*b))
        .sum();
    let total: u64 = served.values().sum();
    // The access logs count completed responses: the share is only
    // meaningful with several per connection (not so for 16 MiB on 256
    // connections, where b1 alone serves a quarter of them, slowly).
    let enough = 40.max(4 * u64::from(workload.conns));
    if contender != Contender::Routed && total >= enough {
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let share = priority as f64 / total as f64;
        anyhow::ensure!(
            (0.15..=0.35).contains(&share),
            "routing: the priority pool served {:.0}% of the requests, expected about 25%",
            share * 100.0
        );
    }
    Ok(())
}

/// wrk's `BENCH {json}` line.
struct WrkOut {
    seconds: f64,
    requests: u64,
    /// Everything read: heads and bodies, also of unfinished responses.
    bytes: u64,
    errors: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    backends: Option<BTreeMap<String, u64>>,
}

fn measure(
    bed: &Testbed,
    contender: Contender,
    running: &mut Running,
    workload: &Workload,
    settings: &Settings,
    script: &Path,
) -> Result<Figures> {
    let url = format!("{}{}", running.base_url, workload.path());
    let head_bytes = head_bytes(bed, &url)?;
    wrk(bed, &url, workload, settings.warmup, script).context("warm-up")?;

    // The pids are taken after the warm-up: nginx's workers exist by then.
    let pids: Vec<u32> = running
        .daemon
        .as_ref()
        .and_then(distributor_tests::Daemon::pid)
        .map(procfs::with_children)
        .unwrap_or_default();
    let proxy_cpu = || -> Option<f64> {
        (!pids.is_empty()).then(|| {
            pids.iter()
                .filter_map(|&p| procfs::process_cpu_seconds(p))
                .sum()
        })
    };
    let log = |b: &distributor_tests::Backend| b.dir.join("logs/access.log");
    let log_sizes: Vec<u64> = bed
        .backends
        .iter()
        .map(|b| procfs::file_len(&log(b)))
        .collect();
    let inside: Vec<u64> = [&bed.client, &bed.gateway]
        .into_iter()
        .chain(bed.backends.iter().map(|b| &b.ns))
        .filter_map(|ns| procfs::netns_inode(&ns.path()))
        .collect();
    let foreign_before = procfs::foreign_cpu(&inside);
    let proxy_before = proxy_cpu();
    // The datapath's counters are read around the CPU readings, so that
    // walking the kernel's program list is not counted as machine CPU; no
    // packets flow between these readings and wrk's.
    let datapath_sample = || {
        contender
            .has_datapath()
            .then(|| bpfstats::Sample::take(&bed.pin_dir()))
    };
    let datapath_before = datapath_sample();
    let machine_before = procfs::machine_busy_seconds().context("reading /proc/stat")?;
    let out = wrk(bed, &url, workload, settings.duration, script)?;
    let machine_cpu_s =
        procfs::machine_busy_seconds().context("reading /proc/stat")? - machine_before;
    let datapath = match (datapath_before, datapath_sample()) {
        (Some(Ok(before)), Some(Ok(after))) => Some(DatapathCost::between(&before, &after)),
        (Some(Err(e)), _) | (_, Some(Err(e))) => {
            // The run's other figures stand; the column shows the gap.
            eprintln!("    warning: {}: no datapath cost: {e:#}", contender.name());
            None
        }
        _ => None,
    };
    let proxy_cpu_s = proxy_cpu().zip(proxy_before).map(|(a, b)| a - b);
    // An estimate (see foreign_delta): never more than the machine has.
    #[expect(clippy::cast_precision_loss, reason = "a few CPUs")]
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64;
    let foreign_cpu_s = procfs::foreign_delta(&foreign_before, &procfs::foreign_cpu(&inside))
        .min(cpus * out.seconds);
    let served: BTreeMap<String, u64> = bed
        .backends
        .iter()
        .zip(&log_sizes)
        .map(|(b, &offset)| (b.name.clone(), procfs::lines_after(&log(b), offset)))
        .collect();
    let peak_rss_bytes =
        (!pids.is_empty()).then(|| pids.iter().filter_map(|&p| procfs::peak_rss_bytes(p)).sum());

    if let Some(d) = running.daemon.as_mut()
        && let Some(status) = d.try_wait()
    {
        anyhow::bail!("{} exited during the run ({status})", contender.name());
    }
    // Few or no completions are possible with big objects on many
    // connections; bytes must flow all the same.
    anyhow::ensure!(out.bytes > 0, "wrk received nothing");
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let (requests, errors, size, bodies) = (
        out.requests as f64,
        out.errors as f64,
        workload.size as f64,
        out.bytes.saturating_sub(out.requests * head_bytes) as f64,
    );
    anyhow::ensure!(
        errors <= MAX_ERROR_SHARE * requests,
        "{} errors in {} requests (more than {:.0}%)",
        out.errors,
        out.requests,
        MAX_ERROR_SHARE * 100.0
    );
    check_split(contender, workload, &served)?;
    Ok(Figures {
        requests: out.requests,
        seconds: out.seconds,
        rps: requests / out.seconds,
        body_bytes_per_s: bodies / out.seconds,
        completed_body_bytes_per_s: requests * size / out.seconds,
        head_bytes,
        p50_ms: out.p50_ms,
        p99_ms: out.p99_ms,
        machine_cpu_s,
        // Per response received, counting partial bodies as fractions.
        cpu_ms_per_10k: machine_cpu_s * 1000.0 / (bodies / size / 10_000.0),
        cpu_s_per_gib: machine_cpu_s / (bodies / GIB),
        proxy_cpu_s,
        foreign_cpu_s,
        peak_rss_bytes,
        errors: out.errors,
        wrk_backends: out.backends,
        served,
        datapath,
    })
}

/// The size of a response head through the contender (curl's
/// `size_header`), to tell bodies from heads in wrk's byte count.
fn head_bytes(bed: &Testbed, url: &str) -> Result<u64> {
    let out = bed
        .client
        .command("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "60"])
        .args(["-w", "%{size_header}", url])
        .output()
        .context("running curl for the head size")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .ok()
        .filter(|&n| out.status.success() && n > 0)
        .with_context(|| format!("curl gave no head size for {url}: {text:?}"))
}

/// Runs wrk in the client namespace for `duration` and parses its
/// `BENCH` line; killed if it overruns by [`WRK_GRACE`].
fn wrk(
    bed: &Testbed,
    url: &str,
    workload: &Workload,
    duration: Duration,
    script: &Path,
) -> Result<WrkOut> {
    let mut cmd = bed.client.command("wrk");
    cmd.arg(format!("-t{}", workload.threads()))
        .arg(format!("-c{}", workload.conns))
        .arg(format!("-d{}s", duration.as_secs()))
        // wrk drops latencies above its timeout from the histogram and
        // counts them as errors: large objects on 256 connections take
        // seconds each.
        .args(["--timeout", "60s", "-s"])
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .context("starting wrk in the client namespace")?;
    let deadline = Instant::now() + duration + WRK_GRACE;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("wrk overran its {duration:?} by {WRK_GRACE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "wrk failed ({}): {}{}",
        output.status,
        stdout.trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .with_context(|| format!("no BENCH line in wrk's output:\n{stdout}"))?;
    let v: Value = serde_json::from_str(line).with_context(|| format!("parsing {line}"))?;
    let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let count = |k: &str| v[k].as_u64().unwrap_or(0);
    // Socket errors and timeouts, plus statuses: the callback's non-200
    // count where it ran, wrk's own non-2xx/3xx count otherwise.
    let status_errors = if v["recorded"].as_bool() == Some(true) {
        count("non200")
    } else {
        count("status")
    };
    let errors = ["connect", "read", "write", "timeout"]
        .iter()
        .map(|k| count(k))
        .sum::<u64>()
        + status_errors;
    let backends = (v["recorded"].as_bool() == Some(true)).then(|| {
        v["backends"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
            .collect()
    });
    Ok(WrkOut {
        seconds: n("duration_us") / 1e6,
        requests: count("requests"),
        bytes: count("bytes"),
        errors,
        // No latency without completed responses (the histogram is empty).
        p50_ms: (workload.depth == 1 && count("requests") > 0).then(|| n("p50_us") / 1000.0),
        p99_ms: (workload.depth == 1 && count("requests") > 0).then(|| n("p99_us") / 1000.0),
        backends,
    })
}

//! `cargo xtask demo`: a testbed with three nginx backends, distributor on
//! the gateway, one keep-alive client connection whose requests go to
//! different backends by their cookies and user ids, and what the datapath
//! saw.

use std::{fmt::Write as _, process::Command, time::Duration};

use anyhow::{Context as _, Result};
use distributor_tests::{Request, Testbed, TestbedConfig};

use crate::{bootstrap, build_distributor, step};

pub fn run(keep: bool) -> Result<()> {
    anyhow::ensure!(
        crate::is_root(),
        "`cargo xtask demo` builds network namespaces and loads eBPF programs: run it as root"
    );
    bootstrap::ensure(bootstrap::TESTBED)?;
    let bin = build_distributor(false)?;
    // The testbed starts this binary.
    // SAFETY: single-threaded here.
    unsafe { std::env::set_var("DISTRIBUTOR_BIN", &bin) };

    step("bringing up the testbed: client, gateway, 3 nginx backends on their own hosts");
    let bed = Testbed::new(&TestbedConfig {
        backends: 3,
        object_sizes: vec![1024, 64 * 1024, 1024 * 1024],
        ..TestbedConfig::default()
    })?;
    let pin_dir = bed.pin_dir();
    let config = bed.proxy_config("xdp", &bed.two_pools_config());
    let config_path = bed.write_file("demo.toml", &config)?;
    println!("configuration ({}):\n", config_path.display());
    print!("{config}");

    step("starting distributor in the gateway namespace");
    let mut daemon = bed.start_distributor(&config)?;

    step("one keep-alive client connection, 12 requests to the virtual IP");
    let plan: [(&str, &[&str]); 12] = [
        ("/obj/1024", &[]),
        ("/obj/1024", &["-b", "tier=gold"]),
        ("/obj/65536", &["-H", "X-User: vip-ada"]),
        ("/obj/65536", &["-H", "X-User: bob"]),
        ("/obj/1048576", &["-b", "tier=silver"]),
        ("/obj/1048576", &["-b", "tier=gold; session=42"]),
        ("/echo/hello", &[]),
        ("/echo/hello", &["-H", "X-User: vip-grace"]),
        ("/gz/65536", &["--compressed"]),
        ("/204", &[]),
        ("/obj/1024", &["-b", "tier=gold"]),
        ("/obj/1024", &[]),
    ];
    let requests: Vec<Request> = plan
        .iter()
        .map(|(path, args)| Request::get(bed.vip_url(path)).with(args))
        .collect();
    let responses = bed.curl_requests(&requests)?;
    let records = wait_records(&bed, requests.len());
    println!(
        "\n{:<4} {:<14} {:<12} {:<9} {:<15} {:>6} {:>9} {:>6}  check",
        "req", "path", "rule", "pool", "server", "status", "bytes", "conn"
    );
    for ((r, rec), (path, _)) in responses.iter().zip(&records).zip(&plan) {
        let check = body_check(&bed, r, path);
        println!(
            "{:<4} {:<14} {:<12} {:<9} {:<15} {:>6} {:>9} {:>6}  {check}",
            rec["req"].to_string(),
            path,
            rec["rule"].as_str().unwrap_or("-"),
            rec["pool"].as_str().unwrap_or("-"),
            rec["server"].as_str().unwrap_or("-"),
            rec["status"].to_string(),
            rec["bytes_out"].to_string(),
            rec["conn"].to_string(),
        );
    }
    let new_conns: u32 = responses.iter().map(|r| r.new_connections).sum();
    println!("\nclient TCP connections used: {new_conns}");

    step("what the datapath saw (distributor stats)");
    let stats = bed.distributor_cli(&["stats", "--pin-dir", &pin_dir.to_string_lossy()])?;
    print!("{}", String::from_utf8_lossy(&stats.stdout));

    step("metrics (excerpt of GET /metrics on the admin address)");
    let metrics = bed.metrics()?;
    for line in metrics.lines().filter(|l| {
        l.starts_with("distributor_requests_total")
            || l.starts_with("distributor_backend_connections")
    }) {
        println!("{line}");
    }

    step("the pinned map, as bpftool prints it (first entries)");
    let dump = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(pin_dir.join("IFACE_STATS"))
        .output()
        .context("running bpftool")?;
    let dump = String::from_utf8_lossy(&dump.stdout);
    let mut excerpt = String::new();
    for line in dump.lines().take(18) {
        let _ = writeln!(excerpt, "{line}");
    }
    print!("{excerpt}");

    if keep {
        keep_running(&bed, &bin.to_string_lossy(), &pin_dir.to_string_lossy());
        return Ok(());
    }
    step("tearing down");
    daemon.stop();
    drop(bed);
    Ok(())
}

/// Whether the body is the object the answering backend serves.
fn body_check(bed: &Testbed, r: &distributor_tests::Response, path: &str) -> &'static str {
    let Some(backend) = bed.backend(r.backend()) else {
        return if r.status == 204 {
            "ok (no body)"
        } else {
            "NO BACKEND"
        };
    };
    let size = path
        .rsplit('/')
        .next()
        .and_then(|s| s.parse::<usize>().ok());
    match size.and_then(|s| backend.object(s)) {
        Some(o) if o.sha256 == r.sha256() => "sha256 ok",
        Some(_) => "SHA256 MISMATCH",
        None if r.status == 200 || r.status == 204 => "ok",
        None => "BAD STATUS",
    }
}

fn wait_records(bed: &Testbed, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        if let Ok(r) = bed.access_log()
            && r.len() >= n
        {
            return r;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bed.access_log().unwrap_or_default()
}

fn keep_running(bed: &Testbed, bin: &str, pin_dir: &str) {
    let cli = bed.client.path();
    let gw = bed.gateway.path();
    println!(
        "\nThe testbed stays up until you press Ctrl-C here. In another shell:\n\
         \n  # requests from the client namespace to the virtual IP\
         \n  nsenter --net={cli} -- curl -s {url} -b tier=gold -o /dev/null -w '%{{http_code}} %header{{x-backend}}\\n'\
         \n  nsenter --net={cli} -- curl -s {url} -o /dev/null -w '%{{http_code}} %header{{x-backend}}\\n'\
         \n  # the access log, one JSON object per request\
         \n  tail -f {log}\
         \n  # metrics, datapath counters, the pinned map\
         \n  nsenter --net={gw} -- curl -s http://127.0.0.1:{admin}/metrics\
         \n  nsenter --net={gw} -- {bin} stats --pin-dir {pin_dir}\
         \n  bpftool map dump pinned {pin_dir}/IFACE_STATS\n",
        cli = cli.display(),
        gw = gw.display(),
        url = bed.vip_url("/obj/1024"),
        log = bed.access_log_path().display(),
        admin = distributor_tests::ADMIN_PORT,
    );
    // Block until SIGINT or SIGTERM; the testbed's Drop then tears
    // everything down.
    // SAFETY: standard sigset manipulation on a local set; sigwait blocks
    // this (only) thread until one of the two signals arrives.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
        let mut sig = 0;
        libc::sigwait(&raw const set, &raw mut sig);
    }
    step("tearing down");
}

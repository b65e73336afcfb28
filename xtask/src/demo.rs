//! `cargo xtask demo`: a testbed with three nginx backends, distributor on
//! the gateway, real requests from the client namespace, and what the
//! datapath saw.

use std::{fmt::Write as _, process::Command};

use anyhow::{Context as _, Result};
use distributor_tests::{Testbed, TestbedConfig};

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

    step("bringing up the testbed: client, gateway, 3 nginx backends");
    let bed = Testbed::new(&TestbedConfig {
        backends: 3,
        object_sizes: vec![1024, 64 * 1024, 1024 * 1024],
    })?;
    let pin_dir = bed.pin_dir();
    let config = bed.distributor_config("xdp");
    print!("{config}");

    step("starting distributor in the gateway namespace");
    let mut daemon = bed.start_distributor(&config)?;

    step("sending requests from the client namespace (routed through the gateway)");
    let mut urls = Vec::new();
    for b in &bed.backends {
        for o in &b.objects {
            urls.push(format!("{}{}", b.url(), o.path));
        }
    }
    let responses = bed.curl_many(&urls, &[])?;
    println!(
        "{:<36} {:>6} {:>8} {:>9} {:>4}",
        "url", "status", "backend", "bytes", "sha256"
    );
    for r in &responses {
        let expected = bed
            .backend(r.backend())
            .and_then(|b| b.objects.iter().find(|o| r.url.ends_with(&o.path)))
            .map(|o| o.sha256.clone());
        let verdict = if expected.as_deref() == Some(r.sha256().as_str()) {
            "ok"
        } else {
            "BAD"
        };
        println!(
            "{:<36} {:>6} {:>8} {:>9} {:>4}",
            r.url,
            r.status,
            r.backend(),
            r.body.len(),
            verdict
        );
    }

    step("what the datapath saw (distributor stats)");
    let stats = bed.distributor_cli(&["stats", "--pin-dir", &pin_dir.to_string_lossy()])?;
    let stats = String::from_utf8_lossy(&stats.stdout);
    print!("{stats}");

    step("the pinned map, as bpftool prints it (first entries)");
    let dump = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(pin_dir.join("IFACE_STATS"))
        .output()
        .context("running bpftool")?;
    let dump = String::from_utf8_lossy(&dump.stdout);
    let mut excerpt = String::new();
    for line in dump.lines().take(24) {
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

fn keep_running(bed: &Testbed, bin: &str, pin_dir: &str) {
    let cli = bed.client.path();
    let gw = bed.gateway.path();
    let b1 = &bed.backends[0];
    println!(
        "\nThe testbed stays up until you press Ctrl-C here. In another shell:\n\
         \n  # a request from the client namespace\
         \n  nsenter --net={cli} -- curl -sv {url}/obj/1024 -o /dev/null\
         \n  # the datapath's counters\
         \n  nsenter --net={gw} -- {bin} stats --pin-dir {pin_dir}\
         \n  bpftool map dump pinned {pin_dir}/IFACE_STATS\
         \n  # a shell in the gateway\
         \n  nsenter --net={gw} bash\n",
        cli = cli.display(),
        gw = gw.display(),
        url = b1.url(),
    );
    // Block until SIGINT; the testbed's Drop then tears everything down.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: standard sigset manipulation on a local set; sigwait blocks
    // this (only) thread until SIGINT or SIGTERM arrives.
    unsafe {
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
        let mut sig = 0;
        libc::sigwait(&raw const set, &raw mut sig);
    }
    step("tearing down");
}

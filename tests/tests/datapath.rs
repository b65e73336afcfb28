//! End-to-end tests of the first datapath: real programs loaded and attached
//! in the testbed's gateway, real HTTP traffic routed through it, counters
//! read back with `distributor stats` and `bpftool`.
//!
//! These need root (namespaces, eBPF); `cargo xtask test` runs them.

use std::{path::Path, process::Command, time::Duration};

use distributor_common::maps::hook;
use distributor_tests::{Testbed, TestbedConfig, bpftool_dump, pinned_map_id, programs_using_map};
use serde_json::Value;

fn testbed(backends: usize) -> Testbed {
    Testbed::for_test(&TestbedConfig {
        backends,
        object_sizes: vec![1024, 256 * 1024],
        ..TestbedConfig::default()
    })
}

/// (packets, bytes) of `iface`/`hook` in a `stats --json` snapshot.
fn counters(stats: &Value, iface: &str, hook: &str) -> (u64, u64) {
    let rows = stats["interfaces"].as_array().expect("interfaces array");
    rows.iter()
        .find(|r| r["name"] == iface && r["hook"] == hook)
        .map_or((0, 0), |r| {
            (
                r["packets"].as_u64().unwrap_or(0),
                r["bytes"].as_u64().unwrap_or(0),
            )
        })
}

/// Fetches every object of every backend through the gateway (routed) and
/// checks each body's sha256 and X-Backend. Returns the body bytes.
fn fetch_all(bed: &Testbed) -> u64 {
    let mut urls = Vec::new();
    let mut expected = Vec::new();
    for b in &bed.backends {
        for o in &b.objects {
            urls.push(format!("{}{}", b.url(), o.path));
            expected.push((b.name.clone(), o.sha256.clone(), o.size));
        }
    }
    let responses = bed.curl_many(&urls, &[]).expect("curl");
    let mut total = 0;
    for (r, (backend, sha, size)) in responses.iter().zip(&expected) {
        assert_eq!(r.status, 200, "{}", r.url);
        assert_eq!(r.backend(), backend, "{}", r.url);
        assert_eq!(r.body.len(), *size, "{}", r.url);
        assert_eq!(&r.sha256(), sha, "{}: body differs", r.url);
        total += *size as u64;
    }
    total
}

#[test]
fn xdp_mode_counts_routed_http_traffic_per_interface() {
    let bed = testbed(2);
    let _gw = bed
        .start_distributor(&bed.distributor_config("xdp"))
        .expect("start distributor");
    let before = bed.distributor_stats().expect("stats");
    let body_bytes = fetch_all(&bed);
    let after = bed.distributor_stats().expect("stats");

    // Responses enter the gateway on the backend links (XDP) and leave on
    // the client link (TC egress): at least the body bytes on each side.
    let mut from_backends = 0;
    for b in &bed.backends {
        let (p0, b0) = counters(&before, &b.gateway_iface, "xdp-ingress");
        let (p1, b1) = counters(&after, &b.gateway_iface, "xdp-ingress");
        assert!(p1 > p0, "{}: no packets counted", b.name);
        from_backends += b1 - b0;
    }
    assert!(
        from_backends > body_bytes,
        "xdp-ingress on backend links counted {from_backends} bytes for {body_bytes} body bytes"
    );
    let (_, out0) = counters(&before, "c0", "tc-egress");
    let (_, out1) = counters(&after, "c0", "tc-egress");
    assert!(
        out1 - out0 > body_bytes,
        "tc-egress on c0 counted {} bytes for {body_bytes} body bytes",
        out1 - out0
    );
    // Requests enter on c0.
    let (p_in, _) = counters(&after, "c0", "xdp-ingress");
    assert!(p_in > 0, "no xdp-ingress packets on c0");
    // XDP passes what it does not splice to TC ingress (attached in this
    // mode too): the requests reach it.
    let (tc_in, _) = counters(&after, "c0", "tc-ingress");
    assert!(tc_in > 0, "no tc-ingress packets on c0");
    // Every TCP packet is passed as "no flow" (this config has no proxy
    // listener, so there is nothing to splice).
    assert!(after["reasons"]["pass-no-flow"].as_u64().unwrap_or(0) > 0);
    bed.assert_flow_baseline();
}

#[test]
fn tc_mode_counts_ingress_and_egress_without_xdp() {
    let bed = testbed(1);
    let _gw = bed
        .start_distributor(&bed.distributor_config("tc"))
        .expect("start distributor");
    let body_bytes = fetch_all(&bed);
    let stats = bed.distributor_stats().expect("stats");
    let (_, in_bytes) = counters(&stats, "b1", "tc-ingress");
    assert!(in_bytes > body_bytes, "tc-ingress on b1: {in_bytes} bytes");
    let (_, out_bytes) = counters(&stats, "c0", "tc-egress");
    assert!(out_bytes > body_bytes, "tc-egress on c0: {out_bytes} bytes");
    for iface in bed.gateway_interfaces() {
        assert_eq!(counters(&stats, &iface, "xdp-ingress"), (0, 0), "{iface}");
    }
    bed.assert_flow_baseline();
}

#[test]
fn bpftool_prints_pinned_maps_with_field_names() {
    let bed = testbed(1);
    let _gw = bed
        .start_distributor(&bed.distributor_config("xdp"))
        .expect("start distributor");
    fetch_all(&bed);
    let dump = bpftool_dump(&bed.pin_dir().join("IFACE_STATS")).expect("bpftool");
    let entries = dump.as_array().expect("array of entries");
    // BTF gives the values their field names; each used entry names its
    // interface and hook, the same on every CPU.
    let mut labelled = Vec::new();
    for e in entries {
        let e = &e["formatted"];
        let values = e["values"].as_array().expect("per-CPU values");
        for v in values {
            let v = &v["value"];
            assert!(v["packets"].is_u64() && v["bytes"].is_u64(), "{e}");
            assert_eq!(v["ifindex"], values[0]["value"]["ifindex"], "{e}");
            assert_eq!(v["hook"], values[0]["value"]["hook"], "{e}");
        }
        let first = &values[0]["value"];
        let ifindex = first["ifindex"].as_u64().expect("value.ifindex");
        if ifindex != 0 {
            labelled.push((ifindex, first["hook"].as_u64().expect("value.hook")));
        }
    }
    let mut expected = Vec::new();
    for iface in bed.gateway_interfaces() {
        let link = bed
            .gateway
            .run("ip", &["-json", "link", "show", "dev", &iface])
            .expect("ip link");
        let link: Value = serde_json::from_str(&link).expect("ip -json");
        let index = link[0]["ifindex"].as_u64().expect("an ifindex");
        // The xdp mode: every hook attached.
        expected.extend((0..hook::COUNT).map(|h| (index, u64::from(h))));
    }
    labelled.sort_unstable();
    expected.sort_unstable();
    assert_eq!(labelled, expected, "one entry per interface and hook");
    let reasons = bpftool_dump(&bed.pin_dir().join("REASONS")).expect("bpftool");
    assert_eq!(
        reasons.as_array().map(Vec::len),
        Some(7),
        "one entry per reason"
    );
    bed.assert_flow_baseline();
}

#[test]
fn a_second_instance_refuses_with_a_clear_message() {
    let bed = testbed(1);
    let gw = bed
        .start_distributor(&bed.distributor_config("xdp"))
        .expect("start distributor");
    let path = bed
        .write_file("second.toml", &bed.distributor_config("xdp"))
        .expect("config");
    let out = bed
        .distributor_cli(&["run", "--config", &path.to_string_lossy()])
        .expect("run second");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second instance started: {stderr}");
    let pid = gw.pid().expect("pid").to_string();
    assert!(
        stderr.contains("another distributor instance") && stderr.contains(&pid),
        "unclear refusal: {stderr}"
    );
    // The first one is untouched: still counting.
    fetch_all(&bed);
    let stats = bed
        .distributor_stats()
        .expect("stats of the first instance");
    assert!(counters(&stats, "c0", "xdp-ingress").0 > 0);
    bed.assert_flow_baseline();
}

/// XDP programs attached in the gateway namespace (`bpftool net show`
/// lists XDP per namespace).
fn attached_xdp(bed: &Testbed) -> String {
    bed.gateway
        .run("bpftool", &["--json", "net", "show"])
        .expect("bpftool net show")
}

/// The running instance's programs, found through its pinned map.
fn instance_programs(bed: &Testbed) -> (u64, Vec<String>) {
    let id = pinned_map_id(&bed.pin_dir().join("IFACE_STATS")).expect("map id");
    (id, programs_using_map(id).expect("bpftool prog show"))
}

#[test]
fn sigterm_detaches_programs_and_removes_pins() {
    let bed = testbed(1);
    let mut gw = bed
        .start_distributor(&bed.distributor_config("xdp"))
        .expect("start distributor");
    let (map_id, progs) = instance_programs(&bed);
    assert_eq!(progs, ["dist_tc_in", "dist_tc_out", "dist_xdp"]);
    let xdp = attached_xdp(&bed);
    assert_eq!(
        xdp.matches("\"devname\"").count(),
        2,
        "xdp on c0 and b1: {xdp}"
    );
    // The last moment this instance runs (no client has connected).
    bed.assert_flow_baseline();

    let status = gw
        .stop_with(libc::SIGTERM, Duration::from_secs(10))
        .expect("exit status");
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        gw.output()
    );
    // Programs are freed only when no link holds them: none is left.
    assert_eq!(
        programs_using_map(map_id).expect("bpftool"),
        Vec::<String>::new()
    );
    let xdp = attached_xdp(&bed);
    assert!(!xdp.contains("devname"), "xdp still attached: {xdp}");
    assert!(!bed.pin_dir().exists(), "pin directory left behind");
    // Traffic still flows (plain routing) without the datapath.
    fetch_all(&bed);
}

#[test]
fn sigint_stops_cleanly_too() {
    let bed = testbed(1);
    let mut gw = bed
        .start_distributor(&bed.distributor_config("tc"))
        .expect("start distributor");
    let (map_id, progs) = instance_programs(&bed);
    assert_eq!(progs, ["dist_tc_in", "dist_tc_out"]);
    // The last moment this instance runs (no client has connected).
    bed.assert_flow_baseline();
    let status = gw
        .stop_with(libc::SIGINT, Duration::from_secs(10))
        .expect("exit status");
    assert!(
        status.success(),
        "exit after SIGINT: {status}\n{}",
        gw.output()
    );
    assert_eq!(
        programs_using_map(map_id).expect("bpftool"),
        Vec::<String>::new()
    );
    assert!(!bed.pin_dir().exists());
}

#[test]
fn next_start_cleans_up_after_a_crash() {
    let bed = testbed(1);
    let mut gw = bed
        .start_distributor(&bed.distributor_config("xdp"))
        .expect("start distributor");
    fetch_all(&bed);
    let (map_id, progs) = instance_programs(&bed);
    assert_eq!(progs.len(), 3);
    gw.stop_with(libc::SIGKILL, Duration::from_secs(5));
    // Pins survive a crash; programs (bpf links, never pinned) do not.
    assert!(bed.pin_dir().join("IFACE_STATS").exists(), "pins gone");
    assert_eq!(
        programs_using_map(map_id).expect("bpftool"),
        Vec::<String>::new()
    );
    assert!(!attached_xdp(&bed).contains("devname"));

    let gw2 = bed
        .start_distributor(&bed.distributor_config("xdp"))
        .expect("restart after crash");
    assert!(
        gw2.output().contains("removed pins left by an instance"),
        "{}",
        gw2.output()
    );
    // Fresh maps: the crashed instance's counts are gone, new ones appear.
    let stats = bed.distributor_stats().expect("stats");
    let (p, _) = counters(&stats, "b1", "xdp-ingress");
    fetch_all(&bed);
    let stats = bed.distributor_stats().expect("stats");
    let (p2, _) = counters(&stats, "b1", "xdp-ingress");
    assert!(p < 50 && p2 > p, "counters not fresh: {p} then {p2}");
    bed.assert_flow_baseline();
}

#[test]
fn check_config_names_the_bad_field() {
    let bed = testbed(1);
    let good = bed
        .write_file("good.toml", &bed.distributor_config("xdp"))
        .expect("config");
    let out = bed
        .distributor_cli(&["check-config", &good.to_string_lossy()])
        .expect("check-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = bed
        .write_file("bad.toml", "[datapath]\nmode = \"xdp\"\ninterfaces = []\n")
        .expect("config");
    let out = bed
        .distributor_cli(&["check-config", &bad.to_string_lossy()])
        .expect("check-config");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("datapath.interfaces"), "{stderr}");
}

#[test]
fn unknown_interface_fails_start_and_leaves_nothing() {
    let bed = testbed(1);
    let config = format!(
        "[datapath]\nmode = \"xdp\"\ninterfaces = [\"c0\", \"nosuch0\"]\npin_dir = \"{}\"\n",
        bed.pin_dir().display()
    );
    let path = bed.write_file("bad-iface.toml", &config).expect("config");
    let out = bed
        .distributor_cli(&["run", "--config", &path.to_string_lossy()])
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("nosuch0"), "{stderr}");
    assert!(!attached_xdp(&bed).contains("devname"));
    assert!(
        !Path::new(&bed.pin_dir()).exists(),
        "pins left after a failed start"
    );
    // And a good start right after works.
    let _gw = bed
        .start_distributor(&bed.distributor_config("xdp"))
        .expect("start after a failed start");
    bed.assert_flow_baseline();
}

#[test]
fn testbed_backends_are_distinct_hosts_with_distinct_content() {
    let bed = testbed(3);
    let addrs: Vec<_> = bed.backends.iter().map(|b| b.addr).collect();
    assert_eq!(addrs.len(), 3);
    assert!(addrs[0] != addrs[1] && addrs[1] != addrs[2] && addrs[0] != addrs[2]);
    let shas: Vec<_> = bed
        .backends
        .iter()
        .map(|b| b.object(1024).expect("1 KiB object").sha256.clone())
        .collect();
    assert!(shas[0] != shas[1] && shas[1] != shas[2]);
    fetch_all(&bed);
    // The access logs saw exactly our requests.
    for b in &bed.backends {
        let log = b.access_log();
        assert_eq!(
            log.iter().filter(|l| l.contains("GET /obj/")).count(),
            2,
            "{}: {log:?}",
            b.name
        );
    }
    let names: Vec<String> = bed.backends.iter().map(|b| b.ns.name.clone()).collect();
    drop(bed);
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let list = String::from_utf8_lossy(&list.stdout);
    for n in names {
        assert!(!list.contains(&n), "{n} survived teardown");
    }
}

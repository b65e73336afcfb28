//! End-to-end tests of kernel response splicing (TC mode): real nginx
//! backends on distinct hosts (their TCP timestamp clocks differ), curl in
//! the client namespace, distributor on the gateway with `mode = "tc"`.
//! Every body is checked by sha256 and backend; the datapath's counters
//! prove the bytes were spliced; `nstat` proves no segment was dropped for
//! a bad checksum, PAWS or a bad SACK.

use std::collections::BTreeMap;

use distributor_tests::{Request, Response, Testbed, TestbedConfig};
use serde_json::Value;

fn testbed(sizes: Vec<usize>) -> Testbed {
    assert!(
        distributor_tests::is_root(),
        "these tests need root: run them with `cargo xtask test`"
    );
    Testbed::new(&TestbedConfig {
        backends: 3,
        object_sizes: sizes,
        ..TestbedConfig::default()
    })
    .expect("building the testbed")
}

/// Round robin over all three backends, so consecutive requests on one
/// connection switch backends.
fn round_robin(bed: &Testbed) -> String {
    let a = |i: usize| format!("{}:{}", bed.backends[i].addr, bed.backends[i].port);
    format!(
        "default_pool = \"all\"\n\n[[pools]]\nname = \"all\"\npolicy = \"round-robin\"\n\
         servers = [{{ address = \"{}\" }}, {{ address = \"{}\" }}, {{ address = \"{}\" }}]\n",
        a(0),
        a(1),
        a(2)
    )
}

const NSTAT_ZERO: [&str; 3] = ["TcpInCsumErrors", "TcpExtPAWSEstab", "TcpExtTCPSACKDiscard"];

/// The counters that must stay zero, for every namespace of the testbed.
fn nstat_bad(bed: &Testbed) -> BTreeMap<String, u64> {
    let mut bad = BTreeMap::new();
    let mut check = |who: &str, ns: &distributor_tests::Netns| {
        let counters = ns.nstat().expect("nstat");
        for name in NSTAT_ZERO {
            let v = counters.get(name).copied().unwrap_or(0);
            if v != 0 {
                bad.insert(format!("{who}:{name}"), v);
            }
        }
    };
    check("client", &bed.client);
    for b in &bed.backends {
        check(&b.name, &b.ns);
    }
    bad
}

fn splice_counter(stats: &Value, name: &str) -> u64 {
    stats["splice"][name].as_u64().unwrap_or(0)
}

/// Checks every response: status, backend, and the body's sha256 against
/// the object that backend serves.
fn check_bodies(bed: &Testbed, responses: &[Response], sizes: &[usize]) {
    for (r, size) in responses.iter().zip(sizes) {
        assert_eq!(r.status, 200, "{}", r.url);
        let backend = bed.backend(r.backend()).expect("known backend");
        let obj = backend.object(*size).expect("object");
        assert_eq!(r.body.len(), *size, "{} from {}", r.url, r.backend());
        assert_eq!(
            r.sha256(),
            obj.sha256,
            "{} from {}: body differs",
            r.url,
            r.backend()
        );
    }
}

#[test]
fn keep_alive_connection_alternates_backends_and_every_response_is_spliced() {
    let sizes = vec![1024, 65536, 1 << 20];
    let bed = testbed(sizes.clone());
    let _gw = bed
        .start_distributor(&bed.proxy_config("tc", &round_robin(&bed)))
        .expect("start distributor");

    let order: Vec<usize> = (0..12).map(|i| sizes[i % sizes.len()]).collect();
    let requests: Vec<Request> = order
        .iter()
        .map(|s| Request::get(bed.vip_url(&format!("/obj/{s}"))))
        .collect();
    let responses = bed.curl_requests(&requests).expect("curl");
    check_bodies(&bed, &responses, &order);
    // One connection, and consecutive responses from different backends.
    assert_eq!(responses.iter().map(|r| r.new_connections).sum::<u32>(), 1);
    for w in responses.windows(2) {
        assert_ne!(w[0].backend(), w[1].backend());
    }

    let log = bed.access_log().expect("access log");
    let paths: Vec<&str> = log
        .iter()
        .map(|r| r["path_taken"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(paths, vec!["splice"; order.len()], "{log:#?}");

    let stats = bed.distributor_stats().expect("stats");
    let body_bytes: u64 = order.iter().map(|s| *s as u64).sum();
    assert!(
        splice_counter(&stats, "spliced-bytes") > body_bytes,
        "{stats:#}"
    );
    assert_eq!(splice_counter(&stats, "regions-done"), order.len() as u64);
    assert_eq!(nstat_bad(&bed), BTreeMap::new());
}

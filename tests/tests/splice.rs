//! End-to-end tests of kernel response splicing (TC mode): real nginx
//! backends on distinct hosts (their TCP timestamp clocks differ), curl in
//! the client namespace, distributor on the gateway with `mode = "tc"`.
//! Every body is checked by sha256 and backend; the datapath's counters
//! prove the bytes were spliced; `nstat` proves no segment was dropped for
//! a bad checksum, PAWS or a bad SACK.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use distributor_tests::{Request, Response, Testbed, TestbedConfig, splice_counter};
use serde_json::Value;

fn testbed(sizes: Vec<usize>) -> Testbed {
    Testbed::for_test(&TestbedConfig {
        backends: 3,
        object_sizes: sizes,
        ..TestbedConfig::default()
    })
}

#[test]
fn keep_alive_connection_alternates_backends_and_every_response_is_spliced() {
    let sizes = vec![1024, 65536, 1 << 20];
    let bed = testbed(sizes.clone());
    let _gw = bed
        .start_distributor(&bed.proxy_config("tc", &bed.round_robin_config()))
        .expect("start distributor");

    let order: Vec<usize> = (0..12).map(|i| sizes[i % sizes.len()]).collect();
    let requests: Vec<Request> = order
        .iter()
        .map(|s| Request::get(bed.vip_url(&format!("/obj/{s}"))))
        .collect();
    let before = bed.distributor_stats().expect("stats");
    let responses = bed.curl_requests(&requests).expect("curl");
    bed.check_bodies(&responses, &order);
    // One connection, and consecutive responses from different backends.
    assert_eq!(responses.iter().map(|r| r.new_connections).sum::<u32>(), 1);
    for w in responses.windows(2) {
        assert_ne!(w[0].backend(), w[1].backend());
    }

    let log = bed.access_log().expect("access log");
    let paths = paths_taken(&log);
    assert_eq!(paths, vec!["splice"; order.len()], "{log:#?}");

    let stats = bed.distributor_stats().expect("stats");
    let body_bytes: u64 = order.iter().map(|s| *s as u64).sum();
    assert!(
        splice_counter(&stats, "spliced-bytes") > body_bytes,
        "{stats:#}"
    );
    assert_eq!(splice_counter(&stats, "regions-done"), order.len() as u64);
    // "Passed untouched, no flow" counts only the packets of sockets not
    // yet registered (the handshakes), never the spliced or translated
    // ones.
    let no_flow = |s: &Value| s["reasons"]["pass-no-flow"].as_u64().unwrap_or(0);
    let passed = no_flow(&stats) - no_flow(&before);
    let segments =
        splice_counter(&stats, "spliced-segments") - splice_counter(&before, "spliced-segments");
    assert!(
        passed < segments / 4,
        "{passed} passed, {segments} spliced: {stats:#}"
    );
    assert_eq!(bed.nstat_splice_errors(), BTreeMap::new());
    bed.assert_flow_baseline();
}

/// The `xdp` mode: the XDP program splices the region's data segments, TC
/// the rest; the same byte-exact responses from alternating backends.
#[test]
fn xdp_mode_splices_the_bulk_on_xdp_and_every_response_is_exact() {
    let sizes = vec![1024, 65536, 1 << 20, 16 << 20];
    let bed = testbed(sizes.clone());
    bed.xdp_peers(true).expect("peers ready for XDP");
    let _gw = bed
        .start_distributor(&bed.proxy_config("xdp", &bed.round_robin_config()))
        .expect("start distributor");

    let order: Vec<usize> = (0..12).map(|i| sizes[i % sizes.len()]).collect();
    let requests: Vec<Request> = order
        .iter()
        .map(|s| Request::get(bed.vip_url(&format!("/obj/{s}"))))
        .collect();
    let responses = bed.curl_requests(&requests).expect("curl");
    bed.check_bodies(&responses, &order);
    assert_eq!(responses.iter().map(|r| r.new_connections).sum::<u32>(), 1);
    for w in responses.windows(2) {
        assert_ne!(w[0].backend(), w[1].backend());
    }
    let log = bed.access_log_at_least(order.len()).expect("access log");
    let paths = paths_taken(&log);
    assert_eq!(paths, vec!["splice"; order.len()], "{log:#?}");

    let stats = bed.distributor_stats().expect("stats");
    assert_eq!(
        splice_counter(&stats, "regions-done"),
        order.len() as u64,
        "{stats:#}"
    );
    // Most data segments went through XDP (first segments, ones carrying
    // an ACK news to S, and the last of a FIN-less response still go
    // through TC).
    let segments = splice_counter(&stats, "spliced-segments");
    let on_xdp = splice_counter(&stats, "spliced-segments-xdp");
    assert!(on_xdp * 10 > segments * 9, "{stats:#}");
    assert_eq!(bed.nstat_splice_errors(), BTreeMap::new());
    bed.assert_flow_baseline();
}

/// Each access-log record's `path_taken`.
fn paths_taken(log: &[Value]) -> Vec<&str> {
    log.iter()
        .map(|r| r["path_taken"].as_str().unwrap_or("-"))
        .collect()
}

/// (request, expected status, expected body size, expected path, reason)
type Case<'a> = (Request, u16, Option<usize>, &'a str, Option<&'a str>);

#[test]
fn spliced_and_relayed_responses_interleave_on_one_connection_byte_exact() {
    let sizes = vec![1024, 65536, 1 << 20, 16 << 20, 64 << 20];
    let bed = testbed(sizes.clone());
    let _gw = bed
        .start_distributor(&bed.proxy_config("tc", &bed.round_robin_config()))
        .expect("start distributor");

    // (request, expected status, expected body size, expected path, reason);
    // /gz/ responses are gzipped on the fly (chunked) and decoded by curl.
    let obj = |s: usize| Request::get(bed.vip_url(&format!("/obj/{s}")));
    let cases: Vec<Case> = vec![
        (obj(1024), 200, Some(1024), "splice", None),
        (
            Request::get(bed.vip_url("/gz/65536")).with(&["--compressed"]),
            200,
            Some(65536),
            "relay",
            Some("relay-transfer-encoding"),
        ),
        (obj(1 << 20), 200, Some(1 << 20), "splice", None),
        (obj(65536).with(&["-I"]), 200, None, "splice", None),
        (Request::get(bed.vip_url("/204")), 204, None, "splice", None),
        (
            obj(1024).with(&["-H", "If-None-Match: *"]),
            304,
            None,
            "splice",
            None,
        ),
        (obj(16 << 20), 200, Some(16 << 20), "splice", None),
        (
            Request::get(bed.vip_url("/gz/1024")).with(&["--compressed"]),
            200,
            Some(1024),
            "relay",
            Some("relay-transfer-encoding"),
        ),
        (obj(64 << 20), 200, Some(64 << 20), "splice", None),
        (obj(65536), 200, Some(65536), "splice", None),
    ];
    let requests: Vec<Request> = cases.iter().map(|c| c.0.clone()).collect();
    let responses = bed.curl_requests(&requests).expect("curl");
    assert_eq!(responses.iter().map(|r| r.new_connections).sum::<u32>(), 1);
    let req_is_head = |requests: &[Request], r: &Response| {
        requests
            .iter()
            .any(|q| q.url == r.url && q.args.iter().any(|a| a == "-I"))
    };
    for (r, (_, status, size, _, _)) in responses.iter().zip(&cases) {
        assert_eq!(r.status, *status, "{}", r.url);
        if let Some(size) = size {
            let backend = bed.backend(r.backend()).expect("known backend");
            let o = backend.object(*size).expect("object");
            assert_eq!(r.body.len(), *size, "{}", r.url);
            assert_eq!(r.sha256(), o.sha256, "{} from {}", r.url, r.backend());
        } else if req_is_head(&requests, r) {
            // curl -I writes the head where the body would go: the spliced
            // head arrived whole, with the object's length.
            let head = String::from_utf8_lossy(&r.body).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            assert!(head.contains("content-length: 65536"), "{head}");
        } else if *status != 200 {
            assert!(r.body.is_empty(), "{}: no body expected", r.url);
        }
    }

    let log = bed.access_log().expect("access log");
    assert_eq!(log.len(), cases.len(), "{log:#?}");
    for (rec, (req, _, _, path, reason)) in log.iter().zip(&cases) {
        assert_eq!(rec["path_taken"], *path, "{}: {rec}", req.url);
        if let Some(reason) = reason {
            assert_eq!(rec["path_reason"], *reason, "{}: {rec}", req.url);
        }
    }
    let stats = bed.distributor_stats().expect("stats");
    let spliced = cases.iter().filter(|c| c.3 == "splice").count() as u64;
    assert_eq!(splice_counter(&stats, "regions-done"), spliced, "{stats:#}");
    assert_eq!(
        stats["splice"]["relay-reasons"]["relay-transfer-encoding"].as_u64(),
        Some(2),
        "{stats:#}"
    );
    assert!(
        splice_counter(&stats, "spliced-bytes") > (81 << 20),
        "{stats:#}"
    );
    assert_eq!(bed.nstat_splice_errors(), BTreeMap::new());
    // Every flow entry went away with its connection (curl has exited).
    bed.assert_flow_baseline();
}

/// Counters that show a sender waited for a retransmission timer.
const RETRANSMISSIONS: [&str; 3] = ["TcpRetransSegs", "TcpExtTCPLossProbes", "TcpExtTCPTimeouts"];

fn retransmissions(ns: &distributor_tests::Netns) -> BTreeMap<String, u64> {
    let counters = ns.nstat().expect("nstat");
    RETRANSMISSIONS
        .iter()
        .filter_map(|name| {
            let v = counters.get(*name).copied().unwrap_or(0);
            (v != 0).then(|| ((*name).to_owned(), v))
        })
        .collect()
}

/// Ping-pong on one connection from the client namespace: each request
/// is written as soon as the previous response's head is in, so the
/// client's delayed ACK of that response rides on the request. Returns
/// the response heads.
fn ping_pong(bed: &Testbed, requests: Vec<String>) -> Vec<String> {
    bed.client
        .in_thread(move || {
            let mut s = TcpStream::connect((distributor_tests::VIP, 80)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut heads = Vec::new();
            let mut pending = Vec::new();
            for req in requests {
                s.write_all(req.as_bytes()).expect("send");
                while !pending.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut buf = [0_u8; 4096];
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return heads,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                }
                let end = pending.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                heads.push(String::from_utf8_lossy(&pending[..end]).into_owned());
                pending.drain(..end);
            }
            heads
        })
        .expect("client thread")
}

/// Small responses: the backend acknowledges the request on the response
/// data, and the client acknowledges a response on its next request. Both
/// ACKs ride on bytes that go elsewhere; the datapath copies them out as
/// pure ACKs, so on a clean link neither socket S nor any backend
/// retransmits, probes or times out.
#[test]
fn piggybacked_acks_reach_their_sockets_and_nothing_retransmits() {
    let bed = testbed(vec![1024]);
    let _gw = bed
        .start_distributor(&bed.proxy_config("tc", &bed.round_robin_config()))
        .expect("start distributor");

    let n = 30;
    let requests: Vec<Request> = (0..n)
        .map(|_| Request::get(bed.vip_url("/obj/1024")))
        .collect();
    let responses = bed.curl_requests(&requests).expect("curl");
    bed.check_bodies(&responses, &vec![1024; n]);
    assert_eq!(responses.iter().map(|r| r.new_connections).sum::<u32>(), 1);
    // HEAD responses are one segment each: the client's ACK of one waits
    // (delayed) and goes out on the next request.
    let heads = ping_pong(
        &bed,
        (0..n)
            .map(|_| "HEAD /obj/1024 HTTP/1.1\r\nHost: x\r\n\r\n".to_owned())
            .collect(),
    );
    assert_eq!(heads.len(), n);
    for h in &heads {
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        assert!(
            h.to_ascii_lowercase().contains("content-length: 1024"),
            "{h}"
        );
    }
    let log = bed.access_log_at_least(2 * n).expect("access log");
    let paths = paths_taken(&log);
    assert_eq!(paths, vec!["splice"; 2 * n], "{log:#?}");

    let stats = bed.distributor_stats().expect("stats");
    assert_eq!(
        splice_counter(&stats, "regions-done"),
        2 * n as u64,
        "{stats:#}"
    );
    assert!(
        splice_counter(&stats, "acks-to-socket-s") > 0,
        "no backend ACK was copied to S: {stats:#}"
    );
    assert!(
        splice_counter(&stats, "piggybacked-acks-to-backend") > 0,
        "no piggybacked client ACK was copied to a backend: {stats:#}"
    );
    let mut waited = BTreeMap::new();
    let gateway = retransmissions(&bed.gateway);
    if !gateway.is_empty() {
        waited.insert("gateway".to_owned(), gateway);
    }
    for b in &bed.backends {
        let r = retransmissions(&b.ns);
        if !r.is_empty() {
            waited.insert(b.name.clone(), r);
        }
    }
    assert_eq!(waited, BTreeMap::new(), "{stats:#}");
    assert_eq!(bed.nstat_splice_errors(), BTreeMap::new());
    bed.assert_flow_baseline();
}

//! End-to-end tests of the per-request control plane (relay path): real
//! nginx backends on distinct hosts, real clients (curl, raw sockets) in the
//! client namespace, distributor on the gateway with the datapath off.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use distributor_tests::{Request, Testbed, TestbedConfig, VIP};

fn testbed(config: TestbedConfig) -> Testbed {
    assert!(
        distributor_tests::is_root(),
        "these tests need root: run them with `cargo xtask test`"
    );
    Testbed::new(&config).expect("building the testbed")
}

/// b1 is the priority pool; b2 and b3 the default pool.
fn two_pools(bed: &Testbed, policy: &str, rules: &str) -> String {
    let addr = |i: usize| format!("{}:80", bed.backends[i].addr);
    format!(
        "default_pool = \"default\"\n\n\
         [[pools]]\nname = \"priority\"\npolicy = \"{policy}\"\nservers = [{{ address = \"{}\" }}]\n\n\
         [[pools]]\nname = \"default\"\npolicy = \"{policy}\"\nservers = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\n\n\
         {rules}",
        addr(0),
        addr(1),
        addr(2)
    )
}

const PRIORITY_RULES: &str = r#"
[[rules]]
name = "gold-cookie"
pool = "priority"
when = { cookie = { name = "tier", equals = "gold" } }

[[rules]]
name = "vip-user"
pool = "priority"
when = { user = { from = "header", name = "x-user", regex = "^vip-" } }

[[rules]]
name = "admin-path"
pool = "priority"
when = { all = [ { path = { prefix = "/obj/" } }, { header = { name = "x-admin", present = true } } ] }
"#;

#[test]
fn one_keep_alive_connection_carries_30_requests_each_routed_by_its_rule() {
    let bed = testbed(TestbedConfig {
        backends: 3,
        object_sizes: vec![1024, 64 * 1024],
        ..TestbedConfig::default()
    });
    let _gw = bed
        .start_distributor(&bed.proxy_config("off", &two_pools(&bed, "least-load", PRIORITY_RULES)))
        .expect("start distributor");

    // 30 requests with varying cookies, headers and paths; the expected
    // pool follows from the rules.
    let mut requests = Vec::new();
    let mut expect_priority = Vec::new();
    for i in 0..30 {
        let size = if i % 3 == 0 { 65536 } else { 1024 };
        let mut req = Request::get(bed.vip_url(&format!("/obj/{size}")));
        let priority = match i % 6 {
            0 => {
                req = req.with(&["-b", "tier=gold; session=abc"]);
                true
            }
            1 => {
                req = req.with(&["-b", "tier=silver"]);
                false
            }
            2 => {
                req = req.with(&["-H", &format!("X-User: vip-{i}")]);
                true
            }
            3 => {
                req = req.with(&["-H", &format!("X-User: user-{i}")]);
                false
            }
            4 => {
                req = req.with(&["-H", "X-Admin: 1"]);
                true
            }
            _ => false,
        };
        requests.push(req);
        expect_priority.push(priority);
    }
    let responses = bed.curl_requests(&requests).expect("curl");

    let new_connections: u32 = responses.iter().map(|r| r.new_connections).sum();
    assert_eq!(
        new_connections, 1,
        "the 30 requests did not share one connection"
    );
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (r, priority)) in responses.iter().zip(&expect_priority).enumerate() {
        assert_eq!(r.status, 200, "request {i}");
        let backend = bed
            .backend(r.backend())
            .unwrap_or_else(|| panic!("request {i}: no X-Backend"));
        if *priority {
            assert_eq!(
                backend.name, "b1",
                "request {i} should go to the priority pool"
            );
        } else {
            assert!(
                ["b2", "b3"].contains(&backend.name.as_str()),
                "request {i} went to {}",
                backend.name
            );
        }
        let size = if i % 3 == 0 { 65536 } else { 1024 };
        assert_eq!(
            r.sha256(),
            backend.object(size).expect("object").sha256,
            "request {i}: body"
        );
        *served.entry(backend.name.clone()).or_default() += 1;
    }
    // Least-load with sequential requests spreads over both default servers.
    assert!(
        served.get("b2").is_some() && served.get("b3").is_some(),
        "{served:?}"
    );

    // The backends' own logs agree with X-Backend, request for request.
    for b in &bed.backends {
        let logged = b
            .access_log()
            .iter()
            .filter(|l| l.contains("GET /obj/"))
            .count();
        assert_eq!(
            logged,
            served.get(&b.name).copied().unwrap_or(0),
            "{} log",
            b.name
        );
    }
    // And distributor's access log tracked every request: one connection,
    // request numbers 1..=30, the rule and server of each.
    let records = wait_records(&bed, 30);
    let conns: BTreeSet<u64> = records
        .iter()
        .map(|r| r["conn"].as_u64().unwrap())
        .collect();
    assert_eq!(conns.len(), 1, "one client connection");
    for (i, rec) in records.iter().enumerate() {
        assert_eq!(rec["req"].as_u64(), Some(i as u64 + 1));
        assert_eq!(rec["status"].as_u64(), Some(200));
        assert_eq!(rec["path_taken"], "relay");
        let pool = if expect_priority[i] {
            "priority"
        } else {
            "default"
        };
        assert_eq!(rec["pool"], pool, "record {i}: {rec}");
        assert_eq!(
            rec["rule"].is_null(),
            !expect_priority[i],
            "record {i}: {rec}"
        );
        let server = rec["server"].as_str().unwrap();
        let backend = responses[i].backend();
        assert_eq!(server, format!("{}:80", bed.backend(backend).unwrap().addr));
    }
}

/// The access log's records, waiting briefly for the writer thread.
fn wait_records(bed: &Testbed, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        let records = bed.access_log().expect("access log");
        if records.len() >= n {
            return records;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bed.access_log().expect("access log")
}

/// Sends `raw` on one connection from the client namespace and reads until
/// the server closes (or 5 s pass).
fn raw_exchange(bed: &Testbed, raw: Vec<u8>) -> Vec<u8> {
    bed.client
        .in_thread(move || {
            let mut s = TcpStream::connect((VIP, 80)).expect("connect to the VIP");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(&raw).expect("send");
            let mut out = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
            out
        })
        .expect("client thread")
}

/// Splits a byte stream of responses (Content-Length framed) into
/// (status, headers, body).
fn split_responses(mut data: &[u8]) -> Vec<(u16, String, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&data[..end]).to_string();
        let status = head[9..12].parse().unwrap_or(0);
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let body_start = end + 4;
        let body_end = (body_start + len).min(data.len());
        out.push((status, head, data[body_start..body_end].to_vec()));
        data = &data[body_end..];
    }
    out
}

#[test]
fn pipelined_requests_come_back_in_order_from_different_backends() {
    let bed = testbed(TestbedConfig::default());
    let _gw = bed
        .start_distributor(
            &bed.proxy_config("off", &two_pools(&bed, "round-robin", PRIORITY_RULES)),
        )
        .expect("start distributor");
    let mut raw = Vec::new();
    let paths = [
        "/echo/1",
        "/echo/2",
        "/obj/1024",
        "/echo/4",
        "/echo/5",
        "/echo/6",
    ];
    for (i, p) in paths.iter().enumerate() {
        let cookie = if i % 2 == 0 { "tier=gold" } else { "tier=none" };
        let close = if i == paths.len() - 1 {
            "Connection: close\r\n"
        } else {
            ""
        };
        raw.extend_from_slice(
            format!("GET {p} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n{close}\r\n").as_bytes(),
        );
    }
    let responses = split_responses(&raw_exchange(&bed, raw));
    assert_eq!(responses.len(), paths.len(), "{responses:?}");
    for (i, (status, head, body)) in responses.iter().enumerate() {
        assert_eq!(*status, 200, "{head}");
        let backend = head
            .lines()
            .find_map(|l| l.strip_prefix("X-Backend: "))
            .expect("X-Backend");
        if i % 2 == 0 {
            assert_eq!(backend, "b1", "response {i}");
        } else {
            assert_ne!(backend, "b1", "response {i}");
        }
        if paths[i].starts_with("/echo") {
            // The body names the path: responses are in request order.
            let text = String::from_utf8_lossy(body);
            assert_eq!(text, format!("{backend} GET {}\n", paths[i]));
        } else {
            let sha = &bed.backend(backend).unwrap().object(1024).unwrap().sha256;
            assert_eq!(&distributor_tests::sha256_hex(body), sha);
        }
    }
}

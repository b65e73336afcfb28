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
    let bed = Testbed::for_test(&TestbedConfig {
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
        served.contains_key("b2") && served.contains_key("b3"),
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
    // The metrics count the same requests by pool, server and status.
    let metrics = bed.metrics().expect("metrics");
    let priority = expect_priority.iter().filter(|p| **p).count();
    let line = format!(
        "distributor_requests_total{{pool=\"priority\",server=\"{}:80\",status=\"200\",path=\"relay\"}} {priority}",
        bed.backends[0].addr
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "no {line:?} in\n{metrics}"
    );
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
            let mut buf = vec![0u8; 65536];
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
    let bed = Testbed::for_test(&TestbedConfig::default());
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

/// One default pool of b2 and b3 (b1 unused unless a test says so).
fn default_pool(bed: &Testbed, policy: &str, extra_servers: &str) -> String {
    format!(
        "[[pools]]\nname = \"default\"\npolicy = \"{policy}\"\nservers = [{extra_servers}{{ address = \"{}:80\" }}, {{ address = \"{}:80\" }}]\n",
        bed.backends[1].addr, bed.backends[2].addr
    )
}

fn backend_gets(bed: &Testbed) -> usize {
    bed.backends
        .iter()
        .map(|b| {
            b.access_log()
                .iter()
                .filter(|l| l.contains("\"GET "))
                .count()
        })
        .sum()
}

#[test]
fn malformed_requests_get_the_right_status_and_nothing_reaches_a_backend() {
    let bed = Testbed::for_test(&TestbedConfig::default());
    let config = bed.proxy_config("off", &default_pool(&bed, "round-robin", ""))
        + "\n[limits]\nmax_body_bytes = 100000\n";
    let _gw = bed.start_distributor(&config).expect("start distributor");

    let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let many_headers: String = (0..101).fold(String::new(), |mut s, i| {
        use std::fmt::Write as _;
        let _ = write!(s, "X-H{i}: v\r\n");
        s
    });
    let big_header = format!("X-Big: {}\r\n", "b".repeat(70_000));
    let cases: Vec<(&str, String, u16)> = vec![
        ("CL with TE", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), 400),
        ("differing CLs", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".into(), 400),
        ("invalid CL", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n".into(), 400),
        ("bad chunk size", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".into(), 400),
        ("final coding not chunked", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".into(), 400),
        ("obs-fold", "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n".into(), 400),
        ("space before colon", "GET /echo HTTP/1.1\r\nHost : x\r\n\r\n".into(), 400),
        ("bare CR", "GET /echo HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n".into(), 400),
        ("invalid header name", "GET /echo HTTP/1.1\r\nHost: x\r\nBad(Name): v\r\n\r\n".into(), 400),
        ("NUL in value", "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".into(), 400),
        ("request line too long", long_line, 414),
        ("too many headers", format!("GET /echo HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n"), 431),
        ("head too large", format!("GET /echo HTTP/1.1\r\nHost: x\r\n{big_header}\r\n"), 431),
        ("body over the limit", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n".into(), 413),
        ("chunked body over the limit", format!("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n30d40\r\n{}\r\n0\r\n\r\n", "c".repeat(200_000)), 413),
        ("CONNECT", "CONNECT 192.0.2.6:80 HTTP/1.1\r\nHost: 192.0.2.6:80\r\n\r\n".into(), 501),
        ("Upgrade", "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".into(), 501),
        ("HTTP/2.0 line", "GET /echo HTTP/2.0\r\nHost: x\r\n\r\n".into(), 505),
        ("missing Host", "GET /echo HTTP/1.1\r\nX-A: b\r\n\r\n".into(), 400),
    ];
    let n = cases.len();
    for (name, bad, status) in cases {
        // A good request first, then the bad one, in one write.
        let mut raw = format!(
            "GET /echo/{} HTTP/1.1\r\nHost: x\r\n\r\n",
            name.replace(' ', "-")
        )
        .into_bytes();
        raw.extend_from_slice(bad.as_bytes());
        let responses = split_responses(&raw_exchange(&bed, raw));
        assert_eq!(responses.len(), 2, "{name}: {responses:?}");
        assert_eq!(responses[0].0, 200, "{name}: the good request before it");
        assert_eq!(responses[1].0, status, "{name}: {}", responses[1].1);
        assert!(responses[1].1.contains("Connection: close"), "{name}");
    }
    // Only the good requests reached a backend.
    assert_eq!(backend_gets(&bed), n);
    let posts: usize = bed
        .backends
        .iter()
        .map(|b| {
            b.access_log()
                .iter()
                .filter(|l| l.contains("\"POST") || l.contains("\"CONNECT"))
                .count()
        })
        .sum();
    assert_eq!(posts, 0);
}

#[test]
fn a_slow_head_gets_408_and_an_idle_connection_is_closed_quietly() {
    let bed = Testbed::for_test(&TestbedConfig::default());
    let config = bed.proxy_config("off", &default_pool(&bed, "round-robin", ""))
        + "\n[timeouts]\nclient_head_ms = 500\nclient_idle_ms = 800\n";
    let _gw = bed.start_distributor(&config).expect("start distributor");
    let out = raw_exchange(&bed, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec());
    let responses = split_responses(&out);
    assert_eq!(responses.len(), 1, "{}", String::from_utf8_lossy(&out));
    assert_eq!(responses[0].0, 408);
    // Nothing at all: closed without a response after the idle timeout.
    let out = raw_exchange(&bed, Vec::new());
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    assert_eq!(backend_gets(&bed), 0);
}

#[test]
fn least_load_gives_a_slow_backend_fewer_requests() {
    let bed = Testbed::for_test(&TestbedConfig {
        backends: 3,
        object_sizes: vec![128 * 1024],
        // limit_rate only delays the next write: small sendfile chunks make
        // it bite on a 128 KiB object.
        backend_directives: vec![(
            "b2".into(),
            "sendfile_max_chunk 16k; limit_rate 256k;".into(),
        )],
    });
    let _gw = bed
        .start_distributor(&bed.proxy_config("off", &default_pool(&bed, "least-load", "")))
        .expect("start distributor");
    // 80 requests, 8 at a time (bounded in count; about 2 s of work).
    let url = bed.vip_url("/obj/131072");
    let mut args = vec![
        "-s",
        "--parallel",
        "--parallel-max",
        "8",
        "-w",
        "%header{x-backend}\\n",
    ];
    let urls: Vec<String> = std::iter::repeat_n(url, 80).collect();
    for u in &urls {
        args.extend(["-o", "/dev/null", u.as_str()]);
    }
    let out = bed.client.run("curl", &args).expect("curl --parallel");
    let b2 = out.lines().filter(|l| *l == "b2").count();
    let b3 = out.lines().filter(|l| *l == "b3").count();
    assert_eq!(b2 + b3, 80, "{out}");
    eprintln!("least-load over 80 requests: slow b2 {b2}, fast b3 {b3}");
    // b2 takes ~0.5 s per response, b3 ~1 ms: least-load sends b2 only a
    // small share (round-robin would send it 40).
    assert!(b2 * 4 < b3, "slow b2 got {b2}, fast b3 got {b3}");
}

#[test]
fn backends_see_far_fewer_connections_than_requests() {
    let bed = Testbed::for_test(&TestbedConfig::default());
    let _gw = bed
        .start_distributor(&bed.proxy_config("off", &default_pool(&bed, "round-robin", "")))
        .expect("start distributor");
    // 4 client connections x 15 requests.
    let urls: Vec<String> = (0..15)
        .map(|i| bed.vip_url(&format!("/echo/{i}")))
        .collect();
    for _ in 0..4 {
        let r = bed.curl_many(&urls, &[]).expect("curl");
        assert!(r.iter().all(|r| r.status == 200));
    }
    let mut conns = BTreeSet::new();
    let mut requests = 0;
    for b in &bed.backends {
        for line in b.access_log() {
            requests += 1;
            let conn = line
                .split_whitespace()
                .find(|w| w.starts_with("conn="))
                .unwrap()
                .to_owned();
            conns.insert((b.name.clone(), conn));
        }
    }
    assert_eq!(requests, 60);
    assert!(
        conns.len() <= 4,
        "backends saw {} connections for 60 requests",
        conns.len()
    );
    let metrics = bed.metrics().expect("metrics");
    assert!(
        metrics.contains("distributor_backend_connections_reused"),
        "{metrics}"
    );
}

#[test]
fn a_pooled_connection_the_backend_closed_while_idle_is_replaced_transparently() {
    let bed = Testbed::for_test(&TestbedConfig {
        backend_directives: vec![
            ("b2".into(), "keepalive_timeout 1s;".into()),
            ("b3".into(), "keepalive_timeout 1s;".into()),
        ],
        ..TestbedConfig::default()
    });
    let _gw = bed
        .start_distributor(&bed.proxy_config("off", &default_pool(&bed, "round-robin", "")))
        .expect("start distributor");
    for round in 0..3 {
        let r = bed
            .curl_many(&[bed.vip_url("/echo/a"), bed.vip_url("/echo/b")], &[])
            .expect("curl");
        assert!(r.iter().all(|r| r.status == 200), "round {round}: {r:?}");
        // nginx closes its idle keep-alive connections after 1 s.
        std::thread::sleep(Duration::from_millis(1500));
    }
    let records = wait_records(&bed, 6);
    assert_eq!(records.len(), 6);
    assert!(records.iter().all(|r| r["status"] == 200), "{records:?}");
}

#[test]
fn connect_failure_moves_to_the_next_server_and_no_server_gives_503() {
    let bed = Testbed::for_test(&TestbedConfig::default());
    // 192.0.2.6:81 refuses connections (nothing listens there).
    let pools = format!(
        "default_pool = \"default\"\n\n{}\n[[pools]]\nname = \"dead\"\nservers = [{{ address = \"{}:81\" }}]\n\n\
         [[rules]]\nname = \"to-dead\"\npool = \"dead\"\nwhen = {{ path = {{ prefix = \"/dead\" }} }}\n",
        default_pool(
            &bed,
            "round-robin",
            &format!("{{ address = \"{}:81\" }}, ", bed.backends[0].addr)
        ),
        bed.backends[0].addr
    );
    let _gw = bed
        .start_distributor(&bed.proxy_config("off", &pools))
        .expect("start distributor");
    let urls: Vec<String> = (0..9).map(|i| bed.vip_url(&format!("/echo/{i}"))).collect();
    let r = bed.curl_many(&urls, &[]).expect("curl");
    assert!(
        r.iter().all(|r| r.status == 200 && r.backend() != "b1"),
        "{r:?}"
    );
    let dead = bed.curl(&bed.vip_url("/dead/x")).expect("curl");
    assert_eq!(dead.status, 503);
    assert!(
        String::from_utf8_lossy(&dead.body).contains("pool dead"),
        "{:?}",
        dead.body
    );
    let records = wait_records(&bed, 10);
    let failures: u64 = records
        .iter()
        .map(|r| r["connect_failures"].as_u64().unwrap_or(0))
        .sum();
    assert!(failures >= 3, "connect failures recorded: {failures}");
}

#[test]
fn http10_with_and_without_keep_alive_and_expect_100_continue() {
    let bed = Testbed::for_test(&TestbedConfig::default());
    let _gw = bed
        .start_distributor(&bed.proxy_config("off", &default_pool(&bed, "round-robin", "")))
        .expect("start distributor");
    let urls: Vec<String> = (0..3).map(|i| bed.vip_url(&format!("/echo/{i}"))).collect();
    // HTTP/1.0 without keep-alive: a connection per request.
    let r = bed.curl_many(&urls, &["--http1.0"]).expect("curl");
    assert!(r.iter().all(|r| r.status == 200));
    assert_eq!(r.iter().map(|r| r.new_connections).sum::<u32>(), 3);
    // HTTP/1.0 with keep-alive: one connection.
    let r = bed
        .curl_many(&urls, &["--http1.0", "-H", "Connection: keep-alive"])
        .expect("curl");
    assert!(r.iter().all(|r| r.status == 200), "{r:?}");
    assert_eq!(r.iter().map(|r| r.new_connections).sum::<u32>(), 1);
    // Expect: 100-continue with a body.
    let body = bed.write_file("body.bin", &"x".repeat(5000)).expect("body");
    let r = bed
        .curl_requests(&[Request::get(bed.vip_url("/echo/post")).with(&[
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            &format!("@{}", body.display()),
        ])])
        .expect("curl");
    assert_eq!(r[0].status, 200);
    assert!(String::from_utf8_lossy(&r[0].body).ends_with("POST /echo/post\n"));
}

#[test]
fn chunked_head_and_no_body_responses_relay_byte_exact() {
    let bed = Testbed::for_test(&TestbedConfig {
        object_sizes: vec![1024, 300 * 1024],
        ..TestbedConfig::default()
    });
    let _gw = bed
        .start_distributor(&bed.proxy_config("off", &default_pool(&bed, "round-robin", "")))
        .expect("start distributor");
    let reqs = vec![
        Request::get(bed.vip_url("/gz/307200")).with(&["--compressed"]),
        Request::get(bed.vip_url("/obj/1024")).with(&["-I"]),
        Request::get(bed.vip_url("/204")),
        Request::get(bed.vip_url("/obj/307200")),
        Request::get(bed.vip_url("/gz/1024")).with(&["--compressed"]),
    ];
    let r = bed.curl_requests(&reqs).expect("curl");
    assert_eq!(
        r.iter().map(|r| r.new_connections).sum::<u32>(),
        1,
        "one connection"
    );
    let sha = |resp: &distributor_tests::Response, size| {
        bed.backend(resp.backend())
            .unwrap()
            .object(size)
            .unwrap()
            .sha256
            .clone()
    };
    assert_eq!(r[0].status, 200);
    assert_eq!(
        r[0].headers.get("transfer-encoding").map(String::as_str),
        Some("chunked")
    );
    assert_eq!(r[0].sha256(), sha(&r[0], 307_200));
    // HEAD: curl -I writes the head where the body would go; no body bytes
    // followed (else the next request on the connection would have failed).
    assert_eq!(r[1].status, 200);
    let head = String::from_utf8_lossy(&r[1].body).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 200") && head.contains("content-length: 1024"),
        "{head}"
    );
    assert_eq!(r[2].status, 204);
    assert_eq!(r[3].sha256(), sha(&r[3], 307_200));
    assert_eq!(r[4].sha256(), sha(&r[4], 1024));
}

#[test]
fn a_backend_dying_mid_response_closes_the_client_connection() {
    let bed = Testbed::for_test(&TestbedConfig {
        object_sizes: vec![4 * 1024 * 1024],
        backend_directives: vec![("b2".into(), "sendfile_max_chunk 64k; limit_rate 1m;".into())],
        ..TestbedConfig::default()
    });
    let pools = format!(
        "[[pools]]\nname = \"default\"\nservers = [{{ address = \"{}:80\" }}]\n",
        bed.backends[1].addr
    );
    let _gw = bed
        .start_distributor(&bed.proxy_config("off", &pools))
        .expect("start distributor");
    let b2_ns = bed.backends[1].ns.name.clone();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        // Kill every process of b2 (its nginx) mid-response.
        let pids = std::process::Command::new("ip")
            .args(["netns", "pids", &b2_ns])
            .output()
            .unwrap();
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid])
                .status();
        }
    });
    let raw =
        b"GET /obj/4194304 HTTP/1.1\r\nHost: x\r\n\r\nGET /echo/next HTTP/1.1\r\nHost: x\r\n\r\n"
            .to_vec();
    let out = raw_exchange(&bed, raw);
    killer.join().unwrap();
    let head_end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&out[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Length: 4194304"), "{head}");
    let body = out.len() - head_end;
    assert!(
        body < 4 * 1024 * 1024,
        "the response completed ({body} bytes)"
    );
    // The connection was closed: the pipelined second request got nothing.
    assert!(
        !out[head_end..].windows(8).any(|w| w == b"HTTP/1.1"),
        "a second response followed"
    );
    let records = wait_records(&bed, 1);
    assert!(
        records[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("backend"),
        "{records:?}"
    );
}

#[test]
fn a_backend_breaking_framing_gets_502_and_its_connection_is_dropped() {
    let bed = Testbed::for_test(&TestbedConfig::default());
    // A broken backend on b1's host, port 8080: answers with both
    // Content-Length and Transfer-Encoding.
    let listener_ns = &bed.backends[0].ns;
    let addr = format!("{}:8080", bed.backends[0].addr);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let bind = addr.clone();
    let _server = listener_ns
        .spawn_thread(move || {
            let l = std::net::TcpListener::bind(&bind).expect("bind");
            ready_tx.send(()).unwrap();
            // At most 4 connections, then the thread ends.
            for stream in l.incoming().take(4) {
                let Ok(mut s) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
            }
        })
        .expect("broken backend");
    ready_rx.recv().unwrap();
    let pools = format!("[[pools]]\nname = \"default\"\nservers = [{{ address = \"{addr}\" }}]\n");
    let _gw = bed
        .start_distributor(&bed.proxy_config("off", &pools))
        .expect("start distributor");
    let r = bed.curl(&bed.vip_url("/x")).expect("curl");
    assert_eq!(r.status, 502);
    let records = wait_records(&bed, 1);
    assert_eq!(records[0]["status"], 502);
    // Let the server thread finish: three more connections.
    for _ in 0..3 {
        let _ = bed.curl(&bed.vip_url("/x"));
    }
}

/// Runs a scripted HTTP server on b1's host, port 8080, for at most
/// `connections` connections: `serve(n, stream)` handles connection n.
fn scripted_backend(
    bed: &Testbed,
    connections: usize,
    serve: fn(usize, std::net::TcpStream),
) -> String {
    let addr = format!("{}:8080", bed.backends[0].addr);
    let bind = addr.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    bed.backends[0]
        .ns
        .spawn_thread(move || {
            let l = std::net::TcpListener::bind(&bind).expect("bind");
            ready_tx.send(()).unwrap();
            for (n, stream) in l.incoming().take(connections).enumerate() {
                if let Ok(s) = stream {
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    serve(n, s);
                }
            }
        })
        .expect("scripted backend");
    ready_rx.recv().unwrap();
    addr
}

/// Reads one request head (enough for GETs without a body).
fn read_request(s: &mut std::net::TcpStream) -> bool {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    true
}

#[test]
fn a_request_is_retried_on_a_fresh_connection_when_the_pooled_one_was_closed() {
    let bed = Testbed::for_test(&TestbedConfig::default());
    // Each connection answers its first request, then closes when the
    // second one arrives, without a byte of response: exactly what a
    // backend closing an idle keep-alive connection looks like to a proxy
    // that sent a request at the same moment.
    let addr = scripted_backend(&bed, 3, |n, mut s| {
        if read_request(&mut s) {
            let body = format!("conn {n}");
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
        let _ = read_request(&mut s);
        // Dropping the stream closes it unanswered.
    });
    let pools = format!("[[pools]]\nname = \"default\"\nservers = [{{ address = \"{addr}\" }}]\n");
    let _gw = bed
        .start_distributor(&bed.proxy_config("off", &pools))
        .expect("start distributor");
    let r = bed
        .curl_many(
            &[bed.vip_url("/a"), bed.vip_url("/b"), bed.vip_url("/c")],
            &[],
        )
        .expect("curl");
    let bodies: Vec<String> = r
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into())
        .collect();
    assert!(r.iter().all(|r| r.status == 200), "{r:?}");
    assert_eq!(bodies, ["conn 0", "conn 1", "conn 2"]);
    let records = wait_records(&bed, 3);
    assert_eq!(records[0]["retried"], false);
    assert_eq!(records[1]["retried"], true, "{}", records[1]);
    assert_eq!(records[2]["retried"], true, "{}", records[2]);
}

#[test]
fn a_backend_that_never_answers_gets_504() {
    let bed = Testbed::for_test(&TestbedConfig::default());
    let addr = scripted_backend(&bed, 1, |_, mut s| {
        let _ = read_request(&mut s);
        std::thread::sleep(Duration::from_secs(2));
    });
    let pools = format!("[[pools]]\nname = \"default\"\nservers = [{{ address = \"{addr}\" }}]\n");
    let config = bed.proxy_config("off", &pools) + "\n[timeouts]\nresponse_head_ms = 500\n";
    let _gw = bed.start_distributor(&config).expect("start distributor");
    let r = bed.curl(&bed.vip_url("/slow")).expect("curl");
    assert_eq!(r.status, 504);
    let records = wait_records(&bed, 1);
    assert_eq!(records[0]["status"], 504);
}

//! `cargo xtask demo`: a testbed with three nginx backends, distributor on
//! the gateway with the TC datapath (responses spliced in the kernel), one
//! keep-alive client connection whose requests go to different backends by
//! cookie, user id and round robin, and for each response whether the
//! kernel spliced it or distributor relayed it, and why. Then the splice
//! counters, and the flow maps while a second connection sits idle.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, Result};
use distributor_tests::{Request, Response, Testbed, TestbedConfig, VIP};
use serde_json::Value;

use crate::{bootstrap, build_distributor, step};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// What the requests of the first connection ask for: path, then curl
/// options (`-I`: HEAD). The comments say where round robin and the rules
/// send each one: consecutive requests go to different backends.
const PLAN: [(&str, &[&str]); 12] = [
    ("/obj/1024", &[]),                            // default: b2
    ("/obj/65536", &["-b", "tier=gold"]),          // gold-cookie: b1
    ("/obj/1048576", &[]),                         // default: b3
    ("/obj/4194304", &["-H", "X-User: vip-ada"]),  // vip-user: b1
    ("/obj/4194304", &[]),                         // default: b2
    ("/obj/1048576", &["-I"]),                     // HEAD, default: b3
    ("/204", &["-b", "tier=gold"]),                // gold-cookie: b1
    ("/gz/65536", &["--compressed"]),              // chunked, default: b2
    ("/obj/65536", &[]),                           // default: b3
    ("/echo/hello", &["-H", "X-User: vip-grace"]), // vip-user: b1
    ("/gz/1048576", &["--compressed"]),            // chunked, default: b2
    ("/obj/1024", &["-b", "tier=gold"]),           // gold-cookie: b1
];

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
        object_sizes: vec![KIB, 64 * KIB, MIB, 4 * MIB],
        ..TestbedConfig::default()
    })?;
    let pin_dir = bed.pin_dir();
    let pin = pin_dir.to_string_lossy().into_owned();
    // Round robin in the default pool: consecutive requests change backends.
    let config = bed.proxy_config("tc", &bed.two_pools_config_with("round-robin"));
    let config_path = bed.write_file("demo.toml", &config)?;
    println!("configuration ({}):\n", config_path.display());
    print!("{config}");

    step("starting distributor in the gateway namespace (datapath: TC, kernel splice)");
    let mut daemon = bed.start_distributor(&config)?;

    step(&format!(
        "connection 1: curl, {} requests on one keep-alive connection to the virtual IP",
        PLAN.len()
    ));
    let requests: Vec<Request> = PLAN
        .iter()
        .map(|(path, args)| Request::get(bed.vip_url(path)).with(args))
        .collect();
    let responses = bed.curl_requests(&requests)?;
    let records = wait_records(&bed, requests.len());
    let mut failures = Vec::new();
    println!("\nconnection 1 (curl):");
    print_header();
    for (i, ((r, (path, args)), rec)) in responses.iter().zip(&PLAN).zip(&records).enumerate() {
        let method = if args.contains(&"-I") { "HEAD" } else { "GET" };
        print_row(&bed, i + 1, method, path, r, rec, &mut failures);
    }
    let new_conns: u32 = responses.iter().map(|r| r.new_connections).sum();
    println!(
        "\nbody: bytes the client got (gunzipped for /gz); sent: head + body to the client \
         (access log bytes_out)\nclient TCP connections curl opened: {new_conns}"
    );
    if new_conns != 1 {
        failures.push(format!(
            "curl opened {new_conns} connections for one keep-alive sequence"
        ));
    }

    step("connection 2: two requests, then the connection stays open and idle");
    let mut held = HeldConnection::open(&bed)?;
    let second: [(&str, &[&str]); 2] = [
        ("/obj/1048576", &[]),
        ("/obj/65536", &["Cookie: tier=gold"]),
    ];
    let mut second_responses = Vec::new();
    for (path, headers) in second {
        second_responses.push(held.get(&bed, path, headers)?);
    }
    let records = wait_records(&bed, requests.len() + second.len());
    println!("\nconnection 2:");
    print_header();
    for (i, ((r, (path, _)), rec)) in second_responses
        .iter()
        .zip(&second)
        .zip(records.iter().skip(requests.len()))
        .enumerate()
    {
        print_row(&bed, i + 1, "GET", path, r, rec, &mut failures);
    }

    step("distributor flows (connection 2 idle: its client entry, the pooled backend connections)");
    println!();
    let flows = bed.distributor_cli(&["flows", "--pin-dir", &pin])?;
    print!("{}", String::from_utf8_lossy(&flows.stdout));
    eprint!("{}", String::from_utf8_lossy(&flows.stderr));

    step("the pinned flow maps, as bpftool prints them (first entry of each)");
    for map in ["FLOWS_C", "FLOWS_S"] {
        print_bpftool_dump(&pin_dir.join(map))?;
    }
    drop(held);

    step("splice counters (distributor stats, \"splice\" section)");
    println!();
    print_splice_stats(&bed)?;

    if !failures.is_empty() {
        anyhow::bail!(
            "{} check(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    println!("\nevery body matched the object of the backend that served it");

    if keep {
        keep_running(&bed, &bin.to_string_lossy(), &pin);
        return Ok(());
    }
    step("tearing down");
    daemon.stop();
    drop(bed);
    Ok(())
}

fn print_header() {
    println!(
        "{:>2}  {:<18} {:<11} {:<7} {:>6} {:>8} {:>8}  {:<21} path taken",
        "#", "request", "rule", "backend", "status", "body", "sent", "check"
    );
}

/// One line per request: what the client got, checked, and what the access
/// log says about it. A failed check goes to `failures`.
fn print_row(
    bed: &Testbed,
    n: usize,
    method: &str,
    path: &str,
    r: &Response,
    rec: &Value,
    failures: &mut Vec<String>,
) {
    let check = match check(bed, method, path, r, rec) {
        Ok(s) => s.to_owned(),
        Err(e) => {
            failures.push(format!("{method} {path} (from {:?}): {e}", r.backend()));
            e.to_uppercase()
        }
    };
    let body = if method == "HEAD" { 0 } else { r.body.len() };
    let taken = rec["path_taken"].as_str().unwrap_or("?");
    let taken = match rec["path_reason"].as_str() {
        Some(why) => format!("{taken} ({why})"),
        // The access log should always say why a response was relayed.
        None if taken == "relay" => "relay (no path_reason logged)".to_owned(),
        None => taken.to_owned(),
    };
    println!(
        "{n:>2}  {:<18} {:<11} {:<7} {:>6} {body:>8} {:>8}  {check:<21} {taken}",
        format!("{method:<4} {path}"),
        rec["rule"].as_str().unwrap_or("(default)"),
        or_dash(r.backend()),
        r.status,
        rec["bytes_out"].as_u64().unwrap_or(0),
    );
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// Whether the response is what the backend that says it answered
/// (`X-Backend`) serves for this request, and whether the access log agrees
/// on request and server.
fn check(
    bed: &Testbed,
    method: &str,
    path: &str,
    r: &Response,
    rec: &Value,
) -> Result<&'static str, String> {
    if rec["method"] != method || rec["path"] != path {
        return Err(format!(
            "access log record is for {} {}",
            rec["method"], rec["path"]
        ));
    }
    let backend = bed
        .backend(r.backend())
        .ok_or_else(|| format!("no X-Backend (status {})", r.status))?;
    let server = format!("{}:{}", backend.addr, backend.port);
    if rec["server"] != server.as_str() {
        return Err(format!("X-Backend {server}, log {}", rec["server"]));
    }
    let want_status = if path == "/204" { 204 } else { 200 };
    if r.status != want_status {
        return Err(format!("status {}", r.status));
    }
    let size = path
        .rsplit('/')
        .next()
        .and_then(|s| s.parse::<usize>().ok());
    if method == "HEAD" {
        // curl -I writes the head where the body would go: nothing may
        // follow it, and it announces the object's length.
        let text = String::from_utf8_lossy(&r.body);
        let after_head = text.split_once("\r\n\r\n").map_or("", |(_, rest)| rest);
        let length = r.headers.get("content-length").and_then(|l| l.parse().ok());
        return if !after_head.is_empty() {
            Err("body after a HEAD".to_owned())
        } else if size.is_some() && length != size {
            Err(format!("content-length {length:?}"))
        } else {
            Ok("no body, length ok")
        };
    }
    if path == "/204" {
        return if r.body.is_empty() {
            Ok("no body")
        } else {
            Err("body in a 204".to_owned())
        };
    }
    if let Some(rest) = path.strip_prefix("/echo/") {
        let want = format!("{} {method} /echo/{rest}\n", backend.name);
        return if r.body == want.as_bytes() {
            Ok("echo ok")
        } else {
            Err("wrong echo".to_owned())
        };
    }
    let object = size
        .and_then(|s| backend.object(s))
        .ok_or_else(|| format!("{} serves no such object", backend.name))?;
    if r.body.len() != object.size {
        return Err(format!("{} bytes", r.body.len()));
    }
    if r.sha256() != object.sha256 {
        return Err("sha256 mismatch".to_owned());
    }
    Ok(if path.starts_with("/gz/") {
        "sha256 ok (gunzipped)"
    } else {
        "sha256 ok"
    })
}

/// A client connection made by hand (curl cannot leave one open): opened in
/// the client namespace, used from this thread.
struct HeldConnection {
    stream: BufReader<TcpStream>,
}

impl HeldConnection {
    fn open(bed: &Testbed) -> Result<Self> {
        let vip = SocketAddr::from((VIP, 80));
        let stream = bed
            .client
            .in_thread(move || TcpStream::connect_timeout(&vip, Duration::from_secs(5)))?
            .context("connecting to the virtual IP")?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self {
            stream: BufReader::new(stream),
        })
    }

    /// `GET path` with extra header lines; the response must carry a
    /// Content-Length (no chunked decoding here).
    fn get(&mut self, bed: &Testbed, path: &str, headers: &[&str]) -> Result<Response> {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {VIP}\r\nUser-Agent: xtask-demo\r\n");
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        self.stream.get_mut().write_all(req.as_bytes())?;

        let mut line = String::new();
        anyhow::ensure!(
            self.stream.read_line(&mut line)? > 0,
            "connection closed before a response to {path}"
        );
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut fields = BTreeMap::new();
        loop {
            line.clear();
            anyhow::ensure!(
                self.stream.read_line(&mut line)? > 0,
                "connection closed in the head of the response to {path}"
            );
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = fields
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .with_context(|| format!("response to {path} without Content-Length"))?;
        let mut body = vec![0; len];
        self.stream
            .read_exact(&mut body)
            .with_context(|| format!("reading the {len}-byte body of {path}"))?;
        Ok(Response {
            url: bed.vip_url(path),
            status,
            headers: fields,
            body,
            new_connections: 0,
        })
    }
}

/// `bpftool map dump pinned PATH`: the first entry as bpftool prints it
/// (with BTF: field names and values), and every entry's key decoded (the
/// datapath keeps addresses and ports in network byte order).
fn print_bpftool_dump(path: &std::path::Path) -> Result<()> {
    let plain = distributor_tests::bpftool_dump_raw(path, false)?;
    let dump = distributor_tests::bpftool_dump(path)?;
    let entries = dump.as_array().map_or(&[][..], Vec::as_slice);
    println!("\n$ bpftool map dump pinned {}", path.display());
    println!(
        "  # {} {}, keys decoded (network byte order): {}",
        entries.len(),
        if entries.len() == 1 {
            "entry"
        } else {
            "entries"
        },
        entries
            .iter()
            .map(|e| decode_key(&e["formatted"]["key"]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // An entry starts with a line `[{` or `},{`: keep the first one.
    let text = String::from_utf8_lossy(&plain);
    for line in text.lines() {
        if line.trim_start().starts_with("},{") {
            println!("  }},{{ ... {} more", entries.len().saturating_sub(1));
            break;
        }
        println!("  {line}");
    }
    Ok(())
}

/// A flow key from bpftool's JSON (`saddr`, `sport`, `daddr`, `dport` as
/// the host-order integers of network-order bytes) as `a:p -> b:q`.
fn decode_key(key: &Value) -> String {
    let addr = |a: &str, p: &str| {
        let ip = u32::try_from(key[a].as_u64().unwrap_or(0)).unwrap_or(0);
        let port = u16::try_from(key[p].as_u64().unwrap_or(0)).unwrap_or(0);
        SocketAddr::from((ip.to_ne_bytes(), u16::from_be_bytes(port.to_ne_bytes())))
    };
    format!("{} -> {}", addr("saddr", "sport"), addr("daddr", "dport"))
}

/// The `splice` object of `distributor stats --json`: the counters, and the
/// relay reasons that occurred.
fn print_splice_stats(bed: &Testbed) -> Result<()> {
    let stats = bed.distributor_stats()?;
    let splice = stats
        .get("splice")
        .and_then(Value::as_object)
        .context("distributor stats has no splice section")?;
    // serde_json sorts keys: print the known counters in the datapath's
    // order, then any others.
    let order = [
        "spliced-segments",
        "spliced-bytes",
        "acks-to-backend",
        "regions-spliced",
        "regions-done",
        "responses-relayed",
        "socket-segments-translated",
        "region-segments-dropped",
        "events-lost",
        "no-peer-flow",
    ];
    let rest = splice.keys().filter(|k| !order.contains(&k.as_str()));
    for name in order.iter().copied().chain(rest.map(String::as_str)) {
        if let Some(n) = splice.get(name).and_then(Value::as_u64) {
            println!("{name:<28} {n:>12}");
        }
    }
    let reasons = splice
        .get("relay-reasons")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                .map(|(name, n)| format!("{name} {n}"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    println!(
        "{:<28} {:>12}",
        "relay-reasons",
        if reasons.is_empty() {
            "none".to_owned()
        } else {
            reasons.join(", ")
        }
    );
    Ok(())
}

fn wait_records(bed: &Testbed, n: usize) -> Vec<Value> {
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
         \n  # the access log, one JSON object per request (path_taken: splice or relay)\
         \n  tail -f {log}\
         \n  # metrics, datapath and splice counters, tracked flows, the pinned maps\
         \n  nsenter --net={gw} -- curl -s http://127.0.0.1:{admin}/metrics\
         \n  nsenter --net={gw} -- {bin} stats --pin-dir {pin_dir}\
         \n  nsenter --net={gw} -- {bin} flows --pin-dir {pin_dir}\
         \n  bpftool map dump pinned {pin_dir}/FLOWS_C\
         \n  bpftool map dump pinned {pin_dir}/FLOWS_S\n",
        cli = cli.display(),
        gw = gw.display(),
        url = bed.vip_url("/obj/1048576"),
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

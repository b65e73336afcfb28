//! End-to-end fault tests of the TC splice datapath (`mode = "tc"`): peers
//! that go away in the middle of a spliced response, pooled backend
//! connections that die while idle, a backend that sends more than the
//! length it announced, full flow maps, and the control plane stopping
//! while it splices. Every body a client receives is checked against the
//! object byte for byte (a prefix when the response was cut), and the flow
//! maps (`distributor flows --json` and `bpftool`) against the connections
//! still open.
//!
//! Besides nginx, some tests run their own small HTTP server in a backend
//! namespace ([`TestServer`]) to misbehave on cue.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use distributor_common::flow::{self, Arm, BackendFlow, ClientFlow, FlowKey};
use distributor_tests::{
    Backend, Daemon, Netns, Request, Testbed, TestbedConfig, VIP, flow_rows, pinned_map_id, poll,
    program_ids_using_map, programs_using_map, splice_counter,
};
use serde_json::Value;

// ---- testbed and configuration --------------------------------------------

fn testbed(backends: usize, sizes: Vec<usize>, directives: &[(&str, &str)]) -> Testbed {
    Testbed::for_test(&TestbedConfig {
        backends,
        object_sizes: sizes,
        backend_directives: directives
            .iter()
            .map(|(b, d)| ((*b).to_owned(), (*d).to_owned()))
            .collect(),
    })
}

/// `addr:port` of an nginx backend.
fn server_of(b: &Backend) -> String {
    format!("{}:{}", b.addr, b.port)
}

/// One round-robin pool `all` of `servers` (`addr:port`), then `extra`
/// (more TOML tables).
fn one_pool(servers: &[String], extra: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ address = \"{s}\" }}"))
        .collect();
    format!(
        "default_pool = \"all\"\n\n[[pools]]\nname = \"all\"\npolicy = \"round-robin\"\n\
         servers = [{}]\n\n{extra}\n",
        list.join(", ")
    )
}

/// Every nginx backend of the testbed in one round-robin pool.
fn all_backends(bed: &Testbed) -> String {
    let servers: Vec<String> = bed.backends.iter().map(server_of).collect();
    one_pool(&servers, "")
}

// ---- objects and responses ------------------------------------------------

/// The bytes of nginx backend `b`'s object of `size` bytes.
fn object(b: &Backend, size: usize) -> Vec<u8> {
    std::fs::read(b.dir.join("www/obj").join(size.to_string())).expect("object file")
}

/// A response head: status line, header names lower-cased.
#[derive(Debug, Clone, Default)]
struct Head {
    status: u16,
    headers: BTreeMap<String, String>,
}

impl Head {
    fn parse(text: &str) -> Self {
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Self { status, headers }
    }

    fn content_length(&self) -> usize {
        self.headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .expect("a Content-Length")
    }

    fn backend(&self) -> &str {
        self.headers.get("x-backend").map_or("", String::as_str)
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Asserts that `body` is the first `body.len()` bytes of `object`.
fn assert_prefix(what: &str, body: &[u8], object: &[u8]) {
    assert!(
        body.len() <= object.len(),
        "{what}: {} bytes, more than the object's {}",
        body.len(),
        object.len()
    );
    if let Some(at) = body.iter().zip(object).position(|(a, b)| a != b) {
        panic!(
            "{what}: byte {at} of {} differs from the object (not a prefix)",
            body.len()
        );
    }
}

// ---- a raw client ----------------------------------------------------------

/// What a client does once its download is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Reads what is already there, then `close()`: a FIN.
    Close,
    /// `SO_LINGER` 0, then `close()`: a RST.
    Reset,
    /// Reads until the connection ends (or the whole body is in).
    ReadToEnd,
}

/// How a download ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client aborted it.
    Aborted,
    /// The whole body arrived.
    Complete,
    /// The connection ended cleanly (FIN) before the body did.
    Eof,
    /// The connection was reset.
    Reset,
    /// Nothing ended it within the client's bound.
    Stuck,
}

#[derive(Debug)]
struct Received {
    head: Head,
    body: Vec<u8>,
    end: End,
    ended_at: Instant,
}

/// One GET on its own connection from the client namespace, paused after
/// `trigger` body bytes until told what to do next.
struct Download {
    local: SocketAddrV4,
    go: mpsc::Sender<Then>,
    done: mpsc::Receiver<Received>,
    _thread: JoinHandle<()>,
}

/// Upper bound of any client read loop.
const CLIENT_BOUND: Duration = Duration::from_mins(2);

impl Download {
    /// Starts `GET target` and returns once `trigger` body bytes are in.
    /// `rcvbuf` caps the client's receive buffer (and so its window), so
    /// the response stays in flight while the client does not read.
    fn start(bed: &Testbed, target: &str, rcvbuf: Option<i32>, trigger: usize) -> Self {
        let request = format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n");
        let (ready_tx, ready_rx) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<Then>();
        let (done_tx, done) = mpsc::channel();
        let thread = bed
            .client
            .spawn_thread(move || {
                let mut s = TcpStream::connect((VIP, 80)).expect("connect to the virtual IP");
                if let Some(bytes) = rcvbuf {
                    set_int_opt(&s, libc::SO_RCVBUF, bytes);
                }
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                s.write_all(request.as_bytes()).expect("send request");
                let mut buf = Vec::new();
                let mut chunk = vec![0_u8; 64 * 1024];
                let deadline = Instant::now() + CLIENT_BOUND;
                let mut head: Option<(Head, usize)> = None;
                // Until `trigger` body bytes.
                loop {
                    assert!(Instant::now() < deadline, "download never got going");
                    match s.read(&mut chunk) {
                        Ok(0) => panic!("connection closed after {} bytes", buf.len()),
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        Err(e) if is_timeout(&e) => {}
                        Err(e) => panic!("read: {e}"),
                    }
                    if head.is_none()
                        && let Some(end) = head_end(&buf)
                    {
                        head = Some((Head::parse(&String::from_utf8_lossy(&buf[..end])), end));
                    }
                    if let Some((_, end)) = &head
                        && buf.len() - end >= trigger
                    {
                        break;
                    }
                }
                let (head, head_len) = head.expect("head");
                let SocketAddr::V4(local) = s.local_addr().expect("local address") else {
                    panic!("not IPv4");
                };
                ready_tx.send(local).expect("report progress");
                let then = go_rx.recv().unwrap_or(Then::Close);
                let end = match then {
                    Then::Close => {
                        // Nothing left unread, so close() sends a FIN, not
                        // a RST (unless more arrives in between). The
                        // receive buffer holds at most `rcvbuf` bytes:
                        // reading twice that drains it.
                        s.set_nonblocking(true).expect("nonblocking");
                        let mut drained = 0;
                        while let Ok(n) = s.read(&mut chunk) {
                            if n == 0 {
                                break;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            drained += n;
                            if drained >= 2 * rcvbuf.map_or(1 << 20, |b| b.unsigned_abs() as usize)
                            {
                                break;
                            }
                        }
                        End::Aborted
                    }
                    Then::Reset => {
                        let l = libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        };
                        set_opt(&s, libc::SO_LINGER, &l);
                        End::Aborted
                    }
                    Then::ReadToEnd => {
                        let want = head_len + head.content_length();
                        loop {
                            if buf.len() >= want {
                                break End::Complete;
                            }
                            if Instant::now() >= deadline {
                                break End::Stuck;
                            }
                            match s.read(&mut chunk) {
                                Ok(0) => break End::Eof,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                Err(e) if is_timeout(&e) => {}
                                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                                    break End::Reset;
                                }
                                Err(e) => panic!("read: {e}"),
                            }
                        }
                    }
                };
                let ended_at = Instant::now();
                drop(s);
                let _ = done_tx.send(Received {
                    head,
                    body: buf.split_off(head_len),
                    end,
                    ended_at,
                });
            })
            .expect("client thread");
        let local = ready_rx
            .recv_timeout(CLIENT_BOUND)
            .expect("the client thread died before its download got going");
        Self {
            local,
            go,
            done,
            _thread: thread,
        }
    }

    fn finish(self, then: Then) -> Received {
        self.go.send(then).expect("client thread gone");
        self.done
            .recv_timeout(CLIENT_BOUND + Duration::from_secs(5))
            .expect("the client thread died")
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn set_opt<T>(s: &impl std::os::fd::AsRawFd, name: libc::c_int, value: &T) {
    // SAFETY: `value` is a valid option value of its own size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            std::ptr::from_ref(value).cast(),
            libc::socklen_t::try_from(size_of::<T>()).expect("option size"),
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

fn set_int_opt(s: &impl std::os::fd::AsRawFd, name: libc::c_int, value: i32) {
    set_opt(s, name, &value);
}

/// A response as a [`Session`] got it: whole, or how the connection
/// ended, with the head and body bytes that had arrived.
type Got = Result<(Head, Vec<u8>), (End, Option<Head>, Vec<u8>)>;

enum Cmd {
    Get(String),
    /// `POST target` with a body of this many bytes.
    Post(String, usize),
    /// Nothing more may arrive: `Ok` if nothing did within 300 ms.
    Quiet,
}

impl Cmd {
    /// The request's bytes (`None`: nothing to send).
    fn request(&self) -> Option<Vec<u8>> {
        match self {
            Self::Get(target) => {
                Some(format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes())
            }
            Self::Post(target, len) => {
                let mut req = format!(
                    "POST {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {len}\r\n\r\n"
                )
                .into_bytes();
                req.resize(req.len() + len, b'x');
                Some(req)
            }
            Self::Quiet => None,
        }
    }
}

/// One keep-alive connection from the client namespace, driven request
/// by request: each request goes out once the response before it is
/// complete, so the test can act between two requests.
struct Session {
    cmd: mpsc::Sender<Cmd>,
    got: mpsc::Receiver<Got>,
    _thread: JoinHandle<()>,
}

impl Session {
    fn open(bed: &Testbed) -> Self {
        let (cmd, cmd_rx) = mpsc::channel::<Cmd>();
        let (got_tx, got) = mpsc::channel();
        let thread = bed
            .client
            .spawn_thread(move || {
                let mut s = TcpStream::connect((VIP, 80)).expect("connect to the virtual IP");
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                let mut buf: Vec<u8> = Vec::new();
                let mut chunk = vec![0_u8; 64 * 1024];
                let mut ended: Option<End> = None;
                while let Ok(cmd) = cmd_rx.recv() {
                    let reply = if let Some(req) = cmd.request() {
                        if ended.is_none() && s.write_all(&req).is_err() {
                            ended = Some(End::Reset);
                        }
                        read_response(&mut s, &mut buf, &mut chunk, &mut ended)
                    } else {
                        // Cmd::Quiet
                        std::thread::sleep(Duration::from_millis(300));
                        s.set_nonblocking(true).expect("nonblocking");
                        let extra = match s.read(&mut chunk) {
                            Ok(n) if n > 0 => chunk[..n].to_vec(),
                            _ => Vec::new(),
                        };
                        s.set_nonblocking(false).expect("blocking");
                        buf.extend_from_slice(&extra);
                        if buf.is_empty() {
                            Ok((Head::default(), Vec::new()))
                        } else {
                            Err((End::Complete, None, std::mem::take(&mut buf)))
                        }
                    };
                    if got_tx.send(reply).is_err() {
                        return;
                    }
                }
            })
            .expect("client thread");
        Self {
            cmd,
            got,
            _thread: thread,
        }
    }

    /// `GET target` on this connection.
    fn get(&self, target: &str) -> Got {
        self.cmd
            .send(Cmd::Get(target.to_owned()))
            .expect("client thread gone");
        self.got
            .recv_timeout(CLIENT_BOUND + Duration::from_secs(5))
            .expect("the client thread died")
    }

    /// `POST target` with a body of `len` bytes on this connection.
    fn post(&self, target: &str, len: usize) -> Got {
        self.cmd
            .send(Cmd::Post(target.to_owned(), len))
            .expect("client thread gone");
        self.got
            .recv_timeout(CLIENT_BOUND + Duration::from_secs(5))
            .expect("the client thread died")
    }

    /// Asserts that no byte arrived after the last response.
    fn assert_quiet(&self) {
        self.cmd.send(Cmd::Quiet).expect("client thread gone");
        let r = self
            .got
            .recv_timeout(Duration::from_secs(10))
            .expect("the client thread died");
        if let Err((_, _, extra)) = r {
            panic!(
                "{} bytes after the last response: {:?}",
                extra.len(),
                String::from_utf8_lossy(&extra[..extra.len().min(200)])
            );
        }
    }
}

/// Reads one response (its head gives its length) into `buf` and takes
/// it out; or says how the connection ended.
fn read_response(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    ended: &mut Option<End>,
) -> Got {
    let deadline = Instant::now() + CLIENT_BOUND;
    loop {
        if let Some(end) = head_end(buf) {
            let head = Head::parse(&String::from_utf8_lossy(&buf[..end]));
            let total = end + head.content_length();
            if buf.len() >= total {
                let body = buf[end..total].to_vec();
                buf.drain(..total);
                return Ok((head, body));
            }
        }
        if let Some(end) = *ended {
            let head = head_end(buf).map(|e| Head::parse(&String::from_utf8_lossy(&buf[..e])));
            let body = head_end(buf).map_or_else(Vec::new, |e| buf[e..].to_vec());
            buf.clear();
            return Err((end, head, body));
        }
        if Instant::now() >= deadline {
            *ended = Some(End::Stuck);
            continue;
        }
        match s.read(chunk) {
            Ok(0) => *ended = Some(End::Eof),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(_) => *ended = Some(End::Reset),
        }
    }
}

// ---- a misbehaving HTTP server ---------------------------------------------

/// What [`TestServer`] does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// `200`, `Content-Length`, the body.
    Normal,
    /// The response, and [`EXCESS`] right behind it in the same write.
    ExcessSameWrite,
    /// A response that fills exactly three segments, its length chosen
    /// for that (the path's is ignored), then [`EXCESS`] in the same write:
    /// it travels in a fourth segment of its own, right behind.
    ExcessAligned,
    /// Closes the connection without answering.
    CloseUnanswered,
    /// The head and the first `n` body bytes, slowly, then a RST.
    ResetAfter(usize),
}

/// Bytes a broken backend sends past its response: they look like a
/// response of their own, so a client that gets them as its next
/// response shows it.
const EXCESS: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Backend: excess\r\n\r\nEVIL!";

/// The body [`TestServer`] sends for `/n/<len>`: `len` bytes, different
/// for every length.
fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ len as u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

/// A small HTTP/1.1 server on a thread in a backend namespace. It answers
/// `GET /n/<len>` with [`pattern`]`(len)`, as `plan(k, len)` says for the
/// `k`th request (1-based) on each connection. Stops when dropped.
struct TestServer {
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
    /// When the server last reset a connection ([`Reply::ResetAfter`]).
    reset_at: Arc<Mutex<Option<Instant>>>,
    thread: Option<JoinHandle<()>>,
}

type Plan = Arc<dyn Fn(u64, usize) -> Reply + Send + Sync>;

impl TestServer {
    fn start(
        ns: &Netns,
        addr: SocketAddrV4,
        plan: impl Fn(u64, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let reset_at = Arc::new(Mutex::new(None));
        let plan: Plan = Arc::new(plan);
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop2, conns2, reset2) = (
            Arc::clone(&stop),
            Arc::clone(&connections),
            Arc::clone(&reset_at),
        );
        let thread = ns
            .spawn_thread(move || {
                let listener = TcpListener::bind(addr).expect("test server bind");
                listener.set_nonblocking(true).expect("nonblocking");
                let _ = ready_tx.send(());
                let deadline = Instant::now() + Duration::from_mins(5);
                let mut workers = Vec::new();
                while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((s, _)) => {
                            conns2.fetch_add(1, Ordering::Relaxed);
                            let conn = Conn {
                                plan: Arc::clone(&plan),
                                stop: Arc::clone(&stop2),
                                reset_at: Arc::clone(&reset2),
                            };
                            workers.push(std::thread::spawn(move || conn.serve(s)));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
                for w in workers {
                    let _ = w.join();
                }
            })
            .expect("server thread");
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("test server did not start");
        Self {
            addr,
            stop,
            connections,
            reset_at,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    fn reset_at(&self) -> Option<Instant> {
        *self
            .reset_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn response_head(len: usize) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nX-Backend: srv\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
}

/// The payload size of the segments `s` sends (`TCP_MAXSEG`).
fn max_segment(s: &TcpStream) -> usize {
    let mut v: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>()).expect("size");
    // SAFETY: an int option into an int of its size.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&raw mut v).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_MAXSEG: {}", std::io::Error::last_os_error());
    usize::try_from(v).expect("segment size")
}

/// What one connection of [`TestServer`] shares with the server.
struct Conn {
    plan: Plan,
    stop: Arc<AtomicBool>,
    reset_at: Arc<Mutex<Option<Instant>>>,
}

impl Conn {
    fn serve(&self, mut s: TcpStream) {
        let (plan, stop) = (&self.plan, &self.stop);
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf = Vec::new();
        let mut chunk = [0_u8; 4096];
        let mut k = 0;
        let deadline = Instant::now() + Duration::from_mins(5);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Some(end) = head_end(&buf) else {
                match s.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => return,
                }
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            k += 1;
            let mut len: usize = head
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.strip_prefix("/n/"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let reply = plan(k, len);
            if reply == Reply::ExcessAligned {
                let total = 3 * max_segment(&s);
                len = total - response_head(total).len();
                while response_head(len).len() + len != total {
                    len -= 1;
                }
            }
            let mut response = response_head(len).into_bytes();
            let body = pattern(len);
            let ok = match reply {
                Reply::Normal => {
                    response.extend_from_slice(&body);
                    s.write_all(&response).is_ok()
                }
                Reply::ExcessSameWrite | Reply::ExcessAligned => {
                    response.extend_from_slice(&body);
                    response.extend_from_slice(EXCESS);
                    s.write_all(&response).is_ok()
                }
                Reply::CloseUnanswered => false,
                Reply::ResetAfter(n) => {
                    let ok = s.write_all(&response).is_ok()
                        && body[..n.min(len)].chunks(16 * 1024).all(|c| {
                            std::thread::sleep(Duration::from_millis(10));
                            s.write_all(c).is_ok()
                        });
                    if ok {
                        // Let the bytes leave before the RST overtakes them.
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    let l = libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    };
                    set_opt(&s, libc::SO_LINGER, &l);
                    drop(s);
                    *self
                        .reset_at
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
                    return;
                }
            };
            if !ok {
                return;
            }
        }
    }
}

// ---- shared steps -------------------------------------------------------------

/// How long a closed or reset peer may take to be noticed. The gateway's
/// socket hears of it at once (FIN or RST); the stall timer
/// (`response_body_idle_ms`, 30 s by default, which gives up only after
/// two idle periods) is not what a dead peer should wait for.
const PEER_GONE_GUARD: Duration = Duration::from_secs(10);

/// An object large enough to stay in flight while its client does not read.
const BIG: usize = 16 << 20;

/// SIGKILLs the nginx processes of a backend namespace and waits until
/// they are gone.
fn kill_nginx(ns: &Netns) {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", &ns.name])
        .output()
        .expect("ip netns pids");
    let mut killed = 0;
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "nginx"
            && let Ok(pid) = pid.parse::<i32>()
        {
            // SAFETY: plain kill(2) of a process in the test's own namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed += 1;
        }
    }
    assert!(killed > 0, "no nginx in {}", ns.name);
    // Until the processes are gone, their sockets are not closed.
    let gone = poll(Duration::from_secs(5), || {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", &ns.name])
            .output()
            .ok()?;
        let left = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "nginx")
            });
        (!left).then_some(())
    });
    assert!(gone.is_some(), "nginx in {} survived SIGKILL", ns.name);
}

/// Starts nginx again on backend `b` with its own configuration and waits
/// until it answers. The returned guard stops it.
fn restart_nginx(b: &Backend) -> Daemon {
    let mut cmd = b.ns.command("nginx");
    cmd.arg("-c")
        .arg(b.dir.join("nginx.conf"))
        .arg("-p")
        .arg(&b.dir);
    let mut nginx = Daemon::spawn(
        &format!("nginx {} (restarted)", b.name),
        cmd,
        b.dir.join("logs/nginx-restarted.out"),
    )
    .expect("restart nginx");
    let url = format!("{}/health", b.url());
    nginx
        .wait_until(Duration::from_secs(10), || b.ns.http_ok(&url))
        .expect("restarted nginx answers");
    nginx
}

/// Fetches each object of `sizes` once per backend, twice over, on two
/// new client connections (round robin reaches every backend), and checks
/// each body and that every response was spliced.
fn fresh_requests_are_spliced(bed: &Testbed, sizes: &[usize]) {
    let before = bed.access_log().expect("access log").len();
    let mut n = 0;
    for _ in 0..2 {
        let requests: Vec<Request> = sizes
            .iter()
            .flat_map(|s| std::iter::repeat_n(*s, bed.backends.len()))
            .map(|s| Request::get(bed.vip_url(&format!("/obj/{s}"))))
            .collect();
        let responses = bed.curl_requests(&requests).expect("curl");
        for r in &responses {
            assert_eq!(r.status, 200, "{}: {r:?}", r.url);
            let b = bed.backend(r.backend()).expect("a known backend");
            let size: usize = r
                .url
                .rsplit('/')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("size");
            let obj = b.object(size).expect("object");
            assert_eq!(r.body.len(), size, "{} from {}", r.url, b.name);
            assert_eq!(
                r.sha256(),
                obj.sha256,
                "{} from {}: body differs",
                r.url,
                b.name
            );
        }
        n += responses.len();
    }
    let log = bed.access_log_at_least(before + n).expect("access log");
    assert_eq!(log.len(), before + n, "{log:#?}");
    for rec in &log[before..] {
        assert_eq!(rec["path_taken"], "splice", "{rec}");
        assert_eq!(rec["error"], Value::Null, "{rec}");
    }
}

/// The entries of `flows` that belong to the given client connections or
/// backend connections (gateway side), and every arm.
fn leftovers(flows: &Value, clients: &BTreeSet<String>, backends: &BTreeSet<String>) -> Vec<Value> {
    let mut left: Vec<Value> = flow_rows(flows, "clients")
        .iter()
        .filter(|r| r["client"].as_str().is_some_and(|c| clients.contains(c)))
        .cloned()
        .collect();
    left.extend(
        flow_rows(flows, "backends")
            .iter()
            .filter(|r| r["gateway"].as_str().is_some_and(|g| backends.contains(g)))
            .cloned(),
    );
    left.extend(flow_rows(flows, "arms").iter().cloned());
    left
}

/// Checks that the client connection from `local` is splicing a response
/// (its `FLOWS_C` row), and returns the gateway side of the region's
/// backend connection (the key of its `FLOWS_S` row).
fn splicing_row(flows: &Value, local: SocketAddrV4) -> String {
    let row = flow_rows(flows, "clients")
        .iter()
        .find(|r| r["client"] == local.to_string())
        .unwrap_or_else(|| panic!("{local} is not in FLOWS_C: {flows:#}"));
    assert_eq!(row["state"], "splicing", "{row:#}");
    row["backend_gateway"]
        .as_str()
        .expect("the region's backend connection")
        .to_owned()
}

/// Access log records of the given client connections.
fn records_of(bed: &Testbed, clients: &BTreeSet<String>, n: usize) -> Vec<Value> {
    poll(Duration::from_secs(5), || {
        let recs: Vec<Value> = bed
            .access_log()
            .expect("access log")
            .into_iter()
            .filter(|r| r["client"].as_str().is_some_and(|c| clients.contains(c)))
            .collect();
        (recs.len() >= n).then_some(recs)
    })
    .unwrap_or_else(|| {
        panic!(
            "fewer than {n} records for {clients:?}: {:#?}",
            bed.access_log()
        )
    })
}

// ---- 4 (a), (b): the client goes away mid-response ----------------------------

/// Six clients each read part of a spliced 16 MiB object, then go away as
/// `then` says. Several connections because the clients' initial sequence
/// numbers are random, and some mistakes show only for half of them.
fn client_goes_away_mid_response(then: Then) {
    let bed = testbed(2, vec![1024, 1 << 20, BIG], &[]);
    let _gw = bed
        .start_distributor(&bed.proxy_config("tc", &all_backends(&bed)))
        .expect("start distributor");
    let downloads: Vec<Download> = (0..6)
        .map(|_| Download::start(&bed, &format!("/obj/{BIG}"), Some(256 << 10), 512 << 10))
        .collect();
    let f = bed.flows().expect("distributor flows");
    let clients: BTreeSet<String> = downloads.iter().map(|d| d.local.to_string()).collect();
    let backends: BTreeSet<String> = downloads
        .iter()
        .map(|d| splicing_row(&f, d.local))
        .collect();
    assert_eq!(
        backends.len(),
        downloads.len(),
        "one backend connection each: {f:#}"
    );
    let stats = bed.distributor_stats().expect("stats");
    assert_eq!(
        splice_counter(&stats, "regions-done"),
        0,
        "{:#}",
        stats["splice"]
    );

    let received: Vec<Received> = downloads.into_iter().map(|d| d.finish(then)).collect();
    for r in &received {
        assert_eq!(r.head.status, 200);
        assert_eq!(r.head.content_length(), BIG);
        let b = bed.backend(r.head.backend()).expect("a known backend");
        assert!(
            r.body.len() < BIG,
            "the whole object arrived before the client went away"
        );
        assert_prefix(&format!("body from {}", b.name), &r.body, &object(b, BIG));
    }

    let cleaned = poll(PEER_GONE_GUARD, || {
        leftovers(
            &bed.flows().expect("distributor flows"),
            &clients,
            &backends,
        )
        .is_empty()
        .then_some(())
    });
    let stats = bed.distributor_stats().expect("stats");
    assert_eq!(
        splice_counter(&stats, "regions-done"),
        0,
        "a response the client never received counted as acknowledged in full \
         (its backend connection then goes back to the pool mid-response): {:#}\nflows {:#}",
        stats["splice"],
        bed.flows().expect("distributor flows")
    );
    assert!(
        cleaned.is_some(),
        "{PEER_GONE_GUARD:?} after the clients went away, the flow maps still hold their \
         entries: {:#?}",
        leftovers(
            &bed.flows().expect("distributor flows"),
            &clients,
            &backends
        )
    );
    for rec in records_of(&bed, &clients, clients.len()) {
        assert_eq!(rec["path_taken"], "splice", "{rec}");
        assert!(
            rec["error"].is_string(),
            "an aborted response logged as complete: {rec}"
        );
    }
    fresh_requests_are_spliced(&bed, &[1024, 1 << 20]);
    bed.assert_flow_baseline();
}

#[test]
fn client_closing_mid_response_leaves_no_flow_and_new_connections_work() {
    client_goes_away_mid_response(Then::Close);
}

#[test]
fn client_resetting_mid_response_leaves_no_flow_and_new_connections_work() {
    client_goes_away_mid_response(Then::Reset);
}

// ---- 4 (c): the backend goes away mid-response --------------------------------

/// curl's exit code and `size_download`.
fn curl_result(child: std::process::Child) -> (i32, usize) {
    let out = child.wait_with_output().expect("curl");
    let size = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("size_download");
    (out.status.code().unwrap_or(-1), size)
}

/// curl fetching `url` into `out`, in the background.
fn curl_spawn(bed: &Testbed, url: &str, out: &Path) -> std::process::Child {
    bed.client
        .command("curl")
        .args([
            "-s",
            "--http1.1",
            "--max-time",
            "100",
            "-w",
            "%{size_download}",
            "-o",
        ])
        .arg(out)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl")
}

#[test]
fn backend_killed_mid_response_closes_the_client_short_of_the_length() {
    const SIZE: usize = 8 << 20;
    let bed = testbed(1, vec![1024, SIZE], &[("b1", "limit_rate 512k;")]);
    let b1 = &bed.backends[0];
    let _gw = bed
        .start_distributor(&bed.proxy_config("tc", &all_backends(&bed)))
        .expect("start distributor");
    let object = object(b1, SIZE);
    let url = bed.vip_url(&format!("/obj/{SIZE}"));

    // Two clients on the slow backend: a raw one and curl.
    let download = Download::start(&bed, &format!("/obj/{SIZE}"), None, 128 << 10);
    let curl_out = bed.dir.join("curl.body");
    let curl = curl_spawn(&bed, &url, &curl_out);
    let f = poll(Duration::from_secs(10), || {
        let f = bed.flows().expect("distributor flows");
        let n = flow_rows(&f, "clients")
            .iter()
            .filter(|r| r["state"] == "splicing")
            .count();
        (n == 2).then_some(f)
    })
    .expect("both responses splicing");
    let clients: BTreeSet<String> = flow_rows(&f, "clients")
        .iter()
        .filter_map(|r| r["client"].as_str().map(str::to_owned))
        .collect();
    let backends: BTreeSet<String> = flow_rows(&f, "clients")
        .iter()
        .filter_map(|r| r["backend_gateway"].as_str().map(str::to_owned))
        .collect();
    splicing_row(&f, download.local);

    kill_nginx(&b1.ns);
    let killed_at = Instant::now();
    let r = download.finish(Then::ReadToEnd);
    let (code, size) = curl_result(curl);

    assert!(
        matches!(r.end, End::Eof | End::Reset),
        "the client connection did not end: {:?} after {} bytes",
        r.end,
        r.body.len()
    );
    assert!(r.body.len() < SIZE, "{} bytes", r.body.len());
    assert_prefix("raw client", &r.body, &object);
    let curl_body = std::fs::read(&curl_out).unwrap_or_default();
    assert_ne!(
        code, 0,
        "curl took a cut response as complete ({size} bytes)"
    );
    assert!(
        size < SIZE && curl_body.len() == size,
        "curl: {size} bytes, file {}",
        curl_body.len()
    );
    assert_prefix("curl", &curl_body, &object);
    let took = r.ended_at.saturating_duration_since(killed_at);
    assert!(
        took <= PEER_GONE_GUARD,
        "the client connection ended {took:?} after the backend died"
    );

    let cleaned = poll(PEER_GONE_GUARD, || {
        leftovers(
            &bed.flows().expect("distributor flows"),
            &clients,
            &backends,
        )
        .is_empty()
        .then_some(())
    });
    assert!(
        cleaned.is_some(),
        "{:#?}",
        leftovers(
            &bed.flows().expect("distributor flows"),
            &clients,
            &backends
        )
    );
    for rec in records_of(&bed, &clients, 2) {
        assert_eq!(rec["path_taken"], "splice", "{rec}");
        assert!(
            rec["error"].is_string(),
            "a cut response logged as complete: {rec}"
        );
    }
    let stats = bed.distributor_stats().expect("stats");
    assert_eq!(
        splice_counter(&stats, "regions-done"),
        0,
        "{:#}",
        stats["splice"]
    );

    let _nginx = restart_nginx(b1);
    fresh_requests_are_spliced(&bed, &[1024]);
    bed.assert_flow_baseline();
}

/// A testbed whose one backend is a [`TestServer`] answering `/n/<len>`
/// normally, except `/n/<trigger>`: [`Reply::ResetAfter`]`(after)`; and
/// distributor (tc) balancing to it. Bind in this order (the guards drop
/// in reverse: distributor, the server, the testbed).
fn resetting_server(trigger: usize, after: usize) -> (Testbed, TestServer, Daemon) {
    let bed = testbed(1, vec![1024], &[]);
    let addr = SocketAddrV4::new(bed.backends[0].addr, 8080);
    let srv = TestServer::start(&bed.backends[0].ns, addr, move |_, len| {
        if len == trigger {
            Reply::ResetAfter(after)
        } else {
            Reply::Normal
        }
    });
    let gw = bed
        .start_distributor(&bed.proxy_config("tc", &one_pool(&[srv.addr.to_string()], "")))
        .expect("start distributor");
    (bed, srv, gw)
}

#[test]
fn backend_resetting_mid_response_closes_the_client_short_of_the_length() {
    const SIZE: usize = 8 << 20;
    const CUT: usize = 1 << 20;
    let (bed, srv, _gw) = resetting_server(SIZE, CUT);

    let download = Download::start(&bed, &format!("/n/{SIZE}"), None, 64 << 10);
    let f = bed.flows().expect("distributor flows");
    let backends = BTreeSet::from([splicing_row(&f, download.local)]);
    let clients = BTreeSet::from([download.local.to_string()]);
    let r = download.finish(Then::ReadToEnd);
    let reset_at = srv.reset_at().expect("the server reset its connection");

    assert!(
        matches!(r.end, End::Eof | End::Reset),
        "the client connection did not end: {:?} after {} bytes",
        r.end,
        r.body.len()
    );
    assert_eq!(r.head.content_length(), SIZE);
    assert!(r.body.len() <= CUT, "{} bytes", r.body.len());
    assert_prefix("client", &r.body, &pattern(SIZE));
    let took = r.ended_at.saturating_duration_since(reset_at);
    assert!(
        took <= PEER_GONE_GUARD,
        "the client connection ended {took:?} after the backend's RST"
    );
    let cleaned = poll(PEER_GONE_GUARD, || {
        leftovers(
            &bed.flows().expect("distributor flows"),
            &clients,
            &backends,
        )
        .is_empty()
        .then_some(())
    });
    assert!(
        cleaned.is_some(),
        "{:#?}",
        leftovers(
            &bed.flows().expect("distributor flows"),
            &clients,
            &backends
        )
    );
    let rec = &records_of(&bed, &clients, 1)[0];
    assert_eq!(rec["path_taken"], "splice", "{rec}");
    assert!(
        rec["error"].is_string(),
        "a cut response logged as complete: {rec}"
    );

    // The next client is served (and spliced) on a new backend connection.
    let s = Session::open(&bed);
    for len in [1000, 300_000] {
        let (head, body) = s
            .get(&format!("/n/{len}"))
            .unwrap_or_else(|(end, _, b)| panic!("/n/{len}: {end:?} after {} bytes", b.len()));
        assert_eq!(head.backend(), "srv");
        assert!(body == pattern(len), "/n/{len}: body differs");
    }
    s.assert_quiet();
    drop(s);
    bed.assert_flow_baseline();
}

// ---- a backend answers before it read the request ------------------------------

/// A backend that answers a POST from its head alone, without reading the
/// body, then resets: distributor's write of the body fails after the
/// datapath spliced the whole response to the client. The client gets
/// that response and nothing behind it (no error response, no second
/// answer from a retry on another backend connection), and its
/// connection goes on. Once on a fresh backend connection, once on a
/// pooled one (a failed write to a pooled connection is otherwise retried
/// on a fresh one: the idle race).
#[test]
fn backend_answering_before_it_read_the_body_then_resetting_adds_nothing_to_the_response() {
    // Far more than the backend's receive window and the gateway's send
    // buffer hold: the write is still going on when the RST comes.
    const BODY: usize = 4 << 20;
    const EARLY: usize = 2000;
    let (bed, srv, _gw) = resetting_server(EARLY, EARLY);

    for pooled in [false, true] {
        let s = Session::open(&bed);
        if pooled {
            let (_, body) = s
                .get("/n/1000")
                .unwrap_or_else(|(end, _, b)| panic!("/n/1000: {end:?} after {} bytes", b.len()));
            assert!(body == pattern(1000), "/n/1000: body differs");
        }
        let (head, body) = s
            .post(&format!("/n/{EARLY}"), BODY)
            .unwrap_or_else(|(end, _, b)| panic!("POST: {end:?} after {} bytes", b.len()));
        assert_eq!(head.backend(), "srv");
        assert!(body == pattern(EARLY), "POST: body differs");
        // The next response on the connection is the next request's.
        let (head, body) = s.get("/n/3000").unwrap_or_else(|(end, h, b)| {
            panic!(
                "after the POST: {end:?} after {} bytes, head {h:?}: {:?}",
                b.len(),
                String::from_utf8_lossy(&b[..b.len().min(200)])
            )
        });
        assert_eq!(head.status, 200, "pooled {pooled}: {head:?}");
        assert!(
            body == pattern(3000),
            "pooled {pooled}: GET after the POST: body differs"
        );
        s.assert_quiet();
        drop(s);
        assert!(srv.reset_at().is_some(), "the server never reset");
    }
    // One record per request (no retry answered a POST twice); each POST
    // spliced, whole.
    let log = bed.access_log_at_least(5).expect("access log");
    assert_eq!(log.len(), 5, "{log:#?}");
    let posts: Vec<&Value> = log.iter().filter(|r| r["method"] == "POST").collect();
    assert_eq!(posts.len(), 2, "{log:#?}");
    for post in posts {
        assert_eq!(post["path_taken"], "splice", "{post}");
        assert_eq!(post["status"], 200, "{post}");
        assert!(post["error"].is_null(), "{post}");
        assert!(post["t_first_byte_ms"].is_number(), "{post}");
    }
    bed.assert_flow_baseline();
}

// ---- 4 (d): a pooled backend connection dies while idle ------------------------

/// Gets `targets` on one session and checks each body against nginx
/// backend `b`'s objects.
fn session_gets_objects(s: &Session, b: &Backend, sizes: &[usize]) {
    for &size in sizes {
        let (head, body) = s
            .get(&format!("/obj/{size}"))
            .unwrap_or_else(|(end, _, got)| {
                panic!("/obj/{size}: {end:?} after {} bytes", got.len())
            });
        assert_eq!(head.status, 200, "/obj/{size}");
        assert_eq!(head.backend(), b.name, "/obj/{size}");
        assert!(body == object(b, size), "/obj/{size}: body differs");
    }
}

#[test]
fn pooled_connection_the_backend_closed_while_idle_is_replaced() {
    let sizes = [1 << 20, 1024, 1 << 20];
    let bed = testbed(1, vec![1024, 1 << 20], &[("b1", "keepalive_timeout 1s;")]);
    let b1 = &bed.backends[0];
    let _gw = bed
        .start_distributor(&bed.proxy_config("tc", &all_backends(&bed)))
        .expect("start distributor");
    let s = Session::open(&bed);
    for size in sizes {
        session_gets_objects(&s, b1, &[size]);
        // nginx closes the pooled connection meanwhile.
        std::thread::sleep(Duration::from_millis(2500));
    }
    s.assert_quiet();
    let log = bed.access_log_at_least(sizes.len()).expect("access log");
    assert_eq!(log.len(), sizes.len(), "{log:#?}");
    for rec in &log {
        assert_eq!(rec["path_taken"], "splice", "{rec}");
        assert_eq!(
            rec["reused"], false,
            "a connection nginx had closed was used: {rec}"
        );
        assert_eq!(rec["error"], Value::Null, "{rec}");
    }
    // Each closed connection's entry went with it.
    drop(s);
    bed.assert_flow_baseline();
}

#[test]
fn backend_restarted_between_requests_is_reconnected() {
    let bed = testbed(1, vec![1024, 1 << 20], &[]);
    let b1 = &bed.backends[0];
    let _gw = bed
        .start_distributor(&bed.proxy_config("tc", &all_backends(&bed)))
        .expect("start distributor");
    let s = Session::open(&bed);
    session_gets_objects(&s, b1, &[1 << 20, 1024]);
    let before = bed.flows().expect("distributor flows");
    assert_eq!(flow_rows(&before, "backends").len(), 1, "{before:#}");

    kill_nginx(&b1.ns);
    let _nginx = restart_nginx(b1);
    session_gets_objects(&s, b1, &[1024, 1 << 20, 1024]);
    s.assert_quiet();
    let log = bed.access_log_at_least(5).expect("access log");
    for rec in &log {
        assert_eq!(rec["path_taken"], "splice", "{rec}");
        assert_eq!(rec["error"], Value::Null, "{rec}");
    }
    assert_eq!(
        log[2]["reused"], false,
        "the dead connection was used: {:#}",
        log[2]
    );
    let after = bed.flows().expect("distributor flows");
    assert_ne!(
        flow_rows(&after, "backends")[0]["gateway"],
        flow_rows(&before, "backends")[0]["gateway"],
        "the dead connection's entry is still there: {after:#}"
    );
    drop(s);
    bed.assert_flow_baseline();
}

#[test]
fn backend_closing_as_the_request_arrives_is_retried_on_a_fresh_connection() {
    let bed = testbed(1, vec![1024], &[]);
    let addr = SocketAddrV4::new(bed.backends[0].addr, 8080);
    // Every connection answers its first request and closes on the second:
    // the pooled connection passes the idle check and dies under the
    // request.
    let srv = TestServer::start(&bed.backends[0].ns, addr, |k, _| {
        if k == 1 {
            Reply::Normal
        } else {
            Reply::CloseUnanswered
        }
    });
    let _gw = bed
        .start_distributor(&bed.proxy_config("tc", &one_pool(&[srv.addr.to_string()], "")))
        .expect("start distributor");
    let lens = [1000, 70_000, 1000, 300_000];
    let s = Session::open(&bed);
    for len in lens {
        let (head, body) = s
            .get(&format!("/n/{len}"))
            .unwrap_or_else(|(end, _, b)| panic!("/n/{len}: {end:?} after {} bytes", b.len()));
        assert_eq!(head.backend(), "srv");
        assert!(body == pattern(len), "/n/{len}: body differs");
    }
    s.assert_quiet();
    assert_eq!(
        srv.connections(),
        lens.len() as u64,
        "one backend connection per request"
    );
    let log = bed.access_log_at_least(lens.len()).expect("access log");
    assert_eq!(log.len(), lens.len(), "{log:#?}");
    for (i, rec) in log.iter().enumerate() {
        assert_eq!(rec["path_taken"], "splice", "{rec}");
        assert_eq!(rec["error"], Value::Null, "{rec}");
        assert_eq!(rec["retried"], i > 0, "{rec}");
    }
    drop(s);
    bed.assert_flow_baseline();
}

// ---- 4 (e): the backend sends more than its Content-Length ---------------------

#[test]
fn excess_bytes_in_the_first_segment_send_the_response_to_the_relay() {
    let bed = testbed(1, vec![1024], &[]);
    let addr = SocketAddrV4::new(bed.backends[0].addr, 8080);
    let srv = TestServer::start(&bed.backends[0].ns, addr, |_, _| Reply::ExcessSameWrite);
    let _gw = bed
        .start_distributor(&bed.proxy_config("tc", &one_pool(&[srv.addr.to_string()], "")))
        .expect("start distributor");
    let lens = [1000, 3000, 1000];
    let s = Session::open(&bed);
    for len in lens {
        let (head, body) = s
            .get(&format!("/n/{len}"))
            .unwrap_or_else(|(end, _, b)| panic!("/n/{len}: {end:?} after {} bytes", b.len()));
        assert_eq!(head.backend(), "srv", "the excess bytes came as a response");
        assert!(body == pattern(len), "/n/{len}: body differs");
    }
    s.assert_quiet();
    drop(s);
    // A connection that broke its framing is never used again.
    assert_eq!(srv.connections(), lens.len() as u64);
    let log = bed.access_log_at_least(lens.len()).expect("access log");
    for rec in &log {
        assert_eq!(rec["path_taken"], "relay", "{rec}");
        assert_eq!(rec["path_reason"], "relay-excess-data", "{rec}");
    }
    bed.assert_flow_baseline();
}

#[test]
fn excess_bytes_behind_a_spliced_response_never_become_the_next_response() {
    let bed = testbed(1, vec![1024], &[]);
    let ns = &bed.backends[0].ns;
    // Segments leave the backend as it writes them (no TSO/GSO), so the
    // excess travels in a segment of its own right behind the response
    // and reaches the gateway before the client's ACK does.
    ns.run("ethtool", &["-K", "eth0", "tso", "off", "gso", "off"])
        .expect("ethtool");
    let addr = SocketAddrV4::new(bed.backends[0].addr, 8080);
    let srv = TestServer::start(ns, addr, |k, _| {
        if k == 1 {
            Reply::ExcessAligned
        } else {
            Reply::Normal
        }
    });
    let _gw = bed
        .start_distributor(&bed.proxy_config("tc", &one_pool(&[srv.addr.to_string()], "")))
        .expect("start distributor");
    // Whether the excess segment overtakes the client's last ACK is up to
    // the scheduler (it does nearly always): a few sessions, until the
    // datapath has seen it behind a region in flight.
    let mut dropped = 0;
    for _ in 0..5 {
        excess_session(&bed);
        let stats = bed.distributor_stats().expect("stats");
        dropped = splice_counter(&stats, "region-segments-dropped");
        if dropped > 0 {
            break;
        }
    }
    assert!(
        dropped >= 1,
        "in five sessions the excess segment never reached the gateway while its region \
         was in flight: {:#}",
        bed.distributor_stats().expect("stats")["splice"]
    );
    bed.assert_flow_baseline();
}

/// Four requests on one connection to [`TestServer`] whose first response
/// on every backend connection is followed by [`EXCESS`]: every response
/// the client gets whole is a right one, and a cut one ends cleanly.
fn excess_session(bed: &Testbed) {
    let s = Session::open(bed);
    let mut complete = 0;
    for len in [1000, 3000, 5000, 7000] {
        match s.get(&format!("/n/{len}")) {
            Ok((head, body)) => {
                assert_eq!(
                    head.backend(),
                    "srv",
                    "response {} is the excess bytes of the one before: {head:?} {:?}",
                    complete + 1,
                    String::from_utf8_lossy(&body)
                );
                assert_eq!(head.content_length(), body.len());
                assert!(
                    body == pattern(body.len()),
                    "response {}: body differs",
                    complete + 1
                );
                complete += 1;
            }
            Err((end, head, body)) => {
                // A clean close is an answer too, if what came is right.
                assert!(matches!(end, End::Eof | End::Reset), "{end:?}");
                if let Some(head) = head {
                    assert_eq!(head.backend(), "srv", "{head:?}");
                    assert_prefix("cut response", &body, &pattern(head.content_length()));
                }
                break;
            }
        }
    }
    s.assert_quiet();
    assert!(complete >= 1, "not even the first response arrived");
}

#[test]
fn excess_bytes_in_the_last_segment_of_a_spliced_response_close_the_client_cleanly() {
    const LEN: usize = 256 << 10;
    let bed = testbed(1, vec![1024], &[]);
    let addr = SocketAddrV4::new(bed.backends[0].addr, 8080);
    let srv = TestServer::start(&bed.backends[0].ns, addr, |_, len| {
        if len == LEN {
            Reply::ExcessSameWrite
        } else {
            Reply::Normal
        }
    });
    // The segment that carries the response's end and the excess can go
    // to neither socket: by design the request times out (the stall
    // timer, shortened here) and both connections close.
    let config = one_pool(
        &[srv.addr.to_string()],
        "[timeouts]\nresponse_body_idle_ms = 2000\n",
    );
    let _gw = bed
        .start_distributor(&bed.proxy_config("tc", &config))
        .expect("start distributor");
    let s = Session::open(&bed);
    let started = Instant::now();
    match s.get(&format!("/n/{LEN}")) {
        Ok((head, body)) => {
            assert_eq!(head.backend(), "srv");
            assert!(body == pattern(LEN), "body differs");
        }
        Err((end, _, body)) => {
            assert!(
                matches!(end, End::Eof | End::Reset),
                "{end:?} after {:?}",
                started.elapsed()
            );
            assert!(body.len() < LEN);
            assert_prefix("client", &body, &pattern(LEN));
        }
    }
    s.assert_quiet();
    drop(s);
    let stats = bed.distributor_stats().expect("stats");
    assert!(
        splice_counter(&stats, "region-segments-dropped") >= 1,
        "the straddling segment was not dropped: {:#}",
        stats["splice"]
    );
    // The next client is served.
    let s = Session::open(&bed);
    let (head, body) = s
        .get("/n/1000")
        .unwrap_or_else(|(end, _, b)| panic!("{end:?} after {} bytes", b.len()));
    assert_eq!(head.backend(), "srv");
    assert!(body == pattern(1000), "body differs");
    s.assert_quiet();
    drop(s);
    bed.assert_flow_baseline();
}

// ---- 5: full maps, and the maps at rest -----------------------------------------

/// A key no connection has: peer 203.0.113.200+ port `i`, port 9 on the
/// gateway side.
fn dummy_key(i: u32) -> FlowKey {
    let hi = u8::try_from(200 + (i >> 16)).expect("few enough keys");
    FlowKey::ingress(
        u32::from(Ipv4Addr::new(203, 0, 113, hi)).to_be(),
        u32::from(Ipv4Addr::new(203, 0, 113, 1)).to_be(),
        u16::try_from(i & 0xffff).expect("low half").to_be(),
        9_u16.to_be(),
    )
}

/// Fills the pinned hash map `name` (of capacity `capacity`) with dummy
/// entries until the kernel refuses one more, runs `f`, and removes them.
fn with_full_map<V: aya::Pod + Default>(
    bed: &Testbed,
    name: &str,
    capacity: u32,
    f: impl FnOnce(),
) {
    let data = MapData::from_pin(bed.pin_dir().join(name)).expect("open the pinned map");
    let mut map: BpfHashMap<MapData, FlowKey, V> =
        BpfHashMap::try_from(Map::HashMap(data)).expect("a hash map");
    let present = u32::try_from(map.keys().count()).expect("count");
    let mut added = Vec::new();
    for i in 0..capacity + 1024 {
        let key = dummy_key(i);
        if map.insert(key, V::default(), 0).is_err() {
            break;
        }
        added.push(key);
    }
    assert_eq!(
        present + u32::try_from(added.len()).expect("count"),
        capacity,
        "{name}: {present} entries, {} added before it was full",
        added.len()
    );
    f();
    for key in &added {
        map.remove(key).expect("remove a dummy entry");
    }
}

/// Two requests on one new client connection: each body right, and each
/// access log record on `path` for `reason`.
fn requests_take(bed: &Testbed, path: &str, reason: Option<&str>) {
    let before = bed.access_log().expect("access log").len();
    let sizes = [1 << 20, 1024];
    let requests: Vec<Request> = sizes
        .iter()
        .map(|s| Request::get(bed.vip_url(&format!("/obj/{s}"))))
        .collect();
    let responses = bed.curl_requests(&requests).expect("curl");
    for (r, size) in responses.iter().zip(sizes) {
        assert_eq!(r.status, 200, "{}", r.url);
        let b = bed.backend(r.backend()).expect("a known backend");
        assert_eq!(
            r.sha256(),
            b.object(size).expect("object").sha256,
            "{}",
            r.url
        );
    }
    let log = bed
        .access_log_at_least(before + sizes.len())
        .expect("access log");
    assert_eq!(log.len(), before + sizes.len(), "{log:#?}");
    for rec in &log[before..] {
        assert_eq!(rec["path_taken"], path, "{rec}");
        if let Some(reason) = reason {
            assert_eq!(rec["path_reason"], reason, "{rec}");
        }
    }
}

#[test]
fn full_flow_maps_send_requests_to_the_relay_and_nothing_breaks() {
    let bed = testbed(2, vec![1024, 1 << 20], &[]);
    let _gw = bed
        .start_distributor(&bed.proxy_config("tc", &all_backends(&bed)))
        .expect("start distributor");
    let spliced =
        |bed: &Testbed| splice_counter(&bed.distributor_stats().expect("stats"), "regions-spliced");

    // No backend connection can be registered (none is open yet).
    with_full_map::<BackendFlow>(&bed, flow::FLOWS_S, flow::FLOWS_MAX, || {
        requests_take(&bed, "relay", Some("datapath-unavailable"));
    });
    assert_eq!(spliced(&bed), 0);
    // No client connection can be registered.
    with_full_map::<ClientFlow>(&bed, flow::FLOWS_C, flow::FLOWS_MAX, || {
        requests_take(&bed, "relay", Some("client-not-registered"));
    });
    assert_eq!(spliced(&bed), 0);
    // Connections registered, but no request can be armed.
    requests_take(&bed, "splice", None);
    let before = spliced(&bed);
    with_full_map::<Arm>(&bed, flow::ARMS, flow::ARMS_MAX, || {
        requests_take(&bed, "relay", Some("datapath-unavailable"));
    });
    assert_eq!(spliced(&bed), before);
    // Room again: spliced again.
    requests_take(&bed, "splice", None);
    bed.assert_flow_baseline();
}

#[test]
fn flow_maps_return_to_baseline_when_connections_end() {
    let bed = testbed(3, vec![1024, 65536, 1 << 20], &[]);
    let config = one_pool(
        &bed.backends.iter().map(server_of).collect::<Vec<_>>(),
        "[timeouts]\nbackend_idle_ms = 5000\n",
    );
    let _gw = bed
        .start_distributor(&bed.proxy_config("tc", &config))
        .expect("start distributor");
    // Four clients at once, each on one keep-alive connection: spliced
    // and relayed responses, HEAD, 204, 304.
    let requests: Vec<Request> = [
        Request::get(bed.vip_url("/obj/65536")),
        Request::get(bed.vip_url("/gz/65536")).with(&["--compressed"]),
        Request::get(bed.vip_url("/obj/1048576")),
        Request::get(bed.vip_url("/obj/1024")).with(&["-I"]),
        Request::get(bed.vip_url("/204")),
        Request::get(bed.vip_url("/obj/1024")).with(&["-H", "If-None-Match: *"]),
        Request::get(bed.vip_url("/obj/1024")),
    ]
    .into();
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| bed.curl_requests(&requests).expect("curl")))
            .collect();
        for run in runs {
            let responses = run.join().expect("curl thread");
            let status: Vec<u16> = responses.iter().map(|r| r.status).collect();
            assert_eq!(status, [200, 200, 200, 200, 204, 304, 200]);
            for r in responses.iter().filter(|r| r.url.contains("/obj/1048576")) {
                let b = bed.backend(r.backend()).expect("a known backend");
                assert_eq!(r.sha256(), b.object(1 << 20).expect("object").sha256);
            }
        }
    });
    let log = bed
        .access_log_at_least(4 * requests.len())
        .expect("access log");
    assert!(log.iter().any(|r| r["path_taken"] == "splice"), "{log:#?}");
    assert!(log.iter().any(|r| r["path_taken"] == "relay"), "{log:#?}");

    // Baseline with the pool warm: no client flow, no arm, and one idle
    // backend flow per pooled connection.
    assert!(
        !flow_rows(&bed.flows().expect("distributor flows"), "backends").is_empty(),
        "no pooled connection kept"
    );
    bed.assert_flow_baseline();
    // Once the pool closes its idle connections, their flows go too.
    let empty = poll(Duration::from_secs(10), || {
        let f = bed.flows().expect("distributor flows");
        (flow_rows(&f, "backends").is_empty() && bed.metric_sum("backend_connections_open") == 0)
            .then_some(())
    });
    assert!(
        empty.is_some(),
        "backend flows outlived their connections: {:#}",
        bed.flows().expect("distributor flows")
    );
    bed.assert_flow_baseline();
}

// ---- 6: the control plane stops mid-splice ---------------------------------------

/// The bpf links (TCX attachments) of programs `ids`.
fn links_of(ids: &BTreeSet<u64>) -> Vec<Value> {
    let out = std::process::Command::new("bpftool")
        .args(["--json", "link", "show"])
        .output()
        .expect("bpftool link show");
    let links: Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["prog_id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .cloned()
        .collect()
}

/// The clsact filters (`tc filter show`) on the gateway's interfaces.
fn tc_filters(bed: &Testbed) -> String {
    let mut all = String::new();
    for iface in bed.gateway_interfaces() {
        for dir in ["ingress", "egress"] {
            let out = bed
                .gateway
                .command("tc")
                .args(["filter", "show", "dev", &iface, dir])
                .output()
                .expect("tc");
            all.push_str(&String::from_utf8_lossy(&out.stdout));
        }
    }
    all
}

#[test]
fn sigterm_mid_splice_closes_the_client_cleanly_and_a_restart_splices_at_once() {
    const SIZE: usize = 8 << 20;
    let bed = testbed(1, vec![65536, SIZE], &[("b1", "limit_rate 1m;")]);
    let b1 = &bed.backends[0];
    let config = bed.proxy_config("tc", &all_backends(&bed));
    let mut gw = bed.start_distributor(&config).expect("start distributor");
    let map_id = pinned_map_id(&bed.pin_dir().join(flow::FLOWS_C)).expect("map id");
    assert_eq!(
        programs_using_map(map_id).expect("bpftool"),
        ["dist_tc_in", "dist_tc_out"]
    );
    let ids = program_ids_using_map(map_id).expect("bpftool prog show");
    // In and out on each of the gateway's interfaces.
    let links = links_of(&ids);
    assert_eq!(links.len(), 2 * bed.gateway_interfaces().len(), "{links:?}");

    let download = Download::start(&bed, &format!("/obj/{SIZE}"), None, 256 << 10);
    splicing_row(&bed.flows().expect("distributor flows"), download.local);
    let stopped_at = Instant::now();
    let status = gw
        .stop_with(libc::SIGTERM, Duration::from_secs(10))
        .expect("exit status");
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        gw.output()
    );
    let r = download.finish(Then::ReadToEnd);
    assert!(
        matches!(r.end, End::Eof | End::Reset),
        "the client connection did not end: {:?} after {} bytes",
        r.end,
        r.body.len()
    );
    let took = r.ended_at.saturating_duration_since(stopped_at);
    assert!(
        took <= PEER_GONE_GUARD,
        "the client connection ended {took:?} after SIGTERM"
    );
    assert!(r.body.len() < SIZE, "{} bytes", r.body.len());
    assert_prefix("client", &r.body, &object(b1, SIZE));

    assert_eq!(
        programs_using_map(map_id).expect("bpftool"),
        Vec::<String>::new()
    );
    assert_eq!(
        links_of(&ids),
        Vec::<Value>::new(),
        "programs still attached"
    );
    assert_eq!(tc_filters(&bed), "", "tc filters left on the gateway");
    assert!(!bed.pin_dir().exists(), "pins left behind");

    // A new start works at once: spliced, right bytes, fresh counters.
    let records = bed.access_log().expect("access log").len();
    let _gw = bed.start_distributor(&config).expect("restart distributor");
    let requests: Vec<Request> = (0..2)
        .map(|_| Request::get(bed.vip_url("/obj/65536")))
        .collect();
    let responses = bed.curl_requests(&requests).expect("curl");
    for resp in &responses {
        assert_eq!(resp.status, 200);
        assert_eq!(resp.sha256(), b1.object(65536).expect("object").sha256);
    }
    let log = bed.access_log_at_least(records + 2).expect("access log");
    for rec in &log[records..] {
        assert_eq!(rec["path_taken"], "splice", "{rec}");
    }
    let stats = bed.distributor_stats().expect("stats");
    assert_eq!(
        splice_counter(&stats, "regions-done"),
        2,
        "{:#}",
        stats["splice"]
    );
    bed.assert_flow_baseline();
}

/// wrk closes its connections when its time is up, some with a spliced
/// response in flight; distributor stops at once. Every gateway socket must
/// finish its close: one whose peer's last ACK went untranslated, or whose
/// FIN lay past what the client had, stayed in LAST-ACK for minutes (and
/// kept nginx from binding the VIP in the benchmark). The race was hit in
/// about one round of four.
#[test]
fn sigterm_as_wrk_closes_its_connections_leaves_no_socket_closing() {
    const SIZE: usize = 1 << 20;
    const ROUNDS: usize = 8;
    let bed = testbed(2, vec![SIZE], &[]);
    let config = bed.proxy_config("tc", &all_backends(&bed));
    let url = bed.vip_url(&format!("/obj/{SIZE}"));
    for round in 0..ROUNDS {
        let mut gw = bed.start_distributor(&config).expect("start distributor");
        let out = bed
            .client
            .command("wrk")
            .args(["-t2", "-c16", "-d2s", &url])
            .output()
            .expect("wrk");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("requests in"), "{stdout}");
        let status = gw
            .stop_with(libc::SIGTERM, Duration::from_secs(10))
            .expect("exit status");
        assert!(status.success(), "round {round}: {status}\n{}", gw.output());
        assert!(
            !gw.output().contains("still closing at stop"),
            "round {round}:\n{}",
            gw.output()
        );
        // Long enough for several FIN retransmissions.
        std::thread::sleep(Duration::from_millis(1500));
        let left = bed.gateway_sockets_closing();
        assert!(left.is_empty(), "round {round} of {ROUNDS}: {left:#?}");
    }
}

// ---- a client that connects again from the same port ----------------------

/// A TCP connection from the client's address and `port` to the virtual
/// IP (`SO_REUSEADDR`, so the port of a connection that just closed can
/// be bound again).
fn connect_from(port: u16) -> TcpStream {
    // SAFETY: plain socket calls on a descriptor this function owns; the
    // address structures are fully initialised.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let s = <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd);
        set_int_opt(&s, libc::SO_REUSEADDR, 1);
        let addr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::sa_family_t::try_from(libc::AF_INET).expect("AF_INET"),
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_in>()).expect("size");
        let local = addr(distributor_tests::CLIENT_ADDR, port);
        let rc = libc::bind(fd, std::ptr::from_ref(&local).cast(), len);
        assert_eq!(rc, 0, "bind :{port}: {}", std::io::Error::last_os_error());
        let vip = addr(VIP, 80);
        let rc = libc::connect(fd, std::ptr::from_ref(&vip).cast(), len);
        assert_eq!(
            rc,
            0,
            "connect from :{port}: {}",
            std::io::Error::last_os_error()
        );
        s
    }
}

/// A GET of `target` on `s`, its whole response read (the head gives the
/// length).
fn get_on(s: &mut TcpStream, target: &str, close: bool) -> (Head, Vec<u8>) {
    let connection = if close { "Connection: close\r\n" } else { "" };
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: vip\r\n{connection}\r\n").as_bytes())
        .expect("request");
    let mut buf = Vec::new();
    let mut chunk = vec![0_u8; 64 * 1024];
    let mut ended = None;
    read_response(s, &mut buf, &mut chunk, &mut ended).unwrap_or_else(|(end, head, body)| {
        panic!("{end:?} after {} body bytes: {head:?}", body.len())
    })
}

/// A client whose connection the gateway closed (`Connection: close`)
/// after a spliced response connects again at once from the same port:
/// the gateway's socket of the old connection is in `TIME_WAIT`, whose
/// socket takes the new SYN. The new connection registers under the same
/// flow key while the old one's lingering close still holds its entry
/// guard; when that guard drops (the close poll notices `TIME_WAIT`), it
/// must not take the new connection's entry with it. Without its entry,
/// the new connection's spliced bytes are not translated and its
/// responses stop short. Nor may the old entry translate the new
/// connection's handshake: its shift would move the sequence numbers the
/// client learns from the SYN-ACK, and its option edits would strip the
/// SYN's options.
#[test]
fn a_client_connecting_again_from_the_same_port_keeps_its_new_flow_entry() {
    const SIZE: usize = 1 << 20;
    const ROUNDS: usize = 4;
    let bed = testbed(1, vec![SIZE], &[]);
    let _gw = bed
        .start_distributor(&bed.proxy_config("tc", &all_backends(&bed)))
        .expect("start distributor");
    let obj = object(&bed.backends[0], SIZE);
    let target = format!("/obj/{SIZE}");
    let (ready_tx, ready) = mpsc::channel::<SocketAddrV4>();
    let (go, go_rx) = mpsc::channel::<()>();
    let (done_tx, done) = mpsc::channel::<Vec<(Head, Vec<u8>)>>();
    let client = bed
        .client
        .spawn_thread(move || {
            let mut got = Vec::new();
            let mut first = TcpStream::connect((VIP, 80)).expect("connect");
            let port = first.local_addr().expect("local address").port();
            for _ in 0..ROUNDS {
                // The gateway closes after this response; the client
                // closes on the end of stream, so the gateway's side ends
                // in TIME_WAIT and this side is free at once.
                got.push(get_on(&mut first, &target, true));
                let mut rest = [0_u8; 1];
                assert_eq!(first.read(&mut rest).expect("end of stream"), 0);
                drop(first);
                first = connect_from(port);
                got.push(get_on(&mut first, &target, false));
                let SocketAddr::V4(local) = first.local_addr().expect("local") else {
                    unreachable!("IPv4 only")
                };
                ready_tx.send(local).expect("test thread gone");
                go_rx.recv().expect("test thread gone");
                got.push(get_on(&mut first, &target, false));
            }
            done_tx.send(got).expect("test thread gone");
        })
        .expect("client thread");
    let mut conn_ids = Vec::new();
    for round in 0..ROUNDS {
        let local = ready
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "round {round}: no response on the new connection: flows {:#}\nstats {:#}",
                    bed.flows().expect("distributor flows"),
                    bed.distributor_stats().expect("stats")
                )
            });
        // Long past the close poll (10 ms) that finds the old socket done.
        std::thread::sleep(Duration::from_millis(200));
        let flows = bed.flows().expect("distributor flows");
        let row = flow_rows(&flows, "clients")
            .iter()
            .find(|r| r["client"] == local.to_string())
            .unwrap_or_else(|| {
                panic!("round {round}: the new connection from {local} lost its entry: {flows:#}")
            });
        // The new connection's own registration, not the old entry.
        assert_eq!(row["state"], "idle", "round {round}: {row:#}");
        conn_ids.push(row["conn_id"].as_u64().expect("conn_id"));
        go.send(()).expect("client thread gone");
    }
    let got = done
        .recv_timeout(CLIENT_BOUND)
        .expect("the client thread died");
    client.join().expect("client thread");
    let distinct: BTreeSet<u64> = conn_ids.iter().copied().collect();
    assert_eq!(distinct.len(), ROUNDS, "{conn_ids:?}");
    assert_eq!(got.len(), 3 * ROUNDS);
    for (i, (head, body)) in got.iter().enumerate() {
        assert_eq!(head.status, 200, "response {i}");
        assert!(body == &obj, "response {i}: body differs from the object");
    }
    // The requests with `Connection: close` are relayed (the gateway
    // closes after them); the others are spliced.
    let log = bed.access_log_at_least(got.len()).expect("access log");
    assert_eq!(log.len(), got.len(), "{log:#?}");
    let spliced = log.iter().filter(|r| r["path_taken"] == "splice").count();
    assert_eq!(spliced, 2 * ROUNDS, "{log:#?}");
    for rec in &log {
        assert_eq!(rec["error"], Value::Null, "{rec}");
    }
    // The client's SYNs (one per connection) passed untouched, counted
    // with the backends' SYN-ACKs.
    let stats = bed.distributor_stats().expect("stats");
    assert!(
        stats["reasons"]["pass-handshake"].as_u64().unwrap_or(0) > ROUNDS as u64,
        "{stats:#}"
    );
    assert_eq!(bed.nstat_splice_errors(), BTreeMap::new());
    bed.assert_flow_baseline();
}

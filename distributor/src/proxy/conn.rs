//! One client connection: a loop of request -> route -> backend -> response.

use std::{
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use distributor_common::{
    flow::{ClientFlow, Event, event, state as flow_state},
    splice::{relay, seq::seq_lt},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tracing::debug;

use super::{
    Shared,
    message::{self, ClientConnection},
    respond,
};
use crate::{
    datapath::{
        sockets::{self, tcp_state},
        splice::{Armed, ClientReg, not_armed},
    },
    http::{
        self, BodyFraming, ChunkedScanner, Parsed, RequestHead, ResponseHead, parse_request_head,
        parse_response_head,
    },
    rules::RequestView,
    track::{RequestRecord, ResponsePath, ms, unix_ms},
    upstream::{BackendConn, InFlight, Server, connpool::ConnectError},
};

/// Read size for both sides.
const CHUNK: usize = 64 * 1024;

/// How often a spliced exchange looks at both sockets and the flow: a peer
/// gone mid-response ends it then, not after the stall timer.
const PEER_CHECK: Duration = Duration::from_millis(200);

/// Whether the client connection goes on after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    Close,
}

struct Client<'a> {
    shared: &'a Shared,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    /// Bytes received and not yet consumed (pipelined requests wait here).
    buf: Vec<u8>,
    requests: u64,
    /// The connection's entry in the splice datapath's flow map.
    splice: Option<ClientReg>,
}

pub async fn serve(shared: &Shared, stream: TcpStream, peer: SocketAddr, id: u64) {
    let splice = shared
        .splice
        .as_ref()
        .and_then(|sp| match sp.add_client(&stream, id) {
            Ok(reg) => Some(reg),
            Err(e) => {
                debug!(conn = id, "not registered for splicing: {e}");
                None
            }
        });
    let mut c = Client {
        shared,
        stream,
        peer,
        id,
        buf: Vec::with_capacity(CHUNK),
        requests: 0,
        splice,
    };
    while c.one_request().await == Next::Continue {}
    // Say FIN; the client may still be sending. A connection in the flow
    // map closes through the datapath instead, when `c` drops.
    if c.splice.is_none() {
        let _ = c.stream.shutdown().await;
    }
}

impl Drop for Client<'_> {
    /// Also when the task is cancelled (the control plane stops).
    fn drop(&mut self) {
        if let Some(reg) = self.splice.take() {
            reg.close(&self.stream);
        }
    }
}

/// A request failed before any response byte was sent: answer it.
struct Reject {
    status: u16,
    detail: String,
    close: bool,
}

impl Reject {
    fn close(status: u16, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            close: true,
        }
    }
}

/// What a backend exchange ended with.
enum Exchange {
    /// The response head, the connection, and the bytes read past the head.
    Head {
        conn: BackendConn,
        head: ResponseHead,
        after_head: Vec<u8>,
    },
    /// No usable response: answer the client with this.
    Fail(Reject),
    /// Connecting failed: try the next server.
    ConnectFailed(ConnectError),
    /// The datapath spliced the whole response; the client acknowledged it.
    Spliced {
        conn: BackendConn,
        status: u16,
        len: u32,
        reusable: bool,
    },
    /// The datapath may have sent part of a response: nothing can be
    /// written to the client any more; close it.
    Broken(String),
}

/// What the datapath decided about an armed request.
enum Decision {
    Spliced {
        status: u16,
        len: u32,
        reusable: bool,
    },
    /// Relayed: the response is read from S as usual.
    Relay,
    Broken(String),
}

impl Decision {
    /// The exchange this decision ends on `conn` (its first-byte time
    /// recorded from `t0` if none was), or `Err(conn)`: relayed, the
    /// response head is read from S as usual.
    fn into_exchange(
        self,
        conn: BackendConn,
        rec: &mut RequestRecord,
        t0: Instant,
    ) -> Result<Exchange, BackendConn> {
        match self {
            Self::Spliced {
                status,
                len,
                reusable,
            } => {
                rec.t_first_byte_ms.get_or_insert(ms(t0.elapsed()));
                Ok(Exchange::Spliced {
                    conn,
                    status,
                    len,
                    reusable,
                })
            }
            Self::Broken(why) => Ok(Exchange::Broken(why)),
            Self::Relay => Err(conn),
        }
    }
}

impl Client<'_> {
    async fn one_request(&mut self) -> Next {
        let t0 = Instant::now();
        let mut rec = RequestRecord {
            ts_ms: unix_ms(),
            client: Some(self.peer),
            conn: self.id,
            req: self.requests + 1,
            ..RequestRecord::default()
        };

        // 1. The head.
        let (head, head_len) = match self.read_head().await {
            Ok(Some(x)) => x,
            Ok(None) => return Next::Close,
            Err(reject) => return self.finish_local(rec, t0, reject).await,
        };
        self.requests += 1;
        rec.method.clone_from(&head.method);
        rec.path.clone_from(&head.target);

        // 2. Validate its framing and read the body whole.
        let body = match self.read_body(&head, head_len).await {
            Ok(body) => body,
            Err(reject) => return self.finish_local(rec, t0, reject).await,
        };
        let (framing, body_len) = body;
        let request_bytes = head_len + body_len;
        rec.bytes_in = request_bytes as u64;
        rec.t_received_ms = Some(ms(t0.elapsed()));
        let client_keep_alive = head.keep_alive();

        // 3. Route it.
        let view = RequestView {
            method: &head.method,
            target: &head.target,
            client_addr: self.peer.ip(),
            headers: &head.headers,
        };
        let matched = self.shared.rules.route(&view);
        let pool = self.shared.upstreams.pool(matched.as_ref().map(|m| m.pool));
        rec.rule = matched.map(|m| Arc::clone(&self.shared.rule_names[m.index]));
        rec.pool = Some(Arc::clone(&pool.name));

        // The backend's head reaches the client verbatim when spliced: only
        // for HTTP/1.1 keep-alive exchanges, where it is valid as it is.
        let splice_ok = self.splice.is_some() && client_keep_alive && head.version == 1;
        if self.shared.splice.is_some() && !splice_ok {
            rec.path_reason = Some(if self.splice.is_none() {
                "client-not-registered"
            } else {
                "client-not-keep-alive-1.1"
            });
        } else if self.shared.splice.is_none() {
            rec.path_reason = Some("datapath-off");
        }
        let mut wire = message::backend_request_head(&head, framing, self.peer.ip());
        wire.extend_from_slice(&self.buf[head_len..request_bytes]);
        self.buf.drain(..request_bytes);

        // 4. Send it: the pool's choice, then the next on connect failure.
        let mut tried = Vec::new();
        let (server, inflight, conn, resp, after_head) = loop {
            let Some(idx) = pool.select(&view, &tried) else {
                let detail = if tried.is_empty() {
                    format!("no server available in pool {}", pool.name)
                } else {
                    format!("no server of pool {} accepted a connection", pool.name)
                };
                let reject = Reject {
                    status: 503,
                    detail,
                    close: !client_keep_alive,
                };
                return self.finish_local(rec, t0, reject).await;
            };
            let server = Arc::clone(&pool.servers[idx]);
            rec.server = Some(Arc::clone(&server.id));
            let inflight = InFlight::new(&server);
            let how = if splice_ok {
                Some(head.method.as_str())
            } else {
                None
            };
            match self.exchange(&server, &wire, how, &mut rec, t0).await {
                Exchange::Head {
                    conn,
                    head,
                    after_head,
                } => break (server, inflight, conn, head, after_head),
                Exchange::Spliced {
                    conn,
                    status,
                    len,
                    reusable,
                } => {
                    rec.backend_conn = Some(conn.id);
                    rec.reused = Some(conn.reused);
                    rec.status = status;
                    rec.bytes_out = u64::from(len);
                    rec.path_taken = Some(ResponsePath::Splice);
                    rec.path_reason = None;
                    // The head announced keep-alive and a length the client
                    // acknowledged in full: S is clean.
                    if reusable {
                        server.conns.checkin(conn);
                    }
                    drop(inflight);
                    rec.t_done_ms = Some(ms(t0.elapsed()));
                    self.shared.metrics.record(&rec);
                    self.shared.access_log.log(rec, &self.shared.metrics);
                    return Next::Continue;
                }
                Exchange::Broken(why) => {
                    drop(inflight);
                    rec.error = Some(why);
                    rec.path_taken = Some(ResponsePath::Splice);
                    rec.t_done_ms = Some(ms(t0.elapsed()));
                    self.shared.metrics.record(&rec);
                    self.shared.access_log.log(rec, &self.shared.metrics);
                    return Next::Close;
                }
                Exchange::ConnectFailed(e) => {
                    debug!(conn = self.id, "{e}");
                    rec.connect_failures += 1;
                    tried.push(idx);
                }
                Exchange::Fail(mut reject) => {
                    reject.close |= !client_keep_alive;
                    return self.finish_local(rec, t0, reject).await;
                }
            }
        };
        rec.backend_conn = Some(conn.id);
        rec.reused = Some(conn.reused);

        // 5. Relay the response.
        let next = self
            .relay(
                &head,
                client_keep_alive,
                &server,
                conn,
                resp,
                after_head,
                &mut rec,
                t0,
            )
            .await;
        drop(inflight);
        rec.t_done_ms = Some(ms(t0.elapsed()));
        rec.path_taken = Some(ResponsePath::Relay);
        self.shared.metrics.record(&rec);
        self.shared.access_log.log(rec, &self.shared.metrics);
        next
    }

    /// Reads until a whole head is buffered. `Ok(None)`: the client closed
    /// or stayed idle between requests (nothing to answer).
    async fn read_head(&mut self) -> Result<Option<(RequestHead, usize)>, Reject> {
        let t = &self.shared.timeouts;
        let mut first_byte: Option<Instant> = None;
        loop {
            // RFC 9112 §2.2: ignore empty lines before a request line.
            let blank = self
                .buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if blank > 0 {
                self.buf.drain(..blank);
            }
            if !self.buf.is_empty() && first_byte.is_none() {
                first_byte = Some(Instant::now());
            }
            match parse_request_head(&self.buf, &self.shared.limits) {
                Ok(Parsed::Complete { head, len }) => return Ok(Some((head, len))),
                Ok(Parsed::Partial) => {}
                Err(e) => return Err(Reject::close(e.status(), e.to_string())),
            }
            let wait = match first_byte {
                None => t.client_idle,
                Some(at) => t.client_head.saturating_sub(at.elapsed()),
            };
            match self.read_more(wait).await {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut && first_byte.is_some() => {
                    return Err(Reject::close(
                        408,
                        "the request head did not arrive in time",
                    ));
                }
                Err(_) => return Ok(None),
            }
        }
    }

    /// Appends what the client sends next; `TimedOut` after `wait`.
    async fn read_more(&mut self, wait: Duration) -> io::Result<usize> {
        self.buf.reserve(CHUNK);
        match tokio::time::timeout(wait, self.stream.read_buf(&mut self.buf)).await {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Checks the request's framing and buffers its body. Returns the
    /// framing and the body's length on the wire (it follows the head in
    /// `buf`).
    async fn read_body(
        &mut self,
        head: &RequestHead,
        head_len: usize,
    ) -> Result<(BodyFraming, usize), Reject> {
        if head.is_upgrade_or_connect() {
            return Err(Reject::close(
                501,
                "CONNECT and protocol upgrades are not supported",
            ));
        }
        let framing =
            http::request_body(head).map_err(|e| Reject::close(e.status(), e.to_string()))?;
        http::check_body_size(framing, self.shared.max_body)
            .map_err(|e| Reject::close(e.status(), e.to_string()))?;
        let io_wait = self.shared.timeouts.client_io;
        let needs_body = match framing {
            BodyFraming::Length(n) => n > 0,
            BodyFraming::Chunked => true,
            BodyFraming::None | BodyFraming::CloseDelimited => false,
        };
        if needs_body && head.expects_continue() && self.buf.len() == head_len {
            self.write_client(respond::CONTINUE)
                .await
                .map_err(|_| Reject::close(400, "client gone"))?;
        }
        match framing {
            BodyFraming::None | BodyFraming::CloseDelimited => Ok((framing, 0)),
            BodyFraming::Length(n) => {
                // check_body_size bounded n by max_body, a usize-sized cap.
                let n = usize::try_from(n).map_err(|_| Reject::close(413, "body too large"))?;
                while self.buf.len() < head_len + n {
                    match self.read_more(io_wait).await {
                        Ok(0) | Err(_) => {
                            return Err(Reject::close(400, "the request body ended early"));
                        }
                        Ok(_) => {}
                    }
                }
                Ok((framing, n))
            }
            BodyFraming::Chunked => {
                let mut scanner = ChunkedScanner::with_limits(self.shared.chunk_limits());
                let mut body_end = head_len;
                loop {
                    let progress = scanner
                        .feed(&self.buf[body_end..])
                        .map_err(|e| Reject::close(e.status(), e.to_string()))?;
                    body_end += progress.consumed;
                    if progress.done {
                        return Ok((framing, body_end - head_len));
                    }
                    match self.read_more(io_wait).await {
                        Ok(0) | Err(_) => {
                            return Err(Reject::close(400, "the request body ended early"));
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
    }

    /// Sends the request on a connection to `server` and reads the response
    /// head. A pooled connection that turns out closed before any response
    /// byte arrived is replaced by a fresh one, once.
    async fn exchange(
        &mut self,
        server: &Server,
        wire: &[u8],
        splice_method: Option<&str>,
        rec: &mut RequestRecord,
        t0: Instant,
    ) -> Exchange {
        let t = self.shared.timeouts;
        for fresh in [false, true] {
            let mut conn = match server
                .conns
                .checkout(fresh, t.connect, t.backend_idle)
                .await
            {
                Ok(c) => c,
                Err(e) => return Exchange::ConnectFailed(e),
            };
            if fresh {
                rec.retried = true;
            }
            let reused = conn.reused;
            let mut armed = splice_method.and_then(|m| self.arm(&mut conn, m, rec));
            let sent = tokio::time::timeout(t.response_head, conn.stream.write_all(wire)).await;
            rec.t_sent_ms = Some(ms(t0.elapsed()));
            if !matches!(sent, Ok(Ok(())))
                && let Some(a) = armed.as_mut()
                && !a.disarm()
            {
                // The backend answered before it took the whole request
                // (then stopped reading, or reset), and the datapath took
                // that response. Spliced, it reached the client, which
                // must get nothing else: no error response, no answer to
                // a retry. Relayed, nothing did: the failure is answered.
                let ev = match decision_underway(a).await {
                    Ok(ev) => ev,
                    Err(why) => return Exchange::Broken(why),
                };
                let mut decision = self.decided(&conn, a, ev, rec).await;
                // The request never went whole: S cannot serve another.
                if let Decision::Spliced { reusable, .. } = &mut decision {
                    *reusable = false;
                }
                conn = match decision.into_exchange(conn, rec, t0) {
                    Ok(done) => return done,
                    Err(conn) => conn,
                };
            }
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) if reused => continue,
                Ok(Err(e)) => {
                    return Exchange::Fail(Reject::close(502, format!("sending to backend: {e}")));
                }
                Err(_) => return Exchange::Fail(Reject::close(504, "backend not reading")),
            }
            if let Some(a) = armed.as_mut() {
                let decision = self.await_decision(&conn, a, rec).await;
                conn = match decision.into_exchange(conn, rec, t0) {
                    Ok(done) => return done,
                    Err(conn) => conn,
                };
            }
            match read_response_head(&mut conn, t.response_head, &self.shared.limits).await {
                Ok((head, after_head)) => {
                    rec.t_first_byte_ms = Some(ms(t0.elapsed()));
                    if let Some(a) = armed.as_mut() {
                        note_relay_reason(a, rec).await;
                    }
                    drop(armed);
                    return Exchange::Head {
                        conn,
                        head,
                        after_head,
                    };
                }
                // Closed (or reset) before sending a byte: the idle race.
                Err(HeadFailure::ClosedEarly) if reused => {}
                Err(HeadFailure::ClosedEarly) => {
                    return Exchange::Fail(Reject::close(
                        502,
                        "backend closed the connection without a response",
                    ));
                }
                Err(HeadFailure::Timeout) => {
                    return Exchange::Fail(Reject::close(504, "backend response head timed out"));
                }
                Err(HeadFailure::Invalid(e)) => {
                    return Exchange::Fail(Reject::close(502, e));
                }
            }
        }
        Exchange::Fail(Reject::close(
            502,
            "backend closed a fresh connection without a response",
        ))
    }

    /// Registers `conn` in the flow map (once) and arms its region. `None`:
    /// the response is relayed, and `rec.path_reason` says why.
    fn arm(&self, conn: &mut BackendConn, method: &str, rec: &mut RequestRecord) -> Option<Armed> {
        let sp = self.shared.splice.as_ref()?;
        let client = self.splice.as_ref()?;
        if conn.splice.is_none() {
            match sp.add_backend(&conn.stream) {
                Ok(reg) => conn.splice = Some(reg),
                Err(e) => {
                    debug!(conn = self.id, "backend connection not registered: {e}");
                    rec.path_reason = Some(not_armed::UNAVAILABLE);
                    return None;
                }
            }
        }
        let backend = conn.splice.as_ref()?;
        // The client's next request tells when this response is done (the
        // ACK that completes it comes first), unless requests are already
        // waiting: then the DONE event must wake the control plane.
        let wake = !self.buf.is_empty() || sockets::unread(&self.stream).map_or(true, |n| n > 0);
        match sp.arm(&self.stream, client, &conn.stream, backend, method, wake) {
            Ok(a) => Some(a),
            Err(why) => {
                rec.path_reason = Some(why);
                None
            }
        }
    }

    /// Waits for the datapath's decision on the response to an armed
    /// request: spliced (then until the client acknowledged all of it),
    /// or relayed (the response arrives at S).
    async fn await_decision(
        &self,
        conn: &BackendConn,
        a: &mut Armed,
        rec: &mut RequestRecord,
    ) -> Decision {
        let t = self.shared.timeouts;
        // Without a wake-up (`Armed::wake`), the client's next request (or
        // its FIN) says the events are in the ring: have the reader look.
        let mut watch_client = !a.wake;
        let first = tokio::time::timeout(t.response_head, async {
            loop {
                tokio::select! {
                    biased;
                    ev = a.next() => return ev,
                    _ = conn.stream.readable() => return None,
                    r = self.stream.readable(), if watch_client => {
                        watch_client = false;
                        if r.is_ok() {
                            a.look();
                        }
                    }
                }
            }
        })
        .await;
        let ev = match first {
            Ok(Some(ev)) => ev,
            // S has bytes (or EOF): the datapath passed the response on.
            Ok(None) => return Decision::Relay,
            Err(_) => {
                // No response yet. If the arm is still there, nothing was
                // spliced and the caller times out as usual; otherwise a
                // decision is on its way.
                if a.disarm() {
                    return Decision::Relay;
                }
                match decision_underway(a).await {
                    Ok(ev) => ev,
                    Err(why) => return Decision::Broken(why),
                }
            }
        };
        self.decided(conn, a, ev, rec).await
    }

    /// Follows the datapath's decision `ev` on an armed request's
    /// response: spliced, until the client acknowledged all of it.
    async fn decided(
        &self,
        conn: &BackendConn,
        a: &mut Armed,
        ev: Event,
        rec: &mut RequestRecord,
    ) -> Decision {
        match ev.kind {
            event::SPLICE => {
                let status = u16::try_from(ev.reason).unwrap_or(0);
                rec.status = status;
                match self.await_done(conn, a, ev.len).await {
                    Ok(broken) => Decision::Spliced {
                        status,
                        len: ev.len,
                        reusable: !broken,
                    },
                    Err(why) => Decision::Broken(why),
                }
            }
            event::RELAY => {
                rec.path_reason = Some(relay::name(ev.reason));
                Decision::Relay
            }
            _ => Decision::Broken(format!("unexpected splice event {}", ev.kind)),
        }
    }

    /// Waits until the client acknowledged the whole spliced response
    /// (`Ok(true)`: the backend sent bytes past it, S must not be reused).
    /// Gives up when a peer is gone mid-response, or after
    /// `response_body_idle` without progress.
    async fn await_done(
        &self,
        conn: &BackendConn,
        a: &mut Armed,
        len: u32,
    ) -> Result<bool, String> {
        let idle = self.shared.timeouts.response_body_idle;
        let mut last = None;
        let mut progress_at = Instant::now();
        // The first check after PEER_CHECK: most responses are done sooner.
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + PEER_CHECK, PEER_CHECK);
        // Without a wake-up, the client's next request (or its FIN) says
        // the DONE event is in the ring: have the reader look.
        let mut watch_client = !a.wake;
        loop {
            tokio::select! {
                r = self.stream.readable(), if watch_client => {
                    watch_client = false;
                    if r.is_ok() {
                        a.look();
                    }
                }
                ev = a.next() => {
                    return match ev {
                        Some(ev) if ev.kind == event::DONE && ev.len == len => Ok(ev.reason != 0),
                        Some(ev) => Err(format!("unexpected splice event {}", ev.kind)),
                        None => Err("splice events closed".into()),
                    };
                }
                _ = tick.tick() => {
                    let flow = self.flow();
                    if let Some(why) = self.peer_gone(conn, flow) {
                        return Err(why.into());
                    }
                    let now = flow.map(|f| f.bytes_spliced);
                    if now.is_some() && now != last {
                        last = now;
                        progress_at = Instant::now();
                    } else if progress_at.elapsed() >= idle {
                        return Err("spliced response stalled".into());
                    }
                }
            }
        }
    }

    fn flow(&self) -> Option<ClientFlow> {
        self.splice.as_ref().and_then(ClientReg::flow)
    }

    /// A peer that reset or closed while its region is in flight: the
    /// client (any time), or the backend before the region was all sent.
    fn peer_gone(&self, conn: &BackendConn, flow: Option<ClientFlow>) -> Option<&'static str> {
        let state = |s: &TcpStream| sockets::info(s).map(|i| i.state);
        if matches!(state(&self.stream), Ok(tcp_state::CLOSE) | Err(_)) {
            return Some("client gone mid-response");
        }
        let unsent = flow.is_some_and(|f| {
            f.state == flow_state::SPLICING && seq_lt(f.sent_end, f.region.c_end())
        });
        if unsent
            && matches!(
                state(&conn.stream),
                Ok(tcp_state::CLOSE | tcp_state::CLOSE_WAIT) | Err(_)
            )
        {
            return Some("backend gone mid-response");
        }
        None
    }

    /// Relays the response, and returns the backend connection to its pool
    /// when the response ended cleanly and the backend keeps it open.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the pieces of one exchange"
    )]
    async fn relay(
        &mut self,
        req: &RequestHead,
        client_keep_alive: bool,
        server: &Server,
        mut conn: BackendConn,
        mut resp: ResponseHead,
        mut after_head: Vec<u8>,
        rec: &mut RequestRecord,
        t0: Instant,
    ) -> Next {
        let t = self.shared.timeouts;
        // Interim responses (103 Early Hints, a 100 we did not ask for) go
        // to HTTP/1.1 clients as they are; the final one follows.
        while resp.is_informational() {
            if resp.status == 101 {
                return self
                    .fail_before_response(rec, t0, "backend switched protocols unasked")
                    .await;
            }
            if req.version >= 1 && resp.status != 100 {
                let interim = message::client_response_head(
                    &resp,
                    BodyFraming::None,
                    ClientConnection::KeepAlive11,
                );
                if self.write_client(&interim).await.is_err() {
                    return Next::Close;
                }
                rec.bytes_out += interim.len() as u64;
            }
            match parse_after(&mut conn, after_head, t.response_head, &self.shared.limits).await {
                Ok((h, r)) => {
                    resp = h;
                    after_head = r;
                }
                Err(_) => {
                    return self
                        .fail_before_response(rec, t0, "bad interim response")
                        .await;
                }
            }
        }
        rec.status = resp.status;
        let framing = match http::response_body(&req.method, &resp) {
            Ok(f) => f,
            Err(e) => return self.fail_before_response(rec, t0, &e.to_string()).await,
        };
        if req.version == 0 && framing == BodyFraming::Chunked {
            // Asked as HTTP/1.0, answered chunked: an HTTP/1.0 client could
            // not read it.
            return self
                .fail_before_response(rec, t0, "chunked response to an HTTP/1.0 request")
                .await;
        }
        let keep_client = client_keep_alive && framing != BodyFraming::CloseDelimited;
        let client_conn = match (keep_client, req.version) {
            (false, _) => ClientConnection::Close,
            (true, 0) => ClientConnection::KeepAlive10,
            (true, _) => ClientConnection::KeepAlive11,
        };
        let head_out = message::client_response_head(&resp, framing, client_conn);
        rec.bytes_out += head_out.len() as u64;
        let body = self
            .relay_body(&mut conn, framing, head_out, after_head, rec)
            .await;
        match body {
            BodyEnd::Complete { reusable } => {
                if reusable && resp.keep_alive() {
                    server.conns.checkin(conn);
                }
                if keep_client {
                    Next::Continue
                } else {
                    Next::Close
                }
            }
            BodyEnd::BackendFailed(why) => {
                // The client already has the head: closing is the only
                // honest signal that the body is incomplete.
                rec.error = Some(why);
                Next::Close
            }
            BodyEnd::ClientFailed => {
                rec.error = Some("client stopped reading".to_owned());
                Next::Close
            }
        }
    }

    /// Sends `head` and the response body to the client. `pending` holds
    /// the body bytes that arrived with the head. The head goes out in the
    /// same write as the first body bytes (one syscall and one segment for
    /// a small response), and one buffer serves every read.
    async fn relay_body(
        &mut self,
        conn: &mut BackendConn,
        framing: BodyFraming,
        head: Vec<u8>,
        mut pending: Vec<u8>,
        rec: &mut RequestRecord,
    ) -> BodyEnd {
        let idle = self.shared.timeouts.response_body_idle;
        let mut scanner = ChunkedScanner::new();
        let mut remaining = match framing {
            BodyFraming::None => 0,
            BodyFraming::Length(n) => n,
            BodyFraming::Chunked | BodyFraming::CloseDelimited => u64::MAX,
        };
        // What goes to the client next: the head, then body bytes.
        let mut out = head;
        loop {
            // As much of `pending` as belongs to this response.
            let take = match framing {
                BodyFraming::None => 0,
                BodyFraming::Length(_) => {
                    usize::try_from(remaining).map_or(pending.len(), |r| r.min(pending.len()))
                }
                BodyFraming::Chunked => match scanner.feed(&pending) {
                    Ok(p) => p.consumed,
                    Err(e) => return BodyEnd::BackendFailed(format!("bad chunked body: {e}")),
                },
                BodyFraming::CloseDelimited => pending.len(),
            };
            let body = &pending[..take];
            let write = if out.is_empty() {
                self.write_client(body).await
            } else {
                out.extend_from_slice(body);
                let r = self.write_client(&out).await;
                out = Vec::new();
                r
            };
            if write.is_err() {
                return BodyEnd::ClientFailed;
            }
            rec.bytes_out += take as u64;
            if framing != BodyFraming::Chunked {
                remaining = remaining.saturating_sub(take as u64);
            }
            let done = match framing {
                BodyFraming::Chunked => scanner.is_done(),
                _ => remaining == 0,
            };
            if done {
                // Bytes past the end of the response: the backend broke
                // framing, so its connection is not reused.
                return BodyEnd::Complete {
                    reusable: pending.len() == take,
                };
            }
            let want = match framing {
                BodyFraming::Length(_) => {
                    usize::try_from(remaining).map_or(CHUNK, |r| r.min(CHUNK))
                }
                _ => CHUNK,
            };
            pending.clear();
            pending.reserve(want);
            let mut limited = (&mut conn.stream).take(want as u64);
            match tokio::time::timeout(idle, limited.read_buf(&mut pending)).await {
                Ok(Ok(0)) if framing == BodyFraming::CloseDelimited => {
                    return BodyEnd::Complete { reusable: false };
                }
                Ok(Ok(0)) => {
                    return BodyEnd::BackendFailed("backend closed mid-response".to_owned());
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return BodyEnd::BackendFailed(format!("backend read: {e}")),
                Err(_) => return BodyEnd::BackendFailed("backend stalled mid-response".to_owned()),
            }
        }
    }

    async fn write_client(&mut self, bytes: &[u8]) -> io::Result<()> {
        match tokio::time::timeout(self.shared.timeouts.client_io, self.stream.write_all(bytes))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// The backend's response is unusable and nothing of it was sent: 502,
    /// and the connection to that backend is dropped (not pooled).
    async fn fail_before_response(
        &mut self,
        rec: &mut RequestRecord,
        t0: Instant,
        why: &str,
    ) -> Next {
        let rec = std::mem::take(rec);
        self.finish_local(rec, t0, Reject::close(502, why)).await
    }

    /// Answers with a local response, records it, and says whether the
    /// connection goes on.
    async fn finish_local(&mut self, mut rec: RequestRecord, t0: Instant, reject: Reject) -> Next {
        let bytes = respond::error(reject.status, &reject.detail, reject.close);
        let _ = self.write_client(&bytes).await;
        rec.status = reject.status;
        rec.bytes_out += bytes.len() as u64;
        rec.error = Some(reject.detail);
        rec.path_taken = Some(ResponsePath::Local);
        rec.t_done_ms = Some(ms(t0.elapsed()));
        self.shared.metrics.record(&rec);
        self.shared.access_log.log(rec, &self.shared.metrics);
        if reject.close {
            Next::Close
        } else {
            Next::Continue
        }
    }
}

enum BodyEnd {
    Complete { reusable: bool },
    BackendFailed(String),
    ClientFailed,
}

enum HeadFailure {
    /// EOF or reset before any byte.
    ClosedEarly,
    Timeout,
    Invalid(String),
}

/// The decision on an arm the datapath has taken (a response segment
/// came): in the ring, or about to be.
async fn decision_underway(a: &mut Armed) -> Result<Event, String> {
    a.look();
    match tokio::time::timeout(Duration::from_secs(1), a.next()).await {
        Ok(Some(ev)) => Ok(ev),
        _ => Err("splice decision lost".into()),
    }
}

async fn read_response_head(
    conn: &mut BackendConn,
    wait: Duration,
    limits: &http::Limits,
) -> Result<(ResponseHead, Vec<u8>), HeadFailure> {
    parse_after(conn, Vec::with_capacity(CHUNK), wait, limits).await
}

/// Parses a response head from `buf` plus what the backend sends next.
/// Returns the head and the bytes after it.
async fn parse_after(
    conn: &mut BackendConn,
    mut buf: Vec<u8>,
    wait: Duration,
    limits: &http::Limits,
) -> Result<(ResponseHead, Vec<u8>), HeadFailure> {
    let deadline = tokio::time::Instant::now() + wait;
    let got_any = !buf.is_empty();
    loop {
        match parse_response_head(&buf, limits) {
            Ok(Parsed::Complete { head, len }) => {
                let after_head = buf.split_off(len);
                return Ok((head, after_head));
            }
            Ok(Parsed::Partial) => {}
            Err(e) => return Err(HeadFailure::Invalid(format!("backend response head: {e}"))),
        }
        buf.reserve(CHUNK);
        match tokio::time::timeout_at(deadline, conn.stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) if buf.is_empty() && !got_any => return Err(HeadFailure::ClosedEarly),
            Ok(Ok(0)) => {
                return Err(HeadFailure::Invalid(
                    "backend closed in the middle of the response head".to_owned(),
                ));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e))
                if buf.is_empty()
                    && !got_any
                    && matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ) =>
            {
                return Err(HeadFailure::ClosedEarly);
            }
            Ok(Err(e)) => return Err(HeadFailure::Invalid(format!("backend read: {e}"))),
            Err(_) => return Err(HeadFailure::Timeout),
        }
    }
}

/// A relayed response's reason. The datapath reported it before the first
/// byte reached S, but the event reader may not have handed it over yet:
/// wait for it briefly.
async fn note_relay_reason(a: &mut Armed, rec: &mut RequestRecord) {
    let ev = match a.try_next() {
        Some(ev) => Some(ev),
        None => tokio::time::timeout(Duration::from_millis(200), a.next())
            .await
            .ok()
            .flatten(),
    };
    if let Some(ev) = ev
        && ev.kind == event::RELAY
    {
        rec.path_reason = Some(relay::name(ev.reason));
    }
}

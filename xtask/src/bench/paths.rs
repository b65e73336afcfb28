//! The datapath's cost per path, in isolation: each TC path run through
//! `BPF_PROG_TEST_RUN` on one fixed packet and map state, timed by the
//! kernel around the program run alone. `ns/pkt` in the run tables mixes
//! every path a workload takes (and what the machine does meanwhile);
//! these figures take them apart.
//!
//! Every figure is the median of single runs, each checked for the
//! verdict of its path, and the splice counters checked to have grown by
//! one per run: a repeated test run hands each repetition the skb the one
//! before rewrote, so after the first it would time a packet no flow
//! knows. A single run's time includes the test-run timer's own share:
//! the first row, a frame the datapath leaves to the stack at once, is
//! that floor.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use anyhow::{Context as _, Result};
use distributor_common::{
    flow::{Arm, BackendFlow, ClientFlow, counter, event, flags as fl, state},
    splice::{
        seq::{Region, Shift},
        timestamps::TsMap,
    },
};
use distributor_tests::progtest::{
    Datapath, Hook, Segment, TC_ACT_OK, TC_ACT_REDIRECT, flow_key, opt,
};
use serde_json::{Value, json};

const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 40_000);
const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 80);
const BACKEND: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 6), 80);
const GATEWAY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 5), 50_000);
/// A 10 MB region: backend `[1_000_000, ...)` onto client `[5_000_000, ...)`.
const REGION: Region = Region {
    s0: 1_000_000,
    c0: 5_000_000,
    len: 10_000_000,
};
/// The first segment of a 1 KiB response as nginx sends it.
const NGINX_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
Date: Mon, 23 Nov 2026 19:40:21 GMT\r\nContent-Type: application/octet-stream\r\n\
Content-Length: 1024\r\nLast-Modified: Mon, 23 Nov 2026 19:40:00 GMT\r\n\
Connection: keep-alive\r\nETag: \"6741f0e0-400\"\r\nX-Backend: b1\r\nAccept-Ranges: bytes\r\n\r\n";

/// Single runs per figure.
const RUNS: usize = 1_001;

/// One path's cost.
#[derive(Debug, Clone)]
pub struct PathCost {
    pub path: String,
    /// How it was timed.
    pub how: &'static str,
    pub runs: u64,
    pub ns_per_run: f64,
}

impl PathCost {
    pub fn to_json(&self) -> Value {
        json!({
            "path": self.path,
            "how": self.how,
            "runs": self.runs,
            "ns_per_run": self.ns_per_run,
        })
    }
}

/// Measures every path, in a thread of its own (loading moves the calling
/// thread into a network namespace of its own).
pub fn measure() -> Result<Vec<PathCost>> {
    std::thread::spawn(measure_here)
        .join()
        .map_err(|_| anyhow::anyhow!("the per-path measurement panicked"))
        .and_then(|r| r)
        .context("timing the datapath's paths (needs root and the eBPF object)")
}

fn client(st: u32) -> ClientFlow {
    ClientFlow {
        conn_id: 9,
        bytes_spliced: 2896,
        regions_done: 3,
        backend: flow_key(BACKEND, GATEWAY),
        region: if st == state::SPLICING {
            REGION
        } else {
            Region::default()
        },
        state: st,
        shift: Shift::new(),
        sent_end: REGION.c0.wrapping_add(2896),
        c_ack: 0x1111_2222,
        ts_last_sent: 500_100,
        ts_recent: 77,
        ts_map: TsMap {
            offset: 300_000,
            first: 500_000,
        },
        ifindex: 1,
        flags: fl::TIMESTAMPS | fl::SACK | fl::LEARNED | fl::TS_RECENT,
        c_window: 0x1f5,
        client_wscale: 7,
        c_wscale: 9,
        c_acked: 0,
    }
}

fn backend(st: u32) -> BackendFlow {
    BackendFlow {
        arm_id: 42,
        bytes_spliced: 2896,
        client: flow_key(CLIENT, VIP),
        region: if st == state::SPLICING {
            REGION
        } else {
            Region::default()
        },
        state: st,
        shift: Shift::new(),
        acked_end: REGION.s0.wrapping_add(1448),
        snd_nxt: 7000,
        ts_last_sent: 9000,
        ifindex: 3,
        flags: fl::TIMESTAMPS | fl::SACK | fl::LEARNED | fl::S_ACKED,
        s_wscale: 9,
        pad: 0,
        client_window: u16::MAX,
        s_acked: 7000,
    }
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// `path`, timed: the median of [`RUNS`] single runs of `hook` on
/// `frame`, `setup` before each; every run must give `verdict`, and
/// splice counter `grows` (if any) must grow by one per run.
fn timed(
    dp: &mut Datapath,
    path: &str,
    hook: Hook,
    frame: &[u8],
    (verdict, grows): (i32, Option<u32>),
    mut setup: impl FnMut(&mut Datapath),
) -> Result<PathCost> {
    let count = |dp: &mut Datapath| grows.map(|c| dp.counters()[c as usize]);
    let before = count(dp);
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        setup(dp);
        let (time, v) = dp.time(hook, frame);
        anyhow::ensure!(v == verdict, "{path}: verdict {v}, not {verdict}");
        times.push(time);
    }
    if let (Some(before), Some(after), Some(c)) = (before, count(dp), grows) {
        anyhow::ensure!(
            after - before == RUNS as u64,
            "{path}: counter {} grew by {} in {RUNS} runs",
            counter::name(c),
            after - before
        );
    }
    times.sort_unstable();
    Ok(PathCost {
        path: path.to_owned(),
        how: "single runs, median",
        runs: RUNS as u64,
        ns_per_run: ns(times[RUNS / 2]),
    })
}

fn measure_here() -> Result<Vec<PathCost>> {
    let mut dp = Datapath::load();
    let mut out = Vec::new();
    dp.reset();
    dp.set_client(flow_key(CLIENT, VIP), client(state::SPLICING));
    dp.set_backend(flow_key(BACKEND, GATEWAY), backend(state::SPLICING));
    // An ARP request: no IPv4, left to the stack after the count.
    let mut arp = vec![0xff_u8; 6];
    arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 198, 51, 100, 2]);
    arp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 203, 0, 113, 1]);
    out.push(timed(
        &mut dp,
        "a frame left to the stack at once (ARP): the timer's share, the count",
        Hook::Ingress,
        &arp,
        (TC_ACT_OK, None),
        |_| {},
    )?);
    let data = Segment::new(BACKEND, GATEWAY)
        .seq(1_002_896)
        .ack(7000)
        .window(0x800)
        .options(opt::ts(200_150, 9000))
        .payload(&[b'x'; 1448])
        .frame();
    out.push(timed(
        &mut dp,
        "region data segment, 1448 bytes, TS: spliced to the client",
        Hook::Ingress,
        &data,
        (TC_ACT_REDIRECT, Some(counter::SEGMENTS)),
        |_| {},
    )?);
    let ack = Segment::new(CLIENT, VIP)
        .seq(0x1111_2222)
        .ack(5_004_344)
        .window(0x100)
        .options(opt::ts(88, 500_100))
        .frame();
    out.push(timed(
        &mut dp,
        "client ACK of region bytes: to the backend",
        Hook::Ingress,
        &ack,
        (TC_ACT_REDIRECT, Some(counter::ACKS)),
        |_| {},
    )?);
    let s_ack = Segment::new(GATEWAY, BACKEND)
        .seq(7000)
        .ack(1_000_000)
        .window(0x100)
        .options(opt::ts(9001, 200_000))
        .frame();
    // No counter for this one: its output shows the translation.
    let translated = dp.run(Hook::Egress, &s_ack, 0).frame;
    anyhow::ensure!(
        translated.len() == s_ack.len() && translated != s_ack,
        "S's ACK left untranslated"
    );
    out.push(timed(
        &mut dp,
        "S's ACK during a region: egress, numbers translated",
        Hook::Egress,
        &s_ack,
        (TC_ACT_OK, None),
        |_| {},
    )?);
    let mut payload = NGINX_HEAD.to_vec();
    payload.extend_from_slice(&[b'y'; 1024]);
    let first = Segment::new(BACKEND, GATEWAY)
        .seq(1_000_000)
        .ack(7000)
        .window(0x800)
        .options(opt::ts(200_000, 9000))
        .payload(&payload)
        .frame();
    // The decision removes the arm: the maps are set up afresh before
    // each run (which zeroes the counters; the events of the last run
    // show the decision).
    out.push(timed(
        &mut dp,
        &format!(
            "first segment of a 1 KiB response ({}-byte head): decided and spliced",
            NGINX_HEAD.len()
        ),
        Hook::Ingress,
        &first,
        (TC_ACT_REDIRECT, None),
        |dp| {
            dp.reset();
            dp.set_client(flow_key(CLIENT, VIP), client(state::IDLE));
            dp.set_backend(flow_key(BACKEND, GATEWAY), backend(state::IDLE));
            dp.set_arm(
                flow_key(BACKEND, GATEWAY),
                Arm {
                    id: 1,
                    // The client entry's (`client`).
                    conn_id: 9,
                    client: flow_key(CLIENT, VIP),
                    c0: REGION.c0,
                    s0: REGION.s0,
                    c_ack: 0x1111_2222,
                    c_window: 0x1f5,
                    request: 0,
                    wake: 0,
                    client_mss: 1448,
                    client_window: 1 << 20,
                    c_acked: 0,
                },
            );
        },
    )?);
    let events = dp.take_events();
    anyhow::ensure!(
        !events.is_empty() && events.iter().all(|e| e.kind == event::SPLICE),
        "the first segment was not spliced: {events:?}"
    );
    Ok(out)
}

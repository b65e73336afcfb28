//! `BPF_PROG_TEST_RUN` fixture tables for the TC splice programs
//! (`distributor-ebpf/src/splice.rs`) and the XDP fast path
//! (`distributor-ebpf/src/splice_xdp.rs`): one table per rewrite; each row
//! is map state before, an input frame, and the expected verdict, output
//! bytes (checksums written out), mark, map state after and events (and,
//! for XDP, the splice counters).
//!
//! Expected numbers are worked out by hand in the rows' comments, not with
//! `distributor_common::splice`; frames and their checksums come from
//! `distributor_tests::progtest` (full recomputation).
//!
//! `datapath_bugs` holds the rows that show a datapath bug: they state the
//! correct behaviour and fail until the bug is fixed.
//!
//! Needs root and the object built (`cargo build -p distributor`); run with
//! `cargo test -p distributor-tests --test fixtures`.

use std::net::{Ipv4Addr, SocketAddrV4};

use distributor_common::{
    flow::{
        ACK_TO_BACKEND_MARK, ACK_TO_S_MARK, Arm, BackendFlow, ClientFlow, Event, FlowKey,
        SPLICED_MARK, counter, event, flags as fl, state,
    },
    maps::hook,
    reason,
    splice::{
        relay,
        seq::{Region, Shift},
        timestamps::TsMap,
    },
};
use distributor_tests::progtest::{
    Datapath, Fixture, Hook, Segment, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, Veth, XDP_PASS,
    XDP_REDIRECT, flow_key, opt, run_table, tcp_flags,
};

/// The client and the virtual IP it talks to.
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 40_000);
const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 80);
/// The backend and the gateway's side of the pooled connection to it.
const BACKEND: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 6), 80);
const GATEWAY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 5), 50_000);
/// A client the maps know nothing about.
const STRANGER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 3), 40_001);

/// `skb->ifindex` under `BPF_PROG_TEST_RUN`: the namespace's loopback.
const TEST_IFINDEX: u32 = 1;

/// A region in plain numbers: backend `[1_000_000, 1_010_000)` onto
/// client `[5_000_000, 5_010_000)`.
const R1: Region = Region {
    s0: 1_000_000,
    c0: 5_000_000,
    len: 10_000,
};
/// A region where both spaces wrap: backend `[2^32 - 0x100, 0xF00)` onto
/// client `[2^32 - 0x10, 0xFF0)`.
const RW: Region = Region {
    s0: 0xFFFF_FF00,
    c0: 0xFFFF_FFF0,
    len: 0x1000,
};

/// The client's latest `TSval` as C's flow holds it.
const TS_RECENT: u32 = 0x0BAD_F00D;
/// A newer client `TSval`, carried by the client's segments in the rows.
const TS_CLIENT: u32 = 0x0BAD_F10D;
/// The region's backend clock: its first `TSval` (200000) went out as
/// 500000 (the client had been sent up to 499999).
const TS_MAP: TsMap = TsMap {
    offset: 300_000,
    first: 500_000,
};
/// S's sequence end toward the backend, and S's last `TSval`.
const S_SND_NXT: u32 = 7000;
const S_TS: u32 = 9000;
/// C's acknowledgement and window as last sent to the client.
const C_ACK: u32 = 0x1111_2222;
const C_WINDOW: u16 = 0x01F5;

/// Bytes spliced into a client connection whose windows are past the
/// slow start (`window::slow_start_cap` is then above every window in the
/// rows): what the backend is offered is the client's window, rescaled.
const PAST_SLOW_START: u64 = 1 << 24;

fn ckey() -> FlowKey {
    flow_key(CLIENT, VIP)
}

fn bkey() -> FlowKey {
    flow_key(BACKEND, GATEWAY)
}

/// `n` payload bytes, `abc...`.
fn body(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| b'a' + u8::try_from(i % 26).expect("below 26"))
        .collect()
}

/// C's flow while `region` splices: 2896 bytes sent so far (two segments),
/// the client's `TSval` stream at 500100.
fn splicing_client(region: Region) -> ClientFlow {
    ClientFlow {
        conn_id: 9,
        bytes_spliced: 2896,
        regions_done: 3,
        backend: bkey(),
        region,
        state: state::SPLICING,
        shift: Shift::new(),
        sent_end: region.c0.wrapping_add(2896),
        c_ack: C_ACK,
        ts_last_sent: 500_100,
        ts_recent: TS_RECENT,
        ts_map: TS_MAP,
        ifindex: 5,
        flags: fl::TIMESTAMPS | fl::SACK | fl::LEARNED | fl::TS_RECENT,
        c_window: C_WINDOW,
        client_wscale: 7,
        c_wscale: 9,
        c_acked: 0,
    }
}

/// S's flow while `region` splices: the backend has been told 1448 region
/// bytes are acknowledged.
fn splicing_backend(region: Region) -> BackendFlow {
    BackendFlow {
        arm_id: 42,
        bytes_spliced: 2896,
        client: ckey(),
        region,
        state: state::SPLICING,
        shift: Shift::new(),
        acked_end: region.s0.wrapping_add(1448),
        snd_nxt: S_SND_NXT,
        ts_last_sent: S_TS,
        ifindex: 3,
        flags: fl::TIMESTAMPS | fl::SACK | fl::LEARNED | fl::S_ACKED,
        s_wscale: 9,
        pad: 0,
        client_window: 0x0080,
        // S's request is acknowledged: the backend's segments in the rows
        // carry `ack = S_SND_NXT`.
        s_acked: S_SND_NXT,
    }
}

/// C's flow between regions, `spliced` bytes of completed regions behind.
fn idle_client(spliced: u32) -> ClientFlow {
    ClientFlow {
        state: state::IDLE,
        region: Region::default(),
        sent_end: 0,
        shift: Shift { spliced },
        ..splicing_client(R1)
    }
}

/// S's flow between regions.
fn idle_backend(spliced: u32) -> BackendFlow {
    BackendFlow {
        state: state::IDLE,
        region: Region::default(),
        acked_end: 0,
        shift: Shift { spliced },
        ..splicing_backend(R1)
    }
}

/// The arm of the next response on S: socket values (no shift).
fn arm(c0: u32, s0: u32) -> Arm {
    Arm {
        id: 77,
        // The client entry's (`splicing_client`).
        conn_id: 9,
        client: ckey(),
        c0,
        s0,
        c_ack: C_ACK,
        c_window: C_WINDOW,
        request: 0,
        wake: 0,
        client_mss: 1448,
        client_window: 1 << 20,
        c_acked: 0,
    }
}

fn ev(id: u64, kind: u32, reason: u32, len: u32) -> Event {
    Event {
        id,
        kind,
        reason,
        len,
        pad: 0,
    }
}

/// A row with no map state: the maps and events are added with struct
/// update syntax. The mark out is the redirect's for a TC REDIRECT, else 0;
/// counters unchecked.
fn row(
    name: &'static str,
    hook: Hook,
    input: Segment,
    verdict: i32,
    output: Segment,
    checksums: (u16, u16),
) -> Fixture {
    Fixture {
        name,
        hook,
        clients: Vec::new(),
        backends: Vec::new(),
        arms: Vec::new(),
        mark: 0,
        input,
        verdict,
        output,
        checksums,
        mark_out: if hook != Hook::Xdp && verdict == TC_ACT_REDIRECT {
            SPLICED_MARK
        } else {
            0
        },
        clients_after: Vec::new(),
        backends_after: Vec::new(),
        arms_after: Vec::new(),
        events: Vec::new(),
        counters: None,
        bug: None,
    }
}

fn datapath() -> Datapath {
    assert!(
        distributor_tests::is_root(),
        "these tests need root (bpf(2)): run them with `cargo xtask test` or as root"
    );
    Datapath::load()
}

/// Backend segments inside a splicing region: into the client's
/// connection (VIP:80 -> client), `seq = c0 + (seq - s0)`, C's ack and
/// window, `TSval` through the region's map (never below what the client
/// saw), `TSecr` the client's latest, SACK removed; redirected and marked.
#[test]
fn splice_backend_segment() {
    let mut dp = datapath();
    let payload = body(64);
    let c = splicing_client(R1);
    let b = splicing_backend(R1);
    let cw = ClientFlow {
        ts_map: TsMap {
            offset: 0x8000_0000,
            first: 0xFFFF_FFF0,
        },
        ts_last_sent: 0xFFFF_FFF5,
        // Spliced up to s0 + 0x110 so far.
        sent_end: 0x0000_0100,
        ..splicing_client(RW)
    };
    let bw = splicing_backend(RW);
    let rows = [
        Fixture {
            clients: vec![(ckey(), c)],
            backends: vec![(bkey(), b)],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    // 5_002_896 + 64
                    sent_end: 5_002_960,
                    ts_last_sent: 500_150,
                    bytes_spliced: 2960,
                    ..c
                },
            )],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    bytes_spliced: 2960,
                    ifindex: TEST_IFINDEX,
                    ..b
                },
            )],
            ..row(
                "mid-region segment: seq c0 + 2896, TSval 200_150 + 300_000",
                Hook::Ingress,
                Segment::new(BACKEND, GATEWAY)
                    .seq(1_002_896)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(200_150, S_TS))
                    .payload(&payload),
                TC_ACT_REDIRECT,
                Segment::new(VIP, CLIENT)
                    .seq(5_002_896)
                    .ack(C_ACK)
                    .window(C_WINDOW)
                    .options(opt::ts(500_150, TS_RECENT))
                    .payload(&payload),
                (0x871e, 0xc68c),
            )
        },
        Fixture {
            clients: vec![(ckey(), cw)],
            backends: vec![(bkey(), bw)],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    // 0x100 + 64
                    sent_end: 0x0000_0140,
                    ts_last_sent: 0x0000_0010,
                    bytes_spliced: 2960,
                    ..cw
                },
            )],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    bytes_spliced: 2960,
                    ifindex: TEST_IFINDEX,
                    ..bw
                },
            )],
            ..row(
                "s0, c0 near 2^32: seq 0x10 = s0 + 0x110 -> c0 + 0x110 = 0x100; \
                 TSval 0x8000_0010 + 0x8000_0000 wraps to 0x10, still after 0xFFFF_FFF5",
                Hook::Ingress,
                Segment::new(BACKEND, GATEWAY)
                    .seq(0x0000_0010)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(0x8000_0010, S_TS))
                    .payload(&payload),
                TC_ACT_REDIRECT,
                Segment::new(VIP, CLIENT)
                    .seq(0x0000_0100)
                    .ack(C_ACK)
                    .window(C_WINDOW)
                    .options(opt::ts(0x0000_0010, TS_RECENT))
                    .payload(&payload),
                (0x871e, 0xbe16),
            )
        },
        Fixture {
            clients: vec![(ckey(), c)],
            backends: vec![(bkey(), b)],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    // sent_end stays 5_002_896 (> 5_000_064); TSval clamped.
                    bytes_spliced: 2960,
                    ..c
                },
            )],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    bytes_spliced: 2960,
                    ifindex: TEST_IFINDEX,
                    ..b
                },
            )],
            ..row(
                "retransmitted first segment: seq s0 -> c0, TSval 500_050 clamped to \
                 ts_last_sent 500_100, the backend's SACK block becomes NOPs",
                Hook::Ingress,
                Segment::new(BACKEND, GATEWAY)
                    .seq(1_000_000)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts_sack(200_050, S_TS, &[(6500, 6600)]))
                    .payload(&payload),
                TC_ACT_REDIRECT,
                Segment::new(VIP, CLIENT)
                    .seq(5_000_000)
                    .ack(C_ACK)
                    .window(C_WINDOW)
                    .options(opt::padded(opt::ts(500_100, TS_RECENT), 24))
                    .payload(&payload),
                (0x8712, 0x9bfc),
            )
        },
        Fixture {
            clients: vec![(ckey(), c)],
            backends: vec![(bkey(), b)],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    ts_last_sent: 500_150,
                    ..c
                },
            )],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    ifindex: TEST_IFINDEX,
                    ..b
                },
            )],
            ..row(
                "window probe (no data at acked_end - 1 = s0 + 1447): to the client at \
                 c0 + 1447, as a spliced segment",
                Hook::Ingress,
                Segment::new(BACKEND, GATEWAY)
                    .seq(1_001_447)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(200_150, S_TS)),
                TC_ACT_REDIRECT,
                Segment::new(VIP, CLIENT)
                    .seq(5_001_447)
                    .ack(C_ACK)
                    .window(C_WINDOW)
                    .options(opt::ts(500_150, TS_RECENT)),
                (0x875e, 0x5021),
            )
        },
        Fixture {
            clients: vec![(ckey(), c)],
            backends: vec![(bkey(), b)],
            clients_after: vec![(ckey(), c)],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    ifindex: TEST_IFINDEX,
                    flags: b.flags | fl::BROKEN,
                    ..b
                },
            )],
            ..row(
                "segment straddling the region's end (s_end - 20, 64 bytes): dropped, \
                 the backend connection marked broken (never reused)",
                Hook::Ingress,
                Segment::new(BACKEND, GATEWAY)
                    .seq(1_009_980)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(200_150, S_TS))
                    .payload(&payload),
                TC_ACT_SHOT,
                Segment::new(BACKEND, GATEWAY)
                    .seq(1_009_980)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(200_150, S_TS))
                    .payload(&payload),
                (0x694a, 0xed80),
            )
        },
    ];
    run_table(&mut dp, "splice", &rows);
}

/// Client pure ACKs of region bytes: into the backend connection
/// (gateway:port -> backend), `seq = snd_nxt`, `ack = s0 + (ack - c0)`,
/// window rescaled, `TSval` S's last, `TSecr` mapped back to the backend's
/// clock, SACK blocks clipped to the region and moved; redirected. The ACK
/// of `c0 + len` completes the region.
#[test]
fn client_ack_to_backend() {
    let mut dp = datapath();
    let c = ClientFlow {
        bytes_spliced: PAST_SLOW_START,
        ..splicing_client(R1)
    };
    let b = splicing_backend(R1);
    let cw = ClientFlow {
        ts_map: TsMap {
            offset: 0x8000_0000,
            first: 0xFFFF_FFF0,
        },
        client_wscale: 2,
        bytes_spliced: PAST_SLOW_START,
        ..splicing_client(RW)
    };
    // The first response on this client connection: 2896 bytes spliced.
    let c_new = splicing_client(R1);
    let bw = BackendFlow {
        s_wscale: 0,
        // The backend has been told s0 + 0x10 (just before the wrap).
        acked_end: 0xFFFF_FF10,
        ..splicing_backend(RW)
    };
    let cd = ClientFlow {
        shift: Shift {
            spliced: 0xFFFF_F000,
        },
        sent_end: R1.c0 + R1.len,
        ..c
    };
    let bd = BackendFlow {
        shift: Shift {
            spliced: 0xFFFF_FF00,
        },
        acked_end: 1_008_552,
        ..b
    };
    let learned = |c: ClientFlow| ClientFlow {
        ifindex: TEST_IFINDEX,
        ts_recent: TS_CLIENT,
        ..c
    };
    let rows = [
        Fixture {
            clients: vec![(ckey(), c)],
            backends: vec![(bkey(), b)],
            clients_after: vec![(ckey(), learned(c))],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    acked_end: 1_002_896,
                    ..b
                },
            )],
            ..row(
                "mid-region ACK c0 + 2896 -> s0 + 2896; window 0x200 << 7 >> 9 = 0x80; \
                 TSecr 500_100 - 300_000; SACK blocks moved, the one reaching below c0 \
                 clipped, the one of C's own bytes dropped (option shrinks, NOPs after)",
                Hook::Ingress,
                Segment::new(CLIENT, VIP)
                    .seq(0x0123_4567)
                    .ack(5_002_896)
                    .window(0x0200)
                    .options(opt::ts_sack(
                        TS_CLIENT,
                        500_100,
                        &[
                            (5_004_344, 5_005_792),
                            (4_999_900, 5_000_100),
                            (4_990_000, 4_991_000),
                        ],
                    )),
                TC_ACT_REDIRECT,
                Segment::new(GATEWAY, BACKEND)
                    .seq(S_SND_NXT)
                    .ack(1_002_896)
                    .window(0x0080)
                    .options(opt::padded(
                        opt::ts_sack(
                            S_TS,
                            200_100,
                            &[(1_004_344, 1_005_792), (1_000_000, 1_000_100)],
                        ),
                        40,
                    )),
                (0x696e, 0xe95d),
            )
        },
        Fixture {
            clients: vec![(ckey(), cw)],
            backends: vec![(bkey(), bw)],
            clients_after: vec![(ckey(), learned(cw))],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    // max(0xFFFF_FF10, 0x110) in sequence space.
                    acked_end: 0x0000_0110,
                    client_window: 0x4000,
                    ..bw
                },
            )],
            ..row(
                "ACK across the wrap: 0x200 = c0 + 0x210 -> s0 + 0x210 = 0x110; \
                 SACK [0x300, 0x400) -> [0x210, 0x310); window 0x1000 << 2 >> 0; \
                 TSecr 0xFFFF_FFF8 - 0x8000_0000",
                Hook::Ingress,
                Segment::new(CLIENT, VIP)
                    .seq(0x0123_4567)
                    .ack(0x0000_0200)
                    .window(0x1000)
                    .options(opt::ts_sack(TS_CLIENT, 0xFFFF_FFF8, &[(0x300, 0x400)])),
                TC_ACT_REDIRECT,
                Segment::new(GATEWAY, BACKEND)
                    .seq(S_SND_NXT)
                    .ack(0x0000_0110)
                    .window(0x4000)
                    .options(opt::ts_sack(S_TS, 0x7FFF_FFF8, &[(0x210, 0x310)])),
                (0x697e, 0xf450),
            )
        },
        Fixture {
            clients: vec![(ckey(), cd)],
            backends: vec![(bkey(), bd)],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    state: state::IDLE,
                    // 0xFFFF_F000 + 10_000 wraps.
                    shift: Shift {
                        spliced: 0x0000_1710,
                    },
                    regions_done: 4,
                    ..learned(cd)
                },
            )],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    state: state::IDLE,
                    shift: Shift {
                        spliced: 0x0000_2610,
                    },
                    acked_end: 1_010_000,
                    ..bd
                },
            )],
            events: vec![ev(42, event::DONE, 0, 10_000)],
            ..row(
                "ACK of c0 + len completes the region: states idle, both shifts += 10_000 \
                 (wrapping), DONE event",
                Hook::Ingress,
                Segment::new(CLIENT, VIP)
                    .seq(0x0123_4567)
                    .ack(5_010_000)
                    .window(0x0200)
                    .options(opt::ts(TS_CLIENT, 500_900)),
                TC_ACT_REDIRECT,
                Segment::new(GATEWAY, BACKEND)
                    .seq(S_SND_NXT)
                    .ack(1_010_000)
                    .window(0x0080)
                    .options(opt::ts(S_TS, 200_900)),
                (0x698a, 0x75ea),
            )
        },
        Fixture {
            clients: vec![(ckey(), c_new)],
            backends: vec![(bkey(), b)],
            clients_after: vec![(ckey(), learned(c_new))],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    client_window: 0x001F,
                    ..b
                },
            )],
            ..row(
                "slow start: 2896 bytes spliced into the client connection so far, it \
                 acknowledges 1448 (c0 + 1448, already the backend's acked_end); it \
                 offers 0x200 << 7 = 65536, the backend is offered \
                 min(65536, 14_600 + 1448) >> 9 = 0x1F",
                Hook::Ingress,
                Segment::new(CLIENT, VIP)
                    .seq(0x0123_4567)
                    .ack(5_001_448)
                    .window(0x0200)
                    .options(opt::ts(TS_CLIENT, 500_100)),
                TC_ACT_REDIRECT,
                Segment::new(GATEWAY, BACKEND)
                    .seq(S_SND_NXT)
                    .ack(1_001_448)
                    .window(0x001F)
                    .options(opt::ts(S_TS, 200_100)),
                (0x698a, 0x9ad3),
            )
        },
    ];
    run_table(&mut dp, "ack-to-backend", &rows);
}

/// Acknowledgements the splice would swallow. A spliced backend segment
/// whose ACK S has not seen, and a client segment for C that acknowledges
/// region bytes, are copied back into ingress (marked); the marked copy is
/// cut to a pure ACK (payload, PSH and FIN gone, IP length and full
/// checksums right) and goes to S at its `rcv_nxt`, or into the backend's
/// connection as a translated client ACK.
#[test]
fn ack_copies() {
    let mut dp = datapath();
    let payload = body(64);
    let request = b"GET /next HTTP/1.1\r\nHost: example\r\n\r\n";
    let c = ClientFlow {
        bytes_spliced: PAST_SLOW_START,
        ..splicing_client(R1)
    };
    let b = splicing_backend(R1);
    // S has had 4096 bytes of earlier regions spliced past it.
    let bs = BackendFlow {
        shift: Shift { spliced: 4096 },
        ..b
    };
    // The region has completed since the copy was made: its numbers stay.
    let bs_done = BackendFlow {
        state: state::IDLE,
        shift: Shift {
            spliced: 4096 + 10_000,
        },
        ..b
    };
    let c_done = ClientFlow {
        state: state::IDLE,
        shift: Shift { spliced: 10_000 },
        sent_end: R1.c0 + R1.len,
        regions_done: 4,
        ..c
    };
    let b_done = BackendFlow {
        state: state::IDLE,
        shift: Shift { spliced: 10_000 },
        ..b
    };
    let copy_of_backend_segment = Segment::new(BACKEND, GATEWAY)
        .seq(1_002_896)
        .ack(S_SND_NXT + 38)
        .flags(tcp_flags::ACK | tcp_flags::PSH)
        .window(0x0800)
        .options(opt::ts(200_150, S_TS))
        .payload(&payload);
    let ack_for_s = Segment::new(BACKEND, GATEWAY)
        // s0 - 4096
        .seq(995_904)
        .ack(S_SND_NXT + 38)
        .window(0x0800)
        .options(opt::ts(200_150, S_TS));
    let rows = [
        Fixture {
            clients: vec![(ckey(), c)],
            backends: vec![(
                bkey(),
                BackendFlow {
                    bytes_spliced: 0,
                    ..b
                },
            )],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    sent_end: 5_002_960,
                    ts_last_sent: 500_150,
                    bytes_spliced: PAST_SLOW_START + 64,
                    ..c
                },
            )],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    bytes_spliced: 64,
                    ifindex: TEST_IFINDEX,
                    s_acked: S_SND_NXT + 38,
                    ..b
                },
            )],
            ..row(
                "spliced segment acknowledging 38 more of S's bytes: spliced as ever, \
                 s_acked follows (its copy goes to ingress)",
                Hook::Ingress,
                Segment::new(BACKEND, GATEWAY)
                    .seq(1_002_896)
                    .ack(S_SND_NXT + 38)
                    .window(0x0800)
                    .options(opt::ts(200_150, S_TS))
                    .payload(&payload),
                TC_ACT_REDIRECT,
                Segment::new(VIP, CLIENT)
                    .seq(5_002_896)
                    .ack(C_ACK)
                    .window(C_WINDOW)
                    .options(opt::ts(500_150, TS_RECENT))
                    .payload(&payload),
                (0x871e, 0xc68c),
            )
        },
        Fixture {
            clients: vec![(ckey(), c)],
            backends: vec![(bkey(), bs)],
            clients_after: vec![(ckey(), c)],
            backends_after: vec![(bkey(), bs)],
            mark: ACK_TO_S_MARK,
            ..row(
                "its copy, region splicing: a pure ACK for S at s0 - 4096 (S's rcv_nxt)",
                Hook::Ingress,
                copy_of_backend_segment.clone(),
                TC_ACT_OK,
                ack_for_s.clone(),
                (0x698a, 0xa842),
            )
        },
        Fixture {
            clients: vec![(ckey(), c)],
            backends: vec![(bkey(), bs_done)],
            clients_after: vec![(ckey(), c)],
            backends_after: vec![(bkey(), bs_done)],
            mark: ACK_TO_S_MARK,
            ..row(
                "its copy, region completed meanwhile: s_end - 14_096, the same rcv_nxt",
                Hook::Ingress,
                copy_of_backend_segment,
                TC_ACT_OK,
                ack_for_s,
                (0x698a, 0xa842),
            )
        },
        Fixture {
            clients: vec![(ckey(), c_done)],
            backends: vec![(bkey(), b_done)],
            clients_after: vec![(ckey(), c_done)],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    acked_end: 1_010_000,
                    ..b_done
                },
            )],
            mark: ACK_TO_BACKEND_MARK,
            ..row(
                "copy of the client's next request + FIN acknowledging c0 + len (the \
                 region completed on the original): a pure ACK of s0 + len for the backend",
                Hook::Ingress,
                Segment::new(CLIENT, VIP)
                    .seq(0x0123_4567)
                    .ack(5_010_000)
                    .flags(tcp_flags::ACK | tcp_flags::PSH | tcp_flags::FIN)
                    .window(0x0200)
                    .options(opt::ts(TS_CLIENT, 500_900))
                    .payload(request),
                TC_ACT_REDIRECT,
                Segment::new(GATEWAY, BACKEND)
                    .seq(S_SND_NXT)
                    .ack(1_010_000)
                    .window(0x0080)
                    .options(opt::ts(S_TS, 200_900)),
                (0x698a, 0x75ea),
            )
        },
        Fixture {
            clients: vec![(ckey(), c_done)],
            backends: vec![(bkey(), b_done)],
            clients_after: vec![(ckey(), c_done)],
            backends_after: vec![(bkey(), b_done)],
            mark: ACK_TO_BACKEND_MARK,
            ..row(
                "copy acknowledging past the last region (c0 + len + 38): cut, then dropped",
                Hook::Ingress,
                Segment::new(CLIENT, VIP)
                    .seq(0x0123_4567)
                    .ack(5_010_038)
                    .flags(tcp_flags::ACK | tcp_flags::PSH)
                    .window(0x0200)
                    .options(opt::ts(TS_CLIENT, 500_900))
                    .payload(request),
                TC_ACT_SHOT,
                Segment::new(CLIENT, VIP)
                    .seq(0x0123_4567)
                    .ack(5_010_038)
                    .window(0x0200)
                    .options(opt::ts(TS_CLIENT, 500_900)),
                (0x875e, 0x1742),
            )
        },
    ];
    run_table(&mut dp, "ack-copies", &rows);
}

/// Segments between the peers and the gateway's own sockets: the spliced
/// bytes are taken out on the way in and put back on the way out, so each
/// socket sees a consistent stream and each peer too.
#[test]
fn socket_consistency() {
    let mut dp = datapath();
    let c = splicing_client(R1);
    let b = splicing_backend(R1);
    let request = b"GET /next HTTP/1.1\r\nHost: example\r\n\r\n";

    let b8 = idle_backend(0x300);
    let b9 = BackendFlow {
        shift: Shift { spliced: 1000 },
        ..b
    };
    let c10 = ClientFlow {
        flags: fl::TIMESTAMPS | fl::SACK | fl::LEARNED,
        ..idle_client(10_000)
    };
    let cd = ClientFlow {
        sent_end: R1.c0 + R1.len,
        ..c
    };
    let c12 = ClientFlow {
        flags: fl::TIMESTAMPS | fl::SACK | fl::TS_RECENT,
        ..idle_client(0xFFFF_F000)
    };
    let b14 = BackendFlow {
        shift: Shift { spliced: 0x100 },
        acked_end: 1_002_896,
        snd_nxt: 6500,
        ..b
    };
    let b15 = BackendFlow {
        flags: fl::TIMESTAMPS | fl::SACK,
        snd_nxt: 0,
        ..idle_backend(0xFFFF_FF00)
    };
    // S's request goes out under an arm. The client connection has had
    // 2896 bytes spliced (its slow start allows 17_496), or many more.
    let b16 = idle_backend(1000);
    let a16 = arm(5_000_000, 999_000);
    let c16 = idle_client(10_000);
    let c17 = ClientFlow {
        bytes_spliced: PAST_SLOW_START,
        ..c16
    };
    let a17 = Arm {
        client_window: 20_000,
        ..a16
    };
    // The client's window was closed when the control plane armed.
    let a18 = Arm {
        client_window: 0,
        ..a16
    };
    // 1 MiB went through C (relayed) before.
    let a19 = Arm {
        c_acked: 1 << 20,
        ..a16
    };
    let request_under_arm = |window: u16| {
        Segment::new(GATEWAY, BACKEND)
            .flags(0x18)
            .seq(S_SND_NXT)
            .ack(201_000)
            .window(window)
            .options(opt::ts(9300, 200_400))
            .payload(request)
    };
    let after_request = |b: BackendFlow, client_window: u16| BackendFlow {
        // The request's 37 bytes.
        snd_nxt: S_SND_NXT + 37,
        ts_last_sent: 9300,
        client_window,
        ..b
    };
    let rows = [
        Fixture {
            backends: vec![(bkey(), b8)],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    ifindex: TEST_IFINDEX,
                    ..b8
                },
            )],
            ..row(
                "backend -> S, no region: seq 0x100 - shift 0x300 wraps to 0xFFFF_FE00",
                Hook::Ingress,
                Segment::new(BACKEND, GATEWAY)
                    .seq(0x0000_0100)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(200_500, S_TS))
                    .payload(&body(20)),
                TC_ACT_OK,
                Segment::new(BACKEND, GATEWAY)
                    .seq(0xFFFF_FE00)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(200_500, S_TS))
                    .payload(&body(20)),
                (0x6976, 0xb30a),
            )
        },
        Fixture {
            clients: vec![(ckey(), c)],
            backends: vec![(bkey(), b9)],
            clients_after: vec![(ckey(), c)],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    ifindex: TEST_IFINDEX,
                    ..b9
                },
            )],
            ..row(
                "backend -> S while splicing: pure ACK at s_end collapses to s0, \
                 then - shift 1000",
                Hook::Ingress,
                Segment::new(BACKEND, GATEWAY)
                    .seq(1_010_000)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(200_500, S_TS)),
                TC_ACT_OK,
                Segment::new(BACKEND, GATEWAY)
                    .seq(999_000)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(200_500, S_TS)),
                (0x698a, 0x9af2),
            )
        },
        Fixture {
            clients: vec![(ckey(), c10)],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    ifindex: TEST_IFINDEX,
                    ts_recent: TS_CLIENT,
                    flags: c10.flags | fl::TS_RECENT,
                    ..c10
                },
            )],
            ..row(
                "client -> C, no region: ack and SACK edges - shift 10_000; TSval learned",
                Hook::Ingress,
                Segment::new(CLIENT, VIP)
                    .seq(0x0123_4567)
                    .ack(5_010_500)
                    .window(0x0200)
                    .options(opt::ts_sack(TS_CLIENT, 600_000, &[(5_010_600, 5_010_700)])),
                TC_ACT_OK,
                Segment::new(CLIENT, VIP)
                    .seq(0x0123_4567)
                    .ack(5_000_500)
                    .window(0x0200)
                    .options(opt::ts_sack(TS_CLIENT, 600_000, &[(5_000_600, 5_000_700)])),
                (0x8752, 0xe722),
            )
        },
        Fixture {
            clients: vec![(ckey(), cd)],
            backends: vec![(bkey(), b)],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    state: state::IDLE,
                    shift: Shift { spliced: 10_000 },
                    regions_done: 4,
                    ifindex: TEST_IFINDEX,
                    ts_recent: TS_CLIENT,
                    ..cd
                },
            )],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    state: state::IDLE,
                    shift: Shift { spliced: 10_000 },
                    ..b
                },
            )],
            events: vec![ev(42, event::DONE, 0, 10_000)],
            ..row(
                "client request acking c0 + len (to C): ack collapses to c0, region completes",
                Hook::Ingress,
                Segment::new(CLIENT, VIP)
                    .seq(0x0123_4567)
                    .ack(5_010_000)
                    .window(0x0200)
                    .options(opt::ts(TS_CLIENT, 500_900))
                    .payload(request),
                TC_ACT_OK,
                Segment::new(CLIENT, VIP)
                    .seq(0x0123_4567)
                    .ack(5_000_000)
                    .window(0x0200)
                    .options(opt::ts(TS_CLIENT, 500_900))
                    .payload(request),
                (0x8739, 0xec5c),
            )
        },
        Fixture {
            clients: vec![(ckey(), c12)],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    c_ack: 0x1111_3333,
                    c_window: 0x0123,
                    flags: c12.flags | fl::LEARNED,
                    ..c12
                },
            )],
            ..row(
                "C -> client, no region: seq 0x1800 + shift 0xFFFF_F000 wraps to 0x800; \
                 TSval 400_000 raised to ts_last_sent 500_100",
                Hook::Egress,
                Segment::new(VIP, CLIENT)
                    .seq(0x0000_1800)
                    .ack(0x1111_3333)
                    .window(0x0123)
                    .options(opt::ts(400_000, TS_RECENT))
                    .payload(&body(20)),
                TC_ACT_OK,
                Segment::new(VIP, CLIENT)
                    .seq(0x0000_0800)
                    .ack(0x1111_3333)
                    .window(0x0123)
                    .options(opt::ts(500_100, TS_RECENT))
                    .payload(&body(20)),
                (0x874a, 0x60f9),
            )
        },
        Fixture {
            clients: vec![(ckey(), c)],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    c_ack: 0x1111_2300,
                    c_window: 0x01F0,
                    ts_last_sent: 600_000,
                    ..c
                },
            )],
            ..row(
                "C -> client while splicing: seq c0 becomes sent_end c0 + 2896; \
                 a newer own TSval is kept",
                Hook::Egress,
                Segment::new(VIP, CLIENT)
                    .seq(5_000_000)
                    .ack(0x1111_2300)
                    .window(0x01F0)
                    .options(opt::ts(600_000, TS_CLIENT)),
                TC_ACT_OK,
                Segment::new(VIP, CLIENT)
                    .seq(5_002_896)
                    .ack(0x1111_2300)
                    .window(0x01F0)
                    .options(opt::ts(600_000, TS_CLIENT)),
                (0x875e, 0xc293),
            )
        },
        Fixture {
            backends: vec![(bkey(), b14)],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    snd_nxt: S_SND_NXT,
                    ts_last_sent: 9100,
                    ..b14
                },
            )],
            ..row(
                "S -> backend while splicing: ack s0 - shift (S's view) -> acked_end; \
                 SACK edges + shift 0x100, past s0 + len; snd_nxt and TSval learned; \
                 window the client's last offered 0x80, not S's 0x400",
                Hook::Egress,
                Segment::new(GATEWAY, BACKEND)
                    .seq(S_SND_NXT)
                    .ack(999_744)
                    .window(0x0400)
                    .options(opt::ts_sack(9100, 200_300, &[(999_844, 999_944)])),
                TC_ACT_OK,
                Segment::new(GATEWAY, BACKEND)
                    .seq(S_SND_NXT)
                    .ack(1_002_896)
                    .window(0x0080)
                    .options(opt::ts_sack(9100, 200_300, &[(1_010_100, 1_010_200)])),
                (0x697e, 0x899c),
            )
        },
        Fixture {
            backends: vec![(bkey(), b15)],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    // The FIN takes a sequence number.
                    snd_nxt: S_SND_NXT + 1,
                    ts_last_sent: 9200,
                    flags: b15.flags | fl::LEARNED,
                    ..b15
                },
            )],
            ..row(
                "S -> backend FIN, no region: ack 0x200 + shift 0xFFFF_FF00 wraps to 0x100",
                Hook::Egress,
                Segment::new(GATEWAY, BACKEND)
                    .flags(0x11)
                    .seq(S_SND_NXT)
                    .ack(0x0000_0200)
                    .window(0x0400)
                    .options(opt::ts(9200, 200_400)),
                TC_ACT_OK,
                Segment::new(GATEWAY, BACKEND)
                    .flags(0x11)
                    .seq(S_SND_NXT)
                    .ack(0x0000_0100)
                    .window(0x0400)
                    .options(opt::ts(9200, 200_400)),
                (0x698a, 0xdbf4),
            )
        },
        Fixture {
            clients: vec![(ckey(), c16)],
            backends: vec![(bkey(), b16)],
            arms: vec![(bkey(), a16)],
            clients_after: vec![(ckey(), c16)],
            backends_after: vec![(bkey(), after_request(b16, 0x0022))],
            arms_after: vec![(bkey(), a16)],
            ..row(
                "S's request under an arm: ack 200_000 + shift 1000; window S's 0x400 \
                 -> min(client's 1 MiB, slow start 14_600 + 2896) >> 9 = 0x22",
                Hook::Egress,
                request_under_arm(0x0400).ack(200_000),
                TC_ACT_OK,
                request_under_arm(0x0022),
                (0x6965, 0x7d29),
            )
        },
        Fixture {
            clients: vec![(ckey(), c17)],
            backends: vec![(bkey(), b16)],
            arms: vec![(bkey(), a17)],
            clients_after: vec![(ckey(), c17)],
            backends_after: vec![(bkey(), after_request(b16, 0x0027))],
            arms_after: vec![(bkey(), a17)],
            ..row(
                "S's request under an arm, past the slow start: the client's window \
                 leaves 20_000 bytes for the response; 20_000 >> 9 = 0x27",
                Hook::Egress,
                request_under_arm(0x0400).ack(200_000),
                TC_ACT_OK,
                request_under_arm(0x0027),
                (0x6965, 0x7d24),
            )
        },
        Fixture {
            clients: vec![(ckey(), c16)],
            backends: vec![(bkey(), b16)],
            arms: vec![(bkey(), a18)],
            clients_after: vec![(ckey(), c16)],
            backends_after: vec![(bkey(), after_request(b16, 0x001C))],
            arms_after: vec![(bkey(), a18)],
            ..row(
                "S's request under an arm, the client's window closed when armed: the \
                 initial window, 14_600 >> 9 = 0x1C (nothing would reopen a window \
                 closed before the region starts)",
                Hook::Egress,
                request_under_arm(0x0400).ack(200_000),
                TC_ACT_OK,
                request_under_arm(0x001C),
                (0x6965, 0x7d2f),
            )
        },
        Fixture {
            clients: vec![(ckey(), c16)],
            backends: vec![(bkey(), b16)],
            arms: vec![(bkey(), a19)],
            clients_after: vec![(ckey(), c16)],
            backends_after: vec![(bkey(), after_request(b16, 0x0800))],
            arms_after: vec![(bkey(), a19)],
            ..row(
                "S's request under an arm after 1 MiB relayed through C: the slow start \
                 counts it; min(client's 1 MiB, 14_600 + 2896 + 1 MiB) >> 9 = 0x800, \
                 more than S's own 0x400, which stays",
                Hook::Egress,
                request_under_arm(0x0400).ack(200_000),
                TC_ACT_OK,
                request_under_arm(0x0400),
                (0x6965, 0x794b),
            )
        },
        Fixture {
            backends: vec![(bkey(), b16)],
            arms: vec![(bkey(), a16)],
            backends_after: vec![(bkey(), after_request(b16, b16.client_window))],
            arms_after: vec![(bkey(), a16)],
            ..row(
                "S's request under an arm whose client connection is gone: S's own \
                 window (the response will be relayed)",
                Hook::Egress,
                request_under_arm(0x0400).ack(200_000),
                TC_ACT_OK,
                request_under_arm(0x0400),
                (0x6965, 0x794b),
            )
        },
    ];
    run_table(&mut dp, "sockets", &rows);
}

/// The first response segment on an armed backend connection decides:
/// splice (head complete with a Content-Length: region set up, segment
/// spliced) or relay (to S, translated by the shift only); the arm is
/// consumed either way and the decision reported.
#[test]
fn first_segment_decides() {
    let mut dp = datapath();
    let head_cl = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    let mut first = head_cl.to_vec();
    first.extend(body(60));
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";

    // Splice row: socket values just below 2^32 and shifts that wrap them.
    let cw = ClientFlow {
        c_ack: 0x1111_2000,
        c_window: 0x0100,
        ts_last_sent: 499_999,
        ts_map: TsMap::default(),
        ..idle_client(0xFFFF_FF80)
    };
    let bw = idle_backend(0x20);
    // s0 = 0xFFFF_FFA0 + 0x20, c0 = 0x100 + 0xFFFF_FF80 = 0x80 (wrapped).
    let region = Region {
        s0: 0xFFFF_FFC0,
        c0: 0x0000_0080,
        len: 140,
    };
    // Relay rows: plain numbers, s0 = 999_000 + 1000.
    let c = idle_client(10_000);
    let b = idle_backend(1000);
    let relayed = |reason| -> (Vec<(FlowKey, BackendFlow)>, Vec<Event>) {
        (
            vec![(
                bkey(),
                BackendFlow {
                    ifindex: TEST_IFINDEX,
                    ..b
                },
            )],
            vec![ev(77, event::RELAY, reason, 0)],
        )
    };
    let (te_after, te_events) = relayed(relay::RELAY_TRANSFER_ENCODING);
    let (ooo_after, ooo_events) = relayed(relay::RELAY_OUT_OF_ORDER);
    let rows = [
        Fixture {
            clients: vec![(ckey(), cw)],
            backends: vec![(bkey(), bw)],
            arms: vec![(
                bkey(),
                Arm {
                    c_acked: 5000,
                    ..arm(0x0000_0100, 0xFFFF_FFA0)
                },
            )],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    state: state::SPLICING,
                    region,
                    backend: bkey(),
                    // 0x80 + 100
                    sent_end: 0x0000_00E4,
                    // The slow start's base for this region: C's bytes
                    // the client had acknowledged.
                    c_acked: 5000,
                    // C had learned its own: the later of C's and the arm's.
                    c_ack: C_ACK,
                    ts_map: TS_MAP,
                    ts_last_sent: 500_000,
                    bytes_spliced: 2996,
                    ..cw
                },
            )],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    state: state::SPLICING,
                    region,
                    client: ckey(),
                    arm_id: 77,
                    acked_end: 0xFFFF_FFC0,
                    bytes_spliced: 2996,
                    ifindex: TEST_IFINDEX,
                    ..bw
                },
            )],
            // SPLICE events carry the status code.
            events: vec![ev(77, event::SPLICE, 200, 140)],
            ..row(
                "Content-Length head complete: region [0xFFFF_FFC0, +140) -> [0x80, +140) \
                 set up, segment spliced; TSval 200_000 -> ts_last_sent + 1",
                Hook::Ingress,
                Segment::new(BACKEND, GATEWAY)
                    .seq(0xFFFF_FFC0)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(200_000, S_TS))
                    .payload(&first),
                TC_ACT_REDIRECT,
                Segment::new(VIP, CLIENT)
                    .seq(0x0000_0080)
                    .ack(C_ACK)
                    .window(0x0100)
                    .options(opt::ts(500_000, TS_RECENT))
                    .payload(&first),
                (0x86fa, 0x13f7),
            )
        },
        Fixture {
            clients: vec![(ckey(), c)],
            backends: vec![(bkey(), b)],
            arms: vec![(bkey(), arm(4_990_000, 999_000))],
            clients_after: vec![(ckey(), c)],
            backends_after: te_after,
            events: te_events,
            ..row(
                "Transfer-Encoding: chunked: relayed to S (seq - shift 1000), arm consumed",
                Hook::Ingress,
                Segment::new(BACKEND, GATEWAY)
                    .seq(1_000_000)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(200_000, S_TS))
                    .payload(chunked),
                TC_ACT_OK,
                Segment::new(BACKEND, GATEWAY)
                    .seq(999_000)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(200_000, S_TS))
                    .payload(chunked),
                (0x694c, 0x3b97),
            )
        },
        Fixture {
            clients: vec![(ckey(), c)],
            backends: vec![(bkey(), b)],
            arms: vec![(bkey(), arm(4_990_000, 999_000))],
            clients_after: vec![(ckey(), c)],
            backends_after: ooo_after,
            events: ooo_events,
            ..row(
                "first segment out of order (seq s0 + 1448): relayed to S, arm consumed",
                Hook::Ingress,
                Segment::new(BACKEND, GATEWAY)
                    .seq(1_001_448)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(200_000, S_TS))
                    .payload(&body(64)),
                TC_ACT_OK,
                Segment::new(BACKEND, GATEWAY)
                    .seq(1_000_448)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(200_000, S_TS))
                    .payload(&body(64)),
                (0x694a, 0x1353),
            )
        },
    ];
    run_table(&mut dp, "decide", &rows);
}

/// Packets the datapath does not own pass unchanged.
#[test]
fn pass_through() {
    let mut dp = datapath();
    let c = idle_client(10_000);
    let b = idle_backend(1000);
    let stranger_in = Segment::new(STRANGER, VIP)
        .seq(0x0123_4567)
        .ack(5_010_500)
        .window(0x0200)
        .options(opt::ts(TS_CLIENT, 600_000));
    let stranger_out = Segment::new(VIP, STRANGER)
        .seq(5_010_500)
        .ack(0x0123_4567)
        .window(0x0200)
        .options(opt::ts(600_000, TS_CLIENT))
        .payload(&body(20));
    let spliced = Segment::new(VIP, CLIENT)
        .seq(5_010_500)
        .ack(C_ACK)
        .window(C_WINDOW)
        .options(opt::ts(600_000, TS_CLIENT))
        .payload(&body(20));
    let rows = [
        Fixture {
            clients: vec![(ckey(), c)],
            backends: vec![(bkey(), b)],
            clients_after: vec![(ckey(), c)],
            backends_after: vec![(bkey(), b)],
            ..row(
                "ingress segment of no flow: unchanged",
                Hook::Ingress,
                stranger_in.clone(),
                TC_ACT_OK,
                stranger_in,
                (0x875d, 0x9254),
            )
        },
        Fixture {
            clients: vec![(ckey(), c)],
            backends: vec![(bkey(), b)],
            clients_after: vec![(ckey(), c)],
            backends_after: vec![(bkey(), b)],
            ..row(
                "egress segment of no flow: unchanged",
                Hook::Egress,
                stranger_out.clone(),
                TC_ACT_OK,
                stranger_out,
                (0x8749, 0x6a06),
            )
        },
        Fixture {
            clients: vec![(ckey(), c)],
            clients_after: vec![(ckey(), c)],
            mark: SPLICED_MARK,
            ..row(
                "egress of a segment the ingress spliced (marked): untranslated, mark cleared",
                Hook::Egress,
                spliced.clone(),
                TC_ACT_OK,
                spliced,
                (0x874a, 0x7d6a),
            )
        },
    ];
    run_table(&mut dp, "pass", &rows);
}

/// The options of a SYN: MSS 1460, SACK permitted, timestamps, NOP,
/// window scale 7.
fn syn_options(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o.extend_from_slice(&[opt::NOP, 3, 3, 7]);
    o
}

/// A handshake is never translated, and an entry whose key the kernel
/// gave to a new connection translates nothing more: a client that
/// connects again from the port of a connection whose close still holds
/// the entry (`spliced` bytes behind it) must get its SYN through with
/// every option, and the SYN-ACK and everything after it with the new
/// connection's own numbers.
#[test]
fn handshakes_on_a_closing_entry_pass_untranslated() {
    let mut dp = datapath();
    let c = idle_client(10_000);
    let superseded = ClientFlow {
        flags: c.flags | fl::SUPERSEDED,
        ..c
    };
    let syn = Segment::new(CLIENT, VIP)
        .seq(0x1000_0000)
        .ack(0)
        .flags(tcp_flags::SYN)
        .window(0xfaf0)
        .options(syn_options(TS_CLIENT + 5, 0));
    let syn_ack = Segment::new(VIP, CLIENT)
        .seq(0x2000_0000)
        .ack(0x1000_0001)
        .flags(tcp_flags::SYN | tcp_flags::ACK)
        .window(0xfe88)
        .options(syn_options(700_000, TS_CLIENT + 5));
    let ack = Segment::new(CLIENT, VIP)
        .seq(0x1000_0001)
        .ack(0x2000_0001)
        .window(0x01f6)
        .options(opt::ts(TS_CLIENT + 6, 700_000));
    let data = Segment::new(VIP, CLIENT)
        .seq(0x2000_0001)
        .ack(0x1000_0001)
        .window(0x01f6)
        .options(opt::ts(700_001, TS_CLIENT + 6))
        .payload(&body(20));
    let b = idle_backend(1000);
    let s_syn = Segment::new(GATEWAY, BACKEND)
        .seq(0x3000_0000)
        .ack(0)
        .flags(tcp_flags::SYN)
        .window(0xfaf0)
        .options(syn_options(800_000, 0));
    let backend_syn_ack = Segment::new(BACKEND, GATEWAY)
        .seq(0x4000_0000)
        .ack(0x3000_0001)
        .flags(tcp_flags::SYN | tcp_flags::ACK)
        .window(0xfe88)
        .options(syn_options(S_TS, 800_000));
    let rows = [
        Fixture {
            clients: vec![(ckey(), c)],
            clients_after: vec![(ckey(), c)],
            ..row(
                "client SYN on a key with a closing entry: unchanged, options and all",
                Hook::Ingress,
                syn.clone(),
                TC_ACT_OK,
                syn,
                (0x8756, 0x3d87),
            )
        },
        Fixture {
            clients: vec![(ckey(), c)],
            clients_after: vec![(ckey(), superseded)],
            ..row(
                "the gateway's SYN-ACK on that key: unchanged, the entry superseded",
                Hook::Egress,
                syn_ack.clone(),
                TC_ACT_OK,
                syn_ack,
                (0x8756, 0x6b73),
            )
        },
        Fixture {
            clients: vec![(ckey(), superseded)],
            clients_after: vec![(ckey(), superseded)],
            ..row(
                "client ACK on a superseded entry: unchanged (no shift, nothing learned)",
                Hook::Ingress,
                ack.clone(),
                TC_ACT_OK,
                ack,
                (0x875e, 0x96d1),
            )
        },
        Fixture {
            clients: vec![(ckey(), superseded)],
            clients_after: vec![(ckey(), superseded)],
            ..row(
                "gateway data on a superseded entry: unchanged (no shift)",
                Hook::Egress,
                data.clone(),
                TC_ACT_OK,
                data,
                (0x874a, 0x6e82),
            )
        },
        Fixture {
            backends: vec![(bkey(), b)],
            backends_after: vec![(bkey(), b)],
            ..row(
                "the gateway's SYN on a backend key with a closing entry: unchanged",
                Hook::Egress,
                s_syn.clone(),
                TC_ACT_OK,
                s_syn,
                (0x6982, 0xa056),
            )
        },
        Fixture {
            backends: vec![(bkey(), b)],
            backends_after: vec![(bkey(), b)],
            ..row(
                "the backend's SYN-ACK on that key: unchanged, the entry untouched",
                Hook::Ingress,
                backend_syn_ack.clone(),
                TC_ACT_OK,
                backend_syn_ack,
                (0x6982, 0x3985),
            )
        },
    ];
    run_table(&mut dp, "handshake", &rows);
}

/// A backend's response outlives its client when the client resets and
/// connects again from the same port: the client's key then holds a
/// superseded entry, or the new connection's. Neither takes the old
/// response: its first segment is relayed to S ("no client"), a region
/// segment is dropped (S is reset by the control plane).
#[test]
fn a_response_never_reaches_another_connection_on_the_same_key() {
    let mut dp = datapath();
    let first = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
    let c = idle_client(10_000);
    let b = idle_backend(1000);
    let newer = ClientFlow {
        conn_id: 10,
        ..idle_client(0)
    };
    let superseded = ClientFlow {
        flags: c.flags | fl::SUPERSEDED,
        ..c
    };
    let first_in = Segment::new(BACKEND, GATEWAY)
        .seq(1_000_000)
        .ack(S_SND_NXT)
        .window(0x0800)
        .options(opt::ts(200_000, S_TS))
        .payload(&first);
    let first_to_s = Segment::new(BACKEND, GATEWAY)
        .seq(999_000)
        .ack(S_SND_NXT)
        .window(0x0800)
        .options(opt::ts(200_000, S_TS))
        .payload(&first);
    let relayed = BackendFlow {
        ifindex: TEST_IFINDEX,
        ..b
    };
    let region_segment = Segment::new(BACKEND, GATEWAY)
        .seq(1_002_896)
        .ack(S_SND_NXT)
        .window(0x0800)
        .options(opt::ts(200_150, S_TS))
        .payload(&body(64));
    let splicing_superseded = ClientFlow {
        flags: splicing_client(R1).flags | fl::SUPERSEDED,
        ..splicing_client(R1)
    };
    let rows = [
        Fixture {
            clients: vec![(ckey(), newer)],
            backends: vec![(bkey(), b)],
            arms: vec![(bkey(), arm(4_990_000, 999_000))],
            clients_after: vec![(ckey(), newer)],
            backends_after: vec![(bkey(), relayed)],
            events: vec![ev(77, event::RELAY, relay::RELAY_NO_CLIENT, 0)],
            ..row(
                "first segment, the client's key holds a newer connection: relayed to S",
                Hook::Ingress,
                first_in.clone(),
                TC_ACT_OK,
                first_to_s.clone(),
                (0x6962, 0xbd86),
            )
        },
        Fixture {
            clients: vec![(ckey(), superseded)],
            backends: vec![(bkey(), b)],
            arms: vec![(bkey(), arm(4_990_000, 999_000))],
            clients_after: vec![(ckey(), superseded)],
            backends_after: vec![(bkey(), relayed)],
            events: vec![ev(77, event::RELAY, relay::RELAY_NO_CLIENT, 0)],
            ..row(
                "first segment, the client's entry superseded: relayed to S",
                Hook::Ingress,
                first_in,
                TC_ACT_OK,
                first_to_s,
                (0x6962, 0xbd86),
            )
        },
        Fixture {
            clients: vec![(ckey(), splicing_superseded)],
            backends: vec![(bkey(), splicing_backend(R1))],
            clients_after: vec![(ckey(), splicing_superseded)],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    ifindex: TEST_IFINDEX,
                    ..splicing_backend(R1)
                },
            )],
            counters: Some(vec![(counter::NO_PEER, 1)]),
            ..row(
                "region segment, the client's entry superseded: dropped",
                Hook::Ingress,
                region_segment.clone(),
                TC_ACT_SHOT,
                region_segment.clone(),
                (0x694a, 0x092d),
            )
        },
        Fixture {
            clients: vec![(ckey(), newer)],
            backends: vec![(bkey(), splicing_backend(R1))],
            clients_after: vec![(ckey(), newer)],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    ifindex: TEST_IFINDEX,
                    ..splicing_backend(R1)
                },
            )],
            counters: Some(vec![(counter::NO_PEER, 1)]),
            ..row(
                "region segment, the client's key holds a newer, idle connection: dropped",
                Hook::Ingress,
                region_segment.clone(),
                TC_ACT_SHOT,
                region_segment,
                (0x694a, 0x092d),
            )
        },
    ];
    run_table(&mut dp, "another connection", &rows);
}

/// Every run counts one packet and its bytes for its interface's slot and
/// hook, whatever the segment: the counters find the slot in the table the
/// loader filled (slot 0: the namespace's loopback, where a test run's
/// packet arrives), with no hash map and no "uncounted" reason.
#[test]
fn every_run_counts_in_its_interface_slot() {
    let mut dp = datapath();
    let seg = Segment::new(STRANGER, VIP)
        .seq(0x0123_4567)
        .ack(5_010_500)
        .options(opt::ts(TS_CLIENT, 600_000))
        .payload(&body(100));
    let frame = seg.frame();
    let len = frame.len() as u64;
    for (hook, index, runs) in [
        (Hook::Ingress, hook::TC_INGRESS, 3),
        (Hook::Egress, hook::TC_EGRESS, 2),
    ] {
        let before = dp.iface_counters(0, index);
        for _ in 0..runs {
            assert_eq!(dp.run(hook, &frame, 0).verdict, TC_ACT_OK);
        }
        let after = dp.iface_counters(0, index);
        assert_eq!(after.0 - before.0, runs, "{hook:?} packets");
        assert_eq!(after.1 - before.1, runs * len, "{hook:?} bytes");
    }
    assert_eq!(dp.iface_counters(1, hook::TC_INGRESS), (0, 0), "slot 1");
    assert_eq!(dp.reason_count(reason::ERR_UNCOUNTED_IFACE), 0);
    assert_eq!(dp.reason_count(reason::PASS_NO_FLOW), 3);
}

/// A FIN riding on the region's last segment belongs to S, not to the
/// client's connection: the bytes are spliced, the FIN is cleared (the
/// backend retransmits it alone, and that reaches S).
#[test]
fn backend_fin_on_the_last_region_segment_is_not_spliced() {
    let mut dp = datapath();
    let payload = body(64);
    // Everything up to the last 64 bytes of the region has been spliced.
    let c = ClientFlow {
        sent_end: 5_009_936,
        ..splicing_client(R1)
    };
    let b = splicing_backend(R1);
    let rows = [Fixture {
        clients: vec![(ckey(), c)],
        backends: vec![(bkey(), b)],
        clients_after: vec![(
            ckey(),
            ClientFlow {
                sent_end: 5_010_000,
                ts_last_sent: 500_150,
                bytes_spliced: 2960,
                ..c
            },
        )],
        backends_after: vec![(
            bkey(),
            BackendFlow {
                bytes_spliced: 2960,
                ifindex: TEST_IFINDEX,
                ..b
            },
        )],
        ..row(
            "last region segment carrying the backend's FIN: data spliced, FIN not",
            Hook::Ingress,
            Segment::new(BACKEND, GATEWAY)
                .flags(tcp_flags::FIN | tcp_flags::ACK)
                .seq(1_009_936)
                .ack(S_SND_NXT)
                .window(0x0800)
                .options(opt::ts(200_150, S_TS))
                .payload(&payload),
            TC_ACT_REDIRECT,
            Segment::new(VIP, CLIENT)
                .seq(5_009_936)
                .ack(C_ACK)
                .window(C_WINDOW)
                .options(opt::ts(500_150, TS_RECENT))
                .payload(&payload),
            (0x871e, 0xab0c),
        )
    }];
    run_table(&mut dp, "fin", &rows);
}

/// The XDP rows' client-side link: the gateway's end `xc0`, 198.51.100.1/24
/// (the route to the client), and the client's end. The neighbour entry
/// for [`CLIENT`] gives the client's MAC; [`STRANGER`] has none.
const GW_CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xc0, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xc0, 0x02];
const XDP_IFINDEX: u32 = 7;
const CLIENT_LINK: Veth = Veth {
    name: "xc0",
    ifindex: XDP_IFINDEX,
    mac: GW_CLIENT_MAC,
    addr: Ipv4Addr::new(198, 51, 100, 1),
    prefix: 24,
    peer: "xc1",
    peer_ifindex: XDP_IFINDEX + 1,
    peer_mac: CLIENT_MAC,
};

/// The counters after one segment of `bytes` spliced by XDP.
fn xdp_spliced(bytes: u64) -> Vec<(u32, u64)> {
    vec![
        (counter::SEGMENTS, 1),
        (counter::BYTES, bytes),
        (counter::XDP_SEGMENTS, 1),
    ]
}

/// The XDP fast path (`dist_xdp`, `xdp` mode): a backend data segment
/// inside a splicing region, no options or `NOP NOP TS`, is rewritten into
/// the client's connection and redirected: MACs from the FIB lookup of the
/// client (the neighbour entry's and `xc0`'s), VIP:80 -> client,
/// `seq = c0 + (seq - s0)`, C's ack and window, `TSval` through the region's
/// map (never below `ts_last_sent`), `TSecr` the client's latest; C's
/// `sent_end`, both flows' `bytes_spliced` and the counters follow. The
/// IPv4 header is the TC path's (same addresses, TTL untouched), so the
/// rows that mirror `splice_backend_segment` expect its checksums.
///
/// Everything else passes unchanged, maps and counters untouched, for the
/// TC programs to handle.
#[test]
fn xdp_fast_path() {
    let mut dp = datapath();
    dp.add_veth(&CLIENT_LINK);
    dp.add_neighbour(CLIENT_LINK.name, *CLIENT.ip(), CLIENT_MAC);

    let payload = body(64);
    let to_client = |s: Segment| s.macs(CLIENT_MAC, GW_CLIENT_MAC);
    let c = ClientFlow {
        ifindex: XDP_IFINDEX,
        ..splicing_client(R1)
    };
    let b = splicing_backend(R1);
    // No timestamps on either connection.
    let c_nots = ClientFlow {
        flags: fl::SACK | fl::LEARNED,
        ..c
    };
    let b_nots = BackendFlow {
        flags: fl::SACK | fl::LEARNED | fl::S_ACKED,
        ..b
    };
    let wrap_client = |sent_end, ts_last_sent| ClientFlow {
        ts_map: TsMap {
            offset: 0x8000_0000,
            first: 0xFFFF_FFF0,
        },
        ts_last_sent,
        sent_end,
        ifindex: XDP_IFINDEX,
        ..splicing_client(RW)
    };
    // Spliced up to c0 + 0x110 = 0x100; the client saw TSval 0xFFFF_FFF5.
    let cw = wrap_client(0x0000_0100, 0xFFFF_FFF5);
    // Spliced up to c0 + 8; the client saw TSval 0xFFFF_FFF5.
    let cw8 = wrap_client(0xFFFF_FFF8, 0xFFFF_FFF5);
    // The client saw TSval 5, just past the wrap.
    let cw5 = wrap_client(0x0000_0100, 0x0000_0005);
    let bw = splicing_backend(RW);
    // A segment of 256 bytes at s0 + 8: backend [0xFFFF_FF08, 0x08) onto
    // client [0xFFFF_FFF8, 0xF8), both across 2^32.
    let long = body(256);
    // The client without a neighbour entry.
    let skey = flow_key(STRANGER, VIP);
    let b_stranger = BackendFlow { client: skey, ..b };
    let c_no_if = ClientFlow { ifindex: 5, ..c };
    let mid_region = Segment::new(BACKEND, GATEWAY)
        .seq(1_002_896)
        .ack(S_SND_NXT)
        .window(0x0800)
        .options(opt::ts(200_150, S_TS))
        .payload(&payload);
    // A pass row: the frame, both flows and the counters unchanged.
    let pass = |name: &'static str,
                clients: Vec<(FlowKey, ClientFlow)>,
                backends: Vec<(FlowKey, BackendFlow)>,
                input: Segment,
                checksums: (u16, u16)| Fixture {
        clients_after: clients.clone(),
        backends_after: backends.clone(),
        clients,
        backends,
        counters: Some(Vec::new()),
        ..row(name, Hook::Xdp, input.clone(), XDP_PASS, input, checksums)
    };
    let rows = [
        Fixture {
            clients: vec![(ckey(), c)],
            backends: vec![(bkey(), b)],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    // 5_002_896 + 64
                    sent_end: 5_002_960,
                    ts_last_sent: 500_150,
                    bytes_spliced: 2960,
                    ..c
                },
            )],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    bytes_spliced: 2960,
                    ..b
                },
            )],
            counters: Some(xdp_spliced(64)),
            ..row(
                "mid-region segment, NOP NOP TS: seq c0 + 2896, TSval 200_150 + 300_000, \
                 TSecr ts_recent, MACs from the neighbour entry",
                Hook::Xdp,
                mid_region.clone(),
                XDP_REDIRECT,
                to_client(
                    Segment::new(VIP, CLIENT)
                        .seq(5_002_896)
                        .ack(C_ACK)
                        .window(C_WINDOW)
                        .options(opt::ts(500_150, TS_RECENT))
                        .payload(&payload),
                ),
                (0x871e, 0xc68c),
            )
        },
        Fixture {
            clients: vec![(ckey(), c_nots)],
            backends: vec![(bkey(), b_nots)],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    sent_end: 5_002_960,
                    bytes_spliced: 2960,
                    ..c_nots
                },
            )],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    bytes_spliced: 2960,
                    ..b_nots
                },
            )],
            counters: Some(xdp_spliced(64)),
            ..row(
                "mid-region segment, no options (no timestamps on either connection): \
                 seq c0 + 2896, ack and window C's, ts_last_sent untouched",
                Hook::Xdp,
                Segment::new(BACKEND, GATEWAY)
                    .seq(1_002_896)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .payload(&payload),
                XDP_REDIRECT,
                to_client(
                    Segment::new(VIP, CLIENT)
                        .seq(5_002_896)
                        .ack(C_ACK)
                        .window(C_WINDOW)
                        .payload(&payload),
                ),
                (0x872a, 0x9d1c),
            )
        },
        Fixture {
            clients: vec![(ckey(), c)],
            backends: vec![(bkey(), b)],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    // sent_end stays 5_002_896 (> 5_000_064); TSval clamped.
                    bytes_spliced: 2960,
                    ..c
                },
            )],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    bytes_spliced: 2960,
                    ..b
                },
            )],
            counters: Some(xdp_spliced(64)),
            ..row(
                "retransmitted first segment: seq s0 -> c0, TSval 200_050 + 300_000 = \
                 500_050 clamped to ts_last_sent 500_100",
                Hook::Xdp,
                Segment::new(BACKEND, GATEWAY)
                    .seq(1_000_000)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(200_050, S_TS))
                    .payload(&payload),
                XDP_REDIRECT,
                to_client(
                    Segment::new(VIP, CLIENT)
                        .seq(5_000_000)
                        .ack(C_ACK)
                        .window(C_WINDOW)
                        .options(opt::ts(500_100, TS_RECENT))
                        .payload(&payload),
                ),
                (0x871e, 0xd20e),
            )
        },
        Fixture {
            clients: vec![(ckey(), cw5)],
            backends: vec![(bkey(), bw)],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    // 0x100 + 64; TSval clamped, ts_last_sent stays 5.
                    sent_end: 0x0000_0140,
                    bytes_spliced: 2960,
                    ..cw5
                },
            )],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    bytes_spliced: 2960,
                    ..bw
                },
            )],
            counters: Some(xdp_spliced(64)),
            ..row(
                "TSval 0x7FFF_FFF0 + 0x8000_0000 = 0xFFFF_FFF0 is before ts_last_sent 5 \
                 (past the wrap): clamped to 5",
                Hook::Xdp,
                Segment::new(BACKEND, GATEWAY)
                    .seq(0x0000_0010)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(0x7FFF_FFF0, S_TS))
                    .payload(&payload),
                XDP_REDIRECT,
                to_client(
                    Segment::new(VIP, CLIENT)
                        .seq(0x0000_0100)
                        .ack(C_ACK)
                        .window(C_WINDOW)
                        .options(opt::ts(0x0000_0005, TS_RECENT))
                        .payload(&payload),
                ),
                (0x871e, 0xbe21),
            )
        },
        Fixture {
            clients: vec![(ckey(), cw)],
            backends: vec![(bkey(), bw)],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    // 0x100 + 64
                    sent_end: 0x0000_0140,
                    ts_last_sent: 0x0000_0010,
                    bytes_spliced: 2960,
                    ..cw
                },
            )],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    bytes_spliced: 2960,
                    ..bw
                },
            )],
            counters: Some(xdp_spliced(64)),
            ..row(
                "s0, c0 near 2^32: seq 0x10 = s0 + 0x110 -> c0 + 0x110 = 0x100; \
                 TSval 0x8000_0010 + 0x8000_0000 wraps to 0x10, still after 0xFFFF_FFF5",
                Hook::Xdp,
                Segment::new(BACKEND, GATEWAY)
                    .seq(0x0000_0010)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(0x8000_0010, S_TS))
                    .payload(&payload),
                XDP_REDIRECT,
                to_client(
                    Segment::new(VIP, CLIENT)
                        .seq(0x0000_0100)
                        .ack(C_ACK)
                        .window(C_WINDOW)
                        .options(opt::ts(0x0000_0010, TS_RECENT))
                        .payload(&payload),
                ),
                (0x871e, 0xbe16),
            )
        },
        Fixture {
            clients: vec![(ckey(), cw8)],
            backends: vec![(bkey(), bw)],
            clients_after: vec![(
                ckey(),
                ClientFlow {
                    // 0xFFFF_FFF8 + 256 wraps to 0xF8, after 0xFFFF_FFF8.
                    sent_end: 0x0000_00F8,
                    ts_last_sent: 0xFFFF_FFF8,
                    bytes_spliced: 2896 + 256,
                    ..cw8
                },
            )],
            backends_after: vec![(
                bkey(),
                BackendFlow {
                    bytes_spliced: 2896 + 256,
                    ..bw
                },
            )],
            counters: Some(xdp_spliced(256)),
            ..row(
                "256 bytes at s0 + 8 = 0xFFFF_FF08 (backend range ends at 0x08) -> \
                 c0 + 8 = 0xFFFF_FFF8 (client range ends at 0xF8): sent_end wraps to 0xF8; \
                 TSval 0x7FFF_FFF8 -> 0xFFFF_FFF8",
                Hook::Xdp,
                Segment::new(BACKEND, GATEWAY)
                    .seq(0xFFFF_FF08)
                    .ack(S_SND_NXT)
                    .window(0x0800)
                    .options(opt::ts(0x7FFF_FFF8, S_TS))
                    .payload(&long),
                XDP_REDIRECT,
                to_client(
                    Segment::new(VIP, CLIENT)
                        .seq(0xFFFF_FFF8)
                        .ack(C_ACK)
                        .window(C_WINDOW)
                        .options(opt::ts(0xFFFF_FFF8, TS_RECENT))
                        .payload(&long),
                ),
                (0x865e, 0xa0f7),
            )
        },
        pass(
            "segment straddling the region's end (s_end - 20, 64 bytes): passes to TC",
            vec![(ckey(), c)],
            vec![(bkey(), b)],
            Segment::new(BACKEND, GATEWAY)
                .seq(1_009_980)
                .ack(S_SND_NXT)
                .window(0x0800)
                .options(opt::ts(200_150, S_TS))
                .payload(&payload),
            (0x694a, 0xed80),
        ),
        pass(
            "mid-region segment carrying SACK (NOP NOP TS NOP NOP SACK): passes",
            vec![(ckey(), c)],
            vec![(bkey(), b)],
            Segment::new(BACKEND, GATEWAY)
                .seq(1_002_896)
                .ack(S_SND_NXT)
                .window(0x0800)
                .options(opt::ts_sack(200_150, S_TS, &[(6500, 6600)]))
                .payload(&payload),
            (0x693e, 0x9fe9),
        ),
        pass(
            "mid-region segment with FIN: passes",
            vec![(ckey(), c)],
            vec![(bkey(), b)],
            mid_region
                .clone()
                .flags(tcp_flags::FIN | tcp_flags::PSH | tcp_flags::ACK),
            (0x694a, 0x092c),
        ),
        pass(
            "mid-region segment acknowledging 38 bytes S has not seen (ack > s_acked): \
             passes (TC copies the ACK for S)",
            vec![(ckey(), c)],
            vec![(bkey(), b)],
            mid_region.clone().ack(S_SND_NXT + 38),
            (0x694a, 0x0907),
        ),
        pass(
            "flows idle (no region): passes",
            vec![(ckey(), idle_client(10_000))],
            vec![(bkey(), idle_backend(1000))],
            mid_region.clone(),
            (0x694a, 0x092d),
        ),
        pass(
            "client's next hop unresolved (no neighbour entry for 198.51.100.3): passes",
            vec![(skey, c)],
            vec![(bkey(), b_stranger)],
            mid_region.clone(),
            (0x694a, 0x092d),
        ),
        pass(
            "client flow's ifindex names no interface (lookup fails): passes",
            vec![(ckey(), c_no_if)],
            vec![(bkey(), b)],
            mid_region,
            (0x694a, 0x092d),
        ),
    ];
    run_table(&mut dp, "xdp", &rows);
}

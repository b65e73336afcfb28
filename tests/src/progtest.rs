//! `BPF_PROG_TEST_RUN` fixtures for the splice programs (TC: `dist_tc_in`,
//! `dist_tc_out`; XDP: `dist_xdp`): a table row is map state before, one
//! input frame, and the expected verdict, output bytes, mark, map state
//! after, ring-buffer events and (optionally) splice counters. [`run_table`]
//! runs every row of a table and reports every row that differs, so one
//! failing row does not hide the others.
//!
//! Independence from the code under test: frames are built here
//! ([`Segment::frame`]) with their IPv4 and TCP checksums computed by full
//! RFC 1071 recomputation over the IPv4 header and over the pseudo-header
//! plus the whole TCP segment ([`ipv4_checksum`], [`tcp_checksum`]), never
//! by the incremental updates the datapath uses. The kernel runs a TC
//! program on a `CHECKSUM_NONE` skb, and an XDP program on the bare frame,
//! so the program's incremental updates must leave a checksum equal to a
//! full recomputation; each row also carries the expected checksums
//! written out literally.
//!
//! The XDP fast path looks the client's next hop up in the FIB
//! (`bpf_fib_lookup`) and writes the Ethernet addresses it returns; its
//! rows need a route and a neighbour entry in the test namespace:
//! [`Datapath::add_veth`] and [`Datapath::add_neighbour`] make them there.
//!
//! The object is the one `distributor/build.rs` publishes at
//! `<target>/bpf/distributor.bpf.o` (`cargo build -p distributor`);
//! `DISTRIBUTOR_BPF_OBJECT` overrides the path. Needs root (`bpf(2)`).

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    process::Command,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{SchedClassifier, TestRun as _, TestRunOptions, TestRunResult, Xdp},
};
use distributor_common::{
    Counters,
    flow::{self, Arm, BackendFlow, ClientFlow, Event, FlowKey, counter},
    maps,
};

/// `TC_ACT_OK`: the packet continues (to the stack on ingress, to the wire
/// on egress).
pub const TC_ACT_OK: i32 = 0;
/// `TC_ACT_SHOT`: dropped.
pub const TC_ACT_SHOT: i32 = 2;
/// `TC_ACT_REDIRECT`: what `bpf_redirect_neigh` returns; the packet goes
/// out of another interface.
pub const TC_ACT_REDIRECT: i32 = 7;
/// `XDP_PASS`: the frame goes on to the stack (and the TC programs).
pub const XDP_PASS: i32 = 2;
/// `XDP_REDIRECT`: what `bpf_redirect` returns in XDP; the frame goes out
/// of another interface.
pub const XDP_REDIRECT: i32 = 4;

/// TCP header flag bits (byte 13 of the header).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// TCP options areas in the layouts Linux sends on established
/// connections (the ones the datapath's `options::parse_common` knows).
/// Values host order; the bytes are network order.
pub mod opt {
    /// NOP (padding, and what a removed option becomes).
    pub const NOP: u8 = 1;

    /// `NOP NOP TS(tsval, tsecr)`: 12 bytes.
    #[must_use]
    pub fn ts(tsval: u32, tsecr: u32) -> Vec<u8> {
        let mut v = vec![NOP, NOP, 8, 10];
        v.extend_from_slice(&tsval.to_be_bytes());
        v.extend_from_slice(&tsecr.to_be_bytes());
        v
    }

    /// `NOP NOP SACK(blocks)`: `4 + 8 * n` bytes.
    #[must_use]
    pub fn sack(blocks: &[(u32, u32)]) -> Vec<u8> {
        let mut v = vec![NOP, NOP];
        v.extend(sack_option(blocks));
        v
    }

    /// `NOP NOP TS(tsval, tsecr) NOP NOP SACK(blocks)`.
    #[must_use]
    pub fn ts_sack(tsval: u32, tsecr: u32, blocks: &[(u32, u32)]) -> Vec<u8> {
        let mut v = ts(tsval, tsecr);
        v.extend(sack(blocks));
        v
    }

    /// `area` followed by NOPs up to `len` bytes: what is left after the
    /// datapath shrank or removed an option (it keeps the area's length).
    #[must_use]
    pub fn padded(mut area: Vec<u8>, len: usize) -> Vec<u8> {
        area.resize(len, NOP);
        area
    }

    fn sack_option(blocks: &[(u32, u32)]) -> Vec<u8> {
        let len = u8::try_from(2 + 8 * blocks.len()).expect("at most 4 SACK blocks");
        let mut v = vec![5, len];
        for &(left, right) in blocks {
            v.extend_from_slice(&left.to_be_bytes());
            v.extend_from_slice(&right.to_be_bytes());
        }
        v
    }
}

/// Ethernet + IPv4 (no options) + TCP, as the fields a fixture sets. The
/// IP id, TTL and DF flag are fixed: the datapath never changes them. The
/// Ethernet addresses default to fixed ones: the TC programs never change
/// them (the kernel's neighbour code writes the MACs after a
/// `bpf_redirect_neigh`, outside the program), the XDP program writes the
/// ones its FIB lookup returns ([`Segment::macs`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Ethernet destination.
    pub eth_dst: [u8; 6],
    /// Ethernet source.
    pub eth_src: [u8; 6],
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
    /// Host order.
    pub seq: u32,
    /// Host order.
    pub ack: u32,
    /// [`tcp_flags`] bits.
    pub flags: u8,
    /// The raw window field, host order.
    pub window: u16,
    /// The options area (a multiple of 4 bytes, at most 40).
    pub options: Vec<u8>,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

const ETH_HLEN: usize = 14;
const IP_HLEN: usize = 20;
const TCP_OFF: usize = ETH_HLEN + IP_HLEN;
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const IP_ID: u16 = 0x4d2e;
const IP_TTL: u8 = 64;

impl Segment {
    /// A pure ACK from `src` to `dst` with zero numbers, window and
    /// options; set the rest with the builder methods.
    #[must_use]
    pub const fn new(src: SocketAddrV4, dst: SocketAddrV4) -> Self {
        Self {
            eth_dst: DST_MAC,
            eth_src: SRC_MAC,
            src,
            dst,
            seq: 0,
            ack: 0,
            flags: tcp_flags::ACK,
            window: 0,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// Sets the Ethernet destination and source.
    #[must_use]
    pub const fn macs(mut self, dst: [u8; 6], src: [u8; 6]) -> Self {
        self.eth_dst = dst;
        self.eth_src = src;
        self
    }

    /// Sets the sequence number.
    #[must_use]
    pub const fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }

    /// Sets the acknowledgement number.
    #[must_use]
    pub const fn ack(mut self, ack: u32) -> Self {
        self.ack = ack;
        self
    }

    /// Sets the flags.
    #[must_use]
    pub const fn flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    /// Sets the raw window field.
    #[must_use]
    pub const fn window(mut self, window: u16) -> Self {
        self.window = window;
        self
    }

    /// Sets the options area.
    #[must_use]
    pub fn options(mut self, options: Vec<u8>) -> Self {
        self.options = options;
        self
    }

    /// Sets the payload (and `PSH`, as Linux sends data).
    #[must_use]
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self.flags |= tcp_flags::PSH;
        self
    }

    /// The whole frame, both checksums computed in full.
    #[must_use]
    pub fn frame(&self) -> Vec<u8> {
        assert!(
            self.options.len() <= 40 && self.options.len().is_multiple_of(4),
            "options area of {} bytes",
            self.options.len()
        );
        let tcp_len = 20 + self.options.len();
        let tot_len = u16::try_from(IP_HLEN + tcp_len + self.payload.len()).expect("frame size");
        let mut f = Vec::with_capacity(ETH_HLEN + usize::from(tot_len));
        f.extend_from_slice(&self.eth_dst);
        f.extend_from_slice(&self.eth_src);
        f.extend_from_slice(&0x0800_u16.to_be_bytes());
        // IPv4: version 4, IHL 5, DF, protocol TCP, checksum below.
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&tot_len.to_be_bytes());
        f.extend_from_slice(&IP_ID.to_be_bytes());
        f.extend_from_slice(&0x4000_u16.to_be_bytes());
        f.extend_from_slice(&[IP_TTL, 6, 0, 0]);
        f.extend_from_slice(&self.src.ip().octets());
        f.extend_from_slice(&self.dst.ip().octets());
        // TCP.
        f.extend_from_slice(&self.src.port().to_be_bytes());
        f.extend_from_slice(&self.dst.port().to_be_bytes());
        f.extend_from_slice(&self.seq.to_be_bytes());
        f.extend_from_slice(&self.ack.to_be_bytes());
        let doff = u8::try_from(tcp_len / 4).expect("data offset") << 4;
        f.extend_from_slice(&[doff, self.flags]);
        f.extend_from_slice(&self.window.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        f.extend_from_slice(&self.options);
        f.extend_from_slice(&self.payload);
        let ip = ipv4_checksum(&f);
        f[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&ip.to_be_bytes());
        let tcp = tcp_checksum(&f);
        f[TCP_OFF + 16..TCP_OFF + 18].copy_from_slice(&tcp.to_be_bytes());
        f
    }

    /// Reads a frame back (for failure messages); `None` for anything that
    /// is not Ethernet + option-less IPv4 + TCP.
    #[must_use]
    pub fn parse(f: &[u8]) -> Option<Self> {
        if f.len() < TCP_OFF + 20 || f[12..14] != [0x08, 0x00] || f[ETH_HLEN] != 0x45 {
            return None;
        }
        let be16 = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
        let be32 = |at: usize| u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
        let addr = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
        let mac = |at: usize| -> [u8; 6] { f[at..at + 6].try_into().expect("6 bytes") };
        let tot_len = usize::from(be16(ETH_HLEN + 2));
        let thl = usize::from(f[TCP_OFF + 12] >> 4) * 4;
        let end = ETH_HLEN + tot_len;
        if thl < 20 || TCP_OFF + thl > end || end > f.len() {
            return None;
        }
        Some(Self {
            eth_dst: mac(0),
            eth_src: mac(6),
            src: SocketAddrV4::new(addr(ETH_HLEN + 12), be16(TCP_OFF)),
            dst: SocketAddrV4::new(addr(ETH_HLEN + 16), be16(TCP_OFF + 2)),
            seq: be32(TCP_OFF + 4),
            ack: be32(TCP_OFF + 8),
            flags: f[TCP_OFF + 13],
            window: be16(TCP_OFF + 14),
            options: f[TCP_OFF + 20..TCP_OFF + thl].to_vec(),
            payload: f[TCP_OFF + thl..end].to_vec(),
        })
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{} -> {}] {} -> {} seq {:#010x} ack {:#010x} flags {:#04x} win {:#06x} opts [",
            Mac(self.eth_src),
            Mac(self.eth_dst),
            self.src,
            self.dst,
            self.seq,
            self.ack,
            self.flags,
            self.window
        )?;
        for b in &self.options {
            write!(f, "{b:02x}")?;
        }
        write!(f, "] payload {} bytes", self.payload.len())
    }
}

/// An Ethernet address, printed `02:00:00:00:00:01`.
#[derive(Clone, Copy)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The RFC 1071 Internet checksum of `parts` concatenated (16-bit
/// big-endian words, an odd last byte padded with zero), computed in full.
#[must_use]
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|w| u64::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    let folded = u16::try_from(sum).expect("folded to 16 bits");
    !folded
}

/// The IPv4 header checksum of `frame`, recomputed in full (the field
/// itself counted as zero).
#[must_use]
pub fn ipv4_checksum(frame: &[u8]) -> u16 {
    let hdr = &frame[ETH_HLEN..ETH_HLEN + IP_HLEN];
    internet_checksum(&[&hdr[..10], &hdr[12..]])
}

/// The TCP checksum of `frame`, recomputed in full over the pseudo-header
/// (addresses, protocol, TCP length) and the whole segment (the field
/// itself counted as zero). The segment's length comes from the IPv4
/// total length.
#[must_use]
pub fn tcp_checksum(frame: &[u8]) -> u16 {
    let tot_len = usize::from(u16::from_be_bytes([
        frame[ETH_HLEN + 2],
        frame[ETH_HLEN + 3],
    ]));
    let seg = &frame[TCP_OFF..ETH_HLEN + tot_len];
    let tcp_len = u16::try_from(seg.len()).expect("segment size");
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&frame[ETH_HLEN + 12..ETH_HLEN + 20]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&tcp_len.to_be_bytes());
    internet_checksum(&[&pseudo, &seg[..16], &seg[18..]])
}

/// The (IPv4, TCP) checksum fields as they are in `frame`.
#[must_use]
pub fn checksum_fields(frame: &[u8]) -> (u16, u16) {
    (
        u16::from_be_bytes([frame[ETH_HLEN + 10], frame[ETH_HLEN + 11]]),
        u16::from_be_bytes([frame[TCP_OFF + 16], frame[TCP_OFF + 17]]),
    )
}

/// The ingress [`FlowKey`] of a connection: `peer` is the client or the
/// backend, `gateway` the gateway's side (the virtual IP, or the gateway's
/// backend-side address). Addresses and ports in network order, as the
/// datapath reads them out of the packet.
#[must_use]
pub fn flow_key(peer: SocketAddrV4, gateway: SocketAddrV4) -> FlowKey {
    FlowKey::ingress(
        u32::from_ne_bytes(peer.ip().octets()),
        u32::from_ne_bytes(gateway.ip().octets()),
        peer.port().to_be(),
        gateway.port().to_be(),
    )
}

/// Which program a row runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `dist_tc_in`: a segment arriving at the gateway.
    Ingress,
    /// `dist_tc_out`: a segment a gateway socket sends.
    Egress,
    /// `dist_xdp`: a frame arriving at the gateway, before any skb (the
    /// `xdp` datapath mode's fast path).
    Xdp,
}

impl Hook {
    const fn program(self) -> &'static str {
        match self {
            Self::Ingress => "dist_tc_in",
            Self::Egress => "dist_tc_out",
            Self::Xdp => "dist_xdp",
        }
    }
}

/// What one test run gave back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The program's return value.
    pub verdict: i32,
    /// The frame after the program.
    pub frame: Vec<u8>,
    /// `skb->mark` after the program (0 for XDP, which has none).
    pub mark: u32,
}

/// `sizeof(struct __sk_buff)` (uapi `linux/bpf.h`, up to `hwtstamp`).
const SKB_CTX_LEN: usize = 192;
/// `offsetof(struct __sk_buff, mark)`.
const SKB_CTX_MARK: usize = 8;
/// `sizeof(struct xdp_md)` (uapi `linux/bpf.h`: `data`, `data_end`,
/// `data_meta`, `ingress_ifindex`, `rx_queue_index`, `egress_ifindex`).
const XDP_MD_LEN: usize = 24;
/// `offsetof(struct xdp_md, data_end)`: `BPF_PROG_TEST_RUN` wants the
/// frame's length there (and no metadata: `data` and `data_meta` 0).
const XDP_MD_DATA_END: usize = 4;

/// The loopback's index in a fresh network namespace: where a TC test
/// run's packet arrives, and the counters' slot 0 in [`Datapath::load`].
pub const LOOPBACK_IFINDEX: u32 = 1;

/// The loaded object: the TC programs and the XDP program loaded (not
/// attached) and the maps the fixtures fill. Each test function loads its
/// own, so parallel tests never share map state.
pub struct Datapath {
    ebpf: Ebpf,
    /// (device, inode) of the network namespace [`Datapath::load`] made;
    /// commands that configure it check they run there.
    netns: (u64, u64),
}

/// A veth pair in the test namespace: `name` (the gateway's side: its
/// address, MAC and ifindex are what the XDP rows' FIB lookups see) and
/// `peer` (the far side, up so the link has carrier).
#[derive(Clone, Copy, Debug)]
pub struct Veth {
    /// The gateway's end.
    pub name: &'static str,
    /// Its interface index (set explicitly, so rows can name it).
    pub ifindex: u32,
    /// Its Ethernet address (the `smac` of a lookup through it).
    pub mac: [u8; 6],
    /// Its address; the prefix is routed through it.
    pub addr: Ipv4Addr,
    /// The prefix length of `addr`.
    pub prefix: u8,
    /// The far end.
    pub peer: &'static str,
    /// The far end's interface index.
    pub peer_ifindex: u32,
    /// The far end's Ethernet address.
    pub peer_mac: [u8; 6],
}

/// The (device, inode) of the calling thread's network namespace.
fn thread_netns() -> (u64, u64) {
    let m = std::fs::metadata("/proc/thread-self/ns/net")
        .unwrap_or_else(|e| panic!("/proc/thread-self/ns/net: {e}"));
    (m.dev(), m.ino())
}

impl Datapath {
    /// Where the object is read from: `DISTRIBUTOR_BPF_OBJECT`, else
    /// `<target>/bpf/distributor.bpf.o` (`CARGO_TARGET_DIR` when absolute,
    /// else the workspace's `target/`, as `distributor/build.rs` writes it).
    #[must_use]
    pub fn object_path() -> PathBuf {
        if let Some(p) = std::env::var_os("DISTRIBUTOR_BPF_OBJECT") {
            return PathBuf::from(p);
        }
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| crate::workspace_path("target"))
            .join("bpf/distributor.bpf.o")
    }

    /// Loads the object and its two TC programs. Panics with what to do
    /// when the object is missing or the kernel refuses it.
    ///
    /// The calling thread first moves into a network namespace of its own:
    /// a program run may send a copy of its packet into the device's
    /// ingress (`bpf_clone_redirect`), and that device must be this
    /// namespace's loopback (down: the copy is dropped), never the host's.
    /// The XDP program's FIB lookups also see only this namespace's
    /// interfaces, routes and neighbours.
    #[must_use]
    pub fn load() -> Self {
        let before = thread_netns();
        // SAFETY: affects only the calling thread's namespaces.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert!(
            r == 0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        let netns = thread_netns();
        assert_ne!(before, netns, "unshare(CLONE_NEWNET) left the namespace");
        let path = Self::object_path();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "reading {}: {e} (build it with `cargo build -p distributor`)",
                path.display()
            )
        });
        // The ELF parser wants the object 8-byte aligned; a fresh heap
        // allocation of this size always is, checked rather than assumed.
        assert!(
            bytes.as_ptr().align_offset(8) == 0,
            "object buffer not 8-byte aligned"
        );
        // The test runs' packets arrive on this namespace's loopback
        // (ifindex 1): its counter slot, as the loader gives one to each
        // interface it attaches to, so a run counts the way a real one does.
        let mut ifindexes = [0_u32; maps::IFACES_MAX as usize];
        ifindexes[0] = LOOPBACK_IFINDEX;
        let mut ebpf = EbpfLoader::new()
            .override_global(maps::IFINDEXES, ifindexes.as_slice(), true)
            .load(&bytes)
            .unwrap_or_else(|e| panic!("loading {}: {e:?}", path.display()));
        for hook in [Hook::Ingress, Hook::Egress] {
            let name = hook.program();
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .unwrap_or_else(|| panic!("no program {name} in the object"))
                .try_into()
                .unwrap_or_else(|e| panic!("{name} is not a classifier: {e}"));
            prog.load()
                .unwrap_or_else(|e| panic!("verifying {name}: {e:?}"));
        }
        let name = Hook::Xdp.program();
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("no program {name} in the object"))
            .try_into()
            .unwrap_or_else(|e| panic!("{name} is not an XDP program: {e}"));
        prog.load()
            .unwrap_or_else(|e| panic!("verifying {name}: {e:?}"));
        Self { ebpf, netns }
    }

    /// Runs `ip args` in the test namespace (a child of the calling
    /// thread inherits its namespace); panics unless it succeeds.
    fn ip(&self, args: &[&str]) {
        assert_eq!(
            thread_netns(),
            self.netns,
            "network setup from a thread outside the test namespace (call it from \
             the thread that loaded)"
        );
        crate::netns::run(Command::new("ip").args(args))
            .unwrap_or_else(|e| panic!("test namespace setup: {e:#}"));
    }

    /// Creates `link` in the test namespace, both ends up, the address on
    /// the gateway's end (which routes its prefix there) and forwarding on
    /// (`bpf_fib_lookup` answers `FWD_DISABLED` for an input interface
    /// without it).
    pub fn add_veth(&self, link: &Veth) {
        let (ifindex, peer_ifindex) = (link.ifindex.to_string(), link.peer_ifindex.to_string());
        let (mac, peer_mac) = (Mac(link.mac).to_string(), Mac(link.peer_mac).to_string());
        self.ip(&[
            "link",
            "add",
            link.name,
            "index",
            &ifindex,
            "address",
            &mac,
            "type",
            "veth",
            "peer",
            "name",
            link.peer,
            "index",
            &peer_ifindex,
            "address",
            &peer_mac,
        ]);
        let addr = format!("{}/{}", link.addr, link.prefix);
        self.ip(&["addr", "add", &addr, "dev", link.name]);
        self.ip(&["link", "set", link.peer, "up"]);
        self.ip(&["link", "set", link.name, "up"]);
        assert_eq!(
            thread_netns(),
            self.netns,
            "forwarding outside the test namespace"
        );
        // /proc/sys/net is the opening thread's namespace's.
        let path = format!("/proc/sys/net/ipv4/conf/{}/forwarding", link.name);
        std::fs::write(&path, "1").unwrap_or_else(|e| panic!("{path}: {e}"));
    }

    /// A permanent neighbour entry: `addr` is at `mac` on `dev`.
    pub fn add_neighbour(&self, dev: &str, addr: Ipv4Addr, mac: [u8; 6]) {
        let (addr, mac) = (addr.to_string(), Mac(mac).to_string());
        self.ip(&[
            "neigh",
            "add",
            &addr,
            "lladdr",
            &mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
    }

    fn hash<K: aya::Pod, V: aya::Pod>(&mut self, name: &str) -> HashMap<&mut MapData, K, V> {
        let map = self
            .ebpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("no map {name} in the object"));
        HashMap::try_from(map).unwrap_or_else(|e| panic!("map {name}: {e}"))
    }

    /// Empties the flow maps and the event ring buffer, zeroes the splice
    /// counters.
    pub fn reset(&mut self) {
        fn clear<V: aya::Pod>(dp: &mut Datapath, name: &str) {
            let mut m = dp.hash::<FlowKey, V>(name);
            let keys: Vec<FlowKey> = m.keys().map(|k| k.expect("map key")).collect();
            for k in keys {
                m.remove(&k)
                    .unwrap_or_else(|e| panic!("clearing {name}: {e}"));
            }
        }
        clear::<ClientFlow>(self, flow::FLOWS_C);
        clear::<BackendFlow>(self, flow::FLOWS_S);
        clear::<Arm>(self, flow::ARMS);
        let _ = self.take_events();
        let mut stats = self.stats();
        let cpus = aya::util::nr_cpus().expect("number of possible CPUs");
        for i in 0..counter::LEN {
            let zero = PerCpuValues::try_from(vec![0_u64; cpus]).expect("one value per CPU");
            stats
                .set(i, zero, 0)
                .unwrap_or_else(|e| panic!("zeroing {}[{i}]: {e}", flow::SPLICE_STATS));
        }
    }

    fn stats(&mut self) -> PerCpuArray<&mut MapData, u64> {
        self.per_cpu_array(flow::SPLICE_STATS)
    }

    /// The per-CPU array map `name` of the object.
    fn per_cpu_array<V: aya::Pod>(&mut self, name: &str) -> PerCpuArray<&mut MapData, V> {
        let map = self
            .ebpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("no map {name} in the object"));
        PerCpuArray::try_from(map).unwrap_or_else(|e| panic!("map {name}: {e}"))
    }

    /// The splice counters (`SPLICE_STATS`, indexed by `counter::*`),
    /// summed over CPUs.
    pub fn counters(&mut self) -> Vec<u64> {
        let stats = self.stats();
        (0..counter::LEN)
            .map(|i| {
                stats
                    .get(&i, 0)
                    .unwrap_or_else(|e| panic!("reading {}[{i}]: {e}", flow::SPLICE_STATS))
                    .iter()
                    .sum()
            })
            .collect()
    }

    /// The per-interface counters of `slot` and `hook` (`maps::hook`),
    /// summed over CPUs: (packets, bytes).
    pub fn iface_counters(&mut self, slot: u32, hook: u32) -> (u64, u64) {
        let name = maps::IFACE_STATS;
        let stats = self.per_cpu_array::<Counters>(name);
        let index = maps::stats_index(slot, hook);
        let per_cpu = stats
            .get(&index, 0)
            .unwrap_or_else(|e| panic!("reading {name}[{index}]: {e}"));
        let total = per_cpu.iter().fold(Counters::default(), |a, c| a.sum(*c));
        (total.packets, total.bytes)
    }

    /// How many packets were counted under `reason` (`reason::*`), summed
    /// over CPUs.
    pub fn reason_count(&mut self, reason: u32) -> u64 {
        let name = maps::REASONS;
        self.per_cpu_array::<u64>(name)
            .get(&reason, 0)
            .unwrap_or_else(|e| panic!("reading {name}[{reason}]: {e}"))
            .iter()
            .sum()
    }

    /// Inserts (or replaces) a `FLOWS_C` entry.
    pub fn set_client(&mut self, key: FlowKey, value: ClientFlow) {
        self.hash(flow::FLOWS_C)
            .insert(key, value, 0)
            .expect("inserting into FLOWS_C");
    }

    /// Inserts (or replaces) a `FLOWS_S` entry.
    pub fn set_backend(&mut self, key: FlowKey, value: BackendFlow) {
        self.hash(flow::FLOWS_S)
            .insert(key, value, 0)
            .expect("inserting into FLOWS_S");
    }

    /// Inserts (or replaces) an `ARMS` entry.
    pub fn set_arm(&mut self, key: FlowKey, value: Arm) {
        self.hash(flow::ARMS)
            .insert(key, value, 0)
            .expect("inserting into ARMS");
    }

    /// Every `FLOWS_C` entry, sorted by key.
    pub fn clients(&mut self) -> Vec<(FlowKey, ClientFlow)> {
        self.entries(flow::FLOWS_C)
    }

    /// Every `FLOWS_S` entry, sorted by key.
    pub fn backends(&mut self) -> Vec<(FlowKey, BackendFlow)> {
        self.entries(flow::FLOWS_S)
    }

    /// Every `ARMS` entry, sorted by key.
    pub fn arms(&mut self) -> Vec<(FlowKey, Arm)> {
        self.entries(flow::ARMS)
    }

    fn entries<V: aya::Pod>(&mut self, name: &str) -> Vec<(FlowKey, V)> {
        let m = self.hash::<FlowKey, V>(name);
        let mut v: Vec<(FlowKey, V)> = m
            .iter()
            .map(|r| r.unwrap_or_else(|e| panic!("reading {name}: {e}")))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Drains the `EVENTS` ring buffer.
    pub fn take_events(&mut self) -> Vec<Event> {
        let map = self
            .ebpf
            .map_mut(flow::EVENTS)
            .expect("no EVENTS map in the object");
        let mut ring = RingBuf::try_from(map).expect("EVENTS is a ring buffer");
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            let b: &[u8] = &item;
            assert_eq!(b.len(), size_of::<Event>(), "event record size");
            let u32_at = |at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            let mut id = [0_u8; 8];
            id.copy_from_slice(&b[..8]);
            out.push(Event {
                id: u64::from_ne_bytes(id),
                kind: u32_at(8),
                reason: u32_at(12),
                len: u32_at(16),
                pad: u32_at(20),
            });
        }
        out
    }

    /// Runs `hook`'s program once on `frame` (`BPF_PROG_TEST_RUN`). Call
    /// it from the thread that loaded.
    ///
    /// TC: with `skb->mark = mark`; the skb is linear and `CHECKSUM_NONE`,
    /// its device the loopback of the namespace [`Datapath::load`] made, so
    /// `skb->ifindex` is 1.
    ///
    /// XDP: `mark` must be 0 (XDP has none); the frame arrives on that
    /// loopback's receive queue (`ingress_ifindex` 0 in `xdp_md` means it),
    /// with no metadata. A redirect is only the verdict: the run does not
    /// transmit.
    #[must_use]
    pub fn run(&self, hook: Hook, frame: &[u8], mark: u32) -> Outcome {
        if hook == Hook::Xdp {
            assert_eq!(mark, 0, "an XDP run has no mark");
            return self.run_xdp(frame);
        }
        self.run_classifier(hook, frame, mark).0
    }

    /// A TC run of `hook` on `frame` with `skb->mark = mark` (see
    /// [`Datapath::run`]): its outcome and the kernel's time for it.
    fn run_classifier(
        &self,
        hook: Hook,
        frame: &[u8],
        mark: u32,
    ) -> (Outcome, std::time::Duration) {
        let name = hook.program();
        let prog: &SchedClassifier = self
            .ebpf
            .program(name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .unwrap_or_else(|e| panic!("{name} is not a classifier: {e}"));
        let mut ctx_in = [0_u8; SKB_CTX_LEN];
        ctx_in[SKB_CTX_MARK..SKB_CTX_MARK + 4].copy_from_slice(&mark.to_ne_bytes());
        let mut ctx_out = [0_u8; SKB_CTX_LEN];
        let mut data_out = vec![0_u8; frame.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut data_out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                ..TestRunOptions::new()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {name}: {e:?}"));
        let outcome = Outcome {
            mark: u32::from_ne_bytes(
                ctx_out[SKB_CTX_MARK..SKB_CTX_MARK + 4]
                    .try_into()
                    .expect("4 bytes"),
            ),
            ..outcome(&r, data_out)
        };
        (outcome, r.duration)
    }

    fn run_xdp(&self, frame: &[u8]) -> Outcome {
        let name = Hook::Xdp.program();
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .unwrap_or_else(|e| panic!("{name} is not an XDP program: {e}"));
        let mut ctx_in = [0_u8; XDP_MD_LEN];
        let len = u32::try_from(frame.len()).expect("frame size");
        ctx_in[XDP_MD_DATA_END..XDP_MD_DATA_END + 4].copy_from_slice(&len.to_ne_bytes());
        let mut data_out = vec![0_u8; frame.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut data_out),
                ctx_in: Some(&ctx_in),
                ..TestRunOptions::new()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {name}: {e:?}"));
        outcome(&r, data_out)
    }
}

/// A run's verdict and frame (no mark).
fn outcome(r: &TestRunResult, mut data_out: Vec<u8>) -> Outcome {
    data_out.truncate(usize::try_from(r.data_size_out).expect("size"));
    Outcome {
        verdict: i32::from_ne_bytes(r.return_value.to_ne_bytes()),
        frame: data_out,
        mark: 0,
    }
}

impl Datapath {
    /// Runs `hook`'s program once on `frame` and returns the kernel's time
    /// for the run (`BPF_PROG_TEST_RUN`'s own timer: the program, its
    /// helpers and the timer's own share, not the syscall) and the verdict.
    /// For the micro-benchmark; no test asserts on the time.
    ///
    /// One run per call, on purpose: a repeated test run hands every
    /// repetition the skb the one before rewrote, so a path that retargets
    /// its packet (a splice, an ACK to the backend) runs once and then
    /// times the pass-through of a packet no flow knows.
    #[must_use]
    pub fn time(&self, hook: Hook, frame: &[u8]) -> (std::time::Duration, i32) {
        let (outcome, time) = self.run_classifier(hook, frame, 0);
        (time, outcome.verdict)
    }
}

/// One fixture row.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// What the row shows.
    pub name: &'static str,
    /// The program it runs.
    pub hook: Hook,
    /// `FLOWS_C` before.
    pub clients: Vec<(FlowKey, ClientFlow)>,
    /// `FLOWS_S` before.
    pub backends: Vec<(FlowKey, BackendFlow)>,
    /// `ARMS` before.
    pub arms: Vec<(FlowKey, Arm)>,
    /// `skb->mark` in.
    pub mark: u32,
    /// The frame in (full checksums).
    pub input: Segment,
    /// The expected return value.
    pub verdict: i32,
    /// The expected frame out (full checksums).
    pub output: Segment,
    /// The expected (IPv4, TCP) checksum fields of the output, written out.
    pub checksums: (u16, u16),
    /// The expected `skb->mark` out.
    pub mark_out: u32,
    /// `FLOWS_C` after (every entry, whole values).
    pub clients_after: Vec<(FlowKey, ClientFlow)>,
    /// `FLOWS_S` after.
    pub backends_after: Vec<(FlowKey, BackendFlow)>,
    /// `ARMS` after.
    pub arms_after: Vec<(FlowKey, Arm)>,
    /// The ring-buffer events the run reports, in order.
    pub events: Vec<Event>,
    /// The splice counters after the row (zeroed before it), as
    /// `(counter::*, value)` for every non-zero one: every other counter
    /// must be 0. `None`: not checked.
    pub counters: Option<Vec<(u32, u64)>>,
    /// Set on a row that shows a known datapath bug: what is wrong and
    /// where. The row states the correct behaviour and keeps failing until
    /// the bug is fixed; the failure report names the bug.
    pub bug: Option<&'static str>,
}

/// Runs one row; every difference from the expectation, described.
pub fn run_fixture(dp: &mut Datapath, fx: &Fixture) -> Vec<String> {
    let mut errs = Vec::new();
    dp.reset();
    for (k, v) in &fx.clients {
        dp.set_client(*k, *v);
    }
    for (k, v) in &fx.backends {
        dp.set_backend(*k, *v);
    }
    for (k, v) in &fx.arms {
        dp.set_arm(*k, *v);
    }
    let input = fx.input.frame();
    // The builder's own invariant: the input's checksums are right.
    assert_eq!(
        checksum_fields(&input),
        (ipv4_checksum(&input), tcp_checksum(&input)),
        "{}: input checksums",
        fx.name
    );
    let out = dp.run(fx.hook, &input, fx.mark);
    let expected = fx.output.frame();

    if out.verdict != fx.verdict {
        errs.push(format!(
            "verdict: got {}, expected {}",
            out.verdict, fx.verdict
        ));
    }
    if out.frame != expected {
        let at = out
            .frame
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| out.frame.len().min(expected.len()));
        let got = Segment::parse(&out.frame)
            .map_or_else(|| "(not IPv4/TCP)".to_owned(), |s| s.to_string());
        errs.push(format!(
            "bytes differ from offset {at}\n      got:      {got}\n      expected: {}\n      got bytes:      {}\n      expected bytes: {}",
            fx.output,
            hex(&out.frame),
            hex(&expected)
        ));
    }
    if out.frame.len() >= TCP_OFF + 20 {
        let fields = checksum_fields(&out.frame);
        let full = (ipv4_checksum(&out.frame), tcp_checksum(&out.frame));
        if fields != full {
            errs.push(format!(
                "output checksums (ip, tcp) {} != full recomputation {}",
                pair(fields),
                pair(full)
            ));
        }
        if fields != fx.checksums {
            errs.push(format!(
                "output checksums (ip, tcp) {} != expected {}",
                pair(fields),
                pair(fx.checksums)
            ));
        }
    }
    if checksum_fields(&expected) != fx.checksums {
        errs.push(format!(
            "table error: the written-out checksums {} are not the expected frame's {}",
            pair(fx.checksums),
            pair(checksum_fields(&expected))
        ));
    }
    if out.mark != fx.mark_out {
        errs.push(format!(
            "mark: got {:#x}, expected {:#x}",
            out.mark, fx.mark_out
        ));
    }
    compare(
        &mut errs,
        "FLOWS_C",
        &dp.clients(),
        &sorted(&fx.clients_after),
    );
    compare(
        &mut errs,
        "FLOWS_S",
        &dp.backends(),
        &sorted(&fx.backends_after),
    );
    compare(&mut errs, "ARMS", &dp.arms(), &sorted(&fx.arms_after));
    let events = dp.take_events();
    if events != fx.events {
        errs.push(format!("events: got {events:?}, expected {:?}", fx.events));
    }
    if let Some(want) = &fx.counters {
        compare_counters(&mut errs, &dp.counters(), want);
    }
    errs
}

fn compare_counters(errs: &mut Vec<String>, got: &[u64], want: &[(u32, u64)]) {
    let name = |i: u32| {
        if i < counter::COUNT {
            counter::name(i).to_owned()
        } else {
            format!("relay reason {}", i - counter::RELAY_BASE)
        }
    };
    for (i, &g) in (0_u32..).zip(got) {
        let w = want.iter().find(|(c, _)| *c == i).map_or(0, |(_, v)| *v);
        if g != w {
            errs.push(format!("counter {} ({i}): got {g}, expected {w}", name(i)));
        }
    }
}

/// Runs every row of a table on one loaded datapath and panics listing
/// every failing row and how it failed (a row marked with [`Fixture::bug`]
/// names its bug; one that passes says the mark is stale).
pub fn run_table(dp: &mut Datapath, table: &str, rows: &[Fixture]) {
    use fmt::Write as _;
    let mut report = String::new();
    for fx in rows {
        let errs = run_fixture(dp, fx);
        match (fx.bug, errs.is_empty()) {
            (None, true) => {}
            (Some(bug), true) => {
                let _ = writeln!(
                    report,
                    "[{table}] {}: passes, but is marked as showing a bug ({bug}): remove the mark",
                    fx.name
                );
            }
            (bug, false) => {
                let _ = writeln!(report, "[{table}] {}:", fx.name);
                if let Some(bug) = bug {
                    let _ = writeln!(report, "    KNOWN DATAPATH BUG: {bug}");
                }
                for e in errs {
                    let _ = writeln!(report, "    {e}");
                }
            }
        }
    }
    assert!(report.is_empty(), "fixture rows failed:\n{report}");
}

fn sorted<V: Copy>(v: &[(FlowKey, V)]) -> Vec<(FlowKey, V)> {
    let mut v = v.to_vec();
    v.sort_by_key(|(k, _)| *k);
    v
}

fn compare<V: PartialEq + fmt::Debug>(
    errs: &mut Vec<String>,
    map: &str,
    got: &[(FlowKey, V)],
    want: &[(FlowKey, V)],
) {
    if got == want {
        return;
    }
    if got.len() != want.len() {
        errs.push(format!(
            "{map}: {} entries, expected {}: got {got:#?}",
            got.len(),
            want.len()
        ));
        return;
    }
    for ((gk, gv), (wk, wv)) in got.iter().zip(want) {
        if gk != wk {
            errs.push(format!("{map}: key {gk:?}, expected {wk:?}"));
        } else if gv != wv {
            errs.push(format!(
                "{map}[{gk:?}]:\n      got:      {gv:?}\n      expected: {wv:?}"
            ));
        }
    }
}

fn pair((ip, tcp): (u16, u16)) -> String {
    format!("({ip:#06x}, {tcp:#06x})")
}

fn hex(b: &[u8]) -> String {
    use fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

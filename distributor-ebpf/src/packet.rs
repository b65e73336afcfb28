//! Bounds-checked packet access and the few header layouts the datapath
//! reads. All multi-byte header fields are in network byte order.

use core::mem::size_of;

/// `EtherType` of IPv4, network byte order as read from the frame.
pub const ETH_P_IP_BE: u16 = 0x0800_u16.to_be();
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;

/// Offsets in an Ethernet frame carrying IPv4 without options and TCP,
/// and the TCP flag bits.
pub const ETH_HLEN: usize = 14;
pub const IP_OFF: usize = ETH_HLEN;
pub const IP_CHECK: usize = IP_OFF + 10;
pub const IP_SADDR: usize = IP_OFF + 12;
pub const IP_DADDR: usize = IP_OFF + 16;
pub const TCP_OFF: usize = IP_OFF + 20;
pub const TCP_SPORT: usize = TCP_OFF;
pub const TCP_DPORT: usize = TCP_OFF + 2;
pub const TCP_SEQ: usize = TCP_OFF + 4;
pub const TCP_ACK: usize = TCP_OFF + 8;
pub const TCP_WINDOW: usize = TCP_OFF + 14;
pub const TCP_CHECK: usize = TCP_OFF + 16;
pub const TCP_OPTS: usize = TCP_OFF + 20;

pub const TH_FIN: u8 = 0x01;
pub const TH_SYN: u8 = 0x02;
pub const TH_RST: u8 = 0x04;
pub const TH_PSH: u8 = 0x08;
pub const TH_ACK: u8 = 0x10;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network byte order.
    pub ether_type: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    /// Network byte order.
    pub tot_len: u16,
    pub id: u16,
    /// Flags and fragment offset, network byte order.
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    /// Network byte order.
    pub saddr: u32,
    /// Network byte order.
    pub daddr: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct TcpHdr {
    /// Network byte order.
    pub source: u16,
    /// Network byte order.
    pub dest: u16,
    /// Network byte order.
    pub seq: u32,
    /// Network byte order.
    pub ack_seq: u32,
    /// Data offset (high nibble) and reserved bits.
    pub doff_res: u8,
    pub flags: u8,
    /// Network byte order.
    pub window: u16,
    pub check: u16,
    pub urg_ptr: u16,
}

/// The linear packet data `[data, data_end)` of an XDP or TC context.
pub struct Packet {
    data: usize,
    data_end: usize,
}

impl Packet {
    pub const fn new(data: usize, data_end: usize) -> Self {
        Self { data, data_end }
    }

    /// Bytes of linear data.
    pub const fn len(&self) -> u64 {
        (self.data_end - self.data) as u64
    }

    /// A pointer to a `T` at `offset`, or `Err` if it does not fit. The one
    /// place the datapath touches packet memory: the comparison against
    /// `data_end` is what the verifier needs to see before any access.
    #[inline(always)]
    pub fn ptr_at<T>(&self, offset: usize) -> Result<*const T, ()> {
        let start = self.data + offset;
        if start + size_of::<T>() > self.data_end {
            return Err(());
        }
        Ok(start as *const T)
    }
}

/// A frame's linear data from `data`, read (and, at XDP, written) in place
/// at constant offsets: the caller has checked once that `data_end` lies
/// beyond every offset it uses, which is what the verifier needs to see.
pub struct Frame {
    data: usize,
}

impl Frame {
    /// The frame at `data` (`ctx.data()`).
    pub const fn new(data: usize) -> Self {
        Self { data }
    }

    /// IPv4 without options, not a fragment, carrying TCP: the TCP header
    /// at offset 34. Needs 34 bytes checked.
    #[inline(always)]
    pub fn is_plain_ipv4_tcp(&self) -> bool {
        // More-fragments flag and fragment offset.
        let fragment = self.u16(IP_OFF + 6) & 0x3fff;
        self.u16(12) == 0x0800
            && self.u8(IP_OFF) == 0x45
            && self.u8(IP_OFF + 9) == IPPROTO_TCP
            && fragment == 0
    }

    #[inline(always)]
    pub fn u8(&self, off: usize) -> u8 {
        // SAFETY: `off` is below the length the caller checked.
        unsafe { *((self.data + off) as *const u8) }
    }

    /// A 16-bit field, host order.
    #[inline(always)]
    pub fn u16(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.u8(off), self.u8(off + 1)])
    }

    /// A 32-bit field, host order.
    #[inline(always)]
    pub fn u32(&self, off: usize) -> u32 {
        u32::from_be_bytes([
            self.u8(off),
            self.u8(off + 1),
            self.u8(off + 2),
            self.u8(off + 3),
        ])
    }

    #[inline(always)]
    pub fn set(&self, off: usize, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: as in `u8`.
            unsafe { *((self.data + off + i) as *mut u8) = *b };
        }
    }

    #[inline(always)]
    pub fn set16(&self, off: usize, v: u16) {
        self.set(off, &v.to_be_bytes());
    }

    #[inline(always)]
    pub fn set32(&self, off: usize, v: u32) {
        self.set(off, &v.to_be_bytes());
    }
}

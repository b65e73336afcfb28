//! What the splice datapath needs to know about the gateway's own TCP
//! sockets: negotiated options, window scales and MSS (`TCP_INFO`), the
//! timestamp clock (`TCP_TIMESTAMP`) and the exact sequence numbers
//! (`TCP_REPAIR` + `TCP_QUEUE_SEQ`, the interface CRIU uses to checkpoint
//! live connections; it needs `CAP_NET_ADMIN`, which the datapath needs
//! anyway).

use std::{io, os::fd::AsRawFd};

const TCP_REPAIR: libc::c_int = 19;
const TCP_REPAIR_QUEUE: libc::c_int = 20;
const TCP_QUEUE_SEQ: libc::c_int = 21;
const TCP_TIMESTAMP: libc::c_int = 24;
const TCP_REPAIR_ON: libc::c_int = 1;
/// Leave repair mode without sending a window probe.
const TCP_REPAIR_OFF_NO_WP: libc::c_int = -1;
const TCP_NO_QUEUE: libc::c_int = 0;
const TCP_RECV_QUEUE: libc::c_int = 1;
const TCP_SEND_QUEUE: libc::c_int = 2;

/// `tcpi_options` bits.
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;

/// The `tcpi_state` values the control plane looks for
/// (`include/net/tcp_states.h`).
pub mod tcp_state {
    /// Both FINs exchanged and acknowledged (a socket still held by its
    /// descriptor goes to CLOSE instead).
    pub const TIME_WAIT: u8 = 6;
    /// The connection is gone (reset, or fully closed).
    pub const CLOSE: u8 = 7;
    /// The peer sent FIN.
    pub const CLOSE_WAIT: u8 = 8;

    /// The kernel's name of `state` (`include/net/tcp_states.h`).
    #[must_use]
    pub const fn name(state: u8) -> &'static str {
        match state {
            1 => "ESTABLISHED",
            2 => "SYN_SENT",
            3 => "SYN_RECV",
            4 => "FIN_WAIT1",
            5 => "FIN_WAIT2",
            TIME_WAIT => "TIME_WAIT",
            CLOSE => "CLOSE",
            CLOSE_WAIT => "CLOSE_WAIT",
            9 => "LAST_ACK",
            10 => "LISTEN",
            11 => "CLOSING",
            _ => "unknown",
        }
    }
}

/// The `TCP_INFO` fields the datapath uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Info {
    /// Timestamps negotiated.
    pub timestamps: bool,
    /// SACK negotiated.
    pub sack: bool,
    /// The peer's window scale (applies to the windows it advertises).
    pub snd_wscale: u8,
    /// Our window scale (applies to the windows we advertise).
    pub rcv_wscale: u8,
    /// Our send MSS (payload bytes, options excluded).
    pub snd_mss: u32,
    /// The window we currently advertise, in bytes.
    pub rcv_wnd: u32,
    /// The window the peer last advertised, in bytes (`tcpi_snd_wnd`:
    /// counted from `snd_una`).
    pub snd_wnd: u32,
    /// Bytes written and not yet sent.
    pub notsent: u32,
    /// `tcpi_state`, one of [`tcp_state`].
    pub state: u8,
    /// Segments sent and not yet acknowledged (`tcpi_unacked`).
    pub unacked: u32,
    /// Sequence space acknowledged by the peer since the handshake
    /// (`tcpi_bytes_acked`: `snd_una` minus its first value).
    pub bytes_acked: u64,
    /// Sequence space received in order since the handshake
    /// (`tcpi_bytes_received`: `rcv_nxt` minus its first value).
    pub bytes_received: u64,
}

impl Info {
    /// [`Seqs`] from the byte counters and a [`SeqBase`] of the same
    /// socket: `rcv_nxt` always; `write_seq` only when every byte written
    /// was sent and acknowledged (then it is `snd_una`), `None` otherwise.
    #[must_use]
    pub fn seqs(&self, base: SeqBase) -> (Option<u32>, u32) {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "sequence space is mod 2^32"
        )]
        let (acked, received) = (self.bytes_acked as u32, self.bytes_received as u32);
        let idle = self.unacked == 0 && self.notsent == 0;
        (
            idle.then(|| base.snd.wrapping_add(acked)),
            base.rcv.wrapping_add(received),
        )
    }

    /// The [`SeqBase`] that, with this `TCP_INFO`, gives `seqs`; `seqs`
    /// read at the same moment (nothing in flight on the send side).
    #[must_use]
    pub fn base(&self, seqs: Seqs) -> SeqBase {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "sequence space is mod 2^32"
        )]
        let (acked, received) = (self.bytes_acked as u32, self.bytes_received as u32);
        SeqBase {
            snd: seqs.write_seq.wrapping_sub(acked),
            rcv: seqs.rcv_nxt.wrapping_sub(received),
        }
    }
}

/// A socket's sequence numbers at its first byte counters: with them,
/// [`Info::seqs`] reads sequence numbers from `TCP_INFO` alone (one system
/// call) instead of through repair mode (six).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqBase {
    snd: u32,
    rcv: u32,
}

/// Offsets in the kernel's `struct tcp_info` (include/uapi/linux/tcp.h).
mod off {
    pub const OPTIONS: usize = 5;
    pub const WSCALE: usize = 6;
    pub const SND_MSS: usize = 16;
    pub const UNACKED: usize = 24;
    pub const BYTES_ACKED: usize = 120;
    pub const BYTES_RECEIVED: usize = 128;
    pub const NOTSENT: usize = 144;
    pub const SND_WND: usize = 228;
    pub const RCV_WND: usize = 232;
    /// Enough for every field above (kernel 6.2+ fills `tcpi_rcv_wnd`).
    pub const LEN: usize = 240;
}

fn getsockopt(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut len = libc::socklen_t::try_from(buf.len()).unwrap_or(libc::socklen_t::MAX);
    // SAFETY: `buf` is valid for `len` bytes; the kernel writes at most that.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len as usize)
}

fn setsockopt_int(fd: &impl AsRawFd, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: `value` is a valid c_int for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            name,
            (&raw const value).cast(),
            len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    buf.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

/// `TCP_INFO` of a connected socket.
pub fn info(fd: &impl AsRawFd) -> io::Result<Info> {
    let mut buf = [0_u8; off::LEN];
    let len = getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut buf)?;
    if len < off::LEN {
        return Err(io::Error::other(format!(
            "TCP_INFO returned {len} bytes; the kernel is too old for the splice datapath (6.2+)"
        )));
    }
    let options = buf[off::OPTIONS];
    let wscale = buf[off::WSCALE];
    Ok(Info {
        timestamps: options & TCPI_OPT_TIMESTAMPS != 0,
        sack: options & TCPI_OPT_SACK != 0,
        snd_wscale: wscale & 0x0f,
        rcv_wscale: wscale >> 4,
        snd_mss: u32_at(&buf, off::SND_MSS),
        rcv_wnd: u32_at(&buf, off::RCV_WND),
        snd_wnd: u32_at(&buf, off::SND_WND),
        notsent: u32_at(&buf, off::NOTSENT),
        state: buf[0],
        unacked: u32_at(&buf, off::UNACKED),
        bytes_acked: u64_at(&buf, off::BYTES_ACKED),
        bytes_received: u64_at(&buf, off::BYTES_RECEIVED),
    })
}

/// Bytes received and not yet read (`FIONREAD`).
pub fn unread(fd: &impl AsRawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &raw mut n) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The socket's current `TSval` clock (what its next segment would carry).
pub fn ts_clock(fd: &impl AsRawFd) -> io::Result<u32> {
    let mut buf = [0_u8; 4];
    getsockopt(fd, libc::IPPROTO_TCP, TCP_TIMESTAMP, &mut buf)?;
    Ok(u32::from_ne_bytes(buf))
}

/// Sequence numbers of a connected socket: the next byte it will send
/// (`write_seq`: equal to `snd_nxt` once everything written has been sent)
/// and the next byte it expects (`rcv_nxt`). Host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seqs {
    pub write_seq: u32,
    pub rcv_nxt: u32,
}

/// Reads [`Seqs`] through repair mode, briefly: the socket keeps its
/// state; nothing is sent or received differently while it is in repair
/// mode for these few system calls (the caller's task is the only writer).
pub fn seqs(fd: &impl AsRawFd) -> io::Result<Seqs> {
    setsockopt_int(fd, TCP_REPAIR, TCP_REPAIR_ON)?;
    let read = || -> io::Result<Seqs> {
        let mut buf = [0_u8; 4];
        setsockopt_int(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
        getsockopt(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ, &mut buf)?;
        let write_seq = u32::from_ne_bytes(buf);
        setsockopt_int(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
        getsockopt(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ, &mut buf)?;
        let rcv_nxt = u32::from_ne_bytes(buf);
        Ok(Seqs { write_seq, rcv_nxt })
    };
    let out = read();
    // Always leave repair mode, whatever happened above.
    let queue = setsockopt_int(fd, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
    let off = setsockopt_int(fd, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
    let out = out?;
    queue?;
    off?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u32_at_reads_native_order_and_tolerates_short_buffers() {
        let mut buf = [0_u8; 8];
        buf[4..8].copy_from_slice(&0x1234_5678_u32.to_ne_bytes());
        assert_eq!(u32_at(&buf, 4), 0x1234_5678);
        assert_eq!(u32_at(&buf, 6), 0);
    }

    #[test]
    fn counters_give_sequence_numbers_across_the_wrap() {
        let at_start = Info {
            bytes_acked: 1,
            bytes_received: 1,
            ..Info::default()
        };
        let base = at_start.base(Seqs {
            write_seq: 0xffff_fff0,
            rcv_nxt: 7,
        });
        let later = Info {
            bytes_acked: 0x1_0000_0021,
            bytes_received: 101,
            ..Info::default()
        };
        assert_eq!(later.seqs(base), (Some(0x10), 107));
        let busy = Info {
            unacked: 1,
            ..later
        };
        assert_eq!(busy.seqs(base), (None, 107));
        let unsent = Info {
            notsent: 5,
            ..later
        };
        assert_eq!(unsent.seqs(base), (None, 107));
    }

    /// Runs `f` on a thread of its own in a network namespace of its own
    /// (loopback up, 192.0.2.1 on it), so the test's traffic stays there;
    /// `None` where no namespace can be made.
    fn in_own_netns<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: no preconditions; CLONE_NEWNET moves this thread only.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    // No CAP_SYS_ADMIN (a container): nothing to test here.
                    return None;
                }
                for args in [
                    &["link", "set", "lo", "up"][..],
                    &["addr", "add", "192.0.2.1/32", "dev", "lo"],
                ] {
                    // A child of this thread starts in its namespace.
                    let status = std::process::Command::new("ip")
                        .args(args)
                        .status()
                        .expect("ip");
                    assert!(status.success(), "ip {args:?}");
                }
                Some(f())
            })
            .join()
            .expect("the test thread")
        })
    }

    #[test]
    fn repair_mode_reads_sequence_numbers_of_a_live_connection() {
        // Needs root (repair mode: CAP_NET_ADMIN; the namespace:
        // CAP_SYS_ADMIN); skipped (passes) without, as unit tests also run
        // unprivileged. The netns tests cover the privileged path.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let _ = in_own_netns(live_connection);
    }

    fn live_connection() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("192.0.2.1:0").expect("bind");
        let mut a =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut b, _) = listener.accept().expect("accept");
        let before_a = seqs(&a).expect("seqs a");
        let before_b = seqs(&b).expect("seqs b");
        let base_a = info(&a).expect("info a").base(before_a);
        // The two ends agree, and writing n bytes moves both by n.
        assert_eq!(before_a.write_seq, before_b.rcv_nxt);
        assert_eq!(before_b.write_seq, before_a.rcv_nxt);
        a.write_all(b"hello").expect("write");
        let mut got = [0_u8; 5];
        b.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"hello");
        assert_eq!(
            seqs(&a).expect("a").write_seq,
            before_a.write_seq.wrapping_add(5)
        );
        assert_eq!(
            seqs(&b).expect("b").rcv_nxt,
            before_b.rcv_nxt.wrapping_add(5)
        );
        // Once nothing is in flight, the byte counters and the base give
        // what repair mode reads.
        let mut now = info(&a).expect("info a");
        for _ in 0..100 {
            if now.unacked == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            now = info(&a).expect("info a");
        }
        let moved = seqs(&a).expect("a");
        assert_eq!(now.seqs(base_a), (Some(moved.write_seq), moved.rcv_nxt));
        // The connection still works after repair mode.
        b.write_all(b"ok").expect("write back");
        let mut back = [0_u8; 2];
        a.read_exact(&mut back).expect("read back");
        assert_eq!(&back, b"ok");
        let i = info(&a).expect("info");
        assert!(i.snd_mss > 0);
        // `snd_wnd` is the window b last advertised: what b's own
        // `rcv_wnd` says, to within one unit of b's window scale.
        let theirs = info(&b).expect("info b");
        let unit = 1_u32 << theirs.rcv_wscale;
        assert!(i.snd_wnd > 0);
        assert!(
            i.snd_wnd.abs_diff(theirs.rcv_wnd) < unit,
            "snd_wnd {} against the peer's rcv_wnd {} (unit {unit})",
            i.snd_wnd,
            theirs.rcv_wnd
        );
    }
}

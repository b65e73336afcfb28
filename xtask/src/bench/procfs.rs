//! The few /proc readings the benchmark needs.

use std::{collections::BTreeMap, os::unix::fs::MetadataExt as _, path::Path};

/// Clock ticks per second (`USER_HZ`), the unit of /proc CPU times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        #[expect(clippy::cast_precision_loss, reason = "USER_HZ is 100")]
        let hz = hz as f64;
        hz
    } else {
        100.0
    }
}

/// Busy CPU seconds of the whole machine since boot: user, nice, system,
/// irq and softirq over all CPUs. Idle and iowait are not work; steal is
/// the hypervisor's. softirq matters most here: forwarding and much of TCP
/// run in it, charged to no process.
pub fn machine_busy_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum();
    Some(ticks(busy))
}

#[expect(
    clippy::cast_precision_loss,
    reason = "tick counts stay far below 2^52"
)]
fn ticks(n: u64) -> f64 {
    n as f64 / ticks_per_second()
}

/// The fields after `comm` in /proc/<pid>/stat (field 3 onward).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// user + system CPU seconds of a process, all its threads.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    // Fields 14 (utime) and 15 (stime); the vector starts at field 3.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(ticks(utime + stime))
}

/// Peak resident set size (`VmHWM`) of a process, in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `pid` and its children (nginx's master and workers).
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.filter_map(Result::ok) {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Field 4 is the parent pid.
        let parent = stat_fields(child).and_then(|f| f.get(1)?.parse::<u32>().ok());
        if parent == Some(pid) {
            pids.push(child);
        }
    }
    pids
}

/// The length of a file (0 if missing).
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Lines appended to a file after its first `offset` bytes: requests an
/// access log gained. Reads only the new part; the logs grow by megabytes
/// per run.
#[expect(
    clippy::naive_bytecount,
    reason = "a few MB per run; not worth the bytecount crate"
)]
pub fn lines_after(path: &Path, offset: u64) -> u64 {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return 0;
    };
    let mut tail = Vec::new();
    if file.seek(SeekFrom::Start(offset)).is_err() || file.read_to_end(&mut tail).is_err() {
        return 0;
    }
    tail.iter()
        .filter(|&&c| c == b'\n')
        .count()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// CPU seconds so far of the user-space processes outside the network
/// namespaces `inside` (by inode), other than this one: other people's work
/// on a shared machine. Keyed by pid and start time; each value counts the
/// process and its reaped children, so a build's compiler runs show up in
/// their parent.
pub fn foreign_cpu(inside: &[u64]) -> BTreeMap<(u32, u64), f64> {
    // PF_KTHREAD in the flags field: kernel threads (ksoftirqd, kworkers)
    // also carry the testbed's own packets.
    const PF_KTHREAD: u64 = 0x0020_0000;
    let me = std::process::id();
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if inside.contains(&ns.ino()) {
            continue;
        }
        let Some(f) = stat_fields(pid) else {
            continue;
        };
        // From field 3: flags is field 9, utime..cstime 14..17, starttime 22.
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        if num(6) & PF_KTHREAD != 0 {
            continue;
        }
        let cpu = num(11) + num(12) + num(13) + num(14);
        out.insert((pid, num(19)), ticks(cpu));
    }
    out
}

/// Seconds of CPU the foreign processes used between two snapshots. A
/// process that ended in between shows up again in its parent's children
/// time, with all it used before the first snapshot too: that part (its
/// value then) is taken off again.
pub fn foreign_delta(before: &BTreeMap<(u32, u64), f64>, after: &BTreeMap<(u32, u64), f64>) -> f64 {
    let grown: f64 = after
        .iter()
        .map(|(k, &a)| (a - before.get(k).copied().unwrap_or(0.0)).max(0.0))
        .sum();
    let ended: f64 = before
        .iter()
        .filter(|(k, _)| !after.contains_key(k))
        .map(|(_, &b)| b)
        .sum();
    (grown - ended).max(0.0)
}

/// The inode of a network namespace file (`/run/netns/<name>`), which
/// `/proc/<pid>/ns/net` of its processes shares.
pub fn netns_inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

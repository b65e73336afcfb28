//! Network namespaces: create, run commands inside, destroy.
//!
//! Commands enter only the *network* namespace (`nsenter --net`), never a
//! new mount namespace as `ip netns exec` does: bpffs pins made inside must
//! stay visible to `bpftool` and `distributor stats` run from outside.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use anyhow::{Context as _, Result, bail};

use crate::NS_PREFIX;

/// A network namespace created by the testbed.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    pub fn create(name: &str) -> Result<Self> {
        run(Command::new("ip").args(["netns", "add", name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "dev", "lo", "up"])?;
        Ok(ns)
    }

    /// `/run/netns/<name>`.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// A command that runs `program` inside this namespace.
    #[must_use]
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `program args` inside; fails unless it exits 0. Returns stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = run(self.command(program).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args)).map(drop)
    }

    /// Whether `GET url` from inside the namespace answers 2xx within 1 s.
    #[must_use]
    pub fn http_ok(&self, url: &str) -> bool {
        self.command("curl")
            .args(["-sf", "-o", "/dev/null", "--max-time", "1", url])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// Kills every process in the namespace and deletes it. Best effort:
    /// called from `Drop`.
    pub fn destroy(&self) {
        destroy(&self.name);
    }

    /// `nstat -az` counters inside the namespace, by name.
    pub fn nstat(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let out = self.run("nstat", &["-az", "--json"])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("parsing nstat --json")?;
        let mut map = std::collections::BTreeMap::new();
        if let Some(kernel) = v.get("kernel").and_then(serde_json::Value::as_object) {
            for (k, v) in kernel {
                map.insert(k.clone(), v.as_u64().unwrap_or(0));
            }
        }
        Ok(map)
    }
}

fn destroy(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// Removes namespaces left by testbed runs whose process is gone (a run
/// killed before its `Drop` ran), their processes, and their scratch
/// folders (`distributor-testbed-<pid>-<n>` in the temporary folder).
pub fn remove_stale() -> Result<()> {
    let out = run(Command::new("ip").args(["netns", "list"]))?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            destroy(name);
            // `<pid>-<n>-<role>`: the testbed's id is `<pid>-<n>`.
            if let Some((id, _role)) = rest.rsplit_once('-') {
                let _ = std::fs::remove_dir_all(
                    std::env::temp_dir().join(format!("distributor-testbed-{id}")),
                );
            }
        }
    }
    Ok(())
}

/// Runs a command to completion; an error carries its stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("running {cmd:?} (is it installed? `cargo xtask bootstrap`)"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

impl Netns {
    /// Runs `f` on a new thread that has entered this network namespace
    /// (sockets it opens live there), and returns its result. Async code
    /// inside builds its own current-thread runtime.
    pub fn in_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        use std::os::fd::AsRawFd as _;
        let file = std::fs::File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        let handle = std::thread::spawn(move || {
            // SAFETY: setns(2) on a namespace fd we hold; it affects only
            // this (new) thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(anyhow::anyhow!(
                    "setns: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(f())
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Netns {
    /// Like [`Netns::in_thread`], without waiting: for servers a test runs
    /// inside a namespace.
    pub fn spawn_thread(
        &self,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<std::thread::JoinHandle<()>> {
        use std::os::fd::AsRawFd as _;
        let file = std::fs::File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            // SAFETY: as in `in_thread`.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            let _ = tx.send(rc);
            if rc == 0 {
                f();
            }
        });
        let rc = rx.recv().context("namespace thread died")?;
        anyhow::ensure!(rc == 0, "setns failed");
        Ok(handle)
    }
}

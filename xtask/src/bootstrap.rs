//! Makes sure, idempotently, that everything a command needs is installed:
//! the pinned nightly with rust-src (and clippy for the eBPF lint), a
//! bpf-linker built against that nightly's own LLVM in `.tools/`, and the
//! Debian packages the command uses. When all is there this takes a fraction
//! of a second (one `rustup run` and a few file checks).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{step, workspace};

/// bpf-linker release that matches aya 0.14 / aya-ebpf 0.2.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// A Debian package and a command it provides (how we tell it is there).
pub type Package = (&'static str, &'static str);

pub const IPROUTE2: Package = ("iproute2", "ip");
pub const BPFTOOL: Package = ("bpftool", "bpftool");
pub const NFTABLES: Package = ("nftables", "nft");
pub const ETHTOOL: Package = ("ethtool", "ethtool");
pub const NGINX: Package = ("nginx", "nginx");
pub const CURL: Package = ("curl", "curl");
pub const WRK: Package = ("wrk", "wrk");
pub const HAPROXY: Package = ("haproxy", "haproxy");
pub const APACHE2_UTILS: Package = ("apache2-utils", "ab");
pub const UTIL_LINUX: Package = ("util-linux", "nsenter");
pub const PROCPS: Package = ("procps", "sysctl");

/// What the testbed (demo, tests) runs.
pub const TESTBED: &[Package] = &[IPROUTE2, BPFTOOL, NGINX, CURL, UTIL_LINUX, PROCPS];
/// What the tests add: fault injection and offload switches, load tools.
pub const TESTS: &[Package] = &[NFTABLES, ETHTOOL, WRK, APACHE2_UTILS];
/// The benchmark's peers and load generator.
pub const BENCH: &[Package] = &[HAPROXY, WRK];

/// Paths of the installed eBPF tools.
pub struct Tools {
    /// The pinned nightly, e.g. `nightly-2026-05-19`.
    pub toolchain: String,
    /// Folder holding `bpf-linker`.
    pub linker_bin: PathBuf,
}

/// Ensures the eBPF toolchain, bpf-linker and `packages`.
pub fn ensure(packages: &[Package]) -> Result<Tools> {
    let start = Instant::now();
    let root = workspace();
    let toolchain = pinned_toolchain(&root)?;
    let sysroot = ensure_toolchain(&toolchain)?;
    let linker_bin = ensure_bpf_linker(&root, &toolchain, &sysroot)?;
    ensure_packages(packages)?;
    if std::env::var_os("XTASK_VERBOSE").is_some() {
        eprintln!("bootstrap: all present ({:?})", start.elapsed());
    }
    Ok(Tools {
        toolchain,
        linker_bin,
    })
}

/// The channel pinned in `distributor-ebpf/rust-toolchain.toml`.
pub fn pinned_toolchain(root: &Path) -> Result<String> {
    let file = root.join("distributor-ebpf/rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .with_context(|| format!("no `channel = ...` in {}", file.display()))
}

fn rustup_run(toolchain: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.arg("run").arg(toolchain).args(args);
    cmd
}

/// Installs the toolchain and components if missing; returns its sysroot.
fn ensure_toolchain(toolchain: &str) -> Result<PathBuf> {
    let sysroot = || -> Option<PathBuf> {
        let out = rustup_run(toolchain, &["rustc", "--print", "sysroot"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    };
    let complete = |s: &Path| {
        s.join("lib/rustlib/src/rust/library/core").is_dir()
            && s.join("bin/clippy-driver").is_file()
    };
    if let Some(s) = sysroot()
        && complete(&s)
    {
        return Ok(s);
    }
    step(&format!(
        "installing Rust {toolchain} with rust-src and clippy (about 20 s)"
    ));
    run(
        Command::new("rustup").args([
            "toolchain",
            "install",
            toolchain,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
            "--component",
            "clippy",
        ]),
        "installing the eBPF toolchain failed; check that rustup can reach its server",
    )?;
    let s = sysroot().context("the toolchain is still missing after installing it")?;
    anyhow::ensure!(
        complete(&s),
        "rust-src or clippy missing in {}",
        s.display()
    );
    Ok(s)
}

/// Builds bpf-linker into `.tools/bpf-linker` against the toolchain's own
/// libLLVM, unless the one there was built for this same LLVM.
fn ensure_bpf_linker(root: &Path, toolchain: &str, sysroot: &Path) -> Result<PathBuf> {
    let tools = root.join(".tools");
    let bin = tools.join("bpf-linker/bin");
    let stamp = tools.join("bpf-linker/built-for");
    // The LLVM shared library's soname names both the LLVM and the rustc
    // version, e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`.
    let soname = std::fs::read_dir(sysroot.join("lib"))
        .with_context(|| format!("listing {}/lib", sysroot.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}/lib", sysroot.display()))?;
    let want = format!("{soname} bpf-linker {BPF_LINKER_VERSION}\n");
    if bin.join("bpf-linker").is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == want)
    {
        return Ok(bin);
    }

    // `rustc -vV` says `LLVM version: 22.1.4`: the feature is `llvm-22`.
    let out = rustup_run(toolchain, &["rustc", "-vV"]).output()?;
    let version = String::from_utf8_lossy(&out.stdout);
    let llvm_major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("`rustc -vV` printed no LLVM version")?
        .to_owned();

    // LLVM_PREFIX/lib must hold libLLVM.so and its soname: links to the
    // toolchain's own library (the binary's rpath points here too).
    let prefix = tools.join("llvm");
    let lib = prefix.join("lib");
    let _ = std::fs::remove_dir_all(&prefix);
    std::fs::create_dir_all(&lib)?;
    let target = sysroot.join("lib").join(&soname);
    for name in ["libLLVM.so", soname.as_str()] {
        std::os::unix::fs::symlink(&target, lib.join(name))
            .with_context(|| format!("linking {}", lib.join(name).display()))?;
    }

    step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against {soname} (about a minute)"
    ));
    run(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--force"])
            .args(["--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{llvm_major}"))
            .arg("--root")
            .arg(tools.join("bpf-linker"))
            .env("LLVM_PREFIX", &prefix),
        "building bpf-linker failed; see the cargo output above",
    )?;
    std::fs::write(&stamp, want)?;
    Ok(bin)
}

/// Installs the Debian packages whose command is missing (apt-get, as root).
fn ensure_packages(packages: &[Package]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, cmd)| !on_path(cmd))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        bail!(
            "missing Debian packages: {0}; run as root (cargo xtask installs them) or \
             `sudo apt-get install {0}`",
            missing.join(" ")
        );
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    run(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update failed",
    )?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install failed; see its output above",
    )?;
    let still: Vec<&str> = packages
        .iter()
        .filter(|(_, cmd)| !on_path(cmd))
        .map(|(_, cmd)| *cmd)
        .collect();
    anyhow::ensure!(
        still.is_empty(),
        "still missing after apt-get: {}",
        still.join(" ")
    );
    Ok(())
}

/// Whether `cmd` is an executable on PATH (or in /usr/sbin and /sbin, which
/// a non-login root shell may lack).
pub fn on_path(cmd: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|dir| dir.join(cmd).is_file())
}

fn run(cmd: &mut Command, hint: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{hint} ({cmd:?}: {status})");
    }
    Ok(())
}

//! `cargo xtask`: distributor's task runner.
//!
//! Every command first runs the bootstrap (idempotent, fast when all is
//! there), so `cargo xtask demo` and `cargo xtask test` work on a fresh
//! machine.

mod bench;
mod bootstrap;
mod demo;
mod test;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "distributor's tasks: bootstrap, build, demo, test")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (toolchain, bpf-linker, Debian packages).
    Bootstrap,
    /// Build the control plane with its embedded eBPF object.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run distributor on a namespace testbed and show it at work.
    Demo {
        /// Leave the testbed running and print how to use it by hand.
        #[arg(long)]
        keep: bool,
    },
    /// fmt, both clippy runs, host unit tests, then the root netns tests.
    Test {
        /// Only run netns tests whose name contains this.
        filter: Option<String>,
    },
    /// fmt check and both clippy runs only.
    Lint,
    /// Contenders side by side on a testbed (routed, haproxy,
    /// haproxy-splice, nginx-proxy, distributor-relay,
    /// distributor-splice-tc, distributor-splice-xdp); results in
    /// `results/bench-<UTC time>/` and `results/latest.*`. Full mode:
    /// 13 workloads x 7 contenders x 3 repetitions, about an hour;
    /// `--quick`: about 4 minutes.
    Bench(bench::Args),
}

fn main() -> std::process::ExitCode {
    // A non-login root shell may lack the sbin folders (ip, nginx, bpftool).
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for extra in ["/usr/sbin", "/sbin", "/usr/local/sbin"] {
        if !dirs.iter().any(|d| d == Path::new(extra)) {
            dirs.push(PathBuf::from(extra));
        }
    }
    if let Ok(joined) = std::env::join_paths(dirs) {
        // SAFETY: single-threaded here, before anything else runs.
        unsafe { std::env::set_var("PATH", joined) };
    }

    let result = match Cli::parse().command {
        Cmd::Bootstrap => bootstrap::ensure(&all_packages()).map(drop),
        Cmd::Build { release } => bootstrap::ensure(&[])
            .and_then(|_| build_distributor(release))
            .map(drop),
        Cmd::Demo { keep } => demo::run(keep),
        Cmd::Test { filter } => test::run(filter.as_deref()),
        Cmd::Lint => test::lint_only(),
        Cmd::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn all_packages() -> Vec<bootstrap::Package> {
    [bootstrap::TESTBED, bootstrap::TESTS, bootstrap::BENCH].concat()
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Cargo's target folder.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

/// Prints a progress line for a long step.
pub fn step(what: &str) {
    eprintln!("==> {what}");
}

/// Whether we run as root.
#[must_use]
pub fn is_root() -> bool {
    distributor_tests::is_root()
}

/// A `cargo` command in the workspace, on the workspace's (stable) toolchain.
#[must_use]
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace());
    cmd
}

/// Builds `distributor` and returns the binary's path.
pub fn build_distributor(release: bool) -> Result<PathBuf> {
    step(&format!(
        "building distributor ({})",
        if release { "release" } else { "debug" }
    ));
    let mut cmd = cargo();
    cmd.args(["build", "--package", "distributor"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build")?;
    anyhow::ensure!(status.success(), "cargo build --package distributor failed");
    let bin = target_dir()
        .join(if release { "release" } else { "debug" })
        .join("distributor");
    anyhow::ensure!(bin.is_file(), "{} missing after the build", bin.display());
    Ok(bin)
}

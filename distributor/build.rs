//! Builds the eBPF object (`distributor-ebpf`) with the pinned nightly and
//! the project-local bpf-linker, so a plain `cargo build` works once `cargo
//! xtask bootstrap` (which every xtask command runs first) has installed them.
//!
//! The object is embedded from `OUT_DIR` (a hashed folder), and also copied
//! to the stable path `<target>/bpf/distributor.bpf.o` for the tools and
//! tests that load it without the binary (`BPF_PROG_TEST_RUN` fixtures,
//! `bpftool prog load`).

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

/// The file name of the stable copy, under `<target>/bpf/`.
const STABLE_OBJECT: &str = "distributor.bpf.o";

const HINT: &str = "run `cargo xtask bootstrap` (installs the pinned nightly and bpf-linker)";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .context("distributor/ has no parent folder")?;
    let ebpf_dir = workspace.join("distributor-ebpf");
    let toolchain_file = ebpf_dir.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={}", toolchain_file.display());

    let toolchain = pinned_toolchain(&toolchain_file)?;
    // The same folder xtask's bootstrap installs into (xtask/src/bootstrap.rs).
    let linker_bin = workspace.join(".tools/bpf-linker/bin");
    println!("cargo:rerun-if-changed={}", linker_bin.display());

    let toolchain_ok = Command::new("rustup")
        .args(["run", &toolchain, "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !toolchain_ok {
        bail!("the eBPF toolchain {toolchain} is not installed: {HINT}");
    }
    if !linker_bin.join("bpf-linker").is_file() {
        bail!("bpf-linker is not in {}: {HINT}", linker_bin.display());
    }

    // aya-build runs `rustup run <toolchain> cargo build` for the eBPF crate,
    // which finds the linker on PATH.
    let path = env::var_os("PATH").unwrap_or_default();
    let path = env::join_paths(std::iter::once(linker_bin).chain(env::split_paths(&path)))?;
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("PATH", path) };

    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "distributor-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .with_context(|| format!("building the eBPF object failed; if tools are missing, {HINT}"))?;
    publish_object(workspace)
}

/// Copies the object aya-build left in `OUT_DIR` (named after the eBPF
/// crate's binary) to `<target>/bpf/distributor.bpf.o`. The target folder
/// is `CARGO_TARGET_DIR` when that is an absolute path (a relative one is
/// relative to wherever cargo was started, which a build script cannot
/// know), else the workspace's `target/`. The copy goes through a temporary
/// file and a rename, so a test loading the object while another build
/// runs never reads half a file.
fn publish_object(workspace: &Path) -> anyhow::Result<()> {
    let built = PathBuf::from(env::var("OUT_DIR")?).join("distributor");
    if !built.is_file() {
        // AYA_BUILD_SKIP: nothing was built, nothing to publish.
        return Ok(());
    }
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| workspace.join("target"));
    let dir = target.join("bpf");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!("{STABLE_OBJECT}.{}.tmp", std::process::id()));
    let dst = dir.join(STABLE_OBJECT);
    fs::copy(&built, &tmp)
        .with_context(|| format!("copying {} to {}", built.display(), tmp.display()))?;
    fs::rename(&tmp, &dst)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dst.display()))
}

/// The `channel = "..."` of `distributor-ebpf/rust-toolchain.toml`.
fn pinned_toolchain(file: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .with_context(|| format!("no channel in {}", file.display()))
}

//! One instance per pin directory: the lock that makes a second instance
//! refuse, the bpffs mount, and the clean-up of a crashed instance's pins.
//!
//! Programs are attached through bpf links that are never pinned, so they
//! detach when the process exits, however it exits. What survives a crash is
//! the pinned maps; the next start removes them before pinning its own.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Seek as _, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

/// `statfs.f_type` of a BPF filesystem.
const BPF_FS_MAGIC: libc::c_long = 0xcafe_4a11;
/// Where the lock files live.
const LOCK_DIR: &str = "/run/distributor";

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(
        "another distributor instance (pid {pid}) is running with pin directory {pin_dir}; \
         stop it first (SIGINT or SIGTERM), or give this one another datapath.pin_dir"
    )]
    AlreadyRunning { pid: String, pin_dir: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'p>(
    what: &'static str,
    path: &'p Path,
) -> impl FnOnce(io::Error) -> InstanceError + use<'p> {
    move |source| InstanceError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Held while this instance runs; dropping it releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock for `pin_dir`, or says which process holds it.
    pub fn acquire(pin_dir: &Path) -> Result<Self, InstanceError> {
        let dir = Path::new(LOCK_DIR);
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let path = dir.join(format!("{}.lock", lock_name(pin_dir)));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        // SAFETY: plain flock(2) on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                let mut pid = String::new();
                // Best effort: the pid only makes the message better.
                let _ = file.read_to_string(&mut pid);
                return Err(InstanceError::AlreadyRunning {
                    pid: pid.trim().to_owned(),
                    pin_dir: pin_dir.to_owned(),
                });
            }
            return Err(io_err("locking", &path)(err));
        }
        file.set_len(0).map_err(io_err("truncating", &path))?;
        file.rewind().map_err(io_err("rewinding", &path))?;
        writeln!(file, "{}", std::process::id()).map_err(io_err("writing", &path))?;
        Ok(Self { file, path })
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock, so a waiting
        // instance never locks a file that is about to disappear unnoticed.
        let _ = fs::remove_file(&self.path);
        let _ = &self.file;
    }
}

/// A file name for the lock of `pin_dir`: its path with `/` as `_`.
fn lock_name(pin_dir: &Path) -> String {
    pin_dir
        .to_string_lossy()
        .trim_matches('/')
        .replace('/', "_")
}

/// Makes sure the bpffs that will hold `pin_dir` is mounted, mounting one on
/// `/sys/fs/bpf` when nothing is there (a fresh box, or a new mount
/// namespace).
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), InstanceError> {
    let root = Path::new("/sys/fs/bpf");
    if !pin_dir.starts_with(root) || is_bpffs(root) {
        return Ok(());
    }
    let src = c"bpf";
    let target = c"/sys/fs/bpf";
    // SAFETY: NUL-terminated constant strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io_err("mounting bpffs on", root)(io::Error::last_os_error()));
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `statfs` is plain old data, fully written by the call on success.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &raw mut st) };
    rc == 0 && st.f_type == BPF_FS_MAGIC
}

/// Removes whatever a previous instance left in `pin_dir` (we hold the lock,
/// so no live instance owns it) and creates it empty. Returns the names
/// removed.
pub fn reset_pin_dir(pin_dir: &Path) -> Result<Vec<String>, InstanceError> {
    let removed = remove_pin_dir(pin_dir)?;
    fs::create_dir_all(pin_dir).map_err(io_err("creating", pin_dir))?;
    Ok(removed)
}

/// Unpins everything in `pin_dir` and removes it. Returns the names removed.
pub fn remove_pin_dir(pin_dir: &Path) -> Result<Vec<String>, InstanceError> {
    let entries = match fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("reading", pin_dir)(e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("reading", pin_dir))?;
        let path = entry.path();
        // Unlinking a pin drops the kernel's reference to the object.
        fs::remove_file(&path).map_err(io_err("unpinning", &path))?;
        removed.push(entry.file_name().to_string_lossy().into_owned());
    }
    fs::remove_dir(pin_dir).map_err(io_err("removing", pin_dir))?;
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_are_flat_and_distinct() {
        assert_eq!(
            lock_name(Path::new("/sys/fs/bpf/distributor")),
            "sys_fs_bpf_distributor"
        );
        assert_ne!(
            lock_name(Path::new("/sys/fs/bpf/a")),
            lock_name(Path::new("/sys/fs/bpf/b"))
        );
    }

    #[test]
    fn remove_pin_dir_of_a_missing_dir_is_empty() {
        let dir = std::env::temp_dir().join(format!("distributor-none-{}", std::process::id()));
        assert!(remove_pin_dir(&dir).unwrap().is_empty());
    }

    #[test]
    fn reset_pin_dir_empties_leftovers() {
        let dir = std::env::temp_dir().join(format!("distributor-left-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("OLD_MAP"), b"").unwrap();
        assert_eq!(reset_pin_dir(&dir).unwrap(), ["OLD_MAP"]);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir(&dir).unwrap();
    }
}

//! The state file: the running configuration, saved after every change and read at start.
//!
//! Saving is atomic: the text goes to a temporary file in the same directory, which is
//! flushed to disk, renamed over the state file, and the directory is flushed too, so after a
//! crash the file holds either the old or the new configuration, never a mix or nothing.
//! A state file that does not parse stops the start with an error naming it: it is never
//! taken as an empty configuration.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::{self, Config, ConfigError};

/// Name of the state file in the state directory.
pub const STATE_FILE: &str = "wvs-state.toml";

/// Why the state could not be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file operation failed.
    #[error("state {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Another wvs holds the state directory.
    #[error(
        "state directory {dir} is in use by another wvs (pid {pid}): one wvs per state directory; stop it or give --state-dir another directory"
    )]
    Locked {
        /// The directory.
        dir: String,
        /// The holder, as it wrote itself into the lock file.
        pid: String,
    },
    /// The state directory can be written by others than its owner.
    #[error("directory {dir} is not safe for wvs's state: {why}")]
    Unsafe {
        /// The directory.
        dir: String,
        /// What is wrong with it.
        why: String,
    },
    /// The state file exists but is not a valid configuration.
    #[error(
        "state file {path} is corrupt (fix or remove it; wvs will not start on an empty configuration instead): {source}"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        source: ConfigError,
    },
}

/// Name of the lock file in the state directory: held (`flock`) while wvs runs.
pub const LOCK_FILE: &str = "wvs.lock";

/// The state file of a state directory, which this process holds alone while it lives.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
    path: PathBuf,
    /// The lock file, locked: the lock goes with the last clone (and with the process).
    _lock: std::sync::Arc<std::fs::File>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl StateFile {
    /// The state file in `dir`, creating the directory (mode 0700) if needed.
    ///
    /// An existing directory must not be writable by group or others (wvs starts from what
    /// it holds), and no other wvs may hold it: the lock file is locked for the life of
    /// the process, and a second wvs is refused with the first one's pid.
    pub fn open(dir: &Path, owner: u32) -> Result<Self, StateError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(dir))?;
        }
        check_dir(dir, owner)?;
        let lock_path = dir.join(LOCK_FILE);
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path);
        let (mut lock, writable) = match opened {
            Ok(f) => (f, true),
            // A read-only disk: the saved state can still be read and served (changes,
            // which cannot be saved, are refused); the lock is taken on a read-only open.
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
                tracing::warn!(
                    dir = %dir.display(),
                    "the state directory is read-only: serving what is saved; changes will be refused"
                );
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&lock_path)
                    .map_err(io_err(&lock_path))?;
                (f, false)
            }
            Err(e) => return Err(io_err(&lock_path)(e)),
        };
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&lock_path).unwrap_or_default();
                return Err(StateError::Locked {
                    dir: dir.display().to_string(),
                    pid: pid.trim().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        // Who holds it, for the message a second wvs gives (a full disk only loses that).
        if writable
            && let Err(e) = lock.set_len(0).and_then(|()| {
                use std::io::Seek;
                lock.seek(std::io::SeekFrom::Start(0))?;
                writeln!(lock, "{}", std::process::id())
            })
        {
            tracing::warn!(file = %lock_path.display(), "cannot write the lock file: {e}");
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            path: dir.join(STATE_FILE),
            _lock: std::sync::Arc::new(lock),
        })
    }

    /// Path of the state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved configuration, or `None` if there is none yet.
    pub fn load(&self) -> Result<Option<Config>, StateError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => config::parse(&text)
                .map(Some)
                .map_err(|source| StateError::Corrupt {
                    path: self.path.display().to_string(),
                    source,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&self.path)(e)),
        }
    }

    /// Save a configuration atomically (temporary file, fsync, rename, fsync of the directory).
    pub fn save(&self, cfg: &Config) -> Result<(), StateError> {
        let text = format!(
            "# wvs state: the running configuration, saved after every change. Edit with care;\n\
             # wvs refuses to start on a file that does not parse.\n{}",
            config::to_toml(cfg)
        );
        write_atomic(&self.dir, &self.path, text.as_bytes()).map_err(io_err(&self.path))
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A directory wvs keeps what it trusts in (its state, compiled plugins): a directory, not
/// a symbolic link, owned by `owner` (wvs's effective user), writable by no one else; its
/// parent writable by no one but its owner and root, or sticky (as `/tmp`), so that no
/// one else can put another directory in its place.
pub fn check_dir(dir: &Path, owner: u32) -> Result<(), StateError> {
    use std::os::unix::fs::MetadataExt;
    let unsafe_dir = |why: String| StateError::Unsafe {
        dir: dir.display().to_string(),
        why,
    };
    let meta = std::fs::symlink_metadata(dir).map_err(io_err(dir))?;
    if !meta.is_dir() {
        return Err(unsafe_dir("not a directory".into()));
    }
    let mode = meta.mode() & 0o7777;
    if meta.uid() != owner {
        return Err(unsafe_dir(format!(
            "owned by uid {}, not by wvs's user (uid {owner})",
            meta.uid()
        )));
    }
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "mode {mode:04o}: others can write it; use 0700"
        )));
    }
    let parent = std::fs::canonicalize(dir)
        .map_err(io_err(dir))?
        .parent()
        .map(Path::to_path_buf);
    if let Some(parent) = parent {
        let pm = std::fs::metadata(&parent).map_err(io_err(&parent))?;
        let pmode = pm.mode() & 0o7777;
        let sticky = pmode & 0o1000 != 0;
        if (pm.uid() != 0 && pm.uid() != owner) || (pmode & 0o022 != 0 && !sticky) {
            return Err(unsafe_dir(format!(
                "its parent {} (uid {}, mode {pmode:04o}) can be changed by others",
                parent.display(),
                pm.uid()
            )));
        }
    }
    Ok(())
}

/// Write `bytes` to `path` in `dir` atomically: a temporary file in the same directory,
/// flushed, renamed over `path`, then the directory flushed, so that after a crash `path`
/// holds the old bytes or the new ones, never a mix or nothing.
pub fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A leftover of a crash is ours to replace (the directory is ours alone); then the
    // file is created exclusively and never through a symlink.
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    #[cfg(test)]
    if FAIL_DIR_SYNC.with(|f| f.get()) {
        return Err(std::io::Error::other("injected: directory fsync failed"));
    }
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
thread_local! {
    /// Tests: the next writes fail at the directory's fsync, after their rename.
    pub static FAIL_DIR_SYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wvs-state-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn saves_and_restores() {
        let dir = tmpdir("rt");
        let st = StateFile::open(&dir, nix::unistd::geteuid().as_raw()).unwrap();
        assert!(st.load().unwrap().is_none(), "no state yet");
        let cfg = config::parse(config::EXAMPLE).unwrap();
        st.save(&cfg).unwrap();
        assert_eq!(st.load().unwrap(), Some(cfg.clone()));
        let empty = Config::default();
        st.save(&empty).unwrap();
        assert_eq!(
            st.load().unwrap(),
            Some(empty),
            "an empty configuration is a valid state"
        );
        let mut leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        leftovers.sort();
        assert_eq!(
            leftovers,
            [STATE_FILE, LOCK_FILE].map(std::ffi::OsString::from),
            "no temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_wvs_per_state_directory() {
        let dir = tmpdir("lock");
        let first = StateFile::open(&dir, nix::unistd::geteuid().as_raw()).unwrap();
        let e = StateFile::open(&dir, nix::unistd::geteuid().as_raw()).unwrap_err();
        assert!(
            matches!(&e, StateError::Locked { pid, .. } if *pid == std::process::id().to_string()),
            "{e}"
        );
        assert!(e.to_string().contains("in use by another wvs"), "{e}");
        let clone = first.clone();
        drop(first);
        assert!(
            StateFile::open(&dir, nix::unistd::geteuid().as_raw()).is_err(),
            "a clone still holds it"
        );
        drop(clone);
        StateFile::open(&dir, nix::unistd::geteuid().as_raw()).expect("free again");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_directory_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmpdir("unsafe");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = StateFile::open(&dir, nix::unistd::geteuid().as_raw()).unwrap_err();
        assert!(e.to_string().contains("use 0700"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        StateFile::open(&dir, nix::unistd::geteuid().as_raw()).expect("fine once private");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A state directory (or plugin cache) of another user, a symbolic link, or under a
    /// parent others may write, is refused.
    #[test]
    fn a_state_directory_not_wvss_alone_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let me = nix::unistd::geteuid().as_raw();
        let dir = tmpdir("owner");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = check_dir(&dir, me + 1).unwrap_err();
        assert!(e.to_string().contains("not by wvs's user"), "{e}");
        let link = dir.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let e = check_dir(&link, me).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        std::fs::remove_file(&link).unwrap();
        let inner = dir.join("state");
        std::fs::create_dir(&inner).unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700)).unwrap();
        check_dir(&inner, me).expect("a private parent");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_dir(&inner, me).unwrap_err();
        assert!(e.to_string().contains("its parent"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_dir(&inner, me).expect("a sticky parent, as /tmp");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_state_is_an_error_not_an_empty_configuration() {
        let dir = tmpdir("bad");
        let st = StateFile::open(&dir, nix::unistd::geteuid().as_raw()).unwrap();
        std::fs::write(st.path(), "[[service]]\nprotocol = 'tcp'\naddress = ").unwrap();
        let e = st.load().unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("corrupt"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

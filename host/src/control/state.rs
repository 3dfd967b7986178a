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
pub(crate) const STATE_FILE: &str = "wvs-state.toml";

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
pub(crate) const LOCK_FILE: &str = "wvs.lock";

/// The state file of a state directory, which this process holds alone while it lives.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: std::sync::Arc<TrustedDir>,
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
    /// The directory must be `owner`'s alone ([`TrustedDir`]: wvs starts from what it
    /// holds), and no other wvs may hold it: the lock file is locked for the life of the
    /// process, and a second wvs is refused with the first one's pid.
    pub fn open(dir: &Path, owner: u32) -> Result<Self, StateError> {
        use nix::fcntl::OFlag;
        let dir = TrustedDir::open(dir, owner)?;
        let lock_path = dir.join(LOCK_FILE);
        let opened = dir.open_file(LOCK_FILE, OFlag::O_RDWR | OFlag::O_CREAT, 0o600);
        let (mut lock, writable) = match opened {
            Ok(f) => (f, true),
            // A read-only disk: the saved state can still be read and served (changes,
            // which cannot be saved, are refused); the lock is taken on a read-only open.
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
                tracing::warn!(
                    dir = %dir.path().display(),
                    "the state directory is read-only: serving what is saved; changes will be refused"
                );
                let f = dir
                    .open_file(LOCK_FILE, OFlag::O_RDONLY, 0)
                    .map_err(io_err(&lock_path))?;
                (f, false)
            }
            Err(e) => return Err(io_err(&lock_path)(e)),
        };
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = dir.read_to_string(LOCK_FILE).unwrap_or_default();
                return Err(StateError::Locked {
                    dir: dir.path().display().to_string(),
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
            path: dir.join(STATE_FILE),
            dir: std::sync::Arc::new(dir),
            _lock: std::sync::Arc::new(lock),
        })
    }

    /// Path of the state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved configuration, or `None` if there is none yet.
    pub fn load(&self) -> Result<Option<Config>, StateError> {
        match self.dir.read_to_string(STATE_FILE) {
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
        self.dir
            .write_atomic(STATE_FILE, text.as_bytes())
            .map_err(io_err(&self.path))
    }

    /// The state directory.
    pub fn dir(&self) -> &TrustedDir {
        &self.dir
    }
}

/// Why a directory's owner and mode make it unfit, if they do.
fn unfit(uid: u32, mode: u32, is_dir: bool, owner: u32) -> Option<String> {
    let mode = mode & 0o7777;
    if !is_dir {
        return Some("not a directory".into());
    }
    if uid != owner {
        return Some(format!(
            "owned by uid {uid}, not by wvs's user (uid {owner})"
        ));
    }
    if mode & 0o022 != 0 {
        return Some(format!("mode {mode:04o}: others can write it; use 0700"));
    }
    None
}

/// Every directory above `dir`, up to `/`, must be changeable by no one but its owner
/// (root or `owner`) unless it is sticky (as `/tmp`: there no one else may rename or remove
/// what is not theirs), so that no one else can put another directory in `dir`'s place.
fn check_ancestors(dir: &Path, owner: u32) -> Result<(), StateError> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(dir).map_err(io_err(dir))?;
    for parent in real.ancestors().skip(1) {
        let pm = std::fs::metadata(parent).map_err(io_err(parent))?;
        let pmode = pm.mode() & 0o7777;
        let sticky = pmode & 0o1000 != 0;
        if (pm.uid() != 0 && pm.uid() != owner) || (pmode & 0o022 != 0 && !sticky) {
            return Err(StateError::Unsafe {
                dir: dir.display().to_string(),
                why: format!(
                    "its parent {} (uid {}, mode {pmode:04o}) can be changed by others",
                    parent.display(),
                    pm.uid()
                ),
            });
        }
    }
    Ok(())
}

/// The compiled-plugin cache directory, made if it is not there: `Some` when it is a
/// directory of wvs's user alone (as the state directory), since wvs runs the native code
/// it holds; else `None` with a warning, and plugins compile without a cache.
pub(crate) fn plugin_cache_dir(dir: Option<&Path>) -> Option<&Path> {
    let dir = dir?;
    match crate::privs::create_private_dir(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| check_dir(dir, nix::unistd::geteuid().as_raw()).map_err(|e| e.to_string()))
    {
        Ok(()) => Some(dir),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "plugin cache disabled: {e}");
            None
        }
    }
}

/// A directory wvs keeps what it trusts in (its state, compiled plugins), checked by
/// path: a directory, not a symbolic link, owned by `owner` (wvs's effective user),
/// writable by no one else, and every directory above it changeable by no one but root
/// or `owner` (or sticky). For a directory wvs opens files in itself, [`TrustedDir`]
/// checks the handle it then uses; this is for one a library opens files in by path (the
/// compiled-plugin cache, which wasmtime manages), where the check of every directory
/// above is what keeps the path meaning the directory checked.
pub(crate) fn check_dir(dir: &Path, owner: u32) -> Result<(), StateError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).map_err(io_err(dir))?;
    if let Some(why) = unfit(meta.uid(), meta.mode(), meta.is_dir(), owner) {
        return Err(StateError::Unsafe {
            dir: dir.display().to_string(),
            why,
        });
    }
    check_ancestors(dir, owner)
}

/// A directory wvs trusts (its state, the uploaded plugins), held open: checked through
/// its handle ([`check_dir`]'s rules) and every file in it opened relative to that handle,
/// never through a symbolic link, so that what wvs reads and writes is in the directory it
/// checked, whatever is renamed into its path afterwards.
#[derive(Debug)]
pub struct TrustedDir {
    path: PathBuf,
    fd: std::os::fd::OwnedFd,
    /// The user it belongs to.
    owner: u32,
}

/// Flags every open in a trusted directory has.
fn at_flags() -> nix::fcntl::OFlag {
    nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC
}

/// Flags a trusted directory is opened with.
fn dir_flags() -> nix::fcntl::OFlag {
    nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | at_flags()
}

/// Why a trusted directory could not be opened: a link or a file in its place is unsafe.
fn dir_err(path: &Path, e: nix::errno::Errno) -> StateError {
    match e {
        nix::errno::Errno::ENOTDIR | nix::errno::Errno::ELOOP => StateError::Unsafe {
            dir: path.display().to_string(),
            why: "not a directory (a symbolic link is not followed)".into(),
        },
        e => io_err(path)(e.into()),
    }
}

impl TrustedDir {
    /// `path`, created (mode 0700, with any missing parent) if missing, then opened and
    /// checked.
    pub fn open(path: &Path, owner: u32) -> Result<Self, StateError> {
        if std::fs::symlink_metadata(path).is_err() {
            crate::privs::create_private_dir(path).map_err(io_err(path))?;
        }
        let fd = nix::fcntl::open(path, dir_flags(), nix::sys::stat::Mode::empty())
            .map_err(|e| dir_err(path, e))?;
        Self::checked(path.to_path_buf(), fd, owner)
    }

    fn checked(path: PathBuf, fd: std::os::fd::OwnedFd, owner: u32) -> Result<Self, StateError> {
        let st = nix::sys::stat::fstat(&fd).map_err(|e| io_err(&path)(e.into()))?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if let Some(why) = unfit(st.st_uid, st.st_mode, is_dir, owner) {
            return Err(StateError::Unsafe {
                dir: path.display().to_string(),
                why,
            });
        }
        check_ancestors(&path, owner)?;
        Ok(Self { path, fd, owner })
    }

    /// The directory `name` in this one, created (mode 0700) if missing, held open and
    /// checked as this one is.
    pub(crate) fn subdir(&self, name: &str) -> Result<Self, StateError> {
        let path = self.join(name);
        match nix::sys::stat::mkdirat(
            &self.fd,
            name,
            nix::sys::stat::Mode::from_bits_truncate(0o700),
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(io_err(&path)(e.into())),
        }
        let fd = nix::fcntl::openat(&self.fd, name, dir_flags(), nix::sys::stat::Mode::empty())
            .map_err(|e| dir_err(&path, e))?;
        Self::checked(path, fd, self.owner)
    }

    /// The path it was opened by (for messages, and for what is handed to others by path).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` in it, as a path.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Open `name` in it with `flags` (never through a symbolic link), creating it with
    /// `mode` if `flags` say so.
    pub(crate) fn open_file(
        &self,
        name: &str,
        flags: nix::fcntl::OFlag,
        mode: u32,
    ) -> std::io::Result<std::fs::File> {
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            flags | at_flags(),
            nix::sys::stat::Mode::from_bits_truncate(mode),
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// The whole of `name`, as text.
    pub fn read_to_string(&self, name: &str) -> std::io::Result<String> {
        use std::io::Read;
        let mut text = String::new();
        self.open_file(name, nix::fcntl::OFlag::O_RDONLY, 0)?
            .read_to_string(&mut text)?;
        Ok(text)
    }

    /// What `name` is (not following a symbolic link).
    pub(crate) fn stat(&self, name: &str) -> std::io::Result<nix::sys::stat::FileStat> {
        Ok(nix::sys::stat::fstatat(
            &self.fd,
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?)
    }

    /// Remove the file `name`.
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        Ok(nix::unistd::unlinkat(
            &self.fd,
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )?)
    }

    /// Write `bytes` to `name` atomically: a temporary file in the same directory, flushed,
    /// renamed over `name`, then the directory flushed, so that after a crash `name` holds
    /// the old bytes or the new ones, never a mix or nothing.
    pub(crate) fn write_atomic(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        use nix::fcntl::OFlag;
        let tmp = format!(".{name}.{}.tmp", std::process::id());
        // A leftover of a crash is ours to replace (the directory is ours alone); then the
        // file is created exclusively.
        let _ = self.remove(&tmp);
        let written = (|| {
            let mut f = self.open_file(
                &tmp,
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
                0o600,
            )?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = self.remove(&tmp);
            return Err(e);
        }
        if let Err(e) = nix::fcntl::renameat(&self.fd, tmp.as_str(), &self.fd, name) {
            let _ = self.remove(&tmp);
            return Err(e.into());
        }
        #[cfg(test)]
        if FAIL_DIR_SYNC.with(|f| f.get()) {
            return Err(std::io::Error::other("injected: directory fsync failed"));
        }
        Ok(nix::unistd::fsync(&self.fd)?)
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: the next writes fail at the directory's fsync, after their rename.
    pub(crate) static FAIL_DIR_SYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wvs-state-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// The missing parents of a private directory are made passable (0755), the leaf
    /// alone private (0700), whatever the umask: a fresh machine's `/var/cache/wvs/plugins`
    /// must be reachable by the user wvs runs as.
    #[test]
    fn a_private_directory_s_missing_parents_stay_passable() {
        use std::os::unix::fs::PermissionsExt;
        let top = tmpdir("parents");
        let leaf = top.join("a").join("plugins");
        crate::privs::create_private_dir(&leaf).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&leaf), 0o700);
        assert_eq!(mode(&top.join("a")) & 0o111, 0o111, "others may pass");
        crate::privs::create_private_dir(&leaf).expect("an existing directory is fine");
        std::fs::remove_dir_all(&top).unwrap();
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

    /// Every directory above counts, not only the parent: a grandparent others may write
    /// lets them rename the parent away and put their own in its place.
    #[test]
    fn a_directory_under_any_ancestor_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let me = nix::unistd::geteuid().as_raw();
        let top = tmpdir("ancestors");
        let inner = top.join("a").join("b").join("state");
        std::fs::create_dir_all(&inner).unwrap();
        for d in [&top, &top.join("a"), &top.join("a/b")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        TrustedDir::open(&inner, me).expect("every ancestor private");
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = TrustedDir::open(&inner, me).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("its parent {}", top.display())),
            "{e}"
        );
        let e = check_dir(&inner, me).unwrap_err();
        assert!(e.to_string().contains("its parent"), "{e}");
        std::fs::remove_dir_all(&top).unwrap();
    }

    /// Once open, the state directory is the one checked: a directory renamed into its path
    /// (or a symbolic link) afterwards gets nothing, and a link is never followed inside.
    #[test]
    fn files_go_to_the_directory_checked_whatever_takes_its_path() {
        let me = nix::unistd::geteuid().as_raw();
        let top = tmpdir("handle");
        let dir = top.join("state");
        let st = StateFile::open(&dir, me).unwrap();
        let cfg = config::parse(config::EXAMPLE).unwrap();
        let moved = top.join("moved");
        std::fs::rename(&dir, &moved).unwrap();
        let other = top.join("other");
        std::fs::create_dir(&other).unwrap();
        std::os::unix::fs::symlink(&other, &dir).unwrap();
        st.save(&cfg).unwrap();
        assert_eq!(
            st.load().unwrap(),
            Some(cfg),
            "read back from the checked one"
        );
        assert!(
            moved.join(STATE_FILE).exists(),
            "written to the checked directory"
        );
        assert_eq!(
            std::fs::read_dir(&other).unwrap().count(),
            0,
            "nothing in the other"
        );
        // A link inside is not followed, for a file or a directory.
        std::os::unix::fs::symlink(&other, moved.join("plugins")).unwrap();
        let e = st.dir().subdir("plugins").unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        std::fs::remove_file(moved.join(STATE_FILE)).unwrap();
        std::os::unix::fs::symlink(other.join("x"), moved.join(STATE_FILE)).unwrap();
        assert!(
            st.load().is_err(),
            "a link in the state file's place is not read"
        );
        std::fs::remove_dir_all(&top).unwrap();
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

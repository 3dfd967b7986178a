//! What the process may do once it runs: capabilities down to what is still needed,
//! `NO_NEW_PRIVS`, and enough file descriptors.
//!
//! Setting up needs CAP_NET_RAW (packet sockets, the XDP sockets) and CAP_NET_ADMIN (the
//! nftables table, the check path's TUN device and routing rule, socket buffers past the
//! limits, XDP). Once that is done, a packet socket is re-bound to a re-created interface
//! without a capability (only creating one needs CAP_NET_RAW), and what remains is
//! CAP_NET_ADMIN: `nft` on every change (it inherits it: kept in the ambient set for a
//! non-root user; as root, the bounding set and `NO_NEW_PRIVS` keep it from getting more)
//! and the health checks' socket mark. Everything else goes, from the bounding set too, so
//! that neither wvs nor anything it runs can get it back.

use caps::{CapSet, Capability, CapsHashSet};

/// The capabilities wvs keeps after start.
pub(crate) const KEPT: &[Capability] = &[Capability::CAP_NET_ADMIN];

/// With `--io xdp`, also CAP_BPF: every change rewrites the XDP filter's map, and the
/// `bpf()` call takes it where unprivileged BPF is off (Debian's default); and
/// CAP_IPC_LOCK: the UMEM of an XDP socket is locked memory, which without it counts
/// against `RLIMIT_MEMLOCK` (8 MiB by default, half of one UMEM), and an interface that
/// comes back gets new XDP sockets (raising the limit instead would take CAP_SYS_RESOURCE,
/// which is broader).
pub(crate) const KEPT_XDP: &[Capability] = &[
    Capability::CAP_NET_ADMIN,
    Capability::CAP_BPF,
    Capability::CAP_IPC_LOCK,
];

/// With `--offload tc`, also CAP_BPF, as for `--io xdp`: its maps are written after start
/// (their memory is the memory cgroup's, so no CAP_IPC_LOCK).
pub(crate) const KEPT_OFFLOAD: &[Capability] = &[Capability::CAP_NET_ADMIN, Capability::CAP_BPF];

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PrivsError {
    /// A capability set could not be read or changed.
    #[error("capabilities: {0}")]
    Caps(#[from] caps::errors::CapsError),
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("no_new_privs: {0}")]
    NoNewPrivs(#[from] nix::Error),
}

/// What was dropped, for the log.
#[derive(Debug)]
pub(crate) struct Dropped {
    /// The permitted set now.
    pub kept: Vec<Capability>,
    /// Capabilities removed from the permitted set.
    pub dropped: Vec<Capability>,
}

/// Drop every capability but [`KEPT`] (or [`KEPT_XDP`], [`KEPT_OFFLOAD`]) from every set
/// and set `NO_NEW_PRIVS`.
pub(crate) fn drop_to_kept(xdp: bool, offload: bool) -> Result<Dropped, PrivsError> {
    drop_to(match (xdp, offload) {
        (true, _) => KEPT_XDP,
        (false, true) => KEPT_OFFLOAD,
        (false, false) => KEPT,
    })
}

/// Drop every capability of the calling thread (capabilities are each thread's own): for a
/// thread started before [`drop_to_kept`] that needs none.
pub(crate) fn drop_all_in_this_thread() {
    if let Err(e) = drop_to(&[]) {
        tracing::warn!("cannot drop this thread's capabilities: {e}");
    }
}

/// The socket broker's set ([`crate::io::broker`]): CAP_NET_RAW alone.
pub(crate) fn drop_to_net_raw() -> Result<Dropped, PrivsError> {
    drop_to(&[Capability::CAP_NET_RAW])
}

fn drop_to(keep: &[Capability]) -> Result<Dropped, PrivsError> {
    let keep: CapsHashSet = keep.iter().copied().collect();
    let before = caps::read(None, CapSet::Permitted)?;
    // The bounding set first: that takes CAP_SETPCAP, which goes with the rest below. A
    // process without it (a dedicated user) has nothing in the bounding set to fear: it
    // gains nothing on exec but its ambient set.
    if before.contains(&Capability::CAP_SETPCAP) {
        for c in caps::read(None, CapSet::Bounding)? {
            if !keep.contains(&c) {
                caps::drop(None, CapSet::Bounding, c)?;
            }
        }
    }
    let kept: CapsHashSet = before.intersection(&keep).copied().collect();
    caps::clear(None, CapSet::Ambient)?;
    caps::set(None, CapSet::Inheritable, &kept)?;
    caps::set(None, CapSet::Effective, &kept)?;
    caps::set(None, CapSet::Permitted, &kept)?;
    // Ambient: so that `nft` run by a non-root user has CAP_NET_ADMIN too.
    for c in &kept {
        caps::raise(None, CapSet::Ambient, *c)?;
    }
    nix::sys::prctl::set_no_new_privs()?;
    let mut dropped: Vec<Capability> = before.difference(&kept).copied().collect();
    dropped.sort_by_key(|c| c.index());
    let mut kept: Vec<Capability> = kept.into_iter().collect();
    kept.sort_by_key(|c| c.index());
    Ok(Dropped { kept, dropped })
}

/// Let the next program this process starts have `cap` (inheritable and ambient), if
/// this process has it; [`drop_to_kept`] clears it again.
pub(crate) fn pass_on(cap: Capability) {
    let r = caps::raise(None, CapSet::Inheritable, cap)
        .and_then(|()| caps::raise(None, CapSet::Ambient, cap));
    if let Err(e) = r {
        tracing::debug!("cannot pass {cap} on: {e}");
    }
}

/// Let no program the calling thread starts have a capability through exec (its ambient
/// and inheritable sets cleared; the thread keeps its own). As root (`--user root`) a
/// program still gets the bounding set, CAP_NET_ADMIN.
pub(crate) fn pass_none_on() {
    let r =
        caps::clear(None, CapSet::Ambient).and_then(|()| caps::clear(None, CapSet::Inheritable));
    if let Err(e) = r {
        tracing::warn!("cannot keep capabilities from the programs this thread runs: {e}");
    }
}

/// Execute `wvs run` again without `WVS_API_TOKEN` in its environment, the token handed
/// over in an anonymous memory file ([`take_env_token`] reads it).
///
/// Why not remove the variable in place: what `/proc/PID/environ` shows (to wvs's user and
/// to root) is the memory the process was started with, which no later `unsetenv` clears,
/// and every program started without an explicit environment would still get it. A new
/// image starts with an environment that never held it. Returns only if there is no token
/// in the environment or the execution failed (then the token stays, with a warning).
pub fn reexec_without_env_token() {
    use crate::consts::{API_TOKEN_ENV, API_TOKEN_FD_ENV, API_TOKEN_MEMFD};
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let Some(token) = std::env::var_os(API_TOKEN_ENV) else {
        return;
    };
    if std::env::var_os(API_TOKEN_FD_ENV).is_some() {
        return;
    }
    let err = (|| -> std::io::Result<std::io::Error> {
        // Not close-on-exec: the new image inherits it.
        let fd = nix::sys::memfd::memfd_create(API_TOKEN_MEMFD, nix::sys::memfd::MFdFlags::empty())
            .map_err(std::io::Error::from)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(token.as_encoded_bytes())?;
        let mut args = std::env::args_os();
        let mut cmd = std::process::Command::new("/proc/self/exe");
        if let Some(arg0) = args.next() {
            cmd.arg0(arg0);
        }
        let err = cmd
            .args(args)
            .env_remove(API_TOKEN_ENV)
            .env(API_TOKEN_FD_ENV, file.as_raw_fd().to_string())
            .exec();
        Ok(err)
    })()
    .unwrap_or_else(|e| e);
    tracing::warn!("cannot execute wvs again without {API_TOKEN_ENV} in its environment: {err}");
}

/// The API token given in the environment: from the memory file a re-executed wvs was
/// handed ([`reexec_without_env_token`]; closed once read), else `WVS_API_TOKEN` itself.
pub fn take_env_token() -> Option<String> {
    use crate::consts::{API_TOKEN_ENV, API_TOKEN_FD_ENV, API_TOKEN_MEMFD};
    let Some(fd) = std::env::var(API_TOKEN_FD_ENV).ok() else {
        return std::env::var(API_TOKEN_ENV).ok();
    };
    let read = (|| -> std::io::Result<String> {
        let n: std::os::fd::RawFd = fd
            .parse()
            .map_err(|_| std::io::Error::other("not a descriptor number"))?;
        let link = format!("/proc/self/fd/{n}");
        // Only the file this wvs made: a number inherited from elsewhere is not read.
        let target = std::fs::read_link(&link)?;
        if !target
            .to_string_lossy()
            .starts_with(&format!("/memfd:{API_TOKEN_MEMFD}"))
        {
            return Err(std::io::Error::other(format!(
                "descriptor {n} is {}, not wvs's token",
                target.display()
            )));
        }
        let token = std::fs::read_to_string(&link)?;
        nix::unistd::close(n)?;
        Ok(token)
    })();
    match read {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("{API_TOKEN_FD_ENV}={fd}: cannot read the API token: {e}");
            None
        }
    }
}

/// Raise the soft limit on open files to the hard one: the API's connection cap and the
/// health checks' sockets come out of it, and 1024 is a default from another era.
pub(crate) fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }
}

/// The user wvs runs as once set up, when started as root.
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    /// Its name.
    pub name: String,
    /// Its user id.
    pub uid: nix::unistd::Uid,
    /// Its primary group.
    pub gid: nix::unistd::Gid,
}

/// Why the user to run as cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// No such user.
    #[error("--user {0}: no such user")]
    Unknown(String),
    /// The user database could not be read.
    #[error("--user {name}: {source}")]
    Lookup {
        /// The name.
        name: String,
        /// Why.
        source: nix::Error,
    },
    /// The default user could not be created.
    #[error("cannot create the system user {name} (useradd: {msg}); create it, or give --user")]
    Create {
        /// The name.
        name: String,
        /// What useradd said.
        msg: String,
    },
    /// Changing the process's user failed.
    #[error("cannot become user {name}: {source}")]
    Switch {
        /// The name.
        name: String,
        /// Why.
        source: nix::Error,
    },
    /// The capabilities could not be kept across the change.
    #[error("capabilities: {0}")]
    Caps(#[from] caps::errors::CapsError),
    /// The user cannot reach a directory given to it.
    #[error("user {name} cannot reach {dir}: {why}")]
    Unreachable {
        /// The directory.
        dir: String,
        /// The user.
        name: String,
        /// Which directory above stops it.
        why: String,
    },
    /// A directory could not be handed to the user.
    #[error("cannot give {dir} to user {name}: {err}")]
    Chown {
        /// The directory.
        dir: String,
        /// The user.
        name: String,
        /// Why.
        err: std::io::Error,
    },
}

/// The user to become after setting up: `None` when wvs does not run as root (it keeps
/// its user) or `name` is `root` (by explicit choice, warned about). The default user
/// (`consts::DEFAULT_USER`) is created as a system user when missing, so that a fresh
/// machine needs no step first; another name must exist.
pub(crate) fn resolve_user(name: &str) -> Result<Option<RunAs>, UserError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    if name == "root" {
        tracing::warn!(
            "--user root: wvs keeps uid 0 (with CAP_NET_ADMIN alone); owner permission bits \
             still let it, its plugin compiler and its misc checks write root's files"
        );
        return Ok(None);
    }
    let lookup = |name: &str| {
        nix::unistd::User::from_name(name).map_err(|source| UserError::Lookup {
            name: name.into(),
            source,
        })
    };
    let user = match lookup(name)? {
        Some(u) => u,
        None if name == crate::consts::DEFAULT_USER => {
            let out = std::process::Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ])
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .output()
                .map_err(|e| UserError::Create {
                    name: name.into(),
                    msg: e.to_string(),
                })?;
            if !out.status.success() {
                return Err(UserError::Create {
                    name: name.into(),
                    msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            tracing::info!(user = name, "created the system user wvs runs as");
            lookup(name)?.ok_or_else(|| UserError::Unknown(name.into()))?
        }
        None => return Err(UserError::Unknown(name.into())),
    };
    if user.uid.is_root() {
        return Ok(None);
    }
    Ok(Some(RunAs {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
    }))
}

/// Create `dir` (mode 0700) if missing, with any missing parent as a system directory is
/// made (0755): a parent of the mode of its leaf would keep out the user wvs runs as, who
/// is given only the leaf (`/var/cache/wvs/plugins` on a machine with no `/var/cache/wvs`).
pub(crate) fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        r => r,
    }
}

/// Make `dir` (created mode 0700 if missing) and everything in it `to`'s, without
/// following symbolic links: what an earlier run as another user left becomes the new
/// user's.
pub(crate) fn give_dir(dir: &std::path::Path, to: &RunAs) -> Result<(), UserError> {
    let err = |err| UserError::Chown {
        dir: dir.display().to_string(),
        name: to.name.clone(),
        err,
    };
    if !dir.exists() {
        create_private_dir(dir).map_err(err)?;
    }
    /// `inner`: an entry under `dir`, which another wvs sharing the directory (a plugin
    /// cache's file written aside and renamed) may take away meanwhile: then it is no one's
    /// to give.
    fn walk(p: &std::path::Path, to: &RunAs, inner: bool) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let gone = |e: &std::io::Error| inner && e.kind() == std::io::ErrorKind::NotFound;
        let m = match std::fs::symlink_metadata(p) {
            Err(e) if gone(&e) => return Ok(()),
            r => r?,
        };
        // Only what is not the user's yet (a read-only disk of the user's is fine).
        if m.uid() != to.uid.as_raw() || m.gid() != to.gid.as_raw() {
            match std::os::unix::fs::lchown(p, Some(to.uid.as_raw()), Some(to.gid.as_raw())) {
                Err(e) if gone(&e) => return Ok(()),
                r => r?,
            }
        }
        if m.is_dir() {
            let entries = match std::fs::read_dir(p) {
                Err(e) if gone(&e) => return Ok(()),
                r => r?,
            };
            for e in entries {
                walk(&e?.path(), to, true)?;
            }
        }
        Ok(())
    }
    match walk(dir, to, false) {
        // A read-only disk: what is there is served as it is (see the state's open).
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
            tracing::warn!(dir = %dir.display(), "read-only: cannot give it to user {}", to.name);
        }
        r => r.map_err(err)?,
    }
    reachable(dir, to).map_err(|why| UserError::Unreachable {
        dir: dir.display().to_string(),
        name: to.name.clone(),
        why,
    })
}

/// Whether `to` may pass through every directory above `dir` (search permission), as it
/// must to reach it by path once wvs runs as it (the plugin cache, plugins named by path).
fn reachable(dir: &std::path::Path, to: &RunAs) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(dir).map_err(|e| e.to_string())?;
    for a in real.ancestors().skip(1) {
        let m = std::fs::metadata(a).map_err(|e| format!("{}: {e}", a.display()))?;
        let bit = if m.uid() == to.uid.as_raw() {
            0o100
        } else if m.gid() == to.gid.as_raw() {
            0o010
        } else {
            0o001
        };
        if m.mode() & bit == 0 {
            return Err(format!(
                "{} (uid {}, mode {:04o}) does not let it pass; give it o+x, or choose a \
                 directory elsewhere",
                a.display(),
                m.uid(),
                m.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

/// Become `to` for good, keeping the permitted capabilities across the change (then
/// [`drop_to_kept`] narrows them and raises what the new user's children need).
pub(crate) fn become_user(to: &RunAs) -> Result<(), UserError> {
    use nix::unistd::{setgroups, setresgid, setresuid};
    let err = |source| UserError::Switch {
        name: to.name.clone(),
        source,
    };
    nix::sys::prctl::set_keepcaps(true).map_err(err)?;
    setgroups(&[to.gid]).map_err(err)?;
    setresgid(to.gid, to.gid, to.gid).map_err(err)?;
    setresuid(to.uid, to.uid, to.uid).map_err(err)?;
    nix::sys::prctl::set_keepcaps(false).map_err(err)?;
    // The change cleared the effective set: take the permitted one back, so that the
    // drop that follows may change the bounding set.
    let permitted = caps::read(None, CapSet::Permitted)?;
    caps::set(None, CapSet::Effective, &permitted)?;
    tracing::info!(user = to.name, uid = to.uid.as_raw(), "running as");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state directory under a parent wvs's user may not pass through is refused with
    /// the directory that stops it, not left to fail later with "Permission denied".
    #[test]
    fn a_directory_its_user_cannot_reach_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let top = std::env::temp_dir().join(format!("wvs-privs-test-{}", std::process::id()));
        let dir = top.join("state");
        std::fs::create_dir_all(&dir).expect("dir");
        let nobody = RunAs {
            name: "nobody".into(),
            uid: nix::unistd::Uid::from_raw(65534),
            gid: nix::unistd::Gid::from_raw(65534),
        };
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let why = reachable(&dir, &nobody).expect_err("a private parent");
        assert!(
            why.contains(&top.display().to_string()) && why.contains("0700"),
            "{why}"
        );
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        reachable(&dir, &nobody).expect("o+x lets it pass");
        std::fs::remove_dir_all(&top).expect("clean");
    }
}

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
pub const KEPT: &[Capability] = &[Capability::CAP_NET_ADMIN];

/// With `--io xdp`, also CAP_BPF: every change rewrites the XDP filter's map, and the
/// `bpf()` call takes it where unprivileged BPF is off (Debian's default); and
/// CAP_IPC_LOCK: the UMEM of an XDP socket is locked memory, which without it counts
/// against `RLIMIT_MEMLOCK` (8 MiB by default, half of one UMEM), and an interface that
/// comes back gets new XDP sockets (raising the limit instead would take CAP_SYS_RESOURCE,
/// which is broader).
pub const KEPT_XDP: &[Capability] = &[
    Capability::CAP_NET_ADMIN,
    Capability::CAP_BPF,
    Capability::CAP_IPC_LOCK,
];

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum PrivsError {
    /// A capability set could not be read or changed.
    #[error("capabilities: {0}")]
    Caps(#[from] caps::errors::CapsError),
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("no_new_privs: {0}")]
    NoNewPrivs(#[from] nix::Error),
}

/// What was dropped, for the log.
#[derive(Debug)]
pub struct Dropped {
    /// The permitted set now.
    pub kept: Vec<Capability>,
    /// Capabilities removed from the permitted set.
    pub dropped: Vec<Capability>,
}

/// Drop every capability but [`KEPT`] (or [`KEPT_XDP`]) from every set and set
/// `NO_NEW_PRIVS`.
pub fn drop_to_kept(xdp: bool) -> Result<Dropped, PrivsError> {
    drop_to(if xdp { KEPT_XDP } else { KEPT })
}

/// Drop every capability of the calling thread (capabilities are each thread's own): for a
/// thread started before [`drop_to_kept`] that needs none.
pub fn drop_all_in_this_thread() {
    if let Err(e) = drop_to(&[]) {
        tracing::warn!("cannot drop this thread's capabilities: {e}");
    }
}

/// The socket broker's set ([`crate::io::broker`]): CAP_NET_RAW alone.
pub fn drop_to_net_raw() -> Result<Dropped, PrivsError> {
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

/// Raise the soft limit on open files to the hard one: the API's connection cap and the
/// health checks' sockets come out of it, and 1024 is a default from another era.
pub fn raise_nofile() {
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

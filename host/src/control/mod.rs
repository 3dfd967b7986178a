//! The control library: the one owner of the running configuration.
//!
//! Every change, whatever asks for it (a SIGHUP reload, the REST API, `wvs adm` through the
//! API, the dashboard), goes through [`Controller::apply`], all or nothing: plugins are compiled, the new service
//! snapshot is built and the nftables table is updated before anything is swapped; the state
//! file is saved before the swap, and if it cannot be, the change is undone. Then the
//! snapshot is published with one store, so a packet sees the old configuration or the new
//! one, never a mix. The datapath never waits for any of this.

pub mod edit;
pub mod state;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::io::nft::{NftError, NftTable};
use crate::plugin::{PluginError, Registry};
use crate::service::Snapshot;
use crate::stats::BalancerTotals;
pub use state::{StateError, StateFile};

/// Why a change was refused (nothing of it took effect).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    /// A plugin could not be compiled or does not follow the ABI.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// nftables refused the new table.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// The XDP program's map refused the new claims (`--io xdp`).
    #[error(transparent)]
    Xdp(#[from] crate::io::xdp::XdpError),
    /// The state could not be saved.
    #[error(transparent)]
    State(#[from] StateError),
    /// A sync daemon could not start (no such interface, a socket refused).
    #[error(transparent)]
    Sync(#[from] crate::io::sync::SyncError),
    /// The change itself is invalid.
    #[error(transparent)]
    Edit(#[from] edit::EditError),
    /// A service names a plugin of the other kind (a helper as its scheduler, or a
    /// scheduler as a helper).
    #[error("{0}")]
    WrongKind(String),
    /// A plugin still in use cannot be deleted.
    #[error("plugin {name:?} is used by {services}; change their scheduler or helpers first")]
    InUse {
        /// The plugin.
        name: String,
        /// The services that use it.
        services: String,
    },
    /// A program wvs would run (a misc health check, a notify program) came over the API
    /// without `--allow-misc-checks`.
    #[error(
        "health check program {program:?} (misc, notify_up or notify_down): programs from the API need `wvs run --allow-misc-checks` (or put the check in the --config file)"
    )]
    MiscCheck {
        /// The program.
        program: String,
    },
    /// A file operation on an uploaded plugin failed.
    #[error("plugin file {path}: {source}")]
    PluginFile {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The running configuration and everything derived from it.
#[derive(Debug)]
pub struct Controller {
    config: Config,
    snapshot: Arc<ArcSwap<Snapshot>>,
    registry: Registry,
    nft: NftTable,
    /// With `--io xdp`: which frames the XDP program redirects to wvs.
    xdp: Option<crate::io::xdp::XdpFilter>,
    traffic: BalancerTotals,
    state: Option<StateFile>,
    /// Real servers removed with a grace period, still in the published snapshot.
    draining: Vec<Drain>,
    /// Changes (the API, `wvs adm`) may add misc health checks (`--allow-misc-checks`).
    allow_misc: bool,
    /// The `--config` file as last applied (or read at start): a reload applies what
    /// changed in it since.
    file_base: Option<Config>,
    /// The sync daemons (not in tests without a datapath).
    sync: Option<crate::io::sync::Daemons>,
    /// With `--offload tc`: wakes the offload keeper after each swap, so that the flows of
    /// a removed server leave the program's map at once, not at the next second.
    offload_kick: Option<std::sync::mpsc::SyncSender<()>>,
}

/// The programs of the misc health checks of `cfg`'s services and real servers.
fn misc_programs(cfg: &Config) -> std::collections::HashSet<&str> {
    let mut out = std::collections::HashSet::new();
    for s in &cfg.services {
        out.extend(
            [&s.quorum.up, &s.quorum.down]
                .into_iter()
                .flatten()
                .map(String::as_str),
        );
        let checks = std::iter::once(&s.check).chain(s.reals.iter().map(|r| &r.check));
        // Every check of a server: its further ones (several checkers) too.
        for c in checks.flatten().flat_map(|c| c.all()) {
            let d = &c.def;
            for p in [&d.program, &d.notify_up, &d.notify_down]
                .into_iter()
                .flatten()
            {
                out.insert(p.as_str());
            }
        }
    }
    out
}

/// A real server removed with a grace period.
#[derive(Debug, Clone)]
struct Drain {
    service: crate::model::ServiceKey,
    dest: Arc<crate::service::Dest>,
    until: std::time::Instant,
    since: std::time::Instant,
}

impl Controller {
    /// Take over a running configuration: its published snapshot, the plugin registry it was
    /// built with, the installed nftables table, and the state file to save changes to.
    pub fn new(
        config: Config,
        snapshot: Arc<ArcSwap<Snapshot>>,
        registry: Registry,
        nft: NftTable,
        state: Option<StateFile>,
    ) -> Self {
        Self {
            config,
            snapshot,
            registry,
            nft,
            xdp: None,
            offload_kick: None,
            traffic: BalancerTotals::default(),
            state,
            draining: Vec::new(),
            allow_misc: false,
            file_base: None,
            sync: None,
        }
    }

    /// Run the sync daemons from now on, starting those the configuration names (one that
    /// cannot start is logged, and named by `-L --daemon` as not running).
    pub(crate) fn set_sync(&mut self, mut d: crate::io::sync::Daemons) {
        let started = d
            .prepare(&self.config.daemons, &self.config.sysctl.sync)
            .and_then(|p| d.commit(p));
        if let Err(e) = started {
            tracing::error!("{e}");
        }
        self.sync = Some(d);
    }

    /// The sync daemons.
    pub(crate) fn sync(&self) -> Option<&crate::io::sync::Daemons> {
        self.sync.as_ref()
    }

    /// The `--config` file as last applied.
    pub(crate) fn file_base(&self) -> Option<&Config> {
        self.file_base.as_ref()
    }

    /// Record the `--config` file as applied.
    pub(crate) fn set_file_base(&mut self, c: Option<Config>) {
        self.file_base = c;
    }

    /// Let changes add misc health checks (`--allow-misc-checks`).
    pub(crate) fn set_allow_misc(&mut self, on: bool) {
        self.allow_misc = on;
    }

    /// Keep the XDP program's filter in step with every change from now on (`--io xdp`;
    /// it already holds the running snapshot's claims).
    pub(crate) fn set_xdp_filter(&mut self, filter: crate::io::xdp::XdpFilter) {
        self.xdp = Some(filter);
    }

    /// Wake the offload keeper after each swap from now on (`--offload tc`).
    pub(crate) fn set_offload_kick(&mut self, kick: std::sync::mpsc::SyncSender<()>) {
        self.offload_kick = Some(kick);
    }

    /// The running configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The published snapshot.
    pub fn snapshot(&self) -> &Arc<ArcSwap<Snapshot>> {
        &self.snapshot
    }

    /// The plugin registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The balancer's traffic totals.
    pub fn traffic(&mut self) -> &mut BalancerTotals {
        &mut self.traffic
    }

    /// Replace the running configuration with `next`, all or nothing.
    pub(crate) fn apply(&mut self, next: Config) -> Result<(), ControlError> {
        let custom = self.registry.prepare(&next.plugins)?;
        check_kinds(&self.registry, &custom, &next)?;
        let old = self.snapshot.load_full();
        let mut snap = next.snapshot(&old, &self.registry, &custom);
        let drains: Vec<_> = self
            .draining
            .iter()
            .map(|d| (d.service, d.dest.clone()))
            .collect();
        snap.add_draining(&drains);
        let snap = Arc::new(snap);
        if let Err(e) = self.nft.update(&snap) {
            // An nft killed past its time may have committed: the running table again.
            if matches!(e, NftError::TimedOut(_)) {
                self.undo_filters(&old);
            }
            return Err(e.into());
        }
        if let Some(x) = &mut self.xdp
            && let Err(e) = x.update(&snap, crate::health::answers_through_vips(&snap))
        {
            self.undo_filters(&old);
            return Err(e.into());
        }
        let prepared = match &self.sync {
            Some(d) => match d.prepare(&next.daemons, &next.sysctl.sync) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.undo_filters(&old);
                    return Err(e.into());
                }
            },
            None => None,
        };
        if let Some(st) = &self.state
            && let Err(e) = st.save(&next)
        {
            // The write may have failed after its rename (the directory's fsync): the file
            // could name the refused change, so the running configuration is written back.
            if let Err(undo) = st.save(&self.config) {
                tracing::error!(
                    "cannot write the running configuration back after a failed save: {undo}"
                );
            }
            self.undo_filters(&old);
            return Err(e.into());
        }
        self.registry.commit(custom);
        self.snapshot.store(snap.clone());
        if let Some(k) = &self.offload_kick {
            // Full: a merge is due already.
            let _ = k.try_send(());
        }
        old.retire_into(&snap);
        self.traffic
            .retire(old.service_stats(), snap.service_stats());
        self.config = next;
        if let (Some(d), Some(p)) = (&mut self.sync, prepared)
            && let Err(e) = d.commit(p)
        {
            tracing::error!("{e}");
        }
        Ok(())
    }

    /// The state file, if changes are saved.
    pub(crate) fn state_path(&self) -> Option<&std::path::Path> {
        self.state.as_ref().map(StateFile::path)
    }

    /// Apply a list of edits, all or nothing.
    pub(crate) fn apply_changes(&mut self, changes: &[edit::Change]) -> Result<(), ControlError> {
        let next = edit::apply_all(&self.config, changes)?;
        // A misc check runs a program: one the configuration file (root's) did not name
        // needs the operator's opt-in. Those already running may stay.
        if !self.allow_misc {
            let now = misc_programs(&self.config);
            if let Some(p) = misc_programs(&next).into_iter().find(|p| !now.contains(p)) {
                return Err(ControlError::MiscCheck { program: p.into() });
            }
        }
        let kept = self.draining.len();
        let old = self.snapshot.load_full();
        let now = std::time::Instant::now();
        for c in changes {
            let edit::Change::DeleteReal {
                protocol,
                address,
                real,
                drain_timeout: Some(secs @ 1..),
            } = c
            else {
                continue;
            };
            // apply_all has checked these.
            let (Ok(id), Ok(ra)) = (
                crate::config::parse_service_id(protocol, address),
                crate::config::parse_real_addr(real),
            ) else {
                continue;
            };
            let port = if ra.port() == 0 { id.port } else { ra.port() };
            let Some(svc) = old.services().find(|s| s.key == id) else {
                continue;
            };
            if let Some(d) = svc
                .dests
                .iter()
                .find(|d| d.addr == ra.ip() && d.port == port)
            {
                let secs = u64::from(*secs);
                d.set_draining(crate::health::unix_ms() + secs * 1000);
                tracing::info!(service = %id, real, secs, "real server removed, draining");
                self.draining.push(Drain {
                    service: id,
                    dest: d.clone(),
                    until: now + std::time::Duration::from_secs(secs),
                    since: now,
                });
            }
        }
        let r = self.apply(next);
        if r.is_err() {
            for d in self.draining.drain(kept..) {
                d.dest.set_draining(0);
            }
        }
        r
    }

    /// End the drains whose server has no connection left (TCP: no active one; UDP: none)
    /// or whose period is over; the server then leaves the snapshot and its remaining
    /// connections end with it, as after `ipvsadm -d`. Called every
    /// [`DRAIN_SWEEP_MS`](crate::consts::DRAIN_SWEEP_MS).
    pub(crate) fn sweep_drains(&mut self) {
        if self.draining.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let before = self.draining.len();
        self.draining.retain(|d| {
            let active = d
                .dest
                .activeconns
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(0);
            let left = if d.service.proto == crate::model::Protocol::Tcp {
                active as u32
            } else {
                d.dest.conns_now()
            };
            let gone = !self.config.services.iter().any(|s| s.key() == d.service);
            if left == 0 || now >= d.until || gone {
                tracing::info!(
                    service = %d.service,
                    real = %std::net::SocketAddr::new(d.dest.addr, d.dest.port),
                    left,
                    secs = d.since.elapsed().as_secs_f64(),
                    "drain over: {}",
                    if left == 0 { "its connections ended" } else { "the period is over" }
                );
                false
            } else {
                true
            }
        });
        if self.draining.len() != before
            && let Err(e) = self.apply(self.config.clone())
        {
            tracing::error!("ending a drain: {e}");
        }
    }

    /// The directory uploaded plugins are kept in (`plugins` in the state directory),
    /// opened and checked as the state directory is.
    fn plugin_dir(&self) -> Result<state::TrustedDir, ControlError> {
        let st = self
            .state
            .as_ref()
            .ok_or_else(|| ControlError::PluginFile {
                path: "(no state directory)".into(),
                source: std::io::Error::other("uploads need --state-dir"),
            })?;
        st.dir()
            .subdir(crate::consts::PLUGIN_DIR)
            .map_err(|e| ControlError::PluginFile {
                path: st
                    .dir()
                    .join(crate::consts::PLUGIN_DIR)
                    .display()
                    .to_string(),
                source: std::io::Error::other(e.to_string()),
            })
    }

    /// Add or replace the plugin `name` with `wasm`: the module is written to the plugin
    /// directory under a name of its own, compiled and swapped in with the services that use
    /// it; if anything fails the file is removed and nothing changes.
    pub(crate) fn put_plugin(&mut self, name: &str, wasm: &[u8]) -> Result<(), ControlError> {
        use crate::config::PluginSpec;
        check_plugin_name(name)?;
        let dir = self.plugin_dir()?;
        let file_err = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |source| ControlError::PluginFile { path, source }
        };
        let digest = crate::plugin::digest(wasm);
        let file = format!("{name}-{}.wasm", crate::plugin::digest_hex(&digest));
        let path = dir.join(&file);
        if let Err(e) = dir.write_atomic(&file, wasm) {
            // It may be in place already (the directory's fsync failed after the rename);
            // the same bytes under the same name may be the running plugin's file.
            if !self.config.plugins.iter().any(|p| p.path == path) {
                let _ = dir.remove(&file);
            }
            return Err(file_err(&path)(e));
        }
        let mut next = self.config.clone();
        let old = next
            .plugins
            .iter()
            .position(|p| p.name == name)
            .map(|i| next.plugins.remove(i));
        next.plugins.push(PluginSpec {
            name: name.into(),
            path: path.clone(),
        });
        match self.apply(next) {
            Ok(()) => {
                if let Some(o) = old
                    && o.path != path
                {
                    remove_uploaded(&dir, &o.path);
                }
                Ok(())
            }
            Err(e) => {
                // Removed unless the state on disk names it (its write-back failed too):
                // the next start must find every plugin its state names.
                let named = self
                    .state
                    .as_ref()
                    .and_then(|st| st.load().ok().flatten())
                    .is_some_and(|c| c.plugins.iter().any(|p| p.path == path));
                if !named && old.as_ref().is_none_or(|o| o.path != path) {
                    let _ = dir.remove(&file);
                }
                Err(e)
            }
        }
    }

    /// Delete the plugin `name` if no service uses it.
    pub(crate) fn delete_plugin(&mut self, name: &str) -> Result<(), ControlError> {
        let users: Vec<String> = self
            .config
            .services
            .iter()
            .filter(|s| s.scheduler == name || s.helper_names().iter().any(|h| h == name))
            .map(|s| s.key().to_string())
            .collect();
        if !users.is_empty() {
            return Err(ControlError::InUse {
                name: name.into(),
                services: users.join(", "),
            });
        }
        let mut next = self.config.clone();
        let Some(i) = next.plugins.iter().position(|p| p.name == name) else {
            return Err(edit::EditError::NotFound(format!("no plugin {name:?}")).into());
        };
        let gone = next.plugins.remove(i);
        self.apply(next)?;
        if let Ok(dir) = self.plugin_dir() {
            remove_uploaded(&dir, &gone.path);
        }
        Ok(())
    }

    /// Save the running configuration (at start, so that a restart finds it).
    pub fn save(&self) -> Result<(), StateError> {
        match &self.state {
            Some(st) => st.save(&self.config),
            None => Ok(()),
        }
    }

    /// Put the nftables table and the XDP filter back as they were for `old`, after a change
    /// failed half-way.
    fn undo_filters(&mut self, old: &Snapshot) {
        if let Err(undo) = self.nft.update(old) {
            tracing::error!("cannot restore the nftables table after a failed change: {undo}");
        }
        if let Some(x) = &mut self.xdp
            && let Err(undo) = x.update(old, crate::health::answers_through_vips(old))
        {
            tracing::error!("cannot restore the XDP filter after a failed change: {undo}");
        }
    }

    /// Write the nftables table again for the running snapshot (an interface it hooks was
    /// created again: the kernel took the hook away with the old one).
    pub(crate) fn reinstall_nft(&mut self) -> Result<(), NftError> {
        let snap = self.snapshot.load_full();
        self.nft.update(&snap)
    }

    /// Remove the nftables table (at stop).
    pub(crate) fn remove_nft(&mut self) -> Result<(), NftError> {
        self.nft.remove()
    }
}

/// Refuse a plugin name that is not 1 to 32 letters, digits, '-' or '_'.
pub(crate) fn check_plugin_name(name: &str) -> Result<(), ControlError> {
    if crate::config::valid_plugin_name(name) {
        return Ok(());
    }
    Err(
        edit::EditError::Invalid(crate::config::ConfigError::Invalid(format!(
            "plugin name {name:?}: use 1 to 32 letters, digits, '-' or '_'"
        )))
        .into(),
    )
}

/// Check that every service's scheduler, helpers and persistence engine name plugins of
/// the right kind: a scheduler plugin as a helper, or a helper as a scheduler, is refused.
pub(crate) fn check_kinds(
    registry: &Registry,
    custom: &[crate::plugin::Plugin],
    cfg: &Config,
) -> Result<(), ControlError> {
    use crate::plugin::PluginKind;
    for s in &cfg.services {
        if let Some(p) = custom
            .iter()
            .find(|p| p.name == s.scheduler && p.kind != PluginKind::Scheduler)
        {
            let kind = if p.kind == PluginKind::Pe {
                "a persistence engine"
            } else {
                "an application helper"
            };
            return Err(ControlError::WrongKind(format!(
                "service {}: plugin {:?} is {kind}, not a scheduler",
                s.key(),
                s.scheduler
            )));
        }
        if let Some(pe) = &s.pe
            && registry.pe_in(custom, pe).is_none()
        {
            return Err(ControlError::WrongKind(format!(
                "service {}: {pe:?} is not a persistence engine (the built-in one is \"sip\")",
                s.key()
            )));
        }
        for h in s.helper_names() {
            if registry.helper_in(custom, &h).is_none() {
                return Err(ControlError::WrongKind(format!(
                    "service {}: {h:?} is not an application helper",
                    s.key()
                )));
            }
        }
    }
    Ok(())
}

/// Remove the plugin file `path` if it is one of `dir`'s (an upload's, not a file the
/// configuration names elsewhere).
fn remove_uploaded(dir: &state::TrustedDir, path: &std::path::Path) {
    if path.parent() == Some(dir.path())
        && let Some(name) = path.file_name().and_then(|n| n.to_str())
        && let Err(e) = dir.remove(name)
    {
        tracing::warn!(file = %path.display(), "cannot remove a replaced plugin's file: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::nft::{Recorder, render};
    use std::sync::atomic::Ordering::Relaxed;

    const ONE: &str = "[[service]]\nprotocol = \"tcp\"\naddress = \"198.18.100.1:80\"\n\
                       [[service.real]]\naddress = \"198.19.0.11:80\"\n";

    fn controller(state: Option<StateFile>) -> (Controller, Recorder) {
        let rec = Recorder::default();
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let nft = NftTable::install_with(&["s0".into()], &snapshot.load(), Box::new(rec.clone()))
            .expect("install");
        let runtime = crate::plugin::Runtime::new(None).expect("runtime");
        let registry = Registry::new(runtime, false).expect("registry");
        rec.scripts.lock().clear();
        let c = Controller::new(Config::default(), snapshot, registry, nft, state);
        (c, rec)
    }

    fn empty_script() -> String {
        render(&["s0".to_string()], &Snapshot::default())
    }

    /// A misc check runs a program: one among a server's several checks needs the
    /// operator's opt-in as a single one does, and so does a notify program.
    #[test]
    fn a_misc_check_among_several_needs_the_opt_in_too() {
        let (mut c, _rec) = controller(None);
        let service: crate::config::ServiceDef = toml::from_str(
            "protocol = 'tcp'\naddress = '198.18.100.1:80'\n[[real]]\naddress = '198.19.0.11:80'\n\
             checks = [{ type = 'tcp' }, { type = 'misc', program = '/bin/true' }]\n",
        )
        .expect("service");
        let err = c
            .apply_changes(&[edit::Change::AddService { service }])
            .expect_err("no opt-in");
        assert!(matches!(err, ControlError::MiscCheck { .. }), "{err}");
        assert!(c.config().services.is_empty());
        // A notify program runs a program too.
        let service: crate::config::ServiceDef = toml::from_str(
            "protocol = 'tcp'\naddress = '198.18.100.1:80'\n[[real]]\naddress = '198.19.0.11:80'\n\
             check = { type = 'tcp', notify_down = '/usr/local/bin/page ops' }\n",
        )
        .expect("service");
        let err = c
            .apply_changes(&[edit::Change::AddService { service }])
            .expect_err("no opt-in");
        assert!(
            matches!(&err, ControlError::MiscCheck { program } if program == "/usr/local/bin/page ops"),
            "{err}"
        );
    }

    #[test]
    fn a_change_nftables_refuses_changes_nothing() {
        let (mut c, rec) = controller(None);
        rec.refuse.store(1, Relaxed);
        let next = crate::config::parse(ONE).expect("config");
        let err = c.apply(next.clone()).expect_err("refused");
        assert!(matches!(err, ControlError::Nft(_)), "{err}");
        assert!(
            c.config().services.is_empty(),
            "the configuration is the old one"
        );
        assert_eq!(
            c.snapshot().load().services().count(),
            0,
            "nothing published"
        );
        assert_eq!(rec.scripts.lock().len(), 1, "one try, nothing to undo");

        c.apply(next).expect("the same change once nft takes it");
        assert_eq!(c.snapshot().load().services().count(), 1);
        let last = rec.scripts.lock().last().cloned().unwrap_or_default();
        assert!(last.contains("198.18.100.1 . tcp . 80"), "{last}");
        assert_eq!(last, render(&["s0".to_string()], &c.snapshot().load()));
    }

    /// A save whose directory fsync fails after the rename is a failed change: the running
    /// configuration stays, the state on disk is written back to it, and an upload's
    /// plugin file goes, so that the next start finds what its state names.
    #[test]
    fn a_failed_directory_fsync_rolls_the_change_and_the_file_back() {
        let dir = std::env::temp_dir().join(format!("wvs-control-fsync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = StateFile::open(&dir, nix::unistd::geteuid().as_raw()).expect("state dir");
        let (mut c, _rec) = controller(Some(st));
        state::FAIL_DIR_SYNC.with(|f| f.set(true));
        let err = c
            .apply(crate::config::parse(ONE).expect("config"))
            .expect_err("not durable");
        assert!(matches!(err, ControlError::State(_)), "{err}");
        assert!(c.config().services.is_empty(), "the running one stays");
        let saved = StateFile::open(&dir, nix::unistd::geteuid().as_raw());
        assert!(saved.is_err(), "still locked by the first");
        drop(c);
        let saved = StateFile::open(&dir, nix::unistd::geteuid().as_raw())
            .expect("state")
            .load()
            .expect("parses")
            .expect("saved");
        assert!(
            saved.services.is_empty(),
            "the file was written back: {saved:?}"
        );
        // An upload refused the same way leaves no file behind.
        let st = StateFile::open(&dir, nix::unistd::geteuid().as_raw()).expect("state dir");
        let (mut c, _rec) = controller(Some(st));
        let wasm = crate::plugin::builtin::BUILTIN
            .iter()
            .find(|(n, _)| *n == "rr")
            .map(|(_, w)| *w)
            .expect("rr");
        assert!(c.put_plugin("myrr", wasm).is_err());
        state::FAIL_DIR_SYNC.with(|f| f.set(false));
        let left: Vec<_> = std::fs::read_dir(dir.join("plugins"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
        assert!(c.config().plugins.is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// An nft killed after it committed the new table: the running one is written again,
    /// so the kernel's view is the running snapshot's.
    #[test]
    fn an_nft_killed_after_committing_is_followed_by_the_running_table() {
        let (mut c, rec) = controller(None);
        rec.commit_then_time_out.store(1, Relaxed);
        let err = c
            .apply(crate::config::parse(ONE).expect("config"))
            .expect_err("timed out");
        assert!(
            matches!(err, ControlError::Nft(NftError::TimedOut(_))),
            "{err}"
        );
        let s = rec.scripts.lock().clone();
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[1], render(&["s0".to_string()], &c.snapshot().load()));
        assert!(c.config().services.is_empty());
    }

    #[test]
    fn a_change_that_cannot_be_saved_puts_the_table_back() {
        let dir = std::env::temp_dir().join(format!("wvs-control-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = StateFile::open(&dir, nix::unistd::geteuid().as_raw()).expect("state dir");
        // A directory where the state file goes: the rename onto it fails.
        std::fs::create_dir(dir.join(state::STATE_FILE)).expect("mkdir");
        std::fs::write(dir.join(state::STATE_FILE).join("x"), b"x").expect("file");
        let (mut c, rec) = controller(Some(st));
        let err = c
            .apply(crate::config::parse(ONE).expect("config"))
            .expect_err("cannot be saved");
        assert!(matches!(err, ControlError::State(_)), "{err}");
        let s = rec.scripts.lock().clone();
        assert_eq!(s.len(), 2, "installed, then rolled back: {s:?}");
        assert!(
            s[0].contains("198.18.100.1 . tcp . 80"),
            "the new table first"
        );
        assert_eq!(s[1], empty_script(), "then the old one again");
        assert!(c.config().services.is_empty());
        assert_eq!(c.snapshot().load().services().count(), 0);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_batch_with_one_bad_change_applies_none_and_runs_no_nft() {
        let (mut c, rec) = controller(None);
        let next = crate::config::parse(ONE).expect("config");
        let changes = vec![
            edit::Change::AddService {
                service: crate::config::ServiceDef::from(&next.services[0]),
            },
            edit::Change::DeleteService {
                protocol: "tcp".into(),
                address: "198.18.100.9:80".into(),
            },
        ];
        let err = c
            .apply_changes(&changes)
            .expect_err("the second is refused");
        assert!(matches!(err, ControlError::Edit(_)), "{err}");
        assert!(rec.scripts.lock().is_empty());
        assert!(c.config().services.is_empty());
    }
}

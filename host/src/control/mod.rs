//! The control library: the one owner of the running configuration.
//!
//! Every change, whatever asks for it (a reload today; the REST API and `wvs adm` next),
//! goes through [`Controller::apply`], all or nothing: plugins are compiled, the new service
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
pub enum ControlError {
    /// A plugin could not be compiled or does not follow the ABI.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// nftables refused the new table.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// The state could not be saved.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The running configuration and everything derived from it.
#[derive(Debug)]
pub struct Controller {
    config: Config,
    snapshot: Arc<ArcSwap<Snapshot>>,
    registry: Registry,
    nft: NftTable,
    traffic: BalancerTotals,
    state: Option<StateFile>,
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
            traffic: BalancerTotals::default(),
            state,
        }
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
    pub fn apply(&mut self, next: Config) -> Result<(), ControlError> {
        let custom = self.registry.prepare(&next.plugins)?;
        let old = self.snapshot.load_full();
        let registry = &self.registry;
        let snap = Arc::new(Snapshot::build(&next.services, &old, &|n| {
            registry.choice_in(&custom, n)
        }));
        self.nft.update(&snap)?;
        if let Some(st) = &self.state
            && let Err(e) = st.save(&next)
        {
            if let Err(undo) = self.nft.update(&old) {
                tracing::error!("cannot restore the nftables table after a failed save: {undo}");
            }
            return Err(e.into());
        }
        self.registry.commit(custom);
        self.snapshot.store(snap.clone());
        old.retire_into(&snap);
        self.traffic.retire(&old, &snap);
        self.config = next;
        Ok(())
    }

    /// Save the running configuration (at start, so that a restart finds it).
    pub fn save(&self) -> Result<(), StateError> {
        match &self.state {
            Some(st) => st.save(&self.config),
            None => Ok(()),
        }
    }

    /// Remove the nftables table (at stop).
    pub fn remove_nft(&mut self) -> Result<(), NftError> {
        self.nft.remove()
    }
}

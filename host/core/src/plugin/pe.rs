//! Persistence engine instances (IPVS's `ip_vs_pe`): one per engine plugin and worker,
//! called for a new connection of a persistent service with its first packet's payload,
//! answering the key its template is found by.

use wasmtime::{Memory, Store, TypedFunc};
use wvs_sdk::{
    ConnInfo, PE_CONN_OFFSET, PE_KEY_OFFSET, PE_LEN_OFFSET, PE_MAX_KEY, PE_PAYLOAD_OFFSET,
    PeShared, abi,
};

use super::sched::StoreData;
use super::{Plugin, PluginError};
use crate::consts::PLUGIN_SETUP_DEADLINE_EPOCHS;

/// An engine's answer for one connection.
#[derive(Debug, PartialEq, Eq)]
pub enum PeAnswer<'a> {
    /// The service's usual template.
    Default,
    /// Drop the packet.
    Drop,
    /// The template's key (at most `PE_MAX_KEY` bytes).
    Key(&'a [u8]),
}

/// One instance of a persistence engine plugin.
pub struct WasmPe {
    name: String,
    store: Store<StoreData>,
    memory: Memory,
    shared: usize,
    key: TypedFunc<(), i32>,
    clock: std::sync::Arc<super::EpochClock>,
    /// Called before (the first call is timed from its start, as a scheduler's).
    warm: bool,
}

impl std::fmt::Debug for WasmPe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmPe")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl super::pool::Instance for WasmPe {
    fn new(p: &Plugin) -> Result<Self, PluginError> {
        WasmPe::new(p)
    }
}

/// A persistence engine plugin with an instance per worker.
pub type PePool = super::pool::Pool<WasmPe>;

impl WasmPe {
    pub(super) fn new(p: &Plugin) -> Result<Self, PluginError> {
        let abi_err = |msg: String| PluginError::Abi {
            name: p.name.clone(),
            msg,
        };
        let (mut store, instance, memory) = super::sched::instantiate(p)?;
        let shared_fn: TypedFunc<(), u32> =
            super::sched::export(p, &mut store, &instance, abi::PE_SHARED_FN)?;
        let key = super::sched::export(p, &mut store, &instance, abi::PE_KEY_FN)?;
        let (r, _) = super::sched::call(
            &p.runtime.clock,
            &mut store,
            PLUGIN_SETUP_DEADLINE_EPOCHS,
            super::sched::CallKind::Quick,
            |store| shared_fn.call(&mut *store, ()),
        );
        let shared = r.map_err(|e| abi_err(format!("{e:#}")))? as usize;
        if shared
            .checked_add(std::mem::size_of::<PeShared>())
            .is_none_or(|end| end > memory.data_size(&store))
        {
            return Err(abi_err("the shared region lies outside its memory".into()));
        }
        Ok(Self {
            name: p.name.clone(),
            store,
            memory,
            shared,
            key,
            clock: p.runtime.clock.clone(),
            warm: false,
        })
    }

    /// The key of a new connection `conn` whose first packet carries `payload` (at most
    /// `HELPER_MAX_PAYLOAD` bytes are shown).
    pub fn key(
        &mut self,
        conn: &ConnInfo,
        payload: &[u8],
        now: u64,
    ) -> Result<PeAnswer<'_>, PluginError> {
        let shared = self.shared;
        let oob = |name: &str| PluginError::Abi {
            name: name.into(),
            msg: "shared region out of bounds".into(),
        };
        let payload = &payload[..payload.len().min(wvs_sdk::HELPER_MAX_PAYLOAD)];
        {
            let mem = self.memory.data_mut(&mut self.store);
            let region = mem
                .get_mut(shared..shared + PE_PAYLOAD_OFFSET + payload.len())
                .ok_or_else(|| oob(&self.name))?;
            let cb = bytemuck::bytes_of(conn);
            region[PE_CONN_OFFSET..PE_CONN_OFFSET + cb.len()].copy_from_slice(cb);
            region[PE_LEN_OFFSET..PE_LEN_OFFSET + 4]
                .copy_from_slice(&(payload.len() as u32).to_ne_bytes());
            region[PE_PAYLOAD_OFFSET..].copy_from_slice(payload);
        }
        self.store.data_mut().now = now;
        let key = &self.key;
        let (answer, _) = super::sched::call_warm(
            &self.name,
            &self.clock,
            &mut self.store,
            &mut self.warm,
            |store| key.call(store, ()),
        )?;
        match answer {
            wvs_sdk::pe_answer::DEFAULT => Ok(PeAnswer::Default),
            wvs_sdk::pe_answer::DROP => Ok(PeAnswer::Drop),
            n if (0..=PE_MAX_KEY as i32).contains(&n) => {
                let at = shared + PE_KEY_OFFSET;
                self.memory
                    .data(&self.store)
                    .get(at..at + n as usize)
                    .map(PeAnswer::Key)
                    .ok_or_else(|| oob(&self.name))
            }
            n => Err(PluginError::BadAnswer {
                name: self.name.clone(),
                answer: n,
                n: PE_MAX_KEY,
            }),
        }
    }
}

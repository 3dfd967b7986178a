//! Application helper instances (IPVS's `ip_vs_app`): one per helper plugin and worker,
//! shared by every connection the helper is bound to, which keep their own helper state in
//! the connection ([`crate::conn::app`]). A worker calls only its own instance, so helper
//! calls never wait for one another.

use wasmtime::{Caller, Linker, Memory, Store, TypedFunc};
use wvs_sdk::{
    Expect, HELPER_EXPECT_OFFSET, HELPER_MAX_PAYLOAD, HELPER_PAYLOAD_OFFSET, HELPER_PKT_OFFSET,
    HELPER_STATE_LEN, HELPER_STATE_OFFSET, HelperShared, PacketInfo, abi,
};

use super::sched::StoreData;
use super::{Plugin, PluginError};
use crate::consts::{HELPER_MAX_EXPECTS_PER_CALL, PLUGIN_SETUP_DEADLINE_EPOCHS};

/// What the host lets a helper's `expect` call ask for, set before each call.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ExpectScope {
    /// Where the shared region lies in the instance's memory.
    shared: usize,
    /// The connection's client and real server (IPv4 mapped).
    caddr: [u8; 16],
    daddr: [u8; 16],
    /// Expectations may be registered (NAT connections; not full NAT).
    allowed: bool,
    /// The expectations of this call.
    got: [Expect; HELPER_MAX_EXPECTS_PER_CALL],
    n: usize,
    /// Refused ones.
    refused: u32,
}

/// The `expect` import.
pub(super) fn link_expect(l: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    l.func_wrap(
        abi::IMPORT_MODULE,
        abi::EXPECT_FN,
        |mut c: Caller<'_, StoreData>| -> i32 {
            let Some(mem) = c.get_export("memory").and_then(|e| e.into_memory()) else {
                return -1;
            };
            let at = c.data().expect.shared + HELPER_EXPECT_OFFSET;
            let mut e = Expect::default();
            let bytes = bytemuck::bytes_of_mut(&mut e);
            let Some(src) = mem.data(&c).get(at..at + bytes.len()) else {
                return -1;
            };
            bytes.copy_from_slice(src);
            let scope = &mut c.data_mut().expect;
            let ok = scope.allowed
                && scope.n < scope.got.len()
                && e.caddr == scope.caddr
                && (e.daddr == [0; 16] || e.daddr == scope.daddr)
                && matches!(e.proto, 6 | 17);
            if !ok {
                scope.refused += 1;
                return -1;
            }
            e.daddr = scope.daddr;
            scope.got[scope.n] = e;
            scope.n += 1;
            0
        },
    )?;
    Ok(())
}

/// A helper's answer for one packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    /// Send it as it is.
    Keep,
    /// Drop it.
    Drop,
    /// Send it with this payload.
    Replace(&'a [u8]),
}

/// One instance of a helper plugin.
pub struct WasmHelper {
    name: String,
    store: Store<StoreData>,
    memory: Memory,
    shared: usize,
    packet: TypedFunc<(), i32>,
    clock: std::sync::Arc<super::EpochClock>,
    flags: u32,
    /// Called before (the first call is timed from its start, as a scheduler's).
    warm: bool,
}

impl std::fmt::Debug for WasmHelper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmHelper")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl WasmHelper {
    pub(super) fn new(p: &Plugin) -> Result<Self, PluginError> {
        let abi_err = |msg: String| PluginError::Abi {
            name: p.name.clone(),
            msg,
        };
        let (mut store, instance, memory) = super::sched::instantiate(p)?;
        let shared_fn: TypedFunc<(), u32> =
            super::sched::export(p, &mut store, &instance, abi::HELPER_SHARED_FN)?;
        let packet = super::sched::export(p, &mut store, &instance, abi::HELPER_PACKET_FN)?;
        let flags_fn: TypedFunc<(), u32> =
            super::sched::export(p, &mut store, &instance, abi::HELPER_FLAGS_FN)?;
        // Under the deadline as every call: a helper whose `flags` or `shared` never
        // returns must not hang the thread that builds it.
        let (r, _) = super::sched::call(
            &p.runtime.clock,
            &mut store,
            PLUGIN_SETUP_DEADLINE_EPOCHS,
            super::sched::CallKind::Quick,
            |store| {
                let flags = flags_fn.call(&mut *store, ())?;
                let shared = shared_fn.call(&mut *store, ())?;
                wasmtime::Result::<(u32, u32)>::Ok((flags, shared))
            },
        );
        let (flags, shared) = r.map_err(|e| abi_err(format!("{e:#}")))?;
        let shared = shared as usize;
        if shared
            .checked_add(std::mem::size_of::<HelperShared>())
            .is_none_or(|end| end > memory.data_size(&store))
        {
            return Err(abi_err("the shared region lies outside its memory".into()));
        }
        store.data_mut().expect.shared = shared;
        Ok(Self {
            name: p.name.clone(),
            store,
            memory,
            shared,
            packet,
            clock: p.runtime.clock.clone(),
            flags,
            warm: false,
        })
    }

    /// Show the helper one packet: `pkt` (with `len` set to the payload's length and
    /// `max_len` to the most a replacement may have), the connection's `state` for it (written
    /// back), the payload. `allow_expect`: the connection may have expected connections.
    pub fn packet(
        &mut self,
        pkt: &PacketInfo,
        state: &mut [u8; HELPER_STATE_LEN],
        payload: &[u8],
        allow_expect: bool,
        now: u64,
    ) -> Result<Answer<'_>, PluginError> {
        let shared = self.shared;
        let oob = |name: &str| PluginError::Abi {
            name: name.into(),
            msg: "shared region out of bounds".into(),
        };
        {
            let mem = self.memory.data_mut(&mut self.store);
            let region = mem
                .get_mut(shared..shared + HELPER_PAYLOAD_OFFSET + payload.len())
                .ok_or_else(|| oob(&self.name))?;
            let pb = bytemuck::bytes_of(pkt);
            region[HELPER_PKT_OFFSET..HELPER_PKT_OFFSET + pb.len()].copy_from_slice(pb);
            region[HELPER_STATE_OFFSET..HELPER_STATE_OFFSET + HELPER_STATE_LEN]
                .copy_from_slice(state);
            region[HELPER_PAYLOAD_OFFSET..].copy_from_slice(payload);
        }
        let d = self.store.data_mut();
        d.now = now;
        d.expect.caddr = pkt.caddr;
        d.expect.daddr = pkt.daddr;
        d.expect.allowed = allow_expect;
        d.expect.n = 0;
        let packet = &self.packet;
        let (answer, _) = super::sched::call_warm(
            &self.name,
            &self.clock,
            &mut self.store,
            &mut self.warm,
            |store| packet.call(store, ()),
        )?;
        let mem = self.memory.data(&self.store);
        let st = mem
            .get(shared + HELPER_STATE_OFFSET..shared + HELPER_STATE_OFFSET + HELPER_STATE_LEN)
            .ok_or_else(|| oob(&self.name))?;
        state.copy_from_slice(st);
        match answer {
            wvs_sdk::helper_answer::KEEP => Ok(Answer::Keep),
            wvs_sdk::helper_answer::DROP => Ok(Answer::Drop),
            n if n >= 0 && n as u32 <= pkt.max_len && (n as usize) <= HELPER_MAX_PAYLOAD => {
                let at = shared + HELPER_PAYLOAD_OFFSET;
                mem.get(at..at + n as usize)
                    .map(Answer::Replace)
                    .ok_or_else(|| oob(&self.name))
            }
            n => Err(PluginError::BadAnswer {
                name: self.name.clone(),
                answer: n,
                n: pkt.max_len as usize,
            }),
        }
    }

    /// Its [`wvs_sdk::helper_flags`].
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// The expected connections the last call registered.
    pub fn expects(&self) -> &[Expect] {
        let s = &self.store.data().expect;
        &s.got[..s.n]
    }

    /// Expectations refused since the instance was made.
    pub fn refused(&self) -> u32 {
        self.store.data().expect.refused
    }
}

impl super::pool::Instance for WasmHelper {
    fn new(p: &Plugin) -> Result<Self, PluginError> {
        WasmHelper::new(p)
    }
}

/// A helper plugin with an instance per worker.
pub type HelperPool = super::pool::Pool<WasmHelper>;

impl HelperPool {
    /// Whether it registers expected connections.
    pub fn expects(&self) -> bool {
        self.flags & wvs_sdk::helper_flags::EXPECTS != 0
    }
}

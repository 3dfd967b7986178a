//! The plugin side of the ABI on wasm32, used by [`crate::export_scheduler!`]: the imports,
//! the shared table and the scheduler instance as statics, and the export bodies. Not for
//! direct use.

use core::cell::UnsafeCell;

use super::{
    Helper, HelperHost, HelperShared, Host, PeShared, PersistenceEngine, Scheduler, Shared,
};

#[link(wasm_import_module = "wvs")]
unsafe extern "C" {
    #[link_name = "random"]
    fn host_random() -> u32;
    #[link_name = "now_ms"]
    fn host_now_ms() -> u64;
    #[link_name = "expect"]
    fn host_expect() -> i32;
}

struct GuestHost;

impl Host for GuestHost {
    fn random(&mut self) -> u32 {
        // SAFETY: an import with no arguments and no memory access, provided by the host.
        unsafe { host_random() }
    }
    fn now_ms(&self) -> u64 {
        // SAFETY: as above.
        unsafe { host_now_ms() }
    }
}

/// The table shared with the host. A static of its own, all zeros, so it costs the
/// module no data segment.
pub struct SharedCell(UnsafeCell<Shared>);

/// The scheduler instance, created on first use.
pub struct SchedCell<T>(UnsafeCell<Option<T>>);

// SAFETY: a wasm32 plugin instance is single-threaded; the host never calls into one
// instance from two threads at once.
unsafe impl Sync for SharedCell {}
// SAFETY: as above.
unsafe impl<T> Sync for SchedCell<T> {}

impl SharedCell {
    /// An empty table.
    pub const fn new() -> Self {
        Self(UnsafeCell::new(Shared::new()))
    }

    /// Address of the table.
    pub fn get(&self) -> *mut Shared {
        self.0.get()
    }
}

impl<T: Scheduler> SchedCell<T> {
    /// No instance yet.
    pub const fn new() -> Self {
        Self(UnsafeCell::new(None))
    }

    fn parts<'a>(&'a self, shared: &'a SharedCell, n: u32) -> (&'a Shared, &'a mut T, usize) {
        // SAFETY: single-threaded, and no reference into the state outlives one export
        // call; the host writes the table only between calls.
        let (shared, sched) = unsafe { (&*shared.0.get(), &mut *self.0.get()) };
        let n = (n as usize).min(shared.dests.len());
        (shared, sched.get_or_insert_with(T::default), n)
    }

    /// `wvs_update`.
    pub fn update(&self, shared: &SharedCell, n: u32, flags: u32) {
        let (shared, sched, n) = self.parts(shared, n);
        sched.update(&shared.dests[..n], flags);
    }

    /// `wvs_schedule`.
    pub fn schedule(&self, shared: &SharedCell, n: u32) -> i32 {
        let (shared, sched, n) = self.parts(shared, n);
        match sched.schedule(&shared.conn, &shared.dests[..n], &mut GuestHost) {
            Some(i) if i < n => i as i32,
            _ => -1,
        }
    }
}

/// The region a helper shares with the host.
pub struct HelperSharedCell(UnsafeCell<HelperShared>);

/// The helper instance and its output buffer.
pub struct HelperCell<T>(UnsafeCell<(Option<T>, [u8; crate::HELPER_MAX_PAYLOAD])>);

// SAFETY: a wasm32 plugin instance is single-threaded (see above).
unsafe impl Sync for HelperSharedCell {}
// SAFETY: as above.
unsafe impl<T> Sync for HelperCell<T> {}

impl HelperSharedCell {
    /// An empty region.
    pub const fn new() -> Self {
        Self(UnsafeCell::new(HelperShared::new()))
    }

    /// Address of the region.
    pub fn get(&self) -> *mut HelperShared {
        self.0.get()
    }
}

struct GuestHelperHost(*mut HelperShared);

impl HelperHost for GuestHelperHost {
    fn expect(&mut self, e: &crate::Expect) -> bool {
        // SAFETY: the region is this instance's static; no reference into it is held
        // across this write (the helper got copies of what it reads).
        unsafe { (*self.0).expect = *e };
        // SAFETY: an import that reads the shared region, provided by the host.
        unsafe { host_expect() == 0 }
    }
    fn now_ms(&self) -> u64 {
        // SAFETY: as in `GuestHost`.
        unsafe { host_now_ms() }
    }
}

impl<T: Helper> HelperCell<T> {
    /// No instance yet.
    pub const fn new() -> Self {
        Self(UnsafeCell::new((None, [0; crate::HELPER_MAX_PAYLOAD])))
    }

    /// `wvs_helper_packet`.
    pub fn packet(&self, shared: &HelperSharedCell) -> i32 {
        let region = shared.get();
        // SAFETY: single-threaded; the host writes the region only between calls. The
        // packet and state are copied out, so `expect` may write the region meanwhile.
        let (pkt, mut state) = unsafe { ((*region).pkt, (*region).state) };
        // SAFETY: as above; the payload is not written by `expect`.
        let payload = unsafe { &(*region).payload };
        // SAFETY: the instance cell is only touched here, one call at a time.
        let (helper, out) = unsafe { &mut *self.0.get() };
        let helper = helper.get_or_insert_with(T::default);
        let n = (pkt.len as usize).min(payload.len());
        let max = (pkt.max_len as usize).min(out.len());
        let action = helper.packet(
            &pkt,
            &mut state,
            &payload[..n],
            &mut out[..max],
            &mut GuestHelperHost(region),
        );
        // SAFETY: as above; no reference into the region is live.
        unsafe { (*region).state = state };
        match action {
            crate::Action::Keep => crate::helper_answer::KEEP,
            crate::Action::Drop => crate::helper_answer::DROP,
            crate::Action::Replace(len) if len <= max => {
                // SAFETY: as above.
                unsafe { (&mut (*region).payload)[..len].copy_from_slice(&out[..len]) };
                len as i32
            }
            crate::Action::Replace(_) => crate::helper_answer::KEEP,
        }
    }
}

/// The region a persistence engine shares with the host.
pub struct PeSharedCell(UnsafeCell<PeShared>);

/// The engine instance.
pub struct PeCell<T>(UnsafeCell<Option<T>>);

// SAFETY: a wasm32 plugin instance is single-threaded (see above).
unsafe impl Sync for PeSharedCell {}
// SAFETY: as above.
unsafe impl<T> Sync for PeCell<T> {}

impl PeSharedCell {
    /// An empty region.
    pub const fn new() -> Self {
        Self(UnsafeCell::new(PeShared::new()))
    }

    /// Address of the region.
    pub fn get(&self) -> *mut PeShared {
        self.0.get()
    }
}

impl<T: PersistenceEngine> PeCell<T> {
    /// No instance yet.
    pub const fn new() -> Self {
        Self(UnsafeCell::new(None))
    }

    /// `wvs_pe_key`.
    pub fn key(&self, shared: &PeSharedCell) -> i32 {
        // SAFETY: single-threaded; the host writes the region only between calls, and no
        // reference into it outlives this call.
        let region = unsafe { &mut *shared.get() };
        // SAFETY: the instance cell is only touched here, one call at a time.
        let engine = unsafe { &mut *self.0.get() };
        let engine = engine.get_or_insert_with(T::default);
        let n = (region.len as usize).min(region.payload.len());
        let conn = region.conn;
        let (payload, key) = (&region.payload[..n], &mut region.key[..crate::PE_MAX_KEY]);
        match engine.key(&conn, payload, key) {
            crate::PeKey::Default => crate::pe_answer::DEFAULT,
            crate::PeKey::Drop => crate::pe_answer::DROP,
            crate::PeKey::Key(len) if len <= crate::PE_MAX_KEY => len as i32,
            crate::PeKey::Key(_) => crate::pe_answer::DROP,
        }
    }
}

//! The plugin side of the ABI on wasm32, used by [`crate::export_scheduler!`]: the imports,
//! the shared table and the scheduler instance as statics, and the export bodies. Not for
//! direct use.

use core::cell::UnsafeCell;

use super::{Host, Scheduler, Shared};

#[link(wasm_import_module = "wvs")]
unsafe extern "C" {
    #[link_name = "random"]
    fn host_random() -> u32;
    #[link_name = "now_ms"]
    fn host_now_ms() -> u64;
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

//! The expiry timer: connections whose time is up go, and the defense strategies follow
//! how full the table is (IPVS's `defense_work_handler`), once per sweep interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::conn::ConnTable;
use crate::consts::CONN_SWEEP_INTERVAL_MS;
use crate::service::Snapshot;

/// Start the timer's thread; it ends once `stop` is set.
pub(super) fn start(
    conns: Arc<ConnTable>,
    stop: Arc<AtomicBool>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    epoch: Instant,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("wvs-expire".into())
        .spawn(move || {
            let mut settings = snapshot.load().defense;
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(CONN_SWEEP_INTERVAL_MS));
                let now = epoch.elapsed().as_millis() as u64;
                conns.set_expire_nodest(snapshot.load().sysctl.expire_nodest_conn);
                let n = conns.sweep(now);
                if n > 0 {
                    tracing::trace!(expired = n, "connections expired");
                }
                // defense_work_handler: the level from how full the table (and memory)
                // is, then drop_entry's scan.
                let defense = conns.defense();
                let now_settings = snapshot.load().defense;
                if now_settings != settings {
                    defense.configure(now_settings);
                    settings = now_settings;
                }
                defense.update(conns.len(), conns.max_conns(), avail_pages());
                if defense.drop_entry() {
                    let n = conns.random_dropentry(now);
                    if n > 0 {
                        tracing::debug!(dropped = n, "drop_entry expired connections");
                    }
                }
            }
        })
}

/// Available memory in pages (`MemAvailable` of /proc/meminfo), as IPVS's `freeram +
/// bufferram` estimate.
pub(crate) fn avail_pages() -> Option<u64> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 4)
}

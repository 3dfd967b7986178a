//! Destination hashing, as `ip_vs_dh_schedule` (net/netfilter/ipvs/ip_vs_dh.c, the
//! `hash_32` version): a 256-bucket table filled round robin over the servers; the
//! connection's destination address picks the bucket. No fallback.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler, dest_flags, hash_32};

/// `CONFIG_IP_VS_DH_TAB_BITS`.
pub const TAB_BITS: u32 = 8;
/// Buckets in the table.
pub const TAB_SIZE: usize = 1 << TAB_BITS;

/// The bucket table: a server index per bucket (`u16::MAX` when there is no server).
#[derive(Debug)]
pub struct Dh {
    buckets: [u16; TAB_SIZE],
}

impl Default for Dh {
    fn default() -> Self {
        Self {
            buckets: [u16::MAX; TAB_SIZE],
        }
    }
}

/// `ip_vs_dh_hashkey`.
pub fn hashkey(addr_fold: u32) -> usize {
    hash_32(addr_fold, TAB_BITS) as usize
}

impl Scheduler for Dh {
    const NAME: &'static str = "dh";
    /// Its choice depends only on the connection and the real servers.
    const FLAGS: u32 = wvs_sdk::sched_flags::CONSISTENT;

    /// `ip_vs_dh_reassign`: one bucket per server in turn.
    fn update(&mut self, dests: &[DestInfo], _svc_flags: u32) {
        for (i, b) in self.buckets.iter_mut().enumerate() {
            *b = if dests.is_empty() {
                u16::MAX
            } else {
                (i % dests.len()) as u16
            };
        }
    }

    fn schedule(
        &mut self,
        conn: &ConnInfo,
        dests: &[DestInfo],
        _host: &mut dyn Host,
    ) -> Option<usize> {
        let i = usize::from(self.buckets[hashkey(conn.daddr_fold())]);
        let d = dests.get(i)?;
        let ok = d.flags & dest_flags::AVAILABLE != 0 && d.weight > 0 && !d.overloaded();
        ok.then_some(i)
    }
}

wvs_sdk::export_scheduler!(Dh);

#[cfg(test)]
mod tests {
    use super::*;
    use wvs_sched_testkit::*;
    use wvs_sdk::v4_mapped;

    #[test]
    fn destination_picks_the_server() {
        let d = dests(&[1, 1, 1]);
        let mut s: Dh = ready(&d, 0);
        let mut host = TestHost::default();
        let mut c = conn(1, 1);
        let mut seen = [0usize; 3];
        for a in 0..300u32 {
            c.daddr = v4_mapped(0x0a00_0000 + a);
            let first = s.schedule(&c, &d, &mut host).unwrap();
            c.saddr = v4_mapped(0x0b00_0000 + a);
            assert_eq!(
                s.schedule(&c, &d, &mut host),
                Some(first),
                "the client does not matter"
            );
            assert_eq!(first, usize::from(s.buckets[hashkey(0x0a00_0000 + a)]));
            seen[first] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        let mut q = d.clone();
        let i = s.schedule(&c, &d, &mut host).unwrap();
        q[i].weight = 0;
        assert_eq!(s.schedule(&c, &q, &mut host), None, "no fallback");
    }
}

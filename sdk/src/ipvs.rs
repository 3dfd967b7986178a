//! What IPVS's schedulers compute, for schedulers written with the SDK: connection overhead,
//! address folding and hashing as the kernel does them, and the selection rules several
//! schedulers share. None of it is part of the ABI; the built-in schedulers use it.

use crate::abi::{ConnInfo, DestInfo, dest_flags};

impl DestInfo {
    /// IPVS's `ip_vs_dest_conn_overhead`: active connections weigh 256 inactive ones.
    #[inline]
    pub fn overhead(&self) -> u32 {
        (self.activeconns << 8).wrapping_add(self.inactconns)
    }

    /// Whether the server is over its upper threshold.
    #[inline]
    pub fn overloaded(&self) -> bool {
        self.flags & dest_flags::OVERLOAD != 0
    }

    /// What most IPVS schedulers require of a server: weight above 0 and not overloaded (the
    /// opposite of the hashing schedulers' `is_unavailable`).
    #[inline]
    pub fn schedulable(&self) -> bool {
        self.weight > 0 && !self.overloaded()
    }

    /// The address folded to 32 bits as IPVS's hashing schedulers do: the IPv4 address, or
    /// the XOR of the four words of an IPv6 address (host byte order).
    #[inline]
    pub fn addr_fold(&self) -> u32 {
        fold_addr(&self.addr)
    }
}

impl ConnInfo {
    /// The client address folded to 32 bits (see [`DestInfo::addr_fold`]).
    #[inline]
    pub fn saddr_fold(&self) -> u32 {
        fold_addr(&self.saddr)
    }

    /// The virtual address folded to 32 bits.
    #[inline]
    pub fn daddr_fold(&self) -> u32 {
        fold_addr(&self.daddr)
    }

    /// Whether a service flag is set.
    #[inline]
    pub fn has_flag(&self, flag: u32) -> bool {
        self.svc_flags & flag != 0
    }
}

/// Fold a 16-byte address as IPVS does (`addr->ip`, or the XOR of the `ip6` words).
#[inline]
pub fn fold_addr(a: &[u8; 16]) -> u32 {
    let w = |i: usize| u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    if a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff {
        w(12)
    } else {
        w(0) ^ w(4) ^ w(8) ^ w(12)
    }
}

/// Map an IPv4 address (host order) into the 16-byte form.
#[inline]
pub fn v4_mapped(a: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[10] = 0xff;
    out[11] = 0xff;
    out[12..].copy_from_slice(&a.to_be_bytes());
    out
}

/// The kernel's `hash_32(val, bits)`: multiply by the 32-bit golden ratio, keep the top bits.
#[inline]
pub fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(0x61C8_8647) >> (32 - bits)
}

/// Greatest common divisor (0 with 0 gives 0).
#[inline]
pub fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// The rule IPVS's wlc, sed and nq share: the first schedulable server (weight above 0, not
/// overloaded) is the least loaded so far; each next one replaces it when
/// `loh * w(dest) > doh * w(least)`, i.e. when it has less overhead per weight, compared
/// without division.
pub fn least_weighted(dests: &[DestInfo], overhead: fn(&DestInfo) -> u32) -> Option<usize> {
    let mut least: Option<(usize, i64)> = None;
    for (i, d) in dests.iter().enumerate() {
        if !d.schedulable() {
            continue;
        }
        let doh = i64::from(overhead(d));
        match least {
            None => least = Some((i, doh)),
            Some((l, loh)) => {
                if loh * i64::from(d.weight) > doh * i64::from(dests[l].weight) {
                    least = Some((i, doh));
                }
            }
        }
    }
    least.map(|(i, _)| i)
}

/// The weighted least connection of the locality-based schedulers (`__ip_vs_lblc_schedule`,
/// `__ip_vs_lblcr_schedule`): the first server with weight that is not overloaded, then any
/// later one that is not overloaded with less overhead per weight.
pub fn lblc_wlc(dests: &[DestInfo]) -> Option<usize> {
    let first = dests.iter().position(|d| !d.overloaded() && d.weight > 0)?;
    let mut least = first;
    let mut loh = i64::from(dests[first].overhead());
    for (i, d) in dests.iter().enumerate().skip(first + 1) {
        if d.overloaded() {
            continue;
        }
        let doh = i64::from(d.overhead());
        if loh * i64::from(d.weight) > doh * i64::from(dests[least].weight) {
            least = i;
            loh = doh;
        }
    }
    Some(least)
}

/// `is_overloaded` of the locality-based schedulers: more active connections than weight,
/// while some server has fewer than half of its weight.
pub fn lblc_overloaded(d: &DestInfo, dests: &[DestInfo]) -> bool {
    i64::from(d.activeconns) > i64::from(d.weight)
        && dests
            .iter()
            .any(|o| i64::from(o.activeconns) * 2 < i64::from(o.weight))
}

/// A real server's identity (address and port) that stays valid when the table is reordered
/// or shrinks; schedulers that remember servers (lblc, lblcr) keep these, not indexes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestId {
    /// Address.
    pub addr: [u8; 16],
    /// Port.
    pub port: u16,
}

impl DestId {
    /// The identity of a table entry.
    pub fn of(d: &DestInfo) -> Self {
        Self {
            addr: d.addr,
            port: d.port,
        }
    }

    /// Where this server is in the current table, if it is still there.
    pub fn find(&self, dests: &[DestInfo]) -> Option<usize> {
        dests
            .iter()
            .position(|d| d.addr == self.addr && d.port == self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_and_hashing() {
        let a = v4_mapped(0xC612_000B);
        assert_eq!(fold_addr(&a), 0xC612_000B);
        let mut v6 = [0u8; 16];
        v6[0] = 0x20;
        v6[15] = 1;
        assert_eq!(fold_addr(&v6), 0x2000_0000 ^ 1);
        assert_eq!(hash_32(1, 8), 0x61);
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(0, 5), 5);
        let d = DestInfo {
            activeconns: 2,
            inactconns: 3,
            weight: 1,
            ..Default::default()
        };
        assert_eq!(d.overhead(), 2 * 256 + 3);
        assert!(d.schedulable());
    }
}

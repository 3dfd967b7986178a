//! The nftables table that keeps the kernel from handling wvs's packets a second time.
//!
//! A packet socket gets a copy of each frame before the netdev ingress hook, so wvs sees
//! every frame and the kernel's copy can be dropped right there: packets to a virtual
//! service, replies from a real server's port, fragments to or from those addresses
//! (which the datapath drops as well: their ports cannot be known), and the ICMP errors
//! wvs relays: those whose quoted packet is of a service (a reply from a VIP's port, or a
//! packet to a real server's port), matched on the quote itself. Everything else (ARP,
//! SSH, other traffic, ICMP errors about flows of the kernel's) is the kernel's as usual.
//! The quote is matched at fixed offsets, so a quote with IP options (which no common
//! stack sends) reaches the kernel too, which has no use for it.
//!
//! The table is written with `nft -f -` as one transaction, so it is replaced atomically on
//! every configuration change, and deleted when wvs stops. A table left by a crashed run is
//! replaced at start.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use crate::consts::{NFT_PRIORITY, NFT_TABLE};
use crate::model::Protocol;
use crate::service::Snapshot;

/// Why the nftables table could not be written or removed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be run.
    #[error("cannot run nft (install the nftables package): {0}")]
    Spawn(std::io::Error),
    /// `nft` refused the script.
    #[error("nft failed: {0}")]
    Failed(String),
    /// `nft` ran past its time and was killed: it may have committed the script first, so
    /// the caller writes the table it means to keep again.
    #[error("nft did not finish within {0} ms and was killed")]
    TimedOut(u64),
}

/// What runs an nft script: `nft -f -` ([`NftCommand`]), or in tests a recorder that can
/// be told to refuse, so that the control plane's all-or-nothing and roll-back paths are
/// tested without root.
pub(crate) trait NftRunner: std::fmt::Debug + Send {
    /// Run `script` as one transaction. `quiet`: a refusal is expected (a probe), so it is
    /// not logged.
    fn run(&mut self, script: &str, quiet: bool) -> Result<(), NftError>;
}

/// The real `nft`, by absolute path, bounded in time.
#[derive(Debug, Default)]
pub(crate) struct NftCommand;

impl NftRunner for NftCommand {
    fn run(&mut self, script: &str, quiet: bool) -> Result<(), NftError> {
        run_nft(script, !quiet)
    }
}

/// The installed table; removed on drop.
#[derive(Debug)]
pub struct NftTable {
    devices: Vec<String>,
    installed: bool,
    runner: Box<dyn NftRunner>,
}

impl NftTable {
    /// Install (or replace) the table for `devices` and the services of `snap`.
    pub fn install(devices: &[String], snap: &Snapshot) -> Result<Self, NftError> {
        Self::install_with(devices, snap, Box::new(NftCommand))
    }

    /// [`Self::install`] through another runner.
    pub(crate) fn install_with(
        devices: &[String],
        snap: &Snapshot,
        mut runner: Box<dyn NftRunner>,
    ) -> Result<Self, NftError> {
        let existed = runner
            .run(&format!("list table netdev {NFT_TABLE}\n"), true)
            .is_ok();
        if existed {
            tracing::warn!(
                table = NFT_TABLE,
                "replacing an nftables table left by an earlier run"
            );
        }
        let mut t = Self {
            devices: devices.to_vec(),
            installed: false,
            runner,
        };
        t.update(snap)?;
        Ok(t)
    }

    /// Replace the table's rules for a new snapshot, atomically.
    pub fn update(&mut self, snap: &Snapshot) -> Result<(), NftError> {
        self.runner.run(&render(&self.devices, snap), false)?;
        self.installed = true;
        Ok(())
    }

    /// Delete the table.
    pub fn remove(&mut self) -> Result<(), NftError> {
        if self.installed {
            self.runner
                .run(&format!("delete table netdev {NFT_TABLE}\n"), false)?;
            self.installed = false;
        }
        Ok(())
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            tracing::error!("cannot remove nftables table {NFT_TABLE}: {e}");
        }
    }
}

/// What wvs takes from the kernel in a snapshot: the nftables table drops the kernel's copy
/// of these packets, and the XDP program of `--io xdp` ([`super::xdp`]) redirects them to
/// wvs. Sorted, without duplicates.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Claims {
    /// Virtual services: (address, protocol, port); port 0: every port.
    pub vips: Vec<(Ipv4Addr, Protocol, u16)>,
    /// NAT real servers (whose replies come back through wvs): (address, protocol, port);
    /// port 0: every port (a port-0 service's).
    pub reals: Vec<(Ipv4Addr, Protocol, u16)>,
    /// Virtual addresses (for fragments, whose ports cannot be known, and ICMP errors).
    pub vip_addrs: Vec<Ipv4Addr>,
    /// NAT real servers' addresses (for fragments).
    pub real_addrs: Vec<Ipv4Addr>,
    /// Virtual addresses of services whose helpers expect connections: their data ports
    /// (20 and 1024 up, [`Snapshot::is_data_port`]) too.
    pub data_vips: Vec<(Ipv4Addr, Protocol)>,
    /// NAT real servers of those services: replies from their data ports.
    pub data_reals: Vec<(Ipv4Addr, Protocol)>,
    /// Where the answers to checks through a VIP come from (VIP, protocol, port; the
    /// caller's, from the health checks): the XDP program's, not the table's (under the packet-socket backends the kernel's copy is
    /// what such a check's socket takes, unless the VIP is local, when it is a martian).
    pub check_answers: Vec<(Ipv4Addr, Protocol, u16)>,
    /// The same of IPv6 services and real servers (no checks through a VIP yet).
    pub v6: Claims6,
    /// The mark rules whose mark has a fwmark service of the rule's family: what they
    /// match is wvs's, and the ICMP errors about the replies.
    pub marked: Vec<crate::spec::MarkRule>,
}

/// What wvs takes from the kernel of IPv6: as [`Claims`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Claims6 {
    pub vips: Vec<(Ipv6Addr, Protocol, u16)>,
    pub reals: Vec<(Ipv6Addr, Protocol, u16)>,
    pub vip_addrs: Vec<Ipv6Addr>,
    pub real_addrs: Vec<Ipv6Addr>,
    pub data_vips: Vec<(Ipv6Addr, Protocol)>,
    pub data_reals: Vec<(Ipv6Addr, Protocol)>,
}

impl Claims {
    /// The claims of `snap`'s services.
    pub fn of(snap: &Snapshot) -> Self {
        let mut c = Self::default();
        let c6 = &mut c.v6;
        for s in snap.services() {
            let (proto, port) = (s.key.proto, s.key.port);
            match s.key.addr {
                // A fwmark service's are its rules' (below).
                _ if s.key.is_fwmark() => {}
                IpAddr::V4(a) => {
                    c.vips.push((a, proto, port));
                    c.vip_addrs.push(a);
                }
                IpAddr::V6(a) => {
                    c6.vips.push((a, proto, port));
                    c6.vip_addrs.push(a);
                }
            }
            // A fwmark service's servers answer in any protocol, from their port, or from
            // any (port 0: the client's).
            let protos = if s.key.is_fwmark() {
                &Protocol::ALL[..]
            } else {
                std::slice::from_ref(&s.key.proto)
            };
            // Only NAT servers' packets are wvs's: a DR or tunnel server talks to its
            // clients directly, and what it sends the balancer is the kernel's.
            for d in s
                .dests
                .iter()
                .chain(s.draining.iter())
                .filter(|d| d.forward().sees_replies())
            {
                // A port-0 service's connections keep the client's port (0 here: every
                // port of the server, as every port of the VIP).
                let port = if s.key.is_fwmark() {
                    // A persistent one's connections keep the client's port.
                    if s.persist_ms > 0 { 0 } else { d.port }
                } else if d.port != 0 && port != 0 {
                    d.port
                } else {
                    port
                };
                for &proto in protos {
                    match d.addr {
                        IpAddr::V4(r) => {
                            c.reals.push((r, proto, port));
                            c.real_addrs.push(r);
                        }
                        IpAddr::V6(r) => {
                            c6.reals.push((r, proto, port));
                            c6.real_addrs.push(r);
                        }
                    }
                }
            }
        }
        c.marked = snap
            .marks()
            .iter()
            .filter(|r| {
                let v6 = r.daddr.first().is_some_and(|n| n.addr().is_ipv6());
                snap.fwmark_service(
                    r.mark,
                    if v6 {
                        Ipv6Addr::UNSPECIFIED.into()
                    } else {
                        Ipv4Addr::UNSPECIFIED.into()
                    },
                )
                .is_some()
            })
            .cloned()
            .collect();
        let (dv, dr) = snap.data_claims();
        for (p, a) in dv {
            match a {
                IpAddr::V4(a) => c.data_vips.push((a, p)),
                IpAddr::V6(a) => c.v6.data_vips.push((a, p)),
            }
        }
        for (p, a) in dr {
            match a {
                IpAddr::V4(a) => c.data_reals.push((a, p)),
                IpAddr::V6(a) => c.v6.data_reals.push((a, p)),
            }
        }
        sort_dedup(&mut c.vips);
        sort_dedup(&mut c.reals);
        sort_dedup(&mut c.vip_addrs);
        sort_dedup(&mut c.real_addrs);
        sort_dedup(&mut c.data_vips);
        sort_dedup(&mut c.data_reals);
        let c6 = &mut c.v6;
        sort_dedup(&mut c6.vips);
        sort_dedup(&mut c6.reals);
        sort_dedup(&mut c6.vip_addrs);
        sort_dedup(&mut c6.real_addrs);
        sort_dedup(&mut c6.data_vips);
        sort_dedup(&mut c6.data_reals);
        c
    }
}

fn sort_dedup<T: Ord>(v: &mut Vec<T>) {
    v.sort();
    v.dedup();
}

/// The IPv6 sets and rules of the table (nothing when no IPv6 service is configured):
/// as IPv4's, fragments matched by their fragment header.
fn render_v6(c: &Claims6, elements: &dyn Fn(&[String]) -> String) -> (String, String) {
    // Nothing of IPv6's: no set, no rule. (A server of IPv6 may serve an IPv4 service.)
    if c == &Claims6::default() {
        return (String::new(), String::new());
    }
    let tuple = |&(a, p, port): &(Ipv6Addr, Protocol, u16)| format!("{a} . {} . {port}", p.name());
    let pair = |&(a, p): &(Ipv6Addr, Protocol)| format!("{a} . {}", p.name());
    let strs = |v: &[Ipv6Addr]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let (any_vips, vips): (Vec<_>, Vec<_>) = c.vips.iter().copied().partition(|t| t.2 == 0);
    let (any_reals, reals): (Vec<_>, Vec<_>) = c.reals.iter().copied().partition(|t| t.2 == 0);
    let sets = format!(
        "\tset vips6 {{ type ipv6_addr . inet_proto . inet_service; {} }}\n\
         \tset reals6 {{ type ipv6_addr . inet_proto . inet_service; {} }}\n\
         \tset vip6_addrs {{ type ipv6_addr; {} }}\n\
         \tset real6_addrs {{ type ipv6_addr; {} }}\n\
         \tset data_vips6 {{ type ipv6_addr . inet_proto; {} }}\n\
         \tset data_reals6 {{ type ipv6_addr . inet_proto; {} }}\n",
        elements(&vips.iter().map(tuple).collect::<Vec<_>>()),
        elements(&reals.iter().map(tuple).collect::<Vec<_>>()),
        elements(&strs(&c.vip_addrs)),
        elements(&strs(&c.real_addrs)),
        elements(&c.data_vips.iter().map(pair).collect::<Vec<_>>()),
        elements(&c.data_reals.iter().map(pair).collect::<Vec<_>>()),
    );
    // The same tuples as raw integers, for matching inside an ICMPv6 error's quote.
    let raw = |&(a, p, port): &(Ipv6Addr, Protocol, u16)| {
        format!("{:#034x} . {} . {port}", u128::from(a), p.number())
    };
    let sets = format!(
        "{sets}\tset icmp_vips6 {{ typeof {qs}; {} }}\n\
         \tset icmp_reals6 {{ typeof {qd}; {} }}\n",
        elements(&vips.iter().map(raw).collect::<Vec<_>>()),
        elements(&reals.iter().map(raw).collect::<Vec<_>>()),
        qs = QUOTE6_SRC,
        qd = QUOTE6_DST,
    );
    let rules = format!(
        "\t\texthdr frag exists ip6 daddr @vip6_addrs drop\n\
         \t\texthdr frag exists ip6 saddr @real6_addrs drop\n\
         \t\tip6 daddr . meta l4proto . th dport @vips6 drop\n\
         \t\tip6 saddr . meta l4proto . th sport @reals6 drop\n\
         \t\tip6 daddr . meta l4proto @data_vips6 th dport {{ {ports} }} drop\n\
         \t\tip6 saddr . meta l4proto @data_reals6 th sport {{ {ports} }} drop\n\
         \t\tip6 daddr @vip6_addrs icmpv6 type {{ {relayed} }} {v6} {QUOTE6_SRC} @icmp_vips6 drop\n\
         \t\ticmpv6 type {{ {relayed} }} {v6} {QUOTE6_DST} @icmp_reals6 drop\n",
        ports = data_ports(),
        // ip_vs_in_icmp_v6 / ip_vs_out_icmp_v6 relay every error type.
        relayed = "destination-unreachable, packet-too-big, time-exceeded, parameter-problem",
        // The quote starts 8 bytes into the ICMPv6 header: version 6, then its next header
        // (byte 6), source (8), destination (24), ports (40, 42) with no extension header.
        v6 = "@th,64,4 6",
    );
    if any_vips.is_empty() && any_reals.is_empty() {
        return (sets, rules);
    }
    // Port-0 services: every port of the VIP, and of its NAT servers at port 0.
    let pair3 = |&(a, p, _): &(Ipv6Addr, Protocol, u16)| format!("{a} . {}", p.name());
    let raw3 = |&(a, p, _): &(Ipv6Addr, Protocol, u16)| {
        format!("{:#034x} . {}", u128::from(a), p.number())
    };
    let sets = format!(
        "{sets}\tset any_vips6 {{ type ipv6_addr . inet_proto; {} }}\n\
         \tset any_reals6 {{ type ipv6_addr . inet_proto; {} }}\n\
         \tset icmp_any_vips6 {{ typeof @th,128,128 . @th,112,8; {} }}\n\
         \tset icmp_any_reals6 {{ typeof @th,256,128 . @th,112,8; {} }}\n",
        elements(&any_vips.iter().map(pair3).collect::<Vec<_>>()),
        elements(&any_reals.iter().map(pair3).collect::<Vec<_>>()),
        elements(&any_vips.iter().map(raw3).collect::<Vec<_>>()),
        elements(&any_reals.iter().map(raw3).collect::<Vec<_>>()),
    );
    let relayed = "destination-unreachable, packet-too-big, time-exceeded, parameter-problem";
    let v6 = "@th,64,4 6";
    let rules = format!(
        "{rules}\t\tip6 daddr . meta l4proto @any_vips6 drop\n\
         \t\tip6 saddr . meta l4proto @any_reals6 drop\n\
         \t\tip6 daddr @vip6_addrs icmpv6 type {{ {relayed} }} {v6} @th,128,128 . @th,112,8 @icmp_any_vips6 drop\n\
         \t\ticmpv6 type {{ {relayed} }} {v6} @th,256,128 . @th,112,8 @icmp_any_reals6 drop\n"
    );
    (sets, rules)
}

/// The sets and rules of port-0 services (every port of a VIP, and of its NAT servers at
/// port 0), IPv4's: nothing when there is none, so that a table without them reads as
/// before.
fn render_any_port(
    vips: &[&(Ipv4Addr, Protocol, u16)],
    reals: &[&(Ipv4Addr, Protocol, u16)],
    elements: &dyn Fn(&[String]) -> String,
) -> (String, String) {
    if vips.is_empty() && reals.is_empty() {
        return (String::new(), String::new());
    }
    let pair = |&&(a, p, _): &&(Ipv4Addr, Protocol, u16)| format!("{a} . {}", p.name());
    let raw = |&&(a, p, _): &&(Ipv4Addr, Protocol, u16)| {
        format!("{:#010x} . {}", u32::from(a), p.number())
    };
    // The quote's source or destination and protocol, at `render`'s offsets.
    let sets = format!(
        "\tset any_vips {{ type ipv4_addr . inet_proto; {} }}\n\
         \tset any_reals {{ type ipv4_addr . inet_proto; {} }}\n\
         \tset icmp_any_vips {{ typeof @th,160,32 . @th,136,8; {} }}\n\
         \tset icmp_any_reals {{ typeof @th,192,32 . @th,136,8; {} }}\n",
        elements(&vips.iter().map(pair).collect::<Vec<_>>()),
        elements(&reals.iter().map(pair).collect::<Vec<_>>()),
        elements(&vips.iter().map(raw).collect::<Vec<_>>()),
        elements(&reals.iter().map(raw).collect::<Vec<_>>()),
    );
    let relayed = "destination-unreachable, source-quench, time-exceeded";
    let quote = "@th,64,8 0x45";
    let rules = format!(
        "\t\tip daddr . meta l4proto @any_vips drop\n\
         \t\tip saddr . meta l4proto @any_reals drop\n\
         \t\tip daddr @vip_addrs icmp type {{ {relayed} }} {quote} @th,160,32 . @th,136,8 @icmp_any_vips drop\n\
         \t\ticmp type {{ {relayed} }} {quote} @th,192,32 . @th,136,8 @icmp_any_reals drop\n"
    );
    (sets, rules)
}

/// The rules of the mark rules that have a fwmark service: each rule's packets, and the
/// ICMP errors about their replies wherever they are addressed (the seed's
/// `ip_vs_forward_icmp`): a quote from one of the rule's destinations and ports, to one of
/// its sources and ports.
fn render_marks(rules: &[crate::spec::MarkRule]) -> String {
    use std::fmt::Write as _;
    let set = |v: Vec<String>| format!("{{ {} }}", v.join(", "));
    let ports = |v: &[(u16, u16)]| {
        set(v
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect())
    };
    // A prefix as the integer range a raw payload match compares with.
    let range = |n: &ipnet::IpNet| match n {
        ipnet::IpNet::V4(n) => format!(
            "{:#010x}-{:#010x}",
            u32::from(n.network()),
            u32::from(n.broadcast())
        ),
        ipnet::IpNet::V6(n) => format!(
            "{:#034x}-{:#034x}",
            u128::from(n.network()),
            u128::from(n.broadcast())
        ),
    };
    let mut out = String::new();
    for r in rules {
        let v6 = r.daddr.first().is_some_and(|n| n.addr().is_ipv6());
        let fam = if v6 { "ip6" } else { "ip" };
        let protos = if r.protos.is_empty() {
            Protocol::ALL.to_vec()
        } else {
            r.protos.clone()
        };
        let mut m = format!(
            "{fam} daddr {}",
            set(r.daddr.iter().map(|n| n.to_string()).collect())
        );
        if !r.saddr.is_empty() {
            let _ = write!(
                m,
                " {fam} saddr {}",
                set(r.saddr.iter().map(|n| n.to_string()).collect())
            );
        }
        let _ = write!(
            m,
            " meta l4proto {}",
            set(protos.iter().map(|p| p.name().to_string()).collect())
        );
        if !r.dport.is_empty() {
            let _ = write!(m, " th dport {}", ports(&r.dport));
        }
        if !r.sport.is_empty() {
            let _ = write!(m, " th sport {}", ports(&r.sport));
        }
        let _ = writeln!(out, "\t\t{m} drop");
        // The quote's fields, at the offsets of `render` and `render_v6`: protocol,
        // source, destination, source port, destination port.
        let (head, q) = if v6 {
            (
                "icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } @th,64,4 6",
                [
                    "@th,112,8",
                    "@th,128,128",
                    "@th,256,128",
                    "@th,384,16",
                    "@th,400,16",
                ],
            )
        } else {
            (
                "icmp type { destination-unreachable, source-quench, time-exceeded } @th,64,8 0x45",
                [
                    "@th,136,8",
                    "@th,160,32",
                    "@th,192,32",
                    "@th,224,16",
                    "@th,240,16",
                ],
            )
        };
        let mut e = format!(
            "{head} {} {} {} {}",
            q[0],
            set(protos.iter().map(|p| p.number().to_string()).collect()),
            q[1],
            set(r.daddr.iter().map(range).collect())
        );
        if !r.saddr.is_empty() {
            let _ = write!(e, " {} {}", q[2], set(r.saddr.iter().map(range).collect()));
        }
        if !r.dport.is_empty() {
            let _ = write!(e, " {} {}", q[3], ports(&r.dport));
        }
        if !r.sport.is_empty() {
            let _ = write!(e, " {} {}", q[4], ports(&r.sport));
        }
        let _ = writeln!(out, "\t\t{e} drop");
    }
    out
}

/// An ICMPv6 error's quoted source, protocol and source port (offsets in bits from the
/// ICMPv6 header), and its destination, protocol and destination port.
const QUOTE6_SRC: &str = "@th,128,128 . @th,112,8 . @th,384,16";
const QUOTE6_DST: &str = "@th,256,128 . @th,112,8 . @th,400,16";

/// The ports an expected connection may use (FTP's 20, and those an unprivileged process
/// binds).
fn data_ports() -> String {
    format!(
        "{}, {}-65535",
        crate::consts::FTP_PORT - 1,
        crate::consts::HELPER_DATA_PORTS_FROM
    )
}

/// The nft script that replaces the table in one transaction.
pub(crate) fn render(devices: &[String], snap: &Snapshot) -> String {
    let c = Claims::of(snap);
    let tuple = |&(a, p, port): &(Ipv4Addr, Protocol, u16)| format!("{a} . {} . {port}", p.name());
    // The same tuples as raw integers, for matching inside an ICMP error's quote.
    let raw = |&(a, p, port): &(Ipv4Addr, Protocol, u16)| {
        format!("{:#010x} . {} . {port}", u32::from(a), p.number())
    };
    let (any_vips, vips_p): (Vec<_>, Vec<_>) = c.vips.iter().partition(|t| t.2 == 0);
    let (any_reals, reals_p): (Vec<_>, Vec<_>) = c.reals.iter().partition(|t| t.2 == 0);
    let vips: Vec<String> = vips_p.iter().copied().map(tuple).collect();
    let reals: Vec<String> = reals_p.iter().copied().map(tuple).collect();
    let icmp_vips: Vec<String> = vips_p.iter().copied().map(raw).collect();
    let icmp_reals: Vec<String> = reals_p.iter().copied().map(raw).collect();
    let pair = |&(a, p): &(Ipv4Addr, Protocol)| format!("{a} . {}", p.name());
    let data_vips: Vec<String> = c.data_vips.iter().map(pair).collect();
    let data_reals: Vec<String> = c.data_reals.iter().map(pair).collect();
    let vip_addrs: Vec<String> = c.vip_addrs.iter().map(|a| a.to_string()).collect();
    let real_addrs: Vec<String> = c.real_addrs.iter().map(|a| a.to_string()).collect();
    let elements = |v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            format!("elements = {{ {} }}", v.join(", "))
        }
    };
    let (sets6, rules6) = render_v6(&c.v6, &elements);
    let (sets_any, rules_any) = render_any_port(&any_vips, &any_reals, &elements);
    let rules_marks = render_marks(&c.marked);
    let devs = devices
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "table netdev {t} {{}}\n\
         delete table netdev {t}\n\
         table netdev {t} {{\n\
         \tcomment \"wvs: the kernel's copy of wvs's packets is dropped here\"\n\
         \tset vips {{ type ipv4_addr . inet_proto . inet_service; {vips} }}\n\
         \tset reals {{ type ipv4_addr . inet_proto . inet_service; {reals} }}\n\
         \tset vip_addrs {{ type ipv4_addr; {vip_addrs} }}\n\
         \tset real_addrs {{ type ipv4_addr; {real_addrs} }}\n\
         \tset data_vips {{ type ipv4_addr . inet_proto; {data_vips} }}\n\
         \tset data_reals {{ type ipv4_addr . inet_proto; {data_reals} }}\n\
         \tset icmp_vips {{ typeof {quote_src}; {icmp_vips} }}\n\
         \tset icmp_reals {{ typeof {quote_dst}; {icmp_reals} }}\n\
         {sets_any}\
         {sets6}\
         \tchain ingress {{\n\
         \t\ttype filter hook ingress devices = {{ {devs} }} priority {prio}; policy accept;\n\
         \t\tip frag-off & 0x3fff != 0 ip daddr @vip_addrs drop\n\
         \t\tip frag-off & 0x3fff != 0 ip saddr @real_addrs drop\n\
         \t\tip daddr . meta l4proto . th dport @vips drop\n\
         \t\tip saddr . meta l4proto . th sport @reals drop\n\
         \t\tip daddr . meta l4proto @data_vips th dport {{ {data_ports} }} drop\n\
         \t\tip saddr . meta l4proto @data_reals th sport {{ {data_ports} }} drop\n\
         \t\tip daddr @vip_addrs icmp type {{ {relayed} }} {quote_v4} {quote_src} @icmp_vips drop\n\
         \t\ticmp type {{ {relayed} }} {quote_v4} {quote_dst} @icmp_reals drop\n\
         {rules_any}\
         {rules6}\
         {rules_marks}\
         \t}}\n\
         }}\n",
        t = NFT_TABLE,
        vips = elements(&vips),
        reals = elements(&reals),
        vip_addrs = elements(&vip_addrs),
        real_addrs = elements(&real_addrs),
        data_vips = elements(&data_vips),
        data_reals = elements(&data_reals),
        data_ports = data_ports(),
        icmp_vips = elements(&icmp_vips),
        icmp_reals = elements(&icmp_reals),
        // What the datapath relays (ip_vs_in_icmp / ip_vs_out_icmp).
        relayed = "destination-unreachable, source-quench, time-exceeded",
        // The quote starts 8 bytes into the ICMP header: version 4, IHL 5, then its
        // protocol (byte 9), source (12), destination (16), source port (20), destination
        // port (22). Offsets in bits.
        quote_v4 = "@th,64,8 0x45",
        quote_src = "@th,160,32 . @th,136,8 . @th,224,16",
        quote_dst = "@th,192,32 . @th,136,8 . @th,240,16",
        prio = NFT_PRIORITY,
    )
}

/// `nft` by absolute path (a `PATH` of the caller's must not choose what runs as root): the
/// first of Debian's places that exists.
fn nft_path() -> &'static str {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("/usr/sbin/nft")
}

fn run_nft(script: &str, log_errors: bool) -> Result<(), NftError> {
    let limit = std::time::Duration::from_millis(crate::consts::NFT_TIMEOUT_MS);
    run_program(nft_path(), &["-f", "-"], script, log_errors, limit)
}

/// Run `program` with `script` on its standard input, within `limit` for all of it.
fn run_program(
    program: &str,
    args: &[&str],
    script: &str,
    log_errors: bool,
    limit: std::time::Duration,
) -> Result<(), NftError> {
    let mut child = Command::new(program)
        .args(args)
        .env_remove(crate::consts::API_TOKEN_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    // The script goes in from a thread of its own, so that an nft that stops reading (a
    // script past the pipe's buffer, a hung netlink socket) is under the same bound as
    // one that does not exit; a write that fails (nft gone) ends the thread.
    let writer = child.stdin.take().map(|mut stdin| {
        let script = script.to_owned();
        std::thread::spawn(move || stdin.write_all(script.as_bytes()))
    });
    // Bounded: a hung nft must not hold the control thread; it is killed (and reaped) and
    // the change fails.
    let t0 = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if t0.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                if let Some(w) = writer {
                    let _ = w.join();
                }
                return Err(NftError::TimedOut(limit.as_millis() as u64));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(2)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NftError::Spawn(e));
            }
        }
    }
    let written = match writer.map(|w| w.join()) {
        Some(Ok(Err(e))) => Err(e.to_string()),
        Some(Err(_)) => Err("the writer thread panicked".to_string()),
        _ => Ok(()),
    };
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if out.status.success() {
        if let Err(e) = written {
            return Err(NftError::Failed(format!(
                "cannot hand the script to nft: {e}"
            )));
        }
        Ok(())
    } else {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if log_errors {
            tracing::debug!(script, "nft script refused");
        }
        Err(NftError::Failed(msg))
    }
}

/// A runner for tests: records every script and refuses when told to.
#[cfg(test)]
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorder {
    /// Every script run, in order.
    pub scripts: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
    /// Refuse the next this many scripts.
    pub refuse: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Take the next this many scripts (recorded as the table now) and then time out, as
    /// an nft killed after it committed.
    pub commit_then_time_out: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[cfg(test)]
impl NftRunner for Recorder {
    fn run(&mut self, script: &str, _quiet: bool) -> Result<(), NftError> {
        use std::sync::atomic::Ordering::Relaxed;
        self.scripts.lock().push(script.to_string());
        if self
            .commit_then_time_out
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(NftError::TimedOut(1));
        }
        if self
            .refuse
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(NftError::Failed("Error: refused by the test".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rendered script of a configuration with every kind of service and real server,
    /// against the file beside this one. `WVS_BLESS=1 cargo test` rewrites the file after
    /// a deliberate change; `nft -c -f FILE` checks that nft takes it.
    #[test]
    fn the_rendered_script_is_the_golden_one() {
        let cfg = crate::config::parse(
            "[[service]]\nprotocol = \"tcp\"\naddress = \"198.18.100.1:80\"\n\
             [[service.real]]\naddress = \"198.19.0.11:8080\"\n\
             [[service.real]]\naddress = \"198.19.0.12\"\nforward = \"dr\"\n\
             [[service]]\nprotocol = \"udp\"\naddress = \"198.18.100.1:53\"\n\
             [[service.real]]\naddress = \"198.19.0.13:5353\"\n\
             [[service]]\nprotocol = \"tcp\"\naddress = \"198.18.100.2:21\"\nhelpers = [\"ftp\"]\n\
             [[service.real]]\naddress = \"198.19.0.14:21\"\n\
             [[service]]\nprotocol = \"tcp\"\naddress = \"[2001:db8:18:100::1]:80\"\n\
             [[service.real]]\naddress = \"[2001:db8:19::11]:8080\"\n\
             [[service.real]]\naddress = \"2001:db8:19::12\"\nforward = \"dr\"\n\
             [[service]]\nprotocol = \"udp\"\naddress = \"[2001:db8:18:100::1]:53\"\n\
             [[service.real]]\naddress = \"[2001:db8:19::13]:5353\"\n\
             [[service]]\nprotocol = \"fwm\"\naddress = \"1\"\n\
             [[service.real]]\naddress = \"198.19.0.15\"\n\
             [[service]]\nprotocol = \"fwm6\"\naddress = \"2\"\npersistent = 60\n\
             [[service.real]]\naddress = \"[2001:db8:19::15]:8080\"\n\
             [[mark_rule]]\nmark = 1\ndaddr = [\"198.18.1.0/28\", \"198.18.1.32\"]\nprotocols = [\"tcp\"]\ndport = [\"80\", \"443\"]\n\
             [[mark_rule]]\nmark = 2\ndaddr = [\"2001:db8:18:1::/64\"]\nsaddr = [\"2001:db8:18::/48\"]\nsport = [\"1024-65535\"]\n\
             [[mark_rule]]\nmark = 3\ndaddr = [\"198.18.2.0/24\"]\n",
        )
        .expect("config");
        // With the built-in helpers, so that the FTP service's data ports are claimed.
        let runtime = crate::plugin::Runtime::new(None).expect("runtime");
        let registry = crate::plugin::Registry::new(runtime, false).expect("registry");
        let snap = Snapshot::build_with_helpers(
            &cfg.services,
            &cfg.timeouts,
            &Snapshot::default(),
            &|n| crate::service::SchedChoice::new(n, None),
            &|n| registry.extension_in(&[], n),
        );
        let mut snap = snap;
        snap.set_marks(&cfg.marks);
        let script = render(&["s0".to_string(), "s1".to_string()], &snap);
        assert!(
            !script.contains("198.18.2.0"),
            "a mark without a service is not claimed: {script}"
        );
        assert!(
            script.contains("198.18.100.2 . tcp"),
            "the FTP data ports: {script}"
        );
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/io/nft.golden");
        if std::env::var_os("WVS_BLESS").is_some() {
            std::fs::write(&golden, &script).expect("write the golden file");
        }
        let want = std::fs::read_to_string(&golden).expect("src/io/nft.golden");
        assert_eq!(
            script, want,
            "the nft script changed: check it, then WVS_BLESS=1 cargo test to accept it"
        );
        let empty = render(&["s0".to_string()], &Snapshot::default());
        assert!(
            !empty.contains("elements"),
            "no empty element lists: {empty}"
        );
    }

    #[test]
    fn an_ipv4_service_s_ipv6_servers_are_claimed() {
        let cfg = crate::config::parse(
            "[[service]]\nprotocol = \"tcp\"\naddress = \"198.18.100.1:80\"\nladdrs = [\"2001:db8:19::1\"]\n\
             [[service.real]]\naddress = \"[2001:db8:19::11]:8080\"\nforward = \"fullnat\"\n",
        )
        .expect("config");
        let snap = Snapshot::build_native(&cfg.services, &Snapshot::default());
        let script = render(&["s0".to_string()], &snap);
        assert!(
            script.contains("set reals6 { type ipv6_addr . inet_proto . inet_service; elements = { 2001:db8:19::11 . tcp . 8080 } }")
                && script.contains("ip6 saddr . meta l4proto . th sport @reals6 drop"),
            "{script}"
        );
    }

    #[test]
    fn a_table_is_replaced_then_deleted_through_its_runner() {
        let rec = Recorder::default();
        let mut t =
            NftTable::install_with(&["s0".into()], &Snapshot::default(), Box::new(rec.clone()))
                .expect("install");
        t.remove().expect("remove");
        t.remove().expect("twice is once");
        let s = rec.scripts.lock().clone();
        assert_eq!(s.len(), 3, "{s:?}");
        assert!(s[0].starts_with("list table netdev wvs"));
        assert!(s[1].starts_with("table netdev wvs {}\ndelete table netdev wvs\n"));
        assert_eq!(s[2], "delete table netdev wvs\n");
    }

    #[test]
    fn only_nat_servers_replies_are_taken_from_the_kernel() {
        let cfg = crate::config::parse(
            "[[service]]\nprotocol = \"tcp\"\naddress = \"198.18.100.1:80\"\n\
             [[service.real]]\naddress = \"198.19.0.11:8080\"\n\
             [[service.real]]\naddress = \"198.19.0.12\"\nforward = \"dr\"\n\
             [[service.real]]\naddress = \"198.19.0.13\"\nforward = \"tunnel\"\n",
        )
        .expect("config");
        let snap = Snapshot::build_native(&cfg.services, &Snapshot::default());
        let script = render(&["s0".to_string()], &snap);
        assert!(script.contains("198.19.0.11 . tcp . 8080"), "{script}");
        assert!(!script.contains("198.19.0.12"), "{script}");
        assert!(!script.contains("198.19.0.13"), "{script}");
        assert!(script.contains("198.18.100.1 . tcp . 80"), "{script}");
    }

    /// An nft that reads nothing and never exits (here `sleep`, with a script past the
    /// pipe's buffer): the write is under the bound too; it is killed and reaped in time.
    #[test]
    fn a_program_that_reads_nothing_is_killed_within_the_bound() {
        let script = "x".repeat(1 << 20);
        let t0 = std::time::Instant::now();
        let r = run_program(
            "/bin/sleep",
            &["30"],
            &script,
            false,
            std::time::Duration::from_millis(300),
        );
        assert!(matches!(r, Err(NftError::TimedOut(300))), "{r:?}");
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(3),
            "{:?}",
            t0.elapsed()
        );
    }
}

//! Mark rules: wvs's own classifier for fwmark services (`ipvsadm -f MARK`), where an LVS
//! site has `nft ... meta mark set MARK` or iptables' `MARK` rules in front of IPVS.
//!
//! A rule is kept in three forms: as the file and the API write it ([`MarkRuleDef`]: lists
//! of prefixes, protocols and port ranges), as `wvs adm` writes it (the words of an nft
//! match, [`parse_words`] and [`words`]), and as the core reads it
//! ([`wvs_core::spec::MarkRule`]).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, conflict, invalid};
use crate::consts::MAX_MARK_MATCHES;
use crate::spec::{Family, MarkRule};

/// A mark rule as written: the packets it matches (every list that is given must match;
/// one item of a list is enough) get `mark`, and the fwmark service of that mark and their
/// family takes them. Rules are read in order; the last that matches a packet wins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRuleDef {
    /// The mark (`meta mark set MARK`), 1 to 4294967295.
    #[serde(deserialize_with = "super::whole::u32")]
    #[schema(minimum = 1, maximum = 4294967295_u32)]
    pub mark: u32,
    /// Destination addresses or prefixes (nft's `ip daddr` / `ip6 daddr`): required, as
    /// wvs takes every packet a rule matches from the kernel.
    #[schema(value_type = Vec<crate::schema::Prefix>, min_items = 1)]
    pub daddr: Vec<String>,
    /// Source addresses or prefixes (`ip saddr`), of the same family.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<crate::schema::Prefix>)]
    pub saddr: Vec<String>,
    /// Protocols (`meta l4proto`, or `tcp`/`udp` before a port): tcp, udp; none: both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<crate::schema::ProtocolOnly>)]
    pub protocols: Vec<String>,
    /// Destination ports or ranges (`th dport`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<crate::schema::PortRange>)]
    pub dport: Vec<String>,
    /// Source ports or ranges (`th sport`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<crate::schema::PortRange>)]
    pub sport: Vec<String>,
}

impl MarkRuleDef {
    /// The rule as the core reads it: malformed items are invalid (400); items that are
    /// well-formed but do not go together (families, a range backwards, no destination)
    /// conflict (409).
    pub fn validate(&self) -> Result<MarkRule, ConfigError> {
        let what = || format!("mark rule {}", words_of(self));
        if self.mark == 0 {
            return Err(invalid(format!("{}: mark 0 is no mark", what())));
        }
        if self.daddr.is_empty() {
            return Err(conflict(format!(
                "{}: name its destinations (daddr): wvs takes what a rule matches from the kernel",
                what()
            )));
        }
        let prefixes = |v: &[String]| -> Result<Vec<ipnet::IpNet>, ConfigError> {
            v.iter()
                .map(|p| {
                    parse_prefix(p).ok_or_else(|| {
                        invalid(format!("{}: {p:?} is no address or prefix", what()))
                    })
                })
                .collect()
        };
        let daddr = prefixes(&self.daddr)?;
        let saddr = prefixes(&self.saddr)?;
        let family = Family::of(daddr[0].addr());
        if let Some(n) = daddr
            .iter()
            .chain(&saddr)
            .find(|n| Family::of(n.addr()) != family)
        {
            return Err(conflict(format!(
                "{}: {n} is not of the family of {} (a rule is of one family, as nft's ip or ip6)",
                what(),
                daddr[0]
            )));
        }
        let mut protos = Vec::new();
        for p in &self.protocols {
            let proto = super::parse_protocol(p)?;
            if !protos.contains(&proto) {
                protos.push(proto);
            }
        }
        let ranges = |v: &[String]| -> Result<Vec<(u16, u16)>, ConfigError> {
            v.iter()
                .map(|r| {
                    let (lo, hi) = parse_range(r)
                        .ok_or_else(|| invalid(format!("{}: {r:?} is no port or range", what())))?;
                    if lo > hi {
                        return Err(conflict(format!("{}: range {r} goes backwards", what())));
                    }
                    Ok((lo, hi))
                })
                .collect()
        };
        Ok(MarkRule {
            mark: self.mark,
            family: Some(family),
            protos,
            saddr,
            daddr,
            sport: ranges(&self.sport)?,
            dport: ranges(&self.dport)?,
        })
    }
}

impl From<&MarkRule> for MarkRuleDef {
    fn from(r: &MarkRule) -> Self {
        let ranges = |v: &[(u16, u16)]| {
            v.iter()
                .map(|&(lo, hi)| {
                    if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo}-{hi}")
                    }
                })
                .collect()
        };
        Self {
            mark: r.mark,
            daddr: r.daddr.iter().map(prefix_text).collect(),
            saddr: r.saddr.iter().map(prefix_text).collect(),
            protocols: r.protos.iter().map(|p| p.name().to_string()).collect(),
            dport: ranges(&r.dport),
            sport: ranges(&r.sport),
        }
    }
}

/// An address alone for a host prefix, as nft lists one.
fn prefix_text(n: &ipnet::IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// Parse `addr` or `addr/len` (host bits cleared). Addresses as the API's other fields
/// take them: canonical IPv4, any IPv6 form.
fn parse_prefix(s: &str) -> Option<ipnet::IpNet> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
            (a, Some(l.parse::<u8>().ok()?))
        }
        Some(_) => return None,
        None => (s, None),
    };
    // Leading zeros in a length (`/08`) are what the pattern refuses too.
    if let Some(l) = s.split_once('/').map(|x| x.1)
        && l.len() > 1
        && l.starts_with('0')
    {
        return None;
    }
    let addr: IpAddr = super::parse_ip(a)?;
    let max = if addr.is_ipv6() { 128 } else { 32 };
    ipnet::IpNet::new(addr, len.unwrap_or(max))
        .ok()
        .map(|n| n.trunc())
}

/// Parse `port` or `lo-hi`, without leading zeros.
fn parse_range(s: &str) -> Option<(u16, u16)> {
    let port = |p: &str| -> Option<u16> {
        if p.is_empty()
            || (p.len() > 1 && p.starts_with('0'))
            || !p.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        p.parse().ok()
    };
    match s.split_once('-') {
        Some((lo, hi)) => Some((port(lo)?, port(hi)?)),
        None => port(s).map(|p| (p, p)),
    }
}

/// Check a configuration's rules together: within the matches the XDP program and the
/// nftables table read.
pub(crate) fn check_all(rules: &[MarkRule]) -> Result<(), ConfigError> {
    let n: usize = rules.iter().map(matches_of).sum();
    if n > MAX_MARK_MATCHES {
        return Err(conflict(format!(
            "the mark rules make {n} matches (each rule's destinations × sources × port \
             ranges); at most {MAX_MARK_MATCHES}: use prefixes and ranges"
        )));
    }
    Ok(())
}

/// How many single matches a rule is: one per combination of its lists' items.
pub(crate) fn matches_of(r: &MarkRule) -> usize {
    [r.daddr.len(), r.saddr.len(), r.dport.len(), r.sport.len()]
        .iter()
        .map(|&n| n.max(1))
        .product()
}

/// The rule as nft's match words, then `mark MARK`: `ip daddr 198.18.1.0/28 tcp dport
/// { 80, 443 } mark 1`, as `wvs adm` writes and reads it.
pub fn words(r: &MarkRule) -> String {
    words_of(&MarkRuleDef::from(r))
}

fn words_of(d: &MarkRuleDef) -> String {
    let set = |v: &[String]| match v {
        [one] => one.clone(),
        _ => format!("{{ {} }}", v.join(", ")),
    };
    let fam = if d.daddr.iter().chain(&d.saddr).any(|a| a.contains(':')) {
        "ip6"
    } else {
        "ip"
    };
    let mut out = Vec::new();
    if !d.saddr.is_empty() {
        out.push(format!("{fam} saddr {}", set(&d.saddr)));
    }
    if !d.daddr.is_empty() {
        out.push(format!("{fam} daddr {}", set(&d.daddr)));
    }
    // One protocol before its ports, as nft writes `tcp dport`; both (or none): `th`.
    let l4 = match d.protocols.as_slice() {
        [one] => one.clone(),
        [] => "th".to_string(),
        more => {
            out.push(format!("meta l4proto {}", set(more)));
            "th".to_string()
        }
    };
    if d.protocols.len() == 1 && d.dport.is_empty() && d.sport.is_empty() {
        out.push(format!("meta l4proto {l4}"));
    }
    if !d.sport.is_empty() {
        out.push(format!("{l4} sport {}", set(&d.sport)));
    }
    if !d.dport.is_empty() {
        out.push(format!("{l4} dport {}", set(&d.dport)));
    }
    out.push(format!("mark {}", d.mark));
    out.join(" ")
}

/// Read a rule from nft's match words and `mark MARK` (the words of [`words`]; the
/// separators `{`, `}` and `,` may stand alone or stick to an item).
pub fn parse_words(text: &str) -> Result<MarkRuleDef, String> {
    let spaced = text
        .replace('{', " { ")
        .replace('}', " } ")
        .replace(',', " , ");
    let toks: Vec<&str> = spaced.split_whitespace().collect();
    let mut d = MarkRuleDef {
        mark: 0,
        daddr: Vec::new(),
        saddr: Vec::new(),
        protocols: Vec::new(),
        dport: Vec::new(),
        sport: Vec::new(),
    };
    let mut mark = None;
    let mut i = 0;
    // One item, or a `{ a, b }` set, from `toks[*i]` on.
    let items = |i: &mut usize| -> Result<Vec<String>, String> {
        match toks.get(*i) {
            Some(&"{") => {
                let mut v = Vec::new();
                *i += 1;
                loop {
                    match toks.get(*i) {
                        Some(&"}") => {
                            *i += 1;
                            break;
                        }
                        Some(&",") => *i += 1,
                        Some(t) => {
                            v.push(t.to_string());
                            *i += 1;
                        }
                        None => return Err("a set without its closing }".into()),
                    }
                }
                if v.is_empty() {
                    return Err("an empty set".into());
                }
                Ok(v)
            }
            Some(t) if *t != "}" && *t != "," => {
                *i += 1;
                Ok(vec![t.to_string()])
            }
            _ => Err("a value missing".into()),
        }
    };
    while i < toks.len() {
        let (a, b) = (toks[i], toks.get(i + 1).copied().unwrap_or(""));
        i += 2;
        match (a, b) {
            ("ip" | "ip6", "daddr") => d.daddr.extend(items(&mut i)?),
            ("ip" | "ip6", "saddr") => d.saddr.extend(items(&mut i)?),
            ("meta", "l4proto") => d.protocols.extend(items(&mut i)?),
            ("tcp" | "udp" | "sctp" | "th", "dport" | "sport") => {
                if a != "th" && !d.protocols.iter().any(|p| p == a) {
                    d.protocols.push(a.to_string());
                }
                let v = items(&mut i)?;
                if b == "dport" {
                    d.dport.extend(v);
                } else {
                    d.sport.extend(v);
                }
            }
            ("mark" | "meta", _) if a == "mark" || b == "mark" => {
                // `mark N`, or nft's own `meta mark set N`.
                if a == "meta" {
                    if toks.get(i) != Some(&"set") {
                        return Err("write meta mark set MARK, or mark MARK".into());
                    }
                    i += 1;
                } else {
                    i -= 1;
                }
                let v = toks.get(i).ok_or("mark without its value")?;
                i += 1;
                mark = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|&m| m != 0)
                        .ok_or_else(|| format!("mark {v:?}: 1 to {}", u32::MAX))?,
                );
            }
            _ => {
                return Err(format!(
                    "{a:?} {b:?}: expected ip/ip6 daddr/saddr, meta l4proto, tcp/udp/th \
                     dport/sport, or mark"
                ));
            }
        }
    }
    d.mark = mark.ok_or("the rule has no mark (end it with: mark MARK)")?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    #[test]
    fn words_read_back_to_the_same_rule() {
        for text in [
            "ip daddr 198.18.1.10 tcp dport { 80, 443 } mark 1",
            "ip daddr 198.18.1.0/28 mark 7",
            "ip6 saddr 2001:db8:1::/48 ip6 daddr 2001:db8:18::1 udp dport 5000-5100 mark 4294967295",
            "ip daddr { 198.18.1.1, 198.18.2.0/24 } meta l4proto { tcp, udp } th dport 53 mark 2",
            "ip daddr 198.18.1.1 meta l4proto udp mark 3",
        ] {
            let d = parse_words(text).expect(text);
            let r = d.validate().expect(text);
            assert_eq!(words(&r), text);
        }
        // nft's own words, and sets written tight.
        let d =
            parse_words("ip daddr 198.18.1.10 tcp dport {80,443} meta mark set 9").expect("nft");
        assert_eq!(
            words(&d.validate().expect("valid")),
            "ip daddr 198.18.1.10 tcp dport { 80, 443 } mark 9"
        );
    }

    #[test]
    fn rules_match_as_nft_would() {
        let r = parse_words("ip daddr 198.18.1.0/28 tcp dport { 80, 443 } mark 1")
            .expect("words")
            .validate()
            .expect("valid");
        let c = ("198.18.0.2".parse().expect("ip"), 40000);
        let to = |a: &str, p| (a.parse().expect("ip"), p);
        assert!(r.matches(Protocol::Tcp, c, to("198.18.1.15", 443)));
        assert!(r.matches(Protocol::Tcp, c, to("198.18.1.0", 80)));
        assert!(!r.matches(Protocol::Tcp, c, to("198.18.1.16", 80)));
        assert!(!r.matches(Protocol::Udp, c, to("198.18.1.1", 80)));
        assert!(!r.matches(Protocol::Tcp, c, to("198.18.1.1", 8080)));
        let v6 = ("2001:db8::2".parse().expect("ip"), 40000);
        assert!(!r.matches(Protocol::Tcp, v6, to("2001:db8:18::1", 80)));
    }

    #[test]
    fn bad_rules_are_told() {
        let err = |t: &str| {
            parse_words(t).and_then(|d| d.validate().map(|_| ()).map_err(|e| e.to_string()))
        };
        assert!(err("ip daddr 198.18.1.10 tcp dport 80").is_err_and(|e| e.contains("no mark")));
        assert!(err("tcp dport 80 mark 1").is_err_and(|e| e.contains("destinations")));
        assert!(
            err("ip daddr 198.18.1.10 ip saddr 2001:db8::1 mark 1")
                .is_err_and(|e| e.contains("family"))
        );
        assert!(
            err("ip daddr 198.18.1.10 tcp dport 90-80 mark 1")
                .is_err_and(|e| e.contains("backwards"))
        );
        assert!(err("ip daddr 198.18.1.300 mark 1").is_err_and(|e| e.contains("no address")));
        assert!(err("ip daddr 198.18.1.1 mark 0").is_err());
        assert!(err("ip daddr { 198.18.1.1 mark 1").is_err());
        assert!(err("ip frag-off 1 mark 1").is_err_and(|e| e.contains("expected")));
        // Host bits are cleared, as nft does.
        let d = parse_words("ip daddr 198.18.1.5/28 mark 1").expect("words");
        assert_eq!(
            words(&d.validate().expect("valid")),
            "ip daddr 198.18.1.0/28 mark 1"
        );
    }

    #[test]
    fn too_many_matches_are_a_conflict() {
        let r = parse_words("ip daddr 198.18.1.1 tcp dport { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 } mark 1")
            .expect("words")
            .validate()
            .expect("valid");
        assert_eq!(matches_of(&r), 16);
        assert!(check_all(&vec![r.clone(); 16]).is_ok());
        assert!(check_all(&vec![r; 17]).is_err());
    }
}

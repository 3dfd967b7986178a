//! The value types of the OpenAPI document: what each string the API takes may be, as
//! JSON Schema says it (enums and patterns). They exist for the document only; the API
//! parses the same strings with `crate::config`, which accepts exactly what these describe
//! (addresses only as written canonically), so a request the document allows is never
//! refused as malformed, and one it forbids is never accepted.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// A decimal IPv4 octet, without leading zeros.
const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
/// A port 1..=65535, without leading zeros.
const PORT: &str =
    "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";

fn ipv4() -> String {
    format!("{OCTET}(\\.{OCTET}){{3}}")
}

/// An IPv6 address in any of the forms RFC 4291 allows (RFC 3986's `IPv6address`: groups
/// of one to four hex digits in either case, one `::`, an IPv4 address in the last 32
/// bits), which is what the parser takes (as ipvsadm's `inet_pton` does); the API writes it
/// back canonically (RFC 5952). No zone index.
fn ipv6() -> String {
    let h = "[0-9A-Fa-f]{1,4}";
    let ls32 = format!("({h}:{h}|{})", ipv4());
    let head = |n: usize| format!("(({h}:){{0,{n}}}{h})?");
    [
        format!("({h}:){{6}}{ls32}"),
        format!("::({h}:){{5}}{ls32}"),
        format!("({h})?::({h}:){{4}}{ls32}"),
        format!("{}::({h}:){{3}}{ls32}", head(1)),
        format!("{}::({h}:){{2}}{ls32}", head(2)),
        format!("{}::{h}:{ls32}", head(3)),
        format!("{}::{ls32}", head(4)),
        format!("{}::{h}", head(5)),
        format!("{}::", head(6)),
    ]
    .iter()
    .map(|a| format!("({a})"))
    .collect::<Vec<_>>()
    .join("|")
}

/// A multicast address: IPv4's 224.0.0.0/4, or an IPv6 address whose first group is
/// `ffXX` (ff00::/8), in the forms [`ipv6`] takes with that first group.
pub(crate) fn multicast_pattern() -> String {
    let h = "[0-9A-Fa-f]{1,4}";
    let first = "[fF]{2}[0-9A-Fa-f]{2}";
    let ls32 = format!("({h}:{h}|{})", ipv4());
    let head = |n: usize| format!("{first}(:{h}){{0,{n}}}");
    let v6 = [
        format!("{first}:({h}:){{5}}{ls32}"),
        format!("{}::({h}:){{4}}{ls32}", head(0)),
        format!("{}::({h}:){{3}}{ls32}", head(1)),
        format!("{}::({h}:){{2}}{ls32}", head(2)),
        format!("{}::{h}:{ls32}", head(3)),
        format!("{}::{ls32}", head(4)),
        format!("{}::{h}", head(5)),
        format!("{}::", head(6)),
    ]
    .iter()
    .map(|a| format!("({a})"))
    .collect::<Vec<_>>()
    .join("|");
    format!("^((22[4-9]|23[0-9])(\\.{OCTET}){{3}}|{v6})$")
}

/// An address and port: `a.b.c.d:port` or `[IPv6]:port`.
fn addr_port(port: &str) -> String {
    format!("({}|\\[({})\\]):{port}", ipv4(), ipv6())
}

/// Pattern of an IP address of either family.
pub(crate) fn ip_pattern() -> String {
    format!("^({}|{})$", ipv4(), ipv6())
}

/// Pattern of a virtual service's address: `a.b.c.d:port` or `[IPv6]:port`.
pub(crate) fn vip_port_pattern() -> String {
    format!("^({}|{MARK})$", addr_port(&format!("(0|{PORT})")))
}

/// Pattern of a real server's address: an IP address of either family, or with a port as
/// a service's (0: the virtual port).
pub(crate) fn real_addr_pattern() -> String {
    format!(
        "^({}|{}|{})$",
        ipv4(),
        ipv6(),
        addr_port(&format!("(0|{PORT})"))
    )
}

/// Pattern of a service filter: `tcp/a.b.c.d:port` or `tcp/[IPv6]:port`, or `fwm/MARK`.
pub(crate) fn service_filter_pattern() -> String {
    format!(
        "^((tcp|udp|sctp)/{}|fwm6?/{MARK})$",
        addr_port(&format!("(0|{PORT})"))
    )
}

/// A firewall mark 1..=4294967295, without leading zeros.
const MARK: &str = "([1-9][0-9]{0,8}|[1-3][0-9]{9}|4[01][0-9]{8}|42[0-8][0-9]{7}|429[0-3][0-9]{6}|\
     4294[0-8][0-9]{5}|42949[0-5][0-9]{4}|429496[0-6][0-9]{3}|4294967[01][0-9]{2}|\
     42949672[0-8][0-9]|429496729[0-5])";

/// Pattern of a mark rule's prefix: an address of either family, with a prefix length or
/// without.
pub(crate) fn prefix_pattern() -> String {
    format!(
        "^(({})(/(3[0-2]|[12]?[0-9]))?|({})(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$",
        ipv4(),
        ipv6()
    )
}

/// Pattern of a mark rule's port or port range.
pub(crate) fn port_range_pattern() -> String {
    format!("^(0|{PORT})(-(0|{PORT}))?$")
}

/// Pattern of a scheduler or plugin name.
pub(crate) const NAME_PATTERN: &str = "^[A-Za-z0-9_-]{1,32}$";

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

macro_rules! schema_type {
    ($(#[$doc:meta])* $name:ident, $build:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;
        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                let b: ObjectBuilder = $build;
                b.into()
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}

schema_type!(
    /// `tcp`, `udp`, `fwm` or `fwm6`.
    ProtocolName,
    string(
        "The protocol: tcp, udp or sctp; fwm (fwm6) for a fwmark service of IPv4 (IPv6), \
         whose address is its mark."
    )
    .enum_values(Some(["tcp", "udp", "sctp", "fwm", "fwm6"]))
);

schema_type!(
    /// `tcp`, `udp` or `sctp`.
    ProtocolOnly,
    string("A protocol: tcp, udp or sctp.").enum_values(Some(["tcp", "udp", "sctp"]))
);

schema_type!(
    /// A mark rule's prefix.
    Prefix,
    string(
        "An address or a prefix of either family: a.b.c.d[/len] or IPv6[/len] (host bits are \
         cleared, as nft keeps them)."
    )
    .pattern(Some(prefix_pattern()))
    .examples(["198.18.1.0/28", "2001:db8:18:1::/64", "198.18.1.10"])
);

schema_type!(
    /// A mark rule's port or range.
    PortRange,
    string("A port or an inclusive range of ports: 80, 8000-8100.")
        .pattern(Some(port_range_pattern()))
        .examples(["443", "8000-8100"])
);

schema_type!(
    /// A virtual service's address.
    VipPort,
    string(
        "A virtual service's address and port: a.b.c.d:port, or [IPv6]:port as ipvsadm \
         writes it (any form RFC 4291 allows; listed canonically, RFC 5952). Port 0: every \
         port of the address (a persistent service only, as IPVS). A fwmark service's \
         (protocol fwm or fwm6): its mark, 1 to 4294967295."
    )
    .pattern(Some(vip_port_pattern()))
    .examples(["198.18.100.1:80", "[2001:db8:18:100::1]:80"])
);

schema_type!(
    /// A real server's address.
    RealAddr,
    string(
        "A real server's address and port, as a.b.c.d:port or [IPv6]:port, or the address \
         alone (or port 0) for the virtual port. A server of a service of the other family \
         is taken for tunnels and full NAT.",
    )
    .pattern(Some(real_addr_pattern()))
    .examples(["198.19.0.11:80", "[2001:db8:19::11]:80"])
);

schema_type!(
    /// A scheduler's name.
    SchedName,
    string(
        "A scheduler: one of IPVS's (rr wrr lc wlc sed nq fo ovf twos sh dh mh lblc lblcr) \
         or an uploaded plugin's name. A name that is neither is answered 409.",
    )
    .pattern(Some(NAME_PATTERN))
    .examples(["wlc"])
);

schema_type!(
    /// A plugin's name.
    PluginName,
    string("A plugin's name: 1 to 32 letters, digits, '-' or '_'.")
        .pattern(Some(NAME_PATTERN))
        .examples(["lat2"])
);

schema_type!(
    /// A scheduler flag as ipvsadm's `-b` spells it.
    SchedFlag,
    string("A scheduler flag, as ipvsadm -b spells it.").enum_values(Some([
        "sh-fallback",
        "sh-port",
        "mh-fallback",
        "mh-port",
        "flag-1",
        "flag-2",
        "flag-3",
    ]))
);

schema_type!(
    /// A persistence netmask.
    Netmask,
    string(
        "A persistence granularity (ipvsadm -M): an IPv4 service's dotted netmask of 1 to 32 \
         bits, an IPv6 service's prefix length from 1 to 128."
    )
    .enum_values(Some(
        (1..=32u32)
            .map(|bits| std::net::Ipv4Addr::from(u32::MAX << (32 - bits)).to_string())
            .chain((1..=128u32).map(|bits| bits.to_string())),
    ))
);

schema_type!(
    /// A forwarding method.
    Forward,
    string(
        "The forwarding method: nat (masquerading, ipvsadm -m; masq is the same), dr (direct \
         routing, ipvsadm -g; route is the same), tunnel (ipvsadm -i; tun is the same), \
         fullnat (full NAT, DPVS's ipvsadm -b; full-nat is the same) or local (the balancer's \
         own stack serves; a real server whose address is the balancer's own is local \
         whatever its method)."
    )
    .enum_values(Some([
        "nat", "masq", "dr", "route", "tunnel", "tun", "fullnat", "full-nat", "local",
    ]))
);

schema_type!(
    /// An IP address.
    IpAddress,
    string("An IP address: a.b.c.d, or IPv6 (any form RFC 4291 allows).")
        .pattern(Some(ip_pattern()))
        .examples(["198.19.0.100", "2001:db8:19::100"])
);

schema_type!(
    /// A sysctl's integer (the kernel's `int`, not negative).
    SysctlInt,
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .maximum(Some(i32::MAX))
);

schema_type!(
    /// A multicast group.
    MulticastAddress,
    string("A multicast address: IPv4 224.0.0.0/4 or IPv6 ff00::/8 (any form RFC 4291 allows).")
        .pattern(Some(multicast_pattern()))
        .examples(["224.0.0.81", "ff02::8848"])
);

schema_type!(
    /// `sync_ports`: a power of two from 1 to 64.
    SyncPorts,
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .description(Some("Sync threads (UDP ports): a power of two from 1 to 64."))
        .enum_values(Some([1, 2, 4, 8, 16, 32, 64]))
        .default(Some(serde_json::json!(1)))
);

schema_type!(
    /// A tunnel type.
    TunType,
    string("The tunnel type (ipvsadm --tun-type): ipip (the default), gue or gre.")
        .enum_values(Some(["ipip", "gue", "gre"]))
);

schema_type!(
    /// A tunnel checksum option.
    TunCsum,
    string(
        "The tunnel's checksum (ipvsadm --tun-nocsum, --tun-csum, --tun-remcsum): nocsum (the \
         default), csum (gue and gre) or remcsum (gue)."
    )
    .enum_values(Some(["nocsum", "csum", "remcsum"]))
);

schema_type!(
    /// A service filter.
    ServiceFilter,
    string("A service, as PROTO/VIP:PORT (an IPv6 VIP in brackets).")
        .pattern(Some(service_filter_pattern()))
        .examples(["tcp/198.18.100.1:80", "tcp/[2001:db8:18:100::1]:80"])
);

schema_type!(
    /// A connection state name.
    ConnState,
    string("A connection state, as ipvsadm -L -c names it.")
        .enum_values(Some(state_names().collect::<Vec<_>>()))
);

schema_type!(
    /// Where a page of the connection listing starts.
    ConnCursor,
    string("Where a page of the connection listing starts: a listing's `next`.")
        .pattern(Some(r"^[ct]\.[0-9]{1,9}\.[0-9]{1,9}$"))
        .examples(["c.3.1041"])
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The fwmark services' and mark rules' patterns against their parsers: marks,
    /// prefixes and port ranges, with near misses.
    #[test]
    fn mark_patterns_and_parsers_agree() {
        let vip = matcher(&vip_port_pattern());
        let filter = matcher(&service_filter_pattern());
        for m in [
            "1",
            "7",
            "0",
            "01",
            "4294967295",
            "4294967296",
            "9999999999",
            "42949672950",
            "3999999999",
            "4294967289",
            "4294967290",
            "4199999999",
            "-1",
            "+1",
            " 1",
            "1.0",
        ] {
            let parsed = crate::config::parse_service_id("fwm", m).is_ok();
            assert_eq!(vip(m), parsed, "mark {m:?}");
            assert_eq!(filter(&format!("fwm/{m}")), parsed, "filter {m:?}");
            assert_eq!(filter(&format!("fwm6/{m}")), parsed, "filter6 {m:?}");
        }
        let rule = |daddr: &str, dport: &str| crate::config::mark::MarkRuleDef {
            mark: 1,
            daddr: vec![daddr.into()],
            saddr: Vec::new(),
            protocols: Vec::new(),
            dport: if dport.is_empty() {
                Vec::new()
            } else {
                vec![dport.into()]
            },
            sport: Vec::new(),
        };
        let prefix = matcher(&prefix_pattern());
        for p in [
            "198.18.1.0/28",
            "198.18.1.5/28",
            "198.18.1.1",
            "198.18.1.1/32",
            "198.18.1.1/33",
            "198.18.1.1/",
            "198.18.1.1/08",
            "198.18.1.1/0",
            "198.18.1.01/24",
            "2001:db8::/32",
            "2001:db8::1",
            "2001:db8::/128",
            "2001:db8::/129",
            "2001:db8::/0",
            "::/0",
            "2001:db8::/1000",
            "198.18.1.1/a",
            "/24",
            "198.18.1.1/24/1",
        ] {
            let parsed = rule(p, "").validate().is_ok();
            assert_eq!(prefix(p), parsed, "prefix {p:?}");
        }
        let range = matcher(&port_range_pattern());
        for r in [
            "80", "0", "65535", "65536", "080", "80-90", "90-80", "0-65535", "1-", "-1", "80-",
            "80-65536", "8 0", "80--90",
        ] {
            // A range backwards is well-formed: a conflict (409), not malformed.
            let parsed = match rule("198.18.1.1", r).validate() {
                Ok(_) => true,
                Err(e) => matches!(e, crate::config::ConfigError::Conflict(_)),
            };
            assert_eq!(range(r), parsed, "range {r:?}");
        }
    }

    /// The patterns, checked against the parsers they describe: whatever the pattern takes,
    /// the parser takes, and the other way round, on a sample of near misses.
    #[test]
    fn patterns_and_parsers_agree() {
        let vip = matcher(&vip_port_pattern());
        let real = matcher(&real_addr_pattern());
        let filter = matcher(&service_filter_pattern());
        let ip = matcher(&ip_pattern());
        let mut samples: Vec<String> = [
            "198.18.100.1:80",
            "0.0.0.0:1",
            "255.255.255.255:65535",
            "198.18.100.1:0",
            "198.18.100.1:65536",
            "198.18.100.1:080",
            "198.18.100.01:80",
            "198.18.100.256:80",
            "198.18.100:80",
            "198.18.100.1",
            "198.18.100.1:",
            " 198.18.100.1:80",
            "198.18.100.1:80 ",
            "198.18.100.1:+80",
            "[::1]:80",
            "[::]:80",
            "[2001:db8:18:100::1]:80",
            "[2001:DB8:18:100:0:0:0:1]:443",
            "[2001:0db8:0018:0100:0000:0000:0000:0001]:80",
            "[::ffff:198.18.0.1]:80",
            "[::198.18.0.1]:80",
            "[1:2:3:4:5:6:198.18.0.1]:80",
            "[1:2:3:4:5:198.18.0.1]:80",
            "[1:2:3:4:5:6:7:198.18.0.1]:80",
            "[1::2:3:4:5:198.18.0.1]:80",
            "[1:2:3:4:5::198.18.0.1]:80",
            "[1:2:3:4:5:6::198.18.0.1]:80",
            "[::198.18.0.01]:80",
            "[1:2:3:4:5:6:7:8]:80",
            "[1:2:3:4:5:6:7:8:9]:80",
            "[1:2:3:4:5:6:7::]:80",
            "[::2:3:4:5:6:7:8]:80",
            "[1:2:3:4::5:6:7:8]:80",
            "[1::2::3]:80",
            "[:::1]:80",
            "[1:::2]:80",
            "[12345::1]:80",
            "[1:2:3:4:5:6:7]:80",
            "[g::1]:80",
            "[::1%1]:80",
            "[::1]:080",
            "[::1]:0",
            "[::1]",
            "::1:80",
            "[2001:db8::1]:65535",
            "[2001:db8::1]:65536",
            "2001:db8::1",
            "2001:DB8::0:1",
            "::",
            "1.2.3.4:5:6:7:8:9:10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every number of groups on either side of `::`, with and without an IPv4 tail.
        for head in 0..=8 {
            for tail in 0..=8 {
                for v4 in [false, true] {
                    let groups = |n: usize| (1..=n).map(|i| format!("{i:x}")).collect::<Vec<_>>();
                    let mut t = groups(tail).join(":");
                    if v4 {
                        t = if t.is_empty() {
                            "1.2.3.4".into()
                        } else {
                            t + ":1.2.3.4"
                        };
                    }
                    samples.push(format!("[{}::{t}]:80", groups(head).join(":")));
                    samples.push(format!("[{}:{t}]:80", groups(head).join(":")));
                }
            }
        }
        for s in &samples {
            let s = s.as_str();
            let parsed = crate::config::parse_service_id("tcp", s).is_ok();
            assert_eq!(vip(s), parsed, "vip {s:?}");
            assert_eq!(filter(&format!("udp/{s}")), parsed, "filter {s:?}");
            let parsed = crate::config::parse_real_addr(s).is_ok();
            assert_eq!(real(s), parsed, "real {s:?}");
            let bare = s
                .trim_start_matches('[')
                .trim_end_matches(":80")
                .trim_end_matches(']');
            let parsed = crate::config::parse_laddr(bare).is_ok()
                || bare.parse::<std::net::IpAddr>().is_ok_and(|a| {
                    a.is_unspecified()
                        || a.is_loopback()
                        || a.is_multicast()
                        || a == std::net::Ipv4Addr::BROADCAST
                });
            assert_eq!(ip(bare), parsed, "ip {bare:?}");
        }
        // Multicast groups (the sync daemon's): the same samples with an ff02 first group
        // and an IPv4 one, and near misses.
        let mcast = matcher(&multicast_pattern());
        let mut groups: Vec<String> = samples
            .iter()
            .map(|s| {
                s.trim_start_matches('[')
                    .trim_end_matches(":80")
                    .trim_end_matches(']')
                    .to_string()
            })
            .collect();
        groups.extend(samples.iter().filter_map(|s| {
            let b = s
                .trim_start_matches('[')
                .trim_end_matches(":80")
                .trim_end_matches(']');
            b.strip_prefix("1:").map(|r| format!("ff02:{r}"))
        }));
        groups.extend(
            [
                "224.0.0.81",
                "239.255.255.255",
                "223.255.255.255",
                "240.0.0.1",
                "224.0.0",
                "ff02::8848",
                "FF05::1:3",
                "ff02:0:0:0:0:0:0:1",
                "ff0::1",
                "f02::1",
                "ff::1",
                "fe80::1",
                "::ffff:224.0.0.1",
                "ff02::8848%1",
                "ff020::1",
                "ff02::224.0.0.1",
            ]
            .map(String::from),
        );
        for g in &groups {
            let parsed = g
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_multicast());
            assert_eq!(mcast(g), parsed, "multicast {g:?}");
        }
    }

    fn matcher(pattern: &str) -> impl Fn(&str) -> bool + use<> {
        let re = regex::Regex::new(pattern).expect("a valid pattern");
        move |s: &str| re.is_match(s)
    }
}

schema_type!(
    /// An application helper's name.
    HelperName,
    string(
        "An application helper: ftp, proxy-v2 or an uploaded helper plugin's name (1 to 32 \
         letters, digits, '-' or '_'). A name that is none of them, or `none`, is answered 409.",
    )
    .pattern(Some(NAME_PATTERN))
    .examples(["ftp"])
);

schema_type!(
    /// A persistence engine's name.
    PeName,
    string(
        "A persistence engine: sip or an uploaded persistence engine plugin's name (1 to 32 \
         letters, digits, '-' or '_'). A name that is neither is answered 409.",
    )
    .pattern(Some(NAME_PATTERN))
    .examples(["sip"])
);

schema_type!(
    /// A health check's type.
    CheckType,
    string("The check: tcp, http, https, udp, dns, smtp, misc, or none (no check).")
        .enum_values(Some([
            "tcp", "http", "https", "udp", "dns", "smtp", "ping", "file", "misc", "none",
        ]))
);

/// Pattern of an HTTP check's path: `/` and printable ASCII without spaces.
pub(crate) const CHECK_PATH_PATTERN: &str = "^/[!-~]*$";
/// Pattern of an HTTP check's host: printable ASCII without spaces.
pub(crate) const CHECK_HOST_PATTERN: &str = "^[!-~]+$";
/// Pattern of an HTTP status code or range.
pub(crate) const CHECK_STATUS_PATTERN: &str = "^[1-5][0-9]{2}(-[1-5][0-9]{2})?$";
/// Pattern of an MD5 digest.
pub(crate) const CHECK_DIGEST_PATTERN: &str = "^[0-9a-fA-F]{32}$";
/// Pattern of a DNS check's name: `.` or labels of letters, digits, '-' and '_'.
pub(crate) const CHECK_DNS_NAME_PATTERN: &str =
    "^(\\.|([A-Za-z0-9_-]{1,63}\\.)*[A-Za-z0-9_-]{1,63}\\.?)$";
/// Pattern of a misc check's program: something besides spaces.
pub(crate) const CHECK_PROGRAM_PATTERN: &str = "\\S";

schema_type!(
    /// An HTTP check's path.
    CheckPath,
    string("The path requested: '/' and printable ASCII, no spaces.")
        .pattern(Some(CHECK_PATH_PATTERN))
        .examples(["/health"])
);

schema_type!(
    /// An HTTP check's host.
    CheckHost,
    string("The Host header and TLS server name: printable ASCII, no spaces.")
        .pattern(Some(CHECK_HOST_PATTERN))
);

schema_type!(
    /// An HTTP status code or range.
    CheckStatus,
    string("A status code (100-599) or a range such as 200-299 (low to high; 409 otherwise).")
        .pattern(Some(CHECK_STATUS_PATTERN))
        .examples(["200-299"])
);

schema_type!(
    /// An MD5 digest.
    CheckDigest,
    string("The MD5 digest of the body, 32 hexadecimal digits (keepalived's genhash).")
        .pattern(Some(CHECK_DIGEST_PATTERN))
);

schema_type!(
    /// A DNS check's name.
    CheckDnsName,
    string("The name queried: '.', or labels of letters, digits, '-' and '_'.")
        .pattern(Some(CHECK_DNS_NAME_PATTERN))
        .max_length(Some(253))
);

schema_type!(
    /// A DNS check's query type.
    CheckQtype,
    string("The query type.").enum_values(Some(["A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA"]))
);

schema_type!(
    /// A misc check's program.
    CheckProgram,
    string("The program and its arguments, split at spaces, run without a shell.")
        .pattern(Some(CHECK_PROGRAM_PATTERN))
);

schema_type!(
    /// What happens to a failed real server's UDP flows.
    UdpOnFailure,
    string("keep (IPVS: they stay on the failed server) or move (scheduled anew).")
        .enum_values(Some(["keep", "move"]))
);

schema_type!(
    /// A TCP service's synproxy.
    SynproxyMode,
    string("on (every new connection answered with a SYN cookie), off, or auto (while \
            the connection table is short, the defense's trigger).")
        .enum_values(Some(["on", "off", "auto"]))
);

/// The names a connection's state can have in listings, as `ipvsadm -L -c` prints them:
/// the TCP states, and `UDP`.
pub(crate) fn state_names() -> impl Iterator<Item = &'static str> {
    crate::conn::TcpState::ALL
        .iter()
        .map(|s| s.name())
        .chain(["UDP", "ASSURED"])
}

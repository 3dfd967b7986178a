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

/// Pattern of a virtual service's address: `a.b.c.d:port`.
pub(crate) fn vip_port_pattern() -> String {
    format!("^{}:{PORT}$", ipv4())
}

/// Pattern of a real server's address: `a.b.c.d`, or with a port (0: the virtual port).
pub(crate) fn real_addr_pattern() -> String {
    format!("^{}(:(0|{PORT}))?$", ipv4())
}

/// Pattern of a service filter: `tcp/a.b.c.d:port`.
pub(crate) fn service_filter_pattern() -> String {
    format!("^(tcp|udp)/{}:{PORT}$", ipv4())
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
    /// `tcp` or `udp`.
    ProtocolName,
    string("The protocol: tcp or udp.").enum_values(Some(["tcp", "udp"]))
);

schema_type!(
    /// A virtual service's address.
    VipPort,
    string("A virtual service's IPv4 address and port (1-65535), as a.b.c.d:port.")
        .pattern(Some(vip_port_pattern()))
        .examples(["198.18.100.1:80"])
);

schema_type!(
    /// A real server's address.
    RealAddr,
    string(
        "A real server's IPv4 address, as a.b.c.d:port, or a.b.c.d (or port 0) for the \
         virtual port.",
    )
    .pattern(Some(real_addr_pattern()))
    .examples(["198.19.0.11:80"])
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
    string("A persistence netmask (ipvsadm -M): a dotted IPv4 netmask of 1 to 32 bits.")
        .enum_values(Some(
            (1..=32u32).map(|bits| std::net::Ipv4Addr::from(u32::MAX << (32 - bits)).to_string()),
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
    /// An IPv4 address.
    Ipv4,
    string("An IPv4 address, a.b.c.d.")
        .pattern(Some(format!("^{}$", ipv4())))
        .examples(["198.18.1.1"])
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
    string("A service, as PROTO/VIP:PORT.")
        .pattern(Some(service_filter_pattern()))
        .examples(["tcp/198.18.100.1:80"])
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

    /// The patterns, checked against the parsers they describe: whatever the pattern takes,
    /// the parser takes, and the other way round, on a sample of near misses.
    #[test]
    fn patterns_and_parsers_agree() {
        let vip = matcher(&vip_port_pattern());
        let real = matcher(&real_addr_pattern());
        for s in [
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
            "[::1]:80",
            " 198.18.100.1:80",
            "198.18.100.1:80 ",
            "198.18.100.1:+80",
        ] {
            let parsed = crate::config::parse_service_id("tcp", s)
                .is_ok_and(|id| id.addr.is_ipv4() && id.port != 0);
            assert_eq!(vip(s), parsed, "vip {s:?}");
            let parsed = crate::config::parse_real_addr(s).is_ok_and(|a| a.is_ipv4());
            assert_eq!(real(s), parsed, "real {s:?}");
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
    /// A health check's type.
    CheckType,
    string("The check: tcp, http, https, udp, dns, misc, or none (no check).")
        .enum_values(Some(["tcp", "http", "https", "udp", "dns", "misc", "none"]))
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

/// The names a connection's state can have in listings, as `ipvsadm -L -c` prints them:
/// the TCP states, and `UDP`.
pub(crate) fn state_names() -> impl Iterator<Item = &'static str> {
    crate::conn::TcpState::ALL
        .iter()
        .map(|s| s.name())
        .chain(["UDP", "ASSURED"])
}

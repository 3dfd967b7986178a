//! What the fuzz targets share: the datapath harness and the seed frames.

use std::path::Path;

use wvs::datapath::{Headers, RxMeta};
use wvs::model::{Forward, Protocol, TunCsum, TunKind};
use wvs::spec::Service;
use wvs::wire::checksum::CsumMode;
use wvs_core::testkit::{self, VIP6, real, real_by, rs6, service, service6, tunnel};
pub use wvs_core::testkit::{CLIENT_IF_MAC, CLIENT_MAC, SERVER_IF_MAC, rs_mac};

/// NAT (TCP 80, rr; UDP 9000), full NAT (TCP 81), DR (TCP 82), persistence (TCP 83), FTP
/// with the built-in `ftp` helper (TCP 21: payload rewriting, sequence and SACK
/// adjustment, expected connections), tunnels (TCP 84: IPIP and GUE with checksums) and a
/// full-NAT service with `proxy-v2` (TCP 85): every kind of state. On the IPv6 VIP:
/// NAT66 (TCP 80, UDP 9000), full NAT (TCP 81) and DR (TCP 82).
fn services() -> Vec<Service> {
    let laddr = |a: [u8; 4]| vec![std::net::Ipv4Addr::from(a).into()];
    let at6 = |last: u8, port: u16| format!("[{}]:{port}", std::net::Ipv6Addr::from(rs6(last)));
    vec![
        service6(
            Protocol::Tcp,
            80,
            "rr",
            vec![real(&at6(11, 8080)), real(&at6(12, 8080))],
        ),
        service6(Protocol::Udp, 9000, "rr", vec![real(&at6(11, 9000))]),
        Service {
            laddrs: vec![std::net::Ipv6Addr::from(rs6(200)).into()],
            ..service6(
                Protocol::Tcp,
                81,
                "wlc",
                vec![real_by(&at6(13, 80), Forward::FullNat)],
            )
        },
        service6(
            Protocol::Tcp,
            82,
            "sh",
            vec![real_by(&at6(14, 82), Forward::Route)],
        ),
        service(Protocol::Tcp, 21, "rr", vec![real("198.19.0.16:21")]),
        service(
            Protocol::Tcp,
            84,
            "rr",
            vec![
                real_by("198.19.0.17:84", testkit::IPIP),
                real_by("198.19.0.18:84", tunnel(TunKind::Gue, 6080, TunCsum::Csum)),
            ],
        ),
        Service {
            helpers: Some(vec!["proxy-v2".into()]),
            laddrs: laddr([198, 19, 0, 201]),
            ..service(
                Protocol::Tcp,
                85,
                "rr",
                vec![real_by("198.19.0.19:85", Forward::FullNat)],
            )
        },
        service(
            Protocol::Tcp,
            80,
            "rr",
            vec![real("198.19.0.11:8080"), real("198.19.0.12:8080")],
        ),
        service(Protocol::Udp, 9000, "rr", vec![real("198.19.0.11:9000")]),
        Service {
            laddrs: laddr([198, 19, 0, 200]),
            ..service(
                Protocol::Tcp,
                81,
                "wlc",
                vec![real_by("198.19.0.13:80", Forward::FullNat)],
            )
        },
        service(
            Protocol::Tcp,
            82,
            "sh",
            vec![real_by("198.19.0.14:82", Forward::Route)],
        ),
        Service {
            persistent: Some(60),
            ..service(Protocol::Tcp, 83, "lc", vec![real("198.19.0.15:83")])
        },
        // The synproxy: SYNs answered with cookies, ACKs checked, halves joined.
        Service {
            synproxy: Some(wvs_core::spec::SynproxyMode::On),
            ..service(Protocol::Tcp, 86, "rr", vec![real("198.19.0.20:86")])
        },
    ]
}

/// A datapath over the services above, every real server reachable on interface 1
/// (`wvs_core::testkit`, the unit tests' topology).
pub struct Harness(testkit::Harness);

impl std::ops::Deref for Harness {
    type Target = testkit::Harness;
    fn deref(&self) -> &testkit::Harness {
        &self.0
    }
}

impl Harness {
    /// A fresh one, with a small table (so that fuzzing meets a full one too), the
    /// built-in helpers run as the daemon runs them.
    pub fn new() -> Self {
        Self(testkit::Harness::new(
            testkit::snapshot(&services()),
            512,
            0,
        ))
    }

    /// Run one frame: `meta`'s bit 0 picks the interface, bit 1 a partial checksum (or,
    /// without it, the XDP backend's rule: a checksum field holding the pseudo-header
    /// sum is taken as partial), bit 2 a GSO size; the buffer has room for answers and
    /// segments.
    pub fn run(&self, now: u64, meta: u8, frame: &[u8]) {
        let mut buf = vec![0u8; frame.len().max(2048) + 256];
        buf[..frame.len()].copy_from_slice(frame);
        // Read once, as the I/O layer does: for the checksum rule and the datapath.
        let headers = Headers::parse(frame);
        let xdp_partial = wvs::io::xdp::partial_csum(&headers, frame).is_some();
        let m = RxMeta {
            iface: meta & 1,
            csum: if meta & 2 != 0 || xdp_partial {
                CsumMode::Partial
            } else {
                CsumMode::Complete
            },
            gso_size: if meta & 4 != 0 { 1400 } else { 0 },
        };
        let _ = self.dp.process_in_buffer(
            &self.snap,
            now,
            m,
            &headers,
            &mut buf,
            &mut wvs::xmit::gso::NoSink,
        );
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// Frames of the kinds the unit tests build: clients' SYNs, ACKs, data, FINs and RSTs to
/// each service, UDP questions, the real servers' answers, and ICMP errors quoting them.
pub fn seed_frames() -> Vec<(u8, Vec<u8>)> {
    use etherparse::PacketBuilder;
    let client = [198, 18, 0, 2];
    let vip = [198, 18, 100, 1];
    let mut out = Vec::new();
    let tcp = |src_mac, dst_mac, src: ([u8; 4], u16), dst: ([u8; 4], u16), f: u8, data: &[u8]| {
        let b = PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv4(src.0, dst.0, 64)
            .tcp(src.1, dst.1, 1000, 65535);
        let b = match f {
            0 => b.syn(),
            1 => b.syn().ack(1001),
            2 => b.ack(1),
            3 => b.fin().ack(1),
            4 => b.rst(),
            _ => b.psh().ack(1),
        };
        let mut v = Vec::new();
        b.write(&mut v, data).expect("frame");
        v
    };
    for port in [80u16, 81, 82, 83, 21] {
        for f in 0..6 {
            out.push((
                0,
                tcp(
                    CLIENT_MAC,
                    CLIENT_IF_MAC,
                    (client, 40000),
                    (vip, port),
                    f,
                    b"GET / HTTP/1.0\r\n\r\n",
                ),
            ));
        }
    }
    for f in 0..6 {
        out.push((
            1,
            tcp(
                rs_mac(11),
                SERVER_IF_MAC,
                ([198, 19, 0, 11], 8080),
                (client, 40000),
                f,
                b"HTTP/1.0 200 OK\r\n\r\n",
            ),
        ));
    }
    // FTP through the helper: the control connection's handshake, PASV and its reply
    // (rewritten, an expected connection), PORT and EPRT (expected connections), the
    // passive data connection; then the tunnel and proxy-v2 services' handshakes and data.
    let ftp_srv = [198, 19, 0, 16];
    let seg = |from_client: bool, flags: u8, seq: u32, ack: u32, data: &[u8]| {
        let b = if from_client {
            PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
                .ipv4(client, vip, 64)
                .tcp(40021, 21, seq, 65535)
        } else {
            PacketBuilder::ethernet2(rs_mac(16), SERVER_IF_MAC)
                .ipv4(ftp_srv, client, 64)
                .tcp(21, 40021, seq, 65535)
        };
        let b = match flags {
            0 => b.syn(),
            1 => b.syn().ack(ack),
            _ => b.psh().ack(ack),
        };
        let mut v = Vec::new();
        b.write(&mut v, data).expect("frame");
        (u8::from(!from_client), v)
    };
    let (c0, s0) = (1000u32, 5000u32);
    out.push(seg(true, 0, c0, 0, b""));
    out.push(seg(false, 1, s0, c0 + 1, b""));
    out.push(seg(true, 2, c0 + 1, s0 + 1, b""));
    let pasv = b"PASV\r\n";
    out.push(seg(true, 2, c0 + 1, s0 + 1, pasv));
    let reply = b"227 Entering Passive Mode (198,19,0,16,195,80).\r\n";
    out.push(seg(false, 2, s0 + 1, c0 + 7, reply));
    let port = b"PORT 198,18,0,2,4,1\r\n";
    out.push(seg(true, 2, c0 + 7, s0 + 1 + reply.len() as u32, port));
    let eprt = b"EPRT |1|198.18.0.2|5000|\r\n";
    out.push(seg(
        true,
        2,
        c0 + 7 + port.len() as u32,
        s0 + 1 + reply.len() as u32,
        eprt,
    ));
    out.push(seg(
        false,
        2,
        s0 + 1 + reply.len() as u32,
        c0 + 7,
        b"200 PORT ok.\r\n",
    ));
    let mut data = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(client, vip, 64)
        .tcp(40022, 50000, 1, 65535)
        .syn()
        .write(&mut data, b"")
        .expect("frame");
    out.push((0, data));
    for port in [84u16, 85] {
        for f in [0u8, 2, 5] {
            out.push((
                0,
                tcp(
                    CLIENT_MAC,
                    CLIENT_IF_MAC,
                    (client, 40100),
                    (vip, port),
                    f,
                    b"GET /x HTTP/1.0\r\n\r\n",
                ),
            ));
        }
        // A GSO super-packet's worth of data (meta bit 2: a 1400-byte GSO size).
        out.push((
            4,
            tcp(
                CLIENT_MAC,
                CLIENT_IF_MAC,
                (client, 40100),
                (vip, port),
                5,
                &[b'x'; 3000],
            ),
        ));
    }
    out.push((
        4,
        tcp(
            CLIENT_MAC,
            CLIENT_IF_MAC,
            (client, 40000),
            (vip, 80),
            5,
            &[b'y'; 4000],
        ),
    ));
    out.extend(seed_frames_v6());
    // A fragment (more fragments set) of a datagram to the UDP service.
    let mut frag = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(client, vip, 64)
        .udp(41001, 9000)
        .write(&mut frag, &[b'z'; 64])
        .expect("frame");
    frag[14 + 6] |= 0x20;
    let c = {
        frag[14 + 10..14 + 12].fill(0);
        wvs::wire::checksum::compute(&frag[14..34])
    };
    frag[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    out.push((0, frag));
    let mut udp = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(client, vip, 64)
        .udp(41000, 9000)
        .write(&mut udp, b"who")
        .expect("frame");
    out.push((0, udp.clone()));
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(rs_mac(11), SERVER_IF_MAC)
        .ipv4([198, 19, 0, 11], client, 64)
        .udp(9000, 41000)
        .write(&mut reply, b"rs1")
        .expect("frame");
    out.push((1, reply.clone()));
    // ICMP port unreachable and fragmentation needed quoting each way's packet.
    for (from_if, src_mac, src, quoted) in [
        (1u8, rs_mac(11), [198, 19, 0, 11], &udp),
        (0, CLIENT_MAC, client, &reply),
    ] {
        for (t, code) in [(3u8, 3u8), (3, 4), (11, 0)] {
            let q = &quoted[14..quoted.len().min(14 + 28)];
            let mut icmp = vec![t, code, 0, 0, 0, 0, 0x05, 0x78];
            icmp.extend_from_slice(q);
            let c = wvs::wire::checksum::compute(&icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            let mut v = Vec::new();
            let dst = if from_if == 1 { client } else { vip };
            PacketBuilder::ethernet2(
                src_mac,
                if from_if == 1 {
                    SERVER_IF_MAC
                } else {
                    CLIENT_IF_MAC
                },
            )
            .ipv4(src, dst, 64)
            .write(&mut v, etherparse::IpNumber(1), &icmp)
            .expect("frame");
            out.push((from_if, v));
        }
    }
    out
}

/// The IPv6 services' frames: clients' segments to each, the servers' answers, a SYN
/// behind a destination-options header, a fragment, a super-packet and UDP both ways.
fn seed_frames_v6() -> Vec<(u8, Vec<u8>)> {
    use etherparse::PacketBuilder;
    let client = testkit::CLIENT6;
    let mut out = Vec::new();
    let tcp = |from_client: bool, port: u16, f: u8, data: &[u8]| {
        let b = if from_client {
            PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
                .ipv6(client, VIP6, 64)
                .tcp(40000, port, 1000, 65535)
        } else {
            PacketBuilder::ethernet2(rs_mac(11), SERVER_IF_MAC)
                .ipv6(rs6(11), client, 64)
                .tcp(8080, 40000, 5000, 65535)
        };
        let b = match f {
            0 => b.syn(),
            1 => b.syn().ack(1001),
            2 => b.ack(1),
            3 => b.fin().ack(1),
            4 => b.rst(),
            _ => b.psh().ack(1),
        };
        let mut v = Vec::new();
        b.write(&mut v, data).expect("frame");
        v
    };
    for port in [80u16, 81, 82] {
        for f in 0..6 {
            out.push((0, tcp(true, port, f, b"GET / HTTP/1.0\r\n\r\n")));
        }
    }
    for f in 0..6 {
        out.push((1, tcp(false, 80, f, b"HTTP/1.0 200 OK\r\n\r\n")));
    }
    out.push((4, tcp(true, 80, 5, &[b'y'; 4000])));
    // The SYN behind destination options (8 bytes of PadN), and as a first fragment.
    let syn = tcp(true, 80, 0, b"");
    for (next, ext) in [
        (60u8, [6u8, 0, 1, 4, 0, 0, 0, 0]),
        (44, [6, 0, 0, 1, 0, 0, 0, 7]),
    ] {
        let mut v = syn[..14 + 40].to_vec();
        v[14 + 6] = next;
        let plen = u16::from_be_bytes([v[18], v[19]]) + 8;
        v[18..20].copy_from_slice(&plen.to_be_bytes());
        v.extend_from_slice(&ext);
        v.extend_from_slice(&syn[14 + 40..]);
        out.push((0, v));
    }
    let mut udp = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv6(client, VIP6, 64)
        .udp(41000, 9000)
        .write(&mut udp, b"who")
        .expect("frame");
    out.push((0, udp));
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(rs_mac(11), SERVER_IF_MAC)
        .ipv6(rs6(11), client, 64)
        .udp(9000, 41000)
        .write(&mut reply, b"rs1")
        .expect("frame");
    out.push((1, reply));
    out
}

/// Encode frames as the datapath target reads its input: per frame a meta byte, a
/// 2-byte little-endian length, the frame.
pub fn encode(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (meta, f) in frames {
        v.push(*meta);
        v.extend_from_slice(&(f.len() as u16).to_le_bytes());
        v.extend_from_slice(f);
    }
    v
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(name), data).expect("seed");
}

/// Write the seed corpora under `corpus` (a directory per target): the unit tests' kinds
/// of frames for the datapath, the project's own configurations, command lines and
/// keepalived.conf for the parsers.
pub fn write_seeds(corpus: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let frames = seed_frames();
    for (i, f) in frames.iter().enumerate() {
        write(
            &corpus.join("datapath"),
            &format!("frame-{i:02}"),
            &encode(std::slice::from_ref(f)),
        );
    }
    write(&corpus.join("datapath"), "all", &encode(&frames));
    let project = root.parent().expect("project");
    for f in ["examples/wvs.toml"] {
        if let Ok(t) = std::fs::read(project.join(f)) {
            write(&corpus.join("config_toml"), "example", &t);
        }
    }
    write(
        &corpus.join("config_toml"),
        "defense",
        b"[timeouts]\ntcp = 900\ntcpfin = 120\nudp = 300\n[sysctl]\ncache_bypass = true\n[defense]\nsecure_tcp = 3\n",
    );
    write(
        &corpus.join("config_json"),
        "service",
        br#"{"protocol":"tcp","address":"198.18.100.1:80","scheduler":"wrr","persistent":300,"reals":[{"address":"198.19.0.11:80","weight":2,"forward":"dr","check":{"type":"http","path":"/","status":[200]}}]}"#,
    );
    write(
        &corpus.join("config_json"),
        "defense",
        br#"{"drop_entry":1,"secure_tcp":3,"threshold":50}"#,
    );
    for (i, line) in [
        "-A\0-t\0198.18.100.1:80\0-s\0wrr\0-p\0300",
        "-a\0-t\0198.18.100.1:80\0-r\0198.19.0.11:80\0-g\0-w\0100\0-x\0500\0-y\0100",
        "-L\0-n\0--stats\0--rate\0--exact",
        "--set\0900\0120\0300",
        "-E\0-u\0198.18.100.1:53\0-s\0mh\0-b\0mh-fallback,mh-port\0--helper\0none",
        "-a\0-t\0198.18.100.1:80\0-r\0198.19.0.12:80\0--check\0http:/health\0--rise\03\0--fall\02",
        "-d\0-t\0198.18.100.1:80\0-r\0198.19.0.11:80\0--drain\030",
    ]
    .iter()
    .enumerate()
    {
        write(
            &corpus.join("adm_args"),
            &format!("args-{i}"),
            line.as_bytes(),
        );
    }
    write(
        &corpus.join("keepalived"),
        "conf",
        b"global_defs {\n  router_id LVS\n}\nvirtual_server 198.18.100.1 80 {\n  delay_loop 6\n  lb_algo wrr\n  lb_kind NAT\n  persistence_timeout 50\n  protocol TCP\n  sorry_server 198.19.0.20 80\n  real_server 198.19.0.11 80 {\n    weight 1\n    inhibit_on_failure\n    HTTP_GET {\n      url {\n        path /\n        status_code 200\n        digest 444bcb3a3fcf8389296c49467f27e1d6\n      }\n      connect_timeout 3\n      retry 3\n      delay_before_retry 3\n    }\n  }\n  real_server 198.19.0.12 80 {\n    TCP_CHECK {\n      connect_port 80\n    }\n  }\n}\nvirtual_server 198.18.100.1 53 {\n  protocol UDP\n  lb_kind DR\n  real_server 198.19.0.13 53 {\n    DNS_CHECK {\n      name example.\n    }\n    MISC_CHECK {\n      misc_path \"/bin/true\"\n      misc_timeout 2\n    }\n  }\n}\nvrrp_instance VI_1 {\n  state MASTER\n}\n",
    );
}

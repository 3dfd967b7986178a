//! The probes: one check of one address, as keepalived's checkers do it, in-process and
//! asynchronous (no fork per check but MISC_CHECK's program), with one deadline for the
//! whole check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::config::check::Probe;
use crate::consts::CHECK_HTTP_MAX_RESPONSE;

/// What one check found: passed or not, and what was seen.
pub(crate) type Found = (bool, String);

/// How a check of a DR or tunnel server reaches it: through `vip`, as clients' packets do.
#[derive(Debug, Clone)]
pub struct Via {
    /// The path through the TUN device.
    pub path: Arc<super::via::CheckPath>,
    /// The real server.
    pub dest: Arc<crate::service::Dest>,
    /// The virtual address and port.
    pub vip: SocketAddr,
}

/// A TCP connection to the server: to `target`, or through the VIP. The flight, if any,
/// must live as long as the connection.
async fn tcp(
    target: SocketAddr,
    via: Option<&Via>,
) -> Result<(TcpStream, Option<super::via::Flight>), String> {
    match via {
        Some(v) => {
            let (s, f) = v.path.tcp(&v.dest, v.vip).await.map_err(io_err)?;
            Ok((s, Some(f)))
        }
        None => Ok((TcpStream::connect(target).await.map_err(io_err)?, None)),
    }
}

/// Run `probe` against `target` within `timeout`; returns the result and how long it took.
pub async fn check(
    probe: &Probe,
    target: SocketAddr,
    via: Option<&Via>,
    timeout: Duration,
    tls: &Arc<tokio_rustls::rustls::ClientConfig>,
) -> (Found, Duration) {
    let t0 = Instant::now();
    let found = match tokio::time::timeout(timeout, run(probe, target, via, tls, timeout)).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => (false, e),
        Err(_) => (
            false,
            format!("timed out after {} s", timeout.as_secs_f64()),
        ),
    };
    (found, t0.elapsed())
}

async fn run(
    probe: &Probe,
    target: SocketAddr,
    via: Option<&Via>,
    tls: &Arc<tokio_rustls::rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Found, String> {
    match probe {
        Probe::Tcp => {
            tcp(target, via).await?;
            Ok((true, "connected".into()))
        }
        Probe::Http {
            tls: https,
            host,
            urls,
        } => {
            // keepalived's several urls: each on a connection of its own, in turn, the
            // first that fails failing the check.
            let mut found = (false, "no url".to_string());
            for u in urls {
                let (s, _flight) = tcp(target, via).await?;
                let reply = if *https {
                    let s = tls_connect(s, target, host.as_deref(), tls).await?;
                    http_get(s, target, &u.path, host.as_deref()).await
                } else {
                    http_get(s, target, &u.path, host.as_deref()).await
                }
                .map_err(|e| named(urls.len(), &u.path, e))?;
                let (pass, why) = judge_http(u, &reply);
                found = (pass, named(urls.len(), &u.path, why));
                if !pass {
                    break;
                }
            }
            Ok(found)
        }
        Probe::Udp {
            payload,
            require: false,
            ..
        } => {
            // keepalived's UDP_CHECK without require_reply: only an ICMP unreachable fails;
            // it is waited for until just before the check's deadline.
            let wait = timeout.mul_f64(0.9);
            Ok(
                match tokio::time::timeout(wait, udp_exchange(target, via, payload)).await {
                    Err(_) => (true, "no ICMP error".into()),
                    Ok(Ok(buf)) => (true, format!("reply of {} bytes", buf.len())),
                    Ok(Err(e)) => (false, e),
                },
            )
        }
        Probe::Udp { payload, .. } => {
            let buf = udp_exchange(target, via, payload).await?;
            Ok(judge_udp(probe, &buf))
        }
        Probe::Dns { name, qtype } => {
            let id: u16 = rand::random();
            let query = dns_query(id, name, *qtype)?;
            let reply = udp_exchange(target, via, &query).await?;
            Ok(judge_dns(id, &reply))
        }
        Probe::Misc { argv, dynamic } => misc(argv, target, *dynamic).await,
        Probe::Smtp { helo } => {
            let (s, _flight) = tcp(target, via).await?;
            smtp(s, helo).await
        }
        Probe::Ping => ping(target.ip()).await,
        Probe::File {
            path,
            weight,
            reverse,
        } => file(path, *weight, *reverse).await,
    }
}

/// keepalived's FILE_CHECK: the number the file holds (its first word; anything else reads
/// as 0, as keepalived's `strtol`). With weight 0, a number other than 0 fails (0 fails
/// when reversed); with another weight the check passes and the number times the weight
/// (less, when reversed) is what it adds to the server's weight ([`dynamic_weight`]).
async fn file(path: &str, weight: i32, reverse: bool) -> Result<Found, String> {
    let owned = path.to_string();
    let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(owned))
        .await
        .map_err(|e| format!("{path}: {e}"))?
        .map_err(|e| format!("{path}: {e}"))?;
    let n: i64 = text
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    if weight == 0 {
        let pass = (n == 0) != reverse;
        return Ok((pass, format!("{path}: {n}")));
    }
    let delta = n * i64::from(weight) * if reverse { -1 } else { 1 };
    Ok((true, format!("{path}: {n}: weight {delta:+}")))
}

/// keepalived's PING_CHECK: an ICMP (ICMPv6) echo request to `addr` over a ping socket
/// (`SOCK_DGRAM`, `IPPROTO_ICMP`: the kernel sets the identifier and hands this socket only
/// the replies that carry it), passed by the echo reply. A ping socket is open to the
/// groups in `net.ipv4.ping_group_range`; wvs's own group is added to it the first time
/// one is refused (as keepalived does), which its CAP_NET_ADMIN allows.
async fn ping(addr: std::net::IpAddr) -> Result<Found, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (domain, proto, request, reply) = match addr {
        std::net::IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        std::net::IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128, 129),
    };
    let open = || Socket::new(domain, Type::DGRAM, Some(proto));
    let sock = match open() {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            widen_ping_group_range().map_err(|w| format!("ping socket refused ({e}): {w}"))?;
            open()
        }
        r => r,
    }
    .map_err(|e| format!("ping socket: {e}"))?;
    sock.set_nonblocking(true).map_err(io_err)?;
    let sock = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock)).map_err(io_err)?;
    let seq: u16 = rand::random();
    // Type, code, checksum (the kernel's), identifier (the kernel's), sequence, data.
    let mut msg = vec![request, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(b"wvs ping check");
    sock.send_to(&msg, SocketAddr::new(addr, 0))
        .await
        .map_err(io_err)?;
    let mut buf = [0u8; 256];
    loop {
        let n = sock.recv(&mut buf).await.map_err(io_err)?;
        if n >= 8 && buf[0] == reply && buf[6..8] == seq.to_be_bytes() {
            return Ok((true, "echo reply".into()));
        }
    }
}

/// Add wvs's group to `net.ipv4.ping_group_range` (which covers ICMPv6 too), keeping the
/// groups already in it.
fn widen_ping_group_range() -> Result<(), String> {
    const PATH: &str = "/proc/sys/net/ipv4/ping_group_range";
    let gid = nix::unistd::getegid().as_raw();
    let now = std::fs::read_to_string(PATH).map_err(|e| format!("{PATH}: {e}"))?;
    let mut it = now
        .split_whitespace()
        .map(|w| w.parse::<u32>().unwrap_or(1));
    let (lo, hi) = (it.next().unwrap_or(1), it.next().unwrap_or(0));
    let (lo, hi) = if lo > hi {
        (gid, gid)
    } else {
        (lo.min(gid), hi.max(gid))
    };
    std::fs::write(PATH, format!("{lo} {hi}")).map_err(|e| format!("{PATH}: {e}"))?;
    tracing::info!(
        lo,
        hi,
        "ping checks: net.ipv4.ping_group_range widened to wvs's group"
    );
    Ok(())
}

/// keepalived's SMTP_CHECK: the greeting must be 220, `HELO` must get 250; then `QUIT`.
async fn smtp<S: AsyncRead + AsyncWrite + Unpin>(s: S, helo: &str) -> Result<Found, String> {
    let mut s = tokio::io::BufReader::new(s);
    let greeting = smtp_reply(&mut s).await?;
    if greeting != 220 {
        return Ok((false, format!("SMTP greeting {greeting}")));
    }
    s.get_mut()
        .write_all(format!("HELO {helo}\r\n").as_bytes())
        .await
        .map_err(io_err)?;
    let code = smtp_reply(&mut s).await?;
    // QUIT is a courtesy: the verdict is in.
    let _ = s.get_mut().write_all(b"QUIT\r\n").await;
    Ok(if code == 250 {
        (true, "SMTP 250".into())
    } else {
        (false, format!("SMTP HELO answered {code}"))
    })
}

/// Read one SMTP reply (its lines `NNN-...` up to the last, `NNN ...`); returns its code.
async fn smtp_reply<S: AsyncRead + Unpin>(s: &mut tokio::io::BufReader<S>) -> Result<u16, String> {
    use tokio::io::AsyncBufReadExt;
    let mut read = 0;
    loop {
        let mut line = Vec::new();
        let n = (&mut *s)
            .take(crate::consts::CHECK_SMTP_MAX_REPLY as u64)
            .read_until(b'\n', &mut line)
            .await
            .map_err(io_err)?;
        read += n;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        let code = line
            .get(..3)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| {
                format!(
                    "not an SMTP reply: {:?}",
                    String::from_utf8_lossy(&line).trim_end()
                )
            })?;
        if line.get(3) != Some(&b'-') {
            return Ok(code);
        }
        if read >= crate::consts::CHECK_SMTP_MAX_REPLY {
            return Err("an SMTP reply too long".into());
        }
    }
}

/// TLS over the check's connection, to `host` or else the server's address.
async fn tls_connect(
    s: TcpStream,
    target: SocketAddr,
    host: Option<&str>,
    tls: &Arc<tokio_rustls::rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    use tokio_rustls::rustls::pki_types::ServerName;
    let name = match host {
        Some(h) => ServerName::try_from(h.to_string())
            .map_err(|e| format!("TLS server name {h:?}: {e}"))?,
        None => ServerName::IpAddress(target.ip().into()),
    };
    tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, s)
        .await
        .map_err(|e| format!("TLS: {e}"))
}

/// A misc check: the program's exit status, run with a minimal environment (nothing of
/// wvs's, its API token included, reaches it) and killed when the check is dropped past
/// its deadline (keepalived's misc_timeout).
/// The weight a check of `probe` set, from what it found (a misc check with `dynamic`:
/// `exit N`, N from 2 to 255, sets N - 2).
pub fn dynamic_weight(probe: &Probe, found: &Found) -> Option<Dynamic> {
    match probe {
        Probe::Misc { dynamic: true, .. } => {
            let code: u32 = found
                .1
                .strip_prefix("exit ")?
                .split(':')
                .next()?
                .parse()
                .ok()?;
            (found.0 && (2..=255).contains(&code)).then(|| Dynamic::Set(code - 2))
        }
        Probe::File { weight, .. } if *weight != 0 && found.0 => {
            let (_, delta) = found.1.rsplit_once(": weight ")?;
            delta.parse().ok().map(Dynamic::Add)
        }
        _ => None,
    }
}

/// What a check makes of its server's weight (keepalived's dynamic checkers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dynamic {
    /// This weight (MISC_CHECK's `misc_dynamic`).
    Set(u32),
    /// The configured weight plus this, within 0 and 65535 (FILE_CHECK's weight).
    Add(i64),
}

impl Dynamic {
    /// The weight in effect for a server configured with `configured`.
    pub fn of(self, configured: u32) -> u32 {
        match self {
            Self::Set(w) => w,
            Self::Add(d) => (i64::from(configured) + d).clamp(0, 65535) as u32,
        }
    }
}

async fn misc(argv: &[String], target: SocketAddr, dynamic: bool) -> Result<Found, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("no program".into());
    };
    let st = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", crate::consts::MISC_CHECK_PATH)
        .env("WVS_REAL_ADDR", target.ip().to_string())
        .env("WVS_REAL_PORT", target.port().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("{program}: {e}"))?;
    Ok(match st.code() {
        Some(0) => (true, "exit 0".into()),
        // keepalived's misc_dynamic: 2 to 255 pass, with a weight (read back from this
        // text by `dynamic_weight`).
        Some(c @ 2..=255) if dynamic => (true, format!("exit {c}: weight {}", c - 2)),
        Some(c) => (false, format!("exit {c}")),
        None => (false, "killed by a signal".into()),
    })
}

fn io_err(e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}

/// An HTTP/1.0 GET (as keepalived's default `http_protocol`): the reply ends with the
/// connection, so no chunked coding.
async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    target: SocketAddr,
    path: &str,
    host: Option<&str>,
) -> Result<Vec<u8>, String> {
    let host = host.map_or_else(|| target.ip().to_string(), str::to_string);
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: wvs-health\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.map_err(io_err)?;
    let mut reply = Vec::new();
    let read = (&mut s)
        .take(CHECK_HTTP_MAX_RESPONSE as u64)
        .read_to_end(&mut reply)
        .await;
    match read {
        Ok(_) => Ok(reply),
        // A TLS server that closes without close_notify still sent its reply.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !reply.is_empty() => Ok(reply),
        Err(e) => Err(io_err(e)),
    }
}

/// A result of one URL of an HTTP check of `n`: named by its path when there are several.
fn named(n: usize, path: &str, why: String) -> String {
    if n > 1 { format!("{path}: {why}") } else { why }
}

/// Judge an HTTP reply against a URL's status codes, digest and text.
pub fn judge_http(url: &crate::config::check::HttpUrl, reply: &[u8]) -> Found {
    let crate::config::check::HttpUrl {
        status,
        digest,
        contains: text,
        ..
    } = url;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let head = match r.parse(reply) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return (false, "incomplete HTTP reply".into()),
        Err(e) => return (false, format!("not an HTTP reply: {e}")),
    };
    let code = r.code.unwrap_or(0);
    let mut body = &reply[head..];
    // keepalived digests the body as Content-Length gives it.
    if let Some(len) = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        && len < body.len()
    {
        body = &body[..len];
    }
    if !status.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code)) {
        return (false, format!("HTTP {code}"));
    }
    if let Some(d) = digest {
        let got: [u8; 16] = Md5::digest(body).into();
        if &got != d {
            let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
            return (false, format!("HTTP {code}, body digest {hex}"));
        }
    }
    if let Some(t) = text
        && !contains(body, t.as_bytes())
    {
        return (false, format!("HTTP {code}, body without {t:?}"));
    }
    (true, format!("HTTP {code}"))
}

/// Judge a UDP reply: its length, the pattern it must start with (keepalived's
/// `require_reply HEX`, compared over the shorter of the two) and the text it must hold.
pub fn judge_udp(probe: &Probe, buf: &[u8]) -> Found {
    let Probe::Udp {
        expect, reply, len, ..
    } = probe
    else {
        return (false, "not a UDP check".into());
    };
    let n = buf.len();
    if (n as u64) < u64::from(len.0) || (n as u64) > u64::from(len.1) {
        return (
            false,
            format!("reply of {n} bytes, not {} to {}", len.0, len.1),
        );
    }
    if let Some(i) = (buf.iter().zip(reply)).position(|(b, (v, m))| b & m != v & m) {
        return (false, format!("reply of {n} bytes, differs at byte {i}"));
    }
    match expect {
        Some(e) if !contains(buf, e) => (
            false,
            format!("reply of {n} bytes without the expected text"),
        ),
        _ => (true, format!("reply of {n} bytes")),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

async fn udp_exchange(
    target: SocketAddr,
    via: Option<&Via>,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    // Connected, so an ICMP port unreachable comes back as an error (keepalived's UDP_CHECK).
    let (s, _flight) = match via {
        Some(v) => {
            let (s, f) = v.path.udp(&v.dest, v.vip).await.map_err(io_err)?;
            (s, Some(f))
        }
        None => {
            let any: SocketAddr = if target.is_ipv4() {
                "0.0.0.0:0".parse().map_err(|_| "address")?
            } else {
                "[::]:0".parse().map_err(|_| "address")?
            };
            let s = UdpSocket::bind(any).await.map_err(io_err)?;
            s.connect(target).await.map_err(io_err)?;
            (s, None)
        }
    };
    s.send(payload).await.map_err(io_err)?;
    let mut buf = vec![0u8; 65536];
    let n = s.recv(&mut buf).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "port unreachable".into(),
        _ => io_err(e),
    })?;
    buf.truncate(n);
    Ok(buf)
}

/// DNS_CHECK's query: recursion desired, one question of class IN.
pub(crate) fn dns_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    use simple_dns::{CLASS, Name, Packet, PacketFlag, Question, TYPE};
    let mut p = Packet::new_query(id);
    p.set_flags(PacketFlag::RECURSION_DESIRED);
    let n = if name == "." {
        ""
    } else {
        name.trim_end_matches('.')
    };
    let qname = Name::new(n).map_err(|e| format!("dns name {name:?}: {e}"))?;
    p.questions.push(Question::new(
        qname,
        TYPE::from(qtype).into(),
        CLASS::IN.into(),
        false,
    ));
    p.build_bytes_vec().map_err(|e| format!("dns query: {e}"))
}

/// keepalived's judgement of a DNS reply: its id, the response bit, RCODE 0 (the answer
/// itself is not looked at).
pub fn judge_dns(id: u16, reply: &[u8]) -> Found {
    use simple_dns::{Packet, PacketFlag, RCODE};
    match Packet::parse(reply) {
        Err(e) => (false, format!("not a DNS reply: {e}")),
        Ok(p) if p.id() != id => (false, "DNS reply to another query".into()),
        Ok(p) if !p.has_flags(PacketFlag::RESPONSE) => (false, "DNS query, not a reply".into()),
        Ok(p) if p.rcode() != RCODE::NoError => (false, format!("DNS {:?}", p.rcode())),
        Ok(p) => (true, format!("DNS NOERROR, {} answers", p.answers.len())),
    }
}

/// keepalived does not verify the certificate of SSL_GET's server (a real server's
/// certificate names the service, not the address checked); nor does wvs.
#[derive(Debug)]
struct AnyCert(Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        _: &[tokio_rustls::rustls::pki_types::CertificateDer<'_>],
        _: &tokio_rustls::rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: tokio_rustls::rustls::pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error>
    {
        Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client of HTTPS checks.
pub(crate) fn tls_config() -> Arc<tokio_rustls::rustls::ClientConfig> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let cfg = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                .with_no_client_auth()
        });
    match cfg {
        Ok(c) => Arc::new(c),
        // The built-in provider supports the default versions; should it ever not, HTTPS
        // checks fail with the handshake's error rather than wvs not starting.
        Err(e) => {
            tracing::error!("TLS for health checks: {e}");
            Arc::new(
                tokio_rustls::rustls::ClientConfig::builder()
                    .with_root_certificates(tokio_rustls::rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check::CheckDef;

    fn probe_of(toml: &str) -> Probe {
        toml::from_str::<CheckDef>(toml)
            .unwrap()
            .validate("t")
            .unwrap()
            .probe
            .unwrap()
    }

    fn http(toml: &str) -> crate::config::check::HttpUrl {
        match probe_of(toml) {
            Probe::Http { mut urls, .. } => urls.remove(0),
            p => panic!("not an HTTP check: {p:?}"),
        }
    }

    #[test]
    fn http_replies_judged_as_keepalived() {
        let p = http("type = 'http'");
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA";
        assert_eq!(judge_http(&p, ok), (true, "HTTP 200".into()));
        let e = b"HTTP/1.1 503 Service Unavailable\r\n\r\n";
        assert_eq!(judge_http(&p, e), (false, "HTTP 503".into()));
        assert!(!judge_http(&p, b"SSH-2.0-OpenSSH\r\n").0);
        assert!(!judge_http(&p, b"HTTP/1.1 200 OK\r\nContent-").0);
        // md5("ok") = 444bcb3a3fcf8389296c49467f27e1d6; the body is cut at Content-Length.
        let d = http("type = 'http'\ndigest = '444bcb3a3fcf8389296c49467f27e1d6'");
        assert!(judge_http(&d, ok).0);
        let bad = b"HTTP/1.1 200 OK\r\n\r\nko";
        let (pass, why) = judge_http(&d, bad);
        assert!(!pass && why.contains("digest"), "{why}");
        let t = http("type = 'http'\ncontains = 'ok'\nstatus = ['503']");
        assert!(!judge_http(&t, ok).0, "200 is not 503");
        assert!(judge_http(&t, b"HTTP/1.0 503 x\r\n\r\nall ok").0);
    }

    /// UDP_CHECK's reply rules: the length bounds, the pattern over the shorter of the
    /// two, the expected text.
    #[test]
    fn udp_replies_judged_as_keepalived() {
        let p = probe_of(
            "type = 'udp'\nreply_hex = '72xx31'\nmin_reply_length = 2\nmax_reply_length = 5",
        );
        assert_eq!(judge_udp(&p, b"rs1\n"), (true, "reply of 4 bytes".into()));
        assert_eq!(
            judge_udp(&p, b"rs2\n"),
            (false, "reply of 4 bytes, differs at byte 2".into())
        );
        assert!(judge_udp(&p, b"rZ").0, "compared over the shorter");
        assert!(!judge_udp(&p, b"r").0, "below min_reply_length");
        assert!(!judge_udp(&p, b"rs1 and more").0, "above max_reply_length");
        let e = probe_of("type = 'udp'\nexpect = 'ok'");
        assert!(judge_udp(&e, b"all ok").0);
        assert!(!judge_udp(&e, b"all ko").0);
    }

    #[test]
    fn dns_query_and_reply() {
        let q = dns_query(0x1234, "example.org", 6).unwrap();
        assert_eq!(&q[..2], &[0x12, 0x34]);
        assert_eq!(q[2] & 0x01, 1, "RD");
        assert_eq!(u16::from_be_bytes([q[4], q[5]]), 1, "one question");
        assert_eq!(&q[12..25], b"\x07example\x03org\x00");
        assert_eq!(&q[25..29], &[0, 6, 0, 1], "SOA, IN");
        assert!(!judge_dns(0x1234, &q).0, "a query is not a reply");
        let mut r = q.clone();
        r[2] |= 0x80;
        assert!(judge_dns(0x1234, &r).0);
        assert!(!judge_dns(0x4321, &r).0);
        r[3] |= 3;
        assert!(!judge_dns(0x1234, &r).0, "NXDOMAIN");
        let root = dns_query(1, ".", 6).unwrap();
        assert_eq!(&root[12..17], &[0, 0, 6, 0, 1]);
    }

    #[tokio::test]
    async fn a_refused_connect_fails_fast_and_a_silent_server_times_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap();
        drop(l);
        let tls = tls_config();
        let ((ok, why), _) = check(&Probe::Tcp, open, None, Duration::from_secs(2), &tls).await;
        assert!(!ok);
        assert_eq!(why, "connection refused");
        // A server that accepts and never answers: the whole check's deadline holds.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            // A byte every 100 ms: keepalived's per-read timeout would never fire.
            for _ in 0..50 {
                if s.write_all(b"H").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let p = probe_of("type = 'http'");
        let ((ok, why), took) = check(&p, addr, None, Duration::from_millis(400), &tls).await;
        assert!(!ok);
        assert!(why.starts_with("timed out"), "{why}");
        assert!(took < Duration::from_millis(1000), "{took:?}");
        hold.abort();
    }

    /// A scripted SMTP server: its greeting (lines), then its answer to HELO; returns
    /// its address and what it heard.
    async fn smtp_server(
        greeting: &'static str,
        helo_answer: &'static str,
    ) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let heard = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut s = tokio::io::BufReader::new(s);
            s.get_mut().write_all(greeting.as_bytes()).await.unwrap();
            let mut heard = String::new();
            use tokio::io::AsyncBufReadExt;
            if s.read_line(&mut heard).await.unwrap_or(0) > 0 {
                s.get_mut().write_all(helo_answer.as_bytes()).await.unwrap();
                let _ = s.read_line(&mut heard).await;
            }
            heard
        });
        (addr, heard)
    }

    #[tokio::test]
    async fn smtp_checks_want_220_then_250_as_keepalived() {
        let tls = tls_config();
        let t = Duration::from_secs(2);
        let p = Probe::Smtp {
            helo: "lb.test".into(),
        };
        // A multi-line greeting, HELO, QUIT.
        let (a, heard) = smtp_server("220-rs1 ESMTP\r\n220 ready\r\n", "250 rs1\r\n").await;
        assert_eq!(
            check(&p, a, None, t, &tls).await.0,
            (true, "SMTP 250".into())
        );
        assert_eq!(heard.await.unwrap(), "HELO lb.test\r\nQUIT\r\n");
        let (a, _) = smtp_server("554 go away\r\n", "").await;
        assert_eq!(
            check(&p, a, None, t, &tls).await.0,
            (false, "SMTP greeting 554".into())
        );
        let (a, _) = smtp_server("220 rs1\r\n", "421 busy\r\n").await;
        assert_eq!(
            check(&p, a, None, t, &tls).await.0,
            (false, "SMTP HELO answered 421".into())
        );
        let (a, _) = smtp_server("HTTP/1.0 200 OK\r\n", "").await;
        assert!(
            check(&p, a, None, t, &tls)
                .await
                .0
                .1
                .starts_with("not an SMTP reply")
        );
    }

    #[tokio::test]
    async fn misc_checks_judge_the_exit_code() {
        let tls = tls_config();
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let t = Duration::from_secs(5);
        let ok = Probe::Misc {
            argv: vec!["/bin/true".into()],
            dynamic: false,
        };
        assert!(check(&ok, a, None, t, &tls).await.0.0);
        let bad = Probe::Misc {
            argv: vec!["/bin/false".into()],
            dynamic: false,
        };
        assert_eq!(
            check(&bad, a, None, t, &tls).await.0,
            (false, "exit 1".into())
        );
        let slow = Probe::Misc {
            argv: vec!["/bin/sleep".into(), "10".into()],
            dynamic: false,
        };
        let ((ok, why), took) = check(&slow, a, None, Duration::from_millis(300), &tls).await;
        assert!(!ok && why.starts_with("timed out"), "{why}");
        assert!(took < Duration::from_secs(2));
        // misc_dynamic: 2 to 255 pass with a weight, 1 fails, 0 passes as it is.
        let dynamic = |code: &str| Probe::Misc {
            argv: vec!["/bin/sh".into(), "-c".into(), format!("exit {code}")],
            dynamic: true,
        };
        for (code, want, weight) in [
            ("7", (true, "exit 7: weight 5"), Some(Dynamic::Set(5))),
            ("2", (true, "exit 2: weight 0"), Some(Dynamic::Set(0))),
            ("0", (true, "exit 0"), None),
            ("1", (false, "exit 1"), None),
        ] {
            let p = dynamic(code);
            let (found, _) = check(&p, a, None, t, &tls).await;
            assert_eq!((found.0, found.1.as_str()), want);
            assert_eq!(dynamic_weight(&p, &found), weight, "exit {code}");
        }
        assert_eq!(
            dynamic_weight(&bad, &(true, "exit 7".into())),
            None,
            "not dynamic"
        );
        // FILE_CHECK: the file's number; with weight 0 any other number fails (0 fails
        // reversed); with a weight, what it adds, within 0 and 65535.
        let dir = std::env::temp_dir().join(format!("wvs-file-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n");
        let file = |weight, reverse| Probe::File {
            path: path.display().to_string(),
            weight,
            reverse,
        };
        let p = path.display().to_string();
        for (text, weight, reverse, want, dynamic) in [
            ("0\n", 0, false, (true, format!("{p}: 0")), None),
            ("3\n", 0, false, (false, format!("{p}: 3")), None),
            ("0", 0, true, (false, format!("{p}: 0")), None),
            ("junk", 0, false, (true, format!("{p}: 0")), None),
            (
                "4",
                5,
                false,
                (true, format!("{p}: 4: weight +20")),
                Some(Dynamic::Add(20)),
            ),
            (
                "4",
                5,
                true,
                (true, format!("{p}: 4: weight -20")),
                Some(Dynamic::Add(-20)),
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let probe = file(weight, reverse);
            let (found, _) = check(&probe, a, None, t, &tls).await;
            assert_eq!(found, want, "{text:?} {weight} {reverse}");
            assert_eq!(dynamic_weight(&probe, &found), dynamic);
        }
        assert_eq!(Dynamic::Add(-20).of(10), 0);
        assert_eq!(Dynamic::Add(20).of(65530), 65535);
        std::fs::remove_file(&path).unwrap();
        let (found, _) = check(&file(0, false), a, None, t, &tls).await;
        assert!(!found.0, "a missing file fails: {found:?}");
        let _ = std::fs::remove_dir(&dir);
    }
}

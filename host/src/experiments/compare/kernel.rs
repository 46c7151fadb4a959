//! The kernel stack's runs: each scenario over loopback (127.0.0.1 or ::1) with `std::net`, captured on `lo`
//! where privileged; the lossy scenarios in a namespace whose loopback loses a tenth of the packets and, where
//! the kernel has netem, delays and paces them as the lossy link's shape says (else the row says that nothing
//! was added).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration as StdDuration, Instant as WallInstant};

use super::observation::not_run;
use super::{CompareError, Observation, Scenario};
use crate::lab::checks::sample_text;
use crate::lab::IpVersion;
use crate::stack::instruments::LoopbackCapture;
use crate::stack::link_shape::LinkShape;

/// The loopback address of `version`.
fn loopback(version: IpVersion) -> IpAddr {
    match version {
        IpVersion::Ipv4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpVersion::Ipv6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// A port free for both TCP and UDP on `lo` other than `not`, or why there is none (no IPv6 on loopback).
fn free_port(lo: IpAddr, not: Option<u16>) -> Result<u16, CompareError> {
    loop {
        let p = TcpListener::bind((lo, 0))
            .and_then(|l| l.local_addr())
            .map_err(|source| CompareError::NoLoopback {
                address: lo,
                source,
            })?
            .port();
        if Some(p) != not && UdpSocket::bind((lo, p)).is_ok() {
            return Ok(p);
        }
    }
}

pub(super) fn kernel_run(scenario: Scenario, version: IpVersion, link: LinkShape) -> Observation {
    if scenario.is_lossy() {
        let network = "namespace lo, 10 % loss";
        return match LossyLoopback::create(link) {
            Ok(lossy) => {
                let (shape, words) = lossy.link();
                lossy
                    .run(move || kernel_run_here(scenario, version, network))
                    .map(|o| o.over_link(shape, words))
                    .unwrap_or_else(|why| not_run("kernel", network, &why))
            }
            Err(why) => not_run("kernel", network, &why),
        };
    }
    kernel_run_here(scenario, version, "loopback")
}

fn kernel_run_here(scenario: Scenario, version: IpVersion, network: &'static str) -> Observation {
    let lo = loopback(version);
    let ports = free_port(lo, None).and_then(|port| Ok((port, free_port(lo, Some(port))?)));
    let (port, other) = match ports {
        Ok(ports) => ports,
        Err(why) => return not_run("kernel", network, &why),
    };
    let capture = LoopbackCapture::start(vec![port, other]);
    let started = WallInstant::now();
    let (outcome, kind) = kernel_scenario(scenario, lo, port, other);
    let aimed = match scenario {
        Scenario::TcpWrongPort | Scenario::UdpWrongPort => other,
        _ => port,
    };
    let millis = started.elapsed().as_secs_f64() * 1e3;
    let capture = match capture {
        Ok(capture) => Ok(capture.finish()),
        Err(e) => Err(format!(
            "not captured: a packet socket on lo needs root ({e})"
        )),
    };
    Observation::new("kernel", network, (outcome, kind), millis, false, capture)
        .aimed_at(SocketAddr::from((lo, aimed)))
}

/// Runs one scenario on the kernel stack over loopback address `lo`; returns what the program saw and its
/// short kind.
fn kernel_scenario(scenario: Scenario, lo: IpAddr, port: u16, other: u16) -> (String, String) {
    let at = |p: u16| SocketAddr::from((lo, p));
    let wait = StdDuration::from_secs(1);
    match scenario {
        Scenario::TcpClientBeforeServer => {
            tcp_outcome(TcpStream::connect_timeout(&at(port), wait).map(|_| ()))
        }
        Scenario::TcpWrongPort => {
            let _server = TcpListener::bind(at(port));
            tcp_outcome(TcpStream::connect_timeout(&at(other), wait).map(|_| ()))
        }
        Scenario::UdpClientBeforeServer => udp_unconnected(at(port), wait),
        Scenario::UdpWrongPort => {
            let _server = UdpSocket::bind(at(port));
            udp_unconnected(at(other), wait)
        }
        Scenario::ConnectedUdpClientBeforeServer => {
            let result = UdpSocket::bind((lo, 0)).and_then(|s| {
                s.set_read_timeout(Some(wait))?;
                s.connect(at(port))?;
                s.send(b"hello")?;
                let mut buf = [0u8; 64];
                s.recv(&mut buf)
            });
            match result {
                Ok(_) => ("a reply came".into(), "ok".into()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => (
                    "recv: connection refused (ECONNREFUSED)".into(),
                    "refused".into(),
                ),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    ("no reply in 1 s".into(), "no_reply".into())
                }
                Err(e) => (format!("error: {e}"), "error".into()),
            }
        }
        Scenario::ServerStoppedMidConversation => kernel_server_stops(at(port)),
        Scenario::LossyTcpTransfer => kernel_lossy_tcp(at(port)),
        Scenario::LossyUdpRequests => kernel_lossy_udp(at(port)),
    }
}

/// 1 MiB through a kernel uppercase server and back, over a loopback that loses packets (see
/// [`LossyLoopback`]); byte for byte.
fn kernel_lossy_tcp(at: SocketAddr) -> (String, String) {
    let Ok(listener) = TcpListener::bind(at) else {
        return ("cannot listen".into(), "error".into());
    };
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            let _ = crate::uppercase::kernel::threads::serve_client(
                stream,
                smoltcp::time::Duration::from_secs(120),
                crate::clock::Clock::start(),
            );
        }
    });
    let text = sample_text(1 << 20, 41);
    let result = (|| {
        let mut client = TcpStream::connect(at)?;
        client.set_read_timeout(Some(StdDuration::from_secs(120)))?;
        let mut writer = client.try_clone()?;
        let sent = text.clone();
        let sender = std::thread::spawn(move || writer.write_all(&sent));
        let mut reply = vec![0u8; text.len()];
        client.read_exact(&mut reply)?;
        let _ = sender.join();
        Ok::<_, std::io::Error>(reply)
    })();
    match result {
        Ok(reply) if reply == text.to_ascii_uppercase() => (
            "1 MiB came back uppercased, byte for byte".into(),
            "ok".into(),
        ),
        Ok(_) => ("the reply differs".into(), "error".into()),
        Err(e) => (format!("error: {e}"), "error".into()),
    }
}

/// 20 requests to a kernel uppercase UDP server over a lossy loopback, up to 5 tries of 500 ms each.
fn kernel_lossy_udp(at: SocketAddr) -> (String, String) {
    let Ok(server) = UdpSocket::bind(at) else {
        return ("cannot bind".into(), "error".into());
    };
    let _ = server.set_read_timeout(Some(StdDuration::from_secs(15)));
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            let reply = buf.get(..n).unwrap_or(&[]).to_ascii_uppercase();
            let _ = server.send_to(&reply, from);
        }
    });
    let Ok(client) = UdpSocket::bind((at.ip(), 0)) else {
        return ("cannot bind".into(), "error".into());
    };
    let _ = client.set_read_timeout(Some(StdDuration::from_millis(500)));
    let (mut answered, mut retried) = (0, 0);
    for i in 0..20 {
        let request = format!("request {i}");
        let expected = request.to_ascii_uppercase();
        for tries in 1..=5 {
            let _ = client.send_to(request.as_bytes(), at);
            let mut buf = [0u8; 64];
            if let Ok((n, _)) = client.recv_from(&mut buf) {
                if buf.get(..n) == Some(expected.as_bytes()) {
                    answered += 1;
                    retried += usize::from(tries > 1);
                    break;
                }
            }
        }
    }
    let line = format!("{answered} of 20 answered; {retried} needed more than one try");
    match answered {
        20 => (line, "ok".into()),
        _ => (line, "no_reply".into()),
    }
}

/// A network namespace whose loopback loses 10 % of the packets (`tc qdisc … netem loss 10%`, or an nftables
/// rule where the kernel has no netem), and with netem also delays and paces them as the lossy link's shape says
/// (`delay`, `rate`: on loopback every packet passes netem once, so the delay is one-way and a round trip takes
/// twice it, but the rate is one queue both directions share): the kernel side of the lossy scenarios runs in
/// it, on a thread of its own. Needs root; deleted on drop.
struct LossyLoopback {
    ns: crate::tools::netns::Namespace,
    /// The shape netem gave the loopback (unshaped with the nftables loss).
    shape: LinkShape,
    /// Whether netem is what loses the packets.
    netem: bool,
}

impl LossyLoopback {
    /// The shape the loopback has, and it in words for the row.
    fn link(&self) -> (LinkShape, String) {
        let words = match (self.netem, self.shape.is_none()) {
            (true, false) => format!(
                "netem on the namespace's lo: {}{}",
                self.shape.describe(),
                match self.shape.rate {
                    Some(_) => " (one rate both directions share)",
                    None => "",
                }
            ),
            (true, true) => "loopback, no added delay".to_string(),
            (false, _) => {
                "loopback, no added delay (no netem in this kernel: the loss is an nftables rule)"
                    .to_string()
            }
        };
        (self.shape, words)
    }

    fn create(link: LinkShape) -> Result<LossyLoopback, CompareError> {
        if !crate::tools::netns::is_root() {
            return Err(CompareError::LossNeedsRoot);
        }
        let ns = crate::tools::netns::Namespace::create(&format!(
            "smoltalk-compare-{}",
            std::process::id()
        ))
        .map_err(CompareError::Namespace)?;
        // netem where the kernel has it; else nftables, dropping a random tenth of what leaves (on loopback,
        // every packet leaves once).
        let mut args: Vec<String> = ["qdisc", "add", "dev", "lo", "root", "netem", "loss", "10%"]
            .map(String::from)
            .to_vec();
        if !link.delay.is_zero() {
            args.extend(["delay".into(), format!("{}us", link.delay.as_micros())]);
        }
        if let Some(rate) = link.rate {
            args.extend(["rate".into(), format!("{rate}bit")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let netem = ns.command("tc", &args).output();
        let netem = netem.is_ok_and(|o| o.status.success());
        if !netem {
            let rules: [&[&str]; 3] = [
                &["add", "table", "inet", "smoltalk_loss"],
                &[
                    "add",
                    "chain",
                    "inet",
                    "smoltalk_loss",
                    "out",
                    "{ type filter hook output priority 0; }",
                ],
                &[
                    "add",
                    "rule",
                    "inet",
                    "smoltalk_loss",
                    "out",
                    "numgen",
                    "random",
                    "mod",
                    "10",
                    "==",
                    "0",
                    "drop",
                ],
            ];
            for rule in rules {
                let out = ns
                    .command("nft", rule)
                    .output()
                    .map_err(CompareError::NftCannotRun)?;
                if !out.status.success() {
                    return Err(CompareError::NftFailed(
                        String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    ));
                }
            }
        }
        let shape = match netem {
            true => link,
            false => LinkShape::default(),
        };
        Ok(LossyLoopback { ns, shape, netem })
    }

    /// Runs `f` on a thread that has entered the namespace (threads it starts are in it too).
    fn run(
        &self,
        f: impl FnOnce() -> Observation + Send + 'static,
    ) -> Result<Observation, CompareError> {
        let path = format!("/var/run/netns/{}", self.ns.name());
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path)
                .map_err(|source| CompareError::OpenNamespace { path, source })?;
            crate::sys::enter_network_namespace(&file).map_err(CompareError::EnterNamespace)?;
            Ok(f())
        })
        .join()
        .map_err(|_| CompareError::ThreadFailed)?
    }
}

fn tcp_outcome(result: std::io::Result<()>) -> (String, String) {
    match result {
        Ok(()) => ("connected".into(), "ok".into()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => (
            "connect: connection refused (ECONNREFUSED)".into(),
            "refused".into(),
        ),
        Err(e) => (format!("connect: {e}"), "error".into()),
    }
}

fn udp_unconnected(to: SocketAddr, wait: StdDuration) -> (String, String) {
    let result = UdpSocket::bind((to.ip(), 0)).and_then(|s| {
        s.set_read_timeout(Some(wait))?;
        s.send_to(b"hello", to)?;
        let mut buf = [0u8; 64];
        // Only the server's reply counts: an unconnected socket takes datagrams from anyone, and another
        // program on loopback may send to the port this one was given (one that found it free a moment before).
        let deadline = std::time::Instant::now() + wait;
        loop {
            let (n, from) = s.recv_from(&mut buf)?;
            if from == to {
                return Ok(n);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            s.set_read_timeout(Some(left))?;
        }
    });
    match result {
        Ok(_) => ("a reply came".into(), "ok".into()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            let icmp = if to.is_ipv6() { "ICMPv6" } else { "ICMP" };
            (
                format!("no reply in 1 s, no error (an unconnected socket is not told of {icmp} errors)"),
                "no_reply".into(),
            )
        }
        Err(e) => (format!("error: {e}"), "error".into()),
    }
}

/// A server that answers one message, then closes its connection and its listening socket; the client then
/// sends a second message.
fn kernel_server_stops(at: SocketAddr) -> (String, String) {
    let Ok(listener) = TcpListener::bind(at) else {
        return ("cannot listen".into(), "error".into());
    };
    let server = std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 64];
            if let Ok(n @ 1..) = stream.read(&mut buf) {
                let _ = stream.write_all(&buf[..n].to_ascii_uppercase());
            }
        }
        // The stream and the listener close here: the server has stopped.
    });
    let result = (|| {
        let mut client = TcpStream::connect(at)?;
        client.set_read_timeout(Some(StdDuration::from_secs(2)))?;
        client.write_all(b"first")?;
        let mut buf = [0u8; 64];
        let n = client.read(&mut buf)?;
        let _ = server.join();
        client.write_all(b"second")?;
        let m = client.read(&mut buf)?;
        Ok::<_, std::io::Error>((n, m))
    })();
    match result {
        Ok((_, 0)) => (
            "first reply came; second: end of stream (the server's FIN)".into(),
            "eof".into(),
        ),
        Ok(_) => ("both replies came".into(), "ok".into()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            (format!("first reply came; second: {e}"), "reset".into())
        }
        Err(e) => (format!("error: {e}"), "error".into()),
    }
}

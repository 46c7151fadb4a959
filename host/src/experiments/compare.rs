//! `smoltalk compare`: the classic lab's questions answered by running them, on the kernel stack and on
//! smoltcp side by side.
//!
//! Each [`Scenario`] runs live on both stacks: the kernel's over loopback (`std::net`), smoltcp's in the lab
//! (two nodes on a virtual segment). What a program saw (the error, or the reply) and how long it took come
//! from the run; the packets come from a capture of the run (the lab's segment; `lo` through a packet socket
//! when privileged), decoded by [`crate::experiments::diagram`]. Where the stacks differ, the explanation is built from the
//! packets both captures show. Nothing in the table is typed in.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration as StdDuration, Instant as WallInstant};

use serde::Serialize;
use smoltalk_core::ClientError;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;

use crate::experiments::diagram::{packets_from_pcap, LadderPacket};
use crate::lab::checks::{sample_text, LabClient, UppercaseLab, PORT};
use crate::lab::LinkFaults;
use crate::stack::instruments::{LoopbackCapture, MemoryCapture};
use crate::stack::network::{drive, Network, Step};
use crate::uppercase::node::{ClientTimeouts, TcpExchange, UdpExchange};

/// The scenarios, in the order of the classic lab's questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Scenario {
    /// Q1: a TCP client started before its server.
    TcpClientBeforeServer,
    /// Q2: a UDP client (unconnected socket) started before its server.
    UdpClientBeforeServer,
    /// Q2: the same with a connected UDP socket.
    ConnectedUdpClientBeforeServer,
    /// Q3: a TCP client aimed at another port than its server's.
    TcpWrongPort,
    /// Q3: a UDP client aimed at another port than its server's.
    UdpWrongPort,
    /// The server stops in the middle of a conversation.
    ServerStoppedMidConversation,
    /// A 1 MiB uppercase transfer over TCP on a link that loses 10 % of the frames.
    LossyTcpTransfer,
    /// 20 UDP requests, up to 5 tries each, on a link that loses 10 % of the frames.
    LossyUdpRequests,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 8] = [
        Scenario::TcpClientBeforeServer,
        Scenario::UdpClientBeforeServer,
        Scenario::ConnectedUdpClientBeforeServer,
        Scenario::TcpWrongPort,
        Scenario::UdpWrongPort,
        Scenario::ServerStoppedMidConversation,
        Scenario::LossyTcpTransfer,
        Scenario::LossyUdpRequests,
    ];

    /// A line for people.
    pub fn title(self) -> &'static str {
        match self {
            Scenario::TcpClientBeforeServer => "Q1 TCP client started before the server",
            Scenario::UdpClientBeforeServer => {
                "Q2 UDP client (unconnected socket) before the server"
            }
            Scenario::ConnectedUdpClientBeforeServer => {
                "Q2 UDP client (connected socket) before the server"
            }
            Scenario::TcpWrongPort => "Q3 TCP client and server on different ports",
            Scenario::UdpWrongPort => "Q3 UDP client and server on different ports",
            Scenario::ServerStoppedMidConversation => {
                "server stopped in the middle of a conversation"
            }
            Scenario::LossyTcpTransfer => "10 % loss: 1 MiB uppercase over TCP",
            Scenario::LossyUdpRequests => "10 % loss: 20 UDP requests, up to 5 tries",
        }
    }
}

/// Packets of one run, counted from its capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PacketCounts {
    /// Every packet captured.
    pub total: usize,
    /// TCP segments opening a connection (SYN without ACK).
    pub syn: usize,
    /// TCP resets.
    pub rst: usize,
    /// TCP segments closing a direction (FIN).
    pub fin: usize,
    /// ICMP port-unreachable errors.
    pub icmp_port_unreachable: usize,
    /// TCP segments sent again.
    pub retransmissions: usize,
    /// UDP datagrams.
    pub udp: usize,
}

/// What one stack did in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Observation {
    /// `kernel` or `smoltcp`.
    pub stack: &'static str,
    /// Where it ran (`loopback`, `lab`).
    pub network: &'static str,
    /// What the program saw, in a line: the error, or what came back.
    pub outcome: String,
    /// A short machine-readable form of the outcome (`refused`, `no_reply`, `reset`, `eof`, `ok`, …).
    pub kind: String,
    /// How long it took, in milliseconds (wall time on the kernel stack, virtual time in the lab).
    pub millis: f64,
    /// Whether `millis` is virtual (lab) time.
    pub virtual_time: bool,
    /// The packets, if a capture could be taken.
    pub packets: Option<PacketCounts>,
    /// Why there are no packets, if there are none.
    pub packets_note: Option<String>,
    /// The capture itself (pcap), for diagrams.
    #[serde(skip)]
    pub capture: Option<Vec<u8>>,
}

impl Observation {
    /// What `stack` saw, with its packets counted from `capture` (or the reason there are none).
    fn new(
        stack: &'static str,
        network: &'static str,
        (outcome, kind): (String, String),
        millis: f64,
        virtual_time: bool,
        capture: Result<Vec<u8>, String>,
    ) -> Observation {
        let counted = capture.and_then(|bytes| match count_packets(&bytes) {
            Ok(counts) => Ok((counts, bytes)),
            Err(e) => Err(format!("capture unreadable: {e}")),
        });
        let (packets, packets_note, capture) = match counted {
            Ok((counts, bytes)) => (Some(counts), None, Some(bytes)),
            Err(note) => (None, Some(note), None),
        };
        Observation {
            stack,
            network,
            outcome,
            kind,
            millis,
            virtual_time,
            packets,
            packets_note,
            capture,
        }
    }
}

/// One scenario on both stacks.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Which scenario.
    pub scenario: Scenario,
    /// Its title.
    pub title: &'static str,
    /// The kernel stack's run.
    pub kernel: Observation,
    /// smoltcp's run (in the lab).
    pub smoltcp: Observation,
    /// smoltcp's client on a TUN device in a namespace (as root only).
    pub smoltcp_tun: Option<Observation>,
    /// Whether the programs saw different outcomes.
    pub differs: bool,
    /// Why, from the packets (empty when they agree).
    pub explanation: String,
}

impl Comparison {
    /// Every run of the scenario: the kernel's, the lab's, and smoltcp on TUN where it ran.
    pub fn observations(&self) -> impl Iterator<Item = &Observation> {
        [
            Some(&self.kernel),
            Some(&self.smoltcp),
            self.smoltcp_tun.as_ref(),
        ]
        .into_iter()
        .flatten()
    }
}

/// Runs `scenarios` (every one if empty) on both stacks; with `tun`, also smoltcp on TUN in a namespace where
/// privileged.
pub fn run_all(scenarios: &[Scenario], tun: bool) -> Vec<Comparison> {
    let all = if scenarios.is_empty() {
        &Scenario::ALL[..]
    } else {
        scenarios
    };
    all.iter().map(|&s| compare(s, tun)).collect()
}

/// Runs `scenario` on both stacks (and on TUN, with `tun`, where privileged) and compares them.
pub fn compare(scenario: Scenario, tun: bool) -> Comparison {
    let kernel = kernel_run(scenario);
    let smoltcp = lab_run(scenario);
    let smoltcp_tun = if tun { tun_run(scenario) } else { None };
    // A stack that could not run the scenario here is not a difference between the stacks.
    let ran = kernel.kind != "not_run" && smoltcp.kind != "not_run";
    let differs = ran && kernel.kind != smoltcp.kind;
    let mut explanation = if differs {
        explain(scenario, &kernel, &smoltcp)
    } else {
        String::new()
    };
    // smoltcp on a real device against the kernel, where it ran and saw something else than in the lab.
    if let Some(tun) = smoltcp_tun
        .as_ref()
        .filter(|t| t.kind != "not_run" && t.kind != smoltcp.kind)
    {
        let packets = tun.packets.map_or("no capture".to_string(), |p| {
            format!(
                "{} packets, {} retransmissions, RST {}",
                p.total, p.retransmissions, p.rst
            )
        });
        let line = format!(
            "on TUN against the kernel, smoltcp's client saw: {} ({packets})",
            tun.outcome
        );
        explanation = match explanation.is_empty() {
            true => line,
            false => format!("{explanation}; {line}"),
        };
    }
    let differs = differs || !explanation.is_empty();
    Comparison {
        scenario,
        title: scenario.title(),
        kernel,
        smoltcp,
        smoltcp_tun,
        differs,
        explanation,
    }
}

/// One line on why the stacks differ, from what their captures show.
fn explain(scenario: Scenario, kernel: &Observation, smoltcp: &Observation) -> String {
    let icmp = |o: &Observation| o.packets.map(|p| p.icmp_port_unreachable);
    let rst = |o: &Observation| o.packets.map(|p| p.rst);
    match (scenario, icmp(kernel), icmp(smoltcp)) {
        (Scenario::ConnectedUdpClientBeforeServer, k, Some(s)) if s > 0 => format!(
            "both hosts answered with ICMP port unreachable (kernel capture: {}, lab: {s}); the kernel hands it to a \
             connected socket as ECONNREFUSED, smoltcp never hands ICMP errors to UDP sockets",
            k.map_or("not taken".into(), |k| k.to_string())
        ),
        (Scenario::LossyTcpTransfer, _, _) => format!(
            "the kernel: {:.0} ms, {} packets captured (loopback carries 64 KiB segments; a packet dropped before \
             the wire is not in the capture); smoltcp: {:.0} ms, {} packets of at most 1514 bytes, {} \
             retransmissions, {} RST",
            kernel.millis,
            kernel.packets.map_or("?".into(), |p| p.total.to_string()),
            smoltcp.millis,
            smoltcp.packets.map_or("?".into(), |p| p.total.to_string()),
            smoltcp.packets.map_or("?".into(), |p| p.retransmissions.to_string()),
            rst(smoltcp).map_or("?".into(), |n| n.to_string()),
        ),
        (Scenario::ServerStoppedMidConversation, _, _) => {
            let kernel_packets = match kernel.packets {
                Some(p) => format!("FIN {} then RST {} (to the second message)", p.fin, p.rst),
                None => "its packets were not captured (that needs root)".into(),
            };
            format!(
                "the kernel's server closed its socket: {kernel_packets}; smoltcp's sockets were aborted: FIN {}, RST {}",
                smoltcp.packets.map_or("?".into(), |p| p.fin.to_string()),
                rst(smoltcp).map_or("?".into(), |n| n.to_string()),
            )
        }
        _ => format!(
            "kernel: {} (RST {}, ICMP unreachable {}); smoltcp: {} (RST {}, ICMP unreachable {})",
            kernel.outcome,
            rst(kernel).map_or("?".into(), |n| n.to_string()),
            icmp(kernel).map_or("?".into(), |n| n.to_string()),
            smoltcp.outcome,
            rst(smoltcp).map_or("?".into(), |n| n.to_string()),
            icmp(smoltcp).map_or("?".into(), |n| n.to_string()),
        ),
    }
}

/// Counts the packets of a capture.
pub fn count_packets(pcap: &[u8]) -> Result<PacketCounts, String> {
    let packets = packets_from_pcap(pcap)?;
    Ok(count(&packets))
}

fn count(packets: &[LadderPacket]) -> PacketCounts {
    let mut c = PacketCounts {
        total: packets.len(),
        ..PacketCounts::default()
    };
    for p in packets {
        // TCP labels start with the flags: one bare (`SYN seq=…`), several in brackets (`[SYN, ACK] seq=…`).
        let tcp = p.label.contains(" seq=");
        let flags = match p.label.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(""),
            None => p.label.split(' ').next().unwrap_or(""),
        };
        if tcp && flags.contains("SYN") && !flags.contains("ACK") {
            c.syn += 1;
        }
        if tcp && flags.contains("RST") {
            c.rst += 1;
        }
        if tcp && flags.contains("FIN") {
            c.fin += 1;
        }
        if p.label.contains("port unreachable") {
            c.icmp_port_unreachable += 1;
        }
        if p.label.starts_with("UDP") {
            c.udp += 1;
        }
        if p.mark
            .as_deref()
            .is_some_and(|m| m.split(", ").any(|m| m == "retransmission"))
        {
            c.retransmissions += 1;
        }
    }
    c
}

// ---------------------------------------------------------------------------------------------- kernel side

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_or(40000, |a| a.port())
}

/// A free port for both TCP and UDP on loopback.
fn free_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < n {
        let p = free_port();
        if !ports.contains(&p) && UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).is_ok() {
            ports.push(p);
        }
    }
    ports
}

fn kernel_run(scenario: Scenario) -> Observation {
    if matches!(
        scenario,
        Scenario::LossyTcpTransfer | Scenario::LossyUdpRequests
    ) {
        let network = "namespace lo, 10 % loss";
        return match LossyLoopback::create() {
            Ok(lossy) => lossy
                .run(move || kernel_run_here(scenario, network))
                .unwrap_or_else(|why| not_run("kernel", network, why)),
            Err(why) => not_run("kernel", network, why),
        };
    }
    kernel_run_here(scenario, "loopback")
}

fn kernel_run_here(scenario: Scenario, network: &'static str) -> Observation {
    let ports = free_ports(2);
    let (port, other) = (ports[0], ports[1]);
    let capture = LoopbackCapture::start(vec![port, other]);
    let started = WallInstant::now();
    let (outcome, kind) = kernel_scenario(scenario, port, other);
    let millis = started.elapsed().as_secs_f64() * 1e3;
    let capture = match capture {
        Ok(capture) => Ok(capture.finish()),
        Err(e) => Err(format!(
            "not captured: a packet socket on lo needs root ({e})"
        )),
    };
    Observation::new("kernel", network, (outcome, kind), millis, false, capture)
}

/// Runs one scenario on the kernel stack; returns what the program saw and its short kind.
fn kernel_scenario(scenario: Scenario, port: u16, other: u16) -> (String, String) {
    let at = |p: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
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
            let result = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|s| {
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
            let _ = stream.set_read_timeout(Some(StdDuration::from_secs(120)));
            let _ = crate::uppercase::kernel::serve_connection(stream);
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
    let Ok(client) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
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
/// rule where the kernel has no netem): the kernel side of the lossy scenarios runs in it, on a thread of its
/// own. Needs root; deleted on drop.
struct LossyLoopback {
    ns: crate::tools::netns::Namespace,
}

impl LossyLoopback {
    fn create() -> Result<LossyLoopback, String> {
        if !crate::tools::netns::is_root() {
            return Err(
                "loss on the kernel's loopback needs `tc qdisc netem` in a namespace (root)".into(),
            );
        }
        let ns = crate::tools::netns::Namespace::create(&format!(
            "smoltalk-compare-{}",
            std::process::id()
        ))
        .map_err(|e| e.to_string())?;
        // netem where the kernel has it; else nftables, dropping a random tenth of what leaves (on loopback,
        // every packet leaves once).
        let netem = ns
            .command(
                "tc",
                &["qdisc", "add", "dev", "lo", "root", "netem", "loss", "10%"],
            )
            .output();
        if !netem.is_ok_and(|o| o.status.success()) {
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
                    .map_err(|e| format!("the kernel has no netem and nft cannot run: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "the kernel has no netem, and nft failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
        }
        Ok(LossyLoopback { ns })
    }

    /// Runs `f` on a thread that has entered the namespace (threads it starts are in it too).
    fn run(&self, f: impl FnOnce() -> Observation + Send + 'static) -> Result<Observation, String> {
        let path = format!("/var/run/netns/{}", self.ns.name());
        std::thread::spawn(move || {
            let file =
                std::fs::File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
            if let Err(e) = crate::sys::enter_network_namespace(&file) {
                return Err(format!("cannot enter the namespace: {e}"));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| "the scenario's thread failed".to_string())?
    }
}

fn not_run(stack: &'static str, network: &'static str, why: String) -> Observation {
    let outcome = (format!("not run: {why}"), "not_run".to_string());
    Observation::new(stack, network, outcome, 0.0, false, Err("not run".into()))
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
    let result = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|s| {
        s.set_read_timeout(Some(wait))?;
        s.send_to(b"hello", to)?;
        let mut buf = [0u8; 64];
        s.recv_from(&mut buf)
    });
    match result {
        Ok(_) => ("a reply came".into(), "ok".into()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            (
                "no reply in 1 s, no error (an unconnected socket is not told of ICMP errors)"
                    .into(),
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

// ----------------------------------------------------------------------------------------------- lab side

fn lab_run(scenario: Scenario) -> Observation {
    let mut lab = UppercaseLab::new();
    let capture = MemoryCapture::default();
    lab.lab.capture_to(Box::new(capture.clone()));
    let start = lab.lab.now();
    let (outcome, kind) = lab_scenario(scenario, &mut lab);
    let millis = (lab.lab.now() - start).total_micros() as f64 / 1e3;
    drop(lab.lab.take_capture());
    Observation::new(
        "smoltcp",
        "lab",
        (outcome, kind),
        millis,
        true,
        Ok(capture.bytes()),
    )
}

fn client_error(e: &ClientError) -> (String, String) {
    let kind = match e {
        ClientError::ConnectionRefused => "refused",
        ClientError::NoReply { .. } => "no_reply",
        ClientError::ConnectionReset => "reset",
        ClientError::ClosedEarly { .. } => "eof",
        ClientError::ConnectTimedOut | ClientError::ReplyTimedOut => "timeout",
        _ => "error",
    };
    (e.to_string(), kind.into())
}

fn lab_scenario(scenario: Scenario, lab: &mut UppercaseLab) -> (String, String) {
    let timeouts = ClientTimeouts {
        reply: Duration::from_secs(1),
        tries: 1,
        ..ClientTimeouts::default()
    };
    let client = lab.client;
    let one = |lab: &mut UppercaseLab, c: LabClient| -> (String, String) {
        match lab.run(&mut [c]) {
            Ok(outcomes) => match outcomes.into_iter().next() {
                Some(Ok(())) => ("the reply came".into(), "ok".into()),
                Some(Err(e)) => client_error(&e),
                None => ("no outcome".into(), "error".into()),
            },
            Err(e) => (format!("lab failed: {e}"), "error".into()),
        }
    };
    // The lab's server listens on PORT; "before the server" aims at a port nothing listens on.
    let closed = PORT + 1;
    match scenario {
        Scenario::TcpClientBeforeServer | Scenario::TcpWrongPort => {
            let c = TcpExchange::with_messages(
                lab.lab.node(client),
                UppercaseLab::endpoint(closed),
                timeouts,
                [b"hello".to_vec()],
            );
            one(lab, LabClient::Tcp(c))
        }
        Scenario::UdpClientBeforeServer
        | Scenario::UdpWrongPort
        | Scenario::ConnectedUdpClientBeforeServer => {
            match UdpExchange::with_messages(
                lab.lab.node(client),
                UppercaseLab::endpoint(closed),
                timeouts,
                [b"hello".to_vec()],
            ) {
                Ok(c) => one(lab, LabClient::Udp(c)),
                Err(e) => client_error(&e),
            }
        }
        Scenario::ServerStoppedMidConversation => lab_server_stops(lab),
        Scenario::LossyTcpTransfer => {
            lose_ten_percent(lab);
            let text = sample_text(1 << 20, 41);
            let timeouts = ClientTimeouts {
                reply: Duration::from_secs(120),
                ..ClientTimeouts::default()
            };
            let mut c = LabClient::Tcp(TcpExchange::with_messages(
                lab.lab.node(client),
                UppercaseLab::endpoint(PORT),
                timeouts,
                [text.clone()],
            ));
            match lab.run(std::slice::from_mut(&mut c)) {
                Ok(o) if o.first().is_some_and(|r| r.is_ok()) => {
                    let replies = c.take_replies();
                    let exact = replies
                        .first()
                        .is_some_and(|(r, _)| *r == text.to_ascii_uppercase());
                    match exact {
                        true => (
                            "1 MiB came back uppercased, byte for byte".into(),
                            "ok".into(),
                        ),
                        false => ("the reply differs".into(), "error".into()),
                    }
                }
                Ok(o) => o
                    .first()
                    .and_then(|r| r.as_ref().err())
                    .map_or(("no outcome".into(), "error".into()), client_error),
                Err(e) => (format!("lab failed: {e}"), "error".into()),
            }
        }
        Scenario::LossyUdpRequests => {
            lose_ten_percent(lab);
            let timeouts = ClientTimeouts {
                reply: Duration::from_millis(500),
                tries: 5,
                ..ClientTimeouts::default()
            };
            let messages: Vec<Vec<u8>> = (0..20)
                .map(|i| format!("request {i}").into_bytes())
                .collect();
            match UdpExchange::with_messages(
                lab.lab.node(client),
                UppercaseLab::endpoint(PORT),
                timeouts,
                messages,
            ) {
                Ok(c) => {
                    let mut clients = [LabClient::Udp(c)];
                    match lab.run(&mut clients) {
                        Ok(o) => {
                            let replies = clients[0].take_replies();
                            let retried = replies.iter().filter(|(_, tries)| *tries > 1).count();
                            let failed = o
                                .first()
                                .and_then(|r| r.as_ref().err())
                                .map(|e| e.to_string());
                            let line = format!(
                                "{} of 20 answered; {retried} needed more than one try",
                                replies.len()
                            );
                            match failed {
                                None => (line, "ok".into()),
                                Some(e) => (format!("{line}; then: {e}"), "no_reply".into()),
                            }
                        }
                        Err(e) => (format!("lab failed: {e}"), "error".into()),
                    }
                }
                Err(e) => client_error(&e),
            }
        }
    }
}

fn lose_ten_percent(lab: &mut UppercaseLab) {
    for (node, seed) in [(lab.client, 11), (lab.server, 29)] {
        lab.lab.set_faults(
            node,
            LinkFaults {
                drop_chance: 10,
                seed,
                ..LinkFaults::default()
            },
        );
    }
}

/// The lab's server answers the first message, then its sockets are closed (as when the program stops):
/// every TCP socket of the server node is aborted, which sends RST to a connected peer.
fn lab_server_stops(lab: &mut UppercaseLab) -> (String, String) {
    let client = lab.client;
    let server = lab.server;
    let timeouts = ClientTimeouts {
        reply: Duration::from_secs(2),
        ..ClientTimeouts::default()
    };
    let mut exchange =
        TcpExchange::new(lab.lab.node(client), UppercaseLab::endpoint(PORT), timeouts);
    exchange.push(b"first".to_vec());
    let mut stopped = false;
    let mut first_reply = false;
    let servers = &mut lab.servers;
    let result = drive(&mut lab.lab, |net| {
        let now = net.now();
        let mut moved = false;
        if !stopped {
            moved |= servers.poll(net.node(server));
        }
        match exchange.step(net.node(client), now) {
            Ok(Step::Done(())) => Step::Done(Ok(())),
            Ok(Step::Pending { moved: m, poll_at }) => {
                moved |= m;
                if !first_reply && exchange.next_reply().is_some() {
                    first_reply = true;
                    // The server stops: all its sockets close at once.
                    let node = net.node(server);
                    let handles: Vec<SocketHandle> = node
                        .sockets
                        .iter()
                        .filter(|(_, s)| matches!(s, smoltcp::socket::Socket::Tcp(_)))
                        .map(|(h, _)| h)
                        .collect();
                    for h in handles {
                        node.sockets.get_mut::<tcp::Socket>(h).abort();
                    }
                    stopped = true;
                    exchange.push(b"second".to_vec());
                    exchange.finish();
                    moved = true;
                }
                Step::Pending { moved, poll_at }
            }
            Err(e) => Step::Done(Err(e)),
        }
    });
    match result {
        Ok(Ok(())) => ("both replies came".into(), "ok".into()),
        Ok(Err(e)) => {
            let (line, kind) = client_error(&e);
            (format!("first reply came; second: {line}"), kind)
        }
        Err(e) => (format!("lab failed: {e}"), "error".into()),
    }
}

// ---------------------------------------------------------------------------------------------- rendering

/// How to print the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text.
    Table,
    /// A Markdown table.
    Markdown,
    /// JSON, one object per scenario.
    Json,
}

fn packets_cell(o: &Observation) -> String {
    match (o.packets, &o.packets_note) {
        (Some(p), _) => format!(
            "{} pkts: SYN {} FIN {} RST {} ICMP-unreach {} UDP {} retrans {}",
            p.total, p.syn, p.fin, p.rst, p.icmp_port_unreachable, p.udp, p.retransmissions
        ),
        (None, Some(note)) => note.clone(),
        (None, None) => "-".into(),
    }
}

fn time_cell(o: &Observation) -> String {
    format!(
        "{:.1} ms{}",
        o.millis,
        if o.virtual_time { " (virtual)" } else { "" }
    )
}

/// The comparison as `format` says.
pub fn render(comparisons: &[Comparison], format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(comparisons)
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")),
        Format::Markdown => {
            let mut out = String::from(
                "| scenario | stack | outcome | time | packets |\n|---|---|---|---|---|\n",
            );
            for c in comparisons {
                for o in c.observations() {
                    let _ = writeln!(
                        out,
                        "| {} | {} ({}) | {} | {} | {} |",
                        c.title,
                        o.stack,
                        o.network,
                        o.outcome.replace('|', "\\|"),
                        time_cell(o),
                        packets_cell(o)
                    );
                }
                if c.differs {
                    let _ = writeln!(
                        out,
                        "| | **differ** | {} | | |",
                        c.explanation.replace('|', "\\|")
                    );
                }
            }
            out
        }
        Format::Table => {
            let mut out = String::new();
            for c in comparisons {
                let _ = writeln!(out, "{}", c.title);
                for o in c.observations() {
                    let _ = writeln!(
                        out,
                        "  {:<8} {:<9} {:<22} {}\n           {}",
                        o.stack,
                        o.network,
                        time_cell(o),
                        o.outcome,
                        packets_cell(o)
                    );
                }
                if c.differs {
                    let _ = writeln!(out, "  differ:  {}", c.explanation);
                }
            }
            out
        }
    }
}

/// Writes one ladder diagram per scenario and stack into `dir` (`<scenario>-<stack>.svg`), drawn from the
/// runs' captures, each capture beside its picture (`.pcap`). Returns the diagrams written.
pub fn write_diagrams(
    comparisons: &[Comparison],
    dir: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for c in comparisons {
        for o in c.observations() {
            let Some(capture) = &o.capture else { continue };
            let packets = packets_from_pcap(capture)?;
            let name = serde_json::to_value(c.scenario)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "scenario".into());
            let path = dir.join(format!("{name}-{}.svg", o.stack));
            let title = format!("{} — {} ({})", c.title, o.stack, o.network);
            std::fs::write(
                &path,
                crate::experiments::diagram::ladder_svg(&title, &packets),
            )
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            // The capture the picture was drawn from, beside it, for tshark or Wireshark.
            let pcap = path.with_extension("pcap");
            std::fs::write(&pcap, capture)
                .map_err(|e| format!("cannot write {}: {e}", pcap.display()))?;
            written.push(path);
        }
    }
    Ok(written)
}

// ------------------------------------------------------------------------------- smoltcp on TUN (root only)

/// The smoltcp client on a real TUN device inside a namespace this run creates (kernel servers on its other
/// side, 10.0.2.2), run as this very binary with `--pcap`: `None` where namespaces cannot be made.
fn tun_run(scenario: Scenario) -> Option<Observation> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    if !crate::tools::netns::is_root() || !std::path::Path::new("/dev/net/tun").exists() {
        return None;
    }
    let network = "TUN in a namespace";
    let name = format!(
        "smoltalk-cmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let ns = match crate::tools::netns::Namespace::create(&name) {
        Ok(ns) => ns,
        Err(e) => return Some(not_run("smoltcp-tun", network, e.to_string())),
    };
    if let Err(e) = ns.add_device("st0", "tun", "10.0.2.2/24", 1500) {
        return Some(not_run("smoltcp-tun", network, e.to_string()));
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe.to_string_lossy().into_owned(),
        Err(e) => return Some(not_run("smoltcp-tun", network, e.to_string())),
    };
    let pcap = std::env::temp_dir().join(format!("{name}.pcap"));
    let pcap_arg = pcap.to_string_lossy().into_owned();
    let client = |kind: &str, port: u16, extra: &[&str]| {
        let mut args = vec![kind, "--stack", "tun", "--dev", "st0", "--pcap", &pcap_arg];
        args.extend_from_slice(extra);
        let port = port.to_string();
        let mut cmd = ns.command(&exe, &args);
        cmd.args(["10.0.2.2", &port]);
        cmd
    };
    let server = |kind: &str| {
        crate::tools::netns::Server::start(
            ns.command(&exe, &[kind, "--bind", "10.0.2.2", "--port", "12000"]),
        )
        .map_err(|e| e.to_string())
    };
    let started = WallInstant::now();
    let result = match scenario {
        Scenario::TcpClientBeforeServer => run_client(
            client("tcp-client", 12000, &["--timeout", "2"]),
            &[b"hello\n"],
            None,
        ),
        Scenario::TcpWrongPort => server("tcp-server").and_then(|_s| {
            run_client(
                client("tcp-client", 12001, &["--timeout", "2"]),
                &[b"hello\n"],
                None,
            )
        }),
        Scenario::UdpClientBeforeServer | Scenario::ConnectedUdpClientBeforeServer => run_client(
            client("udp-client", 12000, &["--tries", "1", "--timeout", "1"]),
            &[b"hello\n"],
            None,
        ),
        Scenario::UdpWrongPort => server("udp-server").and_then(|_s| {
            run_client(
                client("udp-client", 12001, &["--tries", "1", "--timeout", "1"]),
                &[b"hello\n"],
                None,
            )
        }),
        Scenario::ServerStoppedMidConversation => server("tcp-server").and_then(|s| {
            run_client(
                client("tcp-client", 12000, &["--timeout", "2"]),
                &[b"first\n", b"second\n"],
                Some(s),
            )
        }),
        Scenario::LossyTcpTransfer => server("tcp-server").and_then(|_s| {
            let mut line = sample_text(1 << 20, 41);
            line.retain(|&b| b != b'\n');
            line.push(b'\n');
            run_client(
                client(
                    "tcp-client",
                    12000,
                    &["--timeout", "30", "--drop-chance", "10", "--seed", "7"],
                ),
                &[&line],
                None,
            )
        }),
        Scenario::LossyUdpRequests => server("udp-server").and_then(|_s| {
            let lines: Vec<Vec<u8>> = (0..20)
                .map(|i| format!("request {i}\n").into_bytes())
                .collect();
            let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
            run_client(
                client(
                    "udp-client",
                    12000,
                    &[
                        "--tries",
                        "5",
                        "--timeout",
                        "0.5",
                        "--drop-chance",
                        "10",
                        "--seed",
                        "7",
                    ],
                ),
                &refs,
                None,
            )
        }),
    };
    let millis = started.elapsed().as_secs_f64() * 1e3;
    let capture = std::fs::read(&pcap).ok();
    let _ = std::fs::remove_file(&pcap);
    let (outcome, kind) = match result {
        Ok((replies, error)) => tun_outcome(scenario, replies, error),
        Err(e) => return Some(not_run("smoltcp-tun", network, e)),
    };
    Some(Observation::new(
        "smoltcp-tun",
        network,
        (outcome, kind),
        millis,
        false,
        capture.ok_or_else(|| "no capture".to_string()),
    ))
}

/// Runs a client, feeding it `lines` one after another (each after the previous reply, so a `stop` server can
/// be stopped after the first); returns the reply lines and the error line, if it failed.
fn run_client(
    mut cmd: std::process::Command,
    lines: &[&[u8]],
    mut stop: Option<crate::tools::netns::Server>,
) -> Result<(usize, Option<String>), String> {
    use std::io::BufRead;
    use std::process::Stdio;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the client: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut replies = 0;
    for (i, line) in lines.iter().enumerate() {
        if stdin.write_all(line).is_err() {
            break;
        }
        let _ = stdin.flush();
        let mut reply = String::new();
        if stop.is_some() || i + 1 == lines.len() || lines.len() > 1 {
            match stdout.read_line(&mut reply) {
                Ok(1..) => replies += 1,
                _ => break,
            }
        }
        if i == 0 {
            if let Some(server) = stop.take() {
                // The server stops: SIGTERM, and the kernel closes its sockets as the process ends.
                let _ = crate::sys::kill(server.child.id(), crate::sys::Signal::Terminate);
                drop(server);
            }
        }
    }
    drop(stdin);
    let mut rest = String::new();
    while let Ok(1..) = stdout.read_line(&mut rest) {
        replies += 1;
        rest.clear();
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let error = (!output.status.success()).then(|| {
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .find(|l| l.starts_with("smoltalk: error:"))
            .unwrap_or("failed without a message")
            .trim_start_matches("smoltalk: error: ")
            .to_string()
    });
    Ok((replies, error))
}

fn tun_outcome(scenario: Scenario, replies: usize, error: Option<String>) -> (String, String) {
    let kind = |e: &str| {
        let e = e.to_ascii_lowercase();
        if e.contains("refused") {
            "refused"
        } else if e.contains("no reply") {
            "no_reply"
        } else if e.contains("reset") {
            "reset"
        } else if e.contains("closed") {
            "eof"
        } else {
            "error"
        }
    };
    match (scenario, error) {
        (Scenario::LossyUdpRequests, e) => {
            let line = format!("{replies} of 20 answered");
            match e {
                None => (line, "ok".into()),
                Some(e) => (format!("{line}; then: {e}"), "no_reply".into()),
            }
        }
        (Scenario::ServerStoppedMidConversation, Some(e)) if replies >= 1 => {
            (format!("first reply came; second: {e}"), kind(&e).into())
        }
        (Scenario::LossyTcpTransfer, None) => {
            ("1 MiB came back (line for line)".into(), "ok".into())
        }
        (_, Some(e)) => (e.clone(), kind(&e).into()),
        (_, None) => (format!("{replies} replies came"), "ok".into()),
    }
}

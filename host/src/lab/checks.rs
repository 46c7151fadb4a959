//! The checks `smoltalk lab` runs: the uppercase service between a client node (10.0.2.2) and a server node
//! (10.0.2.15) of a [`Lab`], each check an exchange whose replies are compared byte for byte with what the
//! transform must give.

use std::fmt::Write as _;
use std::time::Instant as WallInstant;

use smoltalk_core::{uppercase_in_place, ClientError};
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpCidr, IpEndpoint, Ipv4Address};

use crate::lab::Lab;
use crate::stack::instruments::CaptureFile;
use crate::stack::network::{drive, earliest, Network, NetworkError, NodeId, Step};
use crate::uppercase::node::{
    ClientTimeouts, TcpExchange, UdpExchange, UppercaseServers, DEFAULT_MAX_DATAGRAM,
};

/// The server node's address.
pub const SERVER_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// The client node's address.
pub const CLIENT_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// The uppercase service's port.
pub const PORT: u16 = smoltalk_core::DEFAULT_PORT;
/// TCP sockets in the server's pool.
pub const SERVER_CONNECTIONS: usize = 4;

/// The TCP receive buffer of the lab's nodes.
pub const LAB_TCP_RECEIVE: usize = 64 * 1024;

/// The TCP send buffer of the lab's nodes: half the peer's receive buffer, so that a sender's unacknowledged
/// bytes can never fill the receiver's window. smoltcp 0.14 throws a segment away, ACK field and all, when its
/// sequence number is outside the receive window; a pure ACK whose sequence number sits exactly at the right
/// edge (the sender filled the window and its first segment was lost), any segment into a zero window unless it
/// starts exactly at the next expected byte, and a retransmission of bytes already received are all thrown away
/// so. With equal buffers, a lossy link between two smoltcp nodes loses ACKs that way until a whole
/// retransmission timeout passes, again and again, and can deadlock (see `crate::lab::soak`). With the receive
/// buffer twice the send buffer the window never fills and never closes: every ACK is taken.
pub const LAB_TCP_SEND: usize = 32 * 1024;

/// The standard lab: a server node serving TCP and UDP uppercase on port 12000, and a client node.
pub struct UppercaseLab {
    /// The network.
    pub lab: Lab,
    /// The server node.
    pub server: NodeId,
    /// The client node.
    pub client: NodeId,
    /// The servers on the server node.
    pub servers: UppercaseServers,
}

impl UppercaseLab {
    /// Builds the two nodes, with [`LAB_TCP_RECEIVE`] and [`LAB_TCP_SEND`] buffers, and starts the servers.
    pub fn new() -> Self {
        UppercaseLab::with_buffers(LAB_TCP_RECEIVE, Some(LAB_TCP_SEND))
    }

    /// Builds the two nodes with TCP receive buffers of `tcp` bytes and send buffers of `tcp_send` bytes
    /// (default: `tcp`) on both nodes, and starts the servers.
    pub fn with_buffers(tcp: usize, tcp_send: Option<usize>) -> Self {
        UppercaseLab::in_lab(Lab::default(), tcp, tcp_send)
    }

    /// [`UppercaseLab::with_buffers`] on `lab`, an empty lab set up as the caller likes.
    pub fn in_lab(mut lab: Lab, tcp: usize, tcp_send: Option<usize>) -> Self {
        let server = lab.add_node("server", IpCidr::new(SERVER_IP.into(), 24));
        let client = lab.add_node("client", IpCidr::new(CLIENT_IP.into(), 24));
        for node in [server, client] {
            lab.node(node).buffers.tcp = tcp;
            lab.node(node).buffers.tcp_send = tcp_send;
        }
        let servers = UppercaseServers::new(
            lab.node(server),
            PORT,
            SERVER_CONNECTIONS,
            true,
            DEFAULT_MAX_DATAGRAM,
        )
        .expect("a fresh node accepts the server's sockets");
        UppercaseLab {
            lab,
            server,
            client,
            servers,
        }
    }

    /// The server's endpoint on `port`.
    pub fn endpoint(port: u16) -> IpEndpoint {
        IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), port)
    }

    /// Runs `clients` on the client node side by side until each has finished or failed; the server keeps
    /// serving meanwhile. Returns each client's outcome, in order.
    pub fn run(
        &mut self,
        clients: &mut [LabClient],
    ) -> Result<Vec<Result<(), ClientError>>, NetworkError> {
        let mut outcomes: Vec<Option<Result<(), ClientError>>> = vec![None; clients.len()];
        let (server, client) = (self.server, self.client);
        let servers = &mut self.servers;
        drive(&mut self.lab, |lab| {
            let now = lab.now();
            let mut moved = servers.poll(lab.node(server));
            let mut poll_at = None;
            for (exchange, outcome) in clients.iter_mut().zip(outcomes.iter_mut()) {
                if outcome.is_some() {
                    continue;
                }
                match exchange.step(lab, client, now) {
                    Ok(Step::Done(())) => *outcome = Some(Ok(())),
                    Ok(Step::Pending {
                        moved: m,
                        poll_at: p,
                    }) => {
                        moved |= m;
                        poll_at = earliest(poll_at, p);
                    }
                    Err(e) => *outcome = Some(Err(e)),
                }
            }
            if outcomes.iter().all(Option::is_some) {
                Step::Done(())
            } else {
                Step::Pending { moved, poll_at }
            }
        })?;
        Ok(outcomes.into_iter().flatten().collect())
    }
}

impl UppercaseLab {
    /// Lets `duration` of virtual time pass with the server serving (timers fire, retransmissions go out).
    pub fn run_for(&mut self, duration: Duration) -> Result<(), NetworkError> {
        let until = self.lab.now() + duration;
        let (server, servers) = (self.server, &mut self.servers);
        drive(&mut self.lab, |lab| {
            let moved = servers.poll(lab.node(server));
            if lab.now() >= until {
                Step::Done(())
            } else {
                Step::Pending {
                    moved,
                    poll_at: Some(until),
                }
            }
        })
    }
}

impl Default for UppercaseLab {
    fn default() -> Self {
        UppercaseLab::new()
    }
}

/// A client the lab runs: TCP or UDP.
pub enum LabClient {
    /// A TCP client.
    Tcp(TcpExchange),
    /// A UDP client.
    Udp(UdpExchange),
}

impl LabClient {
    fn step<N: Network>(
        &mut self,
        net: &mut N,
        node: NodeId,
        now: smoltcp::time::Instant,
    ) -> Result<Step<()>, ClientError> {
        match self {
            LabClient::Tcp(c) => c.step(net.node(node), now),
            LabClient::Udp(c) => c.step(net.node(node), now),
        }
    }

    /// Every reply received so far, in order (UDP: with the tries each took).
    pub fn take_replies(&mut self) -> Vec<(Vec<u8>, u32)> {
        let mut replies = Vec::new();
        match self {
            LabClient::Tcp(c) => {
                while let Some(reply) = c.next_reply() {
                    replies.push((reply, 1));
                }
            }
            LabClient::Udp(c) => {
                while let Some(reply) = c.next_reply() {
                    replies.push(reply);
                }
            }
        }
        replies
    }
}

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// What was checked.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was sent and what came back, in a line.
    pub detail: String,
    /// Frames on the segment during the check.
    pub packets: u64,
    /// Virtual time the check took.
    pub virtual_time: Duration,
    /// Real time the check took.
    pub wall_time: std::time::Duration,
}

/// Everything `smoltalk lab` found.
#[derive(Debug, Clone)]
pub struct LabReport {
    /// What the lab was (its first line).
    pub title: String,
    /// Each check, in order.
    pub checks: Vec<CheckResult>,
    /// Frames on the segment in all.
    pub packets: u64,
    /// Bytes on the segment in all.
    pub bytes: u64,
    /// Virtual time in all.
    pub virtual_time: Duration,
    /// Real time the whole run took.
    pub wall_time: std::time::Duration,
}

impl LabReport {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The report as people read it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.title);
        for check in &self.checks {
            let _ = writeln!(
                out,
                "  {} {:<46} {:>5} packets {:>6.3} s virtual {:>7.2} ms real\n         {}",
                if check.passed { "ok  " } else { "FAIL" },
                check.name,
                check.packets,
                check.virtual_time.total_micros() as f64 / 1e6,
                check.wall_time.as_secs_f64() * 1e3,
                check.detail
            );
        }
        let passed = self.checks.iter().filter(|c| c.passed).count();
        let _ = writeln!(
            out,
            "{passed} of {} checks held; {} packets, {} bytes on the segment; {:.3} s virtual time, {:.3} s real time",
            self.checks.len(),
            self.packets,
            self.bytes,
            self.virtual_time.total_micros() as f64 / 1e6,
            self.wall_time.as_secs_f64()
        );
        out
    }
}

/// Shows up to 32 bytes of a message, escaping what is not printable ASCII.
pub fn preview(bytes: &[u8]) -> String {
    let mut shown = String::new();
    let mut taken = 0;
    for byte in bytes {
        if shown.len() >= 28 {
            break;
        }
        shown.extend(std::ascii::escape_default(*byte).map(char::from));
        taken += 1;
    }
    if taken < bytes.len() {
        let _ = write!(shown, "… ({} bytes)", bytes.len());
    }
    format!("\"{shown}\"")
}

fn uppercased(message: &[u8]) -> Vec<u8> {
    let mut expected = message.to_vec();
    uppercase_in_place(&mut expected);
    expected
}

/// A deterministic pseudo-random text of `len` bytes, mixed case with punctuation and digits.
pub fn sample_text(len: usize, seed: u64) -> Vec<u8> {
    const ALPHABET: &[u8] =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?-_\n";
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize]
        })
        .collect()
}

/// Every byte value, twice.
pub fn binary_payload() -> Vec<u8> {
    (0..512u32).map(|i| (i % 256) as u8).collect()
}

struct CheckRun<'a> {
    lab: &'a mut UppercaseLab,
    checks: Vec<CheckResult>,
}

impl CheckRun<'_> {
    /// Runs `clients` (each with the messages it sent) and records whether every reply is the uppercase of its
    /// request, or, when `expect_error` is given, whether each client failed with that error.
    fn check(
        &mut self,
        name: &str,
        clients: Vec<(LabClient, Vec<Vec<u8>>)>,
        expect_error: Option<ClientError>,
    ) -> Result<(), NetworkError> {
        let before = (self.lab.lab.link_stats(), self.lab.lab.now());
        let wall = WallInstant::now();
        let (mut exchanges, sent): (Vec<_>, Vec<_>) = clients.into_iter().unzip();
        let outcomes = self.lab.run(&mut exchanges)?;
        let mut passed = true;
        let mut notes = Vec::new();
        let mut bytes = 0;
        let mut max_tries = 0;
        let mut first = None;
        for ((exchange, messages), outcome) in exchanges.iter_mut().zip(&sent).zip(&outcomes) {
            let replies = exchange.take_replies();
            match (outcome, expect_error) {
                (Ok(()), None) => {}
                (Err(e), Some(expected)) if *e == expected => {
                    notes.push(format!("client saw: {e}"));
                    continue;
                }
                (Err(e), _) => {
                    passed = false;
                    notes.push(format!("client failed: {e}"));
                }
                (Ok(()), Some(expected)) => {
                    passed = false;
                    notes.push(format!(
                        "expected \"{expected}\", but the exchange succeeded"
                    ));
                }
            }
            if replies.len() != messages.len() {
                passed = false;
                notes.push(format!(
                    "{} replies to {} messages",
                    replies.len(),
                    messages.len()
                ));
            }
            for (message, (reply, tries)) in messages.iter().zip(&replies) {
                bytes += message.len();
                max_tries = max_tries.max(*tries);
                if *reply != uppercased(message) {
                    passed = false;
                    notes.push(format!(
                        "wrong reply {} to {}",
                        preview(reply),
                        preview(message)
                    ));
                }
                first.get_or_insert_with(|| {
                    format!("sent {} got {}", preview(message), preview(reply))
                });
            }
        }
        let messages: usize = sent.iter().map(Vec::len).sum();
        let mut detail = if expect_error.is_none() {
            format!(
                "{} client(s), {messages} message(s), {bytes} bytes each way",
                sent.len()
            )
        } else {
            String::new()
        };
        if max_tries > 1 {
            let _ = write!(detail, ", up to {max_tries} tries");
        }
        if let Some(first) = first {
            let _ = write!(detail, "; {first}");
        }
        for note in notes {
            let _ = write!(detail, "; {note}");
        }
        let after = (self.lab.lab.link_stats(), self.lab.lab.now());
        self.checks.push(CheckResult {
            name: name.to_string(),
            passed,
            detail: detail.trim_start_matches("; ").to_string(),
            packets: after.0.frames - before.0.frames,
            virtual_time: after.1 - before.1,
            wall_time: wall.elapsed(),
        });
        Ok(())
    }

    fn tcp(&mut self, port: u16, messages: Vec<Vec<u8>>) -> (LabClient, Vec<Vec<u8>>) {
        let node = self.lab.lab.node(self.lab.client);
        let exchange = TcpExchange::with_messages(
            node,
            UppercaseLab::endpoint(port),
            ClientTimeouts::default(),
            messages.clone(),
        );
        (LabClient::Tcp(exchange), messages)
    }

    fn udp(
        &mut self,
        port: u16,
        messages: Vec<Vec<u8>>,
        tries: u32,
    ) -> Result<(LabClient, Vec<Vec<u8>>), ClientError> {
        let node = self.lab.lab.node(self.lab.client);
        let timeouts = ClientTimeouts {
            tries,
            reply: Duration::from_secs(1),
            ..ClientTimeouts::default()
        };
        let exchange = UdpExchange::with_messages(
            node,
            UppercaseLab::endpoint(port),
            timeouts,
            messages.clone(),
        )?;
        Ok((LabClient::Udp(exchange), messages))
    }
}

/// Runs every uppercase check in a fresh lab.
pub fn run_uppercase_checks() -> Result<LabReport, NetworkError> {
    run_uppercase_checks_captured(None)
}

/// [`run_uppercase_checks`], recording the segment into `capture` if given.
pub fn run_uppercase_checks_captured(
    capture: Option<CaptureFile>,
) -> Result<LabReport, NetworkError> {
    let wall = WallInstant::now();
    let mut lab = UppercaseLab::new();
    if let Some(capture) = capture {
        lab.lab.capture_to(Box::new(capture));
    }
    let start = lab.lab.now();
    let mut run = CheckRun {
        lab: &mut lab,
        checks: Vec::new(),
    };
    let udp_setup = NetworkError::UdpClientSetup;

    let once = run.tcp(PORT, vec![b"hello from the smoltalk lab".to_vec()]);
    run.check("tcp: send once, read once", vec![once], None)?;

    let several = (1..=SERVER_CONNECTIONS)
        .map(|i| {
            let messages = (1..=3)
                .map(|j| format!("client {i} says hello #{j}").into_bytes())
                .collect();
            run.tcp(PORT, messages)
        })
        .collect();
    run.check(
        &format!("tcp: {SERVER_CONNECTIONS} clients at once"),
        several,
        None,
    )?;

    let large = run.tcp(PORT, vec![sample_text(1 << 20, 7)]);
    run.check("tcp: 1 MiB in one message", vec![large], None)?;

    let binary = run.tcp(PORT, vec![binary_payload()]);
    run.check("tcp: binary payload (every byte value)", vec![binary], None)?;

    let refused = run.tcp(PORT + 1, vec![b"anyone there?".to_vec()]);
    run.check(
        "tcp: nothing listening -> refused",
        vec![refused],
        Some(ClientError::ConnectionRefused),
    )?;

    let datagrams = vec![
        b"hello over udp".to_vec(),
        binary_payload(),
        sample_text(2048, 11),
        sample_text(DEFAULT_MAX_DATAGRAM, 13),
    ];
    let udp = run.udp(PORT, datagrams, 3).map_err(udp_setup)?;
    run.check("udp: requests up to 8 KiB, binary too", vec![udp], None)?;

    let udp_clients = (1..=3)
        .map(|i| run.udp(PORT, vec![format!("udp client {i}").into_bytes()], 3))
        .collect::<Result<Vec<_>, _>>()
        .map_err(udp_setup)?;
    run.check("udp: 3 clients at once", udp_clients, None)?;

    let oversized_before = run.lab.servers.udp_stats().map_or(0, |s| s.oversized);
    let oversized = run
        .udp(PORT, vec![sample_text(DEFAULT_MAX_DATAGRAM + 1, 17)], 2)
        .map_err(udp_setup)?;
    run.check(
        "udp: oversized request dropped, not truncated",
        vec![oversized],
        Some(ClientError::NoReply { tries: 2 }),
    )?;
    let dropped = run.lab.servers.udp_stats().map_or(0, |s| s.oversized) - oversized_before;
    if let Some(check) = run.checks.last_mut() {
        check.passed &= dropped == 2;
        let _ = write!(
            check.detail,
            "; server dropped {dropped} oversized request(s)"
        );
    }

    let checks = run.checks;
    let link = lab.lab.link_stats();
    Ok(LabReport {
        title: format!(
            "smoltalk lab: server node {SERVER_IP}, client node {CLIENT_IP}, in-process Ethernet segment (MTU 1500), port {PORT}"
        ),
        checks,
        packets: link.frames,
        bytes: link.bytes,
        virtual_time: lab.lab.now() - start,
        wall_time: wall.elapsed(),
    })
}

//! The loss soak (`smoltalk lab --soak SIZE`): a stream of SIZE bytes through the lab's smoltcp uppercase
//! client and server, over a segment that loses and corrupts frames, checked byte for byte as the replies come.
//!
//! The stream is generated as it is sent ([`SoakStream`], a seeded generator) and generated again, uppercased,
//! to check each reply byte as it arrives: 100 MB need a few buffers of 64 KiB, not 100 MB twice. The first
//! byte that differs ends the run with its offset.
//!
//! # Why a lossy link between two smoltcp nodes used to stall
//!
//! Measured in the lab with captures (`--pcap`) and smoltcp 0.14's source:
//!
//! 1. **The timeout was one retransmission timeout long.** smoltcp's socket timeout aborts a connection when
//!    nothing *acceptable* has come from the peer for that long. smoltcp doubles its retransmission timeout
//!    (RTO) after every expiry up to 60 s and lowers it only with a fresh round-trip sample, which any
//!    retransmission discards (Karn's rule); at 10 % loss with 64 KiB in flight nearly every flight loses a
//!    segment, so the RTO climbs to 60 s. The server's timeout was 60 s too: the first maximal back-off with
//!    nothing acceptable in between reset the connection (1 MiB at 10 %: RST after 190 s of virtual time).
//!    Now `SOCKET_TIMEOUT` is four maximal RTOs (see `smoltalk_core::tcp_server`).
//! 2. **ACKs were thrown away.** smoltcp drops a segment whose sequence number is outside the receive window
//!    before it looks at the segment's ACK field. Three cases turn up under loss: a pure ACK whose sequence
//!    number is exactly the window's right edge (its sender filled the window and the first segment was
//!    lost), any segment into a zero window that does not start exactly at the next expected byte (the
//!    echoing server stops reading when its own replies are unacknowledged, and its window closes), and a
//!    retransmission of bytes the receiver already has. Each costs a whole RTO until the sender's own
//!    retransmission happens to be acceptable, and a zero window can deadlock: in one 100 MB run with equal
//!    buffers the client's zero-window probe had put its sequence number one byte past the server's next
//!    expected byte, so the server, its window closed, discarded every ACK of its replies and retransmitted
//!    them every 60 s until the timeout. All three need a sender whose unacknowledged bytes can fill the
//!    receiver's window, so the lab's nodes now have receive buffers twice their send buffers
//!    ([`crate::lab::checks::LAB_TCP_SEND`]): the window can neither fill nor close.
//!
//! With both, 16 MiB at 10 % loss and 1 % corruption took 325–433 s of virtual time over three seeds, the
//! longest silence 4–14 s, where equal 64 KiB buffers (with the same timeout) took 2,400–3,100 s with silences
//! of 60 s, and 100 MB with equal buffers was reset in two seeds of three (BENCHMARKS.md, "Loss soak").

use std::fmt::{self, Write as _};
use std::time::Instant as WallInstant;

use smoltalk_core::tcp_server::SOCKET_TIMEOUT;
use smoltalk_core::{uppercase_in_place, ClientError, TcpClientState, UppercaseTcpClient};
use smoltcp::time::{Duration, Instant};

use crate::lab::checks::{LabClient, UppercaseLab, CLIENT_IP, PORT, SERVER_IP};
use crate::lab::{Lab, LinkFaults, LinkStats};
use crate::stack::instruments::CaptureFile;
use crate::stack::network::{drive, earliest, Network, Step};
use crate::uppercase::node::{ClientTimeouts, UdpExchange};

/// Bytes generated, sent, received and checked at a time.
const CHUNK: usize = 64 * 1024;

/// What to soak.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Bytes to stream (each way: every byte comes back uppercased).
    pub bytes: u64,
    /// Percent of each node's frames lost.
    pub drop_chance: u8,
    /// Percent of each node's IPv4 frames delivered with one bit flipped.
    pub corrupt_chance: u8,
    /// Seed of the stream and of the faults.
    pub seed: u32,
    /// TCP receive buffer of both nodes.
    pub receive_buffer: usize,
    /// TCP send buffer of both nodes (half the receive buffer keeps every ACK acceptable; see above).
    pub send_buffer: usize,
    /// UDP requests to send at the same faults after the TCP stream (0: none).
    pub udp_requests: u32,
    /// Also stream the same bytes with no faults, for comparison.
    pub reference: bool,
    /// Let both nodes take packets without verifying their checksums (to see that corruption then gets
    /// through and the soak catches it).
    pub skip_checksums: bool,
}

/// A deterministic stream of bytes: mostly mixed-case text, one byte in sixteen any value at all.
#[derive(Debug, Clone)]
pub struct SoakStream {
    state: u64,
}

impl SoakStream {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> SoakStream {
        SoakStream {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        }
    }

    /// The next `buf.len()` bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        const TEXT: &[u8] =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?-_\n";
        for byte in buf {
            let mut x = self.state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.state = x;
            let r = (x >> 32) as u32;
            *byte = if r.is_multiple_of(16) {
                (r >> 8) as u8
            } else {
                TEXT[(r >> 4) as usize % TEXT.len()]
            };
        }
    }
}

/// Why a soak run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoakError {
    /// A reply byte is not the uppercase of the byte sent.
    Mismatch {
        /// Offset of the first wrong byte in the stream.
        offset: u64,
        /// What it should have been.
        expected: u8,
        /// What came.
        got: u8,
    },
    /// The client failed (refused, reset, closed early).
    Client {
        /// The client's error.
        error: ClientError,
        /// Reply bytes checked before.
        verified: u64,
    },
    /// No reply byte came for a whole [`SOCKET_TIMEOUT`].
    Stalled {
        /// Reply bytes checked before.
        verified: u64,
    },
    /// The lab itself failed.
    Network(String),
}

impl fmt::Display for SoakError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SoakError::Mismatch {
                offset,
                expected,
                got,
            } => write!(
                f,
                "the reply differs at offset {offset}: expected byte 0x{expected:02x}, got 0x{got:02x}"
            ),
            SoakError::Client { error, verified } => {
                write!(f, "{error} (after {verified} reply bytes checked)")
            }
            SoakError::Stalled { verified } => write!(
                f,
                "no reply byte for {} s of virtual time after {verified} bytes checked: the transfer stalled",
                SOCKET_TIMEOUT.secs()
            ),
            SoakError::Network(e) => write!(f, "the lab failed: {e}"),
        }
    }
}

impl std::error::Error for SoakError {}

/// One stream through the lab.
#[derive(Debug, Clone)]
pub struct SoakRun {
    /// What the run was ("no faults", "10 % drop, 1 % corrupt").
    pub label: String,
    /// Reply bytes that arrived and were checked.
    pub verified: u64,
    /// Virtual time from the SYN to the end of the close.
    pub virtual_time: Duration,
    /// Real time the run took.
    pub wall_time: std::time::Duration,
    /// What crossed the segment.
    pub link: LinkStats,
    /// The longest time nothing moved on the segment.
    pub longest_silence: Duration,
    /// Whether every byte came back right.
    pub outcome: Result<(), SoakError>,
}

/// UDP requests at the same faults: how many tries each took.
#[derive(Debug, Clone)]
pub struct UdpSoak {
    /// Requests sent.
    pub requests: u32,
    /// Tries allowed per request.
    pub max_tries: u32,
    /// Requests answered correctly after exactly `i + 1` tries, for each `i`.
    pub tries: Vec<u32>,
    /// Why the requests stopped early, if they did.
    pub error: Option<String>,
}

impl UdpSoak {
    /// Requests answered.
    pub fn answered(&self) -> u32 {
        self.tries.iter().sum()
    }
}

/// Everything a soak found.
#[derive(Debug, Clone)]
pub struct SoakReport {
    /// What was soaked.
    pub options: SoakOptions,
    /// The loss-free reference run (if asked for), then the run with the faults.
    pub runs: Vec<SoakRun>,
    /// The UDP requests, if any.
    pub udp: Option<UdpSoak>,
}

impl SoakReport {
    /// Whether every run was byte-exact and every UDP request answered.
    pub fn passed(&self) -> bool {
        self.runs.iter().all(|r| r.outcome.is_ok())
            && self
                .udp
                .as_ref()
                .is_none_or(|u| u.error.is_none() && u.answered() == u.requests)
    }

    /// The first failure, for the error line.
    pub fn failure(&self) -> Option<String> {
        for run in &self.runs {
            if let Err(e) = &run.outcome {
                return Some(format!("{}: {e}", run.label));
            }
        }
        let udp = self.udp.as_ref()?;
        match &udp.error {
            Some(e) => Some(format!("udp: {e}")),
            None if udp.answered() < udp.requests => Some(format!(
                "udp: {} of {} requests answered",
                udp.answered(),
                udp.requests
            )),
            None => None,
        }
    }

    /// The report as people read it.
    pub fn render(&self) -> String {
        let o = &self.options;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "smoltalk lab --soak: {} bytes of uppercase over TCP each way, client {CLIENT_IP} -> server \
             {SERVER_IP}:{PORT}, {} KiB receive / {} KiB send buffers, seed {}",
            o.bytes,
            o.receive_buffer / 1024,
            o.send_buffer / 1024,
            o.seed
        );
        let _ = writeln!(
            out,
            "{:<24} {:>12} {:>13} {:>9} {:>9} {:>8} {:>9} {:>11} {:>11} {:>10} {:>9}  result",
            "run",
            "bytes",
            "virtual time",
            "wall time",
            "frames",
            "dropped",
            "corrupted",
            "retransmits",
            "max silence",
            "MB/s virt.",
            "MB/s wall",
        );
        for run in &self.runs {
            let secs = run.virtual_time.total_micros() as f64 / 1e6;
            let wall = run.wall_time.as_secs_f64();
            // Under a millisecond of virtual time is no rate at all: the clock only jumps to due timers.
            let virtual_rate = if secs >= 1e-3 {
                format!("{:.3}", run.verified as f64 / secs / 1e6)
            } else {
                "-".to_string()
            };
            let _ = writeln!(
                out,
                "{:<24} {:>12} {:>11.3} s {:>7.2} s {:>9} {:>8} {:>9} {:>11} {:>9.3} s {:>10} {:>9.1}  {}",
                run.label,
                run.verified,
                secs,
                wall,
                run.link.frames,
                run.link.dropped,
                run.link.corrupted,
                run.link.tcp_retransmissions,
                run.longest_silence.total_micros() as f64 / 1e6,
                virtual_rate,
                run.verified as f64 / wall.max(1e-9) / 1e6,
                match &run.outcome {
                    Ok(()) => "byte-exact".to_string(),
                    Err(e) => format!("FAILED: {e}"),
                }
            );
        }
        if let [clean, faulty] = &self.runs[..] {
            if clean.outcome.is_ok() && faulty.outcome.is_ok() {
                let rate = |r: &SoakRun| r.verified as f64 / r.wall_time.as_secs_f64().max(1e-9);
                let _ = writeln!(
                    out,
                    "with faults: {:.2}x the loss-free run's wall-clock throughput; {:.0} s of virtual time against {:.3} s \
                     (the lab has no link rate or delay: its virtual time is retransmission timeouts and delayed ACKs)",
                    rate(faulty) / rate(clean),
                    faulty.virtual_time.total_micros() as f64 / 1e6,
                    clean.virtual_time.total_micros() as f64 / 1e6,
                );
            }
        }
        if let Some(udp) = &self.udp {
            let histogram: Vec<String> = udp
                .tries
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| {
                    format!(
                        "{n} after {} {}",
                        i + 1,
                        if i == 0 { "try" } else { "tries" }
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "udp: {} of {} requests answered right at the same faults (up to {} tries of 1 s each): {}{}",
                udp.answered(),
                udp.requests,
                udp.max_tries,
                histogram.join(", "),
                udp.error
                    .as_ref()
                    .map_or(String::new(), |e| format!("; then: {e}"))
            );
        }
        out
    }
}

/// Runs the soak: the loss-free reference (if asked for), the stream at the faults, then the UDP requests.
pub fn run(options: &SoakOptions, capture: Option<CaptureFile>) -> SoakReport {
    let mut runs = Vec::new();
    if options.reference && (options.drop_chance > 0 || options.corrupt_chance > 0) {
        runs.push(stream(options, 0, 0, None));
    }
    runs.push(stream(
        options,
        options.drop_chance,
        options.corrupt_chance,
        capture,
    ));
    let udp = (options.udp_requests > 0).then(|| udp_requests(options));
    SoakReport {
        options: options.clone(),
        runs,
        udp,
    }
}

fn label(drop_chance: u8, corrupt_chance: u8) -> String {
    match (drop_chance, corrupt_chance) {
        (0, 0) => "no faults".to_string(),
        (d, 0) => format!("{d} % drop"),
        (0, c) => format!("{c} % corrupt"),
        (d, c) => format!("{d} % drop, {c} % corrupt"),
    }
}

/// The lab with the soak's buffers and faults on both nodes.
fn lab_with_faults(options: &SoakOptions, drop_chance: u8, corrupt_chance: u8) -> UppercaseLab {
    let mut segment = Lab::default();
    segment.set_checksum_verification(!options.skip_checksums);
    let mut lab = UppercaseLab::in_lab(
        segment,
        options.receive_buffer.max(2048),
        Some(options.send_buffer.max(1024)),
    );
    for (node, salt) in [(lab.client, 1u32), (lab.server, 2)] {
        let seed = options
            .seed
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(salt.wrapping_mul(0x85eb_ca6b))
            | 1;
        lab.lab.set_faults(
            node,
            LinkFaults {
                drop_chance,
                corrupt_chance,
                seed,
                ..LinkFaults::default()
            },
        );
    }
    lab
}

/// Streams the soak's bytes once, at `drop_chance` and `corrupt_chance`.
fn stream(
    options: &SoakOptions,
    drop_chance: u8,
    corrupt_chance: u8,
    capture: Option<CaptureFile>,
) -> SoakRun {
    let wall = WallInstant::now();
    let mut lab = lab_with_faults(options, drop_chance, corrupt_chance);
    if let Some(capture) = capture {
        lab.lab.capture_to(Box::new(capture));
    }
    let start = lab.lab.now();
    let mut transfer = Transfer::new(options.bytes, u64::from(options.seed));
    let (server, client) = (lab.server, lab.client);
    let servers = &mut lab.servers;
    let outcome = drive(&mut lab.lab, |net| {
        let moved = servers.poll(net.node(server));
        match transfer.step(net, client) {
            Step::Pending { moved: m, poll_at } => Step::Pending {
                moved: moved || m,
                poll_at,
            },
            done => done,
        }
    })
    .unwrap_or_else(|e| Err(SoakError::Network(e.to_string())));
    // Ends the capture (the file is complete once its sink is dropped).
    lab.lab.take_capture();
    SoakRun {
        label: label(drop_chance, corrupt_chance),
        verified: transfer.verified,
        virtual_time: lab.lab.now() - start,
        wall_time: wall.elapsed(),
        link: lab.lab.link_stats(),
        longest_silence: lab.lab.longest_silence(),
        outcome,
    }
}

/// The client's side of one stream: connect, send the generated bytes, check every reply byte, close.
struct Transfer {
    total: u64,
    client: Option<UppercaseTcpClient>,
    sender: SoakStream,
    checker: SoakStream,
    out: Vec<u8>,
    out_start: usize,
    out_end: usize,
    generated: u64,
    reply: Vec<u8>,
    expected: Vec<u8>,
    verified: u64,
    last_progress: Instant,
    close_deadline: Option<Instant>,
}

impl Transfer {
    fn new(total: u64, seed: u64) -> Transfer {
        Transfer {
            total,
            client: None,
            sender: SoakStream::new(seed),
            checker: SoakStream::new(seed),
            out: vec![0; CHUNK],
            out_start: 0,
            out_end: 0,
            generated: 0,
            reply: vec![0; CHUNK],
            expected: vec![0; CHUNK],
            verified: 0,
            last_progress: Instant::ZERO,
            close_deadline: None,
        }
    }

    fn step<N: Network>(&mut self, net: &mut N, id: usize) -> Step<Result<(), SoakError>> {
        let now = net.now();
        let node = net.node(id);
        let client = match self.client.as_mut() {
            Some(client) => client,
            None => {
                let mut client = UppercaseTcpClient::new(node.add_tcp_socket());
                let port = node.ephemeral_port();
                let cx = node.iface.context();
                let server = UppercaseLab::endpoint(PORT);
                if let Err(e) =
                    client.connect(cx, &mut node.sockets, server, port, now, SOCKET_TIMEOUT)
                {
                    return failed(e, self.verified);
                }
                self.last_progress = now;
                self.client.insert(client)
            }
        };
        let sockets = &mut node.sockets;
        let state = match client.poll(sockets, now) {
            Ok(state) => state,
            Err(e) => return failed(e, self.verified),
        };
        let mut moved = false;
        if state == TcpClientState::Connected {
            // Send: refill the chunk from the generator whenever the socket has taken all of it.
            loop {
                if self.out_start == self.out_end && self.generated < self.total {
                    let n = (self.total - self.generated).min(CHUNK as u64) as usize;
                    self.sender.fill(&mut self.out[..n]);
                    self.generated += n as u64;
                    self.out_start = 0;
                    self.out_end = n;
                }
                if self.out_start == self.out_end {
                    break;
                }
                match client.send(sockets, &self.out[self.out_start..self.out_end]) {
                    Ok(0) => break,
                    Ok(n) => {
                        self.out_start += n;
                        moved = true;
                    }
                    Err(e) => return failed(e, self.verified),
                }
            }
            // Receive and check: the reply is the uppercase of the stream, byte for byte.
            loop {
                let n = match client.recv(sockets, &mut self.reply) {
                    Ok(n) => n,
                    Err(e) => return failed(e, self.verified),
                };
                if n == 0 {
                    break;
                }
                let (got, expected) = (&self.reply[..n], &mut self.expected[..n]);
                self.checker.fill(expected);
                uppercase_in_place(expected);
                if got != &expected[..] {
                    let at = got
                        .iter()
                        .zip(expected.iter())
                        .position(|(g, e)| g != e)
                        .unwrap_or(0);
                    return Step::Done(Err(SoakError::Mismatch {
                        offset: self.verified + at as u64,
                        expected: expected[at],
                        got: got[at],
                    }));
                }
                self.verified += n as u64;
                self.last_progress = now;
                moved = true;
            }
            if self.verified == self.total {
                client.close(sockets);
                self.close_deadline = Some(now + SOCKET_TIMEOUT);
                moved = true;
            } else if client.peer_closed(sockets) {
                let closed = ClientError::ClosedEarly {
                    received: self.verified.min(usize::MAX as u64) as usize,
                    expected: self.total.min(usize::MAX as u64) as usize,
                };
                return failed(closed, self.verified);
            }
        }
        if let Some(deadline) = self.close_deadline {
            // Every byte is checked; only the closing handshake is left (late is reported, not failed).
            if client.state() == TcpClientState::Closed {
                return Step::Done(Ok(()));
            }
            if now >= deadline {
                log::warn!("soak: the server did not finish closing the connection in time");
                return Step::Done(Ok(()));
            }
            return Step::Pending {
                moved,
                poll_at: Some(deadline),
            };
        }
        // Progress is a reply byte: a whole SOCKET_TIMEOUT without one is a stall.
        let stall_at = self.last_progress + SOCKET_TIMEOUT;
        if now >= stall_at {
            return Step::Done(Err(SoakError::Stalled {
                verified: self.verified,
            }));
        }
        Step::Pending {
            moved,
            poll_at: earliest(client.poll_at(), Some(stall_at)),
        }
    }
}

fn failed(error: ClientError, verified: u64) -> Step<Result<(), SoakError>> {
    Step::Done(Err(SoakError::Client { error, verified }))
}

/// The soak's UDP requests, each up to 10 tries of 1 s, at the same faults as the stream.
fn udp_requests(options: &SoakOptions) -> UdpSoak {
    const MAX_TRIES: u32 = 10;
    let mut lab = lab_with_faults(options, options.drop_chance, options.corrupt_chance);
    let mut stream = SoakStream::new(u64::from(options.seed) ^ 0x0dd5);
    let messages: Vec<Vec<u8>> = (0..options.udp_requests)
        .map(|i| {
            let mut message = vec![0; 16 + (i as usize * 37) % 1200];
            stream.fill(&mut message);
            message
        })
        .collect();
    let timeouts = ClientTimeouts {
        reply: Duration::from_secs(1),
        tries: MAX_TRIES,
        ..ClientTimeouts::default()
    };
    let mut result = UdpSoak {
        requests: options.udp_requests,
        max_tries: MAX_TRIES,
        tries: vec![0; MAX_TRIES as usize],
        error: None,
    };
    let exchange = match UdpExchange::with_messages(
        lab.lab.node(lab.client),
        UppercaseLab::endpoint(PORT),
        timeouts,
        messages.clone(),
    ) {
        Ok(exchange) => exchange,
        Err(e) => {
            result.error = Some(e.to_string());
            return result;
        }
    };
    let mut clients = [LabClient::Udp(exchange)];
    match lab.run(&mut clients) {
        Ok(outcomes) => {
            if let Some(Err(e)) = outcomes.first() {
                result.error = Some(e.to_string());
            }
        }
        Err(e) => result.error = Some(e.to_string()),
    }
    for (i, (reply, tries)) in clients[0].take_replies().into_iter().enumerate() {
        let mut expected = messages.get(i).cloned().unwrap_or_default();
        uppercase_in_place(&mut expected);
        if reply != expected {
            result.error = Some(format!("request {i}: the reply is not its uppercase"));
            break;
        }
        if let Some(slot) = result.tries.get_mut(tries.saturating_sub(1) as usize) {
            *slot += 1;
        }
    }
    result
}

/// The reply is checked against the stream, so the stream must be the same for the same seed, and differ
/// from one seed to the next.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_repeats_for_a_seed_and_covers_every_byte_value() {
        let (mut a, mut b, mut c) = (SoakStream::new(1), SoakStream::new(1), SoakStream::new(2));
        let (mut x, mut y, mut z) = (vec![0; 100_000], vec![0; 100_000], vec![0; 100_000]);
        a.fill(&mut x[..30_000]);
        a.fill(&mut x[30_000..]);
        b.fill(&mut y);
        c.fill(&mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
        let mut seen = [false; 256];
        for byte in &x {
            seen[*byte as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert!(x.iter().filter(|b| b.is_ascii_lowercase()).count() > 25_000);
    }
}

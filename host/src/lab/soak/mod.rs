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

use crate::stack::link_shape::LinkShape;
use std::fmt;
use std::time::Instant as WallInstant;

use smoltalk_core::tcp_server::SOCKET_TIMEOUT;
use smoltalk_core::{uppercase_in_place, ClientError};
use smoltcp::time::Duration;

use crate::lab::checks::{LabClient, UppercaseLab, PORT};
use crate::lab::{Lab, LinkFaults};
use crate::stack::instruments::CaptureFile;
use crate::stack::network::{drive, Network, Step};
use crate::uppercase::node::{ClientTimeouts, UdpExchange};

mod report;
mod transfer;

pub use report::{SoakReport, SoakRun, UdpSoak};
pub use transfer::SoakStream;
use transfer::Transfer;

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
    /// The shape of the lab's links (`--link-delay`, `--link-rate`), for every run of the soak alike.
    pub link: LinkShape,
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
    segment.set_link(options.link);
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
        lab.lab.capture_to(lab.client, Box::new(capture));
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

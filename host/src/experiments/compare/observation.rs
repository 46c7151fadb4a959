//! What a run observed (the outcome, its kind, the time, the packets counted from its capture) and one
//! scenario's runs side by side: the types behind the table and the JSON.

use serde::Serialize;

use super::packets::{count_packets, PacketCounts};
use super::{CompareError, Scenario};
use crate::lab::IpVersion;
use crate::stack::link_shape::LinkShape;
use crate::uppercase::ClientFailure;

/// What one stack did in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Observation {
    /// `kernel` or `smoltcp`.
    pub stack: &'static str,
    /// Where it ran (`loopback`, `lab`).
    pub network: &'static str,
    /// The address and port the client aimed at, as `SocketAddr` writes them (`127.0.0.1:40000`,
    /// `[::1]:40000`, `[fd00:2::15]:12001`); none for a run that was not run.
    pub server: Option<String>,
    /// What the program saw, in a line: the error, or what came back.
    pub outcome: String,
    /// A short machine-readable form of the outcome (`refused`, `no_reply`, `reset`, `eof`, `ok`, …).
    pub kind: String,
    /// How long it took, in milliseconds (wall time on the kernel stack, virtual time in the lab).
    pub millis: f64,
    /// Whether `millis` is virtual (lab) time.
    pub virtual_time: bool,
    /// The link the run had, in words (`5 ms each way (RTT 10 ms), 100 Mbit/s`, `loopback, no added delay`);
    /// none for a scenario on a plain link.
    pub link: Option<String>,
    /// The round-trip time the link added, in milliseconds (0 when nothing was added); none for a scenario on a
    /// plain link.
    pub rtt_ms: Option<f64>,
    /// The link's rate in bits per second; none without one.
    pub rate_bits: Option<u64>,
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
    pub(super) fn new(
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
            server: None,
            outcome,
            kind,
            millis,
            virtual_time,
            link: None,
            rtt_ms: None,
            rate_bits: None,
            packets,
            packets_note,
            capture,
        }
    }

    /// This observation, saying that it ran over a link of `shape` (a lossy scenario's), described as `words`.
    pub(super) fn over_link(self, shape: LinkShape, words: String) -> Observation {
        Observation {
            link: Some(words),
            rtt_ms: Some(shape.rtt().as_secs_f64() * 1e3),
            rate_bits: shape.rate,
            ..self
        }
    }

    /// This observation, saying that its client aimed at `server`.
    pub(super) fn aimed_at(self, server: std::net::SocketAddr) -> Observation {
        Observation {
            server: Some(server.to_string()),
            ..self
        }
    }
}

/// One scenario on both stacks, over one family.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Which scenario.
    pub scenario: Scenario,
    /// Over which family (`IPv4`, `IPv6`).
    pub family: IpVersion,
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

/// The short kind of a client's failure in the table and the JSON: `refused`, `no_reply`, `reset`, `eof`,
/// `timeout`, or `error` for any other.
pub(super) fn failure_kind(failure: Option<ClientFailure>) -> &'static str {
    match failure {
        Some(ClientFailure::Refused) => "refused",
        Some(ClientFailure::NoReply) => "no_reply",
        Some(ClientFailure::Reset) => "reset",
        Some(ClientFailure::ClosedEarly) => "eof",
        Some(ClientFailure::ConnectTimedOut | ClientFailure::ReplyTimedOut) => "timeout",
        None => "error",
    }
}

pub(super) fn not_run(
    stack: &'static str,
    network: &'static str,
    why: &CompareError,
) -> Observation {
    let outcome = (format!("not run: {why}"), "not_run".to_string());
    Observation::new(stack, network, outcome, 0.0, false, Err("not run".into()))
}

//! The lab: an in-process network of smoltcp nodes on one virtual Ethernet segment, with a virtual clock.
//!
//! Every node has a [`LabPort`], an in-memory `phy::Device`; a frame one node sends is delivered to every other
//! node (a hub — smoltcp ignores frames for other MAC addresses), and counted. Time stands still while packets
//! move and jumps to the next timer any node has (or the next frame a shaped link delivers) when nothing moves,
//! so a run is deterministic, needs no privileges, and a one-second retransmission timeout costs no real second.
//!
//! The segment may be shaped ([`Lab::set_link`]): each node's frames then go out through a queue of their own
//! (one per sender: a [`LinkQueue`]) with a one-way delay and a rate, and reach the other nodes when they are due
//! on the virtual clock. A capture ([`Lab::capture_to`]) is a tap at one node's port: that node's frames are
//! recorded when it sends them, every other frame when it arrives there, so a round trip shows as the gap
//! between a segment the tapped node sent and the answer it got.
//!
//! [`Lab`] implements [`Network`], so the same client and server drivers run here and on a TUN/TAP device.
//! `crate::lab::checks` builds the uppercase checks of `smoltalk lab` on top of it; [`IpVersion`] says which
//! family an exchange between its dual-stack nodes uses. `link` owns what the segment does to frames (losses,
//! corruption) and counts of them; `crate::stack::link_shape` the delay and rate.

pub mod checks;
mod link;
pub mod proxy;
pub mod soak;

pub use link::{LinkFaults, LinkStats};

use std::collections::VecDeque;

use smoltcp::iface::{PollIngressSingleResult, PollResult};
use smoltcp::phy::{
    self, Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium, PcapLinkType,
    PcapSink,
};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, IpCidr};

use crate::stack::addressing::Addressing;
use crate::stack::link_shape::{LinkQueue, LinkShape};
use crate::stack::network::{earliest, Network, NetworkError, NodeId};
use crate::stack::node::Node;
use link::RetransmissionCounter;

/// Which IP version an exchange in the lab (or a run of `compare`) uses. Serialized and shown as `IPv4`,
/// `IPv6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum IpVersion {
    /// IPv4 (ARP finds the peer's MAC address).
    #[serde(rename = "IPv4")]
    Ipv4,
    /// IPv6 (NDP finds the peer's MAC address).
    #[serde(rename = "IPv6")]
    Ipv6,
}

impl IpVersion {
    /// Both, IPv4 first.
    pub const BOTH: [IpVersion; 2] = [IpVersion::Ipv4, IpVersion::Ipv6];

    /// `IPv4` or `IPv6`.
    pub fn name(self) -> &'static str {
        match self {
            IpVersion::Ipv4 => "IPv4",
            IpVersion::Ipv6 => "IPv6",
        }
    }

    /// How this version finds a neighbour's link-layer address: `ARP` or `NDP`.
    pub fn neighbour_discovery(self) -> &'static str {
        match self {
            IpVersion::Ipv4 => "ARP",
            IpVersion::Ipv6 => "NDP",
        }
    }
}

impl std::fmt::Display for IpVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A node's attachment to the lab's segment.
#[derive(Debug)]
pub struct LabPort {
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
    mtu: usize,
    verify_checksums: bool,
}

impl LabPort {
    fn new(mtu: usize) -> Self {
        LabPort {
            inbox: VecDeque::new(),
            outbox: Vec::new(),
            mtu,
            verify_checksums: true,
        }
    }
}

/// A frame handed to a node.
pub struct LabRxToken(Vec<u8>);

/// Room for a frame a node sends.
pub struct LabTxToken<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for LabRxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for LabTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.push(frame);
        result
    }
}

impl Device for LabPort {
    type RxToken<'a> = LabRxToken;
    type TxToken<'a> = LabTxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.inbox.pop_front()?;
        Some((LabRxToken(frame), LabTxToken(&mut self.outbox)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(LabTxToken(&mut self.outbox))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        // Every checksum is computed on the way out and verified on the way in (smoltcp's default, said here
        // because the lab's corruption relies on it: a packet with a flipped bit must be dropped, not taken).
        caps.checksum = ChecksumCapabilities::default();
        if !self.verify_checksums {
            // Computed on the way out, taken on trust on the way in (see Lab::set_checksum_verification).
            caps.checksum.ipv4 = Checksum::Tx;
            caps.checksum.tcp = Checksum::Tx;
            caps.checksum.udp = Checksum::Tx;
            caps.checksum.icmpv4 = Checksum::Tx;
            caps.checksum.icmpv6 = Checksum::Tx;
        }
        caps
    }
}

struct Member {
    node: Node,
    port: LabPort,
    faults: LinkFaults,
    /// The frames this node has sent that are on their way to the others.
    uplink: LinkQueue,
}

/// An in-process network of smoltcp nodes with a virtual clock.
pub struct Lab {
    clock: Instant,
    members: Vec<Member>,
    link: LinkStats,
    mtu: usize,
    /// Every frame that crosses the segment, with the virtual time, if asked for (`--pcap`), and the node at
    /// whose port it is tapped.
    capture: Option<(NodeId, Box<dyn PcapSink>)>,
    /// The shape of every node's link onto the segment.
    shape: LinkShape,
    retransmissions: RetransmissionCounter,
    longest_silence: Duration,
    verify_checksums: bool,
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new(1500)
    }
}

impl Lab {
    /// An empty lab whose segment carries IP packets of up to `mtu` bytes.
    pub fn new(mtu: usize) -> Lab {
        Lab {
            clock: Instant::from_secs(1),
            members: Vec::new(),
            link: LinkStats::default(),
            mtu,
            capture: None,
            shape: LinkShape::default(),
            retransmissions: RetransmissionCounter::default(),
            longest_silence: Duration::ZERO,
            verify_checksums: true,
        }
    }

    /// Adds a node with address `cidr`; its MAC address and random seed follow from its position, so every run
    /// of the same lab is the same.
    pub fn add_node(&mut self, name: &str, cidr: IpCidr) -> NodeId {
        self.add_node_with(name, &Addressing::single(cidr))
    }

    /// Adds a node with the addresses of `addressing` (one of each family, for a dual-stack node; the lab's
    /// segment is one link, so gateways are not needed), as [`Lab::add_node`] does.
    pub fn add_node_with(&mut self, name: &str, addressing: &Addressing) -> NodeId {
        let id = self.members.len();
        let mut port = LabPort::new(self.mtu);
        port.verify_checksums = self.verify_checksums;
        let mac = EthernetAddress([0x02, 0x00, 0x00, 0x00, 0x00, id as u8 + 1]);
        let seed = 0x5eed_0000 + id as u64 * 7919;
        let node = Node::new(name, &mut port, mac.into(), addressing, seed, self.clock);
        self.members.push(Member {
            node,
            port,
            faults: LinkFaults::default(),
            uplink: LinkQueue::new(self.shape),
        });
        id
    }

    /// Shapes every node's link onto the segment, from now on (frames already on their way keep the times the
    /// old shape gave them): a one-way delay, so a round trip between two nodes takes twice it, and a rate at
    /// which each node's frames leave, one after another (see `crate::stack::link_shape` for the model and the
    /// queue's bound). No delay and no rate is the unshaped segment, frames arriving as they are sent.
    pub fn set_link(&mut self, shape: LinkShape) {
        self.shape = shape;
        for member in &mut self.members {
            member.uplink.set_shape(shape);
        }
    }

    /// The shape of the segment's links.
    pub fn link(&self) -> LinkShape {
        self.shape
    }

    /// Makes node `id` lose frames as `faults` says, from now on.
    pub fn set_faults(&mut self, id: NodeId, faults: LinkFaults) {
        self.members[id].faults = faults;
    }

    /// Whether the nodes added from now on verify the IPv4, TCP, UDP, ICMP and ICMPv6 checksums of what they
    /// receive (they do unless told otherwise; smoltcp reads it once, when the node's interface is made).
    /// Without verification a corrupted packet is taken as it came: only for showing what the checksums catch.
    pub fn set_checksum_verification(&mut self, verify: bool) {
        self.verify_checksums = verify;
    }

    /// What has crossed the segment so far.
    pub fn link_stats(&self) -> LinkStats {
        self.link
    }

    /// The longest the virtual clock has jumped at once so far: the longest time nothing moved on the segment
    /// (a retransmission timeout, say).
    pub fn longest_silence(&self) -> Duration {
        self.longest_silence
    }

    /// Records every frame that crosses the segment from now on into `capture` (an Ethernet pcap, timed by the
    /// lab's virtual clock), as a tap at node `tap`'s port sees it: `tap`'s own frames when it sends them, every
    /// other node's when it arrives at `tap`'s port (on an unshaped segment the two are the same instant). A
    /// frame a sender loses on purpose never reaches the segment and is not recorded; one a receiver loses was
    /// on the segment and is; one lost because its sender's link queue was full is recorded only if the sender
    /// is `tap`.
    pub fn capture_to(&mut self, tap: NodeId, mut capture: Box<dyn PcapSink>) {
        capture.global_header(PcapLinkType::Ethernet);
        self.capture = Some((tap, capture));
    }

    /// Ends the capture (a file is complete once the sink is dropped).
    pub fn take_capture(&mut self) -> Option<Box<dyn PcapSink>> {
        self.capture.take().map(|(_, capture)| capture)
    }

    /// The IP MTU of the segment.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Takes every node's sent frames onto its link, and hands the other nodes every frame that has arrived by
    /// now; returns whether a frame moved.
    fn deliver(&mut self) -> bool {
        let now = nanos(self.clock);
        let mut moved = false;
        for from in 0..self.members.len() {
            let frames = std::mem::take(&mut self.members[from].port.outbox);
            for mut frame in frames {
                self.link.frames += 1;
                self.link.bytes += frame.len() as u64;
                if self.retransmissions.is_retransmission(&frame) {
                    self.link.tcp_retransmissions += 1;
                }
                moved = true;
                let faults = &mut self.members[from].faults;
                faults.sent = faults.sent.wrapping_add(1);
                let periodic = faults.drop_every_outbound > 0
                    && faults.sent.is_multiple_of(faults.drop_every_outbound);
                let random = faults.random_loss();
                if faults.drop_outbound || faults.drop_next_outbound > 0 || periodic || random {
                    faults.drop_next_outbound = faults.drop_next_outbound.saturating_sub(1);
                    self.link.dropped += 1;
                    continue;
                }
                if faults.maybe_corrupt(&mut frame) {
                    self.link.corrupted += 1;
                }
                if let Some((tap, capture)) = self.capture.as_mut() {
                    if *tap == from {
                        capture.packet(self.clock, &frame);
                    }
                }
                if self.members[from].uplink.push(now, frame).is_err() {
                    self.link.queue_dropped += 1;
                }
            }
            while let Some((_, frame)) = self.members[from].uplink.pop_due(now) {
                moved = true;
                self.arrive(from, &frame);
            }
        }
        moved
    }

    /// Hands `frame`, sent by node `from`, to every other node, now.
    fn arrive(&mut self, from: NodeId, frame: &[u8]) {
        if let Some((tap, capture)) = self.capture.as_mut() {
            if *tap != from {
                capture.packet(self.clock, frame);
            }
        }
        for (to, member) in self.members.iter_mut().enumerate() {
            if to == from {
                continue;
            }
            if member.faults.drop_inbound {
                self.link.dropped += 1;
            } else {
                member.port.inbox.push_back(frame.to_vec());
            }
        }
    }

    /// When the next frame on its way arrives, if one is.
    fn next_arrival(&self) -> Option<Instant> {
        self.members
            .iter()
            .filter_map(|m| m.uplink.next_due())
            .min()
            .map(instant)
    }
}

/// The virtual time `at` in nanoseconds (the clock starts at 1 s and only goes forward).
fn nanos(at: Instant) -> u64 {
    u64::try_from(at.total_micros()).unwrap_or(0) * 1000
}

/// The first microsecond of the clock at or after `nanos`.
fn instant(nanos: u64) -> Instant {
    Instant::from_micros(i64::try_from(nanos.div_ceil(1000)).unwrap_or(i64::MAX))
}

impl Network for Lab {
    fn now(&self) -> Instant {
        self.clock
    }

    fn node(&mut self, id: NodeId) -> &mut Node {
        &mut self.members[id].node
    }

    /// Each node takes in its packets one at a time (what `Interface::poll` does, with `after_packet` between
    /// two), then sends what its sockets have queued.
    fn poll_each_packet(
        &mut self,
        after_packet: &mut dyn FnMut(NodeId, &mut Node),
    ) -> Result<bool, NetworkError> {
        let mut anything = false;
        loop {
            for (id, member) in self.members.iter_mut().enumerate() {
                let node = &mut member.node;
                node.iface.poll_maintenance(self.clock);
                loop {
                    match node.iface.poll_ingress_single(
                        self.clock,
                        &mut member.port,
                        &mut node.sockets,
                    ) {
                        PollIngressSingleResult::None => break,
                        PollIngressSingleResult::PacketProcessed => {}
                        PollIngressSingleResult::SocketStateChanged => anything = true,
                    }
                    after_packet(id, node);
                }
                while node
                    .iface
                    .poll_egress(self.clock, &mut member.port, &mut node.sockets)
                    == PollResult::SocketStateChanged
                {
                    anything = true;
                }
            }
            if !self.deliver() {
                return Ok(anything);
            }
            anything = true;
        }
    }

    fn wait(&mut self, until: Option<Instant>) -> Result<(), NetworkError> {
        if self.members.iter().any(|m| !m.port.inbox.is_empty()) {
            return Ok(());
        }
        let clock = self.clock;
        let next_timer = self
            .members
            .iter_mut()
            .filter_map(|m| m.node.iface.poll_delay(clock, &m.node.sockets))
            .min()
            .map(|delay| clock + delay);
        let arrival = self.next_arrival();
        // Nothing will ever happen by itself: step a second so a driver's deadline can pass.
        let next = earliest(earliest(next_timer, until), arrival)
            .unwrap_or(clock + Duration::from_secs(1));
        // A timer already due that a poll did not clear must not stall the clock; a frame arriving sooner than
        // that step still arrives on time (it is always later than now: a poll takes in what has arrived).
        let mut to = next.max(clock + Duration::from_micros(100));
        if let Some(arrival) = arrival {
            to = to.min(arrival.max(clock + Duration::from_micros(1)));
        }
        self.clock = to;
        self.longest_silence = self.longest_silence.max(self.clock - clock);
        Ok(())
    }
}

//! [`SegmentCoalescer`]: software GRO on transmit for IPv6 TCP. It owns the super-packets being built, one per
//! connection in a small table of fixed buffers, and decides which segment joins one, which flushes one, and
//! which goes out as it is.
//!
//! smoltcp 0.14 cannot send IPv6 super-packets (see the parent module), so over IPv6 it sends MSS-sized
//! segments, one device write and one pass through the kernel's receive path each. With TSO6 agreed, the device
//! joins a connection's consecutive segments back into the TCPV6 super-packet the kernel's own TSO would have cut
//! them from, and writes that once. smoltcp's egress sends one segment per socket per pass and loops passes, so
//! several connections' segments interleave: each connection has its own pending super-packet.
//!
//! A segment joins its connection's pending super-packet only if it is one that TSO could have cut from it:
//! IPv6 without extension headers, TCP flags ACK or ACK|PSH, a payload, the next sequence number, every header
//! byte the same (link header, IPv6 header but its length, ports, ACK number, window, options) but the
//! sequence number, PSH and the checksum, a payload no longer than the first segment's (the `gso_size`), and the
//! whole no longer than [`MAX_SUPER_PACKET`]. A segment shorter than the first, or with PSH (the kernel's TSO sets
//! PSH on the last segment only, so it is kept on the super-packet), ends the super-packet, as does one that
//! leaves no room for another. Any other IPv6 TCP segment of the connection (SYN, FIN, RST, URG, a pure ACK, a
//! gap, another ACK number, window or options) flushes what is pending first and goes out as it is: order within
//! a connection is kept; across connections it does not matter. IPv4 (which has real TSO) and other protocols
//! pass through untouched.
//!
//! smoltcp builds each frame where it is told to ([`SegmentCoalescer::build`]): in the buffer of the connection
//! likeliest to send next, its headers over the last bytes of that super-packet (kept aside, and put back), its
//! payload right where it joins. smoltcp's egress goes round its sockets in a fixed order, one segment each, the
//! idle ones left out, so the connection likeliest to send next is the one that came after the last sender last
//! time (or the last sender again, alone). A segment that joins where it was built is never copied; any other
//! frame is copied out and taken as it comes.
//!
//! The owner flushes everything at the end of each poll and before sleeping: no segment waits in the table.

use super::ip::{self, be16, be32, Version};
use super::{transmit, TCP, VNET_HEADER_LEN};

/// Connections that may have a super-packet pending at once; one more flushes the one added to least recently.
pub const COALESCED_FLOWS: usize = 8;

/// The largest IPv6 super-packet, header included: as large as the IPv4 ones smoltcp builds with TSO4, and as
/// the kernel's own default GSO limit (64 KiB).
pub const MAX_SUPER_PACKET: usize = 65535;

const IPV6_HEADER_LEN: usize = 40;
const TCP_HEADER_MIN: usize = 20;
/// The longest headers of a segment that may join: an Ethernet header (TAP), IPv6 without extension headers,
/// TCP with 40 bytes of options.
const MAX_HEADERS: usize = 14 + IPV6_HEADER_LEN + 60;
/// Where the flags byte is in the TCP header (CWR, ECE, URG, ACK, PSH, RST, SYN, FIN).
const TCP_FLAGS: usize = 13;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// What [`SegmentCoalescer::offer`] and [`SegmentCoalescer::build`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Kept, to leave inside a super-packet: the caller writes nothing now.
    Held,
    /// Not coalesced: the caller writes it as it is (whatever of its connection was pending is written already).
    PassThrough,
}

/// A connection: its source and destination ports (as one number), then its addresses.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
struct FlowKey {
    ports: u32,
    addresses: [u8; 32],
}

/// The header fields that must be the same in every segment of a super-packet (besides the connection, the
/// link header and the TCP options).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
struct FixedFields {
    /// IPv6's version, traffic class and flow label.
    version_class_label: u32,
    /// IPv6's next header and hop limit.
    next_header_hop_limit: u16,
    ack: u32,
    /// TCP's data offset and reserved bits.
    data_offset: u8,
    window: u16,
    urgent: u16,
}

/// An IPv6 TCP segment's headers, the offsets from the start of the frame.
struct Segment {
    key: FlowKey,
    fixed: FixedFields,
    /// Where the TCP header starts.
    tcp: usize,
    /// Where the payload starts.
    payload: usize,
    /// Where the packet ends.
    end: usize,
    seq: u32,
    flags: u8,
    /// No extension header between the IPv6 and the TCP header.
    plain: bool,
}

impl Segment {
    /// Reads the headers of an IPv6 TCP segment behind `l3` bytes of link header; `None` for anything else.
    fn read(frame: &[u8], l3: usize) -> Option<Segment> {
        let ip =
            ip::parse(frame, l3).filter(|ip| ip.version == Version::V6 && ip.protocol == TCP)?;
        let tcp = ip.l4;
        let header = frame.get(tcp..ip.end)?;
        let data_offset = *header.get(12)?;
        let header_len = usize::from(data_offset >> 4) * 4;
        if header_len < TCP_HEADER_MIN || header_len > header.len() {
            return None;
        }
        Some(Segment {
            key: FlowKey {
                ports: be32(header, 0)?,
                addresses: frame.get(l3 + 8..l3 + IPV6_HEADER_LEN)?.try_into().ok()?,
            },
            fixed: FixedFields {
                version_class_label: be32(frame, l3)?,
                next_header_hop_limit: be16(frame, l3 + 6)?,
                ack: be32(header, 8)?,
                data_offset,
                window: be16(header, 14)?,
                urgent: be16(header, 18)?,
            },
            tcp,
            payload: tcp + header_len,
            end: ip.end,
            seq: be32(header, 4)?,
            flags: *header.get(TCP_FLAGS)?,
            plain: *frame.get(l3 + 6)? == TCP,
        })
    }

    fn payload_len(&self) -> usize {
        self.end - self.payload
    }

    /// Whether TSO could have cut this segment from a super-packet: plain IPv6, ACK or ACK|PSH, some payload.
    fn joinable(&self) -> bool {
        self.plain && self.flags & !PSH == ACK && self.payload_len() > 0
    }

    /// Whether no segment may follow it in a super-packet.
    fn ends_super_packet(&self, segment_size: usize) -> bool {
        self.flags & PSH != 0 || self.payload_len() < segment_size
    }
}

/// One connection's super-packet being built.
struct PendingFlow {
    /// Room for the virtio-net header, then the super-packet so far.
    buf: Box<[u8]>,
    /// Bytes of the super-packet in `buf` after the virtio-net header; 0: the slot is free.
    len: usize,
    key: FlowKey,
    fixed: FixedFields,
    tcp: usize,
    /// Where the payload starts: the length of the headers.
    payload: usize,
    /// The sequence number the next segment must have.
    next_seq: u32,
    /// The first segment's payload length: the size the kernel would cut the super-packet at.
    segment_size: usize,
    /// When a segment was last added, in [`SegmentCoalescer`]'s count.
    touched: u64,
    /// The slot a segment was last added to right after one was added to this one.
    successor: Option<usize>,
}

impl PendingFlow {
    /// Bytes of IPv6 (header and payload) pending.
    fn ip_len(&self, l3: usize) -> usize {
        self.len.saturating_sub(l3)
    }

    /// Whether `segment` (of this connection, joinable) continues this super-packet, its link header and TCP
    /// options in `headers` (its frame up to its payload) the same as the first segment's.
    fn takes(&self, headers: &[u8], segment: &Segment, l3: usize) -> bool {
        if segment.fixed != self.fixed
            || segment.tcp != self.tcp
            || segment.payload != self.payload
            || segment.seq != self.next_seq
            || segment.payload_len() > self.segment_size
            || self.ip_len(l3) + segment.payload_len() > MAX_SUPER_PACKET
        {
            return false;
        }
        let first = self
            .buf
            .get(VNET_HEADER_LEN..VNET_HEADER_LEN + self.payload);
        let (Some(first), options) = (first, self.tcp + TCP_HEADER_MIN..self.payload) else {
            return false;
        };
        first.get(..l3) == headers.get(..l3) && first.get(options.clone()) == headers.get(options)
    }

    /// Starts the super-packet with `segment` in `frame`; false (the slot left free) if it does not fit.
    fn start(&mut self, frame: &[u8], segment: &Segment, touched: u64) -> bool {
        let (Some(from), Some(to)) = (
            frame.get(..segment.end),
            self.buf
                .get_mut(VNET_HEADER_LEN..VNET_HEADER_LEN + segment.end),
        ) else {
            return false;
        };
        to.copy_from_slice(from);
        self.len = segment.end;
        self.key = segment.key;
        self.fixed = segment.fixed;
        self.tcp = segment.tcp;
        self.payload = segment.payload;
        self.next_seq = segment.seq.wrapping_add(segment.payload_len() as u32);
        self.segment_size = segment.payload_len();
        self.touched = touched;
        self.successor = None;
        true
    }

    /// Counts `segment`'s payload in, its bytes already at the end of the super-packet.
    fn grow(&mut self, segment: &Segment, touched: u64) {
        let n = segment.payload_len();
        self.len += n;
        self.next_seq = self.next_seq.wrapping_add(n as u32);
        self.touched = touched;
        if let Some(flags) = self.buf.get_mut(VNET_HEADER_LEN + self.tcp + TCP_FLAGS) {
            *flags |= segment.flags & PSH;
        }
    }

    /// Appends `segment`'s payload (it [`takes`](Self::takes) it); false if it does not fit the buffer.
    fn append(&mut self, frame: &[u8], segment: &Segment, touched: u64) -> bool {
        let at = VNET_HEADER_LEN + self.len;
        let (Some(from), Some(to)) = (
            frame.get(segment.payload..segment.end),
            self.buf.get_mut(at..at + segment.payload_len()),
        ) else {
            return false;
        };
        to.copy_from_slice(from);
        self.grow(segment, touched);
        true
    }

    /// Whether it ends with `segment`: a segment that ends it, or no room for another full-sized one.
    fn ends_with(&self, segment: &Segment, l3: usize) -> bool {
        segment.ends_super_packet(self.segment_size)
            || self.ip_len(l3) + self.segment_size > MAX_SUPER_PACKET
    }

    /// Where a frame of `len` bytes may be built so that its payload lands where it would join: over the
    /// last bytes of the super-packet, as many as its headers; `None` if it could not join, or would cover the
    /// super-packet's own headers.
    fn room_for(&self, len: usize) -> Option<usize> {
        let at = self.len.checked_sub(self.payload)?;
        let fits = at >= self.payload
            && self.payload <= MAX_HEADERS
            && len > self.payload
            && len <= self.payload + self.segment_size
            && VNET_HEADER_LEN + at + len <= self.buf.len();
        fits.then_some(at)
    }

    /// Writes the super-packet (its IPv6 payload length set, its checksum and virtio-net header made by
    /// [`transmit`]) through `write`, and frees the slot.
    fn flush(&mut self, l3: usize, write: &mut dyn FnMut(&[u8])) {
        if self.len == 0 {
            return;
        }
        let len = std::mem::take(&mut self.len);
        let Some((header, rest)) = self.buf.split_at_mut_checked(VNET_HEADER_LEN) else {
            return;
        };
        let Some(frame) = rest.get_mut(..len) else {
            return;
        };
        let payload_len = len.saturating_sub(l3 + IPV6_HEADER_LEN);
        let (Some(field), Ok(payload_len)) =
            (frame.get_mut(l3 + 4..l3 + 6), u16::try_from(payload_len))
        else {
            return;
        };
        field.copy_from_slice(&payload_len.to_be_bytes());
        transmit(frame, l3, u16::try_from(self.segment_size).ok()).emit(header);
        if let Some(bytes) = self.buf.get(..VNET_HEADER_LEN + len) {
            write(bytes);
        }
    }
}

/// Joins smoltcp's outgoing IPv6 TCP segments into TCPV6 super-packets (see the module's doc). Its buffers are
/// allocated once, when made: [`COALESCED_FLOWS`] of a virtio-net header, the link header and
/// [`MAX_SUPER_PACKET`] bytes each (see [`SegmentCoalescer::buffer_bytes`]).
pub struct SegmentCoalescer {
    flows: Vec<PendingFlow>,
    /// Bytes of link-layer header before the IP header (TAP: Ethernet).
    l3: usize,
    /// Segments added so far (the flows' age).
    added: u64,
    /// The slot a segment was last added to.
    last: Option<usize>,
    /// The bytes a frame built in place covered, to be put back.
    covered: [u8; MAX_HEADERS],
}

impl SegmentCoalescer {
    /// A coalescer for frames with `l3` bytes of link header (0 on TUN, 14 on TAP).
    pub fn new(l3: usize) -> SegmentCoalescer {
        let flows = (0..COALESCED_FLOWS)
            .map(|_| PendingFlow {
                buf: vec![0; VNET_HEADER_LEN + l3 + MAX_SUPER_PACKET].into_boxed_slice(),
                len: 0,
                key: FlowKey::default(),
                fixed: FixedFields::default(),
                tcp: 0,
                payload: 0,
                next_seq: 0,
                segment_size: 0,
                touched: 0,
                successor: None,
            })
            .collect();
        SegmentCoalescer {
            flows,
            l3,
            added: 0,
            last: None,
            covered: [0; MAX_HEADERS],
        }
    }

    /// Bytes of buffer it holds.
    pub fn buffer_bytes(&self) -> usize {
        self.flows.iter().map(|f| f.buf.len()).sum::<usize>() + MAX_HEADERS
    }

    /// Connections with a super-packet pending.
    pub fn pending(&self) -> usize {
        self.flows.iter().filter(|f| f.len > 0).count()
    }

    /// Has `build` write a frame (of `scratch.len()` bytes, TCP checksum not computed, as smoltcp builds them)
    /// and takes it in: in place if it joins the super-packet it was built in, else as [`offer`](Self::offer)
    /// takes it, from `scratch`, where it is left to be written if it passes through. Super-packets it ends are
    /// written through `write` (virtio-net header, then the frame) before it returns.
    pub fn build<R>(
        &mut self,
        scratch: &mut [u8],
        build: impl FnOnce(&mut [u8]) -> R,
        write: &mut dyn FnMut(&[u8]),
    ) -> (R, Offered) {
        let len = scratch.len();
        let Some((index, at)) = self.likeliest(len) else {
            let result = build(scratch);
            return (result, self.offer(scratch, write));
        };
        let l3 = self.l3;
        self.added += 1;
        let (added, covered) = (self.added, &mut self.covered);
        let Some(flow) = self.flows.get_mut(index) else {
            let result = build(scratch);
            return (result, self.offer(scratch, write));
        };
        let start = VNET_HEADER_LEN + at;
        let headers = flow.payload;
        // In bounds (room_for saw to it): the frame's place, and the headers it covers.
        let (Some(kept), Some(place)) = (
            covered.get_mut(..headers),
            flow.buf.get(start..start + headers),
        ) else {
            let result = build(scratch);
            return (result, self.offer(scratch, write));
        };
        kept.copy_from_slice(place);
        let result = build(flow.buf.get_mut(start..start + len).unwrap_or_default());
        let built = flow.buf.get(start..start + len).unwrap_or_default();
        let segment = Segment::read(built, l3);
        let joins = segment.as_ref().is_some_and(|segment| {
            segment.joinable()
                && segment.key == flow.key
                && flow.takes(
                    built.get(..segment.payload).unwrap_or_default(),
                    segment,
                    l3,
                )
        });
        if !joins {
            scratch.copy_from_slice(built);
        }
        // Put back the super-packet's bytes the headers covered.
        if let (Some(place), Some(kept)) = (
            flow.buf.get_mut(start..start + headers),
            covered.get(..headers),
        ) {
            place.copy_from_slice(kept);
        }
        match segment {
            Some(segment) if joins => {
                flow.grow(&segment, added);
                if flow.ends_with(&segment, l3) {
                    flow.flush(l3, write);
                }
                self.added_to(index);
                (result, Offered::Held)
            }
            Some(segment) => (result, self.take(scratch, segment, write)),
            // Not IPv6 TCP.
            None => (result, Offered::PassThrough),
        }
    }

    /// The pending super-packet a frame of `len` bytes is likeliest to join (see the module's doc), and where in
    /// its buffer to build it.
    fn likeliest(&self, len: usize) -> Option<(usize, usize)> {
        let last = self.last?;
        let index = self.flows.get(last)?.successor.unwrap_or(last);
        let flow = self.flows.get(index).filter(|f| f.len > 0)?;
        Some((index, flow.room_for(len)?))
    }

    /// Notes that a segment was added to slot `index`: it follows the slot the last one went to.
    fn added_to(&mut self, index: usize) {
        if let Some(previous) = self.last.and_then(|last| self.flows.get_mut(last)) {
            previous.successor = Some(index);
        }
        self.last = Some(index);
    }

    /// Takes `frame` (a frame smoltcp built, TCP checksum not computed) into a super-packet, or says it is to be
    /// written as it is; super-packets it ends are written through `write` (virtio-net header, then the frame)
    /// before it returns.
    pub fn offer(&mut self, frame: &[u8], write: &mut dyn FnMut(&[u8])) -> Offered {
        match Segment::read(frame, self.l3) {
            Some(segment) => self.take(frame, segment, write),
            None => Offered::PassThrough,
        }
    }

    /// [`offer`](Self::offer) for the IPv6 TCP segment in `frame`, its headers read.
    fn take(&mut self, frame: &[u8], segment: Segment, write: &mut dyn FnMut(&[u8])) -> Offered {
        let l3 = self.l3;
        let slot = self
            .flows
            .iter()
            .position(|f| f.len > 0 && f.key == segment.key);
        if !segment.joinable() {
            if let Some(flow) = slot.and_then(|i| self.flows.get_mut(i)) {
                flow.flush(l3, write);
            }
            return Offered::PassThrough;
        }
        self.added += 1;
        let added = self.added;
        if let Some((i, flow)) = slot.and_then(|i| Some((i, self.flows.get_mut(i)?))) {
            let headers = frame.get(..segment.payload).unwrap_or_default();
            if flow.takes(headers, &segment, l3) && flow.append(frame, &segment, added) {
                if flow.ends_with(&segment, l3) {
                    flow.flush(l3, write);
                }
                self.added_to(i);
                return Offered::Held;
            }
            flow.flush(l3, write);
        }
        // A segment nothing can follow, or one that leaves no room for another as large, goes as it is.
        if segment.flags & PSH != 0 || (segment.end - l3) + segment.payload_len() > MAX_SUPER_PACKET
        {
            return Offered::PassThrough;
        }
        let free = slot.or_else(|| self.flows.iter().position(|f| f.len == 0));
        let index = match free {
            Some(i) => i,
            None => {
                // The table is full: the super-packet added to least recently goes now.
                let oldest = self
                    .flows
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, f)| f.touched)
                    .map_or(0, |(i, _)| i);
                if let Some(flow) = self.flows.get_mut(oldest) {
                    flow.flush(l3, write);
                }
                oldest
            }
        };
        let held = self
            .flows
            .get_mut(index)
            .is_some_and(|flow| flow.start(frame, &segment, added));
        if !held {
            return Offered::PassThrough;
        }
        self.added_to(index);
        Offered::Held
    }

    /// Writes every pending super-packet through `write`.
    pub fn flush(&mut self, write: &mut dyn FnMut(&[u8])) {
        let l3 = self.l3;
        for flow in &mut self.flows {
            flow.flush(l3, write);
        }
    }
}

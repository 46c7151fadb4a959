//! Folding the ladder's long runs: a transfer is thousands of data segments and ACKs that look alike, so a run
//! of more than [`FOLD_LONGER_THAN`] packets that open, close or reset nothing (TCP segments without SYN, FIN
//! or RST, and UDP datagrams) keeps its first [`KEPT_BEFORE`] and last [`KEPT_AFTER`] packets as rows, and the
//! packets between become one row that counts them (`… 120 packets folded (0.0100–0.5300 s): 80 data
//! segments, 37 ACKs, 3 retransmissions, 2 lost? …`). Handshakes, teardowns, resets, ICMP and address
//! resolution are always rows of their own, so every run starts and ends where something else happened.

use super::decode::{LOST, RETRANSMISSION};
use super::{LadderPacket, PacketKind, Resend};

/// Runs of alike packets longer than this are folded.
pub const FOLD_LONGER_THAN: usize = 12;
/// Packets of a folded run kept as rows before the fold.
const KEPT_BEFORE: usize = 4;
/// Packets of a folded run kept as rows after the fold.
const KEPT_AFTER: usize = 2;

/// One row of the ladder.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Row {
    /// The packet at this index, drawn as an arrow.
    Packet(usize),
    /// Packets folded into one row.
    Folded(Fold),
}

/// What a folded row stands for.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Fold {
    /// Packets folded.
    pub packets: usize,
    /// TCP segments with payload.
    pub data: usize,
    /// TCP segments without payload.
    pub acks: usize,
    /// UDP datagrams.
    pub datagrams: usize,
    /// Segments marked `retransmission` (spurious ones included).
    pub retransmissions: usize,
    /// Packets marked `lost?`.
    pub lost: usize,
    /// The time of the first and the last packet folded.
    pub from: f64,
    pub to: f64,
}

impl Fold {
    /// The row's text.
    pub fn text(&self) -> String {
        let mut parts = Vec::new();
        for (n, one, many) in [
            (self.data, "data segment", "data segments"),
            (self.acks, "ACK", "ACKs"),
            (self.datagrams, "UDP datagram", "UDP datagrams"),
            (self.retransmissions, "retransmission", "retransmissions"),
            (self.lost, "lost?", "lost?"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {}", if n == 1 { one } else { many }));
            }
        }
        format!(
            "… {} packets folded ({:.4}–{:.4} s): {} …",
            self.packets,
            self.from,
            self.to,
            parts.join(", ")
        )
    }

    fn add(&mut self, packet: &LadderPacket) {
        if self.packets == 0 {
            self.from = packet.time;
        }
        self.to = packet.time;
        self.packets += 1;
        match packet.kind {
            PacketKind::Tcp(segment) if segment.payload > 0 => self.data += 1,
            PacketKind::Tcp(_) => self.acks += 1,
            _ => self.datagrams += 1,
        }
        let mark = packet.mark.as_deref().unwrap_or("");
        if mark.contains(RETRANSMISSION) {
            self.retransmissions += 1;
        }
        if mark.contains(LOST) {
            self.lost += 1;
        }
    }
}

/// Whether `packet` may be folded: it opens, closes or resets nothing.
fn alike(packet: &LadderPacket) -> bool {
    match packet.kind {
        PacketKind::Tcp(segment) => {
            !(segment.syn || segment.fin || segment.rst)
                && segment.resend != Resend::ZeroWindowProbe
        }
        PacketKind::Udp => true,
        _ => false,
    }
}

/// The rows of `packets`: every packet, with long runs folded (see the module's documentation).
pub(super) fn rows(packets: &[LadderPacket]) -> Vec<Row> {
    let mut rows = Vec::with_capacity(packets.len().min(1024));
    let mut at = 0;
    while at < packets.len() {
        let run = packets
            .get(at..)
            .unwrap_or_default()
            .iter()
            .take_while(|p| alike(p))
            .count();
        if run > FOLD_LONGER_THAN {
            let folded_end = at + run - KEPT_AFTER;
            rows.extend((at..at + KEPT_BEFORE).map(Row::Packet));
            let mut fold = Fold::default();
            for packet in packets
                .get(at + KEPT_BEFORE..folded_end)
                .unwrap_or_default()
            {
                fold.add(packet);
            }
            rows.push(Row::Folded(fold));
            rows.extend((folded_end..at + run).map(Row::Packet));
            at += run;
        } else {
            // A short run, or a packet that is not alike: each is a row.
            rows.extend((at..at + run.max(1)).map(Row::Packet));
            at += run.max(1);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::diagram::TcpSegment;

    fn tcp(syn: bool, fin: bool, payload: u32, mark: Option<&str>) -> LadderPacket {
        LadderPacket {
            time: 0.0,
            src: "a".into(),
            dst: "b".into(),
            label: String::new(),
            kind: PacketKind::Tcp(TcpSegment {
                syn,
                ack: true,
                fin,
                payload,
                ..TcpSegment::default()
            }),
            ports: Some((1, 2)),
            mark: mark.map(Into::into),
        }
    }

    #[test]
    fn a_long_run_folds_between_its_first_and_last_packets_and_counts_them() {
        let mut packets = vec![tcp(true, false, 0, None)];
        for i in 0..100 {
            let mark = match i {
                10 => Some("lost?"),
                20 => Some("retransmission"),
                _ => None,
            };
            packets.push(tcp(false, false, if i % 2 == 0 { 1000 } else { 0 }, mark));
        }
        packets.push(tcp(false, true, 0, None));
        for (i, p) in packets.iter_mut().enumerate() {
            p.time = i as f64 / 100.0;
        }
        let rows = rows(&packets);
        // SYN, 4 kept, the fold, 2 kept, FIN.
        assert_eq!(rows.len(), 1 + 4 + 1 + 2 + 1, "{rows:?}");
        let Row::Folded(fold) = &rows[5] else {
            panic!("{rows:?}")
        };
        assert_eq!(fold.packets, 100 - 4 - 2);
        assert_eq!((fold.data, fold.acks), (47, 47));
        assert_eq!((fold.retransmissions, fold.lost), (1, 1));
        assert_eq!((fold.from, fold.to), (0.05, 0.98));
        assert_eq!(
            fold.text(),
            "… 94 packets folded (0.0500–0.9800 s): 47 data segments, 47 ACKs, 1 retransmission, 1 lost? …"
        );
        // Every packet is a row or folded, once.
        let drawn: Vec<usize> = rows
            .iter()
            .filter_map(|r| match r {
                Row::Packet(i) => Some(*i),
                Row::Folded(_) => None,
            })
            .collect();
        assert_eq!(drawn, [0, 1, 2, 3, 4, 99, 100, 101]);
    }

    #[test]
    fn short_runs_and_handshakes_are_not_folded() {
        let mut packets = vec![tcp(true, false, 0, None)];
        packets.extend((0..FOLD_LONGER_THAN).map(|_| tcp(false, false, 10, None)));
        packets.push(tcp(false, true, 0, None));
        let rows = rows(&packets);
        assert_eq!(rows.len(), packets.len());
        assert!(rows.iter().all(|r| matches!(r, Row::Packet(_))));
    }
}

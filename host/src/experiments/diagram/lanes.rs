//! The ladder's lanes: one per endpoint. A host is one lane, unless packets go from it to itself between ports
//! (a client and a server on one address, as on loopback): then each of its ports is a lane of its own
//! (`127.0.0.1:40000`, `[::1]:12000`), and its packets without ports (an echo request, say) go to a lane of the
//! bare address.

use std::collections::HashSet;

use super::LadderPacket;

/// The lanes of a ladder and where each packet goes between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Lanes {
    /// The lanes' names, in order of first appearance.
    pub names: Vec<String>,
    /// Per packet, the lanes it goes from and to (indexes into `names`).
    pub ends: Vec<(usize, usize)>,
}

/// The lanes of `packets` (see the module's documentation).
pub(super) fn lanes(packets: &[LadderPacket]) -> Lanes {
    let shared: HashSet<&str> = packets
        .iter()
        .filter(|p| p.src == p.dst && p.ports.is_some())
        .map(|p| p.src.as_str())
        .collect();
    let endpoint = |host: &str, port: Option<u16>| match port {
        Some(port) if shared.contains(host) && host.contains(':') => format!("[{host}]:{port}"),
        Some(port) if shared.contains(host) => format!("{host}:{port}"),
        _ => host.to_string(),
    };
    let mut names: Vec<String> = Vec::new();
    let mut lane = |name: String| match names.iter().position(|n| *n == name) {
        Some(at) => at,
        None => {
            names.push(name);
            names.len() - 1
        }
    };
    let ends = packets
        .iter()
        .map(|p| {
            let from = lane(endpoint(&p.src, p.ports.map(|(src, _)| src)));
            let to = lane(endpoint(&p.dst, p.ports.map(|(_, dst)| dst)));
            (from, to)
        })
        .collect();
    Lanes { names, ends }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::diagram::PacketKind;

    fn packet(src: &str, dst: &str, ports: Option<(u16, u16)>) -> LadderPacket {
        LadderPacket {
            time: 0.0,
            src: src.into(),
            dst: dst.into(),
            label: String::new(),
            kind: PacketKind::Other,
            ports,
            mark: None,
        }
    }

    #[test]
    fn one_address_with_two_ports_is_two_lanes() {
        let lo = "127.0.0.1";
        let packets = [
            packet(lo, lo, Some((40000, 12000))),
            packet(lo, lo, Some((12000, 40000))),
            packet(lo, lo, Some((40000, 12000))),
        ];
        let lanes = lanes(&packets);
        assert_eq!(lanes.names, ["127.0.0.1:40000", "127.0.0.1:12000"]);
        assert_eq!(lanes.ends, [(0, 1), (1, 0), (0, 1)]);
    }

    #[test]
    fn ipv6_endpoints_are_bracketed_and_portless_packets_keep_the_address() {
        let packets = [
            packet("::1", "::1", Some((40000, 12001))),
            // The port unreachable, drawn from the port the datagram went to back to its sender.
            packet("::1", "::1", Some((12001, 40000))),
            packet("::1", "::1", None),
        ];
        let lanes = lanes(&packets);
        assert_eq!(lanes.names, ["[::1]:40000", "[::1]:12001", "::1"]);
        assert_eq!(lanes.ends, [(0, 1), (1, 0), (2, 2)]);
    }

    #[test]
    fn hosts_that_differ_stay_one_lane_each() {
        let packets = [
            packet("10.0.2.2", "10.0.2.15", Some((40000, 12000))),
            packet("10.0.2.15", "10.0.2.2", Some((12000, 40000))),
            packet("10.0.2.2", "10.0.2.15", Some((40001, 12000))),
            packet("10.0.2.2", "10.0.2.15", None),
        ];
        let lanes = lanes(&packets);
        assert_eq!(lanes.names, ["10.0.2.2", "10.0.2.15"]);
        assert_eq!(lanes.ends, [(0, 1), (1, 0), (0, 1), (0, 1)]);
    }
}

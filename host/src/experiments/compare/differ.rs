//! Why the stacks differ, in one line built from what their captures show.

use super::{Observation, Scenario};

/// One line on why the stacks differ, from what their captures show.
pub(super) fn explain(scenario: Scenario, kernel: &Observation, smoltcp: &Observation) -> String {
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

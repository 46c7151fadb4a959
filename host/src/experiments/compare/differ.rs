//! Why the stacks differ, in one line built from what their captures show, with the protocol names of the
//! family the run used (ICMP or ICMPv6, ARP or NDP).

use super::{Observation, Scenario};
use crate::lab::IpVersion;

/// The ICMP of `version`: `ICMP` or `ICMPv6`.
fn icmp_name(version: IpVersion) -> &'static str {
    match version {
        IpVersion::Ipv4 => "ICMP",
        IpVersion::Ipv6 => "ICMPv6",
    }
}

/// One line on why the stacks differ over `version`, from what their captures show.
pub(super) fn explain(
    scenario: Scenario,
    version: IpVersion,
    kernel: &Observation,
    smoltcp: &Observation,
) -> String {
    let icmp = |o: &Observation| o.packets.map(|p| p.icmp_port_unreachable);
    let rst = |o: &Observation| o.packets.map(|p| p.rst);
    let icmp_name = icmp_name(version);
    let line = match (scenario, icmp(kernel), icmp(smoltcp)) {
        (Scenario::ConnectedUdpClientBeforeServer, k, Some(s)) if s > 0 => format!(
            "both hosts answered with {icmp_name} port unreachable (kernel capture: {}, lab: {s}); the kernel hands \
             it to a connected socket as ECONNREFUSED, smoltcp never hands {icmp_name} errors to UDP sockets",
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
            "kernel: {} (RST {}, {icmp_name} port unreachable {}); smoltcp: {} (RST {}, {icmp_name} port \
             unreachable {})",
            kernel.outcome,
            rst(kernel).map_or("?".into(), |n| n.to_string()),
            icmp(kernel).map_or("?".into(), |n| n.to_string()),
            smoltcp.outcome,
            rst(smoltcp).map_or("?".into(), |n| n.to_string()),
            icmp(smoltcp).map_or("?".into(), |n| n.to_string()),
        ),
    };
    format!("{line}{}", address_resolution(version, kernel, smoltcp))
}

/// `; the lab's capture also holds 2 NDP packets …` where the lab resolved its peer's address and loopback did
/// not need to: the packets that make the two captures' totals differ though the exchanges are the same.
fn address_resolution(version: IpVersion, kernel: &Observation, smoltcp: &Observation) -> String {
    // Loopback resolves no address, captured or not (without root the kernel's run has no capture).
    let Some(s) = smoltcp.packets else {
        return String::new();
    };
    if s.address_resolution == 0 || kernel.packets.is_some_and(|k| k.address_resolution != 0) {
        return String::new();
    }
    let what = match version {
        IpVersion::Ipv4 => "ARP request and reply",
        IpVersion::Ipv6 => "NDP neighbour solicitation and advertisement",
    };
    format!(
        "; the lab's capture also holds {} {} packets ({what}), which loopback does not need",
        s.address_resolution,
        version.neighbour_discovery()
    )
}

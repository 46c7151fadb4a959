//! Opening the smoltcp side of a command: which device kind a `--stack` means, the TUN/TAP device opened as a
//! one-node network with the command's address, gateway, buffers and instruments, and the label that names it.

use smoltcp::wire::IpCidr;

use super::args::{Stack, StackArgs};
use crate::stack::device::DeviceKind;
use crate::stack::device_network::DeviceNetwork;
use crate::sys::stop_on_signals;

pub(super) fn device_kind(stack: Stack) -> Option<DeviceKind> {
    match stack {
        Stack::Kernel => None,
        Stack::Tun => Some(DeviceKind::Tun),
        Stack::Tap => Some(DeviceKind::Tap),
    }
}

pub(super) fn open_device(stack: &StackArgs, kind: DeviceKind) -> Result<DeviceNetwork, String> {
    // Before the open, so no signal can leave the device with its offload setting on.
    if let Err(e) = stop_on_signals() {
        log::warn!("a signal may not stop smoltalk cleanly: {e}");
    }
    let cidr = IpCidr::Ipv4(stack.ip);
    // With checksum offload smoltcp trusts the kernel's TCP checksums and leaves its own to the kernel: packets
    // corrupted on the way in (by the FaultInjector, after the kernel) would be taken as good, and a capture
    // would show partial checksums. So corruption and captures run without offload.
    let experiment = &stack.experiment;
    let offload = !stack.no_offload && experiment.corrupt_chance == 0 && experiment.pcap.is_none();
    if !stack.no_offload && !offload {
        log::info!(
            "--pcap/--corrupt-chance: checksum offload off, so every checksum is real and verified"
        );
    }
    let mut net = DeviceNetwork::open(
        &stack.dev,
        kind,
        offload,
        cidr,
        Some(stack.gateway),
        &stack.experiment.instruments(),
    )
    .map_err(|e| e.to_string())?;
    net.node_mut().buffers.tcp = stack.socket_buffer.max(1024);
    log::info!(
        "{} as {}, gateway {}",
        smoltcp_label(&net),
        stack.ip,
        stack.gateway
    );
    Ok(net)
}

pub(super) fn smoltcp_label(net: &DeviceNetwork) -> String {
    let device = net.device();
    format!(
        "smoltcp on {} device {}, MTU {}",
        device.kind().name(),
        device.name(),
        device.mtu()
    )
}

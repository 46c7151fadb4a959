//! Opening the smoltcp side of a command: which device kind a `--stack` means, the TUN/TAP device opened as a
//! one-node network with the command's address, gateway, buffers and instruments, and the label that names it.

use super::args::{Stack, StackArgs};
use crate::stack::device::DeviceKind;
use crate::stack::device_network::DeviceNetwork;
use crate::stack::kernel_thread::KernelThreadMode;
use crate::stack::offload::Offload;
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
    let addressing = stack.addressing().map_err(|e| e.to_string())?;
    let offload = if stack.no_offload {
        Offload::None
    } else {
        stack.offload
    };
    let mut net = DeviceNetwork::open(
        &stack.dev,
        kind,
        offload,
        stack.kernel_thread,
        &addressing,
        &stack.experiment.instruments(),
    )
    .map_err(|e| e.to_string())?;
    net.node_mut().buffers.tcp = stack.socket_buffer.max(1024);
    log::info!(
        "{} as {addressing}, {}{}",
        smoltcp_label(&net),
        net.device().offload().describe(),
        match net.device().kernel_thread() {
            Some(KernelThreadMode::On) => ", a kernel thread takes in what smoltcp sends (threaded NAPI)",
            Some(KernelThreadMode::Auto) =>
                ", a kernel thread takes in what smoltcp sends while several connections are busy (threaded NAPI)",
            Some(KernelThreadMode::Off) | None => "",
        }
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

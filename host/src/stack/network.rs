//! [`Network`]: what the client and server drivers need from a set of smoltcp nodes — the time, the nodes, a
//! poll, and a way to wait — so the same driver runs in the lab (virtual time) and on a TUN/TAP device (real time).

use std::io;

use smoltalk_core::ClientError;
use smoltcp::time::Instant;

use crate::stack::node::Node;

/// Index of a node in a [`Network`].
pub type NodeId = usize;

/// A set of smoltcp nodes and the links between them.
pub trait Network {
    /// The network's clock (virtual in the lab, monotonic on a device).
    fn now(&self) -> Instant;
    /// A node of this network.
    fn node(&mut self, id: NodeId) -> &mut Node;
    /// Polls every interface once and moves what is ready; returns whether any packet moved or socket changed.
    fn poll(&mut self) -> Result<bool, NetworkError> {
        self.poll_each_packet(&mut |_, _| {})
    }
    /// [`Network::poll`], calling `after_packet` with a node right after it takes in each packet, before it
    /// takes in the next (a server that must have a socket listening for every SYN adds one there).
    fn poll_each_packet(
        &mut self,
        after_packet: &mut dyn FnMut(NodeId, &mut Node),
    ) -> Result<bool, NetworkError>;
    /// Waits until a packet may have arrived or a timer is due, but never past `until`.
    fn wait(&mut self, until: Option<Instant>) -> Result<(), NetworkError>;
}

/// Why a network stopped: its device failed, or (in the lab) it could not be set up.
#[derive(Debug)]
pub enum NetworkError {
    /// A fatal error reading or writing the device (it was deleted, say).
    DeviceGone {
        /// The device's name.
        device: String,
        /// What reading or writing it said.
        error: io::Error,
    },
    /// Sleeping on the device's descriptor failed.
    Wait {
        /// The device's name.
        device: String,
        /// What `ppoll` said.
        error: io::Error,
    },
    /// A lab's UDP client could not be made.
    UdpClientSetup(ClientError),
    /// The proxy's lab could not be made.
    ProxyLabSetup(crate::proxy::node::SmoltcpProxyError),
}

impl std::fmt::Display for NetworkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetworkError::DeviceGone { device, error } => {
                write!(f, "device {device} went away: {error}")
            }
            NetworkError::Wait { device, error } => write!(f, "waiting on {device}: {error}"),
            NetworkError::UdpClientSetup(e) => write!(f, "cannot set up a UDP client: {e}"),
            NetworkError::ProxyLabSetup(why) => write!(f, "cannot set up the proxy lab: {why}"),
        }
    }
}

impl std::error::Error for NetworkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetworkError::DeviceGone { error, .. } | NetworkError::Wait { error, .. } => {
                Some(error)
            }
            NetworkError::UdpClientSetup(e) => Some(e),
            NetworkError::ProxyLabSetup(e) => Some(e),
        }
    }
}

/// What one step of a driver found.
pub enum Step<T> {
    /// Finished with this result.
    Done(T),
    /// Not finished; `moved` says whether it made progress (then it is stepped again at once), `poll_at` when
    /// it must be stepped even if no packet arrives.
    Pending {
        /// Whether the step moved bytes or changed state.
        moved: bool,
        /// When the step must run again at the latest.
        poll_at: Option<Instant>,
    },
}

/// Polls `net` and runs `step` until it is done. `step` owns every timeout (the drivers keep their own
/// deadlines), so this loop never decides on its own that something failed.
pub fn drive<N: Network, T>(
    net: &mut N,
    mut step: impl FnMut(&mut N) -> Step<T>,
) -> Result<T, NetworkError> {
    loop {
        let polled = net.poll()?;
        match step(net) {
            Step::Done(result) => return Ok(result),
            Step::Pending { moved, poll_at } => {
                if !(moved || polled) {
                    net.wait(poll_at)?;
                }
            }
        }
    }
}

/// [`drive`] with `after_packet` run after every packet a node takes in (see [`Network::poll_each_packet`]);
/// both closures share `state`.
pub fn drive_each_packet<N: Network, S, T>(
    net: &mut N,
    state: &mut S,
    mut after_packet: impl FnMut(&mut S, NodeId, &mut Node),
    mut step: impl FnMut(&mut N, &mut S) -> Step<T>,
) -> Result<T, NetworkError> {
    loop {
        let polled = net.poll_each_packet(&mut |id, node| after_packet(state, id, node))?;
        match step(net, state) {
            Step::Done(result) => return Ok(result),
            Step::Pending { moved, poll_at } => {
                if !(moved || polled) {
                    net.wait(poll_at)?;
                }
            }
        }
    }
}

/// The earlier of two optional instants.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_device_is_named() {
        let error = || io::Error::from_raw_os_error(crate::sys::errno::ENODEV);
        let gone = NetworkError::DeviceGone {
            device: "st0".into(),
            error: error(),
        };
        assert_eq!(
            gone.to_string(),
            format!("device st0 went away: {}", error())
        );
        let wait = NetworkError::Wait {
            device: "st0".into(),
            error: error(),
        };
        assert_eq!(wait.to_string(), format!("waiting on st0: {}", error()));
    }
}

//! [`Network`]: what the client and server drivers need from a set of smoltcp nodes — the time, the nodes, a
//! poll, and a way to wait — so the same driver runs in the lab (virtual time) and on a TUN/TAP device (real time).

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
    fn poll(&mut self) -> Result<bool, NetworkError>;
    /// Waits until a packet may have arrived or a timer is due, but never past `until`.
    fn wait(&mut self, until: Option<Instant>) -> Result<(), NetworkError>;
}

/// The device under a network failed.
#[derive(Debug)]
pub struct NetworkError(pub String);

impl std::fmt::Display for NetworkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NetworkError {}

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

/// The earlier of two optional instants.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

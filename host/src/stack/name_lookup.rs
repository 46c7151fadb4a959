//! [`NameLookup`]: a server name looked up through a smoltcp DNS socket of a node, for the smoltcp clients
//! (`tcp-client --stack tun NAME PORT`): the core's [`Lookups`], as the smoltcp proxy asks them (A and AAAA at
//! once, the answer that came first first, the second waited for a short grace), on a DNS socket of its own,
//! given up at a deadline.

use std::fmt;
use std::net::IpAddr;

use smoltalk_core::name_lookup::{Answer, Lookups, Query};
use smoltalk_core::proxy::engine::MAX_CANDIDATES;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::dns;
use smoltcp::time::Instant;
use smoltcp::wire::IpAddress;

use crate::stack::node::Node;

/// Why a name was not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameLookupError {
    /// smoltcp would not send the query (the name is too long or malformed).
    Query {
        /// The name.
        name: String,
        /// smoltcp's reason.
        reason: String,
    },
    /// The server answered with no address of either family (no such name, or none of its records is A or
    /// AAAA).
    NoAddress {
        /// The name.
        name: String,
        /// The DNS server asked.
        server: IpAddress,
    },
    /// No answer came in time.
    TimedOut {
        /// The name.
        name: String,
        /// The DNS server asked.
        server: IpAddress,
    },
}

impl fmt::Display for NameLookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameLookupError::Query { name, reason } => {
                write!(f, "cannot look {name} up: {reason}")
            }
            NameLookupError::NoAddress { name, server } => write!(
                f,
                "{name} has no IPv4 or IPv6 address (DNS server {server}): no such name, or a typo"
            ),
            NameLookupError::TimedOut { name, server } => write!(
                f,
                "DNS server {server} did not answer for {name} in time (is it running? give another with --dns)"
            ),
        }
    }
}

impl std::error::Error for NameLookupError {}

/// A lookup under way on a node (see the module docs).
pub struct NameLookup {
    socket: SocketHandle,
    lookups: Lookups,
    query: Query,
    server: IpAddress,
    name: String,
    deadline: Instant,
}

impl NameLookup {
    /// Adds a DNS socket asking `server` to `node` and starts looking `name` up, giving up at `deadline`.
    pub fn start(
        node: &mut Node,
        server: IpAddress,
        name: &str,
        deadline: Instant,
    ) -> Result<Box<NameLookup>, NameLookupError> {
        // Room for the A and the AAAA query.
        let socket = node
            .sockets
            .add(dns::Socket::new(&[server], vec![None, None]));
        let lookups = Lookups::new(Some(socket));
        let query = match lookups.start(&mut node.sockets, node.iface.context(), name) {
            Ok(query) => query,
            Err(e) => {
                node.sockets.remove(socket);
                return Err(NameLookupError::Query {
                    name: name.to_owned(),
                    reason: e.to_string(),
                });
            }
        };
        Ok(Box::new(NameLookup {
            socket,
            lookups,
            query,
            server,
            name: name.to_owned(),
            deadline,
        }))
    }

    /// When the lookup must be polled again at the latest (its deadline, or the end of the grace for the
    /// second answer).
    pub fn poll_at(&self) -> Instant {
        self.query
            .deadline()
            .map_or(self.deadline, |grace| grace.min(self.deadline))
    }

    /// `Err(self)` while the answers are still coming; then the addresses found, first answer first, or why there
    /// are none. The DNS socket is removed from the node once the lookup is over (the lookup is consumed).
    pub fn poll(
        mut self: Box<Self>,
        node: &mut Node,
        now: Instant,
    ) -> Result<Result<Vec<IpAddress>, NameLookupError>, Box<NameLookup>> {
        let mut found = heapless::Vec::<IpAddr, MAX_CANDIDATES>::new();
        let result = match self
            .lookups
            .poll(&mut node.sockets, &mut self.query, now, &mut found)
        {
            Answer::Pending if now < self.deadline => return Err(self),
            Answer::Pending => {
                self.lookups.cancel(&mut node.sockets, self.query);
                Err(NameLookupError::TimedOut {
                    name: self.name,
                    server: self.server,
                })
            }
            Answer::Found(addresses) => Ok(addresses.iter().map(|&a| IpAddress::from(a)).collect()),
            Answer::Failed(_) => Err(NameLookupError::NoAddress {
                name: self.name,
                server: self.server,
            }),
        };
        node.sockets.remove(self.socket);
        Ok(result)
    }
}

//! [`NameLookup`]: a server name looked up through a smoltcp DNS socket of a node, for the smoltcp clients
//! (`tcp-client --stack tun NAME PORT`). It asks for A and AAAA records at once and is over when both answers
//! are in, [`SECOND_ANSWER_GRACE`] after the first answer with addresses, or at the deadline; the addresses of
//! the answer that came first come first, as the proxy's lookups in the core order them.

use std::fmt;

use smoltalk_core::proxy::server::SECOND_ANSWER_GRACE;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::dns;
use smoltcp::time::Instant;
use smoltcp::wire::{DnsQueryType, IpAddress};

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

/// One of the lookup's two queries.
#[derive(Clone, Copy)]
enum Asked {
    Waiting(dns::QueryHandle),
    Over,
}

/// A lookup under way on a node (see the module docs).
pub struct NameLookup {
    socket: SocketHandle,
    server: IpAddress,
    name: String,
    queries: [Asked; 2],
    found: Vec<IpAddress>,
    deadline: Instant,
    /// When the first answer with addresses came.
    first_at: Option<Instant>,
}

impl NameLookup {
    /// Adds a DNS socket asking `server` to `node` and starts looking `name` up, giving up at `deadline`.
    pub fn start(
        node: &mut Node,
        server: IpAddress,
        name: &str,
        deadline: Instant,
    ) -> Result<Box<NameLookup>, NameLookupError> {
        let socket = node
            .sockets
            .add(dns::Socket::new(&[server], vec![None, None]));
        let cx = node.iface.context();
        let dns = node.sockets.get_mut::<dns::Socket>(socket);
        let mut queries = [Asked::Over; 2];
        for (asked, kind) in queries
            .iter_mut()
            .zip([DnsQueryType::A, DnsQueryType::Aaaa])
        {
            let handle = dns
                .start_query(cx, name, kind)
                .map_err(|e| NameLookupError::Query {
                    name: name.to_owned(),
                    reason: e.to_string(),
                })?;
            *asked = Asked::Waiting(handle);
        }
        Ok(Box::new(NameLookup {
            socket,
            server,
            name: name.to_owned(),
            queries,
            found: Vec::new(),
            deadline,
            first_at: None,
        }))
    }

    /// When the lookup must be polled again at the latest (its deadline, or the end of the grace for the
    /// second answer).
    pub fn poll_at(&self) -> Instant {
        match self.first_at {
            Some(at) => self.deadline.min(at + SECOND_ANSWER_GRACE),
            None => self.deadline,
        }
    }

    /// `Err(self)` while the answers are still coming; then the addresses found, first answer first, or why there
    /// are none. The DNS socket is removed from the node once the lookup is over (the lookup is consumed).
    pub fn poll(
        mut self: Box<Self>,
        node: &mut Node,
        now: Instant,
    ) -> Result<Result<Vec<IpAddress>, NameLookupError>, Box<NameLookup>> {
        let dns = node.sockets.get_mut::<dns::Socket>(self.socket);
        for asked in &mut self.queries {
            if let Asked::Waiting(handle) = *asked {
                match dns.get_query_result(handle) {
                    Err(dns::GetQueryResultError::Pending) => {}
                    Err(dns::GetQueryResultError::Failed) => *asked = Asked::Over,
                    Ok(addresses) => {
                        *asked = Asked::Over;
                        self.found.extend(addresses);
                    }
                }
            }
        }
        let waiting = self
            .queries
            .iter()
            .any(|asked| matches!(asked, Asked::Waiting(_)));
        if !self.found.is_empty() {
            self.first_at.get_or_insert(now);
        }
        // Past the deadline, or the grace after a first answer, what came in is enough.
        if waiting && now < self.poll_at() {
            return Err(self);
        }
        for asked in self.queries {
            if let Asked::Waiting(handle) = asked {
                dns.cancel_query(handle);
            }
        }
        node.sockets.remove(self.socket);
        let NameLookup {
            name,
            server,
            found,
            ..
        } = *self;
        Ok(match (found.is_empty(), waiting) {
            (false, _) => Ok(found),
            (true, true) => Err(NameLookupError::TimedOut { name, server }),
            (true, false) => Err(NameLookupError::NoAddress { name, server }),
        })
    }
}

//! [`Lookups`]: the smoltcp design's name lookups, through the DNS socket the slots share. The one place the
//! server touches smoltcp's DNS; without the crate's `dns` feature (a board with no DNS server to ask) there is no
//! socket, no lookup is ever asked for (the engine serves `--resolve` names and literals only), and none of
//! smoltcp's DNS code is linked in.
//!
//! With the crate's `ipv6` feature a lookup asks for the name's A and AAAA records at once (two queries of the DNS
//! socket) and is over when both are: the addresses of the answer that came first are tried first, those of the
//! other after them, so a name with only AAAA records (or only A) is found, and the proxy's `--allow-dest` can
//! pick whichever family it allows. Without it, a lookup asks for A records alone.

use core::net::IpAddr;

use smoltcp::iface::{Context, SocketHandle, SocketSet};

/// The most addresses a lookup keeps from its first answer while it waits for the second (more are dropped:
/// smoltcp keeps only `DNS_MAX_RESULT_COUNT` of an answer's records anyway, one unless a feature raises it).
#[cfg(all(feature = "dns", feature = "ipv6"))]
const KEPT: usize = 2;

/// One of a lookup's queries.
#[cfg(feature = "dns")]
#[derive(Clone, Copy)]
enum Asked {
    /// Waiting for its answer.
    Waiting(smoltcp::socket::dns::QueryHandle),
    /// Answered (or failed): nothing more to wait for.
    Over,
}

/// A lookup under way: its A query, and with IPv6 its AAAA query and the addresses of whichever answered first.
#[cfg(feature = "dns")]
#[derive(Clone, Copy)]
pub(super) struct Query {
    a: Asked,
    #[cfg(feature = "ipv6")]
    aaaa: Asked,
    /// The addresses of the first answer, kept until the other is in.
    #[cfg(feature = "ipv6")]
    first: [Option<IpAddr>; KEPT],
}

/// A lookup under way (none can be, without the `dns` feature).
#[cfg(not(feature = "dns"))]
#[derive(Debug, Clone, Copy)]
pub(super) enum Query {}

/// Where a lookup is.
#[cfg_attr(not(feature = "dns"), allow(dead_code))]
pub(super) enum Answer<'a> {
    /// Still waiting.
    Pending,
    /// The addresses found.
    Found(&'a [IpAddr]),
    /// The lookup failed.
    Failed(&'static str),
}

/// The DNS socket, if the server has one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lookups {
    socket: Option<SocketHandle>,
}

impl Lookups {
    /// Lookups through `socket` (ignored without the `dns` feature).
    pub fn new(socket: Option<SocketHandle>) -> Lookups {
        Lookups {
            socket: socket.filter(|_| cfg!(feature = "dns")),
        }
    }

    /// Whether names can be looked up at all.
    pub fn available(&self) -> bool {
        self.socket.is_some()
    }

    /// Starts looking `name` up (A records, and AAAA with the `ipv6` feature). `Err`: why it could not start
    /// (a query already started is cancelled).
    #[cfg(feature = "dns")]
    pub fn start(
        &self,
        sockets: &mut SocketSet<'_>,
        cx: &mut Context,
        name: &str,
    ) -> Result<Query, smoltcp::socket::dns::StartQueryError> {
        use smoltcp::socket::dns;
        use smoltcp::wire::DnsQueryType;
        let Some(handle) = self.socket else {
            return Err(dns::StartQueryError::NoFreeSlot);
        };
        let socket = sockets.get_mut::<dns::Socket>(handle);
        let a = socket.start_query(cx, name, DnsQueryType::A)?;
        #[cfg(feature = "ipv6")]
        let aaaa = match socket.start_query(cx, name, DnsQueryType::Aaaa) {
            Ok(aaaa) => aaaa,
            Err(e) => {
                socket.cancel_query(a);
                return Err(e);
            }
        };
        Ok(Query {
            a: Asked::Waiting(a),
            #[cfg(feature = "ipv6")]
            aaaa: Asked::Waiting(aaaa),
            #[cfg(feature = "ipv6")]
            first: [None; KEPT],
        })
    }

    /// Starts looking `name` up: never possible without the `dns` feature.
    #[cfg(not(feature = "dns"))]
    pub fn start(
        &self,
        _sockets: &mut SocketSet<'_>,
        _cx: &mut Context,
        _name: &str,
    ) -> Result<Query, &'static str> {
        Err("this build has no DNS")
    }

    /// Where `query` is (it keeps what came in so far); the addresses (at most `N`) go into `found` once it is
    /// over. Once it is no longer pending, the query is over (do not cancel it).
    #[cfg(feature = "dns")]
    pub fn poll<'a, const N: usize>(
        &self,
        sockets: &mut SocketSet<'_>,
        query: &mut Query,
        found: &'a mut heapless::Vec<IpAddr, N>,
    ) -> Answer<'a> {
        use smoltcp::socket::dns;
        let Some(handle) = self.socket else {
            return Answer::Failed("no DNS socket");
        };
        let socket = sockets.get_mut::<dns::Socket>(handle);
        // Each query's addresses, as they come in; with IPv6, the first answer's are kept for later.
        let mut take = |asked: &mut Asked, into: &mut dyn FnMut(IpAddr)| {
            if let Asked::Waiting(handle) = *asked {
                match socket.get_query_result(handle) {
                    Err(dns::GetQueryResultError::Pending) => {}
                    Err(dns::GetQueryResultError::Failed) => *asked = Asked::Over,
                    Ok(addresses) => {
                        *asked = Asked::Over;
                        addresses.iter().for_each(|&a| into(IpAddr::from(a)));
                    }
                }
            }
        };
        #[cfg(feature = "ipv6")]
        {
            let Query { a, aaaa, first } = query;
            let mut keep = |ip: IpAddr| {
                if let Some(free) = first.iter_mut().find(|slot| slot.is_none()) {
                    *free = Some(ip);
                }
            };
            // An answer kept in an earlier poll stays first; two in the same poll: A first.
            take(a, &mut keep);
            take(aaaa, &mut keep);
            if matches!(a, Asked::Waiting(_)) || matches!(aaaa, Asked::Waiting(_)) {
                return Answer::Pending;
            }
            for ip in first.iter().flatten() {
                let _ = found.push(*ip);
            }
        }
        #[cfg(not(feature = "ipv6"))]
        {
            take(&mut query.a, &mut |ip| {
                let _ = found.push(ip);
            });
            if matches!(query.a, Asked::Waiting(_)) {
                return Answer::Pending;
            }
        }
        match found.is_empty() {
            true => Answer::Failed("the DNS server gave no address"),
            false => Answer::Found(found),
        }
    }

    /// Where `query` is: there is none without the `dns` feature.
    #[cfg(not(feature = "dns"))]
    pub fn poll<'a, const N: usize>(
        &self,
        _sockets: &mut SocketSet<'_>,
        query: &mut Query,
        _found: &'a mut heapless::Vec<IpAddr, N>,
    ) -> Answer<'a> {
        match *query {}
    }

    /// Gives up on a pending `query`.
    pub fn cancel(&self, sockets: &mut SocketSet<'_>, query: Query) {
        #[cfg(feature = "dns")]
        if let Some(handle) = self.socket {
            let socket = sockets.get_mut::<smoltcp::socket::dns::Socket>(handle);
            #[cfg(feature = "ipv6")]
            let asked = [query.a, query.aaaa];
            #[cfg(not(feature = "ipv6"))]
            let asked = [query.a];
            for asked in asked {
                if let Asked::Waiting(handle) = asked {
                    socket.cancel_query(handle);
                }
            }
        }
        #[cfg(not(feature = "dns"))]
        {
            let _ = sockets;
            match query {}
        }
    }
}

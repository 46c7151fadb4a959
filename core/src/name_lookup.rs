//! [`Lookups`]: name lookups through a smoltcp DNS socket, for the smoltcp proxy (the DNS socket its slots share)
//! and the smoltcp clients. The one place the core touches smoltcp's DNS; without the crate's `dns` feature (a
//! board with no DNS server to ask) there is no socket, no lookup is ever asked for (the engine serves
//! `--resolve` names and literals only), and none of smoltcp's DNS code is linked in.
//!
//! With the crate's `ipv6` feature a lookup asks for the name's A and AAAA records at once (two queries of the DNS
//! socket) and is over when both are, or [`SECOND_ANSWER_GRACE`] after the first answer with addresses (a server
//! that drops AAAA queries must not cost smoltcp's whole DNS timeout): the addresses of the answer that came
//! first are tried first, those of the other after them, so a name with only AAAA records (or only A) is found,
//! and the proxy's `--allow-dest` can pick whichever family it allows. Without it, a lookup asks for A records
//! alone.

use core::net::IpAddr;

use smoltcp::iface::{Context, SocketHandle, SocketSet};
#[cfg(all(feature = "dns", feature = "ipv6"))]
use smoltcp::time::Duration;
use smoltcp::time::Instant;

/// How long a lookup waits for its second answer once the first brought addresses (RFC 8305's "resolution delay"
/// is 50 ms; the server answers both queries at once, so a second answer later than this is not coming soon).
#[cfg(all(feature = "dns", feature = "ipv6"))]
pub const SECOND_ANSWER_GRACE: Duration = Duration::from_millis(50);

/// The most addresses a lookup keeps of its two answers (as many as the engine tries; more are dropped, the
/// second answer's first: smoltcp keeps only `DNS_MAX_RESULT_COUNT` of an answer's records anyway, one unless a
/// feature raises it).
#[cfg(all(feature = "dns", feature = "ipv6"))]
const KEPT: usize = crate::proxy::engine::MAX_CANDIDATES;

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
pub struct Query {
    a: Asked,
    #[cfg(feature = "ipv6")]
    aaaa: Asked,
    /// The addresses of the answers so far, first answer first, kept until the lookup is over.
    #[cfg(feature = "ipv6")]
    first: [Option<IpAddr>; KEPT],
    /// When the first answer with addresses came (the second is waited for until [`SECOND_ANSWER_GRACE`] later).
    #[cfg(feature = "ipv6")]
    first_at: Option<Instant>,
}

impl Query {
    /// When the lookup must be polled at the latest, without news from the DNS socket: the end of the grace
    /// for the second answer, once the first is in.
    pub fn deadline(&self) -> Option<Instant> {
        #[cfg(all(feature = "dns", feature = "ipv6"))]
        return self.first_at.map(|at| at + SECOND_ANSWER_GRACE);
        #[cfg(not(all(feature = "dns", feature = "ipv6")))]
        return None;
    }
}

/// A lookup under way (none can be, without the `dns` feature).
#[cfg(not(feature = "dns"))]
#[derive(Debug, Clone, Copy)]
pub enum Query {}

/// Where a lookup is.
#[cfg_attr(not(feature = "dns"), allow(dead_code))]
pub enum Answer<'a> {
    /// Still waiting.
    Pending,
    /// The addresses found.
    Found(&'a [IpAddr]),
    /// The lookup failed.
    Failed(&'static str),
}

/// The DNS socket, if the server has one.
#[derive(Debug, Clone, Copy)]
pub struct Lookups {
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
            #[cfg(feature = "ipv6")]
            first_at: None,
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
        #[cfg_attr(not(feature = "ipv6"), allow(unused_variables))] now: Instant,
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
            let Query {
                a,
                aaaa,
                first,
                first_at,
            } = query;
            let mut keep = |ip: IpAddr| {
                if let Some(free) = first.iter_mut().find(|slot| slot.is_none()) {
                    *free = Some(ip);
                }
            };
            // An answer kept in an earlier poll stays first; two in the same poll: A first.
            take(a, &mut keep);
            take(aaaa, &mut keep);
            let waiting = matches!(a, Asked::Waiting(_)) || matches!(aaaa, Asked::Waiting(_));
            if waiting && first[0].is_some() {
                let since = *first_at.get_or_insert(now);
                if now < since + SECOND_ANSWER_GRACE {
                    return Answer::Pending;
                }
                // The grace is over: what came in is the answer, and the other query is given up.
                for asked in [a, aaaa] {
                    if let Asked::Waiting(handle) = *asked {
                        socket.cancel_query(handle);
                        *asked = Asked::Over;
                    }
                }
            } else if waiting {
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
        _now: Instant,
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

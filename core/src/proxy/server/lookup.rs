//! [`Lookups`]: the smoltcp design's name lookups, through the DNS socket the slots share. The one place the
//! server touches smoltcp's DNS; without the crate's `dns` feature (a board with no DNS server to ask) there is no
//! socket, no lookup is ever asked for (the engine serves `--resolve` names and literals only), and none of
//! smoltcp's DNS code is linked in.

use core::net::IpAddr;

use smoltcp::iface::{Context, SocketHandle, SocketSet};

/// A lookup under way.
#[cfg(feature = "dns")]
pub(super) type Query = smoltcp::socket::dns::QueryHandle;
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

    /// Starts looking `name` up (IPv4 addresses). `Err`: why it could not start.
    #[cfg(feature = "dns")]
    pub fn start(
        &self,
        sockets: &mut SocketSet<'_>,
        cx: &mut Context,
        name: &str,
    ) -> Result<Query, smoltcp::socket::dns::StartQueryError> {
        let Some(handle) = self.socket else {
            return Err(smoltcp::socket::dns::StartQueryError::NoFreeSlot);
        };
        sockets
            .get_mut::<smoltcp::socket::dns::Socket>(handle)
            .start_query(cx, name, smoltcp::wire::DnsQueryType::A)
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

    /// Where `query` is; the addresses (at most `N`) go into `found`. Once it is no longer pending, the query is
    /// over (do not cancel it).
    #[cfg(feature = "dns")]
    pub fn poll<'a, const N: usize>(
        &self,
        sockets: &mut SocketSet<'_>,
        query: Query,
        found: &'a mut heapless::Vec<IpAddr, N>,
    ) -> Answer<'a> {
        use smoltcp::socket::dns;
        let Some(handle) = self.socket else {
            return Answer::Failed("no DNS socket");
        };
        match sockets
            .get_mut::<dns::Socket>(handle)
            .get_query_result(query)
        {
            Err(dns::GetQueryResultError::Pending) => Answer::Pending,
            Err(dns::GetQueryResultError::Failed) => {
                Answer::Failed("the DNS server gave no address")
            }
            Ok(addresses) => {
                for address in &addresses {
                    let _ = found.push(IpAddr::from(*address));
                }
                Answer::Found(found)
            }
        }
    }

    /// Where `query` is: there is none without the `dns` feature.
    #[cfg(not(feature = "dns"))]
    pub fn poll<'a, const N: usize>(
        &self,
        _sockets: &mut SocketSet<'_>,
        query: Query,
        _found: &'a mut heapless::Vec<IpAddr, N>,
    ) -> Answer<'a> {
        match query {}
    }

    /// Gives up on a pending `query`.
    pub fn cancel(&self, sockets: &mut SocketSet<'_>, query: Query) {
        #[cfg(feature = "dns")]
        if let Some(handle) = self.socket {
            sockets
                .get_mut::<smoltcp::socket::dns::Socket>(handle)
                .cancel_query(query);
        }
        #[cfg(not(feature = "dns"))]
        {
            let _ = sockets;
            match query {}
        }
    }
}

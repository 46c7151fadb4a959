//! smoltalk's protocols, without I/O: the uppercase service and the HTTP forward proxy, on top of smoltcp
//! sockets.
//!
//! This crate is `no_std` and never allocates, reads a clock or touches an operating system. The host owns the
//! device, the [`smoltcp::iface::Interface`], the [`smoltcp::iface::SocketSet`] and every buffer; it polls the
//! interface, then hands the socket set to the state machines here, which move bytes between sockets:
//!
//! ```text
//! device → Interface → sockets → UppercaseTcpServer / UppercaseUdpServer / clients / ProxyServer → sockets → device
//! ```
//!
//! # Layout
//!
//! - [`uppercase`]: the transform itself (`a`–`z` → `A`–`Z`, every other byte unchanged).
//! - [`tcp_server`]: [`UppercaseTcpServer`], a fixed pool of listening sockets, one per concurrent client.
//! - [`udp_server`]: [`UppercaseUdpServer`], one reply datagram per request datagram.
//! - [`tcp_client`]: [`UppercaseTcpClient`], the connection life cycle of a client (handshake, refusal, timeout).
//! - [`udp_client`]: [`UppercaseUdpClient`], request, wait, retry.
//! - [`stream_session`]: [`UppercaseSession`], one client of the uppercase service on a socket the driver owns
//!   (the kernel stack's designs), and [`ConnectionLimit`] with [`Refusals`], the cap on clients served at once.
//! - [`udp_fairness`]: which requests of a batch a UDP server answers when it is behind (one per sender).
//! - [`name_lookup`]: names looked up through a smoltcp DNS socket, A and AAAA at once (the proxy, the clients).
//! - [`error`]: the typed errors of all of the above; [`endpoint`]: how log lines write an endpoint.
//! - [`http`]: HTTP/1.x heads (parsed with `httparse`), body framing, the heads the proxy writes, its error
//!   pages; byte slices in, nothing buffered.
//! - [`proxy`]: the forward proxy. [`proxy::engine`] holds its protocol and every decision, without I/O
//!   ([`proxy::ProxyConnection`]), for every design; [`proxy::server`] is the design on smoltcp sockets
//!   ([`proxy::ProxyServer`], its slots in storage the caller owns); [`proxy::event`], [`proxy::limits`] and
//!   [`proxy::policy`] are the log lines, the limits and the rules all designs share.
//!
//! Time enters only as a [`smoltcp::time::Instant`] argument supplied by the host.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod endpoint;
pub mod error;
pub mod http;
pub mod name_lookup;
pub mod proxy;
pub mod stream_session;
pub mod tcp_client;
pub mod tcp_server;
pub mod udp_client;
pub mod udp_fairness;
pub mod udp_server;
pub mod uppercase;

pub use error::{ClientError, ServerError};
pub use stream_session::{ConnectionLimit, Refusals, UppercaseSession};
pub use tcp_client::{TcpClientState, UppercaseTcpClient};
pub use tcp_server::{SlotState, TcpServerStats, UppercaseTcpServer};
pub use udp_client::{UdpClientState, UppercaseUdpClient};
pub use udp_server::{UdpServerStats, UppercaseUdpServer};
pub use uppercase::{uppercase_byte, uppercase_in_place, uppercase_into};

/// The port the classic socket-programming lab uses for the uppercase service.
pub const DEFAULT_PORT: u16 = 12000;

/// The largest UDP request the servers promise to answer whole (bigger ones are dropped and counted, never
/// truncated). Hosts may configure more.
pub const MIN_UDP_DATAGRAM: usize = 2048;

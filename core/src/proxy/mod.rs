//! The HTTP forward proxy on smoltcp sockets.
//!
//! - [`policy`]: [`ProxyPolicy`], the rules both stacks apply (allowed clients, destinations, CONNECT ports,
//!   static names, the `Via` pseudonym).
//! - [`connection`]: [`ProxyConnection`], one client's life as a state machine over a client socket, an
//!   origin socket and two head buffers.
//! - [`server`]: [`ProxyServer`], the fixed pool of connections, the DNS socket they share, and the refuser
//!   that answers 503 when the pool is full.
//!
//! The host creates every socket and buffer at start-up; serving a request allocates nothing.

pub mod connection;
pub mod policy;
pub mod server;

pub use connection::{
    ConnectionBuffers, ConnectionState, ProxyConnection, ProxyStats, ResponsePhase,
};
pub use policy::ProxyPolicy;
pub use server::ProxyServer;

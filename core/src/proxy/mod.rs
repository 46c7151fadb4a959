//! The HTTP forward proxy: its protocol and decisions ([`engine`]), and its design on smoltcp sockets
//! ([`server`]).
//!
//! - [`policy`]: [`ProxyPolicy`], who may use the proxy and where it may go.
//! - [`limits`]: [`Limits`], the sizes and times every design keeps to.
//! - [`event`]: [`ProxyEvent`], every line the proxy logs, the same for every design.
//! - [`engine`]: [`ProxyConnection`], one client's life as a state machine without I/O: every design (this
//!   crate's smoltcp server, the host's event loop and its thread per client) feeds it what happened and does
//!   what it decides.
//! - [`server`]: [`ProxyServer`], the design on smoltcp: a pool of [`ProxySlot`]s in storage the caller owns,
//!   each driving one `ProxyConnection` over a client socket and an origin socket, a DNS socket they share, and
//!   refusers that answer 503 when the pool is full.
//!
//! Nothing here allocates: the caller owns every socket and buffer, so firmware can keep the whole proxy in
//! `static` memory.

pub mod engine;
pub mod event;
pub mod limits;
pub mod policy;
pub mod server;

pub use engine::{ProxyConnection, ProxyContext, ProxyStats};
pub use event::{ProxyEvent, ResetCause, LOG_TARGET};
pub use limits::{Drain, Limits};
pub use policy::ProxyPolicy;
pub use server::{
    FixedPool, Listeners, PoolStorage, ProxyServer, ProxyServerConfig, ProxySlot, MAX_REFUSERS,
};

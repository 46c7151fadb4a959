//! The HTTP forward proxy on smoltcp sockets.
//!
//! - [`policy`]: [`ProxyPolicy`], the rules both stacks apply (allowed clients, destinations, CONNECT ports,
//!   static names, the `Via` pseudonym).

pub mod policy;

pub use policy::ProxyPolicy;

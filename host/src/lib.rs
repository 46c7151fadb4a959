//! The host side of smoltalk: the smoltcp nodes and their devices (the in-process lab, TUN/TAP), the designs
//! that drive the core's protocols on them, and the same services on the kernel's own stack.
//!
//! # Layout
//!
//! - [`stack`]: smoltcp hosts and their devices: [`stack::node`] (one smoltcp host), [`stack::network`] (the
//!   `Network` seam and the `drive` loop shared by the lab and real devices), [`stack::device`] (TUN/TAP as a
//!   `phy::Device`), [`stack::device_network`] (a node on it, with its instruments), [`stack::offload`] (the
//!   virtio-net header), [`stack::kernel_thread`] (the device's threaded NAPI), [`stack::instruments`] (capture, faults, trace).
//! - [`uppercase`]: the uppercase service: [`uppercase::node`] (the core's servers and clients on a smoltcp
//!   node), [`uppercase::kernel`] (the same on `std::net`), and how a client failed ([`uppercase::ClientFailure`]).
//! - [`proxy`]: the HTTP forward proxy's three designs around the core's one engine: [`proxy::node`] (smoltcp),
//!   [`proxy::event_loop`] (the kernel stack, epoll through `mio`), [`proxy::threads`] (the kernel stack, a
//!   thread per client).
//! - [`lab`]: the in-process network of smoltcp nodes with a virtual clock, its uppercase and proxy checks, and
//!   the loss soak.
//! - [`experiments`]: [`experiments::compare`] (the classic questions answered on every stack) and
//!   [`experiments::diagram`] (captures drawn as packet ladders).
//! - [`tools`]: the benchmark, a load generator, and network namespaces for tests and benchmarks.
//! - [`cli`]: the command line; the only place errors become strings.
//! - [`clock`]: the time the kernel-stack designs give the core.
//! - [`sys`]: every call into `libc`, behind safe functions.

// Every unsafe block says why it is sound (nearly all of them are in `sys`).
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod clock;
pub mod experiments;
pub mod lab;
pub mod proxy;
pub mod stack;
pub mod sys;
pub mod tools;
pub mod uppercase;

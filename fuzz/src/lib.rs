//! The fuzzing harness: turns arbitrary bytes into calls on `smoltalk-core` and checks what must hold.
//!
//! Plain Rust with no libFuzzer in it, so that two drivers share it: the cargo-fuzz targets in
//! `fuzz/fuzz_targets/` (nightly, millions of inputs) and the stable property tests in
//! `core/tests/fuzz_equivalents.rs`, which include this file with `#[path]`. Every `run` function panics when an
//! invariant breaks, and does a bounded amount of work for any input.
//!
//! - [`request_head`]: the proxy's request-head parser and the rewriter that makes the origin's request.
//! - [`chunked_body`]: the body tracker (chunked, by length, until close) fed the input in fuzz-chosen pieces.
//! - [`proxy_connection`]: the proxy's state machine, driven through whole client connections by a driver that
//!   plays the client, the resolver, the origin and the clock from the input, and checked against a model.
//! - [`uppercase_tcp`]: an `UppercaseTcpServer` on a smoltcp interface, fed raw packets and TCP segments from
//!   up to three clients that follow the server's sequence numbers, with a clock the input moves.
//! - [`uppercase_udp`]: an `UppercaseUdpServer` the same way, with UDP datagrams.
#![forbid(unsafe_code)]

pub mod chunked_body;
pub mod device;
pub mod input;
pub mod proxy_connection;
pub mod request_head;
pub mod uppercase_tcp;
pub mod uppercase_udp;

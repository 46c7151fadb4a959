//! Name lookups for the kernel-stack designs: the system's resolver (`getaddrinfo`, which blocks and keeps no
//! deadline of ours) on a thread of its own, so a design waits for the answer only as long as the engine's
//! deadline allows. A lookup given up on finishes in the background and its answer is dropped.

use std::io;
use std::net::{IpAddr, ToSocketAddrs};

/// What a lookup found: the name's addresses, or why there are none.
pub type LookupResult = Result<Vec<IpAddr>, String>;

/// Looks `host` up on a new thread and hands the answer to `deliver` there. An error: no thread could be
/// started (`deliver` is not called).
pub fn spawn_lookup(
    host: String,
    deliver: impl FnOnce(LookupResult) + Send + 'static,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("resolver".into())
        .spawn(move || {
            let found = (host.as_str(), 0)
                .to_socket_addrs()
                .map(|addrs| addrs.map(|a| a.ip()).collect())
                .map_err(|e| e.to_string());
            deliver(found);
        })
        .map(drop)
}

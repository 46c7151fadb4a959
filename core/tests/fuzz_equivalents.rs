//! The fuzz targets' harness (`fuzz/src/`), driven by proptest on stable so that every `cargo test` runs it.
//!
//! cargo-fuzz needs nightly and runs each target for millions of inputs (see `BENCHMARKS.md`, "Fuzzing"); these
//! run the same checks on a few hundred random inputs each, plus inputs shaped like the ones that matter
//! (valid request heads with bytes changed, TCP operations that mostly follow the server's numbers). The proxy
//! harness builds its requests and responses from a grammar, so random bytes already make whole exchanges.

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod harness;

use proptest::collection::vec;
use proptest::prelude::*;

/// Request heads the mutations start from.
const HEADS: [&[u8]; 5] = [
    b"GET http://origin.test:8080/a?b=c HTTP/1.1\r\nHost: ignored\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nAccept: */*\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding: gzip, chunked\r\nProxy-Connection: close\r\nTE: trailers\r\n\r\n",
    b"PUT http://[::1]:81 HTTP/1.0\r\nContent-Length: 5\r\nContent-Length: 5\r\nKeep-Alive: 300\r\nVia: 1.0 other\r\n\r\nhello",
    b"OPTIONS * HTTP/1.1\r\nHost: 10.0.2.80:80\r\nUpgrade: h2c\r\nExpect: 100-continue\r\n\r\n",
    b"CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n",
];

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        0..HEADS.len(),
        vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(which, edits, cut)| {
            let mut bytes = HEADS[which].to_vec();
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            // Sometimes a truncated head, mostly the whole one.
            let cut = cut.index(bytes.len() * 2 + 1).min(bytes.len());
            bytes.truncate(cut.max(bytes.len() / 2));
            bytes
        })
}

/// An operation of the TCP harness, laid out as `fuzz/src/uppercase_tcp.rs` reads it: mostly segments in
/// order that acknowledge exactly what the server sent, some SYNs, FINs and resets, time passing, raw bytes.
fn tcp_op() -> impl Strategy<Value = Vec<u8>> {
    let window = prop_oneof![3 => Just(255u8), 1 => any::<u8>()];
    prop_oneof![
        // Data (or FIN, or RST) in order: op, client, flags, extras (payload length), window, payload.
        6 => (0..3u8, prop::sample::select(vec![0u8, 3, 3, 5, 6]), window.clone(), vec(any::<u8>(), 0..40))
            .prop_map(|(client, flags, window, payload)| {
                let mut op = vec![1, client, flags, (payload.len() as u8) << 2, window];
                op.extend(payload);
                op
            }),
        // A SYN with a new initial sequence number, no options.
        2 => (0..3u8, any::<u32>(), window).prop_map(|(client, isn, window)| {
            let mut op = vec![2, client, 4, 0];
            op.extend(isn.to_le_bytes());
            op.extend([window, 0]);
            op
        }),
        1 => any::<u16>().prop_map(|ms| vec![6, ms as u8, (ms >> 8) as u8]),
        1 => any::<u8>().prop_map(|s| vec![7, s]),
        1 => vec(any::<u8>(), 0..48).prop_map(|raw| {
            let mut op = vec![0, raw.len() as u8];
            op.extend(raw);
            op
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn request_head_arbitrary_bytes(bytes in vec(any::<u8>(), 0..300)) {
        harness::request_head::run(&bytes);
    }

    #[test]
    fn request_head_mutated(bytes in mutated()) {
        harness::request_head::run(&bytes);
    }

    #[test]
    fn chunked_body_arbitrary(bytes in vec(any::<u8>(), 0..300)) {
        harness::chunked_body::run(&bytes);
    }

    #[test]
    fn chunked_body_well_formed(mut bytes in vec(any::<u8>(), 0..300)) {
        if let Some(mode) = bytes.first_mut() {
            *mode |= 6;
        }
        harness::chunked_body::run(&bytes);
    }

    #[test]
    fn uppercase_udp_arbitrary(bytes in vec(any::<u8>(), 0..600)) {
        harness::uppercase_udp::run(&bytes);
    }

    #[test]
    fn proxy_connection_arbitrary(bytes in vec(any::<u8>(), 0..1000)) {
        harness::proxy_connection::run(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn uppercase_tcp_arbitrary(bytes in vec(any::<u8>(), 0..600)) {
        harness::uppercase_tcp::run(&bytes);
    }

    #[test]
    fn uppercase_tcp_following_the_server(setup in vec(any::<u8>(), 6), ops in vec(tcp_op(), 1..40)) {
        let mut bytes = setup;
        bytes.extend(ops.concat());
        harness::uppercase_tcp::run(&bytes);
    }
}

/// Inputs from a fixed generator (xorshift), the same on every run.
fn inputs(count: usize, len: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..count).map(move |_| {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    })
}

/// The proxy harness reaches every part of the engine it checks on inputs of random bytes: refusals, lookups,
/// kept and reused origin connections, retries, tunnels, interim heads, calls the phase does not allow, and every
/// kind of ending, time-outs included.
#[test]
fn proxy_connection_harness_reaches_every_part() {
    let mut total = harness::proxy_connection::Outcome::default();
    for input in inputs(1000, 800) {
        total.add(&harness::proxy_connection::run(&input));
    }
    assert_eq!(total.missing(), Vec::<&str>::new(), "{total:#?}");
}

/// The TCP harness's segments follow the server's numbers: a scripted input opens a connection, gets its bytes
/// back uppercased (and checked), and closes it cleanly.
#[test]
fn uppercase_tcp_harness_reaches_data_and_close() {
    let mut input = vec![0, 63, 1, 2, 3, 4]; // checksums on, 64-byte buffers, 64-byte scratch, seed
    input.extend([1, 0, 4, 0, 0x78, 0x56, 0x34, 0x12, 255, 0]); // SYN, ISN 0x12345678
    input.extend([1, 0, 0, 0, 255]); // ACK of the SYN-ACK
    input.extend([1, 0, 3, 11 << 2, 255]); // PSH with 11 bytes
    input.extend(b"hello, TCP!");
    input.extend([1, 0, 0, 0, 255]); // ACK of the reply
    input.extend([1, 0, 5, 0, 255]); // FIN
    input.extend([1, 0, 0, 0, 255]); // ACK of the server's FIN
    let outcome = harness::uppercase_tcp::run(&input);
    assert_eq!(outcome.echoed, 11, "{outcome:?}");
    assert_eq!(outcome.stats.accepted, 1, "{outcome:?}");
    assert_eq!(outcome.stats.closed, 1, "{outcome:?}");
}

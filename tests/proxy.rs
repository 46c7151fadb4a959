//! The kernel-stack HTTP forward proxy (`smoltalk proxy`), end to end: curl as the client, small Python
//! programs as origins (HTTP, HTTPS and a plain TCP echo), and raw sockets where curl would not send what a
//! test needs. Everything stays on loopback: every proxy runs with `--allow-dest 127.0.0.0/8`, origins listen on
//! 127.0.0.1, and every proxy runs with `--no-dns`, so no name is ever looked up (names come from `--resolve`).
//! Each test starts its own proxy and origins on port 0, so the tests run in parallel.

mod support;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::Duration;

use support::proxy::*;
use support::*;

/// `smoltalk proxy --port 0 --allow-dest 127.0.0.0/8` plus `extra` (a later `--allow-dest` adds to it, so tests
/// that narrow it use [`start_proxy_with`]).
fn start_proxy(extra: &[&str]) -> Proxy {
    start_proxy_with(&["--allow-dest", "127.0.0.0/8"], extra)
}

fn start_proxy_with(dest: &[&str], extra: &[&str]) -> Proxy {
    let mut cmd = smoltalk();
    // --no-dns: whatever a test sends, the proxy never asks a DNS server (names come from --resolve).
    cmd.args(["proxy", "--port", "0", "--no-dns"])
        .args(dest)
        .args(extra);
    Proxy::start(cmd, "127.0.0.1", Net::Loopback)
}

/// Starts the HTTP origin on 127.0.0.1; `tls` is `(cert, key)` for HTTPS.
fn origin(tls: Option<(&Path, &Path)>) -> (Running, u16) {
    start_origin(&Net::Loopback, tls)
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn get_small_by_address_and_by_resolved_name_with_via_and_logs() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&["--resolve", "origin.test=127.0.0.1"]);
    scenario::get_by_address_and_by_resolved_name(&proxy, origin_port);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn hop_by_hop_headers_are_removed_and_end_to_end_ones_kept() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    scenario::hop_by_hop_headers_are_removed_and_end_to_end_ones_kept(&proxy, origin_port);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn head_has_length_but_no_body_and_the_connection_stays_usable() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    scenario::head_has_length_but_no_body_and_the_connection_stays_usable(&proxy, origin_port);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn post_put_and_chunked_bodies_reach_the_origin_byte_exact() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    scenario::post_put_chunked_and_2_mib_bodies_reach_the_origin_byte_exact(
        &proxy,
        origin_port,
        "proxy",
    );
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn chunked_response_arrives_intact_and_with_its_framing() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    scenario::chunked_response_arrives_intact_and_with_its_framing(&proxy, origin_port);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn one_mebibyte_body_is_byte_exact() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    scenario::one_mebibyte_body_is_byte_exact(&proxy, origin_port);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn keep_alive_reuses_the_client_and_the_origin_connection() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    scenario::keep_alive_reuses_the_client_and_the_origin_connection(&proxy, origin_port, 0);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn connect_tunnels_every_byte_both_ways() {
    let (_echo, echo_port) = start_echo(&Net::Loopback);
    let proxy = start_proxy(&["--connect-ports", &format!("443,{echo_port}")]);
    scenario::connect_tunnels_every_byte_both_ways(&proxy, echo_port);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn https_through_a_connect_tunnel_to_a_resolved_name() {
    let (dir, cert, key) = self_signed_cert();
    let (_origin, origin_port) = origin(Some((&cert, &key)));
    let proxy = start_proxy(&[
        "--resolve",
        "origin.test=127.0.0.1",
        "--connect-ports",
        &origin_port.to_string(),
    ]);
    scenario::https_through_a_connect_tunnel_to_a_resolved_name(&proxy, origin_port, &dir, &cert);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn client_not_allowed_is_403() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&["--allow", "10.9.9.9/32"]);
    scenario::client_not_allowed_is_403(&proxy, origin_port);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn destination_not_allowed_is_403() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy_with(
        &["--allow-dest", "127.0.0.2/32"],
        &["--resolve", "origin.test=127.0.0.1"],
    );
    scenario::destination_not_allowed_is_403(&proxy, origin_port);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn connect_to_a_port_not_listed_is_403() {
    let (_echo, echo_port) = start_echo(&Net::Loopback);
    let proxy = start_proxy(&[]); // --connect-ports defaults to 443
    scenario::connect_to_a_port_not_listed_is_403(&proxy, "127.0.0.1", echo_port);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn refused_and_silent_origins_are_502() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    scenario::refused_and_silent_origins_are_502(&proxy, origin_port, closed_port());

    // A name outside --resolve, with --no-dns: no query leaves, the answer is 502.
    let out = curl_ok(&proxy, &["-i", "http://nowhere.test/"]);
    assert_error_page(&out.stdout, "502 Bad Gateway");
    assert!(stdout(&out).contains("name does not resolve"));
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn over_the_connection_cap_is_503_and_the_slot_comes_back() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&["--max-connections", "1"]);
    scenario::over_the_connection_cap_is_503_and_the_slot_comes_back(
        &proxy,
        origin_port,
        "Refused 503 Service Unavailable",
    );
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn an_origin_slower_than_the_timeout_is_504() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&["--timeout", "1"]);
    scenario::an_origin_slower_than_the_timeout_is_504(&proxy, origin_port);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn requests_that_would_loop_are_508() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    scenario::requests_that_would_loop_are_508(&proxy, origin_port);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn bytes_an_origin_sends_past_its_response_never_answer_the_next_request() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    scenario::bytes_an_origin_sends_past_its_response_never_answer_the_next_request(
        &proxy,
        origin_port,
        0,
    );
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn pipelined_requests_and_an_http_1_0_client() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    scenario::pipelined_requests_and_an_http_1_0_client(&proxy, origin_port);
    proxy.stop();
}

/// The classic design (`--thread-per-client`), kept for comparison, serves the same: pages and 1 MiB on a kept
/// connection, a CONNECT tunnel, and 503 at its cap.
#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn the_thread_per_client_design_serves_the_same() {
    let (_origin, origin_port) = origin(None);
    let (_echo, echo_port) = start_echo(&Net::Loopback);
    let proxy = start_proxy(&[
        "--thread-per-client",
        "--connect-ports",
        &echo_port.to_string(),
    ]);
    let small = format!("http://127.0.0.1:{origin_port}/small");
    let big = format!("http://127.0.0.1:{origin_port}/big");
    let out = curl_ok(&proxy, &["-v", &small, &big]);
    assert!(stderr(&out).contains("Re-using existing connection"));
    let mut expected = SMALL.as_bytes().to_vec();
    expected.extend(big_body());
    assert!(out.stdout == expected, "{} bytes", out.stdout.len());

    let data = every_byte(64);
    let mut request =
        format!("CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
    request.extend_from_slice(&data);
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&request).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let received = read_all(&mut stream);
    let (head, echoed) = split_head(&received);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(echoed == data, "the tunnel changed bytes");

    proxy.stop();

    // A fresh proxy, so no earlier connection still holds a place: one held connection fills the cap.
    let proxy = start_proxy(&["--thread-per-client", "--max-connections", "1"]);
    let held = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    let out = curl_ok(&proxy, &["-i", &small]);
    assert_error_page(&out.stdout, "503 Service Unavailable");
    drop(held);
    proxy.stop();
}

/// A client that sends its request and closes its sending side at once (`nc -N`, `shutdown(SHUT_WR)`) still
/// gets its response: the request is parsed before the end of the stream is judged.
#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn a_request_followed_at_once_by_the_clients_fin_is_answered() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET http://127.0.0.1:{origin_port}/small HTTP/1.0\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let reply = read_all(&mut stream);
    let (head, body) = split_head(&reply);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, SMALL.as_bytes());
    proxy.stop();
}

/// A simple client sends its whole upload before it reads: the answer that came first (the proxy's own, or an
/// origin's early 413 behind which the origin reset or stalled) still reaches it, from both kernel-stack
/// designs; an interim answer that comes while the upload is stuck lets it go on.
#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn an_early_answer_reaches_a_client_that_is_still_uploading() {
    let (_origin, origin_port) = origin(None);
    for design in [&[][..], &["--thread-per-client"][..]] {
        let proxy = start_proxy(design);
        scenario::an_early_answer_reaches_a_client_that_is_still_uploading(&proxy, origin_port);
        scenario::interim_answers_reach_a_client_that_is_still_uploading(&proxy, origin_port);
        proxy.stop();
    }
}

/// A tunnel that carries bytes one way only is not idle; one that carries none closes at `--tunnel-idle`, in
/// both kernel-stack designs.
#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn a_tunnel_busy_one_way_outlives_the_idle_limit() {
    let (_drip, drip_port) = start_drip(&Net::Loopback);
    let port = drip_port.to_string();
    for design in [&[][..], &["--thread-per-client"][..]] {
        let mut extra = vec!["--connect-ports", &port, "--tunnel-idle", "1"];
        extra.extend_from_slice(design);
        let proxy = start_proxy(&extra);
        scenario::a_tunnel_busy_one_way_outlives_the_idle_limit(&proxy, drip_port);
        proxy.stop();
    }
}

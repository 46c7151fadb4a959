//! `--link-delay` and `--link-rate` in smoltcp's device layer, on a real TUN device inside a network namespace
//! this test creates and deletes: the kernel pings smoltcp's tcp-server and connects to it, and the round trip
//! takes at least twice the one-way delay. Nothing leaves the namespace. Needs root: skips with a reason
//! elsewhere, fails under `CI=true`.

mod support;

use std::time::Instant;

use support::*;

/// The minimum round trip `ping` printed (`rtt min/avg/max/mdev = 40.3/40.5/40.8/0.2 ms`), in milliseconds.
fn min_rtt(ping: &str) -> Option<f64> {
    let line = ping.lines().find(|l| l.contains("min/avg/max"))?;
    let values = line.split('=').nth(1)?.trim();
    values.split('/').next()?.trim().parse().ok()
}

#[test]
fn a_link_delay_on_tun_is_seen_in_the_kernels_round_trips() {
    let test = "a_link_delay_on_tun_is_seen_in_the_kernels_round_trips";
    let Some(ns) = namespace_or_skip(test, "netns", &["ping"]) else {
        return;
    };
    add_st0(&ns, "tun");
    let args = [
        "tcp-server",
        "--stack",
        "tun",
        "--dev",
        "st0",
        "--link-delay",
        "20ms",
        "--link-rate",
        "100Mbit",
    ];
    let (server, port) = start_server(smoltalk_in(&ns, &args), "smoltcp tcp-server");
    assert_eq!(port, 12000);

    // ping: every echo waits 20 ms on the way in and 20 ms on the way out.
    let out = run(ns.command("ping", &["-c", "3", "-i", "0.2", "-W", "2", "10.0.2.15"]));
    let text = stdout(&out);
    assert!(out.status.success(), "ping: {text}");
    let rtt = min_rtt(&text).unwrap_or_else(|| panic!("no round trip in: {text}"));
    eprintln!("ping through 20 ms each way: shortest round trip {rtt} ms");
    assert!(
        (40.0..200.0).contains(&rtt),
        "ping's shortest round trip {rtt} ms, expected at least 40 ms: {text}"
    );

    // A kernel client: the handshake and the request each take a round trip.
    let started = Instant::now();
    let out = run(smoltalk_in(
        &ns,
        &["tcp-client", "10.0.2.15", "12000", "hello over a long link"],
    ));
    let took = started.elapsed().as_secs_f64() * 1e3;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "10.0.2.15 > HELLO OVER A LONG LINK\n");
    eprintln!("connect and one exchange through 20 ms each way: {took:.1} ms");
    assert!(took >= 80.0, "connect and one exchange took {took:.1} ms");
    drop(server);

    // Without the flags the same server answers at once.
    let (server, _) = start_server(
        smoltalk_in(&ns, &["tcp-server", "--stack", "tun", "--dev", "st0"]),
        "smoltcp tcp-server, no delay",
    );
    let out = run(ns.command("ping", &["-c", "3", "-i", "0.2", "-W", "2", "10.0.2.15"]));
    let text = stdout(&out);
    let rtt = min_rtt(&text).unwrap_or_else(|| panic!("no round trip in: {text}"));
    eprintln!("unshaped: shortest round trip {rtt} ms");
    assert!(
        rtt < 20.0,
        "unshaped, ping's shortest round trip is {rtt} ms"
    );
    drop(server);
}

//! smoltcp's client on a real TUN device, against kernel servers: this very binary run as a child in a network
//! namespace the run creates (root only), over IPv4 (the kernel's side 10.0.2.2) or IPv6 (fd00:2::2, added
//! with `nodad` so it is usable at once rather than tentative for a second). smoltcp's side has its default
//! addresses, 10.0.2.15 and fd00:2::15. Which failure the client saw comes from its exit code
//! ([`ClientFailure::from_exit_code`]); its error line is only the text shown.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant as WallInstant;

use super::observation::{failure_kind, not_run};
use super::{CompareError, Observation, Scenario};
use crate::lab::checks::sample_text;
use crate::lab::IpVersion;
use crate::stack::link_shape::LinkShape;
use crate::uppercase::ClientFailure;

/// The kernel's address on the TUN device, over `version`.
fn kernel_side(version: IpVersion) -> IpAddr {
    match version {
        IpVersion::Ipv4 => IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2)),
        IpVersion::Ipv6 => IpAddr::V6(Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 2)),
    }
}

/// The smoltcp client on a real TUN device inside a namespace this run creates (kernel servers on its other
/// side, 10.0.2.2 or fd00:2::2), run as this very binary with `--pcap`: `None` where namespaces cannot be made.
pub(super) fn tun_run(
    scenario: Scenario,
    version: IpVersion,
    link: LinkShape,
) -> Option<Observation> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    if !crate::tools::netns::is_root() || !std::path::Path::new("/dev/net/tun").exists() {
        return None;
    }
    let network = "TUN in a namespace";
    let name = format!(
        "smoltalk-cmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let ns = match crate::tools::netns::Namespace::create(&name) {
        Ok(ns) => ns,
        Err(e) => return Some(not_run("smoltcp-tun", network, &CompareError::Namespace(e))),
    };
    // The kernel would send a router solicitation on st0 when smoltcp's side comes up, at a moment its own
    // timers choose: a packet the experiment did not send, counted in the capture, and a draw of the client's
    // fault injector (a lossy run's losses would move). Devices made from now on send none; where the kernel
    // has no IPv6 there is nothing to switch off.
    let _ = ns
        .command(
            "sh",
            &[
                "-c",
                "f=/proc/sys/net/ipv6/conf/default/router_solicitations; [ ! -e $f ] || echo 0 > $f",
            ],
        )
        .status();
    if let Err(e) = ns.add_device("st0", "tun", "10.0.2.2/24", 1500) {
        return Some(not_run("smoltcp-tun", network, &CompareError::Namespace(e)));
    }
    let host = kernel_side(version).to_string();
    let host = host.as_str();
    if version == IpVersion::Ipv6 {
        // `nodad`: without it the address is tentative for a second, and a server cannot bind it yet.
        let added = ns.ip(&["-6", "addr", "add", "fd00:2::2/64", "dev", "st0", "nodad"]);
        if let Err(e) = added {
            return Some(not_run("smoltcp-tun", network, &CompareError::Namespace(e)));
        }
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe.to_string_lossy().into_owned(),
        Err(e) => {
            return Some(not_run(
                "smoltcp-tun",
                network,
                &CompareError::CurrentExe(e),
            ))
        }
    };
    let pcap = std::env::temp_dir().join(format!("{name}.pcap"));
    let pcap_arg = pcap.to_string_lossy().into_owned();
    // The device layer's delay and rate, for the lossy scenarios (the only ones `link` shapes).
    let delay_arg = format!("{}us", link.delay.as_micros());
    let rate_arg = link.rate.map(|r| format!("{r}bit"));
    let client = |kind: &str, port: u16, extra: &[&str]| {
        let mut args = vec![kind, "--stack", "tun", "--dev", "st0", "--pcap", &pcap_arg];
        args.extend_from_slice(extra);
        if !link.is_none() {
            args.extend_from_slice(&["--link-delay", &delay_arg]);
            if let Some(rate) = &rate_arg {
                args.extend_from_slice(&["--link-rate", rate]);
            }
        }
        let port = port.to_string();
        let mut cmd = ns.command(&exe, &args);
        cmd.args([host, &port]);
        cmd
    };
    let server = |kind: &str| {
        crate::tools::netns::Server::start(
            ns.command(&exe, &[kind, "--bind", host, "--port", "12000"]),
        )
        .map_err(CompareError::Server)
    };
    let started = WallInstant::now();
    let result = match scenario {
        Scenario::TcpClientBeforeServer => run_client(
            client("tcp-client", 12000, &["--timeout", "2"]),
            &[b"hello\n"],
            None,
        ),
        Scenario::TcpWrongPort => server("tcp-server").and_then(|_s| {
            run_client(
                client("tcp-client", 12001, &["--timeout", "2"]),
                &[b"hello\n"],
                None,
            )
        }),
        Scenario::UdpClientBeforeServer | Scenario::ConnectedUdpClientBeforeServer => run_client(
            client("udp-client", 12000, &["--tries", "1", "--timeout", "1"]),
            &[b"hello\n"],
            None,
        ),
        Scenario::UdpWrongPort => server("udp-server").and_then(|_s| {
            run_client(
                client("udp-client", 12001, &["--tries", "1", "--timeout", "1"]),
                &[b"hello\n"],
                None,
            )
        }),
        Scenario::ServerStoppedMidConversation => server("tcp-server").and_then(|s| {
            run_client(
                client("tcp-client", 12000, &["--timeout", "2"]),
                &[b"first\n", b"second\n"],
                Some(s),
            )
        }),
        Scenario::LossyTcpTransfer => server("tcp-server").and_then(|_s| {
            let mut line = lossy_tcp_message();
            line.push(b'\n');
            run_client(
                client(
                    "tcp-client",
                    12000,
                    &["--timeout", "30", "--drop-chance", "10", "--seed", "7"],
                ),
                &[&line],
                None,
            )
        }),
        Scenario::LossyUdpRequests => server("udp-server").and_then(|_s| {
            let lines: Vec<Vec<u8>> = (0..20)
                .map(|i| format!("request {i}\n").into_bytes())
                .collect();
            let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
            run_client(
                client(
                    "udp-client",
                    12000,
                    &[
                        "--tries",
                        "5",
                        "--timeout",
                        "0.5",
                        "--drop-chance",
                        "10",
                        "--seed",
                        "7",
                    ],
                ),
                &refs,
                None,
            )
        }),
    };
    let millis = started.elapsed().as_secs_f64() * 1e3;
    let capture = std::fs::read(&pcap).ok();
    let _ = std::fs::remove_file(&pcap);
    let (outcome, kind) = match result {
        Ok((replies, error)) => tun_outcome(scenario, host, &replies, error),
        Err(e) => return Some(not_run("smoltcp-tun", network, &e)),
    };
    let port = match scenario {
        Scenario::TcpWrongPort | Scenario::UdpWrongPort => 12001,
        _ => 12000,
    };
    let observation = Observation::new(
        "smoltcp-tun",
        network,
        (outcome, kind),
        millis,
        false,
        capture.ok_or_else(|| "no capture".to_string()),
    );
    let observation = observation.aimed_at(SocketAddr::from((kernel_side(version), port)));
    Some(match scenario.is_lossy() {
        true => observation.over_link(
            link,
            format!("smoltcp's device layer added {}", link.describe()),
        ),
        false => observation,
    })
}

/// The lossy transfer's message: 1 MiB of the lab's sample text as one line.
fn lossy_tcp_message() -> Vec<u8> {
    let mut line = sample_text(1 << 20, 41);
    line.retain(|&b| b != b'\n');
    line
}

/// A client child that failed.
struct ClientFailed {
    /// The failure its exit code reports (`None`: any other error, or killed by a signal).
    failure: Option<ClientFailure>,
    /// Its error line (without `smoltalk: error: `), shown as it is.
    line: String,
}

/// Runs a client, feeding it `lines` one after another (each after the previous reply, so a `stop` server can
/// be stopped after the first); returns the lines it printed (each without its newline) and, if it failed, how.
fn run_client(
    mut cmd: std::process::Command,
    lines: &[&[u8]],
    mut stop: Option<crate::tools::netns::Server>,
) -> Result<(Vec<Vec<u8>>, Option<ClientFailed>), CompareError> {
    use std::process::Stdio;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(CompareError::StartClient)?;
    let mut stdin = child.stdin.take().ok_or(CompareError::NoPipe("stdin"))?;
    let mut stdout =
        std::io::BufReader::new(child.stdout.take().ok_or(CompareError::NoPipe("stdout"))?);
    let mut replies = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if stdin.write_all(line).is_err() {
            break;
        }
        let _ = stdin.flush();
        if stop.is_some() || i + 1 == lines.len() || lines.len() > 1 {
            match read_reply(&mut stdout) {
                Some(reply) => replies.push(reply),
                None => break,
            }
        }
        if i == 0 {
            if let Some(server) = stop.take() {
                // The server stops: SIGTERM, and the kernel closes its sockets as the process ends.
                let _ = crate::sys::kill(server.child.id(), crate::sys::Signal::Terminate);
                drop(server);
            }
        }
    }
    drop(stdin);
    while let Some(reply) = read_reply(&mut stdout) {
        replies.push(reply);
    }
    let output = child.wait_with_output().map_err(CompareError::WaitClient)?;
    let error = (!output.status.success()).then(|| ClientFailed {
        failure: output.status.code().and_then(ClientFailure::from_exit_code),
        line: String::from_utf8_lossy(&output.stderr)
            .lines()
            .find(|l| l.starts_with("smoltalk: error:"))
            .unwrap_or("failed without a message")
            .trim_start_matches("smoltalk: error: ")
            .to_string(),
    });
    Ok((replies, error))
}

/// The next line the client printed, without its newline (`None` at the end).
fn read_reply(stdout: &mut impl std::io::BufRead) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    match stdout.read_until(b'\n', &mut line) {
        Ok(1..) => {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            Some(line)
        }
        _ => None,
    }
}

/// What the client (of `host`) saw, in a line (its error line, when it failed), and the kind of the outcome:
/// from its exit code, which says which failure it was. The lossy transfer's reply is checked byte for byte.
fn tun_outcome(
    scenario: Scenario,
    host: &str,
    replies: &[Vec<u8>],
    error: Option<ClientFailed>,
) -> (String, String) {
    let count = replies.len();
    match (scenario, error) {
        (Scenario::LossyUdpRequests, e) => {
            let line = format!("{count} of 20 answered");
            match e {
                None => (line, "ok".into()),
                Some(e) => (format!("{line}; then: {}", e.line), "no_reply".into()),
            }
        }
        (Scenario::ServerStoppedMidConversation, Some(e)) if count >= 1 => (
            format!("first reply came; second: {}", e.line),
            failure_kind(e.failure).into(),
        ),
        (Scenario::LossyTcpTransfer, None) => {
            // The client prints "HOST > REPLY".
            let mut expected = format!("{host} > ").into_bytes();
            expected.extend(lossy_tcp_message().to_ascii_uppercase());
            match replies.first() {
                Some(reply) if *reply == expected => (
                    "1 MiB came back uppercased, byte for byte".into(),
                    "ok".into(),
                ),
                Some(reply) => {
                    let at = reply
                        .iter()
                        .zip(&expected)
                        .position(|(a, b)| a != b)
                        .unwrap_or(reply.len().min(expected.len()));
                    (
                        format!(
                            "the reply differs: {} bytes for {}, the first difference at byte {at}",
                            reply.len(),
                            expected.len()
                        ),
                        "error".into(),
                    )
                }
                None => ("no reply came".into(), "error".into()),
            }
        }
        (_, Some(e)) => (e.line, failure_kind(e.failure).into()),
        (_, None) => (format!("{count} replies came"), "ok".into()),
    }
}

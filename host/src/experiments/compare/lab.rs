//! smoltcp's runs in the lab: each scenario between two dual-stack nodes on a virtual segment, over IPv4
//! (10.0.2.x) or IPv6 (fd00:2::x), captured in memory (tapped at the client's port), on the lab's virtual clock;
//! the lossy ones over shaped links.

use smoltalk_core::ClientError;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::IpEndpoint;

use super::observation::failure_kind;
use super::{Observation, Scenario};
use crate::lab::checks::{sample_text, LabClient, UppercaseLab, PORT};
use crate::lab::{IpVersion, LinkFaults};
use crate::stack::instruments::MemoryCapture;
use crate::stack::link_shape::LinkShape;
use crate::stack::network::{drive, Network, Step};
use crate::uppercase::node::{ClientTimeouts, TcpExchange, UdpExchange};
use crate::uppercase::ClientFailure;

pub(super) fn lab_run(scenario: Scenario, version: IpVersion, link: LinkShape) -> Observation {
    let mut lab = UppercaseLab::new();
    lab.lab.set_link(link);
    let capture = MemoryCapture::default();
    lab.lab.capture_to(lab.client, Box::new(capture.clone()));
    let start = lab.lab.now();
    let (outcome, kind) = lab_scenario(scenario, version, &mut lab);
    let millis = (lab.lab.now() - start).total_micros() as f64 / 1e3;
    drop(lab.lab.take_capture());
    let server = UppercaseLab::endpoint_over(version, aimed_port(scenario));
    let observation = Observation::new(
        "smoltcp",
        "lab",
        (outcome, kind),
        millis,
        true,
        Ok(capture.bytes()),
    )
    .aimed_at(std::net::SocketAddr::from((server.addr, server.port)));
    match scenario.is_lossy() {
        true => observation.over_link(link, format!("lab links {}", link.describe())),
        false => observation,
    }
}

/// The port a scenario's client aims at in the lab: the server's, or (before the server, on the wrong port) the
/// next one, where nothing listens.
fn aimed_port(scenario: Scenario) -> u16 {
    match scenario {
        Scenario::TcpClientBeforeServer
        | Scenario::TcpWrongPort
        | Scenario::UdpClientBeforeServer
        | Scenario::UdpWrongPort
        | Scenario::ConnectedUdpClientBeforeServer => PORT + 1,
        Scenario::ServerStoppedMidConversation
        | Scenario::LossyTcpTransfer
        | Scenario::LossyUdpRequests => PORT,
    }
}

fn client_error(e: &ClientError) -> (String, String) {
    (e.to_string(), failure_kind(ClientFailure::of(e)).into())
}

fn lab_scenario(
    scenario: Scenario,
    version: IpVersion,
    lab: &mut UppercaseLab,
) -> (String, String) {
    let server = |port: u16| UppercaseLab::endpoint_over(version, port);
    let timeouts = ClientTimeouts {
        reply: Duration::from_secs(1),
        tries: 1,
        ..ClientTimeouts::default()
    };
    let client = lab.client;
    let one = |lab: &mut UppercaseLab, c: LabClient| -> (String, String) {
        match lab.run(&mut [c]) {
            Ok(outcomes) => match outcomes.into_iter().next() {
                Some(Ok(())) => ("the reply came".into(), "ok".into()),
                Some(Err(e)) => client_error(&e),
                None => ("no outcome".into(), "error".into()),
            },
            Err(e) => (format!("lab failed: {e}"), "error".into()),
        }
    };
    // The lab's server listens on PORT; "before the server" aims at a port nothing listens on.
    let closed = aimed_port(Scenario::TcpClientBeforeServer);
    match scenario {
        Scenario::TcpClientBeforeServer | Scenario::TcpWrongPort => {
            let c = TcpExchange::with_messages(
                lab.lab.node(client),
                server(closed),
                timeouts,
                [b"hello".to_vec()],
            );
            one(lab, LabClient::Tcp(c))
        }
        Scenario::UdpClientBeforeServer
        | Scenario::UdpWrongPort
        | Scenario::ConnectedUdpClientBeforeServer => {
            match UdpExchange::with_messages(
                lab.lab.node(client),
                server(closed),
                timeouts,
                [b"hello".to_vec()],
            ) {
                Ok(c) => one(lab, LabClient::Udp(c)),
                Err(e) => client_error(&e),
            }
        }
        Scenario::ServerStoppedMidConversation => lab_server_stops(lab, server(PORT)),
        Scenario::LossyTcpTransfer => {
            lose_ten_percent(lab);
            let text = sample_text(1 << 20, 41);
            let timeouts = ClientTimeouts {
                reply: Duration::from_secs(120),
                ..ClientTimeouts::default()
            };
            let mut c = LabClient::Tcp(TcpExchange::with_messages(
                lab.lab.node(client),
                server(PORT),
                timeouts,
                [text.clone()],
            ));
            match lab.run(std::slice::from_mut(&mut c)) {
                Ok(o) if o.first().is_some_and(|r| r.is_ok()) => {
                    let replies = c.take_replies();
                    let exact = replies
                        .first()
                        .is_some_and(|(r, _)| *r == text.to_ascii_uppercase());
                    match exact {
                        true => (
                            "1 MiB came back uppercased, byte for byte".into(),
                            "ok".into(),
                        ),
                        false => ("the reply differs".into(), "error".into()),
                    }
                }
                Ok(o) => o
                    .first()
                    .and_then(|r| r.as_ref().err())
                    .map_or(("no outcome".into(), "error".into()), client_error),
                Err(e) => (format!("lab failed: {e}"), "error".into()),
            }
        }
        Scenario::LossyUdpRequests => {
            lose_ten_percent(lab);
            let timeouts = ClientTimeouts {
                reply: Duration::from_millis(500),
                tries: 5,
                ..ClientTimeouts::default()
            };
            let messages: Vec<Vec<u8>> = (0..20)
                .map(|i| format!("request {i}").into_bytes())
                .collect();
            match UdpExchange::with_messages(lab.lab.node(client), server(PORT), timeouts, messages)
            {
                Ok(c) => {
                    let mut clients = [LabClient::Udp(c)];
                    match lab.run(&mut clients) {
                        Ok(o) => {
                            let replies = clients[0].take_replies();
                            let retried = replies.iter().filter(|(_, tries)| *tries > 1).count();
                            let failed = o
                                .first()
                                .and_then(|r| r.as_ref().err())
                                .map(|e| e.to_string());
                            let line = format!(
                                "{} of 20 answered; {retried} needed more than one try",
                                replies.len()
                            );
                            match failed {
                                None => (line, "ok".into()),
                                Some(e) => (format!("{line}; then: {e}"), "no_reply".into()),
                            }
                        }
                        Err(e) => (format!("lab failed: {e}"), "error".into()),
                    }
                }
                Err(e) => client_error(&e),
            }
        }
    }
}

fn lose_ten_percent(lab: &mut UppercaseLab) {
    for (node, seed) in [(lab.client, 11), (lab.server, 29)] {
        lab.lab.set_faults(
            node,
            LinkFaults {
                drop_chance: 10,
                seed,
                ..LinkFaults::default()
            },
        );
    }
}

/// The lab's server (at `at`) answers the first message, then its sockets are closed (as when the program
/// stops): every TCP socket of the server node is aborted, which sends RST to a connected peer.
fn lab_server_stops(lab: &mut UppercaseLab, at: IpEndpoint) -> (String, String) {
    let client = lab.client;
    let server = lab.server;
    let timeouts = ClientTimeouts {
        reply: Duration::from_secs(2),
        ..ClientTimeouts::default()
    };
    let mut exchange = TcpExchange::new(lab.lab.node(client), at, timeouts);
    exchange.push(b"first".to_vec());
    let mut stopped = false;
    let mut first_reply = false;
    let servers = &mut lab.servers;
    let result = drive(&mut lab.lab, |net| {
        let now = net.now();
        let mut moved = false;
        if !stopped {
            moved |= servers.poll(net.node(server));
        }
        match exchange.step(net.node(client), now) {
            Ok(Step::Done(())) => Step::Done(Ok(())),
            Ok(Step::Pending { moved: m, poll_at }) => {
                moved |= m;
                if !first_reply && exchange.next_reply().is_some() {
                    first_reply = true;
                    // The server stops: all its sockets close at once.
                    let node = net.node(server);
                    let handles: Vec<SocketHandle> = node
                        .sockets
                        .iter()
                        .filter(|(_, s)| matches!(s, smoltcp::socket::Socket::Tcp(_)))
                        .map(|(h, _)| h)
                        .collect();
                    for h in handles {
                        node.sockets.get_mut::<tcp::Socket>(h).abort();
                    }
                    stopped = true;
                    exchange.push(b"second".to_vec());
                    exchange.finish();
                    moved = true;
                }
                Step::Pending { moved, poll_at }
            }
            Err(e) => Step::Done(Err(e)),
        }
    });
    match result {
        Ok(Ok(())) => ("both replies came".into(), "ok".into()),
        Ok(Err(e)) => {
            let (line, kind) = client_error(&e);
            (format!("first reply came; second: {line}"), kind)
        }
        Err(e) => (format!("lab failed: {e}"), "error".into()),
    }
}

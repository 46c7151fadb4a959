//! End-to-end tests in the lab: smoltcp nodes on an in-process segment with a virtual clock. No root, no
//! sleeps, and every run is the same run.

mod support;

use smoltalk::apps::{ClientTimeouts, TcpExchange};
use smoltalk::lab_checks::{
    run_uppercase_checks, sample_text, LabClient, UppercaseLab, PORT, SERVER_CONNECTIONS,
};
use smoltalk::network::Network;
use smoltalk_core::ClientError;

#[test]
fn every_uppercase_check_holds() {
    let report = run_uppercase_checks().expect("lab runs");
    for check in &report.checks {
        assert!(check.passed, "{}: {}", check.name, check.detail);
        assert!(check.packets > 0, "{} sent no packets", check.name);
    }
    assert_eq!(report.checks.len(), 8);
    assert!(report.passed());
}

#[test]
fn the_lab_is_deterministic() {
    let a = run_uppercase_checks().expect("lab runs");
    let b = run_uppercase_checks().expect("lab runs");
    let shape = |r: &smoltalk::lab_checks::LabReport| {
        (
            r.packets,
            r.bytes,
            r.virtual_time,
            r.checks
                .iter()
                .map(|c| (c.packets, c.virtual_time))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(shape(&a), shape(&b));
}

#[test]
fn smoltalk_lab_command_reports_and_exits_zero() {
    let out = support::run({
        let mut cmd = support::smoltalk();
        cmd.arg("lab");
        cmd
    });
    assert!(out.status.success(), "{}", support::stderr(&out));
    let text = support::stdout(&out);
    assert!(text.contains("8 of 8 checks held"), "{text}");
    assert!(
        text.contains("got \"HELLO FROM THE SMOLTALK LAB\""),
        "{text}"
    );
}

fn tcp_client(lab: &mut UppercaseLab, messages: Vec<Vec<u8>>) -> LabClient {
    let node = lab.lab.node(lab.client);
    LabClient::Tcp(TcpExchange::with_messages(
        node,
        UppercaseLab::endpoint(PORT),
        ClientTimeouts::default(),
        messages,
    ))
}

/// smoltcp has no backlog: with every pooled socket busy, one more client is refused (RST), and the ones in
/// progress are served to the end.
#[test]
fn a_full_pool_refuses_the_next_client_and_serves_the_rest() {
    let mut lab = UppercaseLab::new();
    let mut clients: Vec<LabClient> = (0..=SERVER_CONNECTIONS)
        .map(|i| tcp_client(&mut lab, vec![sample_text(100_000, i as u64 + 1)]))
        .collect();
    let outcomes = lab.run(&mut clients).expect("lab runs");
    let refused = outcomes
        .iter()
        .filter(|o| **o == Err(ClientError::ConnectionRefused))
        .count();
    let served = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!((served, refused), (SERVER_CONNECTIONS, 1), "{outcomes:?}");
    for (i, client) in clients.iter_mut().enumerate() {
        if outcomes[i].is_ok() {
            let replies = client.take_replies();
            assert_eq!(replies.len(), 1);
            assert_eq!(
                replies[0].0,
                support::upper(&sample_text(100_000, i as u64 + 1))
            );
        }
    }
    // The refused client's slot problem is gone once the others are done: a new client is served.
    let mut later = vec![tcp_client(&mut lab, vec![b"after the rush".to_vec()])];
    assert_eq!(lab.run(&mut later).expect("lab runs"), vec![Ok(())]);
    assert_eq!(later[0].take_replies()[0].0, b"AFTER THE RUSH");
}

/// A client that vanishes (RST) mid-transfer frees its slot; other clients are not disturbed.
#[test]
fn a_vanishing_client_frees_its_slot() {
    let mut lab = UppercaseLab::new();
    let node = lab.lab.node(lab.client);
    let handle = node.add_tcp_socket();
    let port = node.ephemeral_port();
    let cx = node.iface.context();
    node.sockets
        .get_mut::<smoltcp::socket::tcp::Socket>(handle)
        .connect(cx, UppercaseLab::endpoint(PORT), port)
        .expect("connect");
    let mut warmup = vec![tcp_client(&mut lab, vec![b"warm up".to_vec()])];
    lab.run(&mut warmup).expect("lab runs");
    assert_eq!(lab.servers.tcp_stats().map(|s| s.accepted), Some(2));
    lab.lab
        .node(lab.client)
        .sockets
        .get_mut::<smoltcp::socket::tcp::Socket>(handle)
        .abort();
    let mut after = vec![tcp_client(&mut lab, vec![b"still here".to_vec()])];
    assert_eq!(lab.run(&mut after).expect("lab runs"), vec![Ok(())]);
    assert_eq!(lab.servers.tcp_stats().map(|s| s.reset), Some(1));
}

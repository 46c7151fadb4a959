//! End-to-end tests in the lab: smoltcp nodes on an in-process segment with a virtual clock. No root, no
//! sleeps, and every run is the same run.

mod support;

use smoltalk::lab::checks::{
    run_uppercase_checks, sample_text, LabClient, UppercaseLab, PORT, SERVER_CONNECTIONS,
};
use smoltalk::lab::LinkFaults;
use smoltalk::stack::network::Network;
use smoltalk::uppercase::node::{ClientTimeouts, TcpExchange, UdpExchange};
use smoltalk_core::tcp_server::{KEEP_ALIVE, SOCKET_TIMEOUT};
use smoltalk_core::ClientError;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint};

#[test]
fn every_uppercase_check_holds() {
    let report = run_uppercase_checks().expect("lab runs");
    for check in &report.checks {
        assert!(check.passed, "{}: {}", check.name, check.detail);
        // Over IPv6 the last check is a datagram the client's node never sends (no IPv6 fragmentation).
        if !check.name.contains("never sent") {
            assert!(check.packets > 0, "{} sent no packets", check.name);
        }
    }
    assert_eq!(report.checks.len(), 16);
    assert!(report.passed());
}

/// The same checks run over IPv4, then over IPv6, and each says which family it used.
#[test]
fn every_check_runs_over_both_families_and_says_which() {
    let report = run_uppercase_checks().expect("lab runs");
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    let (v4, v6): (Vec<&str>, Vec<&str>) = names.iter().partition(|n| n.ends_with(" (IPv4)"));
    assert_eq!(v4.len(), 8, "{names:#?}");
    assert_eq!(v6.len(), 8, "{names:#?}");
    assert!(v6.iter().all(|n| n.ends_with(" (IPv6)")), "{names:#?}");
    // The IPv4 block comes first, then the IPv6 block.
    assert!(
        names[..8].iter().all(|n| n.ends_with(" (IPv4)")),
        "{names:#?}"
    );
    let v6_check = |name: &str| {
        report
            .checks
            .iter()
            .find(|c| c.name == format!("{name} (IPv6)"))
            .unwrap_or_else(|| panic!("no IPv6 check {name:?} in {names:#?}"))
    };
    let once = v6_check("tcp: send once, read once");
    assert!(once.passed, "{}", once.detail);
    assert!(
        once.detail
            .contains("sent \"hello from the smoltalk lab\" got \"HELLO FROM THE SMOLTALK LAB\""),
        "{}",
        once.detail
    );
    // 1 MiB over IPv6: 20 bytes more of header per segment than IPv4, so more segments.
    let v4_large = report
        .checks
        .iter()
        .find(|c| c.name == "tcp: 1 MiB in one message (IPv4)")
        .unwrap();
    let v6_large = v6_check("tcp: 1 MiB in one message");
    assert!(v6_large.passed && v6_large.packets > v4_large.packets);
    let refused = v6_check("tcp: nothing listening -> refused");
    assert!(refused.passed && refused.detail.contains("connection refused"));
    assert_eq!(
        refused.packets, 2,
        "SYN and RST: the neighbour is known by then"
    );
    let udp = v6_check("udp: requests up to 1452 bytes, binary too");
    assert!(udp.passed, "{}", udp.detail);
    assert!(
        // 14 + 512 + 726 + 1452: the largest fills one IPv6 packet of 1500 bytes.
        udp.detail.contains("4 message(s), 2704 bytes each way"),
        "{}",
        udp.detail
    );
    let never = v6_check("udp: 1453 bytes (over one packet) never sent");
    assert!(never.passed && never.packets == 0, "{}", never.detail);
}

#[test]
fn the_lab_is_deterministic() {
    let a = run_uppercase_checks().expect("lab runs");
    let b = run_uppercase_checks().expect("lab runs");
    let shape = |r: &smoltalk::lab::checks::LabReport| {
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
    assert!(text.contains("16 of 16 checks held"), "{text}");
    assert!(
        text.contains("server node 10.0.2.15 and fd00:2::15, client node 10.0.2.2 and fd00:2::2"),
        "{text}"
    );
    assert!(
        text.contains("ok   tcp: send once, read once (IPv6)"),
        "{text}"
    );
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
    // Once the others are done every slot listens again, and a new client is served.
    assert_eq!(lab.servers.tcp_free_slots(), Some(SERVER_CONNECTIONS));
    let mut later = vec![tcp_client(&mut lab, vec![b"after the rush".to_vec()])];
    assert_eq!(lab.run(&mut later).expect("lab runs"), vec![Ok(())]);
    assert_eq!(later[0].take_replies()[0].0, b"AFTER THE RUSH");
}

/// A client that vanishes (RST) mid-transfer frees its slot; other clients are not disturbed.
#[test]
fn a_vanishing_client_frees_its_slot() {
    let mut lab = UppercaseLab::new();
    let handle = raw_connect(&mut lab);
    let mut warmup = vec![tcp_client(&mut lab, vec![b"warm up".to_vec()])];
    lab.run(&mut warmup).expect("lab runs");
    assert_eq!(lab.servers.tcp_stats().map(|s| s.accepted), Some(2));
    assert_eq!(lab.servers.tcp_free_slots(), Some(SERVER_CONNECTIONS - 1));
    lab.lab
        .node(lab.client)
        .sockets
        .get_mut::<smoltcp::socket::tcp::Socket>(handle)
        .abort();
    let mut after = vec![tcp_client(&mut lab, vec![b"still here".to_vec()])];
    assert_eq!(lab.run(&mut after).expect("lab runs"), vec![Ok(())]);
    assert_eq!(lab.servers.tcp_stats().map(|s| s.reset), Some(1));
    assert_eq!(lab.servers.tcp_free_slots(), Some(SERVER_CONNECTIONS));
}

/// Opens a bare smoltcp connection from the client node, outside any driver.
fn raw_connect(lab: &mut UppercaseLab) -> smoltcp::iface::SocketHandle {
    let node = lab.lab.node(lab.client);
    let handle = node.add_tcp_socket();
    let port = node.ephemeral_port();
    let cx = node.iface.context();
    node.sockets
        .get_mut::<smoltcp::socket::tcp::Socket>(handle)
        .connect(cx, UppercaseLab::endpoint(PORT), port)
        .expect("connect");
    handle
}

/// A client that vanishes without a word (no FIN, no RST) is given up after the keep-alive probes go
/// unanswered, and its slot listens again.
#[test]
fn a_silent_peer_is_given_up_and_its_slot_reused() {
    let mut lab = UppercaseLab::new();
    raw_connect(&mut lab);
    lab.run_for(Duration::from_secs(1)).expect("lab runs");
    assert_eq!(lab.servers.tcp_free_slots(), Some(SERVER_CONNECTIONS - 1));
    let faults = LinkFaults {
        drop_inbound: true,
        drop_outbound: true,
        ..LinkFaults::default()
    };
    lab.lab.set_faults(lab.client, faults);
    lab.run_for(KEEP_ALIVE + SOCKET_TIMEOUT + Duration::from_secs(30))
        .expect("lab runs");
    assert_eq!(lab.servers.tcp_free_slots(), Some(SERVER_CONNECTIONS));
    assert_eq!(lab.servers.tcp_stats().map(|s| s.reset), Some(1));
    assert!(lab.lab.link_stats().dropped > 0);
}

/// A SYN whose handshake never completes (the SYN-ACKs are lost) holds its slot only until the timeout.
#[test]
fn a_handshake_never_completed_is_given_up() {
    let mut lab = UppercaseLab::new();
    // First an exchange, so both nodes know each other's MAC address and the SYN itself goes out.
    let mut warmup = vec![tcp_client(&mut lab, vec![b"warm up".to_vec()])];
    assert_eq!(lab.run(&mut warmup).expect("lab runs"), vec![Ok(())]);
    lab.lab.set_faults(
        lab.client,
        LinkFaults {
            drop_inbound: true,
            ..LinkFaults::default()
        },
    );
    raw_connect(&mut lab);
    lab.run_for(Duration::from_secs(5)).expect("lab runs");
    assert_eq!(lab.servers.tcp_free_slots(), Some(SERVER_CONNECTIONS - 1));
    lab.run_for(SOCKET_TIMEOUT + Duration::from_secs(30))
        .expect("lab runs");
    assert_eq!(lab.servers.tcp_free_slots(), Some(SERVER_CONNECTIONS));
}

/// Nobody at the address: the handshake times out (ARP is never answered) with its own error.
#[test]
fn connecting_to_nobody_times_out() {
    let mut lab = UppercaseLab::new();
    let timeouts = ClientTimeouts {
        connect: Duration::from_secs(3),
        ..ClientTimeouts::default()
    };
    let nobody = IpEndpoint::new(IpAddress::v4(10, 0, 2, 99), PORT);
    let exchange = TcpExchange::with_messages(
        lab.lab.node(lab.client),
        nobody,
        timeouts,
        [b"hello?".to_vec()],
    );
    let start = lab.lab.now();
    let outcomes = lab.run(&mut [LabClient::Tcp(exchange)]).expect("lab runs");
    assert_eq!(outcomes, vec![Err(ClientError::ConnectTimedOut)]);
    assert_eq!(lab.lab.now() - start, Duration::from_secs(3));
}

/// A lost request is sent again after the timeout, and the reply to the second try is taken.
#[test]
fn a_lost_udp_request_is_retried() {
    let mut lab = UppercaseLab::new();
    let node = lab.lab.node(lab.client);
    let timeouts = ClientTimeouts {
        reply: Duration::from_secs(1),
        tries: 3,
        ..ClientTimeouts::default()
    };
    let warmup = UdpExchange::with_messages(
        node,
        UppercaseLab::endpoint(PORT),
        timeouts,
        [b"warm up".to_vec()],
    )
    .expect("udp client");
    assert_eq!(
        lab.run(&mut [LabClient::Udp(warmup)]).expect("lab runs"),
        vec![Ok(())]
    );

    lab.lab.set_faults(
        lab.client,
        LinkFaults {
            drop_next_outbound: 1,
            ..LinkFaults::default()
        },
    );
    let node = lab.lab.node(lab.client);
    let exchange = UdpExchange::with_messages(
        node,
        UppercaseLab::endpoint(PORT),
        timeouts,
        [b"lost once".to_vec()],
    )
    .expect("udp client");
    let mut clients = [LabClient::Udp(exchange)];
    assert_eq!(lab.run(&mut clients).expect("lab runs"), vec![Ok(())]);
    assert_eq!(clients[0].take_replies(), vec![(b"LOST ONCE".to_vec(), 2)]);
    assert_eq!(lab.lab.link_stats().dropped, 1);
}

/// 40 % of the frames lost and 5 % corrupted, each way (about two tries in three fail): every request is
/// answered right in the end, many only after several tries, and the client says how many each took.
#[test]
fn udp_under_heavy_loss_retries_and_counts_the_tries() {
    let mut lab = UppercaseLab::new();
    for (node, seed) in [(lab.client, 5), (lab.server, 6)] {
        lab.lab.set_faults(
            node,
            LinkFaults {
                drop_chance: 40,
                corrupt_chance: 5,
                seed,
                ..LinkFaults::default()
            },
        );
    }
    let timeouts = ClientTimeouts {
        reply: Duration::from_secs(1),
        tries: 30,
        ..ClientTimeouts::default()
    };
    // Each fits one frame: a fragmented datagram needs every fragment through, each with the same chance.
    let messages: Vec<Vec<u8>> = (0..40)
        .map(|i| sample_text(8 + i * 30, i as u64 + 1))
        .collect();
    let exchange = UdpExchange::with_messages(
        lab.lab.node(lab.client),
        UppercaseLab::endpoint(PORT),
        timeouts,
        messages.clone(),
    )
    .expect("udp client");
    let mut clients = [LabClient::Udp(exchange)];
    assert_eq!(lab.run(&mut clients).expect("lab runs"), vec![Ok(())]);
    let replies = clients[0].take_replies();
    assert_eq!(replies.len(), messages.len());
    for (message, (reply, tries)) in messages.iter().zip(&replies) {
        assert_eq!(*reply, message.to_ascii_uppercase());
        assert!((1..=30).contains(tries));
    }
    let retried = replies.iter().filter(|(_, tries)| *tries > 1).count();
    let most = replies.iter().map(|(_, tries)| *tries).max();
    assert!(retried >= 10, "{retried} of 40 retried");
    assert!(most >= Some(4), "at most {most:?} tries");
    let link = lab.lab.link_stats();
    assert!(link.dropped > 40 && link.corrupted > 0, "{link:?}");
}

/// Everything lost: the client gives up after its tries with an error that says so.
#[test]
fn udp_with_everything_lost_says_no_reply_after_n_tries() {
    let mut lab = UppercaseLab::new();
    lab.lab.set_faults(
        lab.client,
        LinkFaults {
            drop_chance: 100,
            ..LinkFaults::default()
        },
    );
    let timeouts = ClientTimeouts {
        reply: Duration::from_secs(1),
        tries: 4,
        ..ClientTimeouts::default()
    };
    let exchange = UdpExchange::with_messages(
        lab.lab.node(lab.client),
        UppercaseLab::endpoint(PORT),
        timeouts,
        [b"anyone?".to_vec()],
    )
    .expect("udp client");
    let start = lab.lab.now();
    let outcomes = lab.run(&mut [LabClient::Udp(exchange)]).expect("lab runs");
    assert_eq!(outcomes, vec![Err(ClientError::NoReply { tries: 4 })]);
    assert_eq!(lab.lab.now() - start, Duration::from_secs(4));
    let message = ClientError::NoReply { tries: 4 }.to_string();
    assert!(message.starts_with("no reply after 4 tries"), "{message}");
    // Four requests, and the ARP requests before them, all lost.
    assert!(lab.lab.link_stats().dropped >= 4);
}

/// The frames of an Ethernet pcap the lab wrote (24-byte file header, 16-byte record headers, little endian).
fn frames_of(pcap: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        frames.push(pcap[at + 16..at + 16 + len].to_vec());
        at += 16 + len;
    }
    frames
}

/// What an Ethernet frame is, for counting: `ARP`, `NS`/`NA` (NDP), `TCPv6`, `UDPv6`, `ICMPv6 …`, `IPv4`.
fn kind_of(frame: &[u8]) -> String {
    use smoltcp::wire::{
        EthernetFrame, EthernetProtocol, Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv6Packet,
    };
    let eth = EthernetFrame::new_checked(frame).unwrap();
    match eth.ethertype() {
        EthernetProtocol::Arp => "ARP".into(),
        EthernetProtocol::Ipv4 => "IPv4".into(),
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
            match ip.next_header() {
                IpProtocol::Tcp => "TCPv6".into(),
                IpProtocol::Udp => "UDPv6".into(),
                IpProtocol::Icmpv6 => {
                    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
                    match icmp.msg_type() {
                        Icmpv6Message::NeighborSolicit => "NS".into(),
                        Icmpv6Message::NeighborAdvert => "NA".into(),
                        other => format!("ICMPv6 {other} code {}", icmp.msg_code()),
                    }
                }
                other => format!("IPv6 {other}"),
            }
        }
        other => format!("{other}"),
    }
}

/// Over IPv6 the client finds the server with NDP (a neighbour solicitation and an advertisement), not ARP,
/// and the exchange is IPv6 from end to end: the uppercase reply comes back in IPv6 TCP segments.
#[test]
fn an_ipv6_exchange_uses_ndp_not_arp() {
    use smoltalk::lab::IpVersion;
    use smoltalk::stack::instruments::MemoryCapture;
    let mut lab = UppercaseLab::new();
    let capture = MemoryCapture::default();
    lab.lab.capture_to(lab.client, Box::new(capture.clone()));
    let exchange = TcpExchange::with_messages(
        lab.lab.node(lab.client),
        UppercaseLab::endpoint_over(IpVersion::Ipv6, PORT),
        ClientTimeouts::default(),
        [b"over ipv6".to_vec()],
    );
    let mut clients = [LabClient::Tcp(exchange)];
    assert_eq!(lab.run(&mut clients).expect("lab runs"), vec![Ok(())]);
    assert_eq!(clients[0].take_replies(), vec![(b"OVER IPV6".to_vec(), 1)]);
    drop(lab.lab.take_capture());
    let kinds: Vec<String> = frames_of(&capture.bytes())
        .iter()
        .map(|f| kind_of(f))
        .collect();
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(count("ARP"), 0, "{kinds:?}");
    assert_eq!(count("IPv4"), 0, "{kinds:?}");
    assert_eq!((count("NS"), count("NA")), (1, 1), "{kinds:?}");
    assert_eq!(kinds[..2], ["NS", "NA"], "{kinds:?}");
    assert_eq!(count("TCPv6"), kinds.len() - 2, "{kinds:?}");
    // The lab's own count of frames agrees with the capture.
    assert_eq!(lab.lab.link_stats().frames, kinds.len() as u64);
}

/// A closed UDP port over IPv6: smoltcp's server node answers with ICMPv6 port unreachable (destination
/// unreachable, code 4), and smoltcp's client is not told of it: it sees no reply, as over IPv4.
#[test]
fn a_closed_udp_port_over_ipv6_answers_icmpv6_port_unreachable_that_the_client_never_hears() {
    use smoltalk::lab::IpVersion;
    use smoltalk::stack::instruments::MemoryCapture;
    let mut lab = UppercaseLab::new();
    let capture = MemoryCapture::default();
    lab.lab.capture_to(lab.client, Box::new(capture.clone()));
    let timeouts = ClientTimeouts {
        reply: Duration::from_secs(1),
        tries: 2,
        ..ClientTimeouts::default()
    };
    let exchange = UdpExchange::with_messages(
        lab.lab.node(lab.client),
        UppercaseLab::endpoint_over(IpVersion::Ipv6, PORT + 1),
        timeouts,
        [b"anyone?".to_vec()],
    )
    .expect("udp client");
    let outcomes = lab.run(&mut [LabClient::Udp(exchange)]).expect("lab runs");
    assert_eq!(outcomes, vec![Err(ClientError::NoReply { tries: 2 })]);
    drop(lab.lab.take_capture());
    let kinds: Vec<String> = frames_of(&capture.bytes())
        .iter()
        .map(|f| kind_of(f))
        .collect();
    let unreachable = kinds
        .iter()
        .filter(|k| *k == "ICMPv6 destination unreachable code 4")
        .count();
    assert_eq!(unreachable, 2, "one per try: {kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| *k == "UDPv6").count(),
        2,
        "{kinds:?}"
    );
}

/// Loss and corruption over IPv6 (no header checksum: the transport checksums catch what is flipped): 256 KiB
/// still comes back byte for byte, and the lab counts the IPv6 retransmissions and corruptions.
#[test]
fn ipv6_under_loss_and_corruption_is_byte_exact_and_counted() {
    use smoltalk::lab::IpVersion;
    let mut lab = UppercaseLab::new();
    for (node, seed) in [(lab.client, 3), (lab.server, 4)] {
        lab.lab.set_faults(
            node,
            LinkFaults {
                drop_chance: 5,
                corrupt_chance: 2,
                seed,
                ..LinkFaults::default()
            },
        );
    }
    let text = sample_text(256 * 1024, 5);
    let exchange = TcpExchange::with_messages(
        lab.lab.node(lab.client),
        UppercaseLab::endpoint_over(IpVersion::Ipv6, PORT),
        ClientTimeouts {
            reply: Duration::from_secs(120),
            ..ClientTimeouts::default()
        },
        [text.clone()],
    );
    let mut clients = [LabClient::Tcp(exchange)];
    assert_eq!(lab.run(&mut clients).expect("lab runs"), vec![Ok(())]);
    let replies = clients[0].take_replies();
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0].0 == text.to_ascii_uppercase(),
        "the reply differs"
    );
    let link = lab.lab.link_stats();
    assert!(link.dropped > 0 && link.corrupted > 0, "{link:?}");
    assert!(link.tcp_retransmissions > 0, "{link:?}");
}

mod proxy {
    use smoltalk::lab::proxy::{
        big_body, run_proxy_checks, LabFetch, LabOrigin, LabRequest, ProxyLab, ORIGIN_NAME,
    };
    use smoltalk::lab::LinkFaults;
    use smoltalk::stack::network::Network;
    use smoltcp::time::Duration;

    fn page() -> String {
        format!("http://{ORIGIN_NAME}/")
    }

    #[test]
    fn every_proxy_check_holds() {
        let report = run_proxy_checks().expect("lab runs");
        for check in &report.checks {
            assert!(check.passed, "{}: {}", check.name, check.detail);
        }
        assert_eq!(report.checks.len(), 13);
    }

    /// The proxy reaches the dual-stack origin over IPv6, by its literal and by a name it knows as an IPv6
    /// address: the origin sees the request come from the proxy's IPv6 address, with the Host the client gave.
    #[test]
    fn the_proxy_fetches_from_an_ipv6_origin_by_literal_and_by_name() {
        use smoltalk::lab::proxy::{ORIGIN_IPV6, ORIGIN_NAME_IPV6, PROXY_IPV6};
        use smoltcp::wire::IpAddress;
        let mut lab = ProxyLab::new(2).unwrap();
        for (target, host) in [
            (
                format!("http://[{ORIGIN_IPV6}]/"),
                format!("[{ORIGIN_IPV6}]"),
            ),
            (
                format!("http://{ORIGIN_NAME_IPV6}/big"),
                ORIGIN_NAME_IPV6.to_string(),
            ),
        ] {
            let fetches = lab.fetch(vec![vec![LabRequest::get(&target)]]).unwrap();
            let response = &fetches[0].responses[0];
            assert_eq!(response.status, 200, "{target}");
            let seen = lab.origin.seen.last().unwrap();
            assert_eq!(seen.host.as_deref(), Some(host.as_str()), "{target}");
            let from = seen.from.expect("the origin knows its peer");
            assert_eq!(from.addr, IpAddress::Ipv6(PROXY_IPV6), "{target}");
            if target.ends_with("/big") {
                assert!(
                    response.body == big_body(),
                    "1 MiB over IPv6, byte for byte"
                );
            }
        }
        // An IPv6 address outside the lab's prefix is refused before any connection, as an IPv4 one is.
        let fetches = lab
            .fetch(vec![vec![LabRequest::get("http://[2001:db8::1]/")]])
            .unwrap();
        assert_eq!(fetches[0].responses[0].status, 403);
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let mut lab = ProxyLab::new(2).unwrap();
        let requests = vec![
            LabRequest::get(&page()),
            LabRequest::get(&format!("http://{ORIGIN_NAME}/missing")),
            LabRequest::get(&format!("http://{ORIGIN_NAME}/big")),
        ];
        let raw: Vec<u8> = format!(
            "GET {0} HTTP/1.1\r\nHost: a\r\n\r\nGET http://{ORIGIN_NAME}/missing HTTP/1.1\r\nHost: a\r\n\r\n\
             GET http://{ORIGIN_NAME}/big HTTP/1.1\r\nHost: a\r\n\r\n",
            page()
        )
        .into_bytes();
        let now = lab.lab.now();
        let client = lab.client;
        let fetch = LabFetch::raw(lab.lab.node(client), raw, requests, now);
        let done = lab.run_fetches(vec![fetch]).unwrap();
        assert_eq!(done[0].failure, None);
        let statuses: Vec<u16> = done[0].responses.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 404, 200]);
        assert_eq!(done[0].responses[2].body, big_body());
        let lines: Vec<&str> = lab.origin.seen.iter().map(|s| s.line.as_str()).collect();
        assert_eq!(
            lines,
            [
                "GET / HTTP/1.1",
                "GET /missing HTTP/1.1",
                "GET /big HTTP/1.1"
            ]
        );
    }

    /// smoltcp has no listen backlog: a SYN that finds no listening socket is reset, and a browser gives up on a
    /// reset. 200 clients connect at once (their SYNs reach the proxy in one burst) to a pool of 16: every one
    /// is served by the origin or answered 503, none is reset.
    #[test]
    fn two_hundred_clients_at_once_are_each_served_or_answered_503_never_reset() {
        let mut lab = ProxyLab::new(16).unwrap();
        let clients = vec![vec![LabRequest::get(&page())]; 200];
        let done = lab.fetch(clients).unwrap();
        let mut served = 0;
        let mut refused = 0;
        for (i, fetch) in done.iter().enumerate() {
            assert_eq!(fetch.failure, None, "client {i} was not answered");
            let response = fetch.responses.first().expect("a response");
            match response.status {
                200 => {
                    assert!(response.header("via").is_some(), "{response:?}");
                    served += 1;
                }
                503 => refused += 1,
                status => panic!("client {i} got {status}: {response:?}"),
            }
        }
        assert_eq!(served + refused, 200);
        assert!(served >= 16, "only {served} served");
        assert_eq!(
            lab.origin.seen.len(),
            served,
            "every 200 came from the origin"
        );
        assert_eq!(lab.proxy.stats().1, refused as u64, "every 503 a refuser's");
        // The pool grew to its cap, and the refusers never ran out.
        let (_, slots, refusers) = lab.proxy.sockets(lab.lab.node(lab.proxy_node));
        println!(
            "{served} served, {refused} answered 503; {slots} slots, {refusers} refusers made"
        );
        assert_eq!(slots, 16);
        assert!(
            refusers >= 1 && refusers + slots <= 200,
            "{refusers} refusers"
        );
        assert_eq!(lab.proxy.exhausted(), 0);
    }

    /// The origin kept from a client's first request vanishes and the proxy forgets its link-layer address, so
    /// the reset that ends that kept connection waits for an ARP answer that never comes. The client's next
    /// request, to another origin, is still served once the reset's grace (1 s) has passed, not held up by a
    /// reset that is tried again and again until the request's deadline.
    #[test]
    fn a_reset_that_cannot_go_out_does_not_hold_up_the_next_origin() {
        const SECOND_PORT: u16 = 8000;
        let mut lab = ProxyLab::new(1).unwrap();
        let (client, proxy_node, origin_node) = (lab.client, lab.proxy_node, lab.origin_node);
        let second = LabOrigin::new(lab.lab.node(client), SECOND_PORT, 1);
        let requests = vec![
            LabRequest::get(&page()),
            LabRequest::get(&format!("http://10.0.2.2:{SECOND_PORT}/")),
        ];
        let now = lab.lab.now();
        let fetch = LabFetch::new(lab.lab.node(client), requests, now);
        let mut state = (fetch, second, None);
        lab.run_until(
            |lab, (fetch, second, cut_at)| {
                let now = lab.now();
                let mut moved = fetch.step(lab.node(client), now);
                moved |= second.poll(lab.node(client), SECOND_PORT);
                // The first response is whole and the second request not yet on the wire.
                if fetch.responses.len() == 1 && cut_at.is_none() {
                    *cut_at = Some(now);
                    let gone = LinkFaults {
                        drop_inbound: true,
                        drop_outbound: true,
                        ..LinkFaults::default()
                    };
                    lab.set_faults(origin_node, gone);
                    // Setting the addresses again empties the neighbour cache.
                    lab.node(proxy_node).iface.update_ip_addrs(|_| {});
                }
                (moved, fetch.is_done())
            },
            &mut state,
        )
        .unwrap();
        let (fetch, second, cut_at) = state;
        assert_eq!(fetch.failure, None);
        let statuses: Vec<u16> = fetch.responses.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 200]);
        let lines: Vec<&str> = second.seen.iter().map(|s| s.line.as_str()).collect();
        assert_eq!(lines, ["GET / HTTP/1.1"]);
        let waited = lab.lab.now() - cut_at.unwrap();
        assert!(
            waited < Duration::from_secs(3),
            "the second response took {waited}"
        );
    }

    #[test]
    fn a_head_that_never_ends_gets_408_and_frees_the_connection() {
        let mut lab = ProxyLab::new(1).unwrap();
        let now = lab.lab.now();
        let client = lab.client;
        let partial = b"GET http://origin.lab/ HTTP/1.1\r\nHost: origin.lab\r\nX-Slow: ".to_vec();
        let fetch = LabFetch::raw(
            lab.lab.node(client),
            partial,
            vec![LabRequest::get(&page())],
            now,
        );
        let done = lab.run_fetches(vec![fetch]).unwrap();
        assert_eq!(
            done[0].failure,
            None,
            "{:?} after {}",
            String::from_utf8_lossy(done[0].pending_bytes()),
            lab.lab.now() - now
        );
        assert_eq!(done[0].responses[0].status, 408);
        assert!(lab.lab.now() - now >= Duration::from_secs(10));
        // The only connection serves the next client.
        let next = lab.fetch(vec![vec![LabRequest::get(&page())]]).unwrap();
        assert_eq!(next[0].responses[0].status, 200);
    }

    #[test]
    fn malformed_and_refused_requests_get_their_status() {
        let mut lab = ProxyLab::new(2).unwrap();
        let cases: [(&[u8], u16); 5] = [
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"TRACE http://origin.lab/ HTTP/1.1\r\n\r\n", 501),
            (b"CONNECT origin.lab:22 HTTP/1.1\r\n\r\n", 403),
            (
                b"GET http://origin.lab:8080/ HTTP/1.1\r\nVia: 1.1 smoltalk-lab\r\n\r\n",
                508,
            ),
            (
                b"POST http://origin.lab/echo HTTP/1.1\r\nTransfer-Encoding: br, chunked\r\n\r\n",
                501,
            ),
        ];
        for (raw, status) in cases {
            let now = lab.lab.now();
            let client = lab.client;
            let fetch = LabFetch::raw(
                lab.lab.node(client),
                raw.to_vec(),
                vec![LabRequest::get(&page())],
                now,
            );
            let done = lab.run_fetches(vec![fetch]).unwrap();
            let response = &done[0].responses[0];
            assert_eq!(response.status, status, "{}", String::from_utf8_lossy(raw));
            assert_eq!(response.header("connection"), Some("close"));
        }
        let seen = lab.origin.seen.len();
        assert_eq!(seen, 0, "no refused request reached the origin");
    }

    #[test]
    fn a_client_that_vanishes_mid_body_frees_its_connection() {
        let mut lab = ProxyLab::new(1).unwrap();
        let now = lab.lab.now();
        let client = lab.client;
        let fetch = LabFetch::new(
            lab.lab.node(client),
            vec![LabRequest::get(&format!("http://{ORIGIN_NAME}/big"))],
            now,
        );
        // Let the response start, then cut the client off the segment.
        let mut fetches = vec![fetch];
        lab.run_until(
            |lab, fetches: &mut Vec<LabFetch>| {
                let now = lab.now();
                let moved = fetches[0].step(lab.node(client), now);
                (moved, fetches[0].pending_bytes().len() > 64 * 1024)
            },
            &mut fetches,
        )
        .unwrap();
        lab.lab.set_faults(
            client,
            LinkFaults {
                drop_inbound: true,
                drop_outbound: true,
                ..LinkFaults::default()
            },
        );
        let states = |lab: &ProxyLab| lab.proxy.busy();
        assert_eq!(states(&lab), 1);
        // The proxy gives up on the silent client (keep-alive and retransmission timeouts) and listens again.
        let mut waited = ();
        lab.run_until(
            |lab, _: &mut ()| (false, lab.now() - now > Duration::from_secs(200)),
            &mut waited,
        )
        .unwrap();
        assert_eq!(states(&lab), 0, "the connection is free again");
        lab.lab.set_faults(client, LinkFaults::default());
        let next = lab.fetch(vec![vec![LabRequest::get(&page())]]).unwrap();
        assert_eq!(next[0].responses[0].status, 200);
    }
}

mod proxy_pool {
    use smoltalk::lab::proxy::{LabFetch, LabRequest, ProxyLab, ORIGIN_NAME};
    use smoltalk::stack::network::Network;

    /// With a pool of one, a client that resets right after its handshake and one that sends its request
    /// and its FIN at once must each leave the connection free for the next: a lost slot would answer 503.
    #[test]
    fn clients_that_reset_or_half_close_at_once_never_cost_the_connection() {
        let mut lab = ProxyLab::new(1).unwrap();
        let page = format!("http://{ORIGIN_NAME}/");
        let client = lab.client;
        let now = lab.lab.now();
        let mut holders = vec![LabFetch::new(lab.lab.node(client), Vec::new(), now)];
        lab.run_until(
            |lab, holders: &mut Vec<LabFetch>| {
                let now = lab.now();
                let moved = holders[0].step(lab.node(client), now);
                (moved, holders[0].connected)
            },
            &mut holders,
        )
        .unwrap();
        holders[0].reset(lab.lab.node(client));
        lab.settle().unwrap();
        assert_eq!(
            lab.proxy.busy(),
            0,
            "the reset client still holds the connection"
        );

        for round in 0..3 {
            let now = lab.lab.now();
            let raw = format!("GET {page} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
            let fetch = LabFetch::raw(lab.lab.node(client), raw, vec![LabRequest::get(&page)], now)
                .half_closing();
            let done = lab.run_fetches(vec![fetch]).unwrap();
            assert_eq!(done[0].failure, None, "round {round}");
            assert_eq!(done[0].responses[0].status, 200, "round {round}");
        }
        let next = lab.fetch(vec![vec![LabRequest::get(&page)]]).unwrap();
        assert_eq!(next[0].responses[0].status, 200);
    }
}

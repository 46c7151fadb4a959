//! Damaged and hostile captures: other protocols skipped and counted, truncated files, random bytes, and the
//! errors a file that cannot be read gives.

use super::*;

#[test]
fn other_protocols_are_skipped_and_counted() {
    // IPv6 carrying ESP (50), which is not drawn.
    let mut ipv6 = vec![0x60, 0, 0, 0, 0, 8, 50, 64];
    ipv6.extend_from_slice(&[0; 32]);
    ipv6.extend_from_slice(&[0; 8]);
    let igmp = ipv4(
        CLIENT,
        [224, 0, 0, 1],
        2,
        &[0x11, 0, 0xee, 0xff, 0, 0, 0, 0],
    );
    let udp_packet = udp(CLIENT, SERVER, 1, 2, b"x");
    let raw = pcap(
        101,
        false,
        &[
            (5, 0, ipv6.clone()),
            (5, 250, udp_packet.clone()),
            (5, 300, igmp.clone()),
            (5, 400, vec![0x00; 3]),
        ],
    );
    let ladder = read_pcap(&raw).unwrap();
    assert_eq!(ladder.records, 4);
    assert_eq!(ladder.packets.len(), 1);
    // Times count from the first record, even a skipped one.
    assert!((ladder.packets[0].time - 250e-6).abs() < 1e-9);
    assert_eq!(
        ladder.skipped,
        BTreeMap::from([
            ("other IPv6 protocol".to_string(), 1),
            ("other IPv4 protocol".to_string(), 1),
            ("not IP".to_string(), 1)
        ])
    );
    assert_eq!(
        ladder.skipped_summary(),
        "3 skipped (1 not IP, 1 other IPv4 protocol, 1 other IPv6 protocol)"
    );

    let eth = pcap(
        1,
        false,
        &timed(vec![
            ethernet([0xff; 6], CLIENT_MAC, 0x86dd, &ipv6),
            ethernet([0xff; 6], CLIENT_MAC, 0x88cc, &[0; 30]),
            ethernet(SERVER_MAC, CLIENT_MAC, 0x0800, &udp_packet),
            [
                &ethernet(SERVER_MAC, CLIENT_MAC, 0x0800, &[])[..14],
                &udp_packet[..20],
            ]
            .concat(), // cut short
            vec![0; 8], // shorter than an Ethernet header
        ]),
    );
    let ladder = read_pcap(&eth).unwrap();
    assert_eq!(labels(&ladder.packets), ["UDP 1→2 len=1"]);
    assert_eq!(ladder.skipped_total(), 4, "{:?}", ladder.skipped);
}

#[test]
fn truncated_files() {
    let file = pcap(101, false, &timed(exchange(1000, 5000, false)));
    // Shorter than the file header: not a capture.
    for cut in [0, 3, 4, 10, 23] {
        assert!(read_pcap(&file[..cut]).is_err(), "cut at {cut}");
    }
    // Just the header: no packets.
    assert_eq!(read_pcap(&file[..24]).unwrap().packets, []);
    // Cut inside the first record header, then inside the second record's data.
    let ladder = read_pcap(&file[..30]).unwrap();
    assert_eq!((ladder.packets.len(), ladder.skipped_total()), (0, 1));
    let second_record_data = 24 + 16 + 40 + 16 + 5;
    let ladder = read_pcap(&file[..second_record_data]).unwrap();
    assert_eq!(ladder.packets.len(), 1);
    assert_eq!(
        ladder.skipped,
        BTreeMap::from([("truncated record at end of file".to_string(), 1)])
    );
    // Every cut reads without panicking, and the packets before the cut are all there.
    let whole = read_pcap(&file).unwrap().packets;
    for cut in 24..file.len() {
        let partial = read_pcap(&file[..cut]).unwrap().packets;
        assert_eq!(partial[..], whole[..partial.len()], "cut at {cut}");
    }
}

#[test]
fn garbage_is_an_error_or_skipped_never_a_panic() {
    assert!(read_pcap(b"").is_err());
    assert_eq!(
        read_pcap(b"").unwrap_err(),
        PcapError::ShorterThanMagic { len: 0 }
    );
    assert!(read_pcap(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .unwrap_err()
        .to_string()
        .contains("not a pcap"));
    let mut pcapng = vec![0x0a, 0x0d, 0x0d, 0x0a];
    pcapng.extend_from_slice(&[0; 40]);
    assert!(read_pcap(&pcapng)
        .unwrap_err()
        .to_string()
        .contains("pcapng"));
    assert_eq!(read_pcap(&pcapng).unwrap_err(), PcapError::Pcapng);
    assert!(read_pcap(&pcap(113, false, &[]))
        .unwrap_err()
        .to_string()
        .contains("link type 113"));
    let mut huge = pcap(1, false, &[]);
    huge.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]);
    huge.extend_from_slice(&[0; 64]);
    assert!(read_pcap(&huge)
        .unwrap_err()
        .to_string()
        .contains("captured length"));
    assert!(matches!(
        read_pcap(&huge),
        Err(PcapError::RecordTooLong {
            index: 1,
            at: 24,
            ..
        })
    ));

    // Random bytes as a file, random frames in a good file, and good files with bytes changed.
    let mut state = 0x1234_5678;
    for _ in 0..300 {
        let len = (rng(&mut state) % 300) as usize;
        let noise: Vec<u8> = (0..len).map(|_| rng(&mut state) as u8).collect();
        let _ = read_pcap(&noise);
        for link in [1, 101] {
            let _ = read_pcap(&pcap(link, false, &[(0, 0, noise.clone())]));
        }
    }
    let mut ethernet_frames = Vec::new();
    for packet in exchange(1000, 5000, true) {
        ethernet_frames.push(ethernet(SERVER_MAC, CLIENT_MAC, 0x0800, &packet));
    }
    ethernet_frames.push(ethernet(
        [0xff; 6],
        CLIENT_MAC,
        0x0806,
        &arp(1, CLIENT_MAC, CLIENT, [0; 6], SERVER),
    ));
    let udp_header = udp_datagram(CLIENT, SERVER, 40000, 12001, b"hi");
    let quoted = [
        &ipv4(CLIENT, SERVER, 17, &udp_header)[..20],
        &udp_header[..8],
    ]
    .concat();
    let mut raw_packets = exchange(1000, 5000, false);
    raw_packets.push(icmp(SERVER, CLIENT, 3, 3, [0; 4], &quoted));
    raw_packets.push(udp(CLIENT, SERVER, 40000, 12000, b"hello"));
    for file in [
        pcap(1, false, &timed(ethernet_frames)),
        pcap(101, true, &timed(raw_packets)),
    ] {
        for _ in 0..3000 {
            let mut damaged = file.clone();
            for _ in 0..1 + rng(&mut state) % 4 {
                let at = 24 + rng(&mut state) as usize % (damaged.len() - 24);
                damaged[at] = rng(&mut state) as u8;
            }
            if let Ok(packets) = packets_from_pcap(&damaged) {
                let svg = ladder_svg("damaged", &packets);
                assert_eq!(
                    svg.matches(r#"class="packet""#).count(),
                    packets.len().min(MAX_DRAWN)
                );
            }
        }
    }
}

#[test]
fn pcap_errors_say_why() {
    let says = |bytes: &[u8]| read_pcap(bytes).unwrap_err().to_string();
    assert_eq!(
        says(b"ab"),
        "not a pcap file: 2 bytes, shorter than a magic number"
    );
    assert_eq!(
        says(b"GET / HTTP/1.1"),
        "not a pcap file: magic number [47, 45, 54, 20]"
    );
    assert_eq!(
        says(&[0x0a, 0x0d, 0x0d, 0x0a, 0, 0]),
        "a pcapng file, not a classic pcap; convert it with `editcap -F pcap IN OUT`"
    );
    assert_eq!(
        says(&pcap(101, false, &[])[..20]),
        "pcap file cut short: 20 bytes, shorter than the 24-byte file header"
    );
    assert_eq!(
        says(&pcap(113, false, &[])),
        "pcap link type 113 not supported (only 1 Ethernet, 101 raw IP, 228 raw IPv4, 229 raw IPv6)"
    );
    let mut huge = pcap(1, false, &[]);
    huge.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x10, 0]);
    assert_eq!(
        says(&huge),
        "pcap record 1 at byte 24: captured length 1048576 is more than any capture keeps; \
         the file is damaged or not a pcap file"
    );
}

//! The lab's shaped link (`--link-delay`, `--link-rate`): a round trip seen in the capture, tapped at the
//! client's port, takes twice the one-way delay plus the frames' serialisation; a transfer takes at least its
//! bytes over the rate; and the same run twice gives the same capture, byte for byte, losses included.

use std::time::Duration as StdDuration;

use smoltalk::lab::checks::{sample_text, LabClient, UppercaseLab, PORT};
use smoltalk::lab::{IpVersion, LinkFaults};
use smoltalk::stack::instruments::MemoryCapture;
use smoltalk::stack::link_shape::LinkShape;
use smoltalk::stack::network::Network;
use smoltalk::uppercase::node::{ClientTimeouts, TcpExchange};
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};

/// One record of a pcap: its time in microseconds and the frame.
struct Record {
    micros: i64,
    frame: Vec<u8>,
}

fn records(pcap: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let mut at = 24;
    let word = |i: usize| u32::from_le_bytes(pcap[i..i + 4].try_into().unwrap());
    while at + 16 <= pcap.len() {
        let micros = i64::from(word(at)) * 1_000_000 + i64::from(word(at + 4));
        let len = word(at + 8) as usize;
        out.push(Record {
            micros,
            frame: pcap[at + 16..at + 16 + len].to_vec(),
        });
        at += 16 + len;
    }
    out
}

/// The TCP segment of an IPv4 frame: (source port, SYN, ACK, payload length, sequence, acknowledgement).
fn tcp(frame: &[u8]) -> Option<(u16, bool, bool, usize, u32, u32)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let t = TcpPacket::new_checked(ip.payload()).ok()?;
    Some((
        t.src_port(),
        t.syn(),
        t.ack(),
        t.payload().len(),
        t.seq_number().0 as u32,
        t.ack_number().0 as u32,
    ))
}

/// Microseconds a frame of `len` bytes takes at `rate` bits per second, rounded up.
fn serialisation_micros(len: usize, rate: u64) -> i64 {
    ((len as u64 * 8 * 1_000_000).div_ceil(rate)) as i64
}

/// Runs one TCP exchange of `message` over IPv4 in a lab shaped as `shape` (with 10 % loss on both nodes if
/// `lossy`), captured at the client's port; returns the capture, the reply and the virtual time it took.
fn exchange(shape: LinkShape, message: Vec<u8>, lossy: bool) -> (Vec<u8>, Vec<u8>, i64) {
    let mut lab = UppercaseLab::new();
    lab.lab.set_link(shape);
    if lossy {
        for (node, seed) in [(lab.client, 11), (lab.server, 29)] {
            let faults = LinkFaults {
                drop_chance: 10,
                seed,
                ..LinkFaults::default()
            };
            lab.lab.set_faults(node, faults);
        }
    }
    let capture = MemoryCapture::default();
    lab.lab.capture_to(lab.client, Box::new(capture.clone()));
    let timeouts = ClientTimeouts {
        reply: smoltcp::time::Duration::from_secs(120),
        ..ClientTimeouts::default()
    };
    let c = TcpExchange::with_messages(
        lab.lab.node(lab.client),
        UppercaseLab::endpoint_over(IpVersion::Ipv4, PORT),
        timeouts,
        [message],
    );
    let start = lab.lab.now();
    let mut clients = [LabClient::Tcp(c)];
    assert_eq!(lab.run(&mut clients).expect("lab runs"), vec![Ok(())]);
    let took = (lab.lab.now() - start).total_micros() as i64;
    drop(lab.lab.take_capture());
    let reply = clients[0].take_replies().remove(0).0;
    (capture.bytes(), reply, took)
}

const RATE: u64 = 100_000_000;

#[test]
fn a_syn_and_its_syn_ack_are_two_delays_apart_in_the_capture() {
    let shape = LinkShape::new(StdDuration::from_millis(10), Some(RATE));
    let (pcap, reply, _) = exchange(shape, b"hello over a long link".to_vec(), false);
    assert_eq!(reply, b"HELLO OVER A LONG LINK");
    let records = records(&pcap);
    let syn = records
        .iter()
        .find(|r| matches!(tcp(&r.frame), Some((_, true, false, ..))))
        .expect("a SYN");
    let syn_ack = records
        .iter()
        .find(|r| matches!(tcp(&r.frame), Some((PORT, true, true, ..))))
        .expect("a SYN-ACK");
    // 10 ms each way, plus each frame's time on a 100 Mbit/s link; each arrival lands on the next whole
    // microsecond of the clock.
    let wire = serialisation_micros(syn.frame.len(), RATE)
        + serialisation_micros(syn_ack.frame.len(), RATE);
    let gap = syn_ack.micros - syn.micros;
    assert!(
        (20_000 + wire..=20_000 + wire + 2).contains(&gap),
        "SYN to SYN-ACK: {gap} µs, expected 20 ms + {wire} µs"
    );
    // The client's data segment is answered after the same round trip (the server's uppercase reply carries
    // the ACK, so no delayed ACK comes into it; at most smoltcp's ACK delay of 10 ms would).
    let data = records
        .iter()
        .find(|r| matches!(tcp(&r.frame), Some((src, _, _, len, ..)) if src != PORT && len > 0))
        .expect("the client's data");
    let (_, _, _, len, seq, _) = tcp(&data.frame).unwrap();
    let acked = records
        .iter()
        .find(|r| {
            matches!(tcp(&r.frame), Some((PORT, _, true, _, _, ack))
                if ack.wrapping_sub(seq.wrapping_add(len as u32)) as i32 >= 0)
        })
        .expect("its ACK");
    let gap = acked.micros - data.micros;
    assert!(
        (20_000..=30_000 + 2 * wire).contains(&gap),
        "data to its ACK: {gap} µs"
    );
}

#[test]
fn a_transfer_takes_at_least_its_bytes_over_the_rate() {
    let rate = 10_000_000;
    let shape = LinkShape::new(StdDuration::from_millis(1), Some(rate));
    let text = sample_text(1 << 20, 5);
    let (pcap, reply, took) = exchange(shape, text.clone(), false);
    assert!(reply == text.to_ascii_uppercase(), "the reply differs");
    // Every byte the server sent crossed its 10 Mbit/s link one frame after another.
    let records = records(&pcap);
    let server_bytes: usize = records
        .iter()
        .filter(|r| matches!(tcp(&r.frame), Some((PORT, ..))))
        .map(|r| r.frame.len())
        .sum();
    let least = (server_bytes as u64 * 8 * 1_000_000 / rate) as i64;
    assert!(server_bytes > 1 << 20, "{server_bytes} bytes");
    assert!(
        took >= least,
        "took {took} µs, less than {least} µs for {server_bytes} bytes at 10 Mbit/s"
    );
    // And the capture shows it: from the client's first data to the server's last frame.
    let first = records
        .iter()
        .find(|r| matches!(tcp(&r.frame), Some((src, _, _, len, ..)) if src != PORT && len > 0))
        .unwrap();
    let last = records
        .iter()
        .rev()
        .find(|r| matches!(tcp(&r.frame), Some((PORT, _, _, len, ..)) if len > 0))
        .unwrap();
    assert!(last.micros - first.micros >= least);
    // The link, not the window, is what limits it: well under twice the wire time.
    assert!(
        took < least * 2,
        "took {took} µs for a wire time of {least} µs"
    );
}

#[test]
fn a_shaped_lossy_run_is_the_same_run_twice() {
    let shape = LinkShape::new(StdDuration::from_micros(3500), Some(50_000_000));
    let text = sample_text(256 * 1024, 9);
    let (first, reply, took) = exchange(shape, text.clone(), true);
    assert!(reply == text.to_ascii_uppercase());
    let (second, _, took_again) = exchange(shape, text.clone(), true);
    assert_eq!(took, took_again);
    assert!(first == second, "two runs gave different captures");
    // The shape is in the capture: the unshaped run's is another one.
    let (unshaped, _, _) = exchange(LinkShape::default(), text, true);
    assert!(first != unshaped);
}

#[test]
fn an_unshaped_link_is_the_lab_as_it_was() {
    let text = sample_text(64 * 1024, 3);
    let (plain, _, took) = {
        let mut lab = UppercaseLab::new();
        let capture = MemoryCapture::default();
        lab.lab.capture_to(lab.client, Box::new(capture.clone()));
        let c = TcpExchange::with_messages(
            lab.lab.node(lab.client),
            UppercaseLab::endpoint(PORT),
            ClientTimeouts::default(),
            [text.clone()],
        );
        let start = lab.lab.now();
        lab.run(&mut [LabClient::Tcp(c)]).expect("lab runs");
        let took = (lab.lab.now() - start).total_micros() as i64;
        drop(lab.lab.take_capture());
        (capture.bytes(), (), took)
    };
    let (shaped_by_nothing, _, took_again) = exchange(LinkShape::default(), text, false);
    assert_eq!(took, took_again);
    assert!(plain == shaped_by_nothing);
    // And as the lab was before links had shapes: the same exchange's capture then (checked against the lab of
    // 6d5b1d8 when shapes came, whose `smoltalk lab --pcap` capture is byte for byte this lab's). A change to
    // the unshaped lab shows here; if it is meant, take the new figures.
    assert_eq!(
        (records(&plain).len(), fnv1a(&plain), took),
        UNSHAPED_REFERENCE,
        "the unshaped lab's capture changed"
    );
}

/// Packet records, FNV-1a hash and virtual microseconds of [`an_unshaped_link_is_the_lab_as_it_was`]'s
/// exchange.
const UNSHAPED_REFERENCE: (usize, u64, i64) = (104, 15_364_113_441_336_256_982, 0);

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[test]
fn nonsense_delays_and_rates_are_refused_with_a_reason() {
    let smoltalk = env!("CARGO_BIN_EXE_smoltalk");
    for (flag, value, says) in [
        ("--link-delay", "fast", "does not start with a number"),
        ("--link-delay", "10", "is not a delay"),
        ("--link-delay", "1h", "is not a delay"),
        ("--link-rate", "100MB", "is not a rate"),
        ("--link-rate", "0Mbit", "from 1 kbit/s to 1 Tbit/s"),
    ] {
        let out = std::process::Command::new(smoltalk)
            .args(["lab", flag, value])
            .output()
            .expect("run smoltalk");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
    }
    // The device layer's flags are the same.
    let out = std::process::Command::new(smoltalk)
        .args(["tcp-server", "--stack", "tun", "--link-delay=-3ms"])
        .output()
        .expect("run smoltalk");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not start with a number"));
}

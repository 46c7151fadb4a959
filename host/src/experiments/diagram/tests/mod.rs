//! The tests of the ladder diagrams: captures built byte by byte (independently of smoltcp's emitters), their
//! decoding, damaged and hostile files, and the SVG checked for well-formedness. The packet builders and helpers
//! are here; [`decode`] holds the decoding tests, [`damaged`] the damaged and hostile files, [`svg`] the SVG,
//! and [`ipv6`] IPv6.

use std::collections::BTreeMap;

use super::style::{COLOR_BAD, COLOR_RETRANSMISSION, COLOR_TCP};
use super::*;

mod damaged;
mod decode;
mod ipv6;
mod svg;

const CLIENT: [u8; 4] = [10, 0, 2, 2];
const SERVER: [u8; 4] = [10, 0, 2, 15];
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

// ---- Packets, built byte by byte (independently of smoltcp's emitters) ----

/// The RFC 1071 sum of the concatenated parts (not complemented).
fn sum16(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn pseudo(src: [u8; 4], dst: [u8; 4], protocol: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[0, protocol]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

/// An IPv4 packet (DF, TTL 64, the header checksum filled in).
fn ipv4_with(
    src: [u8; 4],
    dst: [u8; 4],
    protocol: u8,
    ident: u16,
    flags_offset: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&flags_offset.to_be_bytes());
    p.extend_from_slice(&[64, protocol, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let sum = !sum16(&[&p]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_with(src, dst, protocol, 1, 0x4000, payload)
}

#[derive(Clone, Copy)]
struct Seg<'a> {
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    options: &'a [u8],
    payload: &'a [u8],
}

/// The TCP segment alone, checksum filled in.
fn tcp_segment(s: &Seg) -> Vec<u8> {
    assert_eq!(s.options.len() % 4, 0);
    let mut t = Vec::new();
    t.extend_from_slice(&s.sport.to_be_bytes());
    t.extend_from_slice(&s.dport.to_be_bytes());
    t.extend_from_slice(&s.seq.to_be_bytes());
    t.extend_from_slice(&s.ack.to_be_bytes());
    t.push((((20 + s.options.len()) / 4) as u8) << 4);
    t.push(s.flags);
    t.extend_from_slice(&s.win.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(s.options);
    t.extend_from_slice(s.payload);
    let sum = !sum16(&[&pseudo(s.src, s.dst, 6, t.len()), &t]);
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    t
}

fn tcp(s: &Seg) -> Vec<u8> {
    ipv4(s.src, s.dst, 6, &tcp_segment(s))
}

fn udp_datagram(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let sum = !sum16(&[&pseudo(src, dst, 17, u.len()), &u]);
    u[6..8].copy_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
    u
}

fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    ipv4(src, dst, 17, &udp_datagram(src, dst, sport, dport, payload))
}

fn icmp(src: [u8; 4], dst: [u8; 4], kind: u8, code: u8, rest: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(data);
    let sum = !sum16(&[&m]);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    ipv4(src, dst, 1, &m)
}

const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    // Pad to the Ethernet minimum, as a real frame is: the padding must not confuse the IPv4 length.
    f.resize(f.len().max(60), 0);
    f
}

fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa);
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa);
    a
}

/// A classic pcap file: microsecond timestamps, the given byte order and link type.
fn pcap(link_type: u32, big_endian: bool, records: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
    let u32b = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u16b = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut f = Vec::new();
    f.extend_from_slice(&u32b(0xa1b2_c3d4));
    f.extend_from_slice(&u16b(2));
    f.extend_from_slice(&u16b(4));
    f.extend_from_slice(&u32b(0)); // thiszone
    f.extend_from_slice(&u32b(0)); // sigfigs
    f.extend_from_slice(&u32b(65535)); // snaplen
    f.extend_from_slice(&u32b(link_type));
    for (secs, micros, data) in records {
        f.extend_from_slice(&u32b(*secs));
        f.extend_from_slice(&u32b(*micros));
        f.extend_from_slice(&u32b(data.len() as u32));
        f.extend_from_slice(&u32b(data.len() as u32));
        f.extend_from_slice(data);
    }
    f
}

/// Records at 1700000000.5 s plus 123 µs per packet.
fn timed(packets: Vec<Vec<u8>>) -> Vec<(u32, u32, Vec<u8>)> {
    packets
        .into_iter()
        .enumerate()
        .map(|(i, p)| (1_700_000_000, 500_000 + 123 * i as u32, p))
        .collect()
}

/// SYN, SYN-ACK, ACK, "hello" →, "HELLO" ←, ACK, FIN →, FIN ←, ACK; window scale options if `scale`.
fn exchange(client_isn: u32, server_isn: u32, scale: bool) -> Vec<Vec<u8>> {
    let (c, s) = (client_isn, server_isn);
    // MSS 1460, NOP, window scale 2 (client) or 3 (server).
    let (c_opts, s_opts): (&[u8], &[u8]) = if scale {
        (&[2, 4, 5, 180, 1, 3, 3, 2], &[2, 4, 5, 180, 1, 3, 3, 3])
    } else {
        (&[], &[])
    };
    let (c_win, s_win) = if scale { (16384, 8192) } else { (65535, 65535) };
    let up = |seq, ack, flags, win, options, payload| {
        tcp(&Seg {
            src: CLIENT,
            dst: SERVER,
            sport: 40000,
            dport: 12000,
            seq,
            ack,
            flags,
            win,
            options,
            payload,
        })
    };
    let down = |seq, ack, flags, win, options, payload| {
        tcp(&Seg {
            src: SERVER,
            dst: CLIENT,
            sport: 12000,
            dport: 40000,
            seq,
            ack,
            flags,
            win,
            options,
            payload,
        })
    };
    let one = 1u32;
    vec![
        up(c, 0, SYN, 65535, c_opts, b""),
        down(s, c.wrapping_add(one), SYN | ACK, 65535, s_opts, b""),
        up(c.wrapping_add(1), s.wrapping_add(1), ACK, c_win, &[], b""),
        up(
            c.wrapping_add(1),
            s.wrapping_add(1),
            PSH | ACK,
            c_win,
            &[],
            b"hello",
        ),
        down(
            s.wrapping_add(1),
            c.wrapping_add(6),
            PSH | ACK,
            s_win,
            &[],
            b"HELLO",
        ),
        up(c.wrapping_add(6), s.wrapping_add(6), ACK, c_win, &[], b""),
        up(
            c.wrapping_add(6),
            s.wrapping_add(6),
            FIN | ACK,
            c_win,
            &[],
            b"",
        ),
        down(
            s.wrapping_add(6),
            c.wrapping_add(7),
            FIN | ACK,
            s_win,
            &[],
            b"",
        ),
        up(c.wrapping_add(7), s.wrapping_add(7), ACK, c_win, &[], b""),
    ]
}

fn expected_exchange(win: u32) -> Vec<(&'static str, &'static str, String)> {
    let (c, s) = ("10.0.2.2", "10.0.2.15");
    let (up, down) = ("(40000→12000)", "(12000→40000)");
    vec![
        (c, s, format!("SYN seq=0 ack=0 len=0 win=65535 {up}")),
        (
            s,
            c,
            format!("[SYN, ACK] seq=0 ack=1 len=0 win=65535 {down}"),
        ),
        (c, s, format!("ACK seq=1 ack=1 len=0 win={win} {up}")),
        (c, s, format!("[PSH, ACK] seq=1 ack=1 len=5 win={win} {up}")),
        (
            s,
            c,
            format!("[PSH, ACK] seq=1 ack=6 len=5 win={win} {down}"),
        ),
        (c, s, format!("ACK seq=6 ack=6 len=0 win={win} {up}")),
        (c, s, format!("[FIN, ACK] seq=6 ack=6 len=0 win={win} {up}")),
        (
            s,
            c,
            format!("[FIN, ACK] seq=6 ack=7 len=0 win={win} {down}"),
        ),
        (c, s, format!("ACK seq=7 ack=7 len=0 win={win} {up}")),
    ]
}

fn assert_exchange(packets: &[LadderPacket], first: usize, win: u32) {
    for (i, (src, dst, label)) in expected_exchange(win).into_iter().enumerate() {
        let p = &packets[first + i];
        assert_eq!(
            (p.src.as_str(), p.dst.as_str(), p.label.as_str()),
            (src, dst, label.as_str()),
            "packet {i}"
        );
        assert_eq!(p.mark, None, "packet {i}: {}", p.label);
    }
    assert_eq!(kinds(&packets[first..first + 9]), exchange_kinds());
}

fn labels(packets: &[LadderPacket]) -> Vec<&str> {
    packets.iter().map(|p| p.label.as_str()).collect()
}

fn marks(packets: &[LadderPacket]) -> Vec<Option<&str>> {
    packets.iter().map(|p| p.mark.as_deref()).collect()
}

/// The packets' kinds, with TCP payload lengths left out (these tests are about flags and copies; the
/// lengths are checked in the labels).
fn kinds(packets: &[LadderPacket]) -> Vec<PacketKind> {
    packets
        .iter()
        .map(|p| match p.kind {
            PacketKind::Tcp(segment) => PacketKind::Tcp(TcpSegment {
                payload: 0,
                ..segment
            }),
            kind => kind,
        })
        .collect()
}

/// The kind of a TCP segment with `flags` (as on the wire) that the tracker found to be `resend`.
fn tcp_kind(flags: u8, resend: Resend) -> PacketKind {
    PacketKind::Tcp(TcpSegment {
        syn: flags & SYN != 0,
        ack: flags & ACK != 0,
        fin: flags & FIN != 0,
        rst: flags & RST != 0,
        payload: 0,
        resend,
    })
}

/// The kinds of [`exchange`]'s packets: none sent twice.
fn exchange_kinds() -> Vec<PacketKind> {
    [
        SYN,
        SYN | ACK,
        ACK,
        PSH | ACK,
        PSH | ACK,
        ACK,
        FIN | ACK,
        FIN | ACK,
        ACK,
    ]
    .into_iter()
    .map(|flags| tcp_kind(flags, Resend::First))
    .collect()
}

// ---- Helpers the decoding, SVG and IPv6 tests share ----

/// A small well-formedness check: one root element, tags balanced and properly nested, attributes quoted
/// and unique, entities known, no characters XML forbids.
fn check_well_formed(xml: &str) -> Result<(), String> {
    fn check_text(text: &str) -> Result<(), String> {
        if let Some(c) = text
            .chars()
            .find(|&c| (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
        {
            return Err(format!("control character {:?} in {text:?}", c));
        }
        let mut rest = text;
        while let Some(at) = rest.find('&') {
            rest = &rest[at + 1..];
            let end = rest
                .find(';')
                .ok_or_else(|| format!("unterminated entity in {text:?}"))?;
            let entity = &rest[..end];
            let numeric = entity
                .strip_prefix('#')
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            if !numeric && !["amp", "lt", "gt", "quot", "apos"].contains(&entity) {
                return Err(format!("unknown entity &{entity}; in {text:?}"));
            }
        }
        Ok(())
    }
    let is_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
    };
    let mut rest = xml.trim_start();
    if let Some(r) = rest.strip_prefix("<?xml") {
        rest = &r[r.find("?>").ok_or("unterminated XML declaration")? + 2..];
    }
    let mut stack: Vec<&str> = Vec::new();
    let mut roots = 0;
    loop {
        let lt = rest.find('<');
        let text = &rest[..lt.unwrap_or(rest.len())];
        check_text(text)?;
        if stack.is_empty() && !text.trim().is_empty() {
            return Err(format!("text outside the root element: {text:?}"));
        }
        if text.contains('>') {
            return Err(format!("stray '>' in text {text:?}"));
        }
        let Some(lt) = lt else { break };
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<!--") {
            rest = &r[r.find("-->").ok_or("unterminated comment")? + 3..];
            continue;
        }
        if let Some(r) = rest.strip_prefix("</") {
            let end = r.find('>').ok_or("unterminated end tag")?;
            let name = r[..end].trim();
            match stack.pop() {
                Some(open) if open == name => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
            rest = &r[end + 1..];
            continue;
        }
        let body = &rest[1..];
        let mut quote = None;
        let mut end = None;
        for (i, c) in body.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), '<') | (None, '<') => {
                    return Err(format!("'<' inside a tag: {}", &body[..i]))
                }
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '>') => {
                    end = Some(i);
                    break;
                }
                (None, _) => {}
            }
        }
        let end = end.ok_or("unterminated tag")?;
        let inner = &body[..end];
        let self_closing = inner.ends_with('/');
        let inner = inner.strip_suffix('/').unwrap_or(inner);
        let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
        let name = &inner[..name_end];
        if !is_name(name) {
            return Err(format!("bad element name {name:?}"));
        }
        let mut attrs = inner[name_end..].trim_start();
        let mut seen = Vec::new();
        while !attrs.is_empty() {
            let eq = attrs
                .find('=')
                .ok_or_else(|| format!("attribute without value in <{name} {attrs}"))?;
            let attr = &attrs[..eq];
            if !is_name(attr) || seen.contains(&attr) {
                return Err(format!("bad or repeated attribute {attr:?} in <{name}>"));
            }
            seen.push(attr);
            let value = &attrs[eq + 1..];
            let q = value
                .chars()
                .next()
                .filter(|c| *c == '"' || *c == '\'')
                .ok_or("unquoted attribute")?;
            let close = value[1..].find(q).ok_or("unterminated attribute value")?;
            check_text(&value[1..1 + close])?;
            let after = &value[close + 2..];
            if !after.is_empty() && !after.starts_with(char::is_whitespace) {
                return Err(format!("no space after attribute {attr:?} in <{name}>"));
            }
            attrs = after.trim_start();
        }
        if stack.is_empty() {
            roots += 1;
        }
        if !self_closing {
            stack.push(name);
        }
        rest = &body[end + 1..];
    }
    match (roots, stack.last()) {
        (1, None) => Ok(()),
        (_, Some(open)) => Err(format!("<{open}> never closed")),
        (n, None) => Err(format!("{n} root elements")),
    }
}

/// Parses the document with Python's XML parser too, when python3 is there.
fn python_parses(svg: &str, name: &str) {
    let path = std::env::temp_dir().join(format!(
        "smoltalk-diagram-{}-{name}.svg",
        std::process::id()
    ));
    std::fs::write(&path, svg).unwrap();
    let result = std::process::Command::new("python3")
        .args([
            "-c",
            "import xml.etree.ElementTree as E,sys; E.parse(sys.argv[1])",
        ])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    match result {
        Err(e) => println!("python3 not run ({e}): the XML check by Python is skipped"),
        Ok(out) => assert!(
            out.status.success(),
            "python3 rejects the SVG: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The `<line class="packet" …/>` elements, as (data-index, x1, x2, the whole element).
fn packet_lines(svg: &str) -> Vec<(usize, f64, f64, &str)> {
    let attr = |line: &str, name: &str| -> String {
        let start = line.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        line[start..].split('"').next().unwrap().to_string()
    };
    svg.match_indices(r#"<line class="packet""#)
        .map(|(at, _)| {
            let line = &svg[at..at + svg[at..].find("/>").unwrap() + 2];
            let index = attr(line, "data-index").parse().unwrap();
            (
                index,
                attr(line, "x1").parse().unwrap(),
                attr(line, "x2").parse().unwrap(),
                line,
            )
        })
        .collect()
}

/// xorshift32: a fixed sequence of pseudo-random numbers.
fn rng(state: &mut u32) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    *state
}

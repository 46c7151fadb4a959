//! Reading a classic libpcap file: the file header, the link type, and the records, each handed to the
//! [`Decoder`](super::decode::Decoder).

use super::decode::Decoder;
use super::PcapLadder;

pub(super) const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_IPV4: u32 = 228;
/// Larger than any snapshot length a capture tool uses (tcpdump's largest is 262144).
const MAX_RECORD: usize = 262_144;

/// Reads a classic pcap file into ladder packets, with the count of skipped records by reason.
pub fn read_pcap(bytes: &[u8]) -> Result<PcapLadder, String> {
    let magic = bytes.get(..4).ok_or_else(|| {
        format!(
            "not a pcap file: {} bytes, shorter than a magic number",
            bytes.len()
        )
    })?;
    let (big_endian, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
        [0x0a, 0x0d, 0x0d, 0x0a] => {
            return Err(
                "a pcapng file, not a classic pcap; convert it with `editcap -F pcap IN OUT`"
                    .into(),
            )
        }
        _ => return Err(format!("not a pcap file: magic number {magic:02x?}")),
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    if bytes.len() < 24 {
        return Err(format!(
            "pcap file cut short: {} bytes, shorter than the 24-byte file header",
            bytes.len()
        ));
    }
    let link_type = u32_at(20).ok_or("pcap file header cut short")? & 0x0fff_ffff;
    if ![LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_IPV4].contains(&link_type) {
        return Err(format!(
            "pcap link type {link_type} not supported (only 1 Ethernet, 101 and 228 raw IPv4)"
        ));
    }

    let mut ladder = PcapLadder::default();
    let mut decoder = Decoder::default();
    let mut first_time: Option<i128> = None;
    let mut at = 24;
    while at < bytes.len() {
        ladder.records += 1;
        let index = ladder.records;
        let (Some(secs), Some(frac), Some(incl_len)) = (u32_at(at), u32_at(at + 4), u32_at(at + 8))
        else {
            *ladder
                .skipped
                .entry("truncated record at end of file".into())
                .or_default() += 1;
            break;
        };
        let incl_len = incl_len as usize;
        if incl_len > MAX_RECORD {
            return Err(format!(
                "pcap record {index} at byte {at}: captured length {incl_len} is more than any capture keeps; \
                 the file is damaged or not a pcap file"
            ));
        }
        let start = at + 16;
        let Some(data) = bytes.get(start..start + incl_len) else {
            *ladder
                .skipped
                .entry("truncated record at end of file".into())
                .or_default() += 1;
            break;
        };
        at = start + incl_len;

        // In integer nanoseconds first: an f64 of seconds since 1970 keeps only about 0.2 µs.
        let stamp =
            i128::from(secs) * 1_000_000_000 + i128::from(frac) * if nanos { 1 } else { 1000 };
        let time = (stamp - *first_time.get_or_insert(stamp)) as f64 / 1e9;
        match decoder.decode(link_type, data, time) {
            Ok(packet) => ladder.packets.push(packet),
            Err(reason) => *ladder.skipped.entry(reason.into()).or_default() += 1,
        }
    }
    decoder.finish(&mut ladder.packets);
    Ok(ladder)
}

//! One's-complement sums, as TCP, UDP and IP checksums are made of.

/// One's-complement sum of `data` as big-endian 16-bit words, not folded.
pub(super) fn sum(data: &[u8], mut acc: u64) -> u64 {
    let (chunks, rest) = data.as_chunks::<8>();
    for c in chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]))
            + u64::from(u16::from_be_bytes([c[2], c[3]]))
            + u64::from(u16::from_be_bytes([c[4], c[5]]))
            + u64::from(u16::from_be_bytes([c[6], c[7]]));
    }
    let (pairs, odd) = rest.as_chunks::<2>();
    for p in pairs {
        acc += u64::from(u16::from_be_bytes(*p));
    }
    if let Some(b) = odd.first() {
        acc += u64::from(u16::from_be_bytes([*b, 0]));
    }
    acc
}

pub(super) fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

//! The uppercase transform: ASCII `a`–`z` become `A`–`Z`; every other byte (upper case, digits, punctuation, NUL,
//! bytes ≥ 0x80) is returned exactly as it was.
//!
//! Written as branch-free byte arithmetic so the compiler vectorises the loops; on 64 KiB buffers it runs at
//! memory speed (see `BENCHMARKS.md`).

/// Uppercases one byte if it is ASCII `a`–`z`, and returns every other byte unchanged.
#[inline(always)]
pub const fn uppercase_byte(byte: u8) -> u8 {
    // Shift the byte so that `a`..=`z` lands on -128..=-103 as a signed byte: one signed comparison then finds
    // exactly the lower-case letters (SIMD units have signed byte compares, not unsigned ones), and the case
    // bit (0x20) is cleared for them.
    let shifted = byte.wrapping_add(0x80 - b'a') as i8;
    let is_lower = (shifted < i8::MIN + 26) as u8;
    byte ^ (is_lower << 5)
}

/// Uppercases `bytes` in place.
#[inline]
pub fn uppercase_in_place(bytes: &mut [u8]) {
    for byte in bytes.iter_mut() {
        *byte = uppercase_byte(*byte);
    }
}

/// Writes the uppercase form of `src` into the start of `dst` and returns how many bytes were written
/// (`min(src.len(), dst.len())`).
#[inline]
pub fn uppercase_into(src: &[u8], dst: &mut [u8]) -> usize {
    let len = src.len().min(dst.len());
    for (out, byte) in dst[..len].iter_mut().zip(&src[..len]) {
        *out = uppercase_byte(*byte);
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_byte_value() {
        for value in 0..=255u8 {
            let expected = if value.is_ascii_lowercase() {
                value - 32
            } else {
                value
            };
            assert_eq!(uppercase_byte(value), expected, "byte {value:#04x}");
        }
    }

    #[test]
    fn classic_sentence() {
        let mut text = *b"hello, World! 123 \x00\xe4\xff~";
        uppercase_in_place(&mut text);
        assert_eq!(&text, b"HELLO, WORLD! 123 \x00\xe4\xff~");
    }

    #[test]
    fn into_shorter_destination() {
        let mut dst = [0u8; 3];
        assert_eq!(uppercase_into(b"abcdef", &mut dst), 3);
        assert_eq!(&dst, b"ABC");
    }

    proptest! {
        /// The transform touches only `a`–`z`, maps them to `A`–`Z`, and keeps the length.
        #[test]
        fn touches_only_lowercase_ascii(input in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut out = input.clone();
            uppercase_in_place(&mut out);
            prop_assert_eq!(out.len(), input.len());
            for (before, after) in input.iter().zip(&out) {
                if before.is_ascii_lowercase() {
                    prop_assert_eq!(*after, before.to_ascii_uppercase());
                } else {
                    prop_assert_eq!(after, before);
                }
            }
            let mut copied = std::vec![0u8; input.len()];
            prop_assert_eq!(uppercase_into(&input, &mut copied), input.len());
            prop_assert_eq!(copied, out);
        }
    }
}

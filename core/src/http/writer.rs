//! [`HeadWriter`]: bytes appended to a fixed buffer the caller owns, failing with [`HeadTooLarge`] when it is
//! full. A leaf: every head and page the proxy writes goes through it.

use core::fmt;

/// A head did not fit the buffer it was written into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadTooLarge;

impl fmt::Display for HeadTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the head does not fit its buffer")
    }
}

impl From<fmt::Error> for HeadTooLarge {
    fn from(_: fmt::Error) -> HeadTooLarge {
        HeadTooLarge
    }
}

/// Appends bytes to a fixed buffer, failing (and keeping what fitted) when it is full.
#[derive(Debug)]
pub struct HeadWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> HeadWriter<'a> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> HeadWriter<'a> {
        HeadWriter { buf, len: 0 }
    }

    /// Appends `bytes`, or fails if they do not fit.
    // Never inlined: heads and pages call it from dozens of places, and each inlined copy cost a firmware
    // about 40 bytes of flash (1.1 KiB in all in the riscv64 example's lean,proxy build); a head is written
    // once per request, so the call costs nothing that matters.
    #[inline(never)]
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), HeadTooLarge> {
        let end = self.len.checked_add(bytes.len()).ok_or(HeadTooLarge)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(HeadTooLarge)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Appends `text`, or fails if it does not fit.
    pub fn push_str(&mut self, text: &str) -> Result<(), HeadTooLarge> {
        self.push(text.as_bytes())
    }

    /// Appends `n` in decimal (without `core::fmt`, which a firmware need not carry for this), or fails if it
    /// does not fit.
    pub fn push_decimal(&mut self, n: usize) -> Result<(), HeadTooLarge> {
        self.push_decimal_u64(n as u64)
    }

    /// Appends `n` in decimal (a length may not fit a `usize` on a 32-bit board).
    pub fn push_decimal_u64(&mut self, n: u64) -> Result<(), HeadTooLarge> {
        let (digits, len) = decimal(n);
        self.push(digits.get(digits.len() - len..).unwrap_or(&[]))
    }

    /// How many bytes are written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

/// `n`'s decimal digits, right-aligned in the array, and how many there are.
pub(crate) fn decimal(mut n: u64) -> ([u8; 20], usize) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    (digits, len)
}

impl fmt::Write for HeadWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_as_display_writes_them() {
        let mut buf = [0u8; 64];
        let mut out = HeadWriter::new(&mut buf);
        for n in [0, 7, 10, 404, 65535, usize::MAX] {
            out.push_decimal(n).unwrap();
            out.push(b",").unwrap();
        }
        let expected = std::format!("0,7,10,404,65535,{},", usize::MAX);
        assert_eq!(out.as_bytes(), expected.as_bytes());
        let mut small = [0u8; 2];
        let mut out = HeadWriter::new(&mut small);
        assert_eq!(out.push_decimal(404), Err(HeadTooLarge));
        assert!(out.is_empty());
    }
}

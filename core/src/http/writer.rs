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
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), HeadTooLarge> {
        let end = self.len.checked_add(bytes.len()).ok_or(HeadTooLarge)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(HeadTooLarge)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
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

impl fmt::Write for HeadWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

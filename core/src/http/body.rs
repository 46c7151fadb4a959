//! Message bodies as streams: where one ends, found without holding it.
//!
//! The proxy never buffers a body whole. It copies whatever has arrived, and a [`BodyTracker`] says how many of
//! those bytes still belong to the body, so that the byte after it (the next pipelined request, or nothing) is
//! left where it is. A chunked body is forwarded exactly as it came, chunk sizes and trailers included; the
//! tracker follows its grammar to find the last chunk:
//!
//! ```text
//! Size ─CRLF─▶ Data(n) ─CRLF─▶ Size ─ … ─▶ Size(0) ─CRLF─▶ Trailer ─ … ─▶ Trailer(empty line) ─▶ Done
//! ```
//!
//! Every line of that framing must end in CRLF (RFC 9112 §7.1). A bare LF or a bare CR anywhere in it (a size
//! line, after a chunk's data, in the last chunk or a trailer) is refused, as are control characters and folded
//! lines in trailers: a hop that reads a bare LF as a line end and a hop that skips two bytes after the data
//! without looking disagree on where the body ends, and a request can be smuggled in between.

use core::fmt;

/// How a message says where its body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body at all.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding: ends with a zero-size chunk and its trailer section.
    Chunked,
    /// Everything until the sender closes (responses only); the connection cannot be kept after it.
    UntilClose,
}

/// A chunked body that breaks the chunk grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk;

impl fmt::Display for BadChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed chunked body")
    }
}

/// Where a chunked body's reader is in the chunk grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex digits of a chunk size (`digits` so far).
    Size { size: u64, digits: u8 },
    /// After the size: an extension (`;name=value`) or spaces, up to the line end.
    SizeLine { size: u64 },
    /// After the size, spaces before an extension or the line end.
    SizeSpace { size: u64 },
    /// The CR of the size line; its LF must follow.
    SizeCr { size: u64 },
    /// Inside a chunk's data.
    Data { remaining: u64 },
    /// After a chunk's data: its CRLF.
    DataEnd { seen_cr: bool },
    /// At the start of a trailer line, or of the empty line that ends the body.
    TrailerStart { seen_cr: bool },
    /// Inside a trailer field line (`seen_cr`: its CR came, its LF must follow).
    TrailerLine { seen_cr: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracking {
    Length { remaining: u64 },
    Chunked(ChunkState),
    UntilClose,
    Done,
}

/// Follows one body as its bytes stream past, and says how many of them belong to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTracker {
    tracking: Tracking,
}

impl BodyTracker {
    /// A tracker at the start of a body framed by `framing`.
    pub fn new(framing: BodyFraming) -> BodyTracker {
        let tracking = match framing {
            BodyFraming::None | BodyFraming::Length(0) => Tracking::Done,
            BodyFraming::Length(remaining) => Tracking::Length { remaining },
            BodyFraming::Chunked => Tracking::Chunked(ChunkState::Size { size: 0, digits: 0 }),
            BodyFraming::UntilClose => Tracking::UntilClose,
        };
        BodyTracker { tracking }
    }

    /// Whether the whole body has gone past.
    pub fn is_done(&self) -> bool {
        self.tracking == Tracking::Done
    }

    /// Whether the body ends only when its sender closes (so a close is its normal end, not a truncation).
    pub fn ends_at_close(&self) -> bool {
        self.tracking == Tracking::UntilClose
    }

    /// At most how many more bytes can belong to the body (so a reader need not take more).
    pub fn limit(&self) -> usize {
        match self.tracking {
            Tracking::Length { remaining } => usize::try_from(remaining).unwrap_or(usize::MAX),
            Tracking::Done => 0,
            Tracking::Chunked(_) | Tracking::UntilClose => usize::MAX,
        }
    }

    /// Whether the body's end is found by counting bytes alone (a length, or the sender's close), so bytes can
    /// be moved without being looked at (for example with `splice`) and counted with
    /// [`BodyTracker::advance_unseen`].
    pub fn is_counted(&self) -> bool {
        matches!(
            self.tracking,
            Tracking::Length { .. } | Tracking::UntilClose
        )
    }

    /// Counts `n` bytes that went by unseen, at most [`BodyTracker::limit`]; returns how many were counted.
    /// A chunked body cannot be followed this way: nothing is counted.
    pub fn advance_unseen(&mut self, n: usize) -> usize {
        match &mut self.tracking {
            Tracking::Length { remaining } => {
                let taken = usize::try_from(*remaining).map_or(n, |r| r.min(n));
                *remaining -= taken as u64;
                if *remaining == 0 {
                    self.tracking = Tracking::Done;
                }
                taken
            }
            Tracking::UntilClose => n,
            Tracking::Chunked(_) | Tracking::Done => 0,
        }
    }

    /// Takes the next bytes of the stream and returns how many of them, from the start, belong to the body.
    /// Fewer than `input.len()` means the body ended inside `input`; the rest belongs to what follows.
    pub fn advance(&mut self, input: &[u8]) -> Result<usize, BadChunk> {
        match &mut self.tracking {
            Tracking::Done => Ok(0),
            Tracking::UntilClose => Ok(input.len()),
            Tracking::Length { remaining } => {
                let taken = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                *remaining -= taken as u64;
                if *remaining == 0 {
                    self.tracking = Tracking::Done;
                }
                Ok(taken)
            }
            Tracking::Chunked(state) => {
                let mut state = *state;
                let mut used = 0;
                while used < input.len() {
                    if let ChunkState::Data { remaining } = state {
                        // Skip the data in one step: only the framing is read byte by byte.
                        let n = usize::try_from(remaining)
                            .map_or(input.len() - used, |r| r.min(input.len() - used));
                        used += n;
                        state = match remaining - n as u64 {
                            0 => ChunkState::DataEnd { seen_cr: false },
                            remaining => ChunkState::Data { remaining },
                        };
                        continue;
                    }
                    let byte = input.get(used).copied().unwrap_or_default();
                    used += 1;
                    match step(state, byte)? {
                        Some(next) => state = next,
                        None => {
                            self.tracking = Tracking::Done;
                            return Ok(used);
                        }
                    }
                }
                self.tracking = Tracking::Chunked(state);
                Ok(used)
            }
        }
    }
}

/// One framing byte of a chunked body: the next state, or `None` once the final empty line has ended.
fn step(state: ChunkState, byte: u8) -> Result<Option<ChunkState>, BadChunk> {
    let next = match (state, byte) {
        (ChunkState::Size { size, digits }, b) if b.is_ascii_hexdigit() => {
            if digits >= 15 {
                return Err(BadChunk);
            }
            let value = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => b - b'A' + 10,
            };
            ChunkState::Size {
                size: size << 4 | u64::from(value),
                digits: digits + 1,
            }
        }
        (ChunkState::Size { digits: 0, .. }, _) => return Err(BadChunk),
        // After the size: optional spaces, then an extension or the line end (`1 2` is not a size).
        (ChunkState::Size { size, .. } | ChunkState::SizeSpace { size }, b' ' | b'\t') => {
            ChunkState::SizeSpace { size }
        }
        (ChunkState::Size { size, .. } | ChunkState::SizeSpace { size }, b';') => {
            ChunkState::SizeLine { size }
        }
        // The size line ends with CRLF and nothing else: a bare CR or a bare LF is where two parsers disagree.
        (
            ChunkState::Size { size, .. }
            | ChunkState::SizeSpace { size }
            | ChunkState::SizeLine { size },
            b'\r',
        ) => ChunkState::SizeCr { size },
        (ChunkState::SizeCr { size }, b'\n') => match size {
            0 => ChunkState::TrailerStart { seen_cr: false },
            remaining => ChunkState::Data { remaining },
        },
        (ChunkState::SizeLine { .. }, b) if is_field_byte(b) => state,
        (
            ChunkState::Size { .. }
            | ChunkState::SizeSpace { .. }
            | ChunkState::SizeLine { .. }
            | ChunkState::SizeCr { .. },
            _,
        ) => return Err(BadChunk),
        (ChunkState::DataEnd { seen_cr: false }, b'\r') => ChunkState::DataEnd { seen_cr: true },
        (ChunkState::DataEnd { seen_cr: true }, b'\n') => ChunkState::Size { size: 0, digits: 0 },
        (ChunkState::DataEnd { .. }, _) => return Err(BadChunk),
        (ChunkState::TrailerStart { seen_cr: false }, b'\r') => {
            ChunkState::TrailerStart { seen_cr: true }
        }
        (ChunkState::TrailerStart { seen_cr: true }, b'\n') => return Ok(None),
        // A trailer line that starts with a space or a tab folds the line before it (obsolete, and read two ways).
        (ChunkState::TrailerStart { seen_cr: false }, b)
            if is_field_byte(b) && b != b' ' && b != b'\t' =>
        {
            ChunkState::TrailerLine { seen_cr: false }
        }
        (ChunkState::TrailerStart { .. }, _) => return Err(BadChunk),
        (ChunkState::TrailerLine { seen_cr: false }, b'\r') => {
            ChunkState::TrailerLine { seen_cr: true }
        }
        (ChunkState::TrailerLine { seen_cr: true }, b'\n') => {
            ChunkState::TrailerStart { seen_cr: false }
        }
        (ChunkState::TrailerLine { seen_cr: false }, b) if is_field_byte(b) => state,
        (ChunkState::TrailerLine { .. }, _) => return Err(BadChunk),
        (ChunkState::Data { .. }, _) => state,
    };
    Ok(Some(next))
}

/// A byte that may stand in a chunk extension or a trailer field line: visible ASCII, space, tab, or obs-text
/// (RFC 9110 §5.5); never a control character, CR and LF included.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `piece` bytes and returns how many bytes belonged to the body.
    fn body_len(
        framing: BodyFraming,
        input: &[u8],
        piece: usize,
    ) -> Result<(usize, bool), BadChunk> {
        let mut tracker = BodyTracker::new(framing);
        let mut total = 0;
        for part in input.chunks(piece) {
            let n = tracker.advance(part)?;
            total += n;
            if n < part.len() {
                break;
            }
        }
        Ok((total, tracker.is_done()))
    }

    #[test]
    fn length_stops_at_the_length() {
        for piece in [1, 3, 100] {
            assert_eq!(
                body_len(BodyFraming::Length(5), b"helloGET /", piece),
                Ok((5, true))
            );
            assert_eq!(
                body_len(BodyFraming::Length(50), b"hello", piece),
                Ok((5, false))
            );
        }
        assert!(BodyTracker::new(BodyFraming::None).is_done());
        assert!(BodyTracker::new(BodyFraming::Length(0)).is_done());
        assert_eq!(BodyTracker::new(BodyFraming::Length(7)).limit(), 7);
    }

    #[test]
    fn chunked_finds_the_end_in_any_split() {
        let body = b"4\r\nWiki\r\n5;ext=\"x\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n";
        let mut stream = body.to_vec();
        stream.extend_from_slice(b"GET / HTTP/1.1\r\n");
        for piece in 1..stream.len() {
            assert_eq!(
                body_len(BodyFraming::Chunked, &stream, piece),
                Ok((body.len(), true)),
                "piece {piece}"
            );
        }
    }

    #[test]
    fn chunked_without_trailers() {
        assert_eq!(
            body_len(BodyFraming::Chunked, b"0\r\n\r\nX", 64),
            Ok((5, true))
        );
        assert_eq!(
            body_len(BodyFraming::Chunked, b"a\r\n0123", 64),
            Ok((7, false))
        );
    }

    /// RFC 9112 §7.1: every framing line ends in CRLF. Each of these once passed with a bare LF or CR.
    #[test]
    fn bare_lf_and_bare_cr_in_chunked_framing_are_refused() {
        for bad in [
            // LF after chunk data (the smuggling shape: a back end that skips two bytes reads `40` as data).
            &b"5\r\nhello\n0\r\n\r\n"[..],
            b"5\r\nhello\n40\r\n\r\nGET /SMUGGLED HTTP/1.1\r\n\r\n0\r\n\r\n",
            // A size line ended by LF alone, with and without an extension or spaces.
            b"5\nhello\r\n0\r\n\r\n",
            b"5;a=b\nhello\r\n0\r\n\r\n",
            b"5 \nhello\r\n0\r\n\r\n",
            // The last chunk and the trailer section.
            b"5\r\nhello\r\n0\n\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"0\r\nX-T: 1\n\r\n",
            b"0\r\nX-T: 1\r\n\n",
            // An origin's response body, all LFs.
            b"2\nok\n0\n\n",
            // Bare CRs.
            b"5\rhello\r\n0\r\n\r\n",
            b"5\r\nhello\r0\r\n\r\n",
            b"0\r\nX-T: 1\rY\r\n\r\n",
            // Control characters and a folded line in trailers.
            b"0\r\nX-T: \x001\r\n\r\n",
            b"0\r\nX-T: 1\r\n folded\r\n\r\n",
        ] {
            for piece in [1, 2, 64] {
                assert_eq!(
                    body_len(BodyFraming::Chunked, bad, piece),
                    Err(BadChunk),
                    "{:?} in pieces of {piece}",
                    core::str::from_utf8(bad)
                );
            }
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"1\r\nAB\r\n",
            b"12345678901234567\r\n",
            b"0\r\n\rX",
            b"1\r\nA\rX",
        ] {
            assert_eq!(
                body_len(BodyFraming::Chunked, bad, 64),
                Err(BadChunk),
                "{:?}",
                core::str::from_utf8(bad)
            );
        }
    }

    #[test]
    fn unseen_bytes_are_counted_for_lengths_only() {
        let mut length = BodyTracker::new(BodyFraming::Length(10));
        assert!(length.is_counted());
        assert_eq!(length.advance_unseen(4), 4);
        assert_eq!(length.advance_unseen(100), 6);
        assert!(length.is_done());
        let mut chunked = BodyTracker::new(BodyFraming::Chunked);
        assert!(!chunked.is_counted());
        assert_eq!(chunked.advance_unseen(5), 0);
    }

    #[test]
    fn until_close_takes_everything() {
        let mut tracker = BodyTracker::new(BodyFraming::UntilClose);
        assert_eq!(tracker.advance(b"anything"), Ok(8));
        assert!(tracker.ends_at_close() && !tracker.is_done());
    }
}

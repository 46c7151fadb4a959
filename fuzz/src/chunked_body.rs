//! The body tracker: where a streamed body ends, fed the input in pieces the fuzzer chooses.
//!
//! The input picks a framing (chunked, by length, until close), the cut points, and either the stream itself or
//! the chunks of a well-formed chunked body followed by whatever comes after it. What must hold:
//! - no call claims more bytes than it was given, and a call that takes fewer has found the body's end;
//! - once the body has ended, nothing more belongs to it;
//! - the verdict (how long the body is and whether it ended, or that the chunk grammar is broken) is the same
//!   whether the stream comes whole, one byte at a time, or in the fuzzer's pieces;
//! - a body that ended is found from its own bytes alone, and one byte less is a body that has not ended;
//! - bytes counted unseen (for `splice`) give the same verdict as bytes looked at, where that is allowed;
//! - a well-formed chunked body is recognised exactly, with the bytes after it left alone, and the same body with
//!   one line ended by a bare LF, or a control character in a trailer, is refused (RFC 9112 §7.1).

use smoltalk_core::http::{BodyFraming, BodyTracker};

use super::input::Input;

/// The most cut points an input may ask for.
const MAX_CUTS: usize = 16;

/// What a tracker said about a whole stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The first `len` bytes belong to the body; `done`: the body ended there.
    Body {
        /// Bytes that belong to the body.
        len: usize,
        /// Whether the body ended.
        done: bool,
    },
    /// The chunk grammar is broken.
    Bad,
}

/// Feeds `stream` to a new tracker in the pieces between `cuts` (sorted positions) and checks each call.
pub fn feed(framing: BodyFraming, stream: &[u8], cuts: &[usize]) -> Verdict {
    let mut tracker = BodyTracker::new(framing);
    let mut total = 0;
    let mut start = 0;
    for end in cuts
        .iter()
        .copied()
        .chain([stream.len()])
        .map(|c| c.min(stream.len()))
    {
        if end < start {
            continue;
        }
        let piece = &stream[start..end];
        let limit = tracker.limit();
        let Ok(n) = tracker.advance(piece) else {
            return Verdict::Bad;
        };
        assert!(n <= piece.len(), "claimed {n} of {} bytes", piece.len());
        assert!(n <= limit, "claimed {n} bytes past its limit {limit}");
        total += n;
        if tracker.is_done() {
            assert_eq!(tracker.limit(), 0);
            assert_eq!(tracker.advance(&stream[start + n..]), Ok(0));
            return Verdict::Body {
                len: total,
                done: true,
            };
        }
        assert_eq!(
            n,
            piece.len(),
            "took {n} of {} bytes without ending",
            piece.len()
        );
        start = end;
    }
    Verdict::Body {
        len: total,
        done: false,
    }
}

/// The same as [`feed`] for a counted framing, with every piece counted unseen.
fn feed_unseen(framing: BodyFraming, stream: &[u8], cuts: &[usize]) -> Verdict {
    let mut tracker = BodyTracker::new(framing);
    let mut total = 0;
    let mut start = 0;
    for end in cuts.iter().copied().chain([stream.len()]) {
        let end = end.min(stream.len());
        if end < start || tracker.is_done() {
            continue;
        }
        let n = tracker.advance_unseen(end - start);
        assert!(n <= end - start);
        total += n;
        start = end;
    }
    Verdict::Body {
        len: total,
        done: tracker.is_done(),
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let ncuts = usize::from(input.byte()) % (MAX_CUTS + 1);
    let mut cuts: Vec<usize> = (0..ncuts).map(|_| usize::from(input.u16())).collect();
    match mode % 8 {
        0..=3 => {
            check(BodyFraming::Chunked, input.rest(), &mut cuts);
        }
        4 => {
            let length = u64::from(input.u16());
            check(BodyFraming::Length(length), input.rest(), &mut cuts);
        }
        5 => {
            check(BodyFraming::UntilClose, input.rest(), &mut cuts);
        }
        _ => well_formed(&mut input, &mut cuts),
    }
}

/// Checks every property that holds for any stream.
fn check(framing: BodyFraming, stream: &[u8], cuts: &mut [usize]) -> Verdict {
    for c in cuts.iter_mut() {
        *c %= stream.len() + 1;
    }
    cuts.sort_unstable();
    let whole = feed(framing, stream, &[]);
    let split = feed(framing, stream, cuts);
    assert_eq!(whole, split, "split at {cuts:?}");
    let bytewise: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(whole, feed(framing, stream, &bytewise), "byte by byte");
    if BodyTracker::new(framing).is_counted() {
        assert_eq!(whole, feed_unseen(framing, stream, cuts), "counted unseen");
    }
    if let Verdict::Body { len, done: true } = whole {
        assert_eq!(feed(framing, &stream[..len], &[]), whole, "its own bytes");
        if len > 0 {
            assert_eq!(
                feed(framing, &stream[..len - 1], &[]),
                Verdict::Body {
                    len: len - 1,
                    done: false
                },
                "one byte short"
            );
        }
    }
    whole
}

/// Builds a chunked body from the input, follows it with the rest, and checks it is found exactly when it is
/// well-formed, and refused when one of its lines ends in a bare LF or a trailer holds a control character.
fn well_formed(input: &mut Input<'_>, cuts: &mut [usize]) {
    let mut body = Vec::new();
    let mut bare_lf = false;
    let mut eol = |body: &mut Vec<u8>, bare: bool| match bare {
        true => {
            bare_lf = true;
            body.push(b'\n')
        }
        false => body.extend_from_slice(b"\r\n"),
    };
    for _ in 0..8 {
        let shape = input.byte();
        if shape & 0x0f == 0 {
            break;
        }
        let size = usize::from(input.byte()) + 1;
        match shape & 0x30 {
            0x00 => body.extend_from_slice(format!("{size:x}").as_bytes()),
            0x10 => body.extend_from_slice(format!("{size:X}").as_bytes()),
            0x20 => body.extend_from_slice(format!("{size:08x}").as_bytes()),
            _ => body.extend_from_slice(format!("{size:x} ;ext=\"a;b\"\t").as_bytes()),
        }
        eol(&mut body, shape & 0x40 != 0);
        let data = input.take(size);
        body.extend_from_slice(data);
        body.resize(body.len() + size - data.len(), b'0');
        eol(&mut body, shape & 0x80 != 0);
    }
    let last = input.byte();
    body.extend_from_slice(match last & 3 {
        0 => &b"0"[..],
        1 => b"000",
        2 => b"0;last",
        _ => b"0 ",
    });
    eol(&mut body, last & 4 != 0);
    let control = last & 0x20 != 0;
    for _ in 0..(last >> 3) % 4 {
        body.extend_from_slice(match control {
            true => b"X-Trailer: \x01value",
            false => b"X-Trailer: value",
        });
        eol(&mut body, last & 0x80 != 0);
    }
    eol(&mut body, last & 0x40 != 0);
    let len = body.len();
    body.extend_from_slice(input.rest());
    let verdict = check(BodyFraming::Chunked, &body, cuts);
    let broken = bare_lf || (control && !(last >> 3).is_multiple_of(4));
    match broken {
        true => assert_eq!(verdict, Verdict::Bad),
        false => assert_eq!(verdict, Verdict::Body { len, done: true }),
    }
}

//! [`Request`]: what the proxy keeps of a request once its head is parsed and its bytes are gone, and the checks
//! a parsed head must pass before the proxy looks for its origin.

use core::fmt::{self, Write};

use heapless::String;

use crate::http::body::BodyTracker;
use crate::http::request::Method;
use crate::http::rewrite::upstream_request;
use crate::http::writer::decimal;
use crate::http::{BodyFraming, HeadWriter, ProxyError, RequestHead};

use super::super::ProxyPolicy;

/// The longest request line kept for logs, in bytes; a longer one is cut to its first 253 bytes (at a character
/// boundary) and ends in `…`, on every design. With `log` compiled out
/// (`log/max_level_off`, as a lean firmware builds), nothing is kept: the line is for logs only.
pub const LOG_LINE: usize = match log::STATIC_MAX_LEVEL {
    log::LevelFilter::Off => 0,
    _ => 256,
};

/// The longest host name (RFC 1035's 253 characters; the parser refuses longer ones).
pub const MAX_HOST: usize = 253;

/// What ends a request line cut for the log.
const CUT: &str = "…";

/// A request line as the logs show it, cut at [`LOG_LINE`] bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestLine(String<LOG_LINE>);

impl RequestLine {
    /// `head`'s request line.
    pub fn of(head: &RequestHead<'_, '_>) -> RequestLine {
        if LOG_LINE == 0 {
            return RequestLine(String::new());
        }
        // As `head`'s `Display` writes it, piece by piece (no `core::fmt` machinery for a firmware to carry).
        let mut line = Cut(String::new(), false);
        let (digits, len) = decimal(u64::from(head.minor_version));
        let minor =
            core::str::from_utf8(digits.get(digits.len() - len..).unwrap_or(&[])).unwrap_or("");
        for piece in [
            head.method.as_str(),
            " ",
            head.raw_target,
            " HTTP/1.",
            minor,
        ] {
            let _ = line.write_str(piece);
        }
        if line.1 {
            // Room for the marker (three bytes in UTF-8): drop characters until it fits.
            while line.0.len() > LOG_LINE.saturating_sub(CUT.len()) {
                line.0.pop();
            }
            let _ = line.0.push_str(CUT);
        }
        RequestLine(line.0)
    }

    /// The line.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for RequestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `fmt::Write` that keeps what fits, character by character, and remembers whether anything was cut.
struct Cut(String<LOG_LINE>, bool);

impl Write for Cut {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                self.1 = true;
                return Ok(());
            }
        }
        Ok(())
    }
}

/// What the proxy keeps of the request it is serving.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// Whether the client wants its connection kept after the response.
    pub keep_alive: bool,
    /// The origin's host, as the request named it (a name or an address literal).
    pub host: String<MAX_HOST>,
    /// The origin's port.
    pub port: u16,
    /// The request line, for logs.
    pub line: RequestLine,
    /// Where the request body ends, as it streams to the origin.
    pub body: BodyTracker,
    /// Whether the request has a body at all (a request with one is never sent twice).
    pub has_body: bool,
    /// Whether the client waits for `100 Continue` before it sends its body.
    pub expects_continue: bool,
}

impl Request {
    /// Keeps what the proxy needs of `head`. `None` only for a host longer than [`MAX_HOST`], which the parser
    /// already refuses.
    pub fn keep(head: &RequestHead<'_, '_>) -> Option<Request> {
        let authority = head.target.authority();
        Some(Request {
            method: head.method,
            minor_version: head.minor_version,
            keep_alive: head.keep_alive,
            host: String::try_from(authority.host).ok()?,
            port: authority.port,
            line: RequestLine::of(head),
            body: BodyTracker::new(head.framing),
            has_body: head.framing != BodyFraming::None,
            expects_continue: head.expects_continue(),
        })
    }

    /// The checks a parsed head must pass (a loop through this proxy: 508; a tunnel to a port not allowed: 403),
    /// then the head to send the origin, written into `out` (431 if it does not fit). Returns its length (0 for
    /// `CONNECT`, which sends the origin no head).
    pub fn check_and_rewrite(
        head: &RequestHead<'_, '_>,
        policy: &ProxyPolicy<'_>,
        out: &mut [u8],
    ) -> Result<usize, ProxyError> {
        if head.came_through(policy.pseudonym) {
            return Err(ProxyError::Loop);
        }
        if head.method == Method::Connect {
            policy.check_connect_port(head.target.authority().port)?;
            return Ok(0);
        }
        let mut writer = HeadWriter::new(out);
        upstream_request(head, policy.pseudonym, true, &mut writer)
            .map_err(|_| ProxyError::HeadTooLarge)?;
        Ok(writer.len())
    }

    /// Whether this is a `CONNECT` tunnel.
    pub fn is_tunnel(&self) -> bool {
        self.method == Method::Connect
    }
}

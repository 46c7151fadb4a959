//! [`ProxyError`]: every way the proxy refuses or fails a request, and the small HTML page it answers with.
//!
//! The answer is written piece by piece rather than with `core::fmt`, which a firmware that runs the proxy then
//! need not carry for it.

use core::fmt;

use super::writer::{HeadTooLarge, HeadWriter};

/// The methods the proxy forwards, as an `Allow` field lists them (its `405`; its answer to `OPTIONS` with
/// `Max-Forwards: 0` says the same, see [`super::rewrite::OPTIONS_ANSWER`]).
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT";

/// The HTML page's fixed pieces, around its status line (twice) and its sentence.
const PAGE: [&[u8]; 4] = [
    b"<!DOCTYPE html>\n<html><head><title>",
    b"</title></head>\n<body><h1>",
    b"</h1>\n<p>",
    b".</p>\n<hr><address>smoltalk proxy</address></body></html>\n",
];

/// Why the proxy answers a request itself instead of forwarding the origin's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The request head is not HTTP/1.x (400).
    MalformedHead,
    /// The request target or `Host` cannot name an origin (400).
    BadTarget,
    /// A chunked request body broke the chunk grammar (400).
    MalformedBody,
    /// The client's address is not in the allowed list (403).
    ClientNotAllowed,
    /// The origin's address is not in the allowed destinations (403).
    DestinationNotAllowed,
    /// `CONNECT` to a port not in the allowed list (403).
    ConnectPortNotAllowed,
    /// The client did not send a whole request head in time (408).
    HeadTimeout,
    /// The request line alone is longer than the head buffer (414).
    UriTooLong,
    /// The request head is longer than the head buffer, or has too many header lines (431).
    HeadTooLarge,
    /// A method the proxy does not forward (501).
    UnsupportedMethod,
    /// `TRACE` with `Max-Forwards: 0`: addressed to the proxy, which does not echo requests (405, with the
    /// methods it does take in `Allow`).
    TraceNotAllowed,
    /// A request body in a transfer coding other than chunked (501).
    UnsupportedTransferCoding,
    /// An absolute URI with a scheme other than `http` (400: RFC 9112 §3.2.2 lets a proxy forward only what it
    /// can reach, and a `https://` target without CONNECT is a client error, not a missing feature).
    UnsupportedScheme,
    /// An HTTP version other than 1.0 and 1.1 (505).
    UnsupportedVersion,
    /// The origin refused the connection (502).
    OriginRefused,
    /// The origin's name did not resolve (502).
    OriginUnresolvable,
    /// The origin reset or closed the connection before its response was whole (502).
    OriginReset,
    /// The origin's response head is not HTTP, or frames its body in a way the proxy cannot read as one (502).
    BadOriginResponse,
    /// The origin's response head is larger than the proxy takes ([`Limits::response_head`], or has more
    /// fields than fit) (502).
    ///
    /// [`Limits::response_head`]: crate::proxy::Limits::response_head
    OriginHeadTooLarge,
    /// Every proxy connection is in use (503).
    AtCapacity,
    /// The origin did not accept the connection, or did not answer, in time (504).
    OriginTimeout,
    /// The request names the proxy itself, or already passed through it (508).
    Loop,
}

impl ProxyError {
    /// The HTTP status code of the answer.
    pub fn status(self) -> u16 {
        self.status_line().0
    }

    /// The standard reason phrase of [`ProxyError::status`].
    pub fn reason(self) -> &'static str {
        self.status_line().1
    }

    /// The status code and its reason phrase, decided per variant in this one place.
    fn status_line(self) -> (u16, &'static str) {
        const BAD_REQUEST: (u16, &str) = (400, "Bad Request");
        const FORBIDDEN: (u16, &str) = (403, "Forbidden");
        const NOT_IMPLEMENTED: (u16, &str) = (501, "Not Implemented");
        const BAD_GATEWAY: (u16, &str) = (502, "Bad Gateway");
        match self {
            ProxyError::MalformedHead => BAD_REQUEST,
            ProxyError::BadTarget => BAD_REQUEST,
            ProxyError::MalformedBody => BAD_REQUEST,
            ProxyError::UnsupportedScheme => BAD_REQUEST,
            ProxyError::ClientNotAllowed => FORBIDDEN,
            ProxyError::DestinationNotAllowed => FORBIDDEN,
            ProxyError::ConnectPortNotAllowed => FORBIDDEN,
            ProxyError::HeadTimeout => (408, "Request Timeout"),
            ProxyError::UriTooLong => (414, "URI Too Long"),
            ProxyError::HeadTooLarge => (431, "Request Header Fields Too Large"),
            ProxyError::UnsupportedMethod => NOT_IMPLEMENTED,
            ProxyError::TraceNotAllowed => (405, "Method Not Allowed"),
            ProxyError::UnsupportedTransferCoding => NOT_IMPLEMENTED,
            ProxyError::UnsupportedVersion => (505, "HTTP Version Not Supported"),
            ProxyError::OriginRefused => BAD_GATEWAY,
            ProxyError::OriginUnresolvable => BAD_GATEWAY,
            ProxyError::OriginReset => BAD_GATEWAY,
            ProxyError::BadOriginResponse => BAD_GATEWAY,
            ProxyError::OriginHeadTooLarge => BAD_GATEWAY,
            ProxyError::AtCapacity => (503, "Service Unavailable"),
            ProxyError::OriginTimeout => (504, "Gateway Timeout"),
            ProxyError::Loop => (508, "Loop Detected"),
        }
    }

    /// Writes the whole answer: status line, headers (always `Connection: close`) and the HTML page.
    pub fn write_response(self, out: &mut HeadWriter<'_>) -> Result<(), HeadTooLarge> {
        let (code, reason, sentence) = (self.code(), self.reason(), self.sentence());
        out.push(b"HTTP/1.1 ")?;
        out.push(&code)?;
        out.push(b" ")?;
        out.push_str(reason)?;
        out.push(b"\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: ")?;
        // The page's length, counted rather than written twice: its fixed pieces, the status line twice (a
        // code is three digits) and the sentence.
        let fixed: usize = PAGE.iter().map(|piece| piece.len()).sum();
        out.push_decimal(fixed + 2 * (code.len() + 1 + reason.len()) + sentence.len())?;
        out.push(b"\r\nConnection: close\r\n")?;
        match self {
            ProxyError::AtCapacity => out.push(b"Retry-After: 1\r\n")?,
            ProxyError::TraceNotAllowed => {
                out.push(b"Allow: ")?;
                out.push_str(ALLOWED_METHODS)?;
                out.push(b"\r\n")?;
            }
            _ => {}
        }
        out.push(b"\r\n")?;
        let [open, title_end, heading_end, end] = PAGE;
        for piece in [
            open,
            &code,
            b" ",
            reason.as_bytes(),
            title_end,
            &code,
            b" ",
            reason.as_bytes(),
            heading_end,
            sentence.as_bytes(),
            end,
        ] {
            out.push(piece)?;
        }
        Ok(())
    }

    /// The status code's three digits.
    fn code(self) -> [u8; 3] {
        let n = self.status();
        [
            b'0' + (n / 100 % 10) as u8,
            b'0' + (n / 10 % 10) as u8,
            b'0' + (n % 10) as u8,
        ]
    }

    /// One sentence for a person (also the text of the HTML page). Without the crate's `explain` feature (a
    /// board short of flash: the sentences are a kilobyte) the reason phrase stands in for it.
    fn sentence(self) -> &'static str {
        #[cfg(not(feature = "explain"))]
        return self.reason();
        #[cfg(feature = "explain")]
        match self {
            ProxyError::MalformedHead => "The request head is not valid HTTP/1.1",
            ProxyError::BadTarget => "The request target does not name an origin server",
            ProxyError::MalformedBody => "The chunked request body is malformed",
            ProxyError::ClientNotAllowed => "Your address may not use this proxy",
            ProxyError::DestinationNotAllowed => "The proxy may not connect to that address",
            ProxyError::ConnectPortNotAllowed => "The proxy does not tunnel to that port",
            ProxyError::HeadTimeout => "The request head did not arrive in time",
            ProxyError::UriTooLong => "The request line is longer than the proxy accepts",
            ProxyError::HeadTooLarge => "The request head is larger than the proxy accepts",
            ProxyError::UnsupportedMethod => "The proxy does not forward that method",
            ProxyError::TraceNotAllowed => "The proxy does not answer TRACE requests itself",
            ProxyError::UnsupportedTransferCoding => {
                "The proxy does not forward that transfer coding"
            }
            ProxyError::UnsupportedScheme => {
                "The proxy forwards only http:// URIs (use CONNECT for TLS)"
            }
            ProxyError::UnsupportedVersion => "The proxy speaks only HTTP/1.0 and HTTP/1.1",
            ProxyError::OriginRefused => "The origin server refused the connection",
            ProxyError::OriginUnresolvable => "The origin server's name does not resolve",
            ProxyError::OriginReset => {
                "The origin server closed the connection before its response was complete"
            }
            ProxyError::BadOriginResponse => "The origin server's response is not valid HTTP",
            ProxyError::OriginHeadTooLarge => {
                "The origin server's response head is larger than the proxy accepts"
            }
            ProxyError::AtCapacity => "Every proxy connection is in use; try again shortly",
            ProxyError::OriginTimeout => "The origin server did not answer in time",
            ProxyError::Loop => "The request would loop through this proxy",
        }
    }
}

/// One sentence for a person (also the text of the HTML page).
impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sentence())
    }
}

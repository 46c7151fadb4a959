//! Request heads: what a client asks the proxy for.
//!
//! [`RequestHead::parse`] runs `httparse` over the bytes received so far and, once the head is whole, types it:
//! the [`Method`], the [`RequestTarget`] in one of its three forms, the body's [`BodyFraming`] and whether the
//! client wants to keep the connection. It borrows everything from the caller's buffer.

use core::fmt;

use httparse::{Header, Status};

use super::body::BodyFraming;
use super::headers::{has_token, parse_decimal, tokens, trim, FramingError, FramingHeaders};
use super::status::ProxyError;

/// The methods the proxy forwards. Anything else is answered with 501.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`: the response has no body, whatever its headers say.
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// `CONNECT host:port`: a byte tunnel, answered by the proxy itself.
    Connect,
}

impl Method {
    /// The method named by `token` (case-sensitive, as HTTP methods are), if the proxy forwards it.
    pub fn from_token(token: &str) -> Option<Method> {
        Some(match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "CONNECT" => Method::Connect,
            _ => return None,
        })
    }

    /// Whether sending the request twice has the effect of sending it once (RFC 9110 §9.2.2), so that a proxy
    /// may send it again when a connection failed before any response came.
    pub fn is_idempotent(self) -> bool {
        match self {
            Method::Get | Method::Head | Method::Put | Method::Delete | Method::Options => true,
            Method::Post | Method::Patch | Method::Connect => false,
        }
    }

    /// The method's token.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Connect => "CONNECT",
        }
    }
}

/// A host and port the proxy is asked to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'b> {
    /// A DNS name or an address literal (an IPv6 literal without its brackets).
    pub host: &'b str,
    /// The port (80 when the request gave none, except for CONNECT, which must give one).
    pub port: u16,
}

impl<'b> Authority<'b> {
    /// Parses `host[:port]` (or `[v6]:port`). Userinfo (`user@`), empty hosts, and characters that cannot be in
    /// a host name are refused.
    pub fn parse(text: &'b str, default_port: Option<u16>) -> Result<Authority<'b>, ProxyError> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or(ProxyError::BadTarget)?;
            if host.is_empty()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return Err(ProxyError::BadTarget);
            }
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or(ProxyError::BadTarget)?),
                ),
            }
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        // Only a bracketed literal (its characters checked above) may hold colons: unbracketed, `a:b:80` or
        // `user:pw@host:80` would pass as a host.
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && (text.starts_with('[')
                || host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
        if !host_ok {
            return Err(ProxyError::BadTarget);
        }
        let port = match port {
            Some(p) => match super::headers::parse_decimal(p.as_bytes()) {
                Some(n @ 1..=65535) => n as u16,
                _ => return Err(ProxyError::BadTarget),
            },
            None => default_port.ok_or(ProxyError::BadTarget)?,
        };
        Ok(Authority { host, port })
    }
}

impl fmt::Display for Authority<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The request target, in the three forms a forward proxy meets (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestTarget<'b> {
    /// `http://host[:port]/path?query`: what a client configured to use a proxy sends.
    Absolute {
        /// The origin to connect to.
        authority: Authority<'b>,
        /// The path and query without any fragment: `/` when the URI had neither, `?query` when it had only a
        /// query (written as `/?query`).
        path: &'b str,
    },
    /// `host:port`, only with `CONNECT`.
    Authority(Authority<'b>),
    /// `/path?query` (or `*` for `OPTIONS`), for the origin named by the `Host` header.
    Origin {
        /// The origin, from `Host`.
        authority: Authority<'b>,
        /// The path and query as sent.
        path: &'b str,
    },
}

impl<'b> RequestTarget<'b> {
    /// The origin (or tunnel end) the proxy must connect to.
    pub fn authority(&self) -> Authority<'b> {
        match *self {
            RequestTarget::Absolute { authority, .. }
            | RequestTarget::Authority(authority)
            | RequestTarget::Origin { authority, .. } => authority,
        }
    }

    /// The path and query to send the origin (origin-form); empty for a tunnel.
    pub fn path(&self) -> &'b str {
        match *self {
            RequestTarget::Absolute { path, .. } | RequestTarget::Origin { path, .. } => path,
            RequestTarget::Authority(_) => "",
        }
    }
}

/// A whole request head, typed. Borrows the header array and the bytes it was parsed from.
#[derive(Debug)]
pub struct RequestHead<'h, 'b> {
    /// The method.
    pub method: Method,
    /// Where the request goes.
    pub target: RequestTarget<'b>,
    /// The target exactly as the client wrote it (for logs).
    pub raw_target: &'b str,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    /// Every header line, in order.
    pub headers: &'h [Header<'b>],
    /// How many bytes of the buffer the head took (the body, or the next request, starts here).
    pub head_len: usize,
    /// How the request body is framed ([`BodyFraming::None`] for a request without one).
    pub framing: BodyFraming,
    /// Whether the client wants the connection kept open after the response.
    pub keep_alive: bool,
}

impl<'h, 'b> RequestHead<'h, 'b> {
    /// Parses the start of `buf`. `Ok(None)` means the head is not whole yet: read more, or if `buf` is already
    /// full, answer with [`RequestHead::incomplete_error`].
    pub fn parse(
        buf: &'b [u8],
        headers: &'h mut [Header<'b>],
    ) -> Result<Option<RequestHead<'h, 'b>>, ProxyError> {
        let mut request = httparse::Request::new(headers);
        let head_len = match request.parse(buf) {
            Ok(Status::Complete(n)) => n,
            Ok(Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(ProxyError::HeadTooLarge),
            Err(httparse::Error::Version) => return Err(version_error(buf)),
            Err(_) => return Err(ProxyError::MalformedHead),
        };
        let (Some(method), Some(raw_target), Some(minor_version)) =
            (request.method, request.path, request.version)
        else {
            return Err(ProxyError::MalformedHead);
        };
        let headers: &'h [Header<'b>] = request.headers;
        let Some(method) = Method::from_token(method) else {
            // A TRACE with `Max-Forwards: 0` is addressed to the proxy, which refuses the method (405); any other
            // TRACE is one it does not forward (501).
            let to_proxy = method == "TRACE" && max_forwards(headers) == Ok(Some(0));
            return Err(match to_proxy {
                true => ProxyError::TraceNotAllowed,
                false => ProxyError::UnsupportedMethod,
            });
        };
        let target = parse_target(method, raw_target, headers)?;
        let framing_headers = FramingHeaders::read(headers).map_err(|e| match e {
            FramingError::Invalid => ProxyError::MalformedHead,
            FramingError::UnknownCoding => ProxyError::UnsupportedTransferCoding,
        })?;
        let framing = request_framing(method, &framing_headers)?;
        if method == Method::Options {
            max_forwards(headers).map_err(|()| ProxyError::MalformedHead)?;
        }
        // HTTP/1.0 has no transfer codings: a 1.0 request that names one is framed by something other than
        // what the origin will read (RFC 9112 §6.1).
        if minor_version == 0
            && headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        {
            return Err(ProxyError::MalformedHead);
        }
        let keep_alive = if minor_version >= 1 {
            !has_token(headers, "connection", "close")
                && !has_token(headers, "proxy-connection", "close")
        } else {
            has_token(headers, "connection", "keep-alive")
                || has_token(headers, "proxy-connection", "keep-alive")
        };
        Ok(Some(RequestHead {
            method,
            target,
            raw_target,
            minor_version,
            headers,
            head_len,
            framing,
            keep_alive,
        }))
    }

    /// The error for a head that did not fit in `buf`: 414 if even the request line did not end, else 431.
    pub fn incomplete_error(buf: &[u8]) -> ProxyError {
        let start = buf
            .iter()
            .position(|b| !matches!(b, b'\r' | b'\n'))
            .unwrap_or(buf.len());
        match buf.get(start..).is_some_and(|line| line.contains(&b'\n')) {
            true => ProxyError::HeadTooLarge,
            false => ProxyError::UriTooLong,
        }
    }

    /// Whether the request already passed through a proxy that calls itself `pseudonym` (a `Via` entry with
    /// that received-by name): forwarding it again would loop.
    pub fn came_through(&self, pseudonym: &str) -> bool {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("via"))
            .flat_map(|h| tokens(h.value))
            .any(|entry| {
                entry
                    .split(|b| matches!(b, b' ' | b'\t'))
                    .filter(|w| !w.is_empty())
                    .nth(1)
                    .is_some_and(|received_by| {
                        received_by.eq_ignore_ascii_case(pseudonym.as_bytes())
                    })
            })
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The framing fields as the proxy read them, for the one it writes in their place (read again: a head
    /// stays small, and it parsed, so they read the same).
    pub fn framing_headers(&self) -> FramingHeaders {
        FramingHeaders::read(self.headers).unwrap_or_default()
    }

    /// The `Max-Forwards` value, if the request is an `OPTIONS` that has one (RFC 9110 §7.6.2: `0` is for the
    /// proxy itself, anything else goes on one lower; other methods' go on as they came).
    pub fn max_forwards(&self) -> Option<u64> {
        match self.method {
            Method::Options => max_forwards(self.headers).ok().flatten(),
            _ => None,
        }
    }

    /// Whether the client sent `Expect: 100-continue` and waits for a go-ahead before its body.
    pub fn expects_continue(&self) -> bool {
        has_token(self.headers, "expect", "100-continue")
    }
}

/// The request line as a client sent it, for logs: `GET http://host/ HTTP/1.1`.
impl fmt::Display for RequestHead<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} HTTP/1.{}",
            self.method.as_str(),
            self.raw_target,
            self.minor_version
        )
    }
}

/// The first `Max-Forwards` field's value (RFC 9110 §7.6.2: one decimal number); `Err` if it is not one.
// One copy for its three callers (flash on a board).
#[inline(never)]
fn max_forwards(headers: &[Header<'_>]) -> Result<Option<u64>, ()> {
    match headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("max-forwards"))
    {
        Some(field) => parse_decimal(trim(field.value)).map(Some).ok_or(()),
        None => Ok(None),
    }
}

/// httparse reports anything after the target's space as a bad version. Only a well-formed `HTTP/x.y` that is
/// not 1.x is an unsupported version (505); anything else means the request line itself is broken (400).
fn version_error(buf: &[u8]) -> ProxyError {
    let start = buf
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buf.len());
    let rest = buf.get(start..).unwrap_or(&[]);
    let line = rest.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ');
    let (Some(_method), Some(_target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return ProxyError::MalformedHead;
    };
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            ProxyError::UnsupportedVersion
        }
        _ => ProxyError::MalformedHead,
    }
}

fn parse_target<'b>(
    method: Method,
    raw: &'b str,
    headers: &[Header<'b>],
) -> Result<RequestTarget<'b>, ProxyError> {
    if method == Method::Connect {
        return Authority::parse(raw, None).map(RequestTarget::Authority);
    }
    if let Some(rest) = strip_prefix_ignore_case(raw, "http://") {
        // (`split_at_checked`: the index is a character boundary, but the panicking split costs a board its
        // message-formatting code.)
        let (authority, path) = rest
            .find(['/', '?', '#'])
            .and_then(|i| rest.split_at_checked(i))
            .unwrap_or((rest, ""));
        let path = match path.split_once('#') {
            Some((p, _)) => p,
            None => path,
        };
        // An empty path is `/`; a bare query (`http://host?q`) keeps its query and gets the `/` when written.
        // ... except for OPTIONS, where an empty path asks about the whole server: `*` (RFC 9112 §3.2.4).
        let path = match (path.is_empty(), method) {
            (true, Method::Options) => "*",
            (true, _) => "/",
            (false, _) => path,
        };
        let authority = Authority::parse(authority, Some(80))?;
        return Ok(RequestTarget::Absolute { authority, path });
    }
    // An origin-form path may carry a URI in its query (`/login?next=https://...`): only a target that starts
    // with a scheme names one.
    // (A byte search: `str::contains` with a string pattern brings in a 1 KiB substring searcher.)
    if !raw.starts_with('/') && raw.as_bytes().windows(3).any(|w| w == b"://") {
        return Err(ProxyError::UnsupportedScheme);
    }
    if raw.starts_with('/') || (raw == "*" && method == Method::Options) {
        let mut hosts = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("host"));
        let (Some(host), None) = (hosts.next(), hosts.next()) else {
            // HTTP/1.0 allowed no Host, but a proxy cannot know where to go without one.
            return Err(ProxyError::BadTarget);
        };
        let host = core::str::from_utf8(super::headers::trim(host.value))
            .map_err(|_| ProxyError::BadTarget)?;
        let authority = Authority::parse(host, Some(80))?;
        return Ok(RequestTarget::Origin {
            authority,
            path: raw,
        });
    }
    Err(ProxyError::BadTarget)
}

fn strip_prefix_ignore_case<'b>(text: &'b str, prefix: &str) -> Option<&'b str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| text.get(prefix.len()..))
        .flatten()
}

/// How a request's body is framed (RFC 9112 §6.3): `Transfer-Encoding` ending in `chunked`, else
/// `Content-Length`, else none. Both at once is how requests are smuggled past one hop and into the next, and a
/// coding list that does not end in `chunked` leaves the body's end unknown: both are 400.
fn request_framing(method: Method, framing: &FramingHeaders) -> Result<BodyFraming, ProxyError> {
    match (framing.transfer_encoding, framing.content_length) {
        (None, _) if method == Method::Connect => Ok(BodyFraming::None),
        (None, None | Some(0)) => Ok(BodyFraming::None),
        (None, Some(n)) => Ok(BodyFraming::Length(n)),
        (Some(_), Some(_)) => Err(ProxyError::MalformedHead),
        (Some(codings), None) if codings.ends_chunked() => Ok(BodyFraming::Chunked),
        (Some(_), None) => Err(ProxyError::MalformedHead),
    }
}

//! The heads the proxy sends on, written into a caller's buffer by a [`HeadWriter`].
//!
//! Towards the origin a request goes in origin-form (`GET /path HTTP/1.1` with `Host`), and towards the client
//! a response goes as the origin sent it; both lose their hop-by-hop headers (the fixed list in
//! [`super::HOP_BY_HOP`] and any header that `Connection` names) and gain a `Via` naming this proxy. Every other
//! header keeps its name, value and order, except the framing fields (`Content-Length`, `Transfer-Encoding`):
//! the proxy writes the one it framed the body by itself, so the next hop cannot read the body another way, and
//! an `OPTIONS` request's `Max-Forwards`, which goes on one lower (RFC 9110 §7.6.2).
//!
//! Heads are written with [`HeadWriter::push`] and [`HeadWriter::push_decimal`] rather than `core::fmt`, which a
//! firmware that runs the proxy then need not carry for them.

use httparse::Header;

use super::headers::{is_framing, is_hop_by_hop, trim, FramingHeaders};
use super::request::{RequestHead, RequestTarget};
use super::response::ResponseHead;
use super::writer::{HeadTooLarge, HeadWriter};

/// Writes the request head to send the origin: origin-form in the client's HTTP version, `Host` first,
/// end-to-end headers in order, then `Via: 1.x <pseudonym>` and the connection's fate (`Connection: close`
/// unless `keep_alive`; `Connection: keep-alive` for an HTTP/1.0 request that keeps it).
pub fn upstream_request(
    head: &RequestHead<'_, '_>,
    pseudonym: &str,
    keep_alive: bool,
    out: &mut HeadWriter<'_>,
) -> Result<(), HeadTooLarge> {
    let path = head.target.path();
    let slash = if path.starts_with('?') { "/" } else { "" };
    // An HTTP/1.0 client's request goes on as HTTP/1.0, so the origin answers in a framing that client can
    // read (a chunked body would reach it as garbage).
    out.push_str(head.method.as_str())?;
    out.push(b" ")?;
    out.push_str(slash)?;
    out.push_str(path)?;
    out.push(b" HTTP/1.")?;
    out.push_decimal(usize::from(head.minor_version.min(1)))?;
    out.push(b"\r\n")?;
    match head.target {
        RequestTarget::Origin { .. } => {
            if let Some(host) = head.header("host") {
                out.push(b"Host: ")?;
                out.push(trim(host))?;
                out.push(b"\r\n")?;
            }
        }
        RequestTarget::Absolute { authority, .. } | RequestTarget::Authority(authority) => {
            let host = authority.host;
            let (open, close) = if host.contains(':') {
                ("[", "]")
            } else {
                ("", "")
            };
            out.push(b"Host: ")?;
            out.push_str(open)?;
            out.push_str(host)?;
            out.push_str(close)?;
            if authority.port != 80 {
                out.push(b":")?;
                out.push_decimal(usize::from(authority.port))?;
            }
            out.push(b"\r\n")?;
        }
    }
    let max_forwards = head.max_forwards();
    let skip: &[&str] = match max_forwards {
        Some(_) => &["host", "max-forwards"],
        None => &["host"],
    };
    end_to_end_headers(head.headers, skip, &head.framing_headers(), out)?;
    if let Some(n) = max_forwards {
        out.push(b"Max-Forwards: ")?;
        out.push_decimal_u64(n.saturating_sub(1))?;
        out.push(b"\r\n")?;
    }
    via(head.minor_version, pseudonym, out)?;
    match (keep_alive, head.minor_version) {
        (false, _) => out.push(b"Connection: close\r\n")?,
        (true, 0) => out.push(b"Connection: keep-alive\r\n")?,
        (true, _) => {}
    }
    out.push(b"\r\n")
}

/// Writes the response head to send the client: the origin's status and end-to-end headers, `Via`, and for a
/// final response the client connection's fate: `Connection: close` unless `keep_alive` (and
/// `Connection: keep-alive` for an HTTP/1.0 client that keeps it).
pub fn client_response(
    head: &ResponseHead<'_, '_>,
    pseudonym: &str,
    client_minor_version: u8,
    keep_alive: bool,
    out: &mut HeadWriter<'_>,
) -> Result<(), HeadTooLarge> {
    out.push(b"HTTP/1.1 ")?;
    out.push_decimal(usize::from(head.code))?;
    out.push(b" ")?;
    out.push_str(head.reason)?;
    out.push(b"\r\n")?;
    // Transfer-Encoding overrides Content-Length, which must go before the message is forwarded (RFC 9112
    // §6.3): the one framing field written is the one the body is read by.
    end_to_end_headers(head.headers, &[], &head.framing_headers(), out)?;
    via(head.minor_version, pseudonym, out)?;
    if !head.is_interim() {
        match (keep_alive, client_minor_version) {
            (false, _) => out.push(b"Connection: close\r\n")?,
            (true, 0) => out.push(b"Connection: keep-alive\r\n")?,
            (true, _) => {}
        }
    }
    out.push(b"\r\n")
}

/// The `200` that opens a `CONNECT` tunnel.
pub fn tunnel_established(pseudonym: &str, out: &mut HeadWriter<'_>) -> Result<(), HeadTooLarge> {
    out.push(b"HTTP/1.1 200 Connection established\r\n")?;
    via(1, pseudonym, out)?;
    out.push(b"\r\n")
}

/// The proxy's own answer to an `OPTIONS` request with `Max-Forwards: 0`, which is addressed to it (RFC 9110
/// §7.6.2): `200` with the methods it forwards in `Allow`, and the connection's close (as its other answers).
pub const OPTIONS_ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\nAllow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT\r\n\
    Content-Length: 0\r\nConnection: close\r\n\r\n";

/// `Via: 1.<minor_version> <pseudonym>` and its line end.
fn via(minor_version: u8, pseudonym: &str, out: &mut HeadWriter<'_>) -> Result<(), HeadTooLarge> {
    out.push(b"Via: 1.")?;
    out.push_decimal(usize::from(minor_version))?;
    out.push(b" ")?;
    out.push_str(pseudonym)?;
    out.push(b"\r\n")
}

/// Copies every header that is not hop-by-hop and not in `skip`, except the framing fields: where the first of
/// them stood, the one field `framing` says is written instead.
fn end_to_end_headers(
    headers: &[Header<'_>],
    skip: &[&str],
    framing: &FramingHeaders,
    out: &mut HeadWriter<'_>,
) -> Result<(), HeadTooLarge> {
    let connection = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .map(|h| h.value);
    let mut framing_written = false;
    for header in headers {
        if is_framing(header.name) {
            if !framing_written {
                framing.write(out)?;
                framing_written = true;
            }
            continue;
        }
        if skip.iter().any(|s| header.name.eq_ignore_ascii_case(s))
            || is_hop_by_hop(header.name, connection.clone())
        {
            continue;
        }
        out.push(header.name.as_bytes())?;
        out.push(b": ")?;
        out.push(header.value)?;
        out.push(b"\r\n")?;
    }
    Ok(())
}

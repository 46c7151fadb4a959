//! Response heads: what an origin answers, typed just enough to forward it and find where its body ends.

use core::fmt;

use httparse::{Header, Status};

use super::body::BodyFraming;
use super::headers::{has_token, FramingHeaders};
use super::request::Method;
use super::status::ProxyError;

/// A whole response head from an origin. Borrows the header array and the bytes it was parsed from.
#[derive(Debug)]
pub struct ResponseHead<'h, 'b> {
    /// The status code.
    pub code: u16,
    /// The reason phrase (may be empty).
    pub reason: &'b str,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    /// Every header line, in order.
    pub headers: &'h [Header<'b>],
    /// How many bytes of the buffer the head took; the body starts here.
    pub head_len: usize,
    /// How the body is framed, given the request it answers (a response to `HEAD` has none).
    pub framing: BodyFraming,
    /// Whether the origin will keep the connection open for another request after this response.
    pub keep_alive: bool,
}

impl<'h, 'b> ResponseHead<'h, 'b> {
    /// How many fields the head at the start of `buf` can have at most (its lines up to the empty one that ends
    /// it, or up to the end of `buf`): storage for that many in [`ResponseHead::parse`] takes any head.
    pub fn fields_in(buf: &[u8]) -> usize {
        buf.split(|&b| b == b'\n')
            .skip(1)
            .take_while(|line| !line.is_empty() && *line != b"\r")
            .count()
    }

    /// Parses the start of `buf` as the response to a `method` request, with room for `headers.len()` fields.
    /// `Ok(None)` means the head is not whole yet. A head with more fields is
    /// [`ProxyError::OriginHeadTooLarge`]; one that is not HTTP, whose framing is contradictory, or that switches
    /// protocols (101) is [`ProxyError::BadOriginResponse`].
    pub fn parse(
        buf: &'b [u8],
        headers: &'h mut [Header<'b>],
        method: Method,
    ) -> Result<Option<ResponseHead<'h, 'b>>, ProxyError> {
        let mut response = httparse::Response::new(headers);
        let head_len = match response.parse(buf) {
            Ok(Status::Complete(n)) => n,
            Ok(Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(ProxyError::OriginHeadTooLarge),
            Err(_) => return Err(ProxyError::BadOriginResponse),
        };
        let (Some(code), Some(minor_version)) = (response.code, response.version) else {
            return Err(ProxyError::BadOriginResponse);
        };
        // The proxy never forwards `Upgrade`, so an origin that switches protocols answers a question nobody
        // asked, and what follows on the connection would not be HTTP.
        if code == 101 {
            return Err(ProxyError::BadOriginResponse);
        }
        let reason = response.reason.unwrap_or("");
        let headers: &'h [Header<'b>] = response.headers;
        let bodiless =
            method == Method::Head || (100..200).contains(&code) || code == 204 || code == 304;
        // A framing header the proxy cannot read as one framing is not relayed in any form (RFC 9112 §6.3): it
        // fails a response with a body, and is dropped from one without (where it frames nothing).
        let framing_headers = match FramingHeaders::read(headers) {
            Ok(framing_headers) => framing_headers,
            Err(_) if bodiless => FramingHeaders::default(),
            Err(_) => return Err(ProxyError::BadOriginResponse),
        };
        let framing = if bodiless {
            BodyFraming::None
        } else {
            match (
                framing_headers.transfer_encoding,
                framing_headers.content_length,
            ) {
                (Some(codings), _) if codings.ends_chunked() => BodyFraming::Chunked,
                // Codings that do not end in `chunked`: the body ends when the origin closes.
                (Some(_), _) => BodyFraming::UntilClose,
                (None, Some(n)) => BodyFraming::Length(n),
                (None, None) => BodyFraming::UntilClose,
            }
        };
        let keep_alive = framing != BodyFraming::UntilClose
            && if minor_version >= 1 {
                !has_token(headers, "connection", "close")
            } else {
                has_token(headers, "connection", "keep-alive")
            };
        Ok(Some(ResponseHead {
            code,
            reason,
            minor_version,
            headers,
            head_len,
            framing,
            keep_alive,
        }))
    }

    /// The framing fields as the proxy read them, for the one it writes in their place: none for a response
    /// without a body whose fields do not read as one framing (they frame nothing).
    pub fn framing_headers(&self) -> FramingHeaders {
        FramingHeaders::read(self.headers).unwrap_or_default()
    }

    /// An interim response (`100 Continue`, `103 Early Hints`): a final one follows on the same exchange. (`101`
    /// never parses: see [`ResponseHead::parse`].)
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.code)
    }
}

/// The status line as the origin sent it, for logs: `HTTP/1.1 200 OK`.
impl fmt::Display for ResponseHead<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HTTP/1.{} {} {}",
            self.minor_version, self.code, self.reason
        )
    }
}

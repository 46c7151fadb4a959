//! Header fields as the proxy reads them: comma-separated tokens, hop-by-hop names, and the framing headers
//! (`Content-Length`, `Transfer-Encoding`). A leaf: it knows nothing of requests, responses or errors.

/// The most header lines a head may have; more is answered with 431.
pub const MAX_HEADERS: usize = 64;

/// The headers that describe one hop, never forwarded (RFC 9110 §7.6.1), besides those that `Connection` names.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Iterates over the comma-separated tokens of a header value, trimmed of spaces and tabs, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

/// `value` without leading and trailing spaces and tabs.
pub fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    value.get(start..end).unwrap_or(&[])
}

/// Whether a header named `name` must not be forwarded, given the message's `Connection` header values.
///
/// `Connection` cannot name `Content-Length` or `Transfer-Encoding` away: the body is forwarded as it is framed,
/// and without its framing header the next hop would read it as the next message.
pub fn is_hop_by_hop<'a>(
    name: &str,
    connection_values: impl Iterator<Item = &'a [u8]> + Clone,
) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || (!name.eq_ignore_ascii_case("content-length")
            && !name.eq_ignore_ascii_case("transfer-encoding")
            && connection_values
                .clone()
                .flat_map(tokens)
                .any(|t| t.eq_ignore_ascii_case(name.as_bytes())))
}

/// Whether any value of the headers named `name` holds `token` (case-insensitive), as in `Connection: close`.
pub fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| tokens(h.value))
        .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses a decimal number of at most 19 digits (no sign, no spaces).
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// The value of the decimal fields named `name` (`Content-Length`, `Max-Forwards`), if the message has any: `Err`
/// when a value is not a number (an empty one included) or the values disagree. A list of one number repeated
/// (`5, 5`, or two fields of `5`) is that number (RFC 9110 §8.6).
pub(crate) fn decimal_field(
    headers: &[httparse::Header<'_>],
    name: &str,
) -> Result<Option<u64>, ()> {
    let mut number = None;
    for field in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
        let mut values = 0;
        for value in tokens(field.value) {
            values += 1;
            let n = parse_decimal(value).ok_or(())?;
            match number {
                Some(previous) if previous != n => return Err(()),
                _ => number = Some(n),
            }
        }
        // An empty field is no number.
        if values == 0 {
            return Err(());
        }
    }
    Ok(number)
}

/// A transfer coding the proxy can frame and name again (RFC 9112 §7; `x-gzip` and `x-compress` are read as
/// the codings they alias).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `chunked`: the only coding that frames a body.
    Chunked,
    /// `gzip`
    Gzip,
    /// `deflate`
    Deflate,
    /// `compress`
    Compress,
}

impl Coding {
    /// The coding's registered name.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Chunked => "chunked",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Compress => "compress",
        }
    }
}

/// The most transfer codings a message may stack; more is not a message anyone sends.
const MAX_CODINGS: usize = 4;

/// The codings a message's `Transfer-Encoding` fields list, in order, read once from every such field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferCodings {
    codings: [Coding; MAX_CODINGS],
    len: u8,
}

impl TransferCodings {
    /// The codings in the order they were applied.
    pub fn iter(&self) -> impl Iterator<Item = Coding> + '_ {
        self.codings.iter().copied().take(usize::from(self.len))
    }

    /// Whether `chunked` is the last coding, so that it frames the body.
    pub fn ends_chunked(&self) -> bool {
        self.iter().last() == Some(Coding::Chunked)
    }
}

/// Why a message's framing headers cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// Something RFC 9112 does not allow: a `Content-Length` that is not one number, a `Transfer-Encoding` that
    /// is empty, names `chunked` twice, names `identity` (no longer a coding), stacks too many codings, or gives
    /// `chunked` parameters.
    Invalid,
    /// A transfer coding the proxy does not know.
    UnknownCoding,
}

/// A message's framing headers as the proxy read them. The proxy forwards neither field as it came: it writes
/// one of its own from this (see [`FramingHeaders::write`]), so two readers can never see two framings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FramingHeaders {
    /// The one number every `Content-Length` value gave.
    pub content_length: Option<u64>,
    /// The codings every `Transfer-Encoding` field listed.
    pub transfer_encoding: Option<TransferCodings>,
}

impl FramingHeaders {
    /// Reads every `Content-Length` and `Transfer-Encoding` field of `headers`.
    pub fn read(headers: &[httparse::Header<'_>]) -> Result<FramingHeaders, FramingError> {
        let content_length =
            decimal_field(headers, "content-length").map_err(|()| FramingError::Invalid)?;
        let mut codings = TransferCodings {
            codings: [Coding::Chunked; MAX_CODINGS],
            len: 0,
        };
        let mut present = false;
        for field in headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        {
            present = true;
            let before = codings.len;
            for token in tokens(field.value) {
                let coding = coding_named(token)?;
                if coding == Coding::Chunked && codings.iter().any(|c| c == Coding::Chunked) {
                    return Err(FramingError::Invalid);
                }
                let slot = codings
                    .codings
                    .get_mut(usize::from(codings.len))
                    .ok_or(FramingError::Invalid)?;
                *slot = coding;
                codings.len += 1;
            }
            // A field with no coding in it frames nothing it can be trusted with.
            if codings.len == before {
                return Err(FramingError::Invalid);
            }
        }
        Ok(FramingHeaders {
            content_length,
            transfer_encoding: present.then_some(codings),
        })
    }

    /// Writes the one framing field the next hop gets: `Transfer-Encoding` with the codings read, if there were
    /// any (a message with both fields is framed by `Transfer-Encoding`: RFC 9112 §6.3), else `Content-Length`,
    /// else nothing.
    pub fn write(&self, out: &mut super::HeadWriter<'_>) -> Result<(), super::HeadTooLarge> {
        if let Some(codings) = &self.transfer_encoding {
            out.push(b"Transfer-Encoding: ")?;
            for (i, coding) in codings.iter().enumerate() {
                if i > 0 {
                    out.push(b", ")?;
                }
                out.push_str(coding.name())?;
            }
            return out.push(b"\r\n");
        }
        if let Some(length) = self.content_length {
            out.push(b"Content-Length: ")?;
            out.push_decimal_u64(length)?;
            out.push(b"\r\n")?;
        }
        Ok(())
    }
}

/// Whether a header named `name` is a framing field (which the proxy writes itself).
pub fn is_framing(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding")
}

/// The coding `token` names (case-insensitive; no parameters).
fn coding_named(token: &[u8]) -> Result<Coding, FramingError> {
    const NAMES: [(&str, Coding); 6] = [
        ("chunked", Coding::Chunked),
        ("gzip", Coding::Gzip),
        ("x-gzip", Coding::Gzip),
        ("deflate", Coding::Deflate),
        ("compress", Coding::Compress),
        ("x-compress", Coding::Compress),
    ];
    NAMES
        .iter()
        .find(|(name, _)| token.eq_ignore_ascii_case(name.as_bytes()))
        .map(|&(_, coding)| coding)
        .ok_or_else(|| coding_error(token))
}

/// Why `token` is not a coding the proxy frames: `identity` and a `chunked` with parameters are not allowed at
/// all; anything else is unknown.
fn coding_error(token: &[u8]) -> FramingError {
    let name = token.split(|&b| b == b';').next().map(trim).unwrap_or(&[]);
    match name.eq_ignore_ascii_case(b"identity") || name.eq_ignore_ascii_case(b"chunked") {
        true => FramingError::Invalid,
        false => FramingError::UnknownCoding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_and_empty_ones_skipped() {
        let t: std::vec::Vec<&[u8]> = tokens(b" close ,, Keep-Alive\t,").collect();
        assert_eq!(t, [&b"close"[..], &b"Keep-Alive"[..]]);
        assert_eq!(trim(b"   "), b"");
    }

    #[test]
    fn decimal() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"1048576"), Some(1_048_576));
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"99999999999999999999"), None);
    }
}

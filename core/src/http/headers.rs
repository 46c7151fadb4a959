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

/// The message's `Content-Length`, if it has one: `Err` when the values are not numbers (an empty one included)
/// or disagree.
pub(crate) fn content_length(headers: &[httparse::Header<'_>]) -> Result<Option<u64>, ()> {
    let mut length = None;
    let fields = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    if fields.clone().any(|h| tokens(h.value).next().is_none()) {
        return Err(());
    }
    for value in fields.flat_map(|h| tokens(h.value)) {
        let n = parse_decimal(value).ok_or(())?;
        match length {
            Some(previous) if previous != n => return Err(()),
            _ => length = Some(n),
        }
    }
    Ok(length)
}

/// What the `Transfer-Encoding` headers say: absent, exactly `chunked`, or a coding this proxy cannot frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransferCoding {
    Absent,
    Chunked,
    /// Chunked last, after other codings (`gzip, chunked`): framed as chunked.
    ChunkedAfterOthers,
    /// The last coding is not `chunked`.
    Other,
}

pub(crate) fn transfer_coding(headers: &[httparse::Header<'_>]) -> TransferCoding {
    let mut codings = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|h| tokens(h.value));
    let Some(first) = codings.next() else {
        // A `Transfer-Encoding` header with no coding in it frames nothing it can be trusted with.
        return match headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        {
            true => TransferCoding::Other,
            false => TransferCoding::Absent,
        };
    };
    let mut count = 1;
    let mut last = first;
    for c in codings {
        count += 1;
        last = c;
    }
    match (last.eq_ignore_ascii_case(b"chunked"), count) {
        (true, 1) => TransferCoding::Chunked,
        (true, _) => TransferCoding::ChunkedAfterOthers,
        (false, _) => TransferCoding::Other,
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

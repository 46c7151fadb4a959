//! HTTP/1.x message heads and bodies, as a forward proxy sees them.
//!
//! Everything here works on byte slices the caller owns: nothing is copied, allocated or buffered whole.
//!
//! - [`request`]: parse a request head (with `httparse`) into a [`RequestHead`]: method, [`RequestTarget`],
//!   headers, body framing and whether the client wants the connection kept.
//! - [`response`]: the same for a response head from an origin ([`ResponseHead`]).
//! - [`body`]: [`BodyFraming`] and [`BodyTracker`], which finds where a streamed body ends
//!   (Content-Length or chunked) without holding any of it.
//! - [`headers`]: header fields as tokens, the hop-by-hop list, and the framing headers (a leaf module).
//! - [`writer`]: [`HeadWriter`], bytes appended to a fixed buffer the caller owns (a leaf module).
//! - [`rewrite`]: the heads the proxy sends on: origin-form requests without hop-by-hop headers and with `Via`,
//!   and responses the same way.
//! - [`status`]: [`ProxyError`], every way the proxy refuses or fails a request, with its status code and the
//!   small HTML page it answers with.
//!
//! The modules depend one way: `headers`, `writer` and `body` use none of the others; `status` uses `writer`;
//! `request` uses `headers`, `body` and `status`; `response` uses those and `request` (for the method);
//! `rewrite` uses `headers`, `writer` and the parsed heads of `request` and `response`.

pub mod body;
pub mod headers;
pub mod request;
pub mod response;
pub mod rewrite;
pub mod status;
pub mod writer;

pub use body::{BodyFraming, BodyTracker};
pub use headers::{has_token, is_hop_by_hop, tokens, trim, HOP_BY_HOP, MAX_HEADERS};
/// A header field as the parser hands it out, and an empty one to fill storage for fields with.
pub use httparse::{Header, EMPTY_HEADER};
pub use request::{Method, RequestHead, RequestTarget};
pub use response::ResponseHead;
pub use status::ProxyError;
pub use writer::{HeadTooLarge, HeadWriter};

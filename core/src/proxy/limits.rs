//! [`Limits`]: the one set of sizes and times every proxy design keeps to.

use smoltcp::time::Duration;

/// The proxy's limits. Every design reads them from here; none keeps its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest request or response head, in bytes. A request head that does not end within it is 414 (the
    /// request line did not end) or 431; a response head, 502.
    pub head: usize,
    /// The most client connections served at once; one more is answered 503.
    pub max_connections: usize,
    /// How long a client has to send a whole request head (else 408; between requests on a kept connection,
    /// silence this long is the normal end), an origin's name to resolve (else 502), an origin to accept the
    /// connection (else 504), and an exchange to make any progress (else 504 before the response started, a
    /// reset after).
    pub timeout: Duration,
    /// A tunnel with no byte either way for this long is closed.
    pub tunnel_idle: Duration,
    /// After the proxy's last byte to a client (an error page, a refusal, the end of a response it does not
    /// keep): how long what the client still sends is read and dropped before the connection is closed, so that
    /// unread bytes do not turn the close into a reset that destroys the answer before it is read.
    pub drain: Duration,
    /// How long a client that reads nothing may keep the proxy's answer, or a closing connection, waiting before
    /// the connection is reset.
    pub linger: Duration,
    /// How long an aborted connection's reset may take to go out before its socket is reused (a stack that
    /// forgets an unsent reset when the socket listens again, as smoltcp does).
    pub reset_grace: Duration,
    /// How long a design that cannot read the response while it sends the request body waits for an origin's
    /// `100 Continue` before it sends the body anyway (as curl does).
    pub continue_wait: Duration,
}

impl Limits {
    /// The defaults of `smoltalk proxy`: 8 KiB heads, 1,024 clients, 30 s.
    pub const DEFAULT: Limits = Limits {
        head: 8 * 1024,
        max_connections: 1024,
        timeout: Duration::from_secs(30),
        tunnel_idle: Duration::from_secs(300),
        drain: Duration::from_millis(500),
        linger: Duration::from_secs(60),
        reset_grace: Duration::from_secs(1),
        continue_wait: Duration::from_secs(1),
    };

    /// Room a rewritten head needs beyond [`Limits::head`]: the proxy adds `Via`, `Host` and `Connection`, and
    /// writes every header line as `name: value` CRLF (two bytes more than the shortest form a client may send).
    pub const fn head_growth(&self) -> usize {
        1024 + 2 * crate::http::MAX_HEADERS
    }

    /// The buffer a rewritten head (or an error page) must fit: [`Limits::head`] plus [`Limits::head_growth`].
    pub const fn out_buffer(&self) -> usize {
        self.head + self.head_growth()
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

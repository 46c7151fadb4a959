//! [`Limits`]: the one set of sizes and times every proxy design keeps to, and [`Drain`], the rule for how long
//! a closed client connection is still read.

use smoltcp::time::{Duration, Instant};

/// The proxy's limits. Every design reads them from here; none keeps its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest request head, in bytes. One that does not end within it is 414 (the request line did not
    /// end) or 431.
    pub head: usize,
    /// The longest response head an origin may send, in bytes (real sites send dozens of `Set-Cookie` fields or a
    /// 12 KB `Content-Security-Policy`; squid's `reply_header_max_size` is 64 KiB too). A longer one, or one with
    /// more fields than the design has room for, is 502 with that reason.
    pub response_head: usize,
    /// The most client connections served at once; one more is answered 503.
    pub max_connections: usize,
    /// How long a client has to send a whole request head (else 408; between requests on a kept connection,
    /// silence this long is the normal end), an origin's name to resolve (else 502), an origin to accept the
    /// connection (else 504), and an exchange to make any progress (else 504 before the response started, a
    /// reset after).
    pub timeout: Duration,
    /// A tunnel with no byte either way for this long is closed (60 s by default, nginx's `proxy_read_timeout`:
    /// a TLS connection a browser keeps idle is opened again when needed, and WebSocket servers ping sooner; a
    /// silent tunnel would otherwise hold its place under the cap for ever).
    pub tunnel_idle: Duration,
    /// After the proxy's last byte to a client (an error page, a refusal, the end of a response it does not
    /// keep), what the client still sends is read and dropped, so that unread bytes do not turn the close into a
    /// reset that destroys the answer before it is read: until the client closes too, or is silent this long
    /// (see [`Drain`]).
    pub drain: Duration,
    /// How long a client that reads nothing may keep the proxy's answer waiting before the connection is reset,
    /// and the longest a closing connection is drained, however much the client still sends.
    pub linger: Duration,
    /// How long an aborted connection's reset may take to go out before its socket is reused (a stack that
    /// forgets an unsent reset when the socket listens again, as smoltcp does).
    pub reset_grace: Duration,
    /// How long a design that cannot read the response while it sends the request body waits for an origin's
    /// `100 Continue` before it sends the body anyway (as curl does).
    pub continue_wait: Duration,
}

impl Limits {
    /// The defaults of `smoltalk proxy`: 8 KiB request heads, 64 KiB response heads, 1,024 clients, 30 s, tunnels
    /// idle for 60 s closed.
    pub const DEFAULT: Limits = Limits {
        head: 8 * 1024,
        response_head: 64 * 1024,
        max_connections: 1024,
        timeout: Duration::from_secs(30),
        tunnel_idle: Duration::from_secs(60),
        drain: Duration::from_millis(500),
        linger: Duration::from_secs(60),
        reset_grace: Duration::from_secs(1),
        continue_wait: Duration::from_secs(1),
    };

    /// Room a rewritten head needs beyond its own size: the proxy adds `Via`, `Host` and `Connection`, and
    /// writes every header line as `name: value` CRLF (two bytes more than the shortest form a client may send).
    /// A response head that still does not fit is 502 (too large).
    pub const fn head_growth(&self) -> usize {
        1024 + 2 * crate::http::MAX_HEADERS
    }

    /// The buffer a rewritten head (or an error page) must fit: the larger of [`Limits::head`] and
    /// [`Limits::response_head`], plus [`Limits::head_growth`].
    pub const fn out_buffer(&self) -> usize {
        let largest = match self.head > self.response_head {
            true => self.head,
            false => self.response_head,
        };
        largest + self.head_growth()
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

/// How long a client connection the proxy has closed (its answer sent, its FIN behind it) is still read, what
/// comes dropped: until the client closes too; for as long as it keeps sending (an upload the answer cut short:
/// a close with its bytes unread would reset the connection, and the client might lose the answer), but once it
/// has been silent for [`Limits::drain`], or [`Limits::linger`] after the drain began, the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// Silence from the client until then ends the drain.
    quiet_until: Instant,
    /// The drain ends then whatever comes.
    until: Instant,
    quiet: Duration,
}

impl Drain {
    /// A drain beginning `now`.
    pub fn start(limits: &Limits, now: Instant) -> Drain {
        Drain {
            quiet_until: now + limits.drain,
            until: now + limits.linger,
            quiet: limits.drain,
        }
    }

    /// The client sent bytes (dropped) at `now`.
    pub fn on_bytes(&mut self, now: Instant) {
        self.quiet_until = now + self.quiet;
    }

    /// When the drain ends unless the client sends more first.
    pub fn deadline(&self) -> Instant {
        self.quiet_until.min(self.until)
    }

    /// Whether the drain is over at `now`.
    pub fn is_over(&self, now: Instant) -> bool {
        now >= self.deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_lasts_while_the_client_sends_but_not_past_linger() {
        let limits = Limits {
            drain: Duration::from_millis(500),
            linger: Duration::from_secs(2),
            ..Limits::DEFAULT
        };
        let t0 = Instant::from_secs(10);
        let mut drain = Drain::start(&limits, t0);
        assert_eq!(drain.deadline(), t0 + Duration::from_millis(500));
        assert!(!drain.is_over(t0 + Duration::from_millis(499)));
        // Bytes keep it going ...
        for ms in (400..2000).step_by(400) {
            let now = t0 + Duration::from_millis(ms);
            assert!(
                !drain.is_over(now),
                "over at {ms} ms although the client sent"
            );
            drain.on_bytes(now);
        }
        // ... but never past the linger time.
        assert_eq!(drain.deadline(), t0 + Duration::from_secs(2));
        assert!(drain.is_over(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn a_silent_client_ends_the_drain() {
        let limits = Limits::DEFAULT;
        let t0 = Instant::from_secs(1);
        let mut drain = Drain::start(&limits, t0);
        drain.on_bytes(t0 + Duration::from_millis(100));
        assert!(!drain.is_over(t0 + Duration::from_millis(599)));
        assert!(drain.is_over(t0 + Duration::from_millis(600)));
    }
}

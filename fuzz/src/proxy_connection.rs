//! The proxy's state machine (`ProxyConnection`) driven through whole client connections by a driver that plays
//! the world from the input, with no socket anywhere.
//!
//! The input first picks the set-up (a resolver or not, where the proxy listens, which clients and destinations
//! are allowed, which ports `CONNECT` may reach, the head limit), then runs up to [`MAX_STEPS`] operations over
//! one client connection after another. Each operation is something that happens, and the driver answers it with
//! exactly the calls a correct driver makes in the connection's current phase: the client's bytes arriving in
//! pieces (`grammar`: requests with bodies, pipelined, or garbage), its close or reset, time passing (to, just
//! before and past deadlines), a lookup answering with chosen addresses (an origin, loopback, the proxy's own,
//! disallowed ones, more than are tried) or failing, a connection succeeding, refused or timing out, the kept
//! origin connection staying idle or not, the origin's bytes (`grammar`: interim and final heads, bodies by
//! length, chunked, until close, garbage), its close or reset, body bytes through the trackers the engine lends,
//! failures of every kind, the response sent with the origin connection clean or not. Now and then it makes a
//! call the phase does not allow. Once the input is spent, time alone must end the connection.
//!
//! The driver's calls are in `phases` and `failures`; the model of the connection they are checked against
//! is `shadow`, and `checks` holds the checks written apart from the engine. What must hold:
//! - no panic, every call returns; `deadline()` is `None` exactly when the phase is `Closed`, and the deadlines
//!   are the ones documented (the head's, the shared one of lookup, connect and exchange, the tunnel's);
//! - a call the phase does not allow logs one bug and ends with `ResetBoth`; a call it allows logs none;
//! - `NeedMore` only for a head that is not whole, within the limit, before the deadline and the client's
//!   close; every `Forward` takes exactly the head (ending in an empty line), and the head written for the
//!   origin parses whole in origin-form with one `Host`, this proxy's `Via` and keep-alive as the version says
//!   (and nothing for `CONNECT`); every other end of a head is the status the head deserved;
//! - every `Answer` and refusal is a whole response with `Connection: close` and a `Content-Length` equal to its
//!   body, and comes only before any byte of the response went to the client; after that the ends are resets
//!   or `Close`;
//! - the engine connects only to the addresses it may, in order, never to itself (508), each at most once, and
//!   answers 502/504/403 as the addresses and connects deserve; a lookup is for the very name of the request;
//! - every response head written parses, keeps the origin's status and framing, has `Via`, and says
//!   `Connection: close` exactly when the client connection is not kept (`keep-alive` for a kept HTTP/1.0
//!   client); an interim head goes to an HTTP/1.1 client only; the engine reads the next request exactly when
//!   the head did not say close, and keeps the origin connection exactly when the origin, the driver's
//!   `origin_clean` and the request body allow;
//! - `Reuse` exactly when the kept origin is idle and the request names its host (case-insensitive) and port,
//!   never for `CONNECT`; a retry at most once per request, only on a reused connection, for a request without
//!   a body, before any byte of a response came from the origin, to the kept connection's address (one known
//!   engine bug is let pass: `KNOWN_RETRY_AFTER_WITHHELD_INTERIM` in `shadow`);
//! - the stats only grow: `requests` counts the heads parsed, `responses` the final heads, `tunnels` the
//!   tunnels, `body_bytes` the progress reported, `errors` at most the one ending's answer.

mod checks;
mod failures;
mod grammar;
mod phases;
mod shadow;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltalk_core::proxy::engine::{
    Admission, ConnectStep, Ending, OriginStep, OwnAddress, Phase, ProxyConnection, ProxyContext,
};
use smoltalk_core::proxy::policy::ipv4_of;
use smoltalk_core::proxy::{Limits, ProxyPolicy, ProxyStats};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpCidr, Ipv4Cidr};

use self::shadow::Shadow;
use super::input::Input;

/// The name the fuzzed proxy puts in `Via`.
pub const PSEUDONYM: &str = "smoltalk-fuzz";
/// The proxy's own address (its listening address unless it listens on every address).
pub const PROXY_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The proxy's port.
pub const LISTEN_PORT: u16 = 8080;
/// The most operations one input runs.
pub const MAX_STEPS: usize = 256;
/// How many more steps than its deadlines allow a connection may take to end once the input is spent.
const MAX_EXPIRY_STEPS: usize = 4;

const NAMES: [(&str, IpAddr); 3] = [
    ("origin.test", IpAddr::V4(Ipv4Addr::new(10, 0, 2, 80))),
    ("loop.test", IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ("self.test", IpAddr::V4(PROXY_IP)),
];
const LOOPBACK: [IpCidr; 1] = [IpCidr::Ipv4(Ipv4Cidr::new(Ipv4Addr::new(127, 0, 0, 0), 8))];
const LAN: [IpCidr; 1] = [IpCidr::Ipv4(Ipv4Cidr::new(Ipv4Addr::new(10, 0, 2, 0), 24))];

/// What the input's first two bytes choose.
#[derive(Debug, Clone, Copy)]
struct Setup {
    can_look_up: bool,
    listen: SocketAddr,
    allow_clients: &'static [IpCidr],
    allow_destinations: &'static [IpCidr],
    connect_ports: &'static [u16],
    head: usize,
}

impl Setup {
    fn read(input: &mut Input<'_>) -> Setup {
        let bits = input.byte();
        let head = [256, 512, 1024, 8192][usize::from(input.byte() % 4)];
        Setup {
            can_look_up: bits & 0x81 != 0,
            listen: match bits & 2 {
                0 => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), LISTEN_PORT),
                _ => SocketAddr::new(IpAddr::V4(PROXY_IP), LISTEN_PORT),
            },
            allow_clients: if bits & 4 != 0 { &LOOPBACK } else { &[] },
            allow_destinations: if bits & 8 != 0 { &LAN } else { &[] },
            connect_ports: if bits & 16 != 0 { &[443, 8080] } else { &[443] },
            head,
        }
    }

    fn policy(&self) -> ProxyPolicy<'static> {
        ProxyPolicy {
            allow_clients: self.allow_clients,
            allow_destinations: self.allow_destinations,
            connect_ports: self.connect_ports,
            static_names: &NAMES,
            pseudonym: PSEUDONYM,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            head: self.head,
            response_head: self.head,
            max_connections: 2,
            ..Limits::DEFAULT
        }
    }
}

/// Counts of what an input's connections came to, for the test that checks the harness reaches every part.
macro_rules! outcome {
    ($($field:ident),* $(,)?) => {
        /// What an input's connections came to.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Outcome {
            $(pub $field: u64,)*
        }

        impl Outcome {
            /// Adds `other`'s counts to these.
            pub fn add(&mut self, other: &Outcome) {
                $(self.$field += other.$field;)*
            }

            /// The counts that are zero.
            pub fn missing(&self) -> Vec<&'static str> {
                let mut missing = Vec::new();
                $(if self.$field == 0 {
                    missing.push(stringify!($field));
                })*
                missing
            }
        }
    };
}

outcome!(
    connections,
    refused,
    forwarded,
    lookups,
    reused,
    retries,
    tunnels,
    interim,
    responses,
    next_requests,
    kept_origins,
    misuses,
    answers,
    closes,
    resets,
    expired,
);

/// One end's bytes: what it will still send, what has arrived and is not taken yet, and whether it finished.
#[derive(Debug, Default)]
struct Peer {
    pending: Vec<u8>,
    inbound: Vec<u8>,
    done: bool,
    reset: bool,
}

impl Peer {
    /// `n` more of the pending bytes arrive.
    fn arrive(&mut self, n: usize) {
        let n = n.min(self.pending.len());
        self.inbound.extend(self.pending.drain(..n));
    }

    /// The first `n` arrived bytes are taken.
    fn take(&mut self, n: usize) {
        self.inbound.drain(..n.min(self.inbound.len()));
    }
}

/// [`OriginStep`] without the borrow of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    LookUp(String),
    Connect(SocketAddr),
    Reuse,
    End(Ending),
}

impl Next {
    fn of(step: OriginStep<'_>) -> Next {
        match step {
            OriginStep::LookUp(name) => Next::LookUp(name.to_owned()),
            OriginStep::Connect(addr) => Next::Connect(addr),
            OriginStep::Reuse => Next::Reuse,
            OriginStep::End(ending) => Next::End(ending),
        }
    }

    fn after(step: ConnectStep) -> Next {
        match step {
            ConnectStep::Connect(addr) => Next::Connect(addr),
            ConnectStep::End(ending) => Next::End(ending),
        }
    }
}

/// The world around one proxy connection at a time, and the driver that tells the engine about it.
struct Driver<'a, 'c> {
    cx: &'c ProxyContext<'c>,
    setup: Setup,
    input: Input<'a>,
    now: Instant,
    out: Vec<u8>,
    client: Peer,
    /// What the client's next request may repeat of its last.
    requests: grammar::Client,
    origin: Peer,
    steps: usize,
    outcome: Outcome,
}

/// How many of the `pending` bytes arrive at once: all, up to the end of the next head (a peer that writes each
/// head apart), or a piece.
fn arrival(input: &mut Input<'_>, pending: &[u8]) -> usize {
    match input.byte() {
        0..=95 => usize::MAX,
        96..=127 => {
            let bare = pending.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
            let crlf = pending
                .windows(3)
                .position(|w| w == b"\n\r\n")
                .map(|i| i + 3);
            bare.into_iter().chain(crlf).min().unwrap_or(usize::MAX)
        }
        b => usize::from(b % 32) + 1,
    }
}

/// Runs one input; returns what its connections came to.
pub fn run(data: &[u8]) -> Outcome {
    checks::count_bugs();
    let mut input = Input::new(data);
    let setup = Setup::read(&mut input);
    let policy = setup.policy();
    let limits = setup.limits();
    let cx = ProxyContext {
        policy: &policy,
        limits: &limits,
        own: OwnAddress {
            listen: setup.listen,
            is_local: &checks::is_local,
        },
        can_look_up: setup.can_look_up,
    };
    let mut driver = Driver {
        cx: &cx,
        setup,
        input,
        now: Instant::ZERO,
        out: vec![0; limits.out_buffer()],
        client: Peer::default(),
        requests: grammar::Client::default(),
        origin: Peer::default(),
        steps: 0,
        outcome: Outcome::default(),
    };
    while !driver.input.is_empty() && driver.steps < MAX_STEPS {
        driver.connection();
    }
    driver.outcome
}

impl Driver<'_, '_> {
    fn timeout(&self) -> Duration {
        self.cx.limits.timeout
    }

    /// Admits a client and serves it until its connection ends.
    fn connection(&mut self) {
        self.outcome.connections += 1;
        self.steps += 1;
        let who = self.input.byte();
        let client = match who % 8 {
            0..=3 => IpAddr::V4(Ipv4Addr::LOCALHOST),
            4 => IpAddr::V6(Ipv6Addr::LOCALHOST),
            5 => IpAddr::V6(Ipv4Addr::new(127, 0, 0, 5).to_ipv6_mapped()),
            6 => IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2)),
            _ => IpAddr::V4(Ipv4Addr::new(192, 168, 0, 9)),
        };
        let busy = match who & 0xf0 {
            0xf0 => 2,
            _ => usize::from(who >> 7),
        };
        // Mostly a client the proxy allows.
        let client = match who & 0x70 {
            0x70 => client,
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        // The list is 127.0.0.0/8 or empty. An IPv6 client (::1, ::ffff:127.0.0.5) stands for its IPv4 address
        // only with the core's `ipv6` feature; without it, 127.0.0.0/8 does not allow it.
        let ipv6_stands_for_ipv4 = ipv4_of(IpAddr::V6(Ipv6Addr::LOCALHOST)).is_some();
        let allowed = self.setup.allow_clients.is_empty()
            || match client {
                IpAddr::V4(v4) => v4.is_loopback(),
                IpAddr::V6(_) => ipv6_stands_for_ipv4,
            };
        let mut conn = match ProxyConnection::admit(self.cx, client, busy, self.now, &mut self.out)
        {
            Admission::Refuse { len } => {
                let status = checks::page(&self.out[..len]);
                assert_eq!(status, if allowed { 503 } else { 403 }, "busy {busy}");
                assert!(!allowed || busy >= 2);
                self.outcome.refused += 1;
                return;
            }
            Admission::Serve(conn) => conn,
        };
        assert!(allowed && busy < 2, "{client} admitted with {busy} busy");
        assert_eq!(conn.client(), client);
        assert_eq!(conn.deadline(), Some(self.now + self.timeout()));
        assert_eq!(conn.phase(), Phase::ReadingHead);
        let mut st = Shadow {
            first: true,
            stats: ProxyStats {
                accepted: 1,
                ..ProxyStats::default()
            },
            ..Shadow::default()
        };
        self.client = Peer::default();
        self.requests = grammar::Client::default();
        self.origin = Peer::default();
        self.check(&mut conn, &mut st);
        while !self.input.is_empty() && self.steps < MAX_STEPS {
            self.steps += 1;
            let bugs = checks::bugs();
            let (ending, misuse) = self.step(&mut conn, &mut st);
            if !misuse {
                assert_eq!(
                    checks::bugs(),
                    bugs,
                    "a bug logged for a call the phase allows"
                );
            }
            self.check(&mut conn, &mut st);
            if let Some(ending) = ending {
                return self.ended(&conn, &st, ending);
            }
        }
        // The input is spent: nothing more happens, and the deadlines alone must end the connection.
        for _ in 0..MAX_EXPIRY_STEPS {
            let ending = self.expire(&mut conn, &mut st);
            self.check(&mut conn, &mut st);
            if let Some(ending) = ending {
                self.outcome.expired += 1;
                return self.ended(&conn, &st, ending);
            }
        }
        panic!(
            "the connection outlived its deadlines: {:?} at {}",
            conn.phase(),
            self.now
        );
    }

    /// One thing happens; returns the ending if the connection ended, and whether the call was a misuse.
    fn step(&mut self, conn: &mut ProxyConnection, st: &mut Shadow) -> (Option<Ending>, bool) {
        let op = self.input.byte();
        if op >= 0xfe {
            return (self.misuse(conn), true);
        }
        if op >= 0xfa {
            let failure = failures::any_failure(self.input.byte());
            // A failure out of its phase is a misuse: the engine logs it as a bug.
            let misuse = !failures::fits(failure, conn.phase());
            return (self.fail(conn, st, failure), misuse);
        }
        let ending = match conn.phase() {
            Phase::ReadingHead => self.reading(conn, st, op),
            Phase::Resolving => self.resolving(conn, st, op),
            Phase::Connecting => self.connecting(conn, st, op),
            Phase::Exchanging(phase) => self.exchanging(conn, st, op, phase),
            Phase::Tunnel => self.tunnel(conn, st, op),
            Phase::Closed => panic!("a closed connection was still served"),
        };
        (ending, false)
    }

    /// Time passes until the next deadline, and the driver asks what it ends.
    fn expire(&mut self, conn: &mut ProxyConnection, st: &mut Shadow) -> Option<Ending> {
        if let Some(deadline) = conn.deadline() {
            self.now = self.now.max(deadline);
        }
        match conn.phase() {
            Phase::ReadingHead => self.head(conn, st),
            _ => self.on_timeout(conn, st),
        }
    }

    /// Moves the clock: a little, to just before, at or just past the deadline, or far.
    fn pass_time(&mut self, conn: &ProxyConnection) {
        let deadline = conn.deadline().unwrap_or(self.now);
        let ms = Duration::from_millis;
        self.now = match self.input.byte() % 12 {
            0..=2 => self.now + ms(1),
            3 | 4 => self.now + ms(1000),
            5 => self.now + ms(u64::from(self.input.u16())),
            6 | 7 => self.now.max(deadline - ms(1)),
            8 => self.now.max(deadline),
            9 => self.now.max(deadline + ms(1)),
            10 => self.now + self.timeout(),
            _ => self.now + self.cx.limits.tunnel_idle,
        };
    }

    /// The client sends some of what it has to send (a new request once it has sent everything).
    fn client_sends(&mut self) {
        if self.client.done {
            return;
        }
        if self.client.pending.is_empty() {
            grammar::request(
                &mut self.input,
                &mut self.requests,
                &mut self.client.pending,
            );
        }
        let n = arrival(&mut self.input, &self.client.pending);
        self.client.arrive(n);
    }

    /// The origin sends some of what it has to send; a new response once it has sent everything, if `answers`
    /// (it is asked for one).
    fn origin_sends(&mut self, answers: bool) {
        if self.origin.done {
            return;
        }
        if self.origin.pending.is_empty() && answers {
            grammar::response(&mut self.input, &mut self.origin.pending);
        }
        let n = arrival(&mut self.input, &self.origin.pending);
        self.origin.arrive(n);
    }

    /// The phase's own waiting call once time has passed: `on_timeout`, with what it must end.
    fn on_timeout(&mut self, conn: &mut ProxyConnection, st: &Shadow) -> Option<Ending> {
        let phase = conn.phase();
        let deadline = conn.deadline();
        let ending = conn.on_timeout(self.now, &mut self.out);
        let due = deadline.is_some_and(|d| self.now >= d);
        let started = st.exchange.as_ref().is_some_and(|e| e.started);
        let expected = match phase {
            Phase::ReadingHead | Phase::Closed => {
                assert_eq!(ending, None, "{phase:?}");
                return None;
            }
            _ if !due => None,
            Phase::Resolving => Some(502),
            Phase::Connecting => Some(504),
            Phase::Exchanging(_) if !started => Some(504),
            Phase::Exchanging(_) => {
                assert_eq!(ending, Some(Ending::ResetBoth));
                return ending;
            }
            Phase::Tunnel => {
                assert_eq!(ending, Some(Ending::Close));
                return ending;
            }
        };
        match (expected, ending) {
            (None, None) => None,
            (Some(status), Some(Ending::Answer { len })) => {
                assert_eq!(checks::page(&self.out[..len]), status, "{phase:?}");
                ending
            }
            other => panic!(
                "{phase:?} at {} (deadline {deadline:?}): {other:?}",
                self.now
            ),
        }
    }
}

//! What the harness checks the engine's output against, written apart from the engine: the pages it answers
//! with, the heads it rewrites both ways, where it may connect, and the log lines that say a call was a bug.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use httparse::EMPTY_HEADER;
use smoltalk_core::http::{
    has_token, BodyFraming, Method, RequestHead, RequestTarget, ResponseHead, MAX_HEADERS,
};
use smoltalk_core::proxy::{ProxyPolicy, LOG_TARGET};

use super::{LISTEN_PORT, PROXY_IP, PSEUDONYM};

/// The most addresses of one origin the engine tries (`engine::MAX_CANDIDATES`, restated).
const MAX_TRIED: usize = 4;

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `ip` is one of this host's addresses (the proxy's and loopback), as `OwnAddress::is_local` says.
pub fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip == IpAddr::V4(PROXY_IP)
}

/// The IPv4 address an address stands for (`::1` is 127.0.0.1, a v4-mapped one its embedded address).
fn as_v4(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether a connection to `addr` would reach the proxy listening on `listen`.
pub fn reaches_proxy(listen: SocketAddr, addr: SocketAddr) -> bool {
    let ip = as_v4(addr.ip());
    addr.port() == LISTEN_PORT
        && (ip.is_unspecified()
            || ip == as_v4(listen.ip())
            || (listen.ip().is_unspecified() && is_local(ip)))
}

/// The addresses the engine must try, in order, for an origin at `addrs` on `port`, or the status it must
/// answer instead (502 for none, 508 if one is the proxy, 403 if none is allowed).
pub fn route(
    policy: &ProxyPolicy<'_>,
    listen: SocketAddr,
    addrs: &[IpAddr],
    port: u16,
) -> Result<VecDeque<SocketAddr>, u16> {
    if addrs.is_empty() {
        return Err(502);
    }
    let addrs: Vec<SocketAddr> = addrs.iter().map(|&ip| SocketAddr::new(ip, port)).collect();
    if addrs.iter().any(|&a| reaches_proxy(listen, a)) {
        return Err(508);
    }
    let allowed: VecDeque<SocketAddr> = addrs
        .into_iter()
        .filter(|a| policy.check_destination(a.ip()).is_ok())
        .take(MAX_TRIED)
        .collect();
    match allowed.is_empty() {
        true => Err(403),
        false => Ok(allowed),
    }
}

/// Checks the proxy's own answer in `page` (a 4xx or 5xx page, or a refusal); returns its status.
pub fn page(page: &[u8]) -> u16 {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let head = match ResponseHead::parse(page, &mut headers, Method::Get) {
        Ok(Some(head)) => head,
        other => panic!(
            "the proxy's page {:?} does not parse whole: {:?}",
            show(page),
            other.map(|h| h.map(|h| h.head_len))
        ),
    };
    assert!(
        head.minor_version == 1 && (400..600).contains(&head.code),
        "{}",
        show(page)
    );
    assert!(
        has_token(head.headers, "connection", "close") && !head.keep_alive,
        "a page without Connection: close: {}",
        show(page)
    );
    let body = page.len() - head.head_len;
    assert_eq!(
        head.framing,
        BodyFraming::Length(body as u64),
        "the page's Content-Length is not its body's length: {}",
        show(page)
    );
    head.code
}

/// What the harness knows of a request head it gave the engine, parsed by itself.
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: Method,
    pub minor_version: u8,
    pub keep_alive: bool,
    pub host: String,
    pub port: u16,
    pub framing: BodyFraming,
    pub expects_continue: bool,
    pub head_len: usize,
}

impl Sent {
    /// `window` parsed as the engine parses it: a whole head, or what else.
    pub fn parse(window: &[u8]) -> Result<Option<Sent>, u16> {
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        match RequestHead::parse(window, &mut headers) {
            Ok(Some(head)) => Ok(Some(Sent {
                method: head.method,
                minor_version: head.minor_version,
                keep_alive: head.keep_alive,
                host: head.target.authority().host.to_owned(),
                port: head.target.authority().port,
                framing: head.framing,
                expects_continue: head.expects_continue(),
                head_len: head.head_len,
            })),
            Ok(None) => Ok(None),
            Err(error) => Err(error.status()),
        }
    }

    pub fn is_tunnel(&self) -> bool {
        self.method == Method::Connect
    }
}

/// Checks the head the engine wrote for the origin (`out`) against the client's head it came from.
pub fn upstream(client: &Sent, out: &[u8]) {
    if client.is_tunnel() {
        assert!(out.is_empty(), "a CONNECT sends the origin no head");
        return;
    }
    let mut headers = [EMPTY_HEADER; MAX_HEADERS + 4];
    let sent = match RequestHead::parse(out, &mut headers) {
        Ok(Some(sent)) => sent,
        other => panic!(
            "the origin's head {:?} does not parse: {:?}",
            show(out),
            other.map(|h| h.map(|h| h.head_len))
        ),
    };
    assert_eq!(sent.head_len, out.len(), "{}", show(out));
    assert_eq!(sent.method, client.method, "{}", show(out));
    assert_eq!(sent.minor_version, client.minor_version, "{}", show(out));
    assert_eq!(sent.framing, client.framing, "{}", show(out));
    assert!(
        matches!(sent.target, RequestTarget::Origin { path, .. } if path.starts_with('/') || path == "*"),
        "not origin-form: {}",
        show(out)
    );
    let authority = sent.target.authority();
    assert!(
        authority.host == client.host && authority.port == client.port,
        "{}",
        show(out)
    );
    let hosts = sent
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    assert_eq!(hosts, 1, "{}", show(out));
    assert!(sent.came_through(PSEUDONYM), "no Via: {}", show(out));
    // The origin is always asked to keep its connection: it is kept or closed apart from the client's.
    assert!(sent.keep_alive, "{}", show(out));
    match client.minor_version {
        0 => assert!(
            has_token(sent.headers, "connection", "keep-alive"),
            "{}",
            show(out)
        ),
        _ => assert!(sent.header("connection").is_none(), "{}", show(out)),
    }
}

/// The part of an origin's response head the harness keeps.
#[derive(Debug, Clone, Copy)]
pub struct Answered {
    pub code: u16,
    pub head_len: usize,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub interim: bool,
}

/// `window` parsed as the engine parses an origin's bytes.
pub fn origin_head(window: &[u8], method: Method) -> Result<Option<Answered>, u16> {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    match ResponseHead::parse(window, &mut headers, method) {
        Ok(Some(head)) => Ok(Some(Answered {
            code: head.code,
            head_len: head.head_len,
            framing: head.framing,
            keep_alive: head.keep_alive,
            interim: head.is_interim(),
        })),
        Ok(None) => Ok(None),
        Err(error) => Err(error.status()),
    }
}

/// Checks a response head the engine wrote for the client, from the origin's `answered`; `keep` is whether the
/// client connection may be kept after it. Returns whether it tells the client the connection closes.
pub fn client_head(client: &Sent, answered: &Answered, keep: bool, out: &[u8]) -> bool {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS + 4];
    let head = match ResponseHead::parse(out, &mut headers, client.method) {
        Ok(Some(head)) => head,
        other => panic!(
            "the client's head {:?} does not parse: {:?}",
            show(out),
            other.map(|h| h.map(|h| h.head_len))
        ),
    };
    assert_eq!(head.head_len, out.len(), "{}", show(out));
    assert_eq!(head.code, answered.code, "{}", show(out));
    assert_eq!(head.framing, answered.framing, "{}", show(out));
    let via = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("via"))
        .any(|h| show(h.value).ends_with(PSEUDONYM));
    assert!(via, "no Via: {}", show(out));
    let close = has_token(head.headers, "connection", "close");
    if answered.interim {
        assert!(head.header_count("connection") == 0, "{}", show(out));
        return false;
    }
    assert_eq!(close, !keep, "keep {keep}: {}", show(out));
    if keep && client.minor_version == 0 {
        assert!(
            has_token(head.headers, "connection", "keep-alive"),
            "{}",
            show(out)
        );
    }
    close
}

trait HeaderCount {
    fn header_count(&self, name: &str) -> usize;
}

impl HeaderCount for ResponseHead<'_, '_> {
    fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    }
}

/// Checks the `200` that opens a tunnel.
pub fn tunnel_reply(out: &[u8]) {
    let mut headers = [EMPTY_HEADER; 4];
    match ResponseHead::parse(out, &mut headers, Method::Get) {
        Ok(Some(head)) if head.code == 200 && head.head_len == out.len() => {}
        other => panic!(
            "the tunnel's reply {:?} is not a whole 200 head: {:?}",
            show(out),
            other.map(|h| h.map(|h| h.code))
        ),
    }
}

/// Counts the errors the proxy logs on this thread: `ProxyEvent::Bug` is the only one. Every event is also
/// formatted, so its `Display` runs on every input.
struct BugCounter;

thread_local! {
    static BUGS: Cell<u64> = const { Cell::new(0) };
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

static COUNTING: AtomicBool = AtomicBool::new(false);

impl log::Log for BugCounter {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == LOG_TARGET
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.target() != LOG_TARGET {
            return;
        }
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            let _ = write!(line, "{}", record.args());
        });
        if record.level() == log::Level::Error {
            BUGS.with(|bugs| bugs.set(bugs.get() + 1));
        }
    }

    fn flush(&self) {}
}

static LOGGER: BugCounter = BugCounter;

/// Installs the counter as the process's logger (once; if another logger came first, bugs are not counted).
pub fn count_bugs() {
    if log::set_logger(&LOGGER).is_ok() {
        COUNTING.store(true, Ordering::Relaxed);
        log::set_max_level(log::LevelFilter::Trace);
    }
}

/// The bugs logged on this thread so far, if they are counted.
pub fn bugs() -> Option<u64> {
    COUNTING
        .load(Ordering::Relaxed)
        .then(|| BUGS.with(Cell::get))
}

//! What the client and the origin send: HTTP/1.x messages from a small grammar whose every choice the input
//! makes, so that most inputs hold valid requests and responses with fuzzed parts, and some hold garbage.
//!
//! A request picks its method, target form (absolute, origin-form with `Host`, authority for `CONNECT`, `*`,
//! `https://`), host (names `--resolve` knows, names to look up, literals, the proxy's own address, addresses
//! not allowed), port, version, line ends (CRLF or bare LF), headers (connection tokens, `Via` loops,
//! `Expect: 100-continue`, fillers long enough for 431) and its body (none, by length, chunked, with a broken
//! chunk now and then). A response picks interim heads (`100`, `103`), a final status (`101`, `204`, `304`,
//! ...), version, connection tokens, framing (length, chunked, until close, contradictory) and its body.

use super::super::input::Input;
use super::PSEUDONYM;

/// Hosts a request may name: first those that lead to an origin (`origin.test` is in `--resolve`, `other.test` is
/// looked up), then the odd ones (the proxy's own address, loopback, addresses not allowed, names `--resolve`
/// gives loopback and the proxy's address, a name that is not one).
const HOSTS: [&str; 16] = [
    "origin.test",
    "origin.test",
    "ORIGIN.Test",
    "other.test",
    "Other.TEST",
    "10.0.2.80",
    "origin.test.",
    "[2001:db8::1]",
    "127.0.0.1",
    "10.0.2.15",
    "[::1]",
    "192.168.7.7",
    "loop.test",
    "self.test",
    "0.0.0.0",
    "bad host",
];
const GOOD_HOSTS: usize = 6;

/// Methods: the ones forwarded first, then `CONNECT`, then ones answered 501.
const METHODS: [&str; 12] = [
    "GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    "get",
];
const GOOD_METHODS: usize = 10;

/// Ports: none (80), the usual ones, then the proxy's own, one `CONNECT` may not reach, and no port.
const PORTS: [Option<u16>; 8] = [
    None,
    None,
    None,
    Some(80),
    Some(443),
    Some(8080),
    Some(22),
    Some(0),
];
const GOOD_PORTS: usize = 5;

/// Paths: origin-form ones first, then one an absolute URI may have but origin-form may not, then bad ones.
const PATHS: [&str; 6] = ["/", "/a", "/a?b=c", "?q", "", "/x%20y#frag"];
const GOOD_PATHS: usize = 3;

/// Request headers besides the framing ones; the last ones make a loop or a second `Host`.
const REQUEST_HEADERS: [&str; 14] = [
    "Connection: close",
    "Connection: keep-alive",
    "Connection: keep-alive, X-Drop",
    "Proxy-Connection: keep-alive",
    "Proxy-Connection: close",
    "Via: 1.0 other",
    "Expect: 100-continue",
    "Keep-Alive: 300",
    "TE: trailers",
    "Upgrade: h2c",
    "X-Drop: 1",
    "Accept: */*",
    "Via: 1.1 smoltalk-fuzz",
    "Host: second.test",
];
const GOOD_REQUEST_HEADERS: usize = 12;

/// Response headers besides the framing ones.
const RESPONSE_HEADERS: [&str; 10] = [
    "Connection: close",
    "Connection: keep-alive",
    "Connection: X-Hop",
    "X-Hop: 1",
    "Keep-Alive: timeout=5",
    "Proxy-Authenticate: Basic",
    "Via: 1.1 other",
    "Server: fuzz",
    "Trailer: X-T",
    "Connection: close, keep-alive",
];

fn pick<T: Copy>(input: &mut Input<'_>, list: &[T]) -> T {
    list[usize::from(input.byte()) % list.len()]
}

/// One of the first `good` of `list`, or (for a wild message) any of it.
fn pick_good<T: Copy>(input: &mut Input<'_>, list: &[T], good: usize, wild: bool) -> T {
    match wild {
        true => pick(input, list),
        false => pick(input, &list[..good]),
    }
}

/// What a client's next request may repeat of its last: the origin it named.
#[derive(Debug, Clone, Default)]
pub struct Client {
    last: Option<(&'static str, Option<u16>)>,
}

/// `n` bytes of the input, padded with `x` once it runs out.
fn data(input: &mut Input<'_>, n: usize, to: &mut Vec<u8>) {
    let taken = input.take(n);
    to.extend_from_slice(taken);
    to.resize(to.len() + n - taken.len(), b'x');
}

/// A header line of arbitrary bytes, or a long filler, after the fixed ones.
fn odd_header(input: &mut Input<'_>, eol: &[u8], to: &mut Vec<u8>) {
    match input.byte() % 4 {
        0 => {
            to.extend_from_slice(b"X-Raw: ");
            let n = usize::from(input.byte() % 24);
            to.extend_from_slice(input.take(n));
        }
        1 => {
            to.extend_from_slice(b"X-Filler: ");
            let n = usize::from(input.byte()) * 4;
            to.resize(to.len() + n, b'f');
        }
        2 => to.extend_from_slice(format!("Via: 1.1 {PSEUDONYM}, 1.0 other").as_bytes()),
        _ => to.extend_from_slice(b"X-Empty:"),
    }
    to.extend_from_slice(eol);
}

/// A chunked body: a few chunks and the last one; `broken` puts a bad size line in.
fn chunked(input: &mut Input<'_>, eol: &[u8], broken: bool, to: &mut Vec<u8>) {
    let chunks = input.byte() % 4;
    for i in 0..chunks {
        let size = usize::from(input.byte() % 24) + 1;
        match broken && i == 0 {
            true => to.extend_from_slice(b"zz"),
            false => to.extend_from_slice(format!("{size:x}").as_bytes()),
        }
        to.extend_from_slice(eol);
        data(input, size, to);
        to.extend_from_slice(eol);
    }
    to.extend_from_slice(b"0");
    to.extend_from_slice(eol);
    if input.byte() & 3 == 0 {
        to.extend_from_slice(b"X-T: 1");
        to.extend_from_slice(eol);
    }
    to.extend_from_slice(eol);
}

/// Appends what a client sends next: one request with its body, or some bytes of garbage. A request is "wild"
/// one time in four: then any of its parts may be one the proxy refuses.
pub fn request(input: &mut Input<'_>, client: &mut Client, to: &mut Vec<u8>) {
    let shape = input.byte();
    if shape & 0x1f == 0x1f {
        let n = usize::from(input.byte() % 48);
        to.extend_from_slice(input.take(n));
        return;
    }
    let wild = shape & 0xc0 == 0xc0;
    let eol: &[u8] = match shape & 0x20 {
        0 => b"\r\n",
        _ => b"\n",
    };
    let method = pick_good(input, &METHODS, GOOD_METHODS, wild);
    let (host, port) = match (client.last, input.byte() % 4) {
        (Some(last), 0..=2) => last,
        _ => (
            pick_good(input, &HOSTS, GOOD_HOSTS, wild),
            pick_good(input, &PORTS, GOOD_PORTS, wild),
        ),
    };
    client.last = Some((host, port));
    let authority = match port {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let path = pick_good(input, &PATHS, GOOD_PATHS, wild);
    let form = input.byte() % 8;
    let version = match input.byte() % 16 {
        0..=11 => "1.1",
        12..=14 => "1.0",
        _ if wild => "2.0",
        _ => "1.1",
    };
    let target = match (method, form) {
        // A CONNECT names a port (443 if the request would not).
        ("CONNECT", _) if port.is_none() => format!("{host}:443"),
        ("CONNECT", _) if !wild || form != 7 => authority.clone(),
        (_, 0) if wild => authority.clone(),
        (_, 1 | 2) => path.to_owned(),
        (_, 3) if wild => "*".to_owned(),
        (_, 4) if wild => format!("https://{authority}/"),
        _ => format!("http://{authority}{path}"),
    };
    to.extend_from_slice(format!("{method} {target} HTTP/{version}").as_bytes());
    to.extend_from_slice(eol);
    if matches!(form, 1..=3) || shape & 0x40 != 0 {
        to.extend_from_slice(format!("Host: {authority}").as_bytes());
        to.extend_from_slice(eol);
    }
    let headers = input.byte();
    for _ in 0..headers % 4 {
        let header = pick_good(input, &REQUEST_HEADERS, GOOD_REQUEST_HEADERS, wild);
        to.extend_from_slice(header.as_bytes());
        to.extend_from_slice(eol);
    }
    if wild && headers & 0x80 != 0 {
        odd_header(input, eol, to);
    }
    let framing = input.byte();
    match framing % 8 {
        0..=3 => to.extend_from_slice(eol),
        // HTTP/1.0 has no chunked coding.
        6 | 7 if !wild && version == "1.0" => to.extend_from_slice(eol),
        7 if !wild => to.extend_from_slice(eol),
        4 | 5 => {
            let length = usize::from(input.byte() % 40);
            to.extend_from_slice(format!("Content-Length: {length}").as_bytes());
            to.extend_from_slice(eol);
            to.extend_from_slice(eol);
            // Sometimes fewer bytes than it said: the next request (or the client's close) comes early.
            let sent = match wild && framing & 0x80 != 0 {
                false => length,
                true => length / 2,
            };
            data(input, sent, to);
        }
        6 => {
            to.extend_from_slice(b"Transfer-Encoding: chunked");
            to.extend_from_slice(eol);
            to.extend_from_slice(eol);
            chunked(input, eol, wild && framing & 0x80 != 0, to);
        }
        _ => {
            let header: &[u8] = match framing & 0x30 {
                0x00 => b"Transfer-Encoding: gzip",
                0x10 => b"Content-Length: 3\r\nContent-Length: 4",
                0x20 => b"Transfer-Encoding: chunked\r\nContent-Length: 3",
                _ => b"Content-Length: -1",
            };
            to.extend_from_slice(header);
            to.extend_from_slice(eol);
            to.extend_from_slice(eol);
        }
    }
}

/// Appends what an origin sends next: a response (after interim ones, sometimes) with its body, or garbage. A
/// response is "wild" one time in four: then its parts may be ones the proxy cannot forward.
pub fn response(input: &mut Input<'_>, to: &mut Vec<u8>) {
    let shape = input.byte();
    if shape & 0x1f == 0x1f {
        let n = usize::from(input.byte() % 48);
        to.extend_from_slice(input.take(n));
        return;
    }
    let wild = shape & 0x03 == 0x03;
    let eol: &[u8] = match shape & 0x20 {
        0 => b"\r\n",
        _ => b"\n",
    };
    if shape & 0xc0 == 0xc0 {
        let interim: &[u8] = match input.byte() % 3 {
            0 => b"HTTP/1.1 100 Continue",
            1 => b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload",
            _ => b"HTTP/1.1 199 Whatever\r\nConnection: close",
        };
        to.extend_from_slice(interim);
        to.extend_from_slice(eol);
        to.extend_from_slice(eol);
    }
    let version = match input.byte() % 4 {
        0..=2 => "1.1",
        _ => "1.0",
    };
    let code = pick_good(
        input,
        &[200, 200, 200, 200, 204, 304, 404, 500, 302, 206, 101, 999],
        10,
        wild,
    );
    to.extend_from_slice(format!("HTTP/{version} {code} Reason").as_bytes());
    to.extend_from_slice(eol);
    let headers = input.byte();
    for _ in 0..headers % 4 {
        to.extend_from_slice(pick(input, &RESPONSE_HEADERS).as_bytes());
        to.extend_from_slice(eol);
    }
    if wild && headers & 0x80 != 0 {
        odd_header(input, eol, to);
    }
    let framing = input.byte();
    match framing % 8 {
        0..=3 | 7 if !wild || framing % 8 != 7 => {
            let length = usize::from(input.byte() % 40);
            to.extend_from_slice(format!("Content-Length: {length}").as_bytes());
            to.extend_from_slice(eol);
            to.extend_from_slice(eol);
            let sent = match framing & 0xc0 {
                0x40 if wild => length / 2,
                0x80 if wild => length + 3,
                _ => length,
            };
            data(input, sent, to);
        }
        4 | 5 => {
            to.extend_from_slice(b"Transfer-Encoding: chunked");
            to.extend_from_slice(eol);
            to.extend_from_slice(eol);
            chunked(input, eol, wild && framing & 0xc0 == 0xc0, to);
        }
        6 => {
            // Until the close (or, for 1xx/204/304/HEAD, nothing: what follows is garbage).
            to.extend_from_slice(eol);
            let n = usize::from(input.byte() % 32);
            data(input, n, to);
        }
        _ => {
            let header: &[u8] = match framing & 0x30 {
                0x00 => b"Transfer-Encoding: gzip",
                0x10 => b"Content-Length: 3\r\nContent-Length: 4",
                0x20 => b"Transfer-Encoding: chunked\r\nContent-Length: 3",
                _ => b"Content-Length: 1x",
            };
            to.extend_from_slice(header);
            to.extend_from_slice(eol);
            to.extend_from_slice(eol);
            to.extend_from_slice(b"0\r\n\r\n");
        }
    }
}

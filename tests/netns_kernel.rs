//! The kernel-stack TCP uppercase server (`smoltalk tcp-server`) under many, idle, too many and non-reading
//! clients, on both its designs: the event loops (the default) and `--thread-per-client`.
//!
//! Each test runs the server inside a fresh network namespace that has only loopback, and makes its own client
//! sockets from a thread that joined that namespace, so a thousand connections touch nothing else on the
//! machine; the namespace is deleted when the test ends. Needs root and `ip`: skips with a reason elsewhere,
//! fails under `CI=true`.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::proxy::{Net, Proxy};
use support::*;

/// The designs every test runs on: the server's options for each.
const DESIGNS: [&[&str]; 2] = [&[], &["--thread-per-client"]];

/// Descriptors a test with a thousand clients needs: theirs, the server's thousand sockets, and some to spare.
const THOUSAND_CLIENTS: u64 = 2_500;
/// Descriptors the other tests need.
const A_FEW_CLIENTS: u64 = 256;

/// One test's namespace: loopback only.
struct Isolated {
    net: Net,
    // Last, so it is dropped (the namespace deleted) after everything the test started in it.
    ns: Namespace,
}

impl Isolated {
    /// A fresh namespace, or `None` (after saying why, or failing under CI) when this machine cannot make one or
    /// allow `open_files` descriptors.
    fn new(test: &str, open_files: u64) -> Option<Isolated> {
        // The client sockets are in this process and as many in the server, which inherits the limit: a thousand
        // of each is more than the usual soft limit of 1024 descriptors, so it is raised to the hard one.
        let allowed = smoltalk::sys::raise_open_files_limit().unwrap_or(0);
        if allowed < open_files {
            cannot_run(
                test,
                &format!("needs {open_files} open files, and `ulimit -Hn` allows {allowed}"),
            );
            return None;
        }
        let ns = namespace_or_skip(test, "kernel", &[])?;
        Some(Isolated {
            net: Net::Isolated(ns.name().to_owned()),
            ns,
        })
    }

    /// `smoltalk tcp-server --bind 127.0.0.1 --port 0` plus `extra`, inside the namespace, logging at info.
    fn server(&self, extra: &[&str]) -> Proxy {
        let mut args = vec!["tcp-server", "--bind", "127.0.0.1", "--port", "0"];
        args.extend_from_slice(extra);
        Proxy::start(smoltalk_in(&self.ns, &args), "127.0.0.1", self.net.clone())
    }

    /// `n` connections to `addr`, made inside the namespace, each with 10 s timeouts.
    fn connect_many(&self, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
        self.net.inside(move || {
            (0..n)
                .map(|i| {
                    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                        .unwrap_or_else(|e| panic!("connection {i} to {addr}: {e}"));
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    stream
                        .set_write_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    stream
                })
                .collect()
        })
    }
}

/// Sends `message` and reads its reply (as long as the message).
fn exchange(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(message)?;
    let mut reply = vec![0; message.len()];
    stream.read_exact(&mut reply)?;
    Ok(reply)
}

/// Reads until the server closes the connection (EOF or reset) or `limit` passes; returns the bytes read, or
/// `None` if the connection was still open at the limit.
fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A reset: closed.
            Err(_) => return Some(got),
        }
    }
}

/// The number of threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits (up to 10 s) until the server holds at least `n` sockets (its listeners included).
fn wait_for_sockets(server: &Proxy, n: usize) {
    let pid = server.server.child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_sockets(pid) < n {
        assert!(
            Instant::now() < deadline,
            "the server holds {} sockets, not {n}",
            open_sockets(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[cfg_attr(
    smoltalk_no_netns,
    ignore = "needs root and ip (a network namespace with only loopback)"
)]
fn a_thousand_idle_clients_are_held_while_a_new_one_is_served() {
    let Some(isolated) = Isolated::new(
        "a_thousand_idle_clients_are_held_while_a_new_one_is_served",
        THOUSAND_CLIENTS,
    ) else {
        return;
    };
    for design in DESIGNS {
        let server = isolated.server(design);
        let pid = server.server.child.id();
        let mut held = isolated.connect_many(server.addr(), 1000);
        wait_for_sockets(&server, 1000);

        let mut newcomer = isolated.connect_many(server.addr(), 1).remove(0);
        let reply = exchange(&mut newcomer, b"a new client, while 1000 idle").unwrap();
        assert_eq!(reply, b"A NEW CLIENT, WHILE 1000 IDLE", "{design:?}");

        // The design shows in the threads: a few event loops, or a thread per client.
        let threads = threads(pid);
        match design.is_empty() {
            true => assert!(threads <= 1 + 64, "{threads} threads for the event loops"),
            false => assert!(threads > 1000, "{threads} threads for 1001 clients"),
        }
        // Every one of the thousand was held, not dropped: each is still answered.
        for (i, stream) in held.iter_mut().enumerate() {
            let message = format!("held {i}");
            let reply = exchange(stream, message.as_bytes())
                .unwrap_or_else(|e| panic!("{design:?}: held client {i}: {e}"));
            assert_eq!(reply, message.to_uppercase().as_bytes(), "{design:?}");
        }
        drop(held);
        let (_, log) = server.stop();
        assert!(!log.contains("refused"), "{design:?}: {log}");
    }
}

#[test]
#[cfg_attr(
    smoltalk_no_netns,
    ignore = "needs root and ip (a network namespace with only loopback)"
)]
fn clients_over_the_cap_are_closed_at_once_and_the_refusals_logged() {
    let Some(isolated) = Isolated::new(
        "clients_over_the_cap_are_closed_at_once_and_the_refusals_logged",
        A_FEW_CLIENTS,
    ) else {
        return;
    };
    for design in DESIGNS {
        let mut args = vec!["--max-connections", "10"];
        args.extend_from_slice(design);
        let server = isolated.server(&args);
        let mut held = isolated.connect_many(server.addr(), 10);
        for stream in &mut held {
            assert_eq!(exchange(stream, b"held").unwrap(), b"HELD", "{design:?}");
        }

        // A hundred more: each is closed without a byte, none left waiting.
        let burst = Instant::now();
        let mut over = isolated.connect_many(server.addr(), 100);
        for (i, stream) in over.iter_mut().enumerate() {
            let _ = stream.write_all(b"let me in");
            let got = read_to_close(stream, Duration::from_secs(5));
            assert_eq!(
                got.as_deref(),
                Some(&b""[..]),
                "{design:?}: client {i} over the cap"
            );
        }
        // The refusals are logged: the first at once, the rest counted in one line.
        server.wait_log(&[
            "refused a client: 10 are served already",
            "more clients",
            "(100 since the start)",
        ]);
        // At most one line a second, and the first at once.
        let refusal_lines = server.log().matches("refused").count();
        let seconds = burst.elapsed().as_secs() as usize;
        assert!(
            refusal_lines <= 2 + seconds,
            "{design:?}: {refusal_lines} lines in {seconds} s: {}",
            server.log()
        );

        // The held ones are untouched.
        for stream in &mut held {
            assert_eq!(exchange(stream, b"still").unwrap(), b"STILL", "{design:?}");
        }
        // A client that leaves gives its place back.
        drop(held.pop());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut newcomer = isolated.connect_many(server.addr(), 1).remove(0);
            match exchange(&mut newcomer, b"my turn") {
                Ok(reply) => {
                    assert_eq!(reply, b"MY TURN");
                    break;
                }
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "{design:?}: the place of a client that left never came back: {e}"
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server.stop();
    }
}

#[test]
#[cfg_attr(
    smoltalk_no_netns,
    ignore = "needs root and ip (a network namespace with only loopback)"
)]
fn idle_clients_are_closed_after_the_idle_timeout_and_logged() {
    let Some(isolated) = Isolated::new(
        "idle_clients_are_closed_after_the_idle_timeout_and_logged",
        A_FEW_CLIENTS,
    ) else {
        return;
    };
    for design in DESIGNS {
        let mut args = vec!["--idle-timeout", "1"];
        args.extend_from_slice(design);
        let server = isolated.server(&args);
        let mut streams = isolated.connect_many(server.addr(), 2);
        let (mut idle, mut talker) = (streams.remove(0), streams.remove(0));

        assert_eq!(exchange(&mut idle, b"then quiet").unwrap(), b"THEN QUIET");
        let quiet_since = Instant::now();
        // The quiet one is watched on a thread of its own: when does the server close it?
        let watcher = std::thread::spawn(move || {
            let got = read_to_close(&mut idle, Duration::from_secs(5));
            (got, quiet_since.elapsed())
        });
        // A client that keeps talking is never idle, however long it stays.
        for i in 0..8 {
            let message = format!("talk {i}");
            let reply = exchange(&mut talker, message.as_bytes())
                .unwrap_or_else(|e| panic!("{design:?}: a talking client was closed: {e}"));
            assert_eq!(reply, message.to_uppercase().as_bytes());
            std::thread::sleep(Duration::from_millis(300));
        }
        // The quiet one was closed once a second had passed without a byte, and not before.
        let (got, closed_after) = watcher.join().unwrap();
        assert_eq!(
            got.as_deref(),
            Some(&b""[..]),
            "{design:?}: the idle client was not closed"
        );
        assert!(
            closed_after >= Duration::from_millis(900),
            "{design:?}: closed {closed_after:?} after its last byte"
        );
        server.wait_log(&["closed after 10 bytes: nothing moved for the idle timeout (1 s)"]);
        server.stop();
    }
}

#[test]
#[cfg_attr(
    smoltalk_no_netns,
    ignore = "needs root and ip (a network namespace with only loopback)"
)]
fn a_client_that_never_reads_its_replies_costs_the_server_no_more_than_one_read() {
    let Some(isolated) = Isolated::new(
        "a_client_that_never_reads_its_replies_costs_the_server_no_more_than_one_read",
        A_FEW_CLIENTS,
    ) else {
        return;
    };
    const CLIENTS: usize = 8;
    let pattern: Vec<u8> = b"never read, never lost: "
        .iter()
        .copied()
        .cycle()
        .take(64 * 1024)
        .collect();
    for design in DESIGNS {
        let server = isolated.server(design);
        let pid = server.server.child.id();
        let mut warm = isolated.connect_many(server.addr(), 1).remove(0);
        assert_eq!(exchange(&mut warm, b"warm").unwrap(), b"WARM");
        let before = rss_kib(pid);

        // Each client writes until the server stops reading from it (its writes block for half a second).
        let mut writers = isolated.connect_many(server.addr(), CLIENTS);
        let mut sent = vec![0usize; CLIENTS];
        for (stream, sent) in writers.iter_mut().zip(&mut sent) {
            stream.set_nonblocking(true).unwrap();
            let mut blocked_since: Option<Instant> = None;
            while blocked_since.is_none_or(|at| at.elapsed() < Duration::from_millis(500)) {
                match stream.write(&pattern[*sent % pattern.len()..]) {
                    Ok(n) => {
                        *sent += n;
                        blocked_since = None;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        blocked_since.get_or_insert_with(Instant::now);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("{design:?}: a writer failed: {e}"),
                }
            }
        }
        let total: usize = sent.iter().sum();
        let grown = rss_kib(pid).saturating_sub(before);
        // Everything the clients wrote sits in the kernel's socket buffers; the server itself holds at most one
        // read (64 KiB) per client.
        assert!(
            total >= CLIENTS * 512 * 1024,
            "{design:?}: only {total} bytes written"
        );
        assert!(
            grown <= 4 * 1024,
            "{design:?}: the server grew by {grown} KiB while {total} bytes waited for {CLIENTS} clients"
        );

        // Nothing was lost: each client, reading at last, gets every byte it sent, uppercased.
        for (i, (stream, sent)) in writers.iter_mut().zip(&sent).enumerate() {
            stream.set_nonblocking(false).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let reply = read_to_close(stream, Duration::from_secs(10))
                .unwrap_or_else(|| panic!("{design:?}: client {i}: the reply never ended"));
            assert_eq!(reply.len(), *sent, "{design:?}: client {i}");
            let expected = pattern.to_ascii_uppercase();
            assert!(
                reply
                    .chunks(pattern.len())
                    .all(|chunk| expected.starts_with(chunk)),
                "{design:?}: client {i}: a reply byte differs"
            );
        }
        server.stop();
    }
}

//! The embedded port: the riscv64 firmware example (`examples/firmware-riscv/`, the unchanged core on bare
//! metal with a virtio-net device) built, booted in QEMU with user networking restricted to the forwarded
//! loopback ports, and talked to by ordinary clients on 127.0.0.1. The uppercase tests need no root; without
//! QEMU, the riscv64gc target or tshark they are ignored with the reason; under `CI=true` they run.
//!
//! UDP replies cannot come back to the host: libslirp drops every UDP datagram a `restrict=on` guest sends,
//! forwarded replies included. So the UDP check reads QEMU's own capture of the guest's frames
//! (`filter-dump`): the request went in through the forwarded port, and the right reply went out.
//!
//! The proxy test runs QEMU, its HTTP origin and curl in a network namespace with only loopback (root needed;
//! skipped with the reason without it, failing under `CI=true`): curl reaches the board's proxy through a
//! `hostfwd`, and the board reaches the origin at 10.0.2.100:80 through a `guestfwd` whose command relays to
//! the origin on 127.0.0.1.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::firmware::{free_port, report_row, udp_replies, Build, Firmware};
use support::proxy::{
    assert_error_page, big_body, every_byte, header, seen, split_head, start_origin,
    without_proxy_settings, Net, SMALL,
};
use support::*;

/// The riscv64 firmware (`examples/firmware-riscv`).
const FIRMWARE: Firmware = Firmware {
    dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/firmware-riscv"),
    target: "riscv64gc-unknown-none-elf",
    name: "smoltalk-firmware-riscv",
};

/// QEMU running the firmware; killed (by its PID) when dropped.
struct Board {
    qemu: Child,
    uart: PathBuf,
    pcap: PathBuf,
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        let _ = std::fs::remove_file(&self.uart);
        let _ = std::fs::remove_file(&self.pcap);
    }
}

impl Board {
    /// Boots the uppercase service with TCP port `tcp` and UDP port `udp` on 127.0.0.1 forwarded to it.
    fn boot(elf: &Path, tcp: u16, udp: u16) -> Board {
        let forwards = format!(
            "hostfwd=tcp:127.0.0.1:{tcp}-10.0.2.15:12000,hostfwd=udp:127.0.0.1:{udp}-10.0.2.15:12000"
        );
        Board::boot_with(elf, &forwards, None, tcp, "uppercase on 10.0.2.15:12000")
    }

    /// Boots `elf` with user networking restricted to `forwards` (QEMU's `hostfwd`/`guestfwd` options), in
    /// namespace `ns` if given, and waits for the UART to say `ready`. `id` names its UART log and capture.
    fn boot_with(
        elf: &Path,
        forwards: &str,
        ns: Option<&Namespace>,
        id: u16,
        ready: &str,
    ) -> Board {
        let uart =
            std::env::temp_dir().join(format!("smoltalk-firmware-{}-{id}.log", std::process::id()));
        let pcap = uart.with_extension("pcap");
        let _ = std::fs::remove_file(&uart);
        // restrict=on: the guest reaches nothing but what is forwarded to it.
        let netdev = format!("user,id=n0,restrict=on,{forwards}");
        let mut qemu = match ns {
            // `ip netns exec` execs QEMU: the child's PID is QEMU's.
            Some(ns) => ns.command("qemu-system-riscv64", &[]),
            None => Command::new("qemu-system-riscv64"),
        };
        let qemu = qemu
            .args([
                "-machine", "virt", "-bios", "none", "-m", "64M", "-display", "none", "-monitor",
                "none",
            ])
            .args(["-global", "virtio-mmio.force-legacy=false"])
            .args(["-device", "virtio-net-device,netdev=n0", "-netdev", &netdev])
            .args([
                "-object",
                &format!("filter-dump,id=dump0,netdev=n0,file={}", pcap.display()),
            ])
            .args(["-serial", &format!("file:{}", uart.display())])
            .arg("-kernel")
            .arg(elf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qemu-system-riscv64");
        let board = Board { qemu, uart, pcap };
        board.wait_for(ready);
        board
    }

    /// What the firmware wrote on its UART so far.
    fn uart(&self) -> String {
        std::fs::read_to_string(&self.uart).unwrap_or_default()
    }

    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(&self.uart).unwrap_or_default();
            if log.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the firmware never said {needle:?}; its UART:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
#[cfg_attr(
    any(smoltalk_no_qemu, smoltalk_no_tshark),
    ignore = "needs qemu-system-riscv64, the riscv64gc-unknown-none-elf target and tshark"
)]
fn the_firmware_serves_uppercase_over_tcp_and_udp_in_qemu() {
    serves_uppercase(&FIRMWARE.build(Build::Full));
}

const FLASH: &str = "flash (.text + .rodata)";
const RAM_APART_FROM_DMA: &str =
    "static RAM apart from the driver's DMA (.data + .bss - DMA - receive buffers)";
const RAM_APART_FROM_DMA_AND_SOCKETS: &str =
    "static RAM apart from the driver's DMA and the socket buffers";

/// The lean builds (no `log`, no `core::fmt` of their own, UDP of one frame, 1 KiB TCP buffers) serve the
/// same, and fit their budgets (`examples/firmware-riscv/size.sh --lean [--proxy]`). The uppercase service
/// alone: flash (.text + .rodata) ≤ 40 KiB, static RAM apart from the driver's DMA pages and receive buffers
/// ≤ 16 KiB. With the proxy: flash ≤ 64 KiB, static RAM apart from those and the socket buffers ≤ 32 KiB.
#[test]
#[cfg_attr(
    any(smoltalk_no_qemu, smoltalk_no_tshark),
    ignore = "needs qemu-system-riscv64, the riscv64gc-unknown-none-elf target and tshark"
)]
fn the_lean_firmware_fits_the_size_budget_and_serves_the_same() {
    let elf = FIRMWARE.build(Build::Lean);
    let report = FIRMWARE.size_report(Build::Lean);
    let flash = report_row(&report, FLASH);
    let ram = report_row(&report, RAM_APART_FROM_DMA);
    assert!(
        flash <= 40 * 1024,
        "flash {flash} bytes > 40 KiB:\n{report}"
    );
    assert!(
        ram <= 16 * 1024,
        "static RAM {ram} bytes > 16 KiB:\n{report}"
    );
    serves_uppercase(&elf);

    let elf = FIRMWARE.build(Build::LeanProxy);
    let report = FIRMWARE.size_report(Build::LeanProxy);
    let flash = report_row(&report, FLASH);
    let ram = report_row(&report, RAM_APART_FROM_DMA_AND_SOCKETS);
    assert!(
        flash <= 64 * 1024,
        "lean,proxy: flash {flash} bytes > 64 KiB:\n{report}"
    );
    assert!(
        ram <= 32 * 1024,
        "lean,proxy: static RAM {ram} bytes > 32 KiB:\n{report}"
    );
    serves_uppercase(&elf);
}

/// Sends `payload` over a new connection to the forwarded port and reads its whole reply. smoltcp has no
/// listen backlog: while an earlier connection of the firmware's two is still closing, a new client is reset
/// (QEMU's forwarding turns the refusal into a reset), so a reset before any reply byte is tried again.
fn exchange(tcp: u16, payload: &[u8]) -> Vec<u8> {
    let mut last = None;
    for _ in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", tcp)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut writer = s.try_clone().unwrap();
        let sent = payload.to_vec();
        let sender = std::thread::spawn(move || writer.write_all(&sent));
        let mut reply = vec![0u8; payload.len()];
        let read = s.read_exact(&mut reply);
        let _ = sender.join();
        match read {
            Ok(()) => return reply,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no whole reply after 20 tries: {last:?}");
}

fn serves_uppercase(elf: &Path) {
    let (tcp, udp) = (free_port(), free_port());
    let board = Board::boot(elf, tcp, udp);

    // The ordinary client, through the forwarded port.
    let out = run({
        let mut cmd = smoltalk();
        cmd.args(["tcp-client", "127.0.0.1", &tcp.to_string(), "hello board"]);
        cmd
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "127.0.0.1 > HELLO BOARD\n");

    // Two clients at once (the firmware's pool is two connections), one of them binary.
    let binary: Vec<u8> = (0..4096u32).map(|i| (i % 256) as u8).collect();
    let text = b"two clients at once, both served".repeat(64);
    let clients: Vec<_> = [binary.clone(), text.clone()]
        .into_iter()
        .map(|payload| {
            std::thread::spawn(move || {
                let reply = exchange(tcp, &payload);
                (payload, reply)
            })
        })
        .collect();
    for client in clients {
        let (payload, reply) = client.join().unwrap();
        assert!(
            reply == upper(&payload),
            "a {}-byte reply differs",
            payload.len()
        );
    }

    // UDP: each datagram goes in through the forwarded port, and the firmware's reply (one per request, the
    // same length, uppercase) is in QEMU's capture of its frames.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let messages: [&[u8]; 2] = [b"hello over udp", &binary[..1024]];
    for message in messages {
        socket.send_to(message, ("127.0.0.1", udp)).unwrap();
    }
    let wanted: Vec<String> = messages.iter().map(|m| hex(&upper(m))).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let replies = udp_replies(&board.pcap);
        if wanted.iter().all(|w| replies.contains(w)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the firmware's UDP replies are not in the capture: {replies:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(board);
}

/// The `guestfwd` command's program: QEMU runs it for each connection the board opens to 10.0.2.100:80 and it
/// relays that connection to the origin on 127.0.0.1 (the port is its argument).
const PY_GUESTFWD_RELAY: &str = include_str!("../examples/firmware-riscv/guestfwd-relay.py");

/// curl, run in `net`, through the board's proxy on 127.0.0.1:`port`: the response's head (as text) and body.
fn curl_through(net: &Net, port: u16, args: &[&str]) -> (String, Vec<u8>) {
    match try_curl_through(net, port, args) {
        Ok(response) => response,
        Err(error) => panic!("curl {args:?}: {error}"),
    }
}

/// [`curl_through`], or curl's error.
fn try_curl_through(net: &Net, port: u16, args: &[&str]) -> Result<(String, Vec<u8>), String> {
    let body_file = std::env::temp_dir().join(format!(
        "smoltalk-firmware-{}-{port}-curl.out",
        std::process::id()
    ));
    let body_path = body_file.to_string_lossy().into_owned();
    let proxy = format!("http://127.0.0.1:{port}");
    let mut cmd = net.command(
        "curl",
        &[
            "-q",
            "-sS",
            "--max-time",
            "30",
            "--noproxy",
            "",
            "-x",
            &proxy,
            "-D",
            "-",
            "-o",
            &body_path,
        ],
    );
    cmd.args(args);
    without_proxy_settings(&mut cmd);
    let out = run(cmd);
    let body = std::fs::read(&body_file).unwrap_or_default();
    let _ = std::fs::remove_file(&body_file);
    match out.status.success() {
        true => Ok((stdout(&out), body)),
        false => Err(stderr(&out)),
    }
}

/// Holds both of the proxy's slots with two silent clients and returns what a third client is answered. A slot
/// stays busy for a moment after its last answer (the proxy reads and drops what the client still sends, for
/// `Limits::drain`), so a held client may land on the refuser instead (it is answered at once): then everything
/// is let go and tried again.
fn answer_beyond_the_slots(net: &Net, proxy: u16) -> Vec<u8> {
    let addr = SocketAddr::from(([127, 0, 0, 1], proxy));
    for _ in 0..10 {
        let held: Vec<TcpStream> = (0..2).map(|_| net.connect(addr)).collect();
        // Let the board take them.
        std::thread::sleep(Duration::from_millis(500));
        let answered = held.iter().any(|stream| {
            stream.set_nonblocking(true).expect("nonblocking");
            let mut byte = [0u8; 1];
            let quiet = matches!(
                (&*stream).read(&mut byte),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            );
            !quiet
        });
        if answered {
            drop(held);
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        let answer = net.inside(move || {
            let mut third =
                TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
            third
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let _ = third
                .write_all(b"GET http://10.0.2.100/small HTTP/1.1\r\nHost: 10.0.2.100\r\n\r\n");
            let mut answer = Vec::new();
            let _ = third.read_to_end(&mut answer);
            answer
        });
        drop(held);
        // Nothing at all: the refuser was still closing its last connection, and the client was reset.
        if !answer.is_empty() {
            return answer;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("two clients never held both slots of the proxy on 127.0.0.1:{proxy}");
}

/// The board's HTTP proxy on 10.0.2.15:8080, beside the uppercase service: curl fetches a page and bodies of
/// 64 KiB (both ways) and 1 MiB from an origin behind it, byte-exact and with the board's `Via`; a name (no
/// DNS on the board) is 502, an address outside 10.0.2.0/24 is 403, and a client beyond the two slots gets
/// 503. The default build, then the lean build with the proxy. Everything runs in a network namespace with
/// only loopback, and QEMU's user networking stays `restrict=on`: nothing can leave the machine.
#[test]
#[cfg_attr(
    any(smoltalk_no_qemu, smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs qemu-system-riscv64, the riscv64gc-unknown-none-elf target, root (a network namespace), \
              python3 and curl"
)]
fn the_firmware_proxies_http_to_an_origin_in_qemu() {
    let test = "the_firmware_proxies_http_to_an_origin_in_qemu";
    let Some(ns) = namespace_or_skip(test, "firmware", &["curl", "qemu-system-riscv64"]) else {
        return;
    };
    let net = Net::Isolated(ns.name().to_owned());
    let (_origin, origin_port) = start_origin(&net, None);
    let relay = temp_file("guestfwd-relay.py", PY_GUESTFWD_RELAY.as_bytes());
    for build in [Build::Full, Build::LeanProxy] {
        let elf = FIRMWARE.build(build);
        let (proxy, uppercase) = (free_port(), free_port());
        // The relay's path is the test's temporary file: no commas, which QEMU's option syntax would need
        // doubled.
        let forwards = format!(
            "hostfwd=tcp:127.0.0.1:{proxy}-10.0.2.15:8080,hostfwd=tcp:127.0.0.1:{uppercase}-10.0.2.15:12000,\
             guestfwd=tcp:10.0.2.100:80-cmd:python3 {} {origin_port}",
            relay.display()
        );
        let board = Board::boot_with(
            &elf,
            &forwards,
            Some(&ns),
            proxy,
            "http proxy on 10.0.2.15:8080",
        );
        serves_the_proxy(&board, build, &net, proxy, origin_port);

        // The uppercase service still answers beside it.
        let reply = net.inside(move || exchange(uppercase, b"beside the proxy"));
        assert_eq!(reply, b"BESIDE THE PROXY", "{build:?}");
        drop(board);
    }
    let _ = std::fs::remove_file(&relay);
}

fn serves_the_proxy(board: &Board, build: Build, net: &Net, proxy: u16, origin_port: u16) {
    let context = |what: &str| format!("{build:?}: {what}; the board's UART:\n{}", board.uart());

    // A page, with the board's Via, and the request as the origin got it: origin-form, with the Via too.
    let (head, body) = curl_through(net, proxy, &["http://10.0.2.100/small"]);
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        context(&head)
    );
    assert_eq!(header(&head, "via"), Some("1.1 smoltalk-board"), "{head}");
    assert_eq!(body, SMALL.as_bytes(), "{}", context("the page differs"));
    let requests = seen(net, origin_port);
    let request = requests
        .iter()
        .rev()
        .find(|r| r.contains("GET /small HTTP/1.1\r\n"))
        .unwrap_or_else(|| panic!("the origin never got GET /small: {requests:?}"));
    assert!(request.contains("Via: 1.1 smoltalk-board\r\n"), "{request}");
    assert!(
        !request.to_ascii_lowercase().contains("proxy-connection"),
        "{request}"
    );

    // 64 KiB of every byte value up to the origin and back (the origin echoes a POST's body).
    let payload = every_byte(256);
    let upload = temp_file(&format!("firmware-{proxy}-upload"), &payload);
    let data = format!("@{}", upload.display());
    let (head, body) = curl_through(
        net,
        proxy,
        &[
            "--data-binary",
            &data,
            "-H",
            "Content-Type: application/octet-stream",
            "http://10.0.2.100/echo",
        ],
    );
    let _ = std::fs::remove_file(&upload);
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        context(&head)
    );
    assert_eq!(header(&head, "x-body-length"), Some("65536"), "{head}");
    assert_eq!(header(&head, "via"), Some("1.1 smoltalk-board"), "{head}");
    assert!(body == payload, "{}", context("the 64 KiB body differs"));

    // 1 MiB down, far beyond every buffer on the board.
    let (head, body) = curl_through(net, proxy, &["http://10.0.2.100/big"]);
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        context(&head)
    );
    assert!(body == big_body(), "{}", context("the 1 MiB body differs"));

    // No DNS on the board: a name is 502. An address outside 10.0.2.0/24 is 403, and never tried.
    for (url, status) in [
        ("http://origin.test/small", "502 Bad Gateway"),
        ("http://192.0.2.1/", "403 Forbidden"),
    ] {
        let (head, body) = curl_through(net, proxy, &[url]);
        assert_error_page(&[head.as_bytes(), &body].concat(), status);
    }

    // Two clients hold both slots; a third is answered 503 by the refuser.
    let refused = answer_beyond_the_slots(net, proxy);
    assert_error_page(&refused, "503 Service Unavailable");
    let (head, _) = split_head(&refused);
    assert_eq!(header(&head, "retry-after"), Some("1"), "{head}");

    // Once the held clients are gone the slots serve again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = try_curl_through(net, proxy, &["http://10.0.2.100/small"]);
        if response.as_ref().is_ok_and(|(head, body)| {
            head.starts_with("HTTP/1.1 200 OK\r\n") && body == SMALL.as_bytes()
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            context(&format!("the slots did not come back: {response:?}"))
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The full build logs every exchange on its UART, as `smoltalk proxy` logs them.
    if build == Build::Full {
        board.wait_for("From 10.0.2.2 Request GET http://10.0.2.100/small HTTP/1.1");
        board.wait_for("To 10.0.2.2 Response HTTP/1.1 200 OK (from 10.0.2.100:80)");
        board.wait_for("From 10.0.2.2 Refused 503 Service Unavailable");
        // For docs/embedded.md: how deep the stack went (its last report, after these exchanges).
        let uart = board.uart();
        if let Some(line) = uart.lines().rev().find(|l| l.contains("stack high-water")) {
            eprintln!("{line}");
        }
    }
}

//! The second board: the Cortex-M3 firmware (`examples/firmware-cortex-m/`, the unchanged core on QEMU's
//! mps2-an385 with its LAN9118 Ethernet) built, booted, and talked to by ordinary clients through QEMU's `hostfwd`.
//!
//! QEMU, its user networking (always `restrict=on`: the guest reaches nothing but the forwarded ports) and every
//! client run in a network namespace with only loopback, which the test creates and deletes: root is needed.
//! Without it, `qemu-system-arm`, the `thumbv7m-none-eabi` target or tshark the tests are ignored (or skipped)
//! with the reason; under `CI=true` they run, and fail if they cannot.
//!
//! UDP replies cannot come back to the host: libslirp drops every UDP datagram a `restrict=on` guest sends,
//! forwarded replies included. So, as for the riscv board, the UDP check reads QEMU's own capture of the guest's
//! frames (`filter-dump`): the request went in through the forwarded port, and the right reply went out.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::firmware::{free_port, report_row, udp_replies, Build, Firmware};
use support::proxy::{header, seen, start_origin, Net, SMALL};
use support::*;

/// The Cortex-M3 firmware (`examples/firmware-cortex-m`).
const FIRMWARE: Firmware = Firmware {
    dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/firmware-cortex-m"),
    target: "thumbv7m-none-eabi",
    name: "smoltalk-firmware-cortex-m",
};

/// QEMU running the firmware in a namespace; killed (by its PID) when dropped.
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
    /// Boots `elf` in `ns` on user networking restricted to `forwards` (QEMU's `hostfwd`/`guestfwd` options), with
    /// a capture of the guest's frames, and waits for the UART to say `ready`. `id` names the UART log.
    fn boot(ns: &Namespace, elf: &Path, forwards: &str, id: u16, ready: &str) -> Board {
        let uart = std::env::temp_dir().join(format!(
            "smoltalk-firmware-cortex-m-{}-{id}.log",
            std::process::id()
        ));
        let pcap = uart.with_extension("pcap");
        let _ = std::fs::remove_file(&uart);
        // restrict=on: the guest reaches nothing but what is forwarded to it.
        let netdev = format!("user,id=n0,restrict=on,{forwards}");
        // `ip netns exec` execs QEMU: the child's PID is QEMU's.
        let qemu = ns
            .command("qemu-system-arm", &[])
            .args(["-M", "mps2-an385", "-display", "none", "-monitor", "none"])
            .args(["-net", "nic,netdev=n0", "-netdev", &netdev])
            .args([
                "-object",
                &format!("filter-dump,id=dump0,netdev=n0,file={}", pcap.display()),
            ])
            .args(["-serial", &format!("file:{}", uart.display())])
            .arg("-kernel")
            .arg(elf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-system-arm");
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
            let log = self.uart();
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

    /// Seconds of CPU time QEMU has used so far (user and system, from /proc).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.qemu.id()))
            .expect("QEMU's /proc stat");
        // The fields after the command name, which is in parentheses: utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / clock_ticks_per_second()
    }
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`).
fn clock_ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The uppercase service in `ns`: QEMU's forwards for TCP port `tcp` and UDP port `udp` on 127.0.0.1.
fn uppercase_forwards(tcp: u16, udp: u16) -> String {
    format!(
        "hostfwd=tcp:127.0.0.1:{tcp}-10.0.2.15:12000,hostfwd=udp:127.0.0.1:{udp}-10.0.2.15:12000"
    )
}

/// Sends `payload` over a new connection to the forwarded port (from inside `net`) and reads its whole reply.
/// smoltcp has no listen backlog: while an earlier connection of the firmware's two is still closing, a new
/// client is reset, so a reset before the whole reply is tried again.
fn exchange(net: &Net, tcp: u16, payload: &[u8]) -> Vec<u8> {
    let payload = payload.to_vec();
    net.inside(move || {
        let mut last = None;
        for _ in 0..20 {
            let mut s = TcpStream::connect(("127.0.0.1", tcp)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut writer = s.try_clone().unwrap();
            let sent = payload.clone();
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
    })
}

/// Clients that reset their connections while the board's sockets are closing: each sends its bytes, closes its
/// sending side (the board answers, then closes too) and at once resets. Two at a time, three rounds.
fn reset_while_closing(net: &Net, tcp: u16) {
    net.inside(move || {
        for _ in 0..3 {
            let clients: Vec<TcpStream> = (0..2)
                .filter_map(|_| TcpStream::connect(("127.0.0.1", tcp)).ok())
                .collect();
            for mut client in clients {
                let _ = client.write_all(&[b'r'; 2048]);
                let _ = client.shutdown(Shutdown::Write);
                let _ = smoltalk::sys::reset_on_close(&client);
                drop(client);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}

/// The uppercase service of the board in `ns`: TCP from the ordinary client through the forwarded port, two
/// clients at once (one of them 4 KiB of binary), UDP (seen in the capture), clients that reset while the
/// board's sockets close, and the service still answering after them.
fn serves_uppercase(ns: &Namespace, elf: &Path) -> Board {
    let net = Net::Isolated(ns.name().to_owned());
    let (tcp, udp) = (free_port(), free_port());
    let board = Board::boot(
        ns,
        elf,
        &uppercase_forwards(tcp, udp),
        tcp,
        "uppercase on 10.0.2.15:12000",
    );

    // The ordinary client, through the forwarded port.
    let out = run(smoltalk_in(
        ns,
        &["tcp-client", "127.0.0.1", &tcp.to_string(), "hello board"],
    ));
    assert!(out.status.success(), "{}\n{}", stderr(&out), board.uart());
    assert_eq!(stdout(&out), "127.0.0.1 > HELLO BOARD\n");

    // Two clients at once (the firmware's pool is two connections), one of them binary.
    let binary: Vec<u8> = (0..4096u32).map(|i| (i % 256) as u8).collect();
    let text = b"two clients at once, both served".repeat(64);
    let clients: Vec<_> = [binary.clone(), text.clone()]
        .into_iter()
        .map(|payload| {
            let net = net.clone();
            std::thread::spawn(move || {
                let reply = exchange(&net, tcp, &payload);
                (payload, reply)
            })
        })
        .collect();
    for client in clients {
        let (payload, reply) = client.join().unwrap();
        assert!(
            reply == upper(&payload),
            "a {}-byte reply differs; the board's UART:\n{}",
            payload.len(),
            board.uart()
        );
    }

    // UDP: each datagram goes in through the forwarded port, and the firmware's reply (one per request, the
    // same length, uppercase) is in QEMU's capture of its frames.
    let messages: Vec<Vec<u8>> = vec![b"hello over udp".to_vec(), binary[..1024].to_vec()];
    let sent = messages.clone();
    net.inside(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for message in &sent {
            socket.send_to(message, ("127.0.0.1", udp)).unwrap();
        }
    });
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

    // Clients that reset while the board closes its side; then the service answers as before, twice at once.
    reset_while_closing(&net, tcp);
    let after: Vec<_> = (0..2)
        .map(|i| {
            let net = net.clone();
            std::thread::spawn(move || {
                exchange(&net, tcp, format!("after the resets {i}").as_bytes())
            })
        })
        .collect();
    for (i, client) in after.into_iter().enumerate() {
        assert_eq!(
            client.join().unwrap(),
            format!("AFTER THE RESETS {i}").as_bytes(),
            "the board's UART:\n{}",
            board.uart()
        );
    }
    board
}

#[test]
#[cfg_attr(
    any(smoltalk_no_qemu_arm, smoltalk_no_netns, smoltalk_no_tshark),
    ignore = "needs qemu-system-arm, the thumbv7m-none-eabi target, root (a network namespace) and tshark"
)]
fn the_cortex_m_firmware_serves_uppercase_over_tcp_and_udp_in_qemu() {
    let test = "the_cortex_m_firmware_serves_uppercase_over_tcp_and_udp_in_qemu";
    let Some(ns) = namespace_or_skip(test, "firmware-m3", &["qemu-system-arm", "tshark"]) else {
        return;
    };
    let board = serves_uppercase(&ns, &FIRMWARE.build(Build::Full));
    let uart = board.uart();
    // The boot line: the LAN9118 found, its link up, and the core objects' sizes.
    assert!(
        uart.contains("LAN9118 (ID_REV 0x0118") && uart.contains("link up"),
        "{uart}"
    );
    assert!(uart.contains("sizes: Interface "), "{uart}");
    // The resets reached the board (the core logs them; QEMU's forwarding turns the clients' resets into resets).
    assert!(uart.contains("connection reset"), "{uart}");

    // Idle, QEMU sleeps: the firmware waits in `wfi` for TIMER0 or the LAN9118's interrupt.
    let before = board.cpu_seconds();
    std::thread::sleep(Duration::from_secs(5));
    let used = board.cpu_seconds() - before;
    eprintln!("QEMU idle: {used:.2} s of CPU over 5 s");
    assert!(used < 0.25, "QEMU used {used:.2} s of CPU over 5 s idle");
    drop(board);
}

/// The lean build (no `log`, no `core::fmt` of its own, UDP of one frame, 1 KiB TCP buffers) fits the issue's
/// budget on Thumb-2 — flash (.text + .rodata) ≤ 32 KiB, static RAM apart from the driver's buffers ≤ 16 KiB —
/// and serves the same.
#[test]
#[cfg_attr(
    any(smoltalk_no_qemu_arm, smoltalk_no_netns, smoltalk_no_tshark),
    ignore = "needs qemu-system-arm, the thumbv7m-none-eabi target, root (a network namespace) and tshark"
)]
fn the_lean_cortex_m_firmware_fits_the_size_budget_and_serves_the_same() {
    let test = "the_lean_cortex_m_firmware_fits_the_size_budget_and_serves_the_same";
    let Some(ns) = namespace_or_skip(test, "firmware-m3", &["qemu-system-arm", "tshark"]) else {
        return;
    };
    let elf = FIRMWARE.build(Build::Lean);
    let report = FIRMWARE.size_report(Build::Lean);
    let flash = report_row(&report, "flash (.text + .rodata)");
    let ram = report_row(&report, "static RAM apart from the driver's buffers");
    eprintln!("lean Cortex-M3 build: flash {flash} bytes, static RAM apart from the driver's buffers {ram} bytes");
    assert!(
        flash <= 32 * 1024,
        "flash {flash} bytes > 32 KiB:\n{report}"
    );
    assert!(
        ram <= 16 * 1024,
        "static RAM {ram} bytes > 16 KiB:\n{report}"
    );
    drop(serves_uppercase(&ns, &elf));
}

/// The `guestfwd` command's program: QEMU runs it for each connection the board opens to 10.0.2.100:80 and it
/// relays that connection to the origin on 127.0.0.1 (the port is its argument).
const PY_GUESTFWD_RELAY: &str = include_str!("../examples/firmware-riscv/guestfwd-relay.py");

/// curl, run in `net`, through the board's proxy on 127.0.0.1:`port`: the response's head (as text) and body.
fn curl_through(net: &Net, port: u16, args: &[&str]) -> (String, Vec<u8>) {
    let body_file = std::env::temp_dir().join(format!(
        "smoltalk-firmware-cortex-m-{}-{port}-curl.out",
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
    support::proxy::without_proxy_settings(&mut cmd);
    let out = run(cmd);
    let body = std::fs::read(&body_file).unwrap_or_default();
    let _ = std::fs::remove_file(&body_file);
    assert!(out.status.success(), "curl {args:?}: {}", stderr(&out));
    (stdout(&out), body)
}

/// The board's HTTP proxy on 10.0.2.15:8080 beside the uppercase service, the default build and then the lean
/// build with the proxy: curl fetches a page from an origin behind it (reached through a `guestfwd`) with the
/// board's `Via`, sends 64 KiB of every byte value up and gets them back, and an address outside 10.0.2.0/24 is
/// 403. Everything in a network namespace with only loopback.
#[test]
#[cfg_attr(
    any(smoltalk_no_qemu_arm, smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs qemu-system-arm, the thumbv7m-none-eabi target, root (a network namespace), python3 and curl"
)]
fn the_cortex_m_firmware_proxies_http_to_an_origin_in_qemu() {
    let test = "the_cortex_m_firmware_proxies_http_to_an_origin_in_qemu";
    let Some(ns) = namespace_or_skip(test, "firmware-m3", &["curl", "qemu-system-arm"]) else {
        return;
    };
    let net = Net::Isolated(ns.name().to_owned());
    let (_origin, origin_port) = start_origin(&net, None);
    let relay = temp_file("cortex-m-guestfwd-relay.py", PY_GUESTFWD_RELAY.as_bytes());
    for build in [Build::Full, Build::LeanProxy] {
        let elf = FIRMWARE.build(build);
        let (proxy, uppercase) = (free_port(), free_port());
        let forwards = format!(
            "hostfwd=tcp:127.0.0.1:{proxy}-10.0.2.15:8080,hostfwd=tcp:127.0.0.1:{uppercase}-10.0.2.15:12000,\
             guestfwd=tcp:10.0.2.100:80-cmd:python3 {} {origin_port}",
            relay.display()
        );
        let board = Board::boot(&ns, &elf, &forwards, proxy, "http proxy on 10.0.2.15:8080");
        let context =
            |what: &str| format!("{build:?}: {what}; the board's UART:\n{}", board.uart());

        let (head, body) = curl_through(&net, proxy, &["http://10.0.2.100/small"]);
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n"),
            "{}",
            context(&head)
        );
        assert_eq!(header(&head, "via"), Some("1.1 smoltalk-board"), "{head}");
        assert_eq!(body, SMALL.as_bytes(), "{}", context("the page differs"));
        let requests = seen(&net, origin_port);
        assert!(
            requests
                .iter()
                .any(|r| r.contains("GET /small HTTP/1.1\r\n")
                    && r.contains("Via: 1.1 smoltalk-board\r\n")),
            "{requests:?}"
        );

        let payload = support::proxy::every_byte(256);
        let upload = temp_file(&format!("cortex-m-{proxy}-upload"), &payload);
        let data = format!("@{}", upload.display());
        let (head, body) = curl_through(
            &net,
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
        assert!(body == payload, "{}", context("the 64 KiB body differs"));

        let (head, _) = curl_through(&net, proxy, &["http://192.0.2.1/"]);
        assert!(head.starts_with("HTTP/1.1 403"), "{}", context(&head));

        // The uppercase service still answers beside it.
        assert_eq!(
            exchange(&net, uppercase, b"beside the proxy"),
            b"BESIDE THE PROXY",
            "{build:?}"
        );
        drop(board);
    }
    let _ = std::fs::remove_file(&relay);
}

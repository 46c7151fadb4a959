//! The embedded port: the riscv64 firmware example (`examples/firmware-riscv/`, the unchanged core on bare
//! metal with a virtio-net device) built, booted in QEMU with user networking restricted to the forwarded
//! loopback ports, and talked to by ordinary clients on 127.0.0.1. No root needed. Without QEMU, the
//! riscv64gc target or tshark the test is ignored with the reason; under `CI=true` it runs.
//!
//! UDP replies cannot come back to the host: libslirp drops every UDP datagram a `restrict=on` guest sends,
//! forwarded replies included. So the UDP check reads QEMU's own capture of the guest's frames
//! (`filter-dump`): the request went in through the forwarded port, and the right reply went out.

mod support;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const FIRMWARE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/firmware-riscv");

/// The firmware's ELF, built in release mode for riscv64gc: the full build, or with `lean` the one the size
/// budget is for.
fn build_firmware(lean: bool) -> PathBuf {
    // Each build in its own target folder (as size.sh does), so the two tests never overwrite each other's ELF.
    let target = if lean { "target/lean" } else { "target" };
    let mut args = vec![
        "build",
        "--release",
        "--target",
        "riscv64gc-unknown-none-elf",
        "--target-dir",
        target,
    ];
    if lean {
        args.extend(["--no-default-features", "--features", "lean"]);
    }
    let out = Command::new("cargo")
        .args(&args)
        .current_dir(FIRMWARE)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "the firmware does not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = std::fs::read_to_string(Path::new(FIRMWARE).join("Cargo.toml")).unwrap();
    let name = manifest
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("name = ")
                .map(|n| n.trim_matches('"').to_string())
        })
        .expect("the firmware's package name");
    Path::new(FIRMWARE)
        .join(target)
        .join("riscv64gc-unknown-none-elf/release")
        .join(name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    fn boot(elf: &Path, tcp: u16, udp: u16) -> Board {
        let uart = std::env::temp_dir().join(format!(
            "smoltalk-firmware-{}-{tcp}.log",
            std::process::id()
        ));
        let pcap = uart.with_extension("pcap");
        let _ = std::fs::remove_file(&uart);
        // restrict=on: the guest reaches nothing but what is forwarded to it.
        let netdev = format!(
            "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{tcp}-10.0.2.15:12000,hostfwd=udp:127.0.0.1:{udp}-10.0.2.15:12000"
        );
        let qemu = Command::new("qemu-system-riscv64")
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
        board.wait_for("uppercase on 10.0.2.15:12000");
        board
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The payloads (hex) of the UDP datagrams the firmware sent from port 12000, as tshark reads QEMU's capture.
fn udp_replies(pcap: &Path) -> Vec<String> {
    let out = Command::new("tshark")
        .args([
            "-r",
            &pcap.to_string_lossy(),
            "-Y",
            "ip.src == 10.0.2.15 && udp.srcport == 12000",
        ])
        .args(["-T", "fields", "-e", "udp.payload"])
        .output()
        .expect("run tshark");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.replace(':', ""))
        .collect()
}

fn upper(bytes: &[u8]) -> Vec<u8> {
    bytes.to_ascii_uppercase()
}

#[test]
#[cfg_attr(
    any(smoltalk_no_qemu, smoltalk_no_tshark),
    ignore = "needs qemu-system-riscv64, the riscv64gc-unknown-none-elf target and tshark"
)]
fn the_firmware_serves_uppercase_over_tcp_and_udp_in_qemu() {
    serves_uppercase(&build_firmware(false));
}

/// The lean build (no `log`, no `core::fmt`, UDP of one frame, 1 KiB TCP buffers) serves the same, and fits
/// the budget: flash (.text + .rodata) ≤ 40 KiB, static RAM apart from the driver's DMA pages and receive
/// buffers ≤ 16 KiB (`examples/firmware-riscv/size.sh --lean`).
#[test]
#[cfg_attr(
    any(smoltalk_no_qemu, smoltalk_no_tshark),
    ignore = "needs qemu-system-riscv64, the riscv64gc-unknown-none-elf target and tshark"
)]
fn the_lean_firmware_fits_the_size_budget_and_serves_the_same() {
    let elf = build_firmware(true);
    let report = Command::new("sh")
        .arg(Path::new(FIRMWARE).join("size.sh"))
        .arg("--lean")
        .output()
        .expect("run size.sh");
    let report = String::from_utf8_lossy(&report.stdout).into_owned();
    let bold = |label: &str| -> u64 {
        let line = report
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("{label}: {report}"));
        line.rsplit('|')
            .nth(1)
            .unwrap()
            .trim()
            .trim_matches('*')
            .replace(',', "")
            .parse()
            .unwrap()
    };
    let flash = bold("flash (.text + .rodata)");
    let ram = bold("static RAM apart from the driver's DMA");
    assert!(
        flash <= 40 * 1024,
        "flash {flash} bytes > 40 KiB:\n{report}"
    );
    assert!(
        ram <= 16 * 1024,
        "static RAM {ram} bytes > 16 KiB:\n{report}"
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

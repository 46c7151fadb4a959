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

/// The firmware's ELF, built in release mode for riscv64gc.
fn build_firmware() -> PathBuf {
    let out = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "riscv64gc-unknown-none-elf",
        ])
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
        .join("target/riscv64gc-unknown-none-elf/release")
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
        let uart =
            std::env::temp_dir().join(format!("smoltalk-firmware-{}.log", std::process::id()));
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
    let elf = build_firmware();
    let (tcp, udp) = (free_port(), free_port());
    let board = Board::boot(&elf, tcp, udp);

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
                let mut s = TcpStream::connect(("127.0.0.1", tcp)).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut writer = s.try_clone().unwrap();
                let sent = payload.clone();
                let sender = std::thread::spawn(move || writer.write_all(&sent));
                let mut reply = vec![0u8; payload.len()];
                s.read_exact(&mut reply).expect("the whole reply");
                sender.join().unwrap().unwrap();
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

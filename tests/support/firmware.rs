//! What the firmware tests share (`tests/firmware.rs` for the riscv64 board, `tests/firmware_cortex_m.rs` for
//! the Cortex-M3 one): a firmware crate ([`Firmware`]) and its three builds ([`Build`]), built one at a time
//! and measured by its `size.sh`, and reading what the board answered from QEMU's capture.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// A firmware crate under `examples/`.
#[derive(Debug, Clone, Copy)]
pub struct Firmware {
    /// Its folder.
    pub dir: &'static str,
    /// The Rust target it is built for.
    pub target: &'static str,
    /// Its package's name, which is its ELF's.
    pub name: &'static str,
}

/// The builds of a firmware (its `size.sh` builds and measures the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// The default features: logging, fragmentation, the uppercase service and the proxy.
    Full,
    /// `--no-default-features --features lean`: the uppercase service only, the first size budget.
    Lean,
    /// `--no-default-features --features lean,proxy`: the lean build with the proxy, the second size budget.
    LeanProxy,
}

impl Build {
    /// Each build in its own target folder (as size.sh does), so tests never overwrite each other's ELF.
    fn target_dir(self) -> &'static str {
        match self {
            Build::Full => "target",
            Build::Lean => "target/lean",
            Build::LeanProxy => "target/lean-proxy",
        }
    }

    fn features(self) -> &'static [&'static str] {
        match self {
            Build::Full => &[],
            Build::Lean => &["--no-default-features", "--features", "lean"],
            Build::LeanProxy => &["--no-default-features", "--features", "lean,proxy"],
        }
    }

    /// size.sh's arguments for this build.
    fn size_args(self) -> &'static [&'static str] {
        match self {
            Build::Full => &[],
            Build::Lean => &["--lean"],
            Build::LeanProxy => &["--lean", "--proxy"],
        }
    }
}

/// One firmware build at a time. The builds' target folders nest (`target/lean` in `target`), and cargo makes a
/// missing target folder by renaming a fresh one into place: two first builds at once on a fresh clone raced,
/// one replacing the folder the other had just made ("No such file or directory ... target/lean"). One at a
/// time, they also do not fight over the cores for their LTO.
static BUILDING: Mutex<()> = Mutex::new(());

impl Firmware {
    /// The firmware's ELF for `build`, built in release mode for its target.
    pub fn build(&self, build: Build) -> PathBuf {
        // A test that panicked while building leaves the lock poisoned; the next build is as good as ever.
        let _one_at_a_time = BUILDING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let target_dir = build.target_dir();
        let mut args = vec![
            "build",
            "--release",
            "--target",
            self.target,
            "--target-dir",
            target_dir,
        ];
        args.extend(build.features());
        let out = Command::new("cargo")
            .args(&args)
            .current_dir(self.dir)
            .env_remove("RUSTFLAGS")
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "{} does not build:\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        Path::new(self.dir)
            .join(target_dir)
            .join(self.target)
            .join("release")
            .join(self.name)
    }

    /// size.sh's report for `build` (it builds it first).
    pub fn size_report(&self, build: Build) -> String {
        let out = Command::new("sh")
            .arg(Path::new(self.dir).join("size.sh"))
            .args(build.size_args())
            .output()
            .expect("run size.sh");
        assert!(
            out.status.success(),
            "size.sh {:?} failed:\n{}",
            build.size_args(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The bytes size.sh's `report` gives on the row whose label starts with `label` (bold rows: `**label`).
pub fn report_row(report: &str, label: &str) -> u64 {
    let line = report
        .lines()
        .find(|l| {
            l.strip_prefix("| ")
                .is_some_and(|row| row.trim_start_matches('*').starts_with(label))
        })
        .unwrap_or_else(|| panic!("no row {label:?} in:\n{report}"));
    line.rsplit('|')
        .nth(1)
        .unwrap()
        .trim()
        .trim_matches('*')
        .replace(',', "")
        .parse()
        .unwrap()
}

/// A port on 127.0.0.1 free now, for a `hostfwd`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The payloads (hex) of the UDP datagrams the firmware sent from port 12000, as tshark reads QEMU's capture.
pub fn udp_replies(pcap: &Path) -> Vec<String> {
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

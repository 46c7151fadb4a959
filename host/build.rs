//! Marks the tests that cannot run on this machine as ignored, with the reason, so the test summary counts
//! them as ignored rather than passed: the namespace tests need root, /dev/net/tun, `ip` and `ping`; the
//! interop tests need `python3`; the proxy tests need `curl` (and `openssl` for the TLS tunnel); the browser
//! test needs `chromium`; the firmware tests need QEMU and the firmware's Rust target (`qemu-system-riscv64`
//! and `riscv64gc-unknown-none-elf`, `qemu-system-arm` and `thumbv7m-none-eabi`). Under CI (`CI=true`) nothing
//! is marked: there they must run, and fail if they cannot.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(smoltalk_no_netns)");
    println!("cargo::rustc-check-cfg=cfg(smoltalk_no_python)");
    println!("cargo::rustc-check-cfg=cfg(smoltalk_no_curl)");
    println!("cargo::rustc-check-cfg=cfg(smoltalk_no_chromium)");
    println!("cargo::rustc-check-cfg=cfg(smoltalk_no_tshark)");
    println!("cargo::rustc-check-cfg=cfg(smoltalk_no_qemu)");
    println!("cargo::rustc-check-cfg=cfg(smoltalk_no_qemu_arm)");
    for var in ["CI", "USER", "HOME", "SUDO_UID", "PATH"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        return;
    }
    let netns_ready = running_as_root()
        && std::path::Path::new("/dev/net/tun").exists()
        && on_path("ip")
        && on_path("ping")
        && on_path("python3");
    if !netns_ready {
        println!("cargo::rustc-cfg=smoltalk_no_netns");
    }
    if !on_path("python3") {
        println!("cargo::rustc-cfg=smoltalk_no_python");
    }
    if !(on_path("curl") && on_path("openssl") && on_path("python3")) {
        println!("cargo::rustc-cfg=smoltalk_no_curl");
    }
    let riscv_target = std::process::Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("riscv64gc-unknown-none-elf"));
    if !(on_path("qemu-system-riscv64") && riscv_target) {
        println!("cargo::rustc-cfg=smoltalk_no_qemu");
    }
    let installed_target = |target: &str| {
        std::process::Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(target))
    };
    if !(on_path("qemu-system-arm") && installed_target("thumbv7m-none-eabi")) {
        println!("cargo::rustc-cfg=smoltalk_no_qemu_arm");
    }
    if !on_path("tshark") {
        println!("cargo::rustc-cfg=smoltalk_no_tshark");
    }
    if !(on_path("chromium") && on_path("python3")) {
        println!("cargo::rustc-cfg=smoltalk_no_chromium");
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn running_as_root() -> bool {
    // The effective UID is the second field of the "Uid:" line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

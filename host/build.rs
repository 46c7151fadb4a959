//! Marks the tests that need root as ignored (with the reason, so the test summary counts them as ignored, not
//! passed) when the build runs unprivileged — except under CI (`CI=true`), where they must run and fail.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(smoltalk_unprivileged)");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=USER");
    println!("cargo::rerun-if-env-changed=HOME");
    println!("cargo::rerun-if-env-changed=SUDO_UID");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !ci && !running_as_root() {
        println!("cargo::rustc-cfg=smoltalk_unprivileged");
    }
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

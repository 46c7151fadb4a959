//! The results of `smoltalk lab`'s checks ([`CheckResult`], [`LabReport`]) and the report people read.

use std::fmt::Write as _;

use smoltcp::time::Duration;

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// What was checked.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was sent and what came back, in a line.
    pub detail: String,
    /// Frames on the segment during the check.
    pub packets: u64,
    /// Virtual time the check took.
    pub virtual_time: Duration,
    /// Real time the check took.
    pub wall_time: std::time::Duration,
}

/// Everything `smoltalk lab` found.
#[derive(Debug, Clone)]
pub struct LabReport {
    /// What the lab was (its first line).
    pub title: String,
    /// Each check, in order.
    pub checks: Vec<CheckResult>,
    /// Frames on the segment in all.
    pub packets: u64,
    /// Bytes on the segment in all.
    pub bytes: u64,
    /// Virtual time in all.
    pub virtual_time: Duration,
    /// Real time the whole run took.
    pub wall_time: std::time::Duration,
}

impl LabReport {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The report as people read it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.title);
        for check in &self.checks {
            let _ = writeln!(
                out,
                "  {} {:<54} {:>5} packets {:>6.3} s virtual {:>7.2} ms real\n         {}",
                if check.passed { "ok  " } else { "FAIL" },
                check.name,
                check.packets,
                check.virtual_time.total_micros() as f64 / 1e6,
                check.wall_time.as_secs_f64() * 1e3,
                check.detail
            );
        }
        let passed = self.checks.iter().filter(|c| c.passed).count();
        let _ = writeln!(
            out,
            "{passed} of {} checks held; {} packets, {} bytes on the segment; {:.3} s virtual time, {:.3} s real time",
            self.checks.len(),
            self.packets,
            self.bytes,
            self.virtual_time.total_micros() as f64 / 1e6,
            self.wall_time.as_secs_f64()
        );
        out
    }
}

/// Shows up to 32 bytes of a message, escaping what is not printable ASCII.
pub fn preview(bytes: &[u8]) -> String {
    let mut shown = String::new();
    let mut taken = 0;
    for byte in bytes {
        if shown.len() >= 28 {
            break;
        }
        shown.extend(std::ascii::escape_default(*byte).map(char::from));
        taken += 1;
    }
    if taken < bytes.len() {
        let _ = write!(shown, "… ({} bytes)", bytes.len());
    }
    format!("\"{shown}\"")
}

//! [`KernelThread`]: the TUN/TAP device's threaded NAPI, which lets a kernel thread take in the frames smoltalk
//! writes, switched on while it pays (several busy connections) and given back when the device is closed.
//!
//! A frame written to TUN/TAP is taken into the kernel's stack by the writing thread itself: the kernel's TCP
//! receive work for the peer (queueing the data, waking the reader, sending what the ACK lets it send) runs on
//! smoltalk's one thread, between smoltcp's own work. With one busy connection that costs little: the peer is
//! mostly inside `recv` on its own socket, so the kernel leaves the work in the socket's backlog for the peer's
//! thread. With several, the peer sleeps in `poll` between them and all of it lands on smoltalk's thread, which
//! then runs out of CPU first (profiled: `write` to the device 36 % of the server's time with one connection,
//! 56 % with four). In NAPI mode (`IFF_NAPI`, asked for when the device is opened) with threaded NAPI
//! (`/sys/class/net/DEV/threaded`, root only), a kernel thread does that work on whichever CPU is free; but it
//! hands every frame over, which costs a single connection about a fifth of its speed (BENCHMARKS.md). So in
//! [`KernelThreadMode::Auto`] the device counts the TCP payload it writes per connection over short windows and
//! switches the thread on while two or more connections are busy sending from smoltcp (data the peer uploads
//! does not count: smoltcp writes only ACKs for it), off again once at most one is.

use smoltcp::time::{Duration, Instant};

use crate::stack::offload;

/// When a kernel thread takes in the frames written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelThreadMode {
    /// Never: smoltalk's thread does the kernel's receive work (as without NAPI mode).
    Off,
    /// While two or more connections are busy (see the module's documentation).
    Auto,
    /// Always.
    On,
}

/// How long the device counts before it decides.
const WINDOW: Duration = Duration::from_millis(50);
/// Payload bytes written for one connection in a [`WINDOW`] that make it busy (about 170 Mbit/s).
const BUSY_BYTES: u64 = 1 << 20;
/// Windows in a row with at most one busy connection before the thread is switched off again.
const QUIET_WINDOWS: u8 = 4;
/// Connections counted per window (more only count as "several").
const FLOWS: usize = 8;

/// The device's threaded NAPI while smoltalk holds it (see the module's documentation).
pub struct KernelThread {
    name: String,
    path: String,
    /// The setting before smoltalk changed it, to give back.
    before: String,
    mode: KernelThreadMode,
    on: bool,
    window_start: Option<Instant>,
    /// TCP payload bytes written per connection (its ports) in this window.
    flows: [(u32, u64); FLOWS],
    quiet: u8,
}

/// The device's threaded-NAPI switch in sysfs.
fn switch_path(name: &str) -> String {
    format!("/sys/class/net/{name}/threaded")
}

impl KernelThread {
    /// Whether this process may switch the threaded NAPI of device `name` (about to be opened): the device's
    /// switch is writable, or the device does not exist yet and this process is root (it will create it).
    /// Without the right (it needs `CAP_NET_ADMIN`) the device is opened without NAPI mode, and this says so.
    pub fn may_switch(name: &str) -> bool {
        let path = switch_path(name);
        let allowed = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => crate::sys::is_root(),
            Err(_) => false,
        };
        if !allowed {
            // Expected without root: worth a line, not a warning.
            log::info!(
                "{name}: no kernel thread (switching threaded NAPI needs root): the kernel's receive work stays \
                 on smoltalk's thread, which is slower with several busy connections"
            );
        }
        allowed
    }

    /// Takes the setting of device `name` (opened in NAPI mode) for `mode`; `None`, after saying why, if the
    /// kernel does not let this process change it or `mode` is off.
    pub fn start(name: &str, mode: KernelThreadMode) -> Option<KernelThread> {
        if mode == KernelThreadMode::Off {
            return None;
        }
        let path = switch_path(name);
        let before = match std::fs::read_to_string(&path) {
            Ok(before) => before.trim().to_string(),
            Err(e) => {
                log::info!("{name}: cannot read {path} ({e}): no kernel thread");
                return None;
            }
        };
        let mut thread = KernelThread {
            name: name.to_string(),
            path,
            before,
            mode,
            on: false,
            window_start: None,
            flows: [(0, 0); FLOWS],
            quiet: 0,
        };
        // Start from a known setting: on for `On`, off for `Auto` (one connection is the common start).
        if let Err(e) = thread.write(mode == KernelThreadMode::On) {
            log::warn!(
                "{name}: cannot switch threaded NAPI ({e}): the kernel's receive work stays on smoltalk's thread"
            );
            return None;
        }
        Some(thread)
    }

    fn write(&mut self, on: bool) -> std::io::Result<()> {
        std::fs::write(&self.path, if on { "1" } else { "0" })?;
        self.on = on;
        Ok(())
    }

    /// Whether the kernel thread is on now.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// When it is switched on.
    pub fn mode(&self) -> KernelThreadMode {
        self.mode
    }

    /// Counts a frame written at `now` (`l3` bytes of link header, then IP); in [`KernelThreadMode::Auto`],
    /// decides at the end of each window.
    pub fn observe(&mut self, frame: &[u8], l3: usize, now: Instant) {
        if self.mode != KernelThreadMode::Auto {
            return;
        }
        let start = *self.window_start.get_or_insert(now);
        if let Some((flow, payload)) = offload::tcp_payload(frame, l3) {
            if let Some(slot) = self
                .flows
                .iter_mut()
                .find(|(key, bytes)| *key == flow || *bytes == 0)
            {
                *slot = (flow, slot.1 + payload as u64);
            }
        }
        if now < start + WINDOW {
            return;
        }
        // Staying on takes half the rate: a load that hovers at the threshold does not flip the switch (each
        // flip takes the kernel's rtnl lock) every few windows.
        let threshold = if self.on { BUSY_BYTES / 2 } else { BUSY_BYTES };
        // Whole windows that went by without a frame were quiet ones; after long enough a pause, what was
        // counted before it says nothing about now.
        let silent = (now - start).total_millis() / WINDOW.total_millis() - 1;
        let busy = if silent >= u64::from(QUIET_WINDOWS) {
            0
        } else {
            self.flows.iter().filter(|(_, b)| *b >= threshold).count()
        };
        self.flows = [(0, 0); FLOWS];
        self.window_start = Some(now);
        let want = if busy >= 2 {
            self.quiet = 0;
            true
        } else if self.on {
            let windows = u8::try_from(silent.saturating_add(1)).unwrap_or(u8::MAX);
            self.quiet = self.quiet.saturating_add(windows);
            self.quiet < QUIET_WINDOWS
        } else {
            false
        };
        if want != self.on {
            match self.write(want) {
                Ok(()) => log::debug!(
                    "{}: {busy} busy connection(s): kernel receive thread {}",
                    self.name,
                    if want { "on" } else { "off" }
                ),
                Err(e) => {
                    log::warn!("{}: cannot switch threaded NAPI any more ({e})", self.name);
                    self.mode = KernelThreadMode::Off;
                }
            }
        }
    }
}

impl Drop for KernelThread {
    fn drop(&mut self) {
        if self.before != if self.on { "1" } else { "0" } {
            let _ = std::fs::write(&self.path, &self.before);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 TCP segment from port `src` to 12000 with `payload` bytes (zeros; only the headers are read).
    fn segment(src: u16, payload: u16) -> Vec<u8> {
        let mut f = vec![0u8; 40 + usize::from(payload)];
        f[0] = 0x45;
        f[2..4].copy_from_slice(&(40 + payload).to_be_bytes());
        f[9] = 6;
        f[20..22].copy_from_slice(&src.to_be_bytes());
        f[22..24].copy_from_slice(&12000u16.to_be_bytes());
        f[32] = 5 << 4;
        f
    }

    /// A policy in `Auto` whose sysfs switch is the file at `path`.
    fn auto(path: &std::path::Path) -> KernelThread {
        std::fs::write(path, "0").expect("switch file");
        KernelThread {
            name: "t".into(),
            path: path.to_string_lossy().into_owned(),
            before: "0".into(),
            mode: KernelThreadMode::Auto,
            on: false,
            window_start: None,
            flows: [(0, 0); FLOWS],
            quiet: 0,
        }
    }

    #[test]
    fn two_busy_connections_switch_the_thread_on_and_one_switches_it_off_again() {
        let path = std::env::temp_dir().join(format!("smoltalk-threaded-{}", std::process::id()));
        let switch = || std::fs::read_to_string(&path).expect("switch file");
        let mut t = auto(&path);
        let mut now = Instant::from_millis(0);
        let run =
            |t: &mut KernelThread, now: &mut Instant, ports: &[u16], payload: u16, millis: u64| {
                for _ in 0..millis / 2 {
                    for port in ports {
                        t.observe(&segment(*port, payload), 0, *now);
                    }
                    *now += Duration::from_millis(2);
                }
            };
        // One busy connection, and two that are not busy: off.
        run(&mut t, &mut now, &[40000], 65000, 400);
        run(&mut t, &mut now, &[40000, 40001], 100, 400);
        assert_eq!((t.is_on(), switch().as_str()), (false, "0"));
        // Two busy ones: on within a window or two.
        run(&mut t, &mut now, &[40000, 40001], 65000, 120);
        assert_eq!((t.is_on(), switch().as_str()), (true, "1"));
        // Back to one: still on for a few windows (no flapping), then off.
        run(&mut t, &mut now, &[40000], 65000, 100);
        assert!(t.is_on());
        run(&mut t, &mut now, &[40000], 65000, 300);
        assert_eq!((t.is_on(), switch().as_str()), (false, "0"));
        // After a pause (no frame for a second), one frame is enough to see that the load went.
        run(&mut t, &mut now, &[40000, 40001], 65000, 120);
        assert!(t.is_on());
        now += Duration::from_secs(1);
        t.observe(&segment(40000, 100), 0, now);
        assert_eq!((t.is_on(), switch().as_str()), (false, "0"));
        // Given back as it was found when dropped.
        run(&mut t, &mut now, &[40000, 40001], 65000, 120);
        assert!(t.is_on());
        drop(t);
        assert_eq!(switch(), "0");
        let _ = std::fs::remove_file(&path);
    }
}

//! [`Clock`]: the time the core's state machines are given by the kernel-stack designs (the proxy's and the
//! uppercase server's), as smoltcp's `Instant` since the design started.

/// The core's clock for a kernel-stack design: time since it started, as smoltcp's `Instant`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: std::time::Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Clock {
        Clock {
            start: std::time::Instant::now(),
        }
    }

    /// Now.
    pub fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.start.elapsed().as_micros() as i64)
    }

    /// How long from now until `at` (zero if it has passed).
    pub fn until(&self, at: smoltcp::time::Instant) -> std::time::Duration {
        let now = self.now();
        match at > now {
            // smoltcp's difference of two instants is the absolute one.
            true => std::time::Duration::from_micros((at - now).total_micros()),
            false => std::time::Duration::ZERO,
        }
    }
}

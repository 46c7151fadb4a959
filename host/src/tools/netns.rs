//! Network namespaces for tests and benchmarks: a throw-away host with only loopback, TUN/TAP devices whose
//! kernel side lives there, and programs run inside it. Everything is deleted when the [`Namespace`] is
//! dropped, and nothing inside can reach beyond it. Needs root (`ip netns`).

use std::io::{self, BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Why a namespace, or something in it, could not be made or read.
#[derive(Debug)]
pub enum NamespaceError {
    /// `ip` could not be run at all.
    NoIp(io::Error),
    /// `ip ARGS` failed.
    Ip {
        /// Its arguments, joined by spaces.
        args: String,
        /// What it printed on standard error.
        stderr: String,
    },
    /// A device counter could not be read.
    ReadCounter {
        /// The counter's file.
        path: String,
        /// Why not.
        error: io::Error,
    },
    /// A device counter was not a number.
    BadCounter {
        /// The counter's file.
        path: String,
        /// The namespace it was read in.
        namespace: String,
    },
}

impl std::fmt::Display for NamespaceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamespaceError::NoIp(e) => write!(f, "cannot run ip (install iproute2): {e}"),
            NamespaceError::Ip { args, stderr } => write!(f, "ip {args}: {stderr}"),
            NamespaceError::ReadCounter { path, error } => write!(f, "cannot read {path}: {error}"),
            NamespaceError::BadCounter { path, namespace } => {
                write!(f, "cannot read {path} in {namespace}")
            }
        }
    }
}

impl std::error::Error for NamespaceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NamespaceError::NoIp(error) | NamespaceError::ReadCounter { error, .. } => Some(error),
            NamespaceError::Ip { .. } | NamespaceError::BadCounter { .. } => None,
        }
    }
}

/// Why a [`Server`] did not start.
#[derive(Debug)]
pub enum ServerError {
    /// The program could not be started.
    Spawn {
        /// The command, as `Command`'s `Debug` shows it.
        command: String,
        /// Why not.
        error: io::Error,
    },
    /// Its standard output was not piped.
    NoStdout,
    /// Waiting for it to end failed.
    Wait(io::Error),
    /// It ended, or printed something else, before its "listening on" line.
    DidNotStart {
        /// The command, as `Command`'s `Debug` shows it.
        command: String,
        /// The first line it printed (trimmed).
        line: String,
        /// What it printed on standard error (trimmed).
        stderr: String,
    },
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Spawn { command, error } => write!(f, "cannot start {command}: {error}"),
            ServerError::NoStdout => f.write_str("no stdout"),
            ServerError::Wait(e) => write!(f, "{e}"),
            ServerError::DidNotStart {
                command,
                line,
                stderr,
            } => write!(f, "{command} did not start: {line}{stderr}"),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Spawn { error, .. } | ServerError::Wait(error) => Some(error),
            ServerError::NoStdout | ServerError::DidNotStart { .. } => None,
        }
    }
}

/// A network namespace this process created; deleted on drop.
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates namespace `name` and brings its loopback up.
    pub fn create(name: &str) -> Result<Namespace, NamespaceError> {
        ip(&["netns", "add", name])?;
        let ns = Namespace {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<(), NamespaceError> {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Adds a TUN or TAP device `dev` (mode "tun" or "tap") with the kernel's side at `cidr`, MTU `mtu`, up.
    pub fn add_device(
        &self,
        dev: &str,
        mode: &str,
        cidr: &str,
        mtu: usize,
    ) -> Result<(), NamespaceError> {
        self.ip(&["tuntap", "add", "dev", dev, "mode", mode])?;
        self.ip(&["link", "set", dev, "mtu", &mtu.to_string()])?;
        self.ip(&["addr", "add", cidr, "dev", dev])?;
        self.ip(&["link", "set", dev, "up"])
    }

    /// Deletes device `dev`.
    pub fn delete_device(&self, dev: &str) -> Result<(), NamespaceError> {
        self.ip(&["link", "del", dev])
    }

    /// `program ARGS` to be run inside the namespace.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// Bytes the kernel counted through `dev` (received + sent, as seen from the kernel's side).
    pub fn device_bytes(&self, dev: &str) -> Result<u64, NamespaceError> {
        let [rx, tx] = self.device_counters(dev, ["rx_bytes", "tx_bytes"])?;
        Ok(rx + tx)
    }

    /// One of the kernel's counters for `dev` (`rx_bytes`, `tx_packets`, …: a file of
    /// `/sys/class/net/DEV/statistics/`), as seen from the kernel's side.
    pub fn device_counter(&self, dev: &str, counter: &str) -> Result<u64, NamespaceError> {
        self.device_counters(dev, [counter]).map(|[value]| value)
    }

    /// Several of the kernel's counters for `dev` (see [`Namespace::device_counter`]), read together by one
    /// process: read one by one, each a process of its own, they would be milliseconds apart, and a packet
    /// counted between two reads makes a count of bytes and a count of packets disagree.
    pub fn device_counters<const N: usize>(
        &self,
        dev: &str,
        counters: [&str; N],
    ) -> Result<[u64; N], NamespaceError> {
        let paths = counters.map(|c| format!("/sys/class/net/{dev}/statistics/{c}"));
        let args: Vec<&str> = paths.iter().map(String::as_str).collect();
        let out =
            self.command("cat", &args)
                .output()
                .map_err(|error| NamespaceError::ReadCounter {
                    path: paths.join(" "),
                    error,
                })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut values = text.lines().map(|line| line.trim().parse::<u64>().ok());
        let mut read = [0u64; N];
        for (slot, path) in read.iter_mut().zip(&paths) {
            *slot = values
                .next()
                .flatten()
                .ok_or_else(|| NamespaceError::BadCounter {
                    path: path.clone(),
                    namespace: self.name.clone(),
                })?;
        }
        Ok(read)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> Result<(), NamespaceError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(NamespaceError::NoIp)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NamespaceError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// A server this process started; killed by its PID when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// The port from its "listening on ADDR:PORT" line.
    pub port: u16,
}

impl Server {
    /// Starts `cmd` and waits for the "listening on ADDR:PORT" line a smoltalk server prints first.
    pub fn start(mut cmd: Command) -> Result<Server, ServerError> {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().map_err(|error| ServerError::Spawn {
            command: format!("{cmd:?}"),
            error,
        })?;
        let stdout = child.stdout.take().ok_or(ServerError::NoStdout)?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "on")
            .nth(1)
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|p| p.parse().ok());
        match (read, port) {
            (Ok(n), Some(port)) if n > 0 && line.contains("listening on") => {
                // Keep draining stdout so the server never blocks on a full pipe.
                std::thread::spawn(move || for _ in reader.lines() {});
                Ok(Server { child, port })
            }
            _ => {
                let _ = child.kill();
                let out = child.wait_with_output().map_err(ServerError::Wait)?;
                Err(ServerError::DidNotStart {
                    command: format!("{cmd:?}"),
                    line: line.trim().to_string(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                })
            }
        }
    }

    /// CPU time (user + system) the server has used so far, from /proc.
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        cpu_time(self.child.id())
    }
}

/// Resident memory of process `pid` in KiB; `None` once it is gone. From `/proc/PID/smaps_rollup`, which
/// counts the pages mapped now (`VmRSS` of `/proc/PID/status` is kept per CPU and can lag by many pages).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Rss:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time (user + system) process `pid` has used so far, from `/proc/PID/stat`; `None` once it is gone.
pub fn cpu_time(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = crate::sys::clock_ticks_per_second();
    Some(std::time::Duration::from_millis(ticks * 1000 / hz))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether this process runs as root (namespaces and TUN/TAP need it).
pub fn is_root() -> bool {
    crate::sys::is_root()
}

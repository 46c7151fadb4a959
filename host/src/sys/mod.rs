//! The one place the host calls the C library (`libc`): small safe wrappers, each `unsafe` block with the reason
//! it is sound, each failure an `io::Error` (what `errno` said). The rest of the host calls these.
//!
//! - The process: [`is_root`], [`clock_ticks_per_second`], [`kill`], [`enter_network_namespace`],
//!   [`raise_open_files_limit`], and the stop signals ([`stop_on_signals`], [`stop_requested`],
//!   [`stop_wake_fd`]).
//! - Descriptors: [`wait_readable`], [`wait_writable`], [`PollSet`], [`pipe`], [`set_pipe_size`], [`splice`].
//! - Sockets (`sockets.rs`): [`set_socket_buffer`], [`listen`], [`reset_on_close`], [`abort_connection`],
//!   [`peek_inbound`], [`receive_queue`], [`PacketSocket`].
//! - TUN/TAP devices: [`open_tun`], [`set_tun_offload`].
//! - [`errno`]: the error numbers the host tells apart.

use std::ffi::c_int;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

pub mod errno {
    //! The error numbers the host tells apart, as [`std::io::Error::raw_os_error`] gives them.
    pub use libc::{
        EACCES, EADDRNOTAVAIL, EAFNOSUPPORT, EBADF, EBADFD, EBUSY, EINVAL, EIO, EMFILE, EMSGSIZE,
        ENFILE, ENODEV, ENOENT, ENXIO, EPERM,
    };
}

mod sockets;

pub use sockets::{
    abort_connection, listen, peek_inbound, receive_queue, reset_on_close, server_socket,
    set_socket_buffer, tcp_listener, Inbound, PacketFrame, PacketSocket, ReceiveQueue,
    SocketBuffer,
};

/// A C call's status: a negative one is the failure `errno` holds.
fn check(status: c_int) -> io::Result<c_int> {
    if status < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(status)
    }
}

// ------------------------------------------------------------------------------------------------ the process

/// Whether this process runs as root (effective user 0): network namespaces and TUN/TAP devices need it.
pub fn is_root() -> bool {
    // SAFETY: geteuid takes no argument, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Clock ticks per second: the unit of the CPU times in `/proc/PID/stat` (at least 1).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a configuration value; it takes no pointer.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    hz.max(1) as u64
}

/// A signal [`kill`] sends, or [`stop_on_signals`] catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
    /// SIGHUP (the terminal went away).
    HangUp,
}

impl Signal {
    fn number(self) -> c_int {
        match self {
            Signal::Interrupt => libc::SIGINT,
            Signal::Terminate => libc::SIGTERM,
            Signal::HangUp => libc::SIGHUP,
        }
    }
}

/// Sends `signal` to process `pid`. Only a positive PID is taken (0 and negative ones name process groups);
/// which process it is, the caller vouches for (a child it started, say).
pub fn kill(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a process ID"))?;
    // SAFETY: kill(2) takes no pointer; the PID is positive, so it names one process.
    check(unsafe { libc::kill(pid, signal.number()) }).map(drop)
}

/// Moves the calling thread into the network namespace open at `namespace` (`/var/run/netns/NAME`, say). Other
/// threads stay where they are; threads this one starts afterwards start in it.
pub fn enter_network_namespace(namespace: impl AsFd) -> io::Result<()> {
    let fd = namespace.as_fd().as_raw_fd();
    // SAFETY: setns takes no pointer; the descriptor is borrowed, so open for the call, and CLONE_NEWNET moves
    // only this thread's network namespace.
    check(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }).map(drop)
}

/// Raises this process's soft limit on open files to its hard limit; returns the soft limit now in force (the
/// old one, if the kernel refused to raise it).
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given, which lives across the call.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given, which lives across the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    // rlim_t is narrower than u64 on some 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    let soft = limit.rlim_cur as u64;
    Ok(soft)
}

static STOP: AtomicBool = AtomicBool::new(false);
/// The write end of a pipe the signal handler writes to, so a `ppoll` that starts just after the signal still
/// wakes (a flag alone could be missed between the check and the sleep). -1: none.
static WAKE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// The pipe's read end (see [`stop_wake_fd`]). -1: none.
static WAKE_READ: AtomicI32 = AtomicI32::new(-1);

extern "C" fn request_stop(_signal: c_int) {
    STOP.store(true, Ordering::Relaxed);
    let fd = WAKE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe and reads the one byte it is given, which lives across the
        // call; the pipe is non-blocking, so a full pipe just drops the byte.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP ask the program to stop (see [`stop_requested`]) instead of ending it, so
/// it can close what it holds properly (a TUN/TAP device gets its checksum offload setting back, see
/// `crate::stack::offload::clear_offload`); anything asleep on [`stop_wake_fd`] wakes at once. Calling it again
/// changes nothing. The signals are caught even if the wake-up pipe cannot be made; the error then says why.
pub fn stop_on_signals() -> io::Result<()> {
    let mut result = Ok(());
    if WAKE_WRITE.load(Ordering::Relaxed) < 0 {
        match pipe() {
            Ok((read, write)) => {
                // Kept open for the rest of the process: the handler may write at any time.
                WAKE_READ.store(read.into_raw_fd(), Ordering::Relaxed);
                WAKE_WRITE.store(write.into_raw_fd(), Ordering::Relaxed);
            }
            Err(e) => result = Err(e),
        }
    }
    for signal in [Signal::Interrupt, Signal::Terminate, Signal::HangUp] {
        // SAFETY: the handler only stores to atomics and calls write(2), all async-signal-safe.
        let previous = unsafe {
            libc::signal(
                signal.number(),
                request_stop as *const () as libc::sighandler_t,
            )
        };
        if previous == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    result
}

/// Whether SIGINT, SIGTERM or SIGHUP arrived since [`stop_on_signals`].
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// A descriptor that becomes readable when a stop signal arrives, to sleep on beside others (see
/// [`wait_readable`]); `None` before [`stop_on_signals`], or if its pipe could not be made.
pub fn stop_wake_fd() -> Option<RawFd> {
    Some(WAKE_READ.load(Ordering::Relaxed)).filter(|fd| *fd >= 0)
}

// ------------------------------------------------------------------------------------------------ descriptors

/// Sleeps until one of `fds` can be read or `timeout` passes (`None`: no limit); returns how many can be read
/// (0: the time passed). A negative descriptor is left out, as poll(2) does. A signal ends the sleep early with
/// `ErrorKind::Interrupted`.
pub fn wait_readable<const N: usize>(
    fds: [RawFd; N],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    wait_for(fds, libc::POLLIN, timeout)
}

/// Sleeps until `fd` can be written (or failed) or `timeout` passes; returns whether it can. A signal ends the
/// sleep early with `ErrorKind::Interrupted`.
pub fn wait_writable(fd: impl AsFd, timeout: Duration) -> io::Result<bool> {
    wait_for([fd.as_fd().as_raw_fd()], libc::POLLOUT, Some(timeout)).map(|n| n > 0)
}

/// Sleeps until one of `fds` has one of `events` or `timeout` passes (see [`wait_readable`]).
fn wait_for<const N: usize>(
    fds: [RawFd; N],
    events: libc::c_short,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let mut polled = fds.map(|fd| libc::pollfd {
        fd,
        events,
        revents: 0,
    });
    let timeout = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let timeout_ptr = timeout
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `polled` and `timeout` live across the call, the count is the array's length, and a null
    // signal mask leaves the mask as it is.
    let ready = unsafe {
        libc::ppoll(
            polled.as_mut_ptr(),
            polled.len() as libc::nfds_t,
            timeout_ptr,
            std::ptr::null(),
        )
    };
    check(ready).map(|n| n as usize)
}

/// What poll(2) said of one descriptor of a [`PollSet`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// It can be read (or is at its end).
    pub readable: bool,
    /// It can be written.
    pub writable: bool,
    /// It failed or its peer hung up.
    pub failed: bool,
}

/// Descriptors that wait together (poll(2)), each for reading and writing.
pub struct PollSet {
    fds: Vec<libc::pollfd>,
}

impl PollSet {
    /// A set of `fds`, each waited on for reading and writing. The caller keeps them open while it polls.
    pub fn read_write(fds: impl IntoIterator<Item = RawFd>) -> PollSet {
        let fds = fds
            .into_iter()
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN | libc::POLLOUT,
                revents: 0,
            })
            .collect();
        PollSet { fds }
    }

    /// Waits up to `timeout` for any descriptor to be ready; returns how many are (0: the time passed). A signal
    /// ends the wait early with `ErrorKind::Interrupted`.
    pub fn poll(&mut self, timeout: Duration) -> io::Result<usize> {
        let millis = c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX);
        // SAFETY: `fds` is a live array of pollfd and its length is passed.
        let ready = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                millis,
            )
        };
        check(ready).map(|n| n as usize)
    }

    /// What the last [`PollSet::poll`] said of each descriptor, in the order they were given.
    pub fn readiness(&self) -> impl Iterator<Item = Readiness> + '_ {
        self.fds.iter().map(|pfd| Readiness {
            readable: pfd.revents & libc::POLLIN != 0,
            writable: pfd.revents & libc::POLLOUT != 0,
            failed: pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0,
        })
    }
}

/// A pipe whose two ends are non-blocking and closed on exec: `(read end, write end)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [c_int; 2] = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array it is given.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open, and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets the capacity of `pipe` (either end) to at least `bytes`; returns the capacity the kernel granted. Above
/// `/proc/sys/fs/pipe-max-size` an unprivileged process is refused (`EPERM`).
pub fn set_pipe_size(pipe: impl AsFd, bytes: i32) -> io::Result<usize> {
    let fd = pipe.as_fd().as_raw_fd();
    // SAFETY: F_SETPIPE_SZ takes an integer, no pointer, on a descriptor borrowed for the call.
    let granted = check(unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, bytes) })?;
    Ok(granted as usize)
}

/// Moves up to `len` bytes from `from` to `to` inside the kernel, one of them a pipe, without blocking
/// (`ErrorKind::WouldBlock` when nothing can move); a signal that interrupts the call is ridden out. `Ok(0)`:
/// `from` is at its end.
pub fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    let (from, to) = (from.as_fd().as_raw_fd(), to.as_fd().as_raw_fd());
    loop {
        // SAFETY: both descriptors are borrowed, so open for the call; null offsets mean "the current
        // position", as sockets and pipes require.
        let moved = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if moved >= 0 {
            return Ok(moved as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

// ---------------------------------------------------------------------------------------------------- TUN/TAP

/// Which kind of device [`open_tun`] opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunMode {
    /// Raw IP packets (`IFF_TUN`).
    Tun,
    /// Ethernet frames (`IFF_TAP`).
    Tap,
}

/// Opens (and, when privileged, creates) TUN or TAP device `name`, non-blocking, without the packet-information
/// header; with `vnet_header`, every frame carries the virtio-net header (`IFF_VNET_HDR`); with `napi`, frames
/// written go through the device's NAPI queue (`IFF_NAPI`) instead of straight into the kernel's stack. Returns
/// the device and its name as the kernel has it. A name must be 1 to 15 bytes (`ErrorKind::InvalidInput`).
pub fn open_tun(
    name: &str,
    mode: TunMode,
    vnet_header: bool,
    napi: bool,
) -> io::Result<(File, String)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain data (a name and a union of plain data), for which all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= request.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "device names are 1 to 15 bytes",
        ));
    }
    for (dst, src) in request.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let mut flags = libc::IFF_NO_PI;
    flags |= match mode {
        TunMode::Tun => libc::IFF_TUN,
        TunMode::Tap => libc::IFF_TAP,
    };
    if vnet_header {
        flags |= libc::IFF_VNET_HDR;
    }
    if napi {
        flags |= libc::IFF_NAPI;
    }
    request.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes the ifreq it is pointed at, which lives across the call; the
    // descriptor is ours.
    check(unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) })?;
    let actual: Vec<u8> = request
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    Ok((file, String::from_utf8_lossy(&actual).into_owned()))
}

/// Sets the offload of the TUN/TAP device open at `device` (`TUNSETOFFLOAD` with `flags`: `TUN_F_CSUM`,
/// `TUN_F_TSO4`, …, or 0 for none). The setting belongs to the device, not to the descriptor: it outlives the
/// program that set it.
pub fn set_tun_offload(device: RawFd, flags: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its flags by value, no pointer; a descriptor that is not a TUN/TAP device
    // (or not open) only makes the call fail.
    check(unsafe { libc::ioctl(device, libc::TUNSETOFFLOAD, libc::c_ulong::from(flags)) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_carries_a_byte_and_reports_it_readable() {
        let (read, write) = pipe().expect("pipe");
        assert_eq!(
            wait_readable([read.as_raw_fd()], Some(Duration::ZERO)).expect("poll"),
            0
        );
        let mut out = File::from(write);
        io::Write::write_all(&mut out, b"x").expect("write");
        assert_eq!(
            wait_readable([read.as_raw_fd(), -1], Some(Duration::from_secs(1))).expect("poll"),
            1
        );
        assert!(set_pipe_size(&read, 1 << 16).expect("pipe size") >= 1 << 16);
    }

    #[test]
    fn kill_refuses_what_is_not_one_process() {
        for pid in [0, u32::MAX] {
            let e = kill(pid, Signal::Terminate).expect_err("refused");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn socket_options_take_on_a_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listen(&listener, 4096).expect("listen");
        let stream =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        set_socket_buffer(&stream, SocketBuffer::Send, 64 * 1024).expect("SO_SNDBUF");
        set_socket_buffer(&stream, SocketBuffer::Receive, 64 * 1024).expect("SO_RCVBUF");
        reset_on_close(&stream).expect("SO_LINGER");
    }

    #[test]
    fn tun_names_are_checked_before_the_kernel_sees_them() {
        if !std::path::Path::new("/dev/net/tun").exists() {
            return;
        }
        for name in ["", "sixteen-bytes-xx"] {
            match open_tun(name, TunMode::Tun, false, false) {
                Err(e) => assert!(
                    matches!(
                        e.kind(),
                        io::ErrorKind::InvalidInput | io::ErrorKind::PermissionDenied
                    ),
                    "{e}"
                ),
                Ok(_) => panic!("{name:?} was taken"),
            }
        }
    }
}

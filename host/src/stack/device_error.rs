//! [`DeviceError`]: why a TUN/TAP device could not be opened, or wrapped in its instruments, each case with the
//! hint a person needs (load the module, run as root, pick another device).

use std::io;

use crate::stack::device::DeviceKind;
use crate::stack::instruments::FAULT_INJECTOR_MAX_FRAME;
use crate::sys::errno;

/// Why a device could not be opened, or wrapped in its instruments.
#[derive(Debug)]
pub enum DeviceError {
    /// Opening (or creating) the device failed.
    Open {
        /// The device's name.
        name: String,
        /// The kind asked for.
        kind: DeviceKind,
        /// What the kernel said.
        error: io::Error,
    },
    /// The device could not be made non-blocking.
    NonBlocking {
        /// The device's name.
        name: String,
        /// What the kernel said.
        error: io::Error,
    },
    /// The checksum offload an earlier user may have left on could not be turned off.
    OffloadOff {
        /// The device's name.
        name: String,
        /// What the kernel said.
        error: io::Error,
    },
    /// Fault injection was asked for on a device whose frames are larger than smoltcp's `FaultInjector` takes.
    FrameTooLarge {
        /// The device's name.
        name: String,
        /// Its largest frame.
        frame: usize,
    },
    /// The capture file could not be created.
    Capture {
        /// The file.
        path: std::path::PathBuf,
        /// Why not.
        error: io::Error,
    },
}

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceError::Open { name, kind, error } => {
                let mode = kind.name();
                write!(f, "cannot open {mode} device {name}: ")?;
                match error.raw_os_error() {
                    Some(errno::ENOENT) | Some(errno::ENODEV) => {
                        f.write_str("/dev/net/tun is missing: load the tun module (modprobe tun)")
                    }
                    Some(errno::EPERM) | Some(errno::EACCES) => write!(
                        f,
                        "permission denied: run as root (CAP_NET_ADMIN), or create the device for your user first \
                         with `sudo ip tuntap add dev {name} mode {mode} user $USER`"
                    ),
                    Some(errno::EBUSY) => write!(f, "{name} is already in use by another program"),
                    Some(errno::EINVAL) => write!(
                        f,
                        "{name} exists but is not a {mode} device (delete it with `ip link del {name}` or pick \
                         another --dev)"
                    ),
                    _ => write!(f, "{error}"),
                }
            }
            DeviceError::NonBlocking { name, error } => {
                write!(f, "cannot make {name} non-blocking: {error}")
            }
            DeviceError::OffloadOff { name, error } => {
                write!(f, "cannot turn checksum offload off on {name}: {error}")
            }
            DeviceError::FrameTooLarge { name, frame } => write!(
                f,
                "fault injection handles frames up to {FAULT_INJECTOR_MAX_FRAME} bytes (smoltcp's FaultInjector), \
                 and {name} carries {frame}: lower its MTU to 1500 (`ip link set {name} mtu 1500`)"
            ),
            DeviceError::Capture { path, error } => {
                write!(f, "cannot write the capture {}: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for DeviceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DeviceError::Open { error, .. }
            | DeviceError::NonBlocking { error, .. }
            | DeviceError::OffloadOff { error, .. }
            | DeviceError::Capture { error, .. } => Some(error),
            DeviceError::FrameTooLarge { .. } => None,
        }
    }
}

pub(crate) fn open_error(name: &str, kind: DeviceKind, error: io::Error) -> DeviceError {
    DeviceError::Open {
        name: name.to_string(),
        kind,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(kind: DeviceKind, errno: i32) -> String {
        open_error("st0", kind, io::Error::from_raw_os_error(errno)).to_string()
    }

    #[test]
    fn each_failure_to_open_says_what_to_do() {
        assert_eq!(
            open(DeviceKind::Tun, errno::ENOENT),
            "cannot open tun device st0: /dev/net/tun is missing: load the tun module (modprobe tun)"
        );
        assert_eq!(
            open(DeviceKind::Tap, errno::EPERM),
            "cannot open tap device st0: permission denied: run as root (CAP_NET_ADMIN), or create the device for \
             your user first with `sudo ip tuntap add dev st0 mode tap user $USER`"
        );
        assert_eq!(
            open(DeviceKind::Tun, errno::EBUSY),
            "cannot open tun device st0: st0 is already in use by another program"
        );
        assert_eq!(
            open(DeviceKind::Tap, errno::EINVAL),
            "cannot open tap device st0: st0 exists but is not a tap device (delete it with `ip link del st0` or \
             pick another --dev)"
        );
        let other = io::Error::from_raw_os_error(errno::EIO);
        assert_eq!(
            open(DeviceKind::Tun, errno::EIO),
            format!("cannot open tun device st0: {other}")
        );
    }

    #[test]
    fn a_frame_too_large_for_fault_injection_names_the_mtu_to_set() {
        let e = DeviceError::FrameTooLarge {
            name: "st0".into(),
            frame: 65014,
        };
        assert_eq!(
            e.to_string(),
            "fault injection handles frames up to 1536 bytes (smoltcp's FaultInjector), and st0 carries 65014: \
             lower its MTU to 1500 (`ip link set st0 mtu 1500`)"
        );
    }
}

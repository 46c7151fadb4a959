//! How an uppercase client failed, for the failures a caller can tell apart (refused, no reply, reset, …), and
//! the exit code with which the `smoltalk` clients report each one. The codes are part of the command's
//! interface (README, `smoltalk --help`): a script, or `smoltalk compare` running a client as a child, reads
//! the failure from the exit status instead of from the words of the error line.

use smoltalk_core::ClientError;

/// A client failure that a caller can act on; both stacks' clients report these (smoltcp's as a
/// [`ClientError`], the kernel's as a [`KernelError`](super::kernel::KernelError) whose [`failure`](super::kernel::KernelError::failure) it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFailure {
    /// The server's host answered the connection attempt with a reset: nothing listens on that port.
    Refused,
    /// No answer to the TCP handshake before the timeout.
    ConnectTimedOut,
    /// The connection was reset after it was established.
    Reset,
    /// The server closed the connection before the whole reply arrived.
    ClosedEarly,
    /// A TCP reply did not arrive before the timeout.
    ReplyTimedOut,
    /// No UDP reply after every try.
    NoReply,
}

/// The exit code of every other error (a bad address, a device that cannot be opened, an I/O error, …).
/// Command-line mistakes exit with 2 (clap's usage code); success is 0.
pub const OTHER_ERROR_EXIT_CODE: u8 = 1;

impl ClientFailure {
    /// Every failure, in the order of their exit codes.
    pub const ALL: [ClientFailure; 6] = [
        ClientFailure::Refused,
        ClientFailure::ConnectTimedOut,
        ClientFailure::Reset,
        ClientFailure::ClosedEarly,
        ClientFailure::ReplyTimedOut,
        ClientFailure::NoReply,
    ];

    /// The failure a smoltcp client's error is, if it is one of these.
    pub fn of(error: &ClientError) -> Option<ClientFailure> {
        match error {
            ClientError::ConnectionRefused => Some(ClientFailure::Refused),
            ClientError::ConnectTimedOut => Some(ClientFailure::ConnectTimedOut),
            ClientError::ConnectionReset => Some(ClientFailure::Reset),
            ClientError::ClosedEarly { .. } => Some(ClientFailure::ClosedEarly),
            ClientError::ReplyTimedOut => Some(ClientFailure::ReplyTimedOut),
            ClientError::NoReply { .. } => Some(ClientFailure::NoReply),
            ClientError::Connect(_)
            | ClientError::Bind(_)
            | ClientError::RequestTooLarge { .. }
            | ClientError::RequestNeedsIpv6Fragments { .. }
            | ClientError::Unaddressable
            | ClientError::InvalidState => None,
        }
    }

    /// The exit code of `smoltalk tcp-client` and `udp-client` when they fail so (3 to 8; never 0, 1 or 2).
    pub fn exit_code(self) -> u8 {
        match self {
            ClientFailure::Refused => 3,
            ClientFailure::ConnectTimedOut => 4,
            ClientFailure::Reset => 5,
            ClientFailure::ClosedEarly => 6,
            ClientFailure::ReplyTimedOut => 7,
            ClientFailure::NoReply => 8,
        }
    }

    /// The failure a client's exit code reports; `None` for 0, 1, 2 and every code no failure has.
    pub fn from_exit_code(code: i32) -> Option<ClientFailure> {
        ClientFailure::ALL
            .into_iter()
            .find(|f| i32::from(f.exit_code()) == code)
    }

    /// What the exit code means, in a few words (the help's and the README's table).
    pub fn summary(self) -> &'static str {
        match self {
            ClientFailure::Refused => "connection refused (nothing listens on that port)",
            ClientFailure::ConnectTimedOut => "no answer to the TCP handshake in time",
            ClientFailure::Reset => "connection reset by the server",
            ClientFailure::ClosedEarly => "the server closed the connection before the whole reply",
            ClientFailure::ReplyTimedOut => "timed out waiting for a TCP reply",
            ClientFailure::NoReply => "no UDP reply after every try",
        }
    }

    /// The exit codes as a table, for `--help`.
    pub fn exit_codes_help() -> String {
        let mut help = format!(
            "Exit codes:\n  0  success\n  {OTHER_ERROR_EXIT_CODE}  any other error\n  2  a mistake on the command line"
        );
        for failure in ClientFailure::ALL {
            help.push_str(&format!(
                "\n  {}  {}",
                failure.exit_code(),
                failure.summary()
            ));
        }
        help.push_str("\n(3 to 8: how tcp-client or udp-client failed)");
        help
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_read_back() {
        for failure in ClientFailure::ALL {
            let code = failure.exit_code();
            assert!(code > 2, "{failure:?}: 0, 1 and 2 have their own meaning");
            assert_eq!(
                ClientFailure::from_exit_code(i32::from(code)),
                Some(failure)
            );
        }
        for code in [-1, 0, 1, 2, 9, 101, 255] {
            assert_eq!(ClientFailure::from_exit_code(code), None, "{code}");
        }
    }

    #[test]
    fn every_exit_code_is_in_the_readme() {
        let readme = include_str!("../../../README.md");
        for failure in ClientFailure::ALL {
            let row = format!("| {} | {} |", failure.exit_code(), failure.summary());
            assert!(readme.contains(&row), "README.md has no row {row}");
        }
    }
}

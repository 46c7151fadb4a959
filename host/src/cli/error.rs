//! A command's failure as `main` reports it: the line it prints, and the exit code, which tells the client
//! failures a caller can act on (refused, no reply, …) from every other error.

use crate::uppercase::kernel::KernelError;
use crate::uppercase::{ClientFailure, OTHER_ERROR_EXIT_CODE};

/// A command's failure: the line for a person, and which client failure it was, if one.
#[derive(Debug)]
pub struct CliError {
    /// Which client failure it was (it sets the exit code); `None` for every other error.
    pub failure: Option<ClientFailure>,
    /// What happened, as one line (`main` prints `smoltalk: error: {message}`).
    pub message: String,
}

impl CliError {
    /// The exit code: the failure's, or 1 for every other error.
    pub fn exit_code(&self) -> i32 {
        i32::from(
            self.failure
                .map_or(OTHER_ERROR_EXIT_CODE, ClientFailure::exit_code),
        )
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<String> for CliError {
    fn from(message: String) -> CliError {
        CliError {
            failure: None,
            message,
        }
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> CliError {
        CliError::from(message.to_string())
    }
}

impl From<KernelError> for CliError {
    fn from(e: KernelError) -> CliError {
        CliError {
            failure: e.failure(),
            message: e.to_string(),
        }
    }
}

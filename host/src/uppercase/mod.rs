//! The uppercase service on both stacks.

mod failure;
pub mod kernel;
pub mod node;

pub use failure::{ClientFailure, OTHER_ERROR_EXIT_CODE};

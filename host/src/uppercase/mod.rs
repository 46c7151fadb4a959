//! The uppercase service on both stacks.

pub mod kernel;
pub mod node;

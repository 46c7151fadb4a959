//! The HTTP forward proxy on both stacks.

pub mod event_loop;
pub mod node;
pub mod threads;

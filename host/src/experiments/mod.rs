//! Experiments: the classic questions answered by running them, and the pictures of what happened.

pub mod compare;
pub mod diagram;
pub mod graph;

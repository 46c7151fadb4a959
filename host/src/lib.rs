//! The host side of smoltalk: the smoltcp nodes and their devices (the in-process lab, TUN/TAP), the client
//! and server drivers shared by both, and the same service on the kernel's own stack.

// Every unsafe block says why it is sound (nearly all of them are in `sys`).
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod experiments;
pub mod lab;
pub mod proxy;
pub mod stack;
pub mod sys;
pub mod tools;
pub mod uppercase;

//! The host side of smoltalk: the smoltcp nodes and their devices (the in-process lab, TUN/TAP), the client
//! and server drivers shared by both, and the same service on the kernel's own stack.

pub mod apps;
pub mod bench;
pub mod capture;
pub mod cli;
pub mod compare;
pub mod device;
pub mod diagram;
pub mod kernel;
pub mod lab;
pub mod lab_checks;
pub mod lab_proxy;
pub mod load;
pub mod netns;
pub mod network;
pub mod node;
pub mod offload;
pub mod proxy_kernel;
pub mod proxy_smoltcp;
pub mod proxy_threads;
pub mod soak;

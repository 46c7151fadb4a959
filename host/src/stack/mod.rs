//! smoltcp hosts and their devices.

pub mod addressing;
pub mod delay_line;
pub mod device;
pub mod device_error;
pub mod device_network;
pub mod instruments;
pub mod kernel_thread;
pub mod link_shape;
pub mod name_lookup;
pub mod network;
pub mod node;
pub mod offload;

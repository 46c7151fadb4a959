//! Tools around the services: the benchmark, a load generator, network namespaces.

pub mod bench;
pub mod load;
pub mod netns;

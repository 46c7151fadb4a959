//! Why a run could not be set up: the typed errors of `compare`, shown in the table as `not run: …` (a run's
//! own outcome, a refusal or a lost reply, is not an error here but what it observed), and why its diagrams
//! could not be written.

use std::path::PathBuf;

use crate::experiments::diagram::PcapError;
use crate::experiments::graph::GraphError;

/// Why a run of a scenario could not be set up; the run is then reported as `not run: {this}`.
#[derive(Debug)]
pub enum CompareError {
    /// Loss on the kernel's loopback needs a namespace of its own, and that needs root.
    LossNeedsRoot,
    /// Nothing can be bound on the loopback address (::1 where IPv6 is switched off).
    NoLoopback {
        /// The address.
        address: std::net::IpAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A namespace or its TUN device could not be made.
    Namespace(crate::tools::netns::NamespaceError),
    /// The kernel has no netem, and `nft` cannot be run.
    NftCannotRun(std::io::Error),
    /// The kernel has no netem, and an `nft` rule failed (what `nft` said).
    NftFailed(String),
    /// The namespace's file in `/var/run/netns` could not be opened.
    OpenNamespace {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The scenario's thread could not enter the namespace (`setns`).
    EnterNamespace(std::io::Error),
    /// The scenario's thread panicked.
    ThreadFailed,
    /// This program's own path is unknown, so it cannot be run as the client.
    CurrentExe(std::io::Error),
    /// A kernel server in the namespace did not start.
    Server(crate::tools::netns::ServerError),
    /// The client could not be started.
    StartClient(std::io::Error),
    /// The client was started without the pipe named (`stdin`, `stdout`).
    NoPipe(&'static str),
    /// Waiting for the client to end failed.
    WaitClient(std::io::Error),
}

impl std::fmt::Display for CompareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompareError::LossNeedsRoot => f.write_str(
                "loss on the kernel's loopback needs `tc qdisc netem` in a namespace (root)",
            ),
            CompareError::NoLoopback { address, source } => {
                let hint = if address.is_ipv6() {
                    " (is IPv6 switched off?)"
                } else {
                    ""
                };
                write!(f, "cannot bind {address}{hint}: {source}")
            }
            CompareError::Namespace(e) => write!(f, "{e}"),
            CompareError::Server(e) => write!(f, "{e}"),
            CompareError::NftCannotRun(e) => {
                write!(f, "the kernel has no netem and nft cannot run: {e}")
            }
            CompareError::NftFailed(stderr) => {
                write!(f, "the kernel has no netem, and nft failed: {stderr}")
            }
            CompareError::OpenNamespace { path, source } => {
                write!(f, "cannot open {path}: {source}")
            }
            CompareError::EnterNamespace(e) => write!(f, "cannot enter the namespace: {e}"),
            CompareError::ThreadFailed => f.write_str("the scenario's thread failed"),
            CompareError::CurrentExe(e) | CompareError::WaitClient(e) => write!(f, "{e}"),
            CompareError::StartClient(e) => write!(f, "cannot start the client: {e}"),
            CompareError::NoPipe(which) => write!(f, "no {which}"),
        }
    }
}

impl std::error::Error for CompareError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CompareError::NftCannotRun(e)
            | CompareError::NoLoopback { source: e, .. }
            | CompareError::OpenNamespace { source: e, .. }
            | CompareError::EnterNamespace(e)
            | CompareError::CurrentExe(e)
            | CompareError::StartClient(e)
            | CompareError::WaitClient(e) => Some(e),
            CompareError::Namespace(e) => Some(e),
            CompareError::Server(e) => Some(e),
            _ => None,
        }
    }
}

/// Why [`write_diagrams`](super::write_diagrams) could not write a diagram or its capture.
#[derive(Debug)]
pub enum WriteDiagramsError {
    /// The directory could not be made.
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A run's capture could not be read back.
    Capture(PcapError),
    /// A run's capture could not be graphed (other than for having no TCP, which is no graph).
    Graph(GraphError),
    /// A file (a diagram or its capture) could not be written.
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl std::fmt::Display for WriteDiagramsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteDiagramsError::CreateDir { dir, source } => {
                write!(f, "cannot create {}: {source}", dir.display())
            }
            WriteDiagramsError::Capture(e) => write!(f, "{e}"),
            WriteDiagramsError::Graph(e) => write!(f, "time-sequence graph: {e}"),
            WriteDiagramsError::Write { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for WriteDiagramsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WriteDiagramsError::CreateDir { source, .. }
            | WriteDiagramsError::Write { source, .. } => Some(source),
            WriteDiagramsError::Capture(e) => Some(e),
            WriteDiagramsError::Graph(e) => Some(e),
        }
    }
}

impl From<PcapError> for WriteDiagramsError {
    fn from(e: PcapError) -> WriteDiagramsError {
        WriteDiagramsError::Capture(e)
    }
}

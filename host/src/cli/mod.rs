//! The `smoltalk` command line: the commands (clap) and the dispatch to what each does, on the stack it names.
//! Every failure comes back as one line for a person; `main` prints it and exits non-zero, with a code of its
//! own for each client failure a caller can act on ([`CliError`], [`ClientFailure::exit_code`]).
//!
//! The commands' options and their value parsers are in `args` (re-exported here); what the commands do is in
//! `uppercase` (servers and clients), `proxy`, and `reports` (lab, compare, graph, throughput, bench); `device` opens
//! the smoltcp device a command runs on.

use std::io::{self, Write};

use clap::{Parser, Subcommand};

use crate::uppercase::ClientFailure;

mod args;
mod device;
mod error;
mod proxy;
mod reports;
mod uppercase;

pub use args::{
    parse_size, BenchArgs, ClientArgs, CompareArgs, ExperimentArgs, GraphArgs, LabArgs, ProxyArgs,
    ServerArgs, Stack, StackArgs, ThroughputArgs,
};
pub use error::CliError;

/// smoltalk: the uppercase service and its clients, on the kernel's TCP/IP stack or on smoltcp (a userspace
/// stack) over a TUN/TAP device with its own IP address.
#[derive(Debug, Parser)]
#[command(name = "smoltalk", version, propagate_version = true)]
#[command(after_help = ClientFailure::exit_codes_help())]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve uppercase over TCP: every a-z byte a client sends comes back as A-Z, all others unchanged.
    TcpServer(ServerArgs),
    /// Serve uppercase over UDP: one reply datagram, of the same length, per request datagram.
    UdpServer(ServerArgs),
    /// Send MESSAGE (or each line of standard input) over TCP and print each reply as `HOST > REPLY`.
    #[command(after_help = ClientFailure::exit_codes_help())]
    TcpClient(ClientArgs),
    /// Send MESSAGE (or each line of standard input) as UDP datagrams and print each reply as `HOST > REPLY`.
    #[command(after_help = ClientFailure::exit_codes_help())]
    UdpClient(ClientArgs),
    /// Run the in-process lab: smoltcp server and client nodes on a virtual network, no privileges needed.
    /// Prints what was sent, what came back, packets and time; exits 0 only if every check held.
    Lab(LabArgs),
    /// Load an uppercase TCP server (kernel stack client): stream text over N connections, verify every reply
    /// byte, and print the verified throughput.
    Throughput(ThroughputArgs),
    /// Answer the classic lab's questions by running them on the kernel stack and on smoltcp side by side:
    /// what the program saw, how long it took, and the packets on the wire, from captures.
    Compare(CompareArgs),
    /// Draw a TCP time-sequence graph (SVG) of one stream of a capture: sequence numbers against time, the
    /// data segments (retransmissions marked), the receiver's ACK and window lines and SACK blocks.
    Graph(GraphArgs),
    /// An HTTP forward proxy (for browsers and `curl -x`), with CONNECT tunnels, on the kernel stack or on
    /// smoltcp. Logs `From <ip> Request <line>` and `To <ip> Response <status>` at info (RUST_LOG).
    Proxy(ProxyArgs),
    /// The benchmark behind BENCHMARKS.md: the transform against memcpy, then (as root) TCP echo throughput of
    /// smoltcp on TUN/TAP against the kernel stack inside a throw-away network namespace.
    Bench(BenchArgs),
}

impl Command {
    /// Whether the command asks for a packet trace (`--trace`).
    pub fn trace(&self) -> bool {
        match self {
            Command::TcpServer(a) | Command::UdpServer(a) => a.stack.experiment.trace,
            Command::TcpClient(a) | Command::UdpClient(a) => a.stack.experiment.trace,
            Command::Proxy(a) => a.stack.experiment.trace,
            _ => false,
        }
    }
}

/// Runs a command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::TcpServer(args) => uppercase::tcp_server(args).map_err(CliError::from),
        Command::UdpServer(args) => uppercase::udp_server(args).map_err(CliError::from),
        Command::TcpClient(args) => uppercase::tcp_client(args),
        Command::UdpClient(args) => uppercase::udp_client(args),
        Command::Lab(args) => reports::lab(args).map_err(CliError::from),
        Command::Compare(args) => reports::compare(args).map_err(CliError::from),
        Command::Graph(args) => reports::graph(args).map_err(CliError::from),
        Command::Throughput(args) => reports::throughput(args).map_err(CliError::from),
        Command::Proxy(args) => proxy::proxy(args).map_err(CliError::from),
        Command::Bench(args) => reports::bench(args).map_err(CliError::from),
    }
}

/// Where smoltalk prints for people: standard output, or standard error while standard output carries a live
/// capture (`--pcap -`).
fn human_output() -> Box<dyn Write> {
    match crate::stack::instruments::standard_output_is_the_capture() {
        true => Box::new(io::stderr().lock()),
        false => Box::new(io::stdout().lock()),
    }
}

/// Prints `text` for people (see [`human_output`]), holding the stream only while it writes.
fn say(text: &str) {
    let mut out = human_output();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

fn announce(what: &str, addr: impl std::fmt::Display, stack: &str) {
    let mut out = human_output();
    let _ = writeln!(out, "smoltalk {what} listening on {addr} ({stack})");
    let _ = out.flush();
}

//! The `smoltalk` command line: argument types (clap) and what each command does, on the stack it names.
//! Every failure comes back as one line for a person; `main` prints it and exits non-zero.

use std::io::{self, BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::time::Duration as StdDuration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use smoltcp::time::Duration;
use smoltcp::wire::{IpCidr, IpEndpoint, Ipv4Cidr};

use crate::proxy::event_loop::{KernelProxy, ProxyRules};
use crate::proxy::node::SmoltcpProxy;
use crate::stack::device::{stop_on_signals, stop_requested, DeviceKind, DeviceNetwork};
use crate::stack::network::{drive, earliest, Network, Step};
use crate::uppercase::kernel::{
    resolve, udp_target, KernelTcpClient, KernelTcpServer, KernelUdpClient, KernelUdpServer,
};
use crate::uppercase::node::{
    ClientExchange, ClientTimeouts, TcpExchange, UdpExchange, UppercaseServers,
    DEFAULT_MAX_DATAGRAM, MAX_SMOLTCP_DATAGRAM,
};
use smoltalk_core::proxy::ProxyPolicy;

/// smoltalk: the uppercase service and its clients, on the kernel's TCP/IP stack or on smoltcp (a userspace
/// stack) over a TUN/TAP device with its own IP address.
#[derive(Debug, Parser)]
#[command(name = "smoltalk", version, propagate_version = true)]
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
    TcpClient(ClientArgs),
    /// Send MESSAGE (or each line of standard input) as UDP datagrams and print each reply as `HOST > REPLY`.
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

/// Options of `compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// How to print the comparison.
    #[arg(long, value_enum, default_value_t = crate::experiments::compare::Format::Table)]
    pub format: crate::experiments::compare::Format,
    /// Write a packet ladder diagram (SVG) per scenario and stack into DIR, each beside the capture it was
    /// drawn from (.pcap).
    #[arg(long, value_name = "DIR")]
    pub diagram: Option<std::path::PathBuf>,
    /// Skip smoltcp on TUN in a namespace (as root it adds a minute or more, most of it the lossy transfer).
    #[arg(long)]
    pub no_tun: bool,
    /// Run only these scenarios (repeatable) [default: all].
    #[arg(long, value_enum, value_name = "NAME")]
    pub scenario: Vec<crate::experiments::compare::Scenario>,
}

/// Options of `lab`.
#[derive(Debug, Clone, Args)]
pub struct LabArgs {
    /// Record every frame on the lab's segment (Ethernet pcap, virtual time) to FILE; the proxy's lab goes to
    /// FILE with `-proxy` before its extension.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<std::path::PathBuf>,
    /// Write a packet ladder diagram (SVG) per comparison scenario and stack into DIR, each beside the capture
    /// it was drawn from (.pcap), as `smoltalk compare --diagram` does.
    #[arg(long, value_name = "DIR", conflicts_with = "soak")]
    pub diagram: Option<std::path::PathBuf>,
    /// Instead of the checks, the loss soak: stream SIZE bytes (100M = 100,000,000; 4MiB = 4,194,304; or plain
    /// bytes) through the lab's smoltcp uppercase client and server, checking every reply byte as it arrives,
    /// and print a table. Exits non-zero at the first wrong byte, with its offset. With faults, a loss-free run
    /// of the same bytes comes first, for comparison; --pcap records the run with the faults.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub soak: Option<u64>,
    /// Soak: percent of each node's frames lost.
    #[arg(long, default_value_t = 0, value_name = "PCT", requires = "soak", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub drop_chance: u8,
    /// Soak: percent of each node's IPv4 frames delivered with one bit flipped (every checksum is verified, so
    /// the stack must drop each one).
    #[arg(long, default_value_t = 0, value_name = "PCT", requires = "soak", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub corrupt_chance: u8,
    /// Soak: seed of the stream and of the faults (the same seed gives the same run).
    #[arg(long, default_value_t = 1, value_name = "N", requires = "soak")]
    pub seed: u32,
    /// Soak: TCP receive buffer of both nodes in bytes.
    #[arg(long, default_value_t = crate::lab::checks::LAB_TCP_RECEIVE, value_name = "BYTES", requires = "soak", value_parser = parse_soak_buffer)]
    pub socket_buffer: usize,
    /// Soak: TCP send buffer of both nodes in bytes [default: half the --socket-buffer, so that a sender can
    /// never fill the receiver's window]. As large as the receive buffer, it brings back the stalls described
    /// in BENCHMARKS.md, "Loss soak".
    #[arg(long, value_name = "BYTES", requires = "soak", value_parser = parse_soak_buffer)]
    pub send_buffer: Option<usize>,
    /// Soak: UDP requests sent at the same faults after the stream, each tried up to 10 times; the report says
    /// how many tries each took.
    #[arg(long, default_value_t = 100, value_name = "N", requires = "soak")]
    pub udp_requests: u32,
    /// Soak: leave out the loss-free reference run.
    #[arg(long, requires = "soak")]
    pub no_reference: bool,
    /// Soak: both nodes take packets without verifying their checksums, to see corruption get through (the
    /// soak then fails at the first corrupted byte it receives).
    #[arg(long, requires = "soak")]
    pub skip_checksums: bool,
}

/// Options of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Seconds each throughput run measures.
    #[arg(long, default_value_t = 3.0, value_parser = parse_seconds)]
    pub seconds: f64,
    /// Runs per scenario; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub runs: u16,
    /// smoltcp's examples/benchmark.rs, built (bench/run builds it from the crate source), to compare with.
    #[arg(long, value_name = "PATH")]
    pub smoltcp_benchmark: Option<std::path::PathBuf>,
    /// Only the transform benchmark (no root needed).
    #[arg(long)]
    pub transform_only: bool,
}

/// Options of `throughput`.
#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    /// Server address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Seconds to measure (after a warm-up of a quarter of that).
    #[arg(long, default_value_t = 5.0, value_parser = parse_seconds)]
    pub seconds: f64,
    /// Connections at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub connections: u16,
    /// Bytes per write.
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub chunk: u32,
    /// Fix the client sockets' kernel send and receive buffers to this size (default: the kernel's
    /// autotuning, which grows them to several MiB).
    #[arg(long, value_name = "BYTES")]
    pub socket_buffer: Option<usize>,
}

/// Which TCP/IP stack a command runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stack {
    /// The operating system's own stack (std::net).
    Kernel,
    /// smoltcp on a TUN device (raw IP).
    Tun,
    /// smoltcp on a TAP device (Ethernet, with ARP).
    Tap,
}

/// Options every command has.
#[derive(Debug, Clone, Args)]
pub struct StackArgs {
    /// The TCP/IP stack: the kernel's, or smoltcp on a TUN or TAP device.
    #[arg(long, value_enum, default_value_t = Stack::Kernel)]
    pub stack: Stack,
    /// TUN/TAP device name (tun/tap only). Create it beforehand with `ip tuntap add dev NAME mode tun|tap`,
    /// or run as root and smoltalk creates it (removed again when smoltalk exits).
    #[arg(long, default_value = "smoltalk0", value_name = "NAME")]
    pub dev: String,
    /// smoltcp's own address and prefix on the device (tun/tap only).
    #[arg(long, default_value = "10.0.2.15/24", value_name = "CIDR", value_parser = parse_cidr)]
    pub ip: Ipv4Cidr,
    /// Default gateway for smoltcp: the kernel's address on the device (tun/tap only).
    #[arg(long, default_value = "10.0.2.2", value_name = "IP")]
    pub gateway: Ipv4Addr,
    /// Open the device without the virtio-net header (tun/tap only): every TCP checksum is then computed and
    /// verified by both smoltcp and the kernel, as with a plain `tun-tap` device.
    #[arg(long)]
    pub no_offload: bool,
    /// smoltcp socket buffer size in bytes, each direction (tun/tap only). Throughput follows it.
    #[arg(long, default_value_t = 256 * 1024, value_name = "BYTES")]
    pub socket_buffer: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub experiment: ExperimentArgs,
}

/// Instruments for experiments on smoltcp (tun/tap, and the lab): a capture, faults, a trace.
#[derive(Debug, Clone, Args)]
pub struct ExperimentArgs {
    /// Write every packet smoltcp sends and receives, both directions, to FILE (pcap: raw IP on TUN,
    /// Ethernet on TAP and in the lab), for `tshark -r FILE` or Wireshark.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<std::path::PathBuf>,
    /// Lose this percent of packets, each direction (smoltcp's FaultInjector).
    #[arg(long, default_value_t = 0, value_name = "PCT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub drop_chance: u8,
    /// Change one byte in this percent of received packets (smoltcp 0.14's FaultInjector also draws for sent
    /// ones, but changes their buffer before the stack writes the packet into it, so they leave intact).
    #[arg(long, default_value_t = 0, value_name = "PCT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub corrupt_chance: u8,
    /// Lose packets longer than BYTES (0: no limit).
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub size_limit: usize,
    /// Lose packets beyond PKTS per second, each direction (0: no limit).
    #[arg(long, default_value_t = 0, value_name = "PKTS/S")]
    pub rate_limit: u64,
    /// Seed of the fault generator (1 or more: smoltcp's generator never leaves 0): the same seed and traffic
    /// give the same faults.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub seed: u32,
    /// Print every packet in both directions (log target smoltalk::trace, at debug level).
    #[arg(long)]
    pub trace: bool,
}

impl ExperimentArgs {
    /// The instruments these options ask for.
    pub fn instruments(&self) -> crate::stack::instruments::Instruments {
        crate::stack::instruments::Instruments {
            pcap: self.pcap.clone(),
            faults: crate::stack::instruments::Faults {
                drop_chance: self.drop_chance,
                corrupt_chance: self.corrupt_chance,
                size_limit: self.size_limit,
                rate_limit: self.rate_limit,
                seed: self.seed,
            },
            trace: self.trace,
        }
    }
}

/// Options of the servers.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to listen on (kernel stack; smoltcp listens on its --ip).
    #[arg(long, default_value = "0.0.0.0", value_name = "ADDR")]
    pub bind: IpAddr,
    /// Port to listen on (0: any free port, kernel stack only).
    #[arg(long, default_value_t = smoltalk_core::DEFAULT_PORT)]
    pub port: u16,
    /// TCP clients served at once on smoltcp (one socket each; smoltcp has no listen backlog).
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: u16,
    /// Largest UDP request smoltcp answers (at most 16356); larger ones are dropped and logged, never
    /// truncated.
    #[arg(long, default_value_t = DEFAULT_MAX_DATAGRAM, value_name = "BYTES", value_parser = parse_max_datagram)]
    pub max_datagram: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub stack: StackArgs,
}

/// Options of `proxy`.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Address to listen on (kernel stack; smoltcp listens on its --ip). The default takes clients from this
    /// machine only: a proxy open to the network by accident is a gift to strangers.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub bind: IpAddr,
    /// Port to listen on (0: any free port, kernel stack only).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Clients allowed to use the proxy (repeatable); others get 403. Default: any client that reaches it on
    /// the kernel stack (which binds 127.0.0.1 by default), the device's subnet (--ip) on smoltcp.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr_or_address)]
    pub allow: Vec<Ipv4Cidr>,
    /// Addresses the proxy may connect to after resolving (repeatable); others get 403. Default: any.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr_or_address)]
    pub allow_dest: Vec<Ipv4Cidr>,
    /// Ports CONNECT may tunnel to, comma-separated.
    #[arg(
        long,
        value_name = "PORTS",
        value_delimiter = ',',
        default_value = "443"
    )]
    pub connect_ports: Vec<u16>,
    /// Client connections served at once; more are answered 503 (smoltcp: the size of the connection pool,
    /// each a client socket, an origin socket and their buffers) [default: kernel 1024, smoltcp 16].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_connections: Option<u32>,
    /// Seconds a client has to send its request head (else 408) and an origin to accept and answer (else 504).
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: f64,
    /// Answer HOST with IP without asking DNS (repeatable); checked before DNS.
    #[arg(long, value_name = "HOST=IP", value_parser = parse_resolve)]
    pub resolve: Vec<(String, Ipv4Addr)>,
    /// DNS server for names not in --resolve (smoltcp only; the kernel stack uses the system's resolver).
    /// Default: the --gateway.
    #[arg(long, value_name = "IP")]
    pub dns: Option<Ipv4Addr>,
    /// Never send a DNS query: only --resolve names and address literals are served, any other name is
    /// answered 502. For tests and labs that must not reach beyond the machine.
    #[arg(long)]
    pub no_dns: bool,
    /// Kernel stack: the classic lab design, one thread per client, instead of the event loop (for
    /// comparison; see BENCHMARKS.md).
    #[arg(long)]
    pub thread_per_client: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub stack: StackArgs,
}

/// Options of the clients.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server address (a name is resolved on the kernel stack only).
    pub host: String,
    /// Server port.
    pub port: u16,
    /// The message to send; without it, each line of standard input is one message.
    pub message: Option<String>,
    /// Seconds to wait for the handshake and for each reply (UDP: for each try) [default: tcp 5, udp 1].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: Option<f64>,
    /// UDP: datagrams sent per message before giving up.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub tries: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub stack: StackArgs,
}

fn parse_cidr(text: &str) -> Result<Ipv4Cidr, String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("{text} is not ADDRESS/PREFIX, for example 10.0.2.15/24"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr} is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(|| format!("{prefix} is not a prefix length from 1 to 32"))?;
    Ok(Ipv4Cidr::new(addr, prefix))
}

fn parse_cidr_or_address(text: &str) -> Result<Ipv4Cidr, String> {
    match text.contains('/') {
        true => parse_cidr(text).or_else(|e| match text.strip_suffix("/0") {
            Some(addr) if addr.parse::<Ipv4Addr>().is_ok() => {
                Ok(Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0))
            }
            _ => Err(e),
        }),
        false => text
            .parse::<Ipv4Addr>()
            .map(|a| Ipv4Cidr::new(a, 32))
            .map_err(|_| format!("{text} is not an IPv4 address or ADDRESS/PREFIX")),
    }
}

fn parse_resolve(text: &str) -> Result<(String, Ipv4Addr), String> {
    let (host, ip) = text
        .split_once('=')
        .ok_or_else(|| format!("{text} is not HOST=IP"))?;
    let ip = ip
        .parse()
        .map_err(|_| format!("{ip} is not an IPv4 address"))?;
    if host.is_empty() {
        return Err(format!("{text} names no host"));
    }
    Ok((host.to_owned(), ip))
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 3600.0 => Ok(s),
        _ => Err(format!(
            "{text} is not a number of seconds between 0 and 3600"
        )),
    }
}

/// A size in bytes: digits, then nothing or B, K/KB (1000), KiB (1024), M/MB, MiB, G/GB or GiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let unit_size: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(format!("{text} is not a size: use bytes, or a number with K, M, G (powers of 1000) or KiB, MiB, GiB")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_size))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text} is not a size of at least one byte"))
}

fn parse_soak_buffer(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (4096..=1 << 20).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text} is not a buffer size from 4096 to 1048576 bytes"
        )),
    }
}

fn parse_max_datagram(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_SMOLTCP_DATAGRAM).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text} is not a size from 1 to {MAX_SMOLTCP_DATAGRAM} bytes (smoltcp reassembles IP packets up to 16 KiB)"
        )),
    }
}

/// Runs a command.
pub fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::TcpServer(args) => tcp_server(args),
        Command::UdpServer(args) => udp_server(args),
        Command::TcpClient(args) => tcp_client(args),
        Command::UdpClient(args) => udp_client(args),
        Command::Lab(args) => lab(args),
        Command::Compare(args) => compare(args),
        Command::Throughput(args) => throughput(args),
        Command::Proxy(args) => proxy(args),
        Command::Bench(args) => bench(args),
    }
}

fn announce(what: &str, addr: impl std::fmt::Display, stack: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "smoltalk {what} listening on {addr} ({stack})");
    let _ = out.flush();
}

/// A UDP reply that took more than one datagram is said so on standard error (no line: the first try was
/// answered), so a lossy path shows without disturbing the replies on standard output.
fn report_tries(server: impl std::fmt::Display, tries: u32) {
    if tries > 1 {
        eprintln!("smoltalk: {server} answered after {tries} tries (the earlier datagrams or their replies were lost)");
    }
}

fn print_reply(host: &str, reply: &[u8]) -> Result<(), String> {
    let mut out = io::stdout().lock();
    out.write_all(host.as_bytes())
        .and_then(|_| out.write_all(b" > "))
        .and_then(|_| out.write_all(reply))
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush())
        .map_err(|e| format!("cannot write to standard output: {e}"))
}

/// The messages of a client: MESSAGE, or the lines of standard input (read on a thread, so the smoltcp stack
/// keeps running while a person types).
enum Messages {
    One(Option<Vec<u8>>),
    Lines(mpsc::Receiver<Vec<u8>>),
}

impl Messages {
    fn new(message: Option<String>) -> Messages {
        match message {
            Some(m) => Messages::One(Some(m.into_bytes())),
            None => {
                let (tx, rx) = mpsc::channel();
                std::thread::spawn(move || {
                    for line in io::stdin().lock().split(b'\n') {
                        let Ok(mut line) = line else { break };
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                });
                Messages::Lines(rx)
            }
        }
    }

    /// The next message, waiting for it (kernel clients).
    fn next_blocking(&mut self) -> Option<Vec<u8>> {
        match self {
            Messages::One(m) => m.take(),
            Messages::Lines(rx) => rx.recv().ok(),
        }
    }

    /// Messages ready now, and whether more may come (smoltcp clients).
    fn ready(&mut self) -> (Vec<Vec<u8>>, bool) {
        match self {
            Messages::One(m) => (m.take().into_iter().collect(), false),
            Messages::Lines(rx) => {
                let mut ready = Vec::new();
                loop {
                    match rx.try_recv() {
                        Ok(line) => ready.push(line),
                        Err(mpsc::TryRecvError::Empty) => return (ready, true),
                        Err(mpsc::TryRecvError::Disconnected) => return (ready, false),
                    }
                }
            }
        }
    }
}

fn device_kind(stack: Stack) -> Option<DeviceKind> {
    match stack {
        Stack::Kernel => None,
        Stack::Tun => Some(DeviceKind::Tun),
        Stack::Tap => Some(DeviceKind::Tap),
    }
}

fn open_device(stack: &StackArgs, kind: DeviceKind) -> Result<DeviceNetwork, String> {
    // Before the open, so no signal can leave the device with its offload setting on.
    stop_on_signals();
    let cidr = IpCidr::Ipv4(stack.ip);
    // With checksum offload smoltcp trusts the kernel's TCP checksums and leaves its own to the kernel: packets
    // corrupted on the way in (by the FaultInjector, after the kernel) would be taken as good, and a capture
    // would show partial checksums. So corruption and captures run without offload.
    let experiment = &stack.experiment;
    let offload = !stack.no_offload && experiment.corrupt_chance == 0 && experiment.pcap.is_none();
    if !stack.no_offload && !offload {
        log::info!(
            "--pcap/--corrupt-chance: checksum offload off, so every checksum is real and verified"
        );
    }
    let mut net = DeviceNetwork::open(
        &stack.dev,
        kind,
        offload,
        cidr,
        Some(stack.gateway),
        &stack.experiment.instruments(),
    )
    .map_err(|e| e.to_string())?;
    net.node_mut().buffers.tcp = stack.socket_buffer.max(1024);
    log::info!(
        "{} as {}, gateway {}",
        smoltcp_label(&net),
        stack.ip,
        stack.gateway
    );
    Ok(net)
}

fn smoltcp_label(net: &DeviceNetwork) -> String {
    let device = net.device();
    format!(
        "smoltcp on {} device {}, MTU {}",
        device.kind().name(),
        device.name(),
        device.mtu()
    )
}

fn tcp_server(args: ServerArgs) -> Result<(), String> {
    match device_kind(args.stack.stack) {
        None => {
            let server = KernelTcpServer::bind(SocketAddr::new(args.bind, args.port))
                .map_err(|e| e.to_string())?;
            let addr = server.local_addr().map_err(|e| e.to_string())?;
            announce("tcp-server", addr, "kernel stack");
            server.serve().map_err(|e| e.to_string())
        }
        Some(kind) => serve_smoltcp(&args, kind, args.connections as usize, false),
    }
}

/// The proxy's rules from its options. They live as long as the process (the policy borrows them).
fn proxy_policy(args: &ProxyArgs) -> ProxyPolicy<'static> {
    let names: Vec<(&'static str, Ipv4Addr)> = args
        .resolve
        .iter()
        .map(|(host, ip)| (&*Box::leak(host.clone().into_boxed_str()), *ip))
        .collect();
    // On smoltcp there is no --bind: by default only the device's own subnet may use the proxy, so it is no
    // more open than the kernel stack's 127.0.0.1.
    let allow = match (args.allow.is_empty(), device_kind(args.stack.stack)) {
        (true, Some(_)) => vec![args.stack.ip.network()],
        _ => args.allow.clone(),
    };
    ProxyPolicy {
        allow_clients: Box::leak(allow.into_boxed_slice()),
        allow_destinations: Box::leak(args.allow_dest.clone().into_boxed_slice()),
        connect_ports: Box::leak(args.connect_ports.clone().into_boxed_slice()),
        static_names: Box::leak(names.into_boxed_slice()),
        pseudonym: Box::leak(
            format!("smoltalk-{:08x}", crate::stack::node::random_seed() as u32).into_boxed_str(),
        ),
    }
}

fn proxy(args: ProxyArgs) -> Result<(), String> {
    let policy = proxy_policy(&args);
    let timeout = StdDuration::from_secs_f64(args.timeout);
    match device_kind(args.stack.stack) {
        None if args.thread_per_client => {
            let rules = ProxyRules {
                policy,
                max_connections: args.max_connections.unwrap_or(1024) as usize,
                timeout,
                system_dns: !args.no_dns,
            };
            let proxy = crate::proxy::threads::KernelProxy::bind(
                SocketAddr::new(args.bind, args.port),
                rules,
            )
            .map_err(|e| e.to_string())?;
            announce(
                "proxy",
                proxy.local_addr(),
                "kernel stack, thread per client",
            );
            proxy.serve().map_err(|e| e.to_string())
        }
        None => {
            let rules = ProxyRules {
                policy,
                max_connections: args.max_connections.unwrap_or(1024) as usize,
                timeout,
                system_dns: !args.no_dns,
            };
            let proxy = KernelProxy::bind(SocketAddr::new(args.bind, args.port), rules)
                .map_err(|e| e.to_string())?;
            announce("proxy", proxy.local_addr(), "kernel stack");
            proxy.serve().map_err(|e| e.to_string())
        }
        Some(kind) => {
            let connections = args.max_connections.unwrap_or(16) as usize;
            let mut net = open_device(&args.stack, kind)?;
            let dns = (!args.no_dns).then(|| args.dns.unwrap_or(args.stack.gateway));
            let mut proxy = SmoltcpProxy::new(
                net.node_mut(),
                args.port,
                connections,
                dns,
                Duration::from_micros((args.timeout * 1e6) as u64),
                policy,
            )?;
            announce(
                "proxy",
                format!("{}:{}", args.stack.ip.address(), args.port),
                &format!(
                    "{}, {connections} connections, DNS {}",
                    smoltcp_label(&net),
                    dns.map_or("off".to_string(), |d| d.to_string())
                ),
            );
            drive(&mut net, |net| {
                if stop_requested() {
                    log::info!("stopped by a signal; closing {}", net.device().name());
                    return Step::Done(());
                }
                let now = net.now();
                Step::Pending {
                    moved: proxy.poll(net.node(0), now),
                    poll_at: proxy.poll_at(),
                }
            })
            .map_err(|e| e.to_string())
        }
    }
}

fn udp_server(args: ServerArgs) -> Result<(), String> {
    match device_kind(args.stack.stack) {
        None => {
            let server = KernelUdpServer::bind(SocketAddr::new(args.bind, args.port))
                .map_err(|e| e.to_string())?;
            let addr = server.local_addr().map_err(|e| e.to_string())?;
            announce("udp-server", addr, "kernel stack");
            server.serve().map_err(|e| e.to_string())
        }
        Some(kind) => serve_smoltcp(&args, kind, 0, true),
    }
}

fn serve_smoltcp(
    args: &ServerArgs,
    kind: DeviceKind,
    connections: usize,
    udp: bool,
) -> Result<(), String> {
    if args.port == 0 {
        return Err("port 0 is not valid with smoltcp: pass --port".into());
    }
    let mut net = open_device(&args.stack, kind)?;
    let mut servers = UppercaseServers::new(
        net.node_mut(),
        args.port,
        connections,
        udp,
        args.max_datagram,
    )
    .map_err(|e| e.to_string())?;
    let what = if udp { "udp-server" } else { "tcp-server" };
    announce(
        what,
        format!("{}:{}", args.stack.ip.address(), args.port),
        &smoltcp_label(&net),
    );
    drive(&mut net, |net| {
        if stop_requested() {
            log::info!("stopped by a signal; closing {}", net.device().name());
            return Step::Done(());
        }
        Step::Pending {
            moved: servers.poll(net.node(0)),
            poll_at: None,
        }
    })
    .map_err(|e| e.to_string())
}

fn timeouts(args: &ClientArgs, default_secs: f64) -> ClientTimeouts {
    let secs = args.timeout.unwrap_or(default_secs);
    let timeout = Duration::from_micros((secs * 1e6) as u64);
    ClientTimeouts {
        connect: timeout,
        reply: timeout,
        tries: args.tries,
    }
}

fn server_endpoint(args: &ClientArgs) -> Result<IpEndpoint, String> {
    let addr: Ipv4Addr = args.host.parse().map_err(|_| {
        format!(
            "{} is not an IPv4 address: with --stack tun|tap the server must be given as an address (smoltcp does \
             not look names up here)",
            args.host
        )
    })?;
    Ok(IpEndpoint::new(addr.into(), args.port))
}

fn tcp_client(args: ClientArgs) -> Result<(), String> {
    let timeouts = timeouts(&args, 5.0);
    let mut messages = Messages::new(args.message.clone());
    match device_kind(args.stack.stack) {
        None => {
            let servers = resolve(&args.host, args.port).map_err(|e| e.to_string())?;
            let mut client =
                KernelTcpClient::connect_any(&servers, StdDuration::from(timeouts.connect))
                    .map_err(|e| e.to_string())?;
            while let Some(message) = messages.next_blocking() {
                let reply = client.exchange(&message).map_err(|e| e.to_string())?;
                print_reply(&args.host, &reply)?;
            }
            client.close();
            Ok(())
        }
        Some(kind) => {
            let server = server_endpoint(&args)?;
            let mut net = open_device(&args.stack, kind)?;
            let mut exchange = TcpExchange::new(net.node_mut(), server, timeouts);
            run_smoltcp_client(&mut net, &mut messages, &mut exchange, &args.host, server)
        }
    }
}

fn udp_client(args: ClientArgs) -> Result<(), String> {
    let timeouts = timeouts(&args, 1.0);
    let mut messages = Messages::new(args.message.clone());
    match device_kind(args.stack.stack) {
        None => {
            let servers = resolve(&args.host, args.port).map_err(|e| e.to_string())?;
            let server = udp_target(&servers).ok_or("no address to send to")?;
            let mut client =
                KernelUdpClient::new(server, StdDuration::from(timeouts.reply), timeouts.tries)
                    .map_err(|e| e.to_string())?;
            while let Some(message) = messages.next_blocking() {
                let (reply, tries) = client.exchange(&message).map_err(|e| e.to_string())?;
                print_reply(&args.host, &reply)?;
                report_tries(server, tries);
            }
            Ok(())
        }
        Some(kind) => {
            let server = server_endpoint(&args)?;
            let mut net = open_device(&args.stack, kind)?;
            let mut exchange =
                UdpExchange::new(net.node_mut(), server, timeouts).map_err(|e| e.to_string())?;
            run_smoltcp_client(&mut net, &mut messages, &mut exchange, &args.host, server)
        }
    }
}

/// Drives a smoltcp client until it is done, feeding it messages as they come and printing each reply. While
/// standard input may still bring more, the loop wakes every 20 ms to look.
fn run_smoltcp_client(
    net: &mut DeviceNetwork,
    messages: &mut Messages,
    exchange: &mut impl ClientExchange,
    host: &str,
    server: IpEndpoint,
) -> Result<(), String> {
    drive(net, |net| {
        if stop_requested() {
            return Step::Done(Err("interrupted".to_string()));
        }
        let now = net.now();
        let (incoming, more) = messages.ready();
        for message in incoming {
            exchange.push_message(message);
        }
        if !more {
            exchange.finish_messages();
        }
        let step = exchange.step_on(net.node(0), now);
        while let Some((reply, tries)) = exchange.take_reply() {
            if let Err(e) = print_reply(host, &reply) {
                return Step::Done(Err(e));
            }
            report_tries(server, tries);
        }
        match step {
            Ok(Step::Done(())) => Step::Done(Ok(())),
            Err(e) => Step::Done(Err(format!("{server}: {e}"))),
            Ok(Step::Pending { moved, poll_at }) => {
                let stdin_check = more.then(|| now + Duration::from_millis(20));
                Step::Pending {
                    moved,
                    poll_at: earliest(poll_at, stdin_check),
                }
            }
        }
    })
    .map_err(|e| e.to_string())?
}

fn compare(args: CompareArgs) -> Result<(), String> {
    let comparisons = crate::experiments::compare::run_all(&args.scenario, !args.no_tun);
    print!(
        "{}",
        crate::experiments::compare::render(&comparisons, args.format)
    );
    if let Some(dir) = &args.diagram {
        let written = crate::experiments::compare::write_diagrams(&comparisons, dir)
            .map_err(|e| e.to_string())?;
        eprintln!(
            "smoltalk compare: {} diagrams in {}",
            written.len(),
            dir.display()
        );
    }
    Ok(())
}

fn lab(args: LabArgs) -> Result<(), String> {
    let capture = |path: &std::path::Path| {
        crate::stack::instruments::CaptureFile::create(path)
            .map_err(|e| format!("cannot write the capture {}: {e}", path.display()))
    };
    if let Some(bytes) = args.soak {
        let options = crate::lab::soak::SoakOptions {
            bytes,
            drop_chance: args.drop_chance,
            corrupt_chance: args.corrupt_chance,
            seed: args.seed,
            receive_buffer: args.socket_buffer,
            send_buffer: args.send_buffer.unwrap_or(args.socket_buffer / 2),
            udp_requests: args.udp_requests,
            reference: !args.no_reference,
            skip_checksums: args.skip_checksums,
        };
        let report =
            crate::lab::soak::run(&options, args.pcap.as_deref().map(capture).transpose()?);
        print!("{}", report.render());
        return match report.failure() {
            None => Ok(()),
            Some(failure) => Err(format!("the soak failed: {failure}")),
        };
    }
    let proxy_pcap = args.pcap.as_ref().map(|p| {
        let stem = p
            .file_stem()
            .map_or("capture".into(), |s| s.to_string_lossy().into_owned());
        let name = match p.extension() {
            Some(ext) => format!("{stem}-proxy.{}", ext.to_string_lossy()),
            None => format!("{stem}-proxy"),
        };
        p.with_file_name(name)
    });
    let uppercase = crate::lab::checks::run_uppercase_checks_captured(
        args.pcap.as_deref().map(capture).transpose()?,
    )
    .map_err(|e| e.to_string())?;
    print!("{}", uppercase.render());
    println!();
    let proxy = crate::lab::proxy::run_proxy_checks_captured(
        proxy_pcap.as_deref().map(capture).transpose()?,
    )
    .map_err(|e| e.to_string())?;
    print!("{}", proxy.render());
    // The classic questions, measured: the kernel over loopback and smoltcp in the lab (what needs no root).
    println!("\nsmoltalk lab: the classic questions on both stacks (`smoltalk compare` for JSON and diagrams)");
    // What needs no root: the kernel's loopback and the lab (the TUN runs are `smoltalk compare`'s).
    let comparisons = crate::experiments::compare::run_all(&[], false);
    print!(
        "{}",
        crate::experiments::compare::render(
            &comparisons,
            crate::experiments::compare::Format::Table
        )
    );
    if let Some(dir) = &args.diagram {
        let written = crate::experiments::compare::write_diagrams(&comparisons, dir)
            .map_err(|e| e.to_string())?;
        println!("{} diagrams in {}", written.len(), dir.display());
    }
    if uppercase.passed() && proxy.passed() {
        Ok(())
    } else {
        Err("some lab checks failed (see above)".into())
    }
}

fn throughput(args: ThroughputArgs) -> Result<(), String> {
    let servers = resolve(&args.host, args.port).map_err(|e| e.to_string())?;
    let measured = crate::tools::load::run(
        servers[0],
        args.connections as usize,
        StdDuration::from_secs_f64(args.seconds / 4.0),
        StdDuration::from_secs_f64(args.seconds),
        args.chunk as usize,
        args.socket_buffer,
    )?;
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "throughput: {:.3} Gbit/s each way ({} verified reply bytes in {:.2} s over {} connection(s))",
        measured.gbit_per_s(),
        measured.bytes,
        measured.elapsed.as_secs_f64(),
        measured.connections
    );
    Ok(())
}

fn bench(args: BenchArgs) -> Result<(), String> {
    let opts = crate::tools::bench::BenchOptions {
        seconds: args.seconds,
        runs: args.runs as usize,
        smoltcp_benchmark: args.smoltcp_benchmark,
        transform_only: args.transform_only,
    };
    let report = crate::tools::bench::run(&opts)?;
    println!("{}\n{report}", crate::tools::bench::describe());
    Ok(())
}

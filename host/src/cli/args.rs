//! The options of every command (clap's argument types) and the value parsers behind them: addresses and
//! prefixes, seconds, sizes, buffer and datagram bounds (a link's delay and rate are parsed by
//! `crate::stack::link_shape`). Each parser's error is the line a person sees.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use clap::{Args, ValueEnum};
use smoltalk_core::proxy::Limits;
use smoltcp::wire::IpCidr;

use crate::stack::addressing::{Addressing, AddressingError};
use crate::uppercase::kernel::address_literal;

use crate::stack::kernel_thread::KernelThreadMode;
use crate::stack::link_shape::{parse_delay, parse_link_rate, LinkRate, LinkShape};
use crate::stack::offload::Offload;
use crate::uppercase::node::MAX_SMOLTCP_DATAGRAM;

/// Options of `compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// How to print the comparison.
    #[arg(long, value_enum, default_value_t = crate::experiments::compare::Format::Table)]
    pub format: crate::experiments::compare::Format,
    /// Write a packet ladder diagram (SVG) per scenario and stack into DIR, each beside the capture it was
    /// drawn from (.pcap), and for each run that carried TCP its time-sequence graph (-tsg.svg).
    #[arg(long, value_name = "DIR")]
    pub diagram: Option<std::path::PathBuf>,
    /// Write one page that a browser opens offline, DIR/index.html: the table, the explanations where the
    /// stacks differ, and per scenario each stack's pictures side by side (drawn into DIR, as --diagram does).
    #[arg(long, value_name = "DIR")]
    pub report: Option<std::path::PathBuf>,
    /// Skip smoltcp on TUN in a namespace (as root it adds a minute or more, most of it the lossy transfer).
    #[arg(long)]
    pub no_tun: bool,
    /// Run only these scenarios (repeatable) [default: all].
    #[arg(long, value_enum, value_name = "NAME")]
    pub scenario: Vec<crate::experiments::compare::Scenario>,
    /// Run each scenario over IPv4 (kernel on 127.0.0.1, lab and TUN on 10.0.2.x), IPv6 (::1, fd00:2::x), or
    /// both, one after the other.
    #[arg(long, value_enum, default_value = "both")]
    pub family: crate::experiments::compare::Families,
    /// One-way delay the lossy scenarios run with: the lab's links, smoltcp's device layer on TUN, and netem on
    /// the kernel's namespace loopback where the kernel has netem (0: none).
    #[arg(long, value_name = "TIME", default_value = "5ms", value_parser = parse_delay)]
    pub link_delay: std::time::Duration,
    /// Rate the lossy scenarios run with, as --link-delay says (none: no limit).
    #[arg(long, value_name = "RATE", default_value = "100Mbit", value_parser = parse_link_rate)]
    pub link_rate: LinkRate,
}

/// Options of `graph`.
#[derive(Debug, Clone, Args)]
pub struct GraphArgs {
    /// The capture (classic pcap: Ethernet, raw IP, raw IPv4 or raw IPv6).
    #[arg(value_name = "CAPTURE.pcap")]
    pub capture: std::path::PathBuf,
    /// The TCP stream to draw, numbered as tshark's `tcp.stream` (from 0, in order of first appearance)
    /// [default: the stream that carried the most payload].
    #[arg(long, value_name = "N")]
    pub stream: Option<usize>,
    /// Draw the other direction: the one that carried less payload (a client's requests, say)
    /// [default: the one that carried more].
    #[arg(long)]
    pub reverse: bool,
    /// Where to write the SVG [default: beside the capture, CAPTURE-streamN.svg, or
    /// CAPTURE-streamN-reverse.svg].
    #[arg(short, long, value_name = "OUT.svg")]
    pub output: Option<std::path::PathBuf>,
}

/// Options of `lab`.
#[derive(Debug, Clone, Args)]
pub struct LabArgs {
    /// Record every frame on the lab's segment (Ethernet pcap, virtual time) to FILE; the proxy's lab goes to
    /// FILE with `-proxy` before its extension. `-`: one live stream on standard output, both parts in it
    /// (`smoltalk lab --pcap - | tshark -r -`); the report goes to standard error.
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
    /// One-way delay of every node's link onto the lab's segment, in virtual time (10ms, 1.5ms, 2s, 0): a round
    /// trip takes twice it. For the checks, the soak, and the lossy scenarios of the comparison [default there:
    /// 5ms; elsewhere none].
    #[arg(long, value_name = "TIME", value_parser = parse_delay)]
    pub link_delay: Option<std::time::Duration>,
    /// Rate of every node's link onto the lab's segment, each direction (100Mbit, 1Gbit, 500kbit, 10Mbit/s):
    /// a frame of N bytes occupies it N*8/RATE seconds, frames queue behind each other (up to 1000, then lost).
    /// For the checks, the soak, and the lossy scenarios of the comparison [default there: 100Mbit; elsewhere
    /// none].
    #[arg(long, value_name = "RATE", value_parser = parse_link_rate)]
    pub link_rate: Option<LinkRate>,
}

impl LabArgs {
    /// The shape `--link-delay` and `--link-rate` give the lab's links (unshaped without them).
    pub fn link(&self) -> LinkShape {
        LinkShape::new(
            self.link_delay.unwrap_or_default(),
            self.link_rate.and_then(|r| r.0),
        )
    }

    /// The shape of the lossy comparison scenarios' links: the flags' where given, else compare's defaults.
    pub fn lossy_link(&self) -> LinkShape {
        let default = crate::experiments::compare::LOSSY_LINK;
        LinkShape::new(
            self.link_delay.unwrap_or(default.delay),
            self.link_rate.map_or(default.rate, |r| r.0),
        )
    }
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
    /// Measure the servers of another smoltalk build (say, an earlier revision's) with this build's load
    /// generator, to compare two versions under the same load; rows with options it does not know are left out.
    #[arg(long, value_name = "PATH")]
    pub server_binary: Option<std::path::PathBuf>,
    /// Only the echo rows that the goals whose name contains TEXT (ignoring case) compare, say `ipv6`; neither
    /// smoltcp's benchmark nor the memory part.
    #[arg(long, value_name = "TEXT")]
    pub goal: Option<String>,
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
    /// smoltcp's own address and prefix on the device (tun/tap only). Give it once for one family, twice for
    /// both (one IPv4, one IPv6) [default: 10.0.2.15/24 and fd00:2::15/64].
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub ip: Vec<IpCidr>,
    /// smoltcp's default gateway, the kernel's address on the device (tun/tap only), one for each family of
    /// --ip [default: 10.0.2.2 and fd00:2::2, where --ip's subnet holds them].
    #[arg(long, value_name = "IP")]
    pub gateway: Vec<IpAddr>,
    /// What smoltcp and the kernel stop doing for each other, through the virtio-net header (tun/tap only):
    /// `segmentation` sends and takes TCP segments of up to 64 KiB whole (TSO4 and TSO6, smoltcp's IPv6 segments joined into them by the device) and leaves TCP
    /// checksums out, falling back to `checksum` if the kernel refuses; `checksum` leaves TCP checksums out;
    /// `none` opens a plain device (every checksum computed and verified by both sides, packets of MTU size).
    /// Captures, corruption, other faults and traces lower it (they say so when they start).
    #[arg(long, value_enum, default_value_t = Offload::Segmentation, value_name = "LEVEL")]
    pub offload: Offload,
    /// The same as `--offload none`.
    #[arg(long, conflicts_with = "offload")]
    pub no_offload: bool,
    /// When a kernel thread takes in the packets smoltcp sends (tun/tap with offload, root: the device in NAPI
    /// mode with threaded NAPI), so the kernel's receive work for them runs beside smoltalk instead of on its
    /// thread: `auto` while two or more connections are busy (faster for them, slower for one alone), `on`
    /// always, `off` never.
    #[arg(long, value_enum, default_value_t = KernelThreadMode::Auto, value_name = "WHEN")]
    pub kernel_thread: KernelThreadMode,
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
    /// Ethernet on TAP and in the lab), for `tshark -r FILE` or Wireshark. `-`: live on standard output, each
    /// packet as it happens (`--pcap - | wireshark -k -i -`); what smoltalk prints goes to standard error.
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
    /// Hold every packet smoltcp sends and every packet it receives this long in the device layer (10ms, 1.5ms,
    /// 2s, 0), each direction: a one-way delay, so a round trip through the device takes twice it. Real time.
    #[arg(long, value_name = "TIME", value_parser = parse_delay)]
    pub link_delay: Option<std::time::Duration>,
    /// Let packets through the device layer at this rate, each direction (100Mbit, 1Gbit, 500kbit, 10Mbit/s),
    /// one after another, up to 1000 held per direction (more are lost).
    #[arg(long, value_name = "RATE", value_parser = parse_link_rate)]
    pub link_rate: Option<LinkRate>,
}

impl StackArgs {
    /// smoltcp's addresses and gateways from `--ip` and `--gateway`.
    pub fn addressing(&self) -> Result<Addressing, AddressingError> {
        Addressing::new(&self.ip, &self.gateway)
    }
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
            link: LinkShape::new(
                self.link_delay.unwrap_or_default(),
                self.link_rate.and_then(|r| r.0),
            ),
        }
    }
}

/// Options of the servers.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to listen on (kernel stack; smoltcp listens on its --ip): `::` takes IPv4 and IPv6 clients,
    /// `0.0.0.0` IPv4 only, `::1` or `127.0.0.1` one family on loopback [default: ::, or 0.0.0.0 where the
    /// system has no IPv6].
    #[arg(long, value_name = "ADDR", value_parser = parse_bind_address)]
    pub bind: Option<IpAddr>,
    /// Port to listen on (0: any free port, kernel stack only).
    #[arg(long, default_value_t = smoltalk_core::DEFAULT_PORT)]
    pub port: u16,
    /// smoltcp: TCP clients served at once (one socket each; smoltcp has no listen backlog) [default: 8].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: Option<u16>,
    /// smoltcp: the largest UDP request answered (at most 16356); larger ones are dropped and logged, never
    /// truncated [default: 8192]. (The kernel stack's server answers every datagram whole.)
    #[arg(long, value_name = "BYTES", value_parser = parse_max_datagram)]
    pub max_datagram: Option<usize>,
    /// Kernel stack: threads serving at once, each with its own socket on the port (SO_REUSEPORT; the kernel
    /// spreads clients over them by a hash of each one's address and port): TCP event loops, or UDP sockets
    /// [default: one per CPU].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// Kernel-stack TCP: clients served at once over all workers; more are closed as soon as they connect, and
    /// the refusals logged at most once a second [default: 100000, fewer if the open files limit is lower].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub max_connections: Option<u32>,
    /// Kernel-stack TCP: a client is closed once no byte has moved either way for SECS (it sent nothing, or
    /// took none of its replies) [default: 300].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub idle_timeout: Option<f64>,
    /// Kernel-stack TCP: the classic lab design, one thread per client, instead of the event loops (for
    /// comparison; see BENCHMARKS.md).
    #[arg(long, conflicts_with = "workers")]
    pub thread_per_client: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub stack: StackArgs,
}

/// Options of `proxy`.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Address to listen on (kernel stack; smoltcp listens on its --ip). The default takes clients from this
    /// machine only: a proxy open to the network by accident is a gift to strangers.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR", value_parser = parse_bind_address)]
    pub bind: IpAddr,
    /// Port to listen on (0: any free port, kernel stack only).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Clients allowed to use the proxy (repeatable); others get 403. Default: any client that reaches it on
    /// the kernel stack (which binds 127.0.0.1 by default), the device's subnet (--ip) on smoltcp.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr_or_address)]
    pub allow: Vec<IpCidr>,
    /// Addresses the proxy may connect to after resolving (repeatable); others get 403. Default: any.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr_or_address)]
    pub allow_dest: Vec<IpCidr>,
    /// Ports CONNECT may tunnel to, comma-separated.
    #[arg(
        long,
        value_name = "PORTS",
        value_delimiter = ',',
        default_value = "443"
    )]
    pub connect_ports: Vec<u16>,
    /// Client connections served at once; more are answered 503 (smoltcp: the most the connection pool grows
    /// to, each a client socket, an origin socket and their buffers, made when a client first needs it)
    /// [default: kernel 1024, smoltcp 256].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_connections: Option<u32>,
    /// Seconds a client has to send its request head (else 408) and an origin to accept and answer (else 504).
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: f64,
    /// Largest response head an origin may send, in bytes; a longer one, or one with more fields than fit, is
    /// answered 502 with that reason (smoltcp: at most 65536, and no more than --socket-buffer; 128 fields).
    #[arg(long, default_value_t = Limits::DEFAULT.response_head as u32, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1024..=1024 * 1024))]
    pub max_response_head: u32,
    /// Seconds a CONNECT tunnel may carry no byte either way before the proxy closes it (a silent tunnel
    /// otherwise holds its place under --max-connections).
    #[arg(long, default_value_t = Limits::DEFAULT.tunnel_idle.total_millis() as f64 / 1000.0, value_name = "SECS", value_parser = parse_seconds)]
    pub tunnel_idle: f64,
    /// Answer HOST with IP without asking DNS (repeatable); checked before DNS.
    #[arg(long, value_name = "HOST=IP", value_parser = parse_resolve)]
    pub resolve: Vec<(String, IpAddr)>,
    /// DNS server for names not in --resolve (smoltcp only; the kernel stack uses the system's resolver),
    /// asked for A and AAAA records at once. Default: the IPv4 --gateway (the IPv6 one if there is none).
    #[arg(long, value_name = "IP")]
    pub dns: Option<IpAddr>,
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
    /// Server address, IPv4 or IPv6 (`::1` or `[::1]`), or a name (kernel stack only: tcp-client tries its
    /// addresses in turn until one connects, udp-client sends to its first IPv4 address, else its first;
    /// standard error says which address was used).
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
    /// smoltcp: the DNS server that looks a HOST name up (A and AAAA at once) [default: the IPv4 --gateway, or
    /// the IPv6 one]. The kernel stack uses the system's resolver.
    #[arg(long, value_name = "IP")]
    pub dns: Option<IpAddr>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub stack: StackArgs,
}

/// `ADDRESS/PREFIX` of either family, for example 10.0.2.15/24 or fd00:2::15/64.
fn parse_cidr(text: &str) -> Result<IpCidr, String> {
    let (addr, prefix) = text.split_once('/').ok_or_else(|| {
        format!("{text} is not ADDRESS/PREFIX, for example 10.0.2.15/24 or fd00:2::15/64")
    })?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr} is not an IPv4 or IPv6 address"))?;
    let longest = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=longest).contains(p))
        .ok_or_else(|| format!("{prefix} is not a prefix length from 1 to {longest}"))?;
    Ok(IpCidr::new(addr.into(), prefix))
}

/// An address to listen on: IPv4, or IPv6 with or without brackets (`::1`, `[::1]`).
fn parse_bind_address(text: &str) -> Result<IpAddr, String> {
    address_literal(text).ok_or_else(|| match text.starts_with('[') && text.ends_with(']') {
        true => format!("{text}: only an IPv6 address goes in brackets"),
        false => format!("{text} is not an IPv4 or IPv6 address"),
    })
}

/// A CIDR (`/0` allowed: every address of its family) or a single address, of either family.
fn parse_cidr_or_address(text: &str) -> Result<IpCidr, String> {
    match text.split_once('/') {
        Some((addr, "0")) => match addr.parse::<IpAddr>() {
            Ok(addr) => Ok(IpCidr::new(unspecified_like(addr).into(), 0)),
            Err(_) => Err(format!("{addr} is not an IPv4 or IPv6 address")),
        },
        Some(_) => parse_cidr(text),
        None => text
            .parse::<IpAddr>()
            .map(|a| match a {
                IpAddr::V4(_) => IpCidr::new(a.into(), 32),
                IpAddr::V6(_) => IpCidr::new(a.into(), 128),
            })
            .map_err(|_| format!("{text} is not an IPv4 or IPv6 address or ADDRESS/PREFIX")),
    }
}

/// The unspecified address of `addr`'s family.
fn unspecified_like(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn parse_resolve(text: &str) -> Result<(String, IpAddr), String> {
    let (host, ip) = text
        .split_once('=')
        .ok_or_else(|| format!("{text} is not HOST=IP"))?;
    // An IPv6 address may be written in brackets, as in a URL.
    let bare = ip
        .strip_prefix('[')
        .and_then(|ip| ip.strip_suffix(']'))
        .unwrap_or(ip);
    let ip = bare
        .parse()
        .map_err(|_| format!("{ip} is not an IPv4 or IPv6 address"))?;
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

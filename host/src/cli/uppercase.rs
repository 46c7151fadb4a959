//! The uppercase commands: `tcp-server`, `udp-server`, `tcp-client` and `udp-client`, each on the kernel stack
//! or on smoltcp over a TUN/TAP device, and what the clients share: their messages (MESSAGE or standard input),
//! their timeouts, and how a reply is printed.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration as StdDuration;

use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint};

use super::announce;
use super::args::{ClientArgs, ServerArgs};
use super::device::{device_kind, open_device, smoltcp_label};
use super::CliError;
use crate::stack::addressing::Addressing;
use crate::stack::device::DeviceKind;
use crate::stack::device_network::DeviceNetwork;
use crate::stack::name_lookup::NameLookup;
use crate::stack::network::{drive, earliest, Network, Step};
use crate::sys::stop_requested;
use crate::uppercase::kernel::sockets::{default_workers, families_served};
use crate::uppercase::kernel::{
    address_literal, is_address, resolve, udp_target, Connected, KernelTcpClient, KernelTcpServer,
    KernelUdpClient, KernelUdpServer, ListenAddress, TcpDesign, TcpServerOptions,
};
use crate::uppercase::node::{
    ClientExchange, ClientTimeouts, TcpExchange, UdpExchange, UppercaseServers,
    DEFAULT_MAX_DATAGRAM,
};
use crate::uppercase::ClientFailure;

/// smoltcp's TCP clients served at once unless `--connections` says otherwise.
const DEFAULT_CONNECTIONS: usize = 8;

pub(super) fn tcp_server(args: ServerArgs) -> Result<(), String> {
    match device_kind(args.stack.stack) {
        None => {
            refuse_smoltcp_options(&args, "tcp-server")?;
            let defaults = TcpServerOptions::default();
            let options = TcpServerOptions {
                design: match args.thread_per_client {
                    true => TcpDesign::ThreadPerClient,
                    false => TcpDesign::EventLoop,
                },
                workers: args.workers.map_or(defaults.workers, usize::from),
                max_connections: args
                    .max_connections
                    .map_or(defaults.max_connections, |n| n as usize),
                max_connections_asked: args.max_connections.is_some(),
                idle_timeout: args
                    .idle_timeout
                    .map_or(defaults.idle_timeout, StdDuration::from_secs_f64),
            };
            let server =
                KernelTcpServer::bind(listen_address(&args), options).map_err(|e| e.to_string())?;
            announce_kernel("tcp-server", server.local_addr());
            log::info!("tcp: {}", server.describe());
            server.serve().map_err(|e| e.to_string())
        }
        Some(kind) => {
            refuse_kernel_options(&args, "tcp-server")?;
            let connections = args.connections.map_or(DEFAULT_CONNECTIONS, usize::from);
            serve_smoltcp(&args, kind, connections, false)
        }
    }
}

pub(super) fn udp_server(args: ServerArgs) -> Result<(), String> {
    let connection_option = [
        (args.max_connections.is_some(), "--max-connections"),
        (args.idle_timeout.is_some(), "--idle-timeout"),
        (args.thread_per_client, "--thread-per-client"),
    ]
    .into_iter()
    .find_map(|(given, name)| given.then_some(name));
    if let Some(name) = connection_option {
        return Err(format!(
            "{name} is for tcp-server: UDP has no connections to limit or close"
        ));
    }
    match device_kind(args.stack.stack) {
        None => {
            refuse_smoltcp_options(&args, "udp-server")?;
            let workers = args.workers.map_or_else(default_workers, usize::from);
            let server =
                KernelUdpServer::bind(listen_address(&args), workers).map_err(|e| e.to_string())?;
            announce_kernel("udp-server", server.local_addr());
            log::info!("udp: {}", server.describe());
            server.serve().map_err(|e| e.to_string())
        }
        Some(kind) => {
            refuse_kernel_options(&args, "udp-server")?;
            serve_smoltcp(&args, kind, 0, true)
        }
    }
}

/// Where a kernel-stack server listens: `--bind`, else `[::]` for IPv4 and IPv6 (`0.0.0.0` where the system has
/// no IPv6).
fn listen_address(args: &ServerArgs) -> ListenAddress {
    match args.bind {
        Some(ip) => ListenAddress::Exactly(SocketAddr::new(ip, args.port)),
        None => ListenAddress::EveryFamily { port: args.port },
    }
}

/// The start-up line of a kernel-stack server, with the families it takes where its address does not say:
/// `listening on [::]:12000 (IPv4 and IPv6, kernel stack)`. The address stays one word, `ADDR:PORT`, for
/// whoever reads the port from it.
fn announce_kernel(what: &str, addr: SocketAddr) {
    match families_served(addr) {
        Some(families) => announce(what, addr, &format!("{families}, kernel stack")),
        None => announce(what, addr, "kernel stack"),
    }
}

/// smoltcp's server options mean nothing to the kernel stack's servers, whose cap is `--max-connections` and
/// which answer every datagram whole: say so rather than ignore them.
fn refuse_smoltcp_options(args: &ServerArgs, command: &str) -> Result<(), String> {
    if args.connections.is_some() {
        return Err(format!(
            "--connections is for smoltcp's {command} (--stack tun|tap): on the kernel stack, --max-connections \
             caps the clients"
        ));
    }
    if args.max_datagram.is_some() {
        return Err(format!(
            "--max-datagram is for smoltcp's {command} (--stack tun|tap): the kernel stack's answers every \
             datagram whole"
        ));
    }
    Ok(())
}

/// The kernel stack's server options mean nothing to smoltcp's server, which runs on one thread with a fixed
/// pool of sockets (`--connections`): say so rather than ignore them.
fn refuse_kernel_options(args: &ServerArgs, command: &str) -> Result<(), String> {
    let given = [
        (args.workers.is_some(), "--workers"),
        (args.max_connections.is_some(), "--max-connections"),
        (args.idle_timeout.is_some(), "--idle-timeout"),
        (args.thread_per_client, "--thread-per-client"),
    ]
    .into_iter()
    .find_map(|(given, name)| given.then_some(name));
    match given {
        Some(name) => Err(format!(
            "{name} is for the kernel stack's {command}: smoltcp's runs on one thread, serving up to --connections \
             clients at once"
        )),
        None => Ok(()),
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
    let addressing = args.stack.addressing().map_err(|e| e.to_string())?;
    let mut net = open_device(&args.stack, kind)?;
    let mut servers = UppercaseServers::new(
        net.node_mut(),
        args.port,
        connections,
        udp,
        args.max_datagram.unwrap_or(DEFAULT_MAX_DATAGRAM),
    )
    .map_err(|e| e.to_string())?;
    let what = if udp { "udp-server" } else { "tcp-server" };
    announce(what, addressing.endpoints(args.port), &smoltcp_label(&net));
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

/// Whom a smoltcp client asks for its server: known at once, or to be looked up.
enum ServerTarget {
    /// HOST was an address.
    Address(IpEndpoint),
    /// HOST is a name, for this DNS server.
    Name { dns: IpAddress },
}

/// What HOST means for a smoltcp client, checked before its device is opened (nothing is sent for a mistake on
/// the command line): an address literal (IPv6 with or without brackets; a v4-mapped one is the IPv4 address),
/// or a name for `--dns` (else a gateway), each of a family smoltcp has here.
fn smoltcp_target(args: &ClientArgs, addressing: &Addressing) -> Result<ServerTarget, String> {
    if let Some(ip) = address_literal(&args.host) {
        // A v4-mapped address is the IPv4 server it stands for.
        let ip = IpAddress::from(ip.to_canonical());
        addressing.check_reachable(ip, &ip.to_string())?;
        return Ok(ServerTarget::Address(IpEndpoint::new(ip, args.port)));
    }
    if args.host.starts_with('[') || args.host.ends_with(']') {
        return Err(format!(
            "{}: only an IPv6 address goes in brackets (a name is not looked up)",
            args.host
        ));
    }
    let dns = args
        .dns
        .map(IpAddress::from)
        .or_else(|| addressing.gateways().next())
        .ok_or_else(|| {
            format!(
                "{} is not an address, and there is no DNS server to look it up: give --dns or --gateway",
                args.host
            )
        })?;
    addressing.check_reachable(dns, &format!("DNS server {dns}"))?;
    Ok(ServerTarget::Name { dns })
}

/// A smoltcp client's device, opened once HOST and `--dns` are known to make sense, and the server it talks to.
fn open_smoltcp_client(
    args: &ClientArgs,
    kind: DeviceKind,
    timeout: Duration,
) -> Result<(DeviceNetwork, IpEndpoint), String> {
    let addressing = args.stack.addressing().map_err(|e| e.to_string())?;
    let target = smoltcp_target(args, &addressing)?;
    let mut net = open_device(&args.stack, kind)?;
    let server = smoltcp_server(&mut net, args, &addressing, target, timeout)?;
    Ok((net, server))
}

/// The server a smoltcp client talks to: `target`'s address, or the first address of a family the node has of
/// what the DNS server answers for HOST through a DNS socket on the client's node (said on standard error).
fn smoltcp_server(
    net: &mut DeviceNetwork,
    args: &ClientArgs,
    addressing: &Addressing,
    target: ServerTarget,
    timeout: Duration,
) -> Result<IpEndpoint, String> {
    let server = match target {
        ServerTarget::Address(endpoint) => return Ok(endpoint),
        ServerTarget::Name { dns } => dns,
    };
    // A client's short UDP timeout (1 s a try) is not a DNS server's: at least 5 s.
    let deadline = net.now() + timeout.max(Duration::from_secs(5));
    let lookup = NameLookup::start(net.node_mut(), server, &args.host, deadline)
        .map_err(|e| e.to_string())?;
    let mut lookup = Some(lookup);
    let found = drive(net, |net| {
        let now = net.now();
        let Some(pending) = lookup.take() else {
            return Step::Done(Err("the lookup ended twice".to_owned()));
        };
        match pending.poll(net.node(0), now) {
            Ok(result) => Step::Done(result.map_err(|e| e.to_string())),
            Err(pending) => {
                let poll_at = pending.poll_at();
                lookup = Some(pending);
                Step::Pending {
                    moved: false,
                    poll_at: Some(poll_at),
                }
            }
        }
    })
    .map_err(|e| e.to_string())??;
    let Some(&ip) = found.iter().find(|&&ip| addressing.has_family_of(ip)) else {
        let all: Vec<String> = found.iter().map(ToString::to_string).collect();
        return Err(format!(
            "{} is {}, but smoltcp has no address of that family here (see --ip)",
            args.host,
            all.join(", ")
        ));
    };
    eprintln!(
        "smoltalk: {} is {ip} (DNS server {server}); connecting to {}",
        args.host,
        SocketAddr::new(ip.into(), args.port)
    );
    Ok(IpEndpoint::new(ip, args.port))
}

/// `--dns` is smoltcp's: the kernel stack asks the system's resolver.
fn refuse_dns_on_kernel(args: &ClientArgs) -> Result<(), String> {
    match (args.dns, device_kind(args.stack.stack)) {
        (Some(_), None) => Err(
            "--dns is for --stack tun|tap: the kernel stack asks the system's resolver".to_owned(),
        ),
        _ => Ok(()),
    }
}

pub(super) fn tcp_client(args: ClientArgs) -> Result<(), CliError> {
    refuse_dns_on_kernel(&args)?;
    let timeouts = timeouts(&args, 5.0);
    let mut messages = Messages::new(args.message.clone());
    match device_kind(args.stack.stack) {
        None => {
            let servers = resolve(&args.host, args.port).map_err(|e| e.to_string())?;
            let Connected {
                mut client,
                failed_first,
            } = KernelTcpClient::connect_any(&servers, StdDuration::from(timeouts.connect))?;
            if !is_address(&args.host) {
                let tried: String = failed_first
                    .iter()
                    .map(|failure| format!("{}, so ", failure.in_brief()))
                    .collect();
                eprintln!(
                    "smoltalk: {} is {}; {tried}connected to {}",
                    args.host,
                    addresses(&servers),
                    client.server()
                );
            }
            while let Some(message) = messages.next_blocking() {
                let reply = client.exchange(&message)?;
                print_reply(&args.host, &reply)?;
            }
            client.close();
            Ok(())
        }
        Some(kind) => {
            let (mut net, server) = open_smoltcp_client(&args, kind, timeouts.connect)?;
            let mut exchange = TcpExchange::new(net.node_mut(), server, timeouts);
            run_smoltcp_client(&mut net, &mut messages, &mut exchange, &args.host, server)
        }
    }
}

pub(super) fn udp_client(args: ClientArgs) -> Result<(), CliError> {
    refuse_dns_on_kernel(&args)?;
    let timeouts = timeouts(&args, 1.0);
    let mut messages = Messages::new(args.message.clone());
    match device_kind(args.stack.stack) {
        None => {
            let servers = resolve(&args.host, args.port).map_err(|e| e.to_string())?;
            let server = udp_target(&servers).ok_or("no address to send to")?;
            if !is_address(&args.host) {
                eprintln!(
                    "smoltalk: {} is {}; sending to {server}",
                    args.host,
                    addresses(&servers)
                );
            }
            let mut client =
                KernelUdpClient::new(server, StdDuration::from(timeouts.reply), timeouts.tries)
                    .map_err(|e| e.to_string())?;
            while let Some(message) = messages.next_blocking() {
                let (reply, tries) = client.exchange(&message)?;
                print_reply(&args.host, &reply)?;
                report_tries(server, tries);
            }
            Ok(())
        }
        Some(kind) => {
            let (mut net, server) = open_smoltcp_client(&args, kind, timeouts.connect)?;
            let ip_mtu = net.device().mtu();
            let mut exchange = UdpExchange::new(net.node_mut(), server, timeouts)
                .map_err(|e| e.to_string())?
                .over_ipv6_mtu(server, ip_mtu);
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
) -> Result<(), CliError> {
    drive(net, |net| {
        if stop_requested() {
            return Step::Done(Err("interrupted".into()));
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
                return Step::Done(Err(e.into()));
            }
            report_tries(SocketAddr::new(server.addr.into(), server.port), tries);
        }
        match step {
            Ok(Step::Done(())) => Step::Done(Ok(())),
            Err(e) => Step::Done(Err(CliError {
                failure: ClientFailure::of(&e),
                message: format!("{}: {e}", SocketAddr::new(server.addr.into(), server.port)),
            })),
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

/// A name's addresses, as the line saying which one a client used lists them: `::1 and 127.0.0.1`.
fn addresses(servers: &[SocketAddr]) -> String {
    let ips: Vec<String> = servers.iter().map(|s| s.ip().to_string()).collect();
    match ips.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// A UDP reply that took more than one datagram is said so on standard error (no line: the first try was
/// answered), so a lossy path shows without disturbing the replies on standard output.
fn report_tries(server: impl std::fmt::Display, tries: u32) {
    if tries > 1 {
        eprintln!("smoltalk: {server} answered after {tries} tries (the earlier datagrams or their replies were lost)");
    }
}

fn print_reply(host: &str, reply: &[u8]) -> Result<(), String> {
    let mut out = super::human_output();
    out.write_all(host.as_bytes())
        .and_then(|_| out.write_all(b" > "))
        .and_then(|_| out.write_all(reply))
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush())
        .map_err(
            |e| match crate::stack::instruments::standard_output_is_the_capture() {
                true => format!("cannot write to standard error: {e}"),
                false => format!("cannot write to standard output: {e}"),
            },
        )
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

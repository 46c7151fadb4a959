//! The `proxy` command: its configuration from the options, and the design it runs (the kernel stack's event
//! loop or thread per client, or smoltcp over a TUN/TAP device).

use std::net::{IpAddr, SocketAddr};

use smoltalk_core::proxy::Limits;
use smoltcp::time::Duration;

use super::announce;
use super::args::ProxyArgs;
use super::device::{device_kind, open_device, smoltcp_label};
use crate::proxy::event_loop::KernelProxy;
use crate::proxy::node::{SmoltcpProxy, DEFAULT_POOL};
use crate::proxy::ProxyConfig;
use crate::stack::addressing::Addressing;
use crate::stack::network::{drive_each_packet, Network, Step};
use crate::sys::stop_requested;

/// The proxy's configuration from its options (`addressing`: smoltcp's addresses, on smoltcp).
fn proxy_config(args: &ProxyArgs, addressing: Option<&Addressing>) -> ProxyConfig {
    // On smoltcp there is no --bind: by default only the device's own subnets may use the proxy, so it is no
    // more open than the kernel stack's 127.0.0.1.
    let allow_clients = match (args.allow.is_empty(), addressing) {
        (true, Some(addressing)) => addressing.networks(),
        _ => args.allow.clone(),
    };
    let default_connections = match addressing.is_some() {
        true => DEFAULT_POOL,
        false => Limits::DEFAULT.max_connections,
    };
    ProxyConfig {
        allow_clients,
        allow_destinations: args.allow_dest.clone(),
        connect_ports: args.connect_ports.clone(),
        static_names: args.resolve.clone(),
        pseudonym: format!("smoltalk-{:08x}", crate::stack::node::random_seed() as u32),
        limits: Limits {
            max_connections: args
                .max_connections
                .map_or(default_connections, |n| n as usize),
            response_head: args.max_response_head as usize,
            timeout: Duration::from_micros((args.timeout * 1e6) as u64),
            tunnel_idle: Duration::from_micros((args.tunnel_idle * 1e6) as u64),
            ..Limits::DEFAULT
        },
        system_dns: !args.no_dns,
    }
}

pub(super) fn proxy(args: ProxyArgs) -> Result<(), String> {
    let addressing = match device_kind(args.stack.stack) {
        Some(_) => Some(args.stack.addressing().map_err(|e| e.to_string())?),
        None => None,
    };
    let config = proxy_config(&args, addressing.as_ref());
    let (Some(kind), Some(addressing)) = (device_kind(args.stack.stack), addressing) else {
        let addr = SocketAddr::new(args.bind, args.port);
        if args.thread_per_client {
            let proxy = crate::proxy::threads::KernelProxy::bind(addr, config)
                .map_err(|e| e.to_string())?;
            announce(
                "proxy",
                proxy.local_addr(),
                "kernel stack, thread per client",
            );
            return proxy.serve().map_err(|e| e.to_string());
        }
        let proxy = KernelProxy::bind(addr, config).map_err(|e| e.to_string())?;
        announce("proxy", proxy.local_addr(), "kernel stack");
        return proxy.serve().map_err(|e| e.to_string());
    };
    // The IPv4 gateway, else the IPv6 one; none: no DNS server to ask.
    let dns = config
        .system_dns
        .then(|| {
            args.dns
                .or_else(|| addressing.gateways().next().map(IpAddr::from))
        })
        .flatten();
    if let Some(dns) = dns {
        addressing.check_reachable(dns.into(), &format!("--dns {dns}"))?;
    }
    let mut net = open_device(&args.stack, kind)?;
    let mut proxy = SmoltcpProxy::new(net.node_mut(), args.port, config.limits, dns)
        .map_err(|e| e.to_string())?;
    announce(
        "proxy",
        addressing.endpoints(args.port),
        &format!(
            "{}, {} connections, DNS {}",
            smoltcp_label(&net),
            config.limits.max_connections,
            dns.map_or("off".to_string(), |d| d.to_string())
        ),
    );
    let names = config.names();
    let policy = config.policy(&names);
    // After every packet, before the next: a SYN may have taken the last listening socket.
    let keep_listening = |proxy: &mut SmoltcpProxy, _, node: &mut _| proxy.keep_listening(node);
    drive_each_packet(&mut net, &mut proxy, keep_listening, |net, proxy| {
        if stop_requested() {
            log::info!("stopped by a signal; closing {}", net.device().name());
            return Step::Done(());
        }
        let now = net.now();
        Step::Pending {
            moved: proxy.poll(net.node(0), now, &policy),
            poll_at: proxy.poll_at(),
        }
    })
    .map_err(|e| e.to_string())
}

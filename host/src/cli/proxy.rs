//! The `proxy` command: its policy from the options, and the proxy it runs (the kernel stack's event loop or
//! thread per client, or smoltcp over a TUN/TAP device).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration as StdDuration;

use smoltcp::time::Duration;

use super::announce;
use super::args::ProxyArgs;
use super::device::{device_kind, open_device, smoltcp_label};
use crate::proxy::event_loop::{KernelProxy, ProxyRules};
use crate::proxy::node::SmoltcpProxy;
use crate::stack::device::stop_requested;
use crate::stack::network::{drive, Network, Step};
use smoltalk_core::proxy::ProxyPolicy;

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

pub(super) fn proxy(args: ProxyArgs) -> Result<(), String> {
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

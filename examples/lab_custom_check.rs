//! Using the lab as a harness: start the standard two-node lab, run your own clients against the smoltcp
//! uppercase server, and look at what crossed the virtual wire. No privileges needed.
//!
//! ```text
//! cargo run --example lab_custom_check
//! ```

use smoltalk::lab::checks::{preview, LabClient, UppercaseLab, PORT};
use smoltalk::stack::network::Network;
use smoltalk::uppercase::node::{ClientTimeouts, TcpExchange, UdpExchange};

fn main() {
    let mut lab = UppercaseLab::new();
    let client = lab.client;

    let tcp = TcpExchange::with_messages(
        lab.lab.node(client),
        UppercaseLab::endpoint(PORT),
        ClientTimeouts::default(),
        [b"my own message".to_vec(), b"and another one".to_vec()],
    );
    let udp = UdpExchange::with_messages(
        lab.lab.node(client),
        UppercaseLab::endpoint(PORT),
        ClientTimeouts::default(),
        [b"a datagram".to_vec()],
    )
    .expect("a fresh node binds a UDP socket");
    let mut clients = vec![LabClient::Tcp(tcp), LabClient::Udp(udp)];

    let before = lab.lab.link_stats();
    let outcomes = lab
        .run(&mut clients)
        .expect("the lab has no device to lose");
    for (client, outcome) in clients.iter_mut().zip(outcomes) {
        match outcome {
            Ok(()) => {
                let proto = if matches!(client, LabClient::Tcp(_)) {
                    "tcp"
                } else {
                    "udp"
                };
                for (reply, _tries) in client.take_replies() {
                    println!("{proto} reply {}", preview(&reply));
                }
            }
            Err(e) => println!("client failed: {e}"),
        }
    }
    let after = lab.lab.link_stats();
    println!(
        "{} frames, {} bytes on the segment; server stats: {:?} {:?}",
        after.frames - before.frames,
        after.bytes - before.bytes,
        lab.servers.tcp_stats(),
        lab.servers.udp_stats()
    );
}

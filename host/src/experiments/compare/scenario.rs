//! The scenarios: the classic lab's questions, and a few more, that `compare` runs on every stack; and the IP
//! families (`--family`) each runs over.

use serde::Serialize;

use crate::lab::IpVersion;

/// Which families `compare` runs each scenario over (`--family 4|6|both`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Families {
    /// IPv4 only.
    #[value(name = "4")]
    Ipv4,
    /// IPv6 only.
    #[value(name = "6")]
    Ipv6,
    /// IPv4, then IPv6.
    Both,
}

impl Families {
    /// The versions, IPv4 first.
    pub fn versions(self) -> &'static [IpVersion] {
        match self {
            Families::Ipv4 => &[IpVersion::Ipv4],
            Families::Ipv6 => &[IpVersion::Ipv6],
            Families::Both => &IpVersion::BOTH,
        }
    }
}

/// The scenarios, in the order of the classic lab's questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Scenario {
    /// Q1: a TCP client started before its server.
    TcpClientBeforeServer,
    /// Q2: a UDP client (unconnected socket) started before its server.
    UdpClientBeforeServer,
    /// Q2: the same with a connected UDP socket.
    ConnectedUdpClientBeforeServer,
    /// Q3: a TCP client aimed at another port than its server's.
    TcpWrongPort,
    /// Q3: a UDP client aimed at another port than its server's.
    UdpWrongPort,
    /// The server stops in the middle of a conversation.
    ServerStoppedMidConversation,
    /// A 1 MiB uppercase transfer over TCP on a link that loses 10 % of the frames.
    LossyTcpTransfer,
    /// 20 UDP requests, up to 5 tries each, on a link that loses 10 % of the frames.
    LossyUdpRequests,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 8] = [
        Scenario::TcpClientBeforeServer,
        Scenario::UdpClientBeforeServer,
        Scenario::ConnectedUdpClientBeforeServer,
        Scenario::TcpWrongPort,
        Scenario::UdpWrongPort,
        Scenario::ServerStoppedMidConversation,
        Scenario::LossyTcpTransfer,
        Scenario::LossyUdpRequests,
    ];

    /// Whether the scenario runs on a lossy link (and so with a delay and a rate: see `LOSSY_LINK`).
    pub fn is_lossy(self) -> bool {
        matches!(
            self,
            Scenario::LossyTcpTransfer | Scenario::LossyUdpRequests
        )
    }

    /// Its name on the command line and in the JSON (`tcp_wrong_port`).
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "scenario".into())
    }

    /// A line for people.
    pub fn title(self) -> &'static str {
        match self {
            Scenario::TcpClientBeforeServer => "Q1 TCP client started before the server",
            Scenario::UdpClientBeforeServer => {
                "Q2 UDP client (unconnected socket) before the server"
            }
            Scenario::ConnectedUdpClientBeforeServer => {
                "Q2 UDP client (connected socket) before the server"
            }
            Scenario::TcpWrongPort => "Q3 TCP client and server on different ports",
            Scenario::UdpWrongPort => "Q3 UDP client and server on different ports",
            Scenario::ServerStoppedMidConversation => {
                "server stopped in the middle of a conversation"
            }
            Scenario::LossyTcpTransfer => "10 % loss: 1 MiB uppercase over TCP",
            Scenario::LossyUdpRequests => "10 % loss: 20 UDP requests, up to 5 tries",
        }
    }
}

//! How the core writes an endpoint in its log lines: as `core::net::SocketAddr` does, with an IPv6 address in
//! brackets (`[fd00:2::2]:12000`, as in URLs), where smoltcp's `IpEndpoint` would write `fd00:2::2:12000`.

use core::net::SocketAddr;

use smoltcp::wire::IpEndpoint;

/// `endpoint` as a `SocketAddr`, which displays IPv6 addresses in brackets.
pub fn written(endpoint: IpEndpoint) -> SocketAddr {
    SocketAddr::new(endpoint.addr.into(), endpoint.port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::IpAddress;
    use std::string::ToString;

    #[test]
    fn ipv6_endpoints_are_written_in_brackets() {
        let v4 = IpEndpoint::new(IpAddress::v4(10, 0, 2, 2), 12000);
        assert_eq!(written(v4).to_string(), "10.0.2.2:12000");
        #[cfg(feature = "ipv6")]
        {
            let v6 = IpEndpoint::new(IpAddress::v6(0xfd00, 2, 0, 0, 0, 0, 0, 2), 12000);
            assert_eq!(written(v6).to_string(), "[fd00:2::2]:12000");
        }
    }
}

//! The proxy half of `smoltalk lab`: each check runs fetches through a [`ProxyLab`] and judges what came back.

use std::time::Instant as WallInstant;

use smoltalk_core::http::request::Method;

use smoltcp::wire::IpAddress;

use super::{
    big_body, LabFetch, LabRequest, ProxyLab, CHUNKED_BODY, CLIENT_IP, ORIGIN_IP, ORIGIN_IPV6,
    ORIGIN_NAME, ORIGIN_NAME_IPV6, ORIGIN_PORT, PROXY_IP, PROXY_IPV6, PROXY_PORT,
};
use crate::lab::checks::{sample_text, CheckResult, LabReport};
use crate::lab::LinkFaults;
use crate::stack::instruments::CaptureFile;
use crate::stack::link_shape::LinkShape;
use crate::stack::network::{Network, NetworkError};

/// Decides a check from the lab and its finished fetches: a detail line, or what went wrong.
type Judge<'a> = dyn Fn(&ProxyLab, &[LabFetch]) -> Verdict + 'a;

/// A check's outcome, with the line that says why.
enum Verdict {
    /// It held.
    Held(String),
    /// It did not.
    Failed(String),
}

/// Runs every proxy check in fresh labs.
pub fn run_proxy_checks() -> Result<LabReport, NetworkError> {
    run_proxy_checks_captured(None, LinkShape::default())
}

/// [`run_proxy_checks`] on links of `link`, recording the segment (tapped at the client's port) into `capture`
/// if given.
pub fn run_proxy_checks_captured(
    capture: Option<CaptureFile>,
    link: LinkShape,
) -> Result<LabReport, NetworkError> {
    let wall = WallInstant::now();
    let setup = NetworkError::ProxyLabSetup;
    let mut lab = ProxyLab::new(4).map_err(setup)?;
    lab.lab.set_link(link);
    if let Some(capture) = capture {
        lab.lab.capture_to(lab.client, Box::new(capture));
    }
    let start = lab.lab.now();
    let mut checks = Vec::new();
    let page = format!("http://{ORIGIN_NAME}/");
    let big = format!("http://{ORIGIN_NAME}/big");

    let mut check = |lab: &mut ProxyLab,
                     name: &str,
                     clients: Vec<Vec<LabRequest>>,
                     judge: &Judge<'_>|
     -> Result<(), NetworkError> {
        let before = (lab.lab.link_stats(), lab.lab.now());
        let started = WallInstant::now();
        let fetches = lab.fetch(clients)?;
        let verdict = match fetches.iter().find_map(|f| f.failure.clone()) {
            Some(failure) => Verdict::Failed(failure),
            None => judge(lab, &fetches),
        };
        let link = lab.lab.link_stats();
        let (passed, detail) = match verdict {
            Verdict::Held(detail) => (true, detail),
            Verdict::Failed(detail) => (false, detail),
        };
        checks.push(CheckResult {
            name: name.to_string(),
            passed,
            detail,
            packets: link.frames - before.0.frames,
            virtual_time: lab.lab.now() - before.1,
            wall_time: started.elapsed(),
        });
        Ok(())
    };

    check(
        &mut lab,
        "proxy: GET a page through the proxy",
        vec![vec![LabRequest::get(&page)]],
        &|lab, f| {
            let r = &f[0].responses[0];
            let Some(seen) = lab.origin.seen.last() else {
                return Verdict::Failed("the origin saw nothing".into());
            };
            let via_ok = seen.via.as_deref() == Some("1.1 smoltalk-lab")
                && r.header("via") == Some("1.1 smoltalk-lab");
            match (
                r.status,
                r.body.starts_with(b"<html>"),
                seen.line == "GET / HTTP/1.1",
                via_ok,
            ) {
                (200, true, true, true) => Verdict::Held(format!(
                    "200, {} bytes; origin saw \"{}\" with Via: 1.1 smoltalk-lab",
                    r.body.len(),
                    seen.line
                )),
                _ => Verdict::Failed(format!("status {}, origin saw {:?}", r.status, seen)),
            }
        },
    )?;

    check(
        &mut lab,
        "proxy: 1 MiB body, byte for byte",
        vec![vec![LabRequest::get(&big)]],
        &|_, f| {
            let r = &f[0].responses[0];
            match r.status == 200 && r.body == big_body() {
                true => Verdict::Held(format!(
                    "200, {} bytes identical to the origin's",
                    r.body.len()
                )),
                false => Verdict::Failed(format!(
                    "status {}, {} bytes, identical: {}",
                    r.status,
                    r.body.len(),
                    r.body == big_body()
                )),
            }
        },
    )?;

    let origin_connections = lab.origin.connections;
    let accepted = lab.proxy.stats().0.accepted;
    check(
        &mut lab,
        "proxy: keep-alive, 3 requests on 1 connection",
        vec![vec![
            LabRequest::get(&page),
            LabRequest::get(&big),
            LabRequest::get(&page),
        ]],
        &|lab, f| {
            let statuses: Vec<u16> = f[0].responses.iter().map(|r| r.status).collect();
            let clients = lab.proxy.stats().0.accepted - accepted;
            let origins = lab.origin.connections - origin_connections;
            // The proxy may also reuse an origin connection an earlier client left open.
            match (statuses == [200, 200, 200], clients, origins) {
                (true, 1, 0 | 1) => Verdict::Held(format!("3 x 200 over 1 client connection and {origins} new origin connection(s)")),
                _ => Verdict::Failed(format!("statuses {statuses:?} over {clients} client and {origins} origin connection(s)")),
            }
        },
    )?;

    let upload = sample_text(200 * 1024, 31);
    let post = LabRequest {
        method: Method::Post,
        target: format!("http://{ORIGIN_NAME}/echo"),
        body: upload.clone(),
    };
    check(
        &mut lab,
        "proxy: POST 200 KiB, echoed back",
        vec![vec![post]],
        &|_, f| {
            let r = &f[0].responses[0];
            match r.status == 200 && r.body == upload {
                true => Verdict::Held(format!("200, {} bytes up and back identical", r.body.len())),
                false => {
                    Verdict::Failed(format!("status {}, {} bytes back", r.status, r.body.len()))
                }
            }
        },
    )?;

    check(
        &mut lab,
        "proxy: chunked response forwarded intact",
        vec![vec![
            LabRequest::get(&format!("http://{ORIGIN_NAME}/chunked")),
            LabRequest::get(&page),
        ]],
        &|_, f| {
            let r = &f[0].responses[0];
            match (r.status, r.body == CHUNKED_BODY, f[0].responses[1].status) {
                (200, true, 200) => Verdict::Held(format!(
                    "{} bytes of chunks and trailer as sent, then the next request",
                    r.body.len()
                )),
                _ => Verdict::Failed(format!(
                    "status {}, body {:?}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                )),
            }
        },
    )?;

    check(
        &mut lab,
        "proxy: 4 clients at once",
        (0..4)
            .map(|_| vec![LabRequest::get(&page), LabRequest::get(&big)])
            .collect(),
        &|_, f| {
            let ok = f
                .iter()
                .all(|f| f.responses.len() == 2 && f.responses[1].body == big_body());
            match ok {
                true => Verdict::Held("4 x (page + 1 MiB), every body identical".into()),
                false => Verdict::Failed("a client's responses were wrong".into()),
            }
        },
    )?;

    check(
        &mut lab,
        "proxy: origin port closed -> 502",
        vec![vec![LabRequest::get(&format!("http://{ORIGIN_NAME}:81/"))]],
        &|_, f| expect_status(&f[0], 502),
    )?;

    check(
        &mut lab,
        "proxy: unknown name -> 502, no lookup leaves",
        vec![vec![LabRequest::get("http://nowhere.lab/")]],
        &|_, f| expect_status(&f[0], 502),
    )?;

    check(
        &mut lab,
        "proxy: address outside --allow-dest -> 403",
        vec![vec![LabRequest::get("http://192.0.2.1/")]],
        &|_, f| expect_status(&f[0], 403),
    )?;

    // The origin over IPv6: by its literal, and by a name the proxy knows as an IPv6 address only. The first
    // takes a second of virtual time: smoltcp's neighbour cache sends at most one request a second per
    // interface, ARP and NDP alike, and the proxy's node sent its ARP request for the origin a few virtual
    // milliseconds before; its socket waits a second (smoltcp's discovery silence) before it tries NDP.
    let literal = format!("http://[{ORIGIN_IPV6}]/");
    check(
        &mut lab,
        "proxy: GET an IPv6 origin by its literal",
        vec![vec![LabRequest::get(&literal)]],
        &|lab, f| over_ipv6(lab, &f[0], &format!("[{ORIGIN_IPV6}]")),
    )?;
    check(
        &mut lab,
        "proxy: GET a name known as IPv6",
        vec![vec![LabRequest::get(&format!(
            "http://{ORIGIN_NAME_IPV6}/"
        ))]],
        &|lab, f| over_ipv6(lab, &f[0], ORIGIN_NAME_IPV6),
    )?;

    // Lose every 50th frame on the proxy's way out (2 %): TCP retransmits, the body still arrives whole.
    let proxy_node = lab.proxy_node;
    lab.lab.set_faults(
        proxy_node,
        LinkFaults {
            drop_every_outbound: 50,
            ..LinkFaults::default()
        },
    );
    check(
        &mut lab,
        "proxy: every 50th frame lost, 1 MiB still whole",
        vec![vec![LabRequest::get(&big)]],
        &|lab, f| {
            let r = &f[0].responses[0];
            let dropped = lab.lab.link_stats().dropped;
            match r.status == 200 && r.body == big_body() {
                true => Verdict::Held(format!(
                    "200, 1 MiB identical; {dropped} frames dropped on the way"
                )),
                false => Verdict::Failed(format!("status {}, {} bytes", r.status, r.body.len())),
            }
        },
    )?;
    lab.lab.set_faults(proxy_node, LinkFaults::default());

    // A full pool: 4 clients hold every connection without sending, the fifth is answered 503.
    let client = lab.client;
    let now = lab.lab.now();
    let mut holders: Vec<LabFetch> = (0..4)
        .map(|_| LabFetch::new(lab.lab.node(client), Vec::new(), now))
        .collect();
    lab.run_until(
        |lab, holders: &mut Vec<LabFetch>| {
            let now = lab.now();
            let mut moved = false;
            for h in holders.iter_mut() {
                moved |= h.step(lab.node(client), now);
            }
            (moved, holders.iter().all(|h| h.connected))
        },
        &mut holders,
    )?;
    check(
        &mut lab,
        "proxy: pool full -> 503",
        vec![vec![LabRequest::get(&page)]],
        &|_, f| expect_status(&f[0], 503),
    )?;

    let shape = match lab.lab.link() {
        shape if shape.is_none() => String::new(),
        shape => format!("; links {}", shape.describe()),
    };
    let link = lab.lab.link_stats();
    Ok(LabReport {
        title: format!(
            "smoltalk lab: proxy node {PROXY_IP}:{PROXY_PORT} (4 connections) between client {CLIENT_IP} and origin {ORIGIN_NAME} ({ORIGIN_IP}:{ORIGIN_PORT}; {ORIGIN_NAME_IPV6} and [{ORIGIN_IPV6}]:{ORIGIN_PORT} over IPv6{shape})"
        ),
        checks,
        packets: link.frames,
        bytes: link.bytes,
        virtual_time: lab.lab.now() - start,
        wall_time: wall.elapsed(),
    })
}

/// Whether `fetch` got the page, and the origin saw the request come from the proxy's IPv6 address with
/// `Host: host`.
fn over_ipv6(lab: &ProxyLab, fetch: &LabFetch, host: &str) -> Verdict {
    let Some(r) = fetch.responses.first() else {
        return Verdict::Failed("no response".into());
    };
    let Some(seen) = lab.origin.seen.last() else {
        return Verdict::Failed("the origin saw nothing".into());
    };
    let from_ipv6 = seen
        .from
        .is_some_and(|from| from.addr == IpAddress::Ipv6(PROXY_IPV6));
    match (
        r.status,
        seen.line == "GET / HTTP/1.1",
        seen.host.as_deref() == Some(host),
        from_ipv6,
    ) {
        (200, true, true, true) => Verdict::Held(format!(
            "200, {} bytes; origin saw \"{}\" with Host: {host} from {}",
            r.body.len(),
            seen.line,
            seen.from
                .map_or("?".into(), |e| std::net::SocketAddr::from((e.addr, e.port))
                    .to_string())
        )),
        _ => Verdict::Failed(format!("status {}, origin saw {seen:?}", r.status)),
    }
}

fn expect_status(fetch: &LabFetch, status: u16) -> Verdict {
    let r = &fetch.responses[0];
    let html = r.body.starts_with(b"<!DOCTYPE html>");
    match (r.status == status, r.header("connection"), html) {
        (true, Some("close"), true) => {
            Verdict::Held(format!("{status} with an HTML page and Connection: close"))
        }
        _ => Verdict::Failed(format!(
            "status {}, Connection {:?}",
            r.status,
            r.header("connection")
        )),
    }
}

//! A real browser through the proxy: headless Chromium loads a page of several objects (the HTML, a stylesheet, a
//! PNG, an SVG and a script that changes the DOM) from a local origin through the kernel-stack `smoltalk proxy`,
//! and a page of 48 images from 8 hosts through the smoltcp proxy on a TUN device (see
//! [`chromium_loads_48_images_from_8_hosts_through_the_smoltcp_proxy_at_its_default_pool`]).
//!
//! The origin (a small Python `http.server`) logs every request it is sent and its `Via` header; the proxy logs
//! every request it is asked for. The test checks that every object went through the proxy (the origin saw it
//! with the proxy's `Via`), that the page rendered (the DOM Chromium dumps holds the element the script added;
//! the screenshot holds the two images and the stylesheet's colour), and that Chromium asked the proxy for
//! nothing but the test's own site.
//!
//! The browser may only ever reach loopback. Chromium sends everything, loopback included
//! (`--proxy-bypass-list=<-loopback>`), to the proxy, whose `--allow-dest 127.0.0.0/8` keeps it on loopback. But
//! the proxy looks up a name it is not given with the system resolver before it checks the destination, so the
//! page is loaded by a name given with `--resolve` (`site.test`), Chromium's own resolver answers nothing
//! (`--host-resolver-rules`), and the background requests Chromium sends even with `--disable-background-networking`
//! are switched off or pointed at a loopback port Chromium refuses to connect to (see [`chromium`]). The proxy runs
//! with `--no-dns` besides, so the one background request no switch turns off (a `CONNECT www.google.com:443`)
//! is answered by the proxy itself, 502, without a lookup. Anything else left over fails the test, naming the
//! request.

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::*;

/// The name the page is loaded by: given to the proxy with `--resolve`, so it is never looked up.
const SITE: &str = "site.test";

/// How long Chromium may take before it is killed and the test fails.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// Every object of the page, by path.
const OBJECTS: [&str; 5] = [
    "/index.html",
    "/style.css",
    "/dot.png",
    "/shape.svg",
    "/app.js",
];

/// The origin: serves the page's objects (anything else is 404) over HTTP/1.1 with keep-alive, and appends
/// `<request line>\tVia: <via or ->` to the log file (argv[1]) for every request before answering it.
const PY_ORIGIN: &str = r##"
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
log_path = sys.argv[1]
lock = threading.Lock()
# A 1x1 red PNG; the page shows it 16x16.
PNG = bytes.fromhex('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489'
                    '0000000d49444154789c63f8cfc0f01f0005000201a5f1a8b20000000049454e44ae426082')
FILES = {
    '/index.html': ('text/html; charset=utf-8', b'''<!DOCTYPE html>
<html><head><title>before</title><link rel="stylesheet" href="/style.css"></head>
<body><h1 id="heading">through smoltalk</h1>
<img id="png" src="/dot.png" width="16" height="16" alt="png">
<img id="svg" src="/shape.svg" width="16" height="16" alt="svg">
<script src="/app.js"></script>
</body></html>
'''),
    '/style.css': ('text/css', b'body { background: #ffffff; } h1 { color: #003366; }\n'),
    '/dot.png': ('image/png', PNG),
    '/shape.svg': ('image/svg+xml', b'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16">'
                   b'<rect width="16" height="16" fill="#00aa00"/></svg>\n'),
    '/app.js': ('text/javascript', b'''document.title = "after";
var p = document.createElement("p");
p.id = "added-by-script";
p.textContent = "script ran via the proxy";
document.body.appendChild(p);
'''),
}
class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        with lock, open(log_path, 'a') as log:
            log.write('%s\tVia: %s\n' % (self.requestline, self.headers.get('Via', '-')))
        kind, body = FILES.get(self.path, ('text/plain', None))
        status = 200 if body is not None else 404
        body = body if body is not None else b'not found\n'
        self.send_response(status)
        self.send_header('Content-Type', kind)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
server.daemon_threads = True
print('origin listening on 127.0.0.1:%d' % server.server_address[1], flush=True)
server.serve_forever()
"##;

/// Decodes the PNG at argv[1] (8-bit RGB or RGBA, not interlaced) and prints `WxH` and, for each colour given
/// as `rrggbb`, `rrggbb=COUNT`: how many pixels have exactly that colour.
const PY_PNG_COLOURS: &str = r#"
import struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
pos, idat, ihdr = 8, b'', None
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    if kind == b'IHDR':
        ihdr = struct.unpack('>IIBBBBB', data[pos + 8:pos + 8 + n])
    elif kind == b'IDAT':
        idat += data[pos + 8:pos + 8 + n]
    pos += 12 + n
width, height, depth, colour, _, _, interlace = ihdr
assert depth == 8 and colour in (2, 6) and interlace == 0, 'unexpected PNG format %r' % (ihdr,)
bpp = 3 if colour == 2 else 4
raw, stride = zlib.decompress(idat), width * bpp
prev, counts = bytearray(stride), {}
for y in range(height):
    start = y * (stride + 1)
    kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
    for i in range(stride):
        a, b, c = (line[i - bpp] if i >= bpp else 0), prev[i], (prev[i - bpp] if i >= bpp else 0)
        if kind == 1:
            line[i] = (line[i] + a) & 255
        elif kind == 2:
            line[i] = (line[i] + b) & 255
        elif kind == 3:
            line[i] = (line[i] + (a + b) // 2) & 255
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        rgb = '%02x%02x%02x' % tuple(line[x:x + 3])
        counts[rgb] = counts.get(rgb, 0) + 1
    prev = line
print('%dx%d' % (width, height), ' '.join('%s=%d' % (c, counts.get(c, 0)) for c in sys.argv[2:]))
"#;

#[test]
#[cfg_attr(smoltalk_no_chromium, ignore = "needs chromium and python3")]
fn chromium_loads_and_renders_a_page_of_several_objects_through_the_kernel_proxy() {
    let dir = TempDir::new("browser");
    let origin_log = dir.0.join("origin.log");
    let proxy_log = dir.0.join("proxy.log");
    let screenshot = dir.0.join("screenshot.png");
    std::fs::write(&origin_log, b"").expect("create the origin log");

    let (_origin, origin_port) = start_server(
        python(PY_ORIGIN, &[origin_log.to_str().expect("UTF-8 path")]),
        "python origin",
    );
    let proxy = start_proxy(&proxy_log);
    let url = format!("http://{SITE}:{origin_port}/index.html");
    let proxy_addr = format!("127.0.0.1:{}", proxy.port);
    let (status, dom, chromium_log) = chromium(&dir.0, &proxy_addr, None, &url, &screenshot);
    let origin_seen = read(&origin_log);
    let proxy_seen = read(&proxy_log);
    let context = || {
        format!(
            "\n--- origin log:\n{origin_seen}--- proxy log:\n{proxy_seen}--- chromium (without D-Bus noise):\n{}",
            without_dbus_noise(&chromium_log)
        )
    };
    assert!(status.success(), "chromium failed ({status}){}", context());

    // Chromium asked the proxy for nothing but the test's own site, or for what the proxy answered itself.
    assert_strays_answered_by_the_proxy(&proxy_seen, &[SITE, "127.0.0.1"], &context);
    let requests: Vec<&str> = proxy_seen
        .lines()
        .filter_map(|l| l.split_once(" Request ").map(|(_, request)| request))
        .collect();

    // Every object reached the origin, through the proxy.
    let origin_lines: Vec<(&str, &str)> = origin_seen
        .lines()
        .filter_map(|l| l.split_once("\tVia: "))
        .collect();
    for path in OBJECTS {
        let asked = format!("GET http://{SITE}:{origin_port}{path} HTTP/1.1");
        assert!(
            requests.contains(&asked.as_str()),
            "the proxy was not asked for {path}{}",
            context()
        );
        let line = format!("GET {path} HTTP/1.1");
        let via = origin_lines
            .iter()
            .find(|(request, _)| *request == line)
            .map(|(_, via)| *via);
        match via {
            Some(via) => assert!(
                is_smoltalk_via(via),
                "{path} reached the origin with Via: {via}{}",
                context()
            ),
            None => panic!("the origin never got {path}{}", context()),
        }
    }
    // And nothing reached it any other way.
    for (request, via) in &origin_lines {
        assert!(
            is_smoltalk_via(via),
            "{request} reached the origin with Via: {via}{}",
            context()
        );
    }

    // The script ran: it came through the proxy.
    assert!(
        dom.contains(r#"<p id="added-by-script">script ran via the proxy</p>"#),
        "the DOM has no element added by the script:\n{dom}{}",
        context()
    );
    assert!(
        dom.contains("<title>after</title>"),
        "the script did not set the title:\n{dom}{}",
        context()
    );

    // The page rendered: the PNG (red), the SVG (green), and the heading in the stylesheet's colour.
    let out = run(python(
        PY_PNG_COLOURS,
        &[
            screenshot.to_str().expect("UTF-8 path"),
            "ff0000",
            "00aa00",
            "003366",
        ],
    ));
    assert!(
        out.status.success(),
        "screenshot is not a PNG this test can read: {}{}",
        stderr(&out),
        context()
    );
    let report = stdout(&out);
    let count = |colour: &str| -> u32 {
        report
            .split_whitespace()
            .find_map(|w| w.strip_prefix(colour)?.strip_prefix('='))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    // Each image is 16x16 CSS pixels, at least 256 device pixels; a few may be blended at the edges.
    assert!(
        count("ff0000") >= 200,
        "the PNG is not on the screenshot: {report}"
    );
    assert!(
        count("00aa00") >= 200,
        "the SVG is not on the screenshot: {report}"
    );
    assert!(
        count("003366") >= 50,
        "the heading is not in the stylesheet's colour: {report}"
    );
}

/// The many-hosts page's image hosts: all given to the proxy with `--resolve`, all served by the one origin.
const IMAGE_HOSTS: [&str; 8] = [
    "h1.test", "h2.test", "h3.test", "h4.test", "h5.test", "h6.test", "h7.test", "h8.test",
];

/// Images on the many-hosts page (six from each host).
const IMAGES: usize = 48;

/// The origin of the many-hosts page, on the address given second (argv[2]; argv[1] is its log): `/many.html`
/// shows 48 images, `/img/N.png` for N in 0..48 from host `h(N % 8 + 1).test` on the origin's own port, and a
/// script that, once the page has loaded, adds `<p id="loaded">loaded OK of ALL</p>` (OK: the images that
/// decoded). Each image is answered after 300 ms, so that Chromium opens as many connections as it allows at
/// once. It logs `<request line>\t<Host>\tVia: <via or ->` for every request.
const PY_MANY_HOSTS_ORIGIN: &str = r##"
import sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
log_path, address = sys.argv[1], sys.argv[2]
lock = threading.Lock()
PNG = bytes.fromhex('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489'
                    '0000000d49444154789c63f8cfc0f01f0005000201a5f1a8b20000000049454e44ae426082')
SCRIPT = '''<script>
window.addEventListener("load", function () {
  var ok = 0, all = document.images.length;
  for (var i = 0; i < all; i++) if (document.images[i].complete && document.images[i].naturalWidth > 0) ok++;
  var p = document.createElement("p");
  p.id = "loaded";
  p.textContent = "loaded " + ok + " of " + all;
  document.body.appendChild(p);
});
</script>'''
class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        with lock, open(log_path, 'a') as log:
            log.write('%s\t%s\tVia: %s\n' % (self.requestline, self.headers.get('Host', '-'),
                                             self.headers.get('Via', '-')))
        port = self.server.server_address[1]
        if self.path == '/many.html':
            imgs = ''.join('<img src="http://h%d.test:%d/img/%d.png" width="8" height="8">\n'
                           % (n % 8 + 1, port, n) for n in range(48))
            page = ('<!DOCTYPE html>\n<html><head><title>many hosts</title></head><body>\n%s%s\n</body></html>\n'
                    % (imgs, SCRIPT))
            kind, body = 'text/html; charset=utf-8', page.encode()
        elif self.path.startswith('/img/') and self.path.endswith('.png'):
            time.sleep(0.3)
            kind, body = 'image/png', PNG
        else:
            kind, body = 'text/plain', None
        status = 200 if body is not None else 404
        body = body if body is not None else b'not found\n'
        self.send_response(status)
        self.send_header('Content-Type', kind)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(ThreadingHTTPServer):
    request_queue_size = 256
server = Server((address, 0), Handler)
server.daemon_threads = True
print('origin listening on %s:%d' % server.server_address, flush=True)
server.serve_forever()
"##;

/// The issue this answers: Chromium loading a page of 48 images from 8 hosts opened 39–52 connections to the
/// smoltcp proxy at its pool of 16, smoltcp (no listen backlog) reset the SYNs that found no listening socket,
/// and Chromium gave up on those images. Here the smoltcp proxy runs at its default settings on a TUN device in
/// a network namespace this test makes (10.0.2.15, the kernel side 10.0.2.2), and Chromium and the origin run
/// inside it on 10.0.2.2: nothing leaves the namespace, which has no route out. The proxy knows only the test's
/// names (`--resolve`, `--no-dns`) and may connect only to the origin's address. Every image must load: the
/// page's script counts them, the origin must have seen each through the proxy, and the proxy must never have
/// run out of listening sockets or refused a client.
#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_chromium),
    ignore = "needs root, /dev/net/tun, ip, ping, python3 and chromium (a TUN device in a network namespace)"
)]
fn chromium_loads_48_images_from_8_hosts_through_the_smoltcp_proxy_at_its_default_pool() {
    const TEST: &str =
        "chromium_loads_48_images_from_8_hosts_through_the_smoltcp_proxy_at_its_default_pool";
    let Some(ns) = namespace_or_skip(TEST, "nsbrowser", &["chromium"]) else {
        return;
    };
    add_st0(&ns, "tun");
    let dir = TempDir::new("browser-many");
    let origin_log = dir.0.join("origin.log");
    let screenshot = dir.0.join("screenshot.png");
    std::fs::write(&origin_log, b"").expect("create the origin log");
    let origin_args = [
        "-c",
        PY_MANY_HOSTS_ORIGIN,
        origin_log.to_str().expect("UTF-8 path"),
        "10.0.2.2",
    ];
    let (_origin, origin_port) = start_server(ns.command("python3", &origin_args), "python origin");

    let resolve: Vec<String> = std::iter::once(SITE)
        .chain(IMAGE_HOSTS)
        .map(|host| format!("{host}=10.0.2.2"))
        .collect();
    let mut args = vec!["proxy", "--stack", "tun", "--dev", "st0", "--no-dns"];
    args.extend(["--allow-dest", "10.0.2.2/32"]);
    for name in &resolve {
        args.extend(["--resolve", name]);
    }
    let proxy = support::proxy::Proxy::start(
        smoltalk_in(&ns, &args),
        "10.0.2.15",
        support::proxy::Net::Namespace(ns.name().to_owned()),
    );
    let url = format!("http://{SITE}:{origin_port}/many.html");
    let proxy_addr = format!("10.0.2.15:{}", proxy.port);
    let (status, dom, chromium_log) = chromium(&dir.0, &proxy_addr, Some(&ns), &url, &screenshot);
    let (_, proxy_seen) = proxy.stop();
    let origin_seen = read(&origin_log);
    let context = || {
        format!(
            "\n--- origin log:\n{origin_seen}--- proxy log:\n{proxy_seen}--- chromium (without D-Bus noise):\n{}",
            without_dbus_noise(&chromium_log)
        )
    };
    assert!(status.success(), "chromium failed ({status}){}", context());

    let mut names = vec![SITE];
    names.extend(IMAGE_HOSTS);
    assert_strays_answered_by_the_proxy(&proxy_seen, &names, &context);

    // The proxy never ran out of listening sockets, and refused no one: the default pool has room for a
    // browser.
    assert!(
        !proxy_seen.contains("are reset until one is free"),
        "the proxy ran out of listening sockets{}",
        context()
    );
    assert!(
        !proxy_seen.contains(" Refused "),
        "the proxy refused a client at its default pool{}",
        context()
    );

    // Every image reached the origin, from its own host, through the proxy.
    for n in 0..IMAGES {
        let host = format!("h{}.test:{origin_port}", n % 8 + 1);
        let line = format!("GET /img/{n}.png HTTP/1.1\t{host}\tVia: ");
        let via = origin_seen
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()));
        match via {
            Some(via) => assert!(
                is_smoltalk_via(via),
                "image {n} reached the origin with Via: {via}{}",
                context()
            ),
            None => panic!("the origin never got image {n} from {host}{}", context()),
        }
    }
    // And the page saw every one of them load.
    let loaded = format!(r#"<p id="loaded">loaded {IMAGES} of {IMAGES}</p>"#);
    assert!(
        dom.contains(&loaded),
        "not every image loaded: {}{}",
        dom.lines()
            .filter(|l| l.contains(r#"id="loaded""#))
            .collect::<String>(),
        context()
    );
}

/// Starts `smoltalk proxy` on a free loopback port, its log (stderr) going to `log`.
fn start_proxy(log: &Path) -> Running {
    let mut cmd = smoltalk();
    cmd.args([
        "proxy",
        "--port",
        "0",
        "--allow-dest",
        "127.0.0.0/8",
        "--resolve",
        &format!("{SITE}=127.0.0.1"),
        // Whatever Chromium asks for besides the page is refused before any lookup.
        "--no-dns",
    ])
    .env("RUST_LOG", "info")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(File::create(log).expect("create the proxy log"));
    let mut child = cmd.spawn().expect("start smoltalk proxy");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let port = line
        .strip_prefix("smoltalk proxy listening on 127.0.0.1:")
        .filter(|rest| rest.trim_end().ends_with("(kernel stack)"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|port| port.parse().ok());
    let Some(port) = port else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("smoltalk proxy did not start: {line:?}\n{}", read(log));
    };
    // Keep draining stdout so the proxy never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    Running { child, port }
}

/// Runs headless Chromium on `url` through the proxy at `proxy` (`host:port`), inside `ns` if given, with a
/// fresh profile and home in `dir`; returns its exit status, the DOM it dumped and its log. It writes a
/// screenshot to `screenshot`.
fn chromium(
    dir: &Path,
    proxy: &str,
    ns: Option<&Namespace>,
    url: &str,
    screenshot: &Path,
) -> (ExitStatus, String, String) {
    let home = dir.join("home");
    let profile = dir.join("profile");
    let dom_path = dir.join("dom.html");
    let log_path = dir.join("chromium.log");
    for d in [&home, &profile] {
        std::fs::create_dir_all(d).expect("create a Chromium directory");
    }
    let proxy_host = proxy.rsplit_once(':').map_or(proxy, |(host, _)| host);
    let mut cmd = match ns {
        Some(ns) => ns.command("chromium", &[]),
        None => Command::new("chromium"),
    };
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--no-default-browser-check",
        "--metrics-recording-only",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--proxy-server=http://{proxy}"))
    .arg("--proxy-bypass-list=<-loopback>")
    // Chromium's own resolver answers no name, the proxy's address aside (the rules map literals too): nothing
    // it does looks a name up.
    .arg(format!(
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {proxy_host}"
    ))
    // What Chromium 156 still sends with the switches above, each seen through the proxy:
    // `GET http://clients2.google.com/time/1/current` (network time),
    // and `CONNECT www.google.com:443` (a preconnect to the default search engine a while after start, seen
    // when a page takes a second or more to load),
    .arg("--disable-features=NetworkTimeServiceQuerying,PreconnectToSearch")
    // `POST https://accounts.google.com/ListAccounts` at every profile start (no switch turns it off) and
    // `POST https://update.googleapis.com/service/update2/json` (an on-demand component, the on-device model
    // manifest, despite --disable-component-update): both go to port 9 on loopback instead, which Chromium refuses
    // to connect to (a restricted port, ERR_UNSAFE_PORT), so they never leave it.
    .arg("--gaia-url=http://127.0.0.1:9/")
    .arg("--component-updater=url-source=http://127.0.0.1:9/service/update2/json")
    // Exact colours and a small screenshot to check them in.
    .arg("--force-color-profile=srgb")
    .arg("--window-size=320,240")
    .arg(format!("--screenshot={}", screenshot.display()))
    .arg("--dump-dom")
    .arg(url)
    // Chromium writes outside the profile too ($HOME/.config/chromium/Crash Reports, $HOME/.cache/dconf).
    .env("HOME", &home)
    .env("XDG_CONFIG_HOME", home.join(".config"))
    .env("XDG_CACHE_HOME", home.join(".cache"))
    .stdin(Stdio::null())
    .stdout(File::create(&dom_path).expect("create the DOM file"))
    .stderr(File::create(&log_path).expect("create the Chromium log"))
    // Its own process group: on a timeout, the browser and every process it started are killed together.
    .process_group(0);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chromium: {e}"));
    let mut browser = Browser(child);
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        match browser.0.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                browser.kill();
                panic!(
                    "chromium did not finish in {CHROMIUM_TIMEOUT:?}; killed\n{}",
                    without_dbus_noise(&read(&log_path))
                );
            }
            Err(e) => panic!("cannot wait for chromium: {e}"),
        }
    };
    (status, read(&dom_path), read(&log_path))
}

/// Chromium, killed with every process of its group if it is still running when dropped.
struct Browser(Child);

impl Browser {
    fn kill(&mut self) {
        // Only while the browser has not been reaped: until then its PID is certainly its group's.
        if let Ok(None) = self.0.try_wait() {
            let group = self.0.id() as libc::pid_t;
            // SAFETY: kill has no memory preconditions; the group is our own child's.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A directory of this test's own in the temporary directory, removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "smoltalk-test-{}-{what}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The host a logged request line names: `CONNECT host:port ...` or `GET http://host[:port]/... ...`.
/// Checks that every request in the proxy's log `proxy_seen` is for one of `hosts`, or was answered by the proxy
/// itself without a lookup (`--no-dns`: 502, the name does not resolve), so it never left the proxy. Chromium
/// still sends a `CONNECT www.google.com:443` a while after it starts, whatever switches it is given; the proxy
/// must answer it so, and anything else fails the test, naming the request.
fn assert_strays_answered_by_the_proxy(
    proxy_seen: &str,
    hosts: &[&str],
    context: &dyn Fn() -> String,
) {
    let strays = proxy_seen
        .lines()
        .filter_map(|l| l.split_once(" Request ").map(|(_, request)| request))
        .filter(|r| !request_host(r).is_some_and(|host| hosts.contains(&host.as_str())));
    for stray in strays {
        let unresolved = format!(
            "Response HTTP/1.1 502 Bad Gateway ({stray}: The origin server's name does not resolve)"
        );
        assert!(
            proxy_seen.contains(&unresolved),
            "CHROMIUM SENT A REQUEST FOR ANOTHER HOST THAT THE PROXY DID NOT ANSWER ITSELF: {stray}{}",
            context()
        );
    }
}

fn request_host(request: &str) -> Option<String> {
    let mut words = request.split_whitespace();
    let method = words.next()?;
    let target = words.next()?;
    let authority = match method {
        "CONNECT" => target,
        _ => {
            let scheme_end = target.find("://")?;
            let rest = target.get(scheme_end + 3..)?;
            rest.split(['/', '?', '#']).next()?
        }
    };
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    Some(host.to_ascii_lowercase())
}

/// Whether a `Via` value is this proxy's: `1.1 smoltalk-<8 hex digits>`.
fn is_smoltalk_via(via: &str) -> bool {
    via.strip_prefix("1.1 smoltalk-")
        .is_some_and(|id| id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Chromium's log without the lines about a missing D-Bus (there is none in a container, and it does not matter).
fn without_dbus_noise(log: &str) -> String {
    log.lines()
        .filter(|l| !l.contains("dbus"))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

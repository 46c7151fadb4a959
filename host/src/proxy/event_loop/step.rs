//! [`Step`]: one step of a serving connection's engine: reading its head, reaching the origin (lookup, connect,
//! reuse), and the tunnel. The exchange with the origin is in `exchange`.

use std::io::{self, Read};
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use smoltalk_core::proxy::engine::{
    ConnectStep, Connected, Failure, HeadStep, OriginStep, PhaseStep, ProxyConnection,
    ResponsePhase,
};

use super::connection::{Flow, Streams, Upstream};
use super::io::{pump, Pumped};
use super::Env;
use crate::sys::{self, Inbound};

/// A serving connection's parts, borrowed for one step of its engine.
pub(super) struct Step<'s, 'e> {
    pub(super) engine: &'s mut ProxyConnection,
    pub(super) io: &'s mut Streams,
    pub(super) client: &'s mut TcpStream,
    pub(super) env: &'s mut Env<'e>,
    pub(super) registry: &'s Registry,
    pub(super) slot: usize,
    pub(super) generation: u64,
}

impl PhaseStep for Step<'_, '_> {
    type Output = Flow;

    fn reading_head(&mut self) -> Flow {
        self.read_head()
    }

    fn resolving(&mut self) -> Flow {
        self.lookup_answered()
    }

    fn connecting(&mut self) -> Flow {
        self.connection_answered()
    }

    fn exchanging(&mut self, response: ResponsePhase) -> Flow {
        self.exchange(response)
    }

    fn tunnel(&mut self) -> Flow {
        self.relay_tunnel()
    }

    fn closed(&mut self) -> Flow {
        // The connection leaves `Serving` with every ending: a closed one here is this design's bug.
        Flow::End(self.engine.driver_bug("a closed connection was stepped"))
    }
}

impl Step<'_, '_> {
    /// One step of the connection, in the phase it is in.
    pub(super) fn run(&mut self) -> Flow {
        self.engine.phase().dispatch(self)
    }

    pub(super) fn fail(&mut self, failure: Failure) -> Flow {
        Flow::End(self.engine.on_failure(failure, self.env.head_out))
    }

    /// Reads from the client into `from_client` (at most `limit` bytes in all). `Ok(true)` if bytes came.
    pub(super) fn read_client(&mut self, limit: usize) -> Result<bool, Failure> {
        let mut moved = false;
        while !self.io.client_eof && self.io.from_client.len() < limit {
            let want = (limit - self.io.from_client.len()).min(self.env.scratch.len());
            match self.client.read(&mut self.env.scratch[..want]) {
                Ok(0) => {
                    self.io.client_eof = true;
                    moved = true;
                }
                Ok(n) => {
                    self.io
                        .from_client
                        .extend_from_slice(&self.env.scratch[..n]);
                    moved = true;
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(Failure::ClientReset),
                },
            }
        }
        Ok(moved)
    }

    pub(super) fn read_head(&mut self) -> Flow {
        // A peek at the kept origin connection, made only if the engine would reuse it.
        let upstream = self.io.upstream.as_ref();
        let idle = || {
            upstream.is_some_and(|u| {
                u.connected && !u.eof && sys::peek_inbound(&u.stream) == Inbound::Nothing
            })
        };
        let cx = self.env.cx;
        let now = self.env.clock.now();
        let step = self.engine.on_client_head(
            &cx,
            &self.io.from_client,
            self.io.client_eof,
            idle,
            now,
            self.env.head_out,
        );
        let forward = match step {
            HeadStep::Forward(forward) => forward,
            HeadStep::End(ending) => return Flow::End(ending),
            HeadStep::NeedMore => {
                return match self.read_client(self.env.cx.limits.head) {
                    // Parse what came (a whole request may have come with the client's FIN) before judging.
                    Ok(moved) => Flow::Moved(moved),
                    Err(failure) => self.fail(failure),
                };
            }
        };
        let consumed = forward.consumed.min(self.io.from_client.len());
        self.io.from_client.drain(..consumed);
        self.io.request_head.clear();
        self.io
            .request_head
            .extend_from_slice(self.env.head_out.get(..forward.head_len).unwrap_or(&[]));
        match forward.next {
            OriginStep::Reuse => {
                self.begin_exchange();
                Flow::Moved(true)
            }
            OriginStep::Connect(addr) => self.follow(ConnectStep::Connect(addr)),
            OriginStep::End(ending) => Flow::End(ending),
            OriginStep::LookUp(name) => {
                let name = name.to_owned();
                self.io.lookup = None;
                self.drop_upstream();
                self.env.resolver.look_up(self.slot, self.generation, name);
                Flow::Moved(true)
            }
        }
    }

    /// Does what the engine said to reach the origin, asking it again where that fails at once.
    pub(super) fn follow(&mut self, mut step: ConnectStep) -> Flow {
        loop {
            step = match step {
                ConnectStep::Connect(addr) => match self.connect(addr) {
                    Ok(()) => return Flow::Moved(true),
                    Err(e) => {
                        log::debug!("connect {addr}: {e}");
                        self.engine.on_connect_failed(false, self.env.head_out)
                    }
                },
                ConnectStep::End(ending) => return Flow::End(ending),
            }
        }
    }

    pub(super) fn drop_upstream(&mut self) {
        if let Some(mut upstream) = self.io.upstream.take() {
            let _ = self.registry.deregister(&mut upstream.stream);
        }
        self.io.pipe = None;
    }

    /// Starts a non-blocking connection to `addr` (closing any other origin connection).
    pub(super) fn connect(&mut self, addr: SocketAddr) -> io::Result<()> {
        self.drop_upstream();
        let mut stream = TcpStream::connect(addr)?;
        let token = Token(3 + 2 * self.slot);
        self.registry
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        self.io.upstream = Some(Upstream {
            stream,
            connected: false,
            eof: false,
            write_closed: false,
            reset_seen: false,
        });
        Ok(())
    }

    /// The request head goes to the origin (again, on a retry); its response is read from scratch.
    pub(super) fn begin_exchange(&mut self) {
        self.io.to_origin.clear();
        let head = std::mem::take(&mut self.io.request_head);
        self.io.to_origin.push(&head);
        self.io.request_head = head;
        self.io.head_sent = false;
        self.io.from_origin.clear();
    }

    /// The lookup may have answered: on with what it found.
    fn lookup_answered(&mut self) -> Flow {
        let Some(result) = self.io.lookup.take() else {
            return self.progress(false, 0);
        };
        let cx = self.env.cx;
        let step = match &result {
            Ok(addresses) => self
                .engine
                .on_resolved(&cx, Ok(addresses), self.env.head_out),
            Err(why) => self.engine.on_resolved(&cx, Err(why), self.env.head_out),
        };
        self.follow(step)
    }

    /// The connection to the origin may be up (or refused): on with the engine.
    fn connection_answered(&mut self) -> Flow {
        let Some(upstream) = self.io.upstream.as_mut() else {
            return Flow::End(
                self.engine
                    .driver_bug("connecting without an origin socket"),
            );
        };
        let failed = match upstream.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match upstream.stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    return self.progress(false, 0)
                }
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failed {
            log::debug!("connect: {e}");
            self.drop_upstream();
            let step = self.engine.on_connect_failed(false, self.env.head_out);
            return self.follow(step);
        }
        upstream.connected = true;
        let _ = upstream.stream.set_nodelay(true);
        let cx = self.env.cx;
        match self
            .engine
            .on_connected(&cx, self.env.clock.now(), self.env.head_out)
        {
            Connected::Exchange => self.begin_exchange(),
            Connected::Tunnel { len } => {
                self.io
                    .to_client
                    .push(self.env.head_out.get(..len).unwrap_or(&[]));
                // Bytes the client sent right behind its head (a TLS ClientHello) go first.
                let early = std::mem::take(&mut self.io.from_client);
                self.io.to_origin.clear();
                self.io.to_origin.push(&early);
            }
            Connected::End(ending) => return Flow::End(ending),
        }
        Flow::Moved(true)
    }

    /// Bytes both ways, FINs passed on, until both ends have closed.
    fn relay_tunnel(&mut self) -> Flow {
        let keep = self.env.cx.limits.head;
        let Some(upstream) = self.io.upstream.as_mut() else {
            return Flow::End(self.engine.driver_bug("a tunnel without an origin socket"));
        };
        let mut moved = false;
        let flushed = (
            self.io.to_client.flush(self.client, keep),
            self.io.to_origin.flush(&mut upstream.stream, keep),
        );
        match flushed {
            (Ok(a), Ok(b)) => moved |= a || b,
            _ => return self.fail(Failure::TunnelPeerReset),
        }
        let scratch = &mut *self.env.scratch;
        let forth = pump(
            self.client,
            &mut self.io.client_eof,
            &mut upstream.stream,
            &mut self.io.to_origin,
            scratch,
        );
        let back = pump(
            &mut upstream.stream,
            &mut upstream.eof,
            self.client,
            &mut self.io.to_client,
            scratch,
        );
        match (forth, back) {
            (Pumped::Moved(a), Pumped::Moved(b)) => moved |= a || b,
            _ => return self.fail(Failure::TunnelPeerReset),
        }
        if self.io.client_eof
            && upstream.eof
            && self.io.to_client.is_empty()
            && self.io.to_origin.is_empty()
        {
            return Flow::End(self.engine.on_tunnel_closed());
        }
        self.progress(moved, 0)
    }
}

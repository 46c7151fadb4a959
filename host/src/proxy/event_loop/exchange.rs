//! The exchange with the origin, for a [`Step`]: the request head and body to the origin, the response heads
//! to the engine and on to the client, and the response body, copied or spliced.

use std::io::{self, Read};

use smoltalk_core::http::{ResponseHead, EMPTY_HEADER};
use smoltalk_core::proxy::engine::{
    AfterResponse, ConnectStep, Failure, ResponsePhase, ResponseStep,
};

use super::super::{connection_failed, write_met_failure};
use super::connection::Flow;
use super::io::SplicePipe;
use super::step::Step;

/// A counted response body longer than this goes from socket to socket through a pipe with `splice`, never
/// copied into the proxy.
const SPLICE_MIN: usize = 64 * 1024;

impl Step<'_, '_> {
    /// The request to the origin and the response back, as far as they go.
    pub(super) fn exchange(&mut self, phase: ResponsePhase) -> Flow {
        let keep = self.env.cx.limits.head;
        let mut moved = false;
        let mut body_bytes = 0;
        // 1. What is queued for the origin: the head, then body bytes. An origin that takes no more (it reset, or
        // answered early and closed) gets nothing more; what it answered, if anything, is read on below.
        let Some(upstream) = self.io.upstream.as_mut() else {
            return Flow::End(
                self.engine
                    .driver_bug("exchanging without an origin socket"),
            );
        };
        if !upstream.write_closed {
            match self.io.to_origin.flush(&mut upstream.stream, keep) {
                Ok(m) => moved |= m,
                Err(e) => {
                    upstream.write_closed = true;
                    upstream.reset_seen = write_met_failure(&e);
                    self.io.to_origin.clear();
                }
            }
        }
        self.io.head_sent |= self.io.to_origin.is_empty();
        // 2. The request body, client to origin, never past its end.
        if self.io.head_sent {
            match self.forward_request_body() {
                Ok(n) => body_bytes += n,
                Err(failure) => return self.fail(failure),
            }
        }
        // 3. The response, origin to client (the last of a spliced body may still be in its pipe).
        let response = match phase {
            ResponsePhase::Head => self.response_head(),
            ResponsePhase::Body => self.response_body(&mut body_bytes),
            ResponsePhase::Complete if self.io.pipe.is_some() => {
                self.response_body(&mut body_bytes)
            }
            ResponsePhase::Complete => Flow::Moved(false),
        };
        match response {
            Flow::Moved(m) => moved |= m,
            other => return other,
        }
        match self.io.to_client.flush(self.client, keep) {
            Ok(m) => moved |= m,
            Err(_) => return self.fail(Failure::ClientReset),
        }
        if phase == ResponsePhase::Complete
            && self.io.to_client.is_empty()
            && self.io.pipe.is_none()
        {
            // Clean: open both ways, nothing of it unread, and everything the request had for it written (a
            // reused connection must not carry the tail of this request's body ahead of the next head).
            let origin_clean = self.io.from_origin.is_empty()
                && self.io.to_origin.is_empty()
                && self
                    .io
                    .upstream
                    .as_ref()
                    .is_some_and(|u| !u.eof && !u.write_closed);
            let cx = self.env.cx;
            return match self
                .engine
                .on_response_sent(&cx, origin_clean, self.env.clock.now())
            {
                AfterResponse::NextRequest { keep_origin } => {
                    if !keep_origin {
                        self.drop_upstream();
                    }
                    Flow::Moved(true)
                }
                AfterResponse::End(ending) => Flow::End(ending),
            };
        }
        self.progress(moved, body_bytes)
    }

    /// Reports progress, or (nothing moved) a client reset nothing else would notice, or the deadline.
    pub(super) fn progress(&mut self, moved: bool, body_bytes: usize) -> Flow {
        // The client reset while the proxy was not reading it (the origin takes the body slower than it comes):
        // nothing else would notice until the timeout.
        if !moved && body_bytes == 0 && connection_failed(self.client.take_error()) {
            return self.fail(Failure::ClientReset);
        }
        let (limits, now) = (self.env.cx.limits, self.env.clock.now());
        match self
            .engine
            .after_step(limits, now, moved, body_bytes, self.env.head_out)
        {
            Some(ending) => Flow::End(ending),
            None => Flow::Moved(moved || body_bytes > 0),
        }
    }

    /// Moves request body bytes from the client to the origin while the origin takes them. Returns how many.
    pub(super) fn forward_request_body(&mut self) -> Result<usize, Failure> {
        let keep = self.env.cx.limits.head;
        let mut moved = 0;
        let Some(upstream) = self.io.upstream.as_mut().filter(|u| !u.write_closed) else {
            return Ok(0);
        };
        let Some(body) = self.engine.request_body() else {
            return Ok(0);
        };
        while !body.is_done() && self.io.to_origin.is_empty() {
            if self.io.from_client.is_empty() {
                if self.io.client_eof {
                    return Err(Failure::ClientClosedMidBody);
                }
                let want = body.limit().min(self.env.scratch.len());
                match self.client.read(&mut self.env.scratch[..want]) {
                    Ok(0) => {
                        self.io.client_eof = true;
                        return Err(Failure::ClientClosedMidBody);
                    }
                    Ok(n) => self
                        .io
                        .from_client
                        .extend_from_slice(&self.env.scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Err(Failure::ClientReset),
                }
            }
            let n = body
                .advance(&self.io.from_client)
                .map_err(|_| Failure::MalformedRequestBody)?;
            self.io.to_origin.push(&self.io.from_client[..n]);
            self.io.from_client.drain(..n);
            moved += n;
            if let Err(e) = self.io.to_origin.flush(&mut upstream.stream, keep) {
                // The origin takes no more: the rest of the body stays with the client; its answer is read on.
                upstream.write_closed = true;
                upstream.reset_seen = write_met_failure(&e);
                self.io.to_origin.clear();
                break;
            }
        }
        Ok(moved)
    }

    /// Reads the origin's head bytes and hands them to the engine; queues each head it writes for the client.
    pub(super) fn response_head(&mut self) -> Flow {
        // The origin cannot answer a head it has not had whole. After that, its answer is read even while the
        // body is still on its way (an early 413 must not wait behind the upload).
        if !self.io.head_sent && self.io.from_origin.is_empty() {
            return Flow::Moved(false);
        }
        let mut moved = false;
        loop {
            let (came, origin_done) = match self.read_origin_head() {
                Ok(came) => (came, false),
                Err(()) => (false, true),
            };
            moved |= came;
            let cx = self.env.cx;
            // Room for every field the head can have: a head that fits the limit is never refused for its count.
            let mut fields = vec![EMPTY_HEADER; ResponseHead::fields_in(&self.io.from_origin)];
            match self.engine.on_response_head(
                &cx,
                &self.io.from_origin,
                origin_done,
                &mut fields,
                self.env.head_out,
            ) {
                ResponseStep::NeedMore if came => continue,
                ResponseStep::NeedMore => return Flow::Moved(moved),
                ResponseStep::Head {
                    consumed,
                    len,
                    interim,
                } => {
                    self.io
                        .from_origin
                        .drain(..consumed.min(self.io.from_origin.len()));
                    self.io
                        .to_client
                        .push(self.env.head_out.get(..len).unwrap_or(&[]));
                    if !interim && self.io.from_origin.is_empty() {
                        return Flow::Moved(true);
                    }
                    if !interim {
                        return Flow::Moved(true);
                    }
                    moved = true;
                }
                ResponseStep::Retry(addr) => return self.follow(ConnectStep::Connect(addr)),
                ResponseStep::End(ending) => return Flow::End(ending),
            }
        }
    }

    /// Reads origin bytes into `from_origin` (at most a head's worth in all). `Ok(true)` if bytes came; `Err` if the
    /// origin closed or reset.
    pub(super) fn read_origin_head(&mut self) -> Result<bool, ()> {
        let Some(upstream) = self.io.upstream.as_mut() else {
            return Err(());
        };
        if upstream.eof {
            return Err(());
        }
        let limit = self.env.cx.limits.response_head;
        if self.io.from_origin.len() >= limit {
            return Ok(false);
        }
        let want = (limit - self.io.from_origin.len()).clamp(1, self.env.scratch.len());
        match upstream.stream.read(&mut self.env.scratch[..want]) {
            Ok(0) => {
                upstream.eof = true;
                Err(())
            }
            Ok(n) => {
                self.io
                    .from_origin
                    .extend_from_slice(&self.env.scratch[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(_) => {
                upstream.eof = true;
                Err(())
            }
        }
    }

    /// Moves response body bytes from the origin to the client (through a pipe for long counted bodies).
    pub(super) fn response_body(&mut self, body_bytes: &mut usize) -> Flow {
        let keep = self.env.cx.limits.head;
        let mut moved = false;
        loop {
            if !self.io.to_client.is_empty() {
                match self.io.to_client.flush(self.client, keep) {
                    Ok(m) => moved |= m,
                    Err(_) => return self.fail(Failure::ClientReset),
                }
                if !self.io.to_client.is_empty() {
                    return Flow::Moved(moved);
                }
            }
            let Some(body) = self.engine.response_body() else {
                return Flow::Moved(moved);
            };
            if body.is_done() && self.io.pipe.is_none() {
                return Flow::Moved(moved);
            }
            let spliced = self.io.pipe.is_some()
                || (body.is_counted()
                    && body.limit() > SPLICE_MIN
                    && self.io.from_origin.is_empty());
            if spliced {
                match self.splice_body(body_bytes) {
                    Some(Ok(m)) => {
                        moved |= m;
                        if m {
                            continue;
                        }
                        return Flow::Moved(moved);
                    }
                    Some(Err(flow)) => return flow,
                    // No pipe to be had: the bytes are copied below instead.
                    None => {}
                }
            }
            match self.copy_body(body_bytes) {
                Ok(true) => moved = true,
                Ok(false) => return Flow::Moved(moved),
                Err(flow) => return flow,
            }
        }
    }

    /// One read of the origin (or the head's leftover bytes) passed to the client. `Ok(false)`: nothing to
    /// read now.
    pub(super) fn copy_body(&mut self, body_bytes: &mut usize) -> Result<bool, Flow> {
        let from_head = !self.io.from_origin.is_empty();
        let len = if from_head {
            self.io.from_origin.len()
        } else {
            let Some(limit) = self.engine.response_body().map(|b| b.limit()) else {
                return Ok(false);
            };
            let Some(upstream) = self.io.upstream.as_mut() else {
                return Err(Flow::End(
                    self.engine.driver_bug("a body without an origin socket"),
                ));
            };
            let want = limit.min(self.env.scratch.len());
            match upstream.stream.read(&mut self.env.scratch[..want]) {
                Ok(0) => {
                    upstream.eof = true;
                    return match self.engine.on_origin_finished(upstream.reset_seen) {
                        Some(ending) => Err(Flow::End(ending)),
                        None => Ok(true),
                    };
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
                Err(_) => {
                    upstream.eof = true;
                    return match self.engine.on_origin_finished(true) {
                        Some(ending) => Err(Flow::End(ending)),
                        None => Ok(true),
                    };
                }
            }
        };
        let bytes = match from_head {
            true => &self.io.from_origin[..len],
            false => &self.env.scratch[..len],
        };
        let Some(body) = self.engine.response_body() else {
            return Ok(false);
        };
        let n = match body.advance(bytes) {
            Ok(n) => n,
            Err(_) => return Err(self.fail(Failure::MalformedResponseBody)),
        };
        self.io.to_client.push(&bytes[..n]);
        *body_bytes += n;
        if n < len {
            // Bytes past the response: the origin connection cannot carry another request.
            if let Some(upstream) = self.io.upstream.as_mut() {
                upstream.eof = true;
            }
        }
        if from_head {
            self.io.from_origin.clear();
        }
        Ok(true)
    }

    /// Moves body bytes origin → pipe → client. `None` if no pipe can be made (the caller copies instead);
    /// `Some(Ok(moved))` otherwise. The pipe is dropped once the body has gone through it.
    pub(super) fn splice_body(&mut self, body_bytes: &mut usize) -> Option<Result<bool, Flow>> {
        if self.io.pipe.is_none() {
            match SplicePipe::new() {
                Ok(pipe) => self.io.pipe = Some(pipe),
                Err(e) => {
                    log::debug!("no pipe for splice ({e}); copying");
                    return None;
                }
            }
        }
        let mut moved = false;
        loop {
            let (Some(pipe), Some(upstream)) = (self.io.pipe.as_mut(), self.io.upstream.as_mut())
            else {
                return Some(Ok(moved));
            };
            if pipe.held > 0 {
                match pipe.drain(self.client) {
                    Ok(n) => moved |= n > 0,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(Ok(moved)),
                    Err(_) => return Some(Err(self.fail(Failure::ClientReset))),
                }
                if pipe.held > 0 {
                    continue;
                }
            }
            let Some(body) = self.engine.response_body() else {
                return Some(Ok(moved));
            };
            if body.is_done() {
                self.io.pipe = None;
                return Some(Ok(true));
            }
            match pipe.fill(&upstream.stream, body.limit()) {
                Ok(0) => {
                    upstream.eof = true;
                    if let Some(ending) = self.engine.on_origin_finished(upstream.reset_seen) {
                        return Some(Err(Flow::End(ending)));
                    }
                }
                Ok(n) => {
                    body.advance_unseen(n);
                    *body_bytes += n;
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(Ok(moved)),
                Err(_) => {
                    upstream.eof = true;
                    if let Some(ending) = self.engine.on_origin_finished(true) {
                        return Some(Err(Flow::End(ending)));
                    }
                }
            }
        }
    }
}

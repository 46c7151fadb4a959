//! The exchange of a [`ClientSession`]: the request head and body to the origin, its response heads to the
//! engine and on to the client, and the response body back. One thread cannot read the response while it
//! sends the request body, so while a write to the origin waits it looks every [`WATCH`] at the client and at
//! the origin: an answer that begins meanwhile (an early 413, a late `100 Continue`) is read and passed on.

use std::io::{self, Write};
use std::time::Duration;

use smoltalk_core::http::{ResponseHead, EMPTY_HEADER};
use smoltalk_core::proxy::engine::{AfterResponse, Ending, Failure, ResponseStep};

use super::super::super::{connection_failed, write_met_failure};
use super::super::sockets::{is_timeout, read_into, std_duration, ReadOutcome};
use super::{ClientSession, ToOrigin, WATCH};
use crate::sys::{self, Inbound};

impl ClientSession<'_> {
    /// Writes the request head or body bytes to the origin. While the origin takes nothing, it looks every
    /// [`WATCH`] at the client (one that failed ends the exchange) and at the origin: an answer that begins is
    /// read and sent on ([`Self::answer_while_sending`]), an origin that closed or failed gets nothing more
    /// (what it answered, if anything, is read on, and the engine decides from that), and the engine's
    /// deadline holds.
    pub(super) fn send_to_origin(&mut self, what: ToOrigin) -> Result<(), Ending> {
        let mut sent = 0;
        loop {
            let Some(upstream) = self.upstream.as_mut().filter(|u| !u.write_closed) else {
                return Ok(());
            };
            let bytes = match what {
                ToOrigin::Head => self.request_head.get(sent..),
                ToOrigin::Body(n) => self.from_client.bytes().get(sent..n),
            };
            let bytes = bytes.unwrap_or(&[]);
            if bytes.is_empty() {
                return Ok(());
            }
            match upstream.stream.write(bytes) {
                Ok(n @ 1..) => {
                    sent += n;
                    self.engine.on_progress(self.limits, self.clock.now(), 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    if connection_failed(self.client.take_error()) {
                        return Err(self.fail(Failure::ClientReset));
                    }
                    // A head read with the one before it (a final one behind an interim one) waits here.
                    let inbound = match self.from_origin.is_empty() {
                        true => sys::peek_inbound(&upstream.stream),
                        false => Inbound::Bytes,
                    };
                    match inbound {
                        Inbound::Nothing => self.timed_out()?,
                        Inbound::Bytes => self.answer_while_sending()?,
                        Inbound::End => upstream.write_closed = true,
                        Inbound::Failed => {
                            upstream.write_closed = true;
                            upstream.reset_seen = true;
                        }
                    }
                }
                Ok(0) => upstream.write_closed = true,
                Err(e) => {
                    upstream.write_closed = true;
                    upstream.reset_seen = write_met_failure(&e);
                }
            }
        }
    }

    /// The origin began to answer while it took no more of the request: the head is read and sent on. After an
    /// interim head the sending goes on; after the final one nothing more goes to the origin (this thread cannot
    /// send while it relays the response), and the rest of the request stays with the client.
    fn answer_while_sending(&mut self) -> Result<(), Ending> {
        loop {
            self.response_head(Some(Duration::ZERO))?;
            if self.engine.response_body().is_some() {
                if let Some(upstream) = self.upstream.as_mut() {
                    upstream.write_closed = true;
                }
                return Ok(());
            }
            // Another head may have come in the same read.
            if self.from_origin.is_empty() {
                return Ok(());
            }
        }
    }

    /// A wait on the origin ended with nothing: the client may have reset meanwhile, or the deadline passed.
    fn origin_silent(&mut self) -> Result<(), Ending> {
        if connection_failed(self.client.take_error()) {
            return Err(self.fail(Failure::ClientReset));
        }
        self.timed_out()
    }

    fn origin_takes_more(&self) -> bool {
        self.upstream.as_ref().is_some_and(|u| !u.write_closed)
    }

    /// Forwards one request and its response.
    pub(super) fn exchange(&mut self) -> Result<(), Ending> {
        self.send_to_origin(ToOrigin::Head)?;
        let body_done = self.engine.request_body().is_none_or(|b| b.is_done());
        // A client that sent `Expect: 100-continue` waits for a go-ahead; give the origin a moment to answer.
        let mut final_head = false;
        if self.engine.expects_continue() && !body_done && self.from_client.is_empty() {
            let wait = std_duration(self.limits.continue_wait);
            final_head = self.response_head(Some(wait))? == Some(false);
        }
        if !final_head {
            self.forward_request_body()?;
            // Up to the final head (which may have come while the body went).
            while self.engine.response_body().is_none() {
                self.response_head(None)?;
            }
        }
        self.relay_response_body()?;
        // Clean: open both ways and nothing of it unread.
        let origin_clean = self.from_origin.is_empty() && self.origin_takes_more();
        match self
            .engine
            .on_response_sent(self.cx, origin_clean, self.clock.now())
        {
            AfterResponse::NextRequest { keep_origin } => {
                if !keep_origin {
                    self.upstream = None;
                }
                Ok(())
            }
            AfterResponse::End(ending) => Err(ending),
        }
    }

    /// Streams the request body from the client to the origin, leaving any byte after it (a pipelined request)
    /// in `from_client`. An origin that stops taking it leaves the rest with the client.
    fn forward_request_body(&mut self) -> Result<(), Ending> {
        loop {
            let done = self.engine.request_body().is_none_or(|b| b.is_done());
            if done || !self.origin_takes_more() {
                return Ok(());
            }
            if self.from_client.is_empty() {
                let wait = self.left();
                match read_into(&mut self.client, &mut self.from_client, wait) {
                    ReadOutcome::Bytes => {}
                    ReadOutcome::TimedOut => {
                        self.timed_out()?;
                        continue;
                    }
                    ReadOutcome::Finished { reset: false } => {
                        self.client_done = true;
                        return Err(self.fail(Failure::ClientClosedMidBody));
                    }
                    ReadOutcome::Finished { reset: true } => {
                        return Err(self.fail(Failure::ClientReset));
                    }
                }
            }
            let Some(body) = self.engine.request_body() else {
                return Ok(());
            };
            let n = match body.advance(self.from_client.bytes()) {
                Ok(n) => n,
                Err(_) => return Err(self.fail(Failure::MalformedRequestBody)),
            };
            self.send_to_origin(ToOrigin::Body(n))?;
            self.from_client.consume(n);
            self.engine.on_progress(self.limits, self.clock.now(), n);
        }
    }

    /// Reads the origin's next response head and sends what the engine writes of it to the client. `wait`
    /// bounds the wait for its first byte (`Ok(None)` when it passes). `Ok(Some(interim))` once a head went.
    fn response_head(&mut self, wait: Option<Duration>) -> Result<Option<bool>, Ending> {
        let mut until = wait.map(|w| std::time::Instant::now() + w);
        let mut origin_done = false;
        loop {
            // Room for every field the head can have: a head that fits the limit is never refused for its count;
            // and for the head rewritten.
            let bytes = self.from_origin.bytes();
            let mut fields = vec![EMPTY_HEADER; ResponseHead::fields_in(bytes)];
            let rewritten = bytes.len().min(self.limits.response_head) + self.limits.head_growth();
            if self.head_out.len() < rewritten {
                self.head_out.resize(rewritten, 0);
            }
            match self.engine.on_response_head(
                self.cx,
                bytes,
                origin_done,
                &mut fields,
                &mut self.head_out,
            ) {
                ResponseStep::Head {
                    consumed,
                    len,
                    interim,
                } => {
                    self.from_origin.consume(consumed);
                    let head = self.head_out.get(..len).unwrap_or(&[]);
                    if self.client.write_all(head).is_err() {
                        return Err(self.fail(Failure::ClientReset));
                    }
                    return Ok(Some(interim));
                }
                ResponseStep::Retry(addr) => {
                    self.retry(addr)?;
                    origin_done = false;
                    continue;
                }
                ResponseStep::End(ending) => return Err(ending),
                ResponseStep::NeedMore => {}
            }
            let left = match until {
                Some(until) => until.saturating_duration_since(std::time::Instant::now()),
                None => self.left(),
            };
            let Some(upstream) = self.upstream.as_mut() else {
                return Err(self
                    .engine
                    .driver_bug("reading a response without an origin"));
            };
            match read_into(&mut upstream.stream, &mut self.from_origin, left.min(WATCH)) {
                ReadOutcome::Bytes => self.engine.on_progress(self.limits, self.clock.now(), 0),
                ReadOutcome::Finished { .. } => origin_done = true,
                ReadOutcome::TimedOut => {
                    if until.is_some_and(|u| std::time::Instant::now() >= u) {
                        if self.from_origin.is_empty() {
                            return Ok(None);
                        }
                        // A head has begun: the rest is waited for as any head is.
                        until = None;
                    }
                    self.origin_silent()?;
                }
            }
        }
    }

    /// Streams the response body from the origin to the client.
    fn relay_response_body(&mut self) -> Result<(), Ending> {
        loop {
            if self.engine.response_body().is_none_or(|b| b.is_done()) {
                return Ok(());
            }
            if self.from_origin.is_empty() {
                let wait = self.left().min(WATCH);
                let Some(upstream) = self.upstream.as_mut() else {
                    return Err(self.engine.driver_bug("reading a body without an origin"));
                };
                match read_into(&mut upstream.stream, &mut self.from_origin, wait) {
                    ReadOutcome::Bytes => {}
                    ReadOutcome::TimedOut => {
                        self.origin_silent()?;
                        continue;
                    }
                    ReadOutcome::Finished { reset } => {
                        let reset = reset || upstream.reset_seen;
                        self.upstream = None;
                        match self.engine.on_origin_finished(reset) {
                            Some(ending) => return Err(ending),
                            None => continue,
                        }
                    }
                }
            }
            let Some(body) = self.engine.response_body() else {
                return Ok(());
            };
            let n = match body.advance(self.from_origin.bytes()) {
                Ok(n) => n,
                Err(_) => return Err(self.fail(Failure::MalformedResponseBody)),
            };
            let chunk = self.from_origin.bytes().get(..n).unwrap_or(&[]);
            if self.client.write_all(chunk).is_err() {
                return Err(self.fail(Failure::ClientReset));
            }
            self.from_origin.consume(n);
            self.engine.on_progress(self.limits, self.clock.now(), n);
        }
    }
}

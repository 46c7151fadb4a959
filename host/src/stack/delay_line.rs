//! [`DelayLine`]: the device layer's `--link-delay` and `--link-rate`, a `phy::Device` wrapper that holds every
//! frame smoltcp sends and every frame the device gives it in a [`LinkQueue`] per direction until it is due (in
//! real time), as a link of that shape would. Each direction gets the full delay (it is a one-way delay: a round
//! trip through the device takes twice it) and its own rate and queue (at most
//! [`QUEUE_LIMIT`](crate::stack::link_shape::QUEUE_LIMIT) frames; more are lost).
//!
//! Frames the device has are read as soon as smoltcp polls (and then held), so the device's file descriptor
//! never stays readable while smoltalk sleeps; a [`DelayHandle`] (kept by the event loop, outside smoltcp's
//! other instruments, which wrap this one) says when it must wake for the next held frame. Unshaped, the
//! wrapper passes every token straight through.

use std::cell::RefCell;
use std::rc::Rc;

use smoltcp::phy::{self, Device, DeviceCapabilities, PacketMeta};
use smoltcp::time::Instant;

use crate::stack::link_shape::{LinkQueue, LinkShape};

/// Frames read from the device in one poll at most (the rest wait in the device for the next).
const READ_BUDGET: usize = 64;

/// The two directions' queues.
#[derive(Debug)]
pub struct Queues {
    /// smoltcp's frames on their way to the device.
    outbound: LinkQueue,
    /// The device's frames on their way to smoltcp.
    inbound: LinkQueue,
}

impl Queues {
    fn next_due(&self) -> Option<Instant> {
        let due = match (self.outbound.next_due(), self.inbound.next_due()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(Instant::from_micros(
            i64::try_from(due.div_ceil(1000)).unwrap_or(i64::MAX),
        ))
    }
}

/// Frames a full queue lost are said once the link is gone (at debug level as they happen).
impl Drop for Queues {
    fn drop(&mut self) {
        let (out, inbound) = (self.outbound.dropped(), self.inbound.dropped());
        if out + inbound > 0 {
            log::info!(
                "the shaped link lost {out} frames smoltcp sent and {inbound} frames the device gave it in \
                 full queues (at most {} frames wait each way)",
                crate::stack::link_shape::QUEUE_LIMIT
            );
        }
    }
}

/// A device whose frames cross a link of a given shape (see the module documentation).
pub struct DelayLine<D: Device> {
    inner: D,
    shaped: bool,
    queues: Rc<RefCell<Queues>>,
}

/// What the event loop needs of a [`DelayLine`] deep inside other instruments: when its next frame is due.
#[derive(Clone)]
pub struct DelayHandle(Rc<RefCell<Queues>>);

impl DelayHandle {
    /// When the next held frame is due (either direction), if one is held.
    pub fn next_due(&self) -> Option<Instant> {
        self.0.try_borrow().ok()?.next_due()
    }

    /// Frames lost because a direction's queue was full: (smoltcp to the device, the device to smoltcp).
    pub fn dropped(&self) -> (u64, u64) {
        self.0
            .try_borrow()
            .map_or((0, 0), |q| (q.outbound.dropped(), q.inbound.dropped()))
    }
}

/// `now` in nanoseconds.
fn nanos(now: Instant) -> u64 {
    u64::try_from(now.total_micros()).unwrap_or(0) * 1000
}

impl<D: Device> DelayLine<D> {
    /// `inner` behind a link of `shape` each way.
    pub fn new(inner: D, shape: LinkShape) -> Self {
        DelayLine {
            inner,
            shaped: !shape.is_none(),
            queues: Rc::new(RefCell::new(Queues {
                outbound: LinkQueue::new(shape),
                inbound: LinkQueue::new(shape),
            })),
        }
    }

    /// A handle on the queues, for the event loop.
    pub fn handle(&self) -> DelayHandle {
        DelayHandle(Rc::clone(&self.queues))
    }

    /// The device inside.
    pub fn get_ref(&self) -> &D {
        &self.inner
    }

    /// The device inside, to change.
    pub fn get_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Writes smoltcp's frames that are due by `now` to the device, and takes in (to hold) what the device has.
    pub fn pump(&mut self, now: Instant) {
        if !self.shaped {
            return;
        }
        let at = nanos(now);
        let Ok(mut queues) = self.queues.try_borrow_mut() else {
            return;
        };
        while let Some((_, frame)) = queues.outbound.pop_due(at) {
            match self.inner.transmit(now) {
                Some(token) => phy::TxToken::consume(token, frame.len(), |buf| {
                    buf.copy_from_slice(&frame);
                }),
                None => log::debug!("the device took no frame; one held frame is lost"),
            }
        }
        for _ in 0..READ_BUDGET {
            let Some((rx, _tx)) = self.inner.receive(now) else {
                break;
            };
            let frame = phy::RxToken::consume(rx, |bytes| bytes.to_vec());
            if queues.inbound.push(at, frame).is_err() {
                log::debug!("link queue to smoltcp full: a received frame is lost");
            }
        }
    }
}

/// A frame for smoltcp: straight from the device, or one that was held.
pub enum DelayRxToken<'a, D: Device + 'a> {
    /// Unshaped: the device's own token.
    Direct(D::RxToken<'a>),
    /// A held frame, now due.
    Held(Vec<u8>),
}

/// Room for a frame smoltcp sends: straight on the device, or into the outbound queue.
pub enum DelayTxToken<'a, D: Device + 'a> {
    /// Unshaped: the device's own token.
    Direct(D::TxToken<'a>),
    /// Into the outbound queue, sent at this time.
    Held(Rc<RefCell<Queues>>, Instant),
}

impl<'a, D: Device + 'a> phy::RxToken for DelayRxToken<'a, D> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match self {
            DelayRxToken::Direct(token) => token.consume(f),
            DelayRxToken::Held(frame) => f(&frame),
        }
    }

    fn meta(&self) -> PacketMeta {
        match self {
            DelayRxToken::Direct(token) => token.meta(),
            DelayRxToken::Held(_) => PacketMeta::default(),
        }
    }
}

impl<'a, D: Device + 'a> phy::TxToken for DelayTxToken<'a, D> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self {
            DelayTxToken::Direct(token) => token.consume(len, f),
            DelayTxToken::Held(queues, now) => {
                let mut frame = vec![0; len];
                let result = f(&mut frame);
                let pushed = queues
                    .try_borrow_mut()
                    .map(|mut q| q.outbound.push(nanos(now), frame).is_ok());
                if !matches!(pushed, Ok(true)) {
                    log::debug!("link queue from smoltcp full: a sent frame is lost");
                }
                result
            }
        }
    }

    fn set_meta(&mut self, meta: PacketMeta) {
        if let DelayTxToken::Direct(token) = self {
            token.set_meta(meta);
        }
    }
}

impl<D: Device> Device for DelayLine<D> {
    type RxToken<'a>
        = DelayRxToken<'a, D>
    where
        Self: 'a;
    type TxToken<'a>
        = DelayTxToken<'a, D>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if !self.shaped {
            return self
                .inner
                .receive(now)
                .map(|(rx, tx)| (DelayRxToken::Direct(rx), DelayTxToken::Direct(tx)));
        }
        self.pump(now);
        let (_, frame) = self
            .queues
            .try_borrow_mut()
            .ok()?
            .inbound
            .pop_due(nanos(now))?;
        Some((
            DelayRxToken::Held(frame),
            DelayTxToken::Held(Rc::clone(&self.queues), now),
        ))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        if !self.shaped {
            return self.inner.transmit(now).map(DelayTxToken::Direct);
        }
        self.pump(now);
        Some(DelayTxToken::Held(Rc::clone(&self.queues), now))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Loopback, Medium, RxToken, TxToken};
    use std::time::Duration;

    fn send(device: &mut DelayLine<Loopback>, now: Instant, byte: u8) {
        let token = device.transmit(now).expect("room to send");
        token.consume(100, |buf| buf.fill(byte));
    }

    fn take(device: &mut DelayLine<Loopback>, now: Instant) -> Option<u8> {
        let (rx, _) = device.receive(now)?;
        Some(rx.consume(|buf| buf[0]))
    }

    #[test]
    fn a_frame_crosses_each_direction_after_the_delay() {
        // Loopback: what is sent comes back, so a frame crosses the outbound queue, then the inbound one.
        let shape = LinkShape::new(Duration::from_millis(10), Some(8_000_000));
        let mut device = DelayLine::new(Loopback::new(Medium::Ip), shape);
        let t0 = Instant::from_millis(1000);
        send(&mut device, t0, 7);
        // 100 bytes at 8 Mbit/s: 100 µs on the wire, then 10 ms.
        assert_eq!(
            device.handle().next_due(),
            Some(t0 + smoltcp::time::Duration::from_micros(10_100))
        );
        assert_eq!(
            take(
                &mut device,
                t0 + smoltcp::time::Duration::from_micros(10_099)
            ),
            None
        );
        // Due on the way out at 10.1 ms: written to the device then, and held again on the way in.
        assert_eq!(
            take(
                &mut device,
                t0 + smoltcp::time::Duration::from_micros(10_100)
            ),
            None
        );
        let back = t0 + smoltcp::time::Duration::from_micros(20_200);
        assert_eq!(device.handle().next_due(), Some(back));
        assert_eq!(take(&mut device, back), Some(7));
        assert_eq!(device.handle().next_due(), None);
    }

    #[test]
    fn unshaped_it_passes_frames_straight_through() {
        let mut device = DelayLine::new(Loopback::new(Medium::Ip), LinkShape::default());
        let now = Instant::from_millis(5);
        send(&mut device, now, 3);
        assert_eq!(device.handle().next_due(), None);
        assert_eq!(take(&mut device, now), Some(3));
    }
}

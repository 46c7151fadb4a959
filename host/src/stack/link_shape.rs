//! A link's shape: a one-way delay and a rate ([`LinkShape`], `--link-delay` and `--link-rate`), how they are
//! written on the command line ([`parse_delay`], [`parse_rate`], with [`ShapeParseError`]), and the queue that
//! holds one direction's frames until the link delivers them ([`LinkQueue`]). The lab's virtual segment (on its
//! virtual clock) and the TUN/TAP device layer (`stack::delay_line`, in real time) share them.
//!
//! The model, for each direction of a link: a frame of N bytes handed to the link at time t starts to leave
//! when the frames before it have left (FIFO), occupies the link N·8/rate seconds (serialisation), and arrives
//! `delay` after its last bit left. Without a rate, frames do not wait for each other: each arrives `delay`
//! after it was sent. The queue holds at most [`QUEUE_LIMIT`] frames (waiting or on their way), like netem's
//! default `limit 1000`; a frame sent into a full queue is lost (tail drop), as at a router whose buffer is full.

use std::collections::VecDeque;
use std::time::Duration;

/// Frames one direction of a shaped link holds at once (waiting to be serialised, or on their way); a frame
/// sent when it is full is lost. The same as netem's default limit.
pub const QUEUE_LIMIT: usize = 1000;

/// The shape of a link: a one-way delay, and a rate (none: frames leave as soon as they are sent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkShape {
    /// How long a frame takes to cross the link, each direction (after its serialisation).
    pub delay: Duration,
    /// The link's rate in bits per second, each direction (none: no serialisation time).
    pub rate: Option<u64>,
}

impl LinkShape {
    /// `delay` each way at `rate` bits per second.
    pub const fn new(delay: Duration, rate: Option<u64>) -> LinkShape {
        LinkShape { delay, rate }
    }

    /// Whether the link is unshaped: no delay and no rate (every frame arrives as it is sent).
    pub fn is_none(&self) -> bool {
        self.delay.is_zero() && self.rate.is_none()
    }

    /// The round-trip time the delay adds: twice the one-way delay (serialisation not counted).
    pub fn rtt(&self) -> Duration {
        self.delay * 2
    }

    /// Nanoseconds a frame of `bytes` bytes occupies the link (0 without a rate), rounded up.
    pub fn serialisation_nanos(&self, bytes: usize) -> u64 {
        match self.rate {
            Some(rate) if rate > 0 => {
                let bits = bytes as u128 * 8 * 1_000_000_000;
                bits.div_ceil(u128::from(rate)).min(u128::from(u64::MAX)) as u64
            }
            _ => 0,
        }
    }

    /// `10 ms each way (RTT 20 ms), 100 Mbit/s`, or `no added delay` for an unshaped link.
    pub fn describe(&self) -> String {
        if self.is_none() {
            return "no added delay".into();
        }
        let delay = format!(
            "{} each way (RTT {})",
            millis(self.delay),
            millis(self.rtt())
        );
        match self.rate {
            Some(rate) => format!("{delay}, {}", rate_text(rate)),
            None => delay,
        }
    }
}

/// `10 ms`, `1.5 ms`, `0 ms`.
fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    let text = format!("{ms:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} ms")
}

/// `100 Mbit/s`, `1 Gbit/s`, `500 kbit/s`, `1234 bit/s`.
pub fn rate_text(bits: u64) -> String {
    for (unit, size) in [
        ("Gbit/s", 1_000_000_000),
        ("Mbit/s", 1_000_000),
        ("kbit/s", 1_000),
    ] {
        if bits >= size && bits.is_multiple_of(size) {
            return format!("{} {unit}", bits / size);
        }
    }
    if bits >= 1_000_000 {
        return format!("{:.3} Mbit/s", bits as f64 / 1e6);
    }
    format!("{bits} bit/s")
}

/// Why a `--link-delay` or `--link-rate` value was refused (the line a person sees).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeParseError {
    /// Nothing was given.
    Empty,
    /// The number in front of the unit is not one (or negative).
    NotANumber(String),
    /// A delay with a unit other than ns, us, ms, s (or a non-zero delay without one).
    DelayUnit(String),
    /// A delay longer than [`MAX_DELAY`].
    DelayTooLong(String),
    /// A rate with a unit other than bit, kbit, Mbit, Gbit (optionally with `/s`).
    RateUnit(String),
    /// A rate of zero, or below 1 kbit/s, or above 1 Tbit/s.
    RateOutOfRange(String),
}

impl std::fmt::Display for ShapeParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShapeParseError::Empty => f.write_str("no value given"),
            ShapeParseError::NotANumber(text) => {
                write!(f, "{text} does not start with a number of at least 0")
            }
            ShapeParseError::DelayUnit(text) => write!(
                f,
                "{text} is not a delay: write a number with ns, us, ms or s (10ms, 1.5ms, 2s), or 0"
            ),
            ShapeParseError::DelayTooLong(text) => {
                write!(f, "{text} is longer than the longest delay, 10 s")
            }
            ShapeParseError::RateUnit(text) => write!(
                f,
                "{text} is not a rate: write a number with bit, kbit, Mbit or Gbit, optionally /s \
                 (100Mbit, 1Gbit, 500kbit, 10Mbit/s); bytes per second are not taken"
            ),
            ShapeParseError::RateOutOfRange(text) => write!(
                f,
                "{text} is not a rate from 1 kbit/s to 1 Tbit/s (none: no limit)"
            ),
        }
    }
}

impl std::error::Error for ShapeParseError {}

/// The longest `--link-delay`.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// Splits `text` into its leading decimal number and the unit after it.
fn number_and_unit(text: &str) -> Result<(f64, &str), ShapeParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ShapeParseError::Empty);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| ShapeParseError::NotANumber(text.to_string()))?;
    Ok((value, unit.trim()))
}

/// A one-way delay: a number with `ns`, `us` (or `µs`), `ms` or `s` (`10ms`, `1.5ms`, `2s`), or `0`; at most
/// [`MAX_DELAY`], kept to the nanosecond.
pub fn parse_delay(text: &str) -> Result<Duration, ShapeParseError> {
    let (value, unit) = number_and_unit(text)?;
    let nanos_per_unit = match unit.to_ascii_lowercase().as_str() {
        "" if value == 0.0 => 0.0,
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return Err(ShapeParseError::DelayUnit(text.trim().to_string())),
    };
    let nanos = (value * nanos_per_unit).round();
    if nanos > MAX_DELAY.as_nanos() as f64 {
        return Err(ShapeParseError::DelayTooLong(text.trim().to_string()));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// A link's rate as a flag gives it: bits per second, or none (frames leave as soon as they are sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkRate(pub Option<u64>);

/// `none` (any case) for no rate, else a rate as [`parse_rate`] reads it.
pub fn parse_link_rate(text: &str) -> Result<LinkRate, ShapeParseError> {
    match text.trim().eq_ignore_ascii_case("none") {
        true => Ok(LinkRate(None)),
        false => parse_rate(text).map(|bits| LinkRate(Some(bits))),
    }
}

/// A rate in bits per second: a number with `bit`, `kbit`, `Mbit` or `Gbit` (powers of 1000, any case),
/// optionally followed by `/s` or `ps` (`100Mbit`, `1Gbit`, `500kbit`, `10Mbit/s`); from 1 kbit/s to 1 Tbit/s.
pub fn parse_rate(text: &str) -> Result<u64, ShapeParseError> {
    let (value, unit) = number_and_unit(text)?;
    let unit = unit.to_ascii_lowercase();
    let unit = unit
        .strip_suffix("/s")
        .or_else(|| unit.strip_suffix("ps"))
        .unwrap_or(&unit);
    let size = match unit {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return Err(ShapeParseError::RateUnit(text.trim().to_string())),
    };
    let bits = (value * size).round();
    if !(1e3..=1e12).contains(&bits) {
        return Err(ShapeParseError::RateOutOfRange(text.trim().to_string()));
    }
    Ok(bits as u64)
}

/// A frame sent into a full [`LinkQueue`]: lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// One direction of a shaped link: the frames on their way, each with the time it arrives, in nanoseconds on
/// the caller's clock (virtual in the lab, real on a device). Arrival times never go down (FIFO).
#[derive(Debug, Default)]
pub struct LinkQueue {
    shape: LinkShape,
    frames: VecDeque<(u64, Vec<u8>)>,
    /// When the last frame sent finishes leaving (its last bit is on the link).
    busy_until: u64,
    dropped: u64,
}

impl LinkQueue {
    /// An empty queue of a link of `shape`.
    pub fn new(shape: LinkShape) -> LinkQueue {
        LinkQueue {
            shape,
            ..LinkQueue::default()
        }
    }

    /// Gives frames sent from now on `shape`; frames on their way keep their arrival times.
    pub fn set_shape(&mut self, shape: LinkShape) {
        self.shape = shape;
    }

    /// The link's shape.
    pub fn shape(&self) -> LinkShape {
        self.shape
    }

    /// Sends `frame` at `now`: returns when it arrives, or [`QueueFull`] (the frame is lost). An unshaped link
    /// has no queue: its frames arrive at once and are never lost here.
    pub fn push(&mut self, now: u64, frame: Vec<u8>) -> Result<u64, QueueFull> {
        if self.shape.is_none() {
            self.frames.push_back((now, frame));
            return Ok(now);
        }
        if self.frames.len() >= QUEUE_LIMIT {
            self.dropped += 1;
            return Err(QueueFull);
        }
        let start = now.max(self.busy_until);
        self.busy_until = start.saturating_add(self.shape.serialisation_nanos(frame.len()));
        let delay = u64::try_from(self.shape.delay.as_nanos()).unwrap_or(u64::MAX);
        let due = self.busy_until.saturating_add(delay);
        self.frames.push_back((due, frame));
        Ok(due)
    }

    /// The first frame that has arrived by `now`, with its arrival time.
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, Vec<u8>)> {
        match self.frames.front() {
            Some((due, _)) if *due <= now => self.frames.pop_front(),
            _ => None,
        }
    }

    /// When the next frame arrives, if one is on its way.
    pub fn next_due(&self) -> Option<u64> {
        self.frames.front().map(|(due, _)| *due)
    }

    /// Frames on their way.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame is on its way.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames lost because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_parsed_to_the_nanosecond() {
        assert_eq!(parse_delay("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_delay("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_delay("0"), Ok(Duration::ZERO));
        assert_eq!(parse_delay("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_delay("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_delay("0.5 s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_delay("40ns"), Ok(Duration::from_nanos(40)));
        assert_eq!(parse_delay("10MS"), Ok(Duration::from_millis(10)));
        for bad in ["", "ms", "10", "10 min", "-5ms", "1.2.3ms", "fast", "11s"] {
            assert!(parse_delay(bad).is_err(), "{bad:?} was taken");
        }
        assert_eq!(
            parse_delay("10"),
            Err(ShapeParseError::DelayUnit("10".into()))
        );
        assert!(parse_delay("11s")
            .unwrap_err()
            .to_string()
            .contains("longest delay"));
    }

    #[test]
    fn rates_are_parsed_in_bits_per_second() {
        assert_eq!(parse_rate("100Mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("1Gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("500kbit"), Ok(500_000));
        assert_eq!(parse_rate("10Mbit/s"), Ok(10_000_000));
        assert_eq!(parse_rate("2.5gbit"), Ok(2_500_000_000));
        assert_eq!(parse_rate("64000bit"), Ok(64_000));
        assert_eq!(parse_rate("8mbitps"), Ok(8_000_000));
        for bad in [
            "", "100", "100MB", "100Mbps", "0Mbit", "10bit", "2Tbit", "-1Mbit", "Mbit",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad:?} was taken");
        }
        assert!(matches!(
            parse_rate("0Mbit"),
            Err(ShapeParseError::RateOutOfRange(_))
        ));
        // A flag's rate may also be none.
        assert_eq!(parse_link_rate(" None "), Ok(LinkRate(None)));
        assert_eq!(parse_link_rate("100Mbit"), Ok(LinkRate(Some(100_000_000))));
        assert!(parse_link_rate("nothing").is_err());
    }

    #[test]
    fn a_shape_describes_itself() {
        let shape = LinkShape::new(Duration::from_millis(5), Some(100_000_000));
        assert_eq!(shape.describe(), "5 ms each way (RTT 10 ms), 100 Mbit/s");
        let shape = LinkShape::new(Duration::from_micros(1500), None);
        assert_eq!(shape.describe(), "1.5 ms each way (RTT 3 ms)");
        assert_eq!(LinkShape::default().describe(), "no added delay");
        assert_eq!(rate_text(1_000_000_000), "1 Gbit/s");
        assert_eq!(rate_text(1_500), "1500 bit/s");
    }

    #[test]
    fn frames_queue_behind_each_other_and_arrive_after_the_delay() {
        // 1000 bytes at 8 Mbit/s take 1 ms; 10 ms of delay.
        let mut queue = LinkQueue::new(LinkShape::new(Duration::from_millis(10), Some(8_000_000)));
        let ms = 1_000_000;
        assert_eq!(queue.push(0, vec![0; 1000]), Ok(11 * ms));
        assert_eq!(queue.push(0, vec![1; 1000]), Ok(12 * ms));
        // Sent after the link went idle: no waiting.
        assert_eq!(
            queue.push(20 * ms, vec![2; 500]),
            Ok(20 * ms + ms / 2 + 10 * ms)
        );
        assert_eq!(queue.next_due(), Some(11 * ms));
        assert_eq!(queue.pop_due(11 * ms - 1), None);
        assert_eq!(queue.pop_due(11 * ms).map(|f| f.1[0]), Some(0));
        assert_eq!(queue.pop_due(40 * ms).map(|f| f.1[0]), Some(1));
        assert_eq!(queue.pop_due(40 * ms).map(|f| f.1[0]), Some(2));
        assert!(queue.is_empty());
    }

    #[test]
    fn a_full_queue_drops_and_an_unshaped_link_has_none() {
        let mut queue = LinkQueue::new(LinkShape::new(Duration::from_millis(1), None));
        for i in 0..QUEUE_LIMIT {
            assert!(queue.push(i as u64, vec![0; 60]).is_ok());
        }
        assert_eq!(queue.push(5000, vec![0; 60]), Err(QueueFull));
        assert_eq!(queue.dropped(), 1);
        let mut unshaped = LinkQueue::new(LinkShape::default());
        for i in 0..QUEUE_LIMIT * 2 {
            assert_eq!(unshaped.push(7, vec![i as u8]), Ok(7));
        }
        assert_eq!(unshaped.len(), QUEUE_LIMIT * 2);
    }
}

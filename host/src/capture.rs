//! Instruments for experiments on a smoltcp device: a packet capture (`--pcap`), fault injection
//! (`--drop-chance`, `--corrupt-chance`, `--size-limit`, `--rate-limit`, `--seed`) and a packet trace (`--trace`),
//! each built on smoltcp's own `phy` wrappers (`PcapWriter`, `FaultInjector`, `Tracer`).
//!
//! [`CaptureFile`] is the sink the captures go to. smoltcp's own sink for `std::io::Write` panics when a write
//! fails (a full disk, say); this one logs the failure once and stops capturing, so the experiment goes on.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use smoltcp::phy::{PcapLinkType, PcapSink};
use smoltcp::time::Instant;

/// What to wrap a smoltcp device in.
#[derive(Debug, Clone, Default)]
pub struct Instruments {
    /// Write every packet, both directions, to this pcap file.
    pub pcap: Option<PathBuf>,
    /// Faults to inject.
    pub faults: Faults,
    /// Print every packet (log target `smoltalk::trace`, debug level).
    pub trace: bool,
}

impl Instruments {
    /// Whether any instrument is asked for (without one, the device runs bare).
    pub fn any(&self) -> bool {
        self.pcap.is_some() || self.faults.any() || self.trace
    }
}

/// Faults to inject, as smoltcp's `FaultInjector` takes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Percent of packets lost, each direction.
    pub drop_chance: u8,
    /// Percent of packets with one byte changed, each direction.
    pub corrupt_chance: u8,
    /// Packets longer than this are lost (0: no limit).
    pub size_limit: usize,
    /// At most this many packets per second each direction; the rest are lost (0: no limit).
    pub rate_limit: u64,
    /// Seed of the fault generator: the same seed gives the same faults for the same packets.
    pub seed: u32,
}

impl Faults {
    /// Whether any fault is asked for.
    pub fn any(&self) -> bool {
        self.drop_chance > 0
            || self.corrupt_chance > 0
            || self.size_limit > 0
            || self.rate_limit > 0
    }
}

/// The largest frame smoltcp's `FaultInjector` handles (its internal buffer; a lost larger frame would not
/// fit it).
pub const FAULT_INJECTOR_MAX_FRAME: usize = 1536;

/// A pcap file that never panics: the first failed write is logged and capturing stops.
pub struct CaptureFile {
    out: Option<BufWriter<File>>,
    path: PathBuf,
}

impl CaptureFile {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> io::Result<CaptureFile> {
        let file = File::create(path)?;
        Ok(CaptureFile {
            out: Some(BufWriter::with_capacity(256 * 1024, file)),
            path: path.to_path_buf(),
        })
    }

    /// Starts the file: the pcap global header for `link_type`.
    pub fn start(&mut self, link_type: PcapLinkType) {
        self.global_header(link_type);
    }

    fn fail(&mut self, e: &io::Error) {
        log::error!("capture {} stopped: {e}", self.path.display());
        self.out = None;
    }
}

impl PcapSink for CaptureFile {
    fn write(&mut self, data: &[u8]) {
        if let Some(out) = self.out.as_mut() {
            if let Err(e) = out.write_all(data) {
                self.fail(&e);
            }
        }
    }

    /// Packets are buffered; the file is flushed when the capture ends (see `Drop`).
    fn flush(&mut self) {}

    fn packet(&mut self, timestamp: Instant, packet: &[u8]) {
        let length = packet.len().min(u32::MAX as usize);
        let kept = length.min(self.max_packet_size() as usize);
        self.write_u32(timestamp.secs() as u32);
        self.write_u32(timestamp.micros() as u32);
        self.write_u32(kept as u32);
        self.write_u32(length as u32);
        self.write(packet.get(..kept).unwrap_or(packet));
    }
}

impl Drop for CaptureFile {
    fn drop(&mut self) {
        if let Some(mut out) = self.out.take() {
            if let Err(e) = Write::flush(&mut out) {
                log::error!(
                    "capture {}: the last packets were not written: {e}",
                    self.path.display()
                );
            }
        }
    }
}

/// The `Tracer`'s printer: every packet at debug level on the `smoltalk::trace` log target.
pub fn trace_packet(timestamp: Instant, packet: smoltcp::phy::TracerPacket) {
    log::debug!(target: "smoltalk::trace", "{timestamp} {packet}");
}

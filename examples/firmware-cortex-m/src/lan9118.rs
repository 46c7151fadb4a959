//! The SMSC LAN9118 Ethernet controller of the mps2-an385 board, as a smoltcp [`Device`]; no heap, no DMA.
//!
//! The LAN9118 is programmed through 32-bit registers at 0x4020_0000 (on this board); its frames move through
//! FIFOs the processor reads and writes word by word. Everything here follows the SMSC LAN9118 datasheet
//! (*High Performance single-chip 10/100 Non-PCI Ethernet Controller*, SMSC rev. 1.5, now Microchip
//! DS00002266). Chapters and the registers used (section numbers as in that datasheet's layout; 3.12.2 was checked
//! against the family's sister datasheets, the others are given by chapter and register name):
//!
//! | offset | register | datasheet | used for |
//! |---|---|---|---|
//! | 0x00 | RX_DATA_FIFO port | 3.13 RX Data Path Operation | a received frame's words |
//! | 0x20 | TX_DATA_FIFO port | 3.12 TX Data Path Operation; 3.12.2 TX Command Format ('A', 'B') | a frame to send, behind its two command words |
//! | 0x40 | RX_STATUS_FIFO | 3.13 RX Data Path Operation (the RX status word) | each received frame's length (with its 4-byte FCS) and error summary |
//! | 0x48 | TX_STATUS_FIFO | 3.12 TX Data Path Operation (the TX status word) | each sent frame's tag and error summary |
//! | 0x50 | ID_REV | 5.3 System Control and Status Registers | the chip's id (0x0118 in the upper half) |
//! | 0x54 | IRQ_CFG | 5.3 | IRQ_EN (bit 8), IRQ_POL (bit 4, active high), IRQ_TYPE (bit 0, push-pull) |
//! | 0x58 | INT_STS | 5.3 | RSFL (bit 3: the RX status FIFO is above its level), cleared by writing 1 |
//! | 0x5C | INT_EN | 5.3 | RSFL enabled only |
//! | 0x64 | BYTE_TEST | 5.3 | 0x8765_4321: the chip answers, in 32-bit little-endian order |
//! | 0x68 | FIFO_INT | 5.3 | RX status level 0: RSFL as soon as one frame's status is there |
//! | 0x6C | RX_CFG | 5.3 | 0: no data offset, 4-byte end alignment |
//! | 0x70 | TX_CFG | 5.3 | TX_ON (bit 1), TXSAO (bit 2: a full TX status FIFO does not stop the transmitter) |
//! | 0x74 | HW_CFG | 5.3 | SRST (bit 0): the soft reset, which the chip clears when done |
//! | 0x7C | RX_FIFO_INF | 5.3 | RXSUSED (bits 23:16): frames waiting |
//! | 0x80 | TX_FIFO_INF | 5.3 | TXSUSED (bits 23:16), TDFREE (bits 15:0): room in the TX data FIFO |
//! | 0x84 | PMT_CTRL | 5.3 | READY (bit 0): the chip is out of reset |
//! | 0xA4 | MAC_CSR_CMD | 5.3 | CSR busy (bit 31), read (bit 30), MAC register index (bits 7:0) |
//! | 0xA8 | MAC_CSR_DATA | 5.3 | the MAC register's value |
//!
//! MAC registers, through MAC_CSR_CMD/DATA (5.4 MAC Control and Status Registers): MAC_CR (1: TXEN bit 3, RXEN
//! bit 2, FDPX bit 20; PRMS bit 18 left clear so only this MAC's frames and broadcasts come in), ADDRH (2) and
//! ADDRL (3): the MAC address (loaded from the EEPROM at reset), MII_ACC (6) and MII_DATA (7): the PHY.
//!
//! PHY registers, at PHY address 1 through MII_ACC/MII_DATA (5.5 PHY Registers): Basic Control (0: reset bit 15,
//! auto-negotiation enable bit 12 and restart bit 9), Basic Status (1: link status bit 2), Auto-Negotiation
//! Advertisement (4: 10/100, half and full duplex).
//!
//! Set-up (the register descriptions of chapter 5): BYTE_TEST, soft reset, wait for READY,
//! the MAC address, PHY reset and auto-negotiation, wait for the link, MAC_CR, TX_CFG, RX_CFG, FIFO_INT, the
//! interrupt (INT_STS cleared, INT_EN, IRQ_CFG). Under QEMU's model the link is up at once.
//!
//! Receiving: while RX_FIFO_INF says a status is waiting, pop it; read the frame's words (its length rounded up
//! to whole words, the FCS included) from the RX data FIFO; hand smoltcp the frame without its FCS. A frame
//! with an error, or longer than the buffer, is read out and dropped. Sending: wait for room (TDFREE), write
//! command 'A' (first and last segment, the length), command 'B' (a tag and the length), the frame's words; the
//! chip pads short frames and adds the FCS. The TX status words are read back after each frame, counting
//! errors.

use core::ptr::{addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, Ordering};

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

/// The LAN9118's registers on mps2-an385.
const BASE: usize = 0x4020_0000;

const RX_DATA_FIFO: usize = 0x00;
const TX_DATA_FIFO: usize = 0x20;
const RX_STATUS_FIFO: usize = 0x40;
const TX_STATUS_FIFO: usize = 0x48;
const ID_REV: usize = 0x50;
const IRQ_CFG: usize = 0x54;
const INT_STS: usize = 0x58;
const INT_EN: usize = 0x5C;
const BYTE_TEST: usize = 0x64;
const FIFO_INT: usize = 0x68;
const RX_CFG: usize = 0x6C;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_FIFO_INF: usize = 0x7C;
const TX_FIFO_INF: usize = 0x80;
const PMT_CTRL: usize = 0x84;
const MAC_CSR_CMD: usize = 0xA4;
const MAC_CSR_DATA: usize = 0xA8;

const BYTE_TEST_VALUE: u32 = 0x8765_4321;
const IRQ_CFG_IRQ_EN: u32 = 1 << 8;
const IRQ_CFG_IRQ_POL: u32 = 1 << 4;
const IRQ_CFG_IRQ_TYPE: u32 = 1 << 0;
const INT_RSFL: u32 = 1 << 3;
const TX_CFG_TX_ON: u32 = 1 << 1;
const TX_CFG_TXSAO: u32 = 1 << 2;
const HW_CFG_SRST: u32 = 1 << 0;
const PMT_CTRL_READY: u32 = 1 << 0;
const MAC_CSR_BUSY: u32 = 1 << 31;
const MAC_CSR_READ: u32 = 1 << 30;

const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;
const MAC_MII_ACC: u32 = 6;
const MAC_MII_DATA: u32 = 7;
const MAC_CR_FDPX: u32 = 1 << 20;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_RXEN: u32 = 1 << 2;
const MII_ACC_BUSY: u32 = 1 << 0;
const MII_ACC_WRITE: u32 = 1 << 1;

/// The internal PHY's address.
const PHY_ADDRESS: u32 = 1;
const PHY_BASIC_CONTROL: u32 = 0;
const PHY_BASIC_STATUS: u32 = 1;
const PHY_ADVERTISEMENT: u32 = 4;
const PHY_CONTROL_RESET: u32 = 1 << 15;
const PHY_CONTROL_AUTONEG: u32 = 1 << 12;
const PHY_CONTROL_RESTART_AUTONEG: u32 = 1 << 9;
const PHY_STATUS_LINK: u32 = 1 << 2;
/// 100BASE-TX and 10BASE-T, full and half duplex, IEEE 802.3 selector.
const PHY_ADVERTISE_ALL: u32 = 0x01E1;

/// TX command 'A': interrupt on completion off, first segment (bit 13), last segment (bit 12), buffer size.
const TX_CMD_A_FIRST: u32 = 1 << 13;
const TX_CMD_A_LAST: u32 = 1 << 12;
/// Error status bit (bit 15) of an RX or a TX status word.
const STATUS_ERROR: u32 = 1 << 15;

/// The largest Ethernet frame (without FCS) for a 1500-byte MTU.
pub const FRAME_LEN: usize = 1514;
/// The receive buffer: a frame and its 4-byte FCS, in whole words.
pub const RX_BUFFER_LEN: usize = 1520;

/// The driver's frame buffers, static (size.sh lists them apart from the rest of the static RAM): one received
/// frame with its FCS, one frame to send.
static mut RX_BUFFER: [u8; RX_BUFFER_LEN] = [0; RX_BUFFER_LEN];
static mut TX_BUFFER: [u8; FRAME_LEN] = [0; FRAME_LEN];
/// Set by the first `Lan9118::new`, so the buffers are handed out once.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// How often a register is polled before the chip is given up on.
const SPINS: u32 = 1_000_000;

/// Why the controller could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// BYTE_TEST did not read 0x8765_4321: no LAN9118 at the address, or not in 32-bit mode.
    NotFound,
    /// The soft reset did not finish (HW_CFG.SRST or PMT_CTRL.READY).
    Reset,
    /// A MAC CSR or PHY (MII) access stayed busy.
    Busy,
    /// The driver was set up already (the board has one LAN9118, and its buffers are handed out once).
    Taken,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::NotFound => "no LAN9118 answers at 0x4020_0000",
            Error::Reset => "the LAN9118 does not come out of reset",
            Error::Busy => "a LAN9118 MAC or PHY register access stays busy",
            Error::Taken => "the LAN9118 driver is set up already",
        })
    }
}

fn read(offset: usize) -> u32 {
    // SAFETY: a register of the LAN9118 at its fixed address on this board; reads of the FIFO ports pop a word,
    // which the callers intend.
    unsafe { read_volatile((BASE + offset) as *const u32) }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`.
    unsafe { write_volatile((BASE + offset) as *mut u32, value) }
}

fn spin_until(done: impl Fn() -> bool, error: Error) -> Result<(), Error> {
    for _ in 0..SPINS {
        if done() {
            return Ok(());
        }
    }
    Err(error)
}

fn mac_read(index: u32) -> Result<u32, Error> {
    spin_until(|| read(MAC_CSR_CMD) & MAC_CSR_BUSY == 0, Error::Busy)?;
    write(MAC_CSR_CMD, MAC_CSR_BUSY | MAC_CSR_READ | index);
    spin_until(|| read(MAC_CSR_CMD) & MAC_CSR_BUSY == 0, Error::Busy)?;
    Ok(read(MAC_CSR_DATA))
}

fn mac_write(index: u32, value: u32) -> Result<(), Error> {
    spin_until(|| read(MAC_CSR_CMD) & MAC_CSR_BUSY == 0, Error::Busy)?;
    write(MAC_CSR_DATA, value);
    write(MAC_CSR_CMD, MAC_CSR_BUSY | index);
    spin_until(|| read(MAC_CSR_CMD) & MAC_CSR_BUSY == 0, Error::Busy)
}

fn mii_idle() -> Result<(), Error> {
    for _ in 0..SPINS {
        if mac_read(MAC_MII_ACC)? & MII_ACC_BUSY == 0 {
            return Ok(());
        }
    }
    Err(Error::Busy)
}

fn phy_read(register: u32) -> Result<u32, Error> {
    mii_idle()?;
    mac_write(
        MAC_MII_ACC,
        PHY_ADDRESS << 11 | register << 6 | MII_ACC_BUSY,
    )?;
    mii_idle()?;
    Ok(mac_read(MAC_MII_DATA)? & 0xFFFF)
}

fn phy_write(register: u32, value: u32) -> Result<(), Error> {
    mii_idle()?;
    mac_write(MAC_MII_DATA, value)?;
    mac_write(
        MAC_MII_ACC,
        PHY_ADDRESS << 11 | register << 6 | MII_ACC_WRITE | MII_ACC_BUSY,
    )?;
    mii_idle()
}

/// Whether a received frame's status is waiting (RX_FIFO_INF.RXSUSED).
pub fn rx_pending() -> bool {
    read(RX_FIFO_INF) >> 16 & 0xFF != 0
}

/// Masks the controller's interrupt (INT_EN = 0): from the interrupt handler, so its level line falls.
pub fn mask_interrupt() {
    write(INT_EN, 0);
}

/// Clears the receive interrupt's status and enables it again: a frame that arrives from now on raises the line.
pub fn unmask_interrupt() {
    write(INT_STS, INT_RSFL);
    write(INT_EN, INT_RSFL);
}

/// What the driver counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Frames dropped: an error in their RX status, or too long for the buffer.
    pub rx_dropped: u32,
    /// TX status words with their error bit set.
    pub tx_errors: u32,
}

/// The LAN9118 as a smoltcp Ethernet device, with its static receive and send buffers.
pub struct Lan9118 {
    mac: [u8; 6],
    link_up: bool,
    rx: &'static mut [u8; RX_BUFFER_LEN],
    tx: &'static mut [u8; FRAME_LEN],
    tag: u16,
    counters: Counters,
}

impl Lan9118 {
    /// Resets and sets up the controller and its PHY; receiving and sending are on when this returns, and the
    /// receive interrupt is enabled (and routed out on the IRQ line, active high). Once only.
    pub fn new() -> Result<Lan9118, Error> {
        if TAKEN.swap(true, Ordering::Relaxed) {
            return Err(Error::Taken);
        }
        if read(BYTE_TEST) != BYTE_TEST_VALUE {
            return Err(Error::NotFound);
        }
        write(HW_CFG, read(HW_CFG) | HW_CFG_SRST);
        spin_until(|| read(HW_CFG) & HW_CFG_SRST == 0, Error::Reset)?;
        spin_until(|| read(PMT_CTRL) & PMT_CTRL_READY != 0, Error::Reset)?;

        // The address the EEPROM loaded at reset (QEMU's model: the NIC's `macaddr`); a locally administered
        // one if there is none.
        let low = mac_read(MAC_ADDRL)?.to_le_bytes();
        let high = mac_read(MAC_ADDRH)?.to_le_bytes();
        let mut mac = [low[0], low[1], low[2], low[3], high[0], high[1]];
        if mac == [0; 6] || mac == [0xFF; 6] {
            mac = [0x02, 0x00, 0x00, 0x00, 0x91, 0x18];
            mac_write(
                MAC_ADDRL,
                u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
            )?;
            mac_write(MAC_ADDRH, u32::from_le_bytes([mac[4], mac[5], 0, 0]))?;
        }

        phy_write(PHY_BASIC_CONTROL, PHY_CONTROL_RESET)?;
        for _ in 0..SPINS {
            if phy_read(PHY_BASIC_CONTROL)? & PHY_CONTROL_RESET == 0 {
                break;
            }
        }
        phy_write(PHY_ADVERTISEMENT, PHY_ADVERTISE_ALL)?;
        phy_write(
            PHY_BASIC_CONTROL,
            PHY_CONTROL_AUTONEG | PHY_CONTROL_RESTART_AUTONEG,
        )?;
        // Link status latches low (IEEE 802.3 22.2.4.2.13): the first read may report a past drop.
        let mut link_up = false;
        for _ in 0..1000 {
            if phy_read(PHY_BASIC_STATUS)? & PHY_STATUS_LINK != 0 {
                link_up = true;
                break;
            }
        }

        mac_write(MAC_CR, MAC_CR_FDPX | MAC_CR_TXEN | MAC_CR_RXEN)?;
        write(TX_CFG, TX_CFG_TX_ON | TX_CFG_TXSAO);
        write(RX_CFG, 0);
        // RX status level 0 (an interrupt for the first frame); the TX levels at their reset values.
        write(FIFO_INT, read(FIFO_INT) & !0xFF);
        write(INT_STS, u32::MAX);
        write(INT_EN, INT_RSFL);
        write(IRQ_CFG, IRQ_CFG_IRQ_EN | IRQ_CFG_IRQ_POL | IRQ_CFG_IRQ_TYPE);

        // SAFETY: `TAKEN` lets this point be reached once, so these are the only references to the buffers.
        let (rx, tx) = unsafe { (&mut *addr_of_mut!(RX_BUFFER), &mut *addr_of_mut!(TX_BUFFER)) };
        Ok(Lan9118 {
            mac,
            link_up,
            rx,
            tx,
            tag: 0,
            counters: Counters::default(),
        })
    }

    /// The controller's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether the PHY reported its link up during set-up.
    #[cfg_attr(not(feature = "full"), allow(dead_code))] // reported by the full build
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// The chip's id and revision (ID_REV).
    #[cfg_attr(not(feature = "full"), allow(dead_code))] // reported by the full build
    pub fn id_rev(&self) -> u32 {
        read(ID_REV)
    }

    /// What the driver counted so far.
    #[cfg_attr(not(feature = "full"), allow(dead_code))] // reported by the full build
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Takes the next good frame into the receive buffer; returns its length without the FCS.
    fn take_frame(&mut self) -> Option<usize> {
        while rx_pending() {
            let status = read(RX_STATUS_FIFO);
            let len = (status >> 16 & 0x3FFF) as usize;
            let words = len.div_ceil(4);
            let keep = status & STATUS_ERROR == 0 && (18..=RX_BUFFER_LEN).contains(&len);
            if !keep {
                // Read the frame out of the data FIFO all the same: its words come before the next frame's.
                for _ in 0..words {
                    let _ = read(RX_DATA_FIFO);
                }
                self.counters.rx_dropped = self.counters.rx_dropped.wrapping_add(1);
                continue;
            }
            for chunk in self.rx[..words * 4].chunks_exact_mut(4) {
                chunk.copy_from_slice(&read(RX_DATA_FIFO).to_le_bytes());
            }
            return Some(len - 4);
        }
        None
    }
}

/// Writes `frame` to the TX data FIFO behind its two command words, then reads back the TX status words.
fn send(frame: &[u8], tag: u16, counters: &mut Counters) {
    let len = frame.len() as u32;
    // Room for the command words and the frame's words (TX_FIFO_INF.TDFREE, bytes); the chip drains the FIFO
    // onto the wire, so this wait is short (and none under QEMU, which sends at once).
    let needed = 8 + frame.len().div_ceil(4) as u32 * 4;
    for _ in 0..SPINS {
        if read(TX_FIFO_INF) & 0xFFFF >= needed {
            break;
        }
    }
    write(TX_DATA_FIFO, TX_CMD_A_FIRST | TX_CMD_A_LAST | len);
    write(TX_DATA_FIFO, u32::from(tag) << 16 | len);
    let mut chunks = frame.chunks_exact(4);
    for chunk in &mut chunks {
        write(
            TX_DATA_FIFO,
            u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
        );
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 4];
        last[..rest.len()].copy_from_slice(rest);
        write(TX_DATA_FIFO, u32::from_le_bytes(last));
    }
    while read(TX_FIFO_INF) >> 16 & 0xFF != 0 {
        if read(TX_STATUS_FIFO) & STATUS_ERROR != 0 {
            counters.tx_errors = counters.tx_errors.wrapping_add(1);
        }
    }
}

/// A received frame, in the driver's receive buffer.
pub struct Lan9118Rx<'a> {
    frame: &'a [u8],
}

/// Room for one frame to send.
pub struct Lan9118Tx<'a> {
    buffer: &'a mut [u8; FRAME_LEN],
    tag: &'a mut u16,
    counters: &'a mut Counters,
}

impl RxToken for Lan9118Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl TxToken for Lan9118Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let frame = &mut self.buffer[..len.min(FRAME_LEN)];
        let result = f(frame);
        *self.tag = self.tag.wrapping_add(1);
        send(frame, *self.tag, self.counters);
        result
    }
}

impl Device for Lan9118 {
    type RxToken<'a> = Lan9118Rx<'a>;
    type TxToken<'a> = Lan9118Tx<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Lan9118Rx<'_>, Lan9118Tx<'_>)> {
        let len = self.take_frame()?;
        Some((
            Lan9118Rx {
                frame: &self.rx[..len],
            },
            Lan9118Tx {
                buffer: self.tx,
                tag: &mut self.tag,
                counters: &mut self.counters,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Lan9118Tx<'_>> {
        Some(Lan9118Tx {
            buffer: self.tx,
            tag: &mut self.tag,
            counters: &mut self.counters,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME_LEN;
        caps
    }
}

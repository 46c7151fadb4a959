//! QEMU's mps2-an385 (ARM AN385: a Cortex-M3 with CMSDK APB peripherals), bare: the interrupt vector table, the
//! CMSDK APB UART0, SysTick as the clock, CMSDK APB TIMER0 as the wake-up timer, the NVIC, and a `log` backend.
//!
//! Memory map (AN385 application note; checked under QEMU): UART0 at 0x4000_4000, TIMER0 at 0x4000_0000 (external
//! interrupt 8), the LAN9118 at 0x4020_0000 (external interrupt 13). The processor clock, which SysTick and the
//! APB timers count, is 25 MHz.
//!
//! Interrupts: SysTick counts the wraps of its 24-bit counter (one every 0.67 s), which extend it to a 64-bit
//! clock. The Ethernet interrupt and TIMER0's only end `wfi`: their handlers silence the source (the Ethernet
//! handler masks the LAN9118's interrupt, the timer's stops the timer) and the main loop does the work.

use core::arch::asm;
use core::fmt;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m_rt::exception;
use smoltcp::time::{Duration, Instant};

use crate::lan9118;

/// The processor clock (QEMU's mps2 `SYSCLK`), which SysTick (CLKSOURCE = processor) and the APB timers count.
const CLOCK_HZ: u64 = 25_000_000;
const TICKS_PER_US: u64 = CLOCK_HZ / 1_000_000;

/// External interrupts on this board (QEMU's mps2-an385 NVIC has 32).
const IRQS: usize = 32;
/// CMSDK APB TIMER0's interrupt.
pub const TIMER0_IRQ: usize = 8;
/// The LAN9118's interrupt.
pub const ETHERNET_IRQ: usize = 13;

/// The external interrupts' vectors (cortex-m-rt's `device` feature: the table after the 16 system exceptions).
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
#[used]
static __INTERRUPTS: [unsafe extern "C" fn(); IRQS] = {
    let mut vectors: [unsafe extern "C" fn(); IRQS] = [unexpected_irq; IRQS];
    vectors[TIMER0_IRQ] = timer0_irq;
    vectors[ETHERNET_IRQ] = ethernet_irq;
    vectors
};

/// Any other external interrupt: none is enabled, so this never runs; it stops the board if it does.
unsafe extern "C" fn unexpected_irq() {
    Uart.line("smoltalk firmware: unexpected interrupt");
    halt()
}

/// TIMER0 fired: the sleep it was armed for is over. Stop it (and clear its interrupt) so the line falls.
unsafe extern "C" fn timer0_irq() {
    stop_timer0();
}

/// The LAN9118 has frames (or another enabled event): mask its interrupt until the main loop has taken them.
unsafe extern "C" fn ethernet_irq() {
    lan9118::mask_interrupt();
}

// --- System control space (ARMv7-M Architecture Reference Manual, B3) ---

const SYST_CSR: usize = 0xE000_E010;
const SYST_RVR: usize = 0xE000_E014;
const SYST_CVR: usize = 0xE000_E018;
const SYST_CSR_ENABLE: u32 = 1 << 0;
const SYST_CSR_TICKINT: u32 = 1 << 1;
const SYST_CSR_CLKSOURCE: u32 = 1 << 2;
/// SysTick's counter is 24 bits wide.
const SYST_RELOAD: u32 = 0x00FF_FFFF;
const NVIC_ISER0: usize = 0xE000_E100;
const SCB_ICSR: usize = 0xE000_ED04;
const ICSR_PENDSTSET: u32 = 1 << 26;

/// SysTick wraps counted by its exception.
static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// Starts the clock: SysTick on the processor clock, wrapping every 2^24 ticks, its exception counting the wraps.
pub fn init() {
    // SAFETY: SysTick's registers; nothing else uses them.
    unsafe {
        write_volatile(SYST_RVR as *mut u32, SYST_RELOAD);
        write_volatile(SYST_CVR as *mut u32, 0);
        write_volatile(
            SYST_CSR as *mut u32,
            SYST_CSR_ENABLE | SYST_CSR_TICKINT | SYST_CSR_CLKSOURCE,
        );
    }
}

/// Lets TIMER0's and the LAN9118's interrupts end `wfi`. Only once the LAN9118 is set up: out of reset its
/// interrupt line is active low, so it would read as raised until IRQ_CFG makes it active high.
pub fn enable_irqs() {
    // SAFETY: the NVIC's set-enable register; the handlers are in `__INTERRUPTS`.
    unsafe {
        write_volatile(NVIC_ISER0 as *mut u32, 1 << TIMER0_IRQ | 1 << ETHERNET_IRQ);
    }
}

/// Processor clock ticks since `init`.
pub fn ticks() -> u64 {
    let primask: u32;
    // SAFETY: reads PRIMASK and masks interrupts, so the wrap count and the counter are read together.
    unsafe { asm!("mrs {0}, PRIMASK", "cpsid i", out(reg) primask) };
    let mut wraps = WRAPS.load(Ordering::Relaxed);
    // SAFETY: SysTick's current-value register and the ICSR, read only.
    let mut current = unsafe { read_volatile(SYST_CVR as *const u32) };
    // SAFETY: as above.
    if unsafe { read_volatile(SCB_ICSR as *const u32) } & ICSR_PENDSTSET != 0 {
        // Wrapped, and the exception has not counted it yet: count it here and read the counter again (the
        // first read may be from before the wrap).
        wraps += 1;
        // SAFETY: as above.
        current = unsafe { read_volatile(SYST_CVR as *const u32) };
    }
    if primask & 1 == 0 {
        // SAFETY: interrupts were enabled before this function.
        unsafe { asm!("cpsie i") };
    }
    (u64::from(wraps) << 24) + u64::from(SYST_RELOAD - current)
}

/// Time since `init`, for smoltcp.
pub fn now() -> Instant {
    Instant::from_micros((ticks() / TICKS_PER_US) as i64)
}

// --- CMSDK APB timer 0 (ARM CoreLink SDK-101 / AN385: CTRL, VALUE, RELOAD, INTSTATUS/INTCLEAR) ---

const TIMER0: usize = 0x4000_0000;
const TIMER_CTRL: usize = TIMER0;
const TIMER_VALUE: usize = TIMER0 + 0x04;
const TIMER_RELOAD: usize = TIMER0 + 0x08;
const TIMER_INTCLEAR: usize = TIMER0 + 0x0C;
const TIMER_CTRL_ENABLE: u32 = 1 << 0;
const TIMER_CTRL_IRQ_ENABLE: u32 = 1 << 3;

fn stop_timer0() {
    // SAFETY: TIMER0's registers.
    unsafe {
        write_volatile(TIMER_CTRL as *mut u32, 0);
        write_volatile(TIMER_INTCLEAR as *mut u32, 1);
    }
}

/// Waits in `wfi` until `delay` has passed, a frame is waiting (`lan9118::rx_pending`), or the SysTick wraps.
/// Interrupts are masked while the wait is set up, so an interrupt that comes between the check and `wfi` still
/// ends it (a pending interrupt ends `wfi` even with PRIMASK set); the handlers run once they are unmasked.
pub fn sleep(delay: Duration) {
    let ticks = delay
        .total_micros()
        .saturating_mul(TICKS_PER_US)
        .clamp(1, u64::from(u32::MAX)) as u32;
    // SAFETY: masks interrupts (PRIMASK); the LAN9118's and TIMER0's registers; `wfi` only waits.
    unsafe {
        asm!("cpsid i");
        lan9118::unmask_interrupt();
        if !lan9118::rx_pending() {
            write_volatile(TIMER_RELOAD as *mut u32, ticks);
            write_volatile(TIMER_VALUE as *mut u32, ticks);
            write_volatile(
                TIMER_CTRL as *mut u32,
                TIMER_CTRL_ENABLE | TIMER_CTRL_IRQ_ENABLE,
            );
            asm!("wfi");
        }
        asm!("cpsie i");
    }
    stop_timer0();
}

// --- Stack ---

extern "C" {
    static _stack_bottom: u8;
    static _stack_start: u8;
}

/// cortex-m-rt's `paint-stack` value.
#[cfg_attr(not(feature = "full"), allow(dead_code))] // status lines: the full build
const STACK_PAINT: u32 = 0xCCCC_CCCC;

/// The most stack used so far, in bytes, of the 64 KiB below the top of RAM (memory.x): the deepest word that
/// no longer holds the paint tells.
#[cfg_attr(not(feature = "full"), allow(dead_code))] // status lines: the full build
pub fn stack_high_water() -> usize {
    // Linker symbols: only their addresses are used.
    let (bottom, top) = (
        &raw const _stack_bottom as usize,
        &raw const _stack_start as usize,
    );
    let mut addr = bottom;
    // SAFETY: RAM, word-aligned; words below the stack pointer are only read.
    while addr < top && unsafe { read_volatile(addr as *const u32) } == STACK_PAINT {
        addr += 4;
    }
    top - addr
}

/// The stack's size in bytes (memory.x's `_stack_size`).
#[cfg_attr(not(feature = "full"), allow(dead_code))] // status lines: the full build
pub fn stack_size() -> usize {
    &raw const _stack_start as usize - &raw const _stack_bottom as usize
}

/// Stops the board for good.
pub fn halt() -> ! {
    loop {
        // SAFETY: masks interrupts and waits: with nothing to wake it, this stays.
        unsafe { asm!("cpsid i", "wfi") };
    }
}

#[exception]
unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
    // Without `core::fmt`, which the lean build does not carry.
    let mut uart = Uart;
    uart.bytes(b"smoltalk firmware: HARD FAULT pc=");
    uart.hex(frame.pc() as usize);
    uart.bytes(b" lr=");
    uart.hex(frame.lr() as usize);
    uart.bytes(b"\n");
    halt()
}

// --- CMSDK APB UART0 (ARM CoreLink SDK-101: DATA, STATE, CTRL, BAUDDIV) ---

const UART0: usize = 0x4000_4000;
const UART_DATA: usize = UART0;
const UART_STATE: usize = UART0 + 0x04;
const UART_CTRL: usize = UART0 + 0x08;
const UART_BAUDDIV: usize = UART0 + 0x10;
const UART_STATE_TX_FULL: u32 = 1 << 0;
const UART_CTRL_TX_ENABLE: u32 = 1 << 0;

/// UART0, output only.
pub struct Uart;

impl Uart {
    /// Enables the transmitter at 115,200 baud.
    pub fn init() {
        // SAFETY: UART0's registers.
        unsafe {
            write_volatile(UART_BAUDDIV as *mut u32, (CLOCK_HZ / 115_200) as u32);
            write_volatile(UART_CTRL as *mut u32, UART_CTRL_TX_ENABLE);
        }
    }

    /// Writes `s` and a line end, without `core::fmt` (the lean build has none).
    pub fn line(&mut self, s: &str) {
        self.bytes(s.as_bytes());
        self.bytes(b"\n");
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if byte == b'\n' {
                put(b'\r');
            }
            put(byte);
        }
    }

    /// Writes `value` as `0x` and hexadecimal digits (no leading zeros).
    pub fn hex(&mut self, value: usize) {
        let mut digits = [0u8; 2 + 2 * core::mem::size_of::<usize>()];
        let mut at = digits.len();
        let mut rest = value;
        loop {
            at -= 1;
            digits[at] = b"0123456789abcdef"[rest & 0xf];
            rest >>= 4;
            if rest == 0 {
                break;
            }
        }
        at -= 2;
        digits[at] = b'0';
        digits[at + 1] = b'x';
        self.bytes(&digits[at..]);
    }
}

impl fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

fn put(byte: u8) {
    // SAFETY: UART0's registers.
    unsafe {
        while read_volatile(UART_STATE as *const u32) & UART_STATE_TX_FULL != 0 {}
        write_volatile(UART_DATA as *mut u32, u32::from(byte));
    }
}

#[cfg_attr(not(feature = "full"), allow(dead_code))] // logging: the full build
struct UartLogger;

impl log::Log for UartLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let _ = fmt::Write::write_fmt(
                &mut Uart,
                format_args!("[{}] {}\n", record.level(), record.args()),
            );
        }
    }
    fn flush(&self) {}
}

#[cfg_attr(not(feature = "full"), allow(dead_code))] // logging: the full build
static LOGGER: UartLogger = UartLogger;

/// Sends `log` records at info level and above (the core's connection lines, the driver's notes) to the UART.
#[cfg_attr(not(feature = "full"), allow(dead_code))] // logging: the full build
pub fn init_logger() {
    // `log`'s `set_logger` needs atomic compare-and-swap, which the Cortex-M3 has.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

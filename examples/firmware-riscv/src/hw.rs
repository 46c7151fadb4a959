//! The QEMU `virt` machine, bare: entry code, UART 16550, CLINT timer, PLIC, and a `log` backend.

use core::arch::{asm, global_asm};
use core::fmt;
use core::ptr::{read_volatile, write_volatile};

use smoltcp::time::{Duration, Instant};

// Entry at 0x8000_0000 (first in `.text`, see link.x). Hart 0 sets up the FPU (the target's ABI is lp64d),
// gp, the stack (painted with a pattern, for `stack_high_water`), clears `.bss` and calls `rust_main`; any other hart parks. Traps are never enabled; `mtvec`
// points at a stop loop so an unexpected exception halts visibly instead of jumping to address 0.
global_asm!(
    r#"
    .section .text.entry, "ax"
    .globl _start
_start:
    csrr    t0, mhartid
    bnez    t0, 9f
    li      t0, 0x2000
    csrs    mstatus, t0
    csrw    mie, zero
    la      t0, _trap
    csrw    mtvec, t0
    .option push
    .option norelax
    la      gp, __global_pointer$
    .option pop
    la      sp, _stack_top
    la      t0, _stack_bottom
    li      t1, 0x5a5a5a5a5a5a5a5a
0:  bgeu    t0, sp, 4f
    sd      t1, 0(t0)
    addi    t0, t0, 8
    j       0b
4:  la      t0, _sbss
    la      t1, _ebss
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:  call    rust_main
9:  wfi
    j       9b

    .balign 4
_trap:
    call    trap_handler
    "#
);

#[no_mangle]
extern "C" fn trap_handler() -> ! {
    let (cause, epc, tval): (usize, usize, usize);
    // SAFETY: reading machine-mode CSRs has no side effects.
    unsafe {
        asm!("csrr {0}, mcause", "csrr {1}, mepc", "csrr {2}, mtval", out(reg) cause, out(reg) epc, out(reg) tval);
    }
    // Without `core::fmt`, which the lean build does not carry.
    let mut uart = Uart;
    uart.bytes(b"smoltalk firmware: TRAP");
    for (label, value) in [(" mcause=", cause), (" mepc=", epc), (" mtval=", tval)] {
        uart.bytes(label.as_bytes());
        uart.hex(value);
    }
    uart.bytes(b"\n");
    halt()
}

extern "C" {
    static _stack_bottom: u8;
    static _stack_top: u8;
}

#[cfg_attr(not(feature = "full"), allow(dead_code))] // status lines and logging: the full build
const STACK_PAINT: u64 = 0x5a5a_5a5a_5a5a_5a5a;

/// The most stack used so far, in bytes: the entry code painted it, and the deepest overwritten word tells.
#[cfg_attr(not(feature = "full"), allow(dead_code))] // status lines and logging: the full build
pub fn stack_high_water() -> usize {
    // Linker symbols: only their addresses are used.
    let (bottom, top) = (
        &raw const _stack_bottom as usize,
        &raw const _stack_top as usize,
    );
    let mut addr = bottom;
    // SAFETY: the stack region is RAM, 8-byte aligned; words below the current stack pointer are only read.
    while addr < top && unsafe { read_volatile(addr as *const u64) } == STACK_PAINT {
        addr += 8;
    }
    top - addr
}

/// The stack's size in bytes.
#[cfg_attr(not(feature = "full"), allow(dead_code))] // status lines and logging: the full build
pub fn stack_size() -> usize {
    &raw const _stack_top as usize - &raw const _stack_bottom as usize
}

/// Stops this hart for good.
pub fn halt() -> ! {
    loop {
        // SAFETY: `wfi` only waits; with interrupts off this loops forever.
        unsafe { asm!("csrw mie, zero", "wfi") };
    }
}

const UART: usize = 0x1000_0000;
const UART_LSR: usize = UART + 5;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// The 16550 UART at 0x1000_0000 (QEMU's needs no setup: output only).
pub struct Uart;

impl Uart {
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
}

impl Uart {
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
    // SAFETY: the UART's registers, identity-mapped in M-mode.
    unsafe {
        while read_volatile(UART_LSR as *const u8) & LSR_THR_EMPTY == 0 {}
        write_volatile(UART as *mut u8, byte);
    }
}

#[cfg_attr(not(feature = "full"), allow(dead_code))] // status lines and logging: the full build
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

#[cfg_attr(not(feature = "full"), allow(dead_code))] // status lines and logging: the full build
static LOGGER: UartLogger = UartLogger;

/// Sends `log` records at info level and above (the core's connection lines, the driver's notes) to the UART.
#[cfg_attr(not(feature = "full"), allow(dead_code))] // status lines and logging: the full build
pub fn init_logger() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

const CLINT_MTIMECMP0: usize = 0x0200_4000;
const CLINT_MTIME: usize = 0x0200_BFF8;
/// `mtime` ticks per microsecond (10 MHz on QEMU virt).
const TICKS_PER_US: u64 = 10;

const MIE_MTIE: usize = 1 << 7;
const MIE_MEIE: usize = 1 << 11;

/// The CLINT's `mtime` counter.
pub fn mtime() -> u64 {
    // SAFETY: a 64-bit read of the CLINT's mtime register.
    unsafe { read_volatile(CLINT_MTIME as *const u64) }
}

/// Time since reset, for smoltcp.
pub fn now() -> Instant {
    Instant::from_micros((mtime() / TICKS_PER_US) as i64)
}

/// Waits in `wfi` until `delay` has passed or the device interrupt is pending. Interrupts are only *enabled*
/// in `mie` (a pending one ends `wfi`), never taken: mstatus.MIE stays 0, so no trap handler is involved.
pub fn sleep(delay: Duration) {
    let ticks = delay.total_micros().saturating_mul(TICKS_PER_US).max(1);
    // SAFETY: CLINT registers and the mie CSR of this hart.
    unsafe {
        write_volatile(CLINT_MTIMECMP0 as *mut u64, mtime().saturating_add(ticks));
        asm!("csrs mie, {0}", "wfi", in(reg) MIE_MTIE);
        // Clear the timer interrupt: mtip falls once mtimecmp is beyond mtime.
        write_volatile(CLINT_MTIMECMP0 as *mut u64, u64::MAX);
    }
}

const PLIC: usize = 0x0c00_0000;
/// Hart 0, M-mode is PLIC context 0 on QEMU virt.
const PLIC_ENABLE0: usize = PLIC + 0x2000;
const PLIC_THRESHOLD0: usize = PLIC + 0x20_0000;
const PLIC_CLAIM0: usize = PLIC + 0x20_0004;

/// Routes interrupt source `irq` to hart 0 (M-mode) so that it ends `wfi`.
pub fn enable_device_irq(irq: u32) {
    // SAFETY: PLIC registers for context 0, and the mie CSR.
    unsafe {
        write_volatile((PLIC + 4 * irq as usize) as *mut u32, 1);
        let enable = (PLIC_ENABLE0 + 4 * (irq as usize / 32)) as *mut u32;
        write_volatile(enable, read_volatile(enable) | 1 << (irq % 32));
        write_volatile(PLIC_THRESHOLD0 as *mut u32, 0);
        asm!("csrs mie, {0}", in(reg) MIE_MEIE);
    }
}

/// Claims and completes whatever the PLIC has pending for hart 0 (after the device itself was acknowledged),
/// so meip falls and the next `wfi` really waits.
pub fn complete_device_irq(_irq: u32) {
    // SAFETY: PLIC claim/complete register of context 0.
    unsafe {
        for _ in 0..8 {
            let claimed = read_volatile(PLIC_CLAIM0 as *const u32);
            if claimed == 0 {
                break;
            }
            write_volatile(PLIC_CLAIM0 as *mut u32, claimed);
        }
    }
}

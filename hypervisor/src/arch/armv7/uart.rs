//! PL011 UART, transmit side: the hypervisor's console.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};

static BASE: AtomicU32 = AtomicU32::new(0);
const DR: usize = 0x00;
const FR: usize = 0x18;
const FR_TXFF: u32 = 1 << 5;

/// # Safety
/// `base` must be a PL011's register block mapped as device memory, which
/// nothing else uses: every function here then accesses its registers.
pub unsafe fn init(base: u32) {
    BASE.store(base, Ordering::Relaxed);
}

/// Writes one byte if the transmit FIFO has room (never waits). Callers
/// serialise (the console's drainer). Before `init`, bytes are discarded.
pub fn try_put(b: u8) -> bool {
    let base = BASE.load(Ordering::Relaxed) as usize;
    if base == 0 {
        return true;
    }
    // SAFETY: `base` is a PL011 mapped as device memory (`init`'s contract);
    // FR and DR are its flag and data registers.
    unsafe {
        if read_volatile((base + FR) as *const u32) & FR_TXFF != 0 {
            return false;
        }
        write_volatile((base + DR) as *mut u32, b as u32);
    }
    true
}

const IMSC: usize = 0x38;
const ICR: usize = 0x44;
const FR_RXFE: u32 = 1 << 4;
const IM_RX: u32 = (1 << 4) | (1 << 6); // RXIM | RTIM

/// Interrupts on received data (console input for the VMs).
pub fn enable_rx_interrupt() {
    let base = BASE.load(Ordering::Relaxed) as usize;
    if base != 0 {
        // SAFETY: IMSC/ICR of the PL011 `init` was given.
        unsafe {
            write_volatile((base + ICR) as *mut u32, 0x7ff);
            write_volatile((base + IMSC) as *mut u32, IM_RX);
        }
    }
}

/// One received byte, if any.
pub fn read_byte() -> Option<u8> {
    let base = BASE.load(Ordering::Relaxed) as usize;
    if base == 0 {
        return None;
    }
    // SAFETY: FR and DR of the PL011 `init` was given; reading DR pops the FIFO.
    unsafe {
        if read_volatile((base + FR) as *const u32) & FR_RXFE != 0 {
            return None;
        }
        Some(read_volatile((base + DR) as *const u32) as u8)
    }
}

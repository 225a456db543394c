//! PL011 UART, transmit side: the hypervisor's console.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};

static BASE: AtomicU32 = AtomicU32::new(0);
const DR: usize = 0x00;
const FR: usize = 0x18;
const FR_TXFF: u32 = 1 << 5;

pub fn init(base: u32) {
    BASE.store(base, Ordering::Relaxed);
}

/// Writes bytes, waiting while the transmit FIFO is full. Callers serialise
/// (the console lock).
pub fn write(bytes: &[u8]) {
    let base = BASE.load(Ordering::Relaxed) as usize;
    if base == 0 {
        return;
    }
    for &b in bytes {
        // SAFETY: `base` is the PL011 the DTB named, mapped as device memory;
        // FR and DR are its flag and data registers.
        unsafe {
            while read_volatile((base + FR) as *const u32) & FR_TXFF != 0 {}
            write_volatile((base + DR) as *mut u32, b as u32);
        }
    }
}

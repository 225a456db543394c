//! QEMU's pvpanic PCI device (`-device pvpanic-pci`): a hypervisor failure
//! ends QEMU with a failure status (`-action panic=exit-failure`). Absent on
//! real boards, where a failure powers the system off instead.

use super::psci;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};

static PVPANIC: AtomicU32 = AtomicU32::new(0);

/// Finds the pvpanic function on bus 0 of the PCIe ECAM at `ecam` and
/// gives it a BAR at `window` (the host bridge's first 32-bit MMIO window).
///
/// # Safety
/// `ecam` must be the board's ECAM configuration space and `window` an
/// unused part of its MMIO window, both mapped as device memory.
pub unsafe fn probe(ecam: u32, window: u32) {
    for dev in 0..32u32 {
        let cfg = (ecam + (dev << 15)) as usize;
        // SAFETY: ECAM config space of bus 0 (function contract); reads of
        // absent functions return all ones.
        let id = unsafe { read_volatile(cfg as *const u32) };
        if id == 0x0011_1b36 {
            // SAFETY: BAR0 and COMMAND of the pvpanic function just found.
            unsafe {
                write_volatile((cfg + 0x10) as *mut u32, window);
                write_volatile((cfg + 0x04) as *mut u32, 0x2); // memory space enable
            }
            PVPANIC.store(window, Ordering::Relaxed);
            return;
        }
    }
}

/// Ends the system after a hypervisor failure: pvpanic if present (QEMU then
/// exits non-zero), else firmware SYSTEM_OFF.
pub fn fail() -> ! {
    let bar = PVPANIC.load(Ordering::Relaxed);
    if bar != 0 {
        // SAFETY: the pvpanic event register, set up by `probe`.
        unsafe { write_volatile(bar as usize as *mut u8, 1) }; // PVPANIC_PANICKED
    }
    psci::system_off()
}

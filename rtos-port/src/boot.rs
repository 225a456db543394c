//! What Tessera told the guest at boot: the command line in the DTB whose
//! address was in r2 (`/chosen/bootargs`), and its virtio-mmio devices.

use crate::ffi;

fn fdt() -> Option<fdt::Fdt<'static>> {
    // SAFETY: reading a word the port's boot code wrote before `main`.
    let dtb = unsafe { ffi::ulPortBootDtb() };
    if dtb == 0 {
        return None;
    }
    // SAFETY: Tessera generated a DTB at this address in our RAM and nothing
    // writes it; it lives as long as the VM.
    unsafe { fdt::Fdt::from_ptr(dtb as usize as *const u8) }.ok()
}

/// The kernel command line from `/chosen/bootargs`.
pub fn bootargs() -> &'static str {
    fdt().and_then(|f| f.chosen().bootargs()).unwrap_or("")
}

/// `key=value` from the command line.
pub fn arg(key: &str) -> Option<&'static str> {
    bootargs().split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

pub fn arg_u32(key: &str, default: u32) -> u32 {
    arg(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The base address of the first `virtio,mmio` device the DTB lists.
pub fn virtio_mmio_base() -> Option<usize> {
    let f = fdt()?;
    let node = f.find_compatible(&["virtio,mmio"])?;
    Some(node.reg()?.next()?.starting_address as usize)
}

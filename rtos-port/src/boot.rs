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

/// A shared-memory channel the DTB lists (`tessera,channel`).
#[derive(Clone, Copy, Debug)]
pub struct Channel {
    pub base: usize,
    pub size: usize,
    pub id: u32,
    /// Its doorbell's interrupt ID (32 + the SPI).
    pub intid: u32,
}

/// The channel called `name`, if this VM maps it.
pub fn channel(name: &str) -> Option<Channel> {
    let f = fdt()?;
    let node = f
        .all_nodes()
        .filter(|n| n.compatible().is_some_and(|c| c.all().any(|c| c == "tessera,channel")))
        .find(|n| n.property("tessera,channel-name").and_then(|p| p.as_str()) == Some(name))?;
    let reg = node.reg()?.next()?;
    let id = node.property("tessera,channel-id")?.as_usize()? as u32;
    // Three cells: SPI, number, flags.
    let irq = node.property("interrupts")?.value;
    let spi = u32::from_be_bytes(irq.get(4..8)?.try_into().ok()?);
    Some(Channel { base: reg.starting_address as usize, size: reg.size?, id, intid: 32 + spi })
}

/// The base address of the first `virtio,mmio` device the DTB lists.
pub fn virtio_mmio_base() -> Option<usize> {
    let f = fdt()?;
    let node = f.find_compatible(&["virtio,mmio"])?;
    Some(node.reg()?.next()?.starting_address as usize)
}

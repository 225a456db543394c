//! QEMU `virt` (virtualization=on, highmem=off). Addresses come from the DTB
//! QEMU generates; the constants below are only where the boot contract
//! with the packer puts things.

/// Where QEMU places the DTB for an ELF image: the start of RAM.
pub const DTB_DEFAULT: u32 = 0x4000_0000;
/// Where the packer places the boot payload.
pub const PAYLOAD_BASE: u32 = tessera_payload::PAYLOAD_BASE;

/// What the hypervisor needs from the host DTB.
pub struct Board {
    pub ram_base: u64,
    pub ram_size: u64,
    pub cpu_mpidrs: [u32; crate::arch::MAX_CPUS],
    pub cpus: usize,
    pub uart: u32,
    /// The UART's interrupt ID (from its `interrupts` property).
    pub uart_irq: u32,
    pub gicd: u32,
    pub gicc: u32,
    pub gich: u32,
    pub gicv: u32,
    pub pcie_ecam: Option<(u32, u32)>, // ECAM base, first 32-bit MMIO window
    /// virtio-mmio register windows (QEMU has 32, most empty).
    pub virtio: [u32; 32],
    pub virtio_count: usize,
}

fn reg_base(node: &fdt::node::FdtNode<'_, '_>, i: usize) -> Option<u32> {
    node.reg()?.nth(i).map(|r| r.starting_address as usize as u32)
}

/// Reads the board from the DTB at `addr`.
///
/// # Safety
/// `addr` must point at a readable flattened device tree.
pub unsafe fn read_board(addr: u32) -> Result<Board, &'static str> {
    // SAFETY: forwarded to the caller.
    let fdt = unsafe { fdt::Fdt::from_ptr(addr as usize as *const u8) }.map_err(|_| "no valid device tree")?;
    let mem = fdt.memory().regions().next().ok_or("device tree has no memory node")?;
    let mut b = Board {
        ram_base: mem.starting_address as usize as u64,
        ram_size: mem.size.ok_or("memory node without size")? as u64,
        cpu_mpidrs: [0; crate::arch::MAX_CPUS],
        cpus: 0,
        uart: 0,
        uart_irq: 33,
        gicd: 0,
        gicc: 0,
        gich: 0,
        gicv: 0,
        pcie_ecam: None,
        virtio: [0; 32],
        virtio_count: 0,
    };
    for cpu in fdt.cpus() {
        if b.cpus < b.cpu_mpidrs.len() {
            b.cpu_mpidrs[b.cpus] = cpu.ids().first() as u32;
            b.cpus += 1;
        }
    }
    let uart = fdt.find_compatible(&["arm,pl011"]).ok_or("device tree has no PL011")?;
    b.uart = reg_base(&uart, 0).ok_or("PL011 without reg")?;
    // interrupts = <type number flags>; type 0 = SPI (INTID 32 + number).
    if let Some(p) = uart.property("interrupts") {
        if p.value.len() >= 8 && p.value[..4] == [0; 4] {
            b.uart_irq = 32 + u32::from_be_bytes([p.value[4], p.value[5], p.value[6], p.value[7]]);
        }
    }
    let gic = fdt.find_compatible(&["arm,cortex-a15-gic", "arm,gic-400"]).ok_or("device tree has no GICv2")?;
    b.gicd = reg_base(&gic, 0).ok_or("GIC without distributor")?;
    b.gicc = reg_base(&gic, 1).ok_or("GIC without CPU interface")?;
    b.gich = reg_base(&gic, 2).ok_or("GIC without virtualization extensions (no GICH)")?;
    b.gicv = reg_base(&gic, 3).ok_or("GIC without virtualization extensions (no GICV)")?;
    for node in fdt.all_nodes().filter(|n| n.compatible().is_some_and(|c| c.all().any(|s| s == "virtio,mmio"))) {
        if let Some(base) = reg_base(&node, 0) {
            if b.virtio_count < b.virtio.len() {
                b.virtio[b.virtio_count] = base;
                b.virtio_count += 1;
            }
        }
    }
    if let Some(pci) = fdt.find_compatible(&["pci-host-ecam-generic"]) {
        let ecam = reg_base(&pci, 0);
        // ranges: <pci-addr(3 cells) cpu-addr(2) size(2)>; find 32-bit MMIO (space 0b10).
        let mmio = pci.property("ranges").and_then(|p| {
            p.value.chunks_exact(28).find_map(|c| {
                let cell = |i: usize| u32::from_be_bytes([c[4 * i], c[4 * i + 1], c[4 * i + 2], c[4 * i + 3]]);
                (cell(0) >> 24 & 3 == 2 && cell(3) == 0).then(|| cell(4))
            })
        });
        if let (Some(e), Some(m)) = (ecam, mmio) {
            b.pcie_ecam = Some((e, m));
        }
    }
    Ok(b)
}

/// Gives QEMU's pvpanic device (if the board has one) its BAR, so a
/// hypervisor failure ends QEMU with a failure status.
pub fn probe_pvpanic(board: &Board) {
    if let Some((ecam, window)) = board.pcie_ecam {
        // SAFETY: both come from the host DTB's PCIe host bridge node: its
        // ECAM and the start of its first 32-bit MMIO window, which nothing
        // else uses (the hypervisor drives no other PCI device).
        unsafe { crate::arch::boot::probe_pvpanic(ecam, window) }
    }
}

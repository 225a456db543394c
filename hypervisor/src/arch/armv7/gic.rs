//! The physical GICv2 (distributor and CPU interface): the hypervisor owns
//! it. Guests never see these registers; with HCR.IMO every physical IRQ
//! taken while a guest runs exits to HYP, where the hypervisor acknowledges it.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

static GICD: AtomicU32 = AtomicU32::new(0);
static GICC: AtomicU32 = AtomicU32::new(0);
/// GIC CPU-interface bit of each pCPU (read from the banked ITARGETSR0).
static CPU_MASK: [AtomicU8; super::entry::MAX_CPUS] = [const { AtomicU8::new(0) }; super::entry::MAX_CPUS];

const GICD_CTLR: usize = 0x000;
const GICD_TYPER: usize = 0x004;
const GICD_ISENABLER: usize = 0x100;
const GICD_ICENABLER: usize = 0x180;
const GICD_IPRIORITYR: usize = 0x400;
const GICD_ITARGETSR: usize = 0x800;
const GICD_SGIR: usize = 0xf00;
const GICC_CTLR: usize = 0x00;
const GICC_PMR: usize = 0x04;
const GICC_IAR: usize = 0x0c;
const GICC_EOIR: usize = 0x10;

use crate::arch::irq::{PPI_HYP_TIMER, SGI_KICK};

fn rd(base: &AtomicU32, off: usize) -> u32 {
    // SAFETY: the base is the GIC block the DTB named (set by the `unsafe`
    // init functions, whose contract it is), identity-mapped as device
    // memory; the offsets are registers of that block.
    unsafe { read_volatile((base.load(Ordering::Relaxed) as usize + off) as *const u32) }
}

fn wr(base: &AtomicU32, off: usize, v: u32) {
    // SAFETY: as in `rd`.
    unsafe { write_volatile((base.load(Ordering::Relaxed) as usize + off) as *mut u32, v) }
}

/// Boot CPU: the distributor, with every shared interrupt disabled.
///
/// # Safety
/// `gicd` and `gicc` must be the board's GICv2 distributor and CPU
/// interface, mapped as device memory: every other function here then
/// accesses registers of those blocks.
pub unsafe fn init_distributor(gicd: u32, gicc: u32) {
    GICD.store(gicd, Ordering::Relaxed);
    GICC.store(gicc, Ordering::Relaxed);
    wr(&GICD, GICD_CTLR, 0);
    let lines = 32 * ((rd(&GICD, GICD_TYPER) & 0x1f) + 1) as usize;
    for i in (32..lines).step_by(32) {
        wr(&GICD, GICD_ICENABLER + i / 8, !0);
    }
    for i in (32..lines).step_by(4) {
        wr(&GICD, GICD_IPRIORITYR + i, 0xa0a0_a0a0);
    }
    wr(&GICD, GICD_CTLR, 1);
}

/// Every pCPU: its CPU interface, SGIs and the HYP timer PPI.
pub fn init_cpu(cpu: usize) {
    CPU_MASK[cpu].store(rd(&GICD, GICD_ITARGETSR) as u8, Ordering::Relaxed);
    for i in (0..32).step_by(4) {
        wr(&GICD, GICD_IPRIORITYR + i, 0x8080_8080);
    }
    wr(&GICD, GICD_ISENABLER, (1 << SGI_KICK) | (1 << PPI_HYP_TIMER));
    wr(&GICC, GICC_PMR, 0xf0);
    wr(&GICC, GICC_CTLR, 1);
}

/// Acknowledges the highest-priority pending interrupt (SPURIOUS if none).
/// Returns the raw IAR value to hand back to `eoi`.
pub fn ack() -> u32 {
    rd(&GICC, GICC_IAR)
}

pub fn eoi(iar: u32) {
    wr(&GICC, GICC_EOIR, iar);
}

/// Sends the kick SGI to one pCPU.
pub fn kick(cpu: u32) {
    let mask = CPU_MASK.get(cpu as usize).map_or(0, |m| m.load(Ordering::Relaxed));
    if mask != 0 {
        aarch32_cpu::asm::dsb();
        wr(&GICD, GICD_SGIR, (mask as u32) << 16 | SGI_KICK);
    }
}

const GICD_ISENABLER0: usize = GICD_ISENABLER;
const GICD_ICENABLER0: usize = GICD_ICENABLER;

/// Enables a private (SGI/PPI) interrupt on the calling pCPU.
pub fn enable_private(id: u32) {
    wr(&GICD, GICD_ISENABLER0, 1 << id);
}

/// Disables a private interrupt on the calling pCPU.
pub fn disable_private(id: u32) {
    wr(&GICD, GICD_ICENABLER0, 1 << id);
}

/// Routes a shared interrupt to one pCPU and enables it.
pub fn enable_spi(id: u32, cpu: u32) {
    let mask = CPU_MASK.get(cpu as usize).map_or(1, |m| m.load(Ordering::Relaxed));
    // SAFETY: a byte of GICD_ITARGETSR, which is byte-accessible (IHI 0048B
    // 4.3.12), in the distributor the DTB named.
    unsafe { write_volatile((GICD.load(Ordering::Relaxed) as usize + GICD_ITARGETSR + id as usize) as *mut u8, mask) };
    wr(&GICD, GICD_ISENABLER + 4 * (id as usize / 32), 1 << (id % 32));
}

/// The hypervisor control interface (GICH), banked per pCPU.
static GICH: AtomicU32 = AtomicU32::new(0);
const GICH_HCR: usize = 0x00;
const GICH_VTR: usize = 0x04;
const GICH_VMCR: usize = 0x08;
const GICH_EISR0: usize = 0x20;
const GICH_EISR1: usize = 0x24;
const GICH_ELRSR0: usize = 0x30;
const GICH_ELRSR1: usize = 0x34;
const GICH_APR: usize = 0xf0;
const GICH_LR0: usize = 0x100;
pub const MAX_LRS: usize = crate::context::MAX_LRS;

/// # Safety
/// `base` must be the board's GICH block (banked per pCPU), mapped as
/// device memory.
pub unsafe fn init_gich(base: u32) {
    GICH.store(base, Ordering::Relaxed);
}

/// The list registers of this pCPU's GICH (how many it has is read once).
pub struct Gich {
    count: usize,
}

impl Gich {
    pub fn new() -> Self {
        Self { count: ((rd(&GICH, GICH_VTR) & 0x3f) as usize + 1).min(MAX_LRS) }
    }
}

impl crate::vgic::ListRegs for Gich {
    fn count(&self) -> usize {
        self.count
    }
    fn read(&self, i: usize) -> u32 {
        rd(&GICH, GICH_LR0 + 4 * i)
    }
    fn write(&mut self, i: usize, v: u32) {
        wr(&GICH, GICH_LR0 + 4 * i, v)
    }
    fn empty(&self) -> u64 {
        rd(&GICH, GICH_ELRSR0) as u64 | (rd(&GICH, GICH_ELRSR1) as u64) << 32
    }
    fn eoied(&self) -> u64 {
        rd(&GICH, GICH_EISR0) as u64 | (rd(&GICH, GICH_EISR1) as u64) << 32
    }
    fn hcr(&self) -> u32 {
        rd(&GICH, GICH_HCR)
    }
    fn set_hcr(&mut self, v: u32) {
        wr(&GICH, GICH_HCR, v)
    }
}

pub use crate::context::GichState;

pub fn save_gich(g: &Gich, s: &mut GichState) {
    s.hcr = rd(&GICH, GICH_HCR);
    s.vmcr = rd(&GICH, GICH_VMCR);
    s.apr = rd(&GICH, GICH_APR);
    for i in 0..g.count {
        s.lr[i] = rd(&GICH, GICH_LR0 + 4 * i);
    }
    wr(&GICH, GICH_HCR, 0);
}

pub fn restore_gich(g: &Gich, s: &GichState) {
    wr(&GICH, GICH_VMCR, s.vmcr);
    wr(&GICH, GICH_APR, s.apr);
    for i in 0..g.count {
        wr(&GICH, GICH_LR0 + 4 * i, s.lr[i]);
    }
    wr(&GICH, GICH_HCR, s.hcr | crate::vgic::hw::HCR_EN);
}

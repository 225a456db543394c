//! HYP-mode stage-1 translation and the per-pCPU HYP configuration.
//!
//! The hypervisor identity-maps the 4 GiB physical space with 1 GiB LPAE
//! blocks (Arm ARM B3.6): RAM as normal write-back memory, the first GiB
//! (devices on QEMU virt) as device memory, never executable. Identity
//! mapping means a `PhysAddr` is directly usable, which is what the frame
//! allocator, stage-2 tables and guest-memory copies rely on.

use super::sysreg::*;
use crate::mm::stage2::{self, Vttbr};

#[repr(C, align(4096))]
struct Level1([u64; 4]);

/// Written once by the boot CPU before any other CPU runs; read by the MMU.
static mut HYP_L1: Level1 = Level1([0; 4]);

const VALID_BLOCK: u64 = 0b01;
const ATTR_DEVICE: u64 = 0 << 2; // HMAIR0 attr 0
const ATTR_NORMAL: u64 = 1 << 2; // HMAIR0 attr 1
const AP_RW_PL2: u64 = 1 << 6; // AP[1] is SBO in the PL2 regime; AP[2] = 0: read/write
const SH_INNER: u64 = 0b11 << 8;
const AF: u64 = 1 << 10;
const XN: u64 = 1 << 54;

/// HMAIR0: attr0 = Device-nGnRE, attr1 = Normal write-back read/write-allocate.
const HMAIR0_VALUE: u32 = 0x04 | (0xff << 8);
/// HTCR: T0SZ = 0, inner shareable write-back walks; bits 31 and 23 RES1.
const HTCR_VALUE: u32 = (1 << 31) | (1 << 23) | (0b11 << 12) | (0b01 << 10) | (0b01 << 8);
/// HSCTLR: M, C, I.
const HSCTLR_M: u32 = 1 << 0;
const HSCTLR_C: u32 = 1 << 2;
const HSCTLR_I: u32 = 1 << 12;

/// Builds the HYP tables: RAM `[ram_base, ram_end)` normal, the first GiB
/// device, the rest unmapped. Boot CPU only, before `enable`.
pub fn build_tables(ram_base: u64, ram_end: u64) {
    let mut l1 = [0u64; 4];
    for (i, e) in l1.iter_mut().enumerate() {
        let base = (i as u64) << 30;
        if base < ram_end && base + (1 << 30) > ram_base {
            *e = base | VALID_BLOCK | ATTR_NORMAL | AP_RW_PL2 | SH_INNER | AF;
        } else if i == 0 {
            *e = base | VALID_BLOCK | ATTR_DEVICE | AP_RW_PL2 | AF | XN;
        }
    }
    // SAFETY: only the boot CPU runs now and the MMU is off, so nothing reads
    // the table while it is written.
    unsafe { (&raw mut HYP_L1).write_volatile(Level1(l1)) };
    aarch32_cpu::asm::dsb();
}

/// Turns the HYP MMU and caches on with the tables from `build_tables`.
/// Every pCPU calls this once at start.
pub fn enable() {
    // SAFETY: the tables identity-map all RAM this code, its stack and its
    // data live in, so execution continues at the same addresses once M is
    // set; TLBs are invalidated first so no stale entry is used.
    unsafe {
        HMAIR0::write(HMAIR0_VALUE);
        HTCR::write(HTCR_VALUE);
        HTTBR::write(&raw const HYP_L1 as u64);
        aarch32_cpu::asm::dsb();
        TLBIALLH::write(0);
        aarch32_cpu::asm::dsb();
        aarch32_cpu::asm::isb();
        HSCTLR::write(HSCTLR::read() | HSCTLR_M | HSCTLR_C | HSCTLR_I);
    }
    aarch32_cpu::asm::isb();
}

/// HCR bits for running guests (Arm ARM B4.1.65).
const HCR_VM: u32 = 1 << 0; // stage-2 translation
const HCR_SWIO: u32 = 1 << 1; // set/way invalidate becomes clean+invalidate
const HCR_FMO: u32 = 1 << 3; // FIQs to HYP
const HCR_IMO: u32 = 1 << 4; // IRQs to HYP
const HCR_AMO: u32 = 1 << 5; // asynchronous aborts to HYP
const HCR_FB: u32 = 1 << 9; // broadcast TLB/cache maintenance (SMP guests)
const HCR_BSU_IS: u32 = 1 << 10; // barriers inner shareable
const HCR_TWI: u32 = 1 << 13; // WFI traps: the pCPU goes to another vCPU
const HCR_TWE: u32 = 1 << 14; // WFE traps: a spinning vCPU yields
const HCR_TSC: u32 = 1 << 19; // SMC traps: guests never reach firmware
const HCR_TAC: u32 = 1 << 21; // ACTLR accesses trap

pub const HCR_GUEST: u32 =
    HCR_VM | HCR_SWIO | HCR_FMO | HCR_IMO | HCR_AMO | HCR_FB | HCR_BSU_IS | HCR_TWI | HCR_TWE | HCR_TSC | HCR_TAC;

/// CNTHCTL: PL1 may read the physical counter (PL1PCTEN) but not use the
/// physical timer (PL1PCEN = 0): guests get the virtual timer.
const CNTHCTL_VALUE: u32 = 1 << 0;

/// Per-pCPU HYP configuration for running guests.
pub fn init_hyp_regs() {
    // SAFETY: these registers only configure how guests are trapped and
    // translated; no guest runs on this pCPU yet.
    unsafe {
        HCR::write(HCR_GUEST);
        HSTR::write(0);
        CNTHCTL::write(CNTHCTL_VALUE);
        CNTVOFF::write(0);
        VTCR::write(stage2::VTCR);
        VPIDR::write(MIDR::read());
    }
    // Guest VFP use traps until the first vCPU's state is loaded (lazy switch).
    super::vfp::trap_guest_fp(true);
}

/// Loads a vCPU's address space and identity.
pub fn load_vcpu_space(vttbr: Vttbr, vmpidr: u32) {
    // SAFETY: a `Vttbr` only comes from the stage-2 builder, so it points at
    // translation tables the hypervisor built and never frees; VMPIDR only
    // changes what the guest reads as MPIDR. Entries are tagged by VMID, so
    // no TLB maintenance is needed on a switch.
    unsafe {
        VTTBR::write(vttbr.raw());
        VMPIDR::write(vmpidr);
    }
    aarch32_cpu::asm::isb();
}

/// Cleans a range to the point of coherency, so a guest that starts with
/// its MMU and caches off sees the image the hypervisor wrote through its
/// caches; then invalidates the instruction caches.
pub fn clean_dcache_range(start: usize, len: usize) {
    let line = 4usize << ((CTR::read() >> 16) & 0xf);
    let mut a = start & !(line - 1);
    while a < start + len {
        // SAFETY: cleaning a cache line has no architectural effect on data.
        unsafe { DCCMVAC::write(a as u32) };
        a += line;
    }
    aarch32_cpu::asm::dsb();
    // SAFETY: invalidating instruction caches has no effect but cost.
    unsafe { ICIALLUIS::write(0) };
    aarch32_cpu::asm::dsb();
    aarch32_cpu::asm::isb();
}

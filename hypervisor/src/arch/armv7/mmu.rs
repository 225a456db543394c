//! HYP-mode stage-1 translation and the per-pCPU HYP configuration.
//!
//! The hypervisor identity-maps the 4 GiB physical space with LPAE tables
//! (Arm ARM B3.6): RAM as normal write-back memory, the first GiB (devices
//! on QEMU virt) as device memory. Only the hypervisor's own code is
//! executable, and it is read-only (4 KiB pages); everything else (its
//! data, guest RAM, devices) is never executable, and HSCTLR.WXN makes
//! the hardware hold to "writable means not executable". Identity mapping
//! means a `PhysAddr` is directly usable, which is what the frame
//! allocator, stage-2 tables and guest-memory copies rely on.

use super::sysreg::*;
use crate::mm::stage2::{self, Vttbr};

#[repr(C, align(4096))]
struct Level1([u64; 4]);

#[repr(C, align(4096))]
struct Table([u64; 512]);

/// Written once by the boot CPU before any other CPU runs; read by the MMU.
static mut HYP_L1: Level1 = Level1([0; 4]);
/// The GiB of RAM the hypervisor lives in, in 2 MiB blocks, and the block
/// its code is in, in 4 KiB pages.
static mut HYP_L2: Table = Table([0; 512]);
static mut HYP_L3: Table = Table([0; 512]);

unsafe extern "C" {
    /// The hypervisor's code, page-aligned by `link.x`.
    static __text_start: u8;
    static __text_end: u8;
}

const VALID_BLOCK: u64 = 0b01;
const VALID_TABLE: u64 = 0b11;
/// A level-3 page descriptor.
const VALID_PAGE: u64 = 0b11;
const AP_RO: u64 = 1 << 7; // AP[2]: read-only
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
/// HSCTLR: M, C, I, WXN.
const HSCTLR_M: u32 = 1 << 0;
const HSCTLR_C: u32 = 1 << 2;
const HSCTLR_I: u32 = 1 << 12;
const HSCTLR_WXN: u32 = 1 << 19;

const NORMAL_RW: u64 = ATTR_NORMAL | AP_RW_PL2 | SH_INNER | AF | XN;
const NORMAL_RX: u64 = ATTR_NORMAL | AP_RW_PL2 | AP_RO | SH_INNER | AF;

/// Builds the HYP tables: RAM `[ram_base, ram_end)` normal (the
/// hypervisor's code read-only and executable, the rest writable and never
/// executable), the first GiB device, the rest unmapped. Boot CPU only,
/// before `enable`. Panics if the code is not in RAM or spans more than
/// one 2 MiB block (a link-map bug).
pub fn build_tables(ram_base: u64, ram_end: u64) {
    let (text_start, text_end) = (&raw const __text_start as u64, &raw const __text_end as u64);
    let block = text_start & !((2 << 20) - 1);
    assert!(text_end <= block + (2 << 20), "the hypervisor's code spans more than one 2 MiB block");
    let gib = text_start >> 30;
    assert!(text_start >= ram_base && text_end <= ram_end && gib < 4, "the hypervisor's code is not in RAM");
    let mut l3 = [0u64; 512];
    for (k, e) in l3.iter_mut().enumerate() {
        let pa = block + ((k as u64) << 12);
        let attrs = if (text_start..text_end).contains(&pa) { NORMAL_RX } else { NORMAL_RW };
        *e = pa | VALID_PAGE | attrs;
    }
    let mut l2 = [0u64; 512];
    for (k, e) in l2.iter_mut().enumerate() {
        let pa = (gib << 30) + ((k as u64) << 21);
        *e = if pa == block {
            &raw const HYP_L3 as u64 | VALID_TABLE
        } else if pa >= ram_base && pa < ram_end {
            pa | VALID_BLOCK | NORMAL_RW
        } else {
            0
        };
    }
    let mut l1 = [0u64; 4];
    for (i, e) in l1.iter_mut().enumerate() {
        let base = (i as u64) << 30;
        if i as u64 == gib {
            *e = &raw const HYP_L2 as u64 | VALID_TABLE;
        } else if base < ram_end && base + (1 << 30) > ram_base {
            *e = base | VALID_BLOCK | NORMAL_RW;
        } else if i == 0 {
            *e = base | VALID_BLOCK | ATTR_DEVICE | AP_RW_PL2 | AF | XN;
        }
    }
    // SAFETY: only the boot CPU runs now and the MMU is off, so nothing reads
    // the tables while they are written.
    unsafe {
        (&raw mut HYP_L3).write_volatile(Table(l3));
        (&raw mut HYP_L2).write_volatile(Table(l2));
        (&raw mut HYP_L1).write_volatile(Level1(l1));
    }
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
        HSCTLR::write(HSCTLR::read() | HSCTLR_M | HSCTLR_C | HSCTLR_I | HSCTLR_WXN);
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
const HCR_TIDCP: u32 = 1 << 20; // IMPLEMENTATION DEFINED CP15 registers trap
const HCR_TAC: u32 = 1 << 21; // ACTLR accesses trap
const HCR_TSW: u32 = 1 << 22; // set/way cache maintenance traps (the cache is shared)

pub const HCR_GUEST: u32 = HCR_VM
    | HCR_SWIO
    | HCR_FMO
    | HCR_IMO
    | HCR_AMO
    | HCR_FB
    | HCR_BSU_IS
    | HCR_TWI
    | HCR_TWE
    | HCR_TSC
    | HCR_TIDCP
    | HCR_TAC
    | HCR_TSW;

/// HDCR (Arm ARM B4.1.61): the PMU and the debug registers trap, so no VM
/// sees or changes what another left in them (`crate::coproc` says what
/// guests get instead).
const HDCR_TPMCR: u32 = 1 << 5;
const HDCR_TPM: u32 = 1 << 6;
const HDCR_TDA: u32 = 1 << 9;
const HDCR_TDOSA: u32 = 1 << 10;
const HDCR_TDRA: u32 = 1 << 11;
const HDCR_TRAPS: u32 = HDCR_TPMCR | HDCR_TPM | HDCR_TDA | HDCR_TDOSA | HDCR_TDRA;

/// CNTHCTL: PL1 may read the physical counter (PL1PCTEN) but not use the
/// physical timer (PL1PCEN = 0): guests get the virtual timer.
const CNTHCTL_VALUE: u32 = 1 << 0;

/// Per-pCPU HYP configuration for running guests.
pub fn init_hyp_regs() {
    // SAFETY: these registers only configure how guests are trapped and
    // translated; no guest runs on this pCPU yet.
    unsafe {
        HCR::write(HCR_GUEST);
        // HPMN (bits 4:0) keeps its reset value: every counter traps anyway.
        HDCR::write((HDCR::read() & 0x1f) | HDCR_TRAPS);
        // No HSTR traps: with any HSTR bit set, QEMU 7.2 gives a Linux guest
        // spurious translation faults (seen with TTEE alone and with T15
        // alone, though neither trapped anything but TEECR). ThumbEE's
        // registers are switched with the vCPU instead (`el1`); CP15 c15
        // stays untrapped on this board.
        HSTR::write(0);
        CNTHCTL::write(CNTHCTL_VALUE);
        CNTVOFF::write(0);
        VTCR::write(stage2::VTCR);
        VPIDR::write(MIDR::read());
    }
    // Nothing an earlier boot or a boot loader left in this core's TLBs
    // for guest translation regimes may be used.
    aarch32_cpu::asm::dsb();
    // SAFETY: TLB invalidation has no effect but cost.
    unsafe { TLBIALLNSNH::write(0) };
    aarch32_cpu::asm::dsb();
    aarch32_cpu::asm::isb();
    // Guest VFP use traps until the first vCPU's state is loaded (lazy switch).
    super::vfp::trap_guest_fp(true);
}

/// How branch predictors are invalidated on this core when the VM changes,
/// so a VM cannot steer another's speculation (Spectre variant 2): on
/// Cortex-A15 ICIALLU does it (with ACTLR[0], which firmware sets), on
/// Cortex-A12/A17 and the rest BPIALL (as Linux's and KVM's arm32 code do).
#[derive(Clone, Copy, Debug)]
pub enum BranchPredictorFlush {
    Iciallu,
    Bpiall,
}

impl BranchPredictorFlush {
    pub fn for_this_core() -> Self {
        let part = (MIDR::read() >> 4) & 0xfff;
        if part == 0xc0f {
            Self::Iciallu
        } else {
            Self::Bpiall
        }
    }

    pub fn run(self) {
        // SAFETY: invalidating branch predictors or instruction caches has
        // no architectural effect but cost.
        unsafe {
            match self {
                Self::Iciallu => ICIALLU::write(0),
                Self::Bpiall => BPIALL::write(0),
            }
        }
        aarch32_cpu::asm::isb();
    }
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

/// Cleans and invalidates one data-cache line by set/way (DCCISW).
pub fn clean_invalidate_set_way(set_way: u32) {
    // SAFETY: a clean and invalidate loses no data (dirty lines are written
    // back first); any set/way value names some line or none.
    unsafe { DCCISW::write(set_way) };
}

/// Above this many bytes a range is cleaned by set/way instead of by
/// address: a pass over the caches costs the same whatever the range (a
/// 512 MiB VM is 8 M lines by address; the caches here hold a few MiB).
const CLEAN_BY_SET_WAY_ABOVE: usize = 4 << 20;

/// Cleans a range to the point of coherency, so a guest that starts with
/// its MMU and caches off sees the image the hypervisor wrote through its
/// caches; then invalidates the instruction caches.
///
/// A large range is cleaned with [`clean_dcache_all`]: every dirty line of
/// it is in this CPU's caches (the hypervisor just wrote it here; another
/// CPU's copies were invalidated by those writes), so cleaning this CPU's
/// caches entirely cleans the range.
pub fn clean_dcache_range(start: usize, len: usize) {
    if len > CLEAN_BY_SET_WAY_ABOVE {
        clean_dcache_all();
        return;
    }
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

/// Cleans every data and unified cache level of this CPU to the point of
/// coherency by set/way (DCCSW, Arm ARM B4.2.1: CLIDR's levels up to the
/// level of coherency, each level's geometry from CCSIDR), then invalidates
/// the instruction caches.
pub fn clean_dcache_all() {
    aarch32_cpu::asm::dsb();
    let clidr = CLIDR::read();
    let loc = (clidr >> 24) & 7;
    for level in 0..loc {
        // Cache type 2 (data), 3 (separate) or 4 (unified) have data lines.
        if (clidr >> (level * 3)) & 7 < 2 {
            continue;
        }
        // SAFETY: selects the data or unified cache of `level`, which CLIDR
        // says exists; CCSIDR then describes it.
        unsafe { CSSELR::write(level << 1) };
        aarch32_cpu::asm::isb();
        let ccsidr = CCSIDR::read();
        let line_shift = (ccsidr & 7) + 4;
        let ways = ((ccsidr >> 3) & 0x3ff) + 1;
        let sets = ((ccsidr >> 13) & 0x7fff) + 1;
        // The way number sits in the top bits: log2(ways) of them.
        let way_bits = 32 - (ways - 1).leading_zeros();
        for way in 0..ways {
            let w = if way_bits == 0 { 0 } else { way << (32 - way_bits) };
            for set in 0..sets {
                // SAFETY: a clean writes dirty lines back and keeps them;
                // the value names one line of this cache level.
                unsafe { DCCSW::write(w | set << line_shift | level << 1) };
            }
        }
    }
    aarch32_cpu::asm::dsb();
    // SAFETY: invalidating instruction caches has no effect but cost.
    unsafe { ICIALLUIS::write(0) };
    aarch32_cpu::asm::dsb();
    aarch32_cpu::asm::isb();
}

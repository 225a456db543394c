//! Switching the guest PL1 state that stays in the CPU between traps: the
//! banked registers of the other modes and the PL1 system registers. Only
//! needed when a pCPU changes vCPUs, never on the trap path.

use super::sysreg::*;
use crate::context::El1State;
use core::arch::asm;

macro_rules! banked {
    ($($field:ident: $reg:literal),* $(,)?) => {
        fn save_banked(s: &mut El1State) {
            $(
                // SAFETY: reading a banked register (MRS banked, virtualization
                // extensions) from HYP mode has no side effects.
                unsafe { asm!(concat!(".arch_extension virt\nmrs {}, ", $reg), out(reg) s.$field, options(nomem, nostack, preserves_flags)) };
            )*
        }
        fn restore_banked(s: &El1State) {
            $(
                // SAFETY: HYP mode may write any banked register of the guest
                // modes; the guest is not running.
                unsafe { asm!(concat!(".arch_extension virt\nmsr ", $reg, ", {}"), in(reg) s.$field, options(nomem, nostack, preserves_flags)) };
            )*
        }
    };
}

banked! {
    sp_usr: "sp_usr",
    sp_svc: "sp_svc", lr_svc: "lr_svc", spsr_svc: "spsr_svc",
    sp_abt: "sp_abt", lr_abt: "lr_abt", spsr_abt: "spsr_abt",
    sp_und: "sp_und", lr_und: "lr_und", spsr_und: "spsr_und",
    sp_irq: "sp_irq", lr_irq: "lr_irq", spsr_irq: "spsr_irq",
    r8_fiq: "r8_fiq", r9_fiq: "r9_fiq", r10_fiq: "r10_fiq", r11_fiq: "r11_fiq", r12_fiq: "r12_fiq",
    sp_fiq: "sp_fiq", lr_fiq: "lr_fiq", spsr_fiq: "spsr_fiq",
}

pub fn save(s: &mut El1State) {
    save_banked(s);
    s.sctlr = SCTLR::read();
    s.cpacr = CPACR::read();
    s.ttbcr = TTBCR::read();
    s.ttbr0 = TTBR0::read();
    s.ttbr1 = TTBR1::read();
    s.dacr = DACR::read();
    s.dfsr = DFSR::read();
    s.ifsr = IFSR::read();
    s.dfar = DFAR::read();
    s.ifar = IFAR::read();
    s.par = PAR::read();
    s.prrr = PRRR::read();
    s.nmrr = NMRR::read();
    s.vbar = VBAR::read();
    s.contextidr = CONTEXTIDR::read();
    s.tpidrurw = TPIDRURW::read();
    s.tpidruro = TPIDRURO::read();
    s.tpidrprw = TPIDRPRW::read();
    s.csselr = CSSELR::read();
    s.cntkctl = CNTKCTL::read();
    s.cntv_ctl = CNTV_CTL::read();
    s.cntv_cval = CNTV_CVAL::read();
    // The outgoing vCPU's virtual timer must not fire while another runs.
    // SAFETY: disabling the guest's virtual timer; restored by `restore`.
    unsafe { CNTV_CTL::write(0) };
}

pub fn restore(s: &El1State) {
    restore_banked(s);
    // SAFETY: these are the guest's own PL1 registers, which only affect the
    // guest's translation regime and exceptions; the hypervisor runs in HYP
    // with its own (HSCTLR, HTTBR, HVBAR), so no value here can harm it.
    unsafe {
        SCTLR::write(s.sctlr);
        CPACR::write(s.cpacr);
        TTBCR::write(s.ttbcr);
        TTBR0::write(s.ttbr0);
        TTBR1::write(s.ttbr1);
        DACR::write(s.dacr);
        DFSR::write(s.dfsr);
        IFSR::write(s.ifsr);
        DFAR::write(s.dfar);
        IFAR::write(s.ifar);
        PAR::write(s.par);
        PRRR::write(s.prrr);
        NMRR::write(s.nmrr);
        VBAR::write(s.vbar);
        CONTEXTIDR::write(s.contextidr);
        TPIDRURW::write(s.tpidrurw);
        TPIDRURO::write(s.tpidruro);
        TPIDRPRW::write(s.tpidrprw);
        CSSELR::write(s.csselr);
        CNTKCTL::write(s.cntkctl);
        CNTV_CVAL::write(s.cntv_cval);
        CNTV_CTL::write(s.cntv_ctl);
    }
    aarch32_cpu::asm::isb();
}

/// Takes the guest (loaded, trapped) into its Abort mode as a synchronous
/// external abort on `abort` would (Arm ARM B1.9.7, B1.9.8): DFSR/IFSR in
/// the format its TTBCR.EAE selects, DFAR/IFAR, SPSR_abt and LR_abt (the
/// faulting instruction + 8 for a data abort, + 4 for a prefetch abort),
/// CPSR as exception entry leaves it (IRQs and aborts masked, T from
/// SCTLR.TE, E from SCTLR.EE, IT cleared), the PC at its vector.
pub fn inject_abort(regs: &mut crate::context::GuestRegs, abort: crate::arch::AbortTo) {
    const SCTLR_V: u32 = 1 << 13;
    const SCTLR_EE: u32 = 1 << 25;
    const SCTLR_TE: u32 = 1 << 30;
    let sctlr = SCTLR::read();
    let long = TTBCR::read() & (1 << 31) != 0;
    // Synchronous external abort, not on a translation table walk.
    let status = if long { 1 << 9 | 0x10 } else { 0x08 };
    let wnr = if abort.write { 1 << 11 } else { 0 };
    let (offset, lr) =
        if abort.instruction { (0x0c, regs.pc.wrapping_add(4)) } else { (0x10, regs.pc.wrapping_add(8)) };
    // SAFETY: the trapped guest's own PL1 registers; the guest is not
    // running, and none of them affects HYP mode.
    unsafe {
        if abort.instruction {
            IFSR::write(status);
            IFAR::write(abort.va);
        } else {
            DFSR::write(status | wnr);
            DFAR::write(abort.va);
        }
        asm!(".arch_extension virt", "msr spsr_abt, {}", "msr lr_abt, {}", in(reg) regs.cpsr, in(reg) lr, options(nomem, nostack, preserves_flags));
    }
    let base = if sctlr & SCTLR_V != 0 { 0xffff_0000 } else { VBAR::read() };
    let t = if sctlr & SCTLR_TE != 0 { 1 << 5 } else { 0 };
    let e = if sctlr & SCTLR_EE != 0 { 1 << 9 } else { 0 };
    // Keep the flags, GE and F; clear IT, J, T, E and the mode.
    let kept = regs.cpsr & 0xf80f_0040;
    regs.cpsr = kept | 0x17 | 1 << 7 | 1 << 8 | t | e;
    regs.pc = base + offset;
}

/// Does this core implement ThumbEE (ID_PFR0.State3, bits 15:12)?
pub fn has_thumbee() -> bool {
    let pfr0: u32;
    // SAFETY: reading an identification register has no side effects.
    unsafe { asm!("mrc p15, 0, {}, c0, c1, 0", out(reg) pfr0, options(nomem, nostack, preserves_flags)) };
    (pfr0 >> 12) & 0xf != 0
}

/// Saves and clears ThumbEE's registers (TEECR, TEEHBR). Only on a core
/// that has ThumbEE ([`has_thumbee`]), where they are UNDEFINED otherwise.
pub fn save_thumbee(s: &mut El1State) {
    // SAFETY: CP14 ThumbEE registers, which exist (caller's check); HYP
    // mode may access them; clearing them leaves nothing for the next VM.
    unsafe {
        asm!("mrc p14, 6, {}, c0, c0, 0", out(reg) s.teecr, options(nomem, nostack, preserves_flags));
        asm!("mrc p14, 6, {}, c1, c0, 0", out(reg) s.teehbr, options(nomem, nostack, preserves_flags));
        asm!("mcr p14, 6, {}, c1, c0, 0", in(reg) 0u32, options(nomem, nostack, preserves_flags));
    }
}

/// Loads a vCPU's ThumbEE registers (see [`save_thumbee`]).
pub fn restore_thumbee(s: &El1State) {
    // SAFETY: as in `save_thumbee`; the values are the vCPU's own.
    unsafe {
        asm!("mcr p14, 6, {}, c0, c0, 0", in(reg) s.teecr, options(nomem, nostack, preserves_flags));
        asm!("mcr p14, 6, {}, c1, c0, 0", in(reg) s.teehbr, options(nomem, nostack, preserves_flags));
    }
}

macro_rules! banked_access {
    ($(($mode:pat, $n:literal) => $reg:literal),* $(,)?) => {
        /// Register `n` of the guest's current `mode` when it is banked
        /// (SP and LR of the exception modes, SP_usr, r8-r14 of FIQ mode);
        /// None when the trap path's saved copy is the right one.
        pub fn read_banked(mode: u32, n: u8) -> Option<u32> {
            match (mode, n) {
                $(($mode, $n) => {
                    let v: u32;
                    // SAFETY: reading a banked register from HYP mode has no side effects.
                    unsafe { asm!(concat!(".arch_extension virt\nmrs {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
                    Some(v)
                })*
                _ => None,
            }
        }

        /// Writes a banked register (see `read_banked`); false if `n` is
        /// not banked in `mode`.
        pub fn write_banked(mode: u32, n: u8, v: u32) -> bool {
            match (mode, n) {
                $(($mode, $n) => {
                    // SAFETY: the trapped guest's own register; the guest is not running.
                    unsafe { asm!(concat!(".arch_extension virt\nmsr ", $reg, ", {}"), in(reg) v, options(nomem, nostack, preserves_flags)) };
                    true
                })*
                _ => false,
            }
        }
    };
}

banked_access! {
    (0x10 | 0x1f, 13) => "sp_usr",
    (0x11, 8) => "r8_fiq", (0x11, 9) => "r9_fiq", (0x11, 10) => "r10_fiq", (0x11, 11) => "r11_fiq",
    (0x11, 12) => "r12_fiq", (0x11, 13) => "sp_fiq", (0x11, 14) => "lr_fiq",
    (0x12, 13) => "sp_irq", (0x12, 14) => "lr_irq",
    (0x13, 13) => "sp_svc", (0x13, 14) => "lr_svc",
    (0x17, 13) => "sp_abt", (0x17, 14) => "lr_abt",
    (0x1b, 13) => "sp_und", (0x1b, 14) => "lr_und",
}

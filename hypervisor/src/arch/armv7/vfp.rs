//! Lazy switching of the guests' VFP/Advanced SIMD state. A pCPU keeps one
//! vCPU's registers live; another vCPU's first FP instruction traps
//! (HCPTR.TCP10/11), and only then are the registers exchanged.

use super::sysreg::HCPTR;
use core::arch::asm;

pub use crate::context::FpState as VfpState;

const HCPTR_BASE: u32 = 0x33ff;
const HCPTR_TRAP_FP: u32 = (1 << 10) | (1 << 11);

/// Guest FP use traps (HCPTR applies to HYP mode too, so the hypervisor
/// clears it before touching the registers).
pub fn trap_guest_fp(trap: bool) {
    // SAFETY: HCPTR only controls coprocessor traps.
    unsafe { HCPTR::write(if trap { HCPTR_BASE | HCPTR_TRAP_FP } else { HCPTR_BASE }) };
    aarch32_cpu::asm::isb();
}

/// Saves the live FP registers into `out` and loads `from`.
///
/// # Safety
/// Guest FP access must be untrapped (`trap_guest_fp(false)`): HCPTR
/// applies to HYP mode too, and a VFP instruction here would otherwise
/// take an undefined-instruction exception in HYP mode.
pub unsafe fn switch(out: Option<&mut VfpState>, from: &VfpState) {
    let old_fpexc: u32;
    // SAFETY: FP access is untrapped (function contract). FPEXC.EN is forced
    // on so the register transfers below work whatever the guest left there;
    // the guest's own FPEXC is saved first and the incoming one written last.
    unsafe {
        asm!(
            ".fpu neon-vfpv4",
            "vmrs {e}, fpexc",
            "orr {t}, {e}, #0x40000000",
            "vmsr fpexc, {t}",
            e = out(reg) old_fpexc, t = out(reg) _,
            options(nostack)
        );
    }
    if let Some(o) = out {
        o.fpexc = old_fpexc;
        let p = o as *mut VfpState;
        // SAFETY: `p` is a whole VfpState we own: 32 doublewords then FPSCR.
        unsafe {
            asm!(
                ".fpu neon-vfpv4",
                "vstmia {p}!, {{d0-d15}}",
                "vstmia {p}!, {{d16-d31}}",
                "vmrs {t}, fpscr",
                "str {t}, [{p}]",
                p = inout(reg) p => _, t = out(reg) _,
                options(nostack)
            );
        }
    }
    let p = from as *const VfpState;
    // SAFETY: as above, reading a whole VfpState: d0-d31, FPSCR, FPEXC.
    unsafe {
        asm!(
            ".fpu neon-vfpv4",
            "vldmia {p}!, {{d0-d15}}",
            "vldmia {p}!, {{d16-d31}}",
            "ldr {t}, [{p}], #4",
            "vmsr fpscr, {t}",
            "ldr {t}, [{p}]",
            "vmsr fpexc, {t}",
            p = inout(reg) p => _, t = out(reg) _,
            options(nostack)
        );
    }
}

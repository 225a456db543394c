//! The generic timer as the hypervisor uses it: the HYP physical timer
//! (CNTHP) ends time slices; the physical counter measures time.

use super::sysreg::*;

pub fn frequency() -> u32 {
    CNTFRQ::read()
}

pub fn counter() -> u64 {
    aarch32_cpu::asm::isb();
    CNTPCT::read()
}

pub fn disarm_slice() {
    // SAFETY: as above; disabling also clears its interrupt.
    unsafe { CNTHP_CTL::write(0) };
}

/// Fires the HYP timer PPI when the physical counter reaches `at`.
pub fn arm_at(at: u64) {
    // SAFETY: the HYP timer belongs to the hypervisor; ENABLE=1, IMASK=0.
    unsafe {
        CNTHP_CVAL::write(at);
        CNTHP_CTL::write(1);
    }
}

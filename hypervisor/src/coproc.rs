//! What a guest gets for the coprocessor accesses the hypervisor traps.
//!
//! The traps (`arch/armv7/mmu.rs`) close everything a VM could use to
//! observe or disturb another through state the hardware shares between
//! them:
//! - the PMU (HDCR.TPM, TPMCR): its counters count the whole core, HYP mode
//!   and other VMs included. It reads as absent (PMCR.N = 0, every counter
//!   and control register zero), and writes are ignored;
//! - the debug registers (HDCR.TDA, TDRA, TDOSA): breakpoints and
//!   watchpoints would survive into the next VM. They read as zero (a debug
//!   architecture of 0: Linux says "debug architecture 0x0 unsupported" and
//!   offers no hardware breakpoints), writes are ignored;
//! - ThumbEE's registers (a handler base a VM could leave for the next to
//!   read): not trapped (HSTR traps upset QEMU 7.2), but switched with the
//!   vCPU, so each VM has its own;
//! - IMPLEMENTATION DEFINED registers (HCR.TIDCP: CP15 c9-c11, the L2
//!   controller; c15 when HSTR.T15 traps it, which it does not on QEMU):
//!   read zero, writes ignored (QEMU 7.2 does not trap with TIDCP either);
//! - data-cache maintenance by set/way (HCR.TSW), which acts on the cache
//!   every VM shares: done by the hypervisor as clean and invalidate of the
//!   same line, so a VM can never discard another's dirty data;
//! - ACTLR (HCR.TAC): reads with the SMP bit set (as Linux expects of a
//!   Cortex-A15), writes ignored (it controls the physical core).
//!
//! Any other trapped access is not one the hypervisor asked for: the VM is
//! stopped.

/// One trapped MRC/MCR (32-bit) access (HSR ISS for EC 0x03 and 0x05).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpAccess {
    /// 14 or 15.
    pub cp: u8,
    pub read: bool,
    pub crn: u32,
    pub opc1: u32,
    pub crm: u32,
    pub opc2: u32,
    /// The transfer register (15: APSR_nzcv for a read).
    pub rt: u8,
}

/// One trapped MRRC/MCRR (64-bit) access (EC 0x04 and 0x0c).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpWide {
    pub cp: u8,
    pub read: bool,
    pub opc1: u32,
    pub crm: u32,
    pub rt: u8,
    pub rt2: u8,
}

/// What the hypervisor does for an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A read gets this value; a write is ignored.
    ReadAs(u32),
    /// Clean and invalidate the data cache line the written set/way value names.
    CleanInvalidateSetWay,
    /// Not something the hypervisor traps on purpose: stop the VM.
    Refuse,
}

/// The SMP bit of ACTLR (Cortex-A15).
pub const ACTLR_SMP: u32 = 1 << 6;

pub fn access(a: &CpAccess) -> Action {
    if a.cp == 14 {
        // Debug, trace and ThumbEE registers (HDCR.TDA/TDRA/TDOSA, HSTR.TTEE).
        return Action::ReadAs(0);
    }
    match (a.crn, a.opc1, a.crm, a.opc2) {
        // ACTLR (HCR.TAC).
        (1, 0, 0, 1) => Action::ReadAs(ACTLR_SMP),
        // DCISW, DCCSW, DCCISW (HCR.TSW): the write is the set/way value.
        (7, 0, 6 | 10 | 14, 2) if !a.read => Action::CleanInvalidateSetWay,
        // The PMU (HDCR.TPM, TPMCR): absent.
        (9, 0, 12..=14, _) => Action::ReadAs(0),
        // IMPLEMENTATION DEFINED (HCR.TIDCP, Arm ARM B4.1.65), and c15 (HSTR.T15).
        (9, _, 0..=2 | 5..=8, _) | (10, _, 0 | 1 | 4 | 8, _) | (11, _, 0..=8 | 15, _) | (15, _, _, _) => {
            Action::ReadAs(0)
        }
        _ => Action::Refuse,
    }
}

pub fn wide(a: &CpWide) -> Action {
    match (a.cp, a.crm) {
        // DBGDRAR, DBGDSAR (HDCR.TDRA): zero, "no debug ROM".
        (14, _) => Action::ReadAs(0),
        // IMPLEMENTATION DEFINED 64-bit registers (HSTR.T15).
        (15, 15) => Action::ReadAs(0),
        _ => Action::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(cp: u8, read: bool, crn: u32, opc1: u32, crm: u32, opc2: u32) -> CpAccess {
        CpAccess { cp, read, crn, opc1, crm, opc2, rt: 0 }
    }

    #[test]
    fn the_pmu_is_absent() {
        // PMCR, PMCNTENSET, PMCCNTR, PMXEVCNTR, PMUSERENR, PMINTENSET.
        for (crm, opc2) in [(12, 0), (12, 1), (13, 0), (13, 2), (14, 0), (14, 1)] {
            assert_eq!(access(&cp(15, true, 9, 0, crm, opc2)), Action::ReadAs(0));
            assert_eq!(access(&cp(15, false, 9, 0, crm, opc2)), Action::ReadAs(0), "writes ignored");
        }
    }

    #[test]
    fn debug_and_thumbee_registers_read_zero() {
        assert_eq!(access(&cp(14, true, 0, 0, 0, 0)), Action::ReadAs(0), "DBGDIDR: no debug architecture");
        assert_eq!(access(&cp(14, false, 0, 0, 2, 4)), Action::ReadAs(0), "a DBGBVR write is ignored");
        assert_eq!(access(&cp(14, true, 1, 6, 0, 0)), Action::ReadAs(0), "TEEHBR");
        assert_eq!(wide(&CpWide { cp: 14, read: true, opc1: 0, crm: 1, rt: 0, rt2: 1 }), Action::ReadAs(0), "DBGDRAR");
    }

    #[test]
    fn set_way_maintenance_is_done_safely() {
        assert_eq!(access(&cp(15, false, 7, 0, 6, 2)), Action::CleanInvalidateSetWay, "DCISW never discards");
        assert_eq!(access(&cp(15, false, 7, 0, 10, 2)), Action::CleanInvalidateSetWay);
        assert_eq!(access(&cp(15, false, 7, 0, 14, 2)), Action::CleanInvalidateSetWay);
    }

    #[test]
    fn implementation_defined_registers_read_zero_and_the_rest_is_refused() {
        assert_eq!(access(&cp(15, true, 9, 1, 0, 2)), Action::ReadAs(0), "L2CTLR");
        assert_eq!(access(&cp(15, true, 15, 4, 0, 0)), Action::ReadAs(0), "CBAR");
        assert_eq!(access(&cp(15, true, 1, 0, 0, 1)), Action::ReadAs(ACTLR_SMP));
        assert_eq!(access(&cp(15, true, 1, 0, 0, 0)), Action::Refuse, "SCTLR is not trapped: refused if it ever is");
        assert_eq!(wide(&CpWide { cp: 15, read: true, opc1: 0, crm: 2, rt: 0, rt2: 1 }), Action::Refuse, "TTBR0");
    }
}

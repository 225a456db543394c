//! A guest trap, decoded once from its syndrome (HSR, Arm ARM B3.13.6) into
//! what the handlers in `exits` act on. Plain data, so every decoding rule
//! is tested on the host.

use crate::addr::Ipa;
use crate::arch::TrapInfo;
use crate::coproc::{CpAccess, CpWide};
use crate::mmio::{self, DataAbort, FaultKind};

/// HSR exception classes (Arm ARM B3.13.6, table B3-13).
pub mod ec {
    pub const WFI_WFE: u32 = 0x01;
    pub const CP15_32: u32 = 0x03;
    pub const CP15_64: u32 = 0x04;
    pub const CP14_32: u32 = 0x05;
    pub const CP14_LS: u32 = 0x06;
    pub const FP_ACCESS: u32 = 0x07;
    pub const HVC: u32 = 0x12;
    pub const SMC: u32 = 0x13;
    pub const PABT_LOWER: u32 = 0x20;
    pub const CP14_64: u32 = 0x0c;
    pub const DABT_LOWER: u32 = 0x24;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    Wfi,
    Wfe,
    /// A hypercall: the arguments are in the trap frame.
    Hvc,
    /// An SMC (HCR.TSC): guests have no firmware to call.
    Smc,
    /// MRC/MCR to CP14 or CP15.
    Coproc(CpAccess),
    /// MRRC/MCRR to CP14 or CP15.
    CoprocWide(CpWide),
    /// LDC/STC to CP14 (the debug communication channel).
    Cp14Memory,
    /// A VFP/SIMD instruction while the vCPU's registers are not loaded.
    FpAccess,
    /// A stage-2 data abort at `ipa` (from HPFAR, which is only valid for
    /// translation faults and faults on a stage-1 walk), guest VA `va`.
    DataAbort {
        abort: DataAbort,
        ipa: Ipa,
        va: u32,
    },
    /// A stage-2 instruction abort at `ipa` (valid for a translation fault
    /// only), guest VA `va`.
    PrefetchAbort {
        fault: FaultKind,
        ipa: Ipa,
        va: u32,
    },
    /// Any other exception class.
    Other {
        ec: u32,
    },
}

/// A trap and what is needed to step over the instruction that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub trap: Trap,
    /// The raw syndrome, for messages.
    pub hsr: u32,
    /// HSR.IL: the trapped instruction is 32 bits (else 16).
    pub wide: bool,
}

impl Decoded {
    pub fn ec(&self) -> u32 {
        self.hsr >> 26
    }

    /// The length of the trapped instruction in bytes.
    pub fn instr_len(&self) -> u32 {
        if self.wide {
            4
        } else {
            2
        }
    }
}

impl Decoded {
    /// Did the trapped instruction pass its condition check? Some trapped
    /// instructions trap whether or not their condition holds (Arm ARM
    /// B3.13.6: "conditional instructions that fail their condition code
    /// check"), so the handler must check before acting. The condition is
    /// the syndrome's COND when CV is set, else that of the Thumb IT block
    /// the instruction is in (none: unconditional). A trapped SMC reports
    /// CCKNOWNPASS (bit 19): clear, it passed.
    pub fn condition_passed(&self, cpsr: u32) -> bool {
        let conditional =
            matches!(self.trap, Trap::Wfi | Trap::Wfe | Trap::Coproc(_) | Trap::CoprocWide(_) | Trap::Cp14Memory)
                || (self.trap == Trap::Smc && self.hsr & (1 << 19) != 0);
        if !conditional {
            return true;
        }
        let cond = if self.hsr & (1 << 24) != 0 {
            (self.hsr >> 20) & 0xf
        } else {
            match itstate(cpsr) {
                0 => return true,
                it => (it >> 4) as u32,
            }
        };
        condition_holds(cond, cpsr)
    }
}

/// The Thumb IT state, IT[7:0] (CPSR[15:10] are IT[7:2], CPSR[26:25] IT[1:0]).
fn itstate(cpsr: u32) -> u8 {
    (((cpsr >> 8) & 0xfc) | ((cpsr >> 25) & 3)) as u8
}

/// Does condition `cond` (0-15) hold for the flags in `cpsr` (Arm ARM A8.3)?
pub fn condition_holds(cond: u32, cpsr: u32) -> bool {
    let (n, z, c, v) = (cpsr >> 31 & 1 != 0, cpsr >> 30 & 1 != 0, cpsr >> 29 & 1 != 0, cpsr >> 28 & 1 != 0);
    let base = match cond >> 1 {
        0 => z,
        1 => c,
        2 => n,
        3 => v,
        4 => c && !z,
        5 => n == v,
        6 => !z && n == v,
        _ => return true, // AL (and the unconditional 0b1111)
    };
    if cond & 1 != 0 {
        !base
    } else {
        base
    }
}

/// The CPSR after stepping over one instruction: in Thumb state inside an
/// IT block, the IT state moves to the next instruction (ITAdvance(), Arm
/// ARM A2.5.2); otherwise it is unchanged.
pub fn advance_it(cpsr: u32) -> u32 {
    const T: u32 = 1 << 5;
    const IT_MASK: u32 = 0x0600_fc00;
    let it = itstate(cpsr) as u32;
    if cpsr & T == 0 || it == 0 {
        return cpsr;
    }
    // Keep IT[7:5]; shift IT[4:0] left; the block ends when IT[2:0] was 0.
    let next = if it & 7 == 0 { 0 } else { (it & 0xe0) | ((it << 1) & 0x1f) };
    (cpsr & !IT_MASK) | (next & 0xfc) << 8 | (next & 3) << 25
}

pub fn decode(t: TrapInfo) -> Decoded {
    let hsr = t.hsr;
    let trap = match hsr >> 26 {
        ec::WFI_WFE if hsr & 1 != 0 => Trap::Wfe,
        ec::WFI_WFE => Trap::Wfi,
        ec::HVC => Trap::Hvc,
        ec::SMC => Trap::Smc,
        ec::CP15_32 | ec::CP14_32 => Trap::Coproc(CpAccess {
            cp: if hsr >> 26 == ec::CP15_32 { 15 } else { 14 },
            read: hsr & 1 != 0,
            crm: (hsr >> 1) & 0xf,
            rt: ((hsr >> 5) & 0xf) as u8,
            crn: (hsr >> 10) & 0xf,
            opc1: (hsr >> 14) & 7,
            opc2: (hsr >> 17) & 7,
        }),
        ec::CP15_64 | ec::CP14_64 => Trap::CoprocWide(CpWide {
            cp: if hsr >> 26 == ec::CP15_64 { 15 } else { 14 },
            read: hsr & 1 != 0,
            crm: (hsr >> 1) & 0xf,
            rt: ((hsr >> 5) & 0xf) as u8,
            rt2: ((hsr >> 10) & 0xf) as u8,
            opc1: (hsr >> 16) & 0xf,
        }),
        ec::CP14_LS => Trap::Cp14Memory,
        ec::FP_ACCESS => Trap::FpAccess,
        ec::DABT_LOWER => {
            let abort = DataAbort::decode(hsr & 0x01ff_ffff);
            Trap::DataAbort { abort, ipa: mmio::fault_ipa(t.hpfar, t.hdfar), va: t.hdfar }
        }
        ec::PABT_LOWER => Trap::PrefetchAbort {
            fault: FaultKind::from_fsc(hsr & 0x3f),
            ipa: mmio::fault_ipa(t.hpfar, t.hifar),
            va: t.hifar,
        },
        other => Trap::Other { ec: other },
    };
    Decoded { trap, hsr, wide: hsr & (1 << 25) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(hsr: u32) -> TrapInfo {
        TrapInfo { hsr, ..Default::default() }
    }

    #[test]
    fn wait_instructions() {
        let wfi = decode(info(ec::WFI_WFE << 26 | 1 << 25));
        assert_eq!((wfi.trap, wfi.instr_len()), (Trap::Wfi, 4));
        let wfe16 = decode(info(ec::WFI_WFE << 26 | 1));
        assert_eq!((wfe16.trap, wfe16.instr_len()), (Trap::Wfe, 2), "a Thumb WFE is 16 bits");
    }

    #[test]
    fn coprocessor_fields() {
        // MRC p15, 0, r3, c1, c0, 1 (ACTLR read): Opc2=1, Opc1=0, CRn=1, Rt=3, CRm=0, read.
        let hsr = ec::CP15_32 << 26 | 1 << 25 | 1 << 17 | 1 << 10 | 3 << 5 | 1;
        let want = CpAccess { cp: 15, read: true, crn: 1, opc1: 0, crm: 0, opc2: 1, rt: 3 };
        assert_eq!(decode(info(hsr)).trap, Trap::Coproc(want));
        // The same fields for CP14 (MRC p14, 0, r2, c0, c5, 4: DBGBCR1).
        let hsr = ec::CP14_32 << 26 | 4 << 17 | 2 << 5 | 5 << 1 | 1;
        let want = CpAccess { cp: 14, read: true, crn: 0, opc1: 0, crm: 5, opc2: 4, rt: 2 };
        assert_eq!(decode(info(hsr)).trap, Trap::Coproc(want));
        // MRRC p14, 0, r4, r5, c1 (DBGDRAR).
        let hsr = ec::CP14_64 << 26 | 5 << 10 | 4 << 5 | 1 << 1 | 1;
        assert_eq!(
            decode(info(hsr)).trap,
            Trap::CoprocWide(CpWide { cp: 14, read: true, opc1: 0, crm: 1, rt: 4, rt2: 5 })
        );
    }

    #[test]
    fn aborts_carry_the_ipa() {
        // A word store through r3 to IPA 0x0900_0018: ISV, SAS=2, SRT=3, WnR, level-3 translation fault.
        let iss = 1 << 24 | 2 << 22 | 3 << 16 | 1 << 6 | 0x07;
        let t =
            TrapInfo { hsr: ec::DABT_LOWER << 26 | 1 << 25 | iss, hdfar: 0x0900_0018, hifar: 0, hpfar: 0x0009_0000 };
        match decode(t).trap {
            Trap::DataAbort { abort, ipa, va } => {
                assert_eq!(va, 0x0900_0018);
                assert_eq!(ipa, Ipa(0x0900_0018));
                assert!(abort.isv && abort.write && abort.reg == 3 && abort.size == 4);
                assert_eq!(abort.fault, FaultKind::Translation(3));
            }
            other => panic!("{other:?}"),
        }
        let p = TrapInfo { hsr: ec::PABT_LOWER << 26 | 0x06, hdfar: 0, hifar: 0x2000_0abc, hpfar: 0x0020_0000 };
        let want = Trap::PrefetchAbort { fault: FaultKind::Translation(2), ipa: Ipa(0x2000_0abc), va: 0x2000_0abc };
        assert_eq!(decode(p).trap, want);
    }

    /// CPSR with flags NZCV and IT state `it`, in Thumb state.
    fn thumb(nzcv: u32, it: u32) -> u32 {
        nzcv << 28 | 1 << 5 | (it & 0xfc) << 8 | (it & 3) << 25
    }

    #[test]
    fn conditions() {
        let z = 0b0100 << 28;
        assert!(condition_holds(0x0, z) && !condition_holds(0x1, z), "EQ / NE with Z");
        assert!(condition_holds(0xb, 0b1000 << 28), "LT: N != V");
        assert!(!condition_holds(0xc, z), "GT needs Z clear");
        assert!(condition_holds(0xe, 0) && condition_holds(0xf, 0));
    }

    #[test]
    fn a_trapped_instruction_that_failed_its_condition_is_not_obeyed() {
        // WFINE with Z set (CV = 1, COND = NE): failed.
        let wfine = decode(info(ec::WFI_WFE << 26 | 1 << 25 | 1 << 24 | 0x1 << 20));
        assert!(!wfine.condition_passed(0b0100 << 28));
        assert!(wfine.condition_passed(0));
        // A Thumb WFI in an IT EQ block, CV = 0: the IT state decides.
        let wfi_it = decode(info(ec::WFI_WFE << 26));
        assert!(!wfi_it.condition_passed(thumb(0, 0x08)), "ITEQ with Z clear");
        assert!(wfi_it.condition_passed(thumb(0b0100, 0x08)));
        assert!(wfi_it.condition_passed(thumb(0, 0)), "outside an IT block");
        // SMC: only when CCKNOWNPASS says it may have failed.
        let smc_passed = decode(info(ec::SMC << 26 | 1 << 24 | 0x1 << 20));
        assert!(smc_passed.condition_passed(0b0100 << 28), "CCKNOWNPASS clear: it passed");
        let smc_maybe = decode(info(ec::SMC << 26 | 1 << 24 | 0x1 << 20 | 1 << 19));
        assert!(!smc_maybe.condition_passed(0b0100 << 28));
        // HVC is unconditional.
        assert!(decode(info(ec::HVC << 26 | 1 << 24 | 0x1 << 20)).condition_passed(0b0100 << 28));
    }

    #[test]
    fn it_state_advances_past_a_stepped_instruction() {
        // ITTE EQ: IT = 0b0000_0110 with firstcond EQ (0000): 0x06.
        // After one instruction: 0x0c; after two: 0x18; after three: done.
        let c = thumb(0, 0x06);
        assert_eq!(itstate(advance_it(c)), 0x0c);
        assert_eq!(itstate(advance_it(advance_it(c))), 0x18);
        assert_eq!(itstate(advance_it(advance_it(advance_it(c)))), 0);
        // A single-instruction IT (IT = cond:1000): done after one.
        assert_eq!(itstate(advance_it(thumb(0, 0x18))), 0);
        // ARM state, or no IT block: unchanged.
        assert_eq!(advance_it(0x6000_0013), 0x6000_0013);
        assert_eq!(advance_it(thumb(0b1010, 0)), thumb(0b1010, 0));
        // Flags and mode bits survive.
        assert_eq!(advance_it(thumb(0b1111, 0x06) | 0x13) & 0xf000_001f, 0xf000_0013);
    }

    #[test]
    fn everything_else_is_named_by_its_class() {
        assert_eq!(decode(info(ec::HVC << 26)).trap, Trap::Hvc);
        assert_eq!(decode(info(ec::SMC << 26)).trap, Trap::Smc);
        assert_eq!(decode(info(ec::FP_ACCESS << 26)).trap, Trap::FpAccess);
        assert_eq!(decode(info(0x3f << 26)).trap, Trap::Other { ec: 0x3f });
        assert_eq!(decode(info(0)).trap, Trap::Other { ec: 0 });
    }
}

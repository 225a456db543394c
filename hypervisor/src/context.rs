//! Saved guest state. Plain data: the layout of [`GuestRegs`] is shared with
//! the trap entry code in `arch/armv7/entry.S`, which addresses fields by
//! offset (checked by the `offsets` test below).

/// What the trap path saves on every exit: r0-r12, LR_usr (HYP mode shares
/// the User-mode LR, so HYP code clobbers it), the return address (ELR_hyp)
/// and the guest CPSR (SPSR_hyp). The other banked registers stay live in
/// the CPU while the vCPU keeps its pCPU; see [`El1State`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestRegs {
    pub r: [u32; 13],
    pub lr_usr: u32,
    pub pc: u32,
    pub cpsr: u32,
}

pub mod offsets {
    pub const R0: usize = 0;
    pub const LR_USR: usize = 52;
    pub const PC: usize = 56;
    pub const CPSR: usize = 60;
}

/// Guest state that only changes hands when a pCPU switches vCPUs: banked
/// registers of the other modes and the PL1 system registers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct El1State {
    pub sp_usr: u32,
    pub sp_svc: u32,
    pub lr_svc: u32,
    pub spsr_svc: u32,
    pub sp_abt: u32,
    pub lr_abt: u32,
    pub spsr_abt: u32,
    pub sp_und: u32,
    pub lr_und: u32,
    pub spsr_und: u32,
    pub sp_irq: u32,
    pub lr_irq: u32,
    pub spsr_irq: u32,
    pub r8_fiq: u32,
    pub r9_fiq: u32,
    pub r10_fiq: u32,
    pub r11_fiq: u32,
    pub r12_fiq: u32,
    pub sp_fiq: u32,
    pub lr_fiq: u32,
    pub spsr_fiq: u32,
    // PL1 system registers (Arm ARM B4.1).
    pub sctlr: u32,
    pub cpacr: u32,
    pub ttbcr: u32,
    pub ttbr0: u64,
    pub ttbr1: u64,
    pub dacr: u32,
    pub dfsr: u32,
    pub ifsr: u32,
    pub dfar: u32,
    pub ifar: u32,
    pub par: u64,
    pub prrr: u32,
    pub nmrr: u32,
    pub vbar: u32,
    pub contextidr: u32,
    pub tpidrurw: u32,
    pub tpidruro: u32,
    pub tpidrprw: u32,
    pub csselr: u32,
    pub cntkctl: u32,
    /// ThumbEE's configuration and handler base (where implemented): a
    /// VM's own, so no VM reads what another left there.
    pub teecr: u32,
    pub teehbr: u32,
    pub cntv_ctl: u32,
    pub cntv_cval: u64,
}

/// The most list registers a GICv2 hypervisor interface has.
pub const MAX_LRS: usize = 16;

/// A vCPU's virtual CPU interface (GICH) while it is not loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GichState {
    pub hcr: u32,
    pub vmcr: u32,
    pub apr: u32,
    pub lr: [u32; MAX_LRS],
}

impl Default for GichState {
    fn default() -> Self {
        // Virtual CPU interface enabled (GICH_HCR.En), nothing in flight.
        Self { hcr: 1, vmcr: 0, apr: 0, lr: [0; MAX_LRS] }
    }
}

/// VFP/Advanced SIMD registers: d0-d31, FPSCR, FPEXC (layout used by the
/// arch switch code).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub struct FpState {
    pub d: [u64; 32],
    pub fpscr: u32,
    pub fpexc: u32,
}

/// CPSR mode and mask bits.
pub mod psr {
    pub const MODE_MASK: u32 = 0x1f;
    pub const MODE_USR: u32 = 0x10;
    pub const MODE_SVC: u32 = 0x13;
    pub const MODE_SYS: u32 = 0x1f;
    pub const F: u32 = 1 << 6;
    pub const I: u32 = 1 << 7;
    pub const A: u32 = 1 << 8;
    pub const T: u32 = 1 << 5;
}

impl GuestRegs {
    /// Registers for entering a guest at `entry` in SVC mode with
    /// interrupts and aborts masked (the state Linux and bare-metal images
    /// expect from a boot loader). Bit 0 of `entry` selects Thumb state, as
    /// for PSCI CPU_ON on AArch32 (Arm DEN 0022, 5.6): a Thumb-2 kernel's
    /// secondary entry point has it set.
    pub fn boot(entry: u32, r0: u32, r1: u32, r2: u32) -> Self {
        let thumb = if entry & 1 != 0 { psr::T } else { 0 };
        let mut g =
            GuestRegs { pc: entry & !1, cpsr: psr::MODE_SVC | psr::A | psr::I | psr::F | thumb, ..Default::default() };
        g.r[0] = r0;
        g.r[1] = r1;
        g.r[2] = r2;
        g
    }

    /// Reads register `n` (0-12, or 14 in User/System mode) as the trapped
    /// instruction saw it. SP and banked LRs are not in the saved set.
    pub fn get(&self, n: u8) -> Option<u32> {
        match n {
            0..=12 => Some(self.r[n as usize]),
            14 if self.user_lr() => Some(self.lr_usr),
            _ => None,
        }
    }

    pub fn set(&mut self, n: u8, v: u32) -> bool {
        match n {
            0..=12 => {
                self.r[n as usize] = v;
                true
            }
            14 if self.user_lr() => {
                self.lr_usr = v;
                true
            }
            _ => false,
        }
    }

    fn user_lr(&self) -> bool {
        matches!(self.cpsr & psr::MODE_MASK, psr::MODE_USR | psr::MODE_SYS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn offsets() {
        assert_eq!(offset_of!(GuestRegs, r), offsets::R0);
        assert_eq!(offset_of!(GuestRegs, lr_usr), offsets::LR_USR);
        assert_eq!(offset_of!(GuestRegs, pc), offsets::PC);
        assert_eq!(offset_of!(GuestRegs, cpsr), offsets::CPSR);
    }

    #[test]
    fn thumb_entry_points() {
        let g = GuestRegs::boot(0x4010_0001, 0, 0, 0);
        assert_eq!((g.pc, g.cpsr & psr::T), (0x4010_0000, psr::T));
        let a = GuestRegs::boot(0x4010_0000, 0, 0, 0);
        assert_eq!(a.cpsr & psr::T, 0);
    }

    #[test]
    fn banked_registers_are_not_guessed() {
        let mut g = GuestRegs::boot(0x4000_0000, 0, !0, 0x40ff_0000);
        assert_eq!(g.get(2), Some(0x40ff_0000));
        assert_eq!(g.get(13), None);
        assert_eq!(g.get(14), None, "SVC-mode LR is banked, not in the saved set");
        assert!(!g.set(15, 1));
        g.cpsr = psr::MODE_USR;
        assert!(g.set(14, 7));
        assert_eq!(g.get(14), Some(7));
    }
}

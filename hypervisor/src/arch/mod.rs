//! Everything that touches the CPU, behind one contract.
//!
//! The portable core (the run loop in `pcpu`, the trap handlers in `exits`,
//! the VM life cycle) is generic over [`Cpu`]: one value per physical CPU,
//! owned by that CPU's loop and never shared, which is also what proves
//! "this code runs on pCPU n" wherever per-pCPU state is touched. On the
//! target the implementation is [`Armv7`] (HYP mode on Armv7-A with the
//! Virtualization Extensions); host tests drive the same loop through
//! [`fake::FakeCpu`], which plays the guest from a script (Hafnium's
//! `src/arch/fake` is the model).
//!
//! The names exported below are the whole interface: all `asm!`, system
//! register and device register access lives under this folder. Besides
//! [`Cpu`], the target exports [`HwPlatform`] (the [`Platform`] services
//! any pCPU may use) and [`boot`], the bring-up steps `crate::boot` calls
//! once per pCPU, before any guest runs.
//!
//! [`Platform`]: crate::platform::Platform

use crate::context::{El1State, FpState, GichState, GuestRegs};
use crate::mm::stage2::Vttbr;
use crate::vgic::ListRegs;

#[cfg(target_arch = "arm")]
mod armv7;
#[cfg(target_arch = "arm")]
pub use armv7::{boot, Armv7, HwPlatform, HW_PLATFORM};

#[cfg(any(test, feature = "fake"))]
pub mod fake;

/// The most physical CPUs the hypervisor runs on.
pub const MAX_CPUS: usize = 8;

/// Cleans `len` bytes at `p` (identity-mapped RAM) to the point of
/// coherency, for a guest that reads it with its caches off.
///
/// # Safety
/// `[p, p + len)` must be mapped memory.
pub unsafe fn clean_bytes(p: *mut u8, len: usize) {
    #[cfg(target_arch = "arm")]
    armv7::boot::clean_dcache_range(p as usize, len);
    #[cfg(not(target_arch = "arm"))]
    let _ = (p, len);
}

/// Writes one stage-2 descriptor (`table` is a table frame the
/// `mm::stage2` builder made, identity-mapped) and makes the table walker
/// see it. An invalid-to-valid change needs no TLB maintenance.
///
/// # Safety
/// `table` must be a stage-2 table frame and `index` < 512; the caller
/// owns the change (no other writer of this entry at the same time, or the
/// same value).
pub unsafe fn set_stage2_entry(table: crate::addr::PhysAddr, index: usize, desc: u64) {
    #[cfg(target_arch = "arm")]
    // SAFETY: forwarded.
    unsafe {
        armv7::set_stage2_entry(table, index, desc)
    };
    #[cfg(not(target_arch = "arm"))]
    let _ = (table, index, desc);
}

/// Invalidates every stage-2 TLB entry of every VM on every pCPU (after
/// mappings were removed: a VM reset).
pub fn flush_stage2_tlbs() {
    #[cfg(target_arch = "arm")]
    armv7::flush_stage2_tlbs();
}

/// Zeroes `len` bytes at `p` with the widest stores the CPU has (guest RAM
/// at VM creation and reset: hundreds of MiB).
///
/// # Safety
/// `[p, p + len)` must be writable memory no Rust reference points into.
pub unsafe fn zero_bytes(p: *mut u8, len: usize) {
    #[cfg(target_arch = "arm")]
    // SAFETY: forwarded.
    unsafe {
        armv7::zero_bytes(p, len)
    };
    #[cfg(not(target_arch = "arm"))]
    // SAFETY: forwarded.
    unsafe {
        core::ptr::write_bytes(p, 0, len)
    };
}

/// Interrupt IDs the hypervisor itself takes (the GIC's architected
/// numbers: SGIs 0-15, PPIs 16-31).
pub mod irq {
    /// The SGI one pCPU sends another to make it look at its run queue.
    pub const SGI_KICK: u32 = 0;
    /// The vGIC maintenance interrupt (GICH).
    pub const PPI_MAINTENANCE: u32 = 25;
    /// The HYP physical timer, which ends time slices.
    pub const PPI_HYP_TIMER: u32 = 26;
    /// The virtual timer of the loaded vCPU.
    pub const PPI_VTIMER: u32 = 27;
    /// What the CPU interface acknowledges when nothing is pending.
    pub const SPURIOUS: u32 = 1023;
}

/// Why the guest stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// A synchronous trap: [`Cpu::trap_info`] says which.
    Trap,
    /// A physical IRQ arrived while the guest ran.
    Irq,
    Fiq,
    /// The guest caused an asynchronous external abort (SError), taken at
    /// its exit (whatever the exit was: the trap is lost with the VM).
    AsyncAbort,
}

/// The syndrome registers of the last trap (Arm ARM B3.13.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapInfo {
    pub hsr: u32,
    pub hdfar: u32,
    pub hifar: u32,
    pub hpfar: u32,
}

/// An external abort to give the guest (`on_fault = "abort"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortTo {
    /// A prefetch abort (an instruction fetch), else a data abort.
    pub instruction: bool,
    pub write: bool,
    /// The guest's virtual address of the access (its DFAR or IFAR).
    pub va: u32,
}

/// What identifies a vCPU to the hardware while it runs.
#[derive(Clone, Copy, Debug)]
pub struct VcpuIdentity {
    /// Its VM's stage-2 tables and VMID.
    pub vttbr: Vttbr,
    /// What the guest reads as MPIDR.
    pub vmpidr: u32,
    /// CNTVOFF: the VM's virtual counter offset.
    pub cntvoff: u64,
}

/// One physical CPU, as its own run loop uses it.
///
/// Not `Send` on the target and never shared: every method acts on the
/// calling pCPU's own registers.
pub trait Cpu {
    /// The live list registers of this pCPU's GIC virtual interface.
    type Lrs: ListRegs;

    /// This pCPU's index (0 is the boot pCPU).
    fn id(&self) -> usize;
    /// The physical counter.
    fn now(&self) -> u64;

    /// Runs the loaded vCPU with `regs` until its next trap or interrupt;
    /// `regs` then holds the state it left in.
    fn enter_guest(&mut self, regs: &mut GuestRegs) -> Exit;
    fn trap_info(&self) -> TrapInfo;
    /// Register `n` of the trapped guest's current `mode` when it is
    /// banked (SP, the exception modes' LR, FIQ's r8-r12); None when the
    /// trap frame's copy is the right one.
    fn read_banked(&self, mode: u32, n: u8) -> Option<u32>;
    /// Writes a banked register; false if `n` is not banked in `mode`.
    fn write_banked(&mut self, mode: u32, n: u8, v: u32) -> bool;

    /// Puts a vCPU's PL1 and GIC state into the CPU and makes it the one
    /// that runs (stage-2 tables, VMPIDR, CNTVOFF).
    fn load_vcpu(&mut self, el1: &El1State, gich: &GichState, id: &VcpuIdentity);
    /// Takes the loaded vCPU's PL1 and GIC state out of the CPU; its
    /// virtual timer stops firing here and its list registers are off.
    fn save_vcpu(&mut self, el1: &mut El1State, gich: &mut GichState);
    fn lrs(&self) -> &Self::Lrs;
    fn lrs_mut(&mut self) -> &mut Self::Lrs;

    /// Enables or disables a private interrupt (SGI/PPI) of this pCPU.
    fn set_private_irq(&mut self, id: u32, enabled: bool);
    /// The highest-priority pending interrupt, acknowledged (its raw IAR
    /// value for [`Cpu::end_irq`]); None when nothing is pending.
    fn ack_irq(&mut self) -> Option<u32>;
    fn end_irq(&mut self, iar: u32);
    /// The HYP timer fires when the counter reaches `at`.
    fn arm_timer(&mut self, at: u64);
    fn disarm_timer(&mut self);
    /// Sleeps until an interrupt is pending.
    fn wait_for_interrupt(&mut self);

    /// Guest VFP/SIMD instructions trap (the lazy switch).
    fn trap_fp(&mut self, trap: bool);
    /// Saves the live VFP registers into `out` (if given) and loads `from`.
    fn switch_fp(&mut self, out: Option<&mut FpState>, from: &FpState);

    /// One byte typed at the hypervisor's console, if any.
    fn console_read(&mut self) -> Option<u8>;
    /// Makes the trapped guest take a synchronous external abort for the
    /// access it just made, as the hardware would: Abort mode, its fault
    /// status and address registers set, the return address in LR_abt,
    /// `regs` moved to its vector.
    fn inject_abort(&mut self, regs: &mut GuestRegs, abort: AbortTo);
    /// Cleans and invalidates the data-cache line named by a DCCISW
    /// set/way value (for a guest's trapped set/way operation).
    fn clean_invalidate_set_way(&mut self, set_way: u32);
    /// Cleans guest memory the hypervisor wrote to the point of coherency
    /// and invalidates the instruction caches, so a guest that starts with
    /// its caches off sees it.
    fn clean_to_poc(&mut self, ram: &crate::mem::GuestRam);
}

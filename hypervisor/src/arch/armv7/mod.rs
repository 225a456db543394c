//! Armv7-A with the Virtualization Extensions, in HYP mode.
pub mod sysreg;
mod el1;
mod entry;
pub mod gic;
pub mod mmu;
pub mod psci;
pub mod timer;
pub mod uart;
pub mod vfp;

pub use el1::{read_banked, restore as restore_el1, save as save_el1, write_banked};
pub use entry::{enter_guest, Exit, MAX_CPUS, STACK_SIZE};

/// The syndrome registers of the last trap.
#[derive(Clone, Copy, Debug)]
pub struct TrapInfo {
    pub hsr: u32,
    pub hdfar: u32,
    pub hifar: u32,
    pub hpfar: u32,
}

pub fn trap_info() -> TrapInfo {
    TrapInfo { hsr: sysreg::HSR::read(), hdfar: sysreg::HDFAR::read(), hifar: sysreg::HIFAR::read(), hpfar: sysreg::HPFAR::read() }
}

/// Sleeps until an interrupt is pending (IRQs stay masked in HYP mode; WFI
/// wakes on a pending interrupt regardless).
pub fn wait_for_interrupt() {
    aarch32_cpu::asm::dsb();
    aarch32_cpu::asm::wfi();
}

/// Sets the virtual counter offset (CNTVOFF) of the VM about to run.
pub fn set_cntvoff(off: u64) {
    // SAFETY: CNTVOFF only shifts what PL1/PL0 read as the virtual count.
    unsafe { sysreg::CNTVOFF::write(off) };
}

pub fn mpidr() -> u32 {
    sysreg::MPIDR::read()
}

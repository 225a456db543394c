//! PSCI calls (Arm DEN 0022) over HVC, for the calling VM's vCPUs.
//!
//! These return PSCI's own status codes ([`hypercall_abi::psci`]), raw as
//! `i32`, because PSCI defines more outcomes than errors (AFFINITY_INFO's
//! states, for one) and guests port PSCI code that expects them.

use crate::hvc::hvc_call;
use hypercall_abi::Function;

/// One PSCI call that cannot break the guest's invariants; r0 as `i32`.
fn call(f: Function, a1: u32, a2: u32, a3: u32) -> i32 {
    // SAFETY: only used for calls that report something or stop/restart
    // the calling vCPU or VM; CPU_ON, which starts code, goes through
    // `cpu_on`, whose caller vouches for the entry point.
    unsafe { hvc_call(f.id(), a1, a2, a3)[0] as i32 }
}

/// The PSCI version, major in bits 31:16 ([`psci::VERSION_1_1`](hypercall_abi::psci::VERSION_1_1) on Tessera).
pub fn psci_version() -> u32 {
    call(Function::PsciVersion, 0, 0, 0) as u32
}

/// Starts the vCPU `target_mpidr` of this VM at guest-physical `entry`, with
/// `context_id` in its r0. Returns `psci::SUCCESS` or a PSCI error
/// (`ALREADY_ON`, `INVALID_PARAMETERS`, ...).
///
/// # Safety
///
/// `entry` must be code that is ready to run on a fresh vCPU (MMU and
/// caches off, no stack), sets up its own stack, and from then on shares this
/// VM's memory only in ways the rest of the program allows, exactly as when
/// spawning a thread.
pub unsafe fn cpu_on(target_mpidr: u32, entry: u32, context_id: u32) -> i32 {
    // SAFETY: the caller vouches for what runs at `entry`.
    unsafe { hvc_call(Function::PsciCpuOn.id(), target_mpidr, entry, context_id)[0] as i32 }
}

/// Powers down the calling vCPU. Returns only on failure (`psci::DENIED`).
pub fn cpu_off() -> i32 {
    call(Function::PsciCpuOff, 0, 0, 0)
}

/// Whether vCPU `mpidr` is `psci::AFFINITY_ON`, `AFFINITY_OFF` or
/// `AFFINITY_ON_PENDING`; `level` must be 0.
pub fn affinity_info(mpidr: u32, level: u32) -> i32 {
    call(Function::PsciAffinityInfo, mpidr, level, 0)
}

/// Stops this VM (not the machine). Spins if the call ever returns.
pub fn system_off() -> ! {
    call(Function::PsciSystemOff, 0, 0, 0);
    loop {
        core::hint::spin_loop();
    }
}

/// Restarts this VM from its boot image. Spins if the call ever returns.
pub fn system_reset() -> ! {
    call(Function::PsciSystemReset, 0, 0, 0);
    loop {
        core::hint::spin_loop();
    }
}

/// Whether PSCI function `fid` is implemented: `psci::SUCCESS` (no optional
/// flags) or `psci::NOT_SUPPORTED`.
pub fn psci_features(fid: u32) -> i32 {
    call(Function::PsciFeatures, fid, 0, 0)
}

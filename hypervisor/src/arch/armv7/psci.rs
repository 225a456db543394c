//! Calls to the board firmware's PSCI over `smc #0` (the conduit QEMU's virt
//! board uses with virtualization=on).

use core::arch::asm;

const CPU_OFF: u32 = 0x8400_0002;
const CPU_ON: u32 = 0x8400_0003;
const SYSTEM_OFF: u32 = 0x8400_0008;

fn smc(fid: u32, a1: u32, a2: u32, a3: u32) -> i32 {
    let r0: u32;
    // SAFETY: an SMCCC fast call; per SMCCC the firmware preserves r4-r7 and
    // may change r0-r3, which are declared as outputs.
    unsafe {
        asm!(".arch_extension sec\nsmc #0", inout("r0") fid => r0, inout("r1") a1 => _, inout("r2") a2 => _, inout("r3") a3 => _,
             options(nostack));
    }
    r0 as i32
}

/// Starts pCPU `mpidr` at the secondary entry with `context` in r0.
pub fn cpu_on(mpidr: u32, context: u32) -> i32 {
    smc(CPU_ON, mpidr, super::entry::tessera_secondary_start as *const () as usize as u32, context)
}

pub fn cpu_off() -> ! {
    smc(CPU_OFF, 0, 0, 0);
    loop {
        aarch32_cpu::asm::wfi();
    }
}

pub fn system_off() -> ! {
    smc(SYSTEM_OFF, 0, 0, 0);
    loop {
        aarch32_cpu::asm::wfi();
    }
}

//! The FreeRTOS demo on the single-core kernel (configNUMBER_OF_CORES = 1), for
//! a VM of 1 vCPU. The application is `tessera_freertos::demo`; this binary only
//! links it with the single-core kernel (see build.rs). Off-target (the workspace's
//! host build) it is an empty program.
#![cfg_attr(target_arch = "arm", no_std, no_main)]

/// Called by the port's boot code (rtos-port/port/portASM.S).
#[cfg(target_arch = "arm")]
#[unsafe(no_mangle)]
extern "C" fn main() -> i32 {
    tessera_freertos::demo::main()
}

#[cfg(not(target_arch = "arm"))]
fn main() {}

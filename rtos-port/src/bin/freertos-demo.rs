//! The FreeRTOS demo on the SMP kernel (configNUMBER_OF_CORES = 2): give its
//! VM 2 vCPUs. The application is `tessera_freertos::demo`; this binary only
//! links it with the SMP kernel (see build.rs). Off-target (the workspace's
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

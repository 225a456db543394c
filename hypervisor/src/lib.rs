//! Tessera, a type-1 hypervisor for Armv7-A with the Virtualization
//! Extensions.
//!
//! Most of the crate is plain Rust tested on the host. `arch` is the
//! contract with the CPU (with a fake for host tests); `boot`, `physdev`
//! and `platform::qemu_virt` exist only for the target. A trap travels
//! `arch` -> `trap` (decode) -> `exits` (handle) -> `pcpu` (the loop);
//! VMs end or reset in `lifecycle`.
#![cfg_attr(not(test), no_std)]

pub mod addr;
pub mod arch;
pub mod console;
pub mod console_input;
pub mod context;
pub mod coproc;
pub mod devices;
pub mod exits;
pub mod hypercall;
pub mod lifecycle;
pub mod mem;
pub mod mm;
pub mod mmio;
pub mod pcpu;
pub mod platform;
pub mod sched;
pub mod steal;
pub mod system;
pub mod trace;
pub mod trap;
pub mod vcpu;
pub mod vgic;
pub mod virtio;
pub mod vm;

#[cfg(target_arch = "arm")]
mod boot;
#[cfg(target_arch = "arm")]
pub mod physdev;

#[cfg(test)]
mod run_loop_tests;

/// A hypervisor bug: print where, then end the system with a failure status.
#[cfg(all(target_arch = "arm", target_os = "none"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let cpu = arch::boot::this_cpu_id();
    // SAFETY: this is the panic handler, which never returns.
    unsafe { console::emergency(format_args!("tessera: PANIC on pCPU {cpu}: {info}")) };
    arch::boot::fail()
}

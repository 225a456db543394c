//! Tessera, a type-1 hypervisor for Armv7-A with the Virtualization
//! Extensions.
//!
//! The crate is split so that most of it is plain Rust tested on the host:
//! `arch` (CPU, GIC, timer, firmware) and `platform` (the board) exist only
//! for the target; `runtime` glues them to the portable core (`vm`,
//! `hypercall`, `mmio`, `sched`, `mm`, `console`).
#![cfg_attr(not(test), no_std)]

pub mod addr;
pub mod console;
pub mod context;
pub mod devices;
pub mod hypercall;
pub mod mm;
pub mod mmio;
pub mod sched;
pub mod vgic;
pub mod virtio;
pub mod vm;

#[cfg(target_arch = "arm")]
pub mod arch;
#[cfg(target_arch = "arm")]
pub mod physdev;
#[cfg(target_arch = "arm")]
pub mod platform;
#[cfg(target_arch = "arm")]
mod runtime;

/// A hypervisor bug: print where, then end the system with a failure status.
#[cfg(all(target_arch = "arm", target_os = "none"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::emergency(format_args!("tessera: PANIC on pCPU {}: {info}", arch::mpidr() & 0xff));
    platform::qemu_virt::fail()
}

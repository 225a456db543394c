//! Everything that touches the CPU. The rest of the hypervisor sees only the
//! names exported here; all `asm!`, system-register and device-register
//! access lives below this folder.
pub mod armv7;
pub use armv7::*;

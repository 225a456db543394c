//! Guest-side support for Tessera: safe wrappers around the hypercall ABI.
//!
//! A guest needs one trap ([`hvc::hvc_call`], `hvc #0` under SMCCC 1.1) and
//! the numbers in [`abi`]; everything else here decodes results into
//! `Result<_, abi::Error>` so that guests never handle raw registers. PSCI
//! calls live in [`psci`] because they report PSCI's own codes.
//!
//! On targets other than 32-bit Arm the trap is replaced by a fake (see
//! [`hvc`]) so that this crate and its users can be unit-tested on a PC.

#![no_std]

#[cfg(all(not(target_arch = "arm"), any(test, feature = "host-fake")))]
extern crate std;

pub use hypercall_abi as abi;
pub use hypercall_abi::Error;

mod calls;
pub mod console;
pub mod hvc;
pub mod psci;
#[cfg(feature = "virtio")]
pub mod virtio_hal;

pub use calls::{
    abi_version, arch_features, call_count, call_uid, channel_notify, console_read, console_write, console_write_raw,
    features, is_tessera, revision, shutdown, smccc_version, steal_time_set, vm_info, yield_vcpu, VmInfo,
};
pub use console::Console;

#[cfg(test)]
mod tests;

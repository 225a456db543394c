//! Tessera's hypercall ABI: function IDs, error codes, feature bits and
//! constants, shared by the hypervisor and Rust guests.
//!
//! Everything here is generated from `abi.toml` (see `ABI.md` for the
//! reference page and `include/tessera/hypercall.h` for the C header), so
//! Rust, C and the documentation can never disagree; `tests/frozen.rs` fails
//! if a published number changes. Calls follow Arm SMCCC 1.1 over `hvc #0`:
//! function ID in r0, arguments in r1-r7, results in r0-r3.

#![no_std]

include!("generated.rs");

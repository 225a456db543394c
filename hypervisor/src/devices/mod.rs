//! A VM's devices: what it sees at guest-physical addresses that are not
//! its RAM. The emulated PL011 is an [`MmioDevice`](crate::mmio::MmioDevice)
//! behind the VM's MMIO bus; `wiring` connects each device to its VM and
//! to the board. None of it touches hardware, so it is plain Rust tested on
//! the host.

pub mod call_console;
pub mod pl011;
pub mod wiring;

//! Emulated devices: what a VM sees at guest-physical addresses that are not
//! its RAM. Each is an [`MmioDevice`](crate::mmio::MmioDevice) behind the
//! VM's MMIO bus; they touch no hardware, so they are plain Rust tested on
//! the host.

pub mod pl011;

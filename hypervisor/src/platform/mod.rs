//! Board description: where things are on QEMU's `virt` machine, and how the
//! host DTB that QEMU passes is read.
pub mod qemu_virt;

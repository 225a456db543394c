//! Virtio devices over MMIO (virtio 1.2): the split virtqueue
//! ([`queue`]), the version-2 MMIO transport ([`mmio`]), device models
//! ([`rng`], [`blk`], [`console`], [`net`]) and the virtual switch that
//! joins net devices ([`switch`]). All of it is portable and tested on the
//! host; backends (where entropy, blocks or packets come from) are traits
//! the runtime provides.
//!
//! # Wiring
//!
//! `devices/wiring.rs` builds a VM's devices from its payload entries (`VirtioSlot`):
//! each is a [`VirtioMmio`] over the VM's `GuestRam` (which implements
//! [`GuestMemory`]) with an [`IrqSink`] driving its SPI on the vGIC, in a
//! virtio-mmio slot the guest DTB describes. [`queue::Chain`] keeps its
//! segment list inline (4 KiB), which the 64 KiB HYP stacks afford.

pub mod blk;
pub mod console;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
pub mod switch;

#[cfg(test)]
mod blk_tests;
#[cfg(test)]
mod net_tests;
#[cfg(test)]
mod tests;

pub use mmio::{IrqSink, VirtioDevice, VirtioMmio};
pub use queue::{Chain, GuestMemory, OutsideRam, Queue, QueueError, Segment};

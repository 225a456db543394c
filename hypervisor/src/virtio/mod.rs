//! Virtio devices over MMIO (virtio 1.2): the split virtqueue
//! ([`queue`]), the version-2 MMIO transport ([`mmio`]) and device models
//! ([`rng`]). All of it is portable and tested on the host; backends (where
//! entropy, blocks or packets come from) are traits the runtime provides.
//!
//! # Not wired yet
//!
//! Nothing instantiates these devices. Wiring one into a VM takes: a
//! `virtio,mmio` node in the guest DTB (a [`mmio::WINDOW_SIZE`] window and
//! a level-high SPI), an `MmioRegion` on the VM's bus holding a
//! [`VirtioMmio`] over `&GuestRam` (which implements [`GuestMemory`]), an
//! [`IrqSink`] that drives that SPI's level on the vGIC, and a backend
//! (for virtio-rng, an [`rng::EntropySource`]). [`queue::Chain`] keeps its
//! segment list inline (4 KiB), which the 64 KiB HYP stacks afford.

pub mod blk;
pub mod console;
pub mod mmio;
pub mod queue;
pub mod rng;

#[cfg(test)]
mod blk_tests;
#[cfg(test)]
mod tests;

pub use mmio::{IrqSink, VirtioDevice, VirtioMmio};
pub use queue::{Chain, GuestMemory, MemError, Queue, QueueError, Segment};

//! Virtio devices over MMIO (virtio 1.2): the split virtqueue
//! ([`queue`]), the version-2 MMIO transport ([`mmio`]) and device models
//! ([`rng`]). All of it is portable and tested on the host; backends (where
//! entropy, blocks or packets come from) are traits the runtime provides.

pub mod mmio;
pub mod queue;
pub mod rng;

#[cfg(test)]
mod tests;

pub use mmio::{IrqSink, VirtioDevice, VirtioMmio};
pub use queue::{Chain, GuestMemory, MemError, Queue, QueueError, Segment};

//! virtio-rng, the entropy device (virtio 1.2 section 5.4): device ID 4,
//! no feature bits, no configuration space, one request queue. Each
//! request is a chain of device-writable buffers that the device fills with
//! entropy from an [`EntropySource`].
//!
//! Work per notification is bounded: at most the queue size chains (the
//! driver cannot have more outstanding, and any added later bring their own
//! notification since we never set VIRTQ_USED_F_NO_NOTIFY), and at most
//! [`MAX_REQUEST_BYTES`] per chain (the device may fill less than the whole
//! buffer; the used length says how much, 5.4.6.1).

use super::mmio::{Budget, VirtioDevice};
use super::queue::{GuestMemory, Queue, QueueError};

/// The most bytes one request gets.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// Where entropy comes from (a hardware TRNG, a guest-visible seed, ...).
pub trait EntropySource: Send {
    fn fill(&mut self, buf: &mut [u8]);
}

pub struct VirtioRng<E: EntropySource> {
    source: E,
}

impl<E: EntropySource> VirtioRng<E> {
    pub fn new(source: E) -> Self {
        Self { source }
    }

    pub fn source(&mut self) -> &mut E {
        &mut self.source
    }
}

impl<E: EntropySource> VirtioDevice for VirtioRng<E> {
    const DEVICE_ID: u32 = 4;

    fn features(&self) -> u64 {
        0
    }

    fn num_queues(&self) -> usize {
        1
    }

    fn read_config(&self, _offset: u32, _size: u8) -> u32 {
        0
    }

    fn write_config(&mut self, _offset: u32, _size: u8, _value: u32) {}

    fn notify(
        &mut self,
        _queue: usize,
        q: &mut Queue,
        mem: &dyn GuestMemory,
        budget: &mut Budget,
    ) -> Result<bool, QueueError> {
        let mut used = false;
        while budget.allows() {
            let Some(chain) = q.pop(mem)? else { break };
            let mut written = 0usize;
            let mut buf = [0u8; 256];
            for seg in chain.writable() {
                let mut off = 0usize;
                while off < seg.len as usize && written < MAX_REQUEST_BYTES {
                    let n = (seg.len as usize - off).min(buf.len()).min(MAX_REQUEST_BYTES - written);
                    self.source.fill(&mut buf[..n]);
                    mem.write(seg.ipa.add(off as u64), &buf[..n]).map_err(|_| QueueError::BufferOutsideRam)?;
                    off += n;
                    written += n;
                }
            }
            q.push_used(mem, chain.head(), written as u32)?;
            budget.spend(written as u64);
            used = true;
        }
        Ok(used && q.needs_notification(mem)?)
    }

    fn reset(&mut self) {}
}

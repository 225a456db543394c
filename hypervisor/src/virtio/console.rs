//! virtio-console (virtio 1.2 section 5.3): device ID 3, one port, no
//! feature bits (no MULTIPORT, SIZE or EMERG_WRITE, so the configuration
//! space reads 0). Queue 0 is receiveq (input to the guest), queue 1
//! transmitq (the guest's output), which goes to a [`ConsoleSink`].
//!
//! Input is not routed to it yet: typed input goes to the VM's UART.
//! Buffers the driver posts on receiveq stay there, unused, which is what
//! a console without input looks like (5.3.6.1).

use super::mmio::{Budget, VirtioDevice};
use super::queue::{GuestMemory, Queue, QueueError};

/// Where the guest's output goes.
pub trait ConsoleSink: Send {
    fn write(&mut self, bytes: &[u8]);
}

pub const RECEIVEQ: usize = 0;
pub const TRANSMITQ: usize = 1;

/// Bytes copied per step from a transmit buffer.
const CHUNK: usize = 256;
/// The most of one chain that is printed (more could never be shown: the
/// console's ring is smaller).
pub const MAX_CHAIN_OUTPUT: usize = 64 << 10;

pub struct VirtioConsole<S: ConsoleSink> {
    sink: S,
}

impl<S: ConsoleSink> VirtioConsole<S> {
    pub fn new(sink: S) -> Self {
        Self { sink }
    }

    pub fn sink(&mut self) -> &mut S {
        &mut self.sink
    }
}

impl<S: ConsoleSink> VirtioDevice for VirtioConsole<S> {
    const DEVICE_ID: u32 = 3;

    fn features(&self) -> u64 {
        0
    }

    fn num_queues(&self) -> usize {
        2
    }

    fn read_config(&self, _offset: u32, _size: u8) -> u32 {
        0
    }

    fn write_config(&mut self, _offset: u32, _size: u8, _value: u32) {}

    /// transmitq: every readable byte of every chain goes to the sink, in
    /// order; the used length is 0 (nothing written into the buffers).
    fn notify(
        &mut self,
        queue: usize,
        q: &mut Queue,
        mem: &dyn GuestMemory,
        budget: &mut Budget,
    ) -> Result<bool, QueueError> {
        if queue != TRANSMITQ {
            return Ok(false);
        }
        let mut used = false;
        let mut buf = [0u8; CHUNK];
        while budget.allows() {
            let Some(chain) = q.pop(mem)? else { break };
            // At most MAX_CHAIN_OUTPUT of a chain is printed: the console
            // would drop the rest anyway, and reading it costs HYP time.
            let mut left = MAX_CHAIN_OUTPUT;
            for seg in chain.readable() {
                let mut off = 0u32;
                while off < seg.len && left > 0 {
                    let n = ((seg.len - off) as usize).min(CHUNK).min(left);
                    mem.read(seg.ipa.add(off as u64), &mut buf[..n]).map_err(|_| QueueError::BufferOutsideRam)?;
                    self.sink.write(&buf[..n]);
                    off += n as u32;
                    left -= n;
                }
            }
            q.push_used(mem, chain.head(), 0)?;
            budget.spend((MAX_CHAIN_OUTPUT - left) as u64);
            used = true;
        }
        Ok(used && q.needs_notification(mem)?)
    }

    fn reset(&mut self) {}
}

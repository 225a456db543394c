//! virtio-net, the network device (virtio 1.2 section 5.1): device ID 1,
//! one receive queue (0) and one transmit queue (1), on a port of a
//! virtual [`switch`](super::switch).
//!
//! Features offered: VIRTIO_NET_F_MAC (the port's configured address),
//! VIRTIO_NET_F_STATUS (the link is always up) and VIRTIO_NET_F_MTU
//! (1500, so a driver refuses a larger MTU instead of sending frames the
//! switch drops). No checksum or segmentation offloads, no mergeable RX
//! buffers, no control queue: every frame is a whole Ethernet frame of at
//! most [`MAX_FRAME`] bytes, preceded in its buffer by the 12-byte
//! `virtio_net_hdr` of VERSION_1 (5.1.6).
//!
//! - TX (5.1.6.2): each chain's device-readable part is a header and one
//!   frame. The header is ignored (nothing was negotiated that it could
//!   ask for). A frame shorter than [`MIN_FRAME`] or longer than
//!   [`MAX_FRAME`] is dropped; the chain is always returned, with used
//!   length 0 (the device writes nothing). The notification only marks the
//!   queue; the frames are taken by the port's pump once the state lock is
//!   released ([`VirtioDevice::take_deferred`]), so that delivering them
//!   can take the receivers' locks.
//! - RX (5.1.6.3, 5.1.6.4): frames for the port wait in its mailbox until
//!   a device-writable chain is available, then go in with a header whose
//!   fields are 0 except `num_buffers` = 1 (required without
//!   VIRTIO_NET_F_MRG_RXBUF). A chain too small for the header and the
//!   frame is returned with used length 0 and the frame is dropped.
//!
//! Work per notification is bounded: at most the queue size TX chains per
//! notification (a driver adding more notifies again), at most the
//! mailbox's frames per RX fill. Malformed queues end in NEEDS_RESET for
//! this device only; the switch and the other ports carry on.

use super::mmio::{Budget, Deferred, IrqSink, VirtioDevice, VirtioMmio};
use super::queue::{GuestMemory, Queue, QueueError};
use super::switch::{Port, Pump};
pub use super::switch::{MAX_FRAME, MIN_FRAME};

/// Feature bits (5.1.3).
pub const VIRTIO_NET_F_MTU: u64 = 1 << 3;
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
pub const VIRTIO_NET_F_STATUS: u64 = 1 << 16;

/// `status` in the configuration space: VIRTIO_NET_S_LINK_UP.
pub const VIRTIO_NET_S_LINK_UP: u16 = 1;
/// The MTU offered with VIRTIO_NET_F_MTU.
pub const MTU: u16 = (MAX_FRAME - MIN_FRAME) as u16;

/// The length of `struct virtio_net_hdr` with VERSION_1 (5.1.6): flags,
/// gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers.
pub const HDR_LEN: usize = 12;
/// Offset of `num_buffers` in the header.
const NUM_BUFFERS: usize = 10;

pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;

/// Configuration space (5.1.4): mac[6], status, max_virtqueue_pairs, mtu.
const CONFIG_LEN: usize = 12;

/// A switch port's device, as the switch reaches it: each call takes that
/// device's own state lock (see [`VirtioMmio::device_work`]).
pub trait NetDevice: Sync {
    /// One round of the TX queue into the switch; false if the driver
    /// does not have the device running.
    fn tx_round(&self, pump: &mut Pump) -> bool;
    /// Moves frames waiting in the port's mailbox into the RX queue.
    fn rx_fill(&self) -> bool;
}

impl<M: GuestMemory + Sync, I: IrqSink> NetDevice for VirtioMmio<VirtioNet, M, I> {
    fn tx_round(&self, pump: &mut Pump) -> bool {
        self.device_work(TX_QUEUE, |dev, q, mem| dev.tx_round(q, mem, pump))
    }

    fn rx_fill(&self) -> bool {
        self.device_work(RX_QUEUE, |dev, q, mem| dev.rx_fill(q, mem))
    }
}

pub struct VirtioNet {
    port: &'static Port,
    /// The driver notified the TX queue since the last `take_deferred`.
    tx_kicked: bool,
}

impl VirtioNet {
    pub fn new(port: &'static Port) -> Self {
        Self { port, tx_kicked: false }
    }

    pub fn port(&self) -> &'static Port {
        self.port
    }

    fn config(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        c[..6].copy_from_slice(&self.port.mac());
        c[6..8].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c[10..12].copy_from_slice(&MTU.to_le_bytes());
        c
    }

    /// Takes TX chains into the switch until the queue is empty, the
    /// notification's budget is spent, or a destination is full (the pump
    /// then delivers and calls again). Under this device's state lock.
    fn tx_round(&mut self, q: &mut Queue, mem: &dyn GuestMemory, pump: &mut Pump) -> Result<bool, QueueError> {
        self.port.retry(pump);
        let mut used = false;
        while !pump.holding() && pump.budget > 0 {
            let Some(chain) = q.pop(mem)? else { break };
            pump.budget -= 1;
            let total = chain.readable_len();
            let ok = (HDR_LEN + MIN_FRAME) as u64 <= total && total <= (HDR_LEN + MAX_FRAME) as u64;
            if ok {
                // Copied out before the chain goes back to the driver.
                let n = chain.read_readable(mem, pump.buffer())?;
                pump.set_len(n - HDR_LEN);
            }
            q.push_used(mem, chain.head(), 0)?;
            used = true;
            if ok {
                self.port.transmit(pump);
            } else {
                self.port.refused();
            }
        }
        if pump.holding() {
            pump.again();
        }
        Ok(used && q.needs_notification(mem)?)
    }

    /// Fills RX chains with the frames waiting in the port's mailbox.
    /// Under this device's state lock (then the mailbox's).
    fn rx_fill(&mut self, q: &mut Queue, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        let mut mailbox = self.port.mailbox();
        let mut used = false;
        while let Some(slot) = mailbox.front_mut() {
            let Some(chain) = q.pop(mem)? else { break };
            let stats = self.port.stats();
            if chain.writable_len() < slot.len() as u64 {
                q.push_used(mem, chain.head(), 0)?;
                stats.rx_dropped.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            } else {
                slot[..HDR_LEN].fill(0);
                slot[NUM_BUFFERS..HDR_LEN].copy_from_slice(&1u16.to_le_bytes());
                let n = chain.write_writable(mem, slot)?;
                q.push_used(mem, chain.head(), n as u32)?;
                stats.rx_frames.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            }
            mailbox.pop();
            used = true;
        }
        drop(mailbox);
        Ok(used && q.needs_notification(mem)?)
    }
}

impl VirtioDevice for VirtioNet {
    const DEVICE_ID: u32 = 1;

    fn features(&self) -> u64 {
        VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_MTU
    }

    fn num_queues(&self) -> usize {
        2
    }

    /// Little-endian fields at any offset and size; past the end reads 0.
    fn read_config(&self, offset: u32, size: u8) -> u32 {
        let c = self.config();
        let mut v = 0u32;
        for k in (0..size.min(4) as u32).rev() {
            let byte = offset.checked_add(k).and_then(|o| c.get(o as usize)).copied().unwrap_or(0);
            v = v << 8 | byte as u32;
        }
        v
    }

    /// The configuration space is read-only with VERSION_1 (5.1.4.2).
    fn write_config(&mut self, _offset: u32, _size: u8, _value: u32) {}

    /// RX is bounded by the mailbox (its frames, at most one chain each) and
    /// TX by the pump's own budget (the queue size), so `budget` is unused.
    fn notify(
        &mut self,
        queue: usize,
        q: &mut Queue,
        mem: &dyn GuestMemory,
        _budget: &mut Budget,
    ) -> Result<bool, QueueError> {
        match queue {
            RX_QUEUE => self.rx_fill(q, mem),
            _ => {
                self.tx_kicked = true;
                Ok(false)
            }
        }
    }

    fn reset(&mut self) {
        self.tx_kicked = false;
        self.port.clear();
    }

    fn take_deferred(&mut self) -> Option<&'static dyn Deferred> {
        core::mem::take(&mut self.tx_kicked).then_some(self.port as &'static dyn Deferred)
    }
}

//! The split virtqueue as the device sees it (virtio 1.2 section 2.7).
//!
//! Everything here is read from guest memory the driver controls, so every
//! value is a claim until checked: ring and table addresses must lie inside
//! guest RAM and be aligned (2.7.1, 2.7.5), descriptor indices must be below
//! the queue size, chains must end (the walk is bounded by the queue size,
//! by [`MAX_CHAIN_SEGMENTS`] and by [`MAX_CHAIN_BYTES`]), device-writable
//! descriptors come after all device-readable ones (2.7.4.2), and indirect
//! tables (2.7.5.3) are neither nested nor of a length that is not a
//! non-zero multiple of 16. Any violation is a [`QueueError`]; the transport
//! then sets DEVICE_NEEDS_RESET (2.1.1) and stops using the queue.
//!
//! Guest memory is only touched through [`GuestMemory`] (`crate::mem`),
//! which copies bytes in and out (the guest may change them at any time);
//! nothing here hands out references into guest RAM, and nothing here needs
//! `unsafe`.
//!
//! Not supported yet: VIRTIO_F_EVENT_IDX (so `used_event`/`avail_event` are
//! neither read nor written and notification suppression is only the
//! VIRTQ_AVAIL_F_NO_INTERRUPT flag) and packed virtqueues (2.8).

use crate::addr::Ipa;
pub use crate::mem::{GuestMemory, OutsideRam};
use core::sync::atomic::{fence, Ordering};

/// The largest queue size a device offers (QueueNumMax). 256 is what
/// Linux's virtio-mmio drivers use for most devices and keeps a chain's
/// segment list ([`Chain`]) at 4 KiB on the hypervisor stack.
pub const MAX_QUEUE_SIZE: u16 = 256;

/// The most segments one chain may have, direct and indirect together; an
/// indirect table may have at most this many entries.
pub const MAX_CHAIN_SEGMENTS: usize = 256;

/// The most bytes one chain may describe, readable and writable together
/// (16 MiB: far above what any request of ours needs, and small enough that
/// a hostile chain cannot make a device loop for long).
pub const MAX_CHAIN_BYTES: u64 = 16 << 20;

/// Descriptor flags (2.7.5).
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// Available ring flag: the driver does not want used-buffer interrupts.
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Size in bytes of one descriptor.
const DESC_SIZE: u64 = 16;

/// Something the driver did wrong with a queue. Each doc line is the
/// message [`QueueError::describe`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// queue used while not ready
    NotReady,
    /// queue size is zero, not a power of two, or above the maximum
    BadSize,
    /// descriptor table outside guest RAM or misaligned
    DescTableOutsideRam,
    /// available ring outside guest RAM or misaligned
    AvailRingOutsideRam,
    /// used ring outside guest RAM or misaligned
    UsedRingOutsideRam,
    /// available index moved by more than the queue size
    AvailIndexJump,
    /// descriptor index not below the queue size
    DescIndexOutOfRange,
    /// descriptor chain longer than the queue size (a loop)
    ChainLoop,
    /// descriptor chain has too many segments
    TooManySegments,
    /// descriptor chain describes too many bytes
    ChainTooBig,
    /// buffer outside guest RAM
    BufferOutsideRam,
    /// device-readable descriptor after a device-writable one
    ReadableAfterWritable,
    /// indirect descriptor used but VIRTIO_F_INDIRECT_DESC not negotiated
    IndirectNotNegotiated,
    /// indirect descriptor with the NEXT flag
    IndirectWithNext,
    /// indirect table inside an indirect table
    NestedIndirect,
    /// indirect table length zero or not a multiple of 16
    IndirectBadLength,
    /// indirect table has too many entries
    IndirectTooLong,
    /// indirect table outside guest RAM
    IndirectOutsideRam,
    /// indirect descriptor index outside its table
    IndirectIndexOutOfRange,
    /// indirect chain longer than its table (a loop)
    IndirectLoop,
    /// used element for a head that is not a descriptor index
    BadUsedHead,
    /// request without room for what its device type requires (a header, a status byte)
    BadRequest,
}

impl QueueError {
    pub fn describe(self) -> &'static str {
        match self {
            QueueError::NotReady => "queue used while not ready",
            QueueError::BadSize => "queue size is zero, not a power of two, or above the maximum",
            QueueError::DescTableOutsideRam => "descriptor table outside guest RAM or misaligned",
            QueueError::AvailRingOutsideRam => "available ring outside guest RAM or misaligned",
            QueueError::UsedRingOutsideRam => "used ring outside guest RAM or misaligned",
            QueueError::AvailIndexJump => "available index moved by more than the queue size",
            QueueError::DescIndexOutOfRange => "descriptor index not below the queue size",
            QueueError::ChainLoop => "descriptor chain longer than the queue size (a loop)",
            QueueError::TooManySegments => "descriptor chain has too many segments",
            QueueError::ChainTooBig => "descriptor chain describes too many bytes",
            QueueError::BufferOutsideRam => "buffer outside guest RAM",
            QueueError::ReadableAfterWritable => "device-readable descriptor after a device-writable one",
            QueueError::IndirectNotNegotiated => "indirect descriptor used but VIRTIO_F_INDIRECT_DESC not negotiated",
            QueueError::IndirectWithNext => "indirect descriptor with the NEXT flag",
            QueueError::NestedIndirect => "indirect table inside an indirect table",
            QueueError::IndirectBadLength => "indirect table length zero or not a multiple of 16",
            QueueError::IndirectTooLong => "indirect table has too many entries",
            QueueError::IndirectOutsideRam => "indirect table outside guest RAM",
            QueueError::IndirectIndexOutOfRange => "indirect descriptor index outside its table",
            QueueError::IndirectLoop => "indirect chain longer than its table (a loop)",
            QueueError::BadUsedHead => "used element for a head that is not a descriptor index",
            QueueError::BadRequest => {
                "request without room for what its device type requires (a header, a status byte)"
            }
        }
    }
}

/// One buffer of a chain, as the descriptor gave it (already checked to lie
/// inside guest RAM).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub ipa: Ipa,
    pub len: u32,
    /// Device-writable (VIRTQ_DESC_F_WRITE); otherwise device-readable.
    pub writable: bool,
}

/// A validated descriptor chain: the head index to return in the used ring
/// and its segments, readable ones first.
#[derive(Clone, Debug)]
pub struct Chain {
    head: u16,
    count: usize,
    readable_len: u64,
    writable_len: u64,
    seen_writable: bool,
    segments: [Segment; MAX_CHAIN_SEGMENTS],
}

impl Chain {
    fn new(head: u16) -> Self {
        Self {
            head,
            count: 0,
            readable_len: 0,
            writable_len: 0,
            seen_writable: false,
            segments: [Segment::default(); MAX_CHAIN_SEGMENTS],
        }
    }

    /// The head descriptor index (the id of the used element).
    pub fn head(&self) -> u16 {
        self.head
    }

    /// All segments, in chain order (readable before writable).
    pub fn segments(&self) -> impl Iterator<Item = Segment> + '_ {
        self.segments[..self.count].iter().copied()
    }

    pub fn readable(&self) -> impl Iterator<Item = Segment> + '_ {
        self.segments().filter(|s| !s.writable)
    }

    pub fn writable(&self) -> impl Iterator<Item = Segment> + '_ {
        self.segments().filter(|s| s.writable)
    }

    /// Total bytes of the device-readable part.
    pub fn readable_len(&self) -> u64 {
        self.readable_len
    }

    /// Total bytes of the device-writable part.
    pub fn writable_len(&self) -> u64 {
        self.writable_len
    }

    /// Copies the readable part into `buf`, up to `buf.len()` bytes;
    /// returns how many were copied.
    pub fn read_readable(&self, mem: &dyn GuestMemory, buf: &mut [u8]) -> Result<usize, QueueError> {
        let mut done = 0;
        for s in self.readable() {
            if done == buf.len() {
                break;
            }
            let n = (s.len as usize).min(buf.len() - done);
            mem.read(s.ipa, &mut buf[done..done + n]).map_err(|_| QueueError::BufferOutsideRam)?;
            done += n;
        }
        Ok(done)
    }

    /// Copies `data` into the writable part, up to its length; returns how
    /// many bytes were written (the `len` of the used element).
    pub fn write_writable(&self, mem: &dyn GuestMemory, data: &[u8]) -> Result<usize, QueueError> {
        let mut done = 0;
        for s in self.writable() {
            if done == data.len() {
                break;
            }
            let n = (s.len as usize).min(data.len() - done);
            mem.write(s.ipa, &data[done..done + n]).map_err(|_| QueueError::BufferOutsideRam)?;
            done += n;
        }
        Ok(done)
    }

    fn add(&mut self, mem: &dyn GuestMemory, d: &Desc) -> Result<(), QueueError> {
        if self.count == MAX_CHAIN_SEGMENTS {
            return Err(QueueError::TooManySegments);
        }
        let writable = d.flags & VIRTQ_DESC_F_WRITE != 0;
        if !writable && self.seen_writable {
            return Err(QueueError::ReadableAfterWritable);
        }
        if self.readable_len + self.writable_len + d.len as u64 > MAX_CHAIN_BYTES {
            return Err(QueueError::ChainTooBig);
        }
        if !mem.contains(Ipa(d.addr), d.len as u64) {
            return Err(QueueError::BufferOutsideRam);
        }
        if writable {
            self.seen_writable = true;
            self.writable_len += d.len as u64;
        } else {
            self.readable_len += d.len as u64;
        }
        self.segments[self.count] = Segment { ipa: Ipa(d.addr), len: d.len, writable };
        self.count += 1;
        Ok(())
    }
}

/// One descriptor as laid out in guest memory (2.7.5), little-endian.
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

fn read_desc(mem: &dyn GuestMemory, at: Ipa, err: QueueError) -> Result<Desc, QueueError> {
    let mut b = [0u8; 16];
    mem.read(at, &mut b).map_err(|_| err)?;
    Ok(Desc {
        addr: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        flags: u16::from_le_bytes([b[12], b[13]]),
        next: u16::from_le_bytes([b[14], b[15]]),
    })
}

fn read_u16(mem: &dyn GuestMemory, at: Ipa, err: QueueError) -> Result<u16, QueueError> {
    let mut b = [0u8; 2];
    mem.read(at, &mut b).map_err(|_| err)?;
    Ok(u16::from_le_bytes(b))
}

/// One split virtqueue: its configuration (written by the driver through
/// the transport) and the device's position in the rings.
#[derive(Clone, Debug)]
pub struct Queue {
    /// The QueueNumMax the transport reports (a power of two, at most
    /// [`MAX_QUEUE_SIZE`]).
    pub max_size: u16,
    /// QueueNum: the number of descriptors, as the driver wrote it
    /// (checked by [`Queue::validate`], not on write).
    pub size: u16,
    /// QueueReady.
    pub ready: bool,
    /// Descriptor table (16-byte aligned, 16 * size bytes).
    pub desc: Ipa,
    /// Driver area, the available ring (2-byte aligned, 6 + 2 * size bytes).
    pub driver: Ipa,
    /// Device area, the used ring (4-byte aligned, 6 + 8 * size bytes).
    pub device: Ipa,
    /// VIRTIO_F_INDIRECT_DESC was negotiated.
    pub indirect: bool,
    /// The next available-ring entry the device will take.
    pub next_avail: u16,
    /// The next used-ring entry the device will fill (also the used idx).
    pub next_used: u16,
}

impl Queue {
    pub const fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            ready: false,
            desc: Ipa(0),
            driver: Ipa(0),
            device: Ipa(0),
            indirect: false,
            next_avail: 0,
            next_used: 0,
        }
    }

    /// Back to the reset state (2.1.1 / 4.2.2.1: not ready, positions 0).
    pub fn reset(&mut self) {
        *self = Self::new(self.max_size);
    }

    /// Checks the configuration: ready, size, and the three areas inside
    /// guest RAM with their alignment (2.7, table "Virtqueue Part Alignment").
    pub fn validate(&self, mem: &dyn GuestMemory) -> Result<(), QueueError> {
        if !self.ready {
            return Err(QueueError::NotReady);
        }
        let n = self.size as u64;
        if self.size == 0 || !self.size.is_power_of_two() || self.size > self.max_size || self.size > MAX_QUEUE_SIZE {
            return Err(QueueError::BadSize);
        }
        if !self.desc.is_aligned(16) || !mem.contains(self.desc, DESC_SIZE * n) {
            return Err(QueueError::DescTableOutsideRam);
        }
        if !self.driver.is_aligned(2) || !mem.contains(self.driver, 6 + 2 * n) {
            return Err(QueueError::AvailRingOutsideRam);
        }
        if !self.device.is_aligned(4) || !mem.contains(self.device, 6 + 8 * n) {
            return Err(QueueError::UsedRingOutsideRam);
        }
        Ok(())
    }

    /// Takes the next available chain, if any, validating all of it.
    /// On error the queue position does not move; the device should be
    /// marked NEEDS_RESET and the queue left alone.
    pub fn pop(&mut self, mem: &dyn GuestMemory) -> Result<Option<Chain>, QueueError> {
        self.validate(mem)?;
        let avail_idx = read_u16(mem, self.driver.add(2), QueueError::AvailRingOutsideRam)?;
        let pending = avail_idx.wrapping_sub(self.next_avail);
        if pending > self.size {
            return Err(QueueError::AvailIndexJump);
        }
        if pending == 0 {
            return Ok(None);
        }
        // The driver writes the ring entry (and the descriptors) before the
        // index (2.7.13.3.1): read them only after having seen the index.
        fence(Ordering::Acquire);
        let slot = (self.next_avail % self.size) as u64;
        let head = read_u16(mem, self.driver.add(4 + 2 * slot), QueueError::AvailRingOutsideRam)?;
        let chain = self.walk(mem, head)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(Some(chain))
    }

    fn walk(&self, mem: &dyn GuestMemory, head: u16) -> Result<Chain, QueueError> {
        if head >= self.size {
            return Err(QueueError::DescIndexOutOfRange);
        }
        let mut chain = Chain::new(head);
        let mut idx = head;
        let mut steps = 0u32;
        loop {
            steps += 1;
            if steps > self.size as u32 {
                return Err(QueueError::ChainLoop);
            }
            let d = read_desc(mem, self.desc.add(DESC_SIZE * idx as u64), QueueError::DescTableOutsideRam)?;
            if d.flags & VIRTQ_DESC_F_INDIRECT != 0 {
                // 2.7.5.3.1: zero or more direct descriptors, then one
                // indirect one (its WRITE flag is ignored), and no NEXT.
                if !self.indirect {
                    return Err(QueueError::IndirectNotNegotiated);
                }
                if d.flags & VIRTQ_DESC_F_NEXT != 0 {
                    return Err(QueueError::IndirectWithNext);
                }
                Self::walk_indirect(mem, &d, &mut chain)?;
                return Ok(chain);
            }
            chain.add(mem, &d)?;
            if d.flags & VIRTQ_DESC_F_NEXT == 0 {
                return Ok(chain);
            }
            if d.next >= self.size {
                return Err(QueueError::DescIndexOutOfRange);
            }
            idx = d.next;
        }
    }

    fn walk_indirect(mem: &dyn GuestMemory, table: &Desc, chain: &mut Chain) -> Result<(), QueueError> {
        if table.len == 0 || !(table.len as u64).is_multiple_of(DESC_SIZE) {
            return Err(QueueError::IndirectBadLength);
        }
        let entries = table.len as u64 / DESC_SIZE;
        if entries > MAX_CHAIN_SEGMENTS as u64 {
            return Err(QueueError::IndirectTooLong);
        }
        let base = Ipa(table.addr);
        if !mem.contains(base, table.len as u64) {
            return Err(QueueError::IndirectOutsideRam);
        }
        // The chain in the table starts at entry 0 (2.7.5.3.2).
        let mut idx = 0u64;
        for _ in 0..entries {
            let d = read_desc(mem, base.add(DESC_SIZE * idx), QueueError::IndirectOutsideRam)?;
            if d.flags & VIRTQ_DESC_F_INDIRECT != 0 {
                return Err(QueueError::NestedIndirect);
            }
            chain.add(mem, &d)?;
            if d.flags & VIRTQ_DESC_F_NEXT == 0 {
                return Ok(());
            }
            if d.next as u64 >= entries {
                return Err(QueueError::IndirectIndexOutOfRange);
            }
            idx = d.next as u64;
        }
        Err(QueueError::IndirectLoop)
    }

    /// Returns chain `head` to the driver with `len` bytes written.
    ///
    /// Ordering (2.7.8 / 2.7.14): the element is written, then a release
    /// fence, then the used index, so a driver that sees the new index sees
    /// the element and the data written into the buffers before it.
    pub fn push_used(&mut self, mem: &dyn GuestMemory, head: u16, len: u32) -> Result<(), QueueError> {
        self.validate(mem)?;
        if head >= self.size {
            return Err(QueueError::BadUsedHead);
        }
        let slot = (self.next_used % self.size) as u64;
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&(head as u32).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write(self.device.add(4 + 8 * slot), &elem).map_err(|_| QueueError::UsedRingOutsideRam)?;
        fence(Ordering::Release);
        self.next_used = self.next_used.wrapping_add(1);
        mem.write(self.device.add(2), &self.next_used.to_le_bytes()).map_err(|_| QueueError::UsedRingOutsideRam)
    }

    /// Has the driver made chains available that the device has not taken?
    pub fn has_available(&self, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        self.validate(mem)?;
        let avail_idx = read_u16(mem, self.driver.add(2), QueueError::AvailRingOutsideRam)?;
        Ok(avail_idx != self.next_avail)
    }

    /// Does the driver want an interrupt for the used buffers just pushed?
    /// Only VIRTQ_AVAIL_F_NO_INTERRUPT is honoured (2.7.7): without
    /// VIRTIO_F_EVENT_IDX, which we do not offer, `used_event` is unused.
    /// The flag is a hint; the full fence orders our used-index store
    /// before the flag load, so a driver that re-enables interrupts after
    /// checking the used ring is never missed.
    pub fn needs_notification(&self, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        self.validate(mem)?;
        fence(Ordering::SeqCst);
        let flags = read_u16(mem, self.driver, QueueError::AvailRingOutsideRam)?;
        Ok(flags & VIRTQ_AVAIL_F_NO_INTERRUPT == 0)
    }
}

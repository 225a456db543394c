//! virtio-blk, the block device (virtio 1.2 section 5.2): device ID 2, one
//! request queue, over a [`BlockBackend`] that is a VM's range of a disk.
//!
//! A request is a chain: a 16-byte header (type, reserved, sector) and, for
//! a write, the data in the device-readable part; for a read, the data in
//! the device-writable part; the last writable byte is the status. The
//! framing of the segments is not assumed (VIRTIO_F_ANY_LAYOUT is implied
//! by VERSION_1): the readable and writable parts are treated as byte
//! streams.
//!
//! What the driver asks is checked against the range, not trusted: a
//! request past the end of the range, a write on a read-only range, or a
//! data length that is not whole sectors gets VIRTIO_BLK_S_IOERR, and the
//! backend never sees it. A chain without room for the header or the
//! status byte is a malformed queue (NEEDS_RESET).
//!
//! Data goes through a bounce buffer of [`BOUNCE`] bytes, allocated once
//! with the device: the backend reads into it, then it is copied into the
//! guest's buffers (and the reverse for writes). Work per notification is
//! bounded by the queue size and by `queue::MAX_CHAIN_BYTES` per chain.

extern crate alloc;

use super::mmio::{Budget, VirtioDevice};
use super::queue::{Chain, GuestMemory, OutsideRam, Queue, QueueError, Segment};
use alloc::boxed::Box;
use alloc::vec;

pub const SECTOR: u64 = 512;
/// Bytes moved per backend call.
pub const BOUNCE: usize = 64 << 10;
/// Segments per request the driver may use (queue size 256, minus header
/// and status), offered as seg_max.
pub const SEG_MAX: u32 = 254;
/// The most data one request may move (2 MiB, above Linux's default
/// request size of 1280 KiB); a larger one gets VIRTIO_BLK_S_IOERR.
pub const MAX_REQUEST_DATA: u64 = 2 << 20;

/// Feature bits (5.2.3).
pub const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
pub const VIRTIO_BLK_F_BLK_SIZE: u64 = 1 << 6;
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

/// Request types (5.2.6).
pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;

/// Status byte values.
pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// The length of a GET_ID answer.
pub const ID_BYTES: usize = 20;

/// The storage behind a device: sectors 0.. of the VM's range. The model
/// only calls it with ranges inside `sectors()` and whole sectors.
pub trait BlockBackend: Send {
    /// Length of the range in sectors.
    fn sectors(&self) -> u64;
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError>;
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BackendError>;
    /// Everything written so far is on stable storage when this returns.
    fn flush(&mut self) -> Result<(), BackendError>;
}

/// The backend failed (the physical disk reported an error or is absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendError;

/// Counters for diagnostics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkStats {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    /// Requests refused: out of range, read-only, bad length, backend error.
    pub errors: u64,
    /// Of those, writes refused because the range is read-only.
    pub ro_refused: u64,
    /// Of those, requests larger than [`MAX_REQUEST_DATA`].
    pub too_large: u64,
}

pub struct VirtioBlk<B: BlockBackend> {
    backend: B,
    read_only: bool,
    id: [u8; ID_BYTES],
    bounce: Box<[u8]>,
    stats: BlkStats,
}

impl<B: BlockBackend> VirtioBlk<B> {
    /// `id` is the serial GET_ID returns (NUL-padded, at most 20 bytes).
    pub fn new(backend: B, read_only: bool, id: &[u8]) -> Self {
        let mut serial = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        serial[..n].copy_from_slice(&id[..n]);
        Self {
            backend,
            read_only,
            id: serial,
            bounce: vec![0u8; BOUNCE].into_boxed_slice(),
            stats: BlkStats::default(),
        }
    }

    pub fn stats(&self) -> BlkStats {
        self.stats
    }

    pub fn backend(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Serves one chain; returns the used length (bytes written into the
    /// driver's buffers, status included).
    fn serve(&mut self, chain: &Chain, mem: &dyn GuestMemory) -> Result<u32, QueueError> {
        let mut header = [0u8; 16];
        if chain.read_readable(mem, &mut header)? < header.len() || chain.writable_len() == 0 {
            return Err(QueueError::BadRequest);
        }
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let data_in = chain.writable_len() - 1; // room before the status byte
        let data_out = chain.readable_len() - header.len() as u64;
        if (kind == VIRTIO_BLK_T_IN && data_in > MAX_REQUEST_DATA)
            || (kind == VIRTIO_BLK_T_OUT && data_out > MAX_REQUEST_DATA)
        {
            // Larger than any request Linux sends by default (max_sectors_kb
            // 1280): refused, so that one request is a bounded amount of work.
            self.stats.errors += 1;
            self.stats.too_large += 1;
            write_at(chain.writable(), mem, data_in, &[VIRTIO_BLK_S_IOERR])?;
            return Ok(1);
        }
        let (status, written) = match kind {
            VIRTIO_BLK_T_IN => match self.transfer_in(chain, mem, sector, data_in)? {
                Ok(()) => {
                    self.stats.reads += 1;
                    (VIRTIO_BLK_S_OK, data_in)
                }
                Err(()) => (VIRTIO_BLK_S_IOERR, 0),
            },
            VIRTIO_BLK_T_OUT if self.read_only => {
                self.stats.ro_refused += 1;
                (VIRTIO_BLK_S_IOERR, 0)
            }
            VIRTIO_BLK_T_OUT => match self.transfer_out(chain, mem, sector, data_out)? {
                Ok(()) => {
                    self.stats.writes += 1;
                    (VIRTIO_BLK_S_OK, 0)
                }
                Err(()) => (VIRTIO_BLK_S_IOERR, 0),
            },
            VIRTIO_BLK_T_FLUSH => match self.backend.flush() {
                Ok(()) => {
                    self.stats.flushes += 1;
                    (VIRTIO_BLK_S_OK, 0)
                }
                Err(BackendError) => (VIRTIO_BLK_S_IOERR, 0),
            },
            VIRTIO_BLK_T_GET_ID => {
                // The answer fills at most the room before the status byte.
                let n = (data_in as usize).min(ID_BYTES);
                write_at(chain.writable(), mem, 0, &self.id[..n])?;
                (VIRTIO_BLK_S_OK, n as u64)
            }
            _ => (VIRTIO_BLK_S_UNSUPP, 0),
        };
        if status == VIRTIO_BLK_S_IOERR {
            self.stats.errors += 1;
        }
        write_at(chain.writable(), mem, data_in, &[status])?;
        // Reads report the whole data part written; `written` is at most
        // `MAX_CHAIN_BYTES`, so this fits.
        Ok((written + 1) as u32)
    }

    /// Is `[sector, sector + bytes / 512)` whole sectors inside the range?
    fn in_range(&self, sector: u64, bytes: u64) -> bool {
        bytes.is_multiple_of(SECTOR)
            && sector.checked_add(bytes / SECTOR).is_some_and(|end| end <= self.backend.sectors())
    }

    /// Outer error: the queue is malformed. Inner: the request fails.
    fn transfer_in(
        &mut self,
        chain: &Chain,
        mem: &dyn GuestMemory,
        sector: u64,
        bytes: u64,
    ) -> Result<Result<(), ()>, QueueError> {
        if !self.in_range(sector, bytes) {
            return Ok(Err(()));
        }
        let mut done = 0u64;
        while done < bytes {
            let n = (bytes - done).min(BOUNCE as u64) as usize;
            if self.backend.read(sector + done / SECTOR, &mut self.bounce[..n]).is_err() {
                return Ok(Err(()));
            }
            write_at(chain.writable(), mem, done, &self.bounce[..n])?;
            done += n as u64;
        }
        Ok(Ok(()))
    }

    fn transfer_out(
        &mut self,
        chain: &Chain,
        mem: &dyn GuestMemory,
        sector: u64,
        bytes: u64,
    ) -> Result<Result<(), ()>, QueueError> {
        if !self.in_range(sector, bytes) {
            return Ok(Err(()));
        }
        let mut done = 0u64;
        while done < bytes {
            let n = (bytes - done).min(BOUNCE as u64) as usize;
            read_at(chain.readable(), mem, 16 + done, &mut self.bounce[..n])?;
            if self.backend.write(sector + done / SECTOR, &self.bounce[..n]).is_err() {
                return Ok(Err(()));
            }
            done += n as u64;
        }
        Ok(Ok(()))
    }
}

/// Visits bytes `[at, at + len)` of a segment stream: `f(ipa, from, to)`
/// for each piece, `from..to` being its place in the caller's buffer. The
/// stream must be long enough.
fn for_range(
    segs: impl Iterator<Item = Segment>,
    at: u64,
    len: usize,
    mut f: impl FnMut(crate::addr::Ipa, usize, usize) -> Result<(), OutsideRam>,
) -> Result<(), QueueError> {
    let mut pos = 0u64; // stream offset of the current segment
    let mut done = 0usize;
    for s in segs {
        let end = pos + s.len as u64;
        if done < len && at + (done as u64) < end {
            let off = at + done as u64 - pos;
            let n = ((s.len as u64 - off) as usize).min(len - done);
            f(s.ipa.add(off), done, done + n).map_err(|_| QueueError::BufferOutsideRam)?;
            done += n;
        }
        pos = end;
    }
    if done == len {
        Ok(())
    } else {
        Err(QueueError::BadRequest)
    }
}

/// Copies `buf.len()` bytes from offset `at` of a segment stream.
fn read_at(
    segs: impl Iterator<Item = Segment>,
    mem: &dyn GuestMemory,
    at: u64,
    buf: &mut [u8],
) -> Result<(), QueueError> {
    let len = buf.len();
    for_range(segs, at, len, |ipa, from, to| mem.read(ipa, &mut buf[from..to]))
}

/// Copies `data` to offset `at` of a segment stream.
fn write_at(
    segs: impl Iterator<Item = Segment>,
    mem: &dyn GuestMemory,
    at: u64,
    data: &[u8],
) -> Result<(), QueueError> {
    for_range(segs, at, data.len(), |ipa, from, to| mem.write(ipa, &data[from..to]))
}

impl<B: BlockBackend> VirtioDevice for VirtioBlk<B> {
    const DEVICE_ID: u32 = 2;

    fn features(&self) -> u64 {
        let ro = if self.read_only { VIRTIO_BLK_F_RO } else { 0 };
        VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_FLUSH | ro
    }

    fn num_queues(&self) -> usize {
        1
    }

    /// struct virtio_blk_config: capacity (u64, sectors) at 0, size_max at
    /// 8 (not offered), seg_max at 12, geometry at 16, blk_size at 20; the
    /// rest reads 0.
    fn read_config(&self, offset: u32, size: u8) -> u32 {
        let mut cfg = [0u8; 24];
        cfg[..8].copy_from_slice(&self.backend.sectors().to_le_bytes());
        cfg[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        cfg[20..24].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        let mut v = [0u8; 4];
        for (i, b) in v.iter_mut().enumerate().take(size as usize) {
            *b = cfg.get(offset as usize + i).copied().unwrap_or(0);
        }
        u32::from_le_bytes(v)
    }

    /// Nothing in the configuration space is writable without
    /// VIRTIO_BLK_F_CONFIG_WCE (not offered).
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
            let (reads, writes) = (self.stats.reads, self.stats.writes);
            let len = self.serve(&chain, mem)?;
            q.push_used(mem, chain.head(), len)?;
            // What the request moved to or from the disk (a refused one: nothing).
            let moved = if self.stats.reads != reads {
                chain.writable_len()
            } else if self.stats.writes != writes {
                chain.readable_len()
            } else {
                0
            };
            budget.spend(moved);
            used = true;
        }
        Ok(used && q.needs_notification(mem)?)
    }

    fn reset(&mut self) {}
}

//! The virtio-mmio transport, the split-virtqueue walker and a device model
//! behind them (rng, console, blk), driven by a hostile driver: register
//! accesses in any order, descriptor tables and rings with any contents,
//! notifications, resets.
//!
//! Oracles, after every operation:
//! - the device wrote guest RAM only in a used ring or in a buffer some
//!   descriptor it read marks device-writable;
//! - one pass moved a bounded number of bytes (the budget of
//!   [`Budget::PASS`], one chain's worth past it, and the rings and
//!   descriptors of at most that many chains) and used at most
//!   `Budget::PASS.chains` chains;
//! - the interrupt line is high exactly while InterruptStatus is not 0,
//!   and Status holds only defined bits;
//! - a block device touches only its own sectors, and a read-only one
//!   never changes them.
//!
//! At the end the driver resets the device and sets it up again cleanly:
//! one request must be served as on a new device.

use crate::ram::{covered, Ram, BASE, SIZE};
use arbitrary::{Arbitrary, Unstructured};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tessera::mmio::MmioDevice;
use tessera::virtio::blk::{self, BackendError, BlockBackend, VirtioBlk};
use tessera::virtio::console::{ConsoleSink, VirtioConsole, MAX_CHAIN_OUTPUT};
use tessera::virtio::mmio::{reg, status, Budget, IrqSink, VirtioDevice, VirtioMmio, VIRTIO_F_INDIRECT_DESC};
use tessera::virtio::mmio::{INT_VRING, VIRTIO_F_VERSION_1};
use tessera::virtio::queue::{MAX_CHAIN_SEGMENTS, MAX_QUEUE_SIZE, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use tessera::virtio::rng::{EntropySource, VirtioRng, MAX_REQUEST_BYTES};

/// Queue q's descriptor table, available ring and used ring.
pub fn desc(q: usize) -> u64 {
    BASE + 0x1000 + q as u64 * 0x3000
}
pub fn avail(q: usize) -> u64 {
    desc(q) + 0x1000
}
pub fn used(q: usize) -> u64 {
    desc(q) + 0x2000
}
/// Indirect tables: 16 of 64 descriptors.
pub const IND: u64 = BASE + 0x8000;
/// Data buffers: the rest of RAM.
pub const BUF: u64 = BASE + 0xc000;
const BUF_SPACE: u64 = BASE + SIZE as u64 - BUF;

/// A used ring's bytes for a queue of the largest size.
const USED_BYTES: u64 = 4 + 8 * MAX_QUEUE_SIZE as u64 + 2;

/// A guest address: mostly somewhere meaningful, sometimes anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Addr {
    Buf(u16),
    Indirect(u8),
    /// Into a ring or table (a buffer over the rings is hostile, and legal).
    Ring(u16),
    Raw(u64),
}

impl Addr {
    pub fn at(self) -> u64 {
        match self {
            Addr::Buf(x) => BUF + (x as u64 * 16) % BUF_SPACE,
            Addr::Indirect(k) => IND + (k as u64 % 16) * 0x400,
            Addr::Ring(x) => BASE + 0x1000 + x as u64 % 0x6000,
            Addr::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Len {
    Small(u8),
    Medium(u16),
    Raw(u32),
}

impl Len {
    pub fn get(self) -> u32 {
        match self {
            Len::Small(n) => n as u32,
            Len::Medium(n) => n as u32,
            Len::Raw(n) => n,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Size {
    One,
    Two,
    Four,
}

impl Size {
    pub fn bytes(self) -> u8 {
        match self {
            Size::One => 1,
            Size::Two => 2,
            Size::Four => 4,
        }
    }
}

#[derive(Arbitrary, Debug)]
pub enum Op {
    /// The whole probe: reset, features, queues (of `1 << size % 9`
    /// entries, or `raw`), DRIVER_OK.
    Start {
        any_features: Option<u64>,
        sizes: [u8; 2],
        raw: Option<u16>,
    },
    /// A register write (the queue address registers keep the harness's
    /// layout; any other register, any value).
    Write {
        offset: u16,
        size: Size,
        value: u32,
    },
    Read {
        offset: u16,
        size: Size,
    },
    /// Descriptor `index` of queue `queue`'s table, or of indirect table k.
    Desc {
        queue: bool,
        indirect: Option<u8>,
        index: u8,
        addr: Addr,
        len: Len,
        flags: u8,
        next: u8,
    },
    /// Publishes `head` in the available ring.
    Offer {
        queue: bool,
        head: u8,
    },
    /// Sets the available index to anything.
    AvailIdx {
        queue: bool,
        idx: u16,
    },
    AvailFlags {
        queue: bool,
        flags: u16,
    },
    /// Any store into RAM (over a used ring, say).
    Poke {
        addr: Addr,
        value: u32,
    },
    Notify {
        queue: u8,
    },
    Ack {
        bits: u8,
    },
    /// The VM's vCPU passes by and continues what a pass left.
    Continue,
    Reset,
}

/// The interrupt line.
#[derive(Default)]
pub struct Line {
    pub level: AtomicBool,
    pub work_left: AtomicUsize,
}

impl IrqSink for Line {
    fn set_level(&self, level: bool) {
        self.level.store(level, Ordering::SeqCst);
    }
    fn work_left(&self) {
        self.work_left.fetch_add(1, Ordering::SeqCst);
    }
}

/// What the harness needs to know about a model.
pub trait Model: VirtioDevice + Sized {
    const QUEUES: usize;
    /// The most data bytes one chain moves.
    const CHAIN_DATA: u64;
    /// Checks what the model's backend saw after an operation.
    fn check_backend(&mut self) {}
    /// After a clean reset and setup: one request, served as on a new device.
    fn serves(h: &Harness<'_, Self>);
}

pub struct Harness<'a, D: Model> {
    pub dev: VirtioMmio<D, &'a Ram, &'a Line>,
    pub ram: &'a Ram,
    pub line: &'a Line,
    /// The driver's available index per queue.
    pub avail_idx: [u16; 2],
    pub sizes: [u16; 2],
}

fn wr(d: &impl MmioDevice, off: u32, v: u32) {
    d.write(0, off, 4, v)
}
fn rd(d: &impl MmioDevice, off: u32) -> u32 {
    d.read(0, off, 4)
}

const ALL_OK: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

impl<'a, D: Model> Harness<'a, D> {
    pub fn new(device: D, ram: &'a Ram, line: &'a Line) -> Self {
        Self { dev: VirtioMmio::new(device, ram, line), ram, line, avail_idx: [0; 2], sizes: [0; 2] }
    }

    /// Linux's probe, with `accept` as the driver's features and queues of
    /// `sizes` entries; returns whether DRIVER_OK stuck.
    pub fn start(&mut self, accept: u64, sizes: [u16; 2]) -> bool {
        let d = &self.dev;
        wr(d, reg::STATUS, 0);
        wr(d, reg::STATUS, status::ACKNOWLEDGE);
        wr(d, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        wr(d, reg::DRIVER_FEATURES_SEL, 1);
        wr(d, reg::DRIVER_FEATURES, (accept >> 32) as u32);
        wr(d, reg::DRIVER_FEATURES_SEL, 0);
        wr(d, reg::DRIVER_FEATURES, accept as u32);
        wr(d, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        for (q, &size) in sizes.iter().enumerate().take(D::QUEUES) {
            wr(d, reg::QUEUE_SEL, q as u32);
            wr(d, reg::QUEUE_NUM, size as u32);
            wr(d, reg::QUEUE_DESC_LOW, desc(q) as u32);
            wr(d, reg::QUEUE_DESC_HIGH, 0);
            wr(d, reg::QUEUE_DRIVER_LOW, avail(q) as u32);
            wr(d, reg::QUEUE_DRIVER_HIGH, 0);
            wr(d, reg::QUEUE_DEVICE_LOW, used(q) as u32);
            wr(d, reg::QUEUE_DEVICE_HIGH, 0);
            wr(d, reg::QUEUE_READY, 1);
            self.sizes[q] = size;
            self.avail_idx[q] = self.ram.r16(avail(q) + 2);
        }
        wr(d, reg::STATUS, ALL_OK);
        rd(d, reg::STATUS) == ALL_OK
    }

    /// A clean driver: rings zeroed, default features, queues of 8.
    pub fn restart(&mut self) {
        wr(&self.dev, reg::STATUS, 0);
        assert_eq!(rd(&self.dev, reg::STATUS), 0, "reset takes");
        assert!(!self.line.level.load(Ordering::SeqCst), "reset lowers the line");
        for q in 0..D::QUEUES {
            self.ram.poke(desc(q), &[0; 0x3000]);
        }
        assert!(self.start(VIRTIO_F_VERSION_1 | VIRTIO_F_INDIRECT_DESC, [8, 8]), "a clean probe works");
    }

    /// Publishes `head` on queue `q`.
    pub fn offer(&mut self, q: usize, head: u16) {
        let size = self.sizes[q].max(1);
        let idx = self.avail_idx[q];
        self.ram.w16(avail(q) + 4 + 2 * (idx % size) as u64, head);
        self.avail_idx[q] = idx.wrapping_add(1);
        self.ram.w16(avail(q) + 2, self.avail_idx[q]);
    }

    fn apply(&mut self, op: &Op) -> u64 {
        let d = &self.dev;
        let q = |b: bool| (b as usize).min(D::QUEUES - 1);
        match *op {
            Op::Start { any_features, sizes, raw } => {
                let accept = any_features.unwrap_or(VIRTIO_F_VERSION_1 | VIRTIO_F_INDIRECT_DESC | device_features(d));
                let size = |s: u8| raw.unwrap_or(1 << (s % 9));
                self.start(accept, [size(sizes[0]), size(sizes[1])]);
                // DRIVER_OK may find chains already available.
                D::QUEUES as u64
            }
            Op::Write { offset, size, value } => {
                let offset = offset as u32 % 0x200;
                if (reg::QUEUE_DESC_LOW..=reg::QUEUE_DEVICE_HIGH).contains(&(offset & !3)) {
                    return 0;
                }
                d.write(0, offset, size.bytes(), value);
                // A notification, or a status write, may start a pass.
                D::QUEUES as u64
            }
            Op::Read { offset, size } => {
                let _ = d.read(0, offset as u32 % 0x200, size.bytes());
                0
            }
            Op::Desc { queue, indirect, index, addr, len, flags, next } => {
                let (table, index) = match indirect {
                    Some(k) => (IND + (k as u64 % 16) * 0x400, index as u64 % 64),
                    None => (desc(q(queue)), index as u64),
                };
                self.ram.desc(table, index, addr.at(), len.get(), flags as u16 & 7, next as u16);
                0
            }
            Op::Offer { queue, head } => {
                self.offer(q(queue), head as u16);
                0
            }
            Op::AvailIdx { queue, idx } => {
                self.avail_idx[q(queue)] = idx;
                self.ram.w16(avail(q(queue)) + 2, idx);
                0
            }
            Op::AvailFlags { queue, flags } => {
                self.ram.w16(avail(q(queue)), flags);
                0
            }
            Op::Poke { addr, value } => {
                self.ram.poke(addr.at(), &value.to_le_bytes());
                0
            }
            Op::Notify { queue } => {
                wr(d, reg::QUEUE_NOTIFY, queue as u32 % 3);
                1
            }
            Op::Ack { bits } => {
                wr(d, reg::INTERRUPT_ACK, bits as u32 & 3);
                0
            }
            Op::Continue => {
                d.continue_work();
                D::QUEUES as u64
            }
            Op::Reset => {
                wr(d, reg::STATUS, 0);
                0
            }
        }
    }

    /// The oracles over what one operation (`passes` queue passes) did.
    fn check(&self, passes: u64) {
        let log = self.ram.take_log();
        let rings: Vec<(u64, u64)> = (0..D::QUEUES).map(|q| (used(q), USED_BYTES)).collect();
        for &(at, len) in &log.writes {
            assert!(
                covered(&rings, at, len) || covered(&log.writable, at, len),
                "device wrote {len} bytes at {at:#x}: neither a used ring nor a device-writable buffer"
            );
        }
        // Used elements: 8-byte writes into a used ring, leaving out those a
        // device-writable buffer also covers (a driver may point buffers at
        // its own used ring; those writes could be either).
        let used_elems = log
            .writes
            .iter()
            .filter(|&&(at, len)| len == 8 && covered(&rings, at, len) && !covered(&log.writable, at, len))
            .count() as u64;
        assert!(used_elems <= passes * Budget::PASS.chains as u64, "{used_elems} chains used in {passes} passes");
        // Per chain: its descriptors (an indirect table's too), its avail
        // entry, its used element and index.
        let per_chain_meta = 16 * (MAX_CHAIN_SEGMENTS as u64 + 1) + 16;
        let per_pass = Budget::PASS.bytes
            + D::CHAIN_DATA
            + (Budget::PASS.chains as u64 + 1) * (per_chain_meta + D::CHAIN_DATA.min(64));
        let moved = log.bytes_read + log.bytes_written;
        assert!(moved <= passes.max(1) * per_pass, "{moved} bytes moved by {passes} passes");
        let st = self.dev.status();
        assert_eq!(st & !0xcf, 0, "only defined status bits: {st:#x}");
        let level = self.line.level.load(Ordering::SeqCst);
        assert_eq!(level, self.dev.interrupt_status() != 0, "the line follows InterruptStatus");
        self.dev.with_device(|m| m.check_backend());
    }
}

/// Runs `ops` from `data` against `device`, then the clean-driver check.
pub fn run<D: Model>(data: &[u8], device: D) {
    let mut u = Unstructured::new(data);
    let ram = Ram::fresh();
    let line = Line::default();
    let mut h = Harness::new(device, ram, &line);
    // Most inputs start from a probed device.
    if u.arbitrary::<bool>().unwrap_or(true) {
        let accept = VIRTIO_F_VERSION_1 | VIRTIO_F_INDIRECT_DESC | device_features(&h.dev);
        h.start(accept, [8, 8]);
    }
    ram.take_log();
    let mut n = 0;
    while !u.is_empty() {
        let Ok(op) = u.arbitrary::<Op>() else { break };
        if crate::trace() {
            eprintln!("op {n}: {op:?}");
        }
        let passes = h.apply(&op);
        h.check(passes);
        n += 1;
        if n == 256 || u.is_empty() {
            break;
        }
    }
    h.restart();
    D::serves(&h);
}

/// The device's feature bits, as a driver reads them.
fn device_features(d: &impl MmioDevice) -> u64 {
    wr(d, reg::DEVICE_FEATURES_SEL, 1);
    let hi = rd(d, reg::DEVICE_FEATURES) as u64;
    wr(d, reg::DEVICE_FEATURES_SEL, 0);
    hi << 32 | rd(d, reg::DEVICE_FEATURES) as u64
}

/// Checks the used ring of queue `q` holds exactly `n` elements, the last
/// for `head` with length `len`.
fn assert_used<D: Model>(h: &Harness<'_, D>, q: usize, n: u16, head: u16, len: u32) {
    assert_eq!(h.ram.r16(used(q) + 2), n, "used index after a clean request");
    let e = used(q) + 4 + 8 * ((n - 1) % h.sizes[q]) as u64;
    assert_eq!((h.ram.r32(e), h.ram.r32(e + 4)), (head as u32, len), "used element after a clean request");
}

// --- rng ---------------------------------------------------------------

pub struct Counter(pub u8);
impl EntropySource for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
}

impl Model for VirtioRng<Counter> {
    const QUEUES: usize = 1;
    const CHAIN_DATA: u64 = MAX_REQUEST_BYTES as u64;
    fn serves(h: &Harness<'_, Self>) {
        h.ram.desc(desc(0), 0, BUF, 16, VIRTQ_DESC_F_WRITE, 0);
        h.ram.w16(avail(0) + 4, 0);
        h.ram.w16(avail(0) + 2, 1);
        wr(&h.dev, reg::QUEUE_NOTIFY, 0);
        assert_used(h, 0, 1, 0, 16);
        assert_ne!(h.dev.interrupt_status() & INT_VRING, 0);
    }
}

pub fn rng(data: &[u8]) {
    run(data, VirtioRng::new(Counter(0)));
}

// --- console -----------------------------------------------------------

#[derive(Default)]
pub struct Sink {
    pub bytes: Vec<u8>,
    pub total: u64,
}
impl ConsoleSink for Sink {
    fn write(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = (1usize << 16).saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

impl Model for VirtioConsole<Sink> {
    const QUEUES: usize = 2;
    const CHAIN_DATA: u64 = MAX_CHAIN_OUTPUT as u64;
    fn serves(h: &Harness<'_, Self>) {
        h.dev.with_device(|c| c.sink().bytes.clear());
        h.ram.poke(BUF, b"hello");
        h.ram.desc(desc(1), 0, BUF, 5, 0, 0);
        h.ram.w16(avail(1) + 4, 0);
        h.ram.w16(avail(1) + 2, 1);
        wr(&h.dev, reg::QUEUE_NOTIFY, 1);
        assert_used(h, 1, 1, 0, 0);
        assert_eq!(h.dev.with_device(|c| c.sink().bytes.clone()), b"hello");
    }
}

pub fn console(data: &[u8]) {
    run(data, VirtioConsole::new(Sink::default()));
}

// --- blk ---------------------------------------------------------------

/// A 64-sector disk that checks the model's promises to its backend.
pub struct Disk {
    pub data: Vec<u8>,
    pub read_only: bool,
    /// What a read-only disk must still hold.
    pub original: Vec<u8>,
    pub fail: bool,
}

const SECTORS: u64 = 64;

impl BlockBackend for Disk {
    fn sectors(&self) -> u64 {
        SECTORS
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let at = self.range(sector, buf.len());
        buf.copy_from_slice(&self.data[at]);
        if self.fail {
            return Err(BackendError);
        }
        Ok(())
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BackendError> {
        assert!(!self.read_only, "a write reached a read-only range's backend");
        let at = self.range(sector, buf.len());
        self.data[at].copy_from_slice(buf);
        if self.fail {
            return Err(BackendError);
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        if self.fail {
            return Err(BackendError);
        }
        Ok(())
    }
}

impl Disk {
    fn range(&self, sector: u64, len: usize) -> std::ops::Range<usize> {
        assert_eq!(len as u64 % blk::SECTOR, 0, "whole sectors only");
        let end = sector.checked_mul(blk::SECTOR).and_then(|s| s.checked_add(len as u64));
        assert!(end.is_some_and(|e| e <= SECTORS * blk::SECTOR), "sector {sector} + {len} bytes is past the range");
        let start = (sector * blk::SECTOR) as usize;
        start..start + len
    }
}

impl Model for VirtioBlk<Disk> {
    const QUEUES: usize = 1;
    const CHAIN_DATA: u64 = blk::MAX_REQUEST_DATA + 64;
    fn check_backend(&mut self) {
        let d = self.backend();
        if d.read_only {
            assert!(d.data == d.original, "a read-only range changed");
        }
    }
    fn serves(h: &Harness<'_, Self>) {
        h.dev.with_device(|b| b.backend().fail = false);
        let (ro, want) = h.dev.with_device(|b| (b.backend().read_only, b.backend().data[512..1024].to_vec()));
        // A write of sector 1 (refused on a read-only range), then a read.
        let pattern: Vec<u8> = (0..512u32).map(|i| (i * 7) as u8).collect();
        let mut n = 0;
        for (kind, head) in [(blk::VIRTIO_BLK_T_OUT, 0u16), (blk::VIRTIO_BLK_T_IN, 3)] {
            let hdr = BUF + head as u64 * 0x1000;
            let mut header = [0u8; 16];
            header[..4].copy_from_slice(&kind.to_le_bytes());
            header[8..].copy_from_slice(&1u64.to_le_bytes());
            h.ram.poke(hdr, &header);
            let data = hdr + 0x100;
            if kind == blk::VIRTIO_BLK_T_OUT {
                h.ram.poke(data, &pattern);
            }
            let data_flags = if kind == blk::VIRTIO_BLK_T_IN { VIRTQ_DESC_F_WRITE } else { 0 };
            let d = head as u64;
            h.ram.desc(desc(0), d, hdr, 16, VIRTQ_DESC_F_NEXT, head + 1);
            h.ram.desc(desc(0), d + 1, data, 512, data_flags | VIRTQ_DESC_F_NEXT, head + 2);
            h.ram.desc(desc(0), d + 2, hdr + 0x800, 1, VIRTQ_DESC_F_WRITE, 0);
            h.ram.w16(avail(0) + 4 + 2 * n, head);
            n += 1;
            h.ram.w16(avail(0) + 2, n as u16);
            wr(&h.dev, reg::QUEUE_NOTIFY, 0);
            let len = if kind == blk::VIRTIO_BLK_T_IN { 513 } else { 1 };
            assert_used(h, 0, n as u16, head, len);
            let mut st = [0u8];
            h.ram.peek(hdr + 0x800, &mut st);
            let ok = kind == blk::VIRTIO_BLK_T_IN || !ro;
            let want_status = if ok { blk::VIRTIO_BLK_S_OK } else { blk::VIRTIO_BLK_S_IOERR };
            assert_eq!(st[0], want_status, "status of request type {kind}");
        }
        let mut got = vec![0u8; 512];
        h.ram.peek(BUF + 3 * 0x1000 + 0x100, &mut got);
        assert_eq!(got, if ro { want } else { pattern }, "sector 1 reads back");
    }
}

pub fn block(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let read_only = u.arbitrary::<bool>().unwrap_or(false);
    let fail = u.ratio(1, 16).unwrap_or(false);
    let data: Vec<u8> = (0..SECTORS * blk::SECTOR).map(|i| (i / 512) as u8 ^ 0x5a).collect();
    let disk = Disk { original: data.clone(), data, read_only, fail };
    run(u.take_rest(), VirtioBlk::new(disk, read_only, b"fuzz"));
}

//! Host tests: a Vec-backed guest memory, a small driver laying out rings
//! the way Linux's `virtio_mmio` + `virtio_ring` do, and hostile inputs.

use super::mmio::{self, reg, status, VirtioMmio, INT_CONFIG, INT_VRING, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1};
use super::queue::*;
use super::rng::{EntropySource, VirtioRng};
use crate::addr::Ipa;
use crate::mmio::MmioDevice;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

pub(super) const BASE: u64 = 0x4000_0000;
pub(super) const RAM: usize = 1 << 20;
pub(super) const DESC: u64 = BASE + 0x1000;
pub(super) const AVAIL: u64 = BASE + 0x3000;
pub(super) const USED: u64 = BASE + 0x4000;
pub(super) const BUF: u64 = BASE + 0x10000;
pub(super) const IND: u64 = BASE + 0x8000;

pub(super) struct FakeMem {
    base: u64,
    bytes: Mutex<Vec<u8>>,
}

impl FakeMem {
    pub(super) fn new() -> Self {
        Self { base: BASE, bytes: Mutex::new(vec![0; RAM]) }
    }
    pub(super) fn leak() -> &'static Self {
        Box::leak(Box::new(Self::new()))
    }
    pub(super) fn w16(&self, at: u64, v: u16) {
        self.write(Ipa(at), &v.to_le_bytes()).unwrap()
    }
    pub(super) fn w32(&self, at: u64, v: u32) {
        self.write(Ipa(at), &v.to_le_bytes()).unwrap()
    }
    pub(super) fn r16(&self, at: u64) -> u16 {
        let mut b = [0; 2];
        self.read(Ipa(at), &mut b).unwrap();
        u16::from_le_bytes(b)
    }
    pub(super) fn r32(&self, at: u64) -> u32 {
        let mut b = [0; 4];
        self.read(Ipa(at), &mut b).unwrap();
        u32::from_le_bytes(b)
    }
    pub(super) fn desc(&self, table: u64, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..].copy_from_slice(&next.to_le_bytes());
        self.write(Ipa(table + 16 * i), &b).unwrap();
    }
    /// Publishes `head` in the available ring of a queue of `size`.
    pub(super) fn offer(&self, size: u16, head: u16) {
        let idx = self.r16(AVAIL + 2);
        self.w16(AVAIL + 4 + 2 * (idx % size) as u64, head);
        self.w16(AVAIL + 2, idx.wrapping_add(1));
    }
}

impl GuestMemory for FakeMem {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), OutsideRam> {
        if !self.contains(ipa, buf.len() as u64) {
            return Err(OutsideRam);
        }
        let off = (ipa.0 - self.base) as usize;
        buf.copy_from_slice(&self.bytes.lock().unwrap()[off..off + buf.len()]);
        Ok(())
    }
    fn write(&self, ipa: Ipa, data: &[u8]) -> Result<(), OutsideRam> {
        if !self.contains(ipa, data.len() as u64) {
            return Err(OutsideRam);
        }
        let off = (ipa.0 - self.base) as usize;
        self.bytes.lock().unwrap()[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn contains(&self, ipa: Ipa, len: u64) -> bool {
        ipa.0 >= self.base && ipa.0.checked_add(len).is_some_and(|end| end <= self.base + RAM as u64)
    }
}

/// Counts up from 1: predictable "entropy".
struct Counter(u8);
impl EntropySource for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
}

#[derive(Default)]
pub(super) struct Line {
    pub(super) level: AtomicBool,
    pub(super) calls: AtomicUsize,
    /// How often a pass said it left work.
    pub(super) work_left: AtomicUsize,
}
impl mmio::IrqSink for Line {
    fn set_level(&self, level: bool) {
        self.level.store(level, Ordering::SeqCst);
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
    fn work_left(&self) {
        self.work_left.fetch_add(1, Ordering::SeqCst);
    }
}

type Rng = VirtioMmio<VirtioRng<Counter>, &'static FakeMem, &'static Line>;

fn rng() -> (Rng, &'static FakeMem, &'static Line) {
    let mem = FakeMem::leak();
    let line: &'static Line = Box::leak(Box::default());
    (VirtioMmio::new(VirtioRng::new(Counter(0)), mem, line), mem, line)
}

pub(super) fn rd(d: &impl MmioDevice, off: u32) -> u32 {
    d.read(0, off, 4)
}
pub(super) fn wr(d: &impl MmioDevice, off: u32, v: u32) {
    d.write(0, off, 4, v)
}

/// Linux's virtio_mmio probe and virtio_dev_probe: returns whether
/// FEATURES_OK stuck.
pub(super) fn handshake(d: &impl MmioDevice, accept: u64) -> bool {
    assert_eq!(rd(d, reg::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(rd(d, reg::VERSION), 2);
    wr(d, reg::STATUS, 0);
    wr(d, reg::STATUS, status::ACKNOWLEDGE);
    wr(d, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wr(d, reg::DEVICE_FEATURES_SEL, 1);
    let hi = rd(d, reg::DEVICE_FEATURES) as u64;
    wr(d, reg::DEVICE_FEATURES_SEL, 0);
    let offered = hi << 32 | rd(d, reg::DEVICE_FEATURES) as u64;
    assert_eq!(offered & VIRTIO_F_VERSION_1, VIRTIO_F_VERSION_1);
    wr(d, reg::DRIVER_FEATURES_SEL, 1);
    wr(d, reg::DRIVER_FEATURES, (accept >> 32) as u32);
    wr(d, reg::DRIVER_FEATURES_SEL, 0);
    wr(d, reg::DRIVER_FEATURES, accept as u32);
    wr(d, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    rd(d, reg::STATUS) & status::FEATURES_OK != 0
}

/// vm_setup_vq for queue 0 with `size` entries.
pub(super) fn setup_queue(d: &impl MmioDevice, size: u32) {
    wr(d, reg::QUEUE_SEL, 0);
    assert_eq!(rd(d, reg::QUEUE_READY), 0);
    assert_eq!(rd(d, reg::QUEUE_NUM_MAX), MAX_QUEUE_SIZE as u32);
    wr(d, reg::QUEUE_NUM, size);
    wr(d, reg::QUEUE_DESC_LOW, DESC as u32);
    wr(d, reg::QUEUE_DESC_HIGH, (DESC >> 32) as u32);
    wr(d, reg::QUEUE_DRIVER_LOW, AVAIL as u32);
    wr(d, reg::QUEUE_DRIVER_HIGH, 0);
    wr(d, reg::QUEUE_DEVICE_LOW, USED as u32);
    wr(d, reg::QUEUE_DEVICE_HIGH, 0);
    wr(d, reg::QUEUE_READY, 1);
    assert_eq!(rd(d, reg::QUEUE_READY), 1);
}

pub(super) const ALL_OK: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

fn ready_rng(features: u64) -> (Rng, &'static FakeMem, &'static Line) {
    let (d, mem, line) = rng();
    assert_eq!(rd(&d, reg::DEVICE_ID), 4);
    assert!(handshake(&d, features));
    setup_queue(&d, 8);
    wr(&d, reg::STATUS, ALL_OK);
    assert_eq!(rd(&d, reg::STATUS), ALL_OK);
    (d, mem, line)
}

#[test]
fn rng_round_trip() {
    let (d, mem, line) = ready_rng(VIRTIO_F_VERSION_1);
    assert_eq!(rd(&d, reg::VENDOR_ID), mmio::VENDOR_ID);
    mem.desc(DESC, 0, BUF, 16, VIRTQ_DESC_F_WRITE, 0);
    mem.offer(8, 0);
    wr(&d, reg::QUEUE_NOTIFY, 0);
    assert_eq!(mem.r16(USED + 2), 1, "used idx");
    assert_eq!(mem.r32(USED + 4), 0, "used id");
    assert_eq!(mem.r32(USED + 8), 16, "used len");
    let mut got = [0u8; 16];
    mem.read(Ipa(BUF), &mut got).unwrap();
    assert_eq!(got, core::array::from_fn::<u8, 16, _>(|i| i as u8 + 1));
    assert_eq!(rd(&d, reg::INTERRUPT_STATUS), INT_VRING);
    assert!(line.level.load(Ordering::SeqCst));
    wr(&d, reg::INTERRUPT_ACK, INT_VRING);
    assert_eq!(rd(&d, reg::INTERRUPT_STATUS), 0);
    assert!(!line.level.load(Ordering::SeqCst));

    // A second request, split over two writable buffers, with the driver
    // asking for no interrupt.
    mem.w16(AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
    mem.desc(DESC, 1, BUF + 0x100, 3, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
    mem.desc(DESC, 2, BUF + 0x200, 5, VIRTQ_DESC_F_WRITE, 0);
    mem.offer(8, 1);
    wr(&d, reg::QUEUE_NOTIFY, 0);
    assert_eq!(mem.r16(USED + 2), 2);
    assert_eq!((mem.r32(USED + 12), mem.r32(USED + 16)), (1, 8));
    assert_eq!(rd(&d, reg::INTERRUPT_STATUS), 0);
    assert_eq!(rd(&d, reg::STATUS), ALL_OK);

    // Reset.
    wr(&d, reg::STATUS, 0);
    assert_eq!(rd(&d, reg::STATUS), 0);
    assert_eq!(rd(&d, reg::QUEUE_READY), 0);
    assert_eq!(rd(&d, reg::INTERRUPT_STATUS), 0);
    assert!(!line.level.load(Ordering::SeqCst));
}

#[test]
fn rng_indirect_when_negotiated() {
    let (d, mem, _) = ready_rng(VIRTIO_F_VERSION_1 | VIRTIO_F_INDIRECT_DESC);
    mem.desc(IND, 0, BUF, 4, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    mem.desc(IND, 1, BUF + 4, 4, VIRTQ_DESC_F_WRITE, 0);
    mem.desc(DESC, 0, IND, 32, VIRTQ_DESC_F_INDIRECT, 0);
    mem.offer(8, 0);
    wr(&d, reg::QUEUE_NOTIFY, 0);
    assert_eq!(mem.r32(USED + 8), 8);
    assert_eq!(rd(&d, reg::STATUS), ALL_OK);
}

#[test]
fn feature_negotiation() {
    let (d, _, _) = rng();
    assert!(!handshake(&d, 0), "VERSION_1 is required");
    assert!(!handshake(&d, VIRTIO_F_VERSION_1 | 1 << 5), "unknown feature refused");
    assert!(!handshake(&d, VIRTIO_F_VERSION_1 | 1 << 40), "unknown high feature refused");
    assert!(handshake(&d, VIRTIO_F_VERSION_1 | VIRTIO_F_INDIRECT_DESC));
    // Feature words above 1 read as 0; a set bit there is refused.
    wr(&d, reg::STATUS, 0);
    wr(&d, reg::DEVICE_FEATURES_SEL, 2);
    assert_eq!(rd(&d, reg::DEVICE_FEATURES), 0);
    wr(&d, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wr(&d, reg::DRIVER_FEATURES_SEL, 1);
    wr(&d, reg::DRIVER_FEATURES, 1);
    wr(&d, reg::DRIVER_FEATURES_SEL, 2);
    wr(&d, reg::DRIVER_FEATURES, 1);
    wr(&d, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    assert_eq!(rd(&d, reg::STATUS), status::ACKNOWLEDGE | status::DRIVER);
}

#[test]
fn status_state_machine() {
    let (d, _, _) = rng();
    // Out of order bits are not taken.
    wr(&d, reg::STATUS, status::DRIVER_OK | status::FEATURES_OK | status::DRIVER);
    assert_eq!(rd(&d, reg::STATUS), 0);
    wr(&d, reg::STATUS, status::ACKNOWLEDGE);
    wr(&d, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK);
    assert_eq!(rd(&d, reg::STATUS), status::ACKNOWLEDGE | status::DRIVER);
    // Clearing a bit is ignored; the driver cannot set NEEDS_RESET.
    wr(&d, reg::STATUS, status::ACKNOWLEDGE);
    assert_eq!(rd(&d, reg::STATUS), status::ACKNOWLEDGE | status::DRIVER);
    wr(&d, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::DEVICE_NEEDS_RESET);
    assert_eq!(rd(&d, reg::STATUS), status::ACKNOWLEDGE | status::DRIVER);
    wr(&d, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FAILED);
    assert_eq!(rd(&d, reg::STATUS), status::ACKNOWLEDGE | status::DRIVER | status::FAILED);
    // Non-32-bit register accesses are ignored.
    d.write(0, reg::STATUS, 1, 0);
    d.write(0, reg::STATUS, 2, 0);
    assert_ne!(rd(&d, reg::STATUS), 0);
    assert_eq!(d.read(0, reg::MAGIC_VALUE, 2), 0);
}

#[test]
fn queue_error_needs_reset_and_config_interrupt() {
    let (d, mem, line) = ready_rng(VIRTIO_F_VERSION_1);
    mem.desc(DESC, 0, BUF, 16, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 9);
    mem.offer(8, 0);
    wr(&d, reg::QUEUE_NOTIFY, 0);
    assert_eq!(rd(&d, reg::STATUS), ALL_OK | status::DEVICE_NEEDS_RESET);
    assert_eq!(rd(&d, reg::INTERRUPT_STATUS), INT_CONFIG);
    assert!(line.level.load(Ordering::SeqCst));
    assert_eq!(mem.r16(USED + 2), 0, "nothing used");
    // Further notifies are ignored until reset.
    mem.desc(DESC, 0, BUF, 16, VIRTQ_DESC_F_WRITE, 0);
    wr(&d, reg::QUEUE_NOTIFY, 0);
    assert_eq!(mem.r16(USED + 2), 0);
    wr(&d, reg::INTERRUPT_ACK, INT_CONFIG);
    assert!(!line.level.load(Ordering::SeqCst));
    wr(&d, reg::STATUS, 0);
    assert_eq!(rd(&d, reg::STATUS), 0);
}

#[test]
fn bad_queue_setup_via_mmio() {
    for (size, desc) in [(3u32, DESC), (512, DESC), (0, DESC), (0x1_0008, DESC), (8, BASE + RAM as u64), (8, DESC + 8)]
    {
        let (d, _, _) = rng();
        assert!(handshake(&d, VIRTIO_F_VERSION_1));
        wr(&d, reg::QUEUE_NUM, size);
        wr(&d, reg::QUEUE_DESC_LOW, desc as u32);
        wr(&d, reg::QUEUE_DRIVER_LOW, AVAIL as u32);
        wr(&d, reg::QUEUE_DEVICE_LOW, USED as u32);
        wr(&d, reg::QUEUE_READY, 1);
        assert_ne!(rd(&d, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0, "size {size} desc {desc:#x}");
    }
}

#[test]
fn notify_ignored_when_not_applicable() {
    let (d, mem, line) = rng();
    assert!(handshake(&d, VIRTIO_F_VERSION_1));
    setup_queue(&d, 8);
    mem.desc(DESC, 0, BUF, 16, VIRTQ_DESC_F_WRITE, 0);
    mem.offer(8, 0);
    wr(&d, reg::QUEUE_NOTIFY, 0); // before DRIVER_OK
    wr(&d, reg::STATUS, ALL_OK);
    wr(&d, reg::QUEUE_NOTIFY, 1); // no such queue
    wr(&d, reg::QUEUE_NOTIFY, u32::MAX);
    wr(&d, reg::QUEUE_READY, 0);
    wr(&d, reg::QUEUE_NOTIFY, 0); // not ready
    assert_eq!(mem.r16(USED + 2), 0);
    assert_eq!(rd(&d, reg::STATUS), ALL_OK);
    assert!(!line.level.load(Ordering::SeqCst));
    // Queue registers of a missing queue.
    wr(&d, reg::QUEUE_SEL, 5);
    assert_eq!(rd(&d, reg::QUEUE_NUM_MAX), 0);
    wr(&d, reg::QUEUE_READY, 1);
    assert_eq!(rd(&d, reg::QUEUE_READY), 0);
    // Re-enabling queue 0 picks the request up.
    wr(&d, reg::QUEUE_SEL, 0);
    wr(&d, reg::QUEUE_READY, 1);
    wr(&d, reg::QUEUE_NOTIFY, 0);
    assert_eq!(mem.r16(USED + 2), 1);
}

/// A queue over `mem` with the test layout, ready, of `size`.
fn queue(size: u16) -> Queue {
    let mut q = Queue::new(MAX_QUEUE_SIZE);
    q.size = size;
    q.desc = Ipa(DESC);
    q.driver = Ipa(AVAIL);
    q.device = Ipa(USED);
    q.ready = true;
    q.indirect = true;
    q
}

#[test]
fn pop_table() {
    use QueueError::*;
    const W: u16 = VIRTQ_DESC_F_WRITE;
    const N: u16 = VIRTQ_DESC_F_NEXT;
    const I: u16 = VIRTQ_DESC_F_INDIRECT;
    type Setup = fn(&FakeMem, &mut Queue);
    let cases: &[(&str, Setup, QueueError)] = &[
        ("not ready", |_, q| q.ready = false, NotReady),
        ("size 0", |_, q| q.size = 0, BadSize),
        ("size 3", |_, q| q.size = 3, BadSize),
        ("size 512", |_, q| q.size = 512, BadSize),
        ("desc outside", |_, q| q.desc = Ipa(BASE + RAM as u64 - 16), DescTableOutsideRam),
        ("desc below", |_, q| q.desc = Ipa(BASE - 0x1000), DescTableOutsideRam),
        ("desc misaligned", |_, q| q.desc = Ipa(DESC + 8), DescTableOutsideRam),
        ("desc wraps", |_, q| q.desc = Ipa(u64::MAX - 15), DescTableOutsideRam),
        ("avail outside", |_, q| q.driver = Ipa(0), AvailRingOutsideRam),
        ("avail misaligned", |_, q| q.driver = Ipa(AVAIL + 1), AvailRingOutsideRam),
        ("used outside", |_, q| q.device = Ipa(BASE + RAM as u64), UsedRingOutsideRam),
        ("used misaligned", |_, q| q.device = Ipa(USED + 2), UsedRingOutsideRam),
        ("avail jump", |m, _| m.w16(AVAIL + 2, 9), AvailIndexJump),
        ("head >= size", |m, _| m.w16(AVAIL + 4, 8), DescIndexOutOfRange),
        ("next >= size", |m, _| m.desc(DESC, 0, BUF, 1, N, 8), DescIndexOutOfRange),
        (
            "2-loop",
            |m, _| {
                m.desc(DESC, 0, BUF, 1, N, 1);
                m.desc(DESC, 1, BUF, 1, N, 0);
            },
            ChainLoop,
        ),
        ("self loop", |m, _| m.desc(DESC, 0, BUF, 1, N, 0), ChainLoop),
        ("huge len", |m, _| m.desc(DESC, 0, BUF, u32::MAX, W, 0), ChainTooBig),
        (
            "bytes over bound",
            |m, q| {
                q.size = 64;
                for i in 0..64 {
                    m.desc(DESC, i, BUF, 512 << 10, W | N, i as u16 + 1);
                }
            },
            ChainTooBig,
        ),
        ("buffer outside", |m, _| m.desc(DESC, 0, BASE + RAM as u64 - 4, 8, W, 0), BufferOutsideRam),
        ("buffer wraps", |m, _| m.desc(DESC, 0, u64::MAX - 3, 8, W, 0), BufferOutsideRam),
        (
            "readable after writable",
            |m, _| {
                m.desc(DESC, 0, BUF, 4, W | N, 1);
                m.desc(DESC, 1, BUF, 4, 0, 0);
            },
            ReadableAfterWritable,
        ),
        (
            "readable after empty writable",
            |m, _| {
                m.desc(DESC, 0, BUF, 0, W | N, 1);
                m.desc(DESC, 1, BUF, 4, 0, 0);
            },
            ReadableAfterWritable,
        ),
        (
            "indirect not negotiated",
            |m, q| {
                q.indirect = false;
                m.desc(DESC, 0, IND, 16, I, 0);
            },
            IndirectNotNegotiated,
        ),
        ("indirect with next", |m, _| m.desc(DESC, 0, IND, 16, I | N, 1), IndirectWithNext),
        ("indirect len 0", |m, _| m.desc(DESC, 0, IND, 0, I, 0), IndirectBadLength),
        ("indirect len 24", |m, _| m.desc(DESC, 0, IND, 24, I, 0), IndirectBadLength),
        ("indirect huge", |m, _| m.desc(DESC, 0, IND, !15, I, 0), IndirectTooLong),
        ("indirect 257", |m, _| m.desc(DESC, 0, IND, 257 * 16, I, 0), IndirectTooLong),
        ("indirect outside", |m, _| m.desc(DESC, 0, BASE + RAM as u64 - 16, 32, I, 0), IndirectOutsideRam),
        (
            "nested indirect",
            |m, _| {
                m.desc(DESC, 0, IND, 16, I, 0);
                m.desc(IND, 0, IND + 0x100, 16, I, 0);
            },
            NestedIndirect,
        ),
        (
            "indirect next out of table",
            |m, _| {
                m.desc(DESC, 0, IND, 32, I, 0);
                m.desc(IND, 0, BUF, 4, N, 2);
            },
            IndirectIndexOutOfRange,
        ),
        (
            "indirect loop",
            |m, _| {
                m.desc(DESC, 0, IND, 32, I, 0);
                m.desc(IND, 0, BUF, 4, N, 1);
                m.desc(IND, 1, BUF, 4, N, 0);
            },
            IndirectLoop,
        ),
        (
            "indirect buffer outside",
            |m, _| {
                m.desc(DESC, 0, IND, 16, I, 0);
                m.desc(IND, 0, 0, 4, 0, 0);
            },
            BufferOutsideRam,
        ),
        (
            "indirect readable after writable",
            |m, _| {
                m.desc(DESC, 0, BUF, 4, W | N, 1);
                m.desc(DESC, 1, IND, 16, I, 0);
                m.desc(IND, 0, BUF, 4, 0, 0);
            },
            ReadableAfterWritable,
        ),
        (
            "too many segments",
            |m, _| {
                m.desc(DESC, 0, BUF, 4, N, 1);
                m.desc(DESC, 1, IND, 256 * 16, I, 0);
                for i in 0..256 {
                    m.desc(IND, i, BUF, 4, N, i as u16 + 1);
                }
                m.desc(IND, 255, BUF, 4, 0, 0);
            },
            TooManySegments,
        ),
    ];
    for (name, setup, want) in cases {
        let mem = FakeMem::new();
        let mut q = queue(8);
        mem.desc(DESC, 0, BUF, 16, W, 0);
        mem.offer(8, 0);
        setup(&mem, &mut q);
        let before = (q.next_avail, q.next_used);
        match q.pop(&mem) {
            Err(e) => assert_eq!(e, *want, "{name}: got {}", e.describe()),
            Ok(c) => panic!("{name}: accepted {c:?}"),
        }
        assert_eq!((q.next_avail, q.next_used), before, "{name}: position moved");
        assert!(!want.describe().is_empty());
    }
}

#[test]
fn pop_accepts_valid_chains() {
    let mem = FakeMem::new();
    let mut q = queue(4);
    assert!(q.pop(&mem).unwrap().is_none(), "empty");
    // Readable header, zero-length readable, then an indirect table of
    // writable buffers.
    mem.w32(BUF, 0xdead_beef);
    mem.desc(DESC, 3, BUF, 4, VIRTQ_DESC_F_NEXT, 1);
    mem.desc(DESC, 1, BUF + 4, 0, VIRTQ_DESC_F_NEXT, 2);
    mem.desc(DESC, 2, IND, 48, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0);
    mem.desc(IND, 0, BUF + 0x100, 2, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
    mem.desc(IND, 2, BUF + 0x200, 3, VIRTQ_DESC_F_WRITE, 0);
    mem.offer(4, 3);
    let c = q.pop(&mem).unwrap().unwrap();
    assert_eq!(c.head(), 3);
    assert_eq!((c.readable_len(), c.writable_len()), (4, 5));
    let segs: Vec<_> = c.segments().map(|s| (s.ipa.0, s.len, s.writable)).collect();
    assert_eq!(segs, [(BUF, 4, false), (BUF + 4, 0, false), (BUF + 0x100, 2, true), (BUF + 0x200, 3, true)]);
    let mut hdr = [0u8; 8];
    assert_eq!(c.read_readable(&mem, &mut hdr).unwrap(), 4);
    assert_eq!(&hdr[..4], &0xdead_beefu32.to_le_bytes());
    assert_eq!(c.write_writable(&mem, b"abcdefgh").unwrap(), 5);
    let mut out = [0u8; 3];
    mem.read(Ipa(BUF + 0x200), &mut out).unwrap();
    assert_eq!(&out, b"cde");
    q.push_used(&mem, c.head(), 5).unwrap();
    assert_eq!((mem.r16(USED + 2), mem.r32(USED + 4), mem.r32(USED + 8)), (1, 3, 5));
    assert!(q.needs_notification(&mem).unwrap());
    mem.w16(AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
    assert!(!q.needs_notification(&mem).unwrap());
    assert_eq!(q.push_used(&mem, 4, 0), Err(QueueError::BadUsedHead));
    assert!(q.pop(&mem).unwrap().is_none());

    // Index wrap-around: positions are free-running u16s.
    let mut q = queue(4);
    q.next_avail = u16::MAX;
    q.next_used = u16::MAX;
    mem.w16(AVAIL + 2, u16::MAX);
    mem.desc(DESC, 0, BUF, 1, VIRTQ_DESC_F_WRITE, 0);
    mem.offer(4, 0);
    mem.offer(4, 0);
    for _ in 0..2 {
        let c = q.pop(&mem).unwrap().unwrap();
        q.push_used(&mem, c.head(), 1).unwrap();
    }
    assert_eq!(mem.r16(USED + 2), 1);
    assert!(q.pop(&mem).unwrap().is_none());
}

/// xorshift64: deterministic pseudo-random values.
struct Prng(u64);
impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn every_register_every_size_random_values() {
    let mut r = Prng(0x1234_5678_9abc_def1);
    for round in 0..40 {
        let (d, mem, _) = if round % 2 == 0 { ready_rng(VIRTIO_F_VERSION_1 | VIRTIO_F_INDIRECT_DESC) } else { rng() };
        // Random ring contents, descriptors pointing mostly into RAM.
        for i in 0..8 {
            let addr = if r.next().is_multiple_of(4) { r.next() } else { BASE + r.next() % RAM as u64 };
            let len = if r.next().is_multiple_of(4) { r.next() as u32 } else { r.next() as u32 % 64 };
            mem.desc(DESC, i, addr, len, r.next() as u16 & 7, r.next() as u16 % 10);
            mem.desc(IND, i, addr, len, r.next() as u16 & 7, r.next() as u16 % 10);
        }
        mem.w16(AVAIL + 2, r.next() as u16 % 12);
        for i in 0..8 {
            mem.w16(AVAIL + 4 + 2 * i, r.next() as u16 % 10);
        }
        for offset in 0..0x200u32 {
            for size in [1u8, 2, 4] {
                let _ = d.read(0, offset, size);
                let v = match r.next() % 4 {
                    0 => 0,
                    1 => r.next() as u32 & 0xff,
                    _ => r.next() as u32,
                };
                // Skip resets most of the time so later registers see a
                // configured device.
                if offset == reg::STATUS && v == 0 && !r.next().is_multiple_of(8) {
                    continue;
                }
                d.write(0, offset, size, v);
                wr(&d, reg::QUEUE_NOTIFY, 0);
            }
        }
        let st = rd(&d, reg::STATUS);
        assert_eq!(st & !0xcf, 0, "only defined status bits: {st:#x}");
        serves_after_reset(&d, mem);
    }
}

/// Oracle after a storm: the device is not wedged. A reset and a fresh
/// driver (clean rings) get a request served exactly as on a new device.
fn serves_after_reset(d: &Rng, mem: &FakeMem) {
    wr(d, reg::STATUS, 0);
    assert_eq!(rd(d, reg::STATUS), 0, "reset takes");
    for at in (AVAIL..AVAIL + 0x40).chain(USED..USED + 0x80).step_by(2) {
        mem.w16(at, 0);
    }
    assert!(handshake(d, VIRTIO_F_VERSION_1));
    setup_queue(d, 8);
    wr(d, reg::STATUS, ALL_OK);
    assert_eq!(rd(d, reg::STATUS), ALL_OK);
    mem.desc(DESC, 0, BUF, 16, VIRTQ_DESC_F_WRITE, 0);
    mem.offer(8, 0);
    wr(d, reg::QUEUE_NOTIFY, 0);
    assert_eq!(mem.r16(USED + 2), 1, "used idx after reset");
    assert_eq!((mem.r32(USED + 4), mem.r32(USED + 8)), (0, 16), "used element after reset");
    assert_eq!(rd(d, reg::INTERRUPT_STATUS), INT_VRING);
}

#[test]
fn random_rings_never_panic() {
    let mut r = Prng(0xfeed_f00d_dead_beef);
    for _ in 0..2000 {
        let mem = FakeMem::new();
        let mut q = queue(8);
        q.indirect = r.next().is_multiple_of(2);
        for i in 0..8 {
            for table in [DESC, IND] {
                let addr = if r.next().is_multiple_of(8) { r.next() } else { BASE + r.next() % RAM as u64 };
                let flags = r.next() as u16 & 7;
                let len = if flags & VIRTQ_DESC_F_INDIRECT != 0 {
                    (r.next() % 12) as u32 * 8
                } else {
                    r.next() as u32 % 4096
                };
                let addr = if flags & VIRTQ_DESC_F_INDIRECT != 0 && r.next().is_multiple_of(2) { IND } else { addr };
                mem.desc(table, i, addr, len, flags, r.next() as u16 % 10);
            }
        }
        mem.w16(AVAIL + 2, r.next() as u16 % 10);
        for i in 0..8 {
            mem.w16(AVAIL + 4 + 2 * i, r.next() as u16 % 9);
        }
        for _ in 0..10 {
            match q.pop(&mem) {
                Ok(Some(c)) => {
                    assert!(c.segments().count() <= MAX_CHAIN_SEGMENTS);
                    assert!(c.readable_len() + c.writable_len() <= MAX_CHAIN_BYTES);
                    let mut buf = [0u8; 64];
                    c.read_readable(&mem, &mut buf).unwrap();
                    c.write_writable(&mem, &buf).unwrap();
                    q.push_used(&mem, c.head(), 0).unwrap();
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// The interrupt line is driven with the state lock released: a sink that
/// reads a register (taking that lock) must not deadlock.
#[test]
fn irq_sink_called_without_state_lock() {
    struct Reentrant(
        std::sync::OnceLock<&'static VirtioMmio<VirtioRng<Counter>, &'static FakeMem, &'static Reentrant>>,
    );
    impl mmio::IrqSink for Reentrant {
        fn set_level(&self, level: bool) {
            if let Some(d) = self.0.get() {
                assert_eq!(level, rd(*d, reg::INTERRUPT_STATUS) != 0);
                let _ = rd(*d, reg::STATUS);
            }
        }
    }
    let mem = FakeMem::leak();
    let sink: &'static Reentrant = Box::leak(Box::new(Reentrant(std::sync::OnceLock::new())));
    let d = Box::leak(Box::new(VirtioMmio::new(VirtioRng::new(Counter(0)), mem, sink)));
    sink.0.set(d).ok().unwrap();
    assert!(handshake(d, VIRTIO_F_VERSION_1));
    setup_queue(d, 8);
    wr(d, reg::STATUS, ALL_OK);
    mem.desc(DESC, 0, BUF, 16, VIRTQ_DESC_F_WRITE, 0);
    mem.offer(8, 0);
    wr(d, reg::QUEUE_NOTIFY, 0);
    wr(d, reg::INTERRUPT_ACK, INT_VRING);
    d.config_changed();
    assert_eq!(rd(d, reg::INTERRUPT_STATUS), INT_CONFIG);
    assert_eq!(rd(d, reg::CONFIG_GENERATION), 1);
    wr(d, reg::STATUS, 0);
}

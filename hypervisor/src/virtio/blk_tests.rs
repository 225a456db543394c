//! Host tests of virtio-blk and virtio-console through the MMIO transport,
//! with the fake guest memory and driver steps of `tests.rs`.

use super::blk::*;
use super::console::{ConsoleSink, VirtioConsole};
use super::mmio::{reg, status, VirtioMmio, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1};
use super::queue::{GuestMemory, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use super::tests::{handshake, rd, setup_queue, wr, FakeMem, Line, ALL_OK, AVAIL, BUF, DESC, USED};
use crate::addr::Ipa;
use crate::mmio::MmioDevice;
use std::sync::{Arc, Mutex};

/// A disk range in a Vec, with a log of what reached it.
#[derive(Clone, Default)]
struct Disk {
    bytes: Arc<Mutex<Vec<u8>>>,
    flushes: Arc<Mutex<u32>>,
    calls: Arc<Mutex<Vec<(char, u64, usize)>>>,
    fail: bool,
}

impl Disk {
    fn new(sectors: u64) -> Self {
        let bytes = (0..sectors * SECTOR).map(|i| (i / SECTOR) as u8 ^ i as u8).collect();
        Self { bytes: Arc::new(Mutex::new(bytes)), ..Default::default() }
    }
}

impl BlockBackend for Disk {
    fn sectors(&self) -> u64 {
        self.bytes.lock().unwrap().len() as u64 / SECTOR
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        self.calls.lock().unwrap().push(('r', sector, buf.len()));
        if self.fail {
            return Err(BackendError);
        }
        let at = (sector * SECTOR) as usize;
        buf.copy_from_slice(&self.bytes.lock().unwrap()[at..at + buf.len()]);
        Ok(())
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BackendError> {
        self.calls.lock().unwrap().push(('w', sector, buf.len()));
        let at = (sector * SECTOR) as usize;
        self.bytes.lock().unwrap()[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        *self.flushes.lock().unwrap() += 1;
        Ok(())
    }
}

type Blk = VirtioMmio<VirtioBlk<Disk>, &'static FakeMem, &'static Line>;

fn ready_blk(disk: Disk, read_only: bool, features: u64) -> (Blk, &'static FakeMem, &'static Line) {
    let mem = FakeMem::leak();
    let line: &'static Line = Box::leak(Box::default());
    let d = VirtioMmio::new(VirtioBlk::new(disk, read_only, b"disk0"), mem, line);
    assert_eq!(rd(&d, reg::DEVICE_ID), 2);
    assert!(handshake(&d, features));
    setup_queue(&d, 8);
    wr(&d, reg::STATUS, ALL_OK);
    assert_eq!(rd(&d, reg::STATUS), ALL_OK);
    (d, mem, line)
}

const HDR: u64 = BUF;
const DATA: u64 = BUF + 0x1000;
const STATUS: u64 = BUF + 0x100;

/// Posts a request as Linux lays it out (header, data, status: three
/// descriptors from `first`), notifies, and returns (status byte, used len).
fn request(d: &Blk, mem: &FakeMem, first: u16, kind: u32, sector: u64, data_len: u32) -> (u8, u32) {
    let mut hdr = [0u8; 16];
    hdr[..4].copy_from_slice(&kind.to_le_bytes());
    hdr[8..].copy_from_slice(&sector.to_le_bytes());
    mem.write(Ipa(HDR), &hdr).unwrap();
    mem.write(Ipa(STATUS), &[0xee]).unwrap();
    let i = first as u64;
    let n = first;
    let data_flags = if kind == VIRTIO_BLK_T_OUT { 0 } else { VIRTQ_DESC_F_WRITE };
    if data_len > 0 {
        mem.desc(DESC, i, HDR, 16, VIRTQ_DESC_F_NEXT, n + 1);
        mem.desc(DESC, i + 1, DATA, data_len, data_flags | VIRTQ_DESC_F_NEXT, n + 2);
        mem.desc(DESC, i + 2, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
    } else {
        mem.desc(DESC, i, HDR, 16, VIRTQ_DESC_F_NEXT, n + 1);
        mem.desc(DESC, i + 1, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
    }
    notify(d, mem, first)
}

fn notify(d: &Blk, mem: &FakeMem, head: u16) -> (u8, u32) {
    mem.offer(8, head);
    let before = mem.r16(USED + 2);
    wr(d, reg::QUEUE_NOTIFY, 0);
    assert_eq!(mem.r16(USED + 2), before.wrapping_add(1), "one used element");
    let slot = USED + 4 + 8 * (before % 8) as u64;
    assert_eq!(mem.r32(slot), head as u32);
    let mut st = [0u8];
    mem.read(Ipa(STATUS), &mut st).unwrap();
    (st[0], mem.r32(slot + 4))
}

fn guest_bytes(mem: &FakeMem, at: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    mem.read(Ipa(at), &mut v).unwrap();
    v
}

#[test]
fn config_space_and_features() {
    let (d, _, _) = ready_blk(Disk::new(64), false, VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH);
    assert_eq!(d.read(0, reg::CONFIG, 4), 64);
    assert_eq!(d.read(0, reg::CONFIG + 4, 4), 0);
    assert_eq!(d.read(0, reg::CONFIG + 12, 4), SEG_MAX);
    assert_eq!(d.read(0, reg::CONFIG + 20, 4), 512);
    assert_eq!(d.read(0, reg::CONFIG + 20, 2), 512);
    assert_eq!(d.read(0, reg::CONFIG + 0x80, 4), 0, "past the config reads 0");
    wr(&d, reg::DEVICE_FEATURES_SEL, 0);
    let f = rd(&d, reg::DEVICE_FEATURES) as u64;
    assert_eq!(f & VIRTIO_BLK_F_RO, 0);
    assert_ne!(f & VIRTIO_BLK_F_FLUSH, 0);
    let (ro, _, _) = ready_blk(Disk::new(8), true, VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_RO);
    wr(&ro, reg::DEVICE_FEATURES_SEL, 0);
    assert_ne!(rd(&ro, reg::DEVICE_FEATURES) as u64 & VIRTIO_BLK_F_RO, 0);
}

#[test]
fn read_write_flush_get_id() {
    let disk = Disk::new(256);
    let (d, mem, line) = ready_blk(disk.clone(), false, VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH);
    // Read 3 sectors from sector 10.
    let (st, len) = request(&d, mem, 0, VIRTIO_BLK_T_IN, 10, 3 * 512);
    assert_eq!((st, len), (VIRTIO_BLK_S_OK, 3 * 512 + 1));
    assert_eq!(guest_bytes(mem, DATA, 1536), disk.bytes.lock().unwrap()[5120..5120 + 1536]);
    assert!(line.level.load(std::sync::atomic::Ordering::SeqCst), "used-buffer interrupt");
    // Write 2 sectors at sector 100.
    mem.write(Ipa(DATA), &[0x5a; 1024]).unwrap();
    let (st, len) = request(&d, mem, 3, VIRTIO_BLK_T_OUT, 100, 1024);
    assert_eq!((st, len), (VIRTIO_BLK_S_OK, 1));
    assert_eq!(disk.bytes.lock().unwrap()[51200..52224], [0x5a; 1024]);
    // Flush reaches the backend.
    assert_eq!(request(&d, mem, 5, VIRTIO_BLK_T_FLUSH, 0, 0), (VIRTIO_BLK_S_OK, 1));
    assert_eq!(*disk.flushes.lock().unwrap(), 1);
    // GET_ID: the serial, NUL-padded.
    let (st, len) = request(&d, mem, 0, VIRTIO_BLK_T_GET_ID, 0, 20);
    assert_eq!((st, len), (VIRTIO_BLK_S_OK, 21));
    assert_eq!(&guest_bytes(mem, DATA, 20)[..6], b"disk0\0");
    // Unknown type.
    assert_eq!(request(&d, mem, 3, 99, 0, 0), (VIRTIO_BLK_S_UNSUPP, 1));
    assert_eq!(
        d.with_device(|b| b.stats()),
        BlkStats { reads: 1, writes: 1, flushes: 1, errors: 0, ro_refused: 0, too_large: 0 }
    );
}

#[test]
fn large_read_goes_through_the_bounce_buffer_in_pieces() {
    let disk = Disk::new(1024);
    let (d, mem, _) = ready_blk(disk.clone(), false, VIRTIO_F_VERSION_1);
    let len = (BOUNCE + 4096) as u32;
    let (st, used) = request(&d, mem, 0, VIRTIO_BLK_T_IN, 7, len);
    assert_eq!((st, used), (VIRTIO_BLK_S_OK, len + 1));
    assert_eq!(guest_bytes(mem, DATA, len as usize), disk.bytes.lock().unwrap()[7 * 512..7 * 512 + len as usize]);
    assert_eq!(*disk.calls.lock().unwrap(), [('r', 7, BOUNCE), ('r', 7 + BOUNCE as u64 / 512, 4096)]);
}

#[test]
fn requests_outside_the_range_fail_and_never_reach_the_disk() {
    let disk = Disk::new(64);
    let (d, mem, _) = ready_blk(disk.clone(), false, VIRTIO_F_VERSION_1);
    let cases: &[(u32, u64, u32)] = &[
        (VIRTIO_BLK_T_IN, 64, 512),        // just past the end
        (VIRTIO_BLK_T_IN, 63, 1024),       // straddles the end
        (VIRTIO_BLK_T_OUT, 60, 8 * 512),   // write straddling the end
        (VIRTIO_BLK_T_OUT, u64::MAX, 512), // sector overflow
        (VIRTIO_BLK_T_IN, u64::MAX / 512, 1024),
        (VIRTIO_BLK_T_IN, 0, 100), // not whole sectors
        (VIRTIO_BLK_T_OUT, 0, 513),
    ];
    for (k, &(kind, sector, len)) in cases.iter().enumerate() {
        let (st, used) = request(&d, mem, (k % 2 * 3) as u16, kind, sector, len);
        assert_eq!((st, used), (VIRTIO_BLK_S_IOERR, 1), "case {k}");
    }
    assert!(disk.calls.lock().unwrap().is_empty(), "the backend saw a refused request");
    assert_eq!(d.with_device(|b| b.stats()).errors, cases.len() as u64);
    assert_eq!(rd(&d, reg::STATUS), ALL_OK, "refused requests are not queue errors");
}

#[test]
fn read_only_range_refuses_writes() {
    let disk = Disk::new(64);
    let before = disk.bytes.lock().unwrap().clone();
    let (d, mem, _) = ready_blk(disk.clone(), true, VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_RO);
    mem.write(Ipa(DATA), &[1; 512]).unwrap();
    assert_eq!(request(&d, mem, 0, VIRTIO_BLK_T_OUT, 0, 512), (VIRTIO_BLK_S_IOERR, 1));
    assert_eq!(*disk.bytes.lock().unwrap(), before);
    assert_eq!(request(&d, mem, 3, VIRTIO_BLK_T_IN, 0, 512).0, VIRTIO_BLK_S_OK, "reads still work");
    assert_eq!(d.with_device(|b| b.stats()).ro_refused, 1);
}

#[test]
fn backend_failure_is_an_io_error() {
    let mut disk = Disk::new(64);
    disk.fail = true;
    let (d, mem, _) = ready_blk(disk, false, VIRTIO_F_VERSION_1);
    assert_eq!(request(&d, mem, 0, VIRTIO_BLK_T_IN, 0, 512), (VIRTIO_BLK_S_IOERR, 1));
}

#[test]
fn any_layout_header_data_and_status_in_one_writable_split() {
    // Header and write data in one readable descriptor; status alone.
    let disk = Disk::new(64);
    let (d, mem, _) = ready_blk(disk.clone(), false, VIRTIO_F_VERSION_1);
    let mut req = vec![0u8; 16 + 512];
    req[..4].copy_from_slice(&VIRTIO_BLK_T_OUT.to_le_bytes());
    req[8..16].copy_from_slice(&5u64.to_le_bytes());
    req[16..].fill(0x77);
    mem.write(Ipa(DATA), &req).unwrap();
    mem.desc(DESC, 0, DATA, req.len() as u32, VIRTQ_DESC_F_NEXT, 1);
    mem.desc(DESC, 1, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
    assert_eq!(notify(&d, mem, 0), (VIRTIO_BLK_S_OK, 1));
    assert_eq!(disk.bytes.lock().unwrap()[2560..3072], [0x77; 512]);
    // A read whose data and status share one writable descriptor.
    let mut hdr = [0u8; 16];
    hdr[8..].copy_from_slice(&5u64.to_le_bytes());
    mem.write(Ipa(HDR), &hdr).unwrap();
    mem.desc(DESC, 2, HDR, 16, VIRTQ_DESC_F_NEXT, 3);
    mem.desc(DESC, 3, DATA, 513, VIRTQ_DESC_F_WRITE, 0);
    mem.offer(8, 2);
    wr(&d, reg::QUEUE_NOTIFY, 0);
    assert_eq!(guest_bytes(mem, DATA, 513), [&[0x77; 512][..], &[VIRTIO_BLK_S_OK]].concat());
}

#[test]
fn malformed_requests_put_the_device_in_needs_reset() {
    // No status byte (nothing writable), a short header, data outside RAM.
    type Setup = fn(&FakeMem);
    let cases: &[(&str, Setup)] = &[
        ("no writable byte", |m| {
            m.desc(DESC, 0, HDR, 16, 0, 0);
        }),
        ("header shorter than 16 bytes", |m| {
            m.desc(DESC, 0, HDR, 8, VIRTQ_DESC_F_NEXT, 1);
            m.desc(DESC, 1, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
        }),
        ("read into a buffer outside RAM", |m| {
            m.w32(HDR, VIRTIO_BLK_T_IN);
            m.desc(DESC, 0, HDR, 16, VIRTQ_DESC_F_NEXT, 1);
            m.desc(DESC, 1, 0x1000_0000, 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
            m.desc(DESC, 2, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
        }),
    ];
    for (what, setup) in cases {
        let disk = Disk::new(64);
        let (d, mem, line) = ready_blk(disk.clone(), false, VIRTIO_F_VERSION_1 | VIRTIO_F_INDIRECT_DESC);
        setup(mem);
        mem.offer(8, 0);
        wr(&d, reg::QUEUE_NOTIFY, 0);
        assert_ne!(rd(&d, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0, "{what}");
        assert!(line.level.load(std::sync::atomic::Ordering::SeqCst), "{what}: the driver is told");
        // Reset brings it back.
        wr(&d, reg::STATUS, 0);
        assert_eq!(rd(&d, reg::STATUS), 0);
    }
}

#[derive(Clone, Default)]
struct Out(Arc<Mutex<Vec<u8>>>);
impl ConsoleSink for Out {
    fn write(&mut self, bytes: &[u8]) {
        self.0.lock().unwrap().extend_from_slice(bytes);
    }
}

#[test]
fn console_transmits_in_order_and_ignores_receiveq() {
    let mem = FakeMem::leak();
    let line: &'static Line = Box::leak(Box::default());
    let out = Out::default();
    let d = VirtioMmio::new(VirtioConsole::new(out.clone()), mem, line);
    assert_eq!(rd(&d, reg::DEVICE_ID), 3);
    assert!(handshake(&d, VIRTIO_F_VERSION_1));
    // Queue 1 (transmitq) at the test layout; queue 0 left unset.
    wr(&d, reg::QUEUE_SEL, 1);
    wr(&d, reg::QUEUE_NUM, 8);
    wr(&d, reg::QUEUE_DESC_LOW, DESC as u32);
    wr(&d, reg::QUEUE_DRIVER_LOW, AVAIL as u32);
    wr(&d, reg::QUEUE_DEVICE_LOW, USED as u32);
    wr(&d, reg::QUEUE_READY, 1);
    wr(&d, reg::STATUS, ALL_OK);
    mem.write(Ipa(DATA), b"hello, ").unwrap();
    mem.write(Ipa(DATA + 0x100), b"world\n").unwrap();
    mem.desc(DESC, 0, DATA, 7, VIRTQ_DESC_F_NEXT, 1);
    mem.desc(DESC, 1, DATA + 0x100, 6, 0, 0);
    mem.offer(8, 0);
    wr(&d, reg::QUEUE_NOTIFY, 0); // receiveq: not ready, ignored
    assert!(out.0.lock().unwrap().is_empty());
    wr(&d, reg::QUEUE_NOTIFY, 1);
    assert_eq!(*out.0.lock().unwrap(), b"hello, world\n");
    assert_eq!(mem.r16(USED + 2), 1);
    // A transmit buffer outside RAM: NEEDS_RESET, nothing printed.
    mem.desc(DESC, 2, 0x1000_0000, 16, 0, 0);
    mem.offer(8, 2);
    wr(&d, reg::QUEUE_NOTIFY, 1);
    assert_ne!(rd(&d, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(out.0.lock().unwrap().len(), 13);
}

/// A hostile driver's queue of 256 entries that all name head 0: a chain of
/// 255 descriptors that all point at the same `seg` bytes (readable, or
/// device-writable but the first).
fn same_chain_everywhere(mem: &FakeMem, seg: u32, writable_from: u64) {
    for i in 0..255u64 {
        let w = if i >= writable_from { VIRTQ_DESC_F_WRITE } else { 0 };
        let next = if i < 254 { VIRTQ_DESC_F_NEXT } else { 0 };
        mem.desc(DESC, i, DATA, seg, w | next, (i + 1) as u16);
    }
    for _ in 0..256 {
        mem.offer(256, 0);
    }
}

#[test]
fn one_console_notification_does_a_bounded_amount_of_work() {
    let mem = FakeMem::leak();
    let line: &'static Line = Box::leak(Box::default());
    let out = Out::default();
    let d = VirtioMmio::new(VirtioConsole::new(out.clone()), mem, line);
    assert!(handshake(&d, VIRTIO_F_VERSION_1));
    wr(&d, reg::QUEUE_SEL, 1);
    wr(&d, reg::QUEUE_NUM, 256);
    wr(&d, reg::QUEUE_DESC_LOW, DESC as u32);
    wr(&d, reg::QUEUE_DRIVER_LOW, AVAIL as u32);
    wr(&d, reg::QUEUE_DEVICE_LOW, USED as u32);
    wr(&d, reg::QUEUE_READY, 1);
    wr(&d, reg::STATUS, ALL_OK);
    // 256 chains of 255 x 64 KiB: 4 GiB of "output" in one notification.
    same_chain_everywhere(mem, 64 << 10, u64::MAX);
    wr(&d, reg::QUEUE_NOTIFY, 1);
    let pass = super::mmio::Budget::PASS;
    let per_chain = super::console::MAX_CHAIN_OUTPUT as u64;
    let chains = (pass.chains as u64).min(pass.bytes.div_ceil(per_chain));
    let printed = out.0.lock().unwrap().len() as u64;
    assert_eq!(printed, chains * per_chain, "one notification printed one pass's worth");
    assert_eq!(mem.r16(USED + 2), chains as u16, "it served one pass's chains");
    assert_eq!(line.work_left.load(std::sync::atomic::Ordering::SeqCst), 1, "and said that work was left");
    // The rest is served in later passes, each as bounded.
    let mut passes = 1;
    loop {
        passes += 1;
        assert!(passes <= 256);
        if !d.continue_work() {
            break;
        }
    }
    assert_eq!(mem.r16(USED + 2), 256, "every chain was served in the end");
    assert_eq!(passes as u64, 256u64.div_ceil(chains));
}

#[test]
fn one_block_notification_does_a_bounded_amount_of_work() {
    let disk = Disk::new(64 << 11); // 64 MiB
    let mem = FakeMem::leak();
    let line: &'static Line = Box::leak(Box::default());
    let d = VirtioMmio::new(VirtioBlk::new(disk.clone(), true, b"disk0"), mem, line);
    assert!(handshake(&d, VIRTIO_F_VERSION_1));
    setup_queue(&d, 256);
    wr(&d, reg::STATUS, ALL_OK);
    // Read requests: the header at DATA (a read of sector 0), then 254
    // writable 64 KiB segments (data and status): 15.9 MiB each, refused
    // as larger than MAX_REQUEST_DATA, so they cost no disk reads at all.
    mem.write(Ipa(DATA), &[0u8; 16]).unwrap();
    same_chain_everywhere(mem, 64 << 10, 1);
    wr(&d, reg::QUEUE_NOTIFY, 0);
    assert!(disk.calls.lock().unwrap().is_empty(), "oversized requests never reach the disk");
    assert_eq!(d.with_device(|b| b.stats()).too_large, super::mmio::Budget::PASS.chains as u64);
    // Requests of MAX_REQUEST_DATA (32 x 64 KiB + status): one pass reads
    // one request's worth from the disk, not the 256 available.
    wr(&d, reg::STATUS, 0);
    assert!(handshake(&d, VIRTIO_F_VERSION_1));
    setup_queue(&d, 256);
    wr(&d, reg::STATUS, ALL_OK);
    let segs = MAX_REQUEST_DATA >> 16;
    mem.desc(DESC, 0, DATA, 16, VIRTQ_DESC_F_NEXT, 1);
    for i in 1..=segs {
        mem.desc(DESC, i, BUF + 0x2_0000, 64 << 10, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, (i + 1) as u16);
    }
    mem.desc(DESC, segs + 1, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
    mem.w16(AVAIL + 2, 0);
    for _ in 0..256 {
        mem.offer(256, 0);
    }
    disk.calls.lock().unwrap().clear();
    wr(&d, reg::QUEUE_NOTIFY, 0);
    let read: usize = disk.calls.lock().unwrap().iter().map(|c| c.2).sum();
    assert_eq!(read as u64, MAX_REQUEST_DATA, "one request per pass once its bytes exceed the pass's budget");
    assert_eq!(mem.r16(USED + 2), 1);
}

//! The split-virtqueue walker on its own: any queue configuration, any
//! descriptor tables (direct and indirect), any available ring.
//!
//! Oracles: a chain has at most `MAX_CHAIN_SEGMENTS` segments and
//! `MAX_CHAIN_BYTES` bytes, each inside RAM, readable ones first, and its
//! head is a descriptor index of the queue; taking a chain reads a bounded
//! number of descriptors; a refused chain leaves the queue's position
//! alone; no chain comes out that the driver did not make available; a used
//! element lands in the used ring and nowhere else.

use crate::ram::{Ram, BASE, SIZE};
use crate::virtio::{Addr, Len};
use arbitrary::{Arbitrary, Unstructured};
use tessera::addr::Ipa;
use tessera::mem::GuestMemory;
use tessera::virtio::queue::{Queue, MAX_CHAIN_BYTES, MAX_CHAIN_SEGMENTS, MAX_QUEUE_SIZE};

#[derive(Arbitrary, Debug)]
struct Setup {
    size: u16,
    desc: Addr,
    driver: Addr,
    device: Addr,
    indirect: bool,
    start: u16,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Desc { table: Addr, index: u8, addr: Addr, len: Len, flags: u8, next: u16 },
    Avail { slot: u16, head: u16 },
    AvailIdx(u16),
    Pop { used_len: u32 },
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(s) = u.arbitrary::<Setup>() else { return };
    let ram = Ram::fresh();
    let mut q = Queue::new(MAX_QUEUE_SIZE);
    q.size = if s.size & 0x8000 != 0 { s.size & 0x7fff } else { 1 << (s.size % 9) };
    q.desc = Ipa(s.desc.at());
    q.driver = Ipa(s.driver.at());
    q.device = Ipa(s.device.at());
    q.indirect = s.indirect;
    q.ready = true;
    q.next_avail = s.start;
    q.next_used = s.start;
    let avail = s.driver.at();
    let used = (q.device.raw(), 6 + 8 * q.size as u64);
    let mut n = 0;
    while !u.is_empty() {
        let Ok(op) = u.arbitrary::<Op>() else { break };
        match op {
            Op::Desc { table, index, addr, len, flags, next } => {
                ram.desc(table.at(), index as u64, addr.at(), len.get(), flags as u16 & 7, next % 300)
            }
            Op::Avail { slot, head } => ram.w16(avail.wrapping_add(4 + 2 * (slot % q.size.max(1)) as u64), head % 300),
            Op::AvailIdx(i) => ram.w16(avail.wrapping_add(2), i),
            Op::Pop { used_len } => {
                ram.take_log();
                let before = q.next_avail;
                // What the driver has published (descriptor writes may land
                // on the ring too, so read it rather than track it).
                let published = ram.r16(avail.wrapping_add(2));
                let result = q.pop(ram);
                let log = ram.take_log();
                let reads = log.bytes_read;
                let bound = 16 * (q.size as u64 + MAX_CHAIN_SEGMENTS as u64 + 1) + 8;
                assert!(reads <= bound, "{reads} bytes read to take one chain (bound {bound})");
                match result {
                    Ok(Some(c)) => {
                        assert_ne!(published, before, "a chain taken that the driver did not make available");
                        assert!(c.head() < q.size);
                        assert_eq!(q.next_avail, before.wrapping_add(1));
                        check_chain(&c, ram);
                        let _ = q.push_used(ram, c.head(), used_len);
                        let log = ram.take_log();
                        for &(at, len) in &log.writes {
                            assert!(crate::ram::covered(&[used], at, len), "used element written at {at:#x}");
                        }
                    }
                    Ok(None) => assert_eq!(q.next_avail, before),
                    Err(_) => assert_eq!(q.next_avail, before, "a refused chain moved the queue"),
                }
            }
        }
        n += 1;
        if n == 256 {
            break;
        }
    }
}

fn check_chain(c: &tessera::virtio::queue::Chain, ram: &Ram) {
    let segs: Vec<_> = c.segments().collect();
    assert!(segs.len() <= MAX_CHAIN_SEGMENTS);
    let total: u64 = segs.iter().map(|s| s.len as u64).sum();
    assert!(total <= MAX_CHAIN_BYTES);
    assert_eq!(total, c.readable_len() + c.writable_len());
    for s in &segs {
        assert!(ram.contains(s.ipa, s.len as u64), "segment {:#x}+{} outside RAM", s.ipa.raw(), s.len);
        assert!(s.ipa.raw() >= BASE && s.ipa.raw() + s.len as u64 <= BASE + SIZE as u64);
    }
    if let Some(first_w) = segs.iter().position(|s| s.writable) {
        assert!(segs[first_w..].iter().all(|s| s.writable), "a readable segment after a writable one");
    }
}

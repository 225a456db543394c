//! Three VMs' virtio-net devices on one virtual switch, driven by hostile
//! drivers: frames with any source and destination, any length, split
//! any way; descriptors and registers with any contents; kicks, resets.
//!
//! Oracles: every frame a VM receives comes from another port, with that
//! port's MAC as its source, and is for this VM (its MAC, or a group
//! address); a device writes its VM's RAM only in a used ring or in a
//! device-writable buffer. Afterwards, all reset: a unicast frame reaches
//! exactly its destination, intact, and a broadcast every other VM.

use crate::ram::Ram;
use crate::virtio::{avail, desc, used, Addr, Len, Line, BUF};
use arbitrary::{Arbitrary, Unstructured};
use tessera::mmio::MmioDevice;
use tessera::virtio::mmio::{reg, status, VirtioMmio, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1};
use tessera::virtio::net::{VirtioNet, HDR_LEN, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS};
use tessera::virtio::queue::{VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use tessera::virtio::switch::{Mac, Port, Switch, MAX_FRAME};

const VMS: usize = 3;
const QSIZE: u16 = 64;
const RX: usize = 0;
const TX: usize = 1;
const FEATURES: u64 =
    VIRTIO_F_VERSION_1 | VIRTIO_F_INDIRECT_DESC | VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_MTU;
/// RX buffer i; TX buffer i.
fn rx_buf(i: u16) -> u64 {
    BUF + (i % QSIZE) as u64 * 0x800
}
fn tx_buf(i: u16) -> u64 {
    BUF + 0x2_0000 + (i % 32) as u64 * 0x800
}

fn mac(vm: usize) -> Mac {
    [0x02, 0x54, 0x53, 0, 0, vm as u8 + 1]
}

type Net = VirtioMmio<VirtioNet, &'static Ram, &'static Line>;

struct Vm {
    dev: &'static Net,
    ram: &'static Ram,
    /// The driver's available index per queue, and the RX used entries seen.
    avail_idx: [u16; 2],
    rx_seen: u16,
    /// RX descriptor i still names the harness's buffer i (its length).
    rx_owned: Vec<Option<u32>>,
    /// The next TX descriptor to use.
    tx_next: u16,
}

fn rig() -> &'static [std::sync::Mutex<Vm>; VMS] {
    thread_local! {
        // One LAN per thread, built once: the switch's ports are 'static
        // and fixed. Each input resets every device (which empties its
        // mailbox) and clears every RAM first.
        static RIG: &'static [std::sync::Mutex<Vm>; VMS] = {
            let sw: &'static Switch = Box::leak(Box::new(Switch::new()));
            Box::leak(Box::new(core::array::from_fn(|k| {
                let port: &'static Port = Box::leak(Box::new(Port::new(sw, mac(k))));
                let ram: &'static Ram = Box::leak(Box::default());
                let line: &'static Line = Box::leak(Box::default());
                let dev: &'static Net = Box::leak(Box::new(VirtioMmio::new(VirtioNet::new(port), ram, line)));
                port.connect(dev).expect("distinct MACs");
                std::sync::Mutex::new(Vm { dev, ram, avail_idx: [0; 2], rx_seen: 0, rx_owned: vec![None; QSIZE as usize], tx_next: 0 })
            })))
        };
    }
    RIG.with(|r| *r)
}

fn wr(d: &impl MmioDevice, off: u32, v: u32) {
    d.write(0, off, 4, v)
}

impl Vm {
    /// A fresh driver: rings cleared, probed, running.
    fn start(&mut self) {
        let d = self.dev;
        wr(d, reg::STATUS, 0);
        self.ram.clear();
        wr(d, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        wr(d, reg::DRIVER_FEATURES_SEL, 1);
        wr(d, reg::DRIVER_FEATURES, (FEATURES >> 32) as u32);
        wr(d, reg::DRIVER_FEATURES_SEL, 0);
        wr(d, reg::DRIVER_FEATURES, FEATURES as u32);
        wr(d, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        for q in [RX, TX] {
            wr(d, reg::QUEUE_SEL, q as u32);
            wr(d, reg::QUEUE_NUM, QSIZE as u32);
            wr(d, reg::QUEUE_DESC_LOW, desc(q) as u32);
            wr(d, reg::QUEUE_DRIVER_LOW, avail(q) as u32);
            wr(d, reg::QUEUE_DEVICE_LOW, used(q) as u32);
            wr(d, reg::QUEUE_READY, 1);
        }
        wr(d, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
        self.avail_idx = [0; 2];
        self.rx_seen = 0;
        self.rx_owned.fill(None);
        self.tx_next = 0;
        self.ram.take_log();
    }

    fn offer(&mut self, q: usize, head: u16) {
        let idx = self.avail_idx[q];
        self.ram.w16(avail(q) + 4 + 2 * (idx % QSIZE) as u64, head % QSIZE);
        self.avail_idx[q] = idx.wrapping_add(1);
        self.ram.w16(avail(q) + 2, self.avail_idx[q]);
    }

    fn post_rx(&mut self, len: u32) {
        let i = self.avail_idx[RX] % QSIZE;
        self.ram.desc(desc(RX), i as u64, rx_buf(i), len, VIRTQ_DESC_F_WRITE, 0);
        self.rx_owned[i as usize] = Some(len);
        self.offer(RX, i);
    }

    /// Queues `frame` (with a zero virtio-net header) for TX, split into
    /// `split` pieces, through an indirect table if `indirect`.
    fn queue_tx(&mut self, frame: &[u8], split: u8, indirect: bool) {
        let head = self.tx_next % QSIZE;
        let buf = tx_buf(head);
        let mut bytes = vec![0u8; HDR_LEN];
        bytes.extend_from_slice(frame);
        self.ram.poke(buf, &bytes);
        let pieces = (split % 3 + 1) as usize;
        let cut = bytes.len().div_ceil(pieces).max(1);
        let parts: Vec<(u64, u32)> =
            bytes.chunks(cut).enumerate().map(|(k, c)| (buf + (k * cut) as u64, c.len() as u32)).collect();
        let n = parts.len() as u16;
        if indirect {
            let table = crate::virtio::IND + (head as u64 % 16) * 0x400;
            for (k, &(a, l)) in parts.iter().enumerate() {
                let last = k as u16 + 1 == n;
                self.ram.desc(table, k as u64, a, l, if last { 0 } else { VIRTQ_DESC_F_NEXT }, k as u16 + 1);
            }
            self.ram.desc(desc(TX), head as u64, table, 16 * n as u32, VIRTQ_DESC_F_INDIRECT, 0);
            self.tx_next = self.tx_next.wrapping_add(1);
        } else {
            for (k, &(a, l)) in parts.iter().enumerate() {
                let i = (head + k as u16) % QSIZE;
                let last = k as u16 + 1 == n;
                let next = (i + 1) % QSIZE;
                self.ram.desc(desc(TX), i as u64, a, l, if last { 0 } else { VIRTQ_DESC_F_NEXT }, next);
            }
            self.tx_next = self.tx_next.wrapping_add(n);
        }
        self.offer(TX, head);
    }

    /// Frames received since the last call: (buffer bytes) of each used
    /// element whose descriptor is still the harness's.
    fn received(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let idx = self.ram.r16(used(RX) + 2);
        let new = idx.wrapping_sub(self.rx_seen);
        if new > QSIZE {
            // The used index went backwards or jumped (a reset): start over.
            self.rx_seen = idx;
            return out;
        }
        for k in 0..new {
            let e = used(RX) + 4 + 8 * (self.rx_seen.wrapping_add(k) % QSIZE) as u64;
            let (id, len) = (self.ram.r32(e), self.ram.r32(e + 4));
            let Some(posted) = self.rx_owned.get(id as usize).copied().flatten() else { continue };
            if len == 0 {
                continue; // dropped (too small)
            }
            assert!(len <= posted, "used length {len} over the {posted}-byte buffer");
            let mut b = vec![0u8; len as usize];
            self.ram.peek(rx_buf(id as u16), &mut b);
            out.push(b);
        }
        self.rx_seen = idx;
        out
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Who {
    Vm(u8),
    Broadcast,
    Multicast(u8),
    Raw([u8; 6]),
}

impl Who {
    fn mac(self) -> Mac {
        match self {
            Who::Vm(k) => mac(k as usize % VMS),
            Who::Broadcast => [0xff; 6],
            Who::Multicast(x) => [0x01, 0, 0x5e, 0, 0, x],
            Who::Raw(m) => m,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Tx { vm: u8, dst: Who, src: Option<Who>, len: u16, split: u8, indirect: bool },
    PostRx { vm: u8, count: u8, len: Len },
    Kick { vm: u8, queue: u8 },
    Desc { vm: u8, queue: bool, index: u8, addr: Addr, len: Len, flags: u8, next: u8 },
    Offer { vm: u8, queue: bool, head: u8 },
    Write { vm: u8, offset: u16, value: u32 },
    Continue { vm: u8 },
    Reset { vm: u8 },
    Start { vm: u8 },
}

fn frame(dst: Mac, src: Mac, len: usize, tag: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((0..len.saturating_sub(14)).map(|i| tag.wrapping_add(i as u8)));
    f.truncate(len);
    f
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let rig = rig();
    let mut vms: Vec<_> = rig.iter().map(|m| m.lock().unwrap()).collect();
    for vm in vms.iter_mut() {
        vm.start();
    }
    let mut n = 0;
    while !u.is_empty() {
        let Ok(op) = u.arbitrary::<Op>() else { break };
        let v = |x: u8| x as usize % VMS;
        match op {
            Op::Tx { vm, dst, src, len, split, indirect } => {
                let me = v(vm);
                let src = src.map_or(mac(me), Who::mac);
                let len = len as usize % (MAX_FRAME + 40);
                let f = frame(dst.mac(), src, len, n as u8);
                vms[me].queue_tx(&f, split, indirect);
            }
            Op::PostRx { vm, count, len } => {
                for _ in 0..count % 8 + 1 {
                    vms[v(vm)].post_rx(len.get() % 4096);
                }
            }
            Op::Kick { vm, queue } => wr(vms[v(vm)].dev, reg::QUEUE_NOTIFY, queue as u32 % 3),
            Op::Desc { vm, queue, index, addr, len, flags, next } => {
                let g = &mut vms[v(vm)];
                let q = queue as usize;
                let i = index as u16 % QSIZE;
                g.ram.desc(desc(q), i as u64, addr.at(), len.get(), flags as u16 & 7, next as u16);
                if q == RX {
                    g.rx_owned[i as usize] = None;
                }
            }
            Op::Offer { vm, queue, head } => vms[v(vm)].offer(queue as usize, head as u16),
            Op::Write { vm, offset, value } => {
                let off = (offset as u32 % 0x200) & !3;
                if !(reg::QUEUE_DESC_LOW..=reg::QUEUE_DEVICE_HIGH).contains(&off) {
                    wr(vms[v(vm)].dev, off, value);
                }
            }
            Op::Continue { vm } => {
                vms[v(vm)].dev.continue_work();
            }
            Op::Reset { vm } => wr(vms[v(vm)].dev, reg::STATUS, 0),
            Op::Start { vm } => vms[v(vm)].start(),
        }
        check(&mut vms);
        n += 1;
        if n == 256 {
            break;
        }
    }
    still_works(&mut vms);
}

fn check(vms: &mut [std::sync::MutexGuard<'_, Vm>]) {
    for (k, vm) in vms.iter_mut().enumerate() {
        let log = vm.ram.take_log();
        let rings = [(used(RX), 6 + 8 * 256), (used(TX), 6 + 8 * 256)];
        for &(at, len) in &log.writes {
            assert!(
                crate::ram::covered(&rings, at, len) || crate::ram::covered(&log.writable, at, len),
                "VM {k}'s device wrote {len} bytes at {at:#x}: neither a used ring nor a device-writable buffer"
            );
        }
        for b in vm.received() {
            assert!(b.len() >= HDR_LEN + 14, "a {}-byte frame delivered", b.len());
            let f = &b[HDR_LEN..];
            let (dst, src): (Mac, Mac) = (f[..6].try_into().unwrap(), f[6..12].try_into().unwrap());
            assert_ne!(src, mac(k), "VM {k} received a frame with its own source MAC");
            assert!((0..VMS).any(|j| mac(j) == src), "VM {k} received a frame from {src:02x?}, no port's MAC");
            assert!(dst == mac(k) || dst[0] & 1 != 0, "VM {k} received a frame for {dst:02x?}");
        }
    }
}

fn still_works(vms: &mut [std::sync::MutexGuard<'_, Vm>]) {
    for vm in vms.iter_mut() {
        vm.start();
        vm.post_rx((HDR_LEN + MAX_FRAME) as u32);
        vm.post_rx((HDR_LEN + MAX_FRAME) as u32);
        wr(vm.dev, reg::QUEUE_NOTIFY, RX as u32);
    }
    let uni = frame(mac(1), mac(0), 100, 7);
    vms[0].queue_tx(&uni, 0, false);
    wr(vms[0].dev, reg::QUEUE_NOTIFY, TX as u32);
    let got: Vec<_> = vms.iter_mut().map(|vm| vm.received()).collect();
    assert_eq!(got[1].len(), 1, "after reset, the unicast frame arrives once");
    assert_eq!(&got[1][0][HDR_LEN..], &uni[..], "intact");
    assert!(got[0].is_empty() && got[2].is_empty(), "and nowhere else");
    let bcast = frame([0xff; 6], mac(2), 60, 9);
    vms[2].queue_tx(&bcast, 1, true);
    wr(vms[2].dev, reg::QUEUE_NOTIFY, TX as u32);
    let got: Vec<_> = vms.iter_mut().map(|vm| vm.received()).collect();
    assert_eq!((got[0].len(), got[1].len(), got[2].len()), (1, 1, 0), "a broadcast reaches every other VM");
    assert_eq!(&got[0][0][HDR_LEN..], &bcast[..]);
}

//! Host tests of virtio-net and the virtual switch: two and three VMs,
//! each with its own fake RAM, on one switch, driven through the MMIO
//! transport the way Linux's `virtio_net` drives it; hostile queues.

use super::mmio::{reg, status, VirtioMmio, INT_CONFIG, INT_VRING, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1};
use super::net::*;
use super::queue::{GuestMemory, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use super::switch::{ConnectError, Port, Switch, MAILBOX_FRAMES};
use super::tests::{handshake, rd, wr, FakeMem, Line, ALL_OK, BASE, RAM};
use crate::addr::Ipa;
use crate::mmio::MmioDevice;
use std::sync::atomic::Ordering;

type Net = VirtioMmio<VirtioNet, &'static FakeMem, &'static Line>;

const QSIZE: u16 = 64;
const FEATURES: u64 =
    VIRTIO_F_VERSION_1 | VIRTIO_F_INDIRECT_DESC | VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_MTU;

/// Where a queue's parts lie in a guest's RAM; descriptor i's buffer is
/// at `bufs + i * STRIDE`.
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    bufs: u64,
}
const RXR: Ring = Ring { desc: BASE + 0x1000, avail: BASE + 0x2000, used: BASE + 0x3000, bufs: BASE + 0x1_0000 };
const TXR: Ring = Ring { desc: BASE + 0x5000, avail: BASE + 0x6000, used: BASE + 0x7000, bufs: BASE + 0x4_0000 };
const STRIDE: u64 = 0x800;
/// Free RAM for odd buffers (indirect tables, huge chains).
const SPARE: u64 = BASE + 0x8_0000;
/// What Linux posts per RX buffer without mergeable buffers: header and
/// a maximal frame (GOOD_PACKET_LEN is 1518; any at least 1526 works).
const RX_BUF: u32 = (HDR_LEN + MAX_FRAME) as u32;

fn mac(last: u8) -> [u8; 6] {
    [0x02, 0x54, 0x53, 0, 0, last]
}
const BCAST: [u8; 6] = [0xff; 6];

/// An Ethernet frame of `len` bytes from `src` to `dst`, its payload a
/// pattern that starts at `tag`.
fn frame(dst: [u8; 6], src: [u8; 6], len: usize, tag: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((0..len.saturating_sub(14)).map(|i| tag.wrapping_add(i as u8)));
    f.truncate(len);
    f
}

/// One VM: its device, RAM, interrupt line, and the driver's ring state.
struct Guest {
    dev: &'static Net,
    mem: &'static FakeMem,
    line: &'static Line,
    port: &'static Port,
    rx_next: u16,
    rx_seen: u16,
    tx_next: u16,
}

fn switch() -> &'static Switch {
    Box::leak(Box::new(Switch::new()))
}

/// N VMs on a new switch, MACs mac(1)..=mac(N), drivers running, no RX
/// buffers posted.
fn lan<const N: usize>() -> [Guest; N] {
    let sw = switch();
    core::array::from_fn(|i| Guest::plug(sw, mac(i as u8 + 1)))
}

impl Guest {
    /// A VM with a net device on `sw`, probed and running.
    fn plug(sw: &'static Switch, mac: [u8; 6]) -> Self {
        let g = Self::plug_only(sw, mac);
        g.start();
        g
    }

    /// Connected to the switch, the driver not started.
    fn plug_only(sw: &'static Switch, mac: [u8; 6]) -> Self {
        let port: &'static Port = Box::leak(Box::new(Port::new(sw, mac)));
        let mem = FakeMem::leak();
        let line: &'static Line = Box::leak(Box::default());
        let dev: &'static Net = Box::leak(Box::new(VirtioMmio::new(VirtioNet::new(port), mem, line)));
        port.connect(dev).unwrap();
        Self { dev, mem, line, port, rx_next: 0, rx_seen: 0, tx_next: 0 }
    }

    /// virtnet_probe: features, both queues, DRIVER_OK.
    fn start(&self) {
        assert_eq!(rd(self.dev, reg::DEVICE_ID), 1);
        assert!(handshake(self.dev, FEATURES));
        for (q, r) in [(0, &RXR), (1, &TXR)] {
            wr(self.dev, reg::QUEUE_SEL, q);
            assert_eq!(rd(self.dev, reg::QUEUE_NUM_MAX), 256);
            wr(self.dev, reg::QUEUE_NUM, QSIZE as u32);
            wr(self.dev, reg::QUEUE_DESC_LOW, r.desc as u32);
            wr(self.dev, reg::QUEUE_DRIVER_LOW, r.avail as u32);
            wr(self.dev, reg::QUEUE_DEVICE_LOW, r.used as u32);
            wr(self.dev, reg::QUEUE_READY, 1);
        }
        wr(self.dev, reg::STATUS, ALL_OK);
        assert_eq!(rd(self.dev, reg::STATUS), ALL_OK);
    }

    /// Writes the chain `segs` (address, length, flags) into descriptors
    /// from `first` and publishes it in the available ring at `r`.
    fn publish(&self, r: &Ring, first: u16, segs: &[(u64, u32, u16)]) {
        for (k, &(addr, len, flags)) in segs.iter().enumerate() {
            let i = (first as usize + k) % QSIZE as usize;
            let last = k + 1 == segs.len();
            let next = ((i + 1) % QSIZE as usize) as u16;
            self.mem.desc(r.desc, i as u64, addr, len, flags | if last { 0 } else { VIRTQ_DESC_F_NEXT }, next);
        }
        let idx = self.mem.r16(r.avail + 2);
        self.mem.w16(r.avail + 4 + 2 * (idx % QSIZE) as u64, first % QSIZE);
        self.mem.w16(r.avail + 2, idx.wrapping_add(1));
    }

    /// Posts `n` RX buffers of `len` bytes (without notifying).
    fn add_rx(&mut self, n: usize, len: u32) {
        for _ in 0..n {
            let i = self.rx_next % QSIZE;
            self.publish(&RXR, i, &[(RXR.bufs + i as u64 * STRIDE, len, VIRTQ_DESC_F_WRITE)]);
            self.rx_next = self.rx_next.wrapping_add(1);
        }
    }

    /// try_fill_recv: posts `n` full-size buffers and kicks queue 0.
    fn post_rx(&mut self, n: usize) {
        self.add_rx(n, RX_BUF);
        wr(self.dev, reg::QUEUE_NOTIFY, 0);
    }

    /// Queues a frame for TX, header and frame in one buffer (no kick).
    fn queue_tx(&mut self, f: &[u8]) {
        let i = self.tx_next % QSIZE;
        let at = TXR.bufs + i as u64 * STRIDE;
        assert!(HDR_LEN + f.len() <= STRIDE as usize);
        self.mem.write(Ipa(at), &[0u8; HDR_LEN]).unwrap();
        self.mem.write(Ipa(at + HDR_LEN as u64), f).unwrap();
        self.publish(&TXR, i, &[(at, (HDR_LEN + f.len()) as u32, 0)]);
        self.tx_next = self.tx_next.wrapping_add(1);
    }

    /// Queues a raw TX chain from descriptor `tx_next` (no kick).
    fn queue_tx_chain(&mut self, segs: &[(u64, u32, u16)]) {
        self.publish(&TXR, self.tx_next % QSIZE, segs);
        self.tx_next = self.tx_next.wrapping_add(segs.len() as u16);
    }

    fn kick_tx(&self) {
        wr(self.dev, reg::QUEUE_NOTIFY, 1);
    }

    fn send(&mut self, f: &[u8]) {
        self.queue_tx(f);
        self.kick_tx();
    }

    /// TX chains returned so far, and the sum of their used lengths.
    fn tx_done(&self) -> (u16, u32) {
        let n = self.mem.r16(TXR.used + 2);
        let lens = (0..n.min(QSIZE)).map(|k| self.mem.r32(TXR.used + 8 + 8 * k as u64)).sum();
        (n, lens)
    }

    /// Frames received since the last call, in order; an RX buffer
    /// returned empty (a dropped frame) is an empty Vec.
    fn recv(&mut self) -> Vec<Vec<u8>> {
        let idx = self.mem.r16(RXR.used + 2);
        let mut out = Vec::new();
        while self.rx_seen != idx {
            let e = RXR.used + 4 + 8 * (self.rx_seen % QSIZE) as u64;
            let (id, len) = (self.mem.r32(e), self.mem.r32(e + 4));
            assert!(id < QSIZE as u32);
            let mut b = vec![0u8; len as usize];
            self.mem.read(Ipa(RXR.bufs + id as u64 * STRIDE), &mut b).unwrap();
            if len == 0 {
                out.push(Vec::new());
            } else {
                assert!(len as usize >= HDR_LEN + MIN_FRAME, "used len {len}");
                let mut hdr = [0u8; HDR_LEN];
                hdr[10] = 1; // num_buffers
                assert_eq!(&b[..HDR_LEN], &hdr, "RX header");
                out.push(b[HDR_LEN..].to_vec());
            }
            self.rx_seen = self.rx_seen.wrapping_add(1);
        }
        out
    }

    fn status(&self) -> u32 {
        rd(self.dev, reg::STATUS)
    }

    fn stats(&self) -> [u64; 4] {
        let s = self.port.stats();
        [&s.tx_frames, &s.tx_dropped, &s.rx_frames, &s.rx_dropped].map(|c| c.load(Ordering::Relaxed))
    }

    fn ack(&self) {
        let st = rd(self.dev, reg::INTERRUPT_STATUS);
        wr(self.dev, reg::INTERRUPT_ACK, st);
    }
}

#[test]
fn config_space_and_features() {
    let sw = switch();
    let g = Guest::plug_only(sw, [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
    assert_eq!(rd(g.dev, reg::DEVICE_ID), 1);
    wr(g.dev, reg::DEVICE_FEATURES_SEL, 0);
    let lo = rd(g.dev, reg::DEVICE_FEATURES) as u64;
    wr(g.dev, reg::DEVICE_FEATURES_SEL, 1);
    let offered = (rd(g.dev, reg::DEVICE_FEATURES) as u64) << 32 | lo;
    assert_eq!(offered, FEATURES, "MAC, STATUS, MTU and the transport's; no offloads");
    // Linux reads the MAC byte by byte, then status and mtu as 16 bits.
    let bytes: Vec<u8> = (0..6).map(|i| g.dev.read(0, reg::CONFIG + i, 1) as u8).collect();
    assert_eq!(bytes, [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
    assert_eq!(g.dev.read(0, reg::CONFIG + 6, 2), VIRTIO_NET_S_LINK_UP as u32);
    assert_eq!(g.dev.read(0, reg::CONFIG + 10, 2), 1500);
    assert_eq!(g.dev.read(0, reg::CONFIG, 4), 0x3322_1102);
    assert_eq!(g.dev.read(0, reg::CONFIG + 11, 4), 0x05, "past the end reads 0");
    assert_eq!(g.dev.read(0, reg::CONFIG + 0x40, 4), 0);
    // Read-only: a write changes nothing.
    g.dev.write(0, reg::CONFIG, 4, 0xffff_ffff);
    assert_eq!(g.dev.read(0, reg::CONFIG, 1), 0x02);
    // Offloads are not offered, so a driver asking for them fails FEATURES_OK.
    assert!(!handshake(g.dev, FEATURES | 1 /* VIRTIO_NET_F_CSUM */));
    assert!(!handshake(g.dev, FEATURES | 1 << 15 /* VIRTIO_NET_F_MRG_RXBUF */));
}

#[test]
fn unicast_between_two_ports() {
    let [mut a, mut b] = lan();
    a.post_rx(8);
    b.post_rx(8);
    let f = frame(mac(2), mac(1), 98, 7);
    a.send(&f);
    assert_eq!(a.tx_done(), (1, 0), "the TX chain is returned, nothing written");
    assert_eq!(rd(a.dev, reg::INTERRUPT_STATUS), INT_VRING, "TX completion");
    assert_eq!(b.recv(), vec![f.clone()]);
    assert_eq!(rd(b.dev, reg::INTERRUPT_STATUS), INT_VRING);
    assert!(b.line.level.load(Ordering::SeqCst));
    assert!(a.recv().is_empty(), "never back to the sender");
    // And back, with the largest and the smallest frames.
    b.ack();
    let big = frame(mac(1), mac(2), MAX_FRAME, 1);
    let small = frame(mac(1), mac(2), MIN_FRAME, 0);
    b.queue_tx(&big);
    b.queue_tx(&small);
    b.kick_tx();
    assert_eq!(a.recv(), vec![big, small]);
    assert_eq!(a.stats(), [1, 0, 2, 0]);
    assert_eq!(b.stats(), [2, 0, 1, 0]);
}

#[test]
fn header_and_frame_in_separate_and_indirect_descriptors() {
    let [mut a, mut b, c] = lan();
    b.post_rx(4);
    let f = frame(mac(2), mac(1), 300, 3);
    // Header alone, then the frame split in two: how Linux sends when it
    // cannot push the header in front of the data.
    a.mem.write(Ipa(SPARE), &[0u8; HDR_LEN]).unwrap();
    a.mem.write(Ipa(SPARE + 0x100), &f[..100]).unwrap();
    a.mem.write(Ipa(SPARE + 0x400), &f[100..]).unwrap();
    a.queue_tx_chain(&[(SPARE, HDR_LEN as u32, 0), (SPARE + 0x100, 100, 0), (SPARE + 0x400, 200, 0)]);
    // The same frame through an indirect table.
    let table = SPARE + 0x1000;
    a.mem.desc(table, 0, SPARE, HDR_LEN as u32, VIRTQ_DESC_F_NEXT, 1);
    a.mem.desc(table, 1, SPARE + 0x100, 100, VIRTQ_DESC_F_NEXT, 2);
    a.mem.desc(table, 2, SPARE + 0x400, 200, 0, 0);
    a.queue_tx_chain(&[(table, 48, VIRTQ_DESC_F_INDIRECT)]);
    a.kick_tx();
    assert_eq!(b.recv(), vec![f.clone(), f]);
    // An RX buffer split in two descriptors: header in the first.
    c.publish(&RXR, 0, &[(SPARE, HDR_LEN as u32, VIRTQ_DESC_F_WRITE), (SPARE + 0x100, 1514, VIRTQ_DESC_F_WRITE)]);
    wr(c.dev, reg::QUEUE_NOTIFY, 0);
    let g = frame(mac(3), mac(1), 60, 9);
    a.send(&g);
    assert_eq!(c.mem.r32(RXR.used + 8), (HDR_LEN + 60) as u32);
    let mut got = vec![0u8; 60];
    c.mem.read(Ipa(SPARE + 0x100), &mut got).unwrap();
    assert_eq!(got, g);
    assert_eq!(c.mem.r16(SPARE + 10), 1, "num_buffers");
}

#[test]
fn three_ports_broadcast_multicast_unicast() {
    let sw = switch();
    let mut g: Vec<Guest> = (1..=3).map(|i| Guest::plug(sw, mac(i))).collect();
    for x in g.iter_mut() {
        x.post_rx(8);
    }
    let bc = frame(BCAST, mac(1), 42, 0);
    let mc = frame([0x01, 0x00, 0x5e, 0, 0, 1], mac(1), 60, 1);
    let to3 = frame(mac(3), mac(1), 60, 2);
    for f in [&bc, &mc, &to3] {
        g[0].send(f);
    }
    assert!(g[0].recv().is_empty(), "never back to the sender");
    assert_eq!(g[1].recv(), vec![bc.clone(), mc.clone()], "unicast for port 3 not seen by port 2");
    assert_eq!(g[2].recv(), vec![bc, mc, to3]);
    assert_eq!(g[0].stats(), [3, 0, 0, 0]);
}

#[test]
fn switches_are_separate() {
    let (s1, s2) = (switch(), switch());
    let mut a = Guest::plug(s1, mac(1));
    let mut b = Guest::plug(s2, mac(2));
    let mut c = Guest::plug(s2, mac(1)); // the same MAC on another switch
    b.post_rx(4);
    c.post_rx(4);
    a.post_rx(4);
    a.send(&frame(BCAST, mac(1), 60, 0));
    a.send(&frame(mac(2), mac(1), 60, 0));
    assert!(b.recv().is_empty() && c.recv().is_empty());
    assert_eq!(a.stats()[..2], [0, 2], "a broadcast with no other port, a unicast to a MAC not on its switch");
    b.send(&frame(mac(1), mac(2), 60, 5));
    assert_eq!(c.recv(), vec![frame(mac(1), mac(2), 60, 5)]);
    assert!(a.recv().is_empty());
}

#[test]
fn connect_refuses_bad_ports() {
    let sw = switch();
    let _a = Guest::plug_only(sw, mac(1));
    let port: &'static Port = Box::leak(Box::new(Port::new(sw, mac(1))));
    let mem = FakeMem::leak();
    let line: &'static Line = Box::leak(Box::default());
    let dev: &'static Net = Box::leak(Box::new(VirtioMmio::new(VirtioNet::new(port), mem, line)));
    assert_eq!(port.connect(dev), Err(ConnectError::DuplicateMac));
    let group: &'static Port = Box::leak(Box::new(Port::new(sw, [0x03, 0, 0, 0, 0, 1])));
    assert_eq!(group.connect(dev), Err(ConnectError::GroupMac));
    let ok: &'static Port = Box::leak(Box::new(Port::new(sw, mac(2))));
    assert_eq!(ok.connect(dev), Ok(()));
    assert_eq!(ok.connect(dev), Err(ConnectError::AlreadyConnected));
    for i in 3..=super::switch::MAX_PORTS as u8 {
        let p: &'static Port = Box::leak(Box::new(Port::new(sw, mac(i))));
        assert_eq!(p.connect(dev), Ok(()));
    }
    let p: &'static Port = Box::leak(Box::new(Port::new(sw, mac(200))));
    assert_eq!(p.connect(dev), Err(ConnectError::SwitchFull));
    assert!(!ConnectError::SwitchFull.describe().is_empty());
}

#[test]
fn spoofed_source_and_unknown_destination_are_dropped() {
    let [mut a, mut b, mut c] = lan();
    b.post_rx(8);
    c.post_rx(8);
    // A pretends to be C, to B and to everyone; then sends to nobody's MAC.
    a.send(&frame(mac(2), mac(3), 60, 0));
    a.send(&frame(BCAST, mac(3), 60, 0));
    a.send(&frame(mac(9), mac(1), 60, 0));
    a.send(&frame(mac(1), mac(1), 60, 0));
    assert_eq!(a.tx_done(), (4, 0), "every chain returned");
    assert!(b.recv().is_empty() && c.recv().is_empty());
    assert_eq!(a.stats(), [0, 4, 0, 0]);
    // Its own MAC still works.
    a.send(&frame(mac(2), mac(1), 60, 0));
    assert_eq!(b.recv().len(), 1);
}

#[test]
fn frames_of_bad_length_are_dropped() {
    let [mut a, mut b] = lan();
    b.post_rx(8);
    a.send(&frame(mac(2), mac(1), MAX_FRAME + 1, 0));
    a.send(&frame(mac(2), mac(1), MIN_FRAME - 1, 0));
    // Only a header; no header at all; a chain of writable buffers only.
    a.queue_tx_chain(&[(SPARE, HDR_LEN as u32, 0)]);
    a.queue_tx_chain(&[(SPARE, 0, 0)]);
    a.queue_tx_chain(&[(SPARE, 2000, VIRTQ_DESC_F_WRITE)]);
    // 64 KiB of readable bytes (a GSO frame that was never negotiated).
    a.queue_tx_chain(&[(SPARE, 0x1_0000, 0)]);
    a.kick_tx();
    assert_eq!(a.tx_done(), (6, 0));
    assert!(b.recv().is_empty());
    assert_eq!(a.stats(), [0, 6, 0, 0]);
    assert_eq!(a.status(), ALL_OK, "a bad frame is not a bad queue");
    a.send(&frame(mac(2), mac(1), MAX_FRAME, 0));
    assert_eq!(b.recv().len(), 1);
}

#[test]
fn frames_wait_for_rx_buffers_then_drain_in_order() {
    let [mut a, mut b] = lan();
    let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(mac(2), mac(1), 100 + i, i as u8)).collect();
    for f in &frames {
        a.send(f);
    }
    assert_eq!(a.tx_done().0, 3, "the sender is not held up");
    assert!(b.recv().is_empty());
    assert_eq!(b.port.queued(), 3);
    assert!(!b.line.level.load(Ordering::SeqCst));
    // Two buffers: two frames; the third waits for the next buffer.
    b.post_rx(2);
    assert_eq!(b.recv(), frames[..2].to_vec());
    b.post_rx(1);
    assert_eq!(b.recv(), frames[2..].to_vec());
    assert_eq!(b.port.queued(), 0);
    assert_eq!(b.stats(), [0, 0, 3, 0]);
}

#[test]
fn a_congested_port_drops_beyond_its_mailbox() {
    let [mut a, mut b, mut c] = lan();
    c.post_rx(QSIZE as usize);
    // B posts no buffers. 40 frames for B and 40 for C, interleaved, in
    // one notification: B's mailbox takes its first MAILBOX_FRAMES, the
    // rest are dropped, and C gets all of its own.
    let n = 40;
    assert!(n > MAILBOX_FRAMES && 2 * n < 2 * QSIZE as usize);
    for i in 0..n {
        a.queue_tx(&frame(mac(2), mac(1), 60, i as u8));
        a.queue_tx(&frame(mac(3), mac(1), 60, i as u8));
        if a.tx_next == QSIZE {
            a.kick_tx(); // the ring is full: the driver waits for completions
        }
    }
    a.kick_tx();
    assert_eq!(a.tx_done().0, 2 * n as u16);
    assert_eq!(c.recv().len(), n);
    assert_eq!(b.port.queued(), MAILBOX_FRAMES);
    assert_eq!(b.stats()[3], (n - MAILBOX_FRAMES) as u64);
    b.post_rx(QSIZE as usize);
    let got = b.recv();
    assert_eq!(got.len(), MAILBOX_FRAMES);
    assert_eq!(got[0], frame(mac(2), mac(1), 60, 0), "the oldest are kept");
}

#[test]
fn a_burst_larger_than_the_mailbox_is_delivered_whole() {
    // The receiver has buffers: the pump delivers between rounds, so a
    // notification carrying more frames than a mailbox holds loses none.
    let [mut a, mut b, mut c] = lan();
    b.post_rx(QSIZE as usize);
    c.post_rx(QSIZE as usize);
    let frames: Vec<Vec<u8>> = (0..QSIZE as usize - 4).map(|i| frame(BCAST, mac(1), 60 + i, i as u8)).collect();
    for f in &frames {
        a.queue_tx(f);
    }
    a.kick_tx();
    assert_eq!(b.recv(), frames);
    assert_eq!(c.recv(), frames);
    assert_eq!(b.stats()[3] + c.stats()[3], 0, "nothing dropped");
}

#[test]
fn an_rx_buffer_too_small_drops_that_frame() {
    let [mut a, mut b] = lan();
    b.add_rx(1, 100);
    b.add_rx(1, RX_BUF);
    wr(b.dev, reg::QUEUE_NOTIFY, 0);
    a.send(&frame(mac(2), mac(1), 200, 0));
    a.send(&frame(mac(2), mac(1), 200, 1));
    assert_eq!(b.recv(), vec![Vec::new(), frame(mac(2), mac(1), 200, 1)]);
    assert_eq!(b.stats(), [0, 0, 1, 1]);
    assert_eq!(b.status(), ALL_OK);
}

#[test]
fn hostile_tx_chain_resets_only_the_sender() {
    let [mut a, mut b, mut c] = lan();
    b.post_rx(8);
    c.post_rx(8);
    a.queue_tx(&frame(mac(2), mac(1), 60, 0));
    a.queue_tx_chain(&[(BASE + RAM as u64 - 8, 100, 0)]); // runs past its RAM
    a.kick_tx();
    assert_eq!(a.status(), ALL_OK | status::DEVICE_NEEDS_RESET);
    assert_eq!(rd(a.dev, reg::INTERRUPT_STATUS) & INT_CONFIG, INT_CONFIG);
    assert_eq!(b.recv().len(), 1, "the frame before the bad chain went out");
    // The others carry on, to each other and to A's port (queued: A's
    // device is stopped).
    c.send(&frame(mac(2), mac(3), 60, 1));
    c.send(&frame(mac(1), mac(3), 60, 1));
    assert_eq!(b.recv(), vec![frame(mac(2), mac(3), 60, 1)]);
    assert_eq!((b.status(), c.status()), (ALL_OK, ALL_OK));
    // A's later notifications are ignored until it resets; then it works.
    a.send(&frame(mac(2), mac(1), 60, 2));
    assert!(b.recv().is_empty());
    let mut a = Guest::plug_again(a);
    a.post_rx(4);
    a.send(&frame(mac(2), mac(1), 60, 3));
    assert_eq!(b.recv(), vec![frame(mac(2), mac(1), 60, 3)]);
    assert!(a.recv().is_empty(), "frames queued before the reset are gone");
}

#[test]
fn hostile_rx_chain_resets_only_the_receiver() {
    let [mut a, b, mut c] = lan();
    c.post_rx(8);
    // B's RX buffer lies outside its RAM.
    b.publish(&RXR, 0, &[(0x1000, RX_BUF, VIRTQ_DESC_F_WRITE)]);
    wr(b.dev, reg::QUEUE_NOTIFY, 0); // nothing to deliver yet: not looked at
    assert_eq!(b.status(), ALL_OK);
    a.send(&frame(BCAST, mac(1), 60, 0));
    assert_eq!(b.status(), ALL_OK | status::DEVICE_NEEDS_RESET);
    assert_eq!((a.status(), c.status()), (ALL_OK, ALL_OK));
    assert_eq!(a.tx_done(), (1, 0));
    assert_eq!(c.recv().len(), 1);
    // The sender keeps sending; B's mailbox fills and then drops.
    for i in 0..MAILBOX_FRAMES + 5 {
        a.send(&frame(BCAST, mac(1), 60, i as u8));
        c.recv();
        c.post_rx(1);
    }
    assert_eq!(a.status(), ALL_OK);
    assert_eq!(b.port.queued(), MAILBOX_FRAMES);
    // B resets: its mailbox is emptied.
    let mut b = Guest::plug_again(b);
    assert_eq!(b.port.queued(), 0);
    b.post_rx(4);
    a.send(&frame(mac(2), mac(1), 60, 7));
    assert_eq!(b.recv(), vec![frame(mac(2), mac(1), 60, 7)]);
}

#[test]
fn reset_of_one_port_while_others_run() {
    let [mut a, b, mut c] = lan();
    c.post_rx(8);
    a.send(&frame(mac(2), mac(1), 60, 0));
    a.send(&frame(mac(2), mac(1), 60, 1));
    assert_eq!(b.port.queued(), 2);
    // B's driver resets the device (status 0): its queued frames go.
    wr(b.dev, reg::STATUS, 0);
    assert_eq!(b.port.queued(), 0);
    assert_eq!(b.stats()[3], 2);
    // While B is down, frames for it wait, and A and C talk.
    a.send(&frame(mac(3), mac(1), 60, 2));
    a.send(&frame(mac(2), mac(1), 60, 3));
    assert_eq!(c.recv(), vec![frame(mac(3), mac(1), 60, 2)]);
    // B comes back (what a VM reset does too) and gets only new frames.
    b.dev.reset_device();
    let mut b = Guest::plug_again(b);
    b.post_rx(4);
    a.send(&frame(mac(2), mac(1), 60, 4));
    assert_eq!(b.recv(), vec![frame(mac(2), mac(1), 60, 4)]);
    c.send(&frame(mac(2), mac(3), 60, 5));
    assert_eq!(b.recv(), vec![frame(mac(2), mac(3), 60, 5)]);
}

impl Guest {
    /// The driver resets the device and probes it again (fresh rings).
    fn plug_again(self) -> Self {
        wr(self.dev, reg::STATUS, 0);
        for r in [&RXR, &TXR] {
            self.mem.write(Ipa(r.avail), &[0u8; 4]).unwrap();
            self.mem.write(Ipa(r.used), &[0u8; 4]).unwrap();
        }
        let g = Self { rx_next: 0, rx_seen: 0, tx_next: 0, ..self };
        g.start();
        g
    }
}

/// Delivery into a receiver runs with the sender's state lock released:
/// the receiver's interrupt sink reads a sender register (taking its
/// lock) from another thread, which must not block.
#[test]
fn delivery_runs_without_the_senders_lock() {
    use std::sync::mpsc;
    use std::sync::OnceLock;
    struct Probe {
        sender: OnceLock<&'static Net>,
        blocked: std::sync::atomic::AtomicBool,
    }
    impl super::mmio::IrqSink for Probe {
        fn set_level(&self, level: bool) {
            let Some(&a) = self.sender.get() else { return };
            if !level {
                return;
            }
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || tx.send(rd(a, reg::STATUS)).unwrap());
            if rx.recv_timeout(std::time::Duration::from_secs(5)).is_err() {
                self.blocked.store(true, Ordering::SeqCst);
            }
        }
    }
    let sw = switch();
    let mut a = Guest::plug(sw, mac(1));
    let port: &'static Port = Box::leak(Box::new(Port::new(sw, mac(2))));
    let mem = FakeMem::leak();
    let probe: &'static Probe = Box::leak(Box::new(Probe { sender: OnceLock::new(), blocked: Default::default() }));
    let b = Box::leak(Box::new(VirtioMmio::new(VirtioNet::new(port), mem, probe)));
    port.connect(b).unwrap();
    assert!(handshake(b, FEATURES));
    wr(b, reg::QUEUE_SEL, 0);
    wr(b, reg::QUEUE_NUM, QSIZE as u32);
    wr(b, reg::QUEUE_DESC_LOW, RXR.desc as u32);
    wr(b, reg::QUEUE_DRIVER_LOW, RXR.avail as u32);
    wr(b, reg::QUEUE_DEVICE_LOW, RXR.used as u32);
    wr(b, reg::QUEUE_READY, 1);
    wr(b, reg::STATUS, ALL_OK);
    mem.desc(RXR.desc, 0, RXR.bufs, RX_BUF, VIRTQ_DESC_F_WRITE, 0);
    mem.w16(RXR.avail + 4, 0);
    mem.w16(RXR.avail + 2, 1);
    wr(b, reg::QUEUE_NOTIFY, 0);
    probe.sender.set(a.dev).ok().unwrap();
    a.send(&frame(mac(2), mac(1), 60, 0));
    assert_eq!(mem.r16(RXR.used + 2), 1, "delivered");
    assert!(!probe.blocked.load(Ordering::SeqCst), "the receiver's interrupt was raised under the sender's lock");
}

/// Two VMs on two threads (two pCPUs) stream to each other at once: no
/// deadlock, and every frame is either received or counted as dropped.
#[test]
fn two_ports_sending_to_each_other_concurrently() {
    let [a, b] = lan();
    const N: usize = 3000;
    let run = |mut g: Guest, to: [u8; 6], from: [u8; 6]| {
        std::thread::spawn(move || {
            g.post_rx(QSIZE as usize);
            let mut got = 0usize;
            let mut sent = 0usize;
            let start = std::time::Instant::now();
            while sent < N || start.elapsed().as_millis() < 300 {
                if sent < N {
                    // Four frames per kick, after the ring has room.
                    while g.tx_next.wrapping_sub(g.tx_done().0) > QSIZE - 4 {
                        std::thread::yield_now();
                    }
                    for _ in 0..4 {
                        g.queue_tx(&frame(to, from, 60 + sent % 1400, sent as u8));
                        sent += 1;
                    }
                    g.kick_tx();
                }
                let n = g.recv().len();
                got += n;
                if n > 0 {
                    g.post_rx(n);
                }
                if sent >= N && got >= N {
                    break;
                }
            }
            (g, got)
        })
    };
    let ta = run(a, mac(2), mac(1));
    let tb = run(b, mac(1), mac(2));
    let (a, got_a) = ta.join().unwrap();
    let (b, got_b) = tb.join().unwrap();
    for (mut g, got) in [(a, got_a), (b, got_b)] {
        let got = got + g.recv().len(); // delivered after its thread stopped reading
        let s = g.stats();
        assert_eq!(s[0], N as u64, "all sent");
        assert_eq!(s[2], got as u64);
        assert_eq!(s[2] + s[3] + g.port.queued() as u64, N as u64, "received, dropped or waiting");
        assert_eq!(g.status(), ALL_OK);
    }
}

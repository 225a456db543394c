//! The virtual Ethernet switch that joins VMs' virtio-net devices
//! ([`super::net`]): one [`Switch`] per configured switch name, one
//! [`Port`] per net device on it.
//!
//! # Forwarding policy
//!
//! - A port's MAC is the one the configuration gave it, and it is
//!   authoritative: nothing is learned. A frame whose source MAC is not
//!   its port's is dropped, so a VM cannot impersonate another.
//! - A unicast frame goes to the port owning its destination MAC; one for
//!   a MAC no port owns is dropped (there is no uplink yet). Broadcast and
//!   multicast frames (bit 0 of the first destination byte) go to every
//!   other port of the switch. Never back to the sender, never to another
//!   switch.
//!
//! # Locking and memory
//!
//! A sender's device runs its TX queue under its own state lock and may
//! not take a receiver's (two VMs sending to each other from two pCPUs
//! would deadlock). So a frame is copied into the destination port's
//! [`Mailbox`], a bounded FIFO of preallocated slots behind a lock of its
//! own; once the sender's state lock is dropped, the [`Pump`] delivers
//! each touched mailbox into its device's RX queue under that device's
//! lock, one lock at a time. The lock order is device, then mailbox, and
//! a mailbox lock is never held while another is taken. The switch's port
//! table is fixed when the VMs are built, so forwarding takes no switch
//! lock; nothing is allocated per frame.
//!
//! # Congestion
//!
//! A mailbox holds [`MAILBOX_FRAMES`] frames for a port whose driver has
//! no RX buffers posted. One notification can carry more frames than
//! that (a queue of TX chains), so the pump works in rounds: when a
//! destination is full, the frame waits in the pump, the mailboxes are
//! delivered, and the frame is offered again. A port still full after a
//! delivery is congested: frames for it are dropped for the rest of that
//! notification, as a switch drops at a congested egress port (TCP
//! recovers), and a VM that posts no RX buffers never stalls its senders.

extern crate alloc;

use super::mmio::Deferred;
use super::net::{NetDevice, HDR_LEN};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use spin::{Mutex, Once};

/// An Ethernet address.
pub type Mac = [u8; 6];

/// The most ports one switch has (port sets are `u32` masks).
pub const MAX_PORTS: usize = 32;
/// Frames a port's mailbox holds while its driver has no RX buffers.
pub const MAILBOX_FRAMES: usize = 32;
/// The longest frame: a 14-byte Ethernet header and a 1500-byte payload,
/// without FCS (no GSO, no VLAN tag).
pub const MAX_FRAME: usize = 1514;
/// The shortest: an Ethernet header.
pub const MIN_FRAME: usize = 14;

/// What a port has sent and received, for diagnostics and tests.
#[derive(Default, Debug)]
pub struct PortStats {
    /// Frames from this port's guest that entered the switch.
    pub tx_frames: AtomicU64,
    /// Frames from this port's guest that were refused: a length outside
    /// [`MIN_FRAME`]..=[`MAX_FRAME`], a source MAC not its own, or no
    /// port to go to (a unicast MAC no other port owns, or a broadcast on
    /// a switch with no other port).
    pub tx_dropped: AtomicU64,
    /// Frames written into this port's RX queue.
    pub rx_frames: AtomicU64,
    /// Frames for this port that were lost: its mailbox full while it was
    /// congested, an RX buffer too small for the frame, or a reset.
    pub rx_dropped: AtomicU64,
}

fn count(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One frame slot: [`HDR_LEN`] bytes of headroom, where the receiver
/// writes its virtio-net header, then the frame.
struct Slot {
    len: usize,
    bytes: [u8; HDR_LEN + MAX_FRAME],
}

/// A bounded FIFO of frames waiting for a port's RX buffers.
pub struct Mailbox {
    slots: Box<[Slot]>,
    head: usize,
    len: usize,
}

impl Mailbox {
    fn new(frames: usize) -> Self {
        let slots: Vec<Slot> = (0..frames).map(|_| Slot { len: 0, bytes: [0; HDR_LEN + MAX_FRAME] }).collect();
        Self { slots: slots.into_boxed_slice(), head: 0, len: 0 }
    }

    /// Queues a copy of `frame` (at most [`MAX_FRAME`] bytes); false if full.
    fn push(&mut self, frame: &[u8]) -> bool {
        if self.len == self.slots.len() || frame.len() > MAX_FRAME {
            return false;
        }
        let i = (self.head + self.len) % self.slots.len();
        let s = &mut self.slots[i];
        s.bytes[HDR_LEN..HDR_LEN + frame.len()].copy_from_slice(frame);
        s.len = frame.len();
        self.len += 1;
        true
    }

    /// The oldest frame with its header room in front
    /// (`HDR_LEN + frame length` bytes), for the receiver to complete.
    pub(super) fn front_mut(&mut self) -> Option<&mut [u8]> {
        if self.len == 0 {
            return None;
        }
        let s = &mut self.slots[self.head];
        Some(&mut s.bytes[..HDR_LEN + s.len])
    }

    pub(super) fn pop(&mut self) {
        if self.len > 0 {
            self.head = (self.head + 1) % self.slots.len();
            self.len -= 1;
        }
    }

    /// Empties the mailbox; returns how many frames it held.
    fn clear(&mut self) -> usize {
        let n = self.len;
        self.head = 0;
        self.len = 0;
        n
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Why a port cannot join its switch (the boot configuration is wrong).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// the switch already has its maximum number of ports
    SwitchFull,
    /// another port of the switch has the same MAC
    DuplicateMac,
    /// the MAC is a group (multicast) address
    GroupMac,
    /// the port is already connected
    AlreadyConnected,
}

impl ConnectError {
    pub fn describe(self) -> &'static str {
        match self {
            ConnectError::SwitchFull => "the switch already has its maximum number of ports",
            ConnectError::DuplicateMac => "another port of the switch has the same MAC",
            ConnectError::GroupMac => "the MAC is a group (multicast) address",
            ConnectError::AlreadyConnected => "the port is already connected",
        }
    }
}

/// A virtual switch: its ports, fixed once the VMs are built.
pub struct Switch {
    ports: [Once<&'static Port>; MAX_PORTS],
    /// Ports 0..count are connected (published with Release after the slot).
    count: AtomicUsize,
    /// Serialises `connect` (boot only).
    connecting: Mutex<()>,
}

impl Default for Switch {
    fn default() -> Self {
        Self::new()
    }
}

impl Switch {
    pub const fn new() -> Self {
        Self { ports: [const { Once::new() }; MAX_PORTS], count: AtomicUsize::new(0), connecting: Mutex::new(()) }
    }

    /// The connected ports, by index.
    pub fn ports(&self) -> impl Iterator<Item = (usize, &'static Port)> + '_ {
        let n = self.count.load(Ordering::Acquire);
        self.ports[..n].iter().enumerate().filter_map(|(i, p)| Some((i, *p.get()?)))
    }

    fn port(&self, i: usize) -> Option<&'static Port> {
        (i < self.count.load(Ordering::Acquire)).then(|| self.ports[i].get().copied()).flatten()
    }
}

/// A switch port: one VM's virtio-net device.
pub struct Port {
    switch: &'static Switch,
    mac: Mac,
    index: Once<usize>,
    mailbox: Mutex<Mailbox>,
    dev: Once<&'static dyn NetDevice>,
    stats: PortStats,
}

impl Port {
    /// A port of `switch` with address `mac`, not connected yet. Allocates
    /// its mailbox (at boot; nothing is allocated per frame).
    pub fn new(switch: &'static Switch, mac: Mac) -> Self {
        Self {
            switch,
            mac,
            index: Once::new(),
            mailbox: Mutex::new(Mailbox::new(MAILBOX_FRAMES)),
            dev: Once::new(),
            stats: PortStats::default(),
        }
    }

    pub fn mac(&self) -> Mac {
        self.mac
    }

    pub fn stats(&self) -> &PortStats {
        &self.stats
    }

    /// Frames waiting in the mailbox.
    pub fn queued(&self) -> usize {
        self.mailbox.lock().len()
    }

    /// Plugs the port into its switch, with the device that receives its
    /// frames. At boot, before any guest runs.
    pub fn connect(&'static self, dev: &'static dyn NetDevice) -> Result<(), ConnectError> {
        if self.mac[0] & 1 != 0 {
            return Err(ConnectError::GroupMac);
        }
        let _g = self.switch.connecting.lock();
        if self.index.get().is_some() {
            return Err(ConnectError::AlreadyConnected);
        }
        if self.switch.ports().any(|(_, p)| p.mac == self.mac) {
            return Err(ConnectError::DuplicateMac);
        }
        let n = self.switch.count.load(Ordering::Acquire);
        if n == MAX_PORTS {
            return Err(ConnectError::SwitchFull);
        }
        self.dev.call_once(|| dev);
        self.index.call_once(|| n);
        self.switch.ports[n].call_once(|| self);
        self.switch.count.store(n + 1, Ordering::Release);
        Ok(())
    }

    /// The ports a frame from this one goes to (bit i: port i). None if its
    /// source MAC is not this port's, or if it is unicast to a MAC no other
    /// port owns.
    fn destinations(&self, frame: &[u8]) -> u32 {
        let Some(&me) = self.index.get() else { return 0 };
        if frame.len() < MIN_FRAME || frame[6..12] != self.mac {
            return 0;
        }
        let group = frame[0] & 1 != 0;
        let mut to = 0;
        for (i, p) in self.switch.ports() {
            if i != me && (group || frame[..6] == p.mac) {
                to |= 1 << i;
            }
        }
        to
    }

    /// Copies `frame` into the mailboxes of the ports in `to`; returns the
    /// ports whose mailboxes were full.
    fn offer(&self, frame: &[u8], to: u32) -> u32 {
        let mut full = 0;
        for i in bits(to) {
            if let Some(p) = self.switch.port(i) {
                if !p.mailbox.lock().push(frame) {
                    full |= 1 << i;
                }
            }
        }
        full
    }

    /// Sends the pump's frame to the ports in `to`. A full destination
    /// keeps the frame in the pump for one retry after a delivery; on the
    /// retry (`retry`), or for a port already congested, it is dropped.
    fn send(&self, pump: &mut Pump, to: u32, retry: bool) {
        let full = self.offer(pump.frame(), to);
        pump.touched |= to & !full;
        let give_up = if retry { full } else { full & pump.congested };
        pump.congested |= give_up;
        self.count_rx_dropped(give_up, 1);
        pump.held_for = full & !give_up;
    }

    fn count_rx_dropped(&self, ports: u32, n: u64) {
        for i in bits(ports) {
            if let Some(p) = self.switch.port(i) {
                count(&p.stats.rx_dropped, n);
            }
        }
    }

    /// Delivers the mailboxes of `ports` into their devices' RX queues
    /// (each under its own device's lock). Call with no device lock held.
    fn deliver(&self, ports: u32) {
        for i in bits(ports) {
            if let Some(d) = self.switch.port(i).and_then(|p| p.dev.get()) {
                d.rx_fill();
            }
        }
    }

    /// The mailbox, for the port's own device (its RX path, under its
    /// state lock: the lock order is device, then mailbox).
    pub(super) fn mailbox(&self) -> spin::MutexGuard<'_, Mailbox> {
        self.mailbox.lock()
    }

    /// The port's device was reset: frames waiting for it are dropped.
    pub(super) fn clear(&self) {
        let n = self.mailbox.lock().clear();
        count(&self.stats.rx_dropped, n as u64);
    }

    /// A frame from this port's guest (TX): forwarded, or counted as
    /// refused. Runs under the sender's state lock.
    pub(super) fn transmit(&self, pump: &mut Pump) {
        let to = self.destinations(pump.frame());
        if to == 0 {
            count(&self.stats.tx_dropped, 1);
            return;
        }
        count(&self.stats.tx_frames, 1);
        self.send(pump, to, false);
    }

    /// A frame refused before it reached the switch (its length).
    pub(super) fn refused(&self) {
        count(&self.stats.tx_dropped, 1);
    }

    /// Offers the frame held in the pump again (after a delivery).
    pub(super) fn retry(&self, pump: &mut Pump) {
        if pump.held_for != 0 {
            let to = core::mem::take(&mut pump.held_for);
            self.send(pump, to, true);
        }
    }
}

/// The TX pump after a notification: runs the sender's TX queue in rounds
/// (each under the sender's lock) and delivers between rounds (each under
/// a receiver's lock), never holding two device locks.
impl Deferred for Port {
    fn run(&self) {
        let Some(dev) = self.dev.get() else { return };
        let mut pump = Pump::new();
        loop {
            pump.again = false;
            let ran = dev.tx_round(&mut pump);
            self.deliver(core::mem::take(&mut pump.touched));
            if !ran || !pump.again {
                break;
            }
        }
        // The device stopped (reset, or NEEDS_RESET) with a frame held.
        self.count_rx_dropped(pump.held_for, 1);
    }
}

/// One TX notification's progress, carried between rounds.
pub struct Pump {
    /// The frame being sent, after its virtio-net header.
    buf: [u8; HDR_LEN + MAX_FRAME],
    len: usize,
    /// Ports the frame still has to reach (their mailboxes were full).
    held_for: u32,
    /// Ports whose mailboxes got frames since the last delivery.
    touched: u32,
    /// Ports still full after a delivery: frames for them are dropped for
    /// the rest of this notification.
    congested: u32,
    /// TX chains this notification may still take.
    pub(super) budget: usize,
    /// The round stopped to deliver and must run again.
    again: bool,
}

impl Default for Pump {
    fn default() -> Self {
        Self::new()
    }
}

impl Pump {
    pub fn new() -> Self {
        Self {
            buf: [0; HDR_LEN + MAX_FRAME],
            len: 0,
            held_for: 0,
            touched: 0,
            congested: 0,
            budget: super::queue::MAX_QUEUE_SIZE as usize,
            again: false,
        }
    }

    /// Room for a chain's readable part: header and frame.
    pub(super) fn buffer(&mut self) -> &mut [u8; HDR_LEN + MAX_FRAME] {
        &mut self.buf
    }

    /// The frame is `len` bytes after the header in [`Pump::buffer`].
    pub(super) fn set_len(&mut self, len: usize) {
        self.len = len.min(MAX_FRAME);
    }

    fn frame(&self) -> &[u8] {
        &self.buf[HDR_LEN..HDR_LEN + self.len]
    }

    /// A frame is waiting for a delivery.
    pub(super) fn holding(&self) -> bool {
        self.held_for != 0
    }

    /// Ask for another round after the delivery.
    pub(super) fn again(&mut self) {
        self.again = true;
    }
}

/// The set bits of a port mask, low to high.
fn bits(mask: u32) -> impl Iterator<Item = usize> {
    (0..MAX_PORTS).filter(move |i| mask & (1 << i) != 0)
}

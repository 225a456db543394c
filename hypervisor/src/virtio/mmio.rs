//! The virtio-mmio transport, version 2 (virtio 1.2 section 4.2): the
//! register file a driver such as Linux's `virtio_mmio` probes and drives,
//! in front of one [`VirtioDevice`]. (Somewhat over 600 lines, on purpose:
//! the register file and the state machine it drives are one invariant.)
//!
//! # Model
//!
//! - Registers 0x000-0x0ff take only aligned 32-bit accesses (4.2.2.2);
//!   other sizes read 0 and are ignored on write. Write-only registers read
//!   0, read-only ones ignore writes, unknown offsets read 0 and ignore
//!   writes. The device configuration space from 0x100 is handed to the
//!   device with any access size.
//! - Features: VIRTIO_F_VERSION_1 (legacy is not supported) and
//!   VIRTIO_F_INDIRECT_DESC are always offered, besides the device's own.
//!   FEATURES_OK is accepted only if the driver's features are a subset of
//!   those offered and include VERSION_1 (2.2.1); otherwise the bit stays
//!   clear and the driver, re-reading Status, gives up (3.1.1).
//! - Status (2.1): writing 0 resets the device, its queues and the
//!   interrupt status. Other writes may only add bits, in order
//!   (ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK; FAILED at any time); a
//!   write that clears a bit, or a bit whose predecessors are missing, is
//!   ignored (the bit stays clear). DEVICE_NEEDS_RESET is only set by us.
//! - Queue registers apply to the queue in QueueSel; with QueueSel beyond
//!   the device's queues QueueNumMax reads 0 and writes are ignored. Size
//!   and addresses of a ready queue cannot be changed. A queue's layout is
//!   validated when QueueReady is set and on every use.
//! - QueueNotify (the queue index; no VIRTIO_F_NOTIFICATION_DATA) is
//!   ignored before DRIVER_OK, after NEEDS_RESET, for a queue that is not
//!   ready or does not exist (4.2.2.1: the device must not touch a queue
//!   whose QueueReady is 0); otherwise it calls [`VirtioDevice::notify`].
//!   Work the device leaves for later ([`VirtioDevice::take_deferred`])
//!   runs after the state lock is released (see below).
//! - Any [`QueueError`] sets DEVICE_NEEDS_RESET and InterruptStatus bit 1
//!   (configuration change, 2.1.2 / 4.2.2.1); the device stops processing
//!   until the driver resets it.
//! - No shared memory regions (SHMLen reads all ones, 4.2.2), no
//!   VIRTIO_F_RING_RESET (QueueReset reads 0).
//!
//! # Locking and the interrupt line
//!
//! `MmioDevice` methods take `&self` and may run on several pCPUs, so the
//! state is behind a `spin::Mutex`. The interrupt line is never driven
//! while that lock is held (the sink may take the vGIC's locks): after
//! releasing it, the writer takes a second, sink-only lock, re-reads
//! InterruptStatus (an atomic updated under the state lock) and sets the
//! level from it. Whoever drives the line last therefore uses the latest
//! status, and two racing updates cannot leave a stale level.
//!
//! For the same reason a device never reaches into another device while
//! its own state lock is held (two VMs sending to each other from two
//! pCPUs would deadlock): after a notification it may leave a
//! [`Deferred`] job, which the transport runs once the lock is released
//! and the interrupt line has been driven. virtio-net uses it to deliver
//! frames into the receivers' queues, each under that receiver's lock.

use super::queue::{GuestMemory, Queue, QueueError, MAX_QUEUE_SIZE};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use spin::Mutex;

/// "virt", little-endian.
pub const MAGIC: u32 = 0x7472_6976;
pub const VERSION: u32 = 2;
/// "TSRA", little-endian.
pub const VENDOR_ID: u32 = 0x4152_5354;

/// Register offsets (4.2.2).
pub mod reg {
    pub const MAGIC_VALUE: u32 = 0x000;
    pub const VERSION: u32 = 0x004;
    pub const DEVICE_ID: u32 = 0x008;
    pub const VENDOR_ID: u32 = 0x00c;
    pub const DEVICE_FEATURES: u32 = 0x010;
    pub const DEVICE_FEATURES_SEL: u32 = 0x014;
    pub const DRIVER_FEATURES: u32 = 0x020;
    pub const DRIVER_FEATURES_SEL: u32 = 0x024;
    pub const QUEUE_SEL: u32 = 0x030;
    pub const QUEUE_NUM_MAX: u32 = 0x034;
    pub const QUEUE_NUM: u32 = 0x038;
    pub const QUEUE_READY: u32 = 0x044;
    pub const QUEUE_NOTIFY: u32 = 0x050;
    pub const INTERRUPT_STATUS: u32 = 0x060;
    pub const INTERRUPT_ACK: u32 = 0x064;
    pub const STATUS: u32 = 0x070;
    pub const QUEUE_DESC_LOW: u32 = 0x080;
    pub const QUEUE_DESC_HIGH: u32 = 0x084;
    pub const QUEUE_DRIVER_LOW: u32 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u32 = 0x094;
    pub const QUEUE_DEVICE_LOW: u32 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u32 = 0x0a4;
    pub const SHM_SEL: u32 = 0x0ac;
    pub const SHM_LEN_LOW: u32 = 0x0b0;
    pub const SHM_LEN_HIGH: u32 = 0x0b4;
    pub const SHM_BASE_LOW: u32 = 0x0b8;
    pub const SHM_BASE_HIGH: u32 = 0x0bc;
    pub const QUEUE_RESET: u32 = 0x0c0;
    pub const CONFIG_GENERATION: u32 = 0x0fc;
    pub const CONFIG: u32 = 0x100;
}

/// Device status bits (2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// InterruptStatus bits (4.2.2).
pub const INT_VRING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

/// Transport-level feature bits (6).
pub const VIRTIO_F_INDIRECT_DESC: u64 = 1 << 28;
pub const VIRTIO_F_EVENT_IDX: u64 = 1 << 29;
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// The features the transport and queue implementation always offer.
pub const TRANSPORT_FEATURES: u64 = VIRTIO_F_VERSION_1 | VIRTIO_F_INDIRECT_DESC;

/// The size of the MMIO window a device needs (registers and config).
pub const WINDOW_SIZE: u32 = 0x200;

/// What one pass over a queue (a notification, or its continuation) may
/// do before it gives the pCPU back, whatever the queue holds. Chains past
/// it wait for the next pass ([`VirtioMmio::continue_work`], run by the
/// VM's own vCPUs when they next exit or wait), so a VM cannot keep a pCPU
/// in HYP mode longer than this, and pays for its I/O with its own time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Chains it may still take.
    pub chains: u32,
    /// Bytes it may still move (a chain already taken finishes, so one
    /// pass moves at most this plus one chain's worth).
    pub bytes: u64,
}

impl Budget {
    pub const PASS: Budget = Budget { chains: 16, bytes: 256 << 10 };

    /// May another chain be taken?
    pub fn allows(&self) -> bool {
        self.chains > 0 && self.bytes > 0
    }

    /// A chain was served, moving `bytes`.
    pub fn spend(&mut self, bytes: u64) {
        self.chains = self.chains.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes.max(1));
    }
}

/// A device model behind the transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID (5): 4 for entropy, 2 for block, ...
    const DEVICE_ID: u32;
    /// Device-specific feature bits (the transport adds its own).
    fn features(&self) -> u64;
    fn num_queues(&self) -> usize;
    /// The largest size of queue `queue` (a power of two, at most
    /// [`MAX_QUEUE_SIZE`]).
    fn queue_max_size(&self, _queue: usize) -> u16 {
        MAX_QUEUE_SIZE
    }
    /// A config-space read, `offset` from 0x100, `size` 1, 2 or 4.
    fn read_config(&self, offset: u32, size: u8) -> u32;
    fn write_config(&mut self, offset: u32, size: u8, value: u32);
    /// The driver notified queue `queue` (ready, DRIVER_OK), or a pass it
    /// could not finish is continued. Takes chains while `budget` allows
    /// (see [`Budget`]). Returns whether used buffers were added and the
    /// driver wants an interrupt.
    fn notify(
        &mut self,
        queue: usize,
        q: &mut Queue,
        mem: &dyn GuestMemory,
        budget: &mut Budget,
    ) -> Result<bool, QueueError>;
    /// The driver reset the device: forget all per-driver state.
    fn reset(&mut self);
    /// Called under the state lock right after [`VirtioDevice::notify`]
    /// (whatever its outcome): work to run once that lock is released,
    /// with no device lock held.
    fn take_deferred(&mut self) -> Option<&'static dyn Deferred> {
        None
    }
}

/// Work a device model leaves for after the transport has dropped its
/// state lock: anything that takes other devices' locks.
pub trait Deferred: Sync {
    fn run(&self);
}

/// The device's interrupt line (an SPI on the vGIC, in the runtime).
pub trait IrqSink: Sync {
    /// Level-triggered: high while InterruptStatus != 0.
    fn set_level(&self, level: bool);
    /// A pass ran out of budget with chains left: the VM's vCPUs must call
    /// [`VirtioMmio::continue_work`] when they next pass by.
    fn work_left(&self) {}
}

impl<T: IrqSink + ?Sized> IrqSink for &T {
    fn set_level(&self, level: bool) {
        (**self).set_level(level)
    }
    fn work_left(&self) {
        (**self).work_left()
    }
}

struct State<D> {
    device: D,
    queues: [Queue; MAX_QUEUES],
    num_queues: usize,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    /// The driver set a feature bit above bit 63.
    unknown_features: bool,
    queue_sel: u32,
    config_generation: u32,
}

/// The most queues a device may have here.
pub const MAX_QUEUES: usize = 8;

/// One virtio-mmio device: `D` the model, `M` the VM's memory, `I` its
/// interrupt line.
pub struct VirtioMmio<D: VirtioDevice, M: GuestMemory + Sync, I: IrqSink> {
    state: Mutex<State<D>>,
    /// The VM is being reset or has ended: no work of any kind touches its
    /// memory (see [`VirtioMmio::quiesce`]).
    quiesced: AtomicBool,
    /// Queues whose last pass ran out of budget (bit n: queue n).
    pending: AtomicU32,
    interrupt_status: AtomicU32,
    irq_lock: Mutex<()>,
    mem: M,
    irq: I,
}

/// What a register access asks for once the state lock is released.
#[must_use]
enum After {
    Nothing,
    UpdateIrq,
    /// Drive the interrupt line if `.0`, then run the device's work.
    Deferred(bool, &'static dyn Deferred),
}

impl<D: VirtioDevice, M: GuestMemory + Sync, I: IrqSink> VirtioMmio<D, M, I> {
    /// Panics (a configuration bug, not a guest action) if the device has
    /// more than [`MAX_QUEUES`] queues or a bad maximum queue size.
    pub fn new(device: D, mem: M, irq: I) -> Self {
        let num_queues = device.num_queues();
        assert!(num_queues <= MAX_QUEUES, "virtio device with too many queues");
        let queues = core::array::from_fn(|i| {
            let max = if i < num_queues { device.queue_max_size(i) } else { 0 };
            assert!(max == 0 && i >= num_queues || max.is_power_of_two() && max <= MAX_QUEUE_SIZE);
            Queue::new(max)
        });
        Self {
            state: Mutex::new(State {
                device,
                queues,
                num_queues,
                status: 0,
                device_features_sel: 0,
                driver_features_sel: 0,
                driver_features: 0,
                unknown_features: false,
                queue_sel: 0,
                config_generation: 0,
            }),
            quiesced: AtomicBool::new(false),
            pending: AtomicU32::new(0),
            interrupt_status: AtomicU32::new(0),
            irq_lock: Mutex::new(()),
            mem,
            irq,
        }
    }

    /// The Status register (for diagnostics and tests).
    pub fn status(&self) -> u32 {
        self.state.lock().status
    }

    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status.load(Ordering::Acquire)
    }

    /// Runs `f` on the device model (for backends: e.g. to push input).
    pub fn with_device<R>(&self, f: impl FnOnce(&mut D) -> R) -> R {
        f(&mut self.state.lock().device)
    }

    /// Device-initiated work on queue `queue` (input arriving from outside
    /// the VM: a packet from the switch, console input). Runs `f` under the
    /// state lock only if the driver has the device running (DRIVER_OK, not
    /// NEEDS_RESET, queue ready and valid), with the same outcome rules as a
    /// notification: `Ok(true)` raises the used-buffer interrupt, an error
    /// puts the device in NEEDS_RESET. Returns whether `f` ran. Call it with
    /// no other device's lock held.
    pub fn device_work(
        &self,
        queue: usize,
        f: impl FnOnce(&mut D, &mut Queue, &dyn GuestMemory) -> Result<bool, QueueError>,
    ) -> bool {
        let (ran, after) = {
            let mut guard = self.state.lock();
            let s = &mut *guard;
            let running = s.status & status::DRIVER_OK != 0 && s.status & status::DEVICE_NEEDS_RESET == 0;
            if !running || queue >= s.num_queues || !s.queues[queue].ready || self.quiesced.load(Ordering::Acquire) {
                return false;
            }
            let State { device, queues, .. } = s;
            let q = &mut queues[queue];
            match q.validate(&self.mem).and_then(|()| f(device, q, &self.mem)) {
                Ok(false) => (true, After::Nothing),
                Ok(true) => {
                    self.interrupt_status.fetch_or(INT_VRING, Ordering::AcqRel);
                    (true, After::UpdateIrq)
                }
                Err(_) => {
                    self.needs_reset(s);
                    (true, After::UpdateIrq)
                }
            }
        };
        if let After::UpdateIrq = after {
            self.update_irq();
        }
        ran
    }

    /// Stops every use of the VM's memory: from now on device-initiated work
    /// ([`VirtioMmio::device_work`]: a peer's frames, console input) and
    /// notifications are refused, and the device is reset as a driver
    /// writing Status 0 would, after any work in progress (which holds the
    /// state lock) has finished. For a VM being reset, before its RAM is
    /// touched, and for a VM that has ended. [`VirtioMmio::resume`] undoes it.
    pub fn quiesce(&self) {
        self.quiesced.store(true, Ordering::Release);
        self.reset_device();
    }

    /// The VM runs again (its reset is done): the device, reset, may be
    /// set up by the driver as after power-on.
    pub fn resume(&self) {
        self.quiesced.store(false, Ordering::Release);
    }

    /// Resets the device as a driver writing Status 0 would.
    pub fn reset_device(&self) {
        {
            let mut s = self.state.lock();
            self.reset(&mut s);
        }
        self.update_irq();
    }

    /// The device's configuration changed: bump ConfigGeneration and raise
    /// the configuration-change interrupt (4.2.2.1).
    pub fn config_changed(&self) {
        {
            let mut s = self.state.lock();
            s.config_generation = s.config_generation.wrapping_add(1);
            if s.status & status::DRIVER_OK != 0 {
                self.interrupt_status.fetch_or(INT_CONFIG, Ordering::AcqRel);
            }
        }
        self.update_irq();
    }

    fn update_irq(&self) {
        let _g = self.irq_lock.lock();
        self.irq.set_level(self.interrupt_status.load(Ordering::Acquire) != 0);
    }

    fn offered(s: &State<D>) -> u64 {
        s.device.features() | TRANSPORT_FEATURES
    }

    fn needs_reset(&self, s: &mut State<D>) {
        s.status |= status::DEVICE_NEEDS_RESET;
        if s.status & status::DRIVER_OK != 0 {
            self.interrupt_status.fetch_or(INT_CONFIG, Ordering::AcqRel);
        }
    }

    fn reset(&self, s: &mut State<D>) {
        self.pending.store(0, Ordering::Release);
        s.device.reset();
        for q in s.queues.iter_mut() {
            q.reset();
        }
        s.status = 0;
        s.device_features_sel = 0;
        s.driver_features_sel = 0;
        s.driver_features = 0;
        s.unknown_features = false;
        s.queue_sel = 0;
        self.interrupt_status.store(0, Ordering::Release);
    }

    fn write_status(&self, s: &mut State<D>, value: u32) -> After {
        use status::*;
        if value == 0 {
            self.reset(s);
            return After::UpdateIrq;
        }
        let old = s.status;
        // The driver may not clear bits (other than by reset, 2.1.2); it
        // echoes NEEDS_RESET back but cannot set it.
        if value & old & !DEVICE_NEEDS_RESET != old & !DEVICE_NEEDS_RESET {
            return After::Nothing;
        }
        let mut new = old;
        let add = value & !old;
        if add & FAILED != 0 {
            new |= FAILED;
        }
        if add & ACKNOWLEDGE != 0 {
            new |= ACKNOWLEDGE;
        }
        if add & DRIVER != 0 && new & ACKNOWLEDGE != 0 {
            new |= DRIVER;
        }
        if add & FEATURES_OK != 0 && new & DRIVER != 0 {
            let f = s.driver_features;
            if f & !Self::offered(s) == 0 && f & VIRTIO_F_VERSION_1 != 0 && !s.unknown_features {
                new |= FEATURES_OK;
                let indirect = f & VIRTIO_F_INDIRECT_DESC != 0;
                for q in s.queues.iter_mut() {
                    q.indirect = indirect;
                }
            }
        }
        if add & DRIVER_OK != 0 && new & FEATURES_OK != 0 {
            new |= DRIVER_OK;
        }
        s.status = new;
        After::Nothing
    }

    fn selected(s: &mut State<D>) -> Option<&mut Queue> {
        let i = s.queue_sel as usize;
        if i < s.num_queues {
            Some(&mut s.queues[i])
        } else {
            None
        }
    }

    /// A queue register write to a queue that may still be configured:
    /// it exists, is not ready, and the driver is between FEATURES_OK and
    /// DRIVER_OK or later (we accept setup at any time before ready).
    fn configurable(s: &mut State<D>) -> Option<&mut Queue> {
        Self::selected(s).filter(|q| !q.ready)
    }

    fn set_low(v: &mut crate::addr::Ipa, low: u32) {
        v.0 = (v.0 & !0xffff_ffff) | low as u64;
    }

    fn set_high(v: &mut crate::addr::Ipa, high: u32) {
        v.0 = (v.0 & 0xffff_ffff) | (high as u64) << 32;
    }

    /// What a register access or a pass asked for, once the state lock is
    /// released.
    fn finish(&self, after: After) {
        match after {
            After::Nothing => {}
            After::UpdateIrq => self.update_irq(),
            After::Deferred(irq, work) => {
                if irq {
                    self.update_irq();
                }
                work.run();
            }
        }
    }

    /// Queues with work their last pass left (bit n: queue n).
    pub fn pending_queues(&self) -> u32 {
        self.pending.load(Ordering::Acquire)
    }

    /// Continues the passes that ran out of budget, one pass a queue.
    /// Returns whether work is still left.
    pub fn continue_work(&self) -> bool {
        let mut left = self.pending.swap(0, Ordering::AcqRel);
        while left != 0 {
            let queue = left.trailing_zeros();
            left &= left - 1;
            let after = {
                let mut guard = self.state.lock();
                self.notify(&mut guard, queue)
            };
            self.finish(after);
        }
        self.pending.load(Ordering::Acquire) != 0
    }

    fn notify(&self, s: &mut State<D>, queue: u32) -> After {
        let i = queue as usize;
        let stopped = s.status & status::DRIVER_OK == 0 || s.status & status::DEVICE_NEEDS_RESET != 0;
        if stopped || i >= s.num_queues || self.quiesced.load(Ordering::Acquire) {
            return After::Nothing;
        }
        let State { device, queues, .. } = s;
        let q = &mut queues[i];
        if !q.ready {
            return After::Nothing;
        }
        let mut budget = Budget::PASS;
        let result = q.validate(&self.mem).and_then(|()| device.notify(i, q, &self.mem, &mut budget));
        if result.is_ok() && !budget.allows() && q.has_available(&self.mem).unwrap_or(false) {
            self.pending.fetch_or(1 << i, Ordering::AcqRel);
            self.irq.work_left();
        }
        let deferred = device.take_deferred();
        let irq = match result {
            Ok(false) => false,
            Ok(true) => {
                self.interrupt_status.fetch_or(INT_VRING, Ordering::AcqRel);
                true
            }
            Err(_) => {
                self.needs_reset(s);
                true
            }
        };
        match deferred {
            Some(work) => After::Deferred(irq, work),
            None if irq => After::UpdateIrq,
            None => After::Nothing,
        }
    }

    fn write_locked(&self, offset: u32, value: u32) -> After {
        let mut guard = self.state.lock();
        let s = &mut *guard;
        match offset {
            reg::DEVICE_FEATURES_SEL => s.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => s.driver_features_sel = value,
            reg::DRIVER_FEATURES
                // Only while negotiating (after DRIVER, before FEATURES_OK).
                if s.status & status::DRIVER != 0 && s.status & status::FEATURES_OK == 0 => {
                    match s.driver_features_sel {
                        0 => s.driver_features = (s.driver_features & !0xffff_ffff) | value as u64,
                        1 => s.driver_features = (s.driver_features & 0xffff_ffff) | (value as u64) << 32,
                        // Higher words: nothing is offered there, so a set
                        // bit fails FEATURES_OK; remember that.
                        _ => s.unknown_features |= value != 0,
                    }
                }
            reg::QUEUE_SEL => s.queue_sel = value,
            reg::QUEUE_NUM => {
                if let Some(q) = Self::configurable(s) {
                    // Saturated, not truncated: anything above 16 bits
                    // must fail validation.
                    q.size = u16::try_from(value).unwrap_or(u16::MAX);
                }
            }
            reg::QUEUE_READY => {
                if let Some(q) = Self::selected(s) {
                    if value & 1 == 0 {
                        q.ready = false;
                    } else if !q.ready {
                        q.ready = true;
                        if q.validate(&self.mem).is_err() {
                            self.needs_reset(s);
                            return After::UpdateIrq;
                        }
                    }
                }
            }
            reg::QUEUE_NOTIFY => return self.notify(s, value),
            reg::INTERRUPT_ACK => {
                self.interrupt_status.fetch_and(!value, Ordering::AcqRel);
                return After::UpdateIrq;
            }
            reg::STATUS => return self.write_status(s, value),
            reg::QUEUE_DESC_LOW => Self::configurable(s).into_iter().for_each(|q| Self::set_low(&mut q.desc, value)),
            reg::QUEUE_DESC_HIGH => Self::configurable(s).into_iter().for_each(|q| Self::set_high(&mut q.desc, value)),
            reg::QUEUE_DRIVER_LOW => Self::configurable(s).into_iter().for_each(|q| Self::set_low(&mut q.driver, value)),
            reg::QUEUE_DRIVER_HIGH => {
                Self::configurable(s).into_iter().for_each(|q| Self::set_high(&mut q.driver, value))
            }
            reg::QUEUE_DEVICE_LOW => Self::configurable(s).into_iter().for_each(|q| Self::set_low(&mut q.device, value)),
            reg::QUEUE_DEVICE_HIGH => {
                Self::configurable(s).into_iter().for_each(|q| Self::set_high(&mut q.device, value))
            }
            _ => {}
        }
        After::Nothing
    }

    fn read_locked(&self, offset: u32) -> u32 {
        let mut guard = self.state.lock();
        let s = &mut *guard;
        match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => D::DEVICE_ID,
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match s.device_features_sel {
                0 => Self::offered(s) as u32,
                1 => (Self::offered(s) >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => Self::selected(s).map_or(0, |q| q.max_size as u32),
            reg::QUEUE_READY => Self::selected(s).map_or(0, |q| q.ready as u32),
            reg::INTERRUPT_STATUS => self.interrupt_status.load(Ordering::Acquire),
            reg::STATUS => s.status,
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH => u32::MAX,
            reg::CONFIG_GENERATION => s.config_generation,
            _ => 0,
        }
    }
}

impl<D: VirtioDevice, M: GuestMemory + Sync, I: IrqSink> crate::mmio::MmioDevice for VirtioMmio<D, M, I> {
    fn read(&self, _vcpu: u32, offset: u32, size: u8) -> u32 {
        if offset >= reg::CONFIG {
            return self.state.lock().device.read_config(offset - reg::CONFIG, size);
        }
        if size != 4 || !offset.is_multiple_of(4) {
            return 0;
        }
        self.read_locked(offset)
    }

    fn write(&self, _vcpu: u32, offset: u32, size: u8, value: u32) {
        if offset >= reg::CONFIG {
            self.state.lock().device.write_config(offset - reg::CONFIG, size, value);
            return;
        }
        if size != 4 || !offset.is_multiple_of(4) {
            return;
        }
        // The state lock is released at the end of `write_locked`, before
        // the interrupt line is driven and deferred work runs (see the
        // module comment).
        let after = self.write_locked(offset, value);
        self.finish(after);
    }
}

//! VMs and vCPUs.
//!
//! VMs are created once at boot from the payload and live for the whole run
//! (`&'static`). A vCPU's register context belongs to the pCPU whose run
//! queue holds it (vCPUs do not migrate), so the hot path takes no lock: the
//! only shared state is atomics (VM state, vCPU power state) and the small
//! CPU_ON request a sibling vCPU leaves for the owner.

use crate::addr::{Ipa, PhysAddr};
use crate::console::LineBuffer;
use crate::context::{El1State, FpState, GichState, GuestRegs};
use crate::devices::pl011::{Pl011, UartBackend};
use crate::mmio::{DataAbort, MmioBus, MmioDevice, MmioError, MmioRegion, Regs};
use crate::vgic::Vgic;
use crate::virtio::blk::{BackendError, BlockBackend, VirtioBlk, SECTOR};
use crate::virtio::console::{ConsoleSink, VirtioConsole};
use crate::virtio::net::VirtioNet;
use crate::virtio::switch::{ConnectError, Port, Switch};
use crate::virtio::rng::VirtioRng;
use crate::virtio::VirtioMmio;
use tessera_payload::{Device, DeviceDesc};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use hypercall_abi::psci;
use spin::{Mutex, Once};

/// A VM's RAM: one contiguous block, `size` bytes at guest `ipa`, backed by
/// host physical `pa`. `host` is where the hypervisor sees it (the identity
/// map on the target; a heap buffer in host tests).
#[derive(Clone, Copy, Debug)]
pub struct GuestRam {
    pub ipa: Ipa,
    pub size: u64,
    pub pa: PhysAddr,
    pub host: *mut u8,
}

// SAFETY: `host` points at memory owned by the VM for the whole run; all
// accesses go through `read`/`write`, which copy bytes and never hand out
// references (the guest may change the memory at any time).
unsafe impl Sync for GuestRam {}
// SAFETY: as above.
unsafe impl Send for GuestRam {}

impl GuestRam {
    /// Is `[ipa, ipa + len)` inside this RAM? Overflow-safe.
    pub fn contains(&self, ipa: Ipa, len: u64) -> bool {
        ipa >= self.ipa && ipa.raw().checked_add(len).is_some_and(|end| end <= self.ipa.raw() + self.size)
    }

    /// Copies guest bytes out. The guest may be writing them concurrently,
    /// so this is a raw copy into our own buffer, never a reference.
    pub fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), OutsideRam> {
        if !self.contains(ipa, buf.len() as u64) {
            return Err(OutsideRam);
        }
        let off = (ipa.raw() - self.ipa.raw()) as usize;
        // SAFETY: the range was checked to lie inside this VM's RAM, which
        // `host` maps for `size` bytes; `buf` is ours and cannot overlap it.
        unsafe { core::ptr::copy_nonoverlapping(self.host.add(off), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    pub fn write(&self, ipa: Ipa, data: &[u8]) -> Result<(), OutsideRam> {
        if !self.contains(ipa, data.len() as u64) {
            return Err(OutsideRam);
        }
        let off = (ipa.raw() - self.ipa.raw()) as usize;
        // SAFETY: as in `read`; the destination is guest RAM we own.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), self.host.add(off), data.len()) };
        Ok(())
    }

    pub fn zero(&self) {
        // SAFETY: `host` maps `size` bytes of this VM's RAM.
        unsafe { core::ptr::write_bytes(self.host, 0, self.size as usize) };
    }
}

/// A guest range that is not entirely the VM's own RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutsideRam;

/// The guest-physical map every VM sees besides its RAM (the QEMU `virt`
/// layout, so guests built for that board need no changes). The packer's
/// guest DTB (`xtask/src/dtb.rs`) describes the same addresses.
pub mod guest_map {
    use crate::addr::Ipa;
    /// Emulated GICv2 distributor (trapped).
    pub const GICD: Ipa = Ipa(0x0800_0000);
    pub const GICD_SIZE: u32 = 0x1000;
    /// The hardware virtual CPU interface (GICV) is mapped here.
    pub const GICC: Ipa = Ipa(0x0801_0000);
    pub const GICC_SIZE: u64 = 0x2000;
    /// Emulated PL011 (trapped).
    pub const UART: Ipa = Ipa(0x0900_0000);
    pub const UART_SIZE: u32 = 0x1000;
    /// The UART's interrupt: SPI 1 (INTID 33).
    pub const UART_SPI: usize = 1;
    /// virtio-mmio slot 0 (QEMU virt's first slot address) and its SPI 16;
    /// slot n is `VIRTIO_SLOT_SIZE` * n above, with SPI 16 + n.
    pub const VIRTIO0: Ipa = Ipa(0x0a00_0000);
    pub const VIRTIO_SLOT_SIZE: u32 = crate::virtio::mmio::WINDOW_SIZE;
    pub const VIRTIO0_SPI: usize = 16;
    pub const VIRTIO_SLOTS: u32 = tessera_payload::MAX_DEVICES as u32;

    pub fn virtio_slot(slot: u32) -> (Ipa, usize) {
        (VIRTIO0.add(slot as u64 * VIRTIO_SLOT_SIZE as u64), VIRTIO0_SPI + slot as usize)
    }
}

/// Entropy for a VM's virtio-rng: the board's own source (a function the
/// arch glue provides; it returns how many bytes it filled).
pub struct BoardEntropy(pub fn(&mut [u8]) -> usize);

impl crate::virtio::rng::EntropySource for BoardEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        let (mut done, mut idle) = (0, 0);
        while done < buf.len() {
            let n = (self.0)(&mut buf[done..]);
            if n == 0 {
                idle += 1;
                // A board fault, not guest input: no entropy is not zeroes.
                assert!(idle < 64, "the board's entropy source stopped answering");
            }
            done += n;
        }
    }
}

/// A virtio device's interrupt line: an SPI of the VM's virtual GIC.
pub struct SpiSink {
    pub vgic: &'static Vgic,
    pub vcpus: &'static [Vcpu],
    pub spi: usize,
}

impl crate::virtio::mmio::IrqSink for SpiSink {
    fn set_level(&self, level: bool) {
        wake(self.vcpus, self.vgic.set_spi_level(self.spi, level));
    }
}

/// The board's disks, as block devices' backends reach them: whole
/// sectors at absolute positions on disk `disk` (the runtime drives the
/// physical devices; tests use memory).
pub trait DiskIo: Sync {
    fn read(&self, disk: u32, sector: u64, buf: &mut [u8]) -> Result<(), BackendError>;
    fn write(&self, disk: u32, sector: u64, buf: &[u8]) -> Result<(), BackendError>;
    fn flush(&self, disk: u32) -> Result<(), BackendError>;
}

/// A VM's range of a disk: the backend of its virtio-blk. The device model
/// has already checked every request against `sectors`.
pub struct DiskRange {
    pub io: &'static dyn DiskIo,
    pub disk: u32,
    pub first: u64,
    pub sectors: u64,
}

impl BlockBackend for DiskRange {
    fn sectors(&self) -> u64 {
        self.sectors
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        self.io.read(self.disk, self.first + sector, buf)
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BackendError> {
        self.io.write(self.disk, self.first + sector, buf)
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        self.io.flush(self.disk)
    }
}

/// A virtio-console's output: a console of its own, labelled
/// `<vm>.hvc0`, so its lines never interleave with the UART's.
pub struct ConsoleOut(pub &'static VmConsole);

impl ConsoleSink for ConsoleOut {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
}

/// What the board gives VMs' devices (the runtime fills it in).
pub struct BoardBackends {
    pub entropy: fn(&mut [u8]) -> usize,
    pub disks: &'static dyn DiskIo,
    /// The virtual switches, by index (`Device::Net { switch }`).
    pub switches: &'static [Switch],
}

type Mmio<D> = VirtioMmio<D, GuestRam, SpiSink>;

/// A VM's device in one virtio-mmio slot.
pub enum VirtioDev {
    Rng(Mmio<VirtioRng<BoardEntropy>>),
    Console(Mmio<VirtioConsole<ConsoleOut>>),
    Block(Mmio<VirtioBlk<DiskRange>>),
    Net(Mmio<VirtioNet>),
}

pub struct VirtioSlot {
    pub slot: u32,
    pub dev: VirtioDev,
}

impl VirtioSlot {
    /// None for a device this hypervisor cannot provide.
    fn new(d: &DeviceDesc, ram: GuestRam, irq: SpiSink, board: &BoardBackends, hvc: &'static VmConsole) -> Option<Self> {
        let dev = match d.device {
            Device::Rng => VirtioDev::Rng(VirtioMmio::new(VirtioRng::new(BoardEntropy(board.entropy)), ram, irq)),
            Device::Console => VirtioDev::Console(VirtioMmio::new(VirtioConsole::new(ConsoleOut(hvc)), ram, irq)),
            Device::Block { disk, offset, size, read_only } => {
                let range = DiskRange { io: board.disks, disk, first: offset / SECTOR, sectors: size / SECTOR };
                let mut id = crate::console::ByteWriter::<20>::new();
                let _ = core::fmt::Write::write_fmt(&mut id, format_args!("tessera-vd{}", d.slot));
                VirtioDev::Block(VirtioMmio::new(VirtioBlk::new(range, read_only, id.as_bytes()), ram, irq))
            }
            Device::Net { switch, mac } => {
                let port = leak(Port::new(board.switches.get(switch as usize)?, mac));
                VirtioDev::Net(VirtioMmio::new(VirtioNet::new(port), ram, irq))
            }
        };
        Some(Self { slot: d.slot, dev })
    }

    pub fn device(&self) -> &dyn MmioDevice {
        match &self.dev {
            VirtioDev::Rng(d) => d,
            VirtioDev::Console(d) => d,
            VirtioDev::Block(d) => d,
            VirtioDev::Net(d) => d,
        }
    }

    /// Plugs a virtio-net into its switch; nothing for other devices. At
    /// boot, once the slot has its final ('static) place.
    pub fn connect(&'static self) -> Result<(), ConnectError> {
        match &self.dev {
            VirtioDev::Net(d) => d.with_device(|n| n.port()).connect(d),
            _ => Ok(()),
        }
    }

    /// The VM is being reset: so is the device.
    pub fn reset(&self) {
        match &self.dev {
            VirtioDev::Rng(d) => d.reset_device(),
            VirtioDev::Console(d) => d.reset_device(),
            VirtioDev::Block(d) => d.reset_device(),
            VirtioDev::Net(d) => d.reset_device(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match &self.dev {
            VirtioDev::Rng(_) => "virtio-rng",
            VirtioDev::Console(_) => "virtio-console",
            VirtioDev::Block(_) => "virtio-blk",
            VirtioDev::Net(_) => "virtio-net",
        }
    }
}

/// How a VM ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    Running = 0,
    /// The guest asked to end (VM_SHUTDOWN or PSCI SYSTEM_OFF).
    Exited = 1,
    /// The hypervisor stopped it (a fault or a forbidden access).
    Stopped = 2,
    /// PSCI SYSTEM_RESET in progress: no vCPU of it may run.
    Resetting = 3,
}

/// vCPU power state (PSCI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Power {
    Off = 0,
    /// CPU_ON accepted; the owning pCPU has not started it yet.
    OnPending = 1,
    On = 2,
}

/// The reset value of SCTLR on Cortex-A15 (MMU and caches off).
pub const SCTLR_RESET: u32 = 0x00c5_0078;

pub struct VcpuContext {
    pub regs: GuestRegs,
    pub el1: El1State,
    pub gich: GichState,
    pub fp: FpState,
}

impl VcpuContext {
    pub fn boot(entry: u32, r0: u32, r1: u32, r2: u32) -> Self {
        Self {
            regs: GuestRegs::boot(entry, r0, r1, r2),
            el1: El1State { sctlr: SCTLR_RESET, ..Default::default() },
            gich: GichState::default(),
            fp: FpState::default(),
        }
    }
}

pub struct Vcpu {
    pub index: u32,
    /// The pCPU whose run queue holds this vCPU.
    pub pcpu: u32,
    power: AtomicU8,
    /// Entry point and r0-r2 left by CPU_ON (or a VM reset) for the owning pCPU.
    on_request: Mutex<(u32, [u32; 3])>,
    /// Waiting in WFI for an interrupt.
    pub blocked: AtomicBool,
    /// Inside the guest (or its exit handling) on its pCPU right now.
    pub running: AtomicBool,
    /// How many times the scheduler has picked it, and its exits by
    /// physical interrupt (diagnostics for `Ctrl-\\ d`).
    pub picks: AtomicU32,
    pub irq_exits: AtomicU32,
    ctx: UnsafeCell<VcpuContext>,
}

// SAFETY: `ctx` is only touched by the pCPU `pcpu` (see `context`); the rest
// is atomics and a mutex.
unsafe impl Sync for Vcpu {}

impl Vcpu {
    pub fn new(index: u32, pcpu: u32, boot: Option<VcpuContext>) -> Self {
        let power = if boot.is_some() { Power::On } else { Power::Off };
        Self {
            index,
            pcpu,
            power: AtomicU8::new(power as u8),
            on_request: Mutex::new((0, [0; 3])),
            blocked: AtomicBool::new(false),
            running: AtomicBool::new(false),
            picks: AtomicU32::new(0),
            irq_exits: AtomicU32::new(0),
            ctx: UnsafeCell::new(boot.unwrap_or_else(|| VcpuContext::boot(0, 0, 0, 0))),
        }
    }

    pub fn power(&self) -> Power {
        match self.power.load(Ordering::Acquire) {
            0 => Power::Off,
            1 => Power::OnPending,
            _ => Power::On,
        }
    }

    /// The register context.
    ///
    /// # Safety
    /// Only the owning pCPU (`self.pcpu`) may call this, and it must not hold
    /// two references at once.
    #[allow(clippy::mut_from_ref)] // ownership is per pCPU, see above
    pub unsafe fn context(&self) -> &mut VcpuContext {
        // SAFETY: the caller is the owning pCPU (function contract).
        unsafe { &mut *self.ctx.get() }
    }

    /// PSCI CPU_ON, called from a sibling vCPU on any pCPU.
    pub fn request_on(&self, entry: u32, context_id: u32) -> i32 {
        let mut req = self.on_request.lock();
        match self.power.compare_exchange(Power::Off as u8, Power::OnPending as u8, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                *req = (entry, [context_id, 0, 0]);
                psci::SUCCESS
            }
            Err(s) if s == Power::OnPending as u8 => psci::ON_PENDING,
            Err(_) => psci::ALREADY_ON,
        }
    }

    /// On the owning pCPU: if a CPU_ON is pending, reset the context for it.
    /// Returns true if the vCPU was just started.
    ///
    /// # Safety
    /// As for [`Vcpu::context`].
    pub unsafe fn take_on_request(&self) -> bool {
        if self.power() != Power::OnPending {
            return false;
        }
        let req = self.on_request.lock();
        // SAFETY: owning pCPU (function contract).
        let ctx = unsafe { self.context() };
        *ctx = VcpuContext::boot(req.0, req.1[0], req.1[1], req.1[2]);
        self.blocked.store(false, Ordering::Release);
        self.power.store(Power::On as u8, Ordering::Release);
        true
    }

    /// VM reset: this vCPU starts over at `entry` (vCPU 0) or is off.
    /// Only while the VM is `Resetting`, so the vCPU is not running.
    pub fn reset(&self, boot: Option<(u32, [u32; 3])>) {
        let mut req = self.on_request.lock();
        self.blocked.store(false, Ordering::Release);
        match boot {
            Some(b) => {
                *req = b;
                self.power.store(Power::OnPending as u8, Ordering::Release);
            }
            None => self.power.store(Power::Off as u8, Ordering::Release),
        }
    }

    /// PSCI CPU_OFF, from the vCPU itself.
    pub fn power_off(&self) {
        self.power.store(Power::Off as u8, Ordering::Release);
    }

    pub fn affinity_info(&self) -> i32 {
        match self.power() {
            Power::On => psci::AFFINITY_ON,
            Power::Off => psci::AFFINITY_OFF,
            Power::OnPending => psci::AFFINITY_ON_PENDING,
        }
    }
}

pub const NAME_LEN: usize = tessera_payload::NAME_LEN;
/// A console's label: the VM's name and a suffix (".hvc0").
pub const LABEL_LEN: usize = NAME_LEN + 8;

/// A VM's console output: line-buffered, labelled with the VM's name.
pub struct VmConsole {
    id: u32,
    name: [u8; LABEL_LEN],
    name_len: usize,
    buf: Mutex<LineBuffer<200>>,
    /// When (CLOCK ticks) the oldest unprinted partial line began; 0 if none.
    partial_since: AtomicU64,
}

impl VmConsole {
    pub fn new(id: u32, name: &str) -> Self {
        let mut n = [0u8; LABEL_LEN];
        let len = name.len().min(LABEL_LEN);
        n[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self { id, name: n, name_len: len, buf: Mutex::new(LineBuffer::new()), partial_since: AtomicU64::new(0) }
    }

    pub fn name(&self) -> &str {
        // Names are checked ASCII by the payload parser.
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }

    /// Guest bytes: complete lines go out at once; a partial line waits for
    /// its end, or for `flush_stale`.
    pub fn write(&self, bytes: &[u8]) {
        let (id, name) = (self.id, self.name());
        let mut b = self.buf.lock();
        b.push(bytes, |line| crate::console::vm_output(id, name, line, true));
        if b.is_empty() {
            self.partial_since.store(0, Ordering::Relaxed);
        } else if self.partial_since.load(Ordering::Relaxed) == 0 {
            self.partial_since.store(now().max(1), Ordering::Relaxed);
        }
    }

    /// Prints a partial line that has waited `age` ticks or more (a prompt).
    pub fn flush_stale(&self, now: u64, age: u64) {
        let since = self.partial_since.load(Ordering::Relaxed);
        if since != 0 && now.saturating_sub(since) >= age {
            let (id, name) = (self.id, self.name());
            self.buf.lock().flush(|l| crate::console::vm_output(id, name, l, false));
            self.partial_since.store(0, Ordering::Relaxed);
        }
    }

    /// Ends any partial line (the VM has ended).
    pub fn finish(&self) {
        let (id, name) = (self.id, self.name());
        self.buf.lock().flush(|l| crate::console::vm_output(id, name, l, true));
        self.partial_since.store(0, Ordering::Relaxed);
    }
}

/// The emulated UART's connection to its VM: output to the VM's console,
/// its interrupt line to the VM's virtual GIC.
pub struct UartPort {
    pub console: &'static VmConsole,
    pub vgic: &'static Vgic,
    pub vcpus: &'static [Vcpu],
}

impl UartBackend for UartPort {
    fn tx(&self, byte: u8) {
        self.console.write(&[byte]);
    }
    fn set_irq(&self, level: bool) {
        wake(self.vcpus, self.vgic.set_spi_level(guest_map::UART_SPI, level));
    }
}

/// What the hypervisor needs to restart a VM from its image.
#[derive(Clone, Copy, Debug)]
pub struct BootImage {
    /// Index of the VM in the payload.
    pub payload_index: usize,
    pub entry: u32,
    pub regs: [u32; 3],
    /// IPA of the guest DTB's `/chosen/tessera,reset-count` value, if any.
    pub reset_count_ipa: Option<Ipa>,
}

pub struct Vm {
    /// 1-based; also the stage-2 VMID.
    pub id: u32,
    pub ram: GuestRam,
    pub vttbr: u64,
    pub vcpus: &'static [Vcpu],
    /// `VmState` in bits 0-7, the exit status in bits 32-63: one atomic, so
    /// the state and the status that goes with it change together.
    state: AtomicU64,
    pub console: &'static VmConsole,
    pub vgic: &'static Vgic,
    pub uart: Pl011<UartPort>,
    /// CNTVOFF: the VM's virtual counter reads 0 when it was created.
    pub cntvoff: u64,
    pub boot: BootImage,
    pub resets: AtomicU32,
    /// The virtio-mmio devices, in slot order.
    pub virtio: &'static [VirtioSlot],
    /// Output of a virtio-console (`<vm>.hvc0`), if it has one.
    pub hvc: &'static VmConsole,
    /// Bit k set: the VM maps channel k (see [`Channel`]).
    pub channels: u32,
}

impl Vm {
    #[allow(clippy::too_many_arguments)] // each is a distinct part of the VM
    pub fn new(
        id: u32,
        name: &str,
        ram: GuestRam,
        vttbr: u64,
        vcpus: &'static [Vcpu],
        cntvoff: u64,
        boot: BootImage,
        devices: &[DeviceDesc],
        board: &BoardBackends,
    ) -> Self {
        extern crate alloc;
        let console: &'static VmConsole = leak(VmConsole::new(id, name));
        let mut label = crate::console::ByteWriter::<LABEL_LEN>::new();
        let _ = core::fmt::Write::write_fmt(&mut label, format_args!("{name}.hvc0"));
        // A source id of its own: bit 31 set (VM ids are small).
        let hvc: &'static VmConsole = leak(VmConsole::new(id | 1 << 31, label.as_str()));
        let vgic: &'static Vgic = leak(Vgic::new(vcpus.len()));
        let virtio: alloc::vec::Vec<VirtioSlot> = devices
            .iter()
            .filter_map(|d| {
                let (_, spi) = guest_map::virtio_slot(d.slot);
                VirtioSlot::new(d, ram, SpiSink { vgic, vcpus, spi }, board, hvc)
            })
            .collect();
        Self {
            id,
            ram,
            vttbr,
            vcpus,
            state: AtomicU64::new(VmState::Running as u64),
            console,
            vgic,
            uart: Pl011::new(UartPort { console, vgic, vcpus }),
            cntvoff,
            boot,
            resets: AtomicU32::new(0),
            virtio: alloc::vec::Vec::leak(virtio),
            hvc,
            channels: 0,
        }
    }

    pub fn name(&self) -> &str {
        self.console.name()
    }

    pub fn state(&self) -> VmState {
        match self.state.load(Ordering::Acquire) & 0xff {
            0 => VmState::Running,
            1 => VmState::Exited,
            2 => VmState::Stopped,
            _ => VmState::Resetting,
        }
    }

    pub fn is_running(&self) -> bool {
        self.state.load(Ordering::Acquire) == VmState::Running as u64
    }

    pub fn status(&self) -> u32 {
        (self.state.load(Ordering::Acquire) >> 32) as u32
    }

    /// Ends the VM. Only the first caller wins (two vCPUs may fault at once);
    /// returns whether this call ended it.
    pub fn end(&self, how: VmState, status: u32) -> bool {
        debug_assert!(matches!(how, VmState::Exited | VmState::Stopped));
        let ended = how as u64 | (status as u64) << 32;
        self.state.compare_exchange(VmState::Running as u64, ended, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Running -> Resetting; false if the VM is not running (ended, or a
    /// reset is already under way).
    pub fn begin_reset(&self) -> bool {
        let r = VmState::Running as u64;
        self.state.compare_exchange(r, VmState::Resetting as u64, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    pub fn end_reset(&self) {
        let _ = self.state.compare_exchange(
            VmState::Resetting as u64,
            VmState::Running as u64,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Guest console bytes (the console hypercall).
    pub fn console_write(&self, bytes: &[u8]) {
        self.console.write(bytes);
    }

    /// An access to the VM's emulated devices (GIC distributor, UART).
    pub fn mmio(&self, vcpu: u32, ipa: Ipa, abort: &DataAbort, regs: &mut impl Regs) -> Result<(), MmioError> {
        let gicd = GicdMmio(self);
        let gicd = MmioRegion { base: guest_map::GICD, size: guest_map::GICD_SIZE, device: &gicd };
        let uart = MmioRegion { base: guest_map::UART, size: guest_map::UART_SIZE, device: &self.uart };
        let slot = ipa.raw().wrapping_sub(guest_map::VIRTIO0.raw()) / guest_map::VIRTIO_SLOT_SIZE as u64;
        match self.virtio.iter().find(|v| v.slot as u64 == slot) {
            Some(v) => {
                let (base, _) = guest_map::virtio_slot(v.slot);
                let dev = MmioRegion { base, size: guest_map::VIRTIO_SLOT_SIZE, device: v.device() };
                MmioBus::new(&[gicd, uart, dev]).access(vcpu, ipa, abort, regs)
            }
            None => MmioBus::new(&[gicd, uart]).access(vcpu, ipa, abort, regs),
        }
    }
}

/// The distributor as an MMIO device: accesses go to the vGIC, and the
/// vCPUs an access made runnable (an SGI, an enable) are woken.
struct GicdMmio<'a>(&'a Vm);

impl MmioDevice for GicdMmio<'_> {
    fn read(&self, vcpu: u32, offset: u32, size: u8) -> u32 {
        self.0.vgic.mmio_read(vcpu as usize, offset, size)
    }
    fn write(&self, vcpu: u32, offset: u32, size: u8, value: u32) {
        wake(self.0.vcpus, self.0.vgic.mmio_write(vcpu as usize, offset, size, value));
    }
}

fn leak<T>(v: T) -> &'static T {
    extern crate alloc;
    alloc::boxed::Box::leak(alloc::boxed::Box::new(v))
}

/// Kicks the pCPUs of the vCPUs in `mask` (bit n = vCPU n).
pub fn wake(vcpus: &[Vcpu], mask: u32) {
    let mut done = 0u32;
    for (i, v) in vcpus.iter().enumerate().take(32) {
        if mask & (1 << i) != 0 && done & (1 << v.pcpu) == 0 {
            done |= 1 << v.pcpu;
            kick(v.pcpu);
        }
    }
}

/// The hypervisor's clock (the physical counter), installed by the arch
/// glue; 0 in host tests.
pub static CLOCK: Once<fn() -> u64> = Once::new();

pub fn now() -> u64 {
    CLOCK.get().map_or(0, |f| f())
}

/// Kicks a pCPU out of its guest or idle wait (a physical SGI on the
/// target). Installed by the arch glue; a no-op in host tests.
pub static KICK: Once<fn(u32)> = Once::new();

pub fn kick(pcpu: u32) {
    if let Some(k) = KICK.get() {
        k(pcpu)
    }
}

/// A shared-memory channel while VMs run: its doorbell (an edge on `spi`)
/// and the VMs that map its memory.
pub struct Channel {
    pub spi: usize,
    pub members: &'static [&'static Vm],
}

impl Channel {
    /// An edge on the doorbell SPI of every running member but `from`;
    /// returns how many were notified.
    pub fn ring(&self, from: &Vm) -> u32 {
        let mut n = 0;
        for m in self.members.iter().filter(|m| !core::ptr::eq(**m, from) && m.is_running()) {
            wake(m.vcpus, m.vgic.pulse_spi(self.spi));
            n += 1;
        }
        n
    }
}

/// The dispatcher's view of the calling vCPU.
pub struct CallerCtx<'a> {
    pub vm: &'a Vm,
    pub vcpu: &'a Vcpu,
    /// Every channel of the system, by id: a function, so the hypercall
    /// path only looks the table up for a channel call.
    pub channels: fn() -> &'static [Channel],
}

impl crate::hypercall::Caller for CallerCtx<'_> {
    fn vm_id(&self) -> u32 {
        self.vm.id
    }
    fn vcpu_count(&self) -> u32 {
        self.vm.vcpus.len() as u32
    }
    fn vcpu_index(&self) -> u32 {
        self.vcpu.index
    }
    fn read_guest(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), OutsideRam> {
        self.vm.ram.read(ipa, buf)
    }
    fn console_write(&mut self, bytes: &[u8]) {
        self.vm.console_write(bytes)
    }
    fn cpu_on(&mut self, index: u32, entry: u32, context_id: u32) -> i32 {
        let target = &self.vm.vcpus[index as usize];
        let r = target.request_on(entry, context_id);
        if r == psci::SUCCESS {
            kick(target.pcpu);
        }
        r
    }
    fn affinity_info(&self, index: u32) -> i32 {
        self.vm.vcpus[index as usize].affinity_info()
    }
    fn channels(&self) -> u32 {
        self.vm.channels
    }
    fn channel_count(&self) -> u32 {
        (self.channels)().len() as u32
    }
    fn ring_doorbell(&mut self, channel: u32) -> u32 {
        (self.channels)().get(channel as usize).map_or(0, |c| c.ring(self.vm))
    }
    fn in_ram(&self, ipa: Ipa, len: u32) -> bool {
        self.vm.ram.contains(ipa, len as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram(buf: &mut [u8]) -> GuestRam {
        GuestRam { ipa: Ipa(0x4000_0000), size: buf.len() as u64, pa: PhysAddr(0x4200_0000), host: buf.as_mut_ptr() }
    }

    #[test]
    fn guest_ram_bounds() {
        let mut buf = vec![0u8; 0x1000];
        let r = ram(&mut buf);
        assert!(r.write(Ipa(0x4000_0ffe), b"ok").is_ok());
        let mut out = [0u8; 2];
        r.read(Ipa(0x4000_0ffe), &mut out).unwrap();
        assert_eq!(&out, b"ok");
        assert!(r.read(Ipa(0x4000_0fff), &mut out).is_err(), "straddles the end");
        assert!(r.read(Ipa(0x3fff_ffff), &mut out).is_err());
        assert!(!r.contains(Ipa(0x4000_0001), u64::MAX), "no overflow");
        assert!(r.contains(Ipa(0x4000_1000), 0));
    }

    #[test]
    fn psci_power_states() {
        let v = Vcpu::new(1, 0, None);
        assert_eq!(v.affinity_info(), psci::AFFINITY_OFF);
        assert_eq!(v.request_on(0x4000_8000, 5), psci::SUCCESS);
        assert_eq!(v.request_on(0x4000_8000, 5), psci::ON_PENDING);
        assert_eq!(v.affinity_info(), psci::AFFINITY_ON_PENDING);
        // SAFETY: single-threaded test, we are the owner.
        assert!(unsafe { v.take_on_request() });
        // SAFETY: as above.
        let ctx = unsafe { v.context() };
        assert_eq!((ctx.regs.pc, ctx.regs.r[0], ctx.el1.sctlr), (0x4000_8000, 5, SCTLR_RESET));
        assert_eq!(v.request_on(0, 0), psci::ALREADY_ON);
        v.reset(Some((0x4001_0000, [0, !0, 0x47ff_0000])));
        assert_eq!(v.affinity_info(), psci::AFFINITY_ON_PENDING);
        // SAFETY: as above.
        assert!(unsafe { v.take_on_request() });
        // SAFETY: as above.
        let ctx = unsafe { v.context() };
        assert_eq!((ctx.regs.pc, ctx.regs.r[1], ctx.regs.r[2]), (0x4001_0000, !0, 0x47ff_0000));
        v.power_off();
        assert_eq!(v.affinity_info(), psci::AFFINITY_OFF);
        assert_eq!(v.request_on(0x4000_9000, 6), psci::SUCCESS, "can be started again");
    }

    #[test]
    fn a_vm_ends_once() {
        let mut buf = vec![0u8; 16];
        let vcpus: &'static [Vcpu] = Box::leak(Box::new([Vcpu::new(0, 0, Some(VcpuContext::boot(0x4000_0000, 0, 0, 0)))]));
        let boot = BootImage { payload_index: 0, entry: 0x4000_0000, regs: [0; 3], reset_count_ipa: None };
        struct NoDisks;
        impl DiskIo for NoDisks {
            fn read(&self, _: u32, _: u64, _: &mut [u8]) -> Result<(), BackendError> {
                Err(BackendError)
            }
            fn write(&self, _: u32, _: u64, _: &[u8]) -> Result<(), BackendError> {
                Err(BackendError)
            }
            fn flush(&self, _: u32) -> Result<(), BackendError> {
                Err(BackendError)
            }
        }
        let board = BoardBackends { entropy: |b| b.len(), disks: &NoDisks, switches: &[] };
        let devices = [
            DeviceDesc { slot: 0, device: Device::Console },
            DeviceDesc { slot: 3, device: Device::Block { disk: 0, offset: 1024, size: 4096, read_only: true } },
        ];
        let vm = Vm::new(1, "hello", ram(&mut buf), 0, vcpus, 0, boot, &devices, &board);
        assert_eq!(vm.name(), "hello");
        assert_eq!(vm.hvc.name(), "hello.hvc0");
        assert_eq!(vm.virtio.iter().map(|v| (v.slot, v.kind())).collect::<Vec<_>>(), [(0, "virtio-console"), (3, "virtio-blk")]);
        assert!(vm.is_running());
        assert!(vm.end(VmState::Stopped, 9));
        assert!(!vm.end(VmState::Exited, 0), "a second fault does not end it again");
        assert_eq!((vm.state(), vm.status()), (VmState::Stopped, 9));
        assert!(!vm.begin_reset(), "an ended VM is not reset");
    }
}

//! VMs: memory, vCPUs, the virtual GIC, devices, and the life-cycle state.
//!
//! VMs are created once at boot from the payload and live for the whole run
//! (`&'static`). What a VM's devices are and how they are wired to it is in
//! [`crate::devices::wiring`]; this module is the VM itself and its state
//! machine, and the channels between VMs.

use crate::addr::Ipa;
use crate::console::{ByteWriter, VmConsole, LABEL_LEN};
use crate::devices::call_console::CallConsoleInput;
use crate::devices::pl011::Pl011;
use crate::devices::wiring::{self, Backends, UartPort, VirtioSlot};
use crate::mem::GuestRam;
use crate::mm::stage2::Vttbr;
use crate::mmio::{DataAbort, MmioBus, MmioDevice, MmioError, MmioRegion, Regs};
use crate::sched::Wakeups;
use crate::vcpu::Vcpu;
use crate::vgic::Vgic;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tessera_payload::DeviceDesc;

/// The guest-physical map as IPAs (the numbers are
/// [`tessera_payload::guest_map`], shared with the packer and the RTOS port).
pub mod guest_map {
    use crate::addr::Ipa;
    use tessera_payload::guest_map as m;
    pub const GICD: Ipa = Ipa(m::GICD as u64);
    pub const GICD_SIZE: u32 = m::GICD_SIZE;
    pub const GICC: Ipa = Ipa(m::GICC as u64);
    pub const GICC_SIZE: u64 = m::GICC_SIZE as u64;
    pub const UART: Ipa = Ipa(m::UART as u64);
    pub const UART_SIZE: u32 = m::UART_SIZE;
    pub const UART_SPI: usize = m::UART_SPI as usize;
    pub const CONSOLE_SPI: usize = m::CONSOLE_SPI as usize;
    pub const VIRTIO0: Ipa = Ipa(m::VIRTIO0 as u64);
    pub const VIRTIO_SLOT_SIZE: u32 = m::VIRTIO_SLOT_SIZE;
    const _: () = assert!(VIRTIO_SLOT_SIZE == crate::virtio::mmio::WINDOW_SIZE);

    pub fn virtio_slot(slot: u32) -> (Ipa, usize) {
        let (ipa, spi) = m::virtio_slot(slot);
        (Ipa(ipa as u64), spi as usize)
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

/// The vCPUs of one VM and the means to wake them: what devices and the
/// distributor hold to deliver an interrupt.
#[derive(Clone, Copy)]
pub struct VcpuWaker {
    pub vcpus: &'static [Vcpu],
    pub wakeups: &'static Wakeups,
}

impl VcpuWaker {
    /// Wakes every vCPU of the VM (its state changed: stopped, reset),
    /// kicking each pCPU once however many vCPUs it holds.
    pub fn wake_all(&self) {
        let mut done = 0u32;
        for v in self.vcpus {
            let (pcpu, slot) = v.home();
            self.wakeups.note(pcpu, slot);
            done |= 1 << pcpu;
        }
        self.kick_each(done);
    }

    /// Wakes the vCPUs in `mask` (bit n = vCPU n, newly flagged by the
    /// vGIC), and only where it is needed: a vCPU in the guest must leave
    /// it to take the interrupt, a vCPU in WFI must be reconsidered (its
    /// pCPU may be asleep). A vCPU waiting in its run queue will flush
    /// before it next runs, so its pCPU is left alone. Each pCPU is kicked
    /// once. Interrupts only ever target the first 8 vCPUs (GICv2).
    ///
    /// The vGIC set `work` with a sequentially consistent swap, and the
    /// states are read sequentially consistent here, as the vCPU's own
    /// pCPU writes them before it reads `work` (`pcpu`): either this sees
    /// the vCPU blocked or in the guest, or its pCPU sees the flag.
    pub fn wake(&self, mask: u32) {
        let mut done = 0u32;
        let mut bits = mask;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let Some(v) = self.vcpus.get(i) else { break };
            if !v.running.load(Ordering::SeqCst) && !v.blocked.load(Ordering::SeqCst) {
                continue;
            }
            let (pcpu, slot) = v.home();
            self.wakeups.note(pcpu, slot);
            done |= 1 << pcpu;
        }
        self.kick_each(done);
    }

    fn kick_each(&self, mut pcpus: u32) {
        while pcpus != 0 {
            let p = pcpus.trailing_zeros();
            pcpus &= pcpus - 1;
            self.wakeups.kick(p);
        }
    }
}

/// What a VM is made of besides its devices (which [`Vm::new`] builds).
pub struct VmParts {
    /// 1-based; also the stage-2 VMID.
    pub id: u32,
    pub ram: GuestRam,
    pub vttbr: Vttbr,
    pub vcpus: &'static [Vcpu],
    /// CNTVOFF: the VM's virtual counter reads 0 when it was created.
    pub cntvoff: u64,
    pub boot: BootImage,
    /// Bit k set: the VM maps channel k (see [`Channel`]).
    pub channels: u32,
    /// Accesses it cannot be served are aborts for the guest, not a stop.
    pub fault_abort: bool,
    /// Its RAM's stage-2 blocks, mapped at first use (None: mapped whole).
    pub lazy: Option<crate::mm::stage2::LazyBlocks>,
}

pub struct Vm {
    pub id: u32,
    pub ram: GuestRam,
    pub vttbr: Vttbr,
    pub vcpus: &'static [Vcpu],
    /// `VmState` in bits 0-7, the exit status in bits 32-63: one atomic, so
    /// the state and the status that goes with it change together.
    state: AtomicU64,
    pub console: &'static VmConsole,
    pub vgic: &'static Vgic,
    pub uart: Pl011<UartPort>,
    /// Typed input for a guest that reads its console by hypercall.
    pub call_input: CallConsoleInput,
    pub cntvoff: u64,
    pub boot: BootImage,
    pub resets: AtomicU32,
    /// The virtio-mmio devices, in slot order.
    pub virtio: &'static [VirtioSlot],
    /// Output of a virtio-console (`<vm>.hvc0`), if it has one.
    pub hvc: &'static VmConsole,
    pub channels: u32,
    pub fault_abort: bool,
    pub waker: VcpuWaker,
    /// Bit n: the device in virtio slot n has a pass left to continue.
    io_pending: &'static AtomicU32,
    /// Its RAM's stage-2 blocks, mapped at first use (None: mapped whole).
    lazy: Option<crate::mm::stage2::LazyBlocks>,
}

impl Vm {
    /// A stage-2 translation fault of the guest at `ipa`: if it is in this
    /// VM's RAM, zeroes its 2 MiB block if nothing used it yet and maps it,
    /// and the guest retries the access. False if `ipa` is not its RAM.
    pub fn populate(&self, ipa: Ipa) -> bool {
        let Some(lazy) = self.lazy else { return false };
        if !crate::mem::GuestMemory::contains(&self.ram, ipa, 1) {
            return false;
        }
        let k = ((ipa.raw() - self.ram.ipa().raw()) / crate::addr::BLOCK_2M) as usize;
        let Some((table, index, desc)) = lazy.entry(k) else { return false };
        self.ram.prepare_block(k);
        // SAFETY: the VM's own level-2 table and an entry of its RAM range;
        // concurrent faults on this block write the same descriptor.
        unsafe { crate::arch::set_stage2_entry(table, index, desc) };
        true
    }

    /// Unmaps all of its RAM from stage 2 and flushes the TLBs, so its next
    /// accesses fault and find freshly zeroed blocks (VM reset: none of its
    /// vCPUs runs, its devices are quiesced).
    pub fn unmap_ram(&self) {
        let Some(lazy) = self.lazy else { return };
        for k in 0..lazy.blocks() {
            if let Some((table, index, _)) = lazy.entry(k) {
                // SAFETY: as in `populate`; nothing of the VM runs.
                unsafe { crate::arch::set_stage2_entry(table, index, 0) };
            }
        }
        crate::arch::flush_stage2_tlbs();
    }

    /// A VM and its devices. `name` labels its consoles.
    pub fn new(p: VmParts, name: &str, devices: &[DeviceDesc], board: &Backends) -> Self {
        let console: &'static VmConsole = VmConsole::new(p.id, name, board.console);
        let mut label = ByteWriter::<LABEL_LEN>::new();
        let _ = core::fmt::Write::write_fmt(&mut label, format_args!("{name}.hvc0"));
        // A source id of its own: bit 31 set (VM ids are small).
        let hvc: &'static VmConsole = VmConsole::new(p.id | 1 << 31, label.as_str(), board.console);
        let vgic: &'static Vgic = wiring::leak(Vgic::new(p.vcpus.len()));
        let waker = VcpuWaker { vcpus: p.vcpus, wakeups: board.wakeups };
        let io_pending: &'static AtomicU32 = wiring::leak(AtomicU32::new(0));
        let virtio = wiring::virtio_slots(devices, p.ram, vgic, waker, io_pending, board, hvc);
        Self {
            id: p.id,
            ram: p.ram,
            vttbr: p.vttbr,
            vcpus: p.vcpus,
            state: AtomicU64::new(VmState::Running as u64),
            console,
            vgic,
            uart: Pl011::new(UartPort { console, vgic, waker }),
            call_input: CallConsoleInput::new(),
            cntvoff: p.cntvoff,
            boot: p.boot,
            resets: AtomicU32::new(0),
            virtio,
            hvc,
            channels: p.channels,
            fault_abort: p.fault_abort,
            waker,
            io_pending,
            lazy: p.lazy,
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

    /// Exited or stopped: it will never run again.
    pub fn has_ended(&self) -> bool {
        matches!(self.state(), VmState::Exited | VmState::Stopped)
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

    /// Bytes the operator typed for this VM: to the hypercall console if the
    /// guest reads it, else to the PL011. Returns how many were taken.
    pub fn type_input(&self, bytes: &[u8]) -> usize {
        match self.call_input.push(bytes) {
            Some(n) => {
                if n != 0 {
                    self.wake(self.vgic.pulse_spi(guest_map::CONSOLE_SPI));
                }
                n
            }
            None => self.uart.push_rx(bytes),
        }
    }

    /// `TESSERA_CONSOLE_READ` into `out`, stored at `ipa`: the byte count,
    /// or `None` if the buffer is not wholly in the VM's RAM.
    pub fn console_read(&self, ipa: Ipa, out: &mut [u8]) -> Option<usize> {
        use crate::mem::GuestMemory;
        self.call_input.read(out, |bytes| self.ram.write(ipa, bytes)).ok()
    }

    /// Console input back to its power-on state (a VM reset): the PL011's
    /// registers and FIFO, and the hypercall console unclaimed.
    pub fn reset_console_input(&self) {
        self.uart.reset();
        self.call_input.reset();
    }

    /// Wakes the vCPUs in `mask` (bit n = vCPU n).
    pub fn wake(&self, mask: u32) {
        self.waker.wake(mask)
    }

    /// Has a device work left from a pass that ran out of budget?
    #[inline]
    pub fn io_pending(&self) -> bool {
        self.io_pending.load(Ordering::Relaxed) != 0
    }

    /// Continues, one pass each, the devices' work that ran out of budget
    /// (called by the VM's own vCPUs, in their own time). Returns whether
    /// work is still left.
    pub fn continue_io(&self) -> bool {
        let mut left = self.io_pending.swap(0, Ordering::AcqRel);
        while left != 0 {
            let slot = left.trailing_zeros();
            left &= left - 1;
            if let Some(v) = self.virtio.iter().find(|v| v.slot == slot) {
                if v.continue_work() {
                    self.io_pending.fetch_or(1 << slot, Ordering::AcqRel);
                }
            }
        }
        self.io_pending()
    }

    /// Wakes every vCPU (the VM ended or is being reset).
    pub fn wake_all(&self) {
        self.waker.wake_all()
    }

    /// An access to the VM's emulated devices (GIC distributor, UART,
    /// virtio slots).
    pub fn mmio(&self, vcpu: u32, ipa: Ipa, abort: &DataAbort, regs: &mut impl Regs) -> Result<(), MmioError> {
        // GICD_SGIR, written for every IPI: straight to the vGIC, past the
        // bus, after the same checks the bus makes (a syndrome, a word, a
        // register the instruction can name); anything else takes the bus.
        if abort.write && abort.isv && abort.size == 4 && ipa.raw() == guest_map::GICD.raw() + GICD_SGIR {
            if let Some(v) = regs.get(abort.reg) {
                self.wake(self.vgic.mmio_write(vcpu as usize, GICD_SGIR as u32, 4, v));
                return Ok(());
            }
        }
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

/// The distributor's software-generated interrupt register (GICv2).
const GICD_SGIR: u64 = 0xf00;

/// The distributor as an MMIO device: accesses go to the vGIC, and the
/// vCPUs an access made runnable (an SGI, an enable) are woken.
struct GicdMmio<'a>(&'a Vm);

impl MmioDevice for GicdMmio<'_> {
    fn read(&self, vcpu: u32, offset: u32, size: u8) -> u32 {
        self.0.vgic.mmio_read(vcpu as usize, offset, size)
    }
    fn write(&self, vcpu: u32, offset: u32, size: u8, value: u32) {
        self.0.wake(self.0.vgic.mmio_write(vcpu as usize, offset, size, value));
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
            m.wake(m.vgic.pulse_spi(self.spi));
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::wiring::tests::{board, NoDisks};
    use crate::vcpu::Vcpu;
    use tessera_payload::Device;

    #[test]
    fn a_vm_ends_once() {
        let vcpus: &'static [Vcpu] = Box::leak(Box::new([Vcpu::new(0, 0, Some((0x4000_0000, [0; 3])))]));
        let boot = BootImage { payload_index: 0, entry: 0x4000_0000, regs: [0; 3], reset_count_ipa: None };
        let devices = [
            DeviceDesc { slot: 0, device: Device::Console },
            DeviceDesc { slot: 3, device: Device::Block { disk: 0, offset: 1024, size: 4096, read_only: true } },
        ];
        let parts = VmParts {
            id: 1,
            ram: crate::mem::test_ram(0x4000_0000, 16),
            vttbr: Vttbr::for_tests(1),
            vcpus,
            cntvoff: 0,
            boot,
            channels: 0,
            fault_abort: false,
            lazy: None,
        };
        let vm = Vm::new(parts, "hello", &devices, &board(&NoDisks));
        assert_eq!(vm.name(), "hello");
        assert_eq!(vm.hvc.name(), "hello.hvc0");
        assert_eq!(
            vm.virtio.iter().map(|v| (v.slot, v.kind())).collect::<Vec<_>>(),
            [(0, "virtio-console"), (3, "virtio-blk")]
        );
        assert!(vm.is_running());
        assert!(vm.end(VmState::Stopped, 9));
        assert!(!vm.end(VmState::Exited, 0), "a second fault does not end it again");
        assert_eq!((vm.state(), vm.status()), (VmState::Stopped, 9));
        assert!(vm.has_ended());
        assert!(!vm.begin_reset(), "an ended VM is not reset");
    }
}

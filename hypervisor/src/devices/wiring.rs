//! How a VM's devices are wired to it and to the board: each payload device
//! entry becomes a virtio-mmio device over the VM's RAM, whose interrupt
//! line is an SPI of the VM's vGIC and whose backend is a board service
//! (entropy, a disk range, a console, a switch port); the emulated UART's
//! output goes to the VM's console.

extern crate alloc;

use crate::console::{ByteWriter, Hub, VmConsole};
use crate::devices::pl011::UartBackend;
use crate::mem::GuestRam;
use crate::mmio::MmioDevice;
use crate::sched::Wakeups;
use crate::vgic::Vgic;
use crate::virtio::blk::{BackendError, BlockBackend, VirtioBlk, SECTOR};
use crate::virtio::console::{ConsoleSink, VirtioConsole};
use crate::virtio::net::VirtioNet;
use crate::virtio::rng::VirtioRng;
use crate::virtio::switch::{ConnectError, Port, Switch};
use crate::virtio::VirtioMmio;
use crate::vm::{guest_map, VcpuWaker};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use tessera_payload::{Device, DeviceDesc};

/// What the board gives VMs' devices (boot fills it in; tests fake it).
pub struct Backends {
    pub entropy: fn(&mut [u8]) -> usize,
    pub disks: &'static dyn DiskIo,
    /// The virtual switches, by index (`Device::Net { switch }`).
    pub switches: &'static [Switch],
    pub wakeups: &'static Wakeups,
    /// Where the VMs' consoles print.
    pub console: &'static Hub,
}

/// Entropy for a VM's virtio-rng: the board's own source (it returns how
/// many bytes it filled).
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

/// A virtio device's interrupt line: an SPI of the VM's virtual GIC; and
/// its note to the VM that a pass left work (bit `slot` of `io_pending`).
pub struct SpiSink {
    pub vgic: &'static Vgic,
    pub waker: VcpuWaker,
    pub spi: usize,
    pub io_pending: &'static AtomicU32,
    pub slot: u32,
}

impl crate::virtio::mmio::IrqSink for SpiSink {
    fn set_level(&self, level: bool) {
        self.waker.wake(self.vgic.set_spi_level(self.spi, level));
    }
    fn work_left(&self) {
        self.io_pending.fetch_or(1 << self.slot, Ordering::AcqRel);
    }
}

/// The board's disks, as block devices' backends reach them: whole
/// sectors at absolute positions on disk `disk` (the target drives the
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

/// The emulated UART's connection to its VM: output to the VM's console,
/// its interrupt line to the VM's virtual GIC.
pub struct UartPort {
    pub console: &'static VmConsole,
    pub vgic: &'static Vgic,
    pub waker: VcpuWaker,
}

impl UartBackend for UartPort {
    fn tx(&self, byte: u8) {
        self.console.write(&[byte]);
    }
    fn set_irq(&self, level: bool) {
        self.waker.wake(self.vgic.set_spi_level(guest_map::UART_SPI, level));
    }
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

/// The VM's devices, in slot order (the payload's). A device this
/// hypervisor cannot provide (a switch index it does not have) is left out.
pub fn virtio_slots(
    devices: &[DeviceDesc],
    ram: GuestRam,
    vgic: &'static Vgic,
    waker: VcpuWaker,
    io_pending: &'static AtomicU32,
    board: &Backends,
    hvc: &'static VmConsole,
) -> &'static [VirtioSlot] {
    let slots: Vec<VirtioSlot> = devices
        .iter()
        .filter_map(|d| {
            let (_, spi) = guest_map::virtio_slot(d.slot);
            VirtioSlot::new(d, ram, SpiSink { vgic, waker, spi, io_pending, slot: d.slot }, board, hvc)
        })
        .collect();
    Vec::leak(slots)
}

impl VirtioSlot {
    fn new(d: &DeviceDesc, ram: GuestRam, irq: SpiSink, board: &Backends, hvc: &'static VmConsole) -> Option<Self> {
        let dev = match d.device {
            Device::Rng => VirtioDev::Rng(VirtioMmio::new(VirtioRng::new(BoardEntropy(board.entropy)), ram, irq)),
            Device::Console => VirtioDev::Console(VirtioMmio::new(VirtioConsole::new(ConsoleOut(hvc)), ram, irq)),
            Device::Block { disk, offset, size, read_only } => {
                let range = DiskRange { io: board.disks, disk, first: offset / SECTOR, sectors: size / SECTOR };
                let mut id = ByteWriter::<20>::new();
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

    /// The VM is being reset or has ended: the device stops touching its
    /// memory, drops what it had queued (a net port's mailbox) and resets.
    pub fn quiesce(&self) {
        match &self.dev {
            VirtioDev::Rng(d) => d.quiesce(),
            VirtioDev::Console(d) => d.quiesce(),
            VirtioDev::Block(d) => d.quiesce(),
            VirtioDev::Net(d) => d.quiesce(),
        }
    }

    /// Continues the passes that ran out of budget; true if work is left.
    pub fn continue_work(&self) -> bool {
        match &self.dev {
            VirtioDev::Rng(d) => d.continue_work(),
            VirtioDev::Console(d) => d.continue_work(),
            VirtioDev::Block(d) => d.continue_work(),
            VirtioDev::Net(d) => d.continue_work(),
        }
    }

    /// The VM's reset is done: the device may be set up again.
    pub fn resume(&self) {
        match &self.dev {
            VirtioDev::Rng(d) => d.resume(),
            VirtioDev::Console(d) => d.resume(),
            VirtioDev::Block(d) => d.resume(),
            VirtioDev::Net(d) => d.resume(),
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

/// Boot-time allocation that lives for the whole run.
pub fn leak<T>(v: T) -> &'static T {
    alloc::boxed::Box::leak(alloc::boxed::Box::new(v))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::platform::Platform;
    use crate::vm::VcpuWaker;

    /// A board without disks, whose clock stands still and whose pCPU 0 is
    /// the only one.
    pub struct NoDisks;

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

    pub struct StillPlatform;

    impl Platform for StillPlatform {
        fn now(&self) -> u64 {
            0
        }
        fn frequency(&self) -> u64 {
            1_000_000
        }
        fn this_cpu(&self) -> u32 {
            0
        }
        fn interrupt(&self, _: u32) {}
    }

    /// Counts the interrupts it sends.
    #[derive(Default)]
    pub struct CountingPlatform(pub std::sync::atomic::AtomicU32);

    impl Platform for CountingPlatform {
        fn now(&self) -> u64 {
            0
        }
        fn frequency(&self) -> u64 {
            1_000_000
        }
        fn this_cpu(&self) -> u32 {
            0
        }
        fn interrupt(&self, _: u32) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    #[test]
    fn a_wake_up_interrupts_a_pcpu_only_where_it_is_needed() {
        use crate::vcpu::Vcpu;
        use std::sync::atomic::Ordering::*;
        let platform: &'static CountingPlatform = leak(CountingPlatform::default());
        let wakeups: &'static Wakeups = leak(Wakeups::new(platform));
        // vCPU 0 on pCPU 0 (the caller's), 1 and 2 on pCPU 1.
        let vcpus: &'static [Vcpu] =
            Box::leak(Box::new([Vcpu::new(0, 0, None), Vcpu::new(1, 1, None), Vcpu::new(2, 1, None)]));
        let waker = VcpuWaker { vcpus, wakeups };
        waker.wake(0b110);
        assert_eq!(platform.0.load(Acquire), 0, "waiting in their run queue: they flush before they run");
        vcpus[1].blocked.store(true, SeqCst);
        waker.wake(0b110);
        assert_eq!(platform.0.load(Acquire), 1, "one in WFI: its pCPU is interrupted, once");
        vcpus[1].blocked.store(false, SeqCst);
        vcpus[2].running.store(true, SeqCst);
        waker.wake(0b100);
        assert_eq!(platform.0.load(Acquire), 2, "one in the guest must leave it");
        vcpus[0].running.store(true, SeqCst);
        waker.wake(0b001);
        assert_eq!(platform.0.load(Acquire), 2, "the caller's own pCPU gets a flag, not an interrupt");
        assert!(wakeups.pending(0));
    }

    /// A UART that takes everything and keeps nothing.
    pub struct NullUart;

    impl crate::console::Uart for NullUart {
        fn try_put(&self, _: u8) -> bool {
            true
        }
    }

    pub fn null_console(clock: &'static dyn Platform) -> &'static Hub {
        leak(Hub::new(&NullUart, clock))
    }

    pub fn board(disks: &'static dyn DiskIo) -> Backends {
        let wakeups = leak(Wakeups::new(&StillPlatform));
        Backends { entropy: |b| b.len(), disks, switches: &[], wakeups, console: null_console(&StillPlatform) }
    }
}

//! Bring-up and the per-pCPU loop: the glue between the arch layer and the
//! portable core (VMs, dispatcher, scheduler policy).
//!
//! Boot: the boot pCPU reads the host DTB, turns on the HYP MMU, checks the
//! payload, builds every VM (RAM, image, stage-2, vCPUs placed on pCPUs),
//! then starts the other pCPUs that have work with PSCI CPU_ON. Each pCPU
//! then runs `cpu_loop`: pick a vCPU, enter it, handle its exits, repeat.

extern crate alloc;

use crate::addr::{Ipa, PhysAddr, BLOCK_2M, PAGE_SIZE};
use crate::arch::gic::Gich;
use crate::arch::{self, gic, mmu, psci, timer, vfp, Exit};
use crate::hypercall::{self, Action};
use crate::mm::frame::FrameAllocator;
use crate::mm::stage2::{Access, MemType, Stage2, TableMem};
use crate::mmio::{self, DataAbort};
use crate::platform::qemu_virt::{self as board, Board};
use crate::sched::{self, RunQueue};
use crate::vgic::{PPI_MAINTENANCE, PPI_VTIMER};
use crate::vm::{guest_map, BoardBackends, BootImage, CallerCtx, Channel, GuestRam, Power, Vcpu, VcpuContext, Vm, VmState};
use crate::{console, error, info, warn};
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use spin::Once;
use tessera_payload::{Device, DeviceDesc, Payload, RegionKind};

const MAX_CPUS: usize = arch::MAX_CPUS;
const MAX_QUEUE: usize = 64;
const HEAP_SIZE: usize = 1 << 20;

#[global_allocator]
static HEAP: linked_list_allocator::LockedHeap = linked_list_allocator::LockedHeap::empty();
static mut HEAP_SPACE: [u8; HEAP_SIZE] = [0; HEAP_SIZE];

static VMS: Once<&'static [Vm]> = Once::new();
/// The virtual switches joining VMs' virtio-net devices, by index.
static SWITCHES: [crate::virtio::switch::Switch; tessera_payload::MAX_SWITCHES as usize] =
    [const { crate::virtio::switch::Switch::new() }; tessera_payload::MAX_SWITCHES as usize];
/// The shared-memory channels, by id (set once, after the VMs).
static CHANNELS: Once<&'static [Channel]> = Once::new();
static PAYLOAD: Once<Payload<'static>> = Once::new();
static RUNNING_VMS: AtomicU32 = AtomicU32::new(0);
static SLICE_TICKS: AtomicU32 = AtomicU32::new(0);
/// The running vCPU's time slice is over: the pCPU goes back to its scheduler.
static NEED_RESCHED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Set by `kick`: a vCPU of this pCPU may have become runnable, so the
/// running one must get a time slice if it has none. A wake-up never
/// preempts the running vCPU at once: Linux sends IPIs while holding
/// spinlocks (the runqueue lock), and switching away right then leaves its
/// siblings spinning on a lock whose holder is not running.
static WOKEN: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// The VM that console input goes to, and the escape state of the input.
static FOCUS: AtomicUsize = AtomicUsize::new(0);
static ESCAPED: AtomicBool = AtomicBool::new(false);
static UART_IRQ: AtomicU32 = AtomicU32::new(0);
/// Console input: this byte, then a VM's number (1-9), moves the input.
const ESCAPE: u8 = 0x1c; // Ctrl-\

/// A vCPU by position: VM index, vCPU index.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct VcpuRef {
    vm: u16,
    vcpu: u16,
}

struct PerCpu {
    queue: RunQueue<VcpuRef, MAX_QUEUE>,
    /// The vCPU whose PL1 and GIC state is in this pCPU's registers.
    loaded: Option<VcpuRef>,
    /// The vCPU whose VFP registers are live (switched lazily).
    fp_owner: Option<VcpuRef>,
}

struct PerCpuCell(UnsafeCell<PerCpu>);
// SAFETY: slot n is only accessed by pCPU n, except that the boot pCPU fills
// every queue before it starts the others (PSCI CPU_ON orders those writes
// before the target runs).
unsafe impl Sync for PerCpuCell {}

static PERCPU: [PerCpuCell; MAX_CPUS] =
    [const { PerCpuCell(UnsafeCell::new(PerCpu { queue: RunQueue::new(), loaded: None, fp_owner: None })) }; MAX_CPUS];

/// # Safety
/// Only pCPU `cpu` itself (or the boot pCPU before the others start).
#[allow(clippy::mut_from_ref)]
unsafe fn percpu(cpu: usize) -> &'static mut PerCpu {
    // SAFETY: per the contract, no other reference to this slot exists.
    unsafe { &mut *PERCPU[cpu].0.get() }
}

fn vms() -> &'static [Vm] {
    VMS.get().copied().unwrap_or(&[])
}

fn resolve(r: VcpuRef) -> (&'static Vm, &'static Vcpu) {
    let vm = &vms()[r.vm as usize];
    (vm, &vm.vcpus[r.vcpu as usize])
}

fn this_cpu() -> usize {
    // QEMU virt numbers cores by Aff0 within one cluster.
    (arch::mpidr() & 0xff) as usize
}

/// Makes pCPU `pcpu` look at its run queue again (an SGI if it is another
/// one): an idle pCPU picks the woken vCPU at once, a busy one within a slice.
fn kick(pcpu: u32) {
    if let Some(f) = WOKEN.get(pcpu as usize) {
        f.store(true, Ordering::Release);
        if pcpu as usize != this_cpu() {
            gic::kick(pcpu);
        }
    }
}

/// Can vCPU `r` run now? Called on its owning pCPU `cpu`. A blocked vCPU
/// (WFI) becomes runnable when an interrupt is pending for it, including
/// its virtual timer expiring while it was descheduled.
fn runnable(cpu: usize, r: VcpuRef) -> bool {
    let (vm, vcpu) = resolve(r);
    if !vm.is_running() {
        return false;
    }
    match vcpu.power() {
        Power::Off => false,
        Power::OnPending => true,
        Power::On => {
            if !vcpu.blocked.load(Ordering::Acquire) {
                return true;
            }
            let idx = vcpu.index as usize;
            let Some(g) = vm.vgic.cpu(idx) else { return true };
            if g.work.load(Ordering::Acquire) || vm.vgic.deliverable(idx, g) {
                return true;
            }
            // SAFETY: this pCPU owns `r`.
            let loaded = unsafe { percpu(cpu) }.loaded == Some(r);
            // An interrupt already in its list registers (live if loaded, saved
            // otherwise: a flush may have moved it there after the WFI).
            let in_lrs = if loaded {
                crate::vgic::any_pending(&Gich::new())
            } else {
                // SAFETY: this pCPU owns `r`, which is not loaded.
                unsafe { vcpu.context() }.gich.lr.iter().any(|&l| crate::vgic::hw::lr_pending(l))
            };
            if in_lrs {
                return true;
            }
            if !loaded && timer_deadline(vm, vcpu).is_some_and(|d| timer::counter() >= d) {
                vm.vgic.raise_timer(idx);
                return true;
            }
            false
        }
    }
}

/// When a descheduled vCPU's virtual timer fires, in physical counter
/// ticks; None if it is off, masked, or already delivered.
fn timer_deadline(vm: &Vm, vcpu: &Vcpu) -> Option<u64> {
    let g = vm.vgic.cpu(vcpu.index as usize)?;
    if g.timer_in_flight.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: only called on the vCPU's owning pCPU, for a vCPU that is not
    // loaded (its saved state is current).
    let el1 = unsafe { &vcpu.context().el1 };
    // CNTV_CTL: ENABLE (bit 0) set, IMASK (bit 1) clear.
    (el1.cntv_ctl & 3 == 1).then(|| el1.cntv_cval.wrapping_add(vm.cntvoff))
}

#[unsafe(no_mangle)]
extern "C" fn tessera_cpu_entry(cpu: u32, dtb: u32) -> ! {
    if cpu == 0 {
        boot_primary(dtb)
    } else {
        mmu::enable();
        mmu::init_hyp_regs();
        init_cpu_interrupts(cpu as usize);
        info!("pCPU {cpu} up");
        cpu_loop(cpu as usize)
    }
}

/// Ends the system with a clear line: for a refused payload or a board we
/// cannot run on (not a hypervisor bug, so no panic location).
fn fatal(args: fmt::Arguments<'_>) -> ! {
    console::log(console::Level::Error, args);
    error!("boot aborted");
    board::fail()
}

fn boot_primary(dtb_hint: u32) -> ! {
    // SAFETY: the heap area is a static used for nothing else, handed over once.
    unsafe { HEAP.lock().init(&raw mut HEAP_SPACE as *mut u8, HEAP_SIZE) };
    // QEMU passes no DTB pointer to an ELF image; it puts the DTB at RAM start.
    let dtb = if dtb_hint != 0 && has_fdt_magic(dtb_hint) { dtb_hint } else { board::DTB_DEFAULT };
    arch::uart::init(0x0900_0000); // until the DTB says otherwise
    console::set_sink(arch::uart::write);
    // SAFETY: QEMU (or the boot loader) put a DTB there; `read_board` checks its header.
    let b = match unsafe { read_board_checked(dtb) } {
        Ok(b) => b,
        Err(e) => fatal(format_args!("cannot read the host device tree at {dtb:#010x}: {e}")),
    };
    arch::uart::init(b.uart);
    info!(
        "Tessera {} (hypercall ABI {}.{}): {} pCPU(s), {} MiB RAM at {:#010x}",
        env!("CARGO_PKG_VERSION"),
        hypercall_abi::ABI_VERSION_MAJOR,
        hypercall_abi::ABI_VERSION_MINOR,
        b.cpus,
        b.ram_size >> 20,
        b.ram_base
    );
    let ram_end = b.ram_base + b.ram_size;
    mmu::build_tables(b.ram_base, ram_end);
    mmu::enable();
    mmu::init_hyp_regs();
    board::probe_pvpanic(&b);
    gic::init_distributor(b.gicd, b.gicc);
    gic::init_gich(b.gich);
    init_cpu_interrupts(0);
    crate::vm::CLOCK.call_once(|| timer::counter);
    SLICE_TICKS.store(timer::frequency() / 1000, Ordering::Relaxed); // 1 ms

    let payload = PAYLOAD.call_once(|| load_payload(&b));
    if payload.pcpus as usize > b.cpus {
        fatal(format_args!("the image was packed for {} pCPUs but the board has {}", payload.pcpus, b.cpus));
    }
    let payload_end = board::PAYLOAD_BASE as u64 + tessera_payload::total_size(payload.raw()).unwrap_or(0) as u64;
    let free_start = PhysAddr(payload_end).align_up(BLOCK_2M);
    if free_start.raw() >= ram_end {
        fatal(format_args!("no RAM left after the payload"));
    }
    let frames = ((ram_end - free_start.raw()) / PAGE_SIZE) as usize;
    let bitmap: &'static mut [u64] = Vec::leak(alloc::vec![0u64; frames.div_ceil(64)]);
    let mut fa = FrameAllocator::new(free_start, frames, bitmap);
    // VMs first, so where their RAM lies does not depend on the board's
    // devices; then the board's devices, whose DMA buffers come after.
    let vms = create_vms(payload, &b, &mut fa);
    *crate::physdev::FRAMES.lock() = Some(fa);
    let mut disk_names = [""; tessera_payload::MAX_DISKS];
    for (k, n) in disk_names.iter_mut().enumerate().take(payload.disk_count()) {
        *n = payload.disk(k).name;
    }
    crate::physdev::probe(&b.virtio[..b.virtio_count], &disk_names[..payload.disk_count()]);
    check_backends(payload, vms);
    RUNNING_VMS.store(vms.len() as u32, Ordering::Release);
    VMS.call_once(|| vms);
    CHANNELS.call_once(|| link_channels(payload, vms));
    crate::vm::KICK.call_once(|| kick);
    if let Some(fa) = crate::physdev::FRAMES.lock().as_ref() {
        info!("{} MiB of RAM left free", fa.free_bytes() >> 20);
    }
    UART_IRQ.store(b.uart_irq, Ordering::Relaxed);
    gic::enable_spi(b.uart_irq, 0);
    arch::uart::enable_rx_interrupt();
    if vms.len() > 1 {
        info!(
            "console input goes to vm \"{}\"; press Ctrl-\\ then 1-{} to switch",
            vms[0].name(),
            vms.len().min(9)
        );
    }

    for cpu in 1..b.cpus.min(payload.pcpus as usize) {
        // SAFETY: pCPU `cpu` has not started; the boot pCPU filled its queue.
        if unsafe { percpu(cpu) }.queue.is_empty() {
            info!("pCPU {cpu} has no vCPUs: left powered off");
            continue;
        }
        let r = psci::cpu_on(b.cpu_mpidrs[cpu], cpu as u32);
        if r != 0 {
            fatal(format_args!("firmware refused to start pCPU {cpu} (PSCI CPU_ON returned {r})"));
        }
    }
    cpu_loop(0)
}

/// This pCPU's GIC interface, with the interrupts the hypervisor takes:
/// kicks, the HYP timer, the vGIC maintenance interrupt, the virtual timer.
fn init_cpu_interrupts(cpu: usize) {
    gic::init_cpu(cpu);
    gic::enable_private(PPI_MAINTENANCE);
    gic::enable_private(PPI_VTIMER);
}

fn has_fdt_magic(addr: u32) -> bool {
    // SAFETY: only called for addresses inside RAM handed over by the loader.
    unsafe { core::ptr::read_volatile(addr as usize as *const u32) == 0xedfe_0dd0 }
}

/// # Safety
/// `dtb` must be readable.
unsafe fn read_board_checked(dtb: u32) -> Result<Board, &'static str> {
    if !has_fdt_magic(dtb) {
        return Err("no device tree magic");
    }
    // SAFETY: forwarded; the magic is there.
    unsafe { board::read_board(dtb) }
}

/// Finds and checks the payload at its fixed address.
fn load_payload(b: &Board) -> Payload<'static> {
    let base = board::PAYLOAD_BASE as u64;
    let ram_end = b.ram_base + b.ram_size;
    if base + tessera_payload::HEADER_SIZE as u64 > ram_end {
        fatal(format_args!("RAM ends before the payload address {base:#x}"));
    }
    // SAFETY: the header lies inside identity-mapped RAM (checked above).
    let header = unsafe { core::slice::from_raw_parts(base as usize as *const u8, tessera_payload::HEADER_SIZE) };
    let total = match tessera_payload::total_size(header) {
        Ok(t) => t as u64,
        Err(e) => fatal(format_args!("refusing the boot payload at {base:#010x}: {e}")),
    };
    let avail = ram_end - base;
    if total > avail {
        fatal(format_args!(
            "refusing the boot payload at {base:#010x}: its header claims {total} bytes, only {avail} bytes of RAM follow"
        ));
    }
    // SAFETY: `total` bytes from `base` lie inside RAM (checked above); the
    // payload is never written after boot.
    let bytes = unsafe { core::slice::from_raw_parts(base as usize as *const u8, total as usize) };
    match Payload::parse(bytes) {
        Ok(p) => p,
        Err(e) => fatal(format_args!("refusing the boot payload at {base:#010x}: {e}")),
    }
}

/// Stage-2 tables come from the frame allocator, identity-mapped.
struct Tables<'f, 'a>(&'f mut FrameAllocator<'a>);

impl TableMem for Tables<'_, '_> {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let pa = self.0.alloc(PAGE_SIZE, PAGE_SIZE).ok()?;
        // SAFETY: a fresh frame of RAM, identity-mapped, owned by us.
        unsafe { core::ptr::write_bytes(pa.raw() as usize as *mut u8, 0, PAGE_SIZE as usize) };
        Some(pa)
    }
    fn read(&self, t: PhysAddr, i: usize) -> u64 {
        // SAFETY: `t` is a table frame from `alloc_table`; i < 512.
        unsafe { core::ptr::read_volatile((t.raw() as usize as *const u64).add(i & 511)) }
    }
    fn write(&mut self, t: PhysAddr, i: usize, v: u64) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((t.raw() as usize as *mut u64).add(i & 511), v) }
    }
}

#[inline(never)] // keeps boot_primary's frame small: these structures are large
fn create_vms(p: &Payload<'static>, b: &Board, fa: &mut FrameAllocator<'_>) -> &'static [Vm] {
    let pcpus = (p.pcpus as usize).min(b.cpus);
    let online_mask = if pcpus >= 32 { !0 } else { (1u32 << pcpus) - 1 };
    let mut load = [0u32; MAX_CPUS];
    // Channel memory first: every member VM maps the same frames.
    let channels: Vec<PhysAddr> = (0..p.channel_count())
        .map(|k| {
            let c = p.channel(k);
            let pa = fa.alloc(c.size as u64, PAGE_SIZE).unwrap_or_else(|e| {
                fatal(format_args!("channel \"{}\": not enough RAM for {} KiB ({} KiB free)", c.name, c.size >> 10, e.free >> 10))
            });
            GuestRam { ipa: Ipa(c.ipa as u64), size: c.size as u64, pa, host: pa.raw() as usize as *mut u8 }.zero();
            pa
        })
        .collect();
    let mut out = Vec::with_capacity(p.vm_count());
    for (i, d) in p.vms().enumerate() {
        let id = i as u32 + 1;
        let pa = match fa.alloc(d.ram_size as u64, BLOCK_2M) {
            Ok(pa) => pa,
            Err(e) => fatal(format_args!(
                "vm \"{}\": not enough RAM for {} MiB ({} MiB free)",
                d.name,
                d.ram_size >> 20,
                e.free >> 20
            )),
        };
        let ram = GuestRam { ipa: Ipa(d.ram_base as u64), size: d.ram_size as u64, pa, host: pa.raw() as usize as *mut u8 };
        let boot = BootImage { payload_index: i, entry: d.entry, regs: d.boot_regs, reset_count_ipa: reset_count_ipa(p, i) };
        load_image(&ram, p, i, &boot, 0);
        let mut tables = Tables(fa);
        let s2 = Stage2::new(&mut tables)
            .and_then(|mut s2| {
                s2.map(&mut tables, ram.ipa, pa, ram.size, MemType::Normal, Access::RWX)?;
                // The guest's GIC CPU interface is the hardware's virtual one.
                s2.map(&mut tables, guest_map::GICC, PhysAddr(b.gicv as u64), guest_map::GICC_SIZE, MemType::Device, Access::RW)?;
                for (k, &cpa) in channels.iter().enumerate().filter(|(k, _)| d.channels & (1 << k) != 0) {
                    let c = p.channel(k);
                    s2.map(&mut tables, Ipa(c.ipa as u64), cpa, c.size as u64, MemType::Normal, Access::RW)?;
                }
                Ok(s2)
            })
            .unwrap_or_else(|e| fatal(format_args!("vm \"{}\": cannot build stage-2 tables: {e:?}", d.name)));

        let mut vcpus = Vec::with_capacity(d.vcpus as usize);
        let mut placed = [0u32; MAX_CPUS];
        for v in 0..d.vcpus {
            let Some(cpu) = sched::place(&load[..pcpus], d.affinity & online_mask) else {
                fatal(format_args!("vm \"{}\": affinity {:#x} names no pCPU of this board", d.name, d.affinity));
            };
            load[cpu] += 1;
            placed[cpu] += 1;
            let boot = (v == 0).then(|| VcpuContext::boot(d.entry, d.boot_regs[0], d.boot_regs[1], d.boot_regs[2]));
            vcpus.push(Vcpu::new(v, cpu as u32, boot));
            // SAFETY: boot pCPU, before any other pCPU starts.
            if unsafe { percpu(cpu) }.queue.push(VcpuRef { vm: i as u16, vcpu: v as u16 }).is_err() {
                fatal(format_args!("pCPU {cpu}: more than {MAX_QUEUE} vCPUs placed on it"));
            }
        }
        let vcpus: &'static [Vcpu] = Vec::leak(vcpus);
        info!(
            "vm \"{}\" (id {id}): {} vCPU(s), {} MiB RAM at IPA {:#010x} (PA {}), entry {:#010x}",
            d.name,
            d.vcpus,
            d.ram_size >> 20,
            d.ram_base,
            pa,
            d.entry
        );
        for (cpu, n) in placed.iter().enumerate().filter(|(_, n)| **n > 0) {
            info!("vm \"{}\": {n} vCPU(s) on pCPU {cpu}", d.name);
        }
        let devices: Vec<DeviceDesc> = d.devices().copied().collect();
        let board = BoardBackends { entropy: crate::physdev::entropy, disks: &crate::physdev::PHYS_DISKS, switches: &SWITCHES };
        let mut vm = Vm::new(id, d.name, ram, s2.vttbr(id as u8), vcpus, timer::counter(), boot, &devices, &board);
        vm.channels = d.channels;
        for v in vm.virtio {
            if let Err(e) = v.connect() {
                fatal(format_args!("vm \"{}\": the virtio-net in slot {} cannot join its switch: {}", d.name, v.slot, e.describe()));
            }
        }
        out.push(vm);
    }
    Vec::leak(out)
}

fn channels() -> &'static [Channel] {
    CHANNELS.get().copied().unwrap_or(&[])
}

/// Each channel's doorbell and member VMs (their memory is mapped already).
fn link_channels(p: &Payload<'static>, vms: &'static [Vm]) -> &'static [Channel] {
    let mut out = Vec::with_capacity(p.channel_count());
    for k in 0..p.channel_count() {
        let c = p.channel(k);
        let members: Vec<&'static Vm> = vms.iter().filter(|v| v.channels & (1 << k) != 0).collect();
        for m in &members {
            info!("channel {k} \"{}\": {} KiB at IPA {:#010x} in vm \"{}\", doorbell SPI {}", c.name, c.size >> 10, c.ipa, m.name(), c.spi);
        }
        out.push(Channel { spi: c.spi as usize, members: Vec::leak(members) });
    }
    Vec::leak(out)
}

/// Every device a VM was given has its board backend, or the system stops
/// before any VM runs: a disk that is missing or smaller than the image
/// the configuration named, an rng without a board entropy source.
fn check_backends(p: &Payload<'static>, vms: &[Vm]) {
    for (k, vm) in vms.iter().enumerate() {
        for d in p.vm(k).devices() {
            let (ipa, spi) = guest_map::virtio_slot(d.slot);
            match d.device {
                Device::Rng if !crate::physdev::has_rng() => {
                    fatal(format_args!("vm \"{}\" has a virtio-rng, but the board has no entropy source (virtio-rng)", vm.name()));
                }
                Device::Block { disk, .. } => {
                    let want = p.disk(disk as usize);
                    match crate::physdev::disk_size(disk as usize) {
                        None => fatal(format_args!(
                            "vm \"{}\": disk \"{}\" is not on the board (a virtio-blk with serial {:?})",
                            vm.name(),
                            want.name,
                            want.name
                        )),
                        Some(have) if have < want.size => fatal(format_args!(
                            "disk \"{}\" has {have} bytes on the board, the configuration expects {}",
                            want.name, want.size
                        )),
                        Some(_) => {}
                    }
                }
                _ => {}
            }
            match d.device {
                Device::Block { disk, offset, size, read_only } => info!(
                    "vm \"{}\": virtio-blk at IPA {ipa}, SPI {spi}: disk \"{}\" bytes {offset:#x}..{:#x}{}",
                    vm.name(),
                    p.disk(disk as usize).name,
                    offset + size,
                    if read_only { ", read-only" } else { "" }
                ),
                Device::Net { switch, mac: m } => info!(
                    "vm \"{}\": virtio-net at IPA {ipa}, SPI {spi}: switch {switch}, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                    vm.name(),
                    m[0], m[1], m[2], m[3], m[4], m[5]
                ),
                _ => {
                    let kind = vm.virtio.iter().find(|v| v.slot == d.slot).map_or("?", |v| v.kind());
                    info!("vm \"{}\": {kind} at IPA {ipa}, SPI {spi}", vm.name())
                }
            }
        }
    }
}

/// Where the guest DTB's `/chosen/tessera,reset-count` value lies in the
/// VM's memory (the packer reserves it; the hypervisor counts resets there).
fn reset_count_ipa(p: &Payload<'static>, vm: usize) -> Option<Ipa> {
    let d = p.vm(vm);
    let r = d.regions().find(|r| r.kind == RegionKind::Dtb)?;
    let bytes = p.region_bytes(r);
    let fdt = fdt::Fdt::new(bytes).ok()?;
    let prop = fdt.find_node("/chosen")?.property("tessera,reset-count")?;
    if prop.value.len() != 4 {
        return None;
    }
    let off = prop.value.as_ptr() as usize - bytes.as_ptr() as usize;
    Some(Ipa(r.ipa as u64 + off as u64))
}

/// (Re)loads a VM's RAM from the payload: zeroed, then its regions, then
/// the reset count; cleaned to the point of coherency for a guest that
/// starts with caches off.
fn load_image(ram: &GuestRam, p: &Payload<'static>, vm: usize, boot: &BootImage, resets: u32) {
    ram.zero();
    for r in p.vm(vm).regions() {
        // The parser checked that every region lies in this VM's RAM.
        let _ = ram.write(Ipa(r.ipa as u64), p.region_bytes(r));
    }
    if let Some(ipa) = boot.reset_count_ipa {
        let _ = ram.write(ipa, &resets.to_be_bytes());
    }
    mmu::clean_dcache_range(ram.pa.raw() as usize, ram.size as usize);
}

/// What the loop does after an exit.
#[derive(PartialEq, Eq)]
enum Next {
    /// Re-enter the same vCPU at once.
    Resume,
    /// Go back to the scheduler.
    Reschedule,
}

fn cpu_loop(cpu: usize) -> ! {
    loop {
        if RUNNING_VMS.load(Ordering::Acquire) == 0 {
            if cpu == 0 {
                info!("all VMs have ended; powering off");
                board::power_off();
            }
            psci::cpu_off();
        }
        NEED_RESCHED[cpu].store(false, Ordering::Release);
        WOKEN[cpu].store(false, Ordering::Release);
        // SAFETY: this is pCPU `cpu`.
        let pc = unsafe { percpu(cpu) };
        match pc.queue.pick(|r| runnable(cpu, r)) {
            Some(r) => run(cpu, r),
            None => {
                if cpu != 0 && pc.queue.iter().all(|r| matches!(resolve(r).0.state(), VmState::Exited | VmState::Stopped)) {
                    info!("pCPU {cpu}: its VMs have ended; powering it off");
                    psci::cpu_off();
                }
                arm_next_event(cpu, None);
                if !WOKEN[cpu].load(Ordering::Acquire) {
                    arch::wait_for_interrupt();
                }
                drain_interrupts(cpu);
            }
        }
    }
}

/// Arms the HYP timer for this pCPU's next scheduling event: the end of
/// the running vCPU's slice if another vCPU could run, or the earliest
/// virtual-timer deadline of a vCPU that is not loaded.
fn arm_next_event(cpu: usize, running: Option<VcpuRef>) {
    // SAFETY: this is pCPU `cpu`.
    let pc = unsafe { percpu(cpu) };
    let now = timer::counter();
    let mut next = u64::MAX;
    if running.is_some() && pc.queue.iter().any(|q| Some(q) != running && runnable(cpu, q)) {
        next = now + SLICE_TICKS.load(Ordering::Relaxed) as u64;
    }
    for q in pc.queue.iter().filter(|&q| Some(q) != pc.loaded) {
        let (vm, vcpu) = resolve(q);
        if vm.is_running() && vcpu.power() == Power::On {
            if let Some(d) = timer_deadline(vm, vcpu) {
                next = next.min(d);
            }
        }
    }
    if next == u64::MAX {
        timer::disarm_slice();
    } else {
        timer::arm_at(next);
    }
}

/// Saves the loaded vCPU's CPU and GIC state. EOIs the guest made that the
/// maintenance interrupt has not reported yet are processed first: saving
/// clears GICH_HCR, which withdraws that interrupt, and a timer left "in
/// flight" would never fire again for a vCPU that then sleeps in WFI.
fn unload(pc: &mut PerCpu) {
    if let Some(old) = pc.loaded.take() {
        let (vm, vcpu) = resolve(old);
        vm.vgic.maintenance(vcpu.index as usize, &mut Gich::new());
        // SAFETY: `old` was loaded on this pCPU, which owns it.
        let ctx = unsafe { vcpu.context() };
        arch::save_el1(&mut ctx.el1);
        gic::save_gich(&mut ctx.gich);
    }
}

fn load(pc: &mut PerCpu, r: VcpuRef, fresh: bool) {
    let (vm, vcpu) = resolve(r);
    // SAFETY: this pCPU owns `r`.
    let ctx = unsafe { vcpu.context() };
    arch::restore_el1(&ctx.el1);
    gic::restore_gich(&ctx.gich);
    mmu::load_vcpu_space(vm.vttbr, 0x8000_0000 | vcpu.index);
    arch::set_cntvoff(vm.cntvoff);
    // The physical virtual-timer PPI stays off while an injected timer
    // interrupt waits for the guest's EOI (see vgic::VgicCpu).
    match vm.vgic.cpu(vcpu.index as usize) {
        Some(g) if !g.timer_in_flight.load(Ordering::Acquire) => gic::enable_private(PPI_VTIMER),
        _ => gic::disable_private(PPI_VTIMER),
    }
    if fresh && pc.fp_owner == Some(r) {
        pc.fp_owner = None; // the live FP registers are from before its restart
    }
    vfp::trap_guest_fp(pc.fp_owner != Some(r));
    pc.loaded = Some(r);
}

/// Runs vCPU `r` on this pCPU until the scheduler needs to choose again.
fn run(cpu: usize, r: VcpuRef) {
    let (vm, vcpu) = resolve(r);
    // SAFETY: `r` is in this pCPU's queue, so this pCPU owns the vCPU.
    let fresh = unsafe { vcpu.take_on_request() };
    // SAFETY: this is pCPU `cpu`.
    let pc = unsafe { percpu(cpu) };
    vcpu.blocked.store(false, Ordering::Release);
    if fresh || pc.loaded != Some(r) {
        if pc.loaded == Some(r) {
            pc.loaded = None; // restarted: its live state is stale, do not save it
        }
        unload(pc);
        load(pc, r, fresh);
    }
    // SAFETY: as above; the only reference to this context from here on.
    let ctx = unsafe { vcpu.context() };
    let gcpu = vm.vgic.cpu(vcpu.index as usize);
    vcpu.running.store(true, Ordering::Release);
    vcpu.picks.fetch_add(1, Ordering::Relaxed);
    arm_next_event(cpu, Some(r));
    loop {
        if let Some(g) = gcpu {
            if g.work.load(Ordering::Acquire) {
                vm.vgic.flush(vcpu.index as usize, &mut Gich::new());
            }
        }
        let next = match arch::enter_guest(&mut ctx.regs) {
            Exit::Trap => handle_trap(cpu, r, vm, vcpu, ctx),
            Exit::Irq => {
                vcpu.irq_exits.fetch_add(1, Ordering::Relaxed);
                drain_interrupts(cpu);
                Next::Resume
            }
            Exit::Fiq => {
                stop_vm(vm, vcpu, ctx.regs.pc, 0, format_args!("unexpected FIQ"));
                Next::Reschedule
            }
        };
        if next == Next::Reschedule
            || !vm.is_running()
            || vcpu.power() != Power::On
            || NEED_RESCHED[cpu].load(Ordering::Acquire)
        {
            break;
        }
        // A plain load first: the swap is an exclusive-access loop, and most
        // exits (every hypercall) find nothing woken.
        if WOKEN[cpu].load(Ordering::Relaxed) && WOKEN[cpu].swap(false, Ordering::AcqRel) {
            arm_next_event(cpu, Some(r));
        }
    }
    vcpu.running.store(false, Ordering::Release);
    timer::disarm_slice();
}

/// Acknowledges every pending physical interrupt and acts on it.
fn drain_interrupts(cpu: usize) {
    loop {
        let iar = gic::ack();
        let id = iar & 0x3ff;
        if id == gic::SPURIOUS {
            break;
        }
        match id {
            gic::PPI_HYP_TIMER => {
                timer::disarm_slice();
                NEED_RESCHED[cpu].store(true, Ordering::Release);
            }
            gic::SGI_KICK => {}
            PPI_VTIMER => {
                // The loaded vCPU's virtual timer: inject it, and keep the
                // (level) physical interrupt off until the guest's EOI.
                gic::disable_private(PPI_VTIMER);
                // SAFETY: this is pCPU `cpu`.
                if let Some(r) = unsafe { percpu(cpu) }.loaded {
                    let (vm, vcpu) = resolve(r);
                    vm.vgic.raise_timer(vcpu.index as usize);
                }
            }
            PPI_MAINTENANCE => {
                // SAFETY: this is pCPU `cpu`.
                if let Some(r) = unsafe { percpu(cpu) }.loaded {
                    let (vm, vcpu) = resolve(r);
                    if vm.vgic.maintenance(vcpu.index as usize, &mut Gich::new()) {
                        gic::enable_private(PPI_VTIMER);
                    }
                }
            }
            id if id == UART_IRQ.load(Ordering::Relaxed) => console_input(),
            other => warn!("unexpected physical interrupt {other}"),
        }
        gic::eoi(iar);
    }
    // Show partial lines (prompts) that have waited 50 ms.
    let now = timer::counter();
    let age = (timer::frequency() / 20) as u64;
    for vm in vms() {
        vm.console.flush_stale(now, age);
        vm.hvc.flush_stale(now, age);
    }
}

/// Ctrl-\\ d: one line per vCPU (state, and for those this pCPU owns, the
/// PC and virtual timer), for a system that seems stuck.
fn dump_state() {
    let cpu = this_cpu();
    let now = timer::counter();
    for vm in vms() {
        for v in vm.vcpus {
            let g = vm.vgic.cpu(v.index as usize);
            let pending = g.is_some_and(|g| g.work.load(Ordering::Acquire) || vm.vgic.deliverable(v.index as usize, g));
            let in_flight = g.is_some_and(|g| g.timer_in_flight.load(Ordering::Acquire));
            if v.pcpu as usize == cpu {
                // SAFETY: this pCPU owns the vCPU (a snapshot for a human; the
                // loaded vCPU's saved registers are from its last exit).
                let ctx = unsafe { v.context() };
                info!(
                    "dump: vm \"{}\" vCPU {} on pCPU {}: picked {} times, {} irq exits, {:?} blocked={} running={} pending={pending} timer_in_flight={in_flight} pc={:#010x} cpsr={:#x} cntv_ctl={:#x} cntv_cval={:#x} (vcnt now {:#x})",
                    vm.name(), v.index, v.pcpu, v.picks.load(Ordering::Relaxed), v.irq_exits.load(Ordering::Relaxed), v.power(), v.blocked.load(Ordering::Acquire), v.running.load(Ordering::Acquire),
                    ctx.regs.pc, ctx.regs.cpsr, ctx.el1.cntv_ctl, ctx.el1.cntv_cval, now.wrapping_sub(vm.cntvoff)
                );
                info!("dump:   r={:x?} lr_usr={:#x} lr_svc={:#x} sp_svc={:#x}", ctx.regs.r, ctx.regs.lr_usr, ctx.el1.lr_svc, ctx.el1.sp_svc);
                let (pend, en) = vm.vgic.private_state(v.index as usize);
                info!("dump:   gich hcr={:#x} vmcr={:#x} apr={:#x} lr={:x?} private pending={pend:#x} enabled={en:#x}", ctx.gich.hcr, ctx.gich.vmcr, ctx.gich.apr, &ctx.gich.lr[..4]);
            } else {
                info!(
                    "dump: vm \"{}\" vCPU {} on pCPU {}: {:?} blocked={} running={} pending={pending} timer_in_flight={in_flight}",
                    vm.name(), v.index, v.pcpu, v.power(), v.blocked.load(Ordering::Acquire), v.running.load(Ordering::Acquire)
                );
            }
        }
    }
}

/// Bytes from the physical console go to the focused VM's UART. Ctrl-\
/// then a digit moves the focus; Ctrl-\ twice sends one Ctrl-\.
fn console_input() {
    while let Some(b) = arch::uart::read_byte() {
        let vms = vms();
        if ESCAPED.swap(false, Ordering::AcqRel) {
            match b {
                b'1'..=b'9' if ((b - b'1') as usize) < vms.len() => {
                    let n = (b - b'1') as usize;
                    FOCUS.store(n, Ordering::Release);
                    info!("console input now goes to vm \"{}\"", vms[n].name());
                    continue;
                }
                ESCAPE => {}
                b'd' => {
                    dump_state();
                    continue;
                }
                _ => continue,
            }
        } else if b == ESCAPE {
            ESCAPED.store(true, Ordering::Release);
            continue;
        }
        if let Some(vm) = vms.get(FOCUS.load(Ordering::Acquire)) {
            if vm.is_running() {
                vm.uart.push_rx(&[b]);
            }
        }
    }
}

/// HSR exception classes (Arm ARM B3.13.6).
mod ec {
    pub const WFI_WFE: u32 = 0x01;
    pub const CP15_32: u32 = 0x03;
    pub const FP_ACCESS: u32 = 0x07;
    pub const HVC: u32 = 0x12;
    pub const SMC: u32 = 0x13;
    pub const PABT_LOWER: u32 = 0x20;
    pub const DABT_LOWER: u32 = 0x24;
}

/// The trapped vCPU's registers including the banked ones of its current
/// mode, which are still live in the CPU (the vCPU is loaded).
struct LiveRegs<'a>(&'a mut crate::context::GuestRegs);

impl mmio::Regs for LiveRegs<'_> {
    fn get(&self, n: u8) -> Option<u32> {
        arch::read_banked(self.0.cpsr & 0x1f, n).or_else(|| self.0.get(n))
    }
    fn set(&mut self, n: u8, v: u32) -> bool {
        arch::write_banked(self.0.cpsr & 0x1f, n, v) || self.0.set(n, v)
    }
}

/// Steps over the trapped instruction (HSR.IL: 32 or 16 bits).
fn skip_instruction(ctx: &mut VcpuContext, hsr: u32) {
    ctx.regs.pc = ctx.regs.pc.wrapping_add(if hsr & (1 << 25) != 0 { 4 } else { 2 });
}

fn handle_trap(cpu: usize, r: VcpuRef, vm: &'static Vm, vcpu: &'static Vcpu, ctx: &mut VcpuContext) -> Next {
    let t = arch::trap_info();
    match t.hsr >> 26 {
        ec::HVC => hvc(cpu, vm, vcpu, ctx),
        ec::WFI_WFE => {
            skip_instruction(ctx, t.hsr);
            let idx = vcpu.index as usize;
            if t.hsr & 1 != 0 || vm.vgic.cpu(idx).is_none() {
                return Next::Reschedule; // WFE (a spinning lock): yield
            }
            // EOIs not yet reported by the maintenance interrupt (see `unload`).
            let mut lrs = Gich::new();
            if vm.vgic.maintenance(idx, &mut lrs) {
                gic::enable_private(PPI_VTIMER);
            }
            if vm.vgic.has_pending(idx, &lrs) {
                return Next::Resume;
            }
            vcpu.blocked.store(true, Ordering::Release);
            Next::Reschedule
        }
        ec::CP15_32 => cp15_access(vm, vcpu, ctx, t.hsr),
        ec::FP_ACCESS => {
            // Lazy VFP switch: save whoever owns the registers, load ours,
            // and retry the instruction.
            // SAFETY: this is pCPU `cpu`.
            let pc = unsafe { percpu(cpu) };
            vfp::trap_guest_fp(false);
            match pc.fp_owner {
                // SAFETY: the FP owner is a vCPU of this pCPU, not `r`.
                Some(o) if o != r => vfp::switch(Some(&mut unsafe { resolve(o).1.context() }.fp), &ctx.fp),
                Some(_) => {}
                None => vfp::switch(None, &ctx.fp),
            }
            pc.fp_owner = Some(r);
            Next::Resume
        }
        ec::SMC => {
            // Guests have no firmware to call: their PSCI conduit is HVC.
            skip_instruction(ctx, t.hsr);
            ctx.regs.r[0] = hypercall_abi::Error::NotSupported.code() as u32;
            Next::Resume
        }
        ec::DABT_LOWER => {
            let abort = DataAbort::decode(t.hsr & 0x01ff_ffff);
            let ipa = mmio::fault_ipa(t.hpfar, t.hdfar);
            match vm.mmio(vcpu.index, ipa, &abort, &mut LiveRegs(&mut ctx.regs)) {
                Ok(()) => {
                    skip_instruction(ctx, t.hsr);
                    Next::Resume
                }
                Err(e) => {
                    let dir = if abort.write { "write to" } else { "read from" };
                    let why = match abort.fault {
                        mmio::FaultKind::Translation(_) => e.describe(),
                        other => other.describe(),
                    };
                    stop_vm(vm, vcpu, ctx.regs.pc, t.hsr, format_args!("{dir} IPA {ipa} ({why})"));
                    Next::Reschedule
                }
            }
        }
        ec::PABT_LOWER => {
            let ipa = mmio::fault_ipa(t.hpfar, t.hifar);
            stop_vm(vm, vcpu, ctx.regs.pc, t.hsr, format_args!("instruction fetch from IPA {ipa} (no executable stage-2 mapping)"));
            Next::Reschedule
        }
        other => {
            stop_vm(vm, vcpu, ctx.regs.pc, t.hsr, format_args!("unexpected trap, exception class {other:#04x}"));
            Next::Reschedule
        }
    }
}

/// A trapped MRC/MCR to CP15 (HSR ISS, Arm ARM B3.13.6). Only ACTLR traps
/// by design (HCR.TAC): the guest reads it with the SMP bit set, as Linux
/// expects of a Cortex-A15, and its writes are ignored (it controls the
/// physical core's coherency). Anything else stops the VM.
fn cp15_access(vm: &'static Vm, vcpu: &Vcpu, ctx: &mut VcpuContext, hsr: u32) -> Next {
    let read = hsr & 1 != 0;
    let (crm, rt, crn, opc1, opc2) = ((hsr >> 1) & 0xf, ((hsr >> 5) & 0xf) as u8, (hsr >> 10) & 0xf, (hsr >> 14) & 7, (hsr >> 17) & 7);
    const ACTLR_SMP: u32 = 1 << 6;
    if (crn, opc1, crm, opc2) == (1, 0, 0, 1) && (!read || mmio::Regs::set(&mut LiveRegs(&mut ctx.regs), rt, ACTLR_SMP)) {
        skip_instruction(ctx, hsr);
        return Next::Resume;
    }
    stop_vm(
        vm,
        vcpu,
        ctx.regs.pc,
        hsr,
        format_args!("{} of CP15 c{crn}, {opc1}, c{crm}, {opc2}, which guests may not use", if read { "read" } else { "write" }),
    );
    Next::Reschedule
}

fn hvc(cpu: usize, vm: &'static Vm, vcpu: &'static Vcpu, ctx: &mut VcpuContext) -> Next {
    let mut r = [0u32; 8];
    r.copy_from_slice(&ctx.regs.r[..8]);
    match hypercall::dispatch(&mut CallerCtx { vm, vcpu, channels }, &r) {
        Action::Return { regs, count } => {
            let n = count as usize;
            ctx.regs.r[..n].copy_from_slice(&regs[..n]);
            Next::Resume
        }
        Action::Yield => {
            ctx.regs.r[0] = 0;
            Next::Reschedule
        }
        Action::Suspend => {
            // Standby power state: like WFI.
            ctx.regs.r[0] = 0;
            let idx = vcpu.index as usize;
            if vm.vgic.cpu(idx).is_some() && !vm.vgic.has_pending(idx, &Gich::new()) {
                vcpu.blocked.store(true, Ordering::Release);
            }
            Next::Reschedule
        }
        Action::CpuOff => {
            vcpu.power_off();
            // With no vCPU on (or being started), nothing can ever CPU_ON
            // one again: the VM is over, not merely idle.
            if vm.vcpus.iter().all(|v| v.power() == Power::Off) {
                info!("vm \"{}\" (id {}): its last running vCPU called PSCI CPU_OFF", vm.name(), vm.id);
                end_vm(vm, VmState::Exited, 0);
            }
            Next::Reschedule
        }
        Action::Shutdown(status) => {
            end_vm(vm, VmState::Exited, status);
            Next::Reschedule
        }
        Action::SystemOff => {
            end_vm(vm, VmState::Exited, 0);
            Next::Reschedule
        }
        Action::SystemReset => {
            reset_vm(cpu, vm, vcpu);
            Next::Reschedule
        }
    }
}

/// Stops a VM for something it did, with one line naming VM, vCPU, PC and why.
fn stop_vm(vm: &'static Vm, vcpu: &Vcpu, pc: u32, hsr: u32, why: fmt::Arguments<'_>) {
    if vm.is_running() {
        error!(
            "vm \"{}\" vCPU {} stopped: {why}; PC {pc:#010x}, HSR {hsr:#010x} (EC {:#04x})",
            vm.name(),
            vcpu.index,
            hsr >> 26
        );
    }
    end_vm(vm, VmState::Stopped, 0);
}

fn end_vm(vm: &'static Vm, how: VmState, status: u32) {
    if !vm.end(how, status) {
        return;
    }
    vm.console.finish();
    match how {
        VmState::Exited => info!("vm \"{}\" (id {}): exited, status {status}", vm.name(), vm.id),
        _ => info!("vm \"{}\" (id {}): stopped by the hypervisor", vm.name(), vm.id),
    }
    crate::vm::wake(vm.vcpus, !0);
    if RUNNING_VMS.fetch_sub(1, Ordering::AcqRel) == 1 {
        kick(0);
    }
}

/// PSCI SYSTEM_RESET: the VM restarts from its image, as after power-on,
/// with `/chosen/tessera,reset-count` one higher. Its other vCPUs are
/// stopped first; the caller's vCPU is the one running here.
fn reset_vm(_cpu: usize, vm: &'static Vm, caller: &Vcpu) {
    if !vm.begin_reset() {
        return;
    }
    vm.console.finish();
    let n = vm.resets.fetch_add(1, Ordering::AcqRel) + 1;
    info!("vm \"{}\" (id {}): reset #{n} (PSCI SYSTEM_RESET)", vm.name(), vm.id);
    crate::vm::wake(vm.vcpus, !0);
    for v in vm.vcpus.iter().filter(|v| !core::ptr::eq(*v, caller)) {
        // Each pCPU leaves the guest at once when kicked: the VM is not running.
        while v.running.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
    }
    let payload = PAYLOAD.get().expect("payload loaded at boot");
    load_image(&vm.ram, payload, vm.boot.payload_index, &vm.boot, n);
    vm.vgic.reset();
    for dev in vm.virtio {
        dev.reset();
    }
    for (i, v) in vm.vcpus.iter().enumerate() {
        v.reset((i == 0).then_some((vm.boot.entry, vm.boot.regs)));
    }
    vm.end_reset();
    crate::vm::wake(vm.vcpus, !0);
}

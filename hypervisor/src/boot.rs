//! Bring-up, from the reset vector to every pCPU in its loop (target only).
//!
//! The boot pCPU reads the host DTB, turns on the HYP MMU, checks the
//! payload, builds the [`System`] (every VM's RAM, image, stage-2 tables,
//! devices and vCPUs, each vCPU placed in a pCPU's run queue), then starts
//! the other pCPUs that have work with PSCI CPU_ON. Each pCPU takes its own
//! run queue from the system and runs `pcpu::run` until nothing is left.

extern crate alloc;

use crate::addr::{Ipa, PhysAddr, BLOCK_2M, PAGE_SIZE};
use crate::arch::{boot as hw, HW_PLATFORM, MAX_CPUS};
use crate::console::Hub;
use crate::devices::wiring::{leak, Backends};
use crate::lifecycle::{load_image, PayloadImages};
use crate::mem::GuestRam;
use crate::mm::frame::FrameAllocator;
use crate::mm::stage2::{Access, MemType, Stage2};
use crate::pcpu::{self, PerCpu, Slot, Stop};
use crate::platform::qemu_virt::{self as board, Board};
use crate::sched::{self, Wakeups};
use crate::system::System;
use crate::vcpu::Vcpu;
use crate::virtio::switch::Switch;
use crate::vm::{guest_map, BootImage, Channel, Vm, VmParts};
use crate::{console, error, info};
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use spin::Once;
use tessera_payload::{Device, DeviceDesc, Payload, RegionKind};

const HEAP_SIZE: usize = tessera_payload::HEAP_SIZE;

#[global_allocator]
static HEAP: linked_list_allocator::LockedHeap = linked_list_allocator::LockedHeap::empty();
#[unsafe(link_section = ".heap")]
static mut HEAP_SPACE: [u8; HEAP_SIZE] = [0; HEAP_SIZE];

/// The pCPUs that have started at least once.
static EVER_UP: AtomicU32 = AtomicU32::new(1);
/// The system, once the boot pCPU has built it.
static SYSTEM: Once<&'static System> = Once::new();
/// The virtual switches joining VMs' virtio-net devices, by index.
static SWITCHES: [Switch; tessera_payload::MAX_SWITCHES as usize] =
    [const { Switch::new() }; tessera_payload::MAX_SWITCHES as usize];

/// Called by the entry code on every pCPU with its index (and, on the boot
/// pCPU, the DTB address the loader passed, or 0).
#[unsafe(no_mangle)]
extern "C" fn tessera_cpu_entry(cpu: u32, dtb: u32) -> ! {
    let sys = if cpu == 0 {
        primary(dtb)
    } else {
        hw::enable_mmu();
        hw::init_cpu(cpu as usize);
        // The first start is news; later ones are dynamic scaling's.
        if EVER_UP.fetch_or(1 << cpu, Ordering::Relaxed) & (1 << cpu) == 0 {
            info!("pCPU {cpu} up");
        } else {
            crate::debug!("pCPU {cpu}: up again");
        }
        SYSTEM.get().copied().expect("secondary pCPUs start after the system is built")
    };
    let mut me = hw::this_cpu();
    let stop = match sys.take_percpu(cpu as usize) {
        Some(mut pc) => {
            let stop = pcpu::run(&mut me, sys, &mut pc);
            if stop == Stop::Idle {
                sys.give_back(pc);
            }
            stop
        }
        None => Stop::CpuOff,
    };
    match stop {
        Stop::SystemOff => {
            let (off, on) = (sys.power_offs.load(Ordering::Relaxed), sys.power_ons.load(Ordering::Relaxed));
            if off + on > 0 {
                info!("pCPU power changes: {off} off, {on} on");
            }
            crate::trace::dump(sys.counter_hz);
            console::flush_all();
            hw::power_off()
        }
        Stop::CpuOff | Stop::Idle => hw::cpu_off(),
    }
}

/// Ends the system with a clear line: for a refused payload or a board we
/// cannot run on (not a hypervisor bug, so no panic location).
fn fatal(args: fmt::Arguments<'_>) -> ! {
    console::log(console::Level::Error, args);
    error!("boot aborted");
    console::flush_all();
    hw::fail()
}

fn primary(dtb_hint: u32) -> &'static System {
    // SAFETY: the heap area is a static used for nothing else, handed over once.
    unsafe { HEAP.lock().init(&raw mut HEAP_SPACE as *mut u8, HEAP_SIZE) };
    // SAFETY: QEMU virt's PL011, until the DTB says otherwise: the MMU is
    // off, so it is device memory, and nothing else drives it yet.
    unsafe { hw::console_uart(0x0900_0000) };
    let hub: &'static Hub = leak(Hub::new(&hw::HW_UART, &HW_PLATFORM));
    console::install(hub);
    // QEMU passes no DTB pointer to an ELF image; it puts the DTB at RAM start.
    // SAFETY: both addresses are in the RAM the loader handed over.
    let dtb = if dtb_hint != 0 && unsafe { hw::has_fdt_magic(dtb_hint) } { dtb_hint } else { board::DTB_DEFAULT };
    // SAFETY: as above.
    if !unsafe { hw::has_fdt_magic(dtb) } {
        fatal(format_args!("cannot read the host device tree at {dtb:#010x}: no device tree magic"));
    }
    // SAFETY: QEMU (or the boot loader) put a DTB there: its magic is there.
    let b = match unsafe { board::read_board(dtb) } {
        Ok(b) => b,
        Err(e) => fatal(format_args!("cannot read the host device tree at {dtb:#010x}: {e}")),
    };
    // SAFETY: the DTB's PL011, which the identity map's first GiB maps as
    // device memory once the MMU is on.
    unsafe { hw::console_uart(b.uart) };
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
    hw::build_hyp_tables(b.ram_base, ram_end);
    hw::enable_mmu();
    board::probe_pvpanic(&b);
    // SAFETY: the DTB's GICv2 blocks, in the device GiB of the identity map.
    unsafe { hw::init_gic(b.gicd, b.gicc, b.gich) };
    hw::init_cpu(0);

    let payload: &'static Payload<'static> = leak(load_payload(&b));
    console::set_level(match payload.log {
        tessera_payload::LogLevel::Warn => console::Level::Warn,
        tessera_payload::LogLevel::Info => console::Level::Info,
        tessera_payload::LogLevel::Debug => console::Level::Debug,
    });
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
    let wakeups: &'static Wakeups = leak(Wakeups::new(&HW_PLATFORM));
    // VMs first, so where their RAM lies does not depend on the board's
    // devices; then the board's devices, whose DMA buffers come after.
    let vms = create_vms(payload, &b, &mut fa, wakeups, hub);
    *crate::physdev::FRAMES.lock() = Some(fa);
    let mut disk_names = [""; tessera_payload::MAX_DISKS];
    for (k, n) in disk_names.iter_mut().enumerate().take(payload.disk_count()) {
        *n = payload.disk(k).name;
    }
    crate::physdev::probe(&b.virtio[..b.virtio_count], &disk_names[..payload.disk_count()]);
    check_backends(payload, vms);
    let channels = link_channels(payload, vms);
    if let Some(fa) = crate::physdev::FRAMES.lock().as_ref() {
        info!("{} MiB of RAM left free", fa.free_bytes() >> 20);
    }
    info!("heap: {} KiB of {} KiB used", HEAP.lock().used() >> 10, HEAP_SIZE >> 10);
    let pcpus = b.cpus.min(payload.pcpus as usize);
    let queues = place_vcpus(vms, pcpus);
    let hz = hw::frequency() as u64;
    let slice = hz / 1000; // 1 ms
    let images: &'static PayloadImages = leak(PayloadImages(payload));
    let mut system = System::new(vms, channels, wakeups, hub, slice, hz, images, b.uart_irq, queues);
    // A pCPU no vCPU may ever run on (by `pcpus` affinity) stays off; the
    // others start, with vCPUs placed on them or ready to take some, and
    // dynamic scaling may power them off and on again.
    let wanted = vms.iter().flat_map(|vm| vm.vcpus).fold(0u32, |m, v| m | v.affinity);
    system.power = payload.power;
    system.power_on_mask = wanted & !1 & if pcpus >= 32 { !0 } else { (1u32 << pcpus) - 1 };
    let sys: &'static System = leak(system);
    SYSTEM.call_once(|| sys);
    hw::route_spi(b.uart_irq, 0);
    hw::console_rx_interrupts();
    if vms.len() > 1 {
        info!("console input goes to vm \"{}\"; press Ctrl-\\ then 1-{} to switch", vms[0].name(), vms.len().min(9));
    }

    for cpu in 1..pcpus {
        if wanted & (1 << cpu) == 0 {
            info!("pCPU {cpu}: no vCPU may run on it: left powered off");
            continue;
        }
        let r = hw::start_cpu(b.cpu_mpidrs[cpu], cpu as u32);
        if r != 0 {
            fatal(format_args!("firmware refused to start pCPU {cpu} (PSCI CPU_ON returned {r})"));
        }
    }
    sys
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

/// `size` bytes of RAM at `pa` from the frame allocator, as guest memory
/// at `ipa`.
fn frames_as_guest_ram(ipa: u32, size: u32, pa: PhysAddr) -> GuestRam {
    // SAFETY: `[pa, pa + size)` are frames the allocator just handed out,
    // so nothing else uses them, and RAM is identity-mapped in HYP mode;
    // they are never freed (VMs and channels live for the whole run).
    unsafe { GuestRam::new(Ipa(ipa as u64), size as u64, pa, pa.raw() as usize as *mut u8) }
}

#[inline(never)] // keeps primary's frame small: these structures are large
fn create_vms(
    p: &Payload<'static>,
    b: &Board,
    fa: &mut FrameAllocator<'_>,
    wakeups: &'static Wakeups,
    hub: &'static Hub,
) -> &'static [Vm] {
    let pcpus = (p.pcpus as usize).min(b.cpus);
    let online_mask = if pcpus >= 32 { !0 } else { (1u32 << pcpus) - 1 };
    let mut load = [0u32; MAX_CPUS];
    // Channel memory first: every member VM maps the same frames.
    let channels: Vec<PhysAddr> = (0..p.channel_count())
        .map(|k| {
            let c = p.channel(k);
            let pa = fa.alloc(c.size as u64, PAGE_SIZE).unwrap_or_else(|e| {
                fatal(format_args!(
                    "channel \"{}\": not enough RAM for {} KiB ({} KiB free)",
                    c.name,
                    c.size >> 10,
                    e.free >> 10
                ))
            });
            frames_as_guest_ram(c.ipa, c.size, pa).zero();
            // Members that start with their caches off read DRAM: the
            // zeroes must be there, not only in the hypervisor's caches.
            hw::clean_dcache_range(pa.raw() as usize, c.size as usize);
            pa
        })
        .collect();
    let backends = Backends {
        entropy: crate::physdev::entropy,
        disks: &crate::physdev::PHYS_DISKS,
        switches: &SWITCHES,
        wakeups,
        console: hub,
    };
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
        // Zeroed and mapped 2 MiB at a time as the VM first uses it: what
        // creation costs is the image, not the RAM's size.
        let states = Vec::leak((0..crate::mem::block_states(d.ram_size as u64)).map(|_| AtomicU8::new(0)).collect());
        // SAFETY: as in `frames_as_guest_ram`; the allocator aligned `pa`
        // to 2 MiB, and the payload parser checked `ram_base` is aligned.
        let ram = unsafe {
            GuestRam::new_lazy(Ipa(d.ram_base as u64), d.ram_size as u64, pa, pa.raw() as usize as *mut u8, states)
        };
        let boot =
            BootImage { payload_index: i, entry: d.entry, regs: d.boot_regs, reset_count_ipa: reset_count_ipa(p, i) };
        load_image(&ram, p, &boot, 0);
        ram.for_each_used(|host, len| hw::clean_dcache_range(host as usize, len));
        let mut tables = hw::FrameTables(fa);
        let mut lazy = None;
        let s2 = Stage2::new(&mut tables)
            .and_then(|mut s2| {
                lazy = Some(s2.prepare_blocks(&mut tables, ram.ipa(), pa, ram.size(), MemType::Normal, Access::RWX)?);
                // The guest's GIC CPU interface is the hardware's virtual one.
                s2.map(
                    &mut tables,
                    guest_map::GICC,
                    PhysAddr(b.gicv as u64),
                    guest_map::GICC_SIZE,
                    MemType::Device,
                    Access::RW,
                )?;
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
            if load[cpu] as usize > pcpu::MAX_QUEUE {
                fatal(format_args!("pCPU {cpu}: more than {} vCPUs placed on it", pcpu::MAX_QUEUE));
            }
            let start = (v == 0).then_some((d.entry, d.boot_regs));
            vcpus.push(Vcpu::with_affinity(v, cpu as u32, d.affinity & online_mask, start));
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
        let parts = VmParts {
            id,
            ram,
            vttbr: s2.vttbr(id as u8),
            vcpus,
            cntvoff: hw::counter(),
            boot,
            channels: d.channels,
            fault_abort: d.fault_abort,
            lazy,
        };
        out.push(Vm::new(parts, d.name, &devices, &backends));
    }
    let vms: &'static [Vm] = Vec::leak(out);
    for vm in vms {
        for v in vm.virtio {
            if let Err(e) = v.connect() {
                fatal(format_args!(
                    "vm \"{}\": the virtio-net in slot {} cannot join its switch: {}",
                    vm.name(),
                    v.slot,
                    e.describe()
                ));
            }
        }
    }
    vms
}

/// Each pCPU's run queue: a slot for every vCPU placed on it, in VM order.
fn place_vcpus(vms: &'static [Vm], pcpus: usize) -> Vec<PerCpu> {
    let mut queues: Vec<PerCpu> = (0..pcpus).map(PerCpu::new).collect();
    for vm in vms {
        for v in vm.vcpus {
            // Placement kept each queue within MAX_QUEUE (checked above).
            let _ = queues[v.pcpu() as usize].push(Slot::new(vm, v));
        }
    }
    queues
}

/// Each channel's doorbell and member VMs (their memory is mapped already).
fn link_channels(p: &Payload<'static>, vms: &'static [Vm]) -> &'static [Channel] {
    let mut out = Vec::with_capacity(p.channel_count());
    for k in 0..p.channel_count() {
        let c = p.channel(k);
        let members: Vec<&'static Vm> = vms.iter().filter(|v| v.channels & (1 << k) != 0).collect();
        for m in &members {
            info!(
                "channel {k} \"{}\": {} KiB at IPA {:#010x} in vm \"{}\", doorbell SPI {}",
                c.name,
                c.size >> 10,
                c.ipa,
                m.name(),
                c.spi
            );
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
                    fatal(format_args!(
                        "vm \"{}\" has a virtio-rng, but the board has no entropy source (virtio-rng)",
                        vm.name()
                    ));
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

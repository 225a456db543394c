//! Bring-up and the per-pCPU loop: the glue between the arch layer and the
//! portable core (VMs, dispatcher, scheduler policy).
//!
//! Boot: the boot pCPU reads the host DTB, turns on the HYP MMU, checks the
//! payload, builds every VM (RAM, image, stage-2, vCPUs placed on pCPUs),
//! then starts the other pCPUs that have work with PSCI CPU_ON. Each pCPU
//! then runs `cpu_loop`: pick a vCPU, enter it, handle its exits, repeat.

extern crate alloc;

use crate::addr::{Ipa, PhysAddr, BLOCK_2M, PAGE_SIZE};
use crate::arch::{self, gic, mmu, psci, timer, Exit};
use crate::hypercall::{self, Action};
use crate::mm::frame::FrameAllocator;
use crate::mm::stage2::{Access, MemType, Stage2, TableMem};
use crate::mmio::{self, DataAbort, MmioBus};
use crate::platform::qemu_virt::{self as board, Board};
use crate::sched::{self, RunQueue};
use crate::vm::{CallerCtx, GuestRam, Power, Vcpu, VcpuContext, Vm, VmState};
use crate::{console, error, info, warn};
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};
use spin::Once;
use tessera_payload::Payload;

const MAX_CPUS: usize = arch::MAX_CPUS;
const MAX_QUEUE: usize = 64;
const HEAP_SIZE: usize = 1 << 20;

#[global_allocator]
static HEAP: linked_list_allocator::LockedHeap = linked_list_allocator::LockedHeap::empty();
static mut HEAP_SPACE: [u8; HEAP_SIZE] = [0; HEAP_SIZE];

static VMS: Once<&'static [Vm]> = Once::new();
static RUNNING_VMS: AtomicU32 = AtomicU32::new(0);
static SLICE_TICKS: AtomicU32 = AtomicU32::new(0);

/// A vCPU by position: VM index, vCPU index.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct VcpuRef {
    vm: u16,
    vcpu: u16,
}

struct PerCpu {
    queue: RunQueue<VcpuRef, MAX_QUEUE>,
    /// The vCPU whose PL1 state is in this pCPU's registers.
    loaded: Option<VcpuRef>,
}

struct PerCpuCell(UnsafeCell<PerCpu>);
// SAFETY: slot n is only accessed by pCPU n, except that the boot pCPU fills
// every queue before it starts the others (PSCI CPU_ON orders those writes
// before the target runs).
unsafe impl Sync for PerCpuCell {}

static PERCPU: [PerCpuCell; MAX_CPUS] =
    [const { PerCpuCell(UnsafeCell::new(PerCpu { queue: RunQueue::new(), loaded: None })) }; MAX_CPUS];

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

fn runnable(r: VcpuRef) -> bool {
    let (vm, vcpu) = resolve(r);
    vm.is_running() && vcpu.power() != Power::Off
}

#[unsafe(no_mangle)]
extern "C" fn tessera_cpu_entry(cpu: u32, dtb: u32) -> ! {
    if cpu == 0 {
        boot_primary(dtb)
    } else {
        mmu::enable();
        mmu::init_hyp_regs();
        gic::init_cpu(cpu as usize);
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
    gic::init_cpu(0);
    SLICE_TICKS.store(timer::frequency() / 100, Ordering::Relaxed); // 10 ms

    let payload = load_payload(&b);
    if payload.pcpus as usize > b.cpus {
        fatal(format_args!("the image was packed for {} pCPUs but the board has {}", payload.pcpus, b.cpus));
    }
    let payload_end = board::PAYLOAD_BASE as u64 + tessera_payload::total_size(payload_bytes(&payload)).unwrap_or(0) as u64;
    let free_start = PhysAddr(payload_end).align_up(BLOCK_2M);
    if free_start.raw() >= ram_end {
        fatal(format_args!("no RAM left after the payload"));
    }
    let frames = ((ram_end - free_start.raw()) / PAGE_SIZE) as usize;
    let bitmap: &'static mut [u64] = Vec::leak(alloc::vec![0u64; frames.div_ceil(64)]);
    let mut fa = FrameAllocator::new(free_start, frames, bitmap);
    let vms = create_vms(&payload, &b, &mut fa);
    RUNNING_VMS.store(vms.len() as u32, Ordering::Release);
    VMS.call_once(|| vms);
    crate::vm::KICK.call_once(|| gic::kick);
    info!("{} MiB of RAM left free", fa.free_bytes() >> 20);

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

fn payload_bytes<'a>(p: &Payload<'a>) -> &'a [u8] {
    p.raw()
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

fn create_vms(p: &Payload<'static>, b: &Board, fa: &mut FrameAllocator<'_>) -> &'static [Vm] {
    let pcpus = (p.pcpus as usize).min(b.cpus);
    let online_mask = if pcpus >= 32 { !0 } else { (1u32 << pcpus) - 1 };
    let mut load = [0u32; MAX_CPUS];
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
        ram.zero();
        for r in d.regions() {
            // The parser checked that every region lies in this VM's RAM.
            let _ = ram.write(Ipa(r.ipa as u64), p.region_bytes(r));
        }
        mmu::clean_dcache_range(pa.raw() as usize, d.ram_size as usize);
        let mut tables = Tables(fa);
        let s2 = Stage2::new(&mut tables)
            .and_then(|mut s2| {
                s2.map(&mut tables, ram.ipa, pa, ram.size, MemType::Normal, Access::RWX)?;
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
        out.push(Vm::new(id, d.name, ram, s2.vttbr(id as u8), vcpus));
    }
    Vec::leak(out)
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
        // SAFETY: this is pCPU `cpu`.
        let pc = unsafe { percpu(cpu) };
        match pc.queue.pick(runnable) {
            Some(r) => run(cpu, r),
            None => {
                if cpu != 0 && pc.queue.iter().all(|r| !resolve(r).0.is_running()) {
                    info!("pCPU {cpu}: its VMs have ended; powering it off");
                    psci::cpu_off();
                }
                arch::wait_for_interrupt();
                drain_interrupts();
            }
        }
    }
}

/// Runs vCPU `r` on this pCPU until the scheduler needs to choose again.
fn run(cpu: usize, r: VcpuRef) {
    let (vm, vcpu) = resolve(r);
    // SAFETY: `r` is in this pCPU's queue, so this pCPU owns the vCPU.
    unsafe { vcpu.take_on_request() };
    // SAFETY: as above; the only reference to this context.
    let ctx = unsafe { vcpu.context() };
    // SAFETY: this is pCPU `cpu`.
    let pc = unsafe { percpu(cpu) };
    if pc.loaded != Some(r) {
        if let Some(old) = pc.loaded {
            // SAFETY: `old` was loaded here, so this pCPU owns it; it is not `r`.
            arch::save_el1(&mut unsafe { resolve(old).1.context() }.el1);
        }
        arch::restore_el1(&ctx.el1);
        mmu::load_vcpu_space(vm.vttbr, 0x8000_0000 | vcpu.index);
        pc.loaded = Some(r);
    }
    let sliced = pc.queue.count(runnable) > 1;
    if sliced {
        timer::arm_slice(SLICE_TICKS.load(Ordering::Relaxed));
    }
    loop {
        let next = match arch::enter_guest(&mut ctx.regs) {
            Exit::Trap => handle_trap(vm, vcpu, ctx),
            Exit::Irq => {
                drain_interrupts();
                Next::Reschedule
            }
            Exit::Fiq => {
                stop_vm(vm, vcpu, ctx.regs.pc, 0, format_args!("unexpected FIQ"));
                Next::Reschedule
            }
        };
        if next == Next::Reschedule || !vm.is_running() || vcpu.power() == Power::Off {
            break;
        }
    }
    if sliced {
        timer::disarm_slice();
    }
}

/// Acknowledges every pending physical interrupt. Kicks and slice ends
/// need nothing more: the caller goes back to the scheduler.
fn drain_interrupts() {
    loop {
        let iar = gic::ack();
        let id = iar & 0x3ff;
        if id == gic::SPURIOUS {
            return;
        }
        match id {
            gic::PPI_HYP_TIMER => timer::disarm_slice(),
            gic::SGI_KICK => {}
            other => warn!("unexpected physical interrupt {other}"),
        }
        gic::eoi(iar);
    }
}

/// HSR exception classes (Arm ARM B3.13.6).
mod ec {
    pub const WFI_WFE: u32 = 0x01;
    pub const FP_ACCESS: u32 = 0x07;
    pub const HVC: u32 = 0x12;
    pub const SMC: u32 = 0x13;
    pub const PABT_LOWER: u32 = 0x20;
    pub const DABT_LOWER: u32 = 0x24;
}

/// Steps over the trapped instruction (HSR.IL: 32 or 16 bits).
fn skip_instruction(ctx: &mut VcpuContext, hsr: u32) {
    ctx.regs.pc = ctx.regs.pc.wrapping_add(if hsr & (1 << 25) != 0 { 4 } else { 2 });
}

fn handle_trap(vm: &'static Vm, vcpu: &'static Vcpu, ctx: &mut VcpuContext) -> Next {
    let t = arch::trap_info();
    match t.hsr >> 26 {
        ec::HVC => hvc(vm, vcpu, ctx),
        ec::WFI_WFE => {
            skip_instruction(ctx, t.hsr);
            Next::Reschedule
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
            match MmioBus::EMPTY.access(vcpu.index, ipa, &abort, &mut ctx.regs) {
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
        ec::FP_ACCESS => {
            stop_vm(vm, vcpu, ctx.regs.pc, t.hsr, format_args!("used VFP/Advanced SIMD, which Tessera does not switch between vCPUs yet"));
            Next::Reschedule
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

fn hvc(vm: &'static Vm, vcpu: &'static Vcpu, ctx: &mut VcpuContext) -> Next {
    let mut r = [0u32; 8];
    r.copy_from_slice(&ctx.regs.r[..8]);
    match hypercall::dispatch(&mut CallerCtx { vm, vcpu }, &r) {
        Action::Return { regs, count } => {
            let n = count as usize;
            ctx.regs.r[..n].copy_from_slice(&regs[..n]);
            Next::Resume
        }
        Action::Yield | Action::Suspend => {
            ctx.regs.r[0] = 0;
            Next::Reschedule
        }
        Action::CpuOff => {
            vcpu.power_off();
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
            stop_vm(vm, vcpu, ctx.regs.pc, 0, format_args!("asked for PSCI SYSTEM_RESET, which Tessera does not support yet"));
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
    vm.console_flush();
    match how {
        VmState::Exited => info!("vm \"{}\" (id {}): exited, status {status}", vm.name(), vm.id),
        _ => info!("vm \"{}\" (id {}): stopped by the hypervisor", vm.name(), vm.id),
    }
    let me = arch::mpidr() & 0xff;
    let mut kicked = 0u32;
    for v in vm.vcpus {
        if v.pcpu != me && kicked & (1 << v.pcpu) == 0 {
            kicked |= 1 << v.pcpu;
            gic::kick(v.pcpu);
        }
    }
    if RUNNING_VMS.fetch_sub(1, Ordering::AcqRel) == 1 && me != 0 {
        gic::kick(0);
    }
}

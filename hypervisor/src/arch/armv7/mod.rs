//! Armv7-A with the Virtualization Extensions, in HYP mode: the target's
//! [`Cpu`] ([`Armv7`]), its [`Platform`] ([`HwPlatform`]) and the bring-up
//! steps ([`boot`]).

mod el1;
mod entry;
mod gic;
mod mmu;
mod psci;
mod pvpanic;
mod sysreg;
mod timer;
mod uart;
mod vfp;

use super::{irq, AbortTo, Cpu, Exit, TrapInfo, VcpuIdentity, MAX_CPUS};
use crate::context::{El1State, FpState, GichState, GuestRegs};
use crate::platform::Platform;
use core::sync::atomic::{AtomicU32, Ordering};
use gic::Gich;

const _: () = assert!(entry::MAX_CPUS == MAX_CPUS);

/// This pCPU, as its loop owns it. Only [`boot::this_cpu`] makes one, once
/// per pCPU, after that pCPU's bring-up; it is neither `Send` nor `Clone`.
pub struct Armv7 {
    id: usize,
    lrs: Gich,
    /// Guest VFP use traps (HCPTR): the registers may not be touched then.
    fp_trapped: bool,
    /// The VM whose vCPU was loaded last (its VMID), and how to keep the
    /// next VM from its branch predictor state.
    last_vmid: Option<u8>,
    bp_flush: mmu::BranchPredictorFlush,
    /// The core has ThumbEE, whose registers are switched with the vCPU.
    thumbee: bool,
    _not_send: core::marker::PhantomData<*const ()>,
}

impl Cpu for Armv7 {
    type Lrs = Gich;

    fn id(&self) -> usize {
        self.id
    }

    #[inline(always)]
    fn now(&self) -> u64 {
        timer::counter()
    }

    #[inline(always)]
    fn enter_guest(&mut self, regs: &mut GuestRegs) -> Exit {
        entry::enter_guest(regs)
    }

    fn trap_info(&self) -> TrapInfo {
        TrapInfo {
            hsr: sysreg::HSR::read(),
            hdfar: sysreg::HDFAR::read(),
            hifar: sysreg::HIFAR::read(),
            hpfar: sysreg::HPFAR::read(),
        }
    }

    fn read_banked(&self, mode: u32, n: u8) -> Option<u32> {
        el1::read_banked(mode, n)
    }

    fn write_banked(&mut self, mode: u32, n: u8, v: u32) -> bool {
        el1::write_banked(mode, n, v)
    }

    fn load_vcpu(&mut self, el1: &El1State, gich: &GichState, id: &VcpuIdentity) {
        let vmid = id.vttbr.vmid();
        if self.last_vmid != Some(vmid) {
            self.bp_flush.run();
            self.last_vmid = Some(vmid);
        }
        el1::restore(el1);
        if self.thumbee {
            el1::restore_thumbee(el1);
        }
        gic::restore_gich(&self.lrs, gich);
        mmu::load_vcpu_space(id.vttbr, id.vmpidr);
        set_cntvoff(id.cntvoff);
    }

    fn save_vcpu(&mut self, el1: &mut El1State, gich: &mut GichState) {
        el1::save(el1);
        if self.thumbee {
            el1::save_thumbee(el1);
        }
        gic::save_gich(&self.lrs, gich);
    }

    #[inline(always)]
    fn lrs(&self) -> &Gich {
        &self.lrs
    }

    #[inline(always)]
    fn lrs_mut(&mut self) -> &mut Gich {
        &mut self.lrs
    }

    fn set_private_irq(&mut self, id: u32, enabled: bool) {
        if enabled {
            gic::enable_private(id)
        } else {
            gic::disable_private(id)
        }
    }

    fn ack_irq(&mut self) -> Option<u32> {
        let iar = gic::ack();
        (iar & 0x3ff != irq::SPURIOUS).then_some(iar)
    }

    fn end_irq(&mut self, iar: u32) {
        gic::eoi(iar)
    }

    fn arm_timer(&mut self, at: u64) {
        timer::arm_at(at)
    }

    fn disarm_timer(&mut self) {
        timer::disarm_slice()
    }

    fn wait_for_interrupt(&mut self) {
        aarch32_cpu::asm::dsb();
        aarch32_cpu::asm::wfi();
    }

    fn trap_fp(&mut self, trap: bool) {
        vfp::trap_guest_fp(trap);
        self.fp_trapped = trap;
    }

    fn switch_fp(&mut self, out: Option<&mut FpState>, from: &FpState) {
        if self.fp_trapped {
            self.trap_fp(false);
        }
        // SAFETY: guest FP access is untrapped (just checked), so the VFP
        // registers are accessible from HYP mode.
        unsafe { vfp::switch(out, from) }
    }

    fn console_read(&mut self) -> Option<u8> {
        uart::read_byte()
    }

    fn inject_abort(&mut self, regs: &mut GuestRegs, abort: AbortTo) {
        el1::inject_abort(regs, abort)
    }

    fn clean_invalidate_set_way(&mut self, set_way: u32) {
        mmu::clean_invalidate_set_way(set_way)
    }

    fn clean_to_poc(&mut self, ram: &crate::mem::GuestRam) {
        // Only what is in use: a lazy RAM's other blocks are unmapped.
        ram.for_each_used(|p, len| mmu::clean_dcache_range(p as usize, len));
    }
}

/// Sets the virtual counter offset (CNTVOFF) of the VM about to run.
fn set_cntvoff(off: u64) {
    // SAFETY: CNTVOFF only shifts what PL1/PL0 read as the virtual count.
    unsafe { sysreg::CNTVOFF::write(off) };
}

fn this_cpu_index() -> usize {
    // QEMU virt numbers cores by Aff0 within one cluster.
    (sysreg::MPIDR::read() & 0xff) as usize
}

/// The services any pCPU may use: the counter, and kicking another pCPU.
pub struct HwPlatform;
pub static HW_PLATFORM: HwPlatform = HwPlatform;

impl Platform for HwPlatform {
    fn now(&self) -> u64 {
        timer::counter()
    }
    fn frequency(&self) -> u64 {
        timer::frequency() as u64
    }
    fn this_cpu(&self) -> u32 {
        this_cpu_index() as u32
    }
    fn interrupt(&self, pcpu: u32) {
        gic::kick(pcpu)
    }
    fn start_cpu(&self, pcpu: u32) -> bool {
        let mpidr = CPU_MPIDRS.get(pcpu as usize).map(|m| m.load(Ordering::Relaxed));
        mpidr.is_some_and(|m| m != u32::MAX && psci::cpu_on(m, pcpu) == 0)
    }
}

/// See [`crate::arch::zero_bytes`]: 64 bytes per loop step with two
/// 8-register `stm`s, the edges with `memset`.
///
/// # Safety
/// As for [`crate::arch::zero_bytes`].
pub unsafe fn zero_bytes(p: *mut u8, len: usize) {
    let head = p.align_offset(64).min(len);
    let chunks = (len - head) / 64;
    // SAFETY: the caller gives us `[p, p + len)`; the three parts below
    // cover exactly it, the middle one 64-byte aligned; the asm only
    // stores to `[p + head, p + head + chunks * 64)` and clobbers what it
    // names.
    unsafe {
        core::ptr::write_bytes(p, 0, head);
        if chunks > 0 {
            core::arch::asm!(
                "mov r2, #0", "mov r3, #0", "mov r4, #0", "mov r5, #0",
                "mov r8, #0", "mov r9, #0", "mov r10, #0", "mov r12, #0",
                "2:",
                "stmia {a}!, {{r2-r5, r8-r10, r12}}",
                "stmia {a}!, {{r2-r5, r8-r10, r12}}",
                "subs {n}, {n}, #1",
                "bne 2b",
                a = inout(reg) p.add(head) => _,
                n = inout(reg) chunks => _,
                out("r2") _, out("r3") _, out("r4") _, out("r5") _,
                out("r8") _, out("r9") _, out("r10") _, out("r12") _,
                options(nostack),
            );
        }
        let done = head + chunks * 64;
        core::ptr::write_bytes(p.add(done), 0, len - done);
    }
}

/// See [`crate::arch::set_stage2_entry`].
///
/// # Safety
/// As there.
pub unsafe fn set_stage2_entry(table: crate::addr::PhysAddr, index: usize, desc: u64) {
    let e = (table.raw() as usize as *mut u64).wrapping_add(index & 511);
    // SAFETY: a table frame, identity-mapped, in bounds (caller). The two
    // words are ordered so the walker never sees the valid bit (low word)
    // beside half of another descriptor (a 64-bit store is not single-copy
    // atomic here): a new entry's high word first, a removal's low word.
    unsafe {
        let w = e as *mut u32;
        let (first, second) = if desc & 1 != 0 { (1, 0) } else { (0, 1) };
        core::ptr::write_volatile(w.add(first), (desc >> (32 * first)) as u32);
        aarch32_cpu::asm::dsb();
        core::ptr::write_volatile(w.add(second), (desc >> (32 * second)) as u32);
    }
    aarch32_cpu::asm::dsb();
    aarch32_cpu::asm::isb();
}

/// See [`crate::arch::flush_stage2_tlbs`].
pub fn flush_stage2_tlbs() {
    aarch32_cpu::asm::dsb();
    // SAFETY: invalidating TLB entries costs refills, nothing else.
    unsafe { sysreg::TLBIALLNSNHIS::write(0) };
    aarch32_cpu::asm::dsb();
    aarch32_cpu::asm::isb();
}

/// Each pCPU's MPIDR (from the host DTB), for powering it on again.
static CPU_MPIDRS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];

/// Bring-up: what `crate::boot` does once, before any guest runs. Every
/// `unsafe fn` here states what the caller must know about the board.
pub mod boot {
    use super::*;
    use crate::mm::frame::FrameAllocator;
    use crate::mm::stage2::TableMem;

    pub use super::pvpanic::{fail, probe as probe_pvpanic};

    /// This pCPU's handle for its run loop. Call once per pCPU, after
    /// [`init_cpu`] on it.
    pub fn this_cpu() -> Armv7 {
        Armv7 {
            id: this_cpu_index(),
            lrs: Gich::new(),
            fp_trapped: true,
            last_vmid: None,
            bp_flush: mmu::BranchPredictorFlush::for_this_core(),
            thumbee: el1::has_thumbee(),
            _not_send: core::marker::PhantomData,
        }
    }

    pub fn this_cpu_id() -> usize {
        this_cpu_index()
    }

    /// The hypervisor console's UART is the PL011 at `base` from now on.
    ///
    /// # Safety
    /// `base` must be a PL011's register block, mapped as device memory
    /// (the identity map's first GiB, or the MMU off), used by nothing else.
    pub unsafe fn console_uart(base: u32) {
        // SAFETY: forwarded.
        unsafe { uart::init(base) };
    }

    /// The console UART, for the console hub.
    pub struct HwUart;
    pub static HW_UART: HwUart = HwUart;

    impl crate::console::Uart for HwUart {
        fn try_put(&self, b: u8) -> bool {
            uart::try_put(b)
        }
    }

    /// Interrupts on console input.
    pub fn console_rx_interrupts() {
        uart::enable_rx_interrupt()
    }

    /// The HYP translation tables for RAM `[ram_base, ram_end)`. Boot pCPU
    /// only, before [`enable_mmu`].
    pub fn build_hyp_tables(ram_base: u64, ram_end: u64) {
        mmu::build_tables(ram_base, ram_end)
    }

    /// HYP MMU and caches on, and the HYP configuration for guests. Every
    /// pCPU, first thing.
    pub fn enable_mmu() {
        mmu::enable();
        mmu::init_hyp_regs();
    }

    /// The physical GIC, from the boot pCPU.
    ///
    /// # Safety
    /// The addresses must be the board's GICv2 distributor, CPU interface
    /// and hypervisor interface (GICH), mapped as device memory.
    pub unsafe fn init_gic(gicd: u32, gicc: u32, gich: u32) {
        // SAFETY: forwarded.
        unsafe {
            gic::init_distributor(gicd, gicc);
            gic::init_gich(gich);
        }
    }

    /// This pCPU's GIC interface, with the interrupts the hypervisor takes:
    /// kicks, the HYP timer, the vGIC maintenance interrupt, the virtual timer.
    pub fn init_cpu(cpu: usize) {
        gic::init_cpu(cpu);
        gic::enable_private(irq::PPI_MAINTENANCE);
        gic::enable_private(irq::PPI_VTIMER);
    }

    /// Routes shared interrupt `id` to pCPU `cpu` and enables it.
    pub fn route_spi(id: u32, cpu: u32) {
        gic::enable_spi(id, cpu)
    }

    pub fn counter() -> u64 {
        timer::counter()
    }

    pub fn frequency() -> u32 {
        timer::frequency()
    }

    /// Starts pCPU `mpidr` at the secondary entry with `cpu` as its index
    /// (and remembers its MPIDR, to start it again after it powered off).
    pub fn start_cpu(mpidr: u32, cpu: u32) -> i32 {
        if let Some(m) = CPU_MPIDRS.get(cpu as usize) {
            m.store(mpidr, Ordering::Relaxed);
        }
        psci::cpu_on(mpidr, cpu)
    }

    pub fn cpu_off() -> ! {
        psci::cpu_off()
    }

    pub fn power_off() -> ! {
        psci::system_off()
    }

    /// Is there a flattened device tree at `addr`?
    ///
    /// # Safety
    /// `addr` must be readable RAM (the loader's).
    pub unsafe fn has_fdt_magic(addr: u32) -> bool {
        // SAFETY: forwarded; an aligned word read of RAM.
        unsafe { core::ptr::read_volatile(addr as usize as *const u32) == 0xedfe_0dd0 }
    }

    /// Cleans `[pa, pa + len)` to the point of coherency and invalidates
    /// the instruction caches.
    pub fn clean_dcache_range(pa: usize, len: usize) {
        mmu::clean_dcache_range(pa, len)
    }

    /// Stage-2 tables in frames of the allocator (identity-mapped RAM).
    pub struct FrameTables<'f, 'a>(pub &'f mut FrameAllocator<'a>);

    impl TableMem for FrameTables<'_, '_> {
        fn alloc_table(&mut self) -> Option<crate::addr::PhysAddr> {
            let pa = self.0.alloc(crate::addr::PAGE_SIZE, crate::addr::PAGE_SIZE).ok()?;
            // SAFETY: a fresh frame of RAM from the allocator, identity-mapped,
            // owned by us from now on.
            unsafe { core::ptr::write_bytes(pa.raw() as usize as *mut u8, 0, crate::addr::PAGE_SIZE as usize) };
            Some(pa)
        }
        fn read(&self, t: crate::addr::PhysAddr, i: usize) -> u64 {
            // SAFETY: `t` is a table frame from `alloc_table` (stage2 only
            // passes its own tables); the index is masked to the table.
            unsafe { core::ptr::read_volatile((t.raw() as usize as *const u64).add(i & 511)) }
        }
        fn write(&mut self, t: crate::addr::PhysAddr, i: usize, v: u64) {
            // SAFETY: as in `read`.
            unsafe { core::ptr::write_volatile((t.raw() as usize as *mut u64).add(i & 511), v) }
        }
    }
}

//! A minimal runtime for the test guests: entry, stack, .bss, panic, and
//! the boot arguments from the guest DTB (r2 at entry, Linux convention).
//! Guests run in SVC mode with the MMU off, so addresses are IPAs.
#![no_std]

pub use tessera_guest::{print, println};

/// Stack per vCPU (SVC below, IRQ above it); `.stack` in link.x holds 8.
pub const VCPU_STACK: u32 = 16 * 1024;
pub const MAX_VCPUS: usize = 8;

core::arch::global_asm!(
    r#"
    .section .text.start, "ax"
    .global _start
_start:
    ldr     r4, =__bss_start
    ldr     r5, =__bss_end
    mov     r6, #0
1:  cmp     r4, r5
    strlo   r6, [r4], #4
    blo     1b
    mov     r4, r2                  @ the DTB
    mov     r0, #0
    bl      set_stacks
    mov     r0, r4
    bl      guest_entry
2:  b       2b

    @ PSCI CPU_ON entry: r0 = context id = vCPU index.
    .global _secondary_start
_secondary_start:
    mov     r4, r0
    bl      set_stacks
    mov     r0, r4
    bl      guest_secondary_entry
3:  b       3b

    @ r0 = vCPU index: SVC stack at top - index * {stack}, IRQ stack 4 KiB below its top.
set_stacks:
    ldr     r1, =__stack_top
    ldr     r2, ={stack}
    mul     r3, r0, r2
    sub     r1, r1, r3
    cps     #0x12                   @ IRQ mode
    mov     sp, r1
    cps     #0x17                   @ Abort mode: 1 KiB below the IRQ stack's 3 KiB
    sub     sp, r1, #3072
    cps     #0x13                   @ SVC mode
    sub     sp, r1, #4096
    bx      lr

    .balign 32
    .global _vectors
_vectors:
    b       .                       @ reset
    b       .                       @ undefined
    b       .                       @ SVC
    b       .                       @ prefetch abort
    b       dabt_entry              @ data abort
    b       .                       @ unused
    b       irq_entry
    b       .                       @ FIQ

    @ A data abort (an access Tessera answered with one, `on_fault =
    @ "abort"`): counted in ABORTS, then the faulting instruction is
    @ skipped (ARM state: LR_abt is it + 8).
dabt_entry:
    push    {{r0, r1}}
    ldr     r0, =ABORTS
    ldr     r1, [r0]
    add     r1, r1, #1
    str     r1, [r0]
    pop     {{r0, r1}}
    sub     lr, lr, #4
    movs    pc, lr

irq_entry:
    sub     lr, lr, #4
    push    {{r0-r3, r12, lr}}
    bl      guest_irq
    pop     {{r0-r3, r12, lr}}
    movs    pc, lr
    "#,
    stack = const VCPU_STACK,
);

unsafe extern "C" {
    static _vectors: u8;
    fn _secondary_start();
}

/// Data aborts taken (see `dabt_entry`).
#[unsafe(no_mangle)]
static mut ABORTS: u32 = 0;

/// How many data aborts this guest has taken.
pub fn aborts() -> u32 {
    // SAFETY: a word read; only the abort handler writes it.
    unsafe { core::ptr::read_volatile(&raw const ABORTS) }
}

/// Points VBAR at this runtime's vectors (data aborts are then survivable).
pub fn install_vectors() {
    // SAFETY: VBAR points at our vector table.
    unsafe { core::arch::asm!("mcr p15, 0, {}, c12, c0, 0", "isb", in(reg) &raw const _vectors as usize) };
}

/// The entry point to give PSCI CPU_ON for a secondary vCPU.
pub fn secondary_entry() -> u32 {
    _secondary_start as *const () as usize as u32
}

/// Starts vCPUs 1..n with PSCI CPU_ON, each running the secondary main
/// (set it first) with its index; on a refusal, says which and why and
/// returns false.
pub fn start_secondaries(n: u32) -> bool {
    for v in 1..n {
        // SAFETY: `_secondary_start` sets up its own stacks and runs the
        // secondary main.
        let r = unsafe { tessera_guest::psci::cpu_on(v, secondary_entry(), v) };
        if r != tessera_guest::abi::psci::SUCCESS {
            println!("CPU_ON of vCPU {v} FAILED: {r}");
            return false;
        }
    }
    true
}

static mut SECONDARY: Option<fn(u32) -> u32> = None;
static mut IRQ: Option<fn(u32)> = None;

/// Sets what secondaries run (`main(index)`; its return powers the vCPU off).
pub fn set_secondary_main(f: fn(u32) -> u32) {
    // SAFETY: set by vCPU 0 before it starts any secondary.
    unsafe { SECONDARY = Some(f) };
}

#[unsafe(no_mangle)]
extern "C" fn guest_secondary_entry(index: u32) -> ! {
    // SAFETY: written before this vCPU was started.
    if let Some(f) = unsafe { SECONDARY } {
        f(index);
    }
    tessera_guest::psci::cpu_off();
    // CPU_OFF does not return; if it ever did, sleep rather than spin.
    loop {
        wfi();
    }
}

/// Interrupts, through the GIC at the QEMU virt addresses the guest DTB names.
pub mod gic {
    use tessera_payload::guest_map as map;
    const GICD: usize = map::GICD as usize;
    const GICC: usize = map::GICC as usize;

    fn w(a: usize, v: u32) {
        super::mmio_write(a, v)
    }
    fn r(a: usize) -> u32 {
        super::mmio_read(a)
    }

    /// Distributor on (vCPU 0, once).
    pub fn init_distributor() {
        w(GICD, 1);
    }

    /// This vCPU's interface on, interrupt `ids` (SGIs/PPIs) enabled,
    /// vectors installed and IRQs unmasked; `handler(id)` runs for each.
    pub fn init_cpu(ids: &[u32], handler: fn(u32)) {
        // SAFETY: set before IRQs are unmasked on any vCPU (same handler everywhere).
        unsafe { super::IRQ = Some(handler) };
        for &id in ids {
            let (idx, bit) = (id as usize / 32, id % 32);
            // Priority 0xa0, below the mask.
            let reg = GICD + 0x400 + (id as usize & !3);
            let shift = 8 * (id & 3);
            w(reg, (r(reg) & !(0xff << shift)) | (0xa0 << shift));
            if id >= 32 {
                // An SPI: to vCPU 0, edge-triggered (doorbells are events).
                let t = GICD + 0x800 + (id as usize & !3);
                w(t, (r(t) & !(0xff << shift)) | (1 << shift));
                let c = GICD + 0xc00 + 4 * (id as usize / 16);
                w(c, r(c) | 2 << (2 * (id % 16)));
            }
            w(GICD + 0x100 + 4 * idx, 1 << bit);
        }
        w(GICC + 0x4, 0xf0); // PMR
        w(GICC, 1); // CTLR
                    // SAFETY: VBAR points at our vector table; unmasking IRQs is what we want.
        unsafe {
            core::arch::asm!("mcr p15, 0, {}, c12, c0, 0", "isb", "cpsie i", in(reg) &raw const super::_vectors as usize);
        }
    }

    /// Sends SGI `id` to the vCPUs in `targets` (bit n = vCPU n).
    pub fn send_sgi(id: u32, targets: u32) {
        w(GICD + 0xf00, (targets & 0xff) << 16 | (id & 0xf));
    }

    pub(super) fn ack() -> u32 {
        r(GICC + 0xc)
    }
    pub(super) fn eoi(iar: u32) {
        w(GICC + 0x10, iar);
    }
}

#[unsafe(no_mangle)]
extern "C" fn guest_irq() {
    loop {
        let iar = gic::ack();
        let id = iar & 0x3ff;
        if id >= 1020 {
            break;
        }
        // SAFETY: set before IRQs were unmasked.
        if let Some(h) = unsafe { IRQ } {
            h(id);
        }
        gic::eoi(iar);
    }
}

/// The virtual timer of the calling vCPU: fire in `ticks` counter ticks.
pub fn vtimer_arm(ticks: u32) {
    // SAFETY: CNTV_TVAL/CNTV_CTL of this vCPU (ENABLE, unmasked).
    unsafe {
        core::arch::asm!("mcr p15, 0, {}, c14, c3, 0", "mov {t}, #1", "mcr p15, 0, {t}, c14, c3, 1", "isb", in(reg) ticks, t = out(reg) _)
    };
}

/// The virtual timer of the calling vCPU: fire when CNTVCT reaches `cval`.
pub fn vtimer_arm_at(cval: u64) {
    // SAFETY: CNTV_CVAL/CNTV_CTL of this vCPU (ENABLE, unmasked).
    unsafe {
        core::arch::asm!("mcrr p15, 3, {}, {}, c14", "mov {t}, #1", "mcr p15, 0, {t}, c14, c3, 1", "isb",
            in(reg) cval as u32, in(reg) (cval >> 32) as u32, t = out(reg) _)
    };
}

pub fn vtimer_stop() {
    // SAFETY: disables this vCPU's virtual timer.
    unsafe { core::arch::asm!("mov {t}, #0", "mcr p15, 0, {t}, c14, c3, 1", "isb", t = out(reg) _) };
}

pub fn wfi() {
    // SAFETY: waits for an interrupt.
    unsafe { core::arch::asm!("dsb", "wfi") };
}

/// Sleeps in WFI until `done()` holds, without losing the interrupt that
/// makes it hold. Checking with interrupts enabled and then executing WFI
/// races: the interrupt may be taken between the two, and WFI then waits
/// for the next one, which may never come. So each check and its WFI run
/// with IRQs masked (a pending interrupt still ends WFI), and the interrupt
/// is taken when they are unmasked again.
pub fn wait_until(mut done: impl FnMut() -> bool) {
    loop {
        // SAFETY: masks IRQs; nothing here depends on taking one.
        unsafe { core::arch::asm!("cpsid i") };
        let ok = done();
        if !ok {
            // SAFETY: waits for an interrupt with IRQs masked (it still
            // wakes), then unmasks them so the handler runs.
            unsafe { core::arch::asm!("dsb", "wfi") };
        }
        // SAFETY: unmasks IRQs again, as they were on entry.
        unsafe { core::arch::asm!("cpsie i") };
        if ok {
            return;
        }
    }
}

/// One device-register write as a single `str` without writeback, like
/// Linux's `writel`: the hypervisor emulates trapped device accesses from
/// the syndrome, which describes only such simple loads and stores (a
/// compiler may otherwise emit post-indexed forms for volatile accesses).
pub fn mmio_write(addr: usize, v: u32) {
    // SAFETY: a device register of this VM at an address the guest DTB names.
    unsafe { core::arch::asm!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) v, options(nostack)) };
}

/// One device-register read, a single `ldr` (see `mmio_write`).
pub fn mmio_read(addr: usize) -> u32 {
    let v;
    // SAFETY: as in `mmio_write`.
    unsafe { core::arch::asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack)) };
    v
}

/// Writes to the VM's emulated PL011 (polled, as early boot code does).
pub fn uart_write(s: &str) {
    for b in s.bytes() {
        mmio_write(tessera_payload::guest_map::UART as usize, b as u32);
    }
}

static mut DTB: u32 = 0;

unsafe extern "Rust" {
    /// Each guest binary defines its `main`.
    fn guest_main() -> u32;
}

#[unsafe(no_mangle)]
extern "C" fn guest_entry(dtb: u32) -> ! {
    // SAFETY: single vCPU, before anything reads it.
    unsafe { DTB = dtb };
    // SAFETY: provided by the binary via `guest_main!`.
    let status = unsafe { guest_main() };
    tessera_guest::shutdown(status)
}

/// Declares the guest's main function: `guest_main!(fn_name)`.
#[macro_export]
macro_rules! guest_main {
    ($f:path) => {
        #[unsafe(no_mangle)]
        fn guest_main() -> u32 {
            $f()
        }
    };
}

/// The kernel command line from `/chosen/bootargs`.
pub fn bootargs() -> &'static str {
    // SAFETY: written once at entry.
    let dtb = unsafe { DTB };
    if dtb == 0 {
        return "";
    }
    // SAFETY: the hypervisor passed a DTB it generated at this address in our RAM.
    match unsafe { fdt::Fdt::from_ptr(dtb as usize as *const u8) } {
        Ok(f) => f.chosen().bootargs().unwrap_or(""),
        Err(_) => "",
    }
}

/// How many times this VM was reset (`/chosen/tessera,reset-count`, set by
/// the hypervisor), if the DTB says.
pub fn reset_count() -> Option<u32> {
    // SAFETY: written once at entry.
    let dtb = unsafe { DTB };
    if dtb == 0 {
        return None;
    }
    // SAFETY: the hypervisor passed a DTB it generated at this address in our RAM.
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as usize as *const u8) }.ok()?;
    let v = fdt.find_node("/chosen")?.property("tessera,reset-count")?.value;
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

/// A shared-memory channel from the guest DTB (`tessera,channel`).
#[derive(Clone, Copy, Debug)]
pub struct ChannelInfo {
    pub id: u32,
    pub base: usize,
    pub size: usize,
    /// The doorbell's interrupt ID (32 + SPI).
    pub intid: u32,
}

/// The `n`th `tessera,channel` node of the DTB.
pub fn channel(n: usize) -> Option<ChannelInfo> {
    // SAFETY: written once at entry.
    let dtb = unsafe { DTB };
    // SAFETY: the hypervisor passed a DTB it generated at this address in our RAM.
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as usize as *const u8) }.ok()?;
    let node =
        fdt.all_nodes().filter(|n| n.compatible().is_some_and(|c| c.all().any(|c| c == "tessera,channel"))).nth(n)?;
    let reg = node.reg()?.next()?;
    let cell = |name: &str, i: usize| -> Option<u32> {
        let v = node.property(name)?.value;
        Some(u32::from_be_bytes(v.get(4 * i..4 * i + 4)?.try_into().ok()?))
    };
    Some(ChannelInfo {
        id: cell("tessera,channel-id", 0)?,
        base: reg.starting_address as usize,
        size: reg.size?,
        intid: 32 + cell("interrupts", 1)?,
    })
}

/// `key=value` from the boot arguments.
pub fn arg(key: &str) -> Option<&'static str> {
    bootargs().split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

pub fn arg_u32(key: &str, default: u32) -> u32 {
    arg(key)
        .and_then(|v| match v.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        })
        .unwrap_or(default)
}

/// The virtual counter (CNTVCT) and its frequency.
pub fn counter() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading CNTVCT has no side effects; PL1 may read it.
    unsafe { core::arch::asm!("isb", "mrrc p15, 1, {}, {}, c14", out(reg) lo, out(reg) hi, options(nomem, nostack)) };
    (hi as u64) << 32 | lo as u64
}

pub fn counter_frequency() -> u32 {
    let f: u32;
    // SAFETY: reading CNTFRQ has no side effects.
    unsafe { core::arch::asm!("mrc p15, 0, {}, c14, c0, 0", out(reg) f, options(nomem, nostack)) };
    f
}

/// The end of this image in RAM (the first free byte after the stack).
pub fn image_end() -> u32 {
    unsafe extern "C" {
        static __image_end: u8;
    }
    &raw const __image_end as usize as u32
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("guest panic: {info}");
    tessera_guest::shutdown(101)
}

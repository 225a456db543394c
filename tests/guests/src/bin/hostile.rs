//! A hostile guest. `case=<name>` in the boot arguments picks one attack:
//!
//! - `unmapped`: reads an IPA nothing is mapped at (0x2000_0000).
//! - `bad-args`: hypercalls with hostile arguments; each must come back
//!   with its documented error, and the VM exits 0.
//! - `side-channels`: the PMU, debug, ThumbEE and IMPLEMENTATION DEFINED
//!   registers and set/way maintenance: each reads as absent or is harmless.
//! - `probe`: reads every 64 KiB of the IPA space (with `on_fault =
//!   "abort"`, so each unmapped page is an abort it survives) and writes a
//!   marker to each that is not its own; see `probe`.
//! - `console-flood`: console output as fast as it goes, with escape
//!   sequences meant for the operator's terminal (see `console_flood`).
//! - `cpu-off-last`: powers off its only vCPU with PSCI CPU_OFF; the VM
//!   must end (nothing could start it again) instead of hanging the system.
//! - `virtio-bad-queue`: sets up its virtio-rng (virtio-mmio slot 0) like a
//!   driver, then offers a buffer outside its RAM: the device must report
//!   NEEDS_RESET (and a configuration-change interrupt) and recover on reset.
//! - `net-bad-queue`: for `secs=` seconds, rounds of: set up its virtio-net
//!   (slot 0) like a driver, send frames the switch must refuse (a source
//!   MAC not its own: `victim=`'s; too long; too short) and one junk
//!   broadcast from its own MAC, all returned with used length 0; then a
//!   TX chain outside its RAM: NEEDS_RESET and a configuration-change
//!   interrupt; reset. The other VMs on the switch must carry on.
//! - `gic-garbage`: writes pseudo-random values to every register of the
//!   emulated GIC distributor and UART (SGI storms included), then checks
//!   it still runs and exits 0.
//!
//! The faulting cases must never get past their access: the hypervisor
//! stops the VM. If one does, the guest says so and exits 3.
#![no_std]
#![no_main]

use guest_rt::println;
use tessera_guest::abi::{psci, Error, Function};
use tessera_payload::guest_map as map;

guest_rt::guest_main!(main);

fn main() -> u32 {
    let case = guest_rt::arg("case").unwrap_or("none");
    println!("hostile case {case}");
    match case {
        "unmapped" => {
            // SAFETY: deliberately hostile; the hypervisor must stop us here.
            let v = unsafe { core::ptr::read_volatile(0x2000_0000 as *const u32) };
            println!("SURVIVED read of unmapped IPA: {v:#x}");
            3
        }
        "bad-args" => bad_args(),
        "gic-garbage" => gic_garbage(),
        "virtio-bad-queue" => virtio_bad_queue(),
        "net-bad-queue" => net_bad_queue(),
        "console-flood" => console_flood(),
        "probe" => probe(),
        "side-channels" => side_channels(),
        "cpu-off-last" => {
            let r = tessera_guest::psci::cpu_off();
            println!("SURVIVED CPU_OFF of the last vCPU: {r}");
            3
        }
        other => {
            println!("unknown case {other}");
            4
        }
    }
}

/// The marker `probe` writes everywhere it can outside its own RAM.
const MARKER: u32 = 0x7e55_e4a0;

/// Reads (or writes `MARKER` to) the word at `addr`; false if it aborted.
fn touch(addr: u32, write: bool) -> bool {
    let before = guest_rt::aborts();
    // SAFETY: deliberately anywhere; Tessera answers what is not this VM's
    // with an abort (on_fault = "abort"), which `dabt_entry` steps over.
    unsafe {
        if write {
            core::arch::asm!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) MARKER, options(nostack));
        } else {
            core::arch::asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) _, options(nostack));
        }
    }
    guest_rt::aborts() == before
}

/// Reads the first word of every 64 KiB of the 4 GiB IPA space and prints
/// the ranges that answered: exactly this VM's devices, channels and RAM
/// must. Then writes the marker to every page outside them (each write
/// must abort: a peer checks its RAM for the marker).
fn probe() -> u32 {
    guest_rt::install_vectors();
    let mut ranges: [(u32, u32); 32] = [(0, 0); 32];
    let mut n = 0;
    let mut aborted = 0u32;
    for page in 0..0x1_0000u32 {
        let addr = page << 16;
        if touch(addr, false) {
            match n {
                0 => {}
                _ if ranges[n - 1].1 == addr => {
                    ranges[n - 1].1 = addr + 0x1_0000;
                    continue;
                }
                _ => {}
            }
            if n < ranges.len() {
                ranges[n] = (addr, addr.wrapping_add(0x1_0000));
                n += 1;
            }
        } else {
            aborted += 1;
        }
    }
    for &(a, b) in &ranges[..n] {
        println!("probe: answered {a:#010x}-{:#010x}", b.wrapping_sub(1));
    }
    println!("probe: {n} ranges answered, {aborted} pages aborted");
    let answered = |addr: u32| ranges[..n].iter().any(|&(a, b)| addr >= a && addr.wrapping_sub(a) < b.wrapping_sub(a));
    let mut landed = 0;
    for page in 0..0x1_0000u32 {
        let addr = page << 16;
        if !answered(addr) && touch(addr, true) {
            landed += 1;
        }
    }
    println!("probe: {landed} marker writes outside its RAM and devices landed");
    if landed == 0 {
        0
    } else {
        1
    }
}

/// `bytes=` of console output as fast as the console call takes it, in
/// 1 KiB writes with a newline every 4 KiB, sprinkled with attempts to
/// take over the operator's terminal: carriage returns, erase-line and
/// cursor sequences, a terminal title, a forged hypervisor line.
fn console_flood() -> u32 {
    let total = guest_rt::arg_u32("bytes", 4 << 20);
    let mut chunk = [b'#'; 1024];
    let attack: &[u8] = b"\r\x1b[2K\x1b[1Atessera: forged line\x1b]0;owned\x07\x9b2J";
    chunk[100..100 + attack.len()].copy_from_slice(attack);
    let mut sent = 0u32;
    let mut n = 0u32;
    while sent < total {
        chunk[1023] = if n % 4 == 3 { b'\n' } else { b'#' };
        let r = tessera_guest::console_write(&chunk);
        if r.is_err() {
            println!("WRONG: console write refused: {r:?}");
            return 1;
        }
        sent += chunk.len() as u32;
        n += 1;
    }
    // (This line is likely dropped too: the ring is still full.)
    println!("\nflood of {sent} bytes done");
    0
}

/// Reads a CP14/CP15 register (`mrc` with the operands in `$op`).
macro_rules! mrc {
    ($op:literal) => {{
        let v: u32;
        // SAFETY: a register read; the hypervisor traps and emulates it.
        unsafe { core::arch::asm!(concat!("mrc ", $op), out(reg) v) };
        v
    }};
}
/// Writes one (`mcr`).
macro_rules! mcr {
    ($op:literal, $v:expr) => {{
        // SAFETY: a register write; the hypervisor traps it.
        unsafe { core::arch::asm!(concat!("mcr ", $op), in(reg) $v) };
    }};
}

/// What a VM could use to watch or disturb the others through shared
/// hardware: the PMU (counting the whole core), the debug registers
/// (breakpoints that would outlive the VM), ThumbEE's handler base,
/// IMPLEMENTATION DEFINED registers, set/way cache maintenance. Each must
/// read as absent or be harmless, and the VM runs on.
fn side_channels() -> u32 {
    let mut failed = 0;
    let mut expect = |what: &str, got: u32, want: u32| {
        if got == want {
            println!("{what}: {got:#x} as expected");
        } else {
            println!("WRONG: {what}: {got:#x}, expected {want:#x}");
            failed += 1;
        }
    };
    // PMCR: enable, reset counters; PMCNTENSET: the cycle counter; then
    // spin and read PMCCNTR, which must not count (the PMU is absent).
    mcr!("p15, 0, {}, c9, c12, 0", 0x7u32);
    mcr!("p15, 0, {}, c9, c12, 1", 0x8000_0000u32);
    for k in 0..10_000u32 {
        core::hint::black_box(k);
    }
    expect("PMCR (no counters)", mrc!("p15, 0, {}, c9, c12, 0"), 0);
    expect("PMCCNTR (not counting)", mrc!("p15, 0, {}, c9, c13, 0"), 0);
    expect("PMUSERENR", mrc!("p15, 0, {}, c9, c14, 0"), 0);
    // Debug: DBGDIDR, and a breakpoint value register written then read.
    expect("DBGDIDR (no debug architecture)", mrc!("p14, 0, {}, c0, c0, 0"), 0);
    mcr!("p14, 0, {}, c0, c0, 4", 0x4000_0000u32); // DBGBVR0
    expect("DBGBVR0 after a write", mrc!("p14, 0, {}, c0, c0, 4"), 0);
    // ThumbEE's handler base (TEEHBR): each VM has its own. Two of these
    // VMs share a pCPU: each finds 0, writes its own value, lets the other
    // run, and reads its own value back.
    let id = tessera_guest::vm_info().map_or(0, |i| i.vm_id);
    expect("TEEHBR at start", mrc!("p14, 6, {}, c1, c0, 0"), 0);
    mcr!("p14, 6, {}, c1, c0, 0", 0x1000 + id);
    for _ in 0..50 {
        let _ = tessera_guest::yield_vcpu();
    }
    expect("TEEHBR after the other VM ran", mrc!("p14, 6, {}, c1, c0, 0"), 0x1000 + id);
    // (IMPLEMENTATION DEFINED registers are not checked here: QEMU 7.2 does
    // not trap with HCR.TIDCP, and HSTR.T15 is not set on it; see coproc.rs.)
    // Set/way: invalidate "every" line of set 0 (done as clean+invalidate).
    for way in 0..4u32 {
        mcr!("p15, 0, {}, c7, c6, 2", way << 30);
    }
    println!("set/way invalidate done; still running");
    println!("side channels: {failed} wrong");
    if failed == 0 {
        0
    } else {
        1
    }
}

fn raw(fid: u32, a1: u32, a2: u32, a3: u32) -> i32 {
    // SAFETY: deliberately hostile arguments; the hypervisor must refuse them.
    unsafe { tessera_guest::hvc::hvc_call(fid, a1, a2, a3)[0] as i32 }
}

fn smc(fid: u32) -> i32 {
    let r0: u32;
    // SAFETY: a guest trying to reach the board firmware directly.
    unsafe {
        core::arch::asm!(".arch_extension sec", "smc #0", inout("r0") fid => r0, out("r1") _, out("r2") _, out("r3") _)
    };
    r0 as i32
}

fn bad_args() -> u32 {
    let mut failed = 0;
    let mut expect = |what: &str, got: i32, want: i32| {
        if got == want {
            println!("refused as documented: {what} -> {got}");
        } else {
            println!("WRONG: {what} -> {got}, expected {want}");
            failed += 1;
        }
    };
    let cw = Function::ConsoleWrite.id();
    let ram_end = 0x4000_0000u32 + guest_rt::arg_u32("ram_mib", 2) * 1024 * 1024;
    expect("console buffer outside RAM", raw(cw, 0x4800_0000, 16, 0), Error::InvalidAddress.code());
    expect("console buffer straddling the end of RAM", raw(cw, ram_end - 8, 16, 0), Error::InvalidAddress.code());
    expect("console buffer wrapping around 4 GiB", raw(cw, 0xffff_fff0, 0x20, 0), Error::InvalidAddress.code());
    expect("console length 1 MiB", raw(cw, 0x4000_0000, 1 << 20, 0), Error::InvalidParameter.code());
    expect("console length 0xffffffff", raw(cw, 0x4000_0000, u32::MAX, 0), Error::InvalidParameter.code());
    expect("unknown Tessera function", raw(0x8600_0fff, 0, 0, 0), Error::NotSupported.code());
    expect("unknown SMC64 function", raw(0xc600_0000, 0, 0, 0), Error::NotSupported.code());
    expect(
        "PSCI CPU_ON of vCPU 5 (VM has 1)",
        raw(Function::PsciCpuOn.id(), 5, 0x4000_0000, 0),
        psci::INVALID_PARAMETERS,
    );
    expect("PSCI CPU_ON at an entry outside RAM", raw(Function::PsciCpuOn.id(), 0, 0x1000, 0), psci::INVALID_ADDRESS);
    expect("PSCI AFFINITY_INFO of vCPU 7", raw(Function::PsciAffinityInfo.id(), 7, 0, 0), psci::INVALID_PARAMETERS);
    expect("firmware SYSTEM_OFF through SMC", smc(Function::PsciSystemOff.id()), Error::NotSupported.code());
    println!("still running after {} hostile calls", 11);
    if failed == 0 {
        0
    } else {
        1
    }
}

fn gic_garbage() -> u32 {
    let mut x: u32 = 0x2545_f491;
    let mut writes = 0u32;
    for round in 0..4 {
        for (base, size) in [(map::GICD, map::GICD_SIZE), (map::UART, map::UART_SIZE)] {
            let (base, size) = (base as usize, size as usize);
            for off in (0..size).step_by(4) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                guest_rt::mmio_write(base + off, x);
                let _ = guest_rt::mmio_read((base + (x as usize % size)) & !3);
                writes += 1;
            }
        }
        println!("garbage round {round} done");
    }
    println!("still running after {writes} garbage writes to the GIC distributor and UART");
    0
}

fn virtio_bad_queue() -> u32 {
    const V: usize = map::VIRTIO0 as usize;
    let r = |off: usize| guest_rt::mmio_read(V + off);
    let w = |off: usize, v: u32| guest_rt::mmio_write(V + off, v);
    let (magic, version, id) = (r(0x000), r(0x004), r(0x008));
    println!("virtio slot 0: magic {magic:#x} version {version} device {id}");
    if (magic, version, id) != (0x7472_6976, 2, 4) {
        println!("WRONG: no virtio-rng in slot 0");
        return 1;
    }
    // Status: ACKNOWLEDGE, DRIVER; features: VERSION_1 only; FEATURES_OK.
    w(0x070, 1);
    w(0x070, 1 | 2);
    w(0x024, 1);
    w(0x020, 1); // bit 32: VIRTIO_F_VERSION_1
    w(0x024, 0);
    w(0x020, 0);
    w(0x070, 1 | 2 | 8);
    // One queue of 8 at 0x4018_0000: descriptors, then driver and device rings.
    let q: usize = 0x4018_0000;
    let put16 = |a: usize, v: u16| {
        // SAFETY: our own RAM, past the image.
        unsafe { core::ptr::write_volatile(a as *mut u16, v) }
    };
    let put32 = |a: usize, v: u32| {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(a as *mut u32, v) }
    };
    // Descriptor 0: 64 device-writable bytes at 0x3000_0000, outside our RAM.
    put32(q, 0x3000_0000);
    put32(q + 4, 0);
    put32(q + 8, 64);
    put16(q + 12, 2); // VIRTQ_DESC_F_WRITE
    put16(q + 14, 0);
    put16(q + 0x100, 0); // avail.flags
    put16(q + 0x104, 0); // avail.ring[0] = descriptor 0
    put16(q + 0x102, 1); // avail.idx
    w(0x030, 0);
    w(0x038, 8);
    w(0x080, q as u32);
    w(0x084, 0);
    w(0x090, (q + 0x100) as u32);
    w(0x094, 0);
    w(0x0a0, (q + 0x200) as u32);
    w(0x0a4, 0);
    w(0x044, 1); // QueueReady
    w(0x070, 1 | 2 | 8 | 4); // DRIVER_OK
    w(0x050, 0); // QueueNotify
    let (status, isr) = (r(0x070), r(0x060));
    println!("after the bad buffer: status {status:#x}, interrupt status {isr:#x}");
    if status & 0x40 == 0 || isr & 2 == 0 {
        println!("WRONG: the device did not report NEEDS_RESET");
        return 1;
    }
    println!("virtio device reported NEEDS_RESET");
    w(0x064, isr); // InterruptACK
    w(0x070, 0); // reset
    println!("after reset status {:#x}", r(0x070));
    0
}

/// Volatile accesses to the net case's queue and frames (its TX queue at
/// 0x4018_0000, frames at 0x4019_0000).
fn put16(a: usize, v: u16) {
    // SAFETY: our own RAM, past the image (the net case's queue area).
    unsafe { core::ptr::write_volatile(a as *mut u16, v) }
}

fn put32(a: usize, v: u32) {
    // SAFETY: as in `put16`.
    unsafe { core::ptr::write_volatile(a as *mut u32, v) }
}

fn get16(a: usize) -> u16 {
    // SAFETY: as in `put16`; the device writes the used ring.
    unsafe { core::ptr::read_volatile(a as *const u16) }
}

fn net_bad_queue() -> u32 {
    const V: usize = map::VIRTIO0 as usize;
    const Q: usize = 0x4018_0000;
    const BUF: usize = 0x4019_0000;
    let r = |off: usize| guest_rt::mmio_read(V + off);
    let w = |off: usize, v: u32| guest_rt::mmio_write(V + off, v);
    if (r(0x000), r(0x004), r(0x008)) != (0x7472_6976, 2, 1) {
        println!("WRONG: no virtio-net in slot 0");
        return 1;
    }
    let (lo, hi) = (r(0x100), r(0x104));
    let own = [lo as u8, (lo >> 8) as u8, (lo >> 16) as u8, (lo >> 24) as u8, hi as u8, (hi >> 8) as u8];
    let victim = parse_mac(guest_rt::arg("victim").unwrap_or("02:54:53:00:01:00"));
    println!("virtio-net in slot 0, MAC {:02x?}; spoofing {:02x?}", own, victim);
    // Frames (each after a zeroed 12-byte virtio-net header), as
    // (offset in BUF, readable length): spoofed source, too long, too
    // short, and a junk broadcast from our own MAC (delivered, harmless).
    let frame = |at: usize, dst: [u8; 6], src: [u8; 6], len: usize| {
        for i in 0..12 + len {
            // SAFETY: as in `put16`.
            unsafe { core::ptr::write_volatile((BUF + at + i) as *mut u8, 0) };
        }
        for (i, b) in dst.iter().chain(src.iter()).chain([0x88u8, 0xb5].iter()).enumerate().take(len) {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile((BUF + at + 12 + i) as *mut u8, *b) };
        }
        (at, 12 + len as u32)
    };
    let bad = [
        frame(0x0000, [0xff; 6], victim, 60),
        frame(0x1000, [0xff; 6], own, 2000),
        frame(0x2000, [0xff; 6], own, 10),
        frame(0x3000, [0xff; 6], own, 60),
    ];
    let secs = guest_rt::arg_u32("secs", 10) as u64;
    let start = guest_rt::counter();
    let end = start + secs * guest_rt::counter_frequency() as u64;
    let mut rounds = 0u32;
    while guest_rt::counter() < end {
        // Reset; ACKNOWLEDGE, DRIVER; VERSION_1 only; FEATURES_OK.
        w(0x070, 0);
        w(0x070, 1);
        w(0x070, 1 | 2);
        w(0x024, 1);
        w(0x020, 1);
        w(0x024, 0);
        w(0x020, 0);
        w(0x070, 1 | 2 | 8);
        if r(0x070) & 8 == 0 {
            println!("WRONG: FEATURES_OK refused");
            return 1;
        }
        // The transmit queue (1), 8 entries: no RX buffers are ever given.
        put16(Q + 0x100, 0);
        put16(Q + 0x102, 0);
        put16(Q + 0x202, 0);
        w(0x030, 1);
        w(0x038, 8);
        w(0x080, Q as u32);
        w(0x084, 0);
        w(0x090, (Q + 0x100) as u32);
        w(0x094, 0);
        w(0x0a0, (Q + 0x200) as u32);
        w(0x0a4, 0);
        w(0x044, 1);
        w(0x070, 1 | 2 | 8 | 4);
        for (i, &(at, len)) in bad.iter().enumerate() {
            let d = Q + 16 * i;
            put32(d, (BUF + at) as u32);
            put32(d + 4, 0);
            put32(d + 8, len);
            put16(d + 12, 0);
            put16(d + 14, 0);
            put16(Q + 0x104 + 2 * i, i as u16);
        }
        put16(Q + 0x102, bad.len() as u16);
        w(0x050, 1);
        let (status, used) = (r(0x070), get16(Q + 0x202));
        if status & 0x40 != 0 || used != bad.len() as u16 {
            println!("WRONG: refused frames: status {status:#x}, {used} of {} chains returned", bad.len());
            return 1;
        }
        // A chain outside our RAM.
        let d = Q + 16 * 4;
        put32(d, 0x3000_0000);
        put32(d + 4, 0);
        put32(d + 8, 100);
        put16(d + 12, 0);
        put16(Q + 0x104 + 2 * 4, 4);
        put16(Q + 0x102, 5);
        w(0x050, 1);
        let (status, isr) = (r(0x070), r(0x060));
        if status & 0x40 == 0 || isr & 2 == 0 {
            println!("WRONG: a TX chain outside RAM: status {status:#x}, interrupt status {isr:#x}");
            return 1;
        }
        w(0x064, isr);
        rounds += 1;
        if rounds == 1 {
            println!("round 1: refused frames returned, then NEEDS_RESET for a TX chain outside RAM");
        }
        // Let the other VMs run for about 50 ms.
        let next = guest_rt::counter() + guest_rt::counter_frequency() as u64 / 20;
        while guest_rt::counter() < next {
            let _ = tessera_guest::yield_vcpu();
        }
    }
    w(0x070, 0);
    println!("every refused frame returned, every bad chain NEEDS_RESET: {rounds} rounds in {secs} s");
    0
}

fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(s.split(':')) {
        *b = u8::from_str_radix(p, 16).unwrap_or(0);
    }
    m
}

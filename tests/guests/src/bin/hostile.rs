//! A hostile guest. `case=<name>` in the boot arguments picks one attack:
//!
//! - `unmapped`: reads an IPA nothing is mapped at (0x2000_0000).
//! - `hypervisor`: writes to 0x4020_0000, where the hypervisor's image sits
//!   in physical memory (this VM has 2 MiB of RAM, so that is past its end).
//! - `other-vm`: writes to `target=` (the physical address of the other VM's
//!   RAM, which the scenario reads from the hypervisor's boot log).
//! - `bad-args`: hypercalls with hostile arguments; each must come back
//!   with its documented error, and the VM exits 0.
//! - `cpu-off-last`: powers off its only vCPU with PSCI CPU_OFF; the VM
//!   must end (nothing could start it again) instead of hanging the system.
//! - `virtio-bad-queue`: sets up its virtio-rng (virtio-mmio slot 0) like a
//!   driver, then offers a buffer outside its RAM: the device must report
//!   NEEDS_RESET (and a configuration-change interrupt) and recover on reset.
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
        "hypervisor" => {
            // SAFETY: deliberately hostile.
            unsafe { core::ptr::write_volatile(0x4020_0000 as *mut u32, 0xdead_beef) };
            println!("SURVIVED write to the hypervisor's address");
            3
        }
        "other-vm" => {
            let target = guest_rt::arg_u32("target", 0x4120_0000);
            println!("writing to {target:#010x}");
            // SAFETY: deliberately hostile.
            unsafe { core::ptr::write_volatile(target as *mut u32, 0xdead_beef) };
            println!("SURVIVED write to another VM's memory");
            3
        }
        "bad-args" => bad_args(),
        "gic-garbage" => gic_garbage(),
        "virtio-bad-queue" => virtio_bad_queue(),
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

fn raw(fid: u32, a1: u32, a2: u32, a3: u32) -> i32 {
    // SAFETY: deliberately hostile arguments; the hypervisor must refuse them.
    unsafe { tessera_guest::hvc::hvc_call(fid, a1, a2, a3)[0] as i32 }
}

fn smc(fid: u32) -> i32 {
    let r0: u32;
    // SAFETY: a guest trying to reach the board firmware directly.
    unsafe { core::arch::asm!(".arch_extension sec", "smc #0", inout("r0") fid => r0, out("r1") _, out("r2") _, out("r3") _) };
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
    expect("PSCI CPU_ON of vCPU 5 (VM has 1)", raw(Function::PsciCpuOn.id(), 5, 0x4000_0000, 0), psci::INVALID_PARAMETERS);
    expect("PSCI CPU_ON at an entry outside RAM", raw(Function::PsciCpuOn.id(), 0, 0x1000, 0), psci::INVALID_ADDRESS);
    expect("PSCI AFFINITY_INFO of vCPU 7", raw(Function::PsciAffinityInfo.id(), 7, 0, 0), psci::INVALID_PARAMETERS);
    expect("firmware SYSTEM_OFF through SMC", smc(Function::PsciSystemOff.id()), Error::NotSupported.code());
    println!("still running after {} hostile calls", 11);
    if failed == 0 { 0 } else { 1 }
}

fn gic_garbage() -> u32 {
    let mut x: u32 = 0x2545_f491;
    let mut writes = 0u32;
    for round in 0..4 {
        for (base, size) in [(0x0800_0000usize, 0x1000usize), (0x0900_0000, 0x1000)] {
            for off in (0..size).step_by(4) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                guest_rt::mmio_write(base + off, x);
                let _ = guest_rt::mmio_read(base + (x as usize % size) & !3);
                writes += 1;
            }
        }
        println!("garbage round {round} done");
    }
    println!("still running after {writes} garbage writes to the GIC distributor and UART");
    0
}

fn virtio_bad_queue() -> u32 {
    const V: usize = 0x0a00_0000;
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

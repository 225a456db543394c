//! A busy SMP guest that measures its share of the CPU: vCPU 0 starts every
//! other vCPU with PSCI CPU_ON, then each vCPU counts loop iterations until
//! its VM's virtual counter reaches `secs=` seconds (from VM creation).
//! No vCPU ever blocks or yields while it counts, so how far each got is
//! how much CPU the scheduler gave it. vCPU 0 prints every count on one
//! line, `shares: [n0, n1, ...]`, for the host to compare across VMs, and
//! exits 0 once every secondary has counted and powered off.
//!
//! With `sleep=1`, each vCPU instead sleeps in WFI until its virtual timer
//! fires at `secs=`: idle vCPUs with a timer pending, the load beside which
//! `cargo xtask bench switch` measures the scheduler.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering::*};
use guest_rt::{gic, println, MAX_VCPUS};
use tessera_guest::abi::psci;
use tessera_guest::psci as p;

guest_rt::guest_main!(main);

static COUNTS: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static DONE: AtomicU32 = AtomicU32::new(0);
static END: AtomicU32 = AtomicU32::new(0);
static SLEEP: AtomicU32 = AtomicU32::new(0);
static WOKEN: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
const PPI_VTIMER: u32 = 27;

fn irq(id: u32) {
    if id == PPI_VTIMER {
        guest_rt::vtimer_stop();
        WOKEN[tessera_guest::vm_info().map_or(0, |i| i.vcpu_index as usize)].store(1, Release);
    }
}

/// Sleeps until the virtual counter reaches END, then counts 1.
fn sleep(index: usize) {
    gic::init_cpu(&[PPI_VTIMER], irq);
    guest_rt::vtimer_arm_at(u64::from(END.load(Acquire)) << 10);
    guest_rt::wait_until(|| WOKEN[index].load(Acquire) != 0);
    COUNTS[index].store(1, Release);
}

/// Counts until the virtual counter reaches END (in units of 2^10 ticks,
/// so a 32-bit word holds minutes at any counter frequency).
fn count(index: usize) {
    let end = u64::from(END.load(Acquire)) << 10;
    let mut n = 0u32;
    while guest_rt::counter() < end {
        for _ in 0..64 {
            n = core::hint::black_box(n) + 1;
        }
    }
    COUNTS[index].store(n / 64, Release);
}

fn secondary(index: u32) -> u32 {
    if SLEEP.load(Acquire) != 0 {
        sleep(index as usize);
    } else {
        count(index as usize);
    }
    DONE.fetch_add(1, AcqRel);
    0
}

fn main() -> u32 {
    let info = tessera_guest::vm_info().expect("VM_INFO");
    let n = (info.vcpu_count as usize).min(MAX_VCPUS);
    let secs = u64::from(guest_rt::arg_u32("secs", 20));
    let end = secs * u64::from(guest_rt::counter_frequency());
    END.store((end >> 10) as u32, Release);
    let sleeping = guest_rt::arg_u32("sleep", 0) != 0;
    SLEEP.store(sleeping as u32, Release);
    if sleeping {
        gic::init_distributor();
    }
    guest_rt::set_secondary_main(secondary);
    for v in 1..n as u32 {
        // SAFETY: `_secondary_start` sets up its own stacks and runs `secondary`.
        let r = unsafe { p::cpu_on(v, guest_rt::secondary_entry(), v) };
        if r != psci::SUCCESS {
            println!("CPU_ON of vCPU {v} FAILED: {r}");
            return 1;
        }
    }
    let what = if sleeping { "sleeping" } else { "counting" };
    println!("vm {}: {n} vCPUs {what} for {secs} s", info.vm_id);
    if sleeping {
        sleep(0);
    } else {
        count(0);
    }
    while DONE.load(Acquire) < n as u32 - 1 {
        let _ = tessera_guest::yield_vcpu();
    }
    for v in 1..n as u32 {
        while p::affinity_info(v, 0) != psci::AFFINITY_OFF {
            let _ = tessera_guest::yield_vcpu();
        }
    }
    let counts: [u32; MAX_VCPUS] = core::array::from_fn(|i| COUNTS[i].load(Acquire));
    println!("shares: {:?}", &counts[..n]);
    if counts[..n].contains(&0) {
        println!("WRONG: a vCPU never counted");
        return 1;
    }
    0
}

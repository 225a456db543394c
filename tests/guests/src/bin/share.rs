//! A busy SMP guest that measures its share of the CPU: vCPU 0 starts every
//! other vCPU with PSCI CPU_ON, then each vCPU counts loop iterations from
//! `from=` seconds (default 0; long enough for every vCPU of every VM to be
//! up, so all count over the same stretch) for `secs=` seconds of its VM's
//! virtual counter (which starts at VM creation).
//! No vCPU ever blocks or yields while it counts, so how far each got is
//! how much CPU the scheduler gave it. vCPU 0 prints every count on one
//! line, `shares: [n0, n1, ...]`, for the host to compare across VMs, and
//! exits 0 once every secondary has counted and powered off.
//!
//! With `sleep=1`, each vCPU instead sleeps in WFI until its virtual timer
//! fires at `secs=`: idle vCPUs with a timer pending, the load beside which
//! `cargo xtask bench switch` measures the scheduler.
//!
//! With `cycles=K period_ms=P`, every vCPU alternates K times: busy for P
//! ms, then asleep in WFI for P ms (all on the same virtual-time grid),
//! the load under which dynamic scaling powers pCPUs off and on; `shares`
//! then counts the busy phases in which each vCPU made progress.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering::*};
use guest_rt::{gic, println, MAX_VCPUS};
use tessera_guest::abi::psci;
use tessera_guest::psci as p;

guest_rt::guest_main!(main);

static COUNTS: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static DONE: AtomicU32 = AtomicU32::new(0);
static START: AtomicU32 = AtomicU32::new(0);
static END: AtomicU32 = AtomicU32::new(0);
static SLEEP: AtomicU32 = AtomicU32::new(0);
static CYCLES: AtomicU32 = AtomicU32::new(0);
/// The cycles' grid: start and phase length, in units of 2^10 ticks.
static GRID: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
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
    sleep_until(index, u64::from(END.load(Acquire)) << 10);
    COUNTS[index].store(1, Release);
}

fn sleep_until(index: usize, at: u64) {
    WOKEN[index].store(0, Release);
    guest_rt::vtimer_arm_at(at);
    guest_rt::wait_until(|| WOKEN[index].load(Acquire) != 0);
}

/// Busy and idle phases on the grid; counts the busy phases with progress.
fn cycle(index: usize) {
    gic::init_cpu(&[PPI_VTIMER], irq);
    let (start, phase) = (u64::from(GRID[0].load(Acquire)) << 10, u64::from(GRID[1].load(Acquire)) << 10);
    let mut busy_phases = 0;
    for c in 0..u64::from(CYCLES.load(Acquire)) {
        let mut n = 0u32;
        while guest_rt::counter() < start + (2 * c + 1) * phase {
            n = core::hint::black_box(n) + 1;
        }
        busy_phases += u32::from(n > 0);
        sleep_until(index, start + (2 * c + 2) * phase);
    }
    COUNTS[index].store(busy_phases, Release);
}

/// Counts from START until the virtual counter reaches END (both in units
/// of 2^10 ticks, so a 32-bit word holds minutes at any counter frequency).
fn count(index: usize) {
    let (start, end) = (u64::from(START.load(Acquire)) << 10, u64::from(END.load(Acquire)) << 10);
    while guest_rt::counter() < start {
        core::hint::spin_loop();
    }
    let mut n = 0u32;
    while guest_rt::counter() < end {
        for _ in 0..64 {
            n = core::hint::black_box(n) + 1;
        }
    }
    COUNTS[index].store(n / 64, Release);
}

fn secondary(index: u32) -> u32 {
    if CYCLES.load(Acquire) != 0 {
        cycle(index as usize);
    } else if SLEEP.load(Acquire) != 0 {
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
    let hz = u64::from(guest_rt::counter_frequency());
    let from = u64::from(guest_rt::arg_u32("from", 0)) * hz;
    START.store((from >> 10) as u32, Release);
    END.store(((from + secs * hz) >> 10) as u32, Release);
    let sleeping = guest_rt::arg_u32("sleep", 0) != 0;
    SLEEP.store(sleeping as u32, Release);
    let cycles = guest_rt::arg_u32("cycles", 0);
    CYCLES.store(cycles, Release);
    if cycles > 0 {
        let phase = u64::from(guest_rt::arg_u32("period_ms", 500)) * u64::from(guest_rt::counter_frequency()) / 1000;
        // Starts a little ahead, so every vCPU is up before the first phase.
        GRID[0].store(((guest_rt::counter() + phase / 4) >> 10) as u32, Release);
        GRID[1].store((phase >> 10) as u32, Release);
    }
    if sleeping || cycles > 0 {
        gic::init_distributor();
    }
    guest_rt::set_secondary_main(secondary);
    if !guest_rt::start_secondaries(n as u32) {
        return 1;
    }
    let what = if cycles > 0 {
        "cycling busy and idle"
    } else if sleeping {
        "sleeping"
    } else {
        "counting"
    };
    println!("vm {}: {n} vCPUs {what} for {secs} s", info.vm_id);
    if cycles > 0 {
        cycle(0);
    } else if sleeping {
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

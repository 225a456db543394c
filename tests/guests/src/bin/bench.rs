//! Micro-benchmarks, run under QEMU -icount: the virtual counter then
//! advances with executed instructions, so tick counts are instruction
//! counts (times 1e9 / CNTFRQ / 2^shift), repeatable whatever the host does.
//!
//! - null hypercall: `calls=` round trips of TESSERA_ABI_VERSION, minus
//!   the same loop without the `hvc`;
//! - virtual timer latency: the timer is set to fire at CVAL; the
//!   interrupt handler reads the counter; the difference, averaged;
//! - virtual IPI round trip (needs 2 vCPUs): vCPU 0 sends SGI 2 to vCPU 1,
//!   whose handler answers with SGI 3; time from send to answer, averaged.
//!   With both vCPUs on one pCPU this includes two vCPU switches.
//!
//! `settle_ms=` first sleeps that long (virtual time), so other VMs on the
//! pCPU have booted and gone idle before anything is measured.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use guest_rt::{gic, println};
use tessera_guest::abi::Function;

guest_rt::guest_main!(main);

const SAMPLES: u32 = 200;
const PPI_VTIMER: u32 = 27;
const SGI_PING: u32 = 2;
const SGI_PONG: u32 = 3;

static FIRED_AT: AtomicU64 = AtomicU64::new(0);
static PONGS: AtomicU32 = AtomicU32::new(0);
static PONG_AT: AtomicU64 = AtomicU64::new(0);

fn irq(id: u32) {
    let now = guest_rt::counter();
    match id {
        PPI_VTIMER => {
            FIRED_AT.store(now, Release);
            guest_rt::vtimer_stop();
        }
        SGI_PING => gic::send_sgi(SGI_PONG, 1),
        SGI_PONG => {
            PONG_AT.store(now, Release);
            PONGS.fetch_add(1, AcqRel);
        }
        _ => {}
    }
}

fn secondary(_index: u32) -> u32 {
    gic::init_cpu(&[SGI_PING], irq);
    loop {
        guest_rt::wfi();
    }
}

fn main() -> u32 {
    let freq = guest_rt::counter_frequency();
    let settle = guest_rt::arg_u32("settle_ms", 0);
    if settle > 0 {
        gic::init_distributor();
        gic::init_cpu(&[PPI_VTIMER], irq);
        guest_rt::vtimer_arm_at(guest_rt::counter() + u64::from(freq / 1000 * settle));
        guest_rt::wait_until(|| FIRED_AT.load(Acquire) != 0);
    }
    let n = guest_rt::arg_u32("calls", 100_000);
    let fid = Function::AbiVersion.id();
    let t0 = guest_rt::counter();
    for _ in 0..n {
        core::hint::black_box(fid);
    }
    let t1 = guest_rt::counter();
    for _ in 0..n {
        // SAFETY: ABI_VERSION only reports numbers.
        core::hint::black_box(unsafe { tessera_guest::hvc::hvc_call(fid, 0, 0, 0) });
    }
    let t2 = guest_rt::counter();
    println!("bench null-hypercall calls={n} loop_ticks={} call_ticks={} cntfrq={freq}", t1 - t0, t2 - t1);

    gic::init_distributor();
    gic::init_cpu(&[PPI_VTIMER, SGI_PONG], irq);
    let mut total = 0u64;
    for _ in 0..SAMPLES {
        FIRED_AT.store(0, Release);
        let cval = guest_rt::counter() + 2000;
        guest_rt::vtimer_arm_at(cval);
        guest_rt::wait_until(|| FIRED_AT.load(Acquire) != 0);
        total += FIRED_AT.load(Acquire) - cval;
    }
    println!("bench vtimer-latency samples={SAMPLES} total_ticks={total} cntfrq={freq}");

    let vcpus = tessera_guest::vm_info().map_or(1, |i| i.vcpu_count);
    if vcpus >= 2 {
        guest_rt::set_secondary_main(secondary);
        // SAFETY: `_secondary_start` sets up its own stacks and runs `secondary`.
        unsafe { tessera_guest::psci::cpu_on(1, guest_rt::secondary_entry(), 1) };
        // Let vCPU 1 get to its WFI before measuring.
        while tessera_guest::psci::affinity_info(1, 0) != 0 {
            let _ = tessera_guest::yield_vcpu();
        }
        for _ in 0..1000 {
            let _ = tessera_guest::yield_vcpu();
        }
        let mut total = 0u64;
        for k in 0..SAMPLES {
            let sent = guest_rt::counter();
            gic::send_sgi(SGI_PING, 1 << 1);
            guest_rt::wait_until(|| PONGS.load(Acquire) > k);
            total += PONG_AT.load(Acquire) - sent;
        }
        println!("bench ipi-round-trip samples={SAMPLES} total_ticks={total} cntfrq={freq}");
    }
    0
}

//! Micro-benchmarks, run under QEMU -icount: the virtual counter then
//! advances with executed instructions, so tick counts are instruction
//! counts (times 1e9 / CNTFRQ / 2^shift), repeatable whatever the host does.
#![no_std]
#![no_main]

use guest_rt::println;
use tessera_guest::abi::Function;

guest_rt::guest_main!(main);

fn main() -> u32 {
    let n = guest_rt::arg_u32("calls", 100_000);
    let fid = Function::AbiVersion.id();
    // Baseline: the same loop with the HVC replaced by nothing.
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
    println!(
        "bench null-hypercall calls={n} loop_ticks={} call_ticks={} cntfrq={}",
        t1 - t0,
        t2 - t1,
        guest_rt::counter_frequency()
    );
    0
}

//! A busy single-vCPU guest that reports how much of a pCPU it gets,
//! measured against its own virtual counter with Tessera's stolen-time
//! record (time it could have run but waited: the hypervisor's account,
//! which the host's own scheduling of QEMU does not disturb).
//!
//! It spins for `secs=` seconds in windows of `window_ms=` (default 500);
//! for each window it prints the share of the window it was not waiting.
//! From `from=` seconds on, every window's share must be at least
//! `min_pct=` and at most `max_pct=` percent (defaults 0 and 100), or it
//! says WRONG and exits 1.
#![no_std]
#![no_main]

use guest_rt::println;

guest_rt::guest_main!(main);

/// The stolen-time record (TESSERA_STEAL_TIME_SET): 64 bytes, 64-aligned.
#[repr(C, align(64))]
struct Record([u32; 16]);
static mut RECORD: Record = Record([0; 16]);

/// Nanoseconds stolen so far, read consistently (sequence even and
/// unchanged around the read).
fn stolen_ns() -> u64 {
    let r = &raw const RECORD;
    loop {
        // SAFETY: the record is ours; the hypervisor writes it word by word
        // while this vCPU is descheduled, so volatile reads see whole words.
        let (seq, lo, hi, again) = unsafe {
            let w = r as *const u32;
            let seq = core::ptr::read_volatile(w);
            let lo = core::ptr::read_volatile(w.add(2));
            let hi = core::ptr::read_volatile(w.add(3));
            (seq, lo, hi, core::ptr::read_volatile(w))
        };
        if seq & 1 == 0 && seq == again {
            return u64::from(hi) << 32 | u64::from(lo);
        }
    }
}

fn main() -> u32 {
    // SAFETY: the record is a static of this VM, aligned and sized as the
    // ABI asks; the MMU is off, so its address is its IPA.
    if unsafe { tessera_guest::steal_time_set(&raw const RECORD as usize as u32) }.is_err() {
        println!("WRONG: TESSERA_STEAL_TIME_SET refused");
        return 1;
    }
    let freq = u64::from(guest_rt::counter_frequency());
    let secs = u64::from(guest_rt::arg_u32("secs", 4));
    let window = freq * u64::from(guest_rt::arg_u32("window_ms", 500)) / 1000;
    let from = freq * u64::from(guest_rt::arg_u32("from", 0));
    let (min_pct, max_pct) = (u64::from(guest_rt::arg_u32("min_pct", 0)), u64::from(guest_rt::arg_u32("max_pct", 100)));
    let start = guest_rt::counter();
    let end = start + secs * freq;
    let ns_per_tick = 1_000_000_000 / freq;
    let (mut t0, mut s0) = (start, stolen_ns());
    let (mut k, mut wrong) = (0, false);
    let (mut lo, mut hi) = (100, 0);
    while t0 < end {
        while guest_rt::counter() < t0 + window {
            core::hint::spin_loop();
        }
        let (t1, s1) = (guest_rt::counter(), stolen_ns());
        let elapsed_ns = (t1 - t0) * ns_per_tick;
        let pct = 100 - ((s1 - s0) * 100 / elapsed_ns).min(100);
        k += 1;
        println!("window {k}: {pct}% of a pCPU");
        if t0 - start >= from {
            lo = lo.min(pct);
            hi = hi.max(pct);
            wrong |= pct < min_pct || pct > max_pct;
        }
        (t0, s0) = (t1, s1);
    }
    println!(
        "from {} s on: {lo}% to {hi}% of a pCPU (want {min_pct}% to {max_pct}%){}",
        from / freq,
        if wrong { ": WRONG" } else { "" }
    );
    u32::from(wrong)
}

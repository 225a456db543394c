//! A well-behaved VM: says who it is, fills part of its RAM with a pattern,
//! computes for a while (printing ticks), checks the pattern is intact and
//! exits 0. Used beside other VMs: if anything else could write its memory,
//! the check would fail.
#![no_std]
#![no_main]

use guest_rt::println;

guest_rt::guest_main!(main);

const PATTERN_BYTES: u32 = 512 * 1024;

fn pattern(i: u32) -> u32 {
    i.wrapping_mul(0x9e37_79b9) ^ 0x5a5a_5a5a
}

fn main() -> u32 {
    let info = tessera_guest::vm_info().expect("VM_INFO");
    println!("worker vm id {} vCPU {} of {}", info.vm_id, info.vcpu_index, info.vcpu_count);
    let base = (guest_rt::image_end() + 0xfff) & !0xfff;
    let words = PATTERN_BYTES / 4;
    for i in 0..words {
        // SAFETY: [base, base + PATTERN_BYTES) is free RAM of this VM past the image.
        unsafe { core::ptr::write_volatile((base + 4 * i) as *mut u32, pattern(i)) };
    }
    let ticks = guest_rt::arg_u32("ticks", 5);
    let spin = guest_rt::arg_u32("spin", 2_000_000);
    let mut acc = 0u32;
    for t in 1..=ticks {
        for k in 0..spin {
            acc = core::hint::black_box(acc.wrapping_mul(31).wrapping_add(k));
        }
        println!("tick {t}/{ticks}");
    }
    for i in 0..words {
        // SAFETY: as above.
        let v = unsafe { core::ptr::read_volatile((base + 4 * i) as *const u32) };
        if v != pattern(i) {
            println!("memory corrupted at {:#010x}: {v:#010x}", base + 4 * i);
            return 2;
        }
    }
    println!("memory intact ({} KiB checked), done", PATTERN_BYTES / 1024);
    0
}

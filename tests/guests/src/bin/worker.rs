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
    // With `rendezvous=N` and a channel: N strict alternations with the VM
    // at the channel's other end, spinning on the shared words with no exit
    // to the hypervisor. Both VMs are the only ones on their pCPUs, so
    // neither is ever descheduled: the alternations can only happen if the
    // two run at the same time, on two pCPUs.
    let rounds = guest_rt::arg_u32("rendezvous", 0);
    if rounds > 0 {
        let Some(c) = guest_rt::channel(0) else {
            println!("WRONG: rendezvous needs a channel");
            return 3;
        };
        let (mine, theirs) = ((c.base) as *mut u32, (c.base + 4) as *mut u32);
        let (me, other) = if guest_rt::arg_u32("first", 0) == 1 { (mine, theirs) } else { (theirs, mine) };
        let leads = guest_rt::arg_u32("first", 0) == 1;
        for k in 0..rounds {
            // SAFETY: words of the channel memory the DTB gives this VM.
            unsafe {
                // The leader moves first in each round; the other follows.
                while core::ptr::read_volatile(other) != if leads { k } else { k + 1 } {
                    core::hint::spin_loop();
                }
                core::ptr::write_volatile(me, k + 1);
            }
        }
        println!("rendezvous: {rounds} alternations with the VM at the channel's other end, each on its own pCPU");
    }
    for i in 0..words {
        // SAFETY: as above.
        let v = unsafe { core::ptr::read_volatile((base + 4 * i) as *const u32) };
        if v != pattern(i) {
            println!("memory corrupted at {:#010x}: {v:#010x}", base + 4 * i);
            return 2;
        }
    }
    // With `not_marker=` (the marker's complement, so that the marker itself
    // is nowhere in this VM's memory): no word of this VM's RAM holds the
    // value another VM tried to write everywhere it could.
    let arg = guest_rt::arg("not_marker").and_then(|m| u32::from_str_radix(m.trim_start_matches("0x"), 16).ok());
    if let Some(not_marker) = arg {
        let ram_end = 0x4000_0000 + guest_rt::arg_u32("ram_mib", 16) * 1024 * 1024;
        let mut a = 0x4000_0000u32;
        while a < ram_end {
            // SAFETY: this VM's own RAM.
            if !unsafe { core::ptr::read_volatile(a as *const u32) } == not_marker {
                println!("memory corrupted: another VM's marker at {a:#010x}");
                return 2;
            }
            a += 4;
        }
        println!("no marker of another VM in {} MiB of RAM", (ram_end - 0x4000_0000) >> 20);
    }
    println!("memory intact ({} KiB checked), done", PATTERN_BYTES / 1024);
    0
}

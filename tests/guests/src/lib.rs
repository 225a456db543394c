//! A minimal runtime for the test guests: entry, stack, .bss, panic, and
//! the boot arguments from the guest DTB (r2 at entry, Linux convention).
//! Guests run in SVC mode with the MMU off, so addresses are IPAs.
#![no_std]

pub use tessera_guest::{print, println};

core::arch::global_asm!(
    r#"
    .section .text.start, "ax"
    .global _start
_start:
    ldr     sp, =__stack_top
    ldr     r4, =__bss_start
    ldr     r5, =__bss_end
    mov     r6, #0
1:  cmp     r4, r5
    strlo   r6, [r4], #4
    blo     1b
    mov     r0, r2                  @ the DTB
    bl      guest_entry
2:  b       2b
    "#
);

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

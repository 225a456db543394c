//! A scheduling trace for `cargo xtask trace` (cargo feature `trace`).
//!
//! Each pCPU appends fixed-size records (when, what, which VM and vCPU)
//! to its own buffer: which vCPU ran when, exits by exception class, vGIC
//! flushes into the list registers, migrations and pCPU power changes.
//! When the system powers off, or a buffer fills, pCPU 0 prints them all
//! as `tessera: trace ...` lines, which the host turns into a
//! Chrome/Perfetto JSON trace and an SVG timeline.
//!
//! Without the feature, [`trace_event!`] expands to a branch on a constant
//! false (its arguments are not even evaluated): tracing off costs nothing
//! on any path, by construction.

/// What a record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A vCPU starts running on the pCPU.
    Run = 1,
    /// It stops (its slice ended, it blocked, its VM stopped).
    Stop = 2,
    /// It left the guest: `arg` is the exception class (HSR.EC), or 0x100
    /// for a physical interrupt.
    Exit = 3,
    /// The vGIC moved pending interrupts into its list registers.
    Inject = 4,
    /// It moved to pCPU `arg`.
    Migrate = 5,
    /// The pCPU powers off (dynamic scaling).
    PowerOff = 6,
    /// The pCPU asked the firmware to power pCPU `arg` on.
    PowerOn = 7,
    /// The pCPU (re)started its loop.
    Up = 8,
}

/// Exit classes beyond HSR.EC (which has 6 bits).
pub const EXIT_IRQ: u32 = 0x100;

/// Records an event when tracing is compiled in; otherwise expands to
/// nothing, so not even its arguments (a counter read) are evaluated.
#[macro_export]
macro_rules! trace_event {
    ($($arg:expr),* $(,)?) => {
        if $crate::trace::ENABLED {
            $crate::trace::record($($arg),*);
        }
    };
}

/// Records an event of pCPU `pcpu` at counter time `t` (through
/// [`trace_event!`]).
#[inline(always)]
pub fn record(pcpu: usize, t: u64, kind: Kind, vm: u32, vcpu: u32, arg: u32) {
    #[cfg(feature = "trace")]
    imp::record(pcpu, t, kind, vm, vcpu, arg);
    #[cfg(not(feature = "trace"))]
    let _ = (pcpu, t, kind, vm, vcpu, arg);
}

/// Is tracing compiled in?
pub const ENABLED: bool = cfg!(feature = "trace");

/// Prints every buffer once (pCPU 0, when the system powers off or a buffer
/// is full); later calls print nothing.
pub fn dump(counter_hz: u64) {
    #[cfg(feature = "trace")]
    imp::dump(counter_hz);
    #[cfg(not(feature = "trace"))]
    let _ = counter_hz;
}

/// Has some pCPU's buffer filled up (so the trace should be printed now)?
pub fn full() -> bool {
    #[cfg(feature = "trace")]
    return imp::full();
    #[cfg(not(feature = "trace"))]
    false
}

#[cfg(feature = "trace")]
mod imp {
    use super::Kind;
    use crate::arch::MAX_CPUS;
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Records per pCPU (16 bytes each: 128 KiB a pCPU).
    const CAPACITY: usize = 8192;

    #[derive(Clone, Copy)]
    struct Rec {
        t: u64,
        kind: u8,
        vcpu: u8,
        vm: u16,
        arg: u32,
    }

    struct Ring {
        len: AtomicUsize,
        recs: UnsafeCell<[Rec; CAPACITY]>,
    }

    // SAFETY: only pCPU p appends to ring p (`record` is called with the
    // caller's own pCPU index), writing a record before it publishes the
    // new length (Release); readers read only records below the length they
    // loaded (Acquire), which are never written again.
    unsafe impl Sync for Ring {}

    static RINGS: [Ring; MAX_CPUS] = [const {
        Ring {
            len: AtomicUsize::new(0),
            recs: UnsafeCell::new([Rec { t: 0, kind: 0, vcpu: 0, vm: 0, arg: 0 }; CAPACITY]),
        }
    }; MAX_CPUS];
    static FULL: AtomicBool = AtomicBool::new(false);
    static DUMPED: AtomicBool = AtomicBool::new(false);

    pub fn record(pcpu: usize, t: u64, kind: Kind, vm: u32, vcpu: u32, arg: u32) {
        let Some(r) = RINGS.get(pcpu) else { return };
        let n = r.len.load(Ordering::Relaxed);
        if n >= CAPACITY {
            FULL.store(true, Ordering::Relaxed);
            return;
        }
        // SAFETY: slot `n` is past the published length, so no reader looks
        // at it, and this pCPU is the ring's only writer (see `Ring`).
        unsafe { (*r.recs.get())[n] = Rec { t, kind: kind as u8, vcpu: vcpu as u8, vm: vm as u16, arg } };
        r.len.store(n + 1, Ordering::Release);
    }

    pub fn full() -> bool {
        FULL.load(Ordering::Relaxed)
    }

    pub fn dump(counter_hz: u64) {
        if DUMPED.swap(true, Ordering::AcqRel) {
            return;
        }
        crate::info!("trace: begin hz={counter_hz}");
        for (p, r) in RINGS.iter().enumerate() {
            let n = r.len.load(Ordering::Acquire);
            for k in 0..n {
                // SAFETY: below the published length: written once, never
                // again (see `Ring`).
                let e = unsafe { (*r.recs.get())[k] };
                crate::info!("trace: {p} {:x} {} {} {} {:x}", e.t, e.kind, e.vm, e.vcpu, e.arg);
            }
        }
        crate::info!("trace: end{}", if full() { " (a buffer filled up: later events are missing)" } else { "" });
    }
}

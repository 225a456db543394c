//! The one trap into the hypervisor: SMCCC 1.1 over `hvc #0`.
//!
//! On 32-bit Arm this is the real instruction. Elsewhere (host unit tests)
//! it is a stand-in that answers NOT_SUPPORTED, or, with `cfg(test)` or the
//! `host-fake` feature, whatever a test installs with `fake::install`.

/// Issues hypercall `fid` with arguments `a1..a3`; returns r0..r3.
///
/// Tessera preserves r4-r7 (SMCCC 1.1), so only r0-r3 are operands. The
/// asm may read memory: calls such as CONSOLE_WRITE read guest memory, so
/// the compiler must finish pending stores before the trap.
///
/// # Safety
///
/// The call must not break this program's invariants behind the compiler's
/// back. No v1 call writes the caller's memory, but some change what runs:
/// PSCI `CPU_ON` starts another vCPU at an arbitrary entry address with
/// access to all of the VM's memory. The safe wrappers of this crate uphold
/// this; raw calls (hostile-guest tests, new functions) must argue it.
#[cfg(target_arch = "arm")]
#[inline]
pub unsafe fn hvc_call(fid: u32, a1: u32, a2: u32, a3: u32) -> [u32; 4] {
    let (r0, r1, r2, r3): (u32, u32, u32, u32);
    // SAFETY: `hvc #0` traps to Tessera, which reads r0-r3, writes r0-r3
    // and preserves every other register, the stack and the flags it does
    // not define (SMCCC 1.1). The caller vouches for the call's effects.
    // `.arch_extension virt` lets the assembler accept HVC for any Armv7-A
    // target, whether or not it names the virtualization extension.
    unsafe {
        core::arch::asm!(
            ".arch_extension virt",
            "hvc #0",
            inlateout("r0") fid => r0,
            inlateout("r1") a1 => r1,
            inlateout("r2") a2 => r2,
            inlateout("r3") a3 => r3,
            options(nostack),
        );
    }
    [r0, r1, r2, r3]
}

/// Host stand-in for the trap: asks the fake hypervisor of this thread.
///
/// # Safety
///
/// None needed off-target (nothing traps); `unsafe` keeps the signature the
/// same as on Arm so callers compile unchanged.
#[cfg(not(target_arch = "arm"))]
pub unsafe fn hvc_call(fid: u32, a1: u32, a2: u32, a3: u32) -> [u32; 4] {
    fake::call(fid, a1, a2, a3)
}

/// Runs `f`, a hypercall that reads `buf`, with `buf` visible to the fake
/// hypervisor. On Arm the hypervisor reads guest memory itself.
#[cfg(target_arch = "arm")]
#[inline(always)]
pub(crate) fn fake_lend<R>(_buf: &[u8], f: impl FnOnce() -> R) -> R {
    f()
}

/// The same for a hypercall that writes `buf` (CONSOLE_READ).
#[cfg(target_arch = "arm")]
#[inline(always)]
pub(crate) fn fake_lend_mut<R>(_buf: &mut [u8], f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(not(target_arch = "arm"))]
pub(crate) use fake::lend as fake_lend;
#[cfg(not(target_arch = "arm"))]
pub(crate) use fake::lend_mut as fake_lend_mut;

/// A per-thread fake hypervisor for host tests.
#[cfg(not(target_arch = "arm"))]
pub mod fake {
    #[cfg(any(test, feature = "host-fake"))]
    pub use with_std::*;

    /// Without `std` there is no fake to install: everything is unknown.
    #[cfg(not(any(test, feature = "host-fake")))]
    pub(crate) fn call(_fid: u32, _a1: u32, _a2: u32, _a3: u32) -> [u32; 4] {
        [hypercall_abi::Error::NotSupported.code() as u32, 0, 0, 0]
    }

    #[cfg(not(any(test, feature = "host-fake")))]
    pub(crate) fn lend<R>(_buf: &[u8], f: impl FnOnce() -> R) -> R {
        f()
    }

    #[cfg(not(any(test, feature = "host-fake")))]
    pub(crate) fn lend_mut<R>(_buf: &mut [u8], f: impl FnOnce() -> R) -> R {
        f()
    }

    #[cfg(any(test, feature = "host-fake"))]
    mod with_std {
        use core::cell::{Cell, RefCell};
        use std::boxed::Box;
        use std::vec::Vec;

        /// What a fake hypervisor does with `(fid, a1, a2, a3)`: returns r0..r3.
        pub type Handler = Box<dyn FnMut(u32, u32, u32, u32) -> [u32; 4]>;

        std::thread_local! {
            static HANDLER: RefCell<Option<Handler>> = const { RefCell::new(None) };
            static BUFFER: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
            static BUFFER_MUT: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
        }

        /// Removes the installed handler when dropped.
        #[must_use = "the handler is removed when the guard is dropped"]
        pub struct Guard(());

        impl Drop for Guard {
            fn drop(&mut self) {
                HANDLER.with(|h| *h.borrow_mut() = None);
            }
        }

        /// Makes `handler` answer this thread's hypercalls until the guard
        /// drops. Tests run on separate threads, so they do not interfere.
        pub fn install(handler: impl FnMut(u32, u32, u32, u32) -> [u32; 4] + 'static) -> Guard {
            HANDLER.with(|h| *h.borrow_mut() = Some(Box::new(handler)));
            Guard(())
        }

        pub(crate) fn call(fid: u32, a1: u32, a2: u32, a3: u32) -> [u32; 4] {
            // Taken out while it runs, so a handler that makes a hypercall
            // itself gets NOT_SUPPORTED instead of a RefCell panic.
            let taken = HANDLER.with(|h| h.borrow_mut().take());
            match taken {
                None => [hypercall_abi::Error::NotSupported.code() as u32, 0, 0, 0],
                Some(mut handler) => {
                    let out = handler(fid, a1, a2, a3);
                    HANDLER.with(|h| {
                        let mut slot = h.borrow_mut();
                        if slot.is_none() {
                            *slot = Some(handler);
                        }
                    });
                    out
                }
            }
        }

        /// Restores the previously lent buffer, also when a handler panics.
        struct Lent((usize, usize));

        impl Drop for Lent {
            fn drop(&mut self) {
                BUFFER.with(|b| b.set(self.0));
            }
        }

        /// Runs `f` (a hypercall) with `buf` lent to the fake: its address
        /// does not fit a u32 on a 64-bit host, so handlers find the bytes
        /// with [`console_bytes`] instead.
        pub(crate) fn lend<R>(buf: &[u8], f: impl FnOnce() -> R) -> R {
            let _restore = Lent(BUFFER.with(|b| b.replace((buf.as_ptr() as usize, buf.len()))));
            f()
        }

        /// Restores the previously lent writable buffer, also on unwinding.
        struct LentMut((usize, usize));

        impl Drop for LentMut {
            fn drop(&mut self) {
                BUFFER_MUT.with(|b| b.set(self.0));
            }
        }

        /// Runs `f` (a hypercall that stores into `buf`) with `buf` lent to
        /// the fake; handlers store with [`console_fill`].
        pub(crate) fn lend_mut<R>(buf: &mut [u8], f: impl FnOnce() -> R) -> R {
            let _restore = LentMut(BUFFER_MUT.with(|b| b.replace((buf.as_mut_ptr() as usize, buf.len()))));
            f()
        }

        /// For a handler serving CONSOLE_READ (`ipa`, `len`): stores `bytes`
        /// (at most `len`) in the buffer `console_read` is passing; false if
        /// `ipa` is not that buffer or `bytes` does not fit.
        pub fn console_fill(ipa: u32, len: u32, bytes: &[u8]) -> bool {
            let (addr, buf_len) = BUFFER_MUT.with(Cell::get);
            if addr == 0 || addr as u32 != ipa || len as usize > buf_len || bytes.len() > len as usize {
                return false;
            }
            // SAFETY: a non-zero entry is only set by `lend_mut`, whose
            // exclusive borrow of (addr, buf_len) outlives the hypercall this
            // handler serves, and bytes.len() <= len <= buf_len.
            unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
            true
        }

        /// For a handler serving CONSOLE_WRITE (`ipa`, `len`): the bytes, if
        /// they are (a prefix of) the buffer `console_write` is passing.
        pub fn console_bytes(ipa: u32, len: u32) -> Option<Vec<u8>> {
            let (addr, buf_len) = BUFFER.with(Cell::get);
            if addr == 0 || addr as u32 != ipa || len as usize > buf_len {
                return None;
            }
            // SAFETY: a non-zero entry is only set by `lend`, whose borrow of
            // the slice (addr, buf_len) outlives the hypercall this handler
            // serves (the entry is restored when `lend` returns or unwinds),
            // and len <= buf_len.
            let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) };
            Some(bytes.to_vec())
        }
    }
}

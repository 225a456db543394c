//! Guest memory as the hypervisor touches it: one leaf module, one error
//! type, one trait.
//!
//! A guest-physical address is a claim until it is checked against the VM's
//! own memory. Everything here copies bytes in and out and never hands out a
//! reference into guest memory: the guest (another vCPU, or a device on its
//! behalf) may change it at any time, so a `&[u8]` into it would be a data
//! race. Device models, the hypercall dispatcher and the loader all go
//! through [`GuestMemory`]; [`GuestRam`] is the implementation over a VM's
//! RAM block, and the only place that dereferences guest memory.

use crate::addr::{Ipa, PhysAddr, BLOCK_2M};
use core::sync::atomic::{AtomicU8, Ordering};

/// A guest range that is not entirely inside the memory it was checked
/// against (outside the VM's RAM, straddling its end, or wrapping).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutsideRam;

/// Guest memory as device models and the dispatcher see it: bounds-checked
/// copies, never references (vm-memory's `Bytes`, reduced to what Tessera
/// needs).
pub trait GuestMemory {
    /// Copies `buf.len()` bytes of guest memory at `ipa` into `buf`. Fails,
    /// copying nothing, unless the whole range is inside.
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), OutsideRam>;
    /// Copies `data` into guest memory at `ipa`; all or nothing, as `read`.
    fn write(&self, ipa: Ipa, data: &[u8]) -> Result<(), OutsideRam>;
    /// Is `[ipa, ipa + len)` entirely inside? Overflow-safe.
    fn contains(&self, ipa: Ipa, len: u64) -> bool;
}

impl<T: GuestMemory + ?Sized> GuestMemory for &T {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), OutsideRam> {
        (**self).read(ipa, buf)
    }
    fn write(&self, ipa: Ipa, data: &[u8]) -> Result<(), OutsideRam> {
        (**self).write(ipa, data)
    }
    fn contains(&self, ipa: Ipa, len: u64) -> bool {
        (**self).contains(ipa, len)
    }
}

/// A block of guest memory: `size` bytes at guest `ipa`, backed by host
/// physical `pa`, which the hypervisor reaches at `host` (the identity map
/// on the target; a leaked heap buffer in host tests).
///
/// The fields are private and the constructor is `unsafe`: the safe
/// accessors below are only sound because whoever built the value promised
/// that `host` maps `size` bytes for as long as the value exists.
///
/// A VM's RAM is zeroed lazily ([`GuestRam::new_lazy`]): each 2 MiB block
/// is zeroed (and cleaned to the point of coherency) the first time
/// anything uses it, the guest through a stage-2 fault (`Vm::populate`)
/// or the hypervisor through these accessors, so creating or resetting a
/// VM costs what it touches, not its size, and still nothing of an earlier
/// owner's data is ever seen.
#[derive(Clone, Copy, Debug)]
pub struct GuestRam {
    ipa: Ipa,
    size: u64,
    pa: PhysAddr,
    host: *mut u8,
    /// One state per 2 MiB block ([`UNTOUCHED`], [`ZEROING`], [`READY`]);
    /// None: the whole block is always usable (channels, host tests).
    blocks: Option<&'static [AtomicU8]>,
}

/// A block's old contents are still there: zero it before any use.
const UNTOUCHED: u8 = 0;
/// Some pCPU is zeroing it; the others wait.
const ZEROING: u8 = 1;
/// Zeroed (and cleaned): usable.
const READY: u8 = 2;

/// The block states a lazily zeroed RAM of `size` bytes needs.
pub fn block_states(size: u64) -> usize {
    size.div_ceil(BLOCK_2M) as usize
}

// SAFETY: the memory `host` points at stays valid for the value's whole life
// (constructor contract) and is only ever copied in and out with raw copies,
// which may race with the guest without creating a Rust reference to it.
unsafe impl Sync for GuestRam {}
// SAFETY: as above; nothing about the block is tied to one thread.
unsafe impl Send for GuestRam {}

impl GuestRam {
    /// # Safety
    /// `host` must be valid for reads and writes of `size` bytes for as long
    /// as this value or a copy of it exists, must not overlap any memory the
    /// hypervisor uses for anything else, and `size` must fit in `usize`.
    /// `pa` must be the physical address of that memory (it is what stage 2
    /// maps and what cache maintenance is done on).
    pub unsafe fn new(ipa: Ipa, size: u64, pa: PhysAddr, host: *mut u8) -> Self {
        Self { ipa, size, pa, host, blocks: None }
    }

    /// The same, zeroed lazily: `blocks` holds [`block_states`]`(size)`
    /// states, all untouched (zeroes); every 2 MiB block is zeroed at its
    /// first use.
    ///
    /// # Safety
    /// As [`GuestRam::new`]; `ipa` and `pa` must be 2 MiB aligned.
    pub unsafe fn new_lazy(ipa: Ipa, size: u64, pa: PhysAddr, host: *mut u8, blocks: &'static [AtomicU8]) -> Self {
        debug_assert_eq!(blocks.len(), block_states(size));
        Self { ipa, size, pa, host, blocks: Some(blocks) }
    }

    /// Is it zeroed lazily?
    pub fn is_lazy(&self) -> bool {
        self.blocks.is_some()
    }

    pub fn block_count(&self) -> usize {
        block_states(self.size)
    }

    /// Makes 2 MiB block `k` usable: zeroes and cleans it if nothing has
    /// used it yet (or waits while another pCPU does). False if there is no
    /// block `k`.
    pub fn prepare_block(&self, k: usize) -> bool {
        let Some(state) = self.blocks.and_then(|b| b.get(k)) else {
            return self.blocks.is_none() && (k as u64) < block_states(self.size) as u64;
        };
        loop {
            match state.load(Ordering::Acquire) {
                READY => return true,
                UNTOUCHED
                    if state.compare_exchange(UNTOUCHED, ZEROING, Ordering::AcqRel, Ordering::Acquire).is_ok() =>
                {
                    let off = k * BLOCK_2M as usize;
                    let len = (BLOCK_2M as usize).min(self.size as usize - off);
                    // SAFETY: `[host + off, host + off + len)` lies in the
                    // block (constructor contract), and this pCPU alone
                    // owns it while the state says ZEROING: the guest cannot
                    // reach it (unmapped until READY) nor can the
                    // hypervisor (every accessor waits here first).
                    unsafe {
                        crate::arch::zero_bytes(self.host.add(off), len);
                        crate::arch::clean_bytes(self.host.add(off), len);
                    }
                    state.store(READY, Ordering::Release);
                    return true;
                }
                _ => core::hint::spin_loop(),
            }
        }
    }

    /// Makes every block `[off, off + len)` touches usable.
    fn prepare(&self, off: usize, len: usize) {
        if self.blocks.is_none() || len == 0 {
            return;
        }
        let block = BLOCK_2M as usize;
        for k in off / block..=(off + len - 1) / block {
            self.prepare_block(k);
        }
    }

    /// Calls `f` with the host address and length of every block in use
    /// (all of it for a RAM that is not lazy): what needs cleaning after
    /// the hypervisor wrote an image.
    pub fn for_each_used(&self, mut f: impl FnMut(*mut u8, usize)) {
        let Some(blocks) = self.blocks else {
            f(self.host, self.size as usize);
            return;
        };
        for (k, s) in blocks.iter().enumerate() {
            if s.load(Ordering::Acquire) == READY {
                let off = k * BLOCK_2M as usize;
                // SAFETY: inside the block (constructor contract).
                f(unsafe { self.host.add(off) }, (BLOCK_2M as usize).min(self.size as usize - off));
            }
        }
    }

    pub fn ipa(&self) -> Ipa {
        self.ipa
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn pa(&self) -> PhysAddr {
        self.pa
    }

    /// Fills the whole block with zeroes (with the CPU's widest stores: a
    /// 512 MiB VM is 128 M word stores through `memset`). A lazy RAM only
    /// forgets its blocks, which are zeroed at their next use: the caller
    /// must have unmapped them from stage 2 (`Vm::unmap_ram`), or never
    /// mapped them, and nothing else may use the RAM meanwhile.
    pub fn zero(&self) {
        if let Some(blocks) = self.blocks {
            for s in blocks {
                s.store(UNTOUCHED, Ordering::Release);
            }
            return;
        }
        // SAFETY: `host` maps `size` bytes that no reference points into
        // (constructor contract).
        unsafe { crate::arch::zero_bytes(self.host, self.size as usize) };
    }

    /// Stores one aligned 32-bit word at `ipa` as a single access, for
    /// records a guest reads while the hypervisor writes them (the
    /// stolen-time record). Fails unless the word is inside and aligned.
    pub fn store_u32(&self, ipa: Ipa, value: u32) -> Result<(), OutsideRam> {
        let off = self.offset(ipa, 4).ok_or(OutsideRam)?;
        self.prepare(off, 4);
        // SAFETY: the word lies inside the block, which `host` maps
        // (constructor contract); checked aligned just below.
        let p = unsafe { self.host.add(off) } as *mut u32;
        if !p.is_aligned() {
            return Err(OutsideRam);
        }
        // SAFETY: in bounds and aligned; a volatile store is one access,
        // which the guest may race with without a Rust reference existing.
        unsafe { core::ptr::write_volatile(p, value) };
        Ok(())
    }

    /// The offset of `[ipa, ipa + len)` in the block, if it lies inside.
    fn offset(&self, ipa: Ipa, len: usize) -> Option<usize> {
        self.contains(ipa, len as u64).then(|| (ipa.raw() - self.ipa.raw()) as usize)
    }
}

impl GuestMemory for GuestRam {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), OutsideRam> {
        let off = self.offset(ipa, buf.len()).ok_or(OutsideRam)?;
        self.prepare(off, buf.len());
        // SAFETY: the range lies inside the block, which `host` maps; `buf`
        // is ours and cannot overlap guest memory (constructor contract).
        unsafe { core::ptr::copy_nonoverlapping(self.host.add(off), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write(&self, ipa: Ipa, data: &[u8]) -> Result<(), OutsideRam> {
        let off = self.offset(ipa, data.len()).ok_or(OutsideRam)?;
        self.prepare(off, data.len());
        // SAFETY: as in `read`, in the other direction.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), self.host.add(off), data.len()) };
        Ok(())
    }

    fn contains(&self, ipa: Ipa, len: u64) -> bool {
        ipa >= self.ipa && ipa.raw().checked_add(len).is_some_and(|end| end <= self.ipa.raw() + self.size)
    }
}

/// Guest RAM for host tests: a leaked, zeroed buffer of `size` bytes.
#[cfg(any(test, feature = "fake"))]
pub fn test_ram(ipa: u64, size: usize) -> GuestRam {
    extern crate alloc;
    // Words, so the block is aligned as guest RAM is on the target.
    let buf: &'static mut [u64] = alloc::boxed::Box::leak(alloc::vec![0u64; size.div_ceil(8)].into_boxed_slice());
    // SAFETY: the buffer is leaked, so it lives for the rest of the test
    // process, nothing else refers to it, and it holds at least `size` bytes.
    unsafe { GuestRam::new(Ipa(ipa), size as u64, PhysAddr(0x4200_0000), buf.as_mut_ptr().cast()) }
}

/// Lazily zeroed guest RAM for host tests, full of garbage (an earlier
/// owner's data) that no access may ever see.
#[cfg(test)]
pub fn lazy_test_ram(ipa: u64, size: usize) -> GuestRam {
    extern crate alloc;
    let buf: &'static mut [u64] =
        alloc::boxed::Box::leak(alloc::vec![0xdead_beef_dead_beef; size.div_ceil(8)].into_boxed_slice());
    let blocks: &'static [AtomicU8] =
        alloc::boxed::Box::leak((0..block_states(size as u64)).map(|_| AtomicU8::new(UNTOUCHED)).collect());
    // SAFETY: as in `test_ram`.
    unsafe { GuestRam::new_lazy(Ipa(ipa), size as u64, PhysAddr(0x4200_0000), buf.as_mut_ptr().cast(), blocks) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_blocks_are_zeroed_at_first_use_and_forgotten_by_zero() {
        let r = lazy_test_ram(0x4000_0000, 5 << 20); // 2 + 2 + 1 MiB blocks
        let used = |r: &GuestRam| {
            let mut v = Vec::new();
            r.for_each_used(|p, len| v.push(((p as usize - r.host as usize) >> 20, len >> 20)));
            v
        };
        assert!(used(&r).is_empty(), "nothing is zeroed at creation");
        let mut w = [0xffu8; 8];
        // A read straddling blocks 0 and 1 sees zeroes, never the garbage.
        r.read(Ipa(0x4000_0000 + (2 << 20) - 4), &mut w).unwrap();
        assert_eq!(w, [0; 8]);
        assert_eq!(used(&r), [(0, 2), (2, 2)]);
        r.write(Ipa(0x4000_0000 + (4 << 20) + 16), b"img").unwrap();
        assert_eq!(used(&r), [(0, 2), (2, 2), (4, 1)], "the last block is short");
        let mut b = [0u8; 3];
        r.read(Ipa(0x4000_0000 + (4 << 20) + 16), &mut b).unwrap();
        assert_eq!(&b, b"img", "a block is zeroed once, not at every use");
        assert!(r.prepare_block(2) && !r.prepare_block(3));
        r.zero();
        assert!(used(&r).is_empty(), "zero() forgets the blocks");
        r.read(Ipa(0x4000_0000 + (4 << 20) + 16), &mut b).unwrap();
        assert_eq!(b, [0; 3], "and the next use zeroes them again");
    }

    #[test]
    fn bounds() {
        let r = test_ram(0x4000_0000, 0x1000);
        assert!(r.write(Ipa(0x4000_0ffe), b"ok").is_ok());
        let mut out = [0u8; 2];
        r.read(Ipa(0x4000_0ffe), &mut out).unwrap();
        assert_eq!(&out, b"ok");
        assert_eq!(r.read(Ipa(0x4000_0fff), &mut out), Err(OutsideRam), "straddles the end");
        assert_eq!(r.read(Ipa(0x3fff_ffff), &mut out), Err(OutsideRam));
        assert_eq!(r.write(Ipa(u64::MAX - 1), b"ok"), Err(OutsideRam), "wraps");
        assert!(!r.contains(Ipa(0x4000_0001), u64::MAX), "no overflow");
        assert!(r.contains(Ipa(0x4000_1000), 0));
        r.zero();
        r.read(Ipa(0x4000_0ffe), &mut out).unwrap();
        assert_eq!(out, [0, 0]);
    }
}

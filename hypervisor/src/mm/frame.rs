//! Physical frame allocator: a first-fit bitmap over one contiguous range of
//! RAM, 4 KiB frames. VMs are created at boot and their RAM is contiguous and
//! 2 MiB aligned (so stage-2 can use block mappings), so contiguous, aligned
//! allocation is the operation that matters; `free` exists for VM reset and
//! for page-table teardown.

use crate::addr::{PhysAddr, PAGE_SIZE};

pub struct FrameAllocator<'a> {
    base: PhysAddr,
    frames: usize,
    /// Bit set = frame in use.
    bitmap: &'a mut [u64],
    free: usize,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct OutOfMemory {
    pub requested: u64,
    pub free: u64,
}

impl<'a> FrameAllocator<'a> {
    /// Manages `[base, base + frames * 4 KiB)`; `bitmap` must hold `frames` bits.
    pub fn new(base: PhysAddr, frames: usize, bitmap: &'a mut [u64]) -> Self {
        assert!(base.is_aligned(PAGE_SIZE));
        assert!(bitmap.len() * 64 >= frames, "frame bitmap too small");
        bitmap.fill(0);
        Self { base, frames, bitmap, free: frames }
    }

    pub fn free_bytes(&self) -> u64 {
        self.free as u64 * PAGE_SIZE
    }

    fn used(&self, i: usize) -> bool {
        self.bitmap[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, v: bool) {
        if v {
            self.bitmap[i / 64] |= 1 << (i % 64);
        } else {
            self.bitmap[i / 64] &= !(1 << (i % 64));
        }
    }

    /// `bytes` (rounded up to frames) of contiguous memory aligned to `align`
    /// bytes (a power of two, at least 4 KiB).
    pub fn alloc(&mut self, bytes: u64, align: u64) -> Result<PhysAddr, OutOfMemory> {
        let count = bytes.div_ceil(PAGE_SIZE) as usize;
        let align = align.max(PAGE_SIZE);
        debug_assert!(align.is_power_of_two());
        let oom = OutOfMemory { requested: bytes, free: self.free_bytes() };
        if count == 0 || count > self.free {
            return Err(oom);
        }
        let mut i = 0usize;
        while i + count <= self.frames {
            let addr = self.base.raw() + i as u64 * PAGE_SIZE;
            if !addr.is_multiple_of(align) {
                // Jump to the next aligned frame.
                let next = addr.div_ceil(align) * align;
                i = ((next - self.base.raw()) / PAGE_SIZE) as usize;
                continue;
            }
            match (i..i + count).find(|&j| self.used(j)) {
                Some(busy) => i = busy + 1,
                None => {
                    for j in i..i + count {
                        self.set(j, true);
                    }
                    self.free -= count;
                    return Ok(PhysAddr(addr));
                }
            }
        }
        Err(oom)
    }

    /// Returns frames to the pool. Freeing what was not allocated is a
    /// hypervisor bug and panics.
    pub fn free(&mut self, pa: PhysAddr, bytes: u64) {
        let count = bytes.div_ceil(PAGE_SIZE) as usize;
        assert!(pa >= self.base && pa.is_aligned(PAGE_SIZE), "free of foreign frame {pa:?}");
        let first = ((pa.raw() - self.base.raw()) / PAGE_SIZE) as usize;
        assert!(first + count <= self.frames, "free past the end: {pa:?}");
        for j in first..first + count {
            assert!(self.used(j), "double free of frame {:#x}", self.base.raw() + j as u64 * PAGE_SIZE);
            self.set(j, false);
        }
        self.free += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_contiguous_allocation() {
        let mut bits = [0u64; 64]; // 4096 frames = 16 MiB
        let mut fa = FrameAllocator::new(PhysAddr(0x4100_1000), 4096, &mut bits);
        let a = fa.alloc(PAGE_SIZE, PAGE_SIZE).unwrap();
        assert_eq!(a, PhysAddr(0x4100_1000));
        let b = fa.alloc(4 << 20, 2 << 20).unwrap();
        assert_eq!(b, PhysAddr(0x4120_0000));
        let c = fa.alloc(PAGE_SIZE, PAGE_SIZE).unwrap();
        assert_eq!(c, PhysAddr(0x4100_2000), "first fit fills the hole before the block");
        assert_eq!(fa.free_bytes(), (4096 - 2 - 1024) * PAGE_SIZE);
        fa.free(b, 4 << 20);
        assert_eq!(fa.alloc(4 << 20, 2 << 20).unwrap(), b, "freed block is reused");
    }

    #[test]
    fn exhaustion_is_an_error_not_a_panic() {
        let mut bits = [0u64; 1];
        let mut fa = FrameAllocator::new(PhysAddr(0), 64, &mut bits);
        assert!(fa.alloc(65 * PAGE_SIZE, PAGE_SIZE).is_err());
        assert!(fa.alloc(0, PAGE_SIZE).is_err());
        for _ in 0..64 {
            fa.alloc(PAGE_SIZE, PAGE_SIZE).unwrap();
        }
        assert_eq!(fa.alloc(PAGE_SIZE, PAGE_SIZE), Err(OutOfMemory { requested: PAGE_SIZE, free: 0 }));
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn double_free_is_caught() {
        let mut bits = [0u64; 1];
        let mut fa = FrameAllocator::new(PhysAddr(0), 64, &mut bits);
        let a = fa.alloc(PAGE_SIZE, PAGE_SIZE).unwrap();
        fa.free(a, PAGE_SIZE);
        fa.free(a, PAGE_SIZE);
    }
}

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
            // Past whole words of used frames at once: a small allocation
            // after a VM's RAM must not visit each of its frames.
            i = self.next_free(i);
            let addr = self.base.raw() + i as u64 * PAGE_SIZE;
            if !addr.is_multiple_of(align) {
                // Jump to the next aligned frame.
                let next = addr.div_ceil(align) * align;
                i = ((next - self.base.raw()) / PAGE_SIZE) as usize;
                continue;
            }
            if i + count > self.frames {
                break;
            }
            match self.first_used(i, i + count) {
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

    /// The first frame at or after `i` that is free (or `frames`), a word
    /// of the bitmap at a time.
    fn next_free(&self, mut i: usize) -> usize {
        while i < self.frames {
            let w = self.bitmap[i / 64] >> (i % 64);
            let ones = w.trailing_ones() as usize;
            if ones < 64 - i % 64 {
                return (i + ones).min(self.frames);
            }
            i = (i / 64 + 1) * 64;
        }
        self.frames
    }

    /// The first used frame in `[from, to)`, a word of the bitmap at a time.
    fn first_used(&self, from: usize, to: usize) -> Option<usize> {
        let mut i = from;
        while i < to {
            let bits = self.bitmap[i / 64] >> (i % 64);
            let span = (64 - i % 64).min(to - i);
            let mask = if span == 64 { !0 } else { (1u64 << span) - 1 };
            if bits & mask != 0 {
                return Some(i + (bits & mask).trailing_zeros() as usize);
            }
            i += span;
        }
        None
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
    fn search_matches_a_frame_by_frame_model() {
        // Pseudo-random allocations and frees against a plain first-fit
        // model that looks at one frame at a time.
        let mut bits = [0u64; 8]; // 512 frames
        let mut fa = FrameAllocator::new(PhysAddr(0x4000_0000), 500, &mut bits);
        let mut model = [false; 500];
        let mut live: Vec<(PhysAddr, u64)> = Vec::new();
        let mut x = 0x9e37_79b9u32;
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if x & 3 == 0 && !live.is_empty() {
                let (pa, bytes) = live.swap_remove(x as usize % live.len());
                fa.free(pa, bytes);
                let first = ((pa.raw() - 0x4000_0000) / PAGE_SIZE) as usize;
                model[first..first + (bytes / PAGE_SIZE) as usize].fill(false);
                continue;
            }
            let count = 1 + (x >> 8) as usize % 70;
            let align = PAGE_SIZE << ((x >> 16) % 4);
            let want = (0..=500 - count.min(500)).find(|&i| {
                (0x4000_0000 + i as u64 * PAGE_SIZE).is_multiple_of(align) && !model[i..i + count].contains(&true)
            });
            match (fa.alloc(count as u64 * PAGE_SIZE, align), want) {
                (Ok(pa), Some(i)) => {
                    assert_eq!(pa, PhysAddr(0x4000_0000 + i as u64 * PAGE_SIZE));
                    model[i..i + count].fill(true);
                    live.push((pa, count as u64 * PAGE_SIZE));
                }
                (Err(_), None) => {}
                (got, want) => panic!("allocator {got:?}, model {want:?}"),
            }
        }
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

//! A `virtio-drivers` [`Hal`] for guests that run with their MMU off or
//! identity-mapped (bare-metal programs, an RTOS): a guest-physical address
//! is the address the guest uses, and the device (Tessera's virtio-mmio
//! emulation) reads guest memory directly, so sharing a buffer needs no
//! copy and no cache maintenance (Tessera's devices are coherent: the DTB
//! says `dma-coherent`).
//!
//! DMA memory (the virtqueues) comes from a static pool and is never reused:
//! drivers of this kind set their devices up once. The pool's size is
//! [`DMA_POOL_BYTES`]; asking for more is a program error and panics.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// Enough for a few small devices (each queue of 8-16 entries needs 1-3 pages).
pub const DMA_POOL_BYTES: usize = 64 * 1024;

#[repr(C, align(4096))]
struct Pool(core::cell::UnsafeCell<[u8; DMA_POOL_BYTES]>);

// SAFETY: the bump allocator hands out disjoint page ranges (an atomic
// cursor), so no two users ever share bytes of the pool.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(core::cell::UnsafeCell::new([0; DMA_POOL_BYTES]));
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The [`Hal`] to instantiate `virtio-drivers` devices with, e.g.
/// `VirtIORng::<IdentityHal, MmioTransport>::new(transport)`.
pub struct IdentityHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned, never-reused memory of
// the requested size; addresses are identical for the guest and the device
// (identity mapping, see the module doc), so `share` returns the buffer's
// own address and `mmio_phys_to_virt` the register address.
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let bytes = pages * PAGE_SIZE;
        let offset = NEXT.fetch_add(bytes, Ordering::AcqRel);
        assert!(offset + bytes <= DMA_POOL_BYTES, "the virtio DMA pool ({DMA_POOL_BYTES} bytes) is exhausted");
        // SAFETY: [offset, offset + bytes) is inside the pool and handed out
        // only here (the cursor moved past it).
        let p = unsafe { (POOL.0.get() as *mut u8).add(offset) };
        // SAFETY: as above; zeroed as the Hal contract asks.
        unsafe { core::ptr::write_bytes(p, 0, bytes) };
        (p as usize as PhysAddr, NonNull::new(p).expect("the pool is not at address 0"))
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        0 // never reused (see the module doc)
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as usize as *mut u8).expect("device registers at address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_page_aligned_zeroed_and_disjoint() {
        let (a, pa) = IdentityHal::dma_alloc(1, BufferDirection::Both);
        let (b, _) = IdentityHal::dma_alloc(2, BufferDirection::Both);
        assert_eq!(a % PAGE_SIZE as u64, 0);
        assert_eq!(b % PAGE_SIZE as u64, 0);
        assert!(b >= a + PAGE_SIZE as u64 || a >= b + 2 * PAGE_SIZE as u64);
        // SAFETY: one page we were just given.
        assert!(unsafe { core::slice::from_raw_parts(pa.as_ptr(), PAGE_SIZE) }.iter().all(|&x| x == 0));
        let buf = [1u8, 2, 3];
        // SAFETY: `buf` outlives the (no-op) share.
        let shared = unsafe { IdentityHal::share(NonNull::from(&buf[..]), BufferDirection::DriverToDevice) };
        assert_eq!(shared, buf.as_ptr() as usize as u64);
    }
}

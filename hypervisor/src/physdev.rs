//! The board's own virtio devices (QEMU's virtio-mmio slots), driven by the
//! hypervisor through the `virtio-drivers` crate. Each is a backend that
//! VMs share: today the entropy source (virtio-rng).
//!
//! DMA memory comes from the hypervisor's frame allocator; RAM is
//! identity-mapped in HYP mode, so a buffer's address is its physical
//! address. QEMU does not model caches; on hardware these buffers would
//! need cache maintenance or a non-cacheable mapping (not done yet).

use crate::addr::{PhysAddr, PAGE_SIZE};
use crate::mm::frame::FrameAllocator;
use crate::{info, warn};
use core::ptr::NonNull;
use spin::Mutex;
use virtio_drivers::device::rng::VirtIORng;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal};

/// Free RAM after boot (the runtime hands its allocator over here).
pub static FRAMES: Mutex<Option<FrameAllocator<'static>>> = Mutex::new(None);

pub struct HypHal;

// SAFETY: DMA buffers are fresh, zeroed frames owned by the device until
// freed; physical and virtual addresses are the same (identity map), so
// `share` returns the buffer's own address and nothing needs copying.
unsafe impl Hal for HypHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (u64, NonNull<u8>) {
        let pa = FRAMES
            .lock()
            .as_mut()
            .and_then(|f| f.alloc(pages as u64 * PAGE_SIZE, PAGE_SIZE).ok())
            .expect("out of memory for virtio DMA buffers");
        let p = pa.raw() as usize as *mut u8;
        // SAFETY: a fresh, identity-mapped RAM frame range owned by us.
        unsafe { core::ptr::write_bytes(p, 0, pages * PAGE_SIZE as usize) };
        (pa.raw(), NonNull::new(p).expect("RAM is not at address 0"))
    }

    unsafe fn dma_dealloc(paddr: u64, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        if let Some(f) = FRAMES.lock().as_mut() {
            f.free(PhysAddr(paddr), pages as u64 * PAGE_SIZE);
        }
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: u64, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as usize as *mut u8).expect("device at address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> u64 {
        buffer.as_ptr() as *mut u8 as usize as u64
    }

    unsafe fn unshare(_paddr: u64, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

type Rng = VirtIORng<HypHal, MmioTransport<'static>>;

/// The board's virtio-rng, shared by every VM that has a virtio-rng.
static RNG: Mutex<Option<Rng>> = Mutex::new(None);

/// Looks at every virtio-mmio slot the DTB named and takes the devices it
/// has a backend for.
pub fn probe(slots: &[u32]) {
    for &base in slots {
        let header = NonNull::new(base as usize as *mut VirtIOHeader).expect("slot at address 0");
        // SAFETY: `base` is a virtio-mmio register window the host DTB named,
        // identity-mapped as device memory; nothing else uses it.
        let transport = match unsafe { MmioTransport::new(header, 0x200) } {
            Ok(t) => t,
            Err(_) => continue, // an empty slot (device ID 0) or not virtio
        };
        if transport.device_type() == DeviceType::EntropySource && RNG.lock().is_none() {
            match Rng::new(transport) {
                Ok(r) => {
                    info!("physical virtio-rng at {base:#010x}");
                    *RNG.lock() = Some(r);
                }
                Err(e) => warn!("virtio-rng at {base:#010x} did not start: {e:?}"),
            }
        }
    }
}

pub fn has_rng() -> bool {
    RNG.lock().is_some()
}

/// Fills `buf` from the board's virtio-rng; returns how much was filled
/// (0 if there is none or it failed).
pub fn entropy(buf: &mut [u8]) -> usize {
    match RNG.lock().as_mut() {
        Some(r) => r.request_entropy(buf).unwrap_or(0),
        None => 0,
    }
}

//! The board's own virtio devices (QEMU's virtio-mmio slots), driven by the
//! hypervisor through the `virtio-drivers` crate. Each is a backend that
//! VMs share: the entropy source (virtio-rng) and the disks (virtio-blk,
//! found by their serial, which is the disk's name in the configuration).
//!
//! Disk I/O is synchronous: the vCPU whose request it is waits for the
//! physical device, holding that disk's lock (another VM's request to the
//! same disk waits its turn; other disks are independent).
//!
//! DMA memory comes from the hypervisor's frame allocator; RAM is
//! identity-mapped in HYP mode, so a buffer's address is its physical
//! address. QEMU does not model caches; on hardware these buffers would
//! need cache maintenance or a non-cacheable mapping (not done yet).

use crate::addr::{PhysAddr, PAGE_SIZE};
use crate::devices::wiring::DiskIo;
use crate::mm::frame::FrameAllocator;
use crate::virtio::blk::BackendError;
use crate::{info, warn};
use core::ptr::NonNull;
use spin::Mutex;
use virtio_drivers::device::blk::VirtIOBlk;
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

type Blk = VirtIOBlk<HypHal, MmioTransport<'static>>;

/// The board's disks, in the payload's disk order.
static DISKS: [Mutex<Option<Blk>>; tessera_payload::MAX_DISKS] =
    [const { Mutex::new(None) }; tessera_payload::MAX_DISKS];

/// The disks as VMs' block devices reach them.
pub struct PhysDisks;
pub static PHYS_DISKS: PhysDisks = PhysDisks;

/// Runs `f` on disk `disk` under its lock; an absent disk or a failed
/// request is a backend error.
fn with_disk(disk: u32, f: impl FnOnce(&mut Blk) -> virtio_drivers::Result) -> Result<(), BackendError> {
    let mut d = DISKS.get(disk as usize).ok_or(BackendError)?.lock();
    f(d.as_mut().ok_or(BackendError)?).map_err(|_| BackendError)
}

impl DiskIo for PhysDisks {
    fn read(&self, disk: u32, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let sector = usize::try_from(sector).map_err(|_| BackendError)?;
        with_disk(disk, |d| d.read_blocks(sector, buf))
    }
    fn write(&self, disk: u32, sector: u64, buf: &[u8]) -> Result<(), BackendError> {
        let sector = usize::try_from(sector).map_err(|_| BackendError)?;
        with_disk(disk, |d| d.write_blocks(sector, buf))
    }
    fn flush(&self, disk: u32) -> Result<(), BackendError> {
        with_disk(disk, |d| d.flush())
    }
}

/// The capacity in bytes of disk `disk`, if the board has it.
pub fn disk_size(disk: usize) -> Option<u64> {
    DISKS.get(disk)?.lock().as_ref().map(|d| d.capacity() * 512)
}

/// Looks at every virtio-mmio slot the DTB named and takes the devices it
/// has a backend for: the first virtio-rng, and each virtio-blk whose
/// serial is one of `disks` (the payload's disk names, in order).
pub fn probe(slots: &[u32], disks: &[&str]) {
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
        } else if transport.device_type() == DeviceType::Block {
            let mut blk = match Blk::new(transport) {
                Ok(b) => b,
                Err(e) => {
                    warn!("virtio-blk at {base:#010x} did not start: {e:?}");
                    continue;
                }
            };
            let mut id = [0u8; 20];
            let n = blk.device_id(&mut id).unwrap_or(0);
            let serial = core::str::from_utf8(&id[..n]).unwrap_or("");
            match disks.iter().position(|d| *d == serial) {
                Some(k) if DISKS[k].lock().is_none() => {
                    info!("disk \"{serial}\": {} MiB, virtio-blk at {base:#010x}", blk.capacity() >> 11);
                    *DISKS[k].lock() = Some(blk);
                }
                _ => warn!(
                    "virtio-blk at {base:#010x} (serial {serial:?}) is not a disk of the configuration; left alone"
                ),
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

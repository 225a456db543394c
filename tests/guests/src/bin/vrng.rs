//! A bare-metal guest that drives its virtio-rng with the `virtio-drivers`
//! crate over `tessera-guest`'s `IdentityHal`: the path an RTOS takes to
//! Tessera's virtio devices.
#![no_std]
#![no_main]

use core::ptr::NonNull;
use guest_rt::println;
use tessera_guest::virtio_hal::IdentityHal;
use virtio_drivers::device::rng::VirtIORng;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};

guest_rt::guest_main!(main);

fn main() -> u32 {
    let header = NonNull::new(tessera_payload::guest_map::VIRTIO0 as usize as *mut VirtIOHeader).expect("non-null");
    // SAFETY: virtio-mmio slot 0 of this VM, as its DTB says; used by nothing else.
    let transport = match unsafe { MmioTransport::new(header, tessera_payload::guest_map::VIRTIO_SLOT_SIZE as usize) } {
        Ok(t) => t,
        Err(e) => {
            println!("no virtio device in slot 0: {e:?}");
            return 1;
        }
    };
    let mut rng = match VirtIORng::<IdentityHal, _>::new(transport) {
        Ok(r) => r,
        Err(e) => {
            println!("virtio-rng did not start: {e:?}");
            return 1;
        }
    };
    // 4096 bytes, 256 a request, into a histogram.
    let mut counts = [0u32; 256];
    let mut total = 0usize;
    let mut buf = [0u8; 256];
    for _ in 0..16 {
        match rng.request_entropy(&mut buf) {
            Ok(n) => {
                buf[..n].iter().for_each(|&b| counts[b as usize] += 1);
                total += n;
            }
            Err(e) => {
                println!("request_entropy failed: {e:?}");
                return 1;
            }
        }
    }
    // Pearson's chi-square (255 degrees of freedom), times 16: uniform bytes
    // give 255 +- 23; below 150 or above 420 is about one run in a billion.
    let chi16: u32 = counts.iter().map(|&c| (c as i32 - 16).unsigned_abs().pow(2)).sum();
    println!("virtio-rng through virtio-drivers: {total} bytes, chi-square of the bytes {}", chi16 / 16);
    if total == 4096 && (150 * 16..420 * 16).contains(&chi16) {
        println!("virtio-rng bytes look random");
        0
    } else {
        println!("virtio-rng bytes do NOT look random");
        1
    }
}

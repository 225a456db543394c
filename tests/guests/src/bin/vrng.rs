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
    let mut buf = [0u8; 256];
    let n = match rng.request_entropy(&mut buf) {
        Ok(n) => n,
        Err(e) => {
            println!("request_entropy failed: {e:?}");
            return 1;
        }
    };
    let nonzero = buf[..n].iter().filter(|&&b| b != 0).count();
    println!("virtio-rng through virtio-drivers: {n} bytes, {nonzero} non-zero");
    // Random bytes are zero 1 time in 256.
    if n == buf.len() && nonzero > 240 {
        0
    } else {
        1
    }
}

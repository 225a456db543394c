//! A bare-metal guest that drives two virtio-blk devices with the
//! `virtio-drivers` crate over `tessera-guest`'s `IdentityHal`: slot 0 is
//! a writable range of a disk whose sectors hold "sector N" (N counted from
//! the start of the disk), slot 1 a read-only range at the disk's start.
//! Each check prints one line; the last says whether all passed.
#![no_std]
#![no_main]

use core::ptr::NonNull;
use guest_rt::println;
use tessera_guest::virtio_hal::IdentityHal;
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};

guest_rt::guest_main!(main);

type Blk = VirtIOBlk<IdentityHal, MmioTransport<'static>>;

fn open(slot: usize) -> Option<Blk> {
    let (base, _) = tessera_payload::guest_map::virtio_slot(slot as u32);
    let base = base as usize;
    let header = NonNull::new(base as *mut VirtIOHeader)?;
    // SAFETY: virtio-mmio slot `slot` of this VM, as its DTB says; used by nothing else.
    let transport = match unsafe { MmioTransport::new(header, tessera_payload::guest_map::VIRTIO_SLOT_SIZE as usize) } {
        Ok(t) => t,
        Err(e) => {
            println!("no virtio device in slot {slot}: {e:?}");
            return None;
        }
    };
    match Blk::new(transport) {
        Ok(b) => Some(b),
        Err(e) => {
            println!("virtio-blk in slot {slot} did not start: {e:?}");
            None
        }
    }
}

/// The text at the start of a sector, up to its first NUL.
fn label(sector: &[u8; 512]) -> &str {
    let end = sector.iter().position(|&b| b == 0).unwrap_or(32).min(32);
    core::str::from_utf8(&sector[..end]).unwrap_or("?")
}

fn main() -> u32 {
    let (Some(mut rw), Some(mut ro)) = (open(0), open(1)) else { return 1 };
    let mut ok = true;
    let mut check = |cond: bool, what: &str| {
        if !cond {
            println!("WRONG: {what}");
            ok = false;
        }
    };
    let mut buf = [0u8; 512];

    // The writable range starts 1 MiB (2048 sectors) into the disk.
    let r = rw.read_blocks(7, &mut buf);
    println!("rw: {} sectors, read sector 7: {:?}", rw.capacity(), label(&buf));
    check(r.is_ok() && label(&buf) == "sector 2055" && rw.capacity() == 4096 && !rw.readonly(), "rw range read");
    let mut pattern = [0u8; 512];
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    let w = rw.write_blocks(5, &pattern);
    let r = rw.read_blocks(5, &mut buf);
    check(w.is_ok() && r.is_ok() && buf == pattern, "rw write then read back");
    if w.is_ok() && buf == pattern {
        println!("rw: wrote sector 5 and read it back");
    }
    if rw.read_blocks(4096, &mut buf).is_err() {
        println!("rw: a read past the end of the range is refused");
    } else {
        check(false, "a read past the end of the range succeeded");
    }

    let r = ro.read_blocks(2047, &mut buf);
    println!(
        "ro: {} sectors, {}, read sector 2047: {:?}",
        ro.capacity(),
        if ro.readonly() { "read-only" } else { "writable" },
        label(&buf)
    );
    check(r.is_ok() && label(&buf) == "sector 2047" && ro.readonly(), "ro range read");
    if ro.write_blocks(0, &pattern).is_err() {
        println!("ro: a write is refused");
    } else {
        check(false, "a write to the read-only range succeeded");
    }
    let r = ro.read_blocks(0, &mut buf);
    check(r.is_ok() && label(&buf) == "sector 0", "sector 0 unchanged after the refused write");

    if ok {
        println!("all block checks passed");
        0
    } else {
        1
    }
}

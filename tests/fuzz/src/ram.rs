//! A guest's RAM for device targets: a plain buffer that also keeps a log
//! of what the device did to it during one pass, so a target can check
//! where it wrote and how much it moved.

use std::sync::Mutex;
use tessera::addr::Ipa;
use tessera::mem::{GuestMemory, OutsideRam};
use tessera::virtio::queue::VIRTQ_DESC_F_WRITE;

/// Where fuzzed RAM starts (a VM's RAM base on the virt board).
pub const BASE: u64 = 0x4000_0000;
/// How much there is: room for rings, indirect tables and buffers.
pub const SIZE: usize = 256 << 10;

/// What a device did during one pass.
#[derive(Default, Clone, Debug)]
pub struct Log {
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Every write, (ipa, len).
    pub writes: Vec<(u64, u64)>,
    /// Device-writable buffers named by the descriptors the device read
    /// (16-byte reads: every descriptor read is one, so this is a superset
    /// of the buffers of the chains it took).
    pub writable: Vec<(u64, u64)>,
    /// Accesses refused for lying outside RAM.
    pub outside: u64,
}

pub struct Ram {
    bytes: Mutex<Vec<u8>>,
    log: Mutex<Log>,
}

impl Default for Ram {
    fn default() -> Self {
        Self { bytes: Mutex::new(vec![0; SIZE]), log: Mutex::default() }
    }
}

impl Ram {
    /// This thread's RAM, zeroed: one allocation for every input, so a
    /// run is not dominated by mapping and faulting in fresh pages.
    pub fn fresh() -> &'static Ram {
        thread_local! {
            static RAM: &'static Ram = Box::leak(Box::default());
        }
        let ram = RAM.with(|r| *r);
        ram.clear();
        ram
    }

    /// The log so far, emptied.
    pub fn take_log(&self) -> Log {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    pub fn clear(&self) {
        self.bytes.lock().unwrap().fill(0);
        self.take_log();
    }

    /// A driver's store: not logged.
    pub fn poke(&self, at: u64, data: &[u8]) {
        if let Some(off) = offset(at, data.len()) {
            self.bytes.lock().unwrap()[off..off + data.len()].copy_from_slice(data);
        }
    }

    /// A driver's load: not logged; zero outside RAM.
    pub fn peek(&self, at: u64, buf: &mut [u8]) {
        match offset(at, buf.len()) {
            Some(off) => buf.copy_from_slice(&self.bytes.lock().unwrap()[off..off + buf.len()]),
            None => buf.fill(0),
        }
    }

    pub fn w16(&self, at: u64, v: u16) {
        self.poke(at, &v.to_le_bytes());
    }

    pub fn r16(&self, at: u64) -> u16 {
        let mut b = [0; 2];
        self.peek(at, &mut b);
        u16::from_le_bytes(b)
    }

    pub fn r32(&self, at: u64) -> u32 {
        let mut b = [0; 4];
        self.peek(at, &mut b);
        u32::from_le_bytes(b)
    }

    /// Writes descriptor `i` of the table at `table`.
    pub fn desc(&self, table: u64, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..].copy_from_slice(&next.to_le_bytes());
        self.poke(table.wrapping_add(16 * i), &b);
    }
}

fn offset(at: u64, len: usize) -> Option<usize> {
    let end = at.checked_add(len as u64)?;
    (at >= BASE && end <= BASE + SIZE as u64).then(|| (at - BASE) as usize)
}

impl GuestMemory for Ram {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), OutsideRam> {
        let mut log = self.log.lock().unwrap();
        let Some(off) = offset(ipa.raw(), buf.len()) else {
            log.outside += 1;
            return Err(OutsideRam);
        };
        buf.copy_from_slice(&self.bytes.lock().unwrap()[off..off + buf.len()]);
        log.bytes_read += buf.len() as u64;
        if buf.len() == 16 {
            let addr = u64::from_le_bytes(buf[..8].try_into().unwrap());
            let len = u32::from_le_bytes(buf[8..12].try_into().unwrap());
            let flags = u16::from_le_bytes([buf[12], buf[13]]);
            if flags & VIRTQ_DESC_F_WRITE != 0 {
                log.writable.push((addr, len as u64));
            }
        }
        Ok(())
    }

    fn write(&self, ipa: Ipa, data: &[u8]) -> Result<(), OutsideRam> {
        let mut log = self.log.lock().unwrap();
        let Some(off) = offset(ipa.raw(), data.len()) else {
            log.outside += 1;
            return Err(OutsideRam);
        };
        self.bytes.lock().unwrap()[off..off + data.len()].copy_from_slice(data);
        log.bytes_written += data.len() as u64;
        log.writes.push((ipa.raw(), data.len() as u64));
        Ok(())
    }

    fn contains(&self, ipa: Ipa, len: u64) -> bool {
        ipa.raw().checked_add(len).is_some_and(|end| ipa.raw() >= BASE && end <= BASE + SIZE as u64)
    }
}

/// Is `[at, at + len)` inside one of `ranges`?
pub fn covered(ranges: &[(u64, u64)], at: u64, len: u64) -> bool {
    ranges.iter().any(|&(a, l)| at >= a && at.saturating_add(len) <= a.saturating_add(l))
}

//! Stolen time (hypercall ABI 1.3, `TESSERA_STEAL_TIME_SET`): for each vCPU
//! that registers a record, how long it could have run but waited for its
//! physical CPU, and whether it is waiting right now (the "preempted" flag a
//! guest's spinning and scheduling code consults).
//!
//! A vCPU waits from the moment it is descheduled while it can still run
//! (its slice ended, it yielded) to the moment it runs again. A blocked
//! vCPU (WFI) that an interrupt makes runnable is not counted for the time
//! until its pCPU next schedules: that wait is short (the owner is kicked)
//! and knowing its start would cost every wake-up a timestamp.
//!
//! The record is only written when the vCPU is descheduled or resumed, by
//! the pCPU that owns it, so the vCPU itself never reads one mid-update;
//! other vCPUs of the VM may (the flag), hence the sequence word.

use crate::addr::Ipa;
use crate::mem::{GuestMemory, GuestRam, OutsideRam};
use core::sync::atomic::{fence, Ordering};
use hypercall_abi::{STEAL_TIME_PREEMPTED, STEAL_TIME_RECORD_SIZE};

/// Counter ticks to nanoseconds, without a division on the hot path:
/// `ns = ticks * mult >> 32`, `mult = 10^9 * 2^32 / hz`.
#[derive(Clone, Copy, Debug)]
pub struct TickNs {
    mult: u64,
}

impl TickNs {
    pub fn new(hz: u64) -> Self {
        Self { mult: ((1_000_000_000u128 << 32) / hz.max(1) as u128) as u64 }
    }

    pub fn ns(self, ticks: u64) -> u64 {
        ((ticks as u128 * self.mult as u128) >> 32) as u64
    }
}

/// Why a record cannot be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRecord {
    Misaligned,
    OutsideRam,
}

/// Whether a guest may register a record at `ipa`: aligned to its size and
/// wholly inside the VM's RAM. The dispatcher asks before
/// [`StealClock::register`].
pub fn check_record(mem: &dyn GuestMemory, ipa: Ipa) -> Result<(), BadRecord> {
    if !ipa.raw().is_multiple_of(STEAL_TIME_RECORD_SIZE as u64) {
        Err(BadRecord::Misaligned)
    } else if !mem.contains(ipa, STEAL_TIME_RECORD_SIZE as u64) {
        Err(BadRecord::OutsideRam)
    } else {
        Ok(())
    }
}

/// One vCPU's stolen-time accounting; lives in its context. A restarted
/// vCPU (CPU_ON after CPU_OFF, a VM reset) keeps what was stolen (the count
/// never goes back: guests take differences) but no record.
#[derive(Debug, Default)]
pub struct StealClock {
    record: Option<Ipa>,
    seq: u32,
    /// Counter ticks spent waiting, over the vCPU's life.
    stolen: u64,
    /// Descheduled while runnable at this counter value.
    waiting_since: Option<u64>,
}

impl StealClock {
    /// `TESSERA_STEAL_TIME_SET`: starts (or, with `None`, stops) keeping the
    /// record at `ipa`, which [`check_record`] accepted, and writes it at
    /// once.
    pub fn register(&mut self, ram: &GuestRam, ipa: Option<Ipa>, conv: TickNs) {
        debug_assert!(ipa.is_none_or(|ipa| check_record(ram, ipa).is_ok()), "unchecked record {ipa:?}");
        // Writes to a checked record cannot fail; `publish` stores word by
        // word, each checked again, so nothing lands outside RAM regardless.
        self.record = ipa.filter(|&ipa| ram.write(ipa, &[0; STEAL_TIME_RECORD_SIZE as usize]).is_ok());
        self.seq = 0;
        let _ = self.publish(ram, conv);
    }

    /// The vCPU starts again from scratch (CPU_ON, a VM reset): no record,
    /// no wait, the same count.
    pub fn restarted(self) -> Self {
        Self { stolen: self.stolen, ..Self::default() }
    }

    /// Descheduled at `now` while it could still run.
    #[inline]
    pub fn preempted(&mut self, now: u64, ram: &GuestRam, conv: TickNs) {
        self.waiting_since = Some(now);
        if self.record.is_some() {
            let _ = self.publish(ram, conv);
        }
    }

    /// About to run at `now`.
    #[inline]
    pub fn resumed(&mut self, now: u64, ram: &GuestRam, conv: TickNs) {
        if let Some(since) = self.waiting_since.take() {
            self.stolen += now.saturating_sub(since);
            if self.record.is_some() {
                let _ = self.publish(ram, conv);
            }
        }
    }

    /// Nanoseconds stolen so far (what the record says).
    pub fn stolen_ns(&self, conv: TickNs) -> u64 {
        conv.ns(self.stolen)
    }

    fn publish(&mut self, ram: &GuestRam, conv: TickNs) -> Result<(), OutsideRam> {
        let Some(ipa) = self.record else { return Ok(()) };
        let at = |off: u64| Ipa(ipa.raw() + off);
        let ns = conv.ns(self.stolen);
        let flags = if self.waiting_since.is_some() { STEAL_TIME_PREEMPTED } else { 0 };
        // Odd while the fields change; the fences order the stores as a
        // reader on another vCPU expects them.
        ram.store_u32(ipa, self.seq | 1)?;
        fence(Ordering::Release);
        ram.store_u32(at(4), flags)?;
        ram.store_u32(at(8), ns as u32)?;
        ram.store_u32(at(12), (ns >> 32) as u32)?;
        fence(Ordering::Release);
        self.seq = (self.seq | 1).wrapping_add(1);
        ram.store_u32(ipa, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 62_500_000; // QEMU virt's counter: 16 ns a tick

    fn record(ram: &GuestRam, ipa: u64) -> (u32, u32, u64) {
        let mut b = [0u8; 16];
        ram.read(Ipa(ipa), &mut b).unwrap();
        let w = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        (w(0), w(4), w(8) as u64 | (w(12) as u64) << 32)
    }

    #[test]
    fn ticks_become_nanoseconds() {
        assert_eq!(TickNs::new(HZ).ns(1000), 16_000);
        assert_eq!(TickNs::new(24_000_000).ns(24_000_000), 999_999_999, "at most 1 ns short in a second");
        assert_eq!(TickNs::new(1_000_000_000).ns(u64::MAX >> 8), u64::MAX >> 8);
    }

    #[test]
    fn waits_are_counted_and_flagged() {
        let ram = crate::mem::test_ram(0x4000_0000, 0x1000);
        let conv = TickNs::new(HZ);
        let mut c = StealClock::default();
        ram.write(Ipa(0x4000_0040), &[0xff; 64]).unwrap();
        c.register(&ram, Some(Ipa(0x4000_0040)), conv);
        let mut rest = [0xffu8; 48];
        ram.read(Ipa(0x4000_0050), &mut rest).unwrap();
        assert_eq!(rest, [0; 48], "reserved bytes are zero");
        assert_eq!(record(&ram, 0x4000_0040), (2, 0, 0));
        c.resumed(100, &ram, conv);
        assert_eq!(record(&ram, 0x4000_0040), (2, 0, 0), "running without a wait changes nothing");
        c.preempted(1_000, &ram, conv);
        assert_eq!(record(&ram, 0x4000_0040), (4, STEAL_TIME_PREEMPTED, 0));
        c.resumed(3_000, &ram, conv);
        assert_eq!(record(&ram, 0x4000_0040), (6, 0, 32_000));
        c.preempted(5_000, &ram, conv);
        c.resumed(5_500, &ram, conv);
        assert_eq!(record(&ram, 0x4000_0040), (10, 0, 40_000));
        assert_eq!(c.stolen_ns(conv), 40_000);
        // CPU_OFF, CPU_ON: registered again, the count goes on.
        let mut c = c.restarted();
        c.preempted(6_000, &ram, conv);
        assert_eq!(record(&ram, 0x4000_0040), (10, 0, 40_000), "no record until registered again");
        c.register(&ram, Some(Ipa(0x4000_0040)), conv);
        c.resumed(7_000, &ram, conv);
        assert_eq!(record(&ram, 0x4000_0040), (4, 0, 56_000), "never goes back");
    }

    #[test]
    fn bad_records_are_refused_and_zero_stops() {
        let ram = crate::mem::test_ram(0x4000_0000, 0x1000);
        let conv = TickNs::new(HZ);
        let mut c = StealClock::default();
        assert_eq!(check_record(&ram, Ipa(0x4000_0020)), Err(BadRecord::Misaligned));
        assert_eq!(check_record(&ram, Ipa(0x4000_0fc0 + 64)), Err(BadRecord::OutsideRam));
        assert_eq!(check_record(&ram, Ipa(0x3fff_ffc0)), Err(BadRecord::OutsideRam));
        assert_eq!(check_record(&ram, Ipa(0x4000_0fc0)), Ok(()));
        c.register(&ram, Some(Ipa(0x4000_0fc0)), conv);
        c.register(&ram, None, conv);
        c.preempted(10, &ram, conv);
        assert_eq!(record(&ram, 0x4000_0fc0), (2, 0, 0), "no longer written once stopped");
    }
}

//! Stage-2 abort decoding and the MMIO bus.
//!
//! A guest access to an IPA without a stage-2 mapping traps with HSR class
//! 0x24 (data abort from a lower exception level). When the syndrome is valid
//! (ISV, Arm ARM B3.13.6) it names the access size and register, and the bus
//! can emulate the access; anything it cannot decode or route stops the VM.

use crate::addr::Ipa;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Translation(u8),
    AccessFlag(u8),
    Permission(u8),
    Other(u8),
}

impl FaultKind {
    /// From a long-descriptor fault status code (DFSC or IFSC).
    pub fn from_fsc(fsc: u32) -> Self {
        let level = (fsc & 3) as u8;
        match fsc & 0x3c {
            0x04 => FaultKind::Translation(level),
            0x08 => FaultKind::AccessFlag(level),
            0x0c => FaultKind::Permission(level),
            _ => FaultKind::Other(fsc as u8),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            FaultKind::Translation(_) => "no stage-2 mapping",
            FaultKind::AccessFlag(_) => "access flag fault",
            FaultKind::Permission(_) => "stage-2 permission fault",
            // The data fault status codes of the long-descriptor format
            // (Arm ARM B3.13.3, table B3-24).
            FaultKind::Other(0x10) => "synchronous external abort",
            FaultKind::Other(0x11) => "asynchronous external abort",
            FaultKind::Other(0x14..=0x17) => "synchronous external abort on a table walk",
            FaultKind::Other(0x18 | 0x19 | 0x1c..=0x1f) => "parity error",
            FaultKind::Other(0x21) => "alignment fault",
            FaultKind::Other(0x22) => "debug event",
            FaultKind::Other(0x30) => "TLB conflict abort",
            FaultKind::Other(_) => "abort of an unknown kind",
        }
    }
}

/// A decoded data-abort syndrome (HSR.ISS for EC 0x24).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    /// The instruction syndrome below is valid (single-register load/store).
    pub isv: bool,
    /// Access size in bytes: 1, 2 or 4.
    pub size: u8,
    pub sign_extend: bool,
    /// The transfer register (SRT).
    pub reg: u8,
    pub write: bool,
    /// The fault happened on the guest's own stage-1 table walk.
    pub s1ptw: bool,
    pub fault: FaultKind,
}

impl DataAbort {
    pub fn decode(iss: u32) -> Self {
        DataAbort {
            isv: iss & (1 << 24) != 0,
            size: 1 << ((iss >> 22) & 3),
            sign_extend: iss & (1 << 21) != 0,
            reg: ((iss >> 16) & 0xf) as u8,
            write: iss & (1 << 6) != 0,
            s1ptw: iss & (1 << 7) != 0,
            fault: FaultKind::from_fsc(iss & 0x3f),
        }
    }
}

/// The faulting IPA from HPFAR (IPA[39:12] in bits [31:4]) and the page
/// offset from HDFAR.
pub fn fault_ipa(hpfar: u32, hdfar: u32) -> Ipa {
    Ipa(((hpfar as u64 >> 4) << 12) | (hdfar as u64 & 0xfff))
}

/// The trapped vCPU's registers as an instruction names them (0-14).
/// `GuestRegs` has r0-r12 and LR_usr; the runtime adds the banked SP/LR of
/// the guest's current mode, which stay in the CPU.
pub trait Regs {
    fn get(&self, n: u8) -> Option<u32>;
    fn set(&mut self, n: u8, v: u32) -> bool;
}

impl Regs for crate::context::GuestRegs {
    fn get(&self, n: u8) -> Option<u32> {
        crate::context::GuestRegs::get(self, n)
    }
    fn set(&mut self, n: u8, v: u32) -> bool {
        crate::context::GuestRegs::set(self, n, v)
    }
}

/// An emulated device region. Implementations see only offsets into their
/// own window and a size already checked to be 1, 2 or 4.
pub trait MmioDevice: Sync {
    fn read(&self, vcpu: u32, offset: u32, size: u8) -> u32;
    fn write(&self, vcpu: u32, offset: u32, size: u8, value: u32);
}

#[derive(Clone, Copy)]
pub struct MmioRegion<'a> {
    pub base: Ipa,
    pub size: u32,
    pub device: &'a dyn MmioDevice,
}

/// The devices of one VM, sorted by base address.
pub struct MmioBus<'a> {
    regions: &'a [MmioRegion<'a>],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioError {
    /// No device at this address.
    Unmapped,
    /// The syndrome does not describe the access (ISV = 0: load/store
    /// multiple, writeback, ...), so it cannot be emulated.
    Undecodable,
    /// The transfer register is SP, a banked LR or PC.
    BadRegister,
    /// The access is not naturally aligned or crosses the device window.
    Misaligned,
}

impl MmioError {
    pub fn describe(self) -> &'static str {
        match self {
            MmioError::Unmapped => "no stage-2 mapping and no device there",
            MmioError::Undecodable => "device access the hypervisor cannot decode (ISV=0)",
            MmioError::BadRegister => "device access through SP/LR/PC",
            MmioError::Misaligned => "misaligned device access",
        }
    }
}

impl<'a> MmioBus<'a> {
    pub const EMPTY: MmioBus<'static> = MmioBus { regions: &[] };

    pub fn new(regions: &'a [MmioRegion<'a>]) -> Self {
        debug_assert!(regions.windows(2).all(|w| w[0].base.raw() + w[0].size as u64 <= w[1].base.raw()));
        Self { regions }
    }

    fn find(&self, ipa: Ipa) -> Option<(&MmioRegion<'a>, u32)> {
        self.regions
            .iter()
            .find(|r| ipa >= r.base && ipa.raw() < r.base.raw() + r.size as u64)
            .map(|r| (r, (ipa.raw() - r.base.raw()) as u32))
    }

    /// Emulates one trapped access. `get`/`set` read and write the guest's
    /// registers (see `GuestRegs::get`).
    pub fn access(&self, vcpu: u32, ipa: Ipa, abort: &DataAbort, regs: &mut impl Regs) -> Result<(), MmioError> {
        let (region, offset) = self.find(ipa).ok_or(MmioError::Unmapped)?;
        // SAS = 0b11 (a doubleword) has no valid syndrome on Armv7: LDRD and
        // STRD report ISV = 0 (Arm ARM B3.13.6).
        if !abort.isv || !matches!(abort.size, 1 | 2 | 4) {
            return Err(MmioError::Undecodable);
        }
        // A mask, not `%`: division is a library call on this target.
        if offset & (abort.size as u32 - 1) != 0 || offset + abort.size as u32 > region.size {
            return Err(MmioError::Misaligned);
        }
        if abort.write {
            let v = regs.get(abort.reg).ok_or(MmioError::BadRegister)?;
            let v = match abort.size {
                1 => v & 0xff,
                2 => v & 0xffff,
                _ => v,
            };
            region.device.write(vcpu, offset, abort.size, v);
        } else {
            if regs.get(abort.reg).is_none() {
                return Err(MmioError::BadRegister);
            }
            let raw = region.device.read(vcpu, offset, abort.size);
            let v = match (abort.size, abort.sign_extend) {
                (1, false) => raw & 0xff,
                (1, true) => raw as u8 as i8 as i32 as u32,
                (2, false) => raw & 0xffff,
                (2, true) => raw as u16 as i16 as i32 as u32,
                _ => raw,
            };
            regs.set(abort.reg, v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::GuestRegs;
    use std::sync::Mutex;

    #[test]
    fn decode_word_store_through_r3() {
        // ISV, SAS=word, SRT=3, WnR, DFSC = level-3 translation fault.
        let iss = (1 << 24) | (2 << 22) | (3 << 16) | (1 << 6) | 0x07;
        let a = DataAbort::decode(iss);
        assert_eq!(
            a,
            DataAbort {
                isv: true,
                size: 4,
                sign_extend: false,
                reg: 3,
                write: true,
                s1ptw: false,
                fault: FaultKind::Translation(3)
            }
        );
        assert_eq!(DataAbort::decode(0x0f).fault, FaultKind::Permission(3));
    }

    #[test]
    fn ipa_from_hpfar() {
        assert_eq!(fault_ipa(0x0020_0000, 0x1234_5678), Ipa(0x2000_0678));
        assert_eq!(fault_ipa(0x0040_0000, 0xfff), Ipa(0x4000_0fff));
    }

    struct Reg(Mutex<Vec<(u32, u8, u32)>>);
    impl MmioDevice for Reg {
        fn read(&self, _: u32, offset: u32, _: u8) -> u32 {
            0xffff_ff80 | offset
        }
        fn write(&self, _: u32, offset: u32, size: u8, value: u32) {
            self.0.lock().unwrap().push((offset, size, value));
        }
    }

    #[test]
    fn bus_routes_and_checks() {
        let dev = Reg(Mutex::new(Vec::new()));
        let regions = [MmioRegion { base: Ipa(0x0900_0000), size: 0x1000, device: &dev }];
        let bus = MmioBus::new(&regions);
        let mut regs = GuestRegs::default();
        regs.r[5] = 0x1234_56aa;
        let store_byte = DataAbort::decode((1 << 24) | (5 << 16) | (1 << 6) | 0x07);
        bus.access(0, Ipa(0x0900_0004), &store_byte, &mut regs).unwrap();
        assert_eq!(dev.0.lock().unwrap()[0], (4, 1, 0xaa));
        let load_sbyte = DataAbort::decode((1 << 24) | (1 << 21) | (2 << 16) | 0x07);
        bus.access(0, Ipa(0x0900_0001), &load_sbyte, &mut regs).unwrap();
        assert_eq!(regs.r[2], 0xffff_ff81, "sign-extended byte load");
        let word = DataAbort::decode((1 << 24) | (2 << 22) | 0x07);
        assert_eq!(bus.access(0, Ipa(0x0900_0002), &word, &mut regs), Err(MmioError::Misaligned));
        assert_eq!(bus.access(0, Ipa(0x0900_1000), &word, &mut regs), Err(MmioError::Unmapped));
        assert_eq!(bus.access(0, Ipa(0x0900_0000), &DataAbort::decode(0x07), &mut regs), Err(MmioError::Undecodable));
        let via_sp = DataAbort::decode((1 << 24) | (2 << 22) | (13 << 16) | 0x07);
        assert_eq!(bus.access(0, Ipa(0x0900_0000), &via_sp, &mut regs), Err(MmioError::BadRegister));
        let doubleword = DataAbort::decode((1 << 24) | (3 << 22) | (2 << 16) | (1 << 6) | 0x07);
        assert_eq!(doubleword.size, 8);
        assert_eq!(bus.access(0, Ipa(0x0900_0000), &doubleword, &mut regs), Err(MmioError::Undecodable));
        assert_eq!(dev.0.lock().unwrap().len(), 1, "nothing but the first store reached the device");
    }
}

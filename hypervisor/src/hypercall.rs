//! The hypercall dispatcher: SMCCC function IDs from `hvc #0` to actions.
//!
//! The arch layer hands over r0-r7 of the trapped vCPU; this module decides
//! what the call means using only the [`Caller`] interface, so every rule
//! (bounds, error codes, PSCI state checks) is tested on the host. Nothing
//! here allocates or takes a global lock: the null call is a match and a
//! return.

use crate::addr::Ipa;
use crate::mem::GuestMemory;
use hypercall_abi::{feature, psci, Error, Function};

/// What the dispatcher needs to know about, and do to, the calling vCPU's VM.
pub trait Caller {
    fn vm_id(&self) -> u32;
    fn vcpu_count(&self) -> u32;
    fn vcpu_index(&self) -> u32;
    /// The calling VM's own RAM: every guest pointer is checked against it.
    fn memory(&self) -> &dyn GuestMemory;
    fn console_write(&mut self, bytes: &[u8]);
    /// `TESSERA_CONSOLE_READ`: waiting input into `out`, then stored at
    /// `ipa` in the VM's RAM; `None` if that is not wholly RAM (nothing is
    /// taken then).
    fn console_read(&mut self, ipa: Ipa, out: &mut [u8]) -> Option<usize>;
    /// PSCI CPU_ON for vCPU `index` of this VM (already range-checked).
    fn cpu_on(&mut self, index: u32, entry: u32, context_id: u32) -> i32;
    /// PSCI AFFINITY_INFO level 0 for vCPU `index` (already range-checked).
    fn affinity_info(&self, index: u32) -> i32;
    /// Bit k set: this VM maps channel k.
    fn channels(&self) -> u32;
    /// Rings channel `channel`'s doorbell in the other VMs that map it
    /// (the caller is a member: checked by the dispatcher); returns how
    /// many were notified.
    fn ring_doorbell(&mut self, channel: u32) -> u32;
    /// How many channels the system has.
    fn channel_count(&self) -> u32;
    /// `TESSERA_STEAL_TIME_SET` for the calling vCPU: keep its record at
    /// `ipa` (accepted by `steal::check_record`), or stop with `None`.
    fn set_steal_record(&mut self, ipa: Option<Ipa>);
}

/// What the trap handler must do after the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write the first `count` result registers and resume the vCPU.
    Return { regs: [u32; 4], count: u8 },
    /// r0 = 0, then give the pCPU to another vCPU.
    Yield,
    /// r0 = 0, then block until an interrupt (PSCI CPU_SUSPEND, standby).
    Suspend,
    /// PSCI CPU_OFF: this vCPU stops; it can be started again with CPU_ON.
    CpuOff,
    /// The VM asked to end, with this status (0 = success).
    Shutdown(u32),
    /// PSCI SYSTEM_OFF from the guest: the VM ends with status 0.
    SystemOff,
    /// PSCI SYSTEM_RESET: restart the VM from its image.
    SystemReset,
}

fn ret1(r0: u32) -> Action {
    Action::Return { regs: [r0, 0, 0, 0], count: 1 }
}

fn err(e: Error) -> Action {
    ret1(e.code() as u32)
}

fn psci_ret(code: i32) -> Action {
    ret1(code as u32)
}

/// The feature bitmap every VM gets from TESSERA_FEATURES; a VM that maps
/// a channel also gets `feature::CHANNEL`.
pub const FEATURES: u32 = feature::CONSOLE
    | feature::YIELD
    | feature::VM_INFO
    | feature::SHUTDOWN
    | feature::CONSOLE_INPUT
    | feature::STEAL_TIME;

/// A vCPU index from a PSCI target MPIDR: Aff0 is the index, higher
/// affinity levels must be zero (a VM is one cluster, see the guest DTB).
fn vcpu_of_mpidr(mpidr: u32, count: u32) -> Option<u32> {
    let aff = mpidr & 0x00ff_ffff;
    (aff < count).then_some(aff)
}

/// Dispatches one call. `r` holds r0-r7 as trapped.
pub fn dispatch(c: &mut impl Caller, r: &[u32; 8]) -> Action {
    let Some(f) = Function::from_id(r[0]) else {
        return err(Error::NotSupported);
    };
    match f {
        Function::SmcccVersion => ret1(hypercall_abi::SMCCC_VERSION_1_1),
        // No Arm architectural workarounds are needed or offered.
        Function::SmcccArchFeatures => match Function::from_id(r[1]) {
            Some(Function::SmcccVersion | Function::SmcccArchFeatures) => ret1(0),
            _ => err(Error::NotSupported),
        },

        Function::CallCount => ret1(hypercall_abi::TESSERA_CALL_COUNT),
        Function::CallUid => Action::Return { regs: hypercall_abi::TESSERA_UID, count: 4 },
        Function::Revision | Function::AbiVersion => {
            let (major, minor) = (hypercall_abi::ABI_VERSION_MAJOR, hypercall_abi::ABI_VERSION_MINOR);
            if f == Function::Revision {
                Action::Return { regs: [major, minor, 0, 0], count: 2 }
            } else {
                Action::Return { regs: [0, major, minor, 0], count: 3 }
            }
        }
        Function::Features => {
            // Every function this build can decode is implemented; IDs of a
            // later minor version decode to None here.
            let channel = if c.channels() != 0 { feature::CHANNEL } else { 0 };
            let status = match Function::from_id(r[1]) {
                Some(Function::ChannelNotify) if channel == 0 => Error::NotSupported.code() as u32,
                Some(_) => 0,
                None => Error::NotSupported.code() as u32,
            };
            Action::Return { regs: [status, FEATURES | channel, 0, 0], count: 2 }
        }
        Function::ConsoleWrite => {
            let (ipa, len) = (Ipa(r[1] as u64), r[2]);
            if len > hypercall_abi::CONSOLE_WRITE_MAX {
                return err(Error::InvalidParameter);
            }
            let mut buf = [0u8; hypercall_abi::CONSOLE_WRITE_MAX as usize];
            let buf = &mut buf[..len as usize];
            if c.memory().read(ipa, buf).is_err() {
                return err(Error::InvalidAddress);
            }
            c.console_write(buf);
            Action::Return { regs: [0, len, 0, 0], count: 2 }
        }
        Function::ConsoleRead => {
            let (ipa, len) = (Ipa(r[1] as u64), r[2]);
            if len > hypercall_abi::CONSOLE_READ_MAX {
                return err(Error::InvalidParameter);
            }
            let mut buf = [0u8; hypercall_abi::CONSOLE_READ_MAX as usize];
            match c.console_read(ipa, &mut buf[..len as usize]) {
                Some(n) => Action::Return { regs: [0, n as u32, 0, 0], count: 2 },
                None => err(Error::InvalidAddress),
            }
        }
        Function::StealTimeSet => {
            let ipa = (r[1] != 0).then_some(Ipa(r[1] as u64));
            match ipa.map_or(Ok(()), |ipa| crate::steal::check_record(c.memory(), ipa)) {
                Ok(()) => {
                    c.set_steal_record(ipa);
                    ret1(0)
                }
                Err(crate::steal::BadRecord::Misaligned) => err(Error::InvalidParameter),
                Err(crate::steal::BadRecord::OutsideRam) => err(Error::InvalidAddress),
            }
        }
        Function::VcpuYield => Action::Yield,
        Function::VmInfo => Action::Return { regs: [0, c.vm_id(), c.vcpu_count(), c.vcpu_index()], count: 4 },
        Function::VmShutdown => Action::Shutdown(r[1]),
        Function::ChannelNotify => {
            let id = r[1];
            if c.channels() == 0 {
                err(Error::NotSupported)
            } else if id >= c.channel_count() {
                err(Error::InvalidParameter)
            } else if c.channels() & (1 << id) == 0 {
                err(Error::Denied)
            } else {
                let peers = c.ring_doorbell(id);
                Action::Return { regs: [0, peers, 0, 0], count: 2 }
            }
        }

        Function::PsciVersion => ret1(psci::VERSION_1_1),
        Function::PsciFeatures => match Function::from_id(r[1]) {
            Some(
                Function::PsciVersion
                | Function::PsciCpuSuspend
                | Function::PsciCpuOff
                | Function::PsciCpuOn
                | Function::PsciAffinityInfo
                | Function::PsciSystemOff
                | Function::PsciSystemReset
                | Function::PsciFeatures
                | Function::SmcccVersion,
            ) => psci_ret(psci::SUCCESS),
            _ => psci_ret(psci::NOT_SUPPORTED),
        },
        Function::PsciCpuSuspend => Action::Suspend,
        Function::PsciCpuOff => Action::CpuOff,
        Function::PsciCpuOn => {
            let Some(index) = vcpu_of_mpidr(r[1], c.vcpu_count()) else {
                return psci_ret(psci::INVALID_PARAMETERS);
            };
            if !c.memory().contains(Ipa(r[2] as u64), 4) {
                return psci_ret(psci::INVALID_ADDRESS);
            }
            psci_ret(c.cpu_on(index, r[2], r[3]))
        }
        Function::PsciAffinityInfo => {
            // Only level 0 (a single vCPU) is meaningful in a one-cluster VM.
            if r[2] != 0 {
                return psci_ret(psci::INVALID_PARAMETERS);
            }
            match vcpu_of_mpidr(r[1], c.vcpu_count()) {
                Some(index) => psci_ret(c.affinity_info(index)),
                None => psci_ret(psci::INVALID_PARAMETERS),
            }
        }
        Function::PsciSystemOff => Action::SystemOff,
        Function::PsciSystemReset => Action::SystemReset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeVm {
        ram: crate::mem::GuestRam,
        console: Vec<u8>,
        on: Vec<(u32, u32, u32)>,
        channels: u32,
        rung: Vec<u32>,
        input: crate::devices::call_console::CallConsoleInput,
        steal: Vec<Option<Ipa>>,
    }

    impl Caller for FakeVm {
        fn vm_id(&self) -> u32 {
            7
        }
        fn vcpu_count(&self) -> u32 {
            2
        }
        fn vcpu_index(&self) -> u32 {
            1
        }
        fn memory(&self) -> &dyn GuestMemory {
            &self.ram
        }
        fn console_write(&mut self, bytes: &[u8]) {
            self.console.extend_from_slice(bytes);
        }
        fn console_read(&mut self, ipa: Ipa, out: &mut [u8]) -> Option<usize> {
            self.input.read(out, |b| self.ram.write(ipa, b)).ok()
        }
        fn cpu_on(&mut self, index: u32, entry: u32, ctx: u32) -> i32 {
            self.on.push((index, entry, ctx));
            0
        }
        fn affinity_info(&self, index: u32) -> i32 {
            if index == 1 {
                psci::AFFINITY_ON
            } else {
                psci::AFFINITY_OFF
            }
        }
        fn channels(&self) -> u32 {
            self.channels
        }
        fn ring_doorbell(&mut self, channel: u32) -> u32 {
            self.rung.push(channel);
            2
        }
        fn channel_count(&self) -> u32 {
            3
        }
        fn set_steal_record(&mut self, ipa: Option<Ipa>) {
            self.steal.push(ipa);
        }
    }

    fn vm() -> FakeVm {
        let ram = crate::mem::test_ram(0x4000_0000, 0x2000);
        ram.write(Ipa(0x4000_0100), b"hello").unwrap();
        FakeVm { ram, console: vec![], on: vec![], channels: 0, rung: vec![], input: Default::default(), steal: vec![] }
    }

    fn call(v: &mut FakeVm, regs: &[u32]) -> Action {
        let mut r = [0u32; 8];
        r[..regs.len()].copy_from_slice(regs);
        dispatch(v, &r)
    }

    fn r0(a: Action) -> i32 {
        match a {
            Action::Return { regs, .. } => regs[0] as i32,
            other => panic!("expected a return, got {other:?}"),
        }
    }

    #[test]
    fn discovery() {
        let v = &mut vm();
        assert_eq!(r0(call(v, &[Function::SmcccVersion.id()])), 0x1_0001);
        assert_eq!(
            call(v, &[Function::AbiVersion.id()]),
            Action::Return { regs: [0, 1, hypercall_abi::ABI_VERSION_MINOR, 0], count: 3 }
        );
        assert_eq!(
            call(v, &[Function::Revision.id()]),
            Action::Return { regs: [1, hypercall_abi::ABI_VERSION_MINOR, 0, 0], count: 2 }
        );
        assert_eq!(r0(call(v, &[Function::CallCount.id()])), hypercall_abi::TESSERA_CALL_COUNT as i32);
        assert_eq!(call(v, &[Function::CallUid.id()]), Action::Return { regs: hypercall_abi::TESSERA_UID, count: 4 });
        assert_eq!(
            call(v, &[Function::Features.id(), Function::ConsoleWrite.id()]),
            Action::Return { regs: [0, FEATURES, 0, 0], count: 2 }
        );
        assert_eq!(r0(call(v, &[Function::Features.id(), 0x8600_0fff])), -1);
    }

    #[test]
    fn unknown_ids_are_not_supported() {
        let v = &mut vm();
        for id in [0x8600_0fffu32, 0x8600_ff02, 0xc600_0000, 0x0, 0x8400_0005, 0xffff_ffff] {
            assert_eq!(r0(call(v, &[id])), -1, "{id:#x}");
        }
    }

    #[test]
    fn console_write_checks_the_buffer() {
        let v = &mut vm();
        assert_eq!(
            call(v, &[Function::ConsoleWrite.id(), 0x4000_0100, 5]),
            Action::Return { regs: [0, 5, 0, 0], count: 2 }
        );
        assert_eq!(v.console, b"hello");
        // Outside RAM, straddling its end, wrapping, too long.
        assert_eq!(r0(call(v, &[Function::ConsoleWrite.id(), 0x4800_0000, 5])), -4);
        assert_eq!(r0(call(v, &[Function::ConsoleWrite.id(), 0x4000_1ffe, 5])), -4);
        assert_eq!(r0(call(v, &[Function::ConsoleWrite.id(), 0xffff_fffe, 5])), -4);
        assert_eq!(r0(call(v, &[Function::ConsoleWrite.id(), 0x4000_0000, 1025])), -3);
        assert_eq!(r0(call(v, &[Function::ConsoleWrite.id(), 0x4000_0000, u32::MAX])), -3);
        assert_eq!(v.console, b"hello", "refused writes print nothing");
    }

    #[test]
    fn console_read_checks_the_buffer_and_takes_nothing_it_cannot_store() {
        let v = &mut vm();
        let read = |v: &mut FakeVm, ipa: u32, len: u32| call(v, &[Function::ConsoleRead.id(), ipa, len]);
        assert_eq!(read(v, 0x4000_0200, 16), Action::Return { regs: [0, 0, 0, 0], count: 2 }, "nothing typed yet");
        assert_eq!(v.input.push(b"date\n"), Some(5), "the first read claimed the input");
        assert_eq!(r0(read(v, 0x4000_1ffe, 16)), -4, "straddles the end of RAM");
        assert_eq!(r0(read(v, 0x4000_0000, 257)), -3, "longer than CONSOLE_READ_MAX");
        assert_eq!(read(v, 0x4000_0200, 3), Action::Return { regs: [0, 3, 0, 0], count: 2 });
        assert_eq!(read(v, 0x4000_0203, 256), Action::Return { regs: [0, 2, 0, 0], count: 2 });
        let mut got = [0u8; 5];
        v.ram.read(Ipa(0x4000_0200), &mut got).unwrap();
        assert_eq!(&got, b"date\n", "refused reads took nothing");
    }

    #[test]
    fn steal_time_records_must_be_aligned_and_in_ram() {
        let v = &mut vm();
        let set = |v: &mut FakeVm, ipa: u32| r0(call(v, &[Function::StealTimeSet.id(), ipa]));
        assert_eq!(set(v, 0x4000_0020), -3, "not 64-byte aligned");
        assert_eq!(set(v, 0x4000_2000), -4, "past the end of RAM");
        assert_eq!(set(v, 0x3fff_ffc0), -4, "below RAM");
        assert!(v.steal.is_empty(), "refused calls register nothing");
        assert_eq!(set(v, 0x4000_1fc0), 0, "the last 64 bytes of RAM");
        assert_eq!(set(v, 0), 0, "0 stops the updates");
        assert_eq!(v.steal, [Some(Ipa(0x4000_1fc0)), None]);
    }

    #[test]
    fn vm_calls() {
        let v = &mut vm();
        assert_eq!(call(v, &[Function::VmInfo.id()]), Action::Return { regs: [0, 7, 2, 1], count: 4 });
        assert_eq!(call(v, &[Function::VcpuYield.id()]), Action::Yield);
        assert_eq!(call(v, &[Function::VmShutdown.id(), 3]), Action::Shutdown(3));
    }

    #[test]
    fn psci_checks_targets() {
        let v = &mut vm();
        assert_eq!(r0(call(v, &[Function::PsciVersion.id()])), 0x1_0001);
        assert_eq!(r0(call(v, &[Function::PsciCpuOn.id(), 1, 0x4000_0000, 9])), 0);
        assert_eq!(v.on, vec![(1, 0x4000_0000, 9)]);
        assert_eq!(r0(call(v, &[Function::PsciCpuOn.id(), 2, 0x4000_0000, 0])), psci::INVALID_PARAMETERS);
        assert_eq!(r0(call(v, &[Function::PsciCpuOn.id(), 0x100, 0x4000_0000, 0])), psci::INVALID_PARAMETERS);
        assert_eq!(r0(call(v, &[Function::PsciCpuOn.id(), 1, 0x1000, 0])), psci::INVALID_ADDRESS);
        assert_eq!(r0(call(v, &[Function::PsciAffinityInfo.id(), 1, 0])), psci::AFFINITY_ON);
        assert_eq!(r0(call(v, &[Function::PsciAffinityInfo.id(), 0, 0])), psci::AFFINITY_OFF);
        assert_eq!(r0(call(v, &[Function::PsciAffinityInfo.id(), 5, 0])), psci::INVALID_PARAMETERS);
        assert_eq!(r0(call(v, &[Function::PsciAffinityInfo.id(), 0, 1])), psci::INVALID_PARAMETERS);
        assert_eq!(r0(call(v, &[Function::PsciFeatures.id(), Function::PsciCpuOn.id()])), 0);
        assert_eq!(r0(call(v, &[Function::PsciFeatures.id(), Function::ConsoleWrite.id()])), -1);
        assert_eq!(call(v, &[Function::PsciSystemOff.id()]), Action::SystemOff);
        assert_eq!(call(v, &[Function::PsciSystemReset.id()]), Action::SystemReset);
        assert_eq!(call(v, &[Function::PsciCpuOff.id()]), Action::CpuOff);
    }

    #[test]
    fn channel_doorbell() {
        let notify = Function::ChannelNotify.id();
        let features = Function::Features.id();
        let mut v = vm();
        // A VM without channels: the call and its feature bit are absent.
        assert_eq!(r0(call(&mut v, &[notify, 0])), Error::NotSupported.code());
        assert_eq!(
            call(&mut v, &[features, notify]),
            Action::Return { regs: [Error::NotSupported.code() as u32, FEATURES, 0, 0], count: 2 }
        );
        // Member of channel 1 of 3.
        v.channels = 0b010;
        assert_eq!(
            call(&mut v, &[features, notify]),
            Action::Return { regs: [0, FEATURES | feature::CHANNEL, 0, 0], count: 2 }
        );
        assert_eq!(call(&mut v, &[notify, 1]), Action::Return { regs: [0, 2, 0, 0], count: 2 });
        assert_eq!(r0(call(&mut v, &[notify, 0])), Error::Denied.code(), "not a member");
        assert_eq!(r0(call(&mut v, &[notify, 2])), Error::Denied.code(), "not a member");
        for bad in [3, 16, 31, 32, u32::MAX] {
            assert_eq!(r0(call(&mut v, &[notify, bad])), Error::InvalidParameter.code(), "channel {bad}");
        }
        assert_eq!(v.rung, [1], "only the member's own channel rang");
    }
}

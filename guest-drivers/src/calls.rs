//! Safe wrappers for the SMCCC and Tessera vendor calls.
//!
//! Each wrapper issues one hypercall and decodes r0..r3 as `abi.toml` says.
//! A status code this build does not know (from a newer hypervisor) reads as
//! [`Error::NotSupported`]: the guest cannot use the call either way.

use crate::hvc::hvc_call;
use hypercall_abi::{Error, Function, CONSOLE_READ_MAX, CONSOLE_WRITE_MAX, TESSERA_UID};

/// One hypercall that cannot break the guest's invariants.
fn call(f: Function, a1: u32, a2: u32, a3: u32) -> [u32; 4] {
    // SAFETY: every function this module wraps only reads the caller's
    // memory (CONSOLE_WRITE, from a slice the caller lends for the call),
    // writes into a slice the caller lends exclusively for the call
    // (CONSOLE_READ, at most its length), reports something, yields, or
    // stops the VM; the one that makes the hypervisor write memory later
    // (STEAL_TIME_SET) is an `unsafe fn` whose caller vouches for it. None
    // starts code in the guest.
    unsafe { hvc_call(f.id(), a1, a2, a3) }
}

/// r0 as an error; unknown codes read as NOT_SUPPORTED.
fn error(r0: u32) -> Error {
    Error::from_code(r0 as i32).unwrap_or(Error::NotSupported)
}

/// A status in r0: 0 or an error.
fn status(r0: u32) -> Result<(), Error> {
    if r0 as i32 == hypercall_abi::SUCCESS {
        Ok(())
    } else {
        Err(error(r0))
    }
}

/// A value in r0 that is never negative, or an error.
fn value(r0: u32) -> Result<u32, Error> {
    if (r0 as i32) < 0 {
        Err(error(r0))
    } else {
        Ok(r0)
    }
}

/// The SMC Calling Convention version (`SMCCC_VERSION_1_1` on Tessera).
pub fn smccc_version() -> Result<u32, Error> {
    value(call(Function::SmcccVersion, 0, 0, 0)[0])
}

/// Whether an architecture or PSCI function is implemented: `Ok(0)` if so.
/// SMCCC lets some functions answer a positive value instead, hence `u32`.
pub fn arch_features(fid: u32) -> Result<u32, Error> {
    value(call(Function::SmcccArchFeatures, fid, 0, 0)[0])
}

/// How many Tessera vendor functions the hypervisor implements.
pub fn call_count() -> Result<u32, Error> {
    value(call(Function::CallCount, 0, 0, 0)[0])
}

/// The hypervisor's UID; Tessera answers [`TESSERA_UID`].
pub fn call_uid() -> Result<[u32; 4], Error> {
    let r = call(Function::CallUid, 0, 0, 0);
    // SMCCC: r0 = 0xFFFF_FFFF (-1) means "no UID here"; the other words of a
    // UID may have bit 31 set.
    if r[0] == u32::MAX {
        Err(Error::NotSupported)
    } else {
        Ok(r)
    }
}

/// Whether the hypervisor underneath is Tessera.
pub fn is_tessera() -> bool {
    call_uid() == Ok(TESSERA_UID)
}

/// The vendor service's revision (major, minor): equal to the ABI version.
pub fn revision() -> Result<(u32, u32), Error> {
    let r = call(Function::Revision, 0, 0, 0);
    value(r[0]).map(|major| (major, r[1]))
}

/// The ABI version (major, minor): the major must equal
/// [`abi::ABI_VERSION_MAJOR`](hypercall_abi::ABI_VERSION_MAJOR) and the minor
/// be at least the `since` of every call the guest uses.
pub fn abi_version() -> Result<(u32, u32), Error> {
    let r = call(Function::AbiVersion, 0, 0, 0);
    status(r[0]).map(|()| (r[1], r[2]))
}

/// Whether function `fid` is available to this VM; if so, the bitmap of
/// [`abi::feature`](hypercall_abi::feature) bits the VM has.
pub fn features(fid: u32) -> Result<u32, Error> {
    let r = call(Function::Features, fid, 0, 0);
    status(r[0]).map(|()| r[1])
}

/// Writes `buf` to this VM's console; returns how many bytes the hypervisor
/// took. Does not split: `buf.len()` above [`CONSOLE_WRITE_MAX`] is refused
/// here with [`Error::InvalidParameter`], as the hypervisor would. Use
/// [`Console`](crate::Console) for longer text.
///
/// The buffer's address is passed as its guest-physical address. That holds
/// for guests running with the stage-1 MMU off or identity-mapped, which is
/// what bare-metal guests do; a guest with another mapping must translate
/// and call [`console_write_raw`].
pub fn console_write(buf: &[u8]) -> Result<usize, Error> {
    if buf.len() > CONSOLE_WRITE_MAX as usize {
        return Err(Error::InvalidParameter);
    }
    // On 32-bit Arm usize is u32, so the address is exact; on a 64-bit host
    // the fake hypervisor finds the bytes through `hvc::fake`.
    let ipa = buf.as_ptr() as usize as u32;
    let r = crate::hvc::fake_lend(buf, || call(Function::ConsoleWrite, ipa, buf.len() as u32, 0));
    status(r[0]).map(|()| r[1] as usize)
}

/// CONSOLE_WRITE with any guest-physical address and length, unchecked
/// here: for tests that make sure the hypervisor refuses bad ones.
pub fn console_write_raw(ipa: u32, len: u32) -> Result<usize, Error> {
    let r = call(Function::ConsoleWrite, ipa, len, 0);
    status(r[0]).map(|()| r[1] as usize)
}

/// Takes up to `buf.len()` bytes of console input (ABI 1.2,
/// TESSERA_CONSOLE_READ) and returns how many it stored; never blocks: 0
/// when nothing is waiting. From the first call until the VM is reset,
/// what the operator types for this VM comes here instead of to its
/// PL011, and each arrival is an edge on the interrupt of the DTB's
/// `/hypervisor` node. `buf.len()` above [`CONSOLE_READ_MAX`] is refused
/// here with [`Error::InvalidParameter`]. The address is passed as the
/// buffer's guest-physical address, as in [`console_write`].
pub fn console_read(buf: &mut [u8]) -> Result<usize, Error> {
    if buf.len() > CONSOLE_READ_MAX as usize {
        return Err(Error::InvalidParameter);
    }
    let (ipa, len) = (buf.as_mut_ptr() as usize as u32, buf.len() as u32);
    let r = crate::hvc::fake_lend_mut(buf, || call(Function::ConsoleRead, ipa, len, 0));
    status(r[0]).map(|()| (r[1] as usize).min(len as usize))
}

/// Registers the calling vCPU's stolen-time record (ABI 1.3,
/// TESSERA_STEAL_TIME_SET) at guest-physical `ipa`: 64 bytes aligned to 64
/// in this VM's RAM (`abi::STEAL_TIME_RECORD_SIZE`; the layout is in
/// ABI.md), or 0 to stop the updates.
///
/// # Safety
/// From then on the hypervisor writes those 64 bytes whenever it
/// deschedules or resumes this vCPU: they must be memory nothing else uses
/// (and that is read only with volatile or atomic loads) until 0 is
/// registered, this vCPU is turned off, or the VM is reset.
pub unsafe fn steal_time_set(ipa: u32) -> Result<(), Error> {
    status(call(Function::StealTimeSet, ipa, 0, 0)[0])
}

/// Gives the physical CPU to another runnable vCPU.
pub fn yield_vcpu() -> Result<(), Error> {
    status(call(Function::VcpuYield, 0, 0, 0)[0])
}

/// Who the caller is, from TESSERA_VM_INFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmInfo {
    /// The calling VM's id.
    pub vm_id: u32,
    /// How many vCPUs the VM has.
    pub vcpu_count: u32,
    /// The calling vCPU's index, below `vcpu_count`.
    pub vcpu_index: u32,
}

/// The calling VM's id, vCPU count and the calling vCPU's index.
pub fn vm_info() -> Result<VmInfo, Error> {
    let r = call(Function::VmInfo, 0, 0, 0);
    status(r[0]).map(|()| VmInfo { vm_id: r[1], vcpu_count: r[2], vcpu_index: r[3] })
}

/// Stops this VM with exit status `status` (0 = success). If the call ever
/// returns (not Tessera, or refused), spins: the caller asked never to go on.
pub fn shutdown(status: u32) -> ! {
    call(Function::VmShutdown, status, 0, 0);
    loop {
        core::hint::spin_loop();
    }
}

/// Rings shared-memory channel `channel`'s doorbell (ABI 1.1): every other
/// VM that maps the channel gets an edge on its interrupt. Returns how many
/// VMs were notified. `Err(Denied)` if this VM does not map the channel,
/// `Err(InvalidParameter)` if there is no such channel, `Err(NotSupported)`
/// if this VM maps none (or the hypervisor predates 1.1).
pub fn channel_notify(channel: u32) -> Result<u32, Error> {
    let r = call(Function::ChannelNotify, channel, 0, 0);
    status(r[0]).map(|()| r[1])
}

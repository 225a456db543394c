//! The board, and the two things the portable core asks of it from any pCPU.
//!
//! [`Platform`] is passed to whatever needs it (VMs' devices waking vCPUs,
//! consoles timing partial lines) instead of living in global function
//! pointers: the target's implementation is `arch::HwPlatform`, host tests
//! bring their own. `qemu_virt` (target only) reads the board from the host
//! DTB QEMU passes.

#[cfg(target_arch = "arm")]
pub mod qemu_virt;

/// Services any pCPU may use at any time, with no lock held by the caller
/// that the implementation could need.
pub trait Platform: Sync {
    /// The physical counter (CNTPCT on the target), in ticks of
    /// [`Platform::frequency`].
    fn now(&self) -> u64;
    fn frequency(&self) -> u64;
    /// The calling pCPU's index.
    fn this_cpu(&self) -> u32;
    /// Interrupts pCPU `pcpu` (a physical SGI on the target) so that it
    /// leaves its guest or its idle wait and looks at its run queue. Never
    /// called for the caller's own pCPU.
    fn interrupt(&self, pcpu: u32);
    /// Asks the firmware to power pCPU `pcpu` on (PSCI CPU_ON into the
    /// hypervisor's secondary entry); false if it refused or cannot.
    fn start_cpu(&self, _pcpu: u32) -> bool {
        false
    }
}

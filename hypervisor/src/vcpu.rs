//! vCPUs: what every pCPU may see of one (power state, flags, counters), and
//! its register context, which only its owner holds.
//!
//! A vCPU's [`VcpuContext`] is not reachable from its [`Vcpu`]: it lives in
//! the run-queue slot of the pCPU that runs the vCPU (`pcpu::Slot`), so
//! holding the slot is holding the only path to the registers, and no
//! `unsafe` is needed to use them. Everything another pCPU may touch is in
//! [`Vcpu`]: atomics, and the small CPU_ON request a sibling leaves for the
//! owner to apply.

use crate::context::{El1State, FpState, GichState, GuestRegs};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use hypercall_abi::psci;
use spin::Mutex;

/// vCPU power state (PSCI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Power {
    Off = 0,
    /// CPU_ON accepted; the owning pCPU has not started it yet.
    OnPending = 1,
    On = 2,
}

/// The reset value of SCTLR on Cortex-A15 (MMU and caches off).
pub const SCTLR_RESET: u32 = 0x00c5_0078;

/// A vCPU's registers while it is not in the CPU: the trap frame, the PL1
/// state, its GIC list registers and its VFP registers.
pub struct VcpuContext {
    pub regs: GuestRegs,
    pub el1: El1State,
    pub gich: GichState,
    pub fp: FpState,
    /// Stolen-time accounting and the guest's record of it.
    pub steal: crate::steal::StealClock,
}

impl VcpuContext {
    /// The state of a vCPU entering at `entry` with r0-r2 (Linux boot
    /// protocol for vCPU 0, PSCI CPU_ON for the others).
    pub fn boot(entry: u32, r: [u32; 3]) -> Self {
        Self {
            regs: GuestRegs::boot(entry, r[0], r[1], r[2]),
            el1: El1State { sctlr: SCTLR_RESET, ..Default::default() },
            gich: GichState::default(),
            fp: FpState::default(),
            steal: Default::default(),
        }
    }
}

/// A start request: entry point and r0-r2.
pub type Start = (u32, [u32; 3]);

pub struct Vcpu {
    pub index: u32,
    /// Where it lives: the pCPU whose run queue holds it (kicked when it
    /// may run) and its slot there, as `pcpu << 16 | slot`, one word so a
    /// waker never sees half a move. Set by the queue that takes it.
    home: AtomicU32,
    /// The pCPUs it may run on (bit n = pCPU n): its VM's `pcpus`.
    pub affinity: u32,
    /// How many times the balancer has moved it to another pCPU.
    pub migrations: AtomicU32,
    power: AtomicU8,
    /// Left by CPU_ON (or a VM reset) for the owning pCPU.
    on_request: Mutex<Start>,
    /// Waiting in WFI for an interrupt.
    pub blocked: AtomicBool,
    /// Inside the guest (or its exit handling) on its pCPU right now.
    pub running: AtomicBool,
    /// How many times the scheduler has picked it, and its exits by
    /// physical interrupt (diagnostics for `Ctrl-\\ d`).
    pub picks: AtomicU32,
    pub irq_exits: AtomicU32,
}

impl Vcpu {
    /// vCPU `index` on pCPU `pcpu`; `start` is where it begins, if it is on
    /// at power-on (vCPU 0), else it is off until CPU_ON.
    pub fn new(index: u32, pcpu: u32, start: Option<Start>) -> Self {
        Self::with_affinity(index, pcpu, 1 << pcpu, start)
    }

    /// The same, allowed on the pCPUs in `affinity` (it starts on `pcpu`).
    pub fn with_affinity(index: u32, pcpu: u32, affinity: u32, start: Option<Start>) -> Self {
        let v = Self {
            index,
            home: AtomicU32::new(pcpu << 16),
            affinity,
            migrations: AtomicU32::new(0),
            power: AtomicU8::new(Power::Off as u8),
            on_request: Mutex::new((0, [0; 3])),
            blocked: AtomicBool::new(false),
            running: AtomicBool::new(false),
            picks: AtomicU32::new(0),
            irq_exits: AtomicU32::new(0),
        };
        v.reset(start);
        v
    }

    /// (pCPU, slot in its run queue).
    pub fn home(&self) -> (u32, u32) {
        let h = self.home.load(Ordering::SeqCst);
        (h >> 16, h & 0xffff)
    }

    /// The pCPU whose run queue holds it.
    pub fn pcpu(&self) -> u32 {
        self.home().0
    }

    /// Set by the run queue that takes it, before it can run there: a
    /// waker that sees it blocked (set later, sequentially consistent)
    /// sees this home too.
    pub fn set_home(&self, pcpu: usize, slot: usize) {
        self.home.store((pcpu as u32) << 16 | slot as u32, Ordering::SeqCst);
    }

    pub fn power(&self) -> Power {
        match self.power.load(Ordering::Acquire) {
            0 => Power::Off,
            1 => Power::OnPending,
            _ => Power::On,
        }
    }

    /// PSCI CPU_ON, called from a sibling vCPU on any pCPU.
    pub fn request_on(&self, entry: u32, context_id: u32) -> i32 {
        let mut req = self.on_request.lock();
        match self.power.compare_exchange(Power::Off as u8, Power::OnPending as u8, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                *req = (entry, [context_id, 0, 0]);
                psci::SUCCESS
            }
            Err(s) if s == Power::OnPending as u8 => psci::ON_PENDING,
            Err(_) => psci::ALREADY_ON,
        }
    }

    /// On the owning pCPU: if a start is pending, the vCPU is on from now
    /// and this is the context it starts with.
    pub fn take_start(&self) -> Option<VcpuContext> {
        if self.power() != Power::OnPending {
            return None;
        }
        let req = self.on_request.lock();
        self.blocked.store(false, Ordering::Release);
        self.power.store(Power::On as u8, Ordering::Release);
        Some(VcpuContext::boot(req.0, req.1))
    }

    /// VM reset (and creation): this vCPU starts over at `start` (vCPU 0)
    /// or is off. Only while the VM does not run, so the vCPU is not in the
    /// guest; its owner applies the start when it next picks it.
    pub fn reset(&self, start: Option<Start>) {
        let mut req = self.on_request.lock();
        self.blocked.store(false, Ordering::Release);
        match start {
            Some(s) => {
                *req = s;
                self.power.store(Power::OnPending as u8, Ordering::Release);
            }
            None => self.power.store(Power::Off as u8, Ordering::Release),
        }
    }

    /// PSCI CPU_OFF, from the vCPU itself.
    pub fn power_off(&self) {
        self.power.store(Power::Off as u8, Ordering::Release);
    }

    pub fn affinity_info(&self) -> i32 {
        match self.power() {
            Power::On => psci::AFFINITY_ON,
            Power::Off => psci::AFFINITY_OFF,
            Power::OnPending => psci::AFFINITY_ON_PENDING,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psci_power_states() {
        let v = Vcpu::new(1, 0, None);
        assert_eq!(v.affinity_info(), psci::AFFINITY_OFF);
        assert!(v.take_start().is_none(), "an off vCPU does not start by itself");
        assert_eq!(v.request_on(0x4000_8000, 5), psci::SUCCESS);
        assert_eq!(v.request_on(0x4000_8000, 5), psci::ON_PENDING);
        assert_eq!(v.affinity_info(), psci::AFFINITY_ON_PENDING);
        let ctx = v.take_start().expect("CPU_ON was accepted");
        assert_eq!((ctx.regs.pc, ctx.regs.r[0], ctx.el1.sctlr), (0x4000_8000, 5, SCTLR_RESET));
        assert_eq!(v.power(), Power::On);
        assert!(v.take_start().is_none(), "started once");
        assert_eq!(v.request_on(0, 0), psci::ALREADY_ON);
        v.reset(Some((0x4001_0000, [0, !0, 0x47ff_0000])));
        assert_eq!(v.affinity_info(), psci::AFFINITY_ON_PENDING);
        let ctx = v.take_start().expect("a reset restarts it");
        assert_eq!((ctx.regs.pc, ctx.regs.r[1], ctx.regs.r[2]), (0x4001_0000, !0, 0x47ff_0000));
        v.power_off();
        assert_eq!(v.affinity_info(), psci::AFFINITY_OFF);
        assert_eq!(v.request_on(0x4000_9000, 6), psci::SUCCESS, "can be started again");
    }

    #[test]
    fn vcpu_zero_starts_at_power_on() {
        let v = Vcpu::new(0, 1, Some((0x4000_0000, [0, !0, 0x40ff_0000])));
        assert_eq!(v.power(), Power::OnPending);
        let ctx = v.take_start().unwrap();
        assert_eq!((ctx.regs.pc, ctx.regs.r[2]), (0x4000_0000, 0x40ff_0000));
    }
}

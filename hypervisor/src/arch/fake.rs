//! A CPU for host tests: the run loop, the trap handlers and the life cycle
//! run unchanged against it, and a script plays the guest.
//!
//! The model is small but keeps the rules the loop depends on:
//! - a guest runs until it traps or a physical interrupt is pending; an
//!   interrupt pending when the guest is entered is taken at once;
//! - physical interrupts are levels computed from their sources (the HYP
//!   timer, the loaded vCPU's virtual timer, the maintenance condition of
//!   the list registers, console input) plus the kick SGI, which is an edge;
//!   one may be active at a time, from acknowledge to end;
//! - the list registers follow GICv2 (IHI 0048B 5.3): an entry whose state
//!   goes invalid with its EOI bit set is not empty but "EOIed" (EISR) until
//!   the hypervisor clears it, and raises the maintenance interrupt;
//! - HVC traps with the return address past the instruction (as the
//!   hardware's ELR_hyp); other traps leave it on the trapping instruction,
//!   for the handler to step over. So a script can use the guest PC as its
//!   program counter;
//! - time is a shared counter (1 MHz) that only moves when a guest runs
//!   ([`Step::Run`], [`Step::Spin`]) or a pCPU sleeps with its timer armed.
//!
//! Several `FakeCpu`s on threads share one [`FakeBoard`]; a pCPU that sleeps
//! or spins with nothing timed ahead blocks until another kicks it, and
//! gives up with a panic after a generous wall-clock bound, so a lost
//! wake-up fails the test instead of hanging it.

extern crate std;

use super::{irq, AbortTo, Cpu, Exit, TrapInfo, VcpuIdentity, MAX_CPUS};
use crate::context::{El1State, FpState, GichState, GuestRegs, MAX_LRS};
use crate::platform::Platform;
use crate::trap::ec;
use crate::vgic::{hw, ListRegs};
use std::boxed::Box;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;
use std::vec::Vec;

/// Ticks per second of the fake counter.
pub const FREQUENCY: u64 = 1_000_000;
/// How long a blocked fake pCPU waits for a kick before the test fails.
const HANG: Duration = Duration::from_secs(20);

std::thread_local! {
    static THIS_CPU: Cell<u32> = const { Cell::new(0) };
}

/// What the fake pCPUs share: the clock, the kick SGIs, and a way to sleep
/// until kicked.
pub struct FakeBoard {
    now: AtomicU64,
    kicks: [AtomicBool; MAX_CPUS],
    sleep: (Mutex<()>, Condvar),
}

impl FakeBoard {
    pub fn new() -> &'static Self {
        Box::leak(Box::new(Self {
            now: AtomicU64::new(1),
            kicks: [const { AtomicBool::new(false) }; MAX_CPUS],
            sleep: (Mutex::new(()), Condvar::new()),
        }))
    }

    fn advance_to(&self, t: u64) {
        self.now.fetch_max(t, Ordering::AcqRel);
    }

    fn kicked(&self, cpu: usize) -> bool {
        self.kicks[cpu].load(Ordering::Acquire)
    }

    /// Blocks until pCPU `cpu` is kicked.
    fn wait_for_kick(&self, cpu: usize) {
        let (lock, cv) = &self.sleep;
        let mut g = lock.lock().unwrap();
        let start = std::time::Instant::now();
        while !self.kicked(cpu) {
            assert!(start.elapsed() < HANG, "fake pCPU {cpu} would sleep forever: nothing can wake it");
            g = cv.wait_timeout(g, Duration::from_millis(50)).unwrap().0;
        }
    }
}

impl Platform for FakeBoard {
    fn now(&self) -> u64 {
        self.now.load(Ordering::Acquire)
    }
    fn frequency(&self) -> u64 {
        FREQUENCY
    }
    fn this_cpu(&self) -> u32 {
        THIS_CPU.with(|c| c.get())
    }
    fn interrupt(&self, pcpu: u32) {
        self.kicks[pcpu as usize].store(true, Ordering::Release);
        let _g = self.sleep.0.lock().unwrap();
        self.sleep.1.notify_all();
    }
}

/// Four list registers, as on Cortex-A15 and QEMU.
#[derive(Default)]
pub struct FakeLrs {
    pub lr: [u32; 4],
    pub hcr: u32,
    pub vmcr: u32,
    pub apr: u32,
}

const STATE: u32 = hw::LR_STATE_PENDING | hw::LR_STATE_ACTIVE;

impl ListRegs for FakeLrs {
    fn count(&self) -> usize {
        4
    }
    fn read(&self, i: usize) -> u32 {
        self.lr[i]
    }
    fn write(&mut self, i: usize, v: u32) {
        self.lr[i] = v;
    }
    fn empty(&self) -> u64 {
        (0..4).filter(|&i| self.lr[i] & STATE == 0 && self.lr[i] & hw::LR_EOI == 0).fold(0, |a, i| a | 1 << i)
    }
    fn eoied(&self) -> u64 {
        (0..4).filter(|&i| self.lr[i] & STATE == 0 && self.lr[i] & hw::LR_EOI != 0).fold(0, |a, i| a | 1 << i)
    }
    fn hcr(&self) -> u32 {
        self.hcr
    }
    fn set_hcr(&mut self, v: u32) {
        self.hcr = v;
    }
}

impl FakeLrs {
    /// The guest acknowledges and EOIs list register i (as [`Guest::ack`]
    /// and [`Guest::eoi`] do); returns its interrupt ID.
    pub fn guest_eoi(&mut self, i: usize) -> u32 {
        let id = self.lr[i] & 0x3ff;
        self.lr[i] &= !STATE;
        if self.lr[i] & hw::LR_EOI == 0 {
            self.lr[i] = 0;
        }
        id
    }

    /// The interrupt IDs of the entries in use.
    pub fn ids(&self) -> Vec<u32> {
        self.lr.iter().filter(|v| *v & STATE != 0).map(|v| v & 0x3ff).collect()
    }

    /// The maintenance interrupt's condition (EOI with the EOI bit, or an
    /// underflow while asked for).
    fn maintenance(&self) -> bool {
        if self.hcr & hw::HCR_EN == 0 {
            return false;
        }
        let used = (0..4).filter(|&i| self.lr[i] & STATE != 0).count();
        self.eoied() != 0 || (self.hcr & hw::HCR_UIE != 0 && used <= 1)
    }
}

/// What a guest does next, as its script says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `hvc #0` with the registers the script set (see [`Guest::hvc`]).
    Hvc,
    Wfi,
    Wfe,
    /// A single load or store of `size` bytes through register `reg` at
    /// `ipa`, which has no stage-2 mapping (a device, or nothing).
    Access {
        ipa: u32,
        write: bool,
        reg: u8,
        size: u8,
    },
    /// A data abort with syndrome `iss` (HSR ISS) at `ipa`, for aborts
    /// [`Step::Access`] does not describe.
    Abort {
        ipa: u32,
        iss: u32,
    },
    /// A VFP instruction.
    Fp,
    /// Computes for `ticks`, then goes on with the script (unless an
    /// interrupt arrives meanwhile).
    Run(u64),
    /// Computes until the next physical interrupt (a spin loop).
    Spin,
    /// An access that ends in an asynchronous external abort (SError).
    SError,
}

/// The guest as its script sees it: the vCPU that runs, its registers, its
/// virtual CPU interface and its virtual timer.
pub struct Guest<'a> {
    /// The VM (its stage-2 VMID, which tests make its id) and the vCPU.
    pub vm: u8,
    pub vcpu: u32,
    pub regs: &'a mut GuestRegs,
    lrs: &'a mut FakeLrs,
    el1: &'a mut El1State,
    now: u64,
    cntvoff: u64,
}

impl Guest<'_> {
    /// Sets up `hvc #0` with function `fid` and arguments r1-r3.
    pub fn hvc(&mut self, fid: u32, args: &[u32]) -> Step {
        self.regs.r[0] = fid;
        for (k, &a) in args.iter().enumerate() {
            self.regs.r[1 + k] = a;
        }
        Step::Hvc
    }

    /// A word store of `value` (through r1) to `ipa`.
    pub fn store(&mut self, ipa: u32, value: u32) -> Step {
        self.regs.r[1] = value;
        Step::Access { ipa, write: true, reg: 1, size: 4 }
    }

    /// Acknowledges the highest-priority pending interrupt of the virtual
    /// CPU interface, as a read of GICC_IAR does; None if nothing is pending.
    pub fn ack(&mut self) -> Option<u32> {
        let i = (0..4)
            .filter(|&i| self.lrs.lr[i] & hw::LR_STATE_PENDING != 0)
            .min_by_key(|&i| (self.lrs.lr[i] >> 23) & 0x1f)?;
        let v = self.lrs.lr[i];
        self.lrs.lr[i] = (v & !STATE) | hw::LR_STATE_ACTIVE;
        Some(v & 0x3ff)
    }

    /// EOIs interrupt `id` (GICC_EOIR).
    pub fn eoi(&mut self, id: u32) {
        if let Some(i) = (0..4).find(|&i| self.lrs.lr[i] & hw::LR_STATE_ACTIVE != 0 && self.lrs.lr[i] & 0x3ff == id) {
            self.lrs.lr[i] &= !hw::LR_STATE_ACTIVE;
            if self.lrs.lr[i] & hw::LR_EOI == 0 {
                self.lrs.lr[i] = 0;
            }
        }
    }

    /// The virtual counter.
    pub fn vnow(&self) -> u64 {
        self.now.wrapping_sub(self.cntvoff)
    }

    /// Programs the virtual timer to fire `after` ticks from now.
    pub fn set_vtimer(&mut self, after: u64) {
        self.el1.cntv_cval = self.vnow() + after;
        self.el1.cntv_ctl = 1;
    }
}

/// A guest program: called each time the guest would execute, it returns
/// what the guest does next.
pub type Script = Box<dyn FnMut(&mut Guest<'_>) -> Step + Send>;

/// One entry into a guest, for tests to look at afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub at: u64,
    pub vm: u8,
    pub vcpu: u32,
}

pub struct FakeCpu {
    id: usize,
    board: &'static FakeBoard,
    script: Script,
    lrs: FakeLrs,
    el1: El1State,
    loaded: Option<VcpuIdentity>,
    hyp_timer: Option<u64>,
    /// Bit n: private interrupt n enabled.
    private: u32,
    active: Option<u32>,
    fp_trapped: bool,
    fp: FpState,
    trap: TrapInfo,
    input: VecDeque<u8>,
    uart_irq: u32,
    /// Every entry into a guest, in order.
    pub entries: Vec<Entry>,
    /// How often the pCPU slept in `wait_for_interrupt`.
    pub sleeps: u32,
    /// Set/way cache operations done for guests.
    pub set_way_ops: Vec<u32>,
    /// Aborts given to guests.
    pub aborts: Vec<AbortTo>,
}

impl FakeCpu {
    /// pCPU `id`, running `script` for whatever vCPU it loads; the calling
    /// thread is that pCPU from now on.
    pub fn new(id: usize, board: &'static FakeBoard, script: Script) -> Self {
        THIS_CPU.with(|c| c.set(id as u32));
        Self {
            id,
            board,
            script,
            lrs: FakeLrs::default(),
            el1: El1State::default(),
            loaded: None,
            hyp_timer: None,
            private: 1 << irq::SGI_KICK | 1 << irq::PPI_HYP_TIMER | 1 << irq::PPI_MAINTENANCE | 1 << irq::PPI_VTIMER,
            active: None,
            fp_trapped: true,
            fp: FpState::default(),
            trap: TrapInfo::default(),
            input: VecDeque::new(),
            uart_irq: 33,
            entries: Vec::new(),
            sleeps: 0,
            set_way_ops: Vec::new(),
            aborts: Vec::new(),
        }
    }

    /// Bytes typed at the console (interrupt `uart_irq` while any wait).
    pub fn type_input(&mut self, bytes: &[u8], uart_irq: u32) {
        self.input.extend(bytes);
        self.uart_irq = uart_irq;
    }

    fn vtimer_deadline(&self) -> Option<u64> {
        let id = self.loaded.as_ref()?;
        (self.el1.cntv_ctl & 3 == 1).then(|| self.el1.cntv_cval.wrapping_add(id.cntvoff))
    }

    /// The highest-priority pending interrupt (lowest ID: they all have the
    /// same priority here), if it is enabled and none is active.
    fn pending(&self) -> Option<u32> {
        if self.active.is_some() {
            return None;
        }
        let now = self.board.now();
        let on = |id: u32| self.private & (1 << id) != 0;
        if on(irq::SGI_KICK) && self.board.kicked(self.id) {
            return Some(irq::SGI_KICK);
        }
        if on(irq::PPI_MAINTENANCE) && self.lrs.maintenance() {
            return Some(irq::PPI_MAINTENANCE);
        }
        if on(irq::PPI_HYP_TIMER) && self.hyp_timer.is_some_and(|t| now >= t) {
            return Some(irq::PPI_HYP_TIMER);
        }
        if on(irq::PPI_VTIMER) && self.vtimer_deadline().is_some_and(|t| now >= t) {
            return Some(irq::PPI_VTIMER);
        }
        if !self.input.is_empty() {
            return Some(self.uart_irq);
        }
        None
    }

    /// The next time an interrupt source fires by itself.
    fn next_timed(&self) -> Option<u64> {
        let hyp = self.hyp_timer.filter(|_| self.private & (1 << irq::PPI_HYP_TIMER) != 0);
        let vt = self.vtimer_deadline().filter(|_| self.private & (1 << irq::PPI_VTIMER) != 0);
        hyp.into_iter().chain(vt).min()
    }

    fn trap_with(&mut self, hsr: u32, ipa: u32) -> Exit {
        self.trap = TrapInfo { hsr, hdfar: ipa, hifar: ipa, hpfar: (ipa >> 12) << 4 };
        Exit::Trap
    }
}

impl Cpu for FakeCpu {
    type Lrs = FakeLrs;

    fn id(&self) -> usize {
        self.id
    }

    fn now(&self) -> u64 {
        self.board.now()
    }

    fn enter_guest(&mut self, regs: &mut GuestRegs) -> Exit {
        let id = self.loaded.expect("a vCPU is loaded before it is entered");
        self.entries.push(Entry { at: self.board.now(), vm: id.vttbr.vmid(), vcpu: id.vmpidr & 0xff });
        loop {
            if self.pending().is_some() {
                return Exit::Irq;
            }
            let mut g = Guest {
                vm: id.vttbr.vmid(),
                vcpu: id.vmpidr & 0xff,
                regs: &mut *regs,
                lrs: &mut self.lrs,
                el1: &mut self.el1,
                now: self.board.now(),
                cntvoff: id.cntvoff,
            };
            let step = (self.script)(&mut g);
            const IL: u32 = 1 << 25;
            match step {
                Step::Hvc => {
                    regs.pc = regs.pc.wrapping_add(4); // ELR_hyp: past the HVC
                    return self.trap_with(ec::HVC << 26 | IL, 0);
                }
                Step::Wfi => return self.trap_with(ec::WFI_WFE << 26 | IL, 0),
                Step::Wfe => return self.trap_with(ec::WFI_WFE << 26 | IL | 1, 0),
                Step::Fp if self.fp_trapped => return self.trap_with(ec::FP_ACCESS << 26 | IL, 0),
                Step::Fp => regs.pc = regs.pc.wrapping_add(4),
                Step::Access { ipa, write, reg, size } => {
                    let sas = size.trailing_zeros();
                    let iss = 1 << 24 | sas << 22 | (reg as u32) << 16 | (write as u32) << 6 | 0x07;
                    return self.trap_with(ec::DABT_LOWER << 26 | IL | iss, ipa);
                }
                Step::Abort { ipa, iss } => return self.trap_with(ec::DABT_LOWER << 26 | IL | iss, ipa),
                Step::SError => return Exit::AsyncAbort,
                Step::Run(ticks) => {
                    let until = self.board.now() + ticks;
                    if let Some(t) = self.next_timed().filter(|&t| t <= until) {
                        self.board.advance_to(t);
                        return Exit::Irq;
                    }
                    self.board.advance_to(until);
                }
                Step::Spin => {
                    match self.next_timed() {
                        Some(t) => self.board.advance_to(t),
                        None => self.board.wait_for_kick(self.id),
                    }
                    return Exit::Irq;
                }
            }
        }
    }

    fn trap_info(&self) -> TrapInfo {
        self.trap
    }

    // The trap frame holds r0-r12 and LR_usr; scripts use no banked register.
    fn read_banked(&self, _mode: u32, _n: u8) -> Option<u32> {
        None
    }

    fn write_banked(&mut self, _mode: u32, _n: u8, _v: u32) -> bool {
        false
    }

    fn load_vcpu(&mut self, el1: &El1State, gich: &GichState, id: &VcpuIdentity) {
        self.el1 = *el1;
        self.lrs.lr.copy_from_slice(&gich.lr[..4]);
        self.lrs.vmcr = gich.vmcr;
        self.lrs.apr = gich.apr;
        self.lrs.hcr = gich.hcr | hw::HCR_EN;
        self.loaded = Some(*id);
    }

    fn save_vcpu(&mut self, el1: &mut El1State, gich: &mut GichState) {
        *el1 = self.el1;
        self.el1.cntv_ctl = 0;
        gich.lr = [0; MAX_LRS];
        gich.lr[..4].copy_from_slice(&self.lrs.lr);
        (gich.hcr, gich.vmcr, gich.apr) = (self.lrs.hcr, self.lrs.vmcr, self.lrs.apr);
        self.lrs.hcr = 0;
    }

    fn lrs(&self) -> &FakeLrs {
        &self.lrs
    }

    fn lrs_mut(&mut self) -> &mut FakeLrs {
        &mut self.lrs
    }

    fn set_private_irq(&mut self, id: u32, enabled: bool) {
        if enabled {
            self.private |= 1 << id;
        } else {
            self.private &= !(1 << id);
        }
    }

    fn ack_irq(&mut self) -> Option<u32> {
        let id = self.pending()?;
        if id == irq::SGI_KICK {
            self.board.kicks[self.id].store(false, Ordering::Release);
        }
        self.active = Some(id);
        Some(id)
    }

    fn end_irq(&mut self, iar: u32) {
        assert_eq!(self.active.take(), Some(iar), "end of an interrupt that is not active");
    }

    fn arm_timer(&mut self, at: u64) {
        self.hyp_timer = Some(at);
    }

    fn disarm_timer(&mut self) {
        self.hyp_timer = None;
    }

    fn wait_for_interrupt(&mut self) {
        self.sleeps += 1;
        if self.pending().is_some() {
            return;
        }
        match self.next_timed() {
            Some(t) => self.board.advance_to(t),
            None => self.board.wait_for_kick(self.id),
        }
    }

    fn trap_fp(&mut self, trap: bool) {
        self.fp_trapped = trap;
    }

    fn switch_fp(&mut self, out: Option<&mut FpState>, from: &FpState) {
        if let Some(o) = out {
            *o = self.fp;
        }
        self.fp = *from;
    }

    fn console_read(&mut self) -> Option<u8> {
        self.input.pop_front()
    }

    fn clean_to_poc(&mut self, _ram: &crate::mem::GuestRam) {}

    fn inject_abort(&mut self, regs: &mut GuestRegs, abort: AbortTo) {
        self.aborts.push(abort);
        // As the hardware would, with VBAR 0 and the MMU off: Abort mode,
        // the vector's address; LR and SPSR are not modelled.
        let offset = if abort.instruction { 0x0c } else { 0x10 };
        regs.cpsr = (regs.cpsr & !0x3f) | 0x17 | 0x180;
        regs.pc = self.el1.vbar + offset;
    }

    fn clean_invalidate_set_way(&mut self, set_way: u32) {
        self.set_way_ops.push(set_way);
    }
}

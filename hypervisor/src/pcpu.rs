//! One physical CPU's loop: pick a runnable vCPU, load it, run it until it
//! must give the pCPU up, repeat; sleep when nothing can run.
//!
//! A pCPU owns its [`PerCpu`]: the run queue, whose slots hold the vCPUs'
//! saved contexts, and which slot's state is in the CPU. The loop holds it
//! by `&mut` and passes what each step needs down the call chain, so there
//! is exactly one path to any vCPU's registers and no `unsafe` here. A trap
//! goes arch -> [`crate::trap::decode`] -> [`crate::exits::handle`] ->
//! [`Next`], and back to this loop.
//!
//! Scheduling: round-robin over the runnable vCPUs with a time slice when
//! more than one can run; the HYP timer is armed for the earliest of the
//! slice end and the virtual-timer deadlines of the descheduled vCPUs, so
//! a vCPU waiting in WFI for its timer is woken on time. A wake-up never
//! preempts the running vCPU (see [`crate::sched::Wakeups`]). No step
//! visits every vCPU: runnable vCPUs wait in a [`ReadyRing`], deadlines in
//! a [`DeadlineHeap`], and wake-ups name their slots.
//!
//! Balancing: a pCPU with nothing to run asks the busiest for work, which
//! answers at its next scheduling point; and every [`BALANCE_SLICES`] a
//! pCPU with two more runnable vCPUs than the least loaded one sends it
//! one. What moves is a waiting vCPU (never the one loaded,
//! only one allowed by its affinity, not one that arrived within
//! [`MIN_RESIDENCY_SLICES`]) through the receiver's [`Inbox`]. The vCPU's
//! context, saved list registers and timer state travel in its slot; its
//! VM's vGIC state is per VM already.

extern crate alloc;

use crate::arch::{irq, Cpu, Exit, VcpuIdentity};
use crate::console_input;
use crate::context::FpState;
use crate::exits::{self, Next};
use crate::lifecycle;
use crate::sched::{DeadlineHeap, Others, ReadyRing, RunQueue};
use crate::system::System;
use crate::trace::{self, Kind};
use crate::vcpu::{Power, Vcpu, VcpuContext};
use crate::vgic::{self, hw::lr_pending, ListRegs};
use crate::vm::Vm;
use crate::{debug, info, warn};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;
use tessera_payload::PowerPolicy;

/// The most vCPUs one pCPU runs (the packer checks it first).
pub use crate::sched::MAX_QUEUE;

/// A vCPU that moved stays at least this many time slices on its new
/// pCPU before it may move again (no bouncing every slice).
pub const MIN_RESIDENCY_SLICES: u64 = 10;
/// How often a pCPU that has work compares its load with the others', in
/// time slices.
pub const BALANCE_SLICES: u64 = 10;

/// A vCPU in its pCPU's run queue: the only place its context lives.
pub struct Slot {
    pub vm: &'static Vm,
    pub vcpu: &'static Vcpu,
    pub ctx: Box<VcpuContext>,
    /// When it last arrived on this pCPU by migration (counter ticks).
    arrived: u64,
}

impl Slot {
    pub fn new(vm: &'static Vm, vcpu: &'static Vcpu) -> Self {
        Self { vm, vcpu, ctx: Box::new(VcpuContext::boot(0, [0; 3])), arrived: 0 }
    }

    fn index(&self) -> usize {
        self.vcpu.index as usize
    }
}

/// Where vCPUs sent to a pCPU wait for it to take them into its queue.
pub struct Inbox {
    slots: Mutex<Vec<Slot>>,
    pending: AtomicBool,
}

impl Default for Inbox {
    fn default() -> Self {
        // Room for a whole run queue (a pCPU powering off sends all of its
        // vCPUs), so sending never allocates.
        Self { slots: Mutex::new(Vec::with_capacity(MAX_QUEUE)), pending: AtomicBool::new(false) }
    }
}

impl Inbox {
    /// Has a vCPU been sent here that the pCPU has not taken yet?
    pub fn has_arrivals(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Hands `slot` over; gives it back if there is no room.
    fn send(&self, slot: Slot) -> Result<(), Slot> {
        let mut v = self.slots.lock();
        if v.len() == v.capacity() {
            return Err(slot);
        }
        v.push(slot);
        self.pending.store(true, Ordering::Release);
        Ok(())
    }
}

pub struct PerCpu {
    pub id: usize,
    queue: RunQueue<Slot>,
    /// Slots that may run, in the order they will (the running one is not
    /// in it).
    ready: ReadyRing,
    /// Virtual-timer deadlines of the slots that are not loaded.
    timers: DeadlineHeap,
    /// The slot whose PL1 and GIC state is in the CPU.
    loaded: Option<usize>,
    /// The slot whose VFP registers are live (switched lazily).
    fp_owner: Option<usize>,
    /// The running vCPU's time slice is over.
    need_resched: bool,
    /// When the running vCPU's slice ends, once another vCPU waits.
    slice_end: Option<u64>,
    /// When this pCPU next compares its load with the others'.
    next_balance: u64,
    /// Since when it has had nothing to run (dynamic scaling).
    idle_since: Option<u64>,
    /// Since when runnable vCPUs have waited here (dynamic scaling).
    waiting_since: Option<u64>,
}

impl PerCpu {
    pub fn new(id: usize) -> Self {
        Self {
            id,
            queue: RunQueue::with_capacity(MAX_QUEUE),
            ready: ReadyRing::with_capacity(MAX_QUEUE),
            timers: DeadlineHeap::with_capacity(MAX_QUEUE),
            loaded: None,
            fp_owner: None,
            need_resched: false,
            slice_end: None,
            next_balance: 0,
            idle_since: None,
            waiting_since: None,
        }
    }

    /// Adds a vCPU; false if the queue is full.
    pub fn push(&mut self, slot: Slot) -> bool {
        self.adopt(slot).is_ok()
    }

    /// Takes `slot` into the queue and makes it this pCPU's (before it can
    /// run here); looked at at the next pick.
    fn adopt(&mut self, slot: Slot) -> Result<usize, Slot> {
        let vcpu = slot.vcpu;
        let i = self.queue.push(slot).map_err(|(_, slot)| slot)?;
        vcpu.set_home(self.id, i);
        // A blocked vCPU's timer is this pCPU's to watch from now on.
        if let Some(d) = self.queue.get(i).and_then(timer_deadline) {
            self.timers.set(i, d);
        }
        self.ready.push(i);
        Ok(i)
    }

    /// Takes the vCPUs other pCPUs sent here.
    fn receive<C: Cpu>(&mut self, cpu: &C, sys: &System) {
        let inbox = sys.inbox(self.id);
        if !inbox.pending.swap(false, Ordering::Acquire) {
            return;
        }
        let now = cpu.now();
        let mut v = inbox.slots.lock();
        while let Some(mut slot) = v.pop() {
            slot.arrived = now;
            if let Err(slot) = self.adopt(slot) {
                // Cannot happen: every sender reserved a slot here first.
                v.push(slot);
                inbox.pending.store(true, Ordering::Release);
                break;
            }
        }
    }

    /// Answers the pCPUs that asked for work: to each, one waiting vCPU it
    /// may run, while this pCPU keeps more runnable vCPUs than the asker.
    /// Called between two runs, with every runnable vCPU in the ring.
    fn answer_asks<C: Cpu>(&mut self, cpu: &mut C, sys: &System) {
        let mut asks = sys.wakeups.take_asks(self.id);

        while asks != 0 {
            let to = asks.trailing_zeros() as usize;
            asks &= asks - 1;
            // Giving is worth it only if it leaves this pCPU at least as
            // busy as the asker becomes.
            if (self.ready.len() as u32) < sys.wakeups.load_of(to) + 2 {
                continue;
            }
            let now = cpu.now();
            let min_stay = MIN_RESIDENCY_SLICES * sys.slice;
            let (queue, loaded) = (&self.queue, self.loaded);
            let pick = self.ready.take_where(|i| {
                Some(i) != loaded
                    && queue.get(i).is_some_and(|s| {
                        s.vcpu.affinity & (1 << to) != 0
                            && now.saturating_sub(s.arrived) >= min_stay
                            && runnable(cpu, s, false)
                    })
            });
            if let Some(i) = pick {
                if sys.wakeups.reserve(to, 1) {
                    self.send_away(cpu, sys, i, to);
                } else {
                    self.ready.push(i);
                }
            }
        }
    }

    /// Moves slot `i` (not loaded) to pCPU `to`, where a slot was reserved.
    fn send_away<C: Cpu>(&mut self, cpu: &mut C, sys: &System, i: usize, to: usize) {
        self.timers.remove(i);
        let Some(mut slot) = self.queue.take(i) else {
            sys.wakeups.release(to, 1);
            return;
        };
        if self.fp_owner == Some(i) {
            // Its VFP registers are live here: save them into its context.
            save_live_fp(cpu, &mut slot.ctx.fp);
            self.fp_owner = None;
        }
        let (vm, vcpu) = (slot.vm, slot.vcpu);
        match sys.inbox(to).send(slot) {
            Ok(()) => {
                sys.wakeups.release(self.id, 1);
                vcpu.migrations.fetch_add(1, Ordering::Relaxed);
                crate::trace_event!(self.id, cpu.now(), Kind::Migrate, vm.id, vcpu.index, to as u32);
                debug!("vm \"{}\" vCPU {}: moves from pCPU {} to pCPU {to}", vm.name(), vcpu.index, self.id);
                sys.wakeups.kick(to as u32);
            }
            Err(slot) => {
                // Cannot happen (the inbox holds a whole queue): it stays.
                sys.wakeups.release(to, 1);
                let _ = self.adopt(slot);
            }
        }
    }

    /// With nothing to run: asks the busiest pCPU for a vCPU if it has one
    /// waiting (the giver reserves a slot here before it sends).
    fn ask_for_work(&self, sys: &System) {
        if let Some(p) = sys.wakeups.busiest(self.id, 2) {
            sys.wakeups.ask(self.id, p);
        }
    }

    /// Sends the least loaded pCPU a waiting vCPU if this pCPU has at
    /// least two more runnable ones (between two runs: all in the ring).
    fn push_work<C: Cpu>(&mut self, cpu: &mut C, sys: &System) {
        let Some((to, theirs)) = sys.wakeups.least_loaded(self.id) else { return };
        if (self.ready.len() as u32) < theirs + 2 {
            return;
        }
        sys.wakeups.ask(to, self.id);
        self.answer_asks(cpu, sys);
    }

    /// Dynamic scaling, on a pCPU with work: if runnable vCPUs have waited
    /// here for the policy's delay, powers on a pCPU that is off and that
    /// one of them may run on (it then asks for work like any idle pCPU).
    fn maybe_power_on<C: Cpu>(&mut self, cpu: &C, sys: &System) {
        let Some((_, wait)) = power_delays(sys.power, sys.slice) else { return };
        if self.ready.is_empty() {
            self.waiting_since = None;
            return;
        }
        let now = cpu.now();
        let since = *self.waiting_since.get_or_insert(now);
        if now - since < wait || sys.wakeups.starting() != 0 {
            return;
        }
        self.waiting_since = None;
        let allowed = self.queue.iter().fold(0u32, |m, s| m | s.vcpu.affinity);
        let off = allowed & !sys.wakeups.online() & sys.power_on_mask;
        if off == 0 {
            return;
        }
        let p = off.trailing_zeros() as usize;
        if sys.wakeups.begin_start(p) {
            // Logged first: the pCPU's own "up again" comes after.
            debug!("pCPU {p}: powering on ({} vCPU(s) waiting on pCPU {})", self.ready.len(), self.id);
            crate::trace_event!(self.id, now, Kind::PowerOn, 0, 0, p as u32);
            if sys.wakeups.platform().start_cpu(p as u32) {
                sys.power_ons.fetch_add(1, Ordering::Relaxed);
            } else {
                warn!("pCPU {p}: the firmware did not power it on (PSCI CPU_ON failed)");
                sys.wakeups.end_start(p);
            }
        }
    }

    /// Dynamic scaling, on an idle pCPU other than pCPU 0: after the
    /// policy's idle delay, sends every vCPU it holds (all blocked) to
    /// another pCPU that may run them all and has room, and reports that
    /// this pCPU may power off (Ok). Otherwise returns when to look again.
    fn maybe_power_off<C: Cpu>(&mut self, cpu: &mut C, sys: &System) -> Result<(), Option<u64>> {
        let Some((idle_off, _)) = power_delays(sys.power, sys.slice) else { return Err(None) };
        if self.id == 0 {
            return Err(None);
        }
        let now = cpu.now();
        let since = *self.idle_since.get_or_insert(now);
        if now - since < idle_off {
            return Err(Some(since + idle_off));
        }
        let n = self.queue.len();
        let needs = self.queue.iter().fold(!0u32, |m, s| m & s.vcpu.affinity);
        let online = sys.wakeups.online() & needs & !(1 << self.id);
        let target = (0..crate::arch::MAX_CPUS).find(|&p| online & (1 << p) != 0 && sys.wakeups.reserve(p, n));
        let Some(to) = target else {
            // Nowhere to go now; look again after another idle delay.
            self.idle_since = Some(now);
            return Err(Some(now + idle_off));
        };
        if !sys.wakeups.go_offline(self.id, MAX_QUEUE - n) {
            sys.wakeups.release(to, n);
            self.idle_since = Some(now);
            return Err(Some(now + idle_off));
        }
        self.unload_all(cpu);
        while self.ready.pop().is_some() {}
        for i in 0..MAX_QUEUE {
            self.timers.remove(i);
            if let Some(slot) = self.queue.take(i) {
                slot.vcpu.migrations.fetch_add(1, Ordering::Relaxed);
                crate::trace_event!(self.id, now, Kind::Migrate, slot.vm.id, slot.vcpu.index, to as u32);
                if let Err(slot) = sys.inbox(to).send(slot) {
                    // Cannot happen (the inbox holds a whole queue).
                    let _ = self.adopt(slot);
                }
            }
        }
        sys.wakeups.kick(to as u32);
        self.idle_since = None;
        sys.power_offs.fetch_add(1, Ordering::Relaxed);
        crate::trace_event!(self.id, cpu.now(), Kind::PowerOff, 0, 0, 0);
        debug!("pCPU {}: powered off (idle); its {n} vCPU(s) now wait on pCPU {to}", self.id);
        Ok(())
    }

    /// Saves the loaded vCPU's state and the live VFP registers into their
    /// slots: nothing of any vCPU is left only in this CPU.
    fn unload_all<C: Cpu>(&mut self, cpu: &mut C) {
        if let Some(s) = self.loaded.take().and_then(|l| self.queue.get_mut(l)) {
            save_loaded(cpu, s);
        }
        if let Some(s) = self.fp_owner.take().and_then(|o| self.queue.get_mut(o)) {
            save_live_fp(cpu, &mut s.ctx.fp);
        }
    }

    /// Queues the descheduled vCPUs whose virtual timer is due.
    fn take_due_timers(&mut self, now: u64) {
        while let Some(s) = self.timers.pop_due(now) {
            self.ready.push(s);
        }
    }

    /// The next queued slot that can run, dropping those that cannot.
    fn next_runnable<C: Cpu>(&mut self, cpu: &C) -> Option<usize> {
        while let Some(i) = self.ready.pop() {
            if self.queue.get(i).is_some_and(|s| runnable(cpu, s, self.loaded == Some(i))) {
                return Some(i);
            }
        }
        None
    }

    /// Queues slot `i` again if it can run.
    fn requeue<C: Cpu>(&mut self, cpu: &C, i: usize) {
        if self.queue.get(i).is_some_and(|s| runnable(cpu, s, self.loaded == Some(i))) {
            self.ready.push(i);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn slots(&self) -> impl Iterator<Item = &Slot> + Clone + '_ {
        self.queue.iter()
    }
}

/// Queues the slots of pCPU `id` woken since the last look (other than
/// `running`, which is looked at when it leaves the CPU).
fn queue_woken(sys: &System, id: usize, ready: &mut ReadyRing, running: Option<usize>) {
    sys.wakeups.take_woken(id, |s| {
        if Some(s) != running {
            ready.push(s);
        }
    });
}

/// Idle delay before a pCPU powers off and wait before one is powered on,
/// in counter ticks; None: never power off.
fn power_delays(policy: PowerPolicy, slice: u64) -> Option<(u64, u64)> {
    match policy {
        PowerPolicy::Performance => None,
        PowerPolicy::Balanced => Some((100 * slice, 10 * slice)),
        PowerPolicy::Powersave => Some((10 * slice, 50 * slice)),
    }
}

/// Why a pCPU's loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Every VM has ended: the boot pCPU powers the system off.
    SystemOff,
    /// This pCPU has nothing left to run: it powers itself off.
    CpuOff,
    /// Dynamic scaling: this pCPU gave its vCPUs away and powers off; its
    /// state goes back to the system for when it is powered on again.
    Idle,
}

/// The loop of pCPU `pc.id` until it has nothing left to do.
pub fn run<C: Cpu>(cpu: &mut C, sys: &System, pc: &mut PerCpu) -> Stop {
    sys.wakeups.go_online(pc.id, MAX_QUEUE - pc.queue.len());
    crate::trace_event!(pc.id, cpu.now(), Kind::Up, 0, 0, 0);
    let stop = run_loop(cpu, sys, pc);
    if stop != Stop::Idle {
        let _ = sys.wakeups.go_offline(pc.id, 0);
    }
    cpu.disarm_timer();
    stop
}

fn run_loop<C: Cpu>(cpu: &mut C, sys: &System, pc: &mut PerCpu) -> Stop {
    // The vCPU that ran last: queued again after those woken meanwhile, so
    // a vCPU whose timer or interrupt ended the slice runs next.
    let mut last = None;
    loop {
        if sys.running_vms() == 0 {
            if pc.id == 0 {
                info!("all VMs have ended; powering off");
                return Stop::SystemOff;
            }
            return Stop::CpuOff;
        }
        if trace::ENABLED && pc.id == 0 && trace::full() {
            trace::dump(sys.counter_hz);
        }
        pc.need_resched = false;
        sys.wakeups.clear(pc.id);
        pc.receive(cpu, sys);
        queue_woken(sys, pc.id, &mut pc.ready, None);
        pc.take_due_timers(cpu.now());
        if let Some(i) = last.take() {
            pc.requeue(cpu, i);
        }
        pc.answer_asks(cpu, sys);
        let now = cpu.now();
        if now >= pc.next_balance && pc.ready.len() >= 2 {
            pc.next_balance = now + BALANCE_SLICES * sys.slice;
            pc.push_work(cpu, sys);
        }
        match pc.next_runnable(cpu) {
            Some(i) => {
                sys.wakeups.set_load(pc.id, pc.ready.len() + 1);
                pc.idle_since = None;
                pc.maybe_power_on(cpu, sys);
                run_vcpu(cpu, sys, pc, i);
                last = Some(i);
            }
            None => {
                sys.wakeups.set_load(pc.id, 0);
                pc.waiting_since = None;
                pc.ask_for_work(sys);
                let look_again = match pc.maybe_power_off(cpu, sys) {
                    Ok(()) => return Stop::Idle,
                    Err(at) => at,
                };
                pc.slice_end = None;
                let mut armed = arm_next_event(cpu, &pc.timers, None);
                if let Some(at) = look_again.filter(|&at| armed.is_none_or(|d| at < d)) {
                    cpu.arm_timer(at);
                    armed = Some(at);
                }
                if pc.id == 0 && sys.console.has_waiting() {
                    // Console output that waits (a prompt's delay, a rate
                    // limit) is printed even when every VM sleeps.
                    let at = cpu.now() + sys.console.prompt_age();
                    if armed.is_none_or(|d| at < d) {
                        cpu.arm_timer(at);
                    }
                }
                if !sys.wakeups.pending(pc.id) {
                    cpu.wait_for_interrupt();
                }
                let loaded = pc.loaded.and_then(|l| pc.queue.get(l)).map(|s| (s.vm, s.vcpu));
                let all = pc.queue.iter().map(|s| (s.vcpu, &*s.ctx));
                drain_interrupts(cpu, sys, &mut pc.need_resched, loaded, all);
                // The loaded vCPU's own timer or EOI may have made it runnable.
                if let Some(l) = pc.loaded {
                    pc.requeue(cpu, l);
                }
            }
        }
    }
}

/// Can this vCPU run now? A blocked vCPU (WFI) becomes runnable when an
/// interrupt is pending for it, including its virtual timer expiring while
/// it was descheduled. A pure question: the scheduler asks it of several
/// vCPUs in turn, and the answer must not depend on the order.
fn runnable<C: Cpu>(cpu: &C, s: &Slot, loaded: bool) -> bool {
    let (vm, vcpu) = (s.vm, s.vcpu);
    if !vm.is_running() {
        return false;
    }
    match vcpu.power() {
        Power::Off => false,
        Power::OnPending => true,
        Power::On => {
            if !vcpu.blocked.load(Ordering::Acquire) {
                return true;
            }
            let idx = s.index();
            let Some(g) = vm.vgic.cpu(idx) else { return true };
            if g.work.load(Ordering::SeqCst) {
                return true;
            }
            // The list registers: live if loaded, saved otherwise (a flush
            // may have moved an interrupt there after the WFI).
            let deliverable = if loaded {
                let lrs = cpu.lrs();
                if vgic::any_pending(lrs) {
                    return true;
                }
                vm.vgic.deliverable(idx, g, || vgic::holds_timer((0..lrs.count()).map(|i| lrs.read(i))))
            } else {
                let saved = &s.ctx.gich.lr;
                if saved.iter().any(|&l| lr_pending(l)) {
                    return true;
                }
                vm.vgic.deliverable(idx, g, || vgic::holds_timer(saved.iter().copied()))
            };
            if deliverable {
                return true;
            }
            // Its virtual timer expired while it was descheduled (raised
            // when it is picked, `run_vcpu`).
            !loaded && timer_expired(cpu, s)
        }
    }
}

/// Has a descheduled vCPU's virtual timer reached its deadline?
fn timer_expired<C: Cpu>(cpu: &C, s: &Slot) -> bool {
    timer_deadline(s).is_some_and(|d| cpu.now() >= d)
}

/// When a descheduled vCPU's virtual timer fires, in physical counter
/// ticks; None if it is off, masked, or already delivered. Only for a
/// vCPU that is not loaded (its saved state is current).
fn timer_deadline(s: &Slot) -> Option<u64> {
    let g = s.vm.vgic.cpu(s.index())?;
    if g.timer_in_flight.load(Ordering::Acquire) {
        return None;
    }
    let el1 = &s.ctx.el1;
    // CNTV_CTL: ENABLE (bit 0) set, IMASK (bit 1) clear.
    (el1.cntv_ctl & 3 == 1).then(|| el1.cntv_cval.wrapping_add(s.vm.cntvoff))
}

/// Arms the HYP timer for this pCPU's next scheduling event: the end of
/// the running vCPU's slice (set once another vCPU waits), or the earliest
/// virtual-timer deadline of a vCPU that is not loaded. Returns what it
/// armed.
fn arm_next_event<C: Cpu>(cpu: &mut C, timers: &DeadlineHeap, slice_end: Option<u64>) -> Option<u64> {
    let next = match (timers.peek(), slice_end) {
        (Some((d, _)), Some(e)) => d.min(e),
        (Some((d, _)), None) => d,
        (None, Some(e)) => e,
        (None, None) => u64::MAX,
    };
    if next == u64::MAX {
        cpu.disarm_timer();
        None
    } else {
        cpu.arm_timer(next);
        Some(next)
    }
}

/// Saves the loaded vCPU's CPU and GIC state, and files its virtual-timer
/// deadline (from now on it is the scheduler's to watch). EOIs the guest
/// made that the maintenance interrupt has not reported yet are processed
/// first: saving clears GICH_HCR, which withdraws that interrupt, and a
/// timer left "in flight" would never fire again for a vCPU that then
/// sleeps in WFI.
fn unload<C: Cpu>(cpu: &mut C, loaded: &mut Option<usize>, others: &mut Others<'_, Slot>, timers: &mut DeadlineHeap) {
    if let Some(old) = loaded.take() {
        let s = others.get_mut(old).expect("the loaded vCPU is not the one being loaded");
        save_loaded(cpu, s);
        if let Some(d) = timer_deadline(s) {
            timers.set(old, d);
        }
    }
}

/// Saves the loaded vCPU `s`'s CPU and GIC state into its slot, pending
/// EOIs first (see [`unload`]).
fn save_loaded<C: Cpu>(cpu: &mut C, s: &mut Slot) {
    s.vm.vgic.maintenance(s.index(), cpu.lrs_mut());
    cpu.save_vcpu(&mut s.ctx.el1, &mut s.ctx.gich);
}

/// Saves the live VFP registers into `fp`, leaving no owner: the next
/// vCPU to use VFP traps and loads its own.
fn save_live_fp<C: Cpu>(cpu: &mut C, fp: &mut FpState) {
    cpu.trap_fp(false);
    cpu.switch_fp(Some(fp), &FpState::default());
    cpu.trap_fp(true);
}

fn load<C: Cpu>(
    cpu: &mut C,
    s: &Slot,
    i: usize,
    fresh: bool,
    loaded: &mut Option<usize>,
    fp_owner: &mut Option<usize>,
) {
    let (vm, vcpu) = (s.vm, s.vcpu);
    let id = VcpuIdentity { vttbr: vm.vttbr, vmpidr: 0x8000_0000 | vcpu.index, cntvoff: vm.cntvoff };
    cpu.load_vcpu(&s.ctx.el1, &s.ctx.gich, &id);
    // The physical virtual-timer PPI stays off while an injected timer
    // interrupt waits for the guest's EOI (see vgic::VgicCpu).
    let vtimer = vm.vgic.cpu(s.index()).is_some_and(|g| !g.timer_in_flight.load(Ordering::Acquire));
    cpu.set_private_irq(irq::PPI_VTIMER, vtimer);
    if fresh && *fp_owner == Some(i) {
        *fp_owner = None; // the live FP registers are from before its restart
    }
    cpu.trap_fp(*fp_owner != Some(i));
    *loaded = Some(i);
}

/// Runs the vCPU in slot `i` until the scheduler needs to choose again.
fn run_vcpu<C: Cpu>(cpu: &mut C, sys: &System, pc: &mut PerCpu, i: usize) {
    let PerCpu { id, queue, ready, timers, loaded, fp_owner, need_resched, slice_end, .. } = pc;
    let (me, mut others) = queue.split(i);
    timers.remove(i);
    let (vm, vcpu) = (me.vm, me.vcpu);
    let fresh = match vcpu.take_start() {
        Some(ctx) => {
            let steal = core::mem::take(&mut me.ctx.steal).restarted();
            *me.ctx = ctx;
            me.ctx.steal = steal;
            true
        }
        None => false,
    };
    vcpu.blocked.store(false, Ordering::Release);
    if !fresh && *loaded != Some(i) && timer_expired(cpu, me) {
        // Deliver the expired timer with the first entry, not one exit later.
        vm.vgic.raise_timer(me.index());
    }
    if fresh || *loaded != Some(i) {
        if *loaded == Some(i) {
            *loaded = None; // restarted: its live state is stale, do not save it
        }
        unload(cpu, loaded, &mut others, timers);
        load(cpu, me, i, fresh, loaded, fp_owner);
    }
    let idx = me.index();
    let gcpu = vm.vgic.cpu(idx);
    let woken = sys.wakeups.flag(*id);
    let ctx = &mut *me.ctx;
    ctx.steal.resumed(cpu.now(), &vm.ram, sys.tick_ns);
    vcpu.running.store(true, Ordering::SeqCst);
    vcpu.picks.fetch_add(1, Ordering::Relaxed);
    crate::trace_event!(*id, cpu.now(), Kind::Run, vm.id, vcpu.index, 0);
    *slice_end = (!ready.is_empty()).then(|| cpu.now() + sys.slice);
    arm_next_event(cpu, timers, *slice_end);
    loop {
        if let Some(g) = gcpu {
            if g.work.load(Ordering::SeqCst) {
                vm.vgic.flush(idx, cpu.lrs_mut());
                crate::trace_event!(*id, cpu.now(), Kind::Inject, vm.id, vcpu.index, 0);
            }
        }
        let exit = cpu.enter_guest(&mut ctx.regs);
        crate::trace_event!(
            *id,
            cpu.now(),
            Kind::Exit,
            vm.id,
            vcpu.index,
            if exit == Exit::Trap { cpu.trap_info().hsr >> 26 } else { trace::EXIT_IRQ }
        );
        let next = match exit {
            Exit::Trap => exits::handle(cpu, sys, vm, vcpu, ctx, i, &mut others, fp_owner),
            Exit::Irq => {
                vcpu.irq_exits.fetch_add(1, Ordering::Relaxed);
                let all = core::iter::once((vcpu, &*ctx)).chain(others.iter().map(|(_, s)| (s.vcpu, &*s.ctx)));
                drain_interrupts(cpu, sys, need_resched, Some((vm, vcpu)), all);
                if vm.io_pending() {
                    vm.continue_io();
                }
                Next::Resume
            }
            Exit::Fiq => {
                lifecycle::stop_vm(sys, vm, vcpu, ctx.regs.pc, 0, format_args!("unexpected FIQ"));
                Next::Reschedule
            }
            Exit::AsyncAbort => {
                let why = format_args!("asynchronous external abort (SError) caused by the guest");
                lifecycle::stop_vm(sys, vm, vcpu, ctx.regs.pc, 0, why);
                Next::Reschedule
            }
        };
        if next == Next::Reschedule || !vm.is_running() || vcpu.power() != Power::On || *need_resched {
            break;
        }
        if woken.take() {
            queue_woken(sys, *id, ready, Some(i));
            // vCPUs that were sent here wait too (they join the queue at
            // the next pick): the running vCPU gets a slice, not forever.
            if slice_end.is_none() && (!ready.is_empty() || sys.inbox(*id).has_arrivals()) {
                *slice_end = Some(cpu.now() + sys.slice);
                arm_next_event(cpu, timers, *slice_end);
            }
        }
    }
    vcpu.running.store(false, Ordering::SeqCst);
    crate::trace_event!(*id, cpu.now(), Kind::Stop, vm.id, vcpu.index, 0);
    cpu.disarm_timer();
    if vm.is_running() && vcpu.power() == Power::On && !vcpu.blocked.load(Ordering::Acquire) {
        ctx.steal.preempted(cpu.now(), &vm.ram, sys.tick_ns);
    }
}

/// Acknowledges every pending physical interrupt and acts on it. `loaded`
/// is the vCPU whose state is in the CPU (whether it runs or not); `all`
/// every vCPU of this pCPU (for the console's dump key).
fn drain_interrupts<'a, C: Cpu>(
    cpu: &mut C,
    sys: &System,
    need_resched: &mut bool,
    loaded: Option<(&Vm, &Vcpu)>,
    all: impl console_input::Owned<'a>,
) {
    while let Some(iar) = cpu.ack_irq() {
        match iar & 0x3ff {
            irq::PPI_HYP_TIMER => {
                cpu.disarm_timer();
                *need_resched = true;
            }
            irq::SGI_KICK => {}
            irq::PPI_VTIMER => {
                // The loaded vCPU's virtual timer: inject it, and keep the
                // (level) physical interrupt off until the guest's EOI.
                cpu.set_private_irq(irq::PPI_VTIMER, false);
                if let Some((vm, vcpu)) = loaded {
                    vm.vgic.raise_timer(vcpu.index as usize);
                }
            }
            irq::PPI_MAINTENANCE => {
                if let Some((vm, vcpu)) = loaded {
                    if vm.vgic.maintenance(vcpu.index as usize, cpu.lrs_mut()) {
                        cpu.set_private_irq(irq::PPI_VTIMER, true);
                    }
                }
            }
            id if id == sys.uart_irq => console_input::handle(cpu, sys, all.clone()),
            other => warn!("unexpected physical interrupt {other}"),
        }
        cpu.end_irq(iar);
    }
    // Print what the consoles have (unless another pCPU is at it).
    sys.console.pump();
}

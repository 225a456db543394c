//! The whole system once it is built: the VMs, the channels between them,
//! and the little state every pCPU shares (how many VMs still run, who is
//! kicked, where console input goes). Built once by `boot` (or by a host
//! test) and passed by reference to every pCPU's loop; nothing here is a
//! global, so host tests build as many systems as they like.

use crate::arch::MAX_CPUS;
use crate::console::Hub;
use crate::console_input::Input;
use crate::lifecycle::Images;
use crate::pcpu::{Inbox, PerCpu};
use crate::sched::Wakeups;
use crate::vm::{Channel, Vm};
use core::sync::atomic::{AtomicU32, Ordering};
use spin::Mutex;

pub struct System {
    pub vms: &'static [Vm],
    /// Every channel, by id.
    pub channels: &'static [Channel],
    pub wakeups: &'static Wakeups,
    /// The consoles' hub: every pCPU drains it when it passes by.
    pub console: &'static Hub,
    /// A time slice, in counter ticks.
    pub slice: u64,
    /// Counter ticks to nanoseconds (stolen time).
    pub tick_ns: crate::steal::TickNs,
    /// The counter's frequency.
    pub counter_hz: u64,
    /// Where a reset VM's RAM is reloaded from.
    pub images: &'static dyn Images,
    /// The hypervisor console's input (focus, escape key).
    pub input: Input,
    /// The physical interrupt of the console UART's receiver.
    pub uart_irq: u32,
    running: AtomicU32,
    /// Each pCPU's run queue and loop state, until that pCPU takes it.
    handoff: [Mutex<Option<PerCpu>>; MAX_CPUS],
    /// vCPUs on their way to each pCPU (load balancing).
    inboxes: [Inbox; MAX_CPUS],
    /// When idle pCPUs power off (`[system] power`; set by boot).
    pub power: tessera_payload::PowerPolicy,
    /// The pCPUs dynamic scaling may power on again (those started at boot).
    pub power_on_mask: u32,
    /// pCPU power changes so far (dynamic scaling).
    pub power_offs: AtomicU32,
    pub power_ons: AtomicU32,
}

impl System {
    /// `percpu[n]` is pCPU n's run queue (empty for pCPUs without vCPUs).
    #[allow(clippy::too_many_arguments)] // each is a distinct part of the system
    pub fn new(
        vms: &'static [Vm],
        channels: &'static [Channel],
        wakeups: &'static Wakeups,
        console: &'static Hub,
        slice: u64,
        counter_hz: u64,
        images: &'static dyn Images,
        uart_irq: u32,
        percpu: impl IntoIterator<Item = PerCpu>,
    ) -> Self {
        let handoff = [const { Mutex::new(None) }; MAX_CPUS];
        for pc in percpu {
            let id = pc.id;
            *handoff[id].lock() = Some(pc);
        }
        Self {
            vms,
            channels,
            wakeups,
            console,
            slice,
            tick_ns: crate::steal::TickNs::new(counter_hz),
            counter_hz,
            images,
            input: Input::new(),
            uart_irq,
            running: AtomicU32::new(vms.len() as u32),
            handoff,
            inboxes: core::array::from_fn(|_| Inbox::default()),
            power: tessera_payload::PowerPolicy::Performance,
            power_on_mask: 0,
            power_offs: AtomicU32::new(0),
            power_ons: AtomicU32::new(0),
        }
    }

    /// A pCPU that powered off (dynamic scaling) hands its state back, for
    /// when it is powered on again.
    pub fn give_back(&self, pc: PerCpu) {
        let id = pc.id;
        *self.handoff[id].lock() = Some(pc);
    }

    /// Where vCPUs sent to pCPU `cpu` wait.
    pub fn inbox(&self, cpu: usize) -> &Inbox {
        &self.inboxes[cpu]
    }

    /// pCPU `cpu`'s state, for its loop to own from now on; None if it was
    /// taken already or the pCPU has nothing to run.
    pub fn take_percpu(&self, cpu: usize) -> Option<PerCpu> {
        self.handoff.get(cpu)?.lock().take()
    }

    /// How many VMs have not ended.
    pub fn running_vms(&self) -> u32 {
        self.running.load(Ordering::Acquire)
    }

    /// One VM has ended; returns how many still run.
    pub(crate) fn vm_ended(&self) -> u32 {
        self.running.fetch_sub(1, Ordering::AcqRel) - 1
    }
}

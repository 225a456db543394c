//! The virtual GICv2 of a VM (Arm IHI 0048B, chapters 4-5).
//!
//! The guest's CPU interface is the hardware's virtual CPU interface (GICV,
//! mapped at the guest's GICC address), so acknowledge and EOI never trap.
//! The distributor is emulated here: the guest's accesses to it trap and
//! land in [`Vgic::mmio_read`] / [`Vgic::mmio_write`]. Interrupts reach the
//! guest through the list registers of the hypervisor interface (GICH):
//! pending interrupts are recorded in atomics by whoever raises them (a
//! sibling vCPU's SGI, a device, the timer), and the pCPU that owns the
//! target vCPU moves them into free list registers before it enters the
//! guest ([`Vgic::flush`]). Raising an interrupt takes no lock.
//!
//! (Somewhat over 600 lines, on purpose: the distributor's registers, the
//! pending state and the flush that reads both are one invariant.)
//!
//! Simplifications, on purpose: all interrupts are Group 0; pending
//! interrupts are offered to the list registers in interrupt-ID order, with
//! their priorities (the GIC then orders them); an interrupt already in a
//! list register is not queued a second time until that entry is free.

extern crate alloc;

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering::*};

pub const NR_SPIS: usize = 64;
pub const NR_IRQS: usize = 32 + NR_SPIS;
/// GICv2 addresses at most 8 CPU interfaces.
pub const MAX_CPUS: usize = 8;
pub const PPI_VTIMER: u32 = 27;
pub const PPI_MAINTENANCE: u32 = 25;

/// The hypervisor interface's list registers and control, for the vCPU
/// loaded on this pCPU (GICH, IHI 0048B 5.3).
pub trait ListRegs {
    fn count(&self) -> usize;
    fn read(&self, i: usize) -> u32;
    fn write(&mut self, i: usize, v: u32);
    /// Bit i set: list register i is empty (GICH_ELRSR).
    fn empty(&self) -> u64;
    /// Bit i set: list register i was EOIed and asked for it (GICH_EISR).
    fn eoied(&self) -> u64;
    fn hcr(&self) -> u32;
    fn set_hcr(&mut self, v: u32);
}

/// GICH_HCR and list-register fields.
pub mod hw {
    pub const HCR_EN: u32 = 1 << 0;
    /// Maintenance interrupt while at most one list register is in use
    /// (underflow): time to refill. (Not NPIE: with every entry active,
    /// "no pending entry" would hold and the interrupt would never stop.)
    pub const HCR_UIE: u32 = 1 << 1;
    pub const LR_STATE_PENDING: u32 = 1 << 28;
    pub const LR_STATE_ACTIVE: u32 = 1 << 29;
    pub const LR_EOI: u32 = 1 << 19;
    /// Does this list-register value hold a pending interrupt?
    pub fn lr_pending(v: u32) -> bool {
        v & LR_STATE_PENDING != 0
    }
    pub fn lr(id: u32, source: u32, priority: u8, eoi: bool) -> u32 {
        id | (source & 7) << 10 | ((priority >> 3) as u32) << 23 | LR_STATE_PENDING | if eoi { LR_EOI } else { 0 }
    }
}

/// Does one of these list-register values hold the virtual timer, in
/// flight (pending or active) or EOIed and not yet cleared by the
/// maintenance interrupt?
pub fn holds_timer(lrs: impl Iterator<Item = u32>) -> bool {
    let busy = hw::LR_STATE_PENDING | hw::LR_STATE_ACTIVE | hw::LR_EOI;
    lrs.into_iter().any(|v| v & 0x3ff == PPI_VTIMER && v & busy != 0)
}

/// Does any list register hold a pending interrupt (a WFI wake-up reason)?
pub fn any_pending(lrs: &impl ListRegs) -> bool {
    (0..lrs.count()).any(|i| hw::lr_pending(lrs.read(i)))
}

/// Per-vCPU state: banked SGI/PPI configuration and what is pending.
pub struct VgicCpu {
    enabled: AtomicU32,
    /// SGIs (any source) and PPIs pending, not yet in a list register.
    pending: AtomicU32,
    /// For each SGI, the vCPUs that sent it (bit n = vCPU n).
    sgi_sources: [AtomicU8; 16],
    priority: [AtomicU8; 32],
    /// The virtual timer interrupt was injected and not yet EOIed; the
    /// physical timer PPI stays disabled until then (so a level-triggered
    /// timer does not storm the hypervisor).
    pub timer_in_flight: AtomicBool,
    /// Something was raised for this vCPU since its last flush.
    pub work: AtomicBool,
}

impl VgicCpu {
    fn new() -> Self {
        Self {
            // SGIs are always enabled on common implementations; Linux expects so.
            enabled: AtomicU32::new(0xffff),
            pending: AtomicU32::new(0),
            sgi_sources: [const { AtomicU8::new(0) }; 16],
            priority: [const { AtomicU8::new(0) }; 32],
            timer_in_flight: AtomicBool::new(false),
            work: AtomicBool::new(false),
        }
    }
}

pub struct Vgic {
    enabled: AtomicBool,
    spi_enabled: [AtomicU32; NR_SPIS / 32],
    spi_pending: [AtomicU32; NR_SPIS / 32],
    /// Line level of level-triggered SPIs raised by emulated devices.
    spi_level: [AtomicU32; NR_SPIS / 32],
    /// ICFGR bit 1 of each SPI: 1 = edge-triggered.
    spi_edge: [AtomicU32; NR_SPIS / 32],
    spi_priority: [AtomicU8; NR_SPIS],
    spi_targets: [AtomicU8; NR_SPIS],
    cpus: Box<[VgicCpu]>,
}

/// A set of vCPUs (bit n = vCPU n) that need waking after an operation.
pub type Wake = u32;

fn bit(word: &[AtomicU32], n: usize) -> bool {
    word[n / 32].load(Acquire) & (1 << (n % 32)) != 0
}

fn set(word: &[AtomicU32], n: usize, v: bool) {
    if v {
        word[n / 32].fetch_or(1 << (n % 32), AcqRel);
    } else {
        word[n / 32].fetch_and(!(1 << (n % 32)), AcqRel);
    }
}

impl Vgic {
    pub fn new(vcpus: usize) -> Self {
        let n = vcpus.clamp(1, MAX_CPUS);
        Self {
            enabled: AtomicBool::new(false),
            spi_enabled: [const { AtomicU32::new(0) }; NR_SPIS / 32],
            spi_pending: [const { AtomicU32::new(0) }; NR_SPIS / 32],
            spi_level: [const { AtomicU32::new(0) }; NR_SPIS / 32],
            spi_edge: [const { AtomicU32::new(0) }; NR_SPIS / 32],
            spi_priority: [const { AtomicU8::new(0) }; NR_SPIS],
            spi_targets: [const { AtomicU8::new(0) }; NR_SPIS],
            cpus: (0..n).map(|_| VgicCpu::new()).collect(),
        }
    }

    /// vCPUs beyond the eighth cannot be addressed by a GICv2: they get no
    /// interrupts (the packer warns; Linux needs GICv3 for more).
    pub fn cpu(&self, vcpu: usize) -> Option<&VgicCpu> {
        self.cpus.get(vcpu)
    }

    fn nr_cpus(&self) -> usize {
        self.cpus.len()
    }

    /// Back to the reset state (VM reset).
    pub fn reset(&self) {
        self.enabled.store(false, Release);
        for w in self.spi_enabled.iter().chain(&self.spi_pending).chain(&self.spi_edge) {
            w.store(0, Release);
        }
        for b in self.spi_priority.iter().chain(&self.spi_targets) {
            b.store(0, Release);
        }
        for c in self.cpus.iter() {
            c.enabled.store(0xffff, Release);
            c.pending.store(0, Release);
            c.sgi_sources.iter().chain(&c.priority).for_each(|b| b.store(0, Release));
            c.timer_in_flight.store(false, Release);
            c.work.store(false, Release);
        }
    }

    /// Marks a private interrupt (SGI from `source`, or a PPI) pending on
    /// `vcpu`. Returns the vCPUs to wake.
    pub fn raise_private(&self, vcpu: usize, id: u32, source: usize) -> Wake {
        let Some(c) = self.cpus.get(vcpu) else { return 0 };
        if id < 16 {
            c.sgi_sources[id as usize].fetch_or(1 << (source % 8), AcqRel);
        }
        c.pending.fetch_or(1 << (id & 31), AcqRel);
        self.flag(vcpu)
    }

    /// Flags `vcpu` for a flush. Returns it as a vCPU to wake only if it
    /// was not flagged already: a vCPU flagged earlier has been woken (or
    /// will flush before it next runs), so a second kick would only cost
    /// its pCPU an interrupt. Sequentially consistent with the scheduler's
    /// checks of `work` and of the vCPU's state (see `vm::VcpuWaker`).
    fn flag(&self, vcpu: usize) -> Wake {
        if self.cpus[vcpu].work.swap(true, SeqCst) {
            0
        } else {
            1 << vcpu
        }
    }

    /// The vCPUs that have something deliverable now, flagged.
    fn flag_deliverable(&self) -> Wake {
        (0..self.nr_cpus()).filter(|&v| self.deliverable(v, &self.cpus[v], || false)).fold(0, |w, v| w | self.flag(v))
    }

    /// The virtual timer fired for `vcpu` (physically, or by the scheduler's
    /// check for a descheduled vCPU).
    pub fn raise_timer(&self, vcpu: usize) -> Wake {
        match self.cpus.get(vcpu) {
            Some(c) => {
                c.timer_in_flight.store(true, Release);
                self.raise_private(vcpu, PPI_VTIMER, 0)
            }
            None => 0,
        }
    }

    /// Sets the level of SPI `spi` (0-based, INTID 32 + spi) driven by an
    /// emulated device. A rising level makes it pending.
    pub fn set_spi_level(&self, spi: usize, level: bool) -> Wake {
        if spi >= NR_SPIS {
            return 0;
        }
        set(&self.spi_level, spi, level);
        if level {
            self.pend_spi(spi)
        } else {
            if !bit(&self.spi_edge, spi) {
                set(&self.spi_pending, spi, false);
            }
            0
        }
    }

    /// An edge on SPI `spi` (a device notification).
    pub fn pulse_spi(&self, spi: usize) -> Wake {
        if spi >= NR_SPIS {
            return 0;
        }
        self.pend_spi(spi)
    }

    fn pend_spi(&self, spi: usize) -> Wake {
        set(&self.spi_pending, spi, true);
        self.spi_wake(spi)
    }

    /// The vCPUs an SPI would go to now, flagged for a flush; the first one
    /// is woken (1-of-N delivery: whoever flushes first claims it).
    fn spi_wake(&self, spi: usize) -> Wake {
        let targets = self.spi_targets[spi].load(Acquire) as u32 & ((1 << self.nr_cpus()) - 1);
        let mut newly = 0;
        for v in (0..self.nr_cpus()).filter(|v| targets & (1 << v) != 0) {
            newly |= self.flag(v);
        }
        let first = targets & targets.wrapping_neg();
        first & newly
    }

    fn priority_of(&self, vcpu: usize, id: usize) -> u8 {
        if id < 32 {
            self.cpus[vcpu].priority[id].load(Acquire)
        } else {
            self.spi_priority[id - 32].load(Acquire)
        }
    }

    /// Moves what is pending for `vcpu` into free list registers. Called by
    /// the owning pCPU with the vCPU loaded, before entering the guest.
    pub fn flush(&self, vcpu: usize, lrs: &mut impl ListRegs) {
        let Some(c) = self.cpus.get(vcpu) else { return };
        c.work.store(false, Release);
        let mut free = lrs.empty() & ((1u64 << lrs.count()) - 1);
        let mut left_over = false;
        // The list register already holding this interrupt (same source, for
        // an SGI), if any: a new edge then only needs that entry's pending
        // bit (active -> active and pending), as the GIC itself would do.
        let find = |lrs: &dyn Fn(usize) -> u32, count: usize, id: u32, src: u32| {
            (0..count).find(|&i| {
                let v = lrs(i);
                v & (hw::LR_STATE_PENDING | hw::LR_STATE_ACTIVE) != 0
                    && v & 0x3ff == id
                    && (id >= 16 || (v >> 10) & 7 == src)
            })
        };
        let dist_on = self.enabled.load(Acquire);
        // SGIs and PPIs: the set bits only.
        let mut pending = if dist_on { c.pending.load(Acquire) & c.enabled.load(Acquire) } else { 0 };
        while pending != 0 {
            let id = pending.trailing_zeros();
            pending &= pending - 1;
            let sources: u32 = if id < 16 { c.sgi_sources[id as usize].load(Acquire) as u32 } else { 1 };
            let mut remaining = sources;
            for src in (0..8u32).filter(|s| sources & (1 << s) != 0) {
                let src_field = if id < 16 { src } else { 0 };
                if let Some(i) = find(&|i| lrs.read(i), lrs.count(), id, src_field) {
                    let v = lrs.read(i);
                    if v & hw::LR_EOI == 0 {
                        lrs.write(i, v | hw::LR_STATE_PENDING);
                        remaining &= !(1 << src);
                    }
                    // With the EOI bit (the timer), the maintenance interrupt
                    // at its EOI brings it back: it stays pending here.
                    continue;
                }
                if free == 0 {
                    left_over = true;
                    break;
                }
                let i = free.trailing_zeros() as usize;
                free &= !(1 << i);
                let eoi = id == PPI_VTIMER;
                lrs.write(i, hw::lr(id, src_field, self.priority_of(vcpu, id as usize), eoi));
                remaining &= !(1 << src);
            }
            if id < 16 {
                c.sgi_sources[id as usize].fetch_and(!(sources & !remaining) as u8, AcqRel);
            }
            if remaining == 0 {
                c.pending.fetch_and(!(1 << id), AcqRel);
                // A sender may have added itself meanwhile: keep it pending.
                if id < 16 && c.sgi_sources[id as usize].load(Acquire) != 0 {
                    c.pending.fetch_or(1 << id, AcqRel);
                }
            }
        }
        // SPIs targeted at this vCPU: claim each from the shared pending set,
        // a word of candidates (pending and enabled) at a time. One that is
        // pended after its word was read sets `work` again (cleared above),
        // so the next flush takes it.
        let words = if dist_on { NR_SPIS / 32 } else { 0 };
        'words: for w in 0..words {
            let mut cand = self.spi_pending[w].load(Acquire) & self.spi_enabled[w].load(Acquire);
            while cand != 0 {
                let spi = w * 32 + cand.trailing_zeros() as usize;
                cand &= cand - 1;
                if self.spi_targets[spi].load(Acquire) & (1 << vcpu) == 0 {
                    continue;
                }
                let id = 32 + spi as u32;
                let level = !bit(&self.spi_edge, spi);
                if let Some(i) = find(&|i| lrs.read(i), lrs.count(), id, 0) {
                    // Level: re-evaluated at its EOI (maintenance). Edge: mark
                    // the entry pending again and consume this edge.
                    let mask = 1u32 << (spi % 32);
                    if !level && self.spi_pending[spi / 32].fetch_and(!mask, AcqRel) & mask != 0 {
                        lrs.write(i, lrs.read(i) | hw::LR_STATE_PENDING);
                    }
                    continue;
                }
                if free == 0 {
                    left_over = true;
                    break 'words;
                }
                let mask = 1u32 << (spi % 32);
                if self.spi_pending[spi / 32].fetch_and(!mask, AcqRel) & mask == 0 {
                    continue; // another vCPU claimed it
                }
                let i = free.trailing_zeros() as usize;
                free &= !(1 << i);
                lrs.write(i, hw::lr(id, 0, self.spi_priority[spi].load(Acquire), level));
            }
        }
        if left_over {
            // Still work to do: the next entry (or underflow maintenance)
            // flushes again.
            c.work.store(true, Release);
        }
        let hcr = lrs.hcr();
        let want = if left_over { hcr | hw::HCR_UIE } else { hcr & !hw::HCR_UIE };
        if want != hcr {
            lrs.set_hcr(want | hw::HCR_EN);
        }
    }

    /// Handles the maintenance interrupt: list registers the guest EOIed
    /// with the EOI bit set are cleared; a still-high level SPI is pended
    /// again. Returns true if the virtual timer was EOIed (the caller then
    /// re-enables the physical timer PPI). Then refills.
    pub fn maintenance(&self, vcpu: usize, lrs: &mut impl ListRegs) -> bool {
        let mut timer_done = false;
        let eoied = lrs.eoied() & ((1u64 << lrs.count()) - 1);
        for i in (0..lrs.count()).filter(|i| eoied & (1 << i) != 0) {
            let id = lrs.read(i) & 0x3ff;
            lrs.write(i, 0);
            if id == PPI_VTIMER {
                if let Some(c) = self.cpus.get(vcpu) {
                    c.timer_in_flight.store(false, Release);
                }
                timer_done = true;
            } else if (32..NR_IRQS as u32).contains(&id) {
                let spi = id as usize - 32;
                if bit(&self.spi_level, spi) {
                    self.pend_spi(spi);
                }
            }
        }
        // Nothing EOIed and nothing queued (a flush that left interrupts
        // over sets `work`): a flush would find nothing to do.
        if eoied == 0 && self.cpus.get(vcpu).is_none_or(|c| !c.work.load(Acquire)) {
            return timer_done;
        }
        self.flush(vcpu, lrs);
        timer_done
    }

    /// Would the vCPU take an interrupt now (WFI wake-up condition)? If
    /// something is pending outside the list registers, a flush is asked for.
    pub fn has_pending(&self, vcpu: usize, lrs: &impl ListRegs) -> bool {
        let Some(c) = self.cpus.get(vcpu) else { return false };
        if any_pending(lrs) {
            return true;
        }
        if self.deliverable(vcpu, c, || holds_timer((0..lrs.count()).map(|i| lrs.read(i)))) {
            c.work.store(true, Release);
            return true;
        }
        false
    }

    /// (pending, enabled) SGI/PPI bits of a vCPU, for diagnostics.
    pub fn private_state(&self, vcpu: usize) -> (u32, u32) {
        self.cpus.get(vcpu).map_or((0, 0), |c| (c.pending.load(Acquire), c.enabled.load(Acquire)))
    }

    /// Is anything pending, enabled and routed to `vcpu` outside the list
    /// registers, that a flush could deliver now? `timer_held`: does a list
    /// register hold the virtual timer (see [`holds_timer`])? A timer
    /// raised again meanwhile then waits for that entry's EOI, so it is no
    /// reason to wake.
    pub fn deliverable(&self, vcpu: usize, c: &VgicCpu, timer_held: impl FnOnce() -> bool) -> bool {
        if !self.enabled.load(Acquire) {
            return false;
        }
        let pending = c.pending.load(Acquire) & c.enabled.load(Acquire);
        if pending & !(1 << PPI_VTIMER) != 0 || (pending != 0 && !timer_held()) {
            return true;
        }
        (0..NR_SPIS / 32).any(|w| {
            let mut cand = self.spi_pending[w].load(Acquire) & self.spi_enabled[w].load(Acquire);
            while cand != 0 {
                let spi = w * 32 + cand.trailing_zeros() as usize;
                cand &= cand - 1;
                if self.spi_targets[spi].load(Acquire) & (1 << vcpu) != 0 {
                    return true;
                }
            }
            false
        })
    }

    /// A guest read of the distributor (offset within its 4 KiB page).
    pub fn mmio_read(&self, vcpu: usize, off: u32, size: u8) -> u32 {
        // A vCPU the GIC cannot address (the ninth and later) has no banked
        // distributor state of its own: everything reads as zero for it.
        let Some(c) = self.cpus.get(vcpu) else { return 0 };
        let me = vcpu;
        let word = |base: u32| ((off - base) / 4) as usize;
        let v = match off {
            0x000 => self.enabled.load(Acquire) as u32,
            // ITLinesNumber and CPUNumber (IHI 0048B 4.3.2).
            0x004 => (NR_IRQS as u32 / 32 - 1) | ((self.nr_cpus() as u32 - 1) << 5),
            0x008 => 0x0200_143b, // IIDR: Arm, GICv2
            0x100..=0x1ff => {
                let n = word(if off < 0x180 { 0x100 } else { 0x180 });
                match n {
                    0 => c.enabled.load(Acquire),
                    n if n <= NR_SPIS / 32 => self.spi_enabled[n - 1].load(Acquire),
                    _ => 0,
                }
            }
            0x200..=0x2ff => {
                let n = word(if off < 0x280 { 0x200 } else { 0x280 });
                match n {
                    0 => c.pending.load(Acquire),
                    n if n <= NR_SPIS / 32 => self.spi_pending[n - 1].load(Acquire),
                    _ => 0,
                }
            }
            0x400..=0x7fb => {
                let first = (off & !3) as usize - 0x400;
                let w = (0..4).fold(0u32, |acc, k| {
                    let id = first + k;
                    let p = if id < NR_IRQS { self.priority_of(me, id) } else { 0 };
                    acc | (p as u32) << (8 * k)
                });
                return extract(w, off, size);
            }
            0x800..=0xbfb => {
                let first = (off & !3) as usize - 0x800;
                let w = (0..4).fold(0u32, |acc, k| {
                    let id = first + k;
                    let t = match id {
                        0..32 => 1u8 << me,
                        32..NR_IRQS => self.spi_targets[id - 32].load(Acquire),
                        _ => 0,
                    };
                    acc | (t as u32) << (8 * k)
                });
                return extract(w, off, size);
            }
            0xc00..=0xcff => match word(0xc00) {
                0 => 0xaaaa_aaaa, // SGIs: edge
                1 => 0,           // PPIs: level (the timers)
                n if n - 2 < NR_SPIS / 16 => {
                    let edges = self.spi_edge[(n - 2) / 2].load(Acquire) >> (16 * ((n - 2) % 2));
                    (0..16).fold(0, |acc, k| acc | ((edges >> k) & 1) << (2 * k + 1))
                }
                _ => 0,
            },
            0xf10..=0xf2f => {
                // CPENDSGIR/SPENDSGIR: one byte of sources per SGI.
                let first = (off & !3) as usize - if off < 0xf20 { 0xf10 } else { 0xf20 };
                let w = (0..4).fold(0u32, |acc, k| acc | (c.sgi_sources[first + k].load(Acquire) as u32) << (8 * k));
                return extract(w, off, size);
            }
            0xfe8 => 0x2b, // PIDR2: GICv2
            _ => 0,
        };
        extract(v, off, size)
    }

    /// A guest write to the distributor. Returns the vCPUs to wake.
    pub fn mmio_write(&self, vcpu: usize, off: u32, size: u8, val: u32) -> Wake {
        // ... and its writes are ignored (see `mmio_read`).
        let Some(c) = self.cpus.get(vcpu) else { return 0 };
        let me = vcpu;
        let word = |base: u32| ((off - base) / 4) as usize;
        let mut wake = 0;
        match off {
            0x000 => {
                let was = self.enabled.swap(val & 1 != 0, AcqRel);
                if !was && val & 1 != 0 {
                    wake = self.flag_deliverable();
                }
            }
            0x100..=0x17f => match word(0x100) {
                0 => {
                    let newly = val & !c.enabled.fetch_or(val, AcqRel);
                    if newly & c.pending.load(Acquire) != 0 {
                        wake = self.flag(me);
                    }
                }
                n if n <= NR_SPIS / 32 => {
                    let newly = val & !self.spi_enabled[n - 1].fetch_or(val, AcqRel);
                    for k in (0..32).filter(|k| newly & (1 << k) != 0) {
                        let spi = (n - 1) * 32 + k;
                        if bit(&self.spi_pending, spi) {
                            wake |= self.spi_wake(spi);
                        }
                    }
                }
                _ => {}
            },
            0x180..=0x1ff => match word(0x180) {
                0 => {
                    c.enabled.fetch_and(!(val & 0xffff_0000), AcqRel);
                }
                n if n <= NR_SPIS / 32 => {
                    self.spi_enabled[n - 1].fetch_and(!val, AcqRel);
                }
                _ => {}
            },
            0x200..=0x27f => match word(0x200) {
                0 => {
                    // SGI pending bits are set through SPENDSGIR only.
                    let newly = val & 0xffff_0000 & !c.pending.fetch_or(val & 0xffff_0000, AcqRel);
                    if newly & c.enabled.load(Acquire) != 0 {
                        wake = self.flag(me);
                    }
                }
                n if n <= NR_SPIS / 32 => {
                    for k in (0..32).filter(|k| val & (1 << k) != 0) {
                        wake |= self.pend_spi((n - 1) * 32 + k);
                    }
                }
                _ => {}
            },
            0x280..=0x2ff => match word(0x280) {
                0 => {
                    c.pending.fetch_and(!(val & 0xffff_0000), AcqRel);
                }
                n if n <= NR_SPIS / 32 => {
                    self.spi_pending[n - 1].fetch_and(!val, AcqRel);
                }
                _ => {}
            },
            0x400..=0x7fb => {
                for (k, byte) in bytes(off, size, val) {
                    let id = (k - 0x400) as usize;
                    match id {
                        0..32 => c.priority[id].store(byte, Release),
                        32..NR_IRQS => self.spi_priority[id - 32].store(byte, Release),
                        _ => {}
                    }
                }
            }
            0x800..=0xbfb => {
                for (k, byte) in bytes(off, size, val) {
                    let id = (k - 0x800) as usize;
                    if (32..NR_IRQS).contains(&id) {
                        self.spi_targets[id - 32].store(byte, Release);
                        if bit(&self.spi_pending, id - 32) {
                            wake |= self.spi_wake(id - 32);
                        }
                    }
                }
            }
            0xc00..=0xcff => {
                let n = word(0xc00);
                if n >= 2 && n - 2 < NR_SPIS / 16 {
                    let edges = (0..16).fold(0u32, |acc, k| acc | ((val >> (2 * k + 1)) & 1) << k);
                    let (w, shift) = ((n - 2) / 2, 16 * ((n - 2) % 2));
                    let old = self.spi_edge[w].load(Acquire);
                    self.spi_edge[w].store((old & !(0xffff << shift)) | edges << shift, Release);
                }
            }
            0xf00 => wake = self.sgir(me, val),
            0xf10..=0xf2f => {
                let set_pending = off >= 0xf20;
                let base = if set_pending { 0xf20 } else { 0xf10 };
                for (k, byte) in bytes(off, size, val) {
                    let sgi = (k - base) as usize;
                    if set_pending {
                        if byte == 0 {
                            continue;
                        }
                        c.sgi_sources[sgi].fetch_or(byte, AcqRel);
                        c.pending.fetch_or(1 << sgi, AcqRel);
                        wake |= self.flag(me);
                    } else {
                        let left = c.sgi_sources[sgi].fetch_and(!byte, AcqRel) & !byte;
                        if left == 0 {
                            c.pending.fetch_and(!(1 << sgi), AcqRel);
                        }
                    }
                }
            }
            _ => {} // read-only or reserved: ignored
        }
        wake
    }

    /// GICD_SGIR: a virtual IPI.
    fn sgir(&self, me: usize, val: u32) -> Wake {
        let sgi = val & 0xf;
        let all = (1u32 << self.nr_cpus()) - 1;
        let targets = match (val >> 24) & 3 {
            0 => (val >> 16) & 0xff,
            1 => all & !(1 << me),
            2 => 1 << me,
            _ => 0,
        } & all;
        let mut wake = 0;
        for v in (0..self.nr_cpus()).filter(|v| targets & (1 << v) != 0) {
            wake |= self.raise_private(v, sgi, me);
        }
        wake
    }
}

fn mask(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => !0,
    }
}

/// The bytes of a word-wide register as a byte/halfword access sees them.
fn extract(word: u32, off: u32, size: u8) -> u32 {
    (word >> (8 * (off & 3))) & mask(size)
}

/// (byte offset, byte) pairs written by an access.
fn bytes(off: u32, size: u8, val: u32) -> impl Iterator<Item = (u32, u8)> {
    (0..size as u32).map(move |k| (off + k, (val >> (8 * k)) as u8))
}

#[cfg(test)]
#[path = "vgic_tests.rs"]
mod tests;

//! Bytes typed at the hypervisor's console: they go to the focused VM's
//! UART. `Ctrl-\` then a VM's number (1-9) moves the focus, `Ctrl-\` twice
//! sends one `Ctrl-\`, and `Ctrl-\` then `d` prints every vCPU's state.

use crate::arch::Cpu;
use crate::info;
use crate::system::System;
use crate::vcpu::{Vcpu, VcpuContext};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Console input: this byte, then a VM's number (1-9), moves the input.
pub const ESCAPE: u8 = 0x1c; // Ctrl-\

/// Where input goes, and whether the escape key was just pressed.
pub struct Input {
    focus: AtomicUsize,
    escaped: AtomicBool,
}

impl Input {
    pub const fn new() -> Self {
        Self { focus: AtomicUsize::new(0), escaped: AtomicBool::new(false) }
    }

    pub fn focus(&self) -> usize {
        self.focus.load(Ordering::Acquire)
    }
}

impl Default for Input {
    fn default() -> Self {
        Self::new()
    }
}

/// The vCPUs a pCPU owns, with their saved contexts (the dump shows them).
pub trait Owned<'a>: Iterator<Item = (&'a Vcpu, &'a VcpuContext)> + Clone {}
impl<'a, T: Iterator<Item = (&'a Vcpu, &'a VcpuContext)> + Clone> Owned<'a> for T {}

/// Reads what the console UART has and acts on it. `own` are the vCPUs of
/// the calling pCPU.
pub fn handle<'a, C: Cpu>(cpu: &mut C, sys: &System, own: impl Owned<'a>) {
    while let Some(b) = cpu.console_read() {
        if sys.input.escaped.swap(false, Ordering::AcqRel) {
            match b {
                b'1'..=b'9' if ((b - b'1') as usize) < sys.vms.len() => {
                    let n = (b - b'1') as usize;
                    sys.input.focus.store(n, Ordering::Release);
                    info!("console input now goes to vm \"{}\"", sys.vms[n].name());
                    continue;
                }
                ESCAPE => {}
                b'd' => {
                    dump(cpu.now(), sys, own.clone());
                    continue;
                }
                _ => continue,
            }
        } else if b == ESCAPE {
            sys.input.escaped.store(true, Ordering::Release);
            continue;
        }
        if let Some(vm) = sys.vms.get(sys.input.focus()) {
            if vm.is_running() {
                vm.type_input(&[b]);
            }
        }
    }
}

/// Ctrl-\\ d: one line per vCPU (state, and for those this pCPU owns, the
/// PC and virtual timer), for a system that seems stuck. The running
/// vCPU's registers are from its last exit.
fn dump<'a>(now: u64, sys: &System, own: impl Owned<'a>) {
    for vm in sys.vms {
        for v in vm.vcpus {
            let g = vm.vgic.cpu(v.index as usize);
            let pending =
                g.is_some_and(|g| g.work.load(Ordering::Acquire) || vm.vgic.deliverable(v.index as usize, g, || false));
            let in_flight = g.is_some_and(|g| g.timer_in_flight.load(Ordering::Acquire));
            let (name, i, p) = (vm.name(), v.index, v.pcpu());
            let (power, blocked, running) =
                (v.power(), v.blocked.load(Ordering::Acquire), v.running.load(Ordering::Acquire));
            match own.clone().find(|(o, _)| core::ptr::eq(*o, v)) {
                Some((_, ctx)) => {
                    info!(
                        "dump: vm \"{name}\" vCPU {i} on pCPU {p}: picked {} times, {} irq exits, {power:?} blocked={blocked} running={running} pending={pending} timer_in_flight={in_flight} pc={:#010x} cpsr={:#x} cntv_ctl={:#x} cntv_cval={:#x} (vcnt now {:#x})",
                        v.picks.load(Ordering::Relaxed),
                        v.irq_exits.load(Ordering::Relaxed),
                        ctx.regs.pc,
                        ctx.regs.cpsr,
                        ctx.el1.cntv_ctl,
                        ctx.el1.cntv_cval,
                        now.wrapping_sub(vm.cntvoff)
                    );
                    info!("dump:   r={:x?} lr_usr={:#x} lr_svc={:#x} sp_svc={:#x}", ctx.regs.r, ctx.regs.lr_usr, ctx.el1.lr_svc, ctx.el1.sp_svc);
                    let (pend, en) = vm.vgic.private_state(v.index as usize);
                    info!(
                        "dump:   gich hcr={:#x} vmcr={:#x} apr={:#x} lr={:x?} private pending={pend:#x} enabled={en:#x}",
                        ctx.gich.hcr,
                        ctx.gich.vmcr,
                        ctx.gich.apr,
                        &ctx.gich.lr[..4]
                    );
                }
                None => info!(
                    "dump: vm \"{name}\" vCPU {i} on pCPU {p}: {power:?} blocked={blocked} running={running} pending={pending} timer_in_flight={in_flight}"
                ),
            }
        }
    }
}

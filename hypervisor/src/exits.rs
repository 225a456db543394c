//! What a trapped vCPU gets: one handler per [`Trap`], each returning what
//! the loop does next. Guest-caused errors end in an SMCCC error code, an
//! emulated result, or the VM stopped with one line naming VM, vCPU,
//! address and reason (`lifecycle::stop_vm`).

use crate::addr::Ipa;
use crate::arch::{irq, AbortTo, Cpu};
use crate::context::GuestRegs;
use crate::coproc::{self, Action as Cp, CpAccess, CpWide};
use crate::hypercall::{self, Action};
use crate::info;
use crate::lifecycle;
use crate::mem::GuestMemory;
use crate::mmio::{self, Regs};
use crate::pcpu::Slot;
use crate::sched::Others;
use crate::system::System;
use crate::trap::{self, Decoded, Trap};
use crate::vcpu::{Power, Vcpu, VcpuContext};
use crate::vm::{Vm, VmState};
use core::sync::atomic::Ordering;
use hypercall_abi::psci;

/// What the loop does after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Re-enter the same vCPU at once.
    Resume,
    /// Go back to the scheduler.
    Reschedule,
}

/// The trapped vCPU's registers including the banked ones of its current
/// mode, which are still live in the CPU (the vCPU is loaded).
struct LiveRegs<'a, C: Cpu> {
    cpu: &'a mut C,
    regs: &'a mut GuestRegs,
}

impl<C: Cpu> Regs for LiveRegs<'_, C> {
    fn get(&self, n: u8) -> Option<u32> {
        self.cpu.read_banked(self.regs.cpsr & 0x1f, n).or_else(|| self.regs.get(n))
    }
    fn set(&mut self, n: u8, v: u32) -> bool {
        self.cpu.write_banked(self.regs.cpsr & 0x1f, n, v) || self.regs.set(n, v)
    }
}

/// Steps over the trapped instruction (and its place in a Thumb IT block).
fn skip_instruction(ctx: &mut VcpuContext, t: &Decoded) {
    ctx.regs.pc = ctx.regs.pc.wrapping_add(t.instr_len());
    ctx.regs.cpsr = trap::advance_it(ctx.regs.cpsr);
}

/// Handles the trap the vCPU in slot `i` just took (`vm`, `vcpu`, and its
/// context). `others` are the other slots of this pCPU (the lazy VFP switch
/// saves into its owner's).
#[allow(clippy::too_many_arguments)] // the pieces of one split borrow, kept apart for the hot path
pub fn handle<C: Cpu>(
    cpu: &mut C,
    sys: &System,
    vm: &'static Vm,
    vcpu: &'static Vcpu,
    ctx: &mut VcpuContext,
    i: usize,
    others: &mut Others<'_, Slot>,
    fp_owner: &mut Option<usize>,
) -> Next {
    let t = trap::decode(cpu.trap_info());
    // Instructions that may trap although they failed their condition
    // check (never HVC or an abort): such a one did nothing, step over it.
    let conditional =
        matches!(t.trap, Trap::Wfi | Trap::Wfe | Trap::Coproc(_) | Trap::CoprocWide(_) | Trap::Cp14Memory | Trap::Smc);
    if conditional && !t.condition_passed(ctx.regs.cpsr) {
        skip_instruction(ctx, &t);
        return Next::Resume;
    }
    match t.trap {
        Trap::Hvc => hvc(cpu, sys, vm, vcpu, ctx),
        Trap::Wfe => {
            skip_instruction(ctx, &t);
            if vm.io_pending() {
                vm.continue_io();
            }
            Next::Reschedule // a spinning lock: yield
        }
        Trap::Wfi => {
            skip_instruction(ctx, &t);
            // Device work a notification left: done now, in this vCPU's
            // time; while some is left, the vCPU yields instead of sleeping.
            if vm.io_pending() && vm.continue_io() {
                return Next::Reschedule;
            }
            let idx = vcpu.index as usize;
            if vm.vgic.cpu(idx).is_none() {
                return Next::Reschedule;
            }
            // EOIs not yet reported by the maintenance interrupt (see `pcpu::unload`).
            if vm.vgic.maintenance(idx, cpu.lrs_mut()) {
                cpu.set_private_irq(irq::PPI_VTIMER, true);
            }
            if vm.vgic.has_pending(idx, cpu.lrs()) {
                return Next::Resume;
            }
            vcpu.blocked.store(true, Ordering::SeqCst);
            Next::Reschedule
        }
        Trap::Coproc(op) => coproc_access(cpu, sys, vm, vcpu, ctx, op, &t),
        Trap::CoprocWide(op) => coproc_wide(cpu, sys, vm, vcpu, ctx, op, &t),
        Trap::Cp14Memory => {
            // The debug communication channel: there is no debugger to talk to.
            skip_instruction(ctx, &t);
            Next::Resume
        }
        Trap::FpAccess => {
            // Lazy VFP switch: save whoever owns the registers, load ours,
            // and retry the instruction.
            cpu.trap_fp(false);
            match *fp_owner {
                Some(o) if o != i => {
                    let owner = others.get_mut(o).map(|s| &mut s.ctx.fp);
                    cpu.switch_fp(owner, &ctx.fp);
                }
                Some(_) => {}
                None => cpu.switch_fp(None, &ctx.fp),
            }
            *fp_owner = Some(i);
            Next::Resume
        }
        Trap::Smc => {
            // Guests have no firmware to call: their PSCI conduit is HVC.
            skip_instruction(ctx, &t);
            ctx.regs.r[0] = hypercall_abi::Error::NotSupported.code() as u32;
            Next::Resume
        }
        Trap::DataAbort { abort, ipa, va } => {
            // The first use of a block of its RAM (the access, or its
            // stage-1 table walk): zeroed, mapped, and the guest retries.
            if matches!(abort.fault, mmio::FaultKind::Translation(_)) && vm.populate(ipa) {
                return Next::Resume;
            }
            let dir = if abort.write { "write to" } else { "read from" };
            let to = AbortTo { instruction: false, write: abort.write, va };
            if abort.s1ptw {
                // The guest's own page-table walk reached something that is
                // not its RAM: never a device access to emulate.
                let why = format_args!("stage-1 table walk {dir} IPA {ipa}, which is not the VM's RAM");
                return fault(cpu, sys, vm, vcpu, ctx, &t, to, why);
            }
            if !matches!(abort.fault, mmio::FaultKind::Translation(_)) {
                // HPFAR is UNKNOWN for these: name the guest's VA instead.
                let why = format_args!("{dir} guest VA {va:#010x} ({})", abort.fault.describe());
                return fault(cpu, sys, vm, vcpu, ctx, &t, to, why);
            }
            match vm.mmio(vcpu.index, ipa, &abort, &mut LiveRegs { cpu, regs: &mut ctx.regs }) {
                Ok(()) => {
                    skip_instruction(ctx, &t);
                    Next::Resume
                }
                Err(e) => fault(cpu, sys, vm, vcpu, ctx, &t, to, format_args!("{dir} IPA {ipa} ({})", e.describe())),
            }
        }
        Trap::PrefetchAbort { fault: kind, ipa, va } => {
            let to = AbortTo { instruction: true, write: false, va };
            match kind {
                mmio::FaultKind::Translation(_) if vm.populate(ipa) => Next::Resume,
                mmio::FaultKind::Translation(_) => {
                    let why = format_args!("instruction fetch from IPA {ipa} (no executable stage-2 mapping)");
                    fault(cpu, sys, vm, vcpu, ctx, &t, to, why)
                }
                _ => {
                    let why = format_args!("instruction fetch at guest VA {va:#010x} ({})", kind.describe());
                    fault(cpu, sys, vm, vcpu, ctx, &t, to, why)
                }
            }
        }
        Trap::Other { ec } => {
            let why = format_args!("unexpected trap, exception class {ec:#04x}");
            lifecycle::stop_vm(sys, vm, vcpu, ctx.regs.pc, t.hsr, why);
            Next::Reschedule
        }
    }
}

/// An access the hypervisor will not serve: the VM is stopped with `why`,
/// or, if its configuration says `on_fault = "abort"`, the guest takes an
/// external abort for it (and may carry on, as on a board where nothing
/// answers at that address).
#[allow(clippy::too_many_arguments)] // the pieces of one split borrow
fn fault<C: Cpu>(
    cpu: &mut C,
    sys: &System,
    vm: &Vm,
    vcpu: &Vcpu,
    ctx: &mut VcpuContext,
    t: &Decoded,
    to: AbortTo,
    why: core::fmt::Arguments<'_>,
) -> Next {
    if vm.fault_abort && vm.is_running() {
        crate::debug!("vm \"{}\" vCPU {}: abort injected: {why}", vm.name(), vcpu.index);
        cpu.inject_abort(&mut ctx.regs, to);
        return Next::Resume;
    }
    lifecycle::stop_vm(sys, vm, vcpu, ctx.regs.pc, t.hsr, why);
    Next::Reschedule
}

/// A trapped MRC/MCR to CP14 or CP15: what `coproc` says a guest gets.
#[allow(clippy::too_many_arguments)] // the pieces of one split borrow
fn coproc_access<C: Cpu>(
    cpu: &mut C,
    sys: &System,
    vm: &Vm,
    vcpu: &Vcpu,
    ctx: &mut VcpuContext,
    op: CpAccess,
    t: &Decoded,
) -> Next {
    let done = match coproc::access(&op) {
        Cp::ReadAs(_) if !op.read => true,
        // MRC to r15 sets the condition flags (APSR_nzcv).
        Cp::ReadAs(v) if op.rt == 15 => {
            ctx.regs.cpsr = (ctx.regs.cpsr & 0x0fff_ffff) | (v & 0xf000_0000);
            true
        }
        Cp::ReadAs(v) => LiveRegs { cpu, regs: &mut ctx.regs }.set(op.rt, v),
        Cp::CleanInvalidateSetWay => match (LiveRegs { cpu, regs: &mut ctx.regs }).get(op.rt) {
            Some(set_way) => {
                cpu.clean_invalidate_set_way(set_way);
                true
            }
            None => false,
        },
        Cp::Refuse => false,
    };
    if done {
        skip_instruction(ctx, t);
        return Next::Resume;
    }
    let (cp, crn, opc1, crm, opc2) = (op.cp, op.crn, op.opc1, op.crm, op.opc2);
    let rw = if op.read { "read" } else { "write" };
    let why = format_args!("{rw} of CP{cp} c{crn}, {opc1}, c{crm}, {opc2}, which guests may not use");
    lifecycle::stop_vm(sys, vm, vcpu, ctx.regs.pc, t.hsr, why);
    Next::Reschedule
}

/// A trapped MRRC/MCRR to CP14 or CP15.
fn coproc_wide<C: Cpu>(
    cpu: &mut C,
    sys: &System,
    vm: &Vm,
    vcpu: &Vcpu,
    ctx: &mut VcpuContext,
    op: CpWide,
    t: &Decoded,
) -> Next {
    let done = match coproc::wide(&op) {
        Cp::ReadAs(_) if !op.read => true,
        Cp::ReadAs(v) => {
            let mut regs = LiveRegs { cpu, regs: &mut ctx.regs };
            regs.set(op.rt, v) && regs.set(op.rt2, 0)
        }
        Cp::CleanInvalidateSetWay | Cp::Refuse => false,
    };
    if done {
        skip_instruction(ctx, t);
        return Next::Resume;
    }
    let (cp, opc1, crm) = (op.cp, op.opc1, op.crm);
    let rw = if op.read { "read" } else { "write" };
    let why = format_args!("64-bit {rw} of CP{cp} {opc1}, c{crm}, which guests may not use");
    lifecycle::stop_vm(sys, vm, vcpu, ctx.regs.pc, t.hsr, why);
    Next::Reschedule
}

fn hvc<C: Cpu>(cpu: &mut C, sys: &System, vm: &Vm, vcpu: &Vcpu, ctx: &mut VcpuContext) -> Next {
    let mut r = [0u32; 8];
    r.copy_from_slice(&ctx.regs.r[..8]);
    match hypercall::dispatch(&mut CallerCtx { vm, vcpu, sys, steal: &mut ctx.steal }, &r) {
        Action::Return { regs, count } => {
            let n = count as usize;
            ctx.regs.r[..n].copy_from_slice(&regs[..n]);
            Next::Resume
        }
        Action::Yield => {
            ctx.regs.r[0] = 0;
            Next::Reschedule
        }
        Action::Suspend => {
            // Standby power state: like WFI.
            ctx.regs.r[0] = 0;
            let idx = vcpu.index as usize;
            if vm.vgic.cpu(idx).is_some() && !vm.vgic.has_pending(idx, cpu.lrs()) {
                vcpu.blocked.store(true, Ordering::SeqCst);
            }
            Next::Reschedule
        }
        Action::CpuOff => {
            vcpu.power_off();
            // With no vCPU on (or being started), nothing can ever CPU_ON
            // one again: the VM is over, not merely idle.
            if vm.vcpus.iter().all(|v| v.power() == Power::Off) {
                info!("vm \"{}\" (id {}): its last running vCPU called PSCI CPU_OFF", vm.name(), vm.id);
                lifecycle::end_vm(sys, vm, VmState::Exited, 0);
            }
            Next::Reschedule
        }
        Action::Shutdown(status) => {
            lifecycle::end_vm(sys, vm, VmState::Exited, status);
            Next::Reschedule
        }
        Action::SystemOff => {
            lifecycle::end_vm(sys, vm, VmState::Exited, 0);
            Next::Reschedule
        }
        Action::SystemReset => {
            lifecycle::reset_vm(cpu, sys, vm, vcpu);
            Next::Reschedule
        }
    }
}

/// The dispatcher's view of the calling vCPU.
struct CallerCtx<'a> {
    vm: &'a Vm,
    vcpu: &'a Vcpu,
    sys: &'a System,
    steal: &'a mut crate::steal::StealClock,
}

impl crate::hypercall::Caller for CallerCtx<'_> {
    fn vm_id(&self) -> u32 {
        self.vm.id
    }
    fn vcpu_count(&self) -> u32 {
        self.vm.vcpus.len() as u32
    }
    fn vcpu_index(&self) -> u32 {
        self.vcpu.index
    }
    fn memory(&self) -> &dyn GuestMemory {
        &self.vm.ram
    }
    fn console_write(&mut self, bytes: &[u8]) {
        self.vm.console.write(bytes)
    }
    fn console_read(&mut self, ipa: Ipa, out: &mut [u8]) -> Option<usize> {
        self.vm.console_read(ipa, out)
    }
    fn cpu_on(&mut self, index: u32, entry: u32, context_id: u32) -> i32 {
        let target = &self.vm.vcpus[index as usize];
        let r = target.request_on(entry, context_id);
        if r == psci::SUCCESS {
            let (pcpu, slot) = target.home();
            self.vm.waker.wakeups.wake(pcpu, slot);
        }
        r
    }
    fn affinity_info(&self, index: u32) -> i32 {
        self.vm.vcpus[index as usize].affinity_info()
    }
    fn channels(&self) -> u32 {
        self.vm.channels
    }
    fn channel_count(&self) -> u32 {
        self.sys.channels.len() as u32
    }
    fn ring_doorbell(&mut self, channel: u32) -> u32 {
        self.sys.channels.get(channel as usize).map_or(0, |c| c.ring(self.vm))
    }
    fn set_steal_record(&mut self, ipa: Option<Ipa>) {
        self.steal.register(&self.vm.ram, ipa, self.sys.tick_ns);
    }
}

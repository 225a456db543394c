//! How a VM ends or starts over: the guest exits (VM_SHUTDOWN, PSCI
//! SYSTEM_OFF, its last CPU_OFF), the hypervisor stops it for something it
//! did, or it resets (PSCI SYSTEM_RESET) and reloads its image.

use crate::addr::Ipa;
use crate::arch::Cpu;
use crate::mem::{GuestMemory, GuestRam};
use crate::system::System;
use crate::vcpu::Vcpu;
use crate::vm::{BootImage, Vm, VmState};
use crate::{error, info};
use core::fmt;
use core::sync::atomic::Ordering;
use tessera_payload::Payload;

/// Where a VM's initial memory contents come from.
pub trait Images: Sync {
    /// Zeroes the VM's RAM and writes its image into it again, with
    /// `resets` as its reset count. The caller then cleans the caches.
    fn reload(&self, vm: &Vm, resets: u32);
}

/// The VMs' images in the boot payload.
pub struct PayloadImages(pub &'static Payload<'static>);

impl Images for PayloadImages {
    fn reload(&self, vm: &Vm, resets: u32) {
        load_image(&vm.ram, self.0, &vm.boot, resets);
    }
}

/// (Re)loads a VM's RAM from the payload: zeroed, then its regions, then
/// the reset count (the caller cleans it to the point of coherency, for a
/// guest that starts with caches off).
pub fn load_image(ram: &GuestRam, p: &Payload<'_>, boot: &BootImage, resets: u32) {
    ram.zero();
    for r in p.vm(boot.payload_index).regions() {
        // The parser checked that every region lies in this VM's RAM.
        let _ = ram.write(Ipa(r.ipa as u64), p.region_bytes(r));
    }
    if let Some(ipa) = boot.reset_count_ipa {
        let _ = ram.write(ipa, &resets.to_be_bytes());
    }
}

/// Stops a VM for something it did, with one line naming VM, vCPU, PC and why.
pub fn stop_vm(sys: &System, vm: &Vm, vcpu: &Vcpu, pc: u32, hsr: u32, why: fmt::Arguments<'_>) {
    if vm.is_running() {
        error!(
            "vm \"{}\" vCPU {} stopped: {why}; PC {pc:#010x}, HSR {hsr:#010x} (EC {:#04x})",
            vm.name(),
            vcpu.index,
            hsr >> 26
        );
    }
    end_vm(sys, vm, VmState::Stopped, 0);
}

/// Ends a VM (`how` is Exited or Stopped); the first caller wins. When the
/// last VM ends, every pCPU is kicked: the boot pCPU powers the system
/// off, the others themselves.
pub fn end_vm(sys: &System, vm: &Vm, how: VmState, status: u32) {
    if !vm.end(how, status) {
        return;
    }
    vm.console.finish();
    vm.hvc.finish();
    // Nothing reaches an ended VM's memory any more (a peer's frames).
    for dev in vm.virtio {
        dev.quiesce();
    }
    match how {
        VmState::Exited => info!("vm \"{}\" (id {}): exited, status {status}", vm.name(), vm.id),
        _ => info!("vm \"{}\" (id {}): stopped by the hypervisor", vm.name(), vm.id),
    }
    let moves: u32 = vm.vcpus.iter().map(|v| v.migrations.load(Ordering::Relaxed)).sum();
    if moves > 0 {
        info!("vm \"{}\" (id {}): its vCPUs moved between pCPUs {moves} time(s)", vm.name(), vm.id);
    }
    // Counted before the wake-ups, so a pCPU they wake sees the new count
    // (and stops if it was the last VM).
    let left = sys.vm_ended();
    vm.wake_all();
    if left == 0 {
        // Every pCPU stops (pCPU 0 powers the system off), also those
        // holding none of this VM's vCPUs.
        for p in 0..crate::arch::MAX_CPUS as u32 {
            sys.wakeups.kick(p);
        }
    }
}

/// PSCI SYSTEM_RESET: the VM restarts from its image, as after power-on,
/// with `/chosen/tessera,reset-count` one higher. Its other vCPUs leave the
/// guest first (each pCPU does at once when kicked, as the VM is no longer
/// running); `caller` is the vCPU running here.
pub fn reset_vm<C: Cpu>(cpu: &mut C, sys: &System, vm: &Vm, caller: &Vcpu) {
    if !vm.begin_reset() {
        return;
    }
    vm.console.finish();
    vm.hvc.finish();
    let n = vm.resets.fetch_add(1, Ordering::AcqRel) + 1;
    info!("vm \"{}\" (id {}): reset #{n} (PSCI SYSTEM_RESET)", vm.name(), vm.id);
    vm.wake_all();
    for v in vm.vcpus.iter().filter(|v| !core::ptr::eq(*v, caller)) {
        while v.running.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
    }
    // Devices first: once quiesced, no device work (a peer's frames landing
    // in old receive buffers) touches the RAM that is reloaded next.
    for dev in vm.virtio {
        dev.quiesce();
    }
    // Its RAM is forgotten and zeroed again block by block as it is used:
    // unmapped first, so nothing of the old contents stays reachable.
    vm.unmap_ram();
    sys.images.reload(vm, n);
    cpu.clean_to_poc(&vm.ram);
    vm.reset_console_input();
    vm.vgic.reset();
    for (i, v) in vm.vcpus.iter().enumerate() {
        v.reset((i == 0).then_some((vm.boot.entry, vm.boot.regs)));
    }
    for dev in vm.virtio {
        dev.resume();
    }
    vm.end_reset();
    vm.wake_all();
}

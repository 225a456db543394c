//! The run loop on the host: real VMs, vGIC, dispatcher and life cycle,
//! driven through the fake arch by guest scripts (`arch::fake`). Each test
//! asserts what a guest or a user would see (how VMs end, which vCPU ran,
//! that a blocked vCPU slept instead of spinning), never wall-clock timing.

use crate::arch::fake::{Entry, FakeBoard, FakeCpu, Guest, Script, Step};
use crate::devices::wiring::tests::{null_console, NoDisks};
use crate::devices::wiring::{leak, Backends, VirtioDev};
use crate::lifecycle::Images;
use crate::mem::test_ram;
use crate::mem::GuestMemory;
use crate::mm::stage2::Vttbr;
use crate::mmio::MmioDevice;
use crate::pcpu::{self, PerCpu, Slot, Stop};
use crate::sched::Wakeups;
use crate::system::System;
use crate::vcpu::{Power, Vcpu};
use crate::vm::{BootImage, Vm, VmParts, VmState};
use hypercall_abi::Function;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use tessera_payload::{Device, DeviceDesc, PowerPolicy};

/// Where every test VM starts.
const ENTRY: u32 = 0x4000_0000;
const GICD: u32 = 0x0800_0000;
const SLICE: u64 = 1000;

/// Counts reloads instead of copying an image, and notes whether any of
/// the VM's devices would still have done work on its memory meanwhile.
#[derive(Default)]
struct CountingImages {
    reloads: AtomicU32,
    device_work_during_reload: AtomicBool,
}

impl Images for CountingImages {
    fn reload(&self, vm: &Vm, resets: u32) {
        vm.ram.zero();
        self.reloads.fetch_add(1, Ordering::AcqRel);
        assert_eq!(resets, vm.resets.load(Ordering::Acquire));
        for dev in vm.virtio {
            if let VirtioDev::Console(d) = &dev.dev {
                // What a peer's input would do: work on the receive queue.
                if d.device_work(0, |_, _, _| Ok(false)) {
                    self.device_work_during_reload.store(true, Ordering::Release);
                }
            }
        }
    }
}

struct Rig {
    sys: &'static System,
    images: &'static CountingImages,
}

/// A system of VMs on `pcpus` fake pCPUs: `vms[k]` lists, for each vCPU of
/// VM k (id k + 1), the pCPU it is placed on. vCPU 0 starts at [`ENTRY`].
fn rig(board: &'static FakeBoard, pcpus: usize, vms: &[&[u32]]) -> Rig {
    rig_with(board, pcpus, vms, &[])
}

/// The same, with `devices` in every VM.
fn rig_with(board: &'static FakeBoard, pcpus: usize, vms: &[&[u32]], devices: &[DeviceDesc]) -> Rig {
    rig_full(board, pcpus, vms, devices, None, PowerPolicy::Performance)
}

/// A system whose vCPUs may run on every pCPU in `affinity` (they start
/// where `vms` places them); otherwise each is pinned to its pCPU.
fn rig_full(
    board: &'static FakeBoard,
    pcpus: usize,
    vms: &[&[u32]],
    devices: &[DeviceDesc],
    affinity: Option<u32>,
    power: PowerPolicy,
) -> Rig {
    let wakeups: &'static Wakeups = leak(Wakeups::new(board));
    let console = null_console(board);
    let backends = Backends { entropy: |b| b.len(), disks: &NoDisks, switches: &[], wakeups, console };
    let vms: Vec<Vm> = vms
        .iter()
        .enumerate()
        .map(|(k, placement)| {
            let id = k as u32 + 1;
            let vcpus: Vec<Vcpu> = placement
                .iter()
                .enumerate()
                .map(|(v, &p)| {
                    let start = (v == 0).then_some((ENTRY, [0, !0, 0]));
                    Vcpu::with_affinity(v as u32, p, affinity.unwrap_or(1 << p), start)
                })
                .collect();
            let boot = BootImage { payload_index: k, entry: ENTRY, regs: [0, !0, 0], reset_count_ipa: None };
            let parts = VmParts {
                id,
                ram: test_ram(0x4000_0000, 0x1_0000),
                vttbr: Vttbr::for_tests(id as u8),
                vcpus: Vec::leak(vcpus),
                cntvoff: 0,
                boot,
                channels: 0,
                fault_abort: false,
                lazy: None,
            };
            Vm::new(parts, &format!("vm{id}"), devices, &backends)
        })
        .collect();
    let vms: &'static [Vm] = Vec::leak(vms);
    let mut queues: Vec<PerCpu> = (0..pcpus).map(PerCpu::new).collect();
    for vm in vms {
        for v in vm.vcpus {
            assert!(queues[v.pcpu() as usize].push(Slot::new(vm, v)));
        }
    }
    let images: &'static CountingImages = leak(CountingImages::default());
    let mut system = System::new(vms, &[], wakeups, console, SLICE, 62_500_000, images, 33, queues);
    system.power = power;
    let sys = leak(system);
    Rig { sys, images }
}

/// Runs pCPU `id` of `sys` to its end on this thread.
fn run_cpu(sys: &'static System, board: &'static FakeBoard, id: usize, script: Script) -> (Stop, FakeCpu) {
    let mut cpu = FakeCpu::new(id, board, script);
    let mut pc = sys.take_percpu(id).expect("each pCPU runs once");
    let stop = pcpu::run(&mut cpu, sys, &mut pc);
    (stop, cpu)
}

fn shutdown(g: &mut Guest<'_>, status: u32) -> Step {
    g.hvc(Function::VmShutdown.id(), &[status])
}

fn vm_end(sys: &System, k: usize) -> (VmState, u32) {
    (sys.vms[k].state(), sys.vms[k].status())
}

#[test]
fn wfi_blocks_until_the_virtual_timer_fires() {
    let board = FakeBoard::new();
    let r = rig(board, 1, &[&[0]]);
    let script: Script = Box::new(|g| match g.regs.pc {
        0x4000_0000 => g.store(GICD, 1),               // GICD_CTLR: enable
        0x4000_0004 => g.store(GICD + 0x100, 1 << 27), // ISENABLER0: the virtual timer
        0x4000_0008 => {
            g.set_vtimer(50_000);
            Step::Wfi
        }
        0x4000_000c => {
            let got = g.ack();
            if let Some(id) = got {
                g.eoi(id);
            }
            let late = g.vnow() >= 50_000;
            shutdown(g, if got == Some(27) && late { 0 } else { 1 })
        }
        pc => panic!("unexpected guest pc {pc:#x}"),
    });
    let (stop, cpu) = run_cpu(r.sys, board, 0, script);
    assert_eq!(stop, Stop::SystemOff);
    assert_eq!(vm_end(r.sys, 0), (VmState::Exited, 0), "the guest took its timer interrupt after the deadline");
    assert!(cpu.sleeps >= 1, "the pCPU slept while its only vCPU waited");
    assert_eq!(cpu.entries.len(), 4, "entered for each of three traps and once after the wake-up: {:?}", cpu.entries);
}

#[test]
fn wfi_is_woken_by_an_ipi_from_a_sibling_on_the_same_pcpu() {
    let board = FakeBoard::new();
    let r = rig(board, 1, &[&[0, 0]]);
    let script: Script = Box::new(|g| match (g.vcpu, g.regs.pc) {
        (0, 0x4000_0000) => g.store(GICD, 1),
        (0, 0x4000_0004) => g.hvc(Function::PsciCpuOn.id(), &[1, 0x4000_1000, 0]),
        (0, 0x4000_0008) if g.regs.r[0] != 0 => shutdown(g, 1),
        // Yield, so that vCPU 1 starts and sleeps.
        (0, 0x4000_0008) => Step::Wfe,
        (0, 0x4000_000c) => g.store(GICD + 0xf00, 1 << 17 | 3), // GICD_SGIR: SGI 3 to vCPU 1
        (0, 0x4000_0010) => Step::Wfi,
        (0, 0x4000_0014) => g.hvc(Function::PsciCpuOff.id(), &[]),
        (1, 0x4000_1000) => Step::Wfi,
        (1, 0x4000_1004) => {
            let got = g.ack();
            if got == Some(3) {
                g.eoi(3);
                // Tell vCPU 0 (SGI 5) and power off.
                g.store(GICD + 0xf00, 1 << 16 | 5)
            } else {
                shutdown(g, 1)
            }
        }
        (1, 0x4000_1008) => g.hvc(Function::PsciCpuOff.id(), &[]),
        (v, pc) => panic!("unexpected vCPU {v} pc {pc:#x}"),
    });
    let (stop, cpu) = run_cpu(r.sys, board, 0, script);
    assert_eq!(stop, Stop::SystemOff);
    assert_eq!(vm_end(r.sys, 0), (VmState::Exited, 0), "both vCPUs powered off after the IPIs: {:?}", cpu.entries);
    assert!(r.sys.vms[0].vcpus.iter().all(|v| v.power() == Power::Off));
}

#[test]
fn the_hyp_timer_ends_each_slice_when_two_vcpus_share_a_pcpu() {
    let board = FakeBoard::new();
    let r = rig(board, 1, &[&[0], &[0]]);
    // Each VM spins for 5 slices, then shuts down with its VM number.
    let runs = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
    let counts = runs.clone();
    let script: Script = Box::new(move |g| {
        let n = counts[g.vm as usize - 1].fetch_add(1, Ordering::AcqRel);
        if n < 5 {
            Step::Spin
        } else {
            shutdown(g, g.vm as u32)
        }
    });
    let (stop, cpu) = run_cpu(r.sys, board, 0, script);
    assert_eq!(stop, Stop::SystemOff);
    assert_eq!((vm_end(r.sys, 0), vm_end(r.sys, 1)), ((VmState::Exited, 1), (VmState::Exited, 2)));
    let order: Vec<u8> = cpu.entries.iter().map(|e| e.vm).collect();
    assert_eq!(&order[..10], [1, 2, 1, 2, 1, 2, 1, 2, 1, 2], "round robin, one slice each");
    let gaps: Vec<u64> = cpu.entries.windows(2).take(9).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps.iter().all(|&d| d == SLICE), "each slice lasted exactly one slice: {gaps:?}");
}

#[test]
fn an_idle_pcpu_takes_a_waiting_vcpu_from_a_busy_one() {
    let board = FakeBoard::new();
    // Two busy VMs, both placed on pCPU 0, both allowed on pCPU 1.
    let r = rig_full(board, 2, &[&[0], &[0]], &[], Some(0b11), PowerPolicy::Performance);
    let on_pcpu1 = Arc::new(AtomicBool::new(false));
    let seen = on_pcpu1.clone();
    // On pCPU 0: compute a slice at a time until a vCPU runs on pCPU 1,
    // then end.
    let stays: Script = Box::new(move |g| if seen.load(Ordering::Acquire) { shutdown(g, 0) } else { Step::Run(SLICE) });
    let flag = on_pcpu1.clone();
    let moved: Script = Box::new(move |g| {
        flag.store(true, Ordering::Release);
        match g.regs.pc {
            0x4000_0000 => {
                g.regs.pc += 4;
                Step::Run(SLICE)
            }
            _ => shutdown(g, 0),
        }
    });
    let sys = r.sys;
    let other = std::thread::spawn(move || run_cpu(sys, board, 1, moved));
    let (stop0, cpu0) = run_cpu(sys, board, 0, stays);
    let (stop1, cpu1) = other.join().expect("pCPU 1 ran to its end");
    assert_eq!((stop0, stop1), (Stop::SystemOff, Stop::CpuOff));
    assert_eq!((vm_end(sys, 0), vm_end(sys, 1)), ((VmState::Exited, 0), (VmState::Exited, 0)));
    let vms1: Vec<u8> = cpu1.entries.iter().map(|e| e.vm).collect();
    assert_eq!(vms1.len(), 1, "pCPU 1 ran one vCPU, once: {vms1:?}");
    let moves: Vec<u32> = sys.vms.iter().map(|vm| vm.vcpus[0].migrations.load(Ordering::Acquire)).collect();
    assert_eq!(moves.iter().sum::<u32>(), 1, "one move, no bouncing back: {moves:?}");
    assert_eq!(moves[vms1[0] as usize - 1], 1, "the vCPU pCPU 1 ran is the one that moved");
    assert!(cpu0.entries.iter().any(|e| e.vm != vms1[0]), "the other stayed on pCPU 0");
}

#[test]
fn an_idle_pcpu_hands_its_sleeping_vcpu_over_and_powers_off() {
    let board = FakeBoard::new();
    // vCPU 0 on pCPU 0, vCPU 1 on pCPU 1, both allowed on both.
    let r = rig_full(board, 2, &[&[0, 1]], &[], Some(0b11), PowerPolicy::Balanced);
    let sys = r.sys;
    let script = move || -> Script {
        Box::new(move |g| match (g.vcpu, g.regs.pc) {
            (0, 0x4000_0000) => g.store(GICD, 1),
            (0, 0x4000_0004) => g.hvc(Function::PsciCpuOn.id(), &[1, 0x4000_1000, 0]),
            // Compute until pCPU 1 has powered off, then wake vCPU 1 (SGI 3).
            (0, 0x4000_0008) if sys.power_offs.load(Ordering::Acquire) == 0 => {
                if g.regs.r[0] != 0 {
                    return shutdown(g, 1);
                }
                Step::Run(SLICE)
            }
            (0, 0x4000_0008) => g.store(GICD + 0xf00, 1 << 17 | 3),
            (0, _) => Step::Wfi,
            // vCPU 1 sleeps with nothing to wake it: its pCPU is idle.
            (1, 0x4000_1000) => Step::Wfi,
            (1, 0x4000_1004) => match g.ack() {
                Some(3) => shutdown(g, 7),
                _ => shutdown(g, 1),
            },
            (v, pc) => panic!("unexpected vCPU {v} pc {pc:#x}"),
        })
    };
    let other = std::thread::spawn(move || run_cpu(sys, board, 1, script()));
    let (stop0, cpu0) = run_cpu(sys, board, 0, script());
    let (stop1, cpu1) = other.join().expect("pCPU 1 ran to its end");
    assert_eq!((stop0, stop1), (Stop::SystemOff, Stop::Idle), "pCPU 1 powered off idle");
    assert_eq!(vm_end(sys, 0), (VmState::Exited, 7), "vCPU 1 took the IPI after its move");
    assert_eq!(sys.power_offs.load(Ordering::Acquire), 1);
    assert!(cpu1.entries.iter().all(|e| e.vcpu == 1), "pCPU 1 ran only vCPU 1: {:?}", cpu1.entries);
    assert!(cpu0.entries.iter().any(|e| e.vcpu == 1), "vCPU 1 ran on pCPU 0 after the hand-over");
    assert_eq!(sys.vms[0].vcpus[1].migrations.load(Ordering::Acquire), 1);
}

#[test]
fn a_lone_vcpu_gets_no_time_slice() {
    let board = FakeBoard::new();
    let r = rig(board, 1, &[&[0]]);
    let script: Script = Box::new(|g| match g.regs.pc {
        0x4000_0000 => {
            g.regs.pc += 4;
            Step::Run(10 * SLICE)
        }
        _ => shutdown(g, 0),
    });
    let (_, cpu) = run_cpu(r.sys, board, 0, script);
    assert_eq!(vm_end(r.sys, 0), (VmState::Exited, 0));
    assert_eq!(cpu.entries, [Entry { at: 1, vm: 1, vcpu: 0 }], "ran 10 slices' worth without being interrupted");
}

#[test]
fn the_last_vcpu_to_call_cpu_off_ends_the_vm() {
    let board = FakeBoard::new();
    let r = rig(board, 1, &[&[0, 0]]);
    let script: Script = Box::new(|g| match (g.vcpu, g.regs.pc) {
        (0, 0x4000_0000) => g.hvc(Function::PsciCpuOn.id(), &[1, 0x4000_2000, 5]),
        (0, 0x4000_0004) if g.regs.r[0] != 0 => shutdown(g, 1),
        (0, 0x4000_0004) => g.hvc(Function::PsciCpuOff.id(), &[]),
        (1, 0x4000_2000) if g.regs.r[0] == 5 => g.hvc(Function::PsciCpuOff.id(), &[]),
        (v, pc) => panic!("unexpected vCPU {v} pc {pc:#x} r0 {:#x}", g.regs.r[0]),
    });
    let (stop, _) = run_cpu(r.sys, board, 0, script);
    assert_eq!(stop, Stop::SystemOff);
    assert_eq!(vm_end(r.sys, 0), (VmState::Exited, 0), "no vCPU left to start one again: the VM is over");
}

#[test]
fn a_stopped_vm_leaves_the_shared_run_queue() {
    let board = FakeBoard::new();
    let r = rig(board, 1, &[&[0], &[0]]);
    let script: Script = Box::new(|g| match (g.vm, g.regs.pc) {
        // VM 1 spins for a slice, then reads an address nothing is mapped at.
        (1, 0x4000_0000) => {
            g.regs.pc += 4;
            Step::Spin
        }
        (1, _) => Step::Access { ipa: 0x2000_0000, write: false, reg: 0, size: 4 },
        // VM 2 computes for three slices' worth (preempted while VM 1 can
        // run), then shuts down.
        (2, 0x4000_0000) => {
            g.regs.pc += 4;
            Step::Run(3 * SLICE)
        }
        (2, _) => shutdown(g, 0),
        (vm, pc) => panic!("unexpected vm {vm} pc {pc:#x}"),
    });
    let (stop, cpu) = run_cpu(r.sys, board, 0, script);
    assert_eq!(stop, Stop::SystemOff);
    assert_eq!(vm_end(r.sys, 0).0, VmState::Stopped);
    assert_eq!(vm_end(r.sys, 1), (VmState::Exited, 0));
    let order: Vec<u8> = cpu.entries.iter().map(|e| e.vm).collect();
    assert_eq!(order, [1, 2, 1, 2], "the stopped VM never ran again");
}

#[test]
fn system_reset_waits_for_siblings_on_other_pcpus_then_restarts_the_vm() {
    let board = FakeBoard::new();
    let r = rig(board, 2, &[&[0, 1]]);
    let sibling_in_guest = Arc::new(AtomicBool::new(false));
    let flag = sibling_in_guest.clone();
    let images = r.images;
    let vcpu0: Script = Box::new(move |g| match g.regs.pc {
        // First boot: start vCPU 1 on the other pCPU, wait until it runs, reset.
        0x4000_0000 if images.reloads.load(Ordering::Acquire) == 0 => {
            g.hvc(Function::PsciCpuOn.id(), &[1, 0x4000_3000, 0])
        }
        0x4000_0004 if g.regs.r[0] != 0 => shutdown(g, 1),
        0x4000_0004 if !flag.load(Ordering::Acquire) => {
            g.regs.r[0] = 0;
            std::thread::yield_now();
            Step::Run(1)
        }
        0x4000_0004 => g.hvc(Function::PsciSystemReset.id(), &[]),
        // After the reset: the VM starts over at its entry, alone.
        0x4000_0000 => shutdown(g, 7),
        pc => panic!("unexpected vCPU 0 pc {pc:#x}"),
    });
    let flag = sibling_in_guest.clone();
    let vcpu1: Script = Box::new(move |g| {
        assert_eq!(g.regs.pc, 0x4000_3000, "vCPU 1 is not restarted by the reset");
        flag.store(true, Ordering::Release);
        Step::Spin // until the reset kicks it out
    });
    let sys = r.sys;
    let other = std::thread::spawn(move || run_cpu(sys, board, 1, vcpu1).0);
    let (stop0, _) = run_cpu(sys, board, 0, vcpu0);
    let stop1 = other.join().expect("pCPU 1 ran to its end");
    assert_eq!((stop0, stop1), (Stop::SystemOff, Stop::CpuOff));
    assert_eq!(vm_end(sys, 0), (VmState::Exited, 7));
    assert_eq!(r.images.reloads.load(Ordering::Acquire), 1);
    assert_eq!(sys.vms[0].resets.load(Ordering::Acquire), 1);
    assert_eq!(sys.vms[0].vcpus[1].power(), Power::Off, "after a reset only vCPU 0 is on");
    assert!(sys.vms[0].vcpus.iter().all(|v| !v.running.load(Ordering::Acquire)));
}

#[test]
fn console_input_reaches_the_focused_vm_and_the_escape_key_moves_it() {
    let board = FakeBoard::new();
    let r = rig(board, 1, &[&[0], &[0]]);
    let script: Script = Box::new(|g| match g.regs.pc {
        0x4000_0000 => {
            g.regs.pc += 4;
            Step::Spin
        }
        _ => shutdown(g, 0),
    });
    // Both guests' drivers have turned the UART's 32-byte FIFO on (UARTLCR_H.FEN).
    for vm in r.sys.vms {
        vm.uart.write(0, 0x2c, 4, 1 << 4);
    }
    let mut cpu = FakeCpu::new(0, board, script);
    cpu.type_input(b"ab\x1c2cd", 33);
    let mut pc = r.sys.take_percpu(0).unwrap();
    assert_eq!(pcpu::run(&mut cpu, r.sys, &mut pc), Stop::SystemOff);
    assert_eq!(r.sys.input.focus(), 1, "Ctrl-\\ 2 moved the input to the second VM");
    // What each VM's driver would read: DR until FR.RXFE (bit 4).
    let rx = |k: usize| {
        let uart = &r.sys.vms[k].uart;
        let mut got = Vec::new();
        while uart.read(0, 0x18, 4) & (1 << 4) == 0 {
            got.push(uart.read(0, 0x00, 4) as u8);
        }
        got
    };
    assert_eq!((rx(0), rx(1)), (b"ab".to_vec(), b"cd".to_vec()));
}

#[test]
fn aborts_that_are_not_device_accesses_stop_the_vm() {
    // Each VM reads the UART's data register in a way the hypervisor must
    // not emulate, then (if it survived) shuts down with status 9.
    const UART_DR: u32 = 0x0900_0000;
    let load_word_r0 = 1 << 24 | 2 << 22;
    let cases = [
        ("stage-1 table walk", load_word_r0 | 1 << 7 | 0x07),
        ("permission fault", load_word_r0 | 0x0f),
        ("access flag fault", load_word_r0 | 0x0b),
        ("external abort", load_word_r0 | 0x10),
        ("doubleword (SAS = 3)", 1 << 24 | 3 << 22 | 0x07),
    ];
    for (what, iss) in cases {
        let board = FakeBoard::new();
        let r = rig(board, 1, &[&[0]]);
        let script: Script = Box::new(move |g| match g.regs.pc {
            0x4000_0000 => Step::Abort { ipa: UART_DR, iss },
            _ => shutdown(g, 9),
        });
        run_cpu(r.sys, board, 0, script);
        assert_eq!(vm_end(r.sys, 0).0, VmState::Stopped, "{what}: the VM is stopped, not emulated");
    }
}

#[test]
fn a_reset_reaches_vcpus_beyond_the_32nd() {
    // 40 vCPUs: the first 39 on pCPU 0, the last alone on pCPU 1. A reset
    // must get the 40th out of its guest too.
    let board = FakeBoard::new();
    let mut placement = vec![0u32; 39];
    placement.push(1);
    let r = rig(board, 2, &[&placement]);
    let sibling_in_guest = Arc::new(AtomicBool::new(false));
    let flag = sibling_in_guest.clone();
    let images = r.images;
    let vcpu0: Script = Box::new(move |g| match g.regs.pc {
        0x4000_0000 if images.reloads.load(Ordering::Acquire) == 0 => {
            g.hvc(Function::PsciCpuOn.id(), &[39, 0x4000_3000, 0])
        }
        0x4000_0004 if g.regs.r[0] != 0 => shutdown(g, 1),
        0x4000_0004 if !flag.load(Ordering::Acquire) => {
            std::thread::yield_now();
            Step::Run(1)
        }
        0x4000_0004 => g.hvc(Function::PsciSystemReset.id(), &[]),
        0x4000_0000 => shutdown(g, 7),
        pc => panic!("unexpected vCPU {} pc {pc:#x}", g.vcpu),
    });
    let flag = sibling_in_guest.clone();
    let vcpu39: Script = Box::new(move |g| {
        assert_eq!((g.vcpu, g.regs.pc), (39, 0x4000_3000));
        flag.store(true, Ordering::Release);
        Step::Spin
    });
    let sys = r.sys;
    let other = std::thread::spawn(move || run_cpu(sys, board, 1, vcpu39).0);
    let (stop0, _) = run_cpu(sys, board, 0, vcpu0);
    assert_eq!((stop0, other.join().unwrap()), (Stop::SystemOff, Stop::CpuOff));
    assert_eq!(vm_end(sys, 0), (VmState::Exited, 7));
    assert_eq!(sys.vms[0].vcpus[39].power(), Power::Off);
}

#[test]
fn a_reset_quiets_the_vms_devices_before_its_memory_is_reloaded() {
    // The guest sets up its virtio-console (slot 0) as a driver does, so the
    // device would accept input, then resets the VM.
    const SLOT0: u32 = 0x0a00_0000;
    const SETUP: &[(u32, u32)] = &[
        (0x070, 1),           // Status: ACKNOWLEDGE
        (0x070, 3),           // DRIVER
        (0x024, 1),           // DriverFeaturesSel: bits 32-63
        (0x020, 1),           // VIRTIO_F_VERSION_1
        (0x070, 0xb),         // FEATURES_OK
        (0x030, 0),           // QueueSel: receiveq
        (0x038, 16),          // QueueNum
        (0x080, 0x4000_4000), // QueueDescLow
        (0x090, 0x4000_5000), // QueueDriverLow
        (0x0a0, 0x4000_6000), // QueueDeviceLow
        (0x044, 1),           // QueueReady
        (0x070, 0xf),         // DRIVER_OK
    ];
    let board = FakeBoard::new();
    let r = rig_with(board, 1, &[&[0]], &[DeviceDesc { slot: 0, device: Device::Console }]);
    let images = r.images;
    let script: Script = Box::new(move |g| {
        let k = ((g.regs.pc - ENTRY) / 4) as usize;
        match SETUP.get(k) {
            _ if images.reloads.load(Ordering::Acquire) > 0 => shutdown(g, 0),
            Some(&(off, v)) => g.store(SLOT0 + off, v),
            None => g.hvc(Function::PsciSystemReset.id(), &[]),
        }
    });
    let VirtioDev::Console(console) = &r.sys.vms[0].virtio[0].dev else { unreachable!() };
    run_cpu(r.sys, board, 0, script);
    assert_eq!(vm_end(r.sys, 0), (VmState::Exited, 0));
    assert_eq!(r.images.reloads.load(Ordering::Acquire), 1);
    assert!(!r.images.device_work_during_reload.load(Ordering::Acquire), "no device work while the RAM was reloaded");
    assert_eq!(console.status(), 0, "the device starts over after the reset");
    assert!(!console.device_work(0, |_, _, _| Ok(false)), "until the driver sets it up again");
}

#[test]
fn device_work_a_notification_leaves_is_done_in_the_vms_own_time() {
    // The guest sets up its virtio-console's transmitq over 256 chains of
    // 16 x 4 KiB (the test writes the rings), notifies once, then waits
    // in WFI. One pass serves only part; the rest is served when the
    // guest's vCPU passes by again, until every chain is used.
    const SLOT0: u32 = 0x0a00_0000;
    const DESC: u32 = 0x4000_4000;
    const AVAIL: u32 = 0x4000_5000;
    const USED: u32 = 0x4000_6000;
    // (Offsets from the slot; the first three are GIC registers, from GICD:
    // distributor on, the slot's SPI 16 (INTID 48) enabled and sent to
    // vCPU 0, so the used-buffer interrupt ends the guest's last wait.)
    const SETUP: &[(u32, u32)] = &[
        (GICD.wrapping_sub(SLOT0), 1),
        ((GICD + 0x104).wrapping_sub(SLOT0), 1 << 16),
        ((GICD + 0x830).wrapping_sub(SLOT0), 1),
        (0x070, 1),
        (0x070, 3),
        (0x024, 1),
        (0x020, 1),
        (0x070, 0xb),
        (0x030, 1), // transmitq
        (0x038, 256),
        (0x080, DESC),
        (0x090, AVAIL),
        (0x0a0, USED),
        (0x044, 1),
        (0x070, 0xf),
        (0x050, 1), // QueueNotify: transmitq
    ];
    let board = FakeBoard::new();
    let r = rig_with(board, 1, &[&[0]], &[DeviceDesc { slot: 0, device: Device::Console }]);
    let ram = r.sys.vms[0].ram;
    for i in 0..16u64 {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&0x4000_8000u64.to_le_bytes());
        d[8..12].copy_from_slice(&4096u32.to_le_bytes());
        d[12..14].copy_from_slice(&(if i < 15 { 1u16 } else { 0 }).to_le_bytes());
        d[14..].copy_from_slice(&(i as u16 + 1).to_le_bytes());
        ram.write(crate::addr::Ipa(DESC as u64 + 16 * i), &d).unwrap();
    }
    ram.write(crate::addr::Ipa(AVAIL as u64 + 2), &256u16.to_le_bytes()).unwrap(); // every entry: head 0
    let waits = Arc::new(AtomicU32::new(0));
    let w = waits.clone();
    let script: Script = Box::new(move |g| {
        let k = ((g.regs.pc - ENTRY) / 4) as usize;
        let mut used = [0u8; 2];
        ram.read(crate::addr::Ipa(USED as u64 + 2), &mut used).unwrap();
        match SETUP.get(k) {
            Some(&(off, v)) => g.store(SLOT0.wrapping_add(off), v),
            // The guest's driver polls the used ring between its waits.
            None if u16::from_le_bytes(used) < 256 && w.fetch_add(1, Ordering::AcqRel) < 1000 => Step::Wfi,
            None => shutdown(g, 0),
        }
    });
    run_cpu(r.sys, board, 0, script);
    let mut used = [0u8; 2];
    ram.read(crate::addr::Ipa(USED as u64 + 2), &mut used).unwrap();
    assert_eq!(u16::from_le_bytes(used), 256, "every chain was served in the end");
    assert!(!r.sys.vms[0].io_pending());
    let pass = crate::virtio::mmio::Budget::PASS;
    let waited = waits.load(Ordering::Acquire) as u64;
    // 64 KiB printed of each chain: one pass for the notification, the
    // others one a wait.
    let passes = 256 * crate::virtio::console::MAX_CHAIN_OUTPUT as u64 / pass.bytes;
    assert_eq!(waited + 1, passes, "the work was spread over the guest's waits");
}

#[test]
fn an_serror_from_a_guest_stops_that_vm_only() {
    let board = FakeBoard::new();
    let r = rig(board, 1, &[&[0], &[0]]);
    let script: Script = Box::new(|g| match (g.vm, g.regs.pc) {
        (1, _) => Step::SError,
        (2, 0x4000_0000) => {
            g.regs.pc += 4;
            Step::Run(3 * SLICE)
        }
        (_, _) => shutdown(g, 0),
    });
    run_cpu(r.sys, board, 0, script);
    assert_eq!(vm_end(r.sys, 0).0, VmState::Stopped, "the SError is the guest's: its VM stops");
    assert_eq!(vm_end(r.sys, 1), (VmState::Exited, 0), "the other VM runs on");
}

//! The trap decoder (HSR, HPFAR, HDFAR), the MMIO access emulation that
//! follows a data abort, the trapped-coprocessor policy and the Thumb IT
//! state stepping, with any syndrome and any CPSR.
//!
//! Oracles: an access is emulated only from a valid syndrome of 1, 2 or 4
//! bytes, naturally aligned inside one device window, through r0-r14; the
//! device sees only such accesses and a load gets its value zero- or
//! sign-extended as the syndrome says; the PMU and debug registers read as
//! absent; stepping over an instruction changes only the IT bits and ends
//! any IT block within four steps.

use arbitrary::{Arbitrary, Unstructured};
use std::sync::atomic::{AtomicU32, Ordering};
use tessera::addr::Ipa;
use tessera::arch::TrapInfo;
use tessera::coproc::{self, Action};
use tessera::mmio::{MmioBus, MmioDevice, MmioRegion, Regs};
use tessera::trap::{self, Trap};

/// A device that checks what reaches it and answers `value`.
struct Probe {
    size: u32,
    value: u32,
    hits: AtomicU32,
}

impl MmioDevice for Probe {
    fn read(&self, _vcpu: u32, offset: u32, size: u8) -> u32 {
        self.check(offset, size);
        self.value
    }
    fn write(&self, _vcpu: u32, offset: u32, size: u8, value: u32) {
        self.check(offset, size);
        assert!(size == 4 || value >> (8 * size as u32) == 0, "a {size}-byte write of {value:#x}");
    }
}

impl Probe {
    fn check(&self, offset: u32, size: u8) {
        assert!(matches!(size, 1 | 2 | 4), "size {size}");
        assert_eq!(offset % size as u32, 0, "misaligned offset {offset:#x}");
        assert!(offset + size as u32 <= self.size, "offset {offset:#x} outside a {:#x} window", self.size);
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
}

struct Frame {
    r: [u32; 15],
}

impl Regs for Frame {
    fn get(&self, n: u8) -> Option<u32> {
        (n < 15).then(|| self.r[n as usize])
    }
    fn set(&mut self, n: u8, v: u32) -> bool {
        if n < 15 {
            self.r[n as usize] = v;
        }
        n < 15
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    hsr: u32,
    hdfar: u32,
    hpfar: u32,
    cpsr: u32,
    value: u32,
    regs: [u32; 15],
    /// Where the two device windows are, in pages.
    windows: [(u16, u8); 2],
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    while !u.is_empty() {
        let Ok(mut input) = u.arbitrary::<Input>() else { break };
        // Aim at the windows often: HPFAR names their page.
        if input.hsr & 1 << 31 != 0 {
            input.hpfar = (input.windows[(input.hsr >> 30) as usize & 1].0 as u32) << 4;
        }
        one(&input);
    }
}

fn one(input: &Input) {
    let t = TrapInfo { hsr: input.hsr, hdfar: input.hdfar, hifar: input.hdfar, hpfar: input.hpfar };
    let d = trap::decode(t);
    assert_eq!(d.ec(), input.hsr >> 26);
    assert!(matches!(d.instr_len(), 2 | 4));
    let passed = d.condition_passed(input.cpsr);
    if input.hsr & (1 << 24) != 0 && matches!(d.trap, Trap::Wfi | Trap::Wfe | Trap::Coproc(_)) {
        assert_eq!(passed, trap::condition_holds((input.hsr >> 20) & 0xf, input.cpsr));
    }

    // Stepping: only the IT bits move, and any block ends within 4 steps.
    const IT_MASK: u32 = 0x0600_fc00;
    let mut cpsr = input.cpsr;
    for _ in 0..5 {
        let next = trap::advance_it(cpsr);
        assert_eq!(next & !IT_MASK, cpsr & !IT_MASK, "advance_it changed more than ITSTATE");
        if cpsr & (1 << 5) == 0 {
            assert_eq!(next, cpsr, "ARM state has no IT block");
        }
        cpsr = next;
    }
    if input.cpsr & (1 << 5) != 0 {
        assert_eq!(cpsr & IT_MASK, 0, "an IT block outlived 4 instructions: {:#x}", input.cpsr);
    }

    match d.trap {
        Trap::DataAbort { abort, ipa, .. } => mmio(input, &abort, ipa),
        Trap::Coproc(a) => {
            let action = coproc::access(&a);
            if a.cp == 14 || (a.crn == 9 && a.opc1 == 0 && (12..=14).contains(&a.crm)) {
                assert_eq!(action, Action::ReadAs(0), "debug and PMU registers read as absent: {a:?}");
            }
            if action == Action::CleanInvalidateSetWay {
                assert!(!a.read && a.crn == 7, "set/way from {a:?}");
            }
        }
        Trap::CoprocWide(a) => {
            if a.cp == 14 {
                assert_eq!(coproc::wide(&a), Action::ReadAs(0));
            }
            let _ = coproc::wide(&a);
        }
        _ => {}
    }
}

fn mmio(input: &Input, abort: &tessera::mmio::DataAbort, ipa: Ipa) {
    let mut wins = input.windows;
    wins.sort();
    let probes: Vec<Probe> = wins
        .iter()
        .map(|&(_, pages)| Probe { size: (pages as u32 % 4 + 1) * 0x200, value: input.value, hits: AtomicU32::new(0) })
        .collect();
    let mut regions: Vec<MmioRegion<'_>> = Vec::new();
    for (k, &(page, _)) in wins.iter().enumerate() {
        let base = Ipa((page as u64) << 12);
        if regions.last().is_some_and(|r: &MmioRegion<'_>| r.base.raw() + r.size as u64 > base.raw()) {
            continue;
        }
        regions.push(MmioRegion { base, size: probes[k].size, device: &probes[k] });
    }
    let bus = MmioBus::new(&regions);
    let mut frame = Frame { r: input.regs };
    let before = frame.r;
    let result = bus.access(0, ipa, abort, &mut frame);
    let hits: u32 = probes.iter().map(|p| p.hits.load(Ordering::Relaxed)).sum();
    match result {
        Ok(()) => {
            assert_eq!(hits, 1);
            assert!(abort.isv && matches!(abort.size, 1 | 2 | 4) && abort.reg < 15);
            if !abort.write {
                let v = input.value;
                let want = match (abort.size, abort.sign_extend) {
                    (1, false) => v & 0xff,
                    (1, true) => v as u8 as i8 as i32 as u32,
                    (2, false) => v & 0xffff,
                    (2, true) => v as u16 as i16 as i32 as u32,
                    _ => v,
                };
                assert_eq!(frame.r[abort.reg as usize], want);
                for n in (0..15).filter(|&n| n != abort.reg as usize) {
                    assert_eq!(frame.r[n], before[n], "a load changed r{n}");
                }
            } else {
                assert_eq!(frame.r, before, "a store changed a register");
            }
        }
        Err(_) => {
            assert_eq!(hits, 0, "a refused access reached a device");
            assert_eq!(frame.r, before, "a refused access changed a register");
        }
    }
}

//! The virtual GIC distributor, its list-register management and its
//! interrupt sources, from several vCPUs at once (up to 10: the ninth and
//! tenth are beyond what GICv2 addresses), with a guest that acknowledges
//! and EOIs whatever it finds.
//!
//! Oracles: whatever a flush puts in a list register (or marks pending
//! again) is enabled, routed to that vCPU, with the distributor on; no two
//! entries hold the same interrupt from the same source; a vCPU the GIC
//! cannot address never gets one; a wake-up names only existing vCPUs.
//! Afterwards, reset: an SGI, a PPI and an SPI are delivered as on a new
//! distributor.

use arbitrary::{Arbitrary, Unstructured};
use tessera::arch::fake::FakeLrs;
use tessera::vgic::{hw, Vgic, MAX_CPUS, NR_SPIS, PPI_VTIMER};

const STATE: u32 = hw::LR_STATE_PENDING | hw::LR_STATE_ACTIVE;

#[derive(Arbitrary, Debug)]
enum Op {
    Write {
        vcpu: u8,
        offset: u16,
        size: u8,
        value: u32,
    },
    Read {
        vcpu: u8,
        offset: u16,
        size: u8,
    },
    RaisePrivate {
        vcpu: u8,
        id: u8,
        source: u8,
    },
    RaiseTimer {
        vcpu: u8,
    },
    SpiLevel {
        spi: u8,
        level: bool,
    },
    PulseSpi {
        spi: u8,
    },
    Flush {
        vcpu: u8,
    },
    /// The guest reads GICC_IAR: the best pending entry becomes active.
    Ack {
        vcpu: u8,
    },
    /// The guest writes GICC_EOIR for list register `lr`.
    Eoi {
        vcpu: u8,
        lr: u8,
    },
    Maintenance {
        vcpu: u8,
    },
    HasPending {
        vcpu: u8,
    },
}

fn size(s: u8) -> u8 {
    [1, 2, 4][s as usize % 3]
}

struct Rig {
    gic: Vgic,
    vcpus: usize,
    lrs: Vec<FakeLrs>,
}

impl Rig {
    fn enabled(&self, vcpu: usize, id: u32) -> bool {
        self.gic.mmio_read(vcpu, 0x100 + 4 * (id / 32), 4) & (1 << (id % 32)) != 0
    }

    fn routed(&self, vcpu: usize, id: u32) -> bool {
        id < 32 || self.gic.mmio_read(vcpu, 0x800 + id, 1) & (1 << vcpu) != 0
    }

    /// Runs `f` (a flush, or the maintenance handler that ends in one) on
    /// `vcpu`'s list registers and checks what it delivered.
    fn delivering(&mut self, vcpu: usize, f: impl FnOnce(&Vgic, &mut FakeLrs)) {
        let before = self.lrs[vcpu].lr;
        f(&self.gic, &mut self.lrs[vcpu]);
        let after = self.lrs[vcpu].lr;
        let dist_on = self.gic.mmio_read(0, 0, 4) & 1 != 0;
        for i in 0..4 {
            let (b, a) = (before[i], after[i]);
            let fresh = a & hw::LR_STATE_PENDING != 0 && (b & hw::LR_STATE_PENDING == 0 || b & 0x1fff != a & 0x1fff);
            if fresh {
                let id = a & 0x3ff;
                assert!(vcpu < MAX_CPUS, "vCPU {vcpu} is not addressable by GICv2, yet got {id}");
                assert!(dist_on, "interrupt {id} delivered with the distributor off");
                assert!(self.enabled(vcpu, id), "interrupt {id} delivered to vCPU {vcpu} while disabled");
                assert!(self.routed(vcpu, id), "SPI {id} delivered to vCPU {vcpu}, not a target");
            }
        }
        let live: Vec<u32> = after.iter().filter(|v| *v & STATE != 0).map(|v| v & 0x1fff).collect();
        for (k, x) in live.iter().enumerate() {
            assert!(!live[k + 1..].contains(x), "two list registers hold {:#x}: {after:x?}", x);
        }
    }

    fn apply(&mut self, op: &Op) {
        let n = self.vcpus;
        let v = |x: u8| x as usize % n;
        let all = (1u32 << n) - 1;
        let wake = match *op {
            Op::Write { vcpu, offset, size: s, value } => {
                let s = size(s);
                let off = (offset as u32 % 0x1000) & !(s as u32 - 1);
                self.gic.mmio_write(v(vcpu), off, s, value)
            }
            Op::Read { vcpu, offset, size: s } => {
                let s = size(s);
                let _ = self.gic.mmio_read(v(vcpu), (offset as u32 % 0x1000) & !(s as u32 - 1), s);
                0
            }
            Op::RaisePrivate { vcpu, id, source } => {
                self.gic.raise_private(v(vcpu), id as u32 % 32, source as usize % 8)
            }
            Op::RaiseTimer { vcpu } => self.gic.raise_timer(v(vcpu)),
            Op::SpiLevel { spi, level } => self.gic.set_spi_level(spi as usize % NR_SPIS, level),
            Op::PulseSpi { spi } => self.gic.pulse_spi(spi as usize % NR_SPIS),
            Op::Flush { vcpu } => {
                self.delivering(v(vcpu), |g, l| g.flush(v(vcpu), l));
                0
            }
            Op::Ack { vcpu } => {
                let l = &mut self.lrs[v(vcpu)];
                if let Some(i) =
                    (0..4).filter(|&i| l.lr[i] & hw::LR_STATE_PENDING != 0).min_by_key(|&i| (l.lr[i] >> 23) & 0x1f)
                {
                    l.lr[i] = (l.lr[i] & !STATE) | hw::LR_STATE_ACTIVE;
                }
                0
            }
            Op::Eoi { vcpu, lr } => {
                let l = &mut self.lrs[v(vcpu)];
                let i = lr as usize % 4;
                if l.lr[i] & hw::LR_STATE_ACTIVE != 0 {
                    l.guest_eoi(i);
                }
                0
            }
            Op::Maintenance { vcpu } => {
                self.delivering(v(vcpu), |g, l| {
                    g.maintenance(v(vcpu), l);
                });
                0
            }
            Op::HasPending { vcpu } => {
                let _ = self.gic.has_pending(v(vcpu), &self.lrs[v(vcpu)]);
                0
            }
        };
        assert_eq!(wake & !all, 0, "wake-up {wake:#x} for vCPUs that do not exist (there are {n})");
    }
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let vcpus = u.int_in_range(1..=10).unwrap_or(2);
    let mut rig = Rig { gic: Vgic::new(vcpus), vcpus, lrs: (0..vcpus).map(|_| FakeLrs::default()).collect() };
    let mut n = 0;
    while !u.is_empty() {
        let Ok(op) = u.arbitrary::<Op>() else { break };
        rig.apply(&op);
        n += 1;
        if n == 512 {
            break;
        }
    }
    still_works(&mut rig);
}

/// After a reset: vCPU 0's SGI 3 reaches the last addressable vCPU, the
/// timer PPI its own vCPU, and an SPI its target, each exactly once.
fn still_works(rig: &mut Rig) {
    let g = &rig.gic;
    g.reset();
    for l in &mut rig.lrs {
        *l = FakeLrs::default();
    }
    let last = rig.vcpus.min(MAX_CPUS) - 1;
    g.mmio_write(0, 0x000, 4, 1);
    g.mmio_write(last, 0x100, 4, 1 << PPI_VTIMER);
    g.mmio_write(0, 0x104, 4, 1 << 8); // SPI 40
    g.mmio_write(0, 0x800 + 40, 1, 1 << last);
    let wake = g.mmio_write(0, 0xf00, 4, (1 << last) << 16 | 3);
    assert_eq!(wake, 1 << last, "the SGI wakes its target");
    g.raise_timer(last);
    g.set_spi_level(8, true);
    rig.delivering(last, |g, l| g.flush(last, l));
    let mut ids = rig.lrs[last].ids();
    ids.sort();
    assert_eq!(ids, [3, PPI_VTIMER, 40], "after reset: SGI, timer and SPI to vCPU {last}");
    for v in (0..rig.vcpus).filter(|&v| v != last) {
        rig.delivering(v, |g, l| g.flush(v, l));
        assert!(rig.lrs[v].ids().is_empty(), "vCPU {v} got {:?}", rig.lrs[v].ids());
    }
}

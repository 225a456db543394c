use super::*;

/// The fake CPU's list registers: GICv2's rules (an entry EOIed with its
/// EOI bit stays out of the free set until the maintenance interrupt is
/// handled), as QEMU models them.
use crate::arch::fake::FakeLrs;

fn enabled_gic(cpus: usize) -> Vgic {
    let g = Vgic::new(cpus);
    g.mmio_write(0, 0x000, 4, 1);
    g
}

#[test]
fn typer_and_identification() {
    let g = Vgic::new(4);
    assert_eq!(g.mmio_read(0, 0x004, 4), 2 | 3 << 5);
    assert_eq!(g.mmio_read(0, 0xfe8, 4), 0x2b);
    // Targets of private interrupts read as the calling vCPU.
    assert_eq!(g.mmio_read(2, 0x800, 4), 0x0404_0404);
    assert_eq!(g.mmio_read(2, 0x81c, 1), 0x04);
}

#[test]
fn sgi_reaches_the_target_with_its_source() {
    let g = enabled_gic(4);
    // vCPU 0 sends SGI 3 to vCPUs 1 and 2.
    let wake = g.mmio_write(0, 0xf00, 4, 0b0110 << 16 | 3);
    assert_eq!(wake, 0b0110);
    let mut lrs = FakeLrs::default();
    g.flush(1, &mut lrs);
    assert_eq!(lrs.lr[0], hw::lr(3, 0, 0, false));
    assert!(!g.has_pending(1, &FakeLrs::default()), "moved into the list registers");
    // "All but self" from vCPU 2.
    assert_eq!(g.mmio_write(2, 0xf00, 4, 1 << 24 | 5), 0b1011);
}

#[test]
fn an_sgi_raised_again_while_active_becomes_pending_and_active() {
    let g = enabled_gic(2);
    g.raise_private(1, 2, 0);
    let mut lrs = FakeLrs::default();
    g.flush(1, &mut lrs);
    // The guest acknowledges it: active.
    lrs.lr[0] = (lrs.lr[0] & !(3 << 28)) | hw::LR_STATE_ACTIVE;
    g.raise_private(1, 2, 0);
    g.flush(1, &mut lrs);
    assert_eq!(lrs.lr[0] >> 28 & 3, 0b11, "pending and active in the same entry");
    assert_eq!(lrs.ids(), [2]);
    assert!(!g.deliverable(1, &g.cpus[1], || false), "nothing left pending in software");
    // The same SGI from another source is a separate entry.
    g.raise_private(1, 2, 1);
    g.flush(1, &mut lrs);
    assert_eq!(lrs.ids(), [2, 2]);
}

#[test]
fn disabled_interrupts_wait() {
    let g = Vgic::new(1);
    g.raise_private(0, 20, 0);
    g.mmio_write(0, 0x000, 4, 1);
    let mut lrs = FakeLrs::default();
    g.flush(0, &mut lrs);
    assert!(lrs.ids().is_empty(), "PPI 20 is not enabled");
    g.mmio_write(0, 0x100, 4, 1 << 20);
    g.flush(0, &mut lrs);
    assert_eq!(lrs.ids(), [20]);
}

#[test]
fn timer_stays_in_flight_until_eoi() {
    let g = enabled_gic(1);
    g.mmio_write(0, 0x100, 4, 1 << PPI_VTIMER);
    g.mmio_write(0, 0x41b, 1, 0xa0); // priority of 27
    g.raise_timer(0);
    let mut lrs = FakeLrs::default();
    g.flush(0, &mut lrs);
    assert_eq!(lrs.lr[0], hw::lr(27, 0, 0xa0, true));
    assert!(g.cpus[0].timer_in_flight.load(Acquire));
    lrs.guest_eoi(0);
    assert!(g.maintenance(0, &mut lrs), "EOI of the timer is reported");
    assert!(!g.cpus[0].timer_in_flight.load(Acquire));
    assert_eq!(lrs.lr[0], 0, "the EOIed entry is cleared");
}

#[test]
fn a_timer_raised_again_before_the_guests_eoi_does_not_end_its_wfi() {
    let g = enabled_gic(1);
    g.mmio_write(0, 0x100, 4, 1 << PPI_VTIMER);
    g.raise_timer(0);
    let mut lrs = FakeLrs::default();
    g.flush(0, &mut lrs);
    // The guest acknowledges it (active, not yet EOIed)...
    lrs.lr[0] = (lrs.lr[0] & !(3 << 28)) | hw::LR_STATE_ACTIVE;
    // ... and the timer is raised again (a descheduled deadline check).
    g.raise_timer(0);
    g.flush(0, &mut lrs);
    assert!(!g.has_pending(0, &lrs), "nothing can be taken before that EOI: WFI must block");
    // After the EOI and its maintenance interrupt, the timer is delivered again.
    lrs.guest_eoi(0);
    assert!(g.maintenance(0, &mut lrs));
    assert_eq!(lrs.ids(), [PPI_VTIMER]);
}

#[test]
fn level_spi_is_pended_again_while_high() {
    let g = enabled_gic(2);
    g.mmio_write(0, 0x104, 4, 1 << 1); // enable SPI 1 (INTID 33)
    g.mmio_write(0, 0x820, 4, 0x0000_0200); // INTID 33 -> vCPU 1
    assert_eq!(g.set_spi_level(1, true), 0b10);
    let mut lrs = FakeLrs::default();
    g.flush(0, &mut lrs);
    assert!(lrs.ids().is_empty(), "routed to vCPU 1, not 0");
    g.flush(1, &mut lrs);
    assert_eq!(lrs.ids(), [33]);
    assert_eq!(lrs.lr[0] & hw::LR_EOI, hw::LR_EOI);
    lrs.guest_eoi(0);
    g.maintenance(1, &mut lrs);
    assert_eq!(lrs.ids(), [33], "still high: delivered again");
    g.set_spi_level(1, false);
    lrs.guest_eoi(0);
    g.maintenance(1, &mut lrs);
    assert!(lrs.ids().is_empty(), "low: done");
}

#[test]
fn overflow_asks_for_a_maintenance_interrupt() {
    let g = enabled_gic(1);
    g.mmio_write(0, 0x100, 4, 0xffff_ffff);
    for id in [16, 17, 18, 19, 20, 21] {
        g.raise_private(0, id, 0);
    }
    let mut lrs = FakeLrs::default();
    g.flush(0, &mut lrs);
    assert_eq!(lrs.ids(), [16, 17, 18, 19]);
    assert_ne!(lrs.hcr & hw::HCR_UIE, 0);
    for i in 0..4 {
        lrs.guest_eoi(i);
    }
    g.flush(0, &mut lrs);
    assert_eq!(lrs.ids(), [20, 21]);
    assert_eq!(lrs.hcr & hw::HCR_UIE, 0, "nothing left over: no more maintenance");
}

#[test]
fn an_spi_goes_to_one_vcpu_only() {
    let g = enabled_gic(2);
    g.mmio_write(0, 0x104, 4, 1);
    g.mmio_write(0, 0x820, 1, 0b11); // INTID 32 -> vCPUs 0 and 1
    g.mmio_write(0, 0xc08, 4, 0b10); // edge-triggered
    g.pulse_spi(0);
    let (mut a, mut b) = (FakeLrs::default(), FakeLrs::default());
    g.flush(1, &mut b);
    g.flush(0, &mut a);
    assert_eq!((a.ids().len() + b.ids().len()), 1);
}

#[test]
fn hostile_distributor_accesses_never_panic() {
    let g = Vgic::new(3);
    let mut x: u32 = 0x1234_5678;
    for off in 0..0x1000u32 {
        for size in [1u8, 2, 4] {
            if off % size as u32 != 0 {
                continue;
            }
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            g.mmio_write((x % 9) as usize, off, size, x);
            g.mmio_read((x % 11) as usize, off, size);
        }
    }
    let mut lrs = FakeLrs::default();
    for v in 0..9 {
        g.flush(v, &mut lrs);
        g.maintenance(v, &mut lrs);
    }
    // Afterwards the distributor still works: configured as a driver
    // would, an SGI and a level SPI arrive where they should.
    g.reset();
    g.mmio_write(0, 0x000, 4, 1);
    assert_eq!(g.mmio_write(0, 0xf00, 4, 1 << 18 | 4), 0b100, "SGI 4 from vCPU 0 to vCPU 2");
    let mut lrs2 = FakeLrs::default();
    g.flush(2, &mut lrs2);
    assert_eq!(lrs2.ids(), [4]);
    assert_eq!(lrs2.lr[0] >> 10 & 7, 0, "its source is vCPU 0");
    g.mmio_write(0, 0x104, 4, 1 << 3); // enable SPI 3
    g.mmio_write(0, 0x820, 4, 0x0200_0000); // INTID 35 -> vCPU 1
    assert_eq!(g.set_spi_level(3, true), 0b10);
    let mut lrs1 = FakeLrs::default();
    g.flush(1, &mut lrs1);
    assert_eq!(lrs1.ids(), [35]);
}

#[test]
fn a_vcpu_the_gic_cannot_address_has_no_banked_state() {
    // A VM of 9 vCPUs: GICv2 addresses 8; vCPU 8 must not reach vCPU 7's
    // banked registers (SGI/PPI enables, priorities, pending SGIs).
    let g = enabled_gic(9);
    let before = g.private_state(7);
    assert_eq!(g.mmio_write(8, 0x180, 4, 0xffff_ffff), 0, "ICENABLER0 from vCPU 8");
    g.mmio_write(8, 0x400, 4, 0xa0a0_a0a0);
    g.mmio_write(8, 0xf20, 4, 0xff); // SPENDSGIR0
    assert_eq!(g.mmio_write(8, 0xf00, 4, 0xff << 16 | 1), 0, "an SGI from nowhere wakes nobody");
    assert_eq!(g.private_state(7), before);
    assert_eq!(g.mmio_read(7, 0x400, 4), 0, "vCPU 7's priorities are its own");
    assert_eq!(g.mmio_read(8, 0x100, 4), 0, "vCPU 8 sees no banked state");
    assert_eq!(g.mmio_read(8, 0x004, 4), 0);
}

#[test]
fn only_what_becomes_deliverable_wakes_anyone() {
    let g = Vgic::new(4);
    assert_eq!(g.mmio_write(0, 0x000, 4, 1), 0, "enabling an idle distributor wakes nobody");
    assert_eq!(g.mmio_write(1, 0x100, 4, 0xffff_ffff), 0, "nor enabling private interrupts with none pending");
    assert_eq!(g.mmio_write(1, 0x104, 4, 0xffff_ffff), 0, "nor enabling SPIs with none pending");
    assert_eq!(g.mmio_write(0, 0x000, 4, 1), 0, "nor enabling it again");
    // An SGI wakes its target once, until the target has flushed.
    assert_eq!(g.mmio_write(0, 0xf00, 4, 1 << 18 | 1), 0b100);
    assert_eq!(g.mmio_write(1, 0xf00, 4, 1 << 18 | 2), 0, "vCPU 2 was woken already");
    g.flush(2, &mut FakeLrs::default());
    assert_eq!(g.mmio_write(1, 0xf00, 4, 1 << 18 | 3), 0b100, "after its flush, a new SGI wakes it again");
    // An SPI pending while disabled wakes its target when it is enabled.
    g.mmio_write(0, 0x184, 4, 1 << 5); // disable SPI 5
    g.mmio_write(0, 0x824, 4, 0x0800); // INTID 37 -> vCPU 3
    assert_eq!(g.pulse_spi(5), 0b1000, "pending, flagged for its target");
    g.flush(3, &mut FakeLrs::default()); // disabled: stays pending
    assert_eq!(g.mmio_write(0, 0x104, 4, 1 << 5), 0b1000, "enabled: delivered");
}

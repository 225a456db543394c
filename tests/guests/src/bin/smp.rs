//! A bare-metal SMP guest: vCPU 0 starts the others with PSCI CPU_ON; each
//! vCPU takes `ticks=` virtual-timer interrupts (10 ms apart) through the
//! virtual GIC, sleeping in WFI in between; each secondary then sends an
//! IPI (SGI 1) to vCPU 0 and powers itself off. vCPU 0 checks every count
//! and that the secondaries are off (AFFINITY_INFO), then exits 0.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering::*};
use guest_rt::{gic, println, MAX_VCPUS};
use tessera_guest::abi::psci;
use tessera_guest::psci as p;

guest_rt::guest_main!(main);

const SGI_DONE: u32 = 1;
const PPI_VTIMER: u32 = 27;

static TICKS: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static IPIS: AtomicU32 = AtomicU32::new(0);
static WANT: AtomicU32 = AtomicU32::new(10);
static PERIOD: AtomicU32 = AtomicU32::new(0);

fn me() -> usize {
    tessera_guest::vm_info().map_or(0, |i| i.vcpu_index as usize)
}

fn irq(id: u32) {
    match id {
        PPI_VTIMER => {
            let n = TICKS[me()].fetch_add(1, AcqRel) + 1;
            if n < WANT.load(Acquire) {
                guest_rt::vtimer_arm(PERIOD.load(Acquire));
            } else {
                guest_rt::vtimer_stop();
            }
        }
        SGI_DONE => {
            IPIS.fetch_add(1, AcqRel);
        }
        _ => {}
    }
}

/// Ticks until this vCPU has its count, sleeping in WFI.
fn tick_until_done(index: usize) {
    gic::init_cpu(&[PPI_VTIMER, SGI_DONE], irq);
    guest_rt::vtimer_arm(PERIOD.load(Acquire));
    guest_rt::wait_until(|| TICKS[index].load(Acquire) >= WANT.load(Acquire));
}

fn secondary(index: u32) -> u32 {
    tick_until_done(index as usize);
    println!("vCPU {index}: {} timer ticks, telling vCPU 0", TICKS[index as usize].load(Acquire));
    gic::send_sgi(SGI_DONE, 1);
    0
}

fn main() -> u32 {
    let info = tessera_guest::vm_info().expect("VM_INFO");
    let n = (info.vcpu_count as usize).min(MAX_VCPUS);
    WANT.store(guest_rt::arg_u32("ticks", 10), Release);
    PERIOD.store(guest_rt::counter_frequency() / 100, Release);
    guest_rt::uart_write("hello through the emulated PL011\n");
    gic::init_distributor();
    guest_rt::set_secondary_main(secondary);
    if !guest_rt::start_secondaries(n as u32) {
        return 1;
    }
    let t0 = guest_rt::counter();
    tick_until_done(0);
    guest_rt::wait_until(|| IPIS.load(Acquire) >= n as u32 - 1);
    let elapsed_ms = (guest_rt::counter() - t0) * 1000 / guest_rt::counter_frequency() as u64;
    // Secondaries power off right after their IPI.
    for v in 1..n as u32 {
        while p::affinity_info(v, 0) != psci::AFFINITY_OFF {
            let _ = tessera_guest::yield_vcpu();
        }
    }
    let ticks: [u32; MAX_VCPUS] = core::array::from_fn(|i| TICKS[i].load(Acquire));
    println!("ticks per vCPU: {:?}", &ticks[..n]);
    let ok = ticks[..n].iter().all(|&t| t == WANT.load(Acquire));
    println!(
        "{n} vCPUs took {} timer interrupts each, {} IPIs reached vCPU 0, all secondaries off ({elapsed_ms} ms){}",
        WANT.load(Acquire),
        IPIS.load(Acquire),
        if ok { "" } else { ": WRONG counts" }
    );
    if ok {
        0
    } else {
        1
    }
}

//! Two VMs talking through a shared-memory channel and its doorbell
//! (TESSERA_CHANNEL_NOTIFY, ABI 1.1). `role=ping` writes a message into the
//! channel, rings the doorbell and waits for the answer; `role=pong` waits
//! for the doorbell, answers in the channel and rings back. Three rounds,
//! or `rounds=N` (then quietly, ping printing one `bench` line with the
//! average round trip in counter ticks, for `cargo xtask bench`), or
//! `secs=S` on both sides (for `cargo xtask soak`: ping goes on for S
//! seconds of the virtual counter, then sends the sequence number `DONE`;
//! pong answers until it sees it; both print how many rounds they made).
//!
//! Layout of the channel (both sides agree; nothing else is shared):
//! word 0: ping's sequence number, bytes 64..128: ping's message;
//! word 1: pong's sequence number, bytes 128..192: pong's message.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use guest_rt::{channel, gic, println, ChannelInfo};
use tessera_guest::abi::{feature, Error, Function};

guest_main!(main);
use guest_rt::guest_main;

/// Rounds printed one by one (messages carry the round's last digit).
const ROUNDS: u32 = 3;
/// The sequence number that ends a `secs=` run.
const DONE: u32 = u32::MAX;
static DOORBELLS: AtomicU32 = AtomicU32::new(0);
static INTID: AtomicU32 = AtomicU32::new(0);

fn on_irq(id: u32) {
    if id == INTID.load(Ordering::Relaxed) {
        DOORBELLS.fetch_add(1, Ordering::AcqRel);
    }
}

fn word(c: &ChannelInfo, i: usize) -> *mut u32 {
    (c.base + 4 * i) as *mut u32
}

fn put(c: &ChannelInfo, at: usize, text: &[u8]) {
    for (i, b) in text.iter().enumerate() {
        // SAFETY: inside the channel's memory, which the DTB names as ours.
        unsafe { core::ptr::write_volatile((c.base + at + i) as *mut u8, *b) };
    }
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile((c.base + at + text.len()) as *mut u8, 0) };
}

fn get(c: &ChannelInfo, at: usize, buf: &mut [u8; 64]) -> usize {
    let mut n = 0;
    while n < 63 {
        // SAFETY: inside the channel's memory.
        let b = unsafe { core::ptr::read_volatile((c.base + at + n) as *const u8) };
        if b == 0 {
            break;
        }
        buf[n] = b;
        n += 1;
    }
    n
}

/// Waits for the doorbell count to reach `n` (WFI: the pCPU goes elsewhere).
fn wait_doorbells(n: u32) {
    guest_rt::wait_until(|| DOORBELLS.load(Ordering::Acquire) >= n);
}

fn main() -> u32 {
    let Some(c) = channel(0) else {
        println!("no tessera,channel in the DTB");
        return 1;
    };
    println!("channel {}: {} KiB at {:#010x}, doorbell interrupt {}", c.id, c.size >> 10, c.base, c.intid);
    let features = tessera_guest::features(Function::ChannelNotify.id());
    if !matches!(features, Ok(f) if f & feature::CHANNEL != 0) {
        println!("WRONG: FEATURES does not offer CHANNEL: {features:?}");
        return 1;
    }
    if tessera_guest::channel_notify(7) != Err(Error::InvalidParameter) {
        println!("WRONG: a channel that does not exist was accepted");
        return 1;
    }
    INTID.store(c.intid, Ordering::Relaxed);
    gic::init_distributor();
    gic::init_cpu(&[c.intid], on_irq);
    let ping = guest_rt::arg("role") == Some("ping");
    let secs = guest_rt::arg_u32("secs", 0);
    let rounds = if secs > 0 { DONE } else { guest_rt::arg_u32("rounds", ROUNDS) };
    let quiet = rounds > ROUNDS;
    let until = guest_rt::counter() + u64::from(secs) * u64::from(guest_rt::counter_frequency());
    let mut made = 0;
    let mut buf = [0u8; 64];
    let start = guest_rt::counter();
    for i in 1..=rounds {
        // The doorbells count iterations; the sequence number is the
        // round's, or DONE.
        let round = if secs > 0 && ping && guest_rt::counter() >= until { DONE } else { i };
        if ping {
            put(&c, 64, &[b'p', b'i', b'n', b'g', b' ', b'0' + (round % 10) as u8]);
            // SAFETY: word 0 of the channel; the message is written before it.
            unsafe { core::ptr::write_volatile(word(&c, 0), round) };
            let t0 = guest_rt::counter();
            let peers = tessera_guest::channel_notify(c.id);
            wait_doorbells(i);
            let t1 = guest_rt::counter();
            // SAFETY: word 1 of the channel.
            let seq = unsafe { core::ptr::read_volatile(word(&c, 1)) };
            let n = get(&c, 128, &mut buf);
            let reply = core::str::from_utf8(&buf[..n]).unwrap_or("?");
            if !quiet {
                println!("round {round}: sent \"ping {round}\" to {peers:?} peer(s), got {reply:?} (seq {seq}) after {} ticks", t1 - t0);
            }
            if seq != round || n < 5 || &buf[..5] != b"pong " {
                println!("WRONG: unexpected answer");
                return 1;
            }
            if round == DONE {
                break;
            }
            made = round;
        } else {
            wait_doorbells(i);
            // SAFETY: word 0 of the channel.
            let seq = unsafe { core::ptr::read_volatile(word(&c, 0)) };
            let n = get(&c, 64, &mut buf);
            let text = core::str::from_utf8(&buf[..n]).unwrap_or("?");
            if !quiet {
                println!("round {round}: got {text:?} (seq {seq})");
            }
            put(&c, 128, &[b'p', b'o', b'n', b'g', b' ', b'0' + (seq % 10) as u8]);
            // SAFETY: word 1 of the channel; the answer is written before it.
            unsafe { core::ptr::write_volatile(word(&c, 1), seq) };
            if tessera_guest::channel_notify(c.id) != Ok(1) {
                println!("WRONG: the doorbell back did not reach ping");
                return 1;
            }
            if seq == DONE {
                break;
            }
            if secs > 0 && seq != round {
                println!("WRONG: round {round} carried sequence number {seq}");
                return 1;
            }
            made = round;
        }
    }
    if quiet && ping && secs == 0 {
        let total = guest_rt::counter() - start;
        println!(
            "bench doorbell-round-trip samples={rounds} total_ticks={total} cntfrq={}",
            guest_rt::counter_frequency()
        );
    }
    println!("{made} rounds through the channel");
    0
}

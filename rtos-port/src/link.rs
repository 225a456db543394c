//! The demo's link to Linux: a task that serves `tessera-chan a` (the
//! program in `examples/linux-user/`, run in a Linux VM) through a
//! shared-memory channel, speaking its protocol as its side B does.
//!
//! The channel holds two mailboxes, Linux to FreeRTOS in the first half
//! and FreeRTOS to Linux in the second; see `tessera-chan.c` for the
//! layout. A session is one run of `tessera-chan a`: a stream of
//! pseudo-random data that this task checks byte by byte and against the
//! sender's checksum, as many bytes sent back, then pings answered until
//! the end mark. The doorbell's interrupt gives this task a notification;
//! it checks a mailbox before it waits, so none is lost.
//!
//! Command line: `link=NAME` names the channel (no task without it),
//! `link_sessions=N` sessions before the task reports to the supervisor
//! and ends (0, the default: until `tessera-chan quit` says stop).

use crate::boot::{self, Channel};
use crate::rtos::{self, TaskHandle};
use core::sync::atomic::{fence, AtomicPtr, AtomicU32, Ordering::*};
use tessera_guest::println;

const DATA: u32 = 1;
const END: u32 = 2;
const PING: u32 = 3;
const PONG: u32 = 4;
const QUIT: u32 = 5;
/// Where a mailbox's message starts (after its header words).
const HEADER: usize = 32;

static TASK: AtomicPtr<core::ffi::c_void> = AtomicPtr::new(core::ptr::null_mut());
static INTID: AtomicU32 = AtomicU32::new(u32::MAX);
static DOORBELLS: AtomicU32 = AtomicU32::new(0);

/// The port's hook for every interrupt that is not the tick or a yield.
#[no_mangle]
extern "C" fn vApplicationIRQHandler(id: u32) {
    if id == INTID.load(Relaxed) {
        DOORBELLS.fetch_add(1, Relaxed);
        let t = TASK.load(Acquire);
        if !t.is_null() {
            rtos::notify_from_isr(TaskHandle::from_raw(t));
        }
    }
}

/// One mailbox: header words, then the message.
#[derive(Clone, Copy)]
struct Mailbox(usize);

impl Mailbox {
    fn word(self, i: usize) -> u32 {
        // SAFETY: inside the channel's memory (the DTB names it ours); the
        // MMU is off, so the address is the IPA.
        unsafe { core::ptr::read_volatile((self.0 + 4 * i) as *const u32) }
    }
    fn set_word(self, i: usize, v: u32) {
        // SAFETY: as in `word`.
        unsafe { core::ptr::write_volatile((self.0 + 4 * i) as *mut u32, v) }
    }
    fn byte(self, i: usize) -> u8 {
        // SAFETY: as in `word`; callers keep `i` below the message size.
        unsafe { core::ptr::read_volatile((self.0 + HEADER + i) as *const u8) }
    }
    fn set_byte(self, i: usize, v: u8) {
        // SAFETY: as in `byte`.
        unsafe { core::ptr::write_volatile((self.0 + HEADER + i) as *mut u8, v) }
    }
}

const SEQ: usize = 0;
const ACK: usize = 1;
const KIND: usize = 2;
const LEN: usize = 3;
const SUM: usize = 4;

struct Link {
    ch: Channel,
    inbox: Mailbox,
    outbox: Mailbox,
    max: usize,
    out_seq: u32,
    in_seq: u32,
}

fn fnv1a(h: u32, b: u8) -> u32 {
    (h ^ b as u32).wrapping_mul(16_777_619)
}

fn xorshift(x: &mut u32) -> u8 {
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    *x as u8
}

impl Link {
    fn new(ch: Channel) -> Self {
        let inbox = Mailbox(ch.base);
        let outbox = Mailbox(ch.base + ch.size / 2);
        // Carry on from where the last session stopped.
        let (out_seq, in_seq) = (outbox.word(SEQ), inbox.word(ACK));
        Link { ch, inbox, outbox, max: ch.size / 2 - HEADER, out_seq, in_seq }
    }

    fn ring(&self) {
        let _ = tessera_guest::channel_notify(self.ch.id);
    }

    /// Until `ready` holds, waiting for the doorbell in between (with a
    /// timeout, as a safety net: the condition is what counts).
    fn wait(&self, ready: impl Fn() -> bool) {
        while !ready() {
            rtos::notify_take(100);
        }
    }

    fn send(&mut self, kind: u32, len: usize, sum: u32, mut byte: impl FnMut(usize) -> u8) {
        self.out_seq = self.out_seq.wrapping_add(1);
        let n = self.out_seq;
        for i in 0..len {
            self.outbox.set_byte(i, byte(i));
        }
        self.outbox.set_word(KIND, kind);
        self.outbox.set_word(LEN, len as u32);
        self.outbox.set_word(SUM, sum);
        fence(SeqCst); // the message before its number
        self.outbox.set_word(SEQ, n);
        fence(SeqCst);
        self.ring();
        let out = self.outbox;
        self.wait(|| out.word(ACK) == n);
    }

    /// The next message: its kind, length and sum; `take` sees its bytes.
    fn recv(&mut self, mut take: impl FnMut(usize, u8)) -> (u32, usize, u32) {
        self.in_seq = self.in_seq.wrapping_add(1);
        let n = self.in_seq;
        let inbox = self.inbox;
        self.wait(|| inbox.word(SEQ) == n);
        fence(SeqCst); // its number before the message
        let (kind, len, sum) = (inbox.word(KIND), (inbox.word(LEN) as usize).min(self.max), inbox.word(SUM));
        for i in 0..len {
            take(i, inbox.byte(i));
        }
        fence(SeqCst); // done with it before saying so
        inbox.set_word(ACK, n);
        fence(SeqCst);
        self.ring();
        (kind, len, sum)
    }

    /// One session: whether everything checked out, or None if the client
    /// said QUIT instead (`tessera-chan quit`).
    fn session(&mut self) -> Option<bool> {
        // The stream from Linux, seed 1.
        let (mut want, mut sum, mut bytes, mut wrong) = (1u32, 2_166_136_261u32, 0usize, 0u32);
        let (kind, sent_sum) = loop {
            let mut bad = false;
            let (kind, len, s) = self.recv(|_, b| {
                bad |= b != xorshift(&mut want);
                sum = fnv1a(sum, b);
            });
            if kind == QUIT && bytes == 0 {
                return None;
            }
            if kind != DATA {
                break (kind, s);
            }
            wrong += bad as u32;
            bytes += len;
        };
        let ok_in = kind == END && wrong == 0 && sum == sent_sum;
        if ok_in {
            println!("link: received {bytes} bytes, fnv {sum:#010x}, as sent");
        } else {
            println!("link: WRONG: received {bytes} bytes, fnv {sum:#010x}, the sender's {sent_sum:#010x}, {wrong} wrong messages");
        }
        // As many back, seed 2.
        let (mut x, mut out_sum, mut left) = (2u32, 2_166_136_261u32, bytes);
        while left > 0 {
            let n = left.min(self.max);
            self.send(DATA, n, 0, |_| {
                let b = xorshift(&mut x);
                out_sum = fnv1a(out_sum, b);
                b
            });
            left -= n;
        }
        self.send(END, 0, out_sum, |_| 0);
        println!("link: sent {bytes} bytes, fnv {out_sum:#010x}");
        // Pings until the end mark.
        let mut rounds = 0u32;
        loop {
            let mut payload = [0u8; 16];
            let (kind, len, _) = self.recv(|i, b| {
                if i < payload.len() {
                    payload[i] = b;
                }
            });
            match kind {
                PING => {
                    let len = len.min(payload.len());
                    self.send(PONG, len, 0, |i| payload[i]);
                    rounds += 1;
                }
                END => break,
                other => {
                    println!("link: WRONG: kind {other} where a ping was due");
                    return Some(false);
                }
            }
        }
        println!("link: answered {rounds} round trips");
        Some(ok_in)
    }
}

/// The link task: `arg` is the number of sessions (0: for ever). Reports
/// through `done` (true if every session checked out) when it ends.
pub fn serve(ch: Channel, sessions: u32, done: impl FnOnce(bool)) {
    TASK.store(rtos::current().into_raw(), Release);
    INTID.store(ch.intid, Release);
    rtos::enable_interrupt(ch.intid);
    println!(
        "link: serving channel id {} ({} KiB at {:#x}, doorbell interrupt {}) for tessera-chan a",
        ch.id,
        ch.size >> 10,
        ch.base,
        ch.intid
    );
    let mut link = Link::new(ch);
    let mut ok = true;
    let mut n = 0;
    while sessions == 0 || n < sessions {
        match link.session() {
            Some(good) => ok &= good,
            None => {
                println!("link: told to stop");
                break;
            }
        }
        n += 1;
    }
    println!("link: {n} session(s) served, {} doorbells taken", DOORBELLS.load(Relaxed));
    done(ok)
}

/// The channel named by `link=`, if the command line names one this VM maps.
pub fn configured() -> Option<(Channel, u32)> {
    let name = boot::arg("link")?;
    match boot::channel(name) {
        Some(ch) if ch.size >= 8192 => Some((ch, boot::arg_u32("link_sessions", 0))),
        Some(_) => {
            println!("link: WRONG: channel {name:?} is smaller than 8 KiB");
            None
        }
        None => {
            println!("link: WRONG: this VM maps no channel {name:?}");
            None
        }
    }
}

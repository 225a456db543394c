//! The hypervisor console: `tessera:` log lines with levels, and each VM's
//! output labelled with its console's name, a whole line at a time so that
//! VMs printing at once never interleave within a line.
//!
//! Guest output never waits for the UART, and never for another VM:
//! - a guest's bytes go through [`Filter`] (no control characters, no escape
//!   sequences: see `filter.rs`) into its console's own bounded ring, under
//!   that console's lock only. A full ring drops what does not fit, counts
//!   it, and says so once (the total is shown when the VM ends);
//! - one drainer moves lines from the rings to the UART: whichever pCPU
//!   finds it free ([`Hub::pump`]: after a guest's write, on every
//!   interrupt exit); a pCPU that finds it busy goes on at once. It writes
//!   only while the UART's FIFO has room, at most [`PUMP_BYTES`] a call,
//!   and takes the consoles' lines in turn, one line each, so a VM that
//!   prints without pause delays another VM's line by one line at most;
//! - each console may print [`RATE_BYTES_PER_SEC`] bytes a second on
//!   average (bursts of [`BURST_BYTES`]): more than that waits in its ring,
//!   then is dropped. What a flooding VM costs the pCPUs that drain is
//!   bounded by that rate, whatever it writes.
//!
//! The hypervisor's own lines are written at once, whole (they are few,
//! and none is written at a guest's rate), after the line in flight.

mod filter;
#[cfg(test)]
mod tests;

pub use filter::Filter;

use crate::platform::Platform;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};
use spin::{Mutex, Once};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

pub fn set_level(l: Level) {
    MAX_LEVEL.store(l as u8, Ordering::Relaxed);
}

pub fn enabled(l: Level) -> bool {
    l as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// The UART the console drives (the board's PL011 on the target).
pub trait Uart: Sync {
    /// Puts one byte into the transmit FIFO if it has room.
    fn try_put(&self, b: u8) -> bool;
}

/// The most consoles (two a VM: its UART's and its hvc console).
pub const MAX_SOURCES: usize = 2 * tessera_payload::MAX_VMS;
const WAIT_WORDS: usize = MAX_SOURCES.div_ceil(32);
/// A console's ring of output not yet printed.
pub const RING_BYTES: usize = 4096;
/// The longest line printed as one; a longer one is split.
pub const LINE_BYTES: usize = 200;
/// What one console may print on average, and in one burst.
pub const RATE_BYTES_PER_SEC: u64 = 64 << 10;
pub const BURST_BYTES: u64 = 32 << 10;
/// The most bytes one [`Hub::pump`] call writes.
pub const PUMP_BYTES: usize = 512;

/// The hypervisor's console hub, installed once at boot ([`install`]).
static HUB: Once<&'static Hub> = Once::new();

pub fn install(hub: &'static Hub) {
    HUB.call_once(|| hub);
}

/// Every console and the one drainer of the UART.
pub struct Hub {
    uart: &'static dyn Uart,
    clock: &'static dyn Platform,
    sources: [Once<&'static VmConsole>; MAX_SOURCES],
    count: AtomicUsize,
    /// Consoles with bytes in their rings: how many, and which (a bit per
    /// source), so a pump visits only those, however many VMs there are.
    waiting: AtomicUsize,
    waiting_bits: [AtomicU32; WAIT_WORDS],
    drain: Mutex<Drain>,
    ticks_per_byte: u64,
    /// How long a partial line (a prompt) waits before it is shown: 50 ms.
    prompt_age: u64,
}

/// What the drainer is writing, and where the terminal is.
struct Drain {
    /// The console whose line is open on the terminal (a prompt), if any.
    open: Option<u32>,
    /// The console to look at first next time (round robin).
    next: usize,
    out: [u8; 512],
    len: usize,
    pos: usize,
}

impl Drain {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.out.len() - self.len);
        self.out[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    /// Writes what is buffered while the UART takes it; true when all is out.
    fn flush(&mut self, uart: &dyn Uart) -> bool {
        while self.pos < self.len {
            if !uart.try_put(self.out[self.pos]) {
                return false;
            }
            self.pos += 1;
        }
        self.len = 0;
        self.pos = 0;
        true
    }

    fn flush_blocking(&mut self, uart: &dyn Uart) {
        while !self.flush(uart) {
            core::hint::spin_loop();
        }
    }

    /// Ends a line left open by a console, before anything else is written.
    fn close_open_line(&mut self) {
        if self.open.take().is_some() {
            self.push(b"\n");
        }
    }
}

/// Writes formatted text straight to the UART, waiting for room.
struct Blocking<'a>(&'a dyn Uart);

impl Write for Blocking<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            while !self.0.try_put(b) {
                core::hint::spin_loop();
            }
        }
        Ok(())
    }
}

/// Formats into the drainer's buffer (a warning line about a console).
struct Buffered<'a>(&'a mut Drain);

impl Write for Buffered<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.push(s.as_bytes());
        Ok(())
    }
}

impl Hub {
    pub fn new(uart: &'static dyn Uart, clock: &'static dyn Platform) -> Self {
        let freq = clock.frequency().max(1);
        Self {
            uart,
            clock,
            sources: [const { Once::new() }; MAX_SOURCES],
            count: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            waiting_bits: [const { AtomicU32::new(0) }; WAIT_WORDS],
            drain: Mutex::new(Drain { open: None, next: 0, out: [0; 512], len: 0, pos: 0 }),
            ticks_per_byte: (freq / RATE_BYTES_PER_SEC).max(1),
            prompt_age: freq / 20,
        }
    }

    /// A place for a new console (at boot); None past [`MAX_SOURCES`],
    /// which the packer's VM limit keeps out of reach.
    fn reserve(&self) -> Option<usize> {
        let n = self.count.fetch_add(1, Ordering::AcqRel);
        (n < MAX_SOURCES).then_some(n)
    }

    fn set_waiting(&self, source: usize, on: bool) {
        let (w, bit) = (&self.waiting_bits[source / 32], 1 << (source % 32));
        if on {
            self.waiting.fetch_add(1, Ordering::AcqRel);
            w.fetch_or(bit, Ordering::AcqRel);
        } else {
            w.fetch_and(!bit, Ordering::AcqRel);
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The first source with output waiting for which `take` succeeds,
    /// visiting the waiting ones from `start` round the ring.
    fn take_waiting(&self, start: usize, mut take: impl FnMut(usize) -> bool) -> Option<usize> {
        let first = start / 32;
        // The first word twice: its bits from `start` on, and at the end
        // its bits below `start`.
        for step in 0..=WAIT_WORDS {
            let k = if first + step >= WAIT_WORDS { first + step - WAIT_WORDS } else { first + step };
            let mut bits = self.waiting_bits[k].load(Ordering::Acquire);
            let low = (1u32 << (start % 32)) - 1;
            bits &= match step {
                0 => !low,
                s if s == WAIT_WORDS => low,
                _ => !0,
            };
            while bits != 0 {
                let i = k * 32 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if take(i) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Does any console have output waiting (for the idle pCPU's timer)?
    pub fn has_waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire) != 0
    }

    /// A partial line's wait, in counter ticks.
    pub fn prompt_age(&self) -> u64 {
        self.prompt_age
    }

    /// Moves what may be printed now to the UART, unless another pCPU is
    /// doing it: never waits.
    pub fn pump(&self) {
        if let Some(mut d) = self.drain.try_lock() {
            self.drain_some(&mut d, PUMP_BYTES, false);
        }
    }

    /// Up to `budget` bytes (unless `force`: everything, ignoring rates and
    /// the prompt delay). Returns whether anything is left to print.
    fn drain_some(&self, d: &mut Drain, budget: usize, force: bool) -> bool {
        let now = self.clock.now();
        let mut spent = 0;
        loop {
            if !d.flush(self.uart) {
                return true;
            }
            // Nothing waits in any console (the common case on every
            // pump): no need to visit them all.
            if spent >= budget || !self.has_waiting() {
                return self.has_waiting();
            }
            let start = d.next;
            let taken = self.take_waiting(start, |i| {
                self.sources[i].get().is_some_and(|c| c.take_line(now, force, self.prompt_age, self.ticks_per_byte, d))
            });
            match taken {
                Some(i) => d.next = if i + 1 == MAX_SOURCES { 0 } else { i + 1 },
                None => return self.has_waiting(),
            }
            spent += d.len;
        }
    }

    /// Prints everything that waits, whatever the rates (the system is
    /// powering off or failing).
    pub fn flush_all(&self) {
        let mut d = self.drain.lock();
        while self.drain_some(&mut d, usize::MAX, true) {
            core::hint::spin_loop();
        }
        d.close_open_line();
        d.flush_blocking(self.uart);
    }

    /// One `tessera:` line, after the line in flight.
    fn log(&self, level: Level, args: fmt::Arguments<'_>) {
        let mut d = self.drain.lock();
        d.flush_blocking(self.uart);
        d.close_open_line();
        d.flush_blocking(self.uart);
        let tag = match level {
            Level::Error => "tessera: error: ",
            Level::Warn => "tessera: warning: ",
            Level::Info | Level::Debug => "tessera: ",
        };
        let mut w = Blocking(self.uart);
        let _ = w.write_str(tag);
        let _ = w.write_fmt(args);
        let _ = w.write_str("\n");
    }
}

/// Prints one `tessera:` line. Used through the `error!`..`debug!` macros.
pub fn log(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    if let Some(hub) = HUB.get() {
        hub.log(level, args);
    }
}

/// Prints every console's waiting output (before powering off).
pub fn flush_all() {
    if let Some(hub) = HUB.get() {
        hub.flush_all();
    }
}

/// For the panic path: print even if another CPU died holding the lock.
///
/// # Safety
/// Only from the panic handler, which never returns to code that may hold
/// the console lock: the lock is broken open, and a pCPU that was inside it
/// may print a torn line, but none relies on it afterwards.
pub unsafe fn emergency(args: fmt::Arguments<'_>) {
    let Some(hub) = HUB.get() else { return };
    // SAFETY: the caller is the panic handler (function contract): breaking
    // the lock can only tear a line on the way down.
    unsafe { hub.drain.force_unlock() };
    let mut w = Blocking(hub.uart);
    let _ = w.write_str("\n");
    let _ = w.write_fmt(args);
    let _ = w.write_str("\n");
}

#[macro_export]
macro_rules! error { ($($a:tt)*) => { $crate::console::log($crate::console::Level::Error, format_args!($($a)*)) } }
#[macro_export]
macro_rules! warn { ($($a:tt)*) => { $crate::console::log($crate::console::Level::Warn, format_args!($($a)*)) } }
#[macro_export]
macro_rules! info { ($($a:tt)*) => { $crate::console::log($crate::console::Level::Info, format_args!($($a)*)) } }
#[macro_export]
macro_rules! debug { ($($a:tt)*) => { $crate::console::log($crate::console::Level::Debug, format_args!($($a)*)) } }

pub const NAME_LEN: usize = tessera_payload::NAME_LEN;
/// A console's label: the VM's name and a suffix (".hvc0").
pub const LABEL_LEN: usize = NAME_LEN + 8;

/// A VM's console: its name, and its ring of output waiting for the drainer.
pub struct VmConsole {
    id: u32,
    /// Its place among the hub's sources (None: never printed but at its end).
    source: Option<usize>,
    name: [u8; LABEL_LEN],
    name_len: usize,
    hub: &'static Hub,
    inner: Mutex<Ring>,
}

struct Ring {
    bytes: [u8; RING_BYTES],
    head: usize,
    len: usize,
    filter: Filter,
    /// When the oldest byte waiting arrived (counter ticks; 0: none).
    since: u64,
    /// Bytes it may print now, and when that was last topped up.
    tokens: u64,
    refilled: u64,
    dropped: u64,
    warned: bool,
}

impl Ring {
    fn at(&self, k: usize) -> u8 {
        self.bytes[(self.head + k) % RING_BYTES]
    }

    /// Puts one shown character (1-4 bytes) in, or counts it dropped.
    fn put(&mut self, s: &[u8]) {
        if self.len + s.len() > RING_BYTES {
            self.dropped += s.len() as u64;
            return;
        }
        for &b in s {
            self.bytes[(self.head + self.len) % RING_BYTES] = b;
            self.len += 1;
        }
    }

    fn consume(&mut self, n: usize) {
        self.head = (self.head + n) % RING_BYTES;
        self.len -= n;
    }
}

impl VmConsole {
    /// `id` is a non-zero number unique to this console; `name` labels its
    /// lines. Registers it with `hub` (leaked: consoles live for the run).
    pub fn new(id: u32, name: &str, hub: &'static Hub) -> &'static Self {
        let mut n = [0u8; LABEL_LEN];
        let len = name.len().min(LABEL_LEN);
        n[..len].copy_from_slice(&name.as_bytes()[..len]);
        let ring = Ring {
            bytes: [0; RING_BYTES],
            head: 0,
            len: 0,
            filter: Filter::new(),
            since: 0,
            tokens: BURST_BYTES,
            refilled: hub.clock.now(),
            dropped: 0,
            warned: false,
        };
        extern crate alloc;
        let source = hub.reserve();
        let c: &'static Self = alloc::boxed::Box::leak(alloc::boxed::Box::new(Self {
            id,
            source,
            name: n,
            name_len: len,
            hub,
            inner: Mutex::new(ring),
        }));
        if let Some(i) = source {
            hub.sources[i].call_once(|| c);
        }
        c
    }

    pub fn name(&self) -> &str {
        // Names are checked ASCII by the payload parser.
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }

    pub fn hub(&self) -> &'static Hub {
        self.hub
    }

    /// How many bytes of this console's output were dropped.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().dropped
    }

    /// Guest bytes: filtered into the ring (what does not fit is dropped and
    /// counted), then the drainer is given a chance to print them.
    pub fn write(&self, bytes: &[u8]) {
        {
            let mut r = self.inner.lock();
            let was_empty = r.len == 0;
            let mut f = r.filter;
            for &b in bytes {
                f.feed(b, &mut |s| r.put(s));
            }
            r.filter = f;
            if was_empty && r.len != 0 {
                r.since = self.hub.clock.now().max(1);
                if let Some(i) = self.source {
                    self.hub.set_waiting(i, true);
                }
            }
        }
        self.hub.pump();
    }

    /// Moves this console's next line into the drainer's buffer if it may
    /// be printed now: a complete line (or a full line's worth) within the
    /// console's rate, or a partial line that has waited `age` (a prompt).
    /// With `force`, anything, whatever the rate and age.
    fn take_line(&self, now: u64, force: bool, age: u64, ticks_per_byte: u64, d: &mut Drain) -> bool {
        let mut r = self.inner.lock();
        if r.len == 0 {
            return false;
        }
        let earned = now.saturating_sub(r.refilled) / ticks_per_byte;
        if earned > 0 {
            r.tokens = (r.tokens + earned).min(BURST_BYTES);
            r.refilled = now;
        }
        let scan = r.len.min(LINE_BYTES);
        let (take, complete, newline) = match (0..scan).find(|&k| r.at(k) == b'\n') {
            Some(k) => (k, true, true),
            None if r.len >= LINE_BYTES => {
                // Split a long line at a character boundary.
                let mut k = LINE_BYTES;
                while k > 0 && r.at(k) & 0xc0 == 0x80 {
                    k -= 1;
                }
                (k, true, false)
            }
            None if force || now.saturating_sub(r.since) >= age => (r.len, false, false),
            None => return false,
        };
        let cost = take as u64 + 1;
        if !force && r.tokens < cost {
            return false;
        }
        r.tokens = r.tokens.saturating_sub(cost);
        if r.dropped > 0 && !r.warned {
            r.warned = true;
            d.close_open_line();
            let _ = writeln!(
                Buffered(d),
                "tessera: warning: vm console \"{}\" prints faster than the console takes: output dropped (the total is shown when the VM ends)",
                self.name()
            );
        }
        match d.open {
            Some(o) if o == self.id => {}
            Some(_) => {
                d.push(b"\n");
                d.push(self.name().as_bytes());
                d.push(b": ");
            }
            None => {
                d.push(self.name().as_bytes());
                d.push(b": ");
            }
        }
        for k in 0..take {
            let b = r.at(k);
            d.push(&[b]);
        }
        if complete {
            d.push(b"\n");
            d.open = None;
        } else {
            d.open = Some(self.id);
        }
        r.consume(take + newline as usize);
        if r.len == 0 {
            r.since = 0;
            if let Some(i) = self.source {
                self.hub.set_waiting(i, false);
            }
        } else {
            r.since = now.max(1);
        }
        true
    }

    /// The VM has ended: everything it wrote is printed now, its last line
    /// ended, and what was dropped is counted in one line.
    pub fn finish(&self) {
        let hub = self.hub;
        let mut d = hub.drain.lock();
        d.flush_blocking(hub.uart);
        while self.take_line(hub.clock.now(), true, 0, hub.ticks_per_byte, &mut d) {
            d.flush_blocking(hub.uart);
        }
        if d.open == Some(self.id) {
            d.close_open_line();
        }
        let dropped = self.inner.lock().dropped;
        if dropped > 0 {
            d.close_open_line();
            let _ = writeln!(
                Buffered(&mut d),
                "tessera: warning: vm console \"{}\": {dropped} bytes of output were dropped",
                self.name()
            );
        }
        d.flush_blocking(hub.uart);
    }
}

/// `fmt::Write` into a fixed array, truncating what does not fit (labels,
/// device serials: no allocation).
pub struct ByteWriter<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> ByteWriter<N> {
    pub const fn new() -> Self {
        Self { buf: [0; N], len: 0 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The text written, up to the last whole character that fitted.
    pub fn as_str(&self) -> &str {
        match core::str::from_utf8(self.as_bytes()) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl<const N: usize> Default for ByteWriter<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for ByteWriter<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

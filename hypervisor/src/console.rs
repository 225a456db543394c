//! The hypervisor console: `tessera:` log lines with levels, and per-VM
//! output labelled with the VM's name, one whole line at a time so that VMs
//! printing at once never interleave within a line.
//!
//! The byte sink (the physical UART) is installed by the platform at boot.
//! Guest bytes are untrusted: control characters other than tab, newline and
//! ESC are dropped, so a guest cannot rewrite the start of a line (`\r`) and
//! pass its output off as the hypervisor's.

use crate::platform::Platform;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use spin::{Mutex, Once};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

static SINK: Once<fn(&[u8])> = Once::new();
/// Serialises output; holds the id of the source whose line is still open
/// on the terminal (a VM's partial line, such as a shell prompt), if any.
static LOCK: Mutex<Option<u32>> = Mutex::new(None);
static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Installs the byte sink. Called once at boot.
pub fn set_sink(f: fn(&[u8])) {
    SINK.call_once(|| f);
}

pub fn set_level(l: Level) {
    MAX_LEVEL.store(l as u8, Ordering::Relaxed);
}

pub fn enabled(l: Level) -> bool {
    l as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

struct SinkWriter(fn(&[u8]));

impl Write for SinkWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        (self.0)(s.as_bytes());
        Ok(())
    }
}

/// Prints one `tessera:` line. Used through the `error!`..`debug!` macros.
pub fn log(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let Some(&sink) = SINK.get() else { return };
    let mut open = LOCK.lock();
    if open.take().is_some() {
        sink(b"\n");
    }
    let tag = match level {
        Level::Error => "tessera: error: ",
        Level::Warn => "tessera: warning: ",
        Level::Info | Level::Debug => "tessera: ",
    };
    sink(tag.as_bytes());
    let _ = SinkWriter(sink).write_fmt(args);
    sink(b"\n");
}

/// Prints VM output labelled `name: `. `complete` ends the line; otherwise
/// it stays open, and more output from the same source continues it
/// without a new label (a prompt, then what the user types). `source` is a
/// non-zero id unique to the VM.
pub fn vm_output(source: u32, name: &str, bytes: &[u8], complete: bool) {
    let Some(&sink) = SINK.get() else { return };
    let mut open = LOCK.lock();
    match *open {
        Some(s) if s == source => {}
        Some(_) => {
            sink(b"\n");
            sink(name.as_bytes());
            sink(b": ");
        }
        None => {
            sink(name.as_bytes());
            sink(b": ");
        }
    }
    sink(bytes);
    if complete {
        sink(b"\n");
        *open = None;
    } else {
        *open = Some(source);
    }
}

/// For the panic path: print even if another CPU died holding the lock.
///
/// # Safety
/// Only from the panic handler, which never returns to code that may hold
/// the console lock: the lock is broken open, and a pCPU that was inside it
/// may print a torn line, but none relies on it afterwards.
pub unsafe fn emergency(args: fmt::Arguments<'_>) {
    let Some(&sink) = SINK.get() else { return };
    // SAFETY: the caller is the panic handler (function contract): breaking
    // the lock can only tear a line on the way down.
    unsafe { LOCK.force_unlock() };
    let _g = LOCK.lock();
    sink(b"\n");
    let _ = SinkWriter(sink).write_fmt(args);
    sink(b"\n");
}

#[macro_export]
macro_rules! error { ($($a:tt)*) => { $crate::console::log($crate::console::Level::Error, format_args!($($a)*)) } }
#[macro_export]
macro_rules! warn { ($($a:tt)*) => { $crate::console::log($crate::console::Level::Warn, format_args!($($a)*)) } }
#[macro_export]
macro_rules! info { ($($a:tt)*) => { $crate::console::log($crate::console::Level::Info, format_args!($($a)*)) } }
#[macro_export]
macro_rules! debug { ($($a:tt)*) => { $crate::console::log($crate::console::Level::Debug, format_args!($($a)*)) } }

/// A VM's partial output line.
pub struct LineBuffer<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> LineBuffer<N> {
    pub const fn new() -> Self {
        Self { buf: [0; N], len: 0 }
    }

    /// Appends guest bytes; calls `emit` with each complete line (without
    /// the newline), or with a full buffer's worth when a line is longer.
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        for &b in bytes {
            match b {
                b'\n' => {
                    emit(&self.buf[..self.len]);
                    self.len = 0;
                }
                b'\t' | 0x1b | 0x20..=0x7e | 0x80..=0xff => {
                    if self.len == N {
                        emit(&self.buf[..self.len]);
                        self.len = 0;
                    }
                    self.buf[self.len] = b;
                    self.len += 1;
                }
                _ => {} // other control characters are dropped
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Emits what is buffered (a partial line, or what is left at VM exit).
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        if self.len > 0 {
            emit(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl<const N: usize> Default for LineBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

pub const NAME_LEN: usize = tessera_payload::NAME_LEN;
/// A console's label: the VM's name and a suffix (".hvc0").
pub const LABEL_LEN: usize = NAME_LEN + 8;

/// A VM's console output: line-buffered, labelled with the VM's name.
pub struct VmConsole {
    id: u32,
    name: [u8; LABEL_LEN],
    name_len: usize,
    buf: Mutex<LineBuffer<200>>,
    /// When (platform clock ticks) the oldest unprinted partial line
    /// began; 0 if none.
    partial_since: AtomicU64,
    clock: &'static dyn Platform,
}

impl VmConsole {
    /// `id` is a non-zero number unique to this console (see [`vm_output`]).
    pub fn new(id: u32, name: &str, clock: &'static dyn Platform) -> Self {
        let mut n = [0u8; LABEL_LEN];
        let len = name.len().min(LABEL_LEN);
        n[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self { id, name: n, name_len: len, buf: Mutex::new(LineBuffer::new()), partial_since: AtomicU64::new(0), clock }
    }

    pub fn name(&self) -> &str {
        // Names are checked ASCII by the payload parser.
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }

    /// Guest bytes: complete lines go out at once; a partial line waits for
    /// its end, or for `flush_stale`.
    pub fn write(&self, bytes: &[u8]) {
        let (id, name) = (self.id, self.name());
        let mut b = self.buf.lock();
        b.push(bytes, |line| vm_output(id, name, line, true));
        if b.is_empty() {
            self.partial_since.store(0, Ordering::Relaxed);
        } else if self.partial_since.load(Ordering::Relaxed) == 0 {
            self.partial_since.store(self.clock.now().max(1), Ordering::Relaxed);
        }
    }

    /// Prints a partial line that has waited `age` ticks or more (a prompt).
    pub fn flush_stale(&self, now: u64, age: u64) {
        let since = self.partial_since.load(Ordering::Relaxed);
        if since != 0 && now.saturating_sub(since) >= age {
            let (id, name) = (self.id, self.name());
            self.buf.lock().flush(|l| vm_output(id, name, l, false));
            self.partial_since.store(0, Ordering::Relaxed);
        }
    }

    /// Ends any partial line (the VM has ended).
    pub fn finish(&self) {
        let (id, name) = (self.id, self.name());
        self.buf.lock().flush(|l| vm_output(id, name, l, true));
        self.partial_since.store(0, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<String> {
        let mut lb: LineBuffer<8> = LineBuffer::new();
        let mut out = Vec::new();
        for c in chunks {
            lb.push(c, |l| out.push(String::from_utf8_lossy(l).into_owned()));
        }
        lb.flush(|l| out.push(String::from_utf8_lossy(l).into_owned()));
        out
    }

    #[test]
    fn lines_are_assembled_across_writes() {
        assert_eq!(lines(&[b"ab", b"c\nde", b"f\n"]), ["abc", "def"]);
        assert_eq!(lines(&[b"tail"]), ["tail"]);
    }

    #[test]
    fn long_lines_are_split_not_lost() {
        assert_eq!(lines(&[b"0123456789\n"]), ["01234567", "89"]);
    }

    #[test]
    fn carriage_returns_and_controls_cannot_forge_lines() {
        assert_eq!(lines(&[b"x\rtessera\x07\n"]), ["xtessera"]);
        assert_eq!(lines(&[b"\x1b[1m\n"]), ["\x1b[1m"]);
    }
}

//! The hypercall console's input (ABI 1.2, `TESSERA_CONSOLE_READ`): what
//! the operator types for a VM that reads its console through the ABI
//! (Linux's `hvc0` over Tessera) instead of through its PL011.
//!
//! A VM's typed input goes to its PL011 until the guest first calls
//! `TESSERA_CONSOLE_READ`; from then until the VM is reset it is held here,
//! up to [`hypercall_abi::CONSOLE_INPUT_BUFFER`] bytes (the rest is refused
//! and the caller counts it), and each push that adds bytes is an edge on
//! the VM's console-input SPI. Edge, not level: a guest that stops reading
//! (its tty full) must not be held in an interrupt storm by a line that
//! stays high; it reads on at its own pace and every new byte is a new
//! edge, so no wake-up is lost. Reading never blocks and never hands out
//! more than the guest asked for; a read whose buffer turns out not to be
//! the guest's takes nothing (the bytes are peeked, stored, then consumed).

use hypercall_abi::CONSOLE_INPUT_BUFFER;
use spin::Mutex;

const CAP: usize = CONSOLE_INPUT_BUFFER as usize;

struct Ring {
    buf: [u8; CAP],
    head: usize,
    len: usize,
    /// The guest has read since the VM (re)started: input comes here.
    claimed: bool,
}

impl Ring {
    const EMPTY: Ring = Ring { buf: [0; CAP], head: 0, len: 0, claimed: false };
}

/// One VM's hypercall-console input.
pub struct CallConsoleInput {
    ring: Mutex<Ring>,
}

impl CallConsoleInput {
    pub const fn new() -> Self {
        Self { ring: Mutex::new(Ring::EMPTY) }
    }

    /// Whether typed input goes here (the guest has read from it).
    pub fn claimed(&self) -> bool {
        self.ring.lock().claimed
    }

    /// Typed bytes for the VM, if it has claimed the hypercall console:
    /// `None` if it has not (they belong to the PL011), else how many were
    /// taken (what fits). The caller raises the input edge if that is not 0.
    pub fn push(&self, bytes: &[u8]) -> Option<usize> {
        let mut r = self.ring.lock();
        if !r.claimed {
            return None;
        }
        let n = bytes.len().min(CAP - r.len);
        for &b in &bytes[..n] {
            let tail = (r.head + r.len) % CAP;
            r.buf[tail] = b;
            r.len += 1;
        }
        Some(n)
    }

    /// One `TESSERA_CONSOLE_READ` of `out.len()` bytes: claims the input,
    /// copies what is waiting (up to `out.len()`) into `out` and hands it
    /// to `store`; only if `store` succeeds are the bytes taken. Returns
    /// what `store` returned and the number of bytes.
    pub fn read<E>(&self, out: &mut [u8], store: impl FnOnce(&[u8]) -> Result<(), E>) -> Result<usize, E> {
        let mut r = self.ring.lock();
        r.claimed = true;
        let n = out.len().min(r.len);
        for (i, o) in out[..n].iter_mut().enumerate() {
            *o = r.buf[(r.head + i) % CAP];
        }
        store(&out[..n])?;
        r.head = (r.head + n) % CAP;
        r.len -= n;
        Ok(n)
    }

    /// The VM is reset: input goes back to the PL011 and nothing waits.
    pub fn reset(&self) {
        *self.ring.lock() = Ring::EMPTY;
    }
}

impl Default for CallConsoleInput {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &[u8]) -> Result<(), ()> {
        Ok(())
    }

    #[test]
    fn input_belongs_to_the_pl011_until_the_guest_reads() {
        let c = CallConsoleInput::new();
        assert_eq!(c.push(b"ls\n"), None);
        assert!(!c.claimed());
        let mut out = [0u8; 8];
        assert_eq!(c.read(&mut out, ok), Ok(0));
        assert!(c.claimed());
        assert_eq!(c.push(b"ls\n"), Some(3));
        assert_eq!(c.push(b"x"), Some(1));
        assert_eq!(c.read(&mut out[..2], ok), Ok(2));
        assert_eq!(&out[..2], b"ls");
        assert_eq!(c.read(&mut out, ok), Ok(2));
        assert_eq!(&out[..2], b"\nx");
        assert_eq!(c.read(&mut out, ok), Ok(0));
    }

    #[test]
    fn a_failed_store_takes_nothing() {
        let c = CallConsoleInput::new();
        let mut out = [0u8; 4];
        c.read(&mut out, ok).unwrap();
        c.push(b"abc");
        assert_eq!(c.read(&mut out, |_| Err("not the guest's")), Err("not the guest's"));
        assert_eq!(c.read(&mut out, ok), Ok(3));
        assert_eq!(&out[..3], b"abc");
    }

    #[test]
    fn the_buffer_is_bounded_and_wraps() {
        let c = CallConsoleInput::new();
        let mut out = [0u8; 256];
        c.read(&mut out, ok).unwrap();
        let big: Vec<u8> = (0..CAP as u32 + 100).map(|i| i as u8).collect();
        assert_eq!(c.push(&big), Some(CAP), "the rest is refused");
        assert_eq!(c.push(b"more"), Some(0), "full");
        let mut got = Vec::new();
        // Read some, push more so the ring wraps, then drain.
        let n = c.read(&mut out, ok).unwrap();
        got.extend_from_slice(&out[..n]);
        assert_eq!(c.push(&big[CAP..CAP + 100]), Some(100));
        loop {
            let n = c.read(&mut out, ok).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&out[..n]);
        }
        assert_eq!(got, big, "every byte taken comes out once, in order");
    }

    #[test]
    fn reset_gives_input_back_to_the_pl011() {
        let c = CallConsoleInput::new();
        let mut out = [0u8; 4];
        c.read(&mut out, ok).unwrap();
        c.push(b"abc");
        c.reset();
        assert!(!c.claimed());
        assert_eq!(c.push(b"x"), None);
        assert_eq!(c.read(&mut out, ok), Ok(0), "what waited is gone");
    }
}

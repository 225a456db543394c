//! Text output through TESSERA_CONSOLE_WRITE, and the `print!` macros.

use crate::calls::{console_write, yield_vcpu};
use core::fmt;
use hypercall_abi::{Error, CONSOLE_WRITE_MAX};

/// How many times in a row the hypervisor may take no bytes (its console
/// backlog is full) before writing gives up; the guest yields in between.
const MAX_STALLS: u32 = 16;

/// This VM's console. Writes of any length are sent in chunks of at most
/// [`CONSOLE_WRITE_MAX`] bytes, one hypercall each.
#[derive(Clone, Copy, Debug, Default)]
pub struct Console;

impl Console {
    /// Sends all of `bytes`. A partial write is resumed; if the hypervisor
    /// takes nothing 16 times in a row, yielding in between, this gives up
    /// with [`Error::Denied`] rather than hang the guest.
    pub fn write_bytes(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        let mut stalls = 0;
        while !bytes.is_empty() {
            let chunk = &bytes[..bytes.len().min(CONSOLE_WRITE_MAX as usize)];
            // A hypervisor claiming more than it was given took it all.
            let taken = console_write(chunk)?.min(chunk.len());
            if taken == 0 {
                stalls += 1;
                if stalls == MAX_STALLS {
                    return Err(Error::Denied);
                }
                // Let the console drain; failure to yield just retries sooner.
                let _ = yield_vcpu();
                continue;
            }
            stalls = 0;
            bytes = &bytes[taken..];
        }
        Ok(())
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// Collects formatted pieces so that one `print!` costs one hypercall (and
/// lines from different vCPUs do not interleave mid-line) unless it is
/// longer than the buffer.
struct Buffered {
    buf: [u8; LINE],
    len: usize,
}

/// Bytes `print!` gathers before a hypercall; small, as guest stacks are.
const LINE: usize = 256;

impl Buffered {
    fn flush(&mut self) -> Result<(), Error> {
        let len = core::mem::take(&mut self.len);
        Console.write_bytes(&self.buf[..len])
    }
}

impl fmt::Write for Buffered {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut bytes = s.as_bytes();
        while !bytes.is_empty() {
            if self.len == LINE {
                self.flush().map_err(|_| fmt::Error)?;
            }
            let n = bytes.len().min(LINE - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
        }
        Ok(())
    }
}

/// Backs `print!`/`println!`; errors are dropped, as a console cannot report
/// its own failure.
#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let mut out = Buffered { buf: [0; LINE], len: 0 };
    if fmt::write(&mut out, args).is_ok() {
        let _ = out.flush();
    }
}

/// Prints to this VM's console through TESSERA_CONSOLE_WRITE.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::_print(::core::format_args!($($arg)*))
    };
}

/// Prints a line to this VM's console through TESSERA_CONSOLE_WRITE.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::_print(::core::format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::_print(::core::format_args!("{}\n", ::core::format_args!($($arg)*)))
    };
}

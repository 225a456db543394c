//! An emulated Arm PrimeCell UART (PL011), one per VM, for guests that
//! drive a serial port themselves: Linux's `amba-pl011` driver (console
//! `ttyAMA0`, `earlycon=pl011,...`) and bare-metal guests that poll it.
//!
//! Register names and bits are those of the PL011 Technical Reference
//! Manual (Arm DDI 0183). Every access traps (the page has no stage-2
//! mapping) and arrives here as an offset into the 4 KiB window.
//!
//! # Model
//!
//! - **Transmit is instantaneous.** A write to `UARTDR` hands the low 8 bits
//!   to [`UartBackend::tx`] at once, so the transmit FIFO is always empty:
//!   `UARTFR` reads TXFE = 1, TXFF = 0, BUSY = 0. We transmit whether or not
//!   `UARTCR.UARTEN`/`TXE` are set (as QEMU does): Linux's earlycon writes
//!   before anything enables the UART.
//! - **Receive** is a 32-entry FIFO filled by [`Pl011::push_rx`]; with
//!   `UARTLCR_H.FEN` = 0 it holds one entry, as on the real device ("character
//!   mode"). Reception is likewise not gated by `UARTEN`/`RXE`. Clearing FEN
//!   with more than one byte queued keeps those bytes (nothing is lost); no
//!   more are accepted until the guest has read them. A `UARTDR` read pops
//!   one byte; its error bits (11:8) always read 0, and reading an empty FIFO
//!   returns 0.
//! - **Line settings** (`UARTILPR`, `UARTIBRD`, `UARTFBRD`, `UARTLCR_H` other
//!   than FEN, `UARTCR` other than LBE, `UARTDMACR`) are stored and read back,
//!   limited to their implemented bits, and otherwise ignored: there is no
//!   baud rate, framing, IrDA, flow control or DMA. `UARTLCR_H.BRK` sends
//!   nothing. `UARTCR.LBE` (loopback) is modelled: bytes written to `UARTDR`
//!   go into the receive FIFO instead of the backend; one that finds the FIFO
//!   full is lost and sets the overrun error (`UARTRSR.OE`, `UARTRIS.OERIS`).
//!   No other error (framing, parity, break) can happen. A write to
//!   `UARTECR` clears `UARTRSR`.
//! - **Modem inputs** are those of a peer that is always present and ready:
//!   `UARTFR` reads CTS = DSR = DCD = 1 and RI = 0, constantly, so the modem
//!   interrupts never fire.
//! - **Identification**: `UARTPeriphID0-3` = 0x11, 0x10, 0x14, 0x00 (Arm,
//!   part 0x011, revision 1) and `UARTPCellID0-3` = 0x0D, 0xF0, 0x05, 0xB1,
//!   the values Linux's AMBA bus matches `amba-pl011` against. (For revision
//!   < 3 Linux assumes 16-entry FIFOs: it then sends at most 8 bytes per TX
//!   interrupt; it drains RX until `UARTFR.RXFE`, so the deeper FIFO is
//!   harmless.)
//!
//! # Interrupts
//!
//! `UARTRIS` holds the raw status, `UARTMIS` = `UARTRIS & UARTIMSC`, and the
//! single interrupt output (`UARTINTR`, given to [`UartBackend::set_irq`]) is
//! high while `UARTMIS` != 0.
//!
//! - **RXRIS** is set by any event that leaves the receive FIFO at or above
//!   the `UARTIFLS.RXIFLSEL` trigger (4, 8, 16, 24 or 28 entries; the
//!   reserved encodings act as 16), or holding any data when FIFOs are off:
//!   a receive, or a `UARTIFLS`/`UARTLCR_H` write that lowers the trigger
//!   below the fill level. It is cleared by `UARTICR.RXIC`, and whenever
//!   reads take the FIFO below the trigger.
//! - **RTRIS** (receive timeout): we have no character clock, so received
//!   data counts as timed out at once; this is what lets Linux see a single
//!   typed character below the trigger level. Set whenever bytes are
//!   received, cleared when the FIFO becomes empty or by `UARTICR.RTIC`, as
//!   the TRM describes. After an `RTIC` with data still queued it stays clear
//!   until more data arrives (Linux never does that: it drains the FIFO).
//! - **TXRIS** is, per the TRM, asserted while the transmit FIFO is at or
//!   below its trigger level, and cleared by writing `UARTDR` (filling the
//!   FIFO past the level) or by `UARTICR.TXIC`. Our FIFO empties the moment
//!   it is written, so it passes back down through the level at once: after
//!   any `UARTDR` write or `TXIC` TXRIS is set again, i.e. it always reads 1.
//!   That is what Linux's TX path needs: `pl011_tx_chars` called from the
//!   interrupt writes half a FIFO and keeps `TXIM` set while it has more to
//!   send, relying on the next TX interrupt, which therefore must come; when
//!   it runs out it clears `TXIM` itself. A `TXIM` enabled with nothing to
//!   send raises the line at once, which Linux (and the TRM's "FIFO empty"
//!   condition) treat as "room to send".
//! - The error bits (OERIS only, see above) are cleared by `UARTICR`.
//!
//! # Access widths
//!
//! The PL011's registers are at most 16 bits wide on a 32-bit-per-register
//! map, and Linux accesses them with 16-bit `readw`/`writew` (32-bit with
//! `reg-io-width = <4>`), its earlycon with 8-bit `writeb` to `UARTDR`. We
//! accept every size at every naturally aligned offset: an access covers
//! the byte lanes `[offset, offset + size)` of the 32-bit register at
//! `offset & !3`. Reads return those lanes of the register's value; writes
//! change only those lanes (reserved bits stay 0). `UARTDR` pops on a read
//! and transmits on a write only when the access covers its low byte. Reads
//! of write-only `UARTICR`, of reserved and of test offsets return 0; writes
//! to read-only and reserved offsets are ignored. No offset, size or value
//! can make this code panic.
//!
//! # Locking and the backend
//!
//! The registers sit behind one spin lock. [`UartBackend::set_irq`] is
//! called **with the lock held**, right after the change that moved the
//! level, so the levels a backend sees are in the order the changes
//! happened even when a vCPU and the console input path race (calling it
//! after unlocking could deliver a stale level last and leave the line
//! stuck). So `set_irq` must be short and must not call back into this
//! `Pl011` (the lock is not reentrant): setting a virtual GIC line and
//! kicking a pCPU is fine. [`UartBackend::tx`] is called **after** the lock
//! is released, since printing a completed line may wait for the physical
//! UART; the writing vCPU resumes only after `tx` returns, so its bytes
//! keep their order.

use crate::mmio::MmioDevice;
use spin::Mutex;

/// What the UART is connected to, supplied by the hypervisor.
pub trait UartBackend: Sync {
    /// A byte the guest transmitted (the hypervisor line-buffers it into the
    /// VM's console). Called without the UART's lock held.
    fn tx(&self, byte: u8);
    /// The UART's interrupt output (level): true while (RIS & IMSC) != 0.
    /// Called only when the level changes, with the UART's lock held: must
    /// not call back into the [`Pl011`]. The line starts low.
    fn set_irq(&self, level: bool);
}

/// Receive FIFO depth with `UARTLCR_H.FEN` = 1 (PL011 r1p5).
pub const FIFO_DEPTH: usize = 32;
/// Input held behind a full receive FIFO, as a terminal program's buffer
/// would hold it: a pasted line reaches the guest whole, however fast it
/// arrives, and moves into the FIFO as the guest reads. Beyond this, input
/// is refused (the console drops it).
pub const RX_BACKLOG: usize = 1024;

// Register offsets (TRM table 3-1).
const DR: u32 = 0x000;
const RSR_ECR: u32 = 0x004;
const FR: u32 = 0x018;
const ILPR: u32 = 0x020;
const IBRD: u32 = 0x024;
const FBRD: u32 = 0x028;
const LCR_H: u32 = 0x02c;
const CR: u32 = 0x030;
const IFLS: u32 = 0x034;
const IMSC: u32 = 0x038;
const RIS: u32 = 0x03c;
const MIS: u32 = 0x040;
const ICR: u32 = 0x044;
const DMACR: u32 = 0x048;
const PERIPH_ID0: u32 = 0xfe0;

/// `UARTPeriphID0-3` then `UARTPCellID0-3`, at 0xFE0-0xFFC.
const ID: [u32; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

// UARTFR.
const FR_CTS: u32 = 1 << 0;
const FR_DSR: u32 = 1 << 1;
const FR_DCD: u32 = 1 << 2;
const FR_RXFE: u32 = 1 << 4;
const FR_RXFF: u32 = 1 << 6;
const FR_TXFE: u32 = 1 << 7;

/// UARTRSR.OE.
const RSR_OE: u32 = 1 << 3;
/// UARTLCR_H.FEN.
const LCR_H_FEN: u32 = 1 << 4;
/// UARTCR.LBE.
const CR_LBE: u32 = 1 << 7;

// Interrupt bits, shared by UARTIMSC, UARTRIS, UARTMIS and UARTICR.
const INT_RX: u32 = 1 << 4;
const INT_TX: u32 = 1 << 5;
const INT_RT: u32 = 1 << 6;
const INT_OE: u32 = 1 << 10;
const INT_ALL: u32 = 0x7ff;

// Implemented bits of the read/write registers.
const ILPR_MASK: u32 = 0xff;
const IBRD_MASK: u32 = 0xffff;
const FBRD_MASK: u32 = 0x3f;
const LCR_H_MASK: u32 = 0xff;
/// CTSEn..LBE, SIRLP, SIREN, UARTEN; bits 6:3 are reserved.
const CR_MASK: u32 = 0xff87;
const IFLS_MASK: u32 = 0x3f;
const DMACR_MASK: u32 = 0x7;

const CR_RESET: u32 = 0x300; // TXE | RXE
const IFLS_RESET: u32 = 0x12; // both FIFOs at 1/2

struct Regs {
    rx: [u8; FIFO_DEPTH],
    /// Index in `rx` of the oldest byte.
    rx_head: usize,
    rx_len: usize,
    backlog: [u8; RX_BACKLOG],
    backlog_head: usize,
    backlog_len: usize,
    rsr: u32,
    ilpr: u32,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    /// The latched raw interrupt bits (RX, RT, OE); TXRIS is always set and
    /// not stored.
    ris: u32,
    dmacr: u32,
    /// The level last given to `set_irq`.
    irq: bool,
}

impl Regs {
    const RESET: Regs = Regs {
        rx: [0; FIFO_DEPTH],
        rx_head: 0,
        rx_len: 0,
        backlog: [0; RX_BACKLOG],
        backlog_head: 0,
        backlog_len: 0,
        rsr: 0,
        ilpr: 0,
        ibrd: 0,
        fbrd: 0,
        lcr_h: 0,
        cr: CR_RESET,
        ifls: IFLS_RESET,
        imsc: 0,
        ris: 0,
        dmacr: 0,
        irq: false,
    };

    fn rx_capacity(&self) -> usize {
        if self.lcr_h & LCR_H_FEN != 0 {
            FIFO_DEPTH
        } else {
            1
        }
    }

    /// The fill level at which RXRIS is raised (UARTIFLS.RXIFLSEL).
    fn rx_trigger(&self) -> usize {
        if self.lcr_h & LCR_H_FEN == 0 {
            return 1;
        }
        match (self.ifls >> 3) & 7 {
            0 => FIFO_DEPTH / 8,
            1 => FIFO_DEPTH / 4,
            3 => FIFO_DEPTH * 3 / 4,
            4 => FIFO_DEPTH * 7 / 8,
            _ => FIFO_DEPTH / 2, // 0b010, and the reserved encodings
        }
    }

    fn rx_at_trigger(&self) -> bool {
        self.rx_len >= self.rx_trigger()
    }

    fn raw_status(&self) -> u32 {
        self.ris | INT_TX
    }

    fn level(&self) -> bool {
        self.raw_status() & self.imsc != 0
    }

    fn flags(&self) -> u32 {
        let mut fr = FR_TXFE | FR_DCD | FR_DSR | FR_CTS;
        if self.rx_len == 0 {
            fr |= FR_RXFE;
        }
        if self.rx_len >= self.rx_capacity() {
            fr |= FR_RXFF;
        }
        fr
    }

    /// Queues what fits of `bytes` in the FIFO, then in the backlog (in
    /// order: nothing enters the FIFO while the backlog holds bytes);
    /// returns how many were taken.
    fn receive(&mut self, bytes: &[u8]) -> usize {
        self.refill();
        let mut taken = 0;
        if self.backlog_len == 0 {
            taken = bytes.len().min(self.rx_capacity().saturating_sub(self.rx_len));
            self.fifo_push(&bytes[..taken]);
        }
        let rest = &bytes[taken..];
        let n = rest.len().min(RX_BACKLOG - self.backlog_len);
        for &b in &rest[..n] {
            self.backlog[(self.backlog_head + self.backlog_len) % RX_BACKLOG] = b;
            self.backlog_len += 1;
        }
        taken + n
    }

    fn fifo_push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.rx[(self.rx_head + self.rx_len) % FIFO_DEPTH] = b;
            self.rx_len += 1;
        }
        if !bytes.is_empty() {
            self.ris |= INT_RT;
            if self.rx_at_trigger() {
                self.ris |= INT_RX;
            }
        }
    }

    /// Moves what the FIFO has room for from the backlog.
    fn refill(&mut self) {
        while self.backlog_len > 0 && self.rx_len < self.rx_capacity() {
            let b = self.backlog[self.backlog_head];
            self.backlog_head = (self.backlog_head + 1) % RX_BACKLOG;
            self.backlog_len -= 1;
            self.fifo_push(&[b]);
        }
    }

    fn pop(&mut self) -> u32 {
        if self.rx_len == 0 {
            return 0;
        }
        let b = self.rx[self.rx_head];
        self.rx_head = (self.rx_head + 1) % FIFO_DEPTH;
        self.rx_len -= 1;
        if !self.rx_at_trigger() {
            self.ris &= !INT_RX;
        }
        if self.rx_len == 0 {
            self.ris &= !INT_RT;
        }
        self.refill();
        b as u32
    }

    /// After a change of the trigger (UARTIFLS, or FEN in UARTLCR_H): the
    /// fill level may now be at or above it, or below it.
    fn trigger_changed(&mut self, was_at_trigger: bool) {
        if !self.rx_at_trigger() {
            self.ris &= !INT_RX;
        } else if !was_at_trigger {
            self.ris |= INT_RX;
        }
    }

    /// The register at `reg` (a multiple of 4). `pops`: the access covers
    /// UARTDR's data byte.
    fn read(&mut self, reg: u32, pops: bool) -> u32 {
        match reg {
            DR if pops => self.pop(),
            RSR_ECR => self.rsr,
            FR => self.flags(),
            ILPR => self.ilpr,
            IBRD => self.ibrd,
            FBRD => self.fbrd,
            LCR_H => self.lcr_h,
            CR => self.cr,
            IFLS => self.ifls,
            IMSC => self.imsc,
            RIS => self.raw_status(),
            MIS => self.raw_status() & self.imsc,
            DMACR => self.dmacr,
            0xfe0..=0xffc => ID[((reg - PERIPH_ID0) / 4) as usize],
            _ => 0, // UARTICR (write-only), reserved, test registers
        }
    }

    /// Writes the byte lanes `lanes` of the register at `reg` (a multiple of
    /// 4) with `value` (already shifted into those lanes). Returns a byte to
    /// transmit.
    fn write(&mut self, reg: u32, value: u32, lanes: u32) -> Option<u8> {
        let merge = |old: u32, implemented: u32| ((old & !lanes) | (value & lanes)) & implemented;
        match reg {
            DR if lanes & 0xff != 0 => {
                let byte = value as u8;
                if self.cr & CR_LBE == 0 {
                    return Some(byte);
                }
                // Looped back into the FIFO itself (the backlog is the
                // console's): a full FIFO overruns, as on the hardware.
                if self.backlog_len == 0 && self.rx_len < self.rx_capacity() {
                    self.fifo_push(&[byte]);
                } else {
                    self.rsr |= RSR_OE;
                    self.ris |= INT_OE;
                }
            }
            RSR_ECR => self.rsr = 0,
            ILPR => self.ilpr = merge(self.ilpr, ILPR_MASK),
            IBRD => self.ibrd = merge(self.ibrd, IBRD_MASK),
            FBRD => self.fbrd = merge(self.fbrd, FBRD_MASK),
            LCR_H => {
                let was = self.rx_at_trigger();
                self.lcr_h = merge(self.lcr_h, LCR_H_MASK);
                self.trigger_changed(was);
                self.refill();
            }
            CR => self.cr = merge(self.cr, CR_MASK),
            IFLS => {
                let was = self.rx_at_trigger();
                self.ifls = merge(self.ifls, IFLS_MASK);
                self.trigger_changed(was);
            }
            IMSC => self.imsc = merge(self.imsc, INT_ALL),
            ICR => self.ris &= !(value & lanes & INT_ALL),
            DMACR => self.dmacr = merge(self.dmacr, DMACR_MASK),
            _ => {} // UARTDR's error lanes, read-only, reserved, test, IDs
        }
        None
    }
}

/// The byte lanes an access of `size` bytes covers, before shifting.
fn size_mask(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    }
}

/// One emulated PL011. See the module documentation.
pub struct Pl011<B: UartBackend> {
    regs: Mutex<Regs>,
    backend: B,
}

impl<B: UartBackend> Pl011<B> {
    /// A UART in its reset state; its interrupt line is taken to be low.
    pub const fn new(backend: B) -> Self {
        Self { regs: Mutex::new(Regs::RESET), backend }
    }

    /// Input from the physical console for this VM; returns how many bytes
    /// it took: what fits in the receive FIFO (32 entries, or 1 when
    /// `UARTLCR_H.FEN` = 0), then up to [`RX_BACKLOG`] more, which enter the
    /// FIFO as the guest reads. The rest is refused.
    pub fn push_rx(&self, bytes: &[u8]) -> usize {
        let mut r = self.regs.lock();
        let n = r.receive(bytes);
        self.sync_irq(&mut r);
        n
    }

    /// Back to the reset state (a VM reset): registers, an empty receive
    /// FIFO, the line lowered if it was high.
    pub fn reset(&self) {
        let mut r = self.regs.lock();
        let irq = r.irq;
        *r = Regs::RESET;
        r.irq = irq;
        self.sync_irq(&mut r);
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Tells the backend if the interrupt level moved. Called with the lock
    /// held (see the module documentation).
    fn sync_irq(&self, r: &mut Regs) {
        let level = r.level();
        if level != r.irq {
            r.irq = level;
            self.backend.set_irq(level);
        }
    }
}

impl<B: UartBackend> MmioDevice for Pl011<B> {
    fn read(&self, _vcpu: u32, offset: u32, size: u8) -> u32 {
        let shift = (offset & 3) * 8;
        let mut r = self.regs.lock();
        let v = r.read(offset & !3, shift == 0);
        self.sync_irq(&mut r);
        (v >> shift) & size_mask(size)
    }

    fn write(&self, _vcpu: u32, offset: u32, size: u8, value: u32) {
        let shift = (offset & 3) * 8;
        let lanes = size_mask(size) << shift;
        let tx = {
            let mut r = self.regs.lock();
            let tx = r.write(offset & !3, value << shift, lanes);
            self.sync_irq(&mut r);
            tx
        };
        if let Some(byte) = tx {
            self.backend.tx(byte);
        }
    }
}

#[cfg(test)]
#[path = "pl011_tests.rs"]
mod tests;

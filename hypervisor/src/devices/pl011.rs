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

    /// Queues what fits of `bytes`; returns how many did.
    fn receive(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.rx_capacity().saturating_sub(self.rx_len));
        for &b in &bytes[..n] {
            self.rx[(self.rx_head + self.rx_len) % FIFO_DEPTH] = b;
            self.rx_len += 1;
        }
        if n > 0 {
            self.ris |= INT_RT;
            if self.rx_at_trigger() {
                self.ris |= INT_RX;
            }
        }
        n
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
                if self.receive(&[byte]) == 0 {
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
    /// fit in the receive FIFO (32 entries, or 1 when `UARTLCR_H.FEN` = 0).
    /// The caller keeps the rest and offers them again later.
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
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    #[derive(Default)]
    struct Fake {
        tx: StdMutex<Vec<u8>>,
        irqs: StdMutex<Vec<bool>>,
    }

    impl UartBackend for Fake {
        fn tx(&self, byte: u8) {
            self.tx.lock().unwrap().push(byte);
        }
        fn set_irq(&self, level: bool) {
            self.irqs.lock().unwrap().push(level);
        }
    }

    type Uart = Pl011<Fake>;

    fn uart() -> Uart {
        Pl011::new(Fake::default())
    }

    fn rd(u: &Uart, off: u32) -> u32 {
        u.read(0, off, 4)
    }
    fn wr(u: &Uart, off: u32, v: u32) {
        u.write(0, off, 4, v)
    }
    // Linux's default accessors (UPIO_MEM): readw/writew.
    fn rdw(u: &Uart, off: u32) -> u32 {
        u.read(0, off, 2)
    }
    fn wrw(u: &Uart, off: u32, v: u32) {
        u.write(0, off, 2, v)
    }
    fn irq(u: &Uart) -> bool {
        u.backend().irqs.lock().unwrap().last().copied().unwrap_or(false)
    }
    fn irq_log(u: &Uart) -> Vec<bool> {
        u.backend().irqs.lock().unwrap().clone()
    }
    fn sent(u: &Uart) -> Vec<u8> {
        u.backend().tx.lock().unwrap().clone()
    }

    const UARTEN: u32 = 1;
    const TXE: u32 = 1 << 8;
    const RXE: u32 = 1 << 9;
    const WLEN_8: u32 = 3 << 5;

    /// A UART as Linux leaves it after `pl011_startup` and `set_termios`.
    fn started() -> Uart {
        let u = uart();
        wrw(&u, LCR_H, WLEN_8 | LCR_H_FEN);
        wrw(&u, CR, UARTEN | TXE | RXE);
        wrw(&u, IMSC, INT_RX | INT_RT);
        u
    }

    #[test]
    fn identification_registers() {
        let u = uart();
        let id: Vec<u32> = (0xfe0..0x1000).step_by(4).map(|o| rd(&u, o)).collect();
        assert_eq!(id, [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
        // As Linux's AMBA bus assembles them.
        let pid = (0..4).fold(0, |a, i| a | (rd(&u, 0xfe0 + 4 * i) & 0xff) << (8 * i));
        let cid = (0..4).fold(0, |a, i| a | (rd(&u, 0xff0 + 4 * i) & 0xff) << (8 * i));
        assert_eq!((pid, cid), (0x0014_1011, 0xb105_f00d));
        assert_eq!(pid & 0x000f_ffff, 0x0004_1011, "matches amba-pl011's id table");
        // Byte and halfword reads agree; writes change nothing.
        assert_eq!(u.read(0, 0xff0, 1), 0x0d);
        assert_eq!(u.read(0, 0xffc, 2), 0xb1);
        wr(&u, 0xfe0, 0xffff_ffff);
        assert_eq!(rd(&u, 0xfe0), 0x11);
        assert_eq!(rd(&u, 0xfd0), 0, "reserved for future IDs");
    }

    #[test]
    fn reset_values() {
        let u = uart();
        assert_eq!(rd(&u, CR), 0x300);
        assert_eq!(rd(&u, IFLS), 0x12);
        assert_eq!(rd(&u, FR), FR_TXFE | FR_RXFE | FR_DCD | FR_DSR | FR_CTS);
        assert_eq!(rd(&u, RIS), INT_TX, "the empty TX FIFO is below its level");
        assert_eq!((rd(&u, IMSC), rd(&u, MIS), rd(&u, LCR_H), rd(&u, IBRD)), (0, 0, 0, 0));
        assert!(irq_log(&u).is_empty(), "the line starts low and nothing moved it");
    }

    #[test]
    fn linux_earlycon_probe_and_startup() {
        let u = uart();
        // earlycon=pl011: writeb to DR before CR.UARTEN, polls FR.TXFF/BUSY.
        for &b in b"early" {
            assert_eq!(rd(&u, FR) & (1 << 5 | 1 << 3), 0);
            u.write(0, DR, 1, b as u32);
        }
        assert_eq!(sent(&u), b"early");

        // pl011_hwinit: clear errors and RX interrupts, save IMSC, enable RX.
        wrw(&u, ICR, INT_OE | 0x380 | INT_RT | INT_RX);
        assert_eq!(rdw(&u, IMSC), 0);
        wrw(&u, IMSC, INT_RT | INT_RX);
        // pl011_startup.
        wrw(&u, IFLS, 0x12);
        let cr = rdw(&u, CR) & (1 << 11 | 1 << 10);
        wrw(&u, CR, cr | UARTEN | RXE | TXE);
        // set_termios: CR off, divisors for 115200 from 24 MHz, LCR_H.
        let old_cr = rdw(&u, CR);
        wrw(&u, CR, 0);
        let quot = (24_000_000 * 4 + 115_200 / 2) / 115_200;
        wrw(&u, FBRD, quot & 0x3f);
        wrw(&u, IBRD, quot >> 6);
        wrw(&u, LCR_H, WLEN_8 | LCR_H_FEN);
        wrw(&u, CR, old_cr);
        assert_eq!((rdw(&u, IBRD), rdw(&u, FBRD), rdw(&u, LCR_H)), (quot >> 6, quot & 0x3f, 0x70));
        assert_eq!(rdw(&u, CR), UARTEN | TXE | RXE);
        // pl011_enable_interrupts: clear RX, drain, unmask RX and timeout.
        wrw(&u, ICR, INT_RT | INT_RX);
        assert_ne!(rdw(&u, FR) & FR_RXFE, 0);
        wrw(&u, IMSC, INT_RT | INT_RX);
        assert!(!irq(&u), "nothing to report yet");

        // Unmasking TX raises the line at once: the FIFO is below its level.
        wrw(&u, IMSC, INT_RX | INT_RT | INT_TX);
        assert!(irq(&u));
        assert_eq!(rdw(&u, MIS), INT_TX);
        // pl011_tx_chars from the interrupt: writes DR, acks nothing for TX.
        for &b in b"hello" {
            wrw(&u, DR, b as u32);
        }
        assert_eq!(sent(&u), b"earlyhello");
        assert_eq!(rdw(&u, RIS) & INT_TX, INT_TX, "TXRIS is back after the writes");
        assert!(irq(&u), "still high: more room to send");
        // Out of data: pl011_stop_tx masks TXIM.
        wrw(&u, IMSC, INT_RX | INT_RT);
        assert_eq!(irq_log(&u), [true, false]);
        // The console path waits for !BUSY and TXFE.
        assert_eq!(rdw(&u, FR) & (FR_TXFE | 1 << 3), FR_TXFE);
    }

    #[test]
    fn receive_two_bytes() {
        let u = started();
        assert_eq!(u.push_rx(b"ab"), 2);
        assert_eq!(rdw(&u, FR) & FR_RXFE, 0);
        assert_eq!(rdw(&u, RIS), INT_TX | INT_RT, "2 < 16: timeout only");
        assert_eq!(rdw(&u, MIS), INT_RT);
        assert!(irq(&u));
        assert_eq!(rdw(&u, DR), b'a' as u32);
        assert!(irq(&u), "data left");
        assert_eq!(rdw(&u, DR), b'b' as u32);
        assert_ne!(rdw(&u, FR) & FR_RXFE, 0);
        assert_eq!(rdw(&u, RIS), INT_TX);
        assert_eq!(irq_log(&u), [true, false]);
        assert_eq!(rdw(&u, DR), 0, "an empty FIFO reads 0");
        assert_eq!(irq_log(&u), [true, false]);
    }

    #[test]
    fn receive_trigger_level() {
        let u = started();
        wr(&u, IFLS, 0); // RX at 1/8 = 4 entries
        assert_eq!(u.push_rx(b"abc"), 3);
        assert_eq!(rd(&u, RIS) & INT_RX, 0);
        assert_eq!(u.push_rx(b"d"), 1);
        assert_eq!(rd(&u, RIS) & INT_RX, INT_RX);
        assert_eq!(rd(&u, DR), b'a' as u32);
        assert_eq!(rd(&u, RIS) & (INT_RX | INT_RT), INT_RT, "below the level again");
        // Lowering the level below the fill raises RXRIS; raising it clears.
        wr(&u, IFLS, 0x12);
        assert_eq!(rd(&u, RIS) & INT_RX, 0);
        wr(&u, IFLS, 0);
        assert_eq!(rd(&u, RIS) & INT_RX, 0, "3 < 4");
        u.push_rx(b"e");
        assert_eq!(rd(&u, RIS) & INT_RX, INT_RX);
        wr(&u, IFLS, 0x12);
        assert_eq!(rd(&u, RIS) & INT_RX, 0);
        wr(&u, IFLS, 0);
        assert_eq!(rd(&u, RIS) & INT_RX, INT_RX, "4 >= 4 again");
        // Every level, and a reserved encoding.
        for (sel, level) in [(0, 4), (1, 8), (2, 16), (3, 24), (4, 28), (7, 16)] {
            let u = started();
            wr(&u, IFLS, sel << 3);
            u.push_rx(&vec![b'x'; level - 1]);
            assert_eq!(rd(&u, RIS) & INT_RX, 0, "RXIFLSEL {sel}");
            u.push_rx(b"x");
            assert_eq!(rd(&u, RIS) & INT_RX, INT_RX, "RXIFLSEL {sel}");
        }
    }

    #[test]
    fn full_fifo_refuses_and_keeps_order() {
        let u = started();
        let input: Vec<u8> = (0..40).collect();
        assert_eq!(u.push_rx(&input), 32);
        assert_ne!(rd(&u, FR) & FR_RXFF, 0);
        assert_eq!(u.push_rx(&input[32..]), 0);
        assert_eq!(rd(&u, DR), 0);
        assert_eq!(rd(&u, FR) & FR_RXFF, 0);
        assert_eq!(u.push_rx(&input[32..]), 1, "one slot free");
        // The ring wraps: the rest comes out in order.
        let mut out = Vec::new();
        while rd(&u, FR) & FR_RXFE == 0 {
            out.push(rd(&u, DR) as u8);
        }
        assert_eq!(out, (1..33).collect::<Vec<u8>>());
        assert_eq!(u.push_rx(&[]), 0);
    }

    #[test]
    fn fifos_disabled_hold_one_byte() {
        let u = uart(); // LCR_H.FEN = 0 at reset
        wr(&u, IMSC, INT_RX);
        assert_eq!(u.push_rx(b"xyz"), 1);
        assert_eq!(rd(&u, FR) & (FR_RXFF | FR_RXFE), FR_RXFF);
        assert_eq!(rd(&u, RIS) & INT_RX, INT_RX, "any data is at the level");
        assert!(irq(&u));
        assert_eq!(u.push_rx(b"yz"), 0);
        assert_eq!(rd(&u, DR), b'x' as u32);
        assert!(!irq(&u));
        assert_eq!(u.push_rx(b"yz"), 1);
        // Turning FIFOs on makes room; turning them off keeps what is queued.
        wr(&u, LCR_H, LCR_H_FEN);
        assert_eq!(u.push_rx(b"z123"), 4);
        wr(&u, LCR_H, 0);
        assert_eq!(u.push_rx(b"4"), 0);
        let mut out = Vec::new();
        while rd(&u, FR) & FR_RXFE == 0 {
            out.push(rd(&u, DR) as u8);
        }
        assert_eq!(out, b"yz123");
    }

    #[test]
    fn icr_clears_rx_timeout_and_errors_not_tx() {
        let u = started();
        wr(&u, IFLS, 0);
        u.push_rx(b"abcd");
        assert_eq!(rd(&u, RIS), INT_TX | INT_RX | INT_RT);
        assert!(irq(&u));
        wr(&u, ICR, INT_RX | INT_RT);
        assert_eq!(rd(&u, RIS), INT_TX, "cleared although data is queued");
        assert!(!irq(&u));
        u.push_rx(b"e");
        assert_eq!(rd(&u, RIS), INT_TX | INT_RX | INT_RT, "new data raises both again");
        assert!(irq(&u));
        wr(&u, ICR, INT_ALL);
        assert_eq!(rd(&u, RIS), INT_TX, "TXIC cannot clear an empty FIFO's TXRIS");
        assert_eq!(rd(&u, ICR), 0, "write-only");
        // Only the written bits.
        u.push_rx(b"f");
        wr(&u, ICR, INT_RX);
        assert_eq!(rd(&u, RIS), INT_TX | INT_RT);
        // Halfword write in the upper lanes clears nothing.
        u.write(0, ICR + 2, 2, 0xffff);
        assert_eq!(rd(&u, RIS), INT_TX | INT_RT);
        assert_eq!(irq_log(&u), [true, false, true, false, true]);
    }

    #[test]
    fn imsc_masks_the_line() {
        let u = started();
        wr(&u, IMSC, 0);
        u.push_rx(b"a");
        assert_eq!((rd(&u, RIS), rd(&u, MIS)), (INT_TX | INT_RT, 0));
        assert!(irq_log(&u).is_empty());
        wr(&u, IMSC, INT_RX);
        assert!(irq_log(&u).is_empty(), "1 < 16");
        wr(&u, IMSC, INT_RT);
        assert_eq!(rd(&u, MIS), INT_RT);
        wr(&u, IMSC, INT_RT | INT_RX); // still high: no new call
        wr(&u, IMSC, 0);
        wr(&u, IMSC, INT_TX);
        wr(&u, IMSC, INT_ALL);
        wr(&u, IMSC, 0xffff_ffff);
        assert_eq!(rd(&u, IMSC), INT_ALL, "11 bits");
        rd(&u, DR);
        assert_eq!(irq_log(&u), [true, false, true], "TXRIS keeps it high");
        wr(&u, IMSC, 0);
        assert_eq!(irq_log(&u), [true, false, true, false]);
    }

    #[test]
    fn loopback_and_overrun() {
        let u = started();
        wr(&u, CR, UARTEN | TXE | RXE | CR_LBE);
        for b in 0..33u32 {
            wr(&u, DR, b);
        }
        assert!(sent(&u).is_empty(), "looped back, not sent");
        assert_eq!(rd(&u, RSR_ECR), RSR_OE);
        assert_eq!(rd(&u, RIS), INT_TX | INT_RX | INT_RT | INT_OE);
        assert_eq!(rd(&u, DR), 0);
        assert_eq!(rd(&u, DR), 1);
        wr(&u, RSR_ECR, 0);
        assert_eq!(rd(&u, RSR_ECR), 0);
        assert_eq!(rd(&u, RIS) & INT_OE, INT_OE, "ECR does not touch RIS");
        wr(&u, ICR, INT_OE);
        assert_eq!(rd(&u, RIS) & INT_OE, 0);
        wr(&u, CR, UARTEN | TXE | RXE);
        wr(&u, DR, b'!' as u32);
        assert_eq!(sent(&u), b"!");
    }

    #[test]
    fn byte_and_halfword_lanes() {
        let u = uart();
        // A byte write to CR's high byte changes only bits 15:8.
        wr(&u, CR, UARTEN);
        u.write(0, CR + 1, 1, 0x0b); // RTS | RXE | TXE
        assert_eq!(rd(&u, CR), 0x0b01);
        u.write(0, CR + 2, 2, 0xffff);
        assert_eq!(rd(&u, CR), 0x0b01, "bits 31:16 are reserved");
        assert_eq!(u.read(0, CR + 1, 1), 0x0b);
        assert_eq!(u.read(0, CR + 2, 2), 0);
        wr(&u, CR, 0xffff_ffff);
        assert_eq!(rd(&u, CR), CR_MASK);
        wr(&u, CR, UARTEN | TXE | RXE); // LBE off again

        // Only an access to DR's low byte transmits or pops.
        u.write(0, DR + 1, 1, b'x' as u32);
        u.write(0, DR + 2, 2, b'y' as u32);
        assert!(sent(&u).is_empty());
        u.write(0, DR, 4, 0x1234_5600 | b'z' as u32);
        assert_eq!(sent(&u), b"z");
        u.push_rx(b"q");
        assert_eq!(u.read(0, DR + 1, 1), 0, "error bits");
        assert_eq!(u.read(0, DR + 2, 2), 0);
        assert_eq!(rd(&u, FR) & FR_RXFE, 0, "not popped");
        assert_eq!(u.read(0, DR, 1), b'q' as u32);
        assert_ne!(rd(&u, FR) & FR_RXFE, 0);
        // Widths of the stored registers.
        for (reg, mask) in [
            (ILPR, ILPR_MASK),
            (IBRD, IBRD_MASK),
            (FBRD, FBRD_MASK),
            (LCR_H, LCR_H_MASK),
            (IFLS, IFLS_MASK),
            (DMACR, DMACR_MASK),
        ] {
            wr(&u, reg, 0xffff_ffff);
            assert_eq!(rd(&u, reg), mask, "{reg:#x}");
            u.write(0, reg, 1, 0);
            assert_eq!(rd(&u, reg), mask & !0xff, "{reg:#x}");
        }
        // Read-only registers ignore writes.
        for reg in [FR, RIS, MIS] {
            let before = rd(&u, reg);
            wr(&u, reg, 0xffff_ffff);
            assert_eq!(rd(&u, reg), before, "{reg:#x}");
        }
    }

    #[test]
    fn reset_restores_and_lowers_the_line() {
        let u = started();
        wr(&u, IBRD, 13);
        u.push_rx(b"abc");
        assert!(irq(&u));
        u.reset();
        assert!(!irq(&u));
        assert_eq!((rd(&u, CR), rd(&u, IFLS), rd(&u, IBRD), rd(&u, IMSC)), (0x300, 0x12, 0, 0));
        assert_ne!(rd(&u, FR) & FR_RXFE, 0);
        u.reset();
        assert_eq!(irq_log(&u), [true, false]);
    }

    /// A small deterministic generator (xorshift32).
    struct Rng(u32);
    impl Rng {
        fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            self.0
        }
    }

    /// Checks the invariants that hold after any sequence of accesses.
    fn check_consistent(u: &Uart) {
        let log = irq_log(u);
        assert!(log.windows(2).all(|w| w[0] != w[1]), "set_irq only on changes");
        let ris = rd(u, RIS);
        let imsc = rd(u, IMSC);
        assert_eq!(ris & INT_TX, INT_TX);
        assert_eq!(rd(u, MIS), ris & imsc);
        assert_eq!(irq(u), ris & imsc != 0, "the line follows MIS");
        let fr = rd(u, FR);
        assert_eq!(fr & (1 << 5 | 1 << 3), 0, "TXFF and BUSY never set");
    }

    #[test]
    fn hostile_accesses_never_panic() {
        let u = uart();
        let mut rng = Rng(0x2545_f491);
        for round in 0..4 {
            for offset in 0..0x1000u32 {
                for size in [1u8, 2, 4] {
                    if !offset.is_multiple_of(size as u32) {
                        continue;
                    }
                    let v = rng.next();
                    if round % 2 == 0 {
                        u.write(1, offset, size, v);
                    }
                    let r = u.read(1, offset, size);
                    assert!(r <= size_mask(size), "{offset:#x}/{size}: {r:#x} wider than the access");
                    if v.is_multiple_of(7) {
                        let n = (v >> 8) as usize % 40;
                        assert!(u.push_rx(&vec![v as u8; n]) <= n);
                    }
                }
            }
            check_consistent(&u);
        }
        // Outside the contract (the bus never sends these), still no panic.
        for offset in [0x1000, 0xffff_fffc, 0xffff_ffff, 0x8000_0001] {
            for size in [0u8, 1, 2, 3, 4, 8, 255] {
                u.write(0, offset, size, u32::MAX);
                u.read(0, offset, size);
                u.write(0, offset & 0xfff, size, u32::MAX);
                u.read(0, offset & 0xfff, size);
            }
        }
        check_consistent(&u);
    }

    #[test]
    fn concurrent_input_and_reads_lose_nothing() {
        let u = started();
        let input: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let out = std::thread::scope(|s| {
            s.spawn(|| {
                let mut rest = &input[..];
                while !rest.is_empty() {
                    let n = u.push_rx(&rest[..rest.len().min(7)]);
                    rest = &rest[n..];
                    std::hint::spin_loop();
                }
            });
            let mut out = Vec::with_capacity(input.len());
            while out.len() < input.len() {
                if rdw(&u, FR) & FR_RXFE == 0 {
                    out.push(rdw(&u, DR) as u8);
                }
            }
            out
        });
        assert_eq!(out, input);
        assert_ne!(rd(&u, FR) & FR_RXFE, 0);
        check_consistent(&u);
        assert!(!irq(&u), "drained: the line is low");
    }
}

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
fn a_paste_longer_than_the_fifo_arrives_whole_and_in_order() {
    let u = started();
    // A pasted command line, faster than the guest reads.
    let input: Vec<u8> = (0..200u32).map(|i| b'a' + (i % 26) as u8).collect();
    assert_eq!(u.push_rx(&input), 200, "the FIFO takes 32, the backlog the rest");
    assert_ne!(rd(&u, FR) & FR_RXFF, 0, "the guest sees a full FIFO");
    assert_eq!(u.push_rx(b"!"), 1, "more input queues behind");
    let mut out = Vec::new();
    while rd(&u, FR) & FR_RXFE == 0 {
        out.push(rd(&u, DR) as u8);
    }
    let mut want = input.clone();
    want.push(b'!');
    assert_eq!(out, want);
    assert!(!irq(&u), "drained: the line is low");
}

#[test]
fn input_beyond_the_backlog_is_refused() {
    let u = started();
    let input = vec![b'x'; FIFO_DEPTH + RX_BACKLOG + 10];
    assert_eq!(u.push_rx(&input), FIFO_DEPTH + RX_BACKLOG);
    assert_eq!(u.push_rx(b"y"), 0);
    assert_eq!(rd(&u, DR), b'x' as u32);
    assert_eq!(u.push_rx(b"yz"), 1, "one slot free");
    let mut n = 0;
    let mut last = 0;
    while rd(&u, FR) & FR_RXFE == 0 {
        last = rd(&u, DR) as u8;
        n += 1;
    }
    assert_eq!((n, last), (FIFO_DEPTH + RX_BACKLOG, b'y'));
}

#[test]
fn fifos_disabled_hold_one_byte() {
    let u = uart(); // LCR_H.FEN = 0 at reset
    wr(&u, IMSC, INT_RX);
    assert_eq!(u.push_rx(b"x"), 1);
    assert_eq!(rd(&u, FR) & (FR_RXFF | FR_RXFE), FR_RXFF);
    assert_eq!(rd(&u, RIS) & INT_RX, INT_RX, "any data is at the level");
    assert!(irq(&u));
    assert_eq!(u.push_rx(b"yz"), 2, "behind the one-byte holding register");
    assert_eq!(rd(&u, FR) & (FR_RXFF | FR_RXFE), FR_RXFF);
    assert_eq!(rd(&u, DR), b'x' as u32);
    assert!(irq(&u), "the next byte moved in");
    // Turning FIFOs on moves the backlog in; turning them off keeps what is queued.
    wr(&u, LCR_H, LCR_H_FEN);
    assert_eq!(u.push_rx(b"123"), 3);
    wr(&u, LCR_H, 0);
    assert_eq!(u.push_rx(b"4"), 1);
    let mut out = Vec::new();
    while rd(&u, FR) & FR_RXFE == 0 {
        out.push(rd(&u, DR) as u8);
    }
    assert_eq!(out, b"yz1234");
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

//! The emulated PL011 UART: any register, any size, any value, with
//! console input arriving in between.
//!
//! Oracles, against a reference model of the receive FIFO: bytes come out
//! of UARTDR in the order they went in (typed, or looped back), none
//! invented and none lost unless UARTFR said full; UARTFR.RXFE is set
//! exactly when nothing is queued; a transmitted byte reaches the console
//! once, in order, unless loopback is on; UARTMIS = UARTRIS & UARTIMSC and
//! the interrupt line is high exactly while UARTMIS != 0, each change of
//! level reported once.

use arbitrary::{Arbitrary, Unstructured};
use std::collections::VecDeque;
use std::sync::Mutex;
use tessera::devices::pl011::{Pl011, UartBackend, RX_BACKLOG};
use tessera::mmio::MmioDevice;

#[derive(Default)]
struct Backend {
    tx: Mutex<Vec<u8>>,
    levels: Mutex<Vec<bool>>,
}

impl UartBackend for Backend {
    fn tx(&self, byte: u8) {
        self.tx.lock().unwrap().push(byte);
    }
    fn set_irq(&self, level: bool) {
        self.levels.lock().unwrap().push(level);
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Write { offset: u16, size: u8, value: u32 },
    Read { offset: u16, size: u8 },
    Input(Vec<u8>),
    Reset,
}

const DR: u32 = 0x000;
const FR: u32 = 0x018;
const CR: u32 = 0x030;
const IMSC: u32 = 0x038;
const RIS: u32 = 0x03c;
const MIS: u32 = 0x040;
const FR_RXFE: u32 = 1 << 4;
const FR_RXFF: u32 = 1 << 6;
const CR_LBE: u32 = 1 << 7;

/// Registers are mostly at the start of the window and the IDs at its
/// end: aim there.
fn offset(o: u16, size: u8) -> u32 {
    let o = o as u32;
    let o = if o & 0x8000 != 0 { 0xfe0 + (o & 0x1f) } else { o & 0x4f };
    o & !(size as u32 - 1)
}

fn size(s: u8) -> u8 {
    [1, 2, 4][s as usize % 3]
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let uart = Pl011::new(Backend::default());
    let mut fifo: VecDeque<u8> = VecDeque::new();
    let mut sent: Vec<u8> = Vec::new();
    let mut level = false;
    let mut n = 0;
    while !u.is_empty() {
        let Ok(op) = u.arbitrary::<Op>() else { break };
        let reg = |off| uart.read(0, off, 4);
        match op {
            Op::Write { offset: o, size: s, value } => {
                let s = size(s);
                let off = offset(o, s);
                if off == DR {
                    if reg(CR) & CR_LBE != 0 {
                        if reg(FR) & FR_RXFF == 0 {
                            fifo.push_back(value as u8);
                        }
                    } else {
                        sent.push(value as u8);
                    }
                }
                uart.write(0, off, s, value);
            }
            Op::Read { offset: o, size: s } => {
                let s = size(s);
                let off = offset(o, s);
                let v = uart.read(0, off, s);
                if off == DR {
                    let want = fifo.pop_front().unwrap_or(0) as u32;
                    assert_eq!(v & 0xff, want, "UARTDR gave a byte out of order, or invented one");
                }
            }
            Op::Input(bytes) => {
                let took = uart.push_rx(&bytes);
                assert!(took <= bytes.len());
                fifo.extend(&bytes[..took]);
                if took < bytes.len() {
                    assert_ne!(reg(FR) & FR_RXFF, 0, "input refused while UARTFR said not full");
                    assert!(fifo.len() >= RX_BACKLOG, "input refused with {} bytes queued", fifo.len());
                }
            }
            Op::Reset => {
                uart.reset();
                fifo.clear();
            }
        }
        let fr = reg(FR);
        assert_eq!(fr & FR_RXFE != 0, fifo.is_empty(), "UARTFR.RXFE with {} bytes queued", fifo.len());
        let mis = reg(MIS);
        assert_eq!(mis, reg(RIS) & reg(IMSC), "UARTMIS is UARTRIS & UARTIMSC");
        for l in uart.backend().levels.lock().unwrap().drain(..) {
            assert_ne!(l, level, "the same level reported twice");
            level = l;
        }
        assert_eq!(level, mis != 0, "the line follows UARTMIS");
        assert_eq!(*uart.backend().tx.lock().unwrap(), sent, "transmitted bytes");
        n += 1;
        if n == 512 {
            break;
        }
    }
}

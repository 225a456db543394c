use super::*;
use crate::devices::wiring::leak;
use std::string::String;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::vec::Vec;

/// A UART whose FIFO takes `room` bytes until it is emptied by the test.
#[derive(Default)]
struct FakeUart {
    out: std::sync::Mutex<Vec<u8>>,
    room: AtomicUsize,
}

impl Uart for FakeUart {
    fn try_put(&self, b: u8) -> bool {
        if self.room.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.room.fetch_sub(1, Ordering::AcqRel);
        self.out.lock().unwrap().push(b);
        true
    }
}

impl FakeUart {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }
    fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_string).collect()
    }
}

/// A clock the test moves (1 MHz).
#[derive(Default)]
struct Clock(AtomicU64);

impl Platform for Clock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
    fn frequency(&self) -> u64 {
        1_000_000
    }
    fn this_cpu(&self) -> u32 {
        0
    }
    fn interrupt(&self, _: u32) {}
}

fn hub() -> (&'static Hub, &'static FakeUart, &'static Clock) {
    let uart: &'static FakeUart = leak(FakeUart::default());
    uart.room.store(usize::MAX, Ordering::Release);
    let clock: &'static Clock = leak(Clock(AtomicU64::new(1)));
    (leak(Hub::new(uart, clock)), uart, clock)
}

#[test]
fn lines_are_labelled_and_assembled_across_writes() {
    let (hub, uart, _) = hub();
    let c = VmConsole::new(1, "vm", hub);
    c.write(b"ab");
    c.write(b"c\nde");
    c.write(b"f\n");
    assert_eq!(uart.lines(), ["vm: abc", "vm: def"]);
}

#[test]
fn long_lines_are_split_not_lost() {
    let (hub, uart, _) = hub();
    let c = VmConsole::new(1, "vm", hub);
    let long = "x".repeat(LINE_BYTES + 10);
    c.write(format!("{long}\n").as_bytes());
    let lines = uart.lines();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].len(), "vm: ".len() + LINE_BYTES);
    assert_eq!(lines[1], "vm: xxxxxxxxxx");
}

#[test]
fn a_prompt_shows_after_its_delay_and_the_line_goes_on() {
    let (hub, uart, clock) = hub();
    let c = VmConsole::new(1, "vm", hub);
    c.write(b"# ");
    assert_eq!(uart.text(), "", "a partial line waits");
    clock.0.fetch_add(hub.prompt_age(), Ordering::AcqRel);
    hub.pump();
    assert_eq!(uart.text(), "vm: # ");
    c.write(b"ls\n");
    assert_eq!(uart.text(), "vm: # ls\n", "what the user types continues the prompt's line");
}

#[test]
fn another_consoles_line_ends_an_open_prompt() {
    let (hub, uart, clock) = hub();
    let a = VmConsole::new(1, "a", hub);
    let b = VmConsole::new(2, "b", hub);
    a.write(b"$ ");
    clock.0.fetch_add(hub.prompt_age(), Ordering::AcqRel);
    hub.pump();
    b.write(b"hello\n");
    assert_eq!(uart.text(), "a: $ \nb: hello\n");
}

#[test]
fn guest_bytes_are_filtered() {
    let (hub, uart, _) = hub();
    let c = VmConsole::new(1, "vm", hub);
    c.write(b"x\r\x1b[2Ktessera: fake\n");
    assert_eq!(uart.lines(), ["vm: xtessera: fake"], "the line still carries the VM's label");
}

#[test]
fn a_busy_uart_is_never_waited_for() {
    let (hub, uart, _) = hub();
    uart.room.store(5, Ordering::Release);
    let c = VmConsole::new(1, "vm", hub);
    c.write(b"hello world\n");
    assert_eq!(uart.text(), "vm: h", "the drainer stopped when the FIFO was full");
    uart.room.store(usize::MAX, Ordering::Release);
    hub.pump();
    assert_eq!(uart.text(), "vm: hello world\n", "and went on where it stopped");
}

#[test]
fn a_flooding_console_delays_another_by_one_line_at_most() {
    let (hub, uart, _) = hub();
    uart.room.store(0, Ordering::Release); // nothing goes out while both write
    let flood = VmConsole::new(1, "flood", hub);
    let quiet = VmConsole::new(2, "quiet", hub);
    for _ in 0..40 {
        flood.write(b"0123456789012345678901234567890123456789\n");
    }
    quiet.write(b"tick\n");
    uart.room.store(usize::MAX, Ordering::Release);
    hub.pump();
    let lines = uart.lines();
    let at = lines.iter().position(|l| l == "quiet: tick").expect("the quiet console's line is printed");
    assert!(at <= 1, "printed after at most one flood line: {lines:?}");
}

#[test]
fn output_beyond_the_ring_is_dropped_counted_and_said_once() {
    let (hub, uart, _) = hub();
    uart.room.store(0, Ordering::Release);
    let c = VmConsole::new(1, "vm", hub);
    let line = [b'z'; 99];
    for _ in 0..100 {
        c.write(&line);
        c.write(b"\n");
    }
    // 10000 bytes written: the first line went to the drainer (which waits
    // for the UART), the ring holds RING_BYTES, the rest is dropped.
    assert_eq!(c.dropped(), 10_000 - 100 - RING_BYTES as u64);
    uart.room.store(usize::MAX, Ordering::Release);
    c.finish();
    let text = uart.text();
    assert_eq!(text.matches("prints faster than the console takes").count(), 1, "{text}");
    assert!(text.contains(&format!("vm console \"vm\": {} bytes of output were dropped", c.dropped())));
    assert!(!text.contains("zz\nzz"), "no line is torn");
}

#[test]
fn the_rate_limit_holds_a_flood_back_and_lets_it_go_later() {
    let (hub, uart, clock) = hub();
    let c = VmConsole::new(1, "vm", hub);
    let line = [b'y'; 99];
    // The burst allowance goes out at once...
    for _ in 0..(BURST_BYTES / 100) {
        c.write(&line);
        c.write(b"\n");
    }
    let printed = uart.lines().len();
    assert_eq!(printed as u64, BURST_BYTES / 100);
    // ... more waits in the ring ...
    c.write(&line);
    c.write(b"\n");
    hub.pump();
    assert_eq!(uart.lines().len(), printed, "over the rate: held back");
    assert!(hub.has_waiting());
    // ... until the console has earned it.
    clock.0.fetch_add(1_000_000 * 100 / RATE_BYTES_PER_SEC + 1, Ordering::AcqRel);
    hub.pump();
    assert_eq!(uart.lines().len(), printed + 1);
    assert!(!hub.has_waiting());
}

#[test]
fn hypervisor_lines_end_a_vms_open_line_first() {
    let (hub, uart, clock) = hub();
    let c = VmConsole::new(1, "vm", hub);
    c.write(b"login: ");
    clock.0.fetch_add(hub.prompt_age(), Ordering::AcqRel);
    hub.pump();
    hub.log(Level::Info, format_args!("vm \"vm\" (id 1): exited, status {}", 0));
    assert_eq!(uart.text(), "vm: login: \ntessera: vm \"vm\" (id 1): exited, status 0\n");
}

#[test]
fn every_vms_consoles_print_with_as_many_vms_as_the_packer_allows() {
    let (hub, uart, clock) = hub();
    let consoles: Vec<_> = (0..MAX_SOURCES as u32).map(|k| VmConsole::new(k + 1, &format!("c{k}"), hub)).collect();
    // Partial lines everywhere (nothing printed yet), then complete them
    // from the last console back: each is printed, none is forgotten.
    for c in &consoles {
        c.write(b"x");
    }
    assert_eq!(uart.text(), "");
    for c in consoles.iter().rev() {
        c.write(b"\n");
    }
    clock.0.fetch_add(hub.prompt_age(), Ordering::AcqRel);
    hub.flush_all();
    let lines = uart.lines();
    assert_eq!(lines.len(), MAX_SOURCES);
    assert!(lines.contains(&format!("c{}: x", MAX_SOURCES - 1)), "the last console printed");
    assert!(!hub.has_waiting());
}

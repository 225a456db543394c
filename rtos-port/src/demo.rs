//! The demo: FreeRTOS tasks in Rust, through the bindgen bindings.
//!
//! - two producers send numbered messages through one queue to a consumer,
//!   which checks that every message of each producer arrives once, in
//!   order, with the right body;
//! - two tasks play ping-pong through a pair of queues (on the SMP kernel
//!   they often sit on different cores: each message is a cross-core wake-up);
//! - a periodic task, the highest priority, is released every `period_ms`
//!   with `xTaskDelayUntil` and measures each release against the virtual
//!   counter: the latency from the tick its release was due on to the moment
//!   it runs (min/avg/max), and the jitter (max - min);
//! - with `entropy=1` and a virtio-mmio device in the DTB, a task reads
//!   entropy from it with the `virtio-drivers` crate over `tessera-guest`'s
//!   `IdentityHal` (opt-in: see `settings`);
//! - with `fault=align|undef|unmapped`, a task makes a bad access: the first
//!   two are the port's to report (the task is suspended and the rest runs
//!   on), the last is an access outside the VM's RAM, which Tessera stops;
//! - with `link=NAME`, a task serves `tessera-chan a` from a Linux VM through
//!   the shared-memory channel NAME ([`crate::link`]): for ever, or for
//!   `link_sessions=N` sessions, then it reports like the others;
//! - a supervisor collects every task's report, checks the port's counters,
//!   prints the verdict and shuts the VM down (TESSERA_VM_SHUTDOWN).
//!
//! Command line (`/chosen/bootargs`): `rounds=` messages per producer,
//! `pingpongs=`, `period_ms=`, `releases=` periodic samples, `warmup_ms=`
//! before the first sample, `fault=`, `entropy=1`, `link=`,
//! `link_sessions=`, `bench=1` for a machine-readable line.

use crate::boot;
use crate::rtos::{self, Queue, Ticks, MAX_DELAY};
use crate::stats::{payload, ticks_to_ns, MinAvgMax, SequenceCheck};
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering::*};
use tessera_guest::println;

const PRODUCERS: u32 = 2;
/// Task priorities (configMAX_PRIORITIES is 8; idle is 0).
const PRIO_SUPERVISOR: u32 = 1;
const PRIO_WORKER: u32 = 2;
const PRIO_CONSUMER: u32 = 3;
const PRIO_PERIODIC: u32 = 6;
const STACK_WORDS: u32 = 1024;

#[derive(Clone, Copy)]
#[repr(C)]
struct Msg {
    producer: u32,
    seq: u32,
    body: u32,
}

/// What a task tells the supervisor when it is done.
#[derive(Clone, Copy)]
#[repr(C)]
struct Report {
    task: Task,
    ok: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
enum Task {
    Producer,
    Consumer,
    Ping,
    Periodic,
    Entropy,
    Link,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Align,
    Undef,
    Unmapped,
}

struct Settings {
    rounds: u32,
    pingpongs: u32,
    period_ms: u32,
    releases: u32,
    warmup_ms: u32,
    fault: Fault,
    bench: bool,
    entropy: Option<usize>,
    /// The channel to serve and the sessions to serve (0: for ever).
    link: Option<(crate::boot::Channel, u32)>,
}

struct App {
    cfg: Settings,
    data: Queue<Msg>,
    ping: Queue<u32>,
    pong: Queue<u32>,
    done: Queue<Report>,
}

/// Written once by `main` before the scheduler starts, read-only after.
struct Once(UnsafeCell<Option<App>>, AtomicBool);

// SAFETY: `set` runs once, before any task exists (so before any `get`);
// afterwards the value is only read. The queues inside are themselves Sync.
unsafe impl Sync for Once {}

impl Once {
    fn set(&self, app: App) {
        assert!(!self.1.swap(true, AcqRel), "the app is set once");
        // SAFETY: the first and only writer, before any reader (see above).
        unsafe { *self.0.get() = Some(app) };
    }

    fn get(&self) -> &App {
        assert!(self.1.load(Acquire), "the app is set before the tasks run");
        // SAFETY: set before the scheduler started; never written again.
        unsafe { (*self.0.get()).as_ref() }.expect("set")
    }
}

static APP: Once = Once(UnsafeCell::new(None), AtomicBool::new(false));
/// Bit n: a demo task ran on core n.
static CORES_USED: AtomicU32 = AtomicU32::new(0);

fn app() -> &'static App {
    APP.get()
}

fn ran_here() {
    CORES_USED.fetch_or(1 << rtos::core(), Relaxed);
}

/// FreeRTOS ticks are milliseconds (configTICK_RATE_HZ = 1000).
fn ms(n: u32) -> Ticks {
    n
}

/// A task's closing line, kept for the supervisor, which prints them all in
/// one fixed order once every task has reported: which task finishes first
/// depends on timing, and the console's order must not.
struct Summary {
    text: UnsafeCell<[u8; 240]>,
    len: AtomicU32,
}

// SAFETY: each summary is written only by its own task, before that task
// reports (a queue send), and read only by the supervisor after it has
// received that report (the queue orders the two).
unsafe impl Sync for Summary {}

static SUMMARIES: [Summary; 5] = [const { Summary { text: UnsafeCell::new([0; 240]), len: AtomicU32::new(0) } }; 5];

impl core::fmt::Write for &Summary {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let len = self.len.load(Relaxed) as usize;
        let n = s.len().min(240 - len);
        // SAFETY: only the owning task writes, before its report (see above).
        unsafe { (&mut *self.text.get())[len..len + n].copy_from_slice(&s.as_bytes()[..n]) };
        self.len.store((len + n) as u32, Release);
        Ok(())
    }
}

/// Keeps `task`'s closing line (see [`Summary`]).
fn summarize(task: Task, line: core::fmt::Arguments<'_>) {
    let _ = core::fmt::Write::write_fmt(&mut &SUMMARIES[task as usize], line);
}

/// Prints the summaries in task order (the supervisor, after every report).
fn print_summaries() {
    for s in &SUMMARIES {
        let len = s.len.load(Acquire) as usize;
        if len > 0 {
            // SAFETY: written before the report the supervisor received.
            let text = unsafe { &(&*s.text.get())[..len] };
            println!("{}", core::str::from_utf8(text).unwrap_or("?"));
        }
    }
}

fn report(task: Task, ok: bool) -> ! {
    app().done.send(&Report { task, ok }, MAX_DELAY);
    rtos::exit()
}

extern "C" fn producer(arg: *mut c_void) {
    let id = arg as usize as u32;
    for seq in 0..app().cfg.rounds {
        app().data.send(&Msg { producer: id, seq, body: payload(id, seq) }, MAX_DELAY);
        ran_here();
        if seq % 16 == 15 {
            rtos::delay(1); // let the other producer interleave
        }
    }
    report(Task::Producer, true)
}

extern "C" fn consumer(_: *mut c_void) {
    let a = app();
    let mut check = SequenceCheck::<{ PRODUCERS as usize }>::new();
    for _ in 0..PRODUCERS * a.cfg.rounds {
        match a.data.receive(ms(10_000)) {
            Some(m) => {
                check.receive(m.producer, m.seq, m.body);
            }
            None => break,
        }
        ran_here();
    }
    let ok = check.complete(a.cfg.rounds);
    if ok {
        summarize(
            Task::Consumer,
            format_args!(
                "queues: {PRODUCERS} producers x {} messages, every one delivered once and in order",
                a.cfg.rounds
            ),
        );
    } else {
        println!(
            "queues: WRONG: {} bad messages, first {:?}; delivered in order {:?} of {}",
            check.errors(),
            check.first_problem(),
            check.delivered(),
            a.cfg.rounds
        );
    }
    report(Task::Consumer, ok)
}

extern "C" fn ping(_: *mut c_void) {
    let a = app();
    let mut ok = true;
    for n in 0..a.cfg.pingpongs {
        a.ping.send(&n, MAX_DELAY);
        ran_here();
        match a.pong.receive(ms(10_000)) {
            Some(v) if v == n + 1 => {}
            got => {
                println!("ping-pong: WRONG: sent {n}, got back {got:?}");
                ok = false;
                break;
            }
        }
    }
    if ok {
        summarize(
            Task::Ping,
            format_args!("ping-pong: {} round trips between two tasks through two queues", a.cfg.pingpongs),
        );
    }
    report(Task::Ping, ok)
}

extern "C" fn pong(_: *mut c_void) {
    let a = app();
    loop {
        if let Some(n) = a.ping.receive(MAX_DELAY) {
            ran_here();
            a.pong.send(&(n + 1), MAX_DELAY);
        }
    }
}

extern "C" fn periodic(_: *mut c_void) {
    let cfg = &app().cfg;
    let freq = rtos::counter_frequency();
    let period = ms(cfg.period_ms.max(1));
    let skip = cfg.warmup_ms / cfg.period_ms.max(1);
    let mut latency = MinAvgMax::new();
    let mut late = 0u32;
    let mut last = rtos::tick_count();
    let mut release = 0u32;
    while latency.count() < cfg.releases {
        rtos::delay_until(&mut last, period);
        let now = rtos::counter();
        ran_here();
        release += 1;
        if release <= skip {
            continue;
        }
        let lat = now.saturating_sub(rtos::tick_to_counter(last));
        if lat >= u64::from(freq / 1000) * u64::from(cfg.period_ms.max(1)) {
            late += 1; // released a whole period or more after it was due
        }
        latency.add(lat);
    }
    let us = |t: Option<u64>| ticks_to_ns(t.unwrap_or(0), freq) / 1000;
    let (min, avg, max) = (latency.min(), latency.avg(), latency.max());
    summarize(Task::Periodic, format_args!(
        "periodic: {} releases every {} ms: release latency min/avg/max = {}/{}/{} us, jitter {} us, {late} late by a period or more",
        latency.count(),
        cfg.period_ms,
        us(min),
        us(avg),
        us(max),
        us(Some(max.unwrap_or(0) - min.unwrap_or(0)))
    ));
    if cfg.bench {
        println!(
            "bench freertos-periodic samples={} min_ticks={} avg_ticks={} max_ticks={} period_ms={} cntfrq={freq}",
            latency.count(),
            min.unwrap_or(0),
            avg.unwrap_or(0),
            max.unwrap_or(0),
            cfg.period_ms
        );
    }
    report(Task::Periodic, true)
}

extern "C" fn entropy(arg: *mut c_void) {
    use core::ptr::NonNull;
    use tessera_guest::virtio_hal::IdentityHal;
    use virtio_drivers::device::rng::VirtIORng;
    use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};

    let base = arg as usize;
    let header = NonNull::new(base as *mut VirtIOHeader).expect("non-null");
    // SAFETY: the virtio-mmio device the DTB names at `base`, used by no one else.
    let ok = match unsafe { MmioTransport::new(header, 0x200) } {
        Err(e) => {
            println!("entropy: WRONG: no virtio device at {base:#x}: {e:?}");
            false
        }
        Ok(t) => match VirtIORng::<IdentityHal, _>::new(t) {
            Err(e) => {
                println!("entropy: WRONG: virtio-rng did not start: {e:?}");
                false
            }
            Ok(mut rng) => {
                let mut buf = [0u8; 64];
                let n = rng.request_entropy(&mut buf).unwrap_or(0);
                let nonzero = buf[..n].iter().filter(|&&b| b != 0).count();
                summarize(
                    Task::Entropy,
                    format_args!("entropy: {n} bytes from the virtio-rng through virtio-drivers, {nonzero} non-zero"),
                );
                // Random bytes are zero 1 time in 256.
                n == buf.len() && nonzero > 56
            }
        },
    };
    report(Task::Entropy, ok)
}

extern "C" fn link_task(_: *mut c_void) {
    if let Some((ch, sessions)) = app().cfg.link {
        crate::link::serve(ch, sessions, |ok| report(Task::Link, ok));
    }
    rtos::exit()
}

extern "C" fn faulty(_: *mut c_void) {
    rtos::delay(ms(20));
    ran_here();
    match app().cfg.fault {
        Fault::Align => {
            let addr = (&raw const CORES_USED) as usize + 1;
            println!("faulty: loading a word from the odd address {addr:#010x}");
            // SAFETY: deliberately not: an unaligned word load, which the
            // CPU refuses with an alignment fault (SCTLR.A is set).
            unsafe { core::arch::asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) _) };
        }
        Fault::Undef => {
            println!("faulty: executing a permanently undefined instruction");
            // SAFETY: deliberately not: UDF raises an undefined-instruction exception.
            unsafe { core::arch::asm!("udf #0") };
        }
        Fault::Unmapped => {
            println!("faulty: loading a word from 0x20000000, outside the VM's RAM");
            // SAFETY: deliberately not: nothing is mapped there at stage 2.
            unsafe { core::arch::asm!("ldr {v}, [{a}]", a = in(reg) 0x2000_0000usize, v = out(reg) _) };
        }
        Fault::None => {}
    }
    println!("faulty: WRONG: the bad access did not fault");
    rtos::exit()
}

extern "C" fn supervisor(_: *mut c_void) {
    let a = app();
    let mut expected = PRODUCERS + 3; // producers, consumer, ping, periodic
    if a.cfg.entropy.is_some() {
        expected += 1;
    }
    if a.cfg.link.is_some() {
        expected += 1;
    }
    let mut failed = 0u32;
    // A task may take as long as its work plus a minute: the periodic task
    // alone needs releases x period (a soak run asks for many minutes).
    let cfg = &a.cfg;
    let patience = 60_000u32.saturating_add(
        cfg.releases.saturating_add(cfg.warmup_ms / cfg.period_ms.max(1)).saturating_mul(cfg.period_ms.max(1)),
    );
    // A link task that serves until told to stop takes as long as its user.
    let wait = if matches!(cfg.link, Some((_, 0))) { MAX_DELAY } else { ms(patience) };
    for _ in 0..expected {
        match a.done.receive(wait) {
            Some(r) if r.ok => {}
            Some(r) => {
                println!("supervisor: task {:?} reported a failure", r.task);
                failed += 1;
            }
            None => {
                println!("supervisor: WRONG: a task did not report within {} s", patience / 1000);
                failed += 1;
                break;
            }
        }
    }
    print_summaries();
    let s = rtos::port_stats();
    let cores = CORES_USED.load(Relaxed);
    println!(
        "port: {} tick interrupts ({} ticks counted late), yield SGIs sent {}, taken per core {:?}, task faults {}",
        s.ulTicks, s.ulLateTicks, s.ulYieldSgisSent, s.ulYieldSgisTaken, s.ulTaskFaults
    );
    let n = rtos::kernel_cores();
    if n > 1 {
        let freq = rtos::counter_frequency();
        println!(
            "port: kernel locks contended {} times, longest wait {} us",
            s.ulLockContended,
            ticks_to_ns(u64::from(s.ulLockWaitMax), freq) / 1000
        );
    }
    let mut on = [0u32; 2];
    let mut k = 0;
    for c in 0..2 {
        if cores & (1 << c) != 0 {
            on[k] = c;
            k += 1;
        }
    }
    println!("cores: the demo's tasks ran on {:?} of this {n}-core kernel", &on[..k]);
    if n > 1 && cores != (1 << n) - 1 {
        println!("supervisor: WRONG: not every core ran a demo task");
        failed += 1;
    }
    let want_faults = u32::from(matches!(a.cfg.fault, Fault::Align | Fault::Undef));
    if s.ulTaskFaults != want_faults {
        println!("supervisor: WRONG: {} task faults, expected {want_faults}", s.ulTaskFaults);
        failed += 1;
    } else if want_faults == 1 {
        println!("fault: the faulting task was reported and suspended; every other task finished");
    }
    if failed == 0 {
        println!("freertos demo: all checks passed; shutting the VM down");
        tessera_guest::shutdown(0)
    } else {
        println!("freertos demo: WRONG: {failed} checks did not pass");
        tessera_guest::shutdown(1)
    }
}

fn settings() -> Settings {
    let fault = match boot::arg("fault") {
        Some("align") => Fault::Align,
        Some("undef") => Fault::Undef,
        Some("unmapped") => Fault::Unmapped,
        _ => Fault::None,
    };
    Settings {
        rounds: boot::arg_u32("rounds", 200),
        pingpongs: boot::arg_u32("pingpongs", 100),
        period_ms: boot::arg_u32("period_ms", 5).max(1),
        releases: boot::arg_u32("releases", 100).max(1),
        warmup_ms: boot::arg_u32("warmup_ms", 0),
        fault,
        bench: boot::arg_u32("bench", 0) == 1,
        // Opt-in: virtio-drivers' register reads may compile to loads with
        // writeback, which Tessera cannot emulate yet (README, "Not yet").
        entropy: if boot::arg_u32("entropy", 0) == 1 { boot::virtio_mmio_base() } else { None },
        link: crate::link::configured(),
    }
}

/// The demo's `main`, called by the port's boot code on core 0 (SVC mode,
/// IRQs masked); its return value would be the VM's exit status.
pub fn main() -> i32 {
    let cores = rtos::kernel_cores();
    let vcpus = tessera_guest::vm_info().map_or(1, |i| i.vcpu_count);
    println!(
        "FreeRTOS {} on Tessera: {cores}-core kernel, {vcpus} vCPU(s), tick {} Hz from the virtual timer (CNTFRQ {} Hz)",
        rtos::kernel_version(),
        1000,
        rtos::counter_frequency()
    );
    if cores > vcpus {
        println!(
            "this binary runs the {cores}-core kernel: give its VM at least {cores} vCPUs (or use freertos-demo-up)"
        );
        return 2;
    }
    let cfg = settings();
    println!(
        "demo: {PRODUCERS} producers x {} messages, {} ping-pongs, {} periodic releases every {} ms{}{}",
        cfg.rounds,
        cfg.pingpongs,
        cfg.releases,
        cfg.period_ms,
        if cfg.entropy.is_some() { ", a virtio-rng" } else { "" },
        match cfg.fault {
            Fault::None => "",
            Fault::Align => ", a task that makes an unaligned access",
            Fault::Undef => ", a task that executes an undefined instruction",
            Fault::Unmapped => ", a task that reads outside the VM's RAM",
        }
    );
    let entropy_base = cfg.entropy;
    let fault = cfg.fault;
    APP.set(App { cfg, data: Queue::new(8), ping: Queue::new(1), pong: Queue::new(1), done: Queue::new(8) });
    rtos::spawn(c"supervisor", STACK_WORDS, PRIO_SUPERVISOR, supervisor, 0);
    rtos::spawn(c"periodic", STACK_WORDS, PRIO_PERIODIC, periodic, 0);
    rtos::spawn(c"consumer", STACK_WORDS, PRIO_CONSUMER, consumer, 0);
    for id in 0..PRODUCERS {
        rtos::spawn(
            if id == 0 { c"producer-0" } else { c"producer-1" },
            STACK_WORDS,
            PRIO_WORKER,
            producer,
            id as usize,
        );
    }
    rtos::spawn(c"ping", STACK_WORDS, PRIO_WORKER, ping, 0);
    rtos::spawn(c"pong", STACK_WORDS, PRIO_WORKER, pong, 0);
    if let Some(base) = entropy_base {
        rtos::spawn(c"entropy", STACK_WORDS, PRIO_WORKER, entropy, base);
    }
    if fault != Fault::None {
        rtos::spawn(c"faulty", STACK_WORDS, PRIO_WORKER, faulty, 0);
    }
    if app().cfg.link.is_some() {
        rtos::spawn(c"link", STACK_WORDS, PRIO_WORKER, link_task, 0);
    }
    rtos::start_scheduler()
}

//! The hypercall dispatcher, with any registers from any VM shape.
//!
//! Oracles: an ID the ABI does not define gets NOT_SUPPORTED and nothing
//! else happens; the console gets exactly the bytes a valid CONSOLE_WRITE
//! names, read from inside the caller's RAM; CPU_ON reaches the VM only for
//! one of its vCPUs and an entry point in its RAM; a doorbell rings only on
//! a channel the caller maps; CONSOLE_READ hands out typed input in order,
//! once, never more than asked and only into the caller's RAM; a result
//! never claims more than four registers.

use crate::ram::{Ram, BASE, SIZE};
use arbitrary::{Arbitrary, Unstructured};
use hypercall_abi::{psci, Error, Function, CONSOLE_READ_MAX, CONSOLE_WRITE_MAX};
use std::sync::OnceLock;
use tessera::addr::Ipa;
use tessera::devices::call_console::CallConsoleInput;
use tessera::hypercall::{dispatch, Action, Caller};
use tessera::mem::GuestMemory;

struct Vm<'a> {
    ram: &'a Ram,
    vcpus: u32,
    index: u32,
    channels: u32,
    channel_count: u32,
    console: Vec<u8>,
    cpu_on: Vec<(u32, u32)>,
    doorbells: Vec<u32>,
    affinity: i32,
    input: CallConsoleInput,
    /// What CONSOLE_READ stored, in order.
    read: Vec<u8>,
}

impl Caller for Vm<'_> {
    fn vm_id(&self) -> u32 {
        1
    }
    fn vcpu_count(&self) -> u32 {
        self.vcpus
    }
    fn vcpu_index(&self) -> u32 {
        self.index
    }
    fn memory(&self) -> &dyn GuestMemory {
        self.ram
    }
    fn console_write(&mut self, bytes: &[u8]) {
        self.console.extend_from_slice(bytes);
    }
    fn console_read(&mut self, ipa: Ipa, out: &mut [u8]) -> Option<usize> {
        // Stored bytes are logged, not written: the patterned RAM is shared
        // by every input.
        let (ram, read) = (self.ram, &mut self.read);
        let store = |b: &[u8]| {
            if ram.contains(ipa, b.len() as u64) {
                read.extend_from_slice(b);
                Ok(())
            } else {
                Err(())
            }
        };
        self.input.read(out, store).ok()
    }
    fn cpu_on(&mut self, index: u32, entry: u32, _context_id: u32) -> i32 {
        assert!(index < self.vcpus, "CPU_ON for vCPU {index} of {}", self.vcpus);
        assert!(self.ram.contains(Ipa(entry as u64), 4), "CPU_ON entry {entry:#x} outside RAM");
        self.cpu_on.push((index, entry));
        psci::SUCCESS
    }
    fn affinity_info(&self, index: u32) -> i32 {
        assert!(index < self.vcpus);
        self.affinity
    }
    fn channels(&self) -> u32 {
        self.channels
    }
    fn ring_doorbell(&mut self, channel: u32) -> u32 {
        assert!(channel < self.channel_count && self.channels & (1 << channel) != 0, "doorbell {channel}");
        self.doorbells.push(channel);
        1
    }
    fn channel_count(&self) -> u32 {
        self.channel_count
    }
    fn set_steal_record(&mut self, ipa: Option<Ipa>) {
        if let Some(ipa) = ipa {
            let size = hypercall_abi::STEAL_TIME_RECORD_SIZE as u64;
            assert!(ipa.raw().is_multiple_of(size) && self.ram.contains(ipa, size), "steal record {ipa:?}");
        }
    }
}

/// A register value: often one that means something.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Value {
    Function(u8),
    InRam(u32),
    Small(u8),
    Raw(u32),
}

impl Value {
    fn get(self) -> u32 {
        match self {
            Value::Function(k) => Function::ALL[k as usize % Function::ALL.len()].id(),
            Value::InRam(off) => (BASE + off as u64 % (SIZE as u64 + 64)) as u32,
            Value::Small(n) => n as u32,
            Value::Raw(v) => v,
        }
    }
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    // The dispatcher only reads guest RAM, so one patterned RAM serves
    // every input.
    static RAM: OnceLock<Ram> = OnceLock::new();
    let ram = RAM.get_or_init(|| {
        let ram = Ram::default();
        let fill: Vec<u8> = (0..SIZE).map(|i| (i * 31 + 7) as u8).collect();
        ram.poke(BASE, &fill);
        ram
    });
    ram.take_log();
    let vcpus = u.int_in_range(1..=64).unwrap_or(1);
    let channel_count = u.int_in_range(0..=16).unwrap_or(0);
    let mut vm = Vm {
        ram,
        vcpus,
        index: u.int_in_range(0..=vcpus - 1).unwrap_or(0),
        channels: u.arbitrary::<u32>().unwrap_or(0) & ((1u64 << channel_count) - 1) as u32,
        channel_count,
        console: Vec::new(),
        cpu_on: Vec::new(),
        doorbells: Vec::new(),
        affinity: u.int_in_range(0..=2).unwrap_or(0),
        input: CallConsoleInput::new(),
        read: Vec::new(),
    };
    // Bytes typed so far (a counter), and how many CONSOLE_READ took.
    let (mut typed, mut taken) = (Vec::new(), 0usize);
    while !u.is_empty() {
        let Ok(regs) = u.arbitrary::<[Value; 8]>() else { break };
        let Ok(keys) = u.arbitrary::<u8>() else { break };
        let chunk: Vec<u8> = (0..keys).map(|i| (typed.len() + i as usize) as u8).collect();
        if let Some(n) = vm.input.push(&chunk) {
            typed.extend_from_slice(&chunk[..n]);
        }
        let r = regs.map(Value::get);
        let (console, cpu_on, doorbells) = (vm.console.len(), vm.cpu_on.len(), vm.doorbells.len());
        let action = dispatch(&mut vm, &r);
        if let Action::Return { count, .. } = action {
            assert!((1..=4).contains(&count), "{count} result registers");
        }
        let f = Function::from_id(r[0]);
        if f.is_none() {
            let unsupported = Error::NotSupported.code() as u32;
            assert_eq!(action, Action::Return { regs: [unsupported, 0, 0, 0], count: 1 });
        }
        let wrote = vm.console.len() - console;
        if f == Some(Function::ConsoleWrite) && action == (Action::Return { regs: [0, r[2], 0, 0], count: 2 }) {
            assert!(r[2] <= CONSOLE_WRITE_MAX);
            assert_eq!(wrote, r[2] as usize);
            let mut want = vec![0; wrote];
            ram.peek(r[1] as u64, &mut want);
            assert_eq!(vm.console[console..], want[..], "the console got the bytes the call names");
        } else {
            assert_eq!(wrote, 0, "console output from a call that did not succeed as CONSOLE_WRITE");
        }
        let got = vm.read.len() - taken;
        if f == Some(Function::ConsoleRead) && action == (Action::Return { regs: [0, got as u32, 0, 0], count: 2 }) {
            assert!(got <= r[2] as usize && r[2] <= CONSOLE_READ_MAX, "read {got} of {}", r[2]);
            assert!(ram.contains(Ipa(r[1] as u64), got as u64), "stored outside RAM");
            assert_eq!(vm.read[taken..], typed[taken..taken + got], "input comes out in order, once");
            taken += got;
        } else {
            assert_eq!(got, 0, "input taken by a call that did not succeed as CONSOLE_READ");
        }
        if f != Some(Function::PsciCpuOn) {
            assert_eq!(vm.cpu_on.len(), cpu_on);
        }
        if f != Some(Function::ChannelNotify) {
            assert_eq!(vm.doorbells.len(), doorbells);
        }
        vm.console.truncate(1 << 16);
        vm.cpu_on.truncate(1024);
        vm.doorbells.truncate(1024);
    }
}

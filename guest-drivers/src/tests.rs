//! Host tests of the wrappers against the fake hypervisor of `hvc::fake`.

use crate::hvc::fake;
use crate::{psci, Console, VmInfo};
use core::cell::RefCell;
use core::fmt::Write as _;
use hypercall_abi::{psci as codes, Error, Function, CONSOLE_WRITE_MAX, TESSERA_UID};
use std::rc::Rc;
use std::vec::Vec;

/// Every hypercall seen: (fid, a1, a2, a3).
type Log = Rc<RefCell<Vec<[u32; 4]>>>;

/// Installs `answer` and logs the calls it serves.
fn fake(mut answer: impl FnMut([u32; 4]) -> [u32; 4] + 'static) -> (fake::Guard, Log) {
    let log: Log = Rc::default();
    let seen = log.clone();
    let guard = fake::install(move |fid, a1, a2, a3| {
        seen.borrow_mut().push([fid, a1, a2, a3]);
        answer([fid, a1, a2, a3])
    });
    (guard, log)
}

const fn neg(code: i32) -> u32 {
    code as u32
}

#[test]
fn without_a_hypervisor_everything_is_not_supported() {
    assert_eq!(crate::smccc_version(), Err(Error::NotSupported));
    assert_eq!(crate::call_uid(), Err(Error::NotSupported));
    assert!(!crate::is_tessera());
    assert_eq!(crate::abi_version(), Err(Error::NotSupported));
    assert_eq!(crate::yield_vcpu(), Err(Error::NotSupported));
    assert_eq!(psci::psci_features(0x8400_0003), codes::NOT_SUPPORTED);
}

#[test]
fn discovery_calls_decode_their_registers() {
    let (_g, log) = fake(|[fid, ..]| match Function::from_id(fid) {
        Some(Function::SmcccVersion) => [hypercall_abi::SMCCC_VERSION_1_1, 0, 0, 0],
        Some(Function::CallCount) => [hypercall_abi::TESSERA_CALL_COUNT, 0, 0, 0],
        Some(Function::CallUid) => TESSERA_UID,
        Some(Function::Revision) => [1, 0, 0, 0],
        Some(Function::AbiVersion) => [0, 1, 0, 0],
        _ => [neg(-1), 0, 0, 0],
    });
    assert_eq!(crate::smccc_version(), Ok(0x1_0001));
    assert_eq!(crate::call_count(), Ok(hypercall_abi::TESSERA_CALL_COUNT));
    assert_eq!(crate::call_uid(), Ok(TESSERA_UID));
    assert!(crate::is_tessera());
    assert_eq!(crate::revision(), Ok((1, 0)));
    assert_eq!(crate::abi_version(), Ok((1, 0)));
    let fids: Vec<u32> = log.borrow().iter().map(|c| c[0]).collect();
    assert_eq!(fids, [0x8000_0000, 0x8600_FF00, 0x8600_FF01, 0x8600_FF01, 0x8600_FF03, 0x8600_0000]);
}

#[test]
fn a_uid_with_bit_31_set_is_not_an_error() {
    let (_g, _) = fake(|_| [0x8000_0001, 0xFFFF_FFFF, 2, 3]);
    assert_eq!(crate::call_uid(), Ok([0x8000_0001, 0xFFFF_FFFF, 2, 3]));
    assert!(!crate::is_tessera());
}

#[test]
fn features_and_arch_features_pass_the_function_id() {
    let (_g, log) = fake(|[fid, a1, ..]| {
        let known = Function::from_id(a1).is_some();
        match Function::from_id(fid) {
            Some(Function::Features) => [if known { 0 } else { neg(-1) }, 0b1011, 0, 0],
            Some(Function::SmcccArchFeatures) => [if known { 0 } else { neg(-1) }, 0, 0, 0],
            _ => [neg(-1), 0, 0, 0],
        }
    });
    assert_eq!(crate::features(Function::ConsoleWrite.id()), Ok(0b1011));
    assert_eq!(crate::features(0x8600_0077), Err(Error::NotSupported));
    assert_eq!(crate::arch_features(Function::PsciCpuOn.id()), Ok(0));
    assert_eq!(crate::arch_features(0x8000_7FFF), Err(Error::NotSupported));
    assert_eq!(log.borrow()[0], [0x8600_0001, 0x8600_0002, 0, 0]);
    assert_eq!(log.borrow()[2], [0x8000_0001, 0x8400_0003, 0, 0]);
}

#[test]
fn status_codes_map_to_errors() {
    for (r0, want) in [
        (neg(-1), Error::NotSupported),
        (neg(-3), Error::InvalidParameter),
        (neg(-4), Error::InvalidAddress),
        (neg(-5), Error::Denied),
        // Unknown codes (a newer hypervisor, or -2 which Tessera never
        // sends) and nonsense positive statuses read as NOT_SUPPORTED.
        (neg(-2), Error::NotSupported),
        (neg(-77), Error::NotSupported),
        (7, Error::NotSupported),
    ] {
        let (_g, _) = fake(move |_| [r0, 99, 99, 99]);
        assert_eq!(crate::yield_vcpu(), Err(want), "r0 = {r0:#x}");
        assert_eq!(crate::vm_info(), Err(want), "r0 = {r0:#x}");
    }
}

#[test]
fn vm_info_decodes_r1_to_r3() {
    let (_g, log) = fake(|_| [0, 3, 4, 2]);
    assert_eq!(crate::vm_info(), Ok(VmInfo { vm_id: 3, vcpu_count: 4, vcpu_index: 2 }));
    assert_eq!(log.borrow()[0][0], 0x8600_0004);
}

#[test]
fn console_write_passes_the_buffer() {
    let (_g, log) = fake(|[_, ipa, len, _]| {
        assert_eq!(fake::console_bytes(ipa, len).as_deref(), Some(&b"hi there"[..]));
        [0, len, 0, 0]
    });
    let text = b"hi there";
    assert_eq!(crate::console_write(text), Ok(8));
    let call = log.borrow()[0];
    assert_eq!(call[0], 0x8600_0002);
    assert_eq!(call[1], text.as_ptr() as usize as u32);
    assert_eq!(call[2], 8);
    // Outside the call the buffer is no longer lent.
    assert_eq!(fake::console_bytes(call[1], call[2]), None);
}

#[test]
fn console_read_stores_what_the_hypervisor_gives() {
    let (_g, log) = fake(|[_, ipa, len, _]| {
        assert!(fake::console_fill(ipa, len, b"ls\n"));
        [0, 3, 0, 0]
    });
    let mut buf = [0u8; 16];
    assert_eq!(crate::console_read(&mut buf), Ok(3));
    assert_eq!(&buf[..3], b"ls\n");
    let call = log.borrow()[0];
    assert_eq!((call[0], call[2]), (0x8600_0007, 16));
    assert!(!fake::console_fill(call[1], call[2], b"x"), "not lent outside the call");
    let big = [0u8; hypercall_abi::CONSOLE_READ_MAX as usize + 1];
    assert_eq!(crate::console_read(&mut big.clone()), Err(Error::InvalidParameter));
    assert_eq!(log.borrow().len(), 1, "refused without trapping");
}

#[test]
fn steal_time_set_passes_the_record() {
    let (_g, log) = fake(|[_, ipa, _, _]| [if ipa % 64 == 0 { 0 } else { neg(-3) }, 0, 0, 0]);
    // SAFETY: the fake hypervisor writes nothing.
    assert_eq!(unsafe { crate::steal_time_set(0x4000_0040) }, Ok(()));
    // SAFETY: as above.
    assert_eq!(unsafe { crate::steal_time_set(0x4000_0020) }, Err(Error::InvalidParameter));
    assert_eq!(log.borrow()[0][..2], [0x8600_0008, 0x4000_0040]);
}

#[test]
fn console_write_refuses_oversize_buffers_without_trapping() {
    let (_g, log) = fake(|_| [0, 0, 0, 0]);
    let big = [b'x'; CONSOLE_WRITE_MAX as usize + 1];
    assert_eq!(crate::console_write(&big), Err(Error::InvalidParameter));
    assert!(log.borrow().is_empty());
    assert_eq!(crate::console_write(&big[1..]), Ok(0));
    assert_eq!(log.borrow().len(), 1);
}

#[test]
fn console_write_raw_passes_hostile_arguments_unchanged() {
    let (_g, log) = fake(|_| [neg(-4), 0, 0, 0]);
    assert_eq!(crate::console_write_raw(0xFFFF_FF00, 0x200), Err(Error::InvalidAddress));
    assert_eq!(log.borrow()[0], [0x8600_0002, 0xFFFF_FF00, 0x200, 0]);
}

/// A console that takes at most `max` bytes a call and keeps what it took.
fn console_fake(max: u32) -> (fake::Guard, Log, Rc<RefCell<Vec<u8>>>) {
    let out: Rc<RefCell<Vec<u8>>> = Rc::default();
    let sink = out.clone();
    let (g, log) = fake(move |[fid, ipa, len, _]| {
        if fid != Function::ConsoleWrite.id() {
            return [0, 0, 0, 0];
        }
        assert!(len <= CONSOLE_WRITE_MAX, "chunk of {len} bytes");
        let n = len.min(max);
        sink.borrow_mut().extend(fake::console_bytes(ipa, n).expect("the lent buffer"));
        [0, n, 0, 0]
    });
    (g, log, out)
}

#[test]
fn console_sends_long_text_in_chunks() {
    let (_g, log, out) = console_fake(u32::MAX);
    let text: Vec<u8> = (0..2500u32).map(|i| b'a' + (i % 26) as u8).collect();
    Console.write_bytes(&text).unwrap();
    let lens: Vec<u32> = log.borrow().iter().map(|c| c[2]).collect();
    assert_eq!(lens, [1024, 1024, 452]);
    assert_eq!(*out.borrow(), text);
}

#[test]
fn console_resumes_partial_writes() {
    let (_g, log, out) = console_fake(100);
    let text = [b'z'; 1030];
    Console.write_str(core::str::from_utf8(&text).unwrap()).unwrap();
    assert_eq!(out.borrow().len(), 1030);
    assert_eq!(log.borrow().len(), 11);
}

#[test]
fn console_gives_up_when_nothing_is_taken() {
    let (_g, log, out) = console_fake(0);
    assert_eq!(Console.write_bytes(b"stuck"), Err(Error::Denied));
    assert!(out.borrow().is_empty());
    let log = log.borrow();
    let writes = log.iter().filter(|c| c[0] == Function::ConsoleWrite.id()).count();
    let yields = log.iter().filter(|c| c[0] == Function::VcpuYield.id()).count();
    assert_eq!((writes, yields), (16, 15));
}

#[test]
fn console_reports_hypervisor_errors() {
    let (_g, _) = fake(|_| [neg(-4), 0, 0, 0]);
    assert_eq!(Console.write_bytes(b"x"), Err(Error::InvalidAddress));
    assert!(write!(Console, "{}", 1).is_err());
}

#[test]
fn println_sends_one_line_in_one_call() {
    let (_g, log, out) = console_fake(u32::MAX);
    crate::println!("vm{}: {} vCPUs", 1, 4);
    crate::print!("no newline");
    crate::println!();
    assert_eq!(*out.borrow(), b"vm1: 4 vCPUs\nno newline\n");
    assert_eq!(log.borrow().len(), 3);
}

#[test]
fn long_prints_arrive_whole() {
    let (_g, _, out) = console_fake(u32::MAX);
    let long = "0123456789".repeat(70);
    crate::println!("{long}");
    let mut want = long.into_bytes();
    want.push(b'\n');
    assert_eq!(*out.borrow(), want);
}

/// Runs `f`, which must end in a hypercall that does not return; the fake
/// answers it by panicking. Returns the call.
fn noreturn_call(f: fn() -> !) -> [u32; 4] {
    let (_g, log) = fake(|[fid, ..]| panic!("stopped by {fid:#x}"));
    let outcome = std::panic::catch_unwind(|| f());
    assert!(outcome.is_err());
    let call = log.borrow()[0];
    call
}

#[test]
fn shutdown_and_system_calls_do_not_return() {
    assert_eq!(noreturn_call(|| crate::shutdown(3)), [0x8600_0005, 3, 0, 0]);
    assert_eq!(noreturn_call(psci::system_off), [0x8400_0008, 0, 0, 0]);
    assert_eq!(noreturn_call(psci::system_reset), [0x8400_0009, 0, 0, 0]);
}

#[test]
fn psci_calls_return_psci_codes() {
    let (_g, log) = fake(|[fid, a1, ..]| match Function::from_id(fid) {
        Some(Function::PsciVersion) => [codes::VERSION_1_1, 0, 0, 0],
        Some(Function::PsciCpuOn) if a1 == 1 => [neg(codes::ALREADY_ON), 0, 0, 0],
        Some(Function::PsciCpuOn) => [0, 0, 0, 0],
        Some(Function::PsciAffinityInfo) => [codes::AFFINITY_ON_PENDING as u32, 0, 0, 0],
        Some(Function::PsciCpuOff) => [neg(codes::DENIED), 0, 0, 0],
        Some(Function::PsciFeatures) => [0, 0, 0, 0],
        _ => [neg(codes::NOT_SUPPORTED), 0, 0, 0],
    });
    assert_eq!(psci::psci_version(), 0x1_0001);
    // SAFETY: the fake hypervisor starts nothing.
    let (already, started) = unsafe { (psci::cpu_on(1, 0x4000_8000, 7), psci::cpu_on(2, 0x4000_8000, 7)) };
    assert_eq!((already, started), (codes::ALREADY_ON, codes::SUCCESS));
    assert_eq!(psci::affinity_info(2, 0), codes::AFFINITY_ON_PENDING);
    assert_eq!(psci::cpu_off(), codes::DENIED);
    assert_eq!(psci::psci_features(Function::PsciCpuOn.id()), codes::SUCCESS);
    let log = log.borrow();
    assert_eq!(log[1], [0x8400_0003, 1, 0x4000_8000, 7]);
    assert_eq!(log[3], [0x8400_0004, 2, 0, 0]);
    assert_eq!(log[5], [0x8400_000A, 0x8400_0003, 0, 0]);
}

#[test]
fn a_handler_making_a_hypercall_gets_not_supported() {
    let (_g, _) = fake(|_| {
        assert_eq!(crate::yield_vcpu(), Err(Error::NotSupported));
        [0, 0, 0, 0]
    });
    assert_eq!(crate::yield_vcpu(), Ok(()));
    assert_eq!(crate::yield_vcpu(), Ok(()), "the handler stays installed");
}

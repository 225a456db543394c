//! Calls every hypercall of ABI v1 and checks each answer; exits 0 only if
//! all are right. The scenario `hello` asserts on its lines.
#![no_std]
#![no_main]

use guest_rt::println;
use tessera_guest::abi::{self, feature, psci, Error, Function};
use tessera_guest::psci as p;

guest_rt::guest_main!(main);

struct Checks {
    passed: u32,
    failed: u32,
}

impl Checks {
    fn check(&mut self, what: &str, ok: bool, got: impl core::fmt::Debug) {
        if ok {
            self.passed += 1;
            println!("check {what}: ok");
        } else {
            self.failed += 1;
            println!("check {what}: FAILED (got {got:?})");
        }
    }
}

fn main() -> u32 {
    let mut c = Checks { passed: 0, failed: 0 };
    println!("cmdline: {}", guest_rt::bootargs());
    if guest_rt::arg("reset") == Some("1") {
        match guest_rt::reset_count() {
            Some(0) => {
                println!("reset count 0: asking for PSCI SYSTEM_RESET");
                p::system_reset();
            }
            Some(n) => println!("back after reset, reset count {n}"),
            None => println!("no reset count in the DTB: FAILED"),
        }
    }

    let v = tessera_guest::smccc_version();
    c.check("SMCCC_VERSION", v == Ok(abi::SMCCC_VERSION_1_1), v);
    let v = tessera_guest::arch_features(Function::SmcccVersion.id());
    c.check("SMCCC_ARCH_FEATURES", v == Ok(0), v);
    let v = tessera_guest::call_count();
    c.check("TESSERA_CALL_COUNT", v == Ok(abi::TESSERA_CALL_COUNT), v);
    let v = tessera_guest::call_uid();
    c.check("TESSERA_CALL_UID", v == Ok(abi::TESSERA_UID), v);
    let v = tessera_guest::revision();
    c.check("TESSERA_REVISION", v == Ok((abi::ABI_VERSION_MAJOR, abi::ABI_VERSION_MINOR)), v);
    let v = tessera_guest::abi_version();
    c.check("TESSERA_ABI_VERSION", v == Ok((abi::ABI_VERSION_MAJOR, abi::ABI_VERSION_MINOR)), v);
    let all = feature::CONSOLE
        | feature::YIELD
        | feature::VM_INFO
        | feature::SHUTDOWN
        | feature::CONSOLE_INPUT
        | feature::STEAL_TIME;
    let v = tessera_guest::features(Function::ConsoleWrite.id());
    c.check("TESSERA_FEATURES", v == Ok(all), v);
    let v = tessera_guest::features(0x8600_0fff);
    c.check("TESSERA_FEATURES of an unknown call", v == Err(Error::NotSupported), v);
    let msg = b"console write through the hypercall\n";
    let v = tessera_guest::console_write(msg);
    c.check("TESSERA_CONSOLE_WRITE", v == Ok(msg.len()), v);
    let v = tessera_guest::yield_vcpu();
    c.check("TESSERA_VCPU_YIELD", v == Ok(()), v);
    let v = tessera_guest::vm_info();
    let vcpus = guest_rt::arg_u32("vcpus", 1);
    c.check(
        "TESSERA_VM_INFO",
        matches!(v, Ok(i) if i.vm_id == guest_rt::arg_u32("id", 1) && i.vcpu_count == vcpus && i.vcpu_index == 0),
        v,
    );
    let v = p::psci_version();
    c.check("PSCI_VERSION", v == psci::VERSION_1_1, v);
    let v = p::psci_features(Function::PsciCpuOn.id());
    c.check("PSCI_FEATURES", v == psci::SUCCESS, v);
    let v = p::affinity_info(0, 0);
    c.check("PSCI_AFFINITY_INFO", v == psci::AFFINITY_ON, v);
    // SAFETY: target 0 is this vCPU, already on: nothing is started.
    let v = unsafe { p::cpu_on(0, 0x4000_0000, 0) };
    c.check("PSCI_CPU_ON of a running vCPU", v == psci::ALREADY_ON, v);
    // SAFETY: an unknown function id changes nothing.
    let v = unsafe { tessera_guest::hvc::hvc_call(0x8600_0fff, 0, 0, 0) }[0] as i32;
    c.check("unknown function id", v == Error::NotSupported.code(), v);

    println!("{} checks passed, {} failed", c.passed, c.failed);
    if c.failed == 0 {
        0
    } else {
        1
    }
}

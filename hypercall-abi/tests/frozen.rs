//! The published ABI 1.0, typed out by hand.
//!
//! Guests built against ABI 1.0 depend on every number below. This test
//! fails if a number changes or a call disappears, whatever abi.toml says:
//! it is the brake on "just renumber it". Adding calls, errors or bits in a
//! later 1.x needs no change here; changing a line here needs ABI 2.0.

use hypercall_abi::{feature, psci, Error, Function};

/// Every function of ABI 1.0 with its ID and spec name.
const V1_FUNCTIONS: &[(Function, u32, &str)] = &[
    (Function::SmcccVersion, 0x8000_0000, "SMCCC_VERSION"),
    (Function::SmcccArchFeatures, 0x8000_0001, "SMCCC_ARCH_FEATURES"),
    (Function::PsciVersion, 0x8400_0000, "PSCI_VERSION"),
    (Function::PsciCpuSuspend, 0x8400_0001, "CPU_SUSPEND"),
    (Function::PsciCpuOff, 0x8400_0002, "CPU_OFF"),
    (Function::PsciCpuOn, 0x8400_0003, "CPU_ON"),
    (Function::PsciAffinityInfo, 0x8400_0004, "AFFINITY_INFO"),
    (Function::PsciSystemOff, 0x8400_0008, "SYSTEM_OFF"),
    (Function::PsciSystemReset, 0x8400_0009, "SYSTEM_RESET"),
    (Function::PsciFeatures, 0x8400_000A, "PSCI_FEATURES"),
    (Function::CallCount, 0x8600_FF00, "TESSERA_CALL_COUNT"),
    (Function::CallUid, 0x8600_FF01, "TESSERA_CALL_UID"),
    (Function::Revision, 0x8600_FF03, "TESSERA_REVISION"),
    (Function::AbiVersion, 0x8600_0000, "TESSERA_ABI_VERSION"),
    (Function::Features, 0x8600_0001, "TESSERA_FEATURES"),
    (Function::ConsoleWrite, 0x8600_0002, "TESSERA_CONSOLE_WRITE"),
    (Function::VcpuYield, 0x8600_0003, "TESSERA_VCPU_YIELD"),
    (Function::VmInfo, 0x8600_0004, "TESSERA_VM_INFO"),
    (Function::VmShutdown, 0x8600_0005, "TESSERA_VM_SHUTDOWN"),
];

#[test]
fn function_ids_are_frozen() {
    for &(f, id, name) in V1_FUNCTIONS {
        assert_eq!(f.id(), id, "{name} was renumbered: published as {id:#010x}");
        assert_eq!(f as u32, id, "{name}: discriminant differs from id()");
        assert_eq!(Function::from_id(id), Some(f), "{name} ({id:#010x}) disappeared from from_id");
        assert!(Function::ALL.contains(&f), "{name} disappeared from Function::ALL");
        assert_eq!(f.name(), name, "{id:#010x} was renamed");
    }
}

#[test]
fn ids_are_unique_and_round_trip() {
    for (i, f) in Function::ALL.iter().enumerate() {
        assert_eq!(Function::from_id(f.id()), Some(*f));
        for g in &Function::ALL[..i] {
            assert_ne!(f.id(), g.id(), "{} and {} share an ID", f.name(), g.name());
        }
    }
}

#[test]
fn unassigned_ids_are_unknown() {
    // Spots around and between the assigned ranges: all NOT_SUPPORTED.
    for id in [0, 0x8000_0002, 0x8400_0005, 0x8400_000B, 0x8600_FF02, 0x8600_FFFF, 0xC600_0002, 0x0600_0002] {
        assert_eq!(Function::from_id(id), None, "{id:#010x} must not be assigned in 1.0");
    }
}

#[test]
fn error_codes_are_frozen() {
    assert_eq!(hypercall_abi::SUCCESS, 0);
    let v1: &[(Error, i32)] =
        &[(Error::NotSupported, -1), (Error::InvalidParameter, -3), (Error::InvalidAddress, -4), (Error::Denied, -5)];
    for &(e, code) in v1 {
        assert_eq!(e.code(), code, "{e:?} was renumbered");
        assert_eq!(Error::from_code(code), Some(e));
        assert!(Error::ALL.contains(&e), "{e:?} disappeared from Error::ALL");
        assert!(!e.message().is_empty());
    }
    assert_eq!(Error::from_code(0), None, "success is not an error");
    assert_eq!(Error::from_code(-2), None, "-2 is SMCCC's NOT_REQUIRED, never a Tessera error");
}

#[test]
fn psci_numbers_are_frozen() {
    assert_eq!(psci::VERSION_1_1, 0x0001_0001);
    let codes = [
        (psci::SUCCESS, 0),
        (psci::NOT_SUPPORTED, -1),
        (psci::INVALID_PARAMETERS, -2),
        (psci::DENIED, -3),
        (psci::ALREADY_ON, -4),
        (psci::ON_PENDING, -5),
        (psci::INTERNAL_FAILURE, -6),
        (psci::NOT_PRESENT, -7),
        (psci::DISABLED, -8),
        (psci::INVALID_ADDRESS, -9),
    ];
    for (have, want) in codes {
        assert_eq!(have, want, "a PSCI code changed: PSCI fixes these");
    }
    assert_eq!((psci::AFFINITY_ON, psci::AFFINITY_OFF, psci::AFFINITY_ON_PENDING), (0, 1, 2));
}

#[test]
fn feature_bits_are_frozen() {
    assert_eq!(feature::CONSOLE, 1 << 0);
    assert_eq!(feature::YIELD, 1 << 1);
    assert_eq!(feature::VM_INFO, 1 << 2);
    assert_eq!(feature::SHUTDOWN, 1 << 3);
}

#[test]
fn constants_are_frozen() {
    assert_eq!(hypercall_abi::ABI_VERSION_MAJOR, 1, "a new major version is a new ABI: write a new golden test");
    assert!(
        (hypercall_abi::ABI_VERSION_MAJOR, hypercall_abi::ABI_VERSION_MINOR) >= (1, 0),
        "the version never goes backwards"
    );
    assert_eq!(hypercall_abi::SMCCC_VERSION_1_1, 0x0001_0001);
    assert_eq!(hypercall_abi::CONSOLE_WRITE_MAX, 1024);
    assert_eq!(
        hypercall_abi::TESSERA_UID,
        [0xEBEB_3167, 0x814E_9E64, 0x352E_F687, 0xA23C_0737],
        "the UID (6731ebeb-649e-4e81-87f6-2e3537073ca2) identifies Tessera to guests"
    );
    // SMCCC reserves r0 = 0xFFFF_FFFF for "UID query not supported".
    assert_ne!(hypercall_abi::TESSERA_UID[0], u32::MAX);
}

#[test]
fn call_count_counts_the_vendor_functions() {
    let vendor = Function::ALL.iter().filter(|f| (0x8600_0000..=0x8600_FEFF).contains(&f.id())).count();
    assert_eq!(hypercall_abi::TESSERA_CALL_COUNT as usize, vendor);
    // 1.0 published six; later minors may only add.
    const { assert!(hypercall_abi::TESSERA_CALL_COUNT >= 6) };
}

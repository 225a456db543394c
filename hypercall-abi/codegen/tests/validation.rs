//! The generator refuses specs that would break the ABI's rules.

use std::path::Path;

fn spec() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(dir.join(hypercall_abi_codegen::SPEC_PATH)).expect("read abi.toml")
}

/// A well-formed vendor call to append to the spec.
fn call(name: &str, rust: &str, id: u32, service: &str) -> String {
    format!(
        "\n[[call]]\nname = \"{name}\"\nrust = \"{rust}\"\nid = {id:#x}\nservice = \"{service}\"\n\
         since = \"1.0\"\ndoc = \"A test call.\"\nerrors = []\n"
    )
}

fn refused(spec: &str, needle: &str) {
    match hypercall_abi_codegen::generate(spec) {
        Ok(_) => panic!("spec accepted, expected an error containing {needle:?}"),
        Err(e) => assert!(e.contains(needle), "expected {needle:?} in:\n{e}"),
    }
}

#[test]
fn the_real_spec_is_accepted() {
    let out = hypercall_abi_codegen::generate(&spec()).unwrap();
    let count = format!("pub const TESSERA_CALL_COUNT: u32 = {};", hypercall_abi::TESSERA_CALL_COUNT);
    assert!(out.rust.contains(&count), "the count the crate was generated with");
}

/// The spec with its ABI version set to 1.99, far past any real one.
fn spec_at_1_99() -> String {
    let s = spec();
    let line = s.lines().find(|l| l.starts_with("version = ")).expect("[abi] version").to_string();
    s.replace(&line, "version = \"1.99\"")
}

#[test]
fn duplicate_ids_are_refused() {
    refused(&(spec() + &call("TESSERA_DUP", "Dup", 0x8600_0002, "tessera")), "duplicate ID 0x86000002");
}

#[test]
fn duplicate_names_are_refused() {
    refused(&(spec() + &call("TESSERA_CONSOLE_WRITE", "Other", 0x8600_0010, "tessera")), "duplicate name");
    refused(&(spec() + &call("TESSERA_OTHER", "ConsoleWrite", 0x8600_0010, "tessera")), "duplicate rust name");
}

#[test]
fn ids_outside_their_service_are_refused() {
    // In the query range, not the function range.
    refused(&(spec() + &call("TESSERA_X", "X", 0x8600_FF10, "tessera")), "outside service \"tessera\"");
    // Another owner's range.
    refused(&(spec() + &call("TESSERA_X", "X", 0x8400_0010, "tessera")), "outside service");
    refused(&(spec() + &call("PSCI_X", "PsciX", 0x8400_0020, "psci")), "outside service \"psci\"");
    refused(&(spec() + &call("TESSERA_X", "X", 0x8600_0010, "nowhere")), "unknown service");
}

#[test]
fn retired_ids_are_never_reused() {
    let s = spec().replace("retired = []", "retired = [0x8600_0010]");
    refused(&(s + &call("TESSERA_X", "X", 0x8600_0010, "tessera")), "retired");
}

#[test]
fn unknown_references_and_keys_are_refused() {
    let bad_error =
        spec() + &call("TESSERA_X", "X", 0x8600_0010, "tessera").replace("errors = []", "errors = [\"NOPE\"]");
    refused(&bad_error, "NOPE is not an error of space \"smccc\"");
    // PSCI codes are not Tessera codes.
    let psci_error =
        spec() + &call("TESSERA_X", "X", 0x8600_0010, "tessera").replace("errors = []", "errors = [\"ALREADY_ON\"]");
    refused(&psci_error, "ALREADY_ON is not an error of space");
    let bad_feature = spec()
        + &call("TESSERA_X", "X", 0x8600_0010, "tessera").replace("errors = []", "errors = []\nfeature = \"NOPE\"");
    refused(&bad_feature, "unknown feature");
    let typo = spec() + &call("TESSERA_X", "X", 0x8600_0010, "tessera").replace("errors = []", "errros = []");
    refused(&typo, "unknown field");
}

#[test]
fn since_must_not_be_newer_than_the_abi() {
    let s = spec() + &call("TESSERA_X", "X", 0x8600_0010, "tessera").replace("since = \"1.0\"", "since = \"1.99\"");
    refused(&s, "since \"1.99\"");
}

#[test]
fn duplicate_error_codes_and_feature_bits_are_refused() {
    let s = spec() + "\n[[error]]\nspace = \"smccc\"\nname = \"BUSY\"\ncode = -4\ndoc = \"busy\"\n";
    refused(&s, "duplicate code -4");
    let s = spec() + "\n[[feature]]\nname = \"OTHER\"\nbit = 2\ndoc = \"other\"\n";
    refused(&s, "duplicate bit 2");
}

#[test]
fn adding_a_call_is_counted() {
    let s =
        spec_at_1_99() + &call("TESSERA_X", "X", 0x8600_0010, "tessera").replace("since = \"1.0\"", "since = \"1.99\"");
    let out = hypercall_abi_codegen::generate(&s).unwrap();
    let count = format!("pub const TESSERA_CALL_COUNT: u32 = {};", hypercall_abi::TESSERA_CALL_COUNT + 1);
    assert!(out.rust.contains(&count));
    assert!(out.c_header.contains("#define TESSERA_FN_X"));
    assert!(out.markdown.contains("| `0x8600_0010` | `TESSERA_X` |"));
}

//! The committed C header must carry the same numbers as the Rust crate, and
//! must compile for the guests that use it (bare-metal Armv7-A, C and C++).
//!
//! A C program that prints every numbered macro of the header is built with
//! the host compiler and run; its output is compared with the values of the
//! compiled `hypercall-abi` crate. The list of macros comes from the spec, so
//! a macro the header lacks fails to compile and one the Rust crate lacks
//! fails the comparison.

use hypercall_abi::{feature, psci, Error, Function};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const SETUP_HINT: &str = "run `cargo xtask setup` to install the C toolchains";

fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../include")
}

fn header() -> PathBuf {
    include_dir().join("tessera/hypercall.h")
}

/// A fresh directory for this test's files.
fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test directory");
    dir
}

/// Runs a compiler; fails the test with its output, or with the setup hint
/// if it is not installed.
fn run(cmd: &mut Command) -> std::process::Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run `{program}` ({e}): is it on PATH? {SETUP_HINT}"));
    assert!(
        out.status.success(),
        "`{program}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every number the Rust crate publishes, keyed as `Symbol::rust` is.
fn rust_values() -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for f in Function::ALL {
        m.insert(format!("Function::{f:?}"), i64::from(f.id()));
    }
    for e in Error::ALL {
        m.insert(format!("Error::{e:?}"), i64::from(e.code()));
    }
    for (i, w) in hypercall_abi::TESSERA_UID.iter().enumerate() {
        m.insert(format!("TESSERA_UID[{i}]"), i64::from(*w));
    }
    let named: &[(&str, i64)] = &[
        ("ABI_VERSION_MAJOR", hypercall_abi::ABI_VERSION_MAJOR.into()),
        ("ABI_VERSION_MINOR", hypercall_abi::ABI_VERSION_MINOR.into()),
        ("SMCCC_VERSION_1_1", hypercall_abi::SMCCC_VERSION_1_1.into()),
        ("CONSOLE_WRITE_MAX", hypercall_abi::CONSOLE_WRITE_MAX.into()),
        ("CONSOLE_READ_MAX", hypercall_abi::CONSOLE_READ_MAX.into()),
        ("CONSOLE_INPUT_BUFFER", hypercall_abi::CONSOLE_INPUT_BUFFER.into()),
        ("STEAL_TIME_RECORD_SIZE", hypercall_abi::STEAL_TIME_RECORD_SIZE.into()),
        ("STEAL_TIME_PREEMPTED", hypercall_abi::STEAL_TIME_PREEMPTED.into()),
        ("TESSERA_CALL_COUNT", hypercall_abi::TESSERA_CALL_COUNT.into()),
        ("SUCCESS", hypercall_abi::SUCCESS.into()),
        ("feature::CONSOLE", feature::CONSOLE.into()),
        ("feature::YIELD", feature::YIELD.into()),
        ("feature::VM_INFO", feature::VM_INFO.into()),
        ("feature::SHUTDOWN", feature::SHUTDOWN.into()),
        ("feature::CHANNEL", feature::CHANNEL.into()),
        ("feature::CONSOLE_INPUT", feature::CONSOLE_INPUT.into()),
        ("feature::STEAL_TIME", feature::STEAL_TIME.into()),
        ("psci::VERSION_1_1", psci::VERSION_1_1.into()),
        ("psci::SUCCESS", psci::SUCCESS.into()),
        ("psci::NOT_SUPPORTED", psci::NOT_SUPPORTED.into()),
        ("psci::INVALID_PARAMETERS", psci::INVALID_PARAMETERS.into()),
        ("psci::DENIED", psci::DENIED.into()),
        ("psci::ALREADY_ON", psci::ALREADY_ON.into()),
        ("psci::ON_PENDING", psci::ON_PENDING.into()),
        ("psci::INTERNAL_FAILURE", psci::INTERNAL_FAILURE.into()),
        ("psci::NOT_PRESENT", psci::NOT_PRESENT.into()),
        ("psci::DISABLED", psci::DISABLED.into()),
        ("psci::INVALID_ADDRESS", psci::INVALID_ADDRESS.into()),
        ("psci::AFFINITY_ON", psci::AFFINITY_ON.into()),
        ("psci::AFFINITY_OFF", psci::AFFINITY_OFF.into()),
        ("psci::AFFINITY_ON_PENDING", psci::AFFINITY_ON_PENDING.into()),
    ];
    for (k, v) in named {
        m.insert((*k).to_string(), *v);
    }
    m
}

#[test]
fn c_header_values_equal_the_rust_crate() {
    let spec = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(hypercall_abi_codegen::SPEC_PATH))
        .expect("read abi.toml");
    let symbols = hypercall_abi_codegen::symbols(&spec).expect("abi.toml is valid");

    let dir = work_dir("c_header_values");
    let mut program = String::from("#include <stdio.h>\n#include <tessera/hypercall.h>\n\nint main(void)\n{\n");
    for s in &symbols {
        program.push_str(&format!("    printf(\"%s %lld\\n\", \"{}\", (long long)({}));\n", s.rust, s.c));
    }
    program.push_str("    return 0;\n}\n");
    let src = dir.join("print_abi.c");
    std::fs::write(&src, program).expect("write C program");
    let exe = dir.join("print_abi");
    run(Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(include_dir())
        .arg("-o")
        .arg(&exe)
        .arg(&src));
    let out = run(&mut Command::new(&exe));

    let mut from_c = BTreeMap::new();
    for line in String::from_utf8(out.stdout).expect("utf-8 output").lines() {
        let (key, value) = line.split_once(' ').expect("`key value` lines");
        from_c.insert(key.to_string(), value.parse::<i64>().expect("a number"));
    }
    let rust = rust_values();
    let mut problems = Vec::new();
    for (key, c_value) in &from_c {
        match rust.get(key) {
            None => problems.push(format!(
                "{key}: the header has it but this test has no Rust value for it (add it to rust_values())"
            )),
            Some(r) if r != c_value => problems.push(format!("{key}: C says {c_value:#x}, Rust says {r:#x}")),
            Some(_) => {}
        }
    }
    for key in rust.keys() {
        if !from_c.contains_key(key) {
            problems.push(format!("{key}: Rust has it, the C header does not"));
        }
    }
    assert!(problems.is_empty(), "C header and Rust crate disagree:\n  {}", problems.join("\n  "));
    assert_eq!(from_c.len(), symbols.len(), "a symbol was printed twice");
}

#[test]
fn c_header_is_valid_cplusplus() {
    run(Command::new("c++")
        .args(["-x", "c++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only"])
        .arg(header()));
}

/// A guest's use of the trap, compiled for the Armv7-A guests Tessera runs.
const ARM_USER: &str = r#"#include <tessera/hypercall.h>

int32_t tessera_console_write(const char *s, uint32_t len)
{
    struct tessera_hvc_result r =
        tessera_hvc(TESSERA_FN_CONSOLE_WRITE, (uint32_t)(uintptr_t)s, len, 0);
    return (int32_t)r.r0 == TESSERA_SUCCESS ? (int32_t)r.r1 : (int32_t)r.r0;
}
"#;

#[test]
fn c_header_compiles_for_armv7a() {
    let gcc = "arm-none-eabi-gcc";
    let found = Command::new(gcc).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "{gcc} is not on PATH: {SETUP_HINT} (installs gcc-arm-none-eabi)");

    let strict = ["-Wall", "-Wextra", "-Werror", "-pedantic"];
    run(Command::new(gcc)
        .args(["-fsyntax-only", "-mcpu=cortex-a15", "-marm", "-std=c99", "-x", "c"])
        .args(strict)
        .arg(header()));

    // The inline asm must assemble, in both instruction sets and for a plain
    // -march=armv7-a (no virtualization extension named), and must be a HVC.
    let dir = work_dir("c_header_arm");
    let src = dir.join("user.c");
    std::fs::write(&src, ARM_USER).expect("write C file");
    let variants: [&[&str]; 3] =
        [&["-mcpu=cortex-a15", "-marm"], &["-mcpu=cortex-a15", "-mthumb"], &["-march=armv7-a", "-marm"]];
    for (i, flags) in variants.iter().enumerate() {
        let obj = dir.join(format!("user{i}.o"));
        run(Command::new(gcc)
            .args(*flags)
            .args(["-std=c99", "-O2", "-c", "-I"])
            .arg(include_dir())
            .args(strict)
            .arg("-o")
            .arg(&obj)
            .arg(&src));
        let dis = Command::new("arm-none-eabi-objdump").arg("-d").arg(&obj).output();
        if let Ok(dis) = dis {
            let text = String::from_utf8_lossy(&dis.stdout);
            assert!(text.contains("hvc"), "no hvc instruction in {flags:?} build:\n{text}");
        }
    }

    run(Command::new("arm-none-eabi-g++")
        .args(["-fsyntax-only", "-mcpu=cortex-a15", "-marm", "-std=c++17", "-x", "c++"])
        .args(strict)
        .arg(header()));
}

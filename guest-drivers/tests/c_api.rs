//! The C guest API, `include/tessera/guest.h`, built on the generated
//! `hypercall-abi/include/tessera/hypercall.h`:
//!
//! - on the host, a C program runs every wrapper against a fake hypervisor
//!   and checks the decoding (statuses, results, console chunking, stalls,
//!   PSCI arguments): `tests/c/guest_api_test.c`;
//! - for the guests, it compiles with `arm-none-eabi-gcc` for Armv7-A,
//!   warnings as errors, as C and as C++, where the trap is the real `hvc`.

use std::path::{Path, PathBuf};
use std::process::Command;

const SETUP_HINT: &str = "run `cargo xtask setup` to install the C toolchains";

fn includes() -> [PathBuf; 2] {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    [here.join("include"), here.join("../hypercall-abi/include")]
}

fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test directory");
    dir
}

fn run(cmd: &mut Command) -> String {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run `{program}` ({e}): {SETUP_HINT}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "`{program}` failed ({}):\n{text}", out.status);
    text
}

#[test]
fn wrappers_decode_what_a_fake_hypervisor_answers() {
    let dir = work_dir("guest-api-host");
    let exe = dir.join("guest_api_test");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/guest_api_test.c");
    let mut cc = Command::new("cc");
    cc.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"]).arg(&exe).arg(&src);
    for i in includes() {
        cc.arg("-I").arg(i);
    }
    run(&mut cc);
    let out = run(&mut Command::new(&exe));
    assert!(out.contains("guest.h: all checks passed"), "{out}");
}

#[test]
fn header_compiles_for_armv7a_guests_in_c_and_cxx() {
    let dir = work_dir("guest-api-arm");
    let src = dir.join("use.c");
    std::fs::write(
        &src,
        "#include <tessera/guest.h>\n\
         int32_t hello(void) { struct tessera_vm_info i; int32_t s = tessera_vm_info(&i);\n\
           if (s != TESSERA_SUCCESS || !tessera_is_tessera()) tessera_vm_shutdown(1);\n\
           (void)tessera_psci_cpu_on(1, 0x40000000u, 1);\n\
           return tessera_console_puts(\"hello\\n\"); }\n",
    )
    .unwrap();
    for (compiler, lang) in [("arm-none-eabi-gcc", "c"), ("arm-none-eabi-g++", "c++")] {
        let mut cc = Command::new(compiler);
        cc.args([
            "-march=armv7-a",
            "-marm",
            "-O2",
            "-ffreestanding",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-x",
            lang,
            "-c",
            "-o",
        ])
        .arg(dir.join(format!("use-{lang}.o")))
        .arg(&src);
        for i in includes() {
            cc.arg("-I").arg(i);
        }
        run(&mut cc);
    }
}

//! Builds FreeRTOS for the Tessera guest (armv7a-none-eabi only):
//!
//! - the kernel sources come, unchanged, from the `freertos-next` crate
//!   (FreeRTOS-Kernel V11.2.0, `DEP_FREERTOS_KERNEL`);
//! - `freertos-build` compiles them with the `cc` crate and
//!   `arm-none-eabi-gcc`, together with our port layer (`port/`), our
//!   `config/FreeRTOSConfig.h` and `heap_4.c`, twice: a single-core kernel
//!   and an SMP kernel (`configNUMBER_OF_CORES` 1 and 2), each linked into
//!   its own demo binary;
//! - `bindgen` turns the FreeRTOS API and the port's API (`src/ffi.h`) into
//!   Rust, with the same definitions the kernel was compiled with.
//!
//! On any other target (the workspace's host tests) there is nothing to
//! build: the crate is then only its portable, host-tested parts.

use std::env;
use std::path::{Path, PathBuf};

/// Kernel settings that `freertos-build` passes as `-D` (and bindgen must see too).
const HEAP_BYTES: usize = 192 * 1024;
const MINIMAL_STACK_WORDS: usize = 256;
const MAX_PRIORITIES: u8 = 8;

/// The INCLUDE_* switches `freertos-build` takes from the `freertos-next`
/// features (`DEP_FREERTOS_DEF_*`).
const SYNCED: &[&str] = &[
    "__IS_CORTEX_M",
    "INCLUDE_vTaskDelete",
    "INCLUDE_vTaskDelayUntil",
    "INCLUDE_uxTaskGetStackHighWaterMark",
    "INCLUDE_HeapFreeSize",
    "INCLUDE_vTaskSuspend",
    "configUSE_RECURSIVE_MUTEXES",
    "configUSE_COUNTING_SEMAPHORES",
    "configUSE_TRACE_FACILITY",
];

/// (kernel variant, cores, the demo binary that links it)
const VARIANTS: &[(&str, u32, &str)] = &[("up", 1, "freertos-demo-up"), ("smp", 2, "freertos-demo")];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    for p in ["build.rs", "link.x", "port", "config", "src/ffi.h"] {
        println!("cargo:rerun-if-changed={}", manifest.join(p).display());
    }
    println!("cargo:rerun-if-changed={}", manifest.join("../guest-drivers/include").display());
    println!("cargo:rerun-if-changed={}", manifest.join("../hypercall-abi/include").display());
    if !env::var("TARGET").unwrap_or_default().starts_with("armv7a") {
        return;
    }
    let kernel = PathBuf::from(env::var("DEP_FREERTOS_KERNEL").expect("freertos-next exports its kernel sources"));
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let includes = [manifest.join("../guest-drivers/include"), manifest.join("../hypercall-abi/include")];

    for &(variant, cores, bin) in VARIANTS {
        let dir = out.join(variant);
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = freertos_build::Builder::new();
        b.freertos_kernel(&kernel);
        b.freertos_config_dir(manifest.join("config"));
        b.freertos_port_base(&manifest);
        b.freertos_port("port");
        b.shim_file(manifest.join("config/kernel_info.c"));
        b.heap("heap_4.c");
        b.heap_size(HEAP_BYTES);
        b.minimal_stack_size(MINIMAL_STACK_WORDS);
        b.max_task_priorities(MAX_PRIORITIES);
        b.use_preemption(true);
        let cc = b.get_cc();
        cc.compiler("arm-none-eabi-gcc")
            .archiver("arm-none-eabi-ar")
            .define("configNUMBER_OF_CORES", cores.to_string().as_str())
            // ARM state (the vectors and the context switch are ARM code);
            // no unaligned accesses: with the MMU off all memory is
            // Strongly-ordered, where they fault (and SCTLR.A is set); no
            // VFP: the target is soft-float and the port keeps VFP off.
            .flag("-marm")
            .flag("-march=armv7-a")
            .flag("-mfloat-abi=soft")
            .flag("-mno-unaligned-access")
            .flag("-ffreestanding")
            .flag("-fno-common")
            .out_dir(&dir)
            .cargo_metadata(false);
        for i in &includes {
            cc.include(i);
        }
        if let Err(e) = b.compile() {
            panic!("building the FreeRTOS kernel ({variant}) failed: {e:?} (is arm-none-eabi-gcc installed? `cargo xtask setup`)");
        }
        println!("cargo:rustc-link-arg-bin={bin}={}", dir.join("libfreertos.a").display());
    }
    println!("cargo:rustc-link-arg-bins=-T{}", manifest.join("link.x").display());
    bindings(&manifest, &kernel, &includes, &out);
}

/// The FreeRTOS and port API as Rust, generated against the SMP
/// configuration. The functions the demo uses have the same signatures in
/// both kernels; the two differ in TCB layout and internals, which the
/// bindings do not expose (no static allocation, no `StaticTask_t`).
fn bindings(manifest: &Path, kernel: &Path, includes: &[PathBuf], out: &Path) {
    // The C headers (stddef.h, stdint.h) of the compiler that builds the
    // kernel, so the bindings see exactly its types, whichever libclang runs.
    let gcc_include = std::process::Command::new("arm-none-eabi-gcc")
        .arg("-print-file-name=include")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .expect("arm-none-eabi-gcc (`cargo xtask setup`)");
    let mut args: Vec<String> = vec![
        "--target=armv7a-none-eabi".into(),
        "-ffreestanding".into(),
        "-nostdinc".into(),
        format!("-isystem{gcc_include}"),
        format!("-I{}", kernel.join("include").display()),
        format!("-I{}", manifest.join("port").display()),
        format!("-I{}", manifest.join("config").display()),
        "-DconfigNUMBER_OF_CORES=2".into(),
        format!("-DconfigTOTAL_HEAP_SIZE={HEAP_BYTES}"),
        format!("-DconfigMINIMAL_STACK_SIZE={MINIMAL_STACK_WORDS}"),
        format!("-DconfigMAX_PRIORITIES={MAX_PRIORITIES}"),
        "-DconfigUSE_PREEMPTION=1".into(),
    ];
    for i in includes {
        args.push(format!("-I{}", i.display()));
    }
    for def in SYNCED {
        let v = env::var(format!("DEP_FREERTOS_DEF_{}", def.to_uppercase())).unwrap_or_else(|_| "0".into());
        args.push(format!("-D{def}={v}"));
    }
    let b = bindgen::Builder::default()
        .header(manifest.join("src/ffi.h").display().to_string())
        .clang_args(&args)
        .use_core()
        .ctypes_prefix("core::ffi")
        .allowlist_function("(x|v|ux|ul|ull|pc|pv)(Task|Queue|Port|Semaphore)[A-Za-z]*")
        .allowlist_type("PortStats_t")
        .layout_tests(false)
        .generate()
        .expect("bindgen could not process src/ffi.h (is libclang-dev installed? `cargo xtask setup`)");
    b.write_to_file(out.join("bindings.rs")).expect("write bindings.rs");
}

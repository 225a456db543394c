//! `cargo xtask <verb>`: Tessera's one entry point for developers and CI.
//!
//! - `setup`           install what is missing: apt packages, the armv7a-none-eabi target
//! - `build`           build the hypervisor and the test guests for armv7a-none-eabi
//! - `run [CONFIG]`    set up, build, pack CONFIG (default: examples/linux-smp.toml), boot it in QEMU
//! - `test`            every test: formatting and clippy, host unit tests, then the QEMU scenarios
//! - `scenario [FILTER]` only the QEMU scenarios whose names contain FILTER
//! - `lint`            formatting and clippy (warnings are errors), as `test` checks them
//! - `bench [PART]`    benchmarks: instruction counts under QEMU -icount, wall-clock ratios
//!   against native QEMU (PART: micro, switch, create, freertos, linux, channel, locks, blk, net)
//! - `fuzz [TARGET] [--secs N] [--merge]` the fuzz targets of tests/fuzz under libFuzzer
//! - `soak [--mins N]`  everything at once for N minutes (default 10), then a table
//! - `trace CONFIG [--secs N]` run CONFIG with the scheduling trace on; writes
//!   target/trace/NAME.json (Chrome/Perfetto) and NAME.svg
//! - `gen-abi`         regenerate the hypercall ABI's Rust, C and Markdown from abi.toml,
//!   and the guest map's C header from tessera_payload::guest_map
use std::process::ExitCode;
use xtask::{bench, build, fuzz, guest_map, outcome, scenarios, setup, soak, DEFAULT_CONFIG};

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <verb>\n\
         \n  setup          install what is missing (apt packages, the armv7a-none-eabi target)\
         \n  build          build the hypervisor and the test guests\
         \n  run [CONFIG]   build, pack and boot CONFIG in QEMU (default: {DEFAULT_CONFIG})\
         \n  test           run every test: lints, host unit tests and QEMU scenarios\
         \n  scenario [FILTER]  only the QEMU scenarios whose names contain FILTER (all without one)\
         \n  lint           cargo fmt --check and clippy (host and armv7a-none-eabi), as test runs them\
         \n  bench [PART]   benchmarks (PART: micro, switch, create, freertos, linux, channel, locks, blk, net; default all)\
         \n  fuzz [TARGET] [--secs N] [--merge]  coverage-guided fuzzing (default: every target, 60 s each)\
         \n  soak [--mins N] two Linux VMs, FreeRTOS and a channel at once for N minutes (default 10)\
         \n  trace CONFIG [--secs N]  run CONFIG traced: Perfetto JSON and an SVG timeline in target/trace/\
         \n  gen-abi        regenerate the hypercall ABI files and the guest map's C header"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(),
        Some("build") => setup::run().and_then(|_| build::all().map(|_| ())),
        Some("run") => outcome::run_verb(args.get(1).map(String::as_str).unwrap_or(DEFAULT_CONFIG)),
        Some("test") => scenarios::test_verb(),
        Some("scenario") => scenarios::scenario_verb(args.get(1).map(String::as_str)),
        Some("lint") => setup::run().and_then(|_| build::lint()),
        Some("bench") => bench::run(args.get(1).map(String::as_str)),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        Some("trace") => xtask::trace::verb(&args[1..]),
        Some("gen-abi") => {
            build::cargo(&["run", "--quiet", "-p", "hypercall-abi-codegen"]).and_then(|_| guest_map::write())
        }
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

//! Builds the target side: the hypervisor, the test guests and the FreeRTOS
//! demo (`rtos-port`).

use crate::root;
use std::path::PathBuf;
use std::process::Command;

pub fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st =
        Command::new(&cargo).args(args).current_dir(root()).status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed", args.join(" ")))
    }
}

pub fn target_dir() -> PathBuf {
    root().join("target")
}

/// The packages built for the board, each in a build of its own (see `all`).
const TARGET_PACKAGES: [&str; 3] = ["tessera-hypervisor", "test-guests", "tessera-freertos"];

/// Formatting and lints, as `cargo xtask test` checks them: `cargo fmt`,
/// then clippy with warnings as errors for the host crates (with their
/// tests) and for every crate built for `armv7a-none-eabi`, where the arch
/// code and the guests exist.
pub fn lint() -> Result<(), String> {
    cargo(&["fmt", "--all", "--check"])
        .map_err(|_| "`cargo fmt --all --check` found unformatted code: run `cargo fmt --all`".to_string())?;
    cargo(&[
        "clippy",
        "--quiet",
        "--workspace",
        "--exclude",
        "test-guests",
        "--exclude",
        "tessera-fuzz",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])?;
    // The fuzz targets without the libFuzzer engine, which needs a C++
    // compiler that only `cargo xtask fuzz` installs.
    cargo(&["clippy", "--quiet", "-p", "tessera-fuzz", "--all-targets", "--", "-D", "warnings"])?;
    for package in TARGET_PACKAGES {
        for_target("clippy", package, &["--quiet", "--", "-D", "warnings"])?;
    }
    Ok(())
}

/// `cargo VERB --release` of `package` for the board, in the workspace's
/// target directory.
fn for_target(verb: &str, package: &str, extra: &[&str]) -> Result<(), String> {
    let td = target_dir();
    let mut args = vec![verb, "--release", "--target", crate::setup::TARGET, "--target-dir", td.to_str().unwrap()];
    args.extend(["-p", package]);
    args.extend_from_slice(extra);
    cargo(&args)
}

/// Builds everything that runs on the board; returns the hypervisor ELF.
pub fn all() -> Result<PathBuf, String> {
    // Separate builds, so Cargo resolves features separately: the hypervisor
    // uses `virtio-drivers` with `alloc`, the guests (which have no heap)
    // without; the FreeRTOS demo also compiles the kernel's C sources.
    for package in TARGET_PACKAGES {
        for_target("build", package, &[])?;
    }
    Ok(target_dir().join(crate::setup::TARGET).join("release").join("tessera"))
}

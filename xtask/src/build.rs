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

/// Builds everything that runs on the board; returns the hypervisor ELF.
pub fn all() -> Result<PathBuf, String> {
    let td = target_dir();
    // Separate builds, so Cargo resolves features separately: the hypervisor
    // uses `virtio-drivers` with `alloc`, the guests (which have no heap)
    // without; the FreeRTOS demo also compiles the kernel's C sources.
    for package in ["tessera-hypervisor", "test-guests", "tessera-freertos"] {
        cargo(&[
            "build",
            "--release",
            "--target",
            crate::setup::TARGET,
            "--target-dir",
            td.to_str().unwrap(),
            "-p",
            package,
        ])?;
    }
    Ok(td.join(crate::setup::TARGET).join("release").join("tessera"))
}

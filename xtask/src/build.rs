//! Builds the target side: the hypervisor and the test guests.

use crate::root;
use std::path::PathBuf;
use std::process::Command;


pub fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .args(args)
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
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
    // Two builds, so Cargo resolves features separately: the hypervisor uses
    // `virtio-drivers` with `alloc`, the guests (which have no heap) without.
    for package in ["tessera-hypervisor", "test-guests"] {
        cargo(&["build", "--release", "--target", crate::setup::TARGET, "--target-dir", td.to_str().unwrap(), "-p", package])?;
    }
    Ok(td.join(crate::setup::TARGET).join("release").join("tessera"))
}

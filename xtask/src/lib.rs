//! Tessera's host tool as a library: the verbs `main.rs` dispatches, and the
//! configuration checker and packer, which the fuzz targets (tests/fuzz)
//! drive directly.
pub mod bench;
pub mod build;
pub mod config;
pub mod disks;
pub mod dtb;
pub mod elf_image;
pub mod fuzz;
pub mod guest_map;
pub mod kernel;
pub mod linux;
pub mod outcome;
pub mod pack;
pub mod qemu;
pub mod scenarios;
pub mod setup;
pub mod soak;
#[cfg(test)]
mod testutil;
pub mod trace;

use std::path::{Path, PathBuf};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent").to_path_buf()
}

pub const DEFAULT_CONFIG: &str = "examples/linux-smp.toml";

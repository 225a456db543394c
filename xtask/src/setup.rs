//! Installs what a fresh machine lacks, and nothing it already has: the
//! Debian packages (QEMU, the bare-metal Arm toolchain that the ABI's C test
//! and the FreeRTOS kernel are compiled with, libclang for `bindgen`) and
//! the Rust target. Safe to run again; fast when all is there.
//!
//! What Linux guests need (the kernel source, the armhf cross compiler,
//! Debian's armhf package lists) is installed on first use instead, by
//! `crate::linux`, only when a configuration names a Linux artifact.

use std::process::Command;

/// (shell test that proves it is there, Debian package)
const TOOLS: &[(&str, &str)] = &[
    ("command -v qemu-system-arm", "qemu-system-arm"),
    ("command -v arm-none-eabi-gcc", "gcc-arm-none-eabi"),
    ("command -v arm-none-eabi-objdump", "binutils-arm-none-eabi"),
    // The C library headers the FreeRTOS kernel includes (string.h, ...).
    ("test -f /usr/lib/arm-none-eabi/include/string.h", "libnewlib-dev"),
    ("command -v cc", "gcc"),
    ("command -v c++", "g++"),
    // `bindgen` (the FreeRTOS demo's bindings) loads libclang at build time.
    ("ls /usr/lib/llvm-*/lib/libclang.so", "libclang-dev"),
    // The block scenarios make ext2 images and read files back out of them.
    ("command -v mke2fs || test -x /usr/sbin/mke2fs", "e2fsprogs"),
    ("command -v debugfs || test -x /usr/sbin/debugfs", "e2fsprogs"),
];

pub const TARGET: &str = "armv7a-none-eabi";

fn have(test: &str) -> bool {
    // Braces: the redirection covers every command of a `a || b` test.
    Command::new("sh").args(["-c", &format!("{{ {test}; }} >/dev/null 2>&1")]).status().is_ok_and(|s| s.success())
}

pub fn run() -> Result<(), String> {
    // QEMU runs with `-nic none` and MMIO devices only, so its option ROMs
    // (ipxe-qemu) are not needed.
    let missing: Vec<&str> = TOOLS.iter().filter(|(c, _)| !have(c)).map(|(_, p)| *p).collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    // `cargo xtask test` checks formatting and lints.
    let components = Command::new("rustup").args(["component", "list", "--installed"]).output();
    let listed = |c: &str| {
        components.as_ref().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with(c)))
    };
    let missing: Vec<&str> = ["clippy", "rustfmt"].into_iter().filter(|c| !listed(c)).collect();
    if !missing.is_empty() {
        eprintln!("xtask: adding the Rust components {}", missing.join(", "));
        let st = Command::new("rustup")
            .args(["component", "add"])
            .args(&missing)
            .status()
            .map_err(|e| format!("rustup: {e}"))?;
        if !st.success() {
            return Err(format!("`rustup component add {}` failed", missing.join(" ")));
        }
    }
    let targets = Command::new("rustup").args(["target", "list", "--installed"]).output();
    let installed =
        targets.as_ref().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == TARGET));
    if !installed {
        eprintln!("xtask: adding the Rust target {TARGET}");
        let st = Command::new("rustup").args(["target", "add", TARGET]).status().map_err(|e| format!("rustup: {e}"))?;
        if !st.success() {
            return Err(format!("`rustup target add {TARGET}` failed"));
        }
    }
    Ok(())
}

pub fn apt_install(pkgs: &[&str]) -> Result<(), String> {
    eprintln!("xtask: installing {}", pkgs.join(" "));
    let sudo = if is_root() { "" } else { "sudo " };
    let script = format!(
        "{sudo}apt-get update -qq && DEBIAN_FRONTEND=noninteractive {sudo}apt-get install -y -qq --no-install-recommends {}",
        pkgs.join(" ")
    );
    let st = Command::new("sh").args(["-c", &script]).status().map_err(|e| format!("apt-get: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("installing {} with apt-get failed", pkgs.join(" ")))
    }
}

/// `program` to be run as root: directly when we are root, else through
/// sudo (as [`apt_install`] does).
pub fn as_root(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

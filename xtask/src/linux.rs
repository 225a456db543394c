//! Linux guest artifacts, built or downloaded on first use and cached by
//! content under `~/.cache/tessera`:
//!
//! - `target/linux/zImage`: Linux 6.1 from Debian's `linux-source-6.1`,
//!   `tinyconfig` plus `linux-patches/tessera.config` (and the patches of
//!   `linux-patches/*.patch`, in order), built with `gcc-arm-linux-gnueabihf`;
//! - `target/linux/initramfs.cpio.gz`: Debian's `busybox-static:armhf` and
//!   `tests/linux-init/init`, written as a `newc` archive here (so device
//!   nodes need no root);
//! - `target/linux/debian-zImage`: Debian's stock `linux-image-*-armmp-lpae`
//!   kernel, unmodified.
//!
//! A configuration that names one of these paths gets it made before it
//! is packed. The cache key covers everything the result depends on, so a
//! second run with nothing changed rebuilds nothing.

use crate::{root, setup};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn out_dir() -> PathBuf {
    root().join("target/linux")
}

fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/tessera")
}

/// Makes every `target/linux/` artifact that `config` names as a kernel or
/// initrd. Reads only those two keys (the full check happens when packing).
pub fn ensure_artifacts_for(config: &Path) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(config) else { return Ok(()) };
    let Ok(doc) = text.parse::<toml::Table>() else { return Ok(()) };
    let config = std::path::absolute(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let dir = config.parent().unwrap_or(Path::new("/"));
    let mut wanted: Vec<String> = Vec::new();
    for vm in doc.get("vm").and_then(|v| v.as_array()).into_iter().flatten() {
        for key in ["kernel", "initrd"] {
            if let Some(p) = vm.get(key).and_then(|v| v.as_str()) {
                let full = normalize(&dir.join(p));
                if let Ok(rel) = full.strip_prefix(out_dir()) {
                    let name = rel.to_string_lossy().into_owned();
                    if !wanted.contains(&name) {
                        wanted.push(name);
                    }
                }
            }
        }
    }
    for name in wanted {
        match name.as_str() {
            "zImage" => kernel()?,
            "initramfs.cpio.gz" => initramfs()?,
            "debian-zImage" => debian_kernel()?,
            other => return Err(format!("{}: no recipe for target/linux/{other}", config.display())),
        }
    }
    Ok(())
}

/// `a/b/../c` -> `a/c`, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let st = cmd.status().map_err(|e| format!("{what}: {e}"))?;
    if st.success() { Ok(()) } else { Err(format!("{what} failed ({st})")) }
}

fn output(cmd: &mut Command, what: &str) -> Result<String, String> {
    let o = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !o.status.success() {
        return Err(format!("{what} failed: {}", String::from_utf8_lossy(&o.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn need_packages(pkgs: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() { Ok(()) } else { setup::apt_install(&missing) }
}

/// Debian's armhf packages must be visible to apt (for `apt-get download`).
fn need_armhf() -> Result<(), String> {
    let archs = output(Command::new("dpkg").arg("--print-foreign-architectures"), "dpkg")?;
    if archs.lines().any(|l| l == "armhf") {
        return Ok(());
    }
    eprintln!("xtask: adding Debian's armhf architecture");
    run(Command::new("dpkg").args(["--add-architecture", "armhf"]), "dpkg --add-architecture armhf")?;
    run(Command::new("apt-get").args(["update", "-qq"]), "apt-get update")
}

fn key(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Copies a cached result into target/linux (only if it differs).
fn publish(cached: &Path, name: &str) -> Result<(), String> {
    let dst = out_dir().join(name);
    std::fs::create_dir_all(out_dir()).map_err(|e| e.to_string())?;
    let same = std::fs::read(&dst).ok() == std::fs::read(cached).ok();
    if !same {
        std::fs::copy(cached, &dst).map_err(|e| format!("copying {} to {}: {e}", cached.display(), dst.display()))?;
    }
    Ok(())
}

const SOURCE_PKG: &str = "linux-source-6.1";
const CROSS: &str = "arm-linux-gnueabihf-";

fn kernel() -> Result<(), String> {
    need_packages(&[SOURCE_PKG, "gcc-arm-linux-gnueabihf", "flex", "bison", "bc", "make", "xz-utils", "libc6-dev"])?;
    let version = output(Command::new("dpkg-query").args(["-W", "-f=${Version}", SOURCE_PKG]), "dpkg-query")?;
    let fragment_path = root().join("linux-patches/tessera.config");
    let fragment = std::fs::read(&fragment_path).map_err(|e| format!("{}: {e}", fragment_path.display()))?;
    let mut patches: Vec<PathBuf> = std::fs::read_dir(root().join("linux-patches"))
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    patches.sort();
    let gcc = output(Command::new(format!("{CROSS}gcc")).arg("--version"), "cross gcc")?;
    let mut parts: Vec<Vec<u8>> = vec![version.clone().into_bytes(), fragment.clone(), gcc.lines().next().unwrap_or("").into()];
    for p in &patches {
        parts.push(std::fs::read(p).map_err(|e| e.to_string())?);
    }
    let k = key(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let dir = cache_dir().join(format!("linux-{k}"));
    let result = dir.join("zImage");
    if !result.exists() {
        build_kernel(&dir, &version, &fragment_path, &fragment, &patches)?;
    }
    publish(&result, "zImage")
}

fn build_kernel(dir: &Path, version: &str, fragment_path: &Path, fragment: &[u8], patches: &[PathBuf]) -> Result<(), String> {
    let src = dir.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
    let tarball = format!("/usr/src/{SOURCE_PKG}.tar.xz");
    eprintln!("xtask: unpacking {tarball} ({SOURCE_PKG} {version})");
    run(Command::new("tar").args(["-xf", &tarball, "--strip-components=1", "-C"]).arg(&src), "unpacking the Linux source")?;
    for p in patches {
        eprintln!("xtask: applying {}", p.display());
        run(Command::new("patch").args(["-p1", "-s", "-i"]).arg(p).current_dir(&src), "patch")?;
    }
    let make = |args: &[&str]| -> Command {
        let mut c = Command::new("make");
        c.current_dir(&src).args(["ARCH=arm", &format!("CROSS_COMPILE={CROSS}")]).args(args);
        c
    };
    run(&mut make(&["-s", "tinyconfig"]), "make tinyconfig")?;
    run(
        Command::new("scripts/kconfig/merge_config.sh").args(["-m", "-O", ".", ".config"]).arg(fragment_path).current_dir(&src),
        "merging linux-patches/tessera.config",
    )?;
    run(&mut make(&["-s", "olddefconfig"]), "make olddefconfig")?;
    let config = std::fs::read_to_string(src.join(".config")).map_err(|e| e.to_string())?;
    let lost = missing_options(&String::from_utf8_lossy(fragment), &config);
    if !lost.is_empty() {
        return Err(format!(
            "{}: these options did not survive `make olddefconfig` (a dependency is off): {}",
            fragment_path.display(),
            lost.join(", ")
        ));
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    eprintln!("xtask: building Linux (zImage, {jobs} jobs; a few minutes the first time)");
    let t0 = std::time::Instant::now();
    run(&mut make(&[&format!("-j{jobs}"), "zImage"]), "building the Linux kernel")?;
    eprintln!("xtask: Linux built in {:.0} s", t0.elapsed().as_secs_f64());
    std::fs::copy(src.join("arch/arm/boot/zImage"), dir.join("zImage")).map_err(|e| e.to_string())?;
    std::fs::copy(src.join(".config"), dir.join("config")).map_err(|e| e.to_string())?;
    // The tree is large and the key changes with any input: keep only the result.
    let _ = std::fs::remove_dir_all(&src);
    Ok(())
}

/// Options the fragment sets that the final .config does not have as set.
fn missing_options(fragment: &str, config: &str) -> Vec<String> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_"))
        .filter(|want| !config.lines().any(|l| l.trim() == *want))
        .map(String::from)
        .collect()
}

/// Downloads a Debian package (any architecture) into `dir`; returns its path.
fn download(pkg: &str, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    run(Command::new("apt-get").args(["download", "-q", pkg]).current_dir(dir), &format!("apt-get download {pkg}"))?;
    let name = pkg.split(':').next().unwrap_or(pkg);
    std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with(&format!("{name}_")) && f.to_string_lossy().ends_with(".deb")))
        .ok_or(format!("apt-get download {pkg} left no .deb"))
}

fn candidate(pkg: &str) -> Result<String, String> {
    let policy = output(Command::new("apt-cache").args(["policy", pkg]), "apt-cache policy")?;
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .filter(|v| *v != "(none)")
        .map(String::from)
        .ok_or(format!("Debian has no {pkg} here (apt-cache policy {pkg})"))
}

/// Busybox applets the init script and a user at the shell need.
const APPLETS: &[&str] = &[
    "sh", "ash", "mount", "umount", "cat", "echo", "grep", "awk", "od", "cut", "sleep", "poweroff", "reboot",
    "setsid", "cttyhack", "ls", "ps", "uname", "nproc", "dmesg", "mkdir", "rm", "cp", "mv", "sync", "md5sum",
    "sha256sum", "dd", "head", "tail", "wc", "ip", "ping", "nc", "ifconfig", "mke2fs", "mkfs.ext2", "hexdump",
    "free", "top", "date", "true", "false", "test", "[", "seq", "sort", "tr", "sed", "vi", "less", "chmod",
];

fn initramfs() -> Result<(), String> {
    need_armhf()?;
    let version = candidate("busybox-static:armhf")?;
    let init_path = root().join("tests/linux-init/init");
    let init = std::fs::read(&init_path).map_err(|e| format!("{}: {e}", init_path.display()))?;
    let k = key(&[version.as_bytes(), &init, APPLETS.join(" ").as_bytes()]);
    let dir = cache_dir().join(format!("initramfs-{k}"));
    let result = dir.join("initramfs.cpio.gz");
    if !result.exists() {
        eprintln!("xtask: making the busybox initramfs (busybox-static:armhf {version})");
        let deb = download("busybox-static:armhf", &dir.join("deb"))?;
        let x = dir.join("x");
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x), "dpkg-deb -x busybox")?;
        let busybox = std::fs::read(x.join("bin/busybox")).map_err(|e| format!("busybox: {e}"))?;
        let mut c = Cpio::default();
        for d in ["bin", "sbin", "dev", "proc", "sys", "tmp", "root", "etc", "mnt"] {
            c.dir(d);
        }
        c.char_dev("dev/console", 5, 1);
        c.char_dev("dev/null", 1, 3);
        c.file("bin/busybox", 0o755, &busybox);
        for a in APPLETS {
            c.symlink(&format!("bin/{a}"), "busybox");
        }
        c.file("init", 0o755, &init);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&c.finish()).map_err(|e| e.to_string())?;
        std::fs::write(&result, gz.finish().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&x);
    }
    publish(&result, "initramfs.cpio.gz")
}

fn debian_kernel() -> Result<(), String> {
    need_armhf()?;
    // The newest 6.1 armmp-lpae image Debian has.
    let list = output(
        Command::new("apt-cache").args(["search", "--names-only", "^linux-image-6\\.1\\.0-[0-9]+-armmp-lpae$"]),
        "apt-cache search",
    )?;
    let mut names: Vec<(u32, String)> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| Some((n.strip_prefix("linux-image-6.1.0-")?.split('-').next()?.parse().ok()?, n.to_string())))
        .collect();
    names.sort();
    let (_, name) = names.pop().ok_or("Debian lists no linux-image-6.1.0-*-armmp-lpae package")?;
    let pkg = format!("{name}:armhf");
    let version = candidate(&pkg)?;
    let dir = cache_dir().join(format!("debian-kernel-{}", key(&[pkg.as_bytes(), version.as_bytes()])));
    let result = dir.join("zImage");
    if !result.exists() {
        eprintln!("xtask: downloading Debian's {pkg} {version}");
        let deb = download(&pkg, &dir.join("deb"))?;
        let x = dir.join("x");
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x), "dpkg-deb -x")?;
        let vmlinuz = std::fs::read_dir(x.join("boot"))
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with("vmlinuz-")))
            .ok_or("the Debian kernel package has no boot/vmlinuz-*")?;
        std::fs::copy(&vmlinuz, &result).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&x);
        let _ = std::fs::remove_dir_all(dir.join("deb"));
    }
    publish(&result, "debian-zImage")
}

/// A `newc` cpio archive (the initramfs format, Linux
/// `Documentation/driver-api/early-userspace/buffer-format.rst`).
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [self.ino, mode, 0, 0, nlink, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }
    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }
    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }
    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }
    fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let mut c = Cpio::default();
        c.dir("dev");
        c.char_dev("dev/console", 5, 1);
        c.file("init", 0o755, b"#!/bin/sh\n");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        let console = out.windows(11).position(|w| w == b"dev/console").unwrap();
        // rdevmajor / rdevminor are fields 10 and 11 of the header before the name.
        let header = &out[console - 110..console];
        assert_eq!(&header[6 + 9 * 8..6 + 11 * 8], b"0000000500000001");
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn config_check_names_what_did_not_stick() {
        let fragment = "# comment\nCONFIG_SMP=y\nCONFIG_ARM_LPAE=y\nCONFIG_NR_CPUS=8\n";
        let config = "CONFIG_SMP=y\n# CONFIG_ARM_LPAE is not set\nCONFIG_NR_CPUS=8\n";
        assert_eq!(missing_options(fragment, config), ["CONFIG_ARM_LPAE=y"]);
    }

    #[test]
    fn keys_change_with_any_input() {
        assert_ne!(key(&[b"6.1.1", b"CONFIG_SMP=y"]), key(&[b"6.1.1", b"CONFIG_SMP=n"]));
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]), "parts are delimited");
        assert_eq!(key(&[b"x"]).len(), 16);
    }

    #[test]
    fn artifact_paths_are_found_relative_to_the_config() {
        assert_eq!(normalize(Path::new("/w/examples/../target/linux/zImage")), PathBuf::from("/w/target/linux/zImage"));
    }
}

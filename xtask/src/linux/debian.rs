//! Artifacts made from Debian armhf packages, fetched with
//! `apt-get download` (no installation): the busybox initramfs and
//! Debian's stock kernel.
//!
//! The initramfs also carries `/bin/tessera-chan`, the channel program of
//! `examples/linux-user/`, and `/bin/dirstorm` (`tests/linux-user/`, a
//! lock-heavy workload for the benchmarks), compiled static for armhf here.
//!
//! Cache: `<cache>/initramfs-<key>/initramfs.cpio.gz` (key: this recipe,
//! the `busybox-static:armhf` version, the init script, the applet list,
//! the program's source and the cross compiler's version)
//! and `<cache>/debian-kernel-<key>/zImage` (key: the package name and
//! version).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cpio::Cpio;
use super::{cache_dir, key, lock, need_packages, output, publish, run, with_heartbeat, write_atomically};
use crate::{root, setup};

const BUSYBOX: &str = "busybox-static:armhf";
/// Bump when the layout of the initramfs below changes.
const INITRAMFS_RECIPE: &[u8] = b"tessera initramfs recipe 3: busybox, init, tessera-chan";
/// The Linux programs of the repository, as (source, `/bin` name).
const PROGRAMS: &[(&str, &str)] =
    &[("examples/linux-user/tessera-chan.c", "tessera-chan"), ("tests/linux-user/dirstorm.c", "dirstorm")];
/// What compiles them: the armhf cross compiler and its static C library.
const PROGRAM_PACKAGES: &[&str] = &["gcc-arm-linux-gnueabihf", "libc6-dev-armhf-cross"];

/// Busybox applets linked in `/bin`: what the init script runs, and what a
/// user at the shell (or a later test) wants. Each must exist in the
/// busybox binary, which is checked when the archive is made.
const APPLETS: &[&str] = &[
    "sh",
    "ash",
    "[",
    "awk",
    "cat",
    "chmod",
    "cp",
    "cttyhack",
    "cut",
    "date",
    "dd",
    "df",
    "dmesg",
    "echo",
    "env",
    "false",
    "find",
    "free",
    "grep",
    "halt",
    "head",
    "hexdump",
    "ifconfig",
    "ip",
    "kill",
    "ln",
    "ls",
    "md5sum",
    "mkdir",
    "mke2fs",
    "mknod",
    "mount",
    "mv",
    "nc",
    "nproc",
    "od",
    "ping",
    "poweroff",
    "printf",
    "ps",
    "reboot",
    "rm",
    "sed",
    "seq",
    "setsid",
    "sha256sum",
    "sleep",
    "sort",
    "stat",
    "sync",
    "tail",
    "taskset",
    "test",
    "time",
    "top",
    "touch",
    "tr",
    "true",
    "udhcpc",
    "umount",
    "uname",
    "uptime",
    "vi",
    "wc",
    "xxd",
];

/// Makes `target/linux/initramfs.cpio.gz`: `/bin/busybox` and its applet
/// links, `/dev/console` and `/dev/null` (the kernel opens the console
/// before anything mounts devtmpfs), the mount points, and `/init` =
/// `tests/linux-init/init`.
pub(super) fn initramfs() -> Result<(), String> {
    need_armhf()?;
    let version = candidate(BUSYBOX)?;
    let init_path = root().join("tests/linux-init/init");
    let init = std::fs::read(&init_path).map_err(|e| format!("{}: {e}", init_path.display()))?;
    if !init.starts_with(b"#!/bin/sh\n") {
        return Err(format!("{}: must start with #!/bin/sh", init_path.display()));
    }
    need_packages(PROGRAM_PACKAGES)?;
    let gcc = output(Command::new("arm-linux-gnueabihf-gcc").arg("--version"), "arm-linux-gnueabihf-gcc --version")?;
    let gcc = gcc.lines().next().unwrap_or_default().to_string();
    let mut sources = Vec::new();
    for (src, _) in PROGRAMS {
        let p = root().join(src);
        sources.push(std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?);
    }
    let mut parts: Vec<&[u8]> = vec![INITRAMFS_RECIPE, version.as_bytes(), &init, gcc.as_bytes()];
    let applets = APPLETS.join(" ");
    parts.push(applets.as_bytes());
    parts.extend(sources.iter().map(Vec::as_slice));
    let k = key(&parts);
    let dir = cache_dir().join(format!("initramfs-{k}"));
    let result = dir.join("initramfs.cpio.gz");
    if !result.exists() {
        let _held = lock(&format!("initramfs-{k}"))?;
        if !result.exists() {
            eprintln!("xtask: making the initramfs ({BUSYBOX} {version}, {})", init_path.display());
            let busybox = extract_one(BUSYBOX, &version, &dir, |p| p == Path::new("bin/busybox"))?;
            let mut programs = Vec::new();
            for (src, name) in PROGRAMS {
                programs.push((*name, compile(&root().join(src), &dir.join(name))?));
            }
            let archive = gzip(&archive(&busybox, &init, &programs)?)?;
            write_atomically(&result, &archive)?;
        }
    }
    publish(&result, "initramfs.cpio.gz")
}

/// Compiles one C program of the repository for armhf Linux, static (the
/// initramfs has no C library), warnings as errors.
fn compile(src: &Path, out: &Path) -> Result<Vec<u8>, String> {
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    run(
        Command::new("arm-linux-gnueabihf-gcc")
            .args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(out)
            .arg(src),
        &format!("compiling {}", src.display()),
    )?;
    std::fs::read(out).map_err(|e| format!("{}: {e}", out.display()))
}

/// The uncompressed archive.
fn archive(busybox: &[u8], init: &[u8], programs: &[(&str, Vec<u8>)]) -> Result<Vec<u8>, String> {
    let absent: Vec<&str> = APPLETS.iter().copied().filter(|a| !has_applet(busybox, a)).collect();
    if !absent.is_empty() {
        return Err(format!("{BUSYBOX} has no applet {} (xtask/src/linux/debian.rs, APPLETS)", absent.join(", ")));
    }
    let mut c = Cpio::default();
    for d in ["bin", "sbin", "dev", "etc", "mnt", "proc", "root", "sys", "tmp"] {
        c.dir(d);
    }
    c.char_dev("dev/console", 5, 1);
    c.char_dev("dev/null", 1, 3);
    c.file("bin/busybox", 0o755, busybox);
    for a in APPLETS {
        c.symlink(&format!("bin/{a}"), "busybox");
    }
    for (name, bytes) in programs {
        c.file(&format!("bin/{name}"), 0o755, bytes);
    }
    c.file("init", 0o755, init);
    Ok(c.finish())
}

/// Busybox keeps its applet names as one NUL-separated, sorted string.
fn has_applet(busybox: &[u8], name: &str) -> bool {
    let needle = [&[0u8][..], name.as_bytes(), &[0u8][..]].concat();
    busybox.windows(needle.len()).any(|w| w == needle)
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).map_err(|e| e.to_string())?;
    gz.finish().map_err(|e| e.to_string())
}

/// Makes `target/linux/debian-zImage`: `boot/vmlinuz-*` of the newest
/// `linux-image-6.1.0-N-armmp-lpae:armhf` Debian has (a zImage; its
/// virtio-mmio driver is a module, so it sees no virtio devices).
pub(super) fn stock_kernel() -> Result<(), String> {
    need_armhf()?;
    let name = match newest_lpae_image()? {
        Some(n) => n,
        None => {
            apt_update()?;
            newest_lpae_image()?.ok_or("Debian lists no linux-image-6.1.0-*-armmp-lpae package (apt-cache search)")?
        }
    };
    let pkg = format!("{name}:armhf");
    let version = candidate(&pkg)?;
    let dir = cache_dir().join(format!("debian-kernel-{}", key(&[pkg.as_bytes(), version.as_bytes()])));
    let result = dir.join("zImage");
    if !result.exists() {
        let _held = lock(&format!("debian-kernel-{name}"))?;
        if !result.exists() {
            eprintln!("xtask: fetching Debian's kernel {pkg} {version}");
            let is_vmlinuz = |p: &Path| {
                p.parent() == Some(Path::new("boot"))
                    && p.file_name().is_some_and(|f| f.to_string_lossy().starts_with("vmlinuz-"))
            };
            let zimage = extract_one(&pkg, &version, &dir, is_vmlinuz)?;
            write_atomically(&result, &zimage)?;
        }
    }
    publish(&result, "debian-zImage")
}

/// `linux-image-6.1.0-N-armmp-lpae` with the largest N apt knows.
fn newest_lpae_image() -> Result<Option<String>, String> {
    let list = output(
        Command::new("apt-cache").args(["search", "--names-only", "^linux-image-6\\.1\\.0-[0-9]+-armmp-lpae$"]),
        "apt-cache search",
    )?;
    Ok(newest_abi(&list))
}

/// From `apt-cache search` lines, the package with the highest ABI number.
fn newest_abi(list: &str) -> Option<String> {
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| Some((n.strip_prefix("linux-image-6.1.0-")?.split('-').next()?.parse::<u32>().ok()?, n)))
        .max()
        .map(|(_, n)| n.to_string())
}

/// Downloads `pkg` at `version` into `<dir>/deb`, unpacks it, and returns
/// the one file whose path inside the package satisfies `want`; the
/// download and the unpacked tree are removed afterwards.
fn extract_one(pkg: &str, version: &str, dir: &Path, want: impl Fn(&Path) -> bool) -> Result<Vec<u8>, String> {
    let deb_dir = dir.join("deb");
    let _ = std::fs::remove_dir_all(&deb_dir);
    std::fs::create_dir_all(&deb_dir).map_err(|e| format!("{}: {e}", deb_dir.display()))?;
    let deb = download(pkg, version, &deb_dir)?;
    let x = deb_dir.join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x), &format!("unpacking {}", deb.display()))?;
    let found = walk(&x).into_iter().find(|p| p.strip_prefix(&x).is_ok_and(&want));
    let bytes = match found {
        Some(p) => std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display())),
        None => Err(format!("{pkg} {version} has no such file")),
    };
    let _ = std::fs::remove_dir_all(&deb_dir);
    bytes
}

/// Every regular file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().filter_map(Result::ok) {
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(t) if t.is_file() => out.push(e.path()),
                _ => {}
            }
        }
    }
    out
}

/// `apt-get download pkg=version` into `dir`; if the mirror no longer has
/// that file (stale package lists), updates the lists and tries again.
fn download(pkg: &str, version: &str, dir: &Path) -> Result<PathBuf, String> {
    let spec = format!("{pkg}={version}");
    let what = format!("apt-get download {spec}");
    let get = || {
        with_heartbeat(&what, || run(Command::new("apt-get").args(["download", "-q", &spec]).current_dir(dir), &what))
    };
    if get().is_err() {
        apt_update()?;
        get()?;
    }
    let name = pkg.split(':').next().unwrap_or(pkg);
    std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().is_some_and(|f| {
                f.to_string_lossy().starts_with(&format!("{name}_")) && f.to_string_lossy().ends_with(".deb")
            })
        })
        .ok_or(format!("{what} left no .deb in {}", dir.display()))
}

/// The version `apt-get download` would fetch; updates the package lists
/// once if apt knows none.
fn candidate(pkg: &str) -> Result<String, String> {
    if let Some(v) = policy_candidate(pkg)? {
        return Ok(v);
    }
    apt_update()?;
    policy_candidate(pkg)?.ok_or(format!("Debian has no {pkg} here (apt-cache policy {pkg} shows no candidate)"))
}

fn policy_candidate(pkg: &str) -> Result<Option<String>, String> {
    let policy = output(Command::new("apt-cache").args(["policy", pkg]), "apt-cache policy")?;
    Ok(policy.lines().find_map(|l| l.trim().strip_prefix("Candidate: ")).filter(|v| *v != "(none)").map(String::from))
}

fn apt_update() -> Result<(), String> {
    eprintln!("xtask: updating the package lists (apt-get update)");
    with_heartbeat("apt-get update", || run(setup::as_root("apt-get").args(["update", "-qq"]), "apt-get update"))
}

/// Debian's armhf packages must be visible to apt for `apt-get download`:
/// adds the architecture (and fetches its lists) if it is not there yet.
fn need_armhf() -> Result<(), String> {
    need_packages(&["apt", "dpkg"])?;
    let archs =
        output(Command::new("dpkg").arg("--print-foreign-architectures"), "dpkg --print-foreign-architectures")?;
    if archs.lines().any(|l| l.trim() == "armhf") {
        return Ok(());
    }
    eprintln!("xtask: adding Debian's armhf architecture (dpkg --add-architecture armhf)");
    run(setup::as_root("dpkg").args(["--add-architecture", "armhf"]), "dpkg --add-architecture armhf")?;
    apt_update()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_stock_kernel_is_chosen_by_number() {
        let list =
            "linux-image-6.1.0-9-armmp-lpae - Linux 6.1 for ARMv7 multiplatform compatible SoCs supporting LPAE\n\
                    linux-image-6.1.0-50-armmp-lpae - Linux 6.1 for ARMv7 ...\n\
                    linux-image-6.1.0-10-armmp-lpae - Linux 6.1 ...\n";
        assert_eq!(newest_abi(list).as_deref(), Some("linux-image-6.1.0-50-armmp-lpae"));
        assert_eq!(newest_abi(""), None);
    }

    #[test]
    fn the_initramfs_layout() {
        let fake_busybox = [b"ELF...\0[\0".as_slice(), APPLETS.join("\0").as_bytes(), b"\0zcat\0"].concat();
        let a = archive(&fake_busybox, b"#!/bin/sh\necho hi\n", &[("tessera-chan", b"\x7fELF".to_vec())]).unwrap();
        let entries = super::super::cpio::tests::parse(&a);
        let find = |n: &str| entries.iter().find(|e| e.0 == n).unwrap_or_else(|| panic!("{n} missing"));
        assert_eq!(find("init").1, 0o100755);
        assert_eq!((find("dev/console").2, find("dev/console").3), (5, 1));
        assert_eq!(find("bin/busybox").4, fake_busybox);
        assert_eq!(find("bin/cttyhack").4, b"busybox");
        assert_eq!((find("bin/tessera-chan").1, &find("bin/tessera-chan").4[..]), (0o100755, &b"\x7fELF"[..]));
        for d in ["proc", "sys", "dev", "tmp"] {
            assert_eq!(find(d).1, 0o040755);
        }
        let e = archive(b"\0sh\0", b"#!/bin/sh\n", &[]).unwrap_err();
        assert!(e.contains("no applet ash") && !e.contains(" sh,"), "{e}");
    }

    /// What the init script runs must be linked.
    #[test]
    fn the_init_script_only_uses_linked_applets() {
        let init = std::fs::read_to_string(root().join("tests/linux-init/init")).unwrap();
        for tool in ["mount", "cat", "grep", "od", "awk", "poweroff", "reboot", "setsid", "cttyhack", "sh"] {
            assert!(init.contains(tool), "the init no longer uses {tool}: update this test");
            assert!(APPLETS.contains(&tool), "{tool} is not linked");
        }
    }
}

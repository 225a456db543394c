//! Linux guest artifacts, built or downloaded on first use and cached by
//! content under `~/.cache/tessera`:
//!
//! - `target/linux/zImage`: Linux 6.1 from Debian's `linux-source-6.1`,
//!   `tinyconfig` plus `linux-patches/tessera.config` (and the patches of
//!   `linux-patches/*.patch`, in name order), built with
//!   `gcc-arm-linux-gnueabihf` ([`kernel`]);
//! - `target/linux/initramfs.cpio.gz`: Debian's `busybox-static:armhf` and
//!   `tests/linux-init/init` ([`debian::initramfs`]);
//! - `target/linux/debian-zImage`: Debian's stock `linux-image-*-armmp-lpae`
//!   kernel, unmodified ([`debian::stock_kernel`]).
//!
//! A configuration that names one of these paths gets it made before it is
//! packed ([`ensure_artifacts_for`]). Each artifact lives in a cache folder
//! named after a hash of everything it is made from (`linux-<key>`,
//! `initramfs-<key>`, `debian-kernel-<key>`), so a second run with nothing
//! changed only compares the cached file with the one in `target/linux`,
//! and a change of any input (the fragment, a patch, the compiler, a
//! Debian package version, the init script) makes a new one.
//!
//! Everything needed is installed on first use (`crate::setup::apt_install`).

mod cpio;
mod debian;
mod kernel;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::{root, setup};

/// Where the artifacts are published: `<workspace>/target/linux`.
pub fn out_dir() -> PathBuf {
    root().join("target/linux")
}

/// The artifacts this module knows how to make, by file name in [`out_dir`].
const ARTIFACTS: &[&str] = &["zImage", "initramfs.cpio.gz", "debian-zImage"];

/// Artifacts already made or checked by this process: once is enough (a
/// test run goes through many configurations, and asking apt takes about
/// a second).
static ENSURED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// `scripts/checkpatch.pl --strict` from the 6.1 tree over each patch of
/// linux-patches/: its summary line per patch, or an error naming the first
/// patch that checkpatch finds an error in, or a warning or check that its
/// commit message does not explain (a line naming checkpatch and the
/// report's type, e.g. `checkpatch: FILE_PATH_CHANGES: ...`).
pub fn checkpatch() -> Result<Vec<String>, String> {
    need_packages(&["perl"])?;
    let tree = kernel::source_tree()?;
    let mut summaries = Vec::new();
    for patch in kernel::patch_files()? {
        let out = Command::new("perl")
            .args(["scripts/checkpatch.pl", "--strict", "--show-types"])
            .arg(&patch)
            .current_dir(&tree)
            .output()
            .map_err(|e| format!("cannot run checkpatch.pl: {e}"))?;
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        let name = patch.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let Some(total) = report.lines().find(|l| l.starts_with("total: ")) else {
            return Err(format!("checkpatch.pl --strict on linux-patches/{name} gave no summary\n{report}"));
        };
        let text = std::fs::read_to_string(&patch).map_err(|e| format!("{}: {e}", patch.display()))?;
        if let Some(why) = unexplained(&report, commit_message(&text)) {
            return Err(format!("checkpatch.pl --strict on linux-patches/{name}: {total}: {why}\n{report}"));
        }
        summaries.push(format!("linux-patches/{name}: {total}"));
    }
    Ok(summaries)
}

/// The commit message of a `git format-patch` file: from the first blank
/// line (after the headers) to the `---` that starts the diffstat.
fn commit_message(patch: &str) -> &str {
    let body = patch.split_once("\n\n").map_or("", |(_, b)| b);
    body.split_once("\n---\n").map_or(body, |(m, _)| m)
}

/// Why a checkpatch report (`--show-types`) is not acceptable: an error, or
/// a warning or check whose type no `checkpatch` line of `message` names.
fn unexplained(report: &str, message: &str) -> Option<String> {
    let explained: Vec<&str> = message.lines().filter(|l| l.contains("checkpatch")).collect();
    for l in report.lines() {
        let Some((level, rest)) = l.split_once(':') else { continue };
        if !matches!(level, "ERROR" | "WARNING" | "CHECK") {
            continue;
        }
        let ty = rest.split(':').next().unwrap_or_default();
        if level == "ERROR" {
            return Some(format!("error {ty}"));
        }
        if !explained.iter().any(|e| e.contains(ty)) {
            return Some(format!("{level} {ty} is not explained in the commit message"));
        }
    }
    None
}

/// Makes every `target/linux/` file that `config` names as a VM's `kernel`
/// or `initrd`; other paths are left alone.
///
/// Only those two keys are read, from the raw TOML: `crate::config::load`
/// refuses a configuration whose kernel does not exist yet, which is the
/// very case this function is for. A file that cannot be read or parsed is
/// left for the packer, which reports it properly.
pub fn ensure_artifacts_for(config: &Path) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(config) else { return Ok(()) };
    let config = std::path::absolute(config).map_err(|e| format!("{}: {e}", config.display()))?;
    for name in wanted_artifacts(&config, &text, &out_dir())? {
        if ENSURED.lock().is_ok_and(|d| d.contains(&name)) {
            continue;
        }
        match name.as_str() {
            "zImage" => kernel::ensure()?,
            "initramfs.cpio.gz" => debian::initramfs()?,
            "debian-zImage" => debian::stock_kernel()?,
            _ => unreachable!("wanted_artifacts only returns known names"),
        }
        if let Ok(mut d) = ENSURED.lock() {
            d.push(name);
        }
    }
    Ok(())
}

/// The file names under `out` that the configuration (absolute path
/// `config`, text `text`) names as a kernel or initrd, without repeats.
fn wanted_artifacts(config: &Path, text: &str, out: &Path) -> Result<Vec<String>, String> {
    let Ok(doc) = text.parse::<toml::Table>() else { return Ok(Vec::new()) };
    let dir = config.parent().unwrap_or(Path::new("/"));
    let mut wanted: Vec<String> = Vec::new();
    for (i, vm) in doc.get("vm").and_then(|v| v.as_array()).into_iter().flatten().enumerate() {
        for key in ["kernel", "initrd"] {
            let Some(p) = vm.get(key).and_then(|v| v.as_str()) else { continue };
            let full = normalize(&dir.join(p));
            let Ok(rel) = full.strip_prefix(out) else { continue };
            let name = rel.to_string_lossy().into_owned();
            if !ARTIFACTS.contains(&name.as_str()) {
                return Err(format!(
                    "{}: vm[{i}].{key}: no recipe makes {} (known: {})",
                    config.display(),
                    out.join(&name).display(),
                    ARTIFACTS.join(", ")
                ));
            }
            if !wanted.contains(&name) {
                wanted.push(name);
            }
        }
    }
    Ok(wanted)
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

/// `~/.cache/tessera` (or `$XDG_CACHE_HOME/tessera`).
fn cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("tessera");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/tessera")
}

/// 16 hex digits of the SHA-256 of `parts`, each length-prefixed so that
/// moving bytes from one part to the next changes the key.
fn key(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Holds `<cache>/<name>.lock` until dropped, so that two xtask processes
/// (a test run and a bench, say) never make the same artifact at once.
fn lock(name: &str) -> Result<File, String> {
    if let Some(f) = try_lock(name)? {
        return Ok(f);
    }
    let path = cache_dir().join(format!("{name}.lock"));
    eprintln!("xtask: waiting for another xtask that is making {name} ({})", path.display());
    let f = lock_file(&path)?;
    f.lock().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(f)
}

/// [`lock`] if nobody holds it now, else `None`.
fn try_lock(name: &str) -> Result<Option<File>, String> {
    let path = cache_dir().join(format!("{name}.lock"));
    let f = lock_file(&path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
    }
}

fn lock_file(path: &Path) -> Result<File, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so an
/// interrupted run never leaves a truncated artifact that looks finished.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Copies a cached result to `target/linux/<name>`, unless it is already
/// there with the same bytes.
fn publish(cached: &Path, name: &str) -> Result<(), String> {
    let dst = out_dir().join(name);
    std::fs::create_dir_all(out_dir()).map_err(|e| format!("{}: {e}", out_dir().display()))?;
    let bytes = std::fs::read(cached).map_err(|e| format!("{}: {e}", cached.display()))?;
    if std::fs::read(&dst).ok().as_deref() != Some(&bytes[..]) {
        write_atomically(&dst, &bytes)?;
        eprintln!("xtask: {} ({} KiB, from {})", dst.display(), bytes.len() >> 10, cached.display());
    }
    Ok(())
}

/// Runs `f` and, while it runs, prints a line every 10 s: for long steps
/// whose tools print nothing (unpacking, downloading).
fn with_heartbeat<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let (done, wait) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let t0 = Instant::now();
            while let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(Duration::from_secs(10)) {
                eprintln!("xtask: {what}: still at it ({} s)", t0.elapsed().as_secs());
            }
        });
        let r = f();
        drop(done);
        r
    })
}

/// Runs a command with the terminal as its output; fails naming `what`.
fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let st = cmd.status().map_err(|e| format!("{what}: cannot start {:?}: {e}", cmd.get_program()))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({st})"))
    }
}

/// Runs a command and returns its standard output, trimmed.
fn output(cmd: &mut Command, what: &str) -> Result<String, String> {
    let o = cmd.output().map_err(|e| format!("{what}: cannot start {:?}: {e}", cmd.get_program()))?;
    if !o.status.success() {
        return Err(format!("{what} failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs those of `pkgs` that are not installed yet.
fn need_packages(pkgs: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    with_heartbeat(&format!("installing {}", missing.join(" ")), || setup::apt_install(&missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpatch_warnings_need_an_explanation() {
        let patch = "From x\nSubject: [PATCH] a: b\n\nWhy.\n\ncheckpatch: FILE_PATH_CHANGES: covered by MAINTAINERS\n---\n a | 1 +\n";
        let msg = commit_message(patch);
        assert!(msg.starts_with("Why.") && msg.ends_with("covered by MAINTAINERS"), "{msg:?}");
        let warn = "WARNING:FILE_PATH_CHANGES: added, moved or deleted file(s)\n";
        assert_eq!(unexplained(warn, msg), None);
        let barrier = "WARNING:MEMORY_BARRIER: memory barrier without comment\n";
        assert!(unexplained(barrier, msg).unwrap().contains("MEMORY_BARRIER"));
        assert!(unexplained("ERROR:SPACING: x\n", "checkpatch: SPACING").unwrap().starts_with("error"));
        assert_eq!(unexplained("total: 0 errors, 0 warnings, 0 checks, 8 lines checked\n", ""), None);
    }

    #[test]
    fn keys_change_with_any_input() {
        assert_ne!(key(&[b"6.1.1", b"CONFIG_SMP=y"]), key(&[b"6.1.1", b"CONFIG_SMP=n"]));
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]), "parts are delimited");
        assert_eq!(key(&[b"x"]), key(&[b"x"]));
        assert_eq!(key(&[b"x"]).len(), 16);
    }

    #[test]
    fn artifact_paths_are_found_relative_to_the_config() {
        assert_eq!(normalize(Path::new("/w/examples/../target/linux/zImage")), PathBuf::from("/w/target/linux/zImage"));
        let out = Path::new("/w/target/linux");
        let text = r#"
            [system]
            pcpus = 2
            [[vm]]
            name = "a"
            kernel = "../../target/linux/zImage"
            initrd = "../../target/linux/initramfs.cpio.gz"
            [[vm]]
            name = "b"
            kernel = "../../target/linux/debian-zImage"
            initrd = "../../target/linux/initramfs.cpio.gz"
            [[vm]]
            name = "c"
            kernel = "../../target/armv7a-none-eabi/release/hello"
        "#;
        let got = wanted_artifacts(Path::new("/w/tests/configs/x.toml"), text, out).unwrap();
        assert_eq!(got, ["zImage", "initramfs.cpio.gz", "debian-zImage"]);
    }

    #[test]
    fn unknown_artifacts_and_bad_toml() {
        let out = Path::new("/w/target/linux");
        let text = "[[vm]]\nname = \"a\"\nkernel = \"../target/linux/bzImage\"\n";
        let e = wanted_artifacts(Path::new("/w/examples/x.toml"), text, out).unwrap_err();
        assert!(e.contains("vm[0].kernel") && e.contains("/w/target/linux/bzImage"), "{e}");
        // Broken TOML is the packer's to report.
        assert_eq!(wanted_artifacts(Path::new("/w/x.toml"), "[[vm", out).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn atomic_writes_and_heartbeat() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!d.path().join("a.part").exists());
        assert_eq!(with_heartbeat("nothing", || 7), 7);
    }

    /// Every Linux configuration packs, with stand-ins of the artifacts'
    /// size (the stock kernel is about 5.4 MiB, ours 1.6 MiB, the
    /// initramfs 0.9 MiB).
    #[test]
    fn every_linux_configuration_packs() {
        let tree = tempfile::tempdir().unwrap();
        let t = tree.path();
        for d in ["examples", "tests/configs", "target/linux", "target/armv7a-none-eabi/release"] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        let mut configs = vec![PathBuf::from("examples/linux-smp.toml"), PathBuf::from("examples/linux-freertos.toml")];
        for e in std::fs::read_dir(root().join("tests/configs")).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with("linux-") && name.ends_with(".toml") {
                configs.push(PathBuf::from("tests/configs").join(name));
            }
        }
        assert!(configs.len() >= 7, "{configs:?}");
        for c in &configs {
            std::fs::copy(root().join(c), t.join(c)).unwrap();
        }
        for (name, size) in [("zImage", 2 << 20), ("debian-zImage", 6 << 20), ("initramfs.cpio.gz", 1 << 20)] {
            std::fs::write(t.join("target/linux").join(name), crate::testutil::fake_zimage(size)).unwrap();
        }
        // Bare-metal VMs beside Linux (linux-paravirt, linux-freertos-channel).
        let guest = crate::testutil::tiny_elf(0x4000_0000, &[(0x4000_0000, 0x4000_0000, vec![0; 4], 4)]);
        for name in ["hello", "freertos-demo"] {
            std::fs::write(t.join("target/armv7a-none-eabi/release").join(name), &guest).unwrap();
        }
        let hyp = t.join("hyp.elf");
        std::fs::write(&hyp, crate::testutil::fake_hypervisor()).unwrap();
        for c in &configs {
            let text = std::fs::read_to_string(t.join(c)).unwrap();
            assert!(
                !wanted_artifacts(&t.join(c), &text, &t.join("target/linux")).unwrap().is_empty(),
                "{}",
                c.display()
            );
            let packed =
                crate::pack::pack(&t.join(c), &hyp, &t.join("out")).unwrap_or_else(|e| panic!("{}: {e}", c.display()));
            assert!(!packed.vm_names.is_empty());
        }
    }
}

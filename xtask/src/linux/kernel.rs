//! `target/linux/zImage`: Linux 6.1 from Debian's `linux-source-6.1`.
//!
//! Recipe: unpack `/usr/src/linux-source-6.1.tar.xz`, apply
//! `linux-patches/*.patch` in name order (`patch -p1`), `make tinyconfig`,
//! merge `linux-patches/tessera.config` (`scripts/kconfig/merge_config.sh`,
//! then `make olddefconfig`), check that every option of the fragment made
//! it into `.config`, `make zImage`.
//!
//! Cache: `<cache>/linux-<key>/` holds `src/` (the unpacked, configured and
//! built tree: `vmlinux` and `System.map` are there for debugging a guest),
//! `zImage` and `config`. The key hashes the recipe's version, the
//! source package's version, the fragment, the patches (names and bytes)
//! and the cross toolchain's version. An interrupted build resumes in the
//! same tree; when a new key is built, the trees of older keys are deleted
//! (their `zImage` and `config` are kept, so going back is instant).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::{cache_dir, key, lock, need_packages, output, publish, run, try_lock, with_heartbeat, write_atomically};
use crate::kernel::{ZIMAGE_MAGIC, ZIMAGE_MAGIC_OFFSET};
use crate::root;

const SOURCE_PKG: &str = "linux-source-6.1";
const CROSS: &str = "arm-linux-gnueabihf-";
/// Bump when the recipe below changes in a way that changes the result.
const RECIPE: &[u8] = b"tessera linux recipe 2: tinyconfig + merge_config.sh -m + olddefconfig, zImage";
/// Debian packages the build runs (found by tracing every program a build
/// executes on Debian 12): the source, the cross compiler and binutils,
/// the host compiler and C library for the build's own tools (kconfig,
/// fixdep, ...), make, flex and bison for kconfig's parser, bc for
/// `timeconst.h`, xz to unpack; `patch` only when there are patches.
const BUILD_PACKAGES: &[&str] = &[
    SOURCE_PKG,
    "gcc-arm-linux-gnueabihf",
    "binutils-arm-linux-gnueabihf",
    "gcc",
    "libc6-dev",
    "make",
    "flex",
    "bison",
    "bc",
    "xz-utils",
];
/// Marks a tree that is unpacked, patched and configured (checked).
const CONFIGURED: &str = ".tessera-configured";

/// Everything the kernel is made from.
#[derive(Clone, Debug)]
pub(super) struct Inputs {
    pub source_version: String,
    pub fragment: Vec<u8>,
    /// (file name, contents), in the order they are applied.
    pub patches: Vec<(String, Vec<u8>)>,
    /// `--version` first lines of the cross gcc and ld.
    pub toolchain: String,
}

impl Inputs {
    pub fn key(&self) -> String {
        let mut parts: Vec<&[u8]> =
            vec![RECIPE, self.source_version.as_bytes(), &self.fragment, self.toolchain.as_bytes()];
        for (name, bytes) in &self.patches {
            parts.push(name.as_bytes());
            parts.push(bytes);
        }
        key(&parts)
    }
}

fn patches_dir() -> PathBuf {
    root().join("linux-patches")
}

fn fragment_path() -> PathBuf {
    patches_dir().join("tessera.config")
}

/// Reads the inputs as they are now.
fn current_inputs() -> Result<Inputs, String> {
    let source_version = output(
        Command::new("dpkg-query").args(["-W", "-f=${Version}", SOURCE_PKG]),
        "dpkg-query (the Linux source's version)",
    )?;
    let fragment = std::fs::read(fragment_path()).map_err(|e| format!("{}: {e}", fragment_path().display()))?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(patches_dir())
        .map_err(|e| format!("{}: {e}", patches_dir().display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    names.sort();
    let mut patches = Vec::new();
    for p in names {
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        patches.push((p.file_name().unwrap_or_default().to_string_lossy().into_owned(), bytes));
    }
    let first_line = |tool: &str| -> Result<String, String> {
        let v = output(Command::new(format!("{CROSS}{tool}")).arg("--version"), &format!("{CROSS}{tool} --version"))?;
        Ok(v.lines().next().unwrap_or_default().to_string())
    };
    let toolchain = format!("{}\n{}", first_line("gcc")?, first_line("ld")?);
    Ok(Inputs { source_version, fragment, patches, toolchain })
}

/// Makes `target/linux/zImage` (building it only if the cache has no
/// result for the current inputs).
pub(super) fn ensure() -> Result<(), String> {
    need_packages(BUILD_PACKAGES)?;
    let inputs = current_inputs()?;
    if !inputs.patches.is_empty() {
        need_packages(&["patch"])?;
    }
    let k = inputs.key();
    let dir = cache_dir().join(format!("linux-{k}"));
    let result = dir.join("zImage");
    if !result.exists() {
        let _held = lock(&format!("linux-{k}"))?;
        if !result.exists() {
            build(&dir, &inputs)?;
        }
        drop_older_trees(&dir);
    }
    publish(&result, "zImage")
}

/// The unpacked, patched tree the current zImage was built from (made if
/// need be): where `scripts/checkpatch.pl` runs.
pub(super) fn source_tree() -> Result<PathBuf, String> {
    ensure()?;
    let src = cache_dir().join(format!("linux-{}", current_inputs()?.key())).join("src");
    if src.join("scripts/checkpatch.pl").exists() {
        Ok(src)
    } else {
        Err(format!("{}: no Linux tree with scripts/checkpatch.pl", src.display()))
    }
}

/// The patches of linux-patches/, in the order they are applied.
pub(super) fn patch_files() -> Result<Vec<PathBuf>, String> {
    Ok(current_inputs()?.patches.iter().map(|(name, _)| patches_dir().join(name)).collect())
}

fn build(dir: &Path, inputs: &Inputs) -> Result<(), String> {
    let src = dir.join("src");
    let t0 = Instant::now();
    if src.join(CONFIGURED).exists() {
        eprintln!("xtask: resuming the Linux build in {}", src.display());
    } else {
        prepare(&src, inputs)?;
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    eprintln!(
        "xtask: building Linux ({SOURCE_PKG} {}, zImage, make -j{jobs}) in {}",
        inputs.source_version,
        src.display()
    );
    run(&mut make(&src, &[&format!("-j{jobs}"), "zImage"]), "building the Linux kernel (make zImage)")?;
    let zimage = std::fs::read(src.join("arch/arm/boot/zImage")).map_err(|e| format!("the built zImage: {e}"))?;
    if !is_zimage(&zimage) {
        return Err(format!("{}: not a zImage (no magic at 0x24)", src.join("arch/arm/boot/zImage").display()));
    }
    let config = std::fs::read(src.join(".config")).map_err(|e| format!("the final .config: {e}"))?;
    write_atomically(&dir.join("config"), &config)?;
    write_atomically(&dir.join("zImage"), &zimage)?;
    eprintln!(
        "xtask: Linux built in {:.0} s: {} ({} KiB)",
        t0.elapsed().as_secs_f64(),
        dir.join("zImage").display(),
        zimage.len() >> 10
    );
    Ok(())
}

/// Unpacks, patches and configures a fresh tree in `src`.
fn prepare(src: &Path, inputs: &Inputs) -> Result<(), String> {
    if src.exists() {
        std::fs::remove_dir_all(src).map_err(|e| format!("removing {}: {e}", src.display()))?;
    }
    std::fs::create_dir_all(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let tarball = format!("/usr/src/{SOURCE_PKG}.tar.xz");
    eprintln!("xtask: unpacking {tarball} ({SOURCE_PKG} {}) into {}", inputs.source_version, src.display());
    with_heartbeat("unpacking the Linux source", || {
        run(
            Command::new("tar").args(["-xf", &tarball, "--strip-components=1", "-C"]).arg(src),
            "unpacking the Linux source",
        )
    })?;
    for (name, _) in &inputs.patches {
        eprintln!("xtask: applying linux-patches/{name}");
        run(
            Command::new("patch").args(["-p1", "-s", "--forward", "-i"]).arg(patches_dir().join(name)).current_dir(src),
            &format!("applying linux-patches/{name}"),
        )?;
    }
    run(&mut make(src, &["-s", "tinyconfig"]), "make tinyconfig")?;
    // The fragment is merged from the bytes that went into the key.
    let fragment = src.join("tessera.config");
    std::fs::write(&fragment, &inputs.fragment).map_err(|e| format!("{}: {e}", fragment.display()))?;
    output(
        Command::new("sh")
            .args(["scripts/kconfig/merge_config.sh", "-m", "-O", ".", ".config", "tessera.config"])
            .current_dir(src),
        "merging linux-patches/tessera.config",
    )?;
    run(&mut make(src, &["-s", "olddefconfig"]), "make olddefconfig")?;
    let config = std::fs::read_to_string(src.join(".config")).map_err(|e| format!("the final .config: {e}"))?;
    let lost = options_lost(&String::from_utf8_lossy(&inputs.fragment), &config);
    if !lost.is_empty() {
        return Err(format!(
            "{}: these options are not in the final .config (a dependency is off, or the symbol does not exist): {}",
            fragment_path().display(),
            lost.join(", ")
        ));
    }
    std::fs::write(src.join(CONFIGURED), b"").map_err(|e| e.to_string())
}

fn make(src: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("make");
    c.current_dir(src).args(["ARCH=arm", &format!("CROSS_COMPILE={CROSS}")]).args(args);
    c
}

/// Whether `bytes` is an Arm zImage (Linux `Documentation/arch/arm/booting.rst`).
fn is_zimage(bytes: &[u8]) -> bool {
    bytes.get(ZIMAGE_MAGIC_OFFSET..ZIMAGE_MAGIC_OFFSET + 4) == Some(&ZIMAGE_MAGIC.to_le_bytes()[..])
}

/// The settings of `fragment` (`CONFIG_X=v` and `# CONFIG_X is not set`)
/// that the final `config` does not have, as the fragment writes them.
/// Kconfig drops an option silently when its dependencies are off.
pub(super) fn options_lost(fragment: &str, config: &str) -> Vec<String> {
    let value_of = |sym: &str| -> Option<&str> {
        config.lines().map(str::trim).find_map(|l| {
            if let Some(rest) = l.strip_prefix(sym).and_then(|r| r.strip_prefix('=')) {
                return Some(rest);
            }
            (l.strip_prefix("# ").and_then(|r| r.strip_prefix(sym)) == Some(" is not set")).then_some("n")
        })
    };
    let mut lost = Vec::new();
    for line in fragment.lines().map(str::trim) {
        let (sym, want) = if let Some((sym, v)) = line.split_once('=').filter(|(s, _)| s.starts_with("CONFIG_")) {
            (sym, v)
        } else if let Some(sym) = line.strip_prefix("# ").and_then(|r| r.strip_suffix(" is not set")) {
            (sym, "n")
        } else {
            continue;
        };
        // An option absent from .config is off ("n"), when that is what the fragment wants.
        if value_of(sym).unwrap_or("n") != want {
            lost.push(line.to_string());
        }
    }
    lost
}

/// Deletes the source trees of other kernel keys (about 1.5 GB each);
/// their results stay. A tree whose key another xtask holds (building it)
/// is left alone.
fn drop_older_trees(current: &Path) {
    let Ok(entries) = std::fs::read_dir(cache_dir()) else { return };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let tree = e.path().join("src");
        if !name.starts_with("linux-") || e.path() == current || !tree.is_dir() {
            continue;
        }
        let Ok(Some(_held)) = try_lock(&name) else { continue };
        eprintln!("xtask: deleting the build tree of an older kernel, {}", tree.display());
        let _ = std::fs::remove_dir_all(&tree);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            source_version: "6.1.192-2".into(),
            fragment: b"CONFIG_SMP=y\n".to_vec(),
            patches: vec![],
            toolchain: "arm-linux-gnueabihf-gcc (Debian 12.2.0-14) 12.2.0\nGNU ld (GNU Binutils for Debian) 2.40"
                .into(),
        }
    }

    #[test]
    fn the_cache_key_follows_every_input() {
        let base = inputs();
        let k = base.key();
        assert_eq!(k, inputs().key(), "stable");
        assert_eq!(k.len(), 16);
        let mut i = inputs();
        i.fragment = b"CONFIG_SMP=y\nCONFIG_NR_CPUS=8\n".to_vec();
        assert_ne!(i.key(), k, "fragment");
        let mut i = inputs();
        i.source_version = "6.1.193-1".into();
        assert_ne!(i.key(), k, "source version");
        let mut i = inputs();
        i.toolchain = "arm-linux-gnueabihf-gcc (Debian 12.2.0-15) 12.2.0".into();
        assert_ne!(i.key(), k, "compiler");
        let mut a = inputs();
        a.patches = vec![("0001-a.patch".into(), b"A".to_vec()), ("0002-b.patch".into(), b"B".to_vec())];
        let mut b = inputs();
        b.patches = vec![("0001-b.patch".into(), b"B".to_vec()), ("0002-a.patch".into(), b"A".to_vec())];
        assert_ne!(a.key(), k, "a patch");
        assert_ne!(a.key(), b.key(), "patch order");
    }

    #[test]
    fn the_config_check_names_what_did_not_stick() {
        let fragment = "# comment\nCONFIG_SMP=y\nCONFIG_ARM_LPAE=y\nCONFIG_NR_CPUS=8\n\
                        # CONFIG_IPV6 is not set\n# CONFIG_SWAP is not set\nCONFIG_VIRTIO_BLK=y\nCONFIG_CMDLINE=\"\"\n";
        let config = "CONFIG_SMP=y\n# CONFIG_ARM_LPAE is not set\nCONFIG_NR_CPUS=4\nCONFIG_SWAP=y\n\
                      CONFIG_SMP_ON_UP=y\nCONFIG_CMDLINE=\"\"\n";
        assert_eq!(
            options_lost(fragment, config),
            ["CONFIG_ARM_LPAE=y", "CONFIG_NR_CPUS=8", "# CONFIG_SWAP is not set", "CONFIG_VIRTIO_BLK=y"]
        );
        assert!(options_lost(
            fragment,
            "CONFIG_SMP=y\nCONFIG_ARM_LPAE=y\nCONFIG_NR_CPUS=8\nCONFIG_VIRTIO_BLK=y\nCONFIG_CMDLINE=\"\"\n"
        )
        .is_empty());
    }

    #[test]
    fn the_fragment_asks_for_what_the_guest_needs() {
        let fragment = std::fs::read_to_string(fragment_path()).unwrap();
        for want in [
            "MMU",
            "ARCH_MULTI_V7",
            "ARCH_VIRT",
            "ARM_LPAE",
            "SMP",
            "HOTPLUG_CPU",
            "ARM_PSCI",
            "ARM_GIC",
            "ARM_ARCH_TIMER",
            "SERIAL_AMBA_PL011",
            "SERIAL_AMBA_PL011_CONSOLE",
            "TTY",
            "PRINTK",
            "BLK_DEV_INITRD",
            "RD_GZIP",
            "DEVTMPFS",
            "DEVTMPFS_MOUNT",
            "PROC_FS",
            "SYSFS",
            "BINFMT_ELF",
            "BINFMT_SCRIPT",
            "VFP",
            "NEON",
            "OF",
            "VIRTIO_MMIO",
            "VIRTIO_BLK",
            "VIRTIO_NET",
            "VIRTIO_CONSOLE",
            "NET",
            "HW_RANDOM_VIRTIO",
            "EXT2_FS",
        ] {
            assert!(fragment.lines().any(|l| l == format!("CONFIG_{want}=y")), "CONFIG_{want}=y missing");
        }
        let cpus = fragment.lines().find_map(|l| l.strip_prefix("CONFIG_NR_CPUS=")).unwrap();
        assert!(cpus.parse::<u32>().unwrap() >= 8);
    }

    #[test]
    fn zimages_are_recognized() {
        assert!(is_zimage(&crate::testutil::fake_zimage(0x100)));
        assert!(!is_zimage(&[0u8; 0x100]));
        assert!(!is_zimage(&[0u8; 4]));
    }
}

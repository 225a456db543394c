//! The configuration checker and the packer, with any text as the file.
//!
//! The file sits where the test configurations do, in a scratch tree that
//! has every image they name (tiny stand-ins: raw binaries, a zImage
//! header, sparse disks), so the seeds, which are the test configurations
//! themselves, reach the packer.
//!
//! Oracles: a refusal is one line, `error: <file>...`, naming the file; a
//! configuration the checker accepts either packs into a payload the
//! hypervisor's own parser accepts, or is refused by the packer with a
//! reason (never "internal error": every limit the hypervisor enforces is
//! checked before the payload is built).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tessera_payload::Payload;
use xtask::{config, pack};

const BINARIES: &[&str] =
    &["bench", "chan", "freertos-demo", "freertos-demo-up", "hello", "hostile", "smp", "vblk", "vrng", "worker"];
const DISKS: &[&str] = &["bench-blk", "blk-shared-ro", "blk-two-vms", "guest-blk"];

/// The scratch tree, made once per process; returns where the fuzzed file
/// is taken to be.
fn tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let root = xtask::root().join("target/fuzz/config-tree");
        let put = |rel: &str, bytes: &[u8], len: u64| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            if std::fs::metadata(&p).is_ok_and(|m| m.len() == len) {
                return;
            }
            // Written aside and renamed: fuzzing processes may share the tree.
            let tmp = p.with_extension(format!("tmp{}", std::process::id()));
            let f = std::fs::File::create(&tmp).unwrap();
            use std::io::Write;
            (&f).write_all(bytes).unwrap();
            f.set_len(len).unwrap();
            std::fs::rename(&tmp, &p).unwrap();
        };
        for b in BINARIES {
            // A raw binary: "wfi; b ." in Arm encoding.
            let code = [0x03, 0xf0, 0x20, 0xe3, 0xfe, 0xff, 0xff, 0xea];
            put(&format!("target/armv7a-none-eabi/release/{b}"), &code, 4096);
        }
        let mut zimage = vec![0u8; 0x30];
        zimage[0x24..0x28].copy_from_slice(&xtask::kernel::ZIMAGE_MAGIC.to_le_bytes());
        put("target/linux/zImage", &zimage, 64 << 10);
        put("target/linux/debian-zImage", &zimage, 64 << 10);
        put("target/linux/initramfs.cpio.gz", b"\x1f\x8b", 16 << 10);
        for d in DISKS {
            put(&format!("target/disks/{d}.img"), &[], 64 << 20);
        }
        root.join("tests/configs/fuzz.toml")
    })
}

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = tree();
    let one_line = |e: &config::ConfigError| {
        let s = e.to_string();
        assert!(!s.contains('\n'), "a refusal over several lines: {s:?}");
        assert!(s.starts_with("error: "), "{s:?}");
        assert!(e.file.is_absolute() || e.file == path || s.contains(&path.display().to_string()));
        s
    };
    let cfg = match config::parse(path, &text) {
        Ok(cfg) => cfg,
        Err(e) => {
            let s = one_line(&e);
            assert!(s.contains(&path.display().to_string()), "the refusal does not name the file: {s}");
            return;
        }
    };
    match pack::build_payload(&cfg) {
        Ok(payload) => {
            if let Err(e) = Payload::parse(&payload) {
                panic!("the packer built a payload the hypervisor refuses: {e}");
            }
        }
        Err(e) => {
            let s = one_line(&e);
            assert!(!s.contains("internal error"), "the checker passed what the hypervisor refuses: {s}");
        }
    }
}

/// Where the seed corpus of this target is: the test configurations.
pub fn seed_dirs() -> Vec<PathBuf> {
    let root = xtask::root();
    vec![root.join("tests/configs"), root.join("tests/configs/bad"), root.join("examples")]
}

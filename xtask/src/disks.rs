//! Disk images for the block-device scenarios: made before a run, read
//! back after it with the host's e2fsprogs (mke2fs, debugfs), so a test
//! checks what actually reached the disk, not what a guest says it wrote.

use std::path::{Path, PathBuf};
use std::process::Command;
use tessera_scenarios::{DiskContent, DiskScenario};

use crate::root;

const MIB: u64 = 1 << 20;

/// Makes every image of `ds` afresh.
pub fn prepare(ds: &DiskScenario) -> Result<(), String> {
    for img in ds.images {
        let path = root().join(img.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let _ = std::fs::remove_file(&path);
        let size = img.size_mib as u64 * MIB;
        match img.content {
            DiskContent::Zero => write_sparse(&path, size)?,
            DiskContent::SectorNumbers => {
                let mut bytes = vec![0u8; size as usize];
                for (n, sector) in bytes.chunks_mut(512).enumerate() {
                    let label = format!("sector {n}");
                    sector[..label.len()].copy_from_slice(label.as_bytes());
                }
                std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            DiskContent::Ext2Data { bytes } => {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                std::fs::write(dir.path().join("data"), pattern(bytes as usize)).map_err(|e| e.to_string())?;
                write_sparse(&path, size)?;
                run(Command::new(sbin("mke2fs")).args(["-q", "-F", "-t", "ext2", "-d"]).arg(dir.path()).arg(&path))?;
            }
        }
    }
    Ok(())
}

/// Checks, after the run, every file read back and every expected content
/// against the digests the VMs printed.
pub fn verify(ds: &DiskScenario, lines: &[String]) -> Result<(), String> {
    for rb in ds.readback {
        let printed = digest_after(lines, rb.line)?;
        let image = root().join(rb.image);
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let range = dir.path().join("range.img");
        copy_range(&image, rb.offset_mib as u64 * MIB, rb.size_mib as u64 * MIB, &range)?;
        let out = dir.path().join("file");
        run(Command::new(sbin("debugfs")).arg("-R").arg(format!("dump {} {}", rb.file, out.display())).arg(&range))?;
        if !out.exists() {
            return Err(format!(
                "{}: no {} in the filesystem at {} MiB (debugfs found nothing)",
                rb.image, rb.file, rb.offset_mib
            ));
        }
        let on_disk = md5_file(&out)?;
        if on_disk != printed {
            return Err(format!(
                "{}: {} at {} MiB has MD5 {on_disk} on the disk, the VM printed {printed}",
                rb.image, rb.file, rb.offset_mib
            ));
        }
        println!(
            "    host: {} at {} MiB of {} reads back with MD5 {on_disk}, as the VM wrote",
            rb.file, rb.offset_mib, rb.image
        );
    }
    for &(line, k) in ds.expect_content {
        let printed = digest_after(lines, line)?;
        let want = match ds.images[k].content {
            DiskContent::Ext2Data { bytes } => md5_bytes(&pattern(bytes as usize))?,
            other => return Err(format!("expect_content on an image without a file ({other:?})")),
        };
        if printed != want {
            return Err(format!("{line:?} printed {printed}, the file the host made has MD5 {want}"));
        }
    }
    Ok(())
}

/// A fixed pseudo-random sequence (xorshift32), so the content is known
/// without storing it.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A zero-filled (sparse) file of `size` bytes; the error starts with the path.
pub fn write_sparse(path: &Path, size: u64) -> Result<(), String> {
    let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.set_len(size).map_err(|e| format!("{}: {e}", path.display()))
}

fn copy_range(image: &Path, offset: u64, size: u64, out: &PathBuf) -> Result<(), String> {
    let bytes = std::fs::read(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let end = offset + size;
    if end > bytes.len() as u64 {
        return Err(format!("{}: {} bytes, the range ends at {end}", image.display(), bytes.len()));
    }
    std::fs::write(out, &bytes[offset as usize..end as usize]).map_err(|e| e.to_string())
}

/// The hex digest ending the first console line that starts with `prefix`.
fn digest_after(lines: &[String], prefix: &str) -> Result<String, String> {
    let line = lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .ok_or_else(|| format!("no console line starts with {prefix:?}"))?;
    let digest = line[prefix.len()..].trim();
    if digest.len() == 32 && digest.bytes().all(|c| c.is_ascii_hexdigit()) {
        Ok(digest.to_ascii_lowercase())
    } else {
        Err(format!("{line:?} does not end with an MD5 digest"))
    }
}

fn md5_file(path: &Path) -> Result<String, String> {
    let out = Command::new("md5sum").arg(path).output().map_err(|e| format!("md5sum: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| format!("md5sum {} printed nothing", path.display()))
}

fn md5_bytes(bytes: &[u8]) -> Result<String, String> {
    let f = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    std::fs::write(f.path(), bytes).map_err(|e| e.to_string())?;
    md5_file(f.path())
}

/// e2fsprogs live in /usr/sbin, which a user's PATH may lack.
fn sbin(tool: &str) -> PathBuf {
    let p = Path::new("/usr/sbin").join(tool);
    if p.exists() {
        p
    } else {
        PathBuf::from(tool)
    }
}

fn run(c: &mut Command) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("{:?}: {e} (run `cargo xtask setup`)", c.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{:?} failed: {}", c.get_program(), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_lines() {
        let lines = vec!["a: x md5 0123456789abcdef0123456789ABCDEF".to_string(), "a: y md5 nope".to_string()];
        assert_eq!(digest_after(&lines, "a: x md5 ").unwrap(), "0123456789abcdef0123456789abcdef");
        assert!(digest_after(&lines, "a: y md5 ").is_err());
        assert!(digest_after(&lines, "b: ").is_err());
    }

    #[test]
    fn pattern_is_fixed() {
        assert_eq!(pattern(4), pattern(8)[..4]);
        assert_ne!(pattern(64).iter().filter(|&&b| b == 0).count(), 64);
    }
}

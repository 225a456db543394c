//! Guest kernel images: what kind a file is, and where its bytes go in the
//! guest's RAM.
//!
//! Three kinds, told apart by their first bytes:
//! - ELF32 LE Arm executable: each PT_LOAD segment with file bytes is placed
//!   at its `p_paddr` (the bytes QEMU would load for the bare board); the
//!   segment's whole `p_memsz` must lie in guest RAM, but only `p_filesz`
//!   bytes are carried, since the hypervisor zeroes all guest RAM first.
//! - Linux zImage (magic 0x016F2818 at offset 0x24, Linux
//!   `Documentation/arch/arm/booting.rst`): placed at RAM base + 64 KiB, as
//!   QEMU does, entered at its first byte. It decompresses itself.
//! - Anything else: a raw binary at the RAM base, entered at its first byte.

use std::ops::Range;

use crate::elf_image::{is_elf, read_arm_executable};

pub const ZIMAGE_MAGIC: u32 = 0x016F_2818;
pub const ZIMAGE_MAGIC_OFFSET: usize = 0x24;
/// Where a zImage goes, from the RAM base.
pub const ZIMAGE_LOAD_OFFSET: u32 = 0x1_0000;
/// ELF segments closer than this are carried as one region (the gap as
/// zeros), so linker-script padding does not use up the payload's regions.
pub const MERGE_GAP: u64 = 0x1_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelKind {
    Elf,
    ZImage,
    Raw,
}

impl KernelKind {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Elf => "ELF executable",
            Self::ZImage => "Linux zImage",
            Self::Raw => "raw binary",
        }
    }
}

/// Bytes to copy to guest address `ipa`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub ipa: u32,
    pub bytes: Vec<u8>,
}

/// A kernel laid out in guest RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelImage {
    pub kind: KernelKind,
    /// Guest-physical entry point of vCPU 0.
    pub entry: u32,
    /// What to copy, sorted by address, not overlapping.
    pub chunks: Vec<Chunk>,
    /// Guest-physical ranges the kernel owns from the start, including
    /// zero-filled memory (.bss); nothing else may be placed there.
    pub footprint: Vec<Range<u64>>,
}

impl KernelImage {
    /// Bytes carried in the payload.
    pub fn carried_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.bytes.len() as u64).sum()
    }
}

pub fn detect(bytes: &[u8]) -> KernelKind {
    if is_elf(bytes) {
        KernelKind::Elf
    } else if bytes.len() >= ZIMAGE_MAGIC_OFFSET + 4
        && bytes[ZIMAGE_MAGIC_OFFSET..ZIMAGE_MAGIC_OFFSET + 4] == ZIMAGE_MAGIC.to_le_bytes()
    {
        KernelKind::ZImage
    } else {
        KernelKind::Raw
    }
}

/// Lays `bytes` out in guest RAM `[ram_base, ram_base + ram_size)`. ELF
/// segments must lie in that RAM; a raw binary or zImage is placed at its
/// fixed address whatever its size, and its `footprint` may pass the end of
/// RAM (the packer checks the whole VM fits, with its initrd and DTB).
/// Errors are sentences about the file, to follow its name.
pub fn load(bytes: &[u8], ram_base: u32, ram_size: u32) -> Result<KernelImage, String> {
    let ram = ram_base as u64..ram_base as u64 + ram_size as u64;
    let ram_text = format!("[{:#010x}, {:#010x})", ram.start, ram.end);
    let kind = detect(bytes);
    let at = match kind {
        KernelKind::Elf => return load_elf(bytes, &ram, &ram_text),
        KernelKind::ZImage => ram_base as u64 + ZIMAGE_LOAD_OFFSET as u64,
        KernelKind::Raw => ram_base as u64,
    };
    // Whether it fits with the initrd and DTB is the packer's check.
    let end = at + bytes.len() as u64;
    if end > 1 << 32 {
        return Err(format!("is a {} of {} bytes, too large for a 32-bit guest", kind.describe(), bytes.len()));
    }
    Ok(KernelImage {
        kind,
        entry: at as u32,
        chunks: vec![Chunk { ipa: at as u32, bytes: bytes.to_vec() }],
        footprint: vec![Range { start: at, end }],
    })
}

fn load_elf(bytes: &[u8], ram: &Range<u64>, ram_text: &str) -> Result<KernelImage, String> {
    let exe = read_arm_executable(bytes)?;
    let mut footprint: Vec<Range<u64>> = Vec::new();
    let mut chunks: Vec<Chunk> = Vec::new();
    for (i, s) in exe.segments.iter().enumerate() {
        if s.memsz == 0 {
            continue;
        }
        let r = s.paddr as u64..s.paddr as u64 + s.memsz as u64;
        if r.start < ram.start || r.end > ram.end {
            return Err(format!(
                "ELF segment {i} (p_paddr {:#010x}, {} bytes in memory) lies outside the VM's RAM {ram_text}",
                s.paddr, s.memsz
            ));
        }
        if let Some(j) = footprint.iter().position(|f| f.start < r.end && r.start < f.end) {
            return Err(format!(
                "ELF segments overlap in physical memory (segment {i} and an earlier one, #{j} loaded)"
            ));
        }
        footprint.push(r);
        if !s.data.is_empty() {
            chunks.push(Chunk { ipa: s.paddr, bytes: s.data.clone() });
        }
    }
    if chunks.is_empty() {
        return Err("has no loadable segment with file bytes".into());
    }
    chunks.sort_by_key(|c| c.ipa);
    let chunks = merge_close(chunks);
    // Merged gaps are written (as zeros) too.
    footprint.extend(chunks.iter().map(|c| c.ipa as u64..c.ipa as u64 + c.bytes.len() as u64));
    footprint.sort_by_key(|r| r.start);

    // e_entry is a virtual address; kernels linked to run at a different
    // virtual address (vmlinux) start with the MMU off, at the physical one.
    let entry = exe
        .segments
        .iter()
        .find(|s| exe.entry >= s.vaddr && (exe.entry as u64) < s.vaddr as u64 + s.memsz as u64)
        .map_or(exe.entry, |s| s.paddr.wrapping_add(exe.entry - s.vaddr));
    if !(ram.start..ram.end.saturating_sub(3)).contains(&(entry as u64)) {
        return Err(format!("entry point {entry:#010x} lies outside the VM's RAM {ram_text}"));
    }
    Ok(KernelImage { kind: KernelKind::Elf, entry, chunks, footprint })
}

/// Joins chunks (sorted, not overlapping) whose gap is under [`MERGE_GAP`].
fn merge_close(chunks: Vec<Chunk>) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::with_capacity(chunks.len());
    for c in chunks {
        if let Some(last) = out.last_mut() {
            let last_end = last.ipa as u64 + last.bytes.len() as u64;
            if (c.ipa as u64) - last_end < MERGE_GAP {
                last.bytes.resize((c.ipa - last.ipa) as usize, 0);
                last.bytes.extend_from_slice(&c.bytes);
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fake_zimage, tiny_elf};

    const BASE: u32 = 0x4000_0000;
    const MIB: u32 = 1 << 20;

    #[test]
    fn raw_binary_goes_at_ram_base() {
        let k = load(&[1, 2, 3, 4], BASE, 2 * MIB).unwrap();
        assert_eq!(k.kind, KernelKind::Raw);
        assert_eq!(k.entry, BASE);
        assert_eq!(k.chunks, vec![Chunk { ipa: BASE, bytes: vec![1, 2, 3, 4] }]);
        // Too large for the VM: placed anyway; the packer refuses it.
        let k = load(&vec![0; 2 * MIB as usize + 1], BASE, 2 * MIB).unwrap();
        assert_eq!(k.footprint, vec![BASE as u64..BASE as u64 + 2 * MIB as u64 + 1]);
    }

    #[test]
    fn zimage_goes_64k_up() {
        let z = fake_zimage(0x3000);
        let k = load(&z, BASE, 4 * MIB).unwrap();
        assert_eq!(k.kind, KernelKind::ZImage);
        assert_eq!(k.entry, BASE + 0x1_0000);
        assert_eq!(k.chunks[0].ipa, BASE + 0x1_0000);
        assert_eq!(k.footprint, vec![(BASE as u64 + 0x1_0000)..(BASE as u64 + 0x1_3000)]);
    }

    #[test]
    fn elf_segments_at_their_physical_addresses() {
        // Text at 0x40000000 (virtual 0xc0000000), data 1 MiB up with .bss beyond.
        let elf = tiny_elf(
            0xc000_0010,
            &[(0xc000_0000, BASE, vec![0x11; 0x100], 0x100), (0xc010_0000, BASE + MIB, vec![0x22; 0x40], 0x2000)],
        );
        let k = load(&elf, BASE, 4 * MIB).unwrap();
        assert_eq!(k.kind, KernelKind::Elf);
        assert_eq!(k.entry, BASE + 0x10, "virtual entry translated to physical");
        assert_eq!(k.chunks.len(), 2);
        assert_eq!(k.chunks[1], Chunk { ipa: BASE + MIB, bytes: vec![0x22; 0x40] });
        assert!(k.footprint.contains(&((BASE + MIB) as u64..(BASE + MIB + 0x2000) as u64)));
        assert_eq!(k.carried_bytes(), 0x140);
    }

    #[test]
    fn close_elf_segments_are_merged() {
        let elf = tiny_elf(BASE, &[(BASE, BASE, vec![1; 0x10], 0x10), (BASE + 0x1000, BASE + 0x1000, vec![2; 4], 4)]);
        let k = load(&elf, BASE, 2 * MIB).unwrap();
        assert_eq!(k.chunks.len(), 1);
        let b = &k.chunks[0].bytes;
        assert_eq!(b.len(), 0x1004);
        assert_eq!((&b[..0x10], &b[0x10..0x1000], &b[0x1000..]), (&[1; 0x10][..], &[0; 0xff0][..], &[2; 4][..]));
    }

    #[test]
    fn elf_outside_ram_is_refused() {
        let elf = tiny_elf(BASE, &[(BASE, BASE, vec![1; 4], 4), (0x8000_0000, 0x8000_0000, vec![2; 4], 4)]);
        let e = load(&elf, BASE, 2 * MIB).unwrap_err();
        assert!(e.contains("ELF segment 1 (p_paddr 0x80000000, 4 bytes in memory) lies outside"), "{e}");
        // .bss running past the end of RAM.
        let elf = tiny_elf(BASE, &[(BASE, BASE, vec![1; 4], 3 * MIB)]);
        assert!(load(&elf, BASE, 2 * MIB).unwrap_err().contains("segment 0"));
        let elf = tiny_elf(0x1000, &[(BASE, BASE, vec![1; 4], 4)]);
        assert!(load(&elf, BASE, 2 * MIB).unwrap_err().contains("entry point 0x00001000"));
    }

    #[test]
    fn elf_of_the_wrong_kind_is_not_taken_for_raw() {
        let mut elf = tiny_elf(BASE, &[(BASE, BASE, vec![1; 4], 4)]);
        elf[4] = 2;
        assert!(load(&elf, BASE, 2 * MIB).unwrap_err().contains("64-bit"));
    }
}

//! ELF32 for Arm: reading executables (guest kernels, the hypervisor) and
//! writing the one bootable image, hypervisor + payload.
//!
//! Reading uses the `object` crate's low-level ELF API. Writing is done by
//! hand: `object`'s writer is section-oriented (it builds section headers,
//! symbol tables and relocations from sections and derives segments only for
//! some formats), while the image we need is the opposite, a handful of
//! PT_LOAD program headers and their bytes, with no sections at all. That is
//! about sixty lines of ELF32 (System V gABI, "ELF Header" and "Program
//! Header"; Arm's ELF ABI, `EM_ARM` = 40).
//!
//! The image is what QEMU's `-kernel` and a board's boot loader start: they
//! load every PT_LOAD at its `p_paddr` (zero-filling `p_memsz` beyond
//! `p_filesz`, so the hypervisor's .bss is cleared) and jump to `e_entry`.

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use object::LittleEndian as LE;

/// A loadable segment as read from, or written to, an ELF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    pub vaddr: u32,
    pub paddr: u32,
    /// `PF_R` | `PF_W` | `PF_X`.
    pub flags: u32,
    pub align: u32,
    /// At least `data.len()`; the rest is zero-filled by the loader.
    pub memsz: u32,
    /// The `p_filesz` bytes from the file.
    pub data: Vec<u8>,
}

/// What the packer needs from an Arm executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArmExecutable {
    pub entry: u32,
    pub e_flags: u32,
    /// The PT_LOAD program headers, in file order.
    pub segments: Vec<LoadSegment>,
}

pub const PF_R: u32 = elf::PF_R.0;

/// True when `bytes` start with the ELF magic.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(&elf::ELFMAG)
}

/// Reads an ELF32 little-endian Arm executable (`ET_EXEC`); anything else is
/// refused with a message saying what the file is instead.
pub fn read_arm_executable(bytes: &[u8]) -> Result<ArmExecutable, String> {
    if !is_elf(bytes) {
        return Err("not an ELF file".into());
    }
    if bytes.len() < 6 {
        return Err("truncated ELF header".into());
    }
    match bytes[4] {
        c if c == elf::ELFCLASS32.0 => {}
        c if c == elf::ELFCLASS64.0 => {
            return Err("is a 64-bit ELF file; a 32-bit Arm (ELFCLASS32) executable is needed".into())
        }
        c => return Err(format!("has an unknown ELF class {c}")),
    }
    match bytes[5] {
        d if d == elf::ELFDATA2LSB.0 => {}
        d if d == elf::ELFDATA2MSB.0 => {
            return Err("is a big-endian ELF file; a little-endian Arm executable is needed".into())
        }
        d => return Err(format!("has an unknown ELF data encoding {d}")),
    }
    let header = elf::FileHeader32::<LE>::parse(bytes).map_err(|e| format!("bad ELF header: {e}"))?;
    let endian = LE;
    let machine = header.e_machine(endian);
    if machine != elf::EM_ARM {
        return Err(format!("is an ELF file for machine {}, not Arm (EM_ARM = 40)", machine.0));
    }
    let ty = header.e_type(endian);
    if ty != elf::ET_EXEC {
        let what = match ty {
            t if t == elf::ET_REL => "a relocatable object (ET_REL)",
            t if t == elf::ET_DYN => "position-independent (ET_DYN)",
            t if t == elf::ET_CORE => "a core dump (ET_CORE)",
            _ => "not an executable",
        };
        return Err(format!("is {what}, ELF type {}; a statically linked executable (ET_EXEC) is needed", ty.0));
    }
    let phdrs = header.program_headers(endian, bytes).map_err(|e| format!("bad program headers: {e}"))?;
    let mut segments = Vec::new();
    for (i, ph) in phdrs.iter().enumerate() {
        if ph.p_type(endian) != elf::PT_LOAD {
            continue;
        }
        let data =
            ph.data(endian, bytes).map_err(|()| format!("program header {i}: its bytes lie outside the file"))?;
        let memsz = ph.p_memsz(endian);
        if memsz < ph.p_filesz(endian) {
            return Err(format!("program header {i}: p_memsz is smaller than p_filesz"));
        }
        segments.push(LoadSegment {
            vaddr: ph.p_vaddr(endian),
            paddr: ph.p_paddr(endian),
            flags: ph.p_flags(endian).0,
            align: ph.p_align(endian),
            memsz,
            data: data.to_vec(),
        });
    }
    Ok(ArmExecutable { entry: header.e_entry(endian), e_flags: header.e_flags(endian).0, segments })
}

/// The bootable image: the hypervisor's PT_LOAD segments unchanged plus one
/// read-only PT_LOAD holding `payload` at physical (and virtual) address
/// `payload_base`; the entry point is the hypervisor's.
pub fn write_bootable_elf(hypervisor_elf: &[u8], payload: &[u8], payload_base: u32) -> Result<Vec<u8>, String> {
    let hyp = read_arm_executable(hypervisor_elf)?;
    if hyp.segments.is_empty() {
        return Err("has no PT_LOAD segment".into());
    }
    for (i, s) in hyp.segments.iter().enumerate() {
        let end = s.paddr as u64 + s.memsz as u64;
        if end > payload_base as u64 {
            return Err(format!(
                "loadable segment {i} ({:#010x}..{end:#010x}) does not end below the payload at {payload_base:#010x}",
                s.paddr
            ));
        }
    }
    let len = u32::try_from(payload.len()).map_err(|_| "the payload is larger than 4 GiB".to_string())?;
    if payload_base as u64 + len as u64 > 1 << 32 {
        return Err(format!(
            "a payload of {len} bytes at {payload_base:#010x} passes the end of the 32-bit address space"
        ));
    }
    let mut segments = hyp.segments;
    segments.push(LoadSegment {
        vaddr: payload_base,
        paddr: payload_base,
        flags: PF_R,
        align: 16,
        memsz: len,
        data: payload.to_vec(),
    });
    Ok(write_arm_executable(hyp.entry, hyp.e_flags, &segments))
}

const EHDR_SIZE: usize = 52;
const PHDR_SIZE: usize = 32;

/// Serialises an ELF32 LE Arm `ET_EXEC` with the given PT_LOAD segments and
/// no section headers. Each segment's file offset is congruent to its vaddr
/// modulo its alignment (gABI's rule for loadable segments) when the
/// alignment is a power of two up to 64 KiB, else 16-byte aligned; a
/// physical loader such as QEMU's does not care either way.
pub fn write_arm_executable(entry: u32, e_flags: u32, segments: &[LoadSegment]) -> Vec<u8> {
    let phnum = u16::try_from(segments.len()).expect("fewer than 65536 segments");
    let mut out = vec![0u8; EHDR_SIZE + segments.len() * PHDR_SIZE];

    // e_ident: magic, ELFCLASS32, ELFDATA2LSB, EV_CURRENT, ELFOSABI_NONE, padding.
    out[..4].copy_from_slice(&elf::ELFMAG);
    out[4] = elf::ELFCLASS32.0;
    out[5] = elf::ELFDATA2LSB.0;
    out[6] = elf::EV_CURRENT.0;
    let mut h = Put { buf: &mut out, at: 16 };
    h.u16(elf::ET_EXEC.0);
    h.u16(elf::EM_ARM.0);
    h.u32(elf::EV_CURRENT.0 as u32);
    h.u32(entry);
    h.u32(EHDR_SIZE as u32); // e_phoff
    h.u32(0); // e_shoff: no section headers
    h.u32(e_flags);
    h.u16(EHDR_SIZE as u16);
    h.u16(PHDR_SIZE as u16);
    h.u16(phnum);
    h.u16(0); // e_shentsize
    h.u16(0); // e_shnum
    h.u16(0); // e_shstrndx = SHN_UNDEF

    for (i, s) in segments.iter().enumerate() {
        let modulus = if s.align.is_power_of_two() && s.align <= 0x1_0000 { s.align as usize } else { 16 };
        let pad = (s.vaddr as usize).wrapping_sub(out.len()) % modulus.max(1);
        let offset = out.len() + pad;
        if !s.data.is_empty() {
            out.resize(offset, 0);
            out.extend_from_slice(&s.data);
        }
        let mut p = Put { buf: &mut out, at: EHDR_SIZE + i * PHDR_SIZE };
        p.u32(elf::PT_LOAD.0);
        p.u32(if s.data.is_empty() { 0 } else { offset as u32 });
        p.u32(s.vaddr);
        p.u32(s.paddr);
        p.u32(s.data.len() as u32);
        p.u32(s.memsz.max(s.data.len() as u32));
        p.u32(s.flags);
        p.u32(s.align);
    }
    out
}

struct Put<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Put<'_> {
    fn u16(&mut self, v: u16) {
        self.buf[self.at..self.at + 2].copy_from_slice(&v.to_le_bytes());
        self.at += 2;
    }
    fn u32(&mut self, v: u32) {
        self.buf[self.at..self.at + 4].copy_from_slice(&v.to_le_bytes());
        self.at += 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fake_hypervisor;
    use object::{Object, ObjectSegment};

    #[test]
    fn bootable_image_round_trips_through_object() {
        let hyp = fake_hypervisor();
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let image = write_bootable_elf(&hyp, &payload, 0x4100_0000).unwrap();

        // Read back with the object crate's high-level API (an independent check).
        let file = object::read::elf::ElfFile32::<LE>::parse(&*image).unwrap();
        assert_eq!(file.architecture(), object::Architecture::Arm);
        assert!(file.is_little_endian() && !file.is_64());
        assert_eq!(file.kind(), object::ObjectKind::Executable);
        assert_eq!(file.entry(), 0x4020_0000);
        let segs: Vec<_> = file.segments().collect();
        assert_eq!(segs.len(), 4);
        assert_eq!(segs[0].address(), 0x4020_0000);
        assert_eq!(segs[0].data().unwrap(), &(0..0x1234u32).map(|i| i as u8).collect::<Vec<_>>()[..]);
        assert_eq!(segs[1].data().unwrap(), &[0xaa; 0x100][..]);
        assert_eq!(segs[1].size(), 0x8000);
        assert_eq!(segs[2].size(), 0x4_0000);
        assert_eq!(segs[3].address(), 0x4100_0000);
        assert_eq!(segs[3].data().unwrap(), &payload[..]);

        // And with our own reader: flags, physical addresses, alignment.
        let exe = read_arm_executable(&image).unwrap();
        assert_eq!(exe.e_flags, 0x0500_0200);
        let orig = read_arm_executable(&hyp).unwrap();
        assert_eq!(&exe.segments[..3], &orig.segments[..]);
        let p = &exe.segments[3];
        assert_eq!((p.paddr, p.flags, p.memsz), (0x4100_0000, PF_R, 1000));
        // File offsets keep the gABI congruence with vaddr.
        let elf = elf::FileHeader32::<LE>::parse(&*image).unwrap();
        for ph in elf.program_headers(LE, &*image).unwrap() {
            let align = ph.p_align(LE).min(0x1_0000);
            if ph.p_filesz(LE) > 0 {
                assert_eq!(ph.p_offset(LE) % align, ph.p_vaddr(LE) % align);
            }
        }
        assert_eq!(elf.e_shnum(LE), 0);
    }

    #[test]
    fn hypervisor_overlapping_the_payload_is_refused() {
        let hyp = fake_hypervisor();
        let e = write_bootable_elf(&hyp, &[1, 2, 3], 0x4030_0000).unwrap_err();
        assert!(e.contains("segment 2") && e.contains("does not end below the payload"), "{e}");
    }

    #[test]
    fn wrong_kinds_of_file_are_named() {
        let good = fake_hypervisor();
        let patch = |off: usize, val: &[u8]| {
            let mut b = good.clone();
            b[off..off + val.len()].copy_from_slice(val);
            read_arm_executable(&b).unwrap_err()
        };
        assert!(patch(4, &[2]).contains("64-bit"));
        assert!(patch(5, &[2]).contains("big-endian"));
        assert!(patch(18, &[62, 0]).contains("machine 62, not Arm"));
        assert!(patch(16, &[3, 0]).contains("ET_DYN"));
        assert!(patch(16, &[1, 0]).contains("ET_REL"));
        assert_eq!(read_arm_executable(b"\x7fELF"), Err("truncated ELF header".into()));
        assert_eq!(read_arm_executable(b"MZ\x90\0"), Err("not an ELF file".into()));
        assert!(write_bootable_elf(b"junk", &[], 0x4100_0000).unwrap_err().contains("not an ELF"));
    }
}

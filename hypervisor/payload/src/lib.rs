//! The boot payload: what the packer (`cargo xtask`) hands to the hypervisor.
//!
//! The hypervisor never sees TOML. The packer turns a configuration into this
//! small versioned binary format and places it at a fixed physical address
//! (see the platform module); the hypervisor checks it once at boot and
//! refuses a corrupt or truncated payload before it creates any VM.
//!
//! Layout (all integers little-endian, all offsets from the payload start):
//!
//! ```text
//! Header       64 bytes   magic, version, sizes, CRC-32, system, VM table
//! VmEntry      96 bytes   one per VM, at vm_table_offset
//! Region       16 bytes   image regions of a VM, at its region_table_offset
//! blobs                   the bytes the regions point at
//! ```
//!
//! The CRC-32 (IEEE) covers the whole payload with the `crc32` field zeroed.
#![cfg_attr(not(test), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;

use core::fmt;

pub const MAGIC: [u8; 8] = *b"TESSERA\0";
pub const VERSION: u32 = 1;
pub const HEADER_SIZE: usize = 64;
pub const VM_ENTRY_SIZE: usize = 96;
pub const REGION_SIZE: usize = 16;
pub const NAME_LEN: usize = 32;
/// Upper bounds the hypervisor relies on; the packer refuses more.
pub const MAX_VMS: usize = 16;
pub const MAX_VCPUS: u32 = 64;
pub const MAX_REGIONS: usize = 8;

/// How the first vCPU of a VM is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum BootProtocol {
    /// r0 = 0, r1 = 0xffff_ffff, r2 = guest DTB IPA (the Linux Arm convention;
    /// bare-metal guests get the same registers).
    Linux = 1,
}

/// What a region holds (for messages and for the hypervisor's checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RegionKind {
    Kernel = 1,
    Initrd = 2,
    Dtb = 3,
}

impl RegionKind {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Kernel),
            2 => Some(Self::Initrd),
            3 => Some(Self::Dtb),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Initrd => "initrd",
            Self::Dtb => "dtb",
        }
    }
}

/// A piece of a VM's image: `size` bytes at payload offset `offset`, copied to
/// guest-physical address `ipa` before the VM starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub kind: RegionKind,
    pub ipa: u32,
    pub offset: u32,
    pub size: u32,
}

/// One VM as the packer described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmDesc<'a> {
    pub name: &'a str,
    pub vcpus: u32,
    /// Guest RAM: `[ram_base, ram_base + ram_size)` in IPA space.
    pub ram_base: u32,
    pub ram_size: u32,
    /// Bit n set: the VM's vCPUs may run on pCPU n. Never 0.
    pub affinity: u32,
    pub entry: u32,
    pub boot: BootProtocol,
    /// Boot registers r0-r2 of vCPU 0.
    pub boot_regs: [u32; 3],
    /// Virtual devices, one bit each ([`device`]).
    pub devices: u32,
    regions: [Option<Region>; MAX_REGIONS],
}

/// Bits of [`VmDesc::devices`].
pub mod device {
    /// A virtio-rng (virtio-mmio slot 0) fed by the board's entropy source.
    pub const VIRTIO_RNG: u32 = 1 << 0;
    pub const ALL: u32 = VIRTIO_RNG;
}

impl<'a> VmDesc<'a> {
    pub fn regions(&self) -> impl Iterator<Item = &Region> + '_ {
        self.regions.iter().flatten()
    }
}

/// The whole payload, checked.
#[derive(Clone, Debug)]
pub struct Payload<'a> {
    bytes: &'a [u8],
    pub pcpus: u32,
    pub memory_mib: u32,
    vm_count: usize,
    vm_table: usize,
}

/// Why a payload was refused. Each variant's message is what the hypervisor prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// too short for a header
    Truncated { needed: usize, have: usize },
    /// no payload magic
    BadMagic,
    /// format version this hypervisor does not know
    BadVersion(u32),
    /// CRC-32 mismatch
    BadChecksum { stored: u32, computed: u32 },
    /// a field is out of range
    BadField { vm: Option<usize>, field: &'static str, value: u32 },
    /// a region does not fit in the payload or in the VM's RAM
    BadRegion { vm: usize, region: usize },
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { needed, have } => {
                write!(f, "payload truncated: needs {needed} bytes, {have} present")
            }
            Self::BadMagic => write!(f, "no payload magic (not a Tessera image?)"),
            Self::BadVersion(v) => write!(f, "payload format version {v} unknown (expected {VERSION})"),
            Self::BadChecksum { stored, computed } => {
                write!(f, "payload checksum mismatch, the image is corrupt or truncated: stored {stored:#010x}, computed {computed:#010x}")
            }
            Self::BadField { vm: Some(i), field, value } => {
                write!(f, "VM entry {i}: field {field} has invalid value {value:#x}")
            }
            Self::BadField { vm: None, field, value } => {
                write!(f, "payload header: field {field} has invalid value {value:#x}")
            }
            Self::BadRegion { vm, region } => {
                write!(f, "VM entry {vm}: region {region} lies outside the payload or the VM's RAM")
            }
        }
    }
}

fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Header field offsets.
mod h {
    pub const VERSION: usize = 8;
    pub const HEADER_SIZE: usize = 12;
    pub const TOTAL_SIZE: usize = 16;
    pub const CRC32: usize = 20;
    pub const PCPUS: usize = 24;
    pub const MEMORY_MIB: usize = 28;
    pub const VM_COUNT: usize = 32;
    pub const VM_TABLE: usize = 36;
}

/// VM entry field offsets.
mod v {
    pub const NAME: usize = 0;
    pub const VCPUS: usize = 32;
    pub const RAM_BASE: usize = 36;
    pub const RAM_SIZE: usize = 40;
    pub const AFFINITY: usize = 44;
    pub const ENTRY: usize = 48;
    pub const BOOT: usize = 52;
    pub const R0: usize = 56;
    pub const REGION_COUNT: usize = 68;
    pub const REGION_TABLE: usize = 72;
    /// Zero in payloads written before devices existed: no devices.
    pub const DEVICES: usize = 76;
}

/// CRC-32 of the payload with the crc field taken as zero.
pub fn checksum(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..h::CRC32]);
    h.update(&[0; 4]);
    h.update(&bytes[h::CRC32 + 4..]);
    h.finalize()
}

/// Reads only the header's total size, so a loader knows how much to map
/// before checking the rest.
pub fn total_size(header: &[u8]) -> Result<usize, PayloadError> {
    if header.len() < HEADER_SIZE {
        return Err(PayloadError::Truncated { needed: HEADER_SIZE, have: header.len() });
    }
    if header[..8] != MAGIC {
        return Err(PayloadError::BadMagic);
    }
    Ok(rd32(header, h::TOTAL_SIZE) as usize)
}

impl<'a> Payload<'a> {
    /// Checks everything once: magic, version, size, checksum, every VM entry
    /// and every region. After `parse` succeeds, `vm(i)` cannot fail.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, PayloadError> {
        let total = total_size(bytes)?;
        let version = rd32(bytes, h::VERSION);
        if version != VERSION {
            return Err(PayloadError::BadVersion(version));
        }
        if rd32(bytes, h::HEADER_SIZE) as usize != HEADER_SIZE {
            return Err(PayloadError::BadField { vm: None, field: "header_size", value: rd32(bytes, h::HEADER_SIZE) });
        }
        if total < HEADER_SIZE || total > bytes.len() {
            return Err(PayloadError::Truncated { needed: total.max(HEADER_SIZE), have: bytes.len() });
        }
        let bytes = &bytes[..total];
        let stored = rd32(bytes, h::CRC32);
        let computed = checksum(bytes);
        if stored != computed {
            return Err(PayloadError::BadChecksum { stored, computed });
        }
        let vm_count = rd32(bytes, h::VM_COUNT) as usize;
        if vm_count == 0 || vm_count > MAX_VMS {
            return Err(PayloadError::BadField { vm: None, field: "vm_count", value: vm_count as u32 });
        }
        let vm_table = rd32(bytes, h::VM_TABLE) as usize;
        if vm_table.checked_add(vm_count * VM_ENTRY_SIZE).is_none_or(|end| end > total) {
            return Err(PayloadError::BadField { vm: None, field: "vm_table_offset", value: vm_table as u32 });
        }
        let p = Payload {
            bytes,
            pcpus: rd32(bytes, h::PCPUS),
            memory_mib: rd32(bytes, h::MEMORY_MIB),
            vm_count,
            vm_table,
        };
        if p.pcpus == 0 || p.pcpus > 32 {
            return Err(PayloadError::BadField { vm: None, field: "pcpus", value: p.pcpus });
        }
        for i in 0..vm_count {
            p.decode_vm(i)?;
        }
        Ok(p)
    }

    /// The checked payload bytes.
    pub fn raw(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn vm_count(&self) -> usize {
        self.vm_count
    }

    /// The checked VM entry `i` (`i < vm_count()`).
    pub fn vm(&self, i: usize) -> VmDesc<'a> {
        self.decode_vm(i).expect("payload checked by parse")
    }

    pub fn vms(&self) -> impl Iterator<Item = VmDesc<'a>> + '_ {
        (0..self.vm_count).map(|i| self.vm(i))
    }

    /// The bytes of a region (checked by `parse`).
    pub fn region_bytes(&self, r: &Region) -> &'a [u8] {
        &self.bytes[r.offset as usize..(r.offset + r.size) as usize]
    }

    fn decode_vm(&self, i: usize) -> Result<VmDesc<'a>, PayloadError> {
        let b = self.bytes;
        let e = self.vm_table + i * VM_ENTRY_SIZE;
        let bad = |field, value| PayloadError::BadField { vm: Some(i), field, value };
        let raw_name = &b[e + v::NAME..e + v::NAME + NAME_LEN];
        let len = raw_name.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
        let name = core::str::from_utf8(&raw_name[..len]).map_err(|_| bad("name", 0))?;
        if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
            return Err(bad("name", len as u32));
        }
        let vcpus = rd32(b, e + v::VCPUS);
        if vcpus == 0 || vcpus > MAX_VCPUS {
            return Err(bad("vcpus", vcpus));
        }
        let ram_base = rd32(b, e + v::RAM_BASE);
        let ram_size = rd32(b, e + v::RAM_SIZE);
        // RAM is mapped with 2 MiB stage-2 blocks.
        const BLOCK: u32 = 2 << 20;
        if !ram_base.is_multiple_of(BLOCK) {
            return Err(bad("ram_base", ram_base));
        }
        if ram_size == 0 || !ram_size.is_multiple_of(BLOCK) || ram_base.checked_add(ram_size - 1).is_none() {
            return Err(bad("ram_size", ram_size));
        }
        let in_ram = |ipa: u32, size: u32| {
            ipa >= ram_base && (ipa as u64 + size as u64) <= ram_base as u64 + ram_size as u64
        };
        let affinity = rd32(b, e + v::AFFINITY);
        if affinity == 0 {
            return Err(bad("affinity", 0));
        }
        let entry = rd32(b, e + v::ENTRY);
        if !in_ram(entry, 4) {
            return Err(bad("entry", entry));
        }
        let boot = match rd32(b, e + v::BOOT) {
            1 => BootProtocol::Linux,
            other => return Err(bad("boot_protocol", other)),
        };
        let boot_regs = [rd32(b, e + v::R0), rd32(b, e + v::R0 + 4), rd32(b, e + v::R0 + 8)];
        let devices = rd32(b, e + v::DEVICES);
        if devices & !device::ALL != 0 {
            return Err(bad("devices", devices));
        }
        let count = rd32(b, e + v::REGION_COUNT) as usize;
        if count > MAX_REGIONS {
            return Err(bad("region_count", count as u32));
        }
        let table = rd32(b, e + v::REGION_TABLE) as usize;
        if table.checked_add(count * REGION_SIZE).is_none_or(|end| end > b.len()) {
            return Err(bad("region_table_offset", table as u32));
        }
        let mut regions = [None; MAX_REGIONS];
        for (j, slot) in regions.iter_mut().enumerate().take(count) {
            let r = table + j * REGION_SIZE;
            let bad_region = PayloadError::BadRegion { vm: i, region: j };
            let kind = RegionKind::from_u32(rd32(b, r + 12)).ok_or(bad_region)?;
            let region = Region { ipa: rd32(b, r), offset: rd32(b, r + 4), size: rd32(b, r + 8), kind };
            let fits_payload =
                (region.offset as usize).checked_add(region.size as usize).is_some_and(|end| end <= b.len());
            if !fits_payload || !in_ram(region.ipa, region.size) {
                return Err(bad_region);
            }
            *slot = Some(region);
        }
        Ok(VmDesc { name, vcpus, ram_base, ram_size, affinity, entry, boot, boot_regs, devices, regions })
    }
}

/// The packer's side: build a payload from owned descriptions.
#[cfg(any(feature = "alloc", test))]
pub mod write {
    extern crate alloc;
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;
    use alloc::vec;

    pub struct VmImage {
        pub name: String,
        pub vcpus: u32,
        pub ram_base: u32,
        pub ram_size: u32,
        pub affinity: u32,
        pub entry: u32,
        pub boot_regs: [u32; 3],
        pub devices: u32,
        /// (kind, ipa, bytes)
        pub regions: Vec<(RegionKind, u32, Vec<u8>)>,
    }

    fn put(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Serialises the system. The caller has validated the configuration; the
    /// result is checked once more with [`Payload::parse`] by the packer.
    pub fn build(pcpus: u32, memory_mib: u32, vms: &[VmImage]) -> Vec<u8> {
        let vm_table = HEADER_SIZE;
        let region_tables = vm_table + vms.len() * VM_ENTRY_SIZE;
        let n_regions: usize = vms.iter().map(|v| v.regions.len()).sum();
        let mut blob_off = align16(region_tables + n_regions * REGION_SIZE);
        let mut out = vec![0u8; blob_off];
        out[..8].copy_from_slice(&MAGIC);
        put(&mut out, h::VERSION, VERSION);
        put(&mut out, h::HEADER_SIZE, HEADER_SIZE as u32);
        put(&mut out, h::PCPUS, pcpus);
        put(&mut out, h::MEMORY_MIB, memory_mib);
        put(&mut out, h::VM_COUNT, vms.len() as u32);
        put(&mut out, h::VM_TABLE, vm_table as u32);
        let mut next_region = region_tables;
        let mut blobs: Vec<u8> = Vec::new();
        for (i, vm) in vms.iter().enumerate() {
            let e = vm_table + i * VM_ENTRY_SIZE;
            let name = vm.name.as_bytes();
            let n = name.len().min(NAME_LEN);
            out[e..e + n].copy_from_slice(&name[..n]);
            put(&mut out, e + v::VCPUS, vm.vcpus);
            put(&mut out, e + v::RAM_BASE, vm.ram_base);
            put(&mut out, e + v::RAM_SIZE, vm.ram_size);
            put(&mut out, e + v::AFFINITY, vm.affinity);
            put(&mut out, e + v::ENTRY, vm.entry);
            put(&mut out, e + v::BOOT, BootProtocol::Linux as u32);
            for (k, r) in vm.boot_regs.iter().enumerate() {
                put(&mut out, e + v::R0 + 4 * k, *r);
            }
            put(&mut out, e + v::DEVICES, vm.devices);
            put(&mut out, e + v::REGION_COUNT, vm.regions.len() as u32);
            put(&mut out, e + v::REGION_TABLE, next_region as u32);
            for (kind, ipa, bytes) in &vm.regions {
                let r = next_region;
                put(&mut out, r, *ipa);
                put(&mut out, r + 4, (blob_off + blobs.len()) as u32);
                put(&mut out, r + 8, bytes.len() as u32);
                put(&mut out, r + 12, *kind as u32);
                blobs.extend_from_slice(bytes);
                blobs.resize(align16(blobs.len()), 0);
                next_region += REGION_SIZE;
            }
        }
        blob_off = out.len();
        out.extend_from_slice(&blobs);
        let _ = blob_off;
        let total = out.len() as u32;
        put(&mut out, h::TOTAL_SIZE, total);
        let crc = checksum(&out);
        put(&mut out, h::CRC32, crc);
        out
    }

    fn align16(x: usize) -> usize {
        (x + 15) & !15
    }
}

#[cfg(test)]
mod tests {
    use super::write::{build, VmImage};
    use super::*;

    fn sample() -> Vec<u8> {
        build(
            2,
            1024,
            &[
                VmImage {
                    name: "hello".into(),
                    vcpus: 1,
                    ram_base: 0x4000_0000,
                    ram_size: 16 << 20,
                    affinity: 0b01,
                    entry: 0x4000_0000,
                    boot_regs: [0, !0, 0x40f0_0000],
                    devices: device::VIRTIO_RNG,
                    regions: vec![
                        (RegionKind::Kernel, 0x4000_0000, vec![1, 2, 3, 4, 5]),
                        (RegionKind::Dtb, 0x40f0_0000, vec![0xd0, 0x0d, 0xfe, 0xed]),
                    ],
                },
                VmImage {
                    name: "other".into(),
                    vcpus: 4,
                    ram_base: 0x4000_0000,
                    ram_size: 2 << 20,
                    affinity: 0b11,
                    entry: 0x4000_0100,
                    boot_regs: [0, !0, 0],
                    devices: 0,
                    regions: vec![(RegionKind::Kernel, 0x4000_0000, vec![9; 300])],
                },
            ],
        )
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let p = Payload::parse(&bytes).unwrap();
        assert_eq!((p.pcpus, p.memory_mib, p.vm_count()), (2, 1024, 2));
        let vm = p.vm(0);
        assert_eq!(vm.name, "hello");
        assert_eq!(vm.boot_regs, [0, !0, 0x40f0_0000]);
        assert_eq!((vm.devices, p.vm(1).devices), (device::VIRTIO_RNG, 0));
        let regions: Vec<_> = vm.regions().copied().collect();
        assert_eq!(regions.len(), 2);
        assert_eq!(p.region_bytes(&regions[0]), &[1, 2, 3, 4, 5]);
        assert_eq!(p.region_bytes(&regions[1]), &[0xd0, 0x0d, 0xfe, 0xed]);
        let other = p.vm(1);
        assert_eq!((other.vcpus, other.affinity, other.entry), (4, 0b11, 0x4000_0100));
        assert_eq!(p.region_bytes(other.regions().next().unwrap()), &[9; 300][..]);
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = sample();
        for len in 0..bytes.len() {
            assert!(Payload::parse(&bytes[..len]).is_err(), "truncated to {len} accepted");
        }
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let bytes = sample();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Payload::parse(&b).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn checksummed_but_inconsistent_fields_are_refused() {
        let reseal = |mut b: Vec<u8>| {
            let c = checksum(&b);
            b[h::CRC32..h::CRC32 + 4].copy_from_slice(&c.to_le_bytes());
            b
        };
        let base = sample();
        let e = HEADER_SIZE; // first VM entry
        let cases: &[(usize, u32, &str)] = &[
            (e + v::VCPUS, 0, "vcpus"),
            (e + v::RAM_SIZE, 12345, "ram_size"),
            (e + v::AFFINITY, 0, "affinity"),
            (e + v::ENTRY, 0x1000, "entry"),
            (h::VM_COUNT, 0, "vm_count"),
            (e + v::DEVICES, 1 << 7, "devices"),
        ];
        for &(off, val, what) in cases {
            let mut b = base.clone();
            b[off..off + 4].copy_from_slice(&val.to_le_bytes());
            assert!(Payload::parse(&reseal(b)).is_err(), "{what} = {val:#x} accepted");
        }
        // A region pointing outside the VM's RAM.
        let p = Payload::parse(&base).unwrap();
        let table = rd32(&base, e + v::REGION_TABLE) as usize;
        let _ = p;
        let mut b = base.clone();
        b[table..table + 4].copy_from_slice(&0x5000_0000u32.to_le_bytes());
        assert_eq!(Payload::parse(&reseal(b)).unwrap_err(), PayloadError::BadRegion { vm: 0, region: 0 });
    }
}

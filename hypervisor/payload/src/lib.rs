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
//! Header       64 bytes   magic, version, sizes, CRC-32, system, tables
//! VmEntry      96 bytes   one per VM, at vm_table_offset
//! Region       16 bytes   image regions of a VM, at its region_table_offset
//! DeviceEntry  32 bytes   virtio devices of a VM, at its device_table_offset
//! DiskEntry    48 bytes   the board's disks VMs share, at disk_table_offset
//! ChannelEntry 48 bytes   inter-VM shared-memory channels, at channel_table_offset
//! blobs                   the bytes the regions point at
//! ```
//!
//! The CRC-32 (IEEE) covers the whole payload with the `crc32` field zeroed.
#![cfg_attr(not(test), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;

use core::fmt;

pub const MAGIC: [u8; 8] = *b"TESSERA\0";
/// 2: device, disk and channel tables (version 1 had one device bit);
/// 3: VM flags; 4: power policy and log level.
pub const VERSION: u32 = 4;
/// VM entry flags.
pub const VM_FLAG_FAULT_ABORT: u32 = 1;
pub const HEADER_SIZE: usize = 64;
pub const VM_ENTRY_SIZE: usize = 96;
pub const REGION_SIZE: usize = 16;
pub const NAME_LEN: usize = 32;
/// Upper bounds the hypervisor relies on; the packer refuses more. VMs:
/// VTTBR.VMID has 8 bits and VM ids start at 1 (memory is the real limit:
/// every VM needs at least 2 MiB of RAM and its share of the heap).
pub const MAX_VMS: usize = 255;
pub const MAX_VCPUS: u32 = 64;
/// The most vCPUs one pCPU's run queue holds (Trango's "256 virtual
/// processors per core").
pub const MAX_VCPUS_PER_PCPU: u32 = 256;

/// The hypervisor's heap (VM, vCPU and device state; guest RAM and page
/// tables come from the free frames instead).
pub const HEAP_SIZE: usize = 8 << 20;

/// What the packer budgets on that heap for a configuration, in bytes:
/// measured (`heap: N KiB used` in the boot log: 376 KiB for 32 VMs of 8
/// vCPUs, 713 KiB for 64 VMs of 2 vCPUs) with room to spare. A block
/// device holds a 64 KiB bounce buffer.
pub fn heap_budget(vms: usize, vcpus: usize, block_devices: usize, other_devices: usize) -> usize {
    const BASE: usize = 128 << 10;
    const PER_VM: usize = 12 << 10;
    const PER_VCPU: usize = 1 << 10;
    const PER_BLOCK: usize = 68 << 10;
    const PER_DEVICE: usize = 4 << 10;
    BASE + vms * PER_VM + vcpus * PER_VCPU + block_devices * PER_BLOCK + other_devices * PER_DEVICE
}

/// Where the hypervisor places a new vCPU: the least loaded pCPU in
/// `affinity` (bit n = pCPU n), lowest index on ties; `None` if the mask
/// names no pCPU in `load`. One rule for both sides: the packer simulates
/// the placement to check every run queue's limit before anything runs.
pub fn place(load: &[u32], affinity: u32) -> Option<usize> {
    (0..load.len().min(32)).filter(|&p| affinity & (1 << p) != 0).min_by_key(|&p| (load[p], p))
}
pub const MAX_REGIONS: usize = 8;
pub const DEVICE_SIZE: usize = 32;
pub const DISK_SIZE: usize = 48;
pub const CHANNEL_SIZE: usize = 48;
/// virtio-mmio slots per VM (QEMU virt has 32; the guest map mirrors it).
pub const MAX_DEVICES: usize = 32;
pub const MAX_DISKS: usize = 4;
pub const MAX_SWITCHES: u32 = 8;
/// Channels are a bitmask in the VM entry.
pub const MAX_CHANNELS: usize = 16;
/// Channel memory lies below guest RAM, in this window of the IPA space.
pub const CHANNEL_WINDOW: (u32, u32) = (guest_map::CHANNEL0, guest_map::CHANNEL_WINDOW_END);

pub mod guest_map;
/// Where the packer places the payload in the board's physical memory and
/// the hypervisor looks for it: RAM base + 16 MiB (the ELF the packer writes
/// loads it there).
pub const PAYLOAD_BASE: u32 = 0x4100_0000;
/// Disk ranges are in whole sectors.
pub const SECTOR: u64 = 512;

/// When the hypervisor powers idle pCPUs off (`[system] power`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u32)]
pub enum PowerPolicy {
    /// Every pCPU stays on.
    Performance = 1,
    /// A pCPU idle for 100 ms is powered off; one is powered on when
    /// runnable vCPUs have waited 10 ms.
    #[default]
    Balanced = 2,
    /// The same after 10 ms idle, and on only after 50 ms of waiting.
    Powersave = 3,
}

impl PowerPolicy {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Performance),
            2 => Some(Self::Balanced),
            3 => Some(Self::Powersave),
            _ => None,
        }
    }
}

/// The hypervisor's log level (`[system] log`): 1 warn, 2 info, 3 debug.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u32)]
pub enum LogLevel {
    Warn = 1,
    #[default]
    Info = 2,
    Debug = 3,
}

impl LogLevel {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Warn),
            2 => Some(Self::Info),
            3 => Some(Self::Debug),
            _ => None,
        }
    }
}

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
    /// Bit k set: the VM maps channel k.
    pub channels: u32,
    /// An access the hypervisor cannot serve (nothing mapped there, a fault
    /// it will not emulate) is given back to the guest as an abort, instead
    /// of stopping the VM.
    pub fault_abort: bool,
    regions: [Option<Region>; MAX_REGIONS],
    devices: [Option<DeviceDesc>; MAX_DEVICES],
}

/// A virtio device of a VM, in virtio-mmio slot `slot` (guest address
/// 0x0a00_0000 + slot * 0x200, SPI 16 + slot, as on QEMU's virt board).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceDesc {
    pub slot: u32,
    pub device: Device,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// virtio-rng fed by the board's entropy source.
    Rng,
    /// virtio-console: the VM's output, labelled like its UART's.
    Console,
    /// virtio-blk over `size` bytes of disk `disk` from byte `offset`
    /// (whole sectors, inside the disk).
    Block { disk: u32, offset: u64, size: u64, read_only: bool },
    /// virtio-net on virtual switch `switch`, with its own unicast MAC.
    Net { switch: u32, mac: [u8; 6] },
}

impl Device {
    #[cfg(any(feature = "alloc", test))]
    fn kind(&self) -> u32 {
        match self {
            Device::Rng => 1,
            Device::Console => 2,
            Device::Block { .. } => 3,
            Device::Net { .. } => 4,
        }
    }
}

/// A disk of the board (QEMU `-drive` on a virtio-blk with `serial=name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskDesc<'a> {
    pub name: &'a str,
    /// Bytes; every range on it lies below this.
    pub size: u64,
}

/// A shared-memory channel: `size` bytes at guest address `ipa` in each VM
/// whose `channels` has its bit; its doorbell is SPI `spi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelDesc<'a> {
    pub name: &'a str,
    pub ipa: u32,
    pub size: u32,
    pub spi: u32,
}

impl<'a> VmDesc<'a> {
    pub fn regions(&self) -> impl Iterator<Item = &Region> + '_ {
        self.regions.iter().flatten()
    }
    pub fn devices(&self) -> impl Iterator<Item = &DeviceDesc> + '_ {
        self.devices.iter().flatten()
    }
}

/// The whole payload, checked.
#[derive(Clone, Debug)]
pub struct Payload<'a> {
    bytes: &'a [u8],
    pub pcpus: u32,
    pub memory_mib: u32,
    pub power: PowerPolicy,
    pub log: LogLevel,
    vm_count: usize,
    vm_table: usize,
    disk_count: usize,
    disk_table: usize,
    channel_count: usize,
    channel_table: usize,
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
    /// a device entry is inconsistent
    BadDevice { vm: usize, device: usize, field: &'static str },
    /// a disk or channel entry is inconsistent
    BadShared { table: &'static str, index: usize, field: &'static str },
    /// two ranges of one disk overlap and one of them is writable
    DiskRangesOverlap { vm: usize, slot: u32, other_vm: usize, other_slot: u32 },
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
            Self::BadDevice { vm, device, field } => {
                write!(f, "VM entry {vm}: device {device}: field {field} is invalid")
            }
            Self::BadShared { table, index, field } => {
                write!(f, "{table} entry {index}: field {field} is invalid")
            }
            Self::DiskRangesOverlap { vm, slot, other_vm, other_slot } => write!(
                f,
                "VM entry {vm}: the disk range of its device in slot {slot} overlaps that of VM entry {other_vm}'s device in slot {other_slot}, and one of them is writable"
            ),
        }
    }
}

fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn rd64(b: &[u8], off: usize) -> u64 {
    rd32(b, off) as u64 | (rd32(b, off + 4) as u64) << 32
}

/// A NUL-padded name of [A-Za-z0-9_-], 1 to NAME_LEN - 1 bytes.
fn name_at(b: &[u8], off: usize) -> Option<&str> {
    let raw = &b[off..off + NAME_LEN];
    let len = raw.iter().position(|&c| c == 0)?;
    let name = core::str::from_utf8(&raw[..len]).ok()?;
    let ok = !name.is_empty()
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        && raw[len..].iter().all(|&c| c == 0);
    ok.then_some(name)
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
    pub const DISK_COUNT: usize = 40;
    pub const DISK_TABLE: usize = 44;
    pub const CHANNEL_COUNT: usize = 48;
    pub const CHANNEL_TABLE: usize = 52;
    pub const POWER: usize = 56;
    pub const LOG: usize = 60;
}

/// Device entry field offsets: kind, slot, then per kind
/// (block: disk, flags, offset, size; net: switch, -, MAC in the low 48
/// bits of `C`; rng, console: all zero).
mod d {
    pub const KIND: usize = 0;
    pub const SLOT: usize = 4;
    pub const A: usize = 8;
    pub const B: usize = 12;
    pub const C: usize = 16;
    pub const D: usize = 24;
    pub const READ_ONLY: u32 = 1;
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
    pub const DEVICE_COUNT: usize = 76;
    pub const DEVICE_TABLE: usize = 80;
    pub const CHANNELS: usize = 84;
    pub const FLAGS: usize = 88;
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
        let table = |count_at: usize, table_at: usize, max: usize, entry: usize, what: &'static str| {
            let count = rd32(bytes, count_at) as usize;
            if count > max {
                return Err(PayloadError::BadField { vm: None, field: what, value: count as u32 });
            }
            let at = rd32(bytes, table_at) as usize;
            if at.checked_add(count * entry).is_none_or(|end| end > total) {
                return Err(PayloadError::BadField { vm: None, field: what, value: at as u32 });
            }
            Ok((count, at))
        };
        let (disk_count, disk_table) = table(h::DISK_COUNT, h::DISK_TABLE, MAX_DISKS, DISK_SIZE, "disk_table")?;
        let (channel_count, channel_table) =
            table(h::CHANNEL_COUNT, h::CHANNEL_TABLE, MAX_CHANNELS, CHANNEL_SIZE, "channel_table")?;
        let p = Payload {
            bytes,
            pcpus: rd32(bytes, h::PCPUS),
            memory_mib: rd32(bytes, h::MEMORY_MIB),
            power: PowerPolicy::from_u32(rd32(bytes, h::POWER)).ok_or(PayloadError::BadField {
                vm: None,
                field: "power",
                value: rd32(bytes, h::POWER),
            })?,
            log: LogLevel::from_u32(rd32(bytes, h::LOG)).ok_or(PayloadError::BadField {
                vm: None,
                field: "log",
                value: rd32(bytes, h::LOG),
            })?,
            vm_count,
            vm_table,
            disk_count,
            disk_table,
            channel_count,
            channel_table,
        };
        if p.pcpus == 0 || p.pcpus > 32 {
            return Err(PayloadError::BadField { vm: None, field: "pcpus", value: p.pcpus });
        }
        for i in 0..disk_count {
            p.decode_disk(i)?;
        }
        for i in 0..channel_count {
            let c = p.decode_channel(i)?;
            for k in 0..i {
                let o = p.decode_channel(k)?;
                if o.spi == c.spi {
                    return Err(PayloadError::BadShared { table: "channel", index: i, field: "spi" });
                }
                if (c.ipa as u64) < o.ipa as u64 + o.size as u64 && o.ipa < c.ipa + c.size {
                    return Err(PayloadError::BadShared { table: "channel", index: i, field: "ipa" });
                }
            }
        }
        for i in 0..vm_count {
            p.decode_vm(i)?;
        }
        p.check_disk_sharing()?;
        Ok(p)
    }

    /// Ranges of one disk may overlap only if all of them are read-only
    /// (the packer checks the same rule; this is the hypervisor's own check).
    fn check_disk_sharing(&self) -> Result<(), PayloadError> {
        let ranges = |i: usize| {
            self.vm(i).devices.into_iter().flatten().filter_map(move |d| match d.device {
                Device::Block { disk, offset, size, read_only } => {
                    Some((i, d.slot, disk, offset, offset + size, read_only))
                }
                _ => None,
            })
        };
        for a in (0..self.vm_count).flat_map(ranges) {
            for b in (0..self.vm_count).flat_map(ranges) {
                let same = (a.0, a.1) == (b.0, b.1);
                let overlap = a.2 == b.2 && a.3 < b.4 && b.3 < a.4;
                if !same && overlap && !(a.5 && b.5) {
                    return Err(PayloadError::DiskRangesOverlap { vm: a.0, slot: a.1, other_vm: b.0, other_slot: b.1 });
                }
            }
        }
        Ok(())
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

    pub fn disk_count(&self) -> usize {
        self.disk_count
    }

    /// The checked disk entry `i` (`i < disk_count()`).
    pub fn disk(&self, i: usize) -> DiskDesc<'a> {
        self.decode_disk(i).expect("payload checked by parse")
    }

    pub fn channel_count(&self) -> usize {
        self.channel_count
    }

    /// The checked channel entry `i` (`i < channel_count()`).
    pub fn channel(&self, i: usize) -> ChannelDesc<'a> {
        self.decode_channel(i).expect("payload checked by parse")
    }

    fn decode_disk(&self, i: usize) -> Result<DiskDesc<'a>, PayloadError> {
        let e = self.disk_table + i * DISK_SIZE;
        let bad = |field| PayloadError::BadShared { table: "disk", index: i, field };
        let name = name_at(self.bytes, e).ok_or(bad("name"))?;
        let size = rd64(self.bytes, e + 32);
        if size == 0 || !size.is_multiple_of(SECTOR) {
            return Err(bad("size"));
        }
        Ok(DiskDesc { name, size })
    }

    fn decode_channel(&self, i: usize) -> Result<ChannelDesc<'a>, PayloadError> {
        let b = self.bytes;
        let e = self.channel_table + i * CHANNEL_SIZE;
        let bad = |field| PayloadError::BadShared { table: "channel", index: i, field };
        let name = name_at(b, e).ok_or(bad("name"))?;
        let (ipa, size, spi) = (rd32(b, e + 32), rd32(b, e + 36), rd32(b, e + 40));
        if size == 0 || !size.is_multiple_of(4096) {
            return Err(bad("size"));
        }
        let in_window = ipa >= CHANNEL_WINDOW.0 && (ipa as u64 + size as u64) <= CHANNEL_WINDOW.1 as u64;
        if !ipa.is_multiple_of(4096) || !in_window {
            return Err(bad("ipa"));
        }
        // SPIs 16-47 are the virtio slots; a doorbell takes one above them.
        let first = guest_map::CHANNEL0_SPI;
        if !(first..first + MAX_CHANNELS as u32).contains(&spi) {
            return Err(bad("spi"));
        }
        Ok(ChannelDesc { name, ipa, size, spi })
    }

    fn decode_device(&self, vm: usize, j: usize, e: usize) -> Result<DeviceDesc, PayloadError> {
        let b = self.bytes;
        let bad = |field| PayloadError::BadDevice { vm, device: j, field };
        let slot = rd32(b, e + d::SLOT);
        if slot as usize >= MAX_DEVICES {
            return Err(bad("slot"));
        }
        let (a, bb, c, dd) = (rd32(b, e + d::A), rd32(b, e + d::B), rd64(b, e + d::C), rd64(b, e + d::D));
        let device = match rd32(b, e + d::KIND) {
            1 | 2 if (a, bb, c, dd) != (0, 0, 0, 0) => return Err(bad("parameters")),
            1 => Device::Rng,
            2 => Device::Console,
            3 => {
                if a as usize >= self.disk_count {
                    return Err(bad("disk"));
                }
                let disk = self.decode_disk(a as usize)?;
                if bb & !d::READ_ONLY != 0 {
                    return Err(bad("flags"));
                }
                let fits = c.checked_add(dd).is_some_and(|end| end <= disk.size);
                if dd == 0 || !c.is_multiple_of(SECTOR) || !dd.is_multiple_of(SECTOR) || !fits {
                    return Err(bad("range"));
                }
                Device::Block { disk: a, offset: c, size: dd, read_only: bb & d::READ_ONLY != 0 }
            }
            4 => {
                if a >= MAX_SWITCHES || bb != 0 || dd != 0 || c >> 48 != 0 {
                    return Err(bad("switch"));
                }
                let m = c.to_le_bytes();
                let mac = [m[0], m[1], m[2], m[3], m[4], m[5]];
                // Group addresses (bit 0 of the first byte) are not a port.
                if mac[0] & 1 != 0 || mac == [0; 6] {
                    return Err(bad("mac"));
                }
                Device::Net { switch: a, mac }
            }
            _ => return Err(bad("kind")),
        };
        Ok(DeviceDesc { slot, device })
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
        let in_ram =
            |ipa: u32, size: u32| ipa >= ram_base && (ipa as u64 + size as u64) <= ram_base as u64 + ram_size as u64;
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
        let channels = rd32(b, e + v::CHANNELS);
        let flags = rd32(b, e + v::FLAGS);
        if flags & !VM_FLAG_FAULT_ABORT != 0 {
            return Err(PayloadError::BadField { vm: Some(i), field: "flags", value: flags });
        }
        let fault_abort = flags & VM_FLAG_FAULT_ABORT != 0;
        if channels >> self.channel_count != 0 {
            return Err(bad("channels", channels));
        }
        let dev_count = rd32(b, e + v::DEVICE_COUNT) as usize;
        if dev_count > MAX_DEVICES {
            return Err(bad("device_count", dev_count as u32));
        }
        let dev_table = rd32(b, e + v::DEVICE_TABLE) as usize;
        if dev_table.checked_add(dev_count * DEVICE_SIZE).is_none_or(|end| end > b.len()) {
            return Err(bad("device_table_offset", dev_table as u32));
        }
        let mut devices = [None; MAX_DEVICES];
        let mut slots = 0u32;
        for (j, out) in devices.iter_mut().enumerate().take(dev_count) {
            let dev = self.decode_device(i, j, dev_table + j * DEVICE_SIZE)?;
            if slots & (1 << dev.slot) != 0 {
                return Err(PayloadError::BadDevice { vm: i, device: j, field: "slot" });
            }
            slots |= 1 << dev.slot;
            *out = Some(dev);
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
        for k in 0..self.channel_count {
            let c = self.decode_channel(k)?;
            let overlaps = (c.ipa as u64) < ram_base as u64 + ram_size as u64 && ram_base < c.ipa + c.size;
            if channels & (1 << k) != 0 && overlaps {
                return Err(bad("channels", channels));
            }
        }
        Ok(VmDesc {
            name,
            vcpus,
            ram_base,
            ram_size,
            affinity,
            entry,
            boot,
            boot_regs,
            channels,
            fault_abort,
            regions,
            devices,
        })
    }
}

#[cfg(any(feature = "alloc", test))]
pub mod write;

#[cfg(test)]
mod tests;

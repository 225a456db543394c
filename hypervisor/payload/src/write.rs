//! The packer's side: build a payload from owned descriptions.

extern crate alloc;
use super::*;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

pub struct VmImage {
    pub name: String,
    pub vcpus: u32,
    pub ram_base: u32,
    pub ram_size: u32,
    pub affinity: u32,
    pub entry: u32,
    pub boot_regs: [u32; 3],
    pub devices: Vec<DeviceDesc>,
    /// Bit k: the VM maps channel k.
    pub channels: u32,
    /// See `VmDesc::fault_abort`.
    pub fault_abort: bool,
    /// (kind, ipa, bytes)
    pub regions: Vec<(RegionKind, u32, Vec<u8>)>,
}

pub struct DiskImage {
    pub name: String,
    pub size: u64,
}

pub struct ChannelImage {
    pub name: String,
    pub ipa: u32,
    pub size: u32,
    pub spi: u32,
}

/// What the board shares between VMs.
#[derive(Default)]
pub struct Shared {
    pub disks: Vec<DiskImage>,
    pub channels: Vec<ChannelImage>,
    pub power: crate::PowerPolicy,
    pub log: crate::LogLevel,
}

fn put(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_name(b: &mut [u8], off: usize, name: &str) {
    let n = name.len().min(NAME_LEN - 1);
    b[off..off + n].copy_from_slice(&name.as_bytes()[..n]);
}

fn put_device(b: &mut [u8], e: usize, dev: &DeviceDesc) {
    put(b, e + d::KIND, dev.device.kind());
    put(b, e + d::SLOT, dev.slot);
    match dev.device {
        Device::Rng | Device::Console => {}
        Device::Block { disk, offset, size, read_only } => {
            put(b, e + d::A, disk);
            put(b, e + d::B, if read_only { d::READ_ONLY } else { 0 });
            put64(b, e + d::C, offset);
            put64(b, e + d::D, size);
        }
        Device::Net { switch, mac } => {
            put(b, e + d::A, switch);
            let mut m = [0u8; 8];
            m[..6].copy_from_slice(&mac);
            put64(b, e + d::C, u64::from_le_bytes(m));
        }
    }
}

/// Serialises the system. The caller has validated the configuration; the
/// result is checked once more with [`Payload::parse`] by the packer.
pub fn build(pcpus: u32, memory_mib: u32, vms: &[VmImage], shared: &Shared) -> Vec<u8> {
    let vm_table = HEADER_SIZE;
    let disk_table = vm_table + vms.len() * VM_ENTRY_SIZE;
    let channel_table = disk_table + shared.disks.len() * DISK_SIZE;
    let mut next_device = channel_table + shared.channels.len() * CHANNEL_SIZE;
    let region_tables = next_device + vms.iter().map(|v| v.devices.len()).sum::<usize>() * DEVICE_SIZE;
    let n_regions: usize = vms.iter().map(|v| v.regions.len()).sum();
    let mut blob_off = align16(region_tables + n_regions * REGION_SIZE);
    let mut out = vec![0u8; blob_off];
    out[..8].copy_from_slice(&MAGIC);
    put(&mut out, h::VERSION, VERSION);
    put(&mut out, h::HEADER_SIZE, HEADER_SIZE as u32);
    put(&mut out, h::PCPUS, pcpus);
    put(&mut out, h::MEMORY_MIB, memory_mib);
    put(&mut out, h::POWER, shared.power as u32);
    put(&mut out, h::LOG, shared.log as u32);
    put(&mut out, h::VM_COUNT, vms.len() as u32);
    put(&mut out, h::VM_TABLE, vm_table as u32);
    put(&mut out, h::DISK_COUNT, shared.disks.len() as u32);
    put(&mut out, h::DISK_TABLE, disk_table as u32);
    for (k, disk) in shared.disks.iter().enumerate() {
        let e = disk_table + k * DISK_SIZE;
        put_name(&mut out, e, &disk.name);
        put64(&mut out, e + 32, disk.size);
    }
    put(&mut out, h::CHANNEL_COUNT, shared.channels.len() as u32);
    put(&mut out, h::CHANNEL_TABLE, channel_table as u32);
    for (k, c) in shared.channels.iter().enumerate() {
        let e = channel_table + k * CHANNEL_SIZE;
        put_name(&mut out, e, &c.name);
        put(&mut out, e + 32, c.ipa);
        put(&mut out, e + 36, c.size);
        put(&mut out, e + 40, c.spi);
    }
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
        put(&mut out, e + v::CHANNELS, vm.channels);
        put(&mut out, e + v::FLAGS, if vm.fault_abort { VM_FLAG_FAULT_ABORT } else { 0 });
        put(&mut out, e + v::DEVICE_COUNT, vm.devices.len() as u32);
        put(&mut out, e + v::DEVICE_TABLE, next_device as u32);
        for dev in &vm.devices {
            put_device(&mut out, next_device, dev);
            next_device += DEVICE_SIZE;
        }
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

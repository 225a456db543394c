//! The hypervisor's payload parser, with any bytes (the checksum made
//! right, unless it is stored as 0, so the checks behind it are reached).
//!
//! Oracles: a payload it accepts can be walked without a panic, and every
//! promise `parse` makes holds: each VM has 1 to `MAX_VCPUS` vCPUs, a
//! non-empty affinity, 2 MiB-aligned RAM holding its entry point and its
//! regions, regions inside the payload, devices in distinct slots, disk
//! ranges inside their disk, writable ones not overlapping; channels inside
//! their window, not over the RAM of a member. And the packer's writer
//! agrees with the parser: the descriptions rebuilt into a new payload
//! parse back to the same thing.

use tessera_payload::write::{build, ChannelImage, DiskImage, Shared, VmImage};
use tessera_payload::{checksum, Device, Payload, Region, HEADER_SIZE, MAX_VCPUS};

const CRC: usize = 20;
const TOTAL: usize = 16;

pub fn run(data: &[u8]) {
    let mut bytes = data.to_vec();
    if bytes.len() >= HEADER_SIZE {
        let total = u32::from_le_bytes(bytes[TOTAL..TOTAL + 4].try_into().unwrap()) as usize;
        let stored = u32::from_le_bytes(bytes[CRC..CRC + 4].try_into().unwrap());
        if stored != 0 && (HEADER_SIZE..=bytes.len()).contains(&total) {
            let crc = checksum(&bytes[..total]);
            bytes[CRC..CRC + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let Ok(p) = Payload::parse(&bytes) else { return };
    check(&p);
    let again = rebuild(&p);
    let q = Payload::parse(&again).unwrap_or_else(|e| panic!("the writer's payload is refused: {e}"));
    assert_eq!(describe(&p), describe(&q), "parse(build(parse(x))) differs from parse(x)");
}

fn check(p: &Payload<'_>) {
    assert!((1..=32).contains(&p.pcpus));
    let disks: Vec<_> = (0..p.disk_count()).map(|i| p.disk(i)).collect();
    let channels: Vec<_> = (0..p.channel_count()).map(|i| p.channel(i)).collect();
    let mut ranges = Vec::new();
    for (i, vm) in p.vms().enumerate() {
        assert!((1..=MAX_VCPUS).contains(&vm.vcpus));
        assert_ne!(vm.affinity, 0);
        assert_eq!(vm.ram_base % (2 << 20), 0);
        assert!(vm.ram_size > 0 && vm.ram_size % (2 << 20) == 0);
        let end = vm.ram_base as u64 + vm.ram_size as u64;
        assert!(end <= 1 << 32);
        let in_ram = |ipa: u32, size: u32| ipa >= vm.ram_base && ipa as u64 + size as u64 <= end;
        assert!(in_ram(vm.entry, 4));
        for r in vm.regions() {
            assert!(in_ram(r.ipa, r.size), "region outside RAM");
            assert_eq!(p.region_bytes(r).len(), r.size as usize);
        }
        let mut slots = 0u64;
        for d in vm.devices() {
            assert_eq!(slots & (1 << d.slot), 0, "two devices in slot {}", d.slot);
            slots |= 1 << d.slot;
            match d.device {
                Device::Block { disk, offset, size, read_only } => {
                    let disk_size = disks[disk as usize].size;
                    assert!(size > 0 && offset + size <= disk_size);
                    ranges.push((i, disk, offset, offset + size, read_only));
                }
                Device::Net { mac, .. } => assert!(mac[0] & 1 == 0 && mac != [0; 6]),
                Device::Rng | Device::Console => {}
            }
        }
        for (k, c) in channels.iter().enumerate() {
            if vm.channels & (1 << k) != 0 {
                assert!(c.ipa as u64 + c.size as u64 <= vm.ram_base as u64 || c.ipa as u64 >= end, "channel over RAM");
            }
        }
        assert_eq!(vm.channels >> p.channel_count(), 0);
    }
    for (a, x) in ranges.iter().enumerate() {
        for y in &ranges[a + 1..] {
            let overlap = x.1 == y.1 && x.2 < y.3 && y.2 < x.3;
            assert!(!overlap || (x.4 && y.4), "writable disk ranges overlap: {x:?} {y:?}");
        }
    }
}

/// Everything `parse` tells, with region contents instead of offsets.
fn describe(p: &Payload<'_>) -> String {
    let mut s = format!("pcpus {} memory {}\n", p.pcpus, p.memory_mib);
    for vm in p.vms() {
        let regions: Vec<(Region, &[u8])> =
            vm.regions().map(|r| (Region { offset: 0, ..*r }, p.region_bytes(r))).collect();
        let devices: Vec<_> = vm.devices().collect();
        s += &format!(
            "vm {} vcpus {} ram {:#x}+{:#x} affinity {:#x} entry {:#x} regs {:x?} channels {:#x} abort {} regions {regions:?} devices {devices:?}\n",
            vm.name, vm.vcpus, vm.ram_base, vm.ram_size, vm.affinity, vm.entry, vm.boot_regs, vm.channels, vm.fault_abort
        );
    }
    for i in 0..p.disk_count() {
        s += &format!("{:?}\n", p.disk(i));
    }
    for i in 0..p.channel_count() {
        s += &format!("{:?}\n", p.channel(i));
    }
    s
}

fn rebuild(p: &Payload<'_>) -> Vec<u8> {
    let vms: Vec<VmImage> = p
        .vms()
        .map(|vm| VmImage {
            name: vm.name.to_string(),
            vcpus: vm.vcpus,
            ram_base: vm.ram_base,
            ram_size: vm.ram_size,
            affinity: vm.affinity,
            entry: vm.entry,
            boot_regs: vm.boot_regs,
            devices: vm.devices().copied().collect(),
            channels: vm.channels,
            fault_abort: vm.fault_abort,
            regions: vm.regions().map(|r| (r.kind, r.ipa, p.region_bytes(r).to_vec())).collect(),
        })
        .collect();
    let shared = Shared {
        disks: (0..p.disk_count())
            .map(|i| DiskImage { name: p.disk(i).name.to_string(), size: p.disk(i).size })
            .collect(),
        channels: (0..p.channel_count())
            .map(|i| {
                let c = p.channel(i);
                ChannelImage { name: c.name.to_string(), ipa: c.ipa, size: c.size, spi: c.spi }
            })
            .collect(),
        power: p.power,
        log: p.log,
    };
    build(p.pcpus, p.memory_mib, &vms, &shared)
}

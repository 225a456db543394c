use super::write::{build, ChannelImage, DiskImage, Shared, VmImage};
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
                devices: vec![
                    DeviceDesc { slot: 0, device: Device::Rng },
                    DeviceDesc { slot: 1, device: Device::Block { disk: 0, offset: 512, size: 4096, read_only: true } },
                    DeviceDesc { slot: 2, device: Device::Net { switch: 1, mac: [2, 0, 0, 0, 0, 7] } },
                ],
                channels: 0b1,
                fault_abort: false,
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
                devices: vec![DeviceDesc { slot: 5, device: Device::Console }],
                channels: 0b1,
                fault_abort: false,
                regions: vec![(RegionKind::Kernel, 0x4000_0000, vec![9; 300])],
            },
        ],
        &Shared {
            disks: vec![DiskImage { name: "disk0".into(), size: 1 << 20 }],
            channels: vec![ChannelImage { name: "ring".into(), ipa: 0x1000_0000, size: 8192, spi: 48 }],
            ..Default::default()
        },
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
    let devs: Vec<_> = vm.devices().copied().collect();
    assert_eq!(devs.len(), 3);
    assert_eq!(devs[1].device, Device::Block { disk: 0, offset: 512, size: 4096, read_only: true });
    assert_eq!(devs[2].device, Device::Net { switch: 1, mac: [2, 0, 0, 0, 0, 7] });
    assert_eq!(p.vm(1).devices().next().unwrap(), &DeviceDesc { slot: 5, device: Device::Console });
    assert_eq!(p.disk(0), DiskDesc { name: "disk0", size: 1 << 20 });
    assert_eq!(p.channel(0), ChannelDesc { name: "ring", ipa: 0x1000_0000, size: 8192, spi: 48 });
    assert_eq!((vm.channels, p.vm(1).channels), (1, 1));
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
        (e + v::CHANNELS, 0b10, "channels"),
        (e + v::DEVICE_COUNT, 40, "device_count"),
        (h::DISK_COUNT, 9, "disk_count"),
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

    // Devices: each field of the block and net entries.
    let dt = rd32(&base, e + v::DEVICE_TABLE) as usize;
    let blk = dt + DEVICE_SIZE;
    let net = dt + 2 * DEVICE_SIZE;
    let dev_cases: &[(usize, u64, usize, &str)] = &[
        (dt + d::SLOT, 32, 4, "slot"),
        (blk + d::SLOT, 0, 4, "slot"),
        (dt + d::KIND, 9, 4, "kind"),
        (dt + d::A, 1, 4, "parameters"),
        (blk + d::A, 1, 4, "disk"),
        (blk + d::B, 2, 4, "flags"),
        (blk + d::C, 100, 8, "range"),
        (blk + d::C, (1 << 20) - 512, 8, "range"),
        (blk + d::D, u64::MAX - 511, 8, "range"),
        (blk + d::D, 0, 8, "range"),
        (net + d::A, MAX_SWITCHES as u64, 4, "switch"),
        (net + d::C, 1, 8, "mac"),
        (net + d::C, 0, 8, "mac"),
    ];
    for &(off, val, width, field) in dev_cases {
        let mut b = base.clone();
        b[off..off + width].copy_from_slice(&val.to_le_bytes()[..width]);
        let err = Payload::parse(&reseal(b)).unwrap_err();
        assert!(matches!(err, PayloadError::BadDevice { vm: 0, field: f, .. } if f == field), "{field}: {err}");
    }
    let ct = rd32(&base, h::CHANNEL_TABLE) as usize;
    for (off, val, field) in
        [(ct + 32, 0x4000_0000u32, "ipa"), (ct + 36, 100, "size"), (ct + 40, 16, "spi"), (ct, 0, "name")]
    {
        let mut b = base.clone();
        b[off..off + 4].copy_from_slice(&val.to_le_bytes());
        let err = Payload::parse(&reseal(b)).unwrap_err();
        assert_eq!(err, PayloadError::BadShared { table: "channel", index: 0, field }, "{field}");
    }
}

#[test]
fn writable_disk_ranges_may_not_overlap() {
    let vm = |name: &str, slot: u32, offset: u64, read_only: bool| VmImage {
        name: name.into(),
        vcpus: 1,
        ram_base: 0x4000_0000,
        ram_size: 2 << 20,
        affinity: 1,
        entry: 0x4000_0000,
        boot_regs: [0; 3],
        devices: vec![DeviceDesc { slot, device: Device::Block { disk: 0, offset, size: 8192, read_only } }],
        channels: 0,
        fault_abort: false,
        regions: vec![(RegionKind::Kernel, 0x4000_0000, vec![1; 4])],
    };
    let shared = Shared { disks: vec![DiskImage { name: "d".into(), size: 1 << 20 }], ..Default::default() };
    let parse = |a: VmImage, b: VmImage| {
        let bytes = build(1, 64, &[a, b], &shared);
        Payload::parse(&bytes).map(|_| ())
    };
    assert_eq!(parse(vm("a", 0, 0, true), vm("b", 0, 4096, true)), Ok(()), "read-only ranges may be shared");
    assert_eq!(parse(vm("a", 0, 0, false), vm("b", 0, 8192, false)), Ok(()), "adjacent writable ranges are fine");
    for (ro_a, ro_b) in [(false, false), (false, true), (true, false)] {
        let e = parse(vm("a", 0, 0, ro_a), vm("b", 3, 4096, ro_b)).unwrap_err();
        assert!(matches!(e, PayloadError::DiskRangesOverlap { .. }), "{e}");
    }
    let e = parse(vm("a", 0, 0, false), vm("b", 3, 4096, true)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "VM entry 0: the disk range of its device in slot 0 overlaps that of VM entry 1's device in slot 3, and one of them is writable"
    );
}

//! Test inputs made on the spot: tiny guest kernels of each kind and a
//! stand-in hypervisor ELF.

use crate::config::{ConfigError, Location};
use crate::dtb::GuestDtb;
use crate::elf_image::{write_arm_executable, LoadSegment, PF_R};
use crate::kernel::{ZIMAGE_MAGIC, ZIMAGE_MAGIC_OFFSET};

const PF_X: u32 = object::elf::PF_X.0;
const PF_W: u32 = object::elf::PF_W.0;

/// The key path of an error, when it has one.
pub fn key_path(e: &ConfigError) -> Option<&str> {
    match &e.at {
        Location::Key(k) => Some(k),
        _ => None,
    }
}

/// An Arm ELF executable; each segment is (vaddr, paddr, file bytes, memsz).
pub fn tiny_elf(entry: u32, segments: &[(u32, u32, Vec<u8>, u32)]) -> Vec<u8> {
    let segs: Vec<LoadSegment> = segments
        .iter()
        .map(|(vaddr, paddr, data, memsz)| LoadSegment {
            vaddr: *vaddr,
            paddr: *paddr,
            flags: PF_R | PF_W | PF_X,
            align: 0x1000,
            memsz: *memsz,
            data: data.clone(),
        })
        .collect();
    write_arm_executable(entry, 0x0500_0200, &segs)
}

/// `len` bytes that look like a Linux zImage (the magic is all we read).
pub fn fake_zimage(len: usize) -> Vec<u8> {
    let mut z = vec![0u8; len];
    z[..4].copy_from_slice(&0xe1a0_0000u32.to_le_bytes()); // nop
    z[ZIMAGE_MAGIC_OFFSET..ZIMAGE_MAGIC_OFFSET + 4].copy_from_slice(&ZIMAGE_MAGIC.to_le_bytes());
    z[0x28..0x2c].copy_from_slice(&0u32.to_le_bytes()); // start
    z[0x2c..0x30].copy_from_slice(&(len as u32).to_le_bytes()); // end
    z
}

/// A stand-in for the hypervisor: text, data with .bss, and a .bss-only
/// segment, all below the payload.
pub fn fake_hypervisor() -> Vec<u8> {
    write_arm_executable(
        0x4020_0000,
        0x0500_0200,
        &[
            LoadSegment {
                vaddr: 0x4020_0000,
                paddr: 0x4020_0000,
                flags: PF_R | PF_X,
                align: 0x1_0000,
                memsz: 0x1234,
                data: (0..0x1234u32).map(|i| i as u8).collect(),
            },
            LoadSegment {
                vaddr: 0x4021_0000,
                paddr: 0x4021_0000,
                flags: PF_R | PF_W,
                align: 0x1_0000,
                memsz: 0x8000,
                data: vec![0xaa; 0x100],
            },
            LoadSegment {
                vaddr: 0x4030_0000,
                paddr: 0x4030_0000,
                flags: PF_R | PF_W,
                align: 4096,
                memsz: 0x4_0000,
                data: vec![],
            },
        ],
    )
}

/// Checks a generated DTB with an independent parser.
pub fn check_dtb(blob: &[u8], vm: &GuestDtb<'_>) {
    let fdt = fdt::Fdt::new(blob).expect("valid FDT");
    let root = fdt.root();
    assert_eq!(root.model(), format!("Tessera VM {}", vm.name));
    assert_eq!(root.compatible().all().collect::<Vec<_>>(), ["tessera,vm", "linux,dummy-virt"]);
    let regions: Vec<_> = fdt.memory().regions().collect();
    assert_eq!(regions.len(), 1);
    assert_eq!(regions[0].starting_address as usize, vm.ram_base as usize);
    assert_eq!(regions[0].size, Some(vm.ram_size as usize));
    assert!(fdt.find_node(&format!("/memory@{:x}", vm.ram_base)).is_some());
    let ids: Vec<usize> = fdt.cpus().map(|c| c.ids().first()).collect();
    assert_eq!(ids, (0..vm.vcpus as usize).collect::<Vec<_>>());
    for cpu in fdt.cpus() {
        assert_eq!(cpu.property("enable-method").unwrap().as_str(), Some("psci"));
        assert_eq!(cpu.property("compatible").unwrap().as_str(), Some("arm,cortex-a15"));
    }
    let psci = fdt.find_node("/psci").unwrap();
    assert_eq!(psci.compatible().unwrap().all().collect::<Vec<_>>(), ["arm,psci-1.0", "arm,psci-0.2"]);
    assert_eq!(psci.property("method").unwrap().as_str(), Some("hvc"));
    assert_eq!(fdt.chosen().bootargs().unwrap_or(""), vm.cmdline);
    let chosen = fdt.find_node("/chosen").unwrap();
    let prop = |n| chosen.property(n).and_then(|p| p.as_usize());
    match &vm.initrd {
        Some(r) => {
            assert_eq!(prop("linux,initrd-start"), Some(r.start as usize));
            assert_eq!(prop("linux,initrd-end"), Some(r.end as usize));
            assert_eq!(chosen.property("linux,initrd-start").unwrap().value.len(), 4, "one u32 cell");
        }
        None => assert!(prop("linux,initrd-start").is_none() && prop("linux,initrd-end").is_none()),
    }
}

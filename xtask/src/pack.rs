//! The packer: configuration in, one bootable ELF out (hypervisor + payload).
//!
//! # Physical memory (the board)
//!
//! ```text
//! 0x4000_0000  RAM base: QEMU's DTB for the hypervisor, then the hypervisor
//!              image (linked at 0x4020_0000); 16 MiB in all
//! 0x4100_0000  PAYLOAD_BASE: the payload, as the ELF loader placed it
//!              (rounded up to 2 MiB), then 8 MiB of page tables and heap,
//!              then the VMs' RAM
//! ```
//! The sum must fit in `system.memory_mib` (`config::check_memory_fit`).
//!
//! # Guest memory (every VM, in its own IPA space)
//!
//! RAM is at IPA `0x4000_0000`, `memory_mib` MiB long: the address of RAM on
//! the bare QEMU `virt` board, so a kernel or RTOS built for that board runs
//! unchanged. The hypervisor zeroes it, then copies the payload's regions:
//!
//! ```text
//! ram_base                       kernel: raw binary here, entered here;
//! ram_base + 64 KiB              or a zImage here, entered here;
//!                                or ELF segments at their p_paddr, entry e_entry
//! ...
//! dtb - initrd size, 4 KiB down  initrd (if any)
//! dtb = min(ram_end, ram_base + 512 MiB) - 64 KiB
//!                                guest DTB (at most 64 KiB)
//! ```
//! The DTB stays in the first 512 MiB, which Linux maps early (booting.rst
//! advises keeping it and the initrd low, away from the kernel's
//! decompression area just above the base). Nothing may overlap: a VM too
//! small for its kernel, initrd and DTB is refused at `vm[N].memory_mib`.
//!
//! vCPU 0 starts at the entry with r0 = 0, r1 = 0xFFFF_FFFF (no machine type:
//! DT boot), r2 = the DTB's IPA. Its affinity mask is `pcpus`, or every pCPU.

use std::fs;
use std::path::{Path, PathBuf};

use tessera_payload::write::{build, ChannelImage, DiskImage, Shared, VmImage};
use tessera_payload::{Device, DeviceDesc, Payload, RegionKind, MAX_REGIONS};

use crate::config::{self, check_memory_fit, Config, ConfigError, DeviceKind, DiskConfig, VmConfig};
use crate::dtb::{self, DtbChannel, GuestDtb, MAX_DTB_SIZE};
use crate::elf_image::write_bootable_elf;
use crate::kernel::{self, KernelImage};

/// Where the loader puts the payload and the hypervisor looks for it:
/// RAM base + 16 MiB.
pub const PAYLOAD_BASE: u32 = tessera_payload::PAYLOAD_BASE;
/// Every VM's RAM starts at this IPA.
pub const GUEST_RAM_BASE: u32 = tessera_payload::guest_map::RAM;
/// The DTB sits below `min(ram_end, ram_base + DTB_LIMIT)`.
pub const DTB_LIMIT: u32 = 512 << 20;
/// Room kept for the DTB.
pub const DTB_SLOT: u32 = MAX_DTB_SIZE as u32;
pub const INITRD_ALIGN: u32 = 4 << 10;

/// The result of a successful [`pack`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    /// The bootable ELF: `-kernel` for QEMU.
    pub image: PathBuf,
    /// Physical cores to give the machine (`-smp`).
    pub pcpus: u32,
    /// Physical RAM to give the machine (`-m`, MiB).
    pub memory_mib: u32,
    /// The VMs, in configuration order (the payload's order).
    pub vm_names: Vec<String>,
    /// The board's disks (QEMU `-drive`s).
    pub disks: Vec<DiskConfig>,
}

/// Loads and validates `config`, builds the payload and writes
/// `out_dir/<config stem>.elf`. Nothing is written unless everything is
/// valid; the image is written to a temporary name and renamed into place.
pub fn pack(config: &Path, hypervisor_elf: &Path, out_dir: &Path) -> Result<Packed, ConfigError> {
    let cfg = config::load(config)?;
    let payload = build_payload(&cfg)?;
    let hyp = fs::read(hypervisor_elf)
        .map_err(|e| ConfigError::file(hypervisor_elf, format!("cannot read the hypervisor ELF: {e}")))?;
    let image = write_bootable_elf(&hyp, &payload, PAYLOAD_BASE)
        .map_err(|e| ConfigError::file(hypervisor_elf, format!("not usable as the hypervisor ELF: {e}")))?;

    let stem = config.file_stem().unwrap_or(config.as_os_str()).to_string_lossy();
    let out = out_dir.join(format!("{stem}.elf"));
    let tmp = out_dir.join(format!(".{stem}.elf.tmp"));
    let write_err = |e: std::io::Error| ConfigError::file(&out, format!("cannot write the bootable image: {e}"));
    fs::create_dir_all(out_dir).map_err(write_err)?;
    fs::write(&tmp, &image).map_err(write_err)?;
    fs::rename(&tmp, &out).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        write_err(e)
    })?;
    Ok(Packed {
        image: out,
        pcpus: cfg.system.pcpus,
        memory_mib: cfg.system.memory_mib,
        vm_names: cfg.vms.iter().map(|v| v.name.clone()).collect(),
        disks: cfg.disks.clone(),
    })
}

/// Lays out every VM, builds the payload, checks that the whole system fits
/// in physical RAM, and checks the payload with the hypervisor's own parser.
pub fn build_payload(cfg: &Config) -> Result<Vec<u8>, ConfigError> {
    let images = cfg.vms.iter().enumerate().map(|(i, vm)| lay_out_vm(cfg, i, vm)).collect::<Result<Vec<_>, _>>()?;
    let shared = Shared {
        disks: cfg.disks.iter().map(|d| DiskImage { name: d.name.clone(), size: d.size }).collect(),
        channels: cfg
            .channels
            .iter()
            .enumerate()
            .map(|(k, c)| ChannelImage { name: c.name.clone(), ipa: channel_ipa(k), size: c.size, spi: channel_spi(k) })
            .collect(),
        power: cfg.system.power,
        log: cfg.system.log,
    };
    let payload = build(cfg.system.pcpus, cfg.system.memory_mib, &images, &shared);
    check_memory_fit(cfg, payload.len() as u64)?;
    if let Err(e) = Payload::parse(&payload) {
        // The checks above should make this impossible: a packer bug.
        return Err(ConfigError::file(&cfg.file, format!("internal error: the payload built from it is refused: {e}")));
    }
    Ok(payload)
}

/// Channel k's guest address, the same in every member VM.
fn channel_ipa(k: usize) -> u32 {
    tessera_payload::guest_map::channel(k as u32).0
}

/// Channel k's doorbell SPI.
fn channel_spi(k: usize) -> u32 {
    tessera_payload::guest_map::channel(k as u32).1
}

fn lay_out_vm(cfg: &Config, i: usize, vm: &VmConfig) -> Result<VmImage, ConfigError> {
    let key = |k: &str| format!("vm[{i}].{k}");
    let who = format!("VM \"{}\"", vm.name);
    let read = |what: &str, path: &Path| {
        fs::read(path).map_err(|e| {
            ConfigError::key(&cfg.file, key(what), format!("{who}: cannot read {what} file {}: {e}", path.display()))
        })
    };
    let ram_size = vm.memory_mib << 20;
    let ram_base = GUEST_RAM_BASE;
    let ram_end = ram_base as u64 + ram_size as u64;

    let kernel_bytes = read("kernel", &vm.kernel)?;
    let kernel = kernel::load(&kernel_bytes, ram_base, ram_size).map_err(|e| {
        ConfigError::key(&cfg.file, key("kernel"), format!("{who}: kernel file {}: {e}", vm.kernel.display()))
    })?;
    let initrd = match &vm.initrd {
        Some(p) => Some(read("initrd", p)?),
        None => None,
    };

    // DTB at the top of the first 512 MiB, the initrd just below it.
    let top = ram_end.min(ram_base as u64 + DTB_LIMIT as u64);
    let dtb_ipa = top - DTB_SLOT as u64;
    let initrd_len = initrd.as_ref().map_or(0, |b| b.len() as u64);
    let initrd_start = dtb_ipa.checked_sub(initrd_len).map(|a| a & !(INITRD_ALIGN as u64 - 1));
    let low = initrd_start.unwrap_or(0);
    let too_small = |detail: String| {
        ConfigError::key(
            &cfg.file,
            key("memory_mib"),
            format!(
                "{who} is too small for its kernel ({} bytes), initrd ({initrd_len} bytes) and DTB (up to {DTB_SLOT} \
                 bytes) in {} MiB: {detail}",
                kernel.carried_bytes(),
                vm.memory_mib
            ),
        )
    };
    if initrd_start.is_none() || low < ram_base as u64 {
        return Err(too_small(format!("the initrd does not fit below the DTB at {dtb_ipa:#010x}")));
    }
    if let Some(r) = kernel.footprint.iter().find(|r| r.end > ram_end) {
        return Err(too_small(format!("the kernel ends at {:#010x}, past the end of RAM at {ram_end:#010x}", r.end)));
    }
    let reserved = if vm.initrd.is_some() { low } else { dtb_ipa };
    if let Some(r) = kernel.footprint.iter().find(|r| r.start < top && r.end > reserved) {
        let what = if vm.initrd.is_some() { "initrd" } else { "DTB" };
        return Err(too_small(format!(
            "the kernel's {:#010x}..{:#010x} overlaps the {what} at {reserved:#010x}",
            r.start, r.end
        )));
    }

    let dtb_ipa = dtb_ipa as u32;
    let initrd_range = initrd.as_ref().map(|b| low as u32..(low + b.len() as u64) as u32);
    let slots: Vec<u32> = vm.devices.iter().map(|d| d.slot).collect();
    let channels: Vec<DtbChannel> = vm
        .channels
        .iter()
        .map(|&k| DtbChannel {
            id: k as u32,
            name: &cfg.channels[k].name,
            ipa: channel_ipa(k),
            size: cfg.channels[k].size,
            spi: channel_spi(k),
        })
        .collect();
    let dtb = dtb::build(&GuestDtb {
        name: &vm.name,
        vcpus: vm.vcpus,
        ram_base,
        ram_size,
        cmdline: &vm.cmdline,
        initrd: initrd_range.clone(),
        virtio_slots: &slots,
        channels: &channels,
    })
    .map_err(|e| ConfigError::key(&cfg.file, key("cmdline"), format!("{who}: {e}")))?;

    let KernelImage { entry, chunks, .. } = kernel;
    let extra = 1 + usize::from(initrd.is_some());
    if chunks.len() + extra > MAX_REGIONS {
        return Err(ConfigError::key(
            &cfg.file,
            key("kernel"),
            format!(
                "{who}: kernel file {} has {} separate loadable parts; at most {} are supported",
                vm.kernel.display(),
                chunks.len(),
                MAX_REGIONS - extra
            ),
        ));
    }
    let mut regions: Vec<(RegionKind, u32, Vec<u8>)> =
        chunks.into_iter().map(|c| (RegionKind::Kernel, c.ipa, c.bytes)).collect();
    if let (Some(bytes), Some(r)) = (initrd, initrd_range) {
        regions.push((RegionKind::Initrd, r.start, bytes));
    }
    regions.push((RegionKind::Dtb, dtb_ipa, dtb));

    Ok(VmImage {
        name: vm.name.clone(),
        vcpus: vm.vcpus,
        ram_base,
        ram_size,
        affinity: vm.affinity(&cfg.system),
        entry,
        boot_regs: [0, 0xFFFF_FFFF, dtb_ipa],
        devices: vm
            .devices
            .iter()
            .map(|d| DeviceDesc {
                slot: d.slot,
                device: match d.kind {
                    DeviceKind::Rng => Device::Rng,
                    DeviceKind::Console => Device::Console,
                    DeviceKind::Block { disk, offset, size, read_only } => {
                        Device::Block { disk: disk as u32, offset, size, read_only }
                    }
                    DeviceKind::Net { switch, mac } => Device::Net { switch: switch as u32, mac },
                },
            })
            .collect(),
        channels: vm.channels.iter().fold(0, |m, &k| m | 1 << k),
        fault_abort: vm.fault_abort,
        regions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Location;
    use crate::elf_image::read_arm_executable;
    use crate::testutil::{check_dtb, fake_hypervisor, fake_zimage, key_path, tiny_elf};
    use std::path::PathBuf;

    const MIB: u32 = 1 << 20;

    struct Setup {
        dir: tempfile::TempDir,
    }

    impl Setup {
        fn new() -> Self {
            let s = Setup { dir: tempfile::tempdir().unwrap() };
            s.file("hyp.elf", &fake_hypervisor());
            s
        }
        fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let p = self.dir.path().join(name);
            fs::write(&p, bytes).unwrap();
            p
        }
        fn config(&self, text: &str) -> PathBuf {
            self.file("sys.toml", text.as_bytes())
        }
        fn out(&self) -> PathBuf {
            self.dir.path().join("out")
        }
        fn pack(&self, text: &str) -> Result<Packed, ConfigError> {
            let c = self.config(text);
            pack(&c, &self.dir.path().join("hyp.elf"), &self.out())
        }
        /// Packs `text`, expects a refusal at `key` containing `fragment`,
        /// and checks nothing was written.
        fn refuse(&self, text: &str, key: &str, fragment: &str) -> ConfigError {
            let e = self.pack(text).expect_err("accepted");
            let line = e.to_string();
            assert_eq!(key_path(&e), Some(key), "{line}");
            assert!(line.contains(fragment), "{fragment:?} not in: {line}");
            assert!(!self.out().exists(), "something was written for a refused config");
            e
        }
    }

    fn payload_of(image: &[u8]) -> Vec<u8> {
        let exe = read_arm_executable(image).unwrap();
        let seg = exe.segments.iter().find(|s| s.paddr == PAYLOAD_BASE).expect("payload segment");
        seg.data.clone()
    }

    #[test]
    fn two_vms_round_trip() {
        let s = Setup::new();
        let zimage = fake_zimage(0x2_0000);
        s.file("zImage", &zimage);
        let initrd: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        s.file("initrd.cpio", &initrd);
        let rtos = tiny_elf(
            0x4000_0100,
            &[
                (0x4000_0000, 0x4000_0000, vec![0xe3; 0x200], 0x200),
                (0x4010_0000, 0x4010_0000, vec![0xd4; 0x10], 0x1_0000),
            ],
        );
        s.file("rtos.elf", &rtos);
        let packed = s
            .pack(
                r#"
[system]
pcpus = 4
memory_mib = 512

[[vm]]
name = "linux"
kernel = "zImage"
initrd = "initrd.cpio"
cmdline = "console=hvc0 rdinit=/init"
vcpus = 3
memory_mib = 128
pcpus = [1, 3]

[[vm]]
name = "rtos"
kernel = "rtos.elf"
vcpus = 1
memory_mib = 4
"#,
            )
            .unwrap();
        assert_eq!(packed.image, s.out().join("sys.elf"));
        assert_eq!((packed.pcpus, packed.memory_mib), (4, 512));
        assert_eq!(packed.vm_names, ["linux", "rtos"]);

        let image = fs::read(&packed.image).unwrap();
        assert_eq!(read_arm_executable(&image).unwrap().entry, 0x4020_0000);
        let bytes = payload_of(&image);
        let p = Payload::parse(&bytes).unwrap();
        assert_eq!((p.pcpus, p.memory_mib, p.vm_count()), (4, 512, 2));

        let linux = p.vm(0);
        assert_eq!(linux.name, "linux");
        assert_eq!((linux.vcpus, linux.ram_base, linux.ram_size), (3, GUEST_RAM_BASE, 128 * MIB));
        assert_eq!(linux.affinity, 0b1010);
        assert_eq!(linux.entry, GUEST_RAM_BASE + 0x1_0000);
        let dtb_ipa = GUEST_RAM_BASE + 128 * MIB - 64 * 1024;
        assert_eq!(linux.boot_regs, [0, 0xFFFF_FFFF, dtb_ipa]);
        let regions: Vec<_> = linux.regions().copied().collect();
        assert_eq!(
            regions.iter().map(|r| r.kind).collect::<Vec<_>>(),
            [RegionKind::Kernel, RegionKind::Initrd, RegionKind::Dtb]
        );
        assert_eq!(regions[0].ipa, GUEST_RAM_BASE + 0x1_0000);
        assert_eq!(p.region_bytes(&regions[0]), &zimage[..]);
        let initrd_ipa = (dtb_ipa - 5000) & !0xfff;
        assert_eq!(regions[1].ipa, initrd_ipa);
        assert_eq!(p.region_bytes(&regions[1]), &initrd[..]);
        assert_eq!(regions[2].ipa, dtb_ipa);
        check_dtb(
            p.region_bytes(&regions[2]),
            &GuestDtb {
                name: "linux",
                vcpus: 3,
                ram_base: GUEST_RAM_BASE,
                ram_size: 128 * MIB,
                cmdline: "console=hvc0 rdinit=/init",
                initrd: Some(initrd_ipa..initrd_ipa + 5000),
                virtio_slots: &[],
                channels: &[],
            },
        );

        let r = p.vm(1);
        assert_eq!((r.name, r.vcpus, r.ram_size, r.affinity, r.entry), ("rtos", 1, 4 * MIB, 0b1111, 0x4000_0100));
        let dtb_ipa = GUEST_RAM_BASE + 4 * MIB - 64 * 1024;
        assert_eq!(r.boot_regs[2], dtb_ipa);
        let regions: Vec<_> = r.regions().copied().collect();
        assert_eq!(regions.len(), 3, "two far-apart ELF segments and the DTB");
        assert_eq!((regions[0].ipa, p.region_bytes(&regions[0])), (0x4000_0000, &[0xe3; 0x200][..]));
        assert_eq!((regions[1].ipa, p.region_bytes(&regions[1])), (0x4010_0000, &[0xd4; 0x10][..]));
        assert_eq!((regions[2].kind, regions[2].ipa), (RegionKind::Dtb, dtb_ipa));
        check_dtb(
            p.region_bytes(&regions[2]),
            &GuestDtb {
                name: "rtos",
                vcpus: 1,
                ram_base: GUEST_RAM_BASE,
                ram_size: 4 * MIB,
                cmdline: "",
                initrd: None,
                virtio_slots: &[],
                channels: &[],
            },
        );
    }

    #[test]
    fn raw_kernel_and_the_512_mib_dtb_limit() {
        let s = Setup::new();
        s.file("k.bin", &[0xfe, 0xff, 0xff, 0xea]);
        let packed = s
            .pack("[system]\npcpus = 1\nmemory_mib = 1024\n[[vm]]\nname = \"big\"\nkernel = \"k.bin\"\nvcpus = 2\nmemory_mib = 768\n")
            .unwrap();
        let bytes = payload_of(&fs::read(packed.image).unwrap());
        let p = Payload::parse(&bytes).unwrap();
        let vm = p.vm(0);
        assert_eq!((vm.entry, vm.affinity), (GUEST_RAM_BASE, 1));
        assert_eq!(vm.boot_regs[2], GUEST_RAM_BASE + 512 * MIB - 64 * 1024);
        let k = vm.regions().next().unwrap();
        assert_eq!(
            (k.kind, k.ipa, p.region_bytes(k)),
            (RegionKind::Kernel, GUEST_RAM_BASE, &[0xfe, 0xff, 0xff, 0xea][..])
        );
    }

    const ONE_VM: &str =
        "[system]\npcpus = 2\nmemory_mib = 64\n[[vm]]\nname = \"x\"\nkernel = \"k\"\nvcpus = 1\nmemory_mib = 2\n";

    #[test]
    fn vm_too_small_for_its_images() {
        let s = Setup::new();
        // A raw kernel as large as the VM.
        s.file("k", &vec![1; 2 * MIB as usize]);
        s.refuse(ONE_VM, "vm[0].memory_mib", "VM \"x\" is too small for its kernel (2097152 bytes)");
        // A small kernel with an initrd larger than the room below the DTB.
        s.file("k", &[1; 16]);
        s.file("big.img", &vec![2; 2 * MIB as usize]);
        let with_initrd = ONE_VM.replace("vcpus", "initrd = \"big.img\"\nvcpus");
        s.refuse(&with_initrd, "vm[0].memory_mib", "initrd (2097152 bytes)");
        // A kernel reaching into the initrd.
        s.file("k", &vec![1; MIB as usize]);
        s.file("big.img", &vec![2; MIB as usize - 4096]);
        s.refuse(&with_initrd, "vm[0].memory_mib", "overlaps the initrd");
        // ...or, without an initrd, into the DTB.
        s.file("k", &vec![1; 2 * MIB as usize - 4096]);
        s.refuse(ONE_VM, "vm[0].memory_mib", "overlaps the DTB");
        // An ELF whose .bss runs into the DTB.
        s.file("k", &tiny_elf(0x4000_0000, &[(0x4000_0000, 0x4000_0000, vec![1; 4], 2 * MIB - 0x100)]));
        s.refuse(ONE_VM, "vm[0].memory_mib", "overlaps the DTB");
        // Just fits: kernel, then the initrd right below the DTB.
        s.file("k", &vec![1; MIB as usize]);
        s.file("big.img", &vec![2; MIB as usize - 64 * 1024]);
        s.pack(&with_initrd).unwrap();
    }

    #[test]
    fn elf_segment_outside_ram_names_file_and_segment() {
        let s = Setup::new();
        s.file("k", &tiny_elf(0x4000_0000, &[(0x4000_0000, 0x4000_0000, vec![1; 4], 4), (0x0, 0x0, vec![1; 4], 4)]));
        let e = s.refuse(ONE_VM, "vm[0].kernel", "ELF segment 1 (p_paddr 0x00000000, 4 bytes in memory) lies outside");
        assert!(e.reason.contains(&s.dir.path().join("k").display().to_string()), "{e}");
        let mut elf = tiny_elf(0x4000_0000, &[(0x4000_0000, 0x4000_0000, vec![1; 4], 4)]);
        elf[18] = 3; // EM_386
        s.file("k", &elf);
        s.refuse(ONE_VM, "vm[0].kernel", "not Arm");
    }

    #[test]
    fn payload_size_counts_against_physical_ram() {
        let s = Setup::new();
        // 64 MiB: 16 + payload + 8 + 36 for the VM. `load` assumes a 2 MiB
        // payload (62 MiB: fine); a 5 MiB kernel makes it 6 MiB (66 MiB).
        let text = ONE_VM.replace("memory_mib = 2\n", "memory_mib = 36\n");
        s.file("k", &vec![1; 5 * MIB as usize]);
        config::load(&s.config(&text)).unwrap();
        s.refuse(&text, "system.memory_mib", "66 MiB, which does not fit in 64 MiB");
        s.file("k", &vec![1; 3 * MIB as usize]);
        s.pack(&text).unwrap();
    }

    #[test]
    fn hypervisor_problems_name_the_hypervisor_file() {
        let s = Setup::new();
        s.file("k", &[1; 4]);
        let c = s.config(ONE_VM);
        let missing = s.dir.path().join("no-such-hyp");
        let e = pack(&c, &missing, &s.out()).unwrap_err();
        assert_eq!((e.file.as_path(), &e.at), (missing.as_path(), &Location::File));
        assert!(e.to_string().contains("cannot read the hypervisor ELF"), "{e}");
        let raw = s.file("raw-hyp", &[0; 64]);
        let e = pack(&c, &raw, &s.out()).unwrap_err();
        assert!(e.to_string().contains("not usable as the hypervisor ELF: not an ELF file"), "{e}");
        assert!(!s.out().exists());
    }

    /// Every file in tests/configs/bad is refused with the fragment its first
    /// line announces (`# expect: ...`), names the file, and writes nothing.
    #[test]
    fn bad_configs_are_refused() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/configs/bad");
        let hyp = tempfile::tempdir().unwrap();
        let hyp_elf = hyp.path().join("hyp.elf");
        fs::write(&hyp_elf, fake_hypervisor()).unwrap();
        let mut seen = 0;
        let mut entries: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries.into_iter().filter(|p| p.extension().is_some_and(|e| e == "toml")) {
            let text = fs::read_to_string(&path).unwrap();
            let first = text.lines().next().unwrap_or("");
            let expect = first
                .strip_prefix("# expect: ")
                .unwrap_or_else(|| panic!("{}: first line must be `# expect: <fragment>`", path.display()));
            let out = hyp.path().join("out");
            let e = pack(&path, &hyp_elf, &out).expect_err(&format!("{} accepted", path.display()));
            let line = e.to_string();
            println!("{line}");
            assert!(line.contains(expect.trim()), "{}: {:?} not in: {line}", path.display(), expect);
            assert!(line.contains(path.file_name().unwrap().to_str().unwrap()), "file not named: {line}");
            assert!(!line.contains('\n'));
            assert!(!out.exists(), "{}: something was written", path.display());
            seen += 1;
        }
        assert!(seen >= 10, "only {seen} bad configs found in {}", dir.display());
    }

    /// The example the README starts from is a valid configuration once its
    /// guest is built.
    #[test]
    fn hello_example_packs() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello.toml");
        let tree = tempfile::tempdir().unwrap();
        fs::create_dir_all(tree.path().join("examples")).unwrap();
        fs::create_dir_all(tree.path().join("target/armv7a-none-eabi/release")).unwrap();
        let cfg = tree.path().join("examples/hello.toml");
        fs::copy(&example, &cfg).unwrap();
        let guest = tiny_elf(0x4000_0000, &[(0x4000_0000, 0x4000_0000, vec![0xe3; 0x800], 0x1000)]);
        fs::write(tree.path().join("target/armv7a-none-eabi/release/hello"), guest).unwrap();
        let hyp = tree.path().join("hyp.elf");
        fs::write(&hyp, fake_hypervisor()).unwrap();
        let packed = pack(&cfg, &hyp, &tree.path().join("out")).unwrap();
        assert_eq!((packed.pcpus, packed.memory_mib, packed.vm_names.as_slice()), (2, 256, &["hello".to_string()][..]));
        let bytes = payload_of(&fs::read(&packed.image).unwrap());
        let p = Payload::parse(&bytes).unwrap();
        let vm = p.vm(0);
        assert_eq!((vm.vcpus, vm.ram_size, vm.affinity), (1, 16 * MIB, 0b11));
        let dtb = vm.regions().find(|r| r.kind == RegionKind::Dtb).unwrap();
        let fdt = fdt::Fdt::new(p.region_bytes(dtb)).unwrap();
        assert_eq!(fdt.chosen().bootargs(), Some("hello from the config"));
    }
}

//! The guest device tree: what a VM's kernel learns about its machine at boot
//! (Devicetree Specification v0.4; Linux `Documentation/arch/arm/booting.rst`
//! passes its address in r2).
//!
//! It describes the VM, not the board: its RAM, its vCPUs (started with PSCI
//! over HVC, which the hypervisor implements), the command line and the
//! initrd. Devices the hypervisor emulates or passes through get their nodes
//! here too once the configuration can name them.

use std::ops::Range;

use vm_fdt::FdtWriter;

/// Largest guest DTB: the packer reserves this much below the DTB limit.
pub const MAX_DTB_SIZE: usize = 64 << 10;

/// What the guest DTB says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestDtb<'a> {
    pub name: &'a str,
    pub vcpus: u32,
    pub ram_base: u32,
    pub ram_size: u32,
    pub cmdline: &'a str,
    /// Guest-physical `[start, end)` of the initrd, if any.
    pub initrd: Option<Range<u32>>,
}

/// Builds the flattened device tree; fails only if it would exceed
/// [`MAX_DTB_SIZE`] (or on strings the format cannot hold).
pub fn build(vm: &GuestDtb<'_>) -> Result<Vec<u8>, String> {
    let blob = write(vm).map_err(|e| format!("cannot build the guest device tree: {e}"))?;
    if blob.len() > MAX_DTB_SIZE {
        return Err(format!(
            "the guest device tree is {} bytes, more than {MAX_DTB_SIZE}",
            blob.len()
        ));
    }
    Ok(blob)
}

fn write(vm: &GuestDtb<'_>) -> vm_fdt::FdtWriterResult<Vec<u8>> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 1)?;
    fdt.property_string_list(
        "compatible",
        vec!["tessera,vm".into(), "linux,dummy-virt".into()],
    )?;
    fdt.property_string("model", &format!("Tessera VM {}", vm.name))?;

    let memory = fdt.begin_node(&format!("memory@{:x}", vm.ram_base))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u32("reg", &[vm.ram_base, vm.ram_size])?;
    fdt.end_node(memory)?;

    // One node per vCPU; `reg` is the vCPU's MPIDR affinity (Aff0 = index),
    // which is what the hypervisor reports in VMPIDR and what PSCI CPU_ON takes.
    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    for n in 0..vm.vcpus {
        let cpu = fdt.begin_node(&format!("cpu@{n}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,cortex-a15")?;
        fdt.property_u32("reg", n)?;
        fdt.property_string("enable-method", "psci")?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;

    // PSCI 1.0 with the 0.2 function IDs, over HVC (the hypervisor is the
    // firmware for its guests).
    let psci = fdt.begin_node("psci")?;
    fdt.property_string_list(
        "compatible",
        vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()],
    )?;
    fdt.property_string("method", "hvc")?;
    fdt.end_node(psci)?;

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", vm.cmdline)?;
    if let Some(initrd) = &vm.initrd {
        fdt.property_u32("linux,initrd-start", initrd.start)?;
        fdt.property_u32("linux,initrd-end", initrd.end)?;
    }
    fdt.end_node(chosen)?;

    fdt.end_node(root)?;
    fdt.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::check_dtb as check;

    #[test]
    fn dtb_parses_back() {
        let vm = GuestDtb {
            name: "linux",
            vcpus: 4,
            ram_base: 0x4000_0000,
            ram_size: 256 << 20,
            cmdline: "console=hvc0 root=/dev/vda",
            initrd: Some(0x4ff0_0000..0x4ff1_2345),
        };
        check(&build(&vm).unwrap(), &vm);
        let bare = GuestDtb {
            name: "rtos",
            vcpus: 1,
            cmdline: "",
            initrd: None,
            ..vm
        };
        check(&build(&bare).unwrap(), &bare);
    }

    #[test]
    fn the_largest_dtb_fits() {
        let long = "x".repeat(1024);
        let vm = GuestDtb {
            name: "big",
            vcpus: 64,
            ram_base: 0x4000_0000,
            ram_size: 2 << 20,
            cmdline: &long,
            initrd: Some(0x4000_0000..0x4000_1000),
        };
        let blob = build(&vm).unwrap();
        assert!(blob.len() < MAX_DTB_SIZE / 4, "{} bytes", blob.len());
        check(&blob, &vm);
    }
}

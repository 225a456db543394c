//! The guest device tree: what a VM's kernel learns about its machine at boot
//! (Devicetree Specification v0.4; Linux `Documentation/arch/arm/booting.rst`
//! passes its address in r2).
//!
//! It describes the VM, not the board: its RAM, its vCPUs (started with PSCI
//! over HVC, which the hypervisor implements), the devices every VM gets
//! (a GICv2, the architected timer, a PL011, at the addresses of QEMU's
//! `virt` board, from the one guest map, `tessera_payload::guest_map`), the
//! command line and the initrd.

use std::ops::Range;

use vm_fdt::FdtWriter;

const GIC_PHANDLE: u32 = 1;
const CLOCK_PHANDLE: u32 = 2;

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
    /// The virtio-mmio slots that hold a device.
    pub virtio_slots: &'a [u32],
    /// The shared-memory channels the VM maps.
    pub channels: &'a [DtbChannel<'a>],
}

/// A `tessera,channel` node: shared memory and its doorbell interrupt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtbChannel<'a> {
    /// The channel number the doorbell hypercall takes.
    pub id: u32,
    pub name: &'a str,
    pub ipa: u32,
    pub size: u32,
    pub spi: u32,
}

// Every address and interrupt below comes from the one guest memory map
// the hypervisor uses too (`tessera_payload::guest_map`).
use tessera_payload::guest_map as map;

/// Builds the flattened device tree; fails only if it would exceed
/// [`MAX_DTB_SIZE`] (or on strings the format cannot hold).
pub fn build(vm: &GuestDtb<'_>) -> Result<Vec<u8>, String> {
    let blob = write(vm).map_err(|e| format!("cannot build the guest device tree: {e}"))?;
    if blob.len() > MAX_DTB_SIZE {
        return Err(format!("the guest device tree is {} bytes, more than {MAX_DTB_SIZE}", blob.len()));
    }
    Ok(blob)
}

fn write(vm: &GuestDtb<'_>) -> vm_fdt::FdtWriterResult<Vec<u8>> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 1)?;
    fdt.property_string_list("compatible", vec!["tessera,vm".into(), "linux,dummy-virt".into()])?;
    fdt.property_string("model", &format!("Tessera VM {}", vm.name))?;
    fdt.property_u32("interrupt-parent", GIC_PHANDLE)?;

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
    fdt.property_string_list("compatible", vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()])?;
    fdt.property_string("method", "hvc")?;
    fdt.end_node(psci)?;

    // What user space checks to know it runs on Tessera (as Xen guests have
    // /hypervisor with "xen,xen"); the kernel detects it by the SMCCC UID.
    // Its interrupt is the hypercall console's input (ABI 1.2): an edge
    // whenever typed input arrives for TESSERA_CONSOLE_READ.
    let hyp = fdt.begin_node("hypervisor")?;
    fdt.property_string("compatible", "tessera,hypervisor")?;
    fdt.property_array_u32("interrupts", &[0, map::CONSOLE_SPI, 1])?;
    fdt.end_node(hyp)?;

    // The GICv2: distributor (emulated) and CPU interface (the hardware's
    // virtual one). 3 interrupt cells: type (0 SPI, 1 PPI), number, flags.
    let gic = fdt.begin_node(&format!("intc@{:x}", map::GICD))?;
    fdt.property_string("compatible", "arm,cortex-a15-gic")?;
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_array_u32("reg", &[map::GICD, map::GICD_SIZE, map::GICC, map::GICC_SIZE])?;
    fdt.property_u32("phandle", GIC_PHANDLE)?;
    fdt.end_node(gic)?;

    // The architected timer's PPIs (secure, non-secure physical, virtual,
    // hypervisor), level-high, to every vCPU the GIC can address.
    let cpu_mask = (1u32 << vm.vcpus.min(8)) - 1;
    let ppi_flags = 0x04 | cpu_mask << 8;
    let timer = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv7-timer")?;
    // PPI numbers count from INTID 16; the virtual timer is the one the
    // hypervisor injects.
    let vtimer = map::PPI_VTIMER - 16;
    fdt.property_array_u32(
        "interrupts",
        &[1, 13, ppi_flags, 1, 14, ppi_flags, 1, vtimer, ppi_flags, 1, 10, ppi_flags],
    )?;
    fdt.property_null("always-on")?;
    fdt.end_node(timer)?;

    let clock = fdt.begin_node("apb-pclk")?;
    fdt.property_string("compatible", "fixed-clock")?;
    fdt.property_u32("#clock-cells", 0)?;
    fdt.property_u32("clock-frequency", 24_000_000)?;
    fdt.property_string("clock-output-names", "clk24mhz")?;
    fdt.property_u32("phandle", CLOCK_PHANDLE)?;
    fdt.end_node(clock)?;

    let uart_node = format!("pl011@{:x}", map::UART);
    let uart = fdt.begin_node(&uart_node)?;
    fdt.property_string_list("compatible", vec!["arm,pl011".into(), "arm,primecell".into()])?;
    fdt.property_array_u32("reg", &[map::UART, map::UART_SIZE])?;
    fdt.property_array_u32("interrupts", &[0, map::UART_SPI, 4])?;
    fdt.property_array_u32("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])?;
    fdt.property_string_list("clock-names", vec!["uartclk".into(), "apb_pclk".into()])?;
    fdt.end_node(uart)?;

    for &slot in vm.virtio_slots {
        let (base, spi) = map::virtio_slot(slot);
        let node = fdt.begin_node(&format!("virtio_mmio@{base:x}"))?;
        fdt.property_string("compatible", "virtio,mmio")?;
        fdt.property_array_u32("reg", &[base, map::VIRTIO_SLOT_SIZE])?;
        fdt.property_array_u32("interrupts", &[0, spi, 4])?;
        fdt.property_null("dma-coherent")?;
        fdt.end_node(node)?;
    }

    for c in vm.channels {
        let node = fdt.begin_node(&format!("tessera-channel@{:x}", c.ipa))?;
        fdt.property_string("compatible", "tessera,channel")?;
        fdt.property_array_u32("reg", &[c.ipa, c.size])?;
        // Edge-triggered: each doorbell is one event.
        fdt.property_array_u32("interrupts", &[0, c.spi, 1])?;
        fdt.property_u32("tessera,channel-id", c.id)?;
        fdt.property_string("tessera,channel-name", c.name)?;
        fdt.end_node(node)?;
    }

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", vm.cmdline)?;
    fdt.property_string("stdout-path", &format!("/{uart_node}"))?;
    // A fixed 4-byte cell the hypervisor rewrites in place when the VM is
    // reset (PSCI SYSTEM_RESET): 0 after power-on, n after the nth reset.
    fdt.property_u32("tessera,reset-count", 0)?;
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
            virtio_slots: &[0, 3],
            channels: &[DtbChannel { id: 1, name: "ring", ipa: 0x1100_0000, size: 0x1000, spi: 49 }],
        };
        let blob = build(&vm).unwrap();
        check(&blob, &vm);
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let gic = fdt.find_compatible(&["arm,cortex-a15-gic"]).unwrap();
        let regs: Vec<_> = gic.reg().unwrap().map(|r| (r.starting_address as usize, r.size.unwrap())).collect();
        assert_eq!(regs, [(0x0800_0000, 0x1000), (0x0801_0000, 0x2000)]);
        let uart = fdt.find_compatible(&["arm,pl011"]).unwrap();
        assert_eq!(uart.reg().unwrap().next().unwrap().starting_address as usize, 0x0900_0000);
        assert_eq!(fdt.chosen().stdout().unwrap().name, "pl011@9000000");
        let timer = fdt.find_compatible(&["arm,armv7-timer"]).unwrap();
        assert_eq!(cells(&timer, "interrupts")[6..9], [1, 11, 0xf04], "virtual timer PPI to 4 CPUs");
        let slots: Vec<_> = fdt
            .all_nodes()
            .filter(|n| n.compatible().is_some_and(|c| c.all().any(|c| c == "virtio,mmio")))
            .map(|n| (n.reg().unwrap().next().unwrap().starting_address as usize, cells(&n, "interrupts")))
            .collect();
        assert_eq!(slots, [(0x0a00_0000, vec![0u32, 16, 4]), (0x0a00_0600, vec![0, 19, 4])]);
        let ch = fdt.find_compatible(&["tessera,channel"]).expect("channel node");
        let r = ch.reg().unwrap().next().unwrap();
        assert_eq!((r.starting_address as usize, r.size), (0x1100_0000, Some(0x1000)));
        assert_eq!(ch.property("tessera,channel-id").unwrap().as_usize(), Some(1));
        assert_eq!(cells(&ch, "interrupts"), [0, 49, 1]);
        let reset = fdt.find_node("/chosen").unwrap().property("tessera,reset-count").unwrap();
        assert_eq!(reset.value, [0, 0, 0, 0]);
        let bare = GuestDtb { name: "rtos", vcpus: 1, cmdline: "", initrd: None, ..vm };
        check(&build(&bare).unwrap(), &bare);
    }

    fn cells(node: &fdt::node::FdtNode<'_, '_>, name: &str) -> Vec<u32> {
        let p = node.property(name).unwrap_or_else(|| panic!("{} has no {name}", node.name));
        assert_eq!(p.value.len() % 4, 0, "{name} is cells");
        p.value.chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect()
    }

    fn strings<'b>(node: &fdt::node::FdtNode<'b, '_>, name: &str) -> Vec<&'b str> {
        let p = node.property(name).unwrap_or_else(|| panic!("{} has no {name}", node.name));
        p.value.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| std::str::from_utf8(s).unwrap()).collect()
    }

    /// What Linux's drivers look up: the GIC as the root interrupt parent,
    /// the timer's four PPIs, the PL011 with its IRQ and clocks, the console.
    #[test]
    fn the_devices_every_vm_gets() {
        let vm = GuestDtb {
            name: "linux",
            vcpus: 2,
            ram_base: 0x4000_0000,
            ram_size: 128 << 20,
            cmdline: "console=ttyAMA0",
            initrd: None,
            virtio_slots: &[],
            channels: &[],
        };
        let blob = build(&vm).unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let root = fdt.find_node("/").unwrap();

        let gic = fdt.find_node("/intc@8000000").unwrap();
        assert!(gic.property("interrupt-controller").is_some());
        assert_eq!(cells(&gic, "#interrupt-cells"), [3]);
        assert_eq!(cells(&gic, "reg"), [0x0800_0000, 0x1000, 0x0801_0000, 0x2000]);
        assert_eq!(cells(&root, "interrupt-parent"), cells(&gic, "phandle"));

        let timer = fdt.find_node("/timer").unwrap();
        assert_eq!(strings(&timer, "compatible"), ["arm,armv7-timer"]);
        // Secure and non-secure physical, virtual, hypervisor; level-high
        // (4) to CPUs 0-1 (mask 0b11 in bits 15:8).
        assert_eq!(cells(&timer, "interrupts"), [1, 13, 0x304, 1, 14, 0x304, 1, 11, 0x304, 1, 10, 0x304]);

        let clock = fdt.find_node("/apb-pclk").unwrap();
        assert_eq!(strings(&clock, "compatible"), ["fixed-clock"]);
        assert_eq!(cells(&clock, "clock-frequency"), [24_000_000]);
        assert_eq!(cells(&clock, "#clock-cells"), [0]);
        let clk = cells(&clock, "phandle")[0];
        assert_ne!(clk, cells(&gic, "phandle")[0]);

        let uart = fdt.find_node("/pl011@9000000").unwrap();
        assert_eq!(strings(&uart, "compatible"), ["arm,pl011", "arm,primecell"]);
        assert_eq!(cells(&uart, "reg"), [0x0900_0000, 0x1000]);
        assert_eq!(cells(&uart, "interrupts"), [0, 1, 4], "SPI 1, level-high");
        assert_eq!(cells(&uart, "clocks"), [clk, clk]);
        assert_eq!(strings(&uart, "clock-names"), ["uartclk", "apb_pclk"]);

        let hyp = fdt.find_node("/hypervisor").unwrap();
        assert_eq!(strings(&hyp, "compatible"), ["tessera,hypervisor"]);
        assert_eq!(cells(&hyp, "interrupts"), [0, 2, 1], "the console-input SPI, edge-rising");

        let chosen = fdt.find_node("/chosen").unwrap();
        assert_eq!(strings(&chosen, "stdout-path"), ["/pl011@9000000"]);
        for (n, cpu) in fdt.cpus().enumerate() {
            assert_eq!(cpu.ids().first(), n, "reg = vCPU index = MPIDR Aff0");
        }
    }

    /// `/chosen/tessera,reset-count` is one 4-byte cell, 0 at power-on, at
    /// the same place for every VM shape: the hypervisor rewrites it in
    /// place on a reset, and the init script reads it back.
    #[test]
    fn the_reset_count_is_one_fixed_cell() {
        for (vcpus, cmdline, initrd) in
            [(1, "", None), (4, "console=ttyAMA0 tessera.test=reboot", Some(0x4700_0000..0x4710_0000))]
        {
            let vm = GuestDtb {
                name: "r",
                vcpus,
                ram_base: 0x4000_0000,
                ram_size: 64 << 20,
                cmdline,
                initrd,
                virtio_slots: &[],
                channels: &[],
            };
            let blob = build(&vm).unwrap();
            let fdt = fdt::Fdt::new(&blob).unwrap();
            let prop = fdt.find_node("/chosen").unwrap().property("tessera,reset-count").unwrap();
            assert_eq!(prop.value, [0, 0, 0, 0]);
            assert_eq!(blob.windows(b"tessera,reset-count".len()).filter(|w| *w == b"tessera,reset-count").count(), 1);
        }
    }

    #[test]
    fn timer_ppis_go_to_at_most_eight_cpus() {
        for (vcpus, mask) in [(1u32, 0x1u32), (4, 0xf), (8, 0xff), (9, 0xff), (64, 0xff)] {
            let vm = GuestDtb {
                name: "t",
                vcpus,
                ram_base: 0x4000_0000,
                ram_size: 64 << 20,
                cmdline: "",
                initrd: None,
                virtio_slots: &[],
                channels: &[],
            };
            let blob = build(&vm).unwrap();
            let fdt = fdt::Fdt::new(&blob).unwrap();
            let irqs = cells(&fdt.find_node("/timer").unwrap(), "interrupts");
            assert!(irqs.chunks(3).all(|c| c[2] == 0x04 | mask << 8), "{vcpus} vCPUs: {irqs:x?}");
        }
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
            virtio_slots: &[],
            channels: &[],
        };
        let blob = build(&vm).unwrap();
        assert!(blob.len() < MAX_DTB_SIZE / 4, "{} bytes", blob.len());
        check(&blob, &vm);
    }
}

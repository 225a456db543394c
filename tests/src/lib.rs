//! The QEMU scenarios: what each one boots and what its console must show.
//!
//! Pure data and checking, no processes: `cargo xtask test` builds, packs and
//! boots each scenario and hands the console lines to [`check`]. A scenario
//! is a configuration (in `tests/configs/`), small guests, a deadline, and
//! expectations a user would check by reading the console: how each VM
//! ended, lines that must appear, lines that must not.

pub mod console;

use console::{Report, VmEnd};

/// How a VM must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Exited by itself with this status.
    Exit(u32),
    /// Stopped by the hypervisor; the stop line contains this text.
    Stopped(&'static str),
}

pub struct Scenario {
    pub name: &'static str,
    /// Configuration, relative to the workspace root.
    pub config: &'static str,
    pub deadline_secs: u64,
    pub vms: &'static [(&'static str, Want)],
    /// Lines (substrings of console lines) that must appear; those from the
    /// same source (the text before the first ": ", a VM name or `tessera`)
    /// in this order. VMs run concurrently, so lines of different VMs have
    /// no order.
    pub lines: &'static [&'static str],
    /// Substrings no line may contain.
    pub absent: &'static [&'static str],
    /// Pairs of VMs whose lifetimes must overlap: the first VM's first
    /// output line comes before the second VM's last, and vice versa.
    pub overlap: &'static [(&'static str, &'static str)],
    /// Keys typed at the hypervisor's console: each `(after, keys)` types
    /// `keys` once output containing `after` has appeared, in order (the
    /// guest asked for input; nothing is typed on a timer).
    pub typed: &'static [(&'static str, &'static str)],
}

/// What a disk scenario needs besides its console: images made before the
/// run, and files read back out of them after it, checked against the
/// checksums the VMs printed.
pub struct DiskScenario {
    /// The [`Scenario`] this belongs to.
    pub scenario: &'static str,
    /// Made fresh before every run (paths relative to the workspace root).
    pub images: &'static [DiskImage],
    /// After the run: each file's MD5, read by the host from the image,
    /// must equal the hex digest that ends the VM's console line starting
    /// with `line` (the `VM: ` label included).
    pub readback: &'static [Readback],
    /// Console lines (prefix, as in `readback`) whose digest must equal
    /// the MD5 of the content the host put in image `image`.
    pub expect_content: &'static [(&'static str, usize)],
}

pub struct DiskImage {
    pub path: &'static str,
    pub size_mib: u32,
    pub content: DiskContent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskContent {
    /// All zeroes (a VM makes its own filesystem).
    Zero,
    /// An ext2 filesystem over the whole image holding `/data`: `bytes`
    /// bytes of a fixed pseudo-random sequence (made with the host's
    /// mke2fs).
    Ext2Data { bytes: u32 },
    /// Every sector holds its own number: "sector N" and NUL padding.
    SectorNumbers,
}

pub struct Readback {
    pub image: &'static str,
    /// The VM's range: an ext2 filesystem.
    pub offset_mib: u32,
    pub size_mib: u32,
    pub file: &'static str,
    pub line: &'static str,
}

pub const DISK_SCENARIOS: &[DiskScenario] = &[
    DiskScenario {
        scenario: "linux-blk-two-vms",
        images: &[DiskImage { path: "target/disks/blk-two-vms.img", size_mib: 64, content: DiskContent::Zero }],
        readback: &[
            Readback {
                image: "target/disks/blk-two-vms.img",
                offset_mib: 0,
                size_mib: 32,
                file: "/data",
                line: "left: tessera-init: wrote /data md5 ",
            },
            Readback {
                image: "target/disks/blk-two-vms.img",
                offset_mib: 32,
                size_mib: 32,
                file: "/data",
                line: "right: tessera-init: wrote /data md5 ",
            },
        ],
        expect_content: &[],
    },
    DiskScenario {
        scenario: "linux-blk-shared-ro",
        images: &[DiskImage {
            path: "target/disks/blk-shared-ro.img",
            size_mib: 16,
            content: DiskContent::Ext2Data { bytes: 1 << 20 },
        }],
        readback: &[],
        expect_content: &[("left: tessera-init: read /data md5 ", 0), ("right: tessera-init: read /data md5 ", 0)],
    },
    DiskScenario {
        scenario: "guest-virtio-blk",
        images: &[DiskImage { path: "target/disks/guest-blk.img", size_mib: 4, content: DiskContent::SectorNumbers }],
        readback: &[],
        expect_content: &[],
    },
];

/// Values two console lines must agree on, such as the checksum of the
/// data one VM sent and the one of what another received.
pub struct SameValues {
    /// The [`Scenario`] this belongs to.
    pub scenario: &'static str,
    /// For each pair of line prefixes (the `VM: ` label included), the
    /// first line starting with each must exist, and the rest of both
    /// lines must be equal and not empty.
    pub pairs: &'static [(&'static str, &'static str)],
}

pub const SAME_VALUES: &[SameValues] = &[
    SameValues {
        scenario: "linux-net",
        pairs: &[(
            "client: tessera-init: sending 10485760 bytes, md5 ",
            "server: tessera-init: received 10485760 bytes, md5 ",
        )],
    },
    SameValues {
        scenario: "hostile-net",
        pairs: &[(
            "client: tessera-init: sending 4194304 bytes, md5 ",
            "server: tessera-init: received 4194304 bytes, md5 ",
        )],
    },
];

/// Never acceptable in any scenario.
pub const ALWAYS_ABSENT: &[&str] = &[
    "PANIC",
    "SURVIVED",
    "memory corrupted",
    "guest panic",
    "FAILED",
    "WRONG:",
    // Linux: RCU stall warnings, soft and hard lockups.
    "detected stall",
    "soft lockup",
    "hard LOCKUP",
];

/// Scenarios whose VMs run the `share` guest: each VM prints
/// `shares: [n0, n1, ...]`, how far each of its vCPUs counted in the same
/// stretch of virtual time. Across all VMs there must be `vcpus` counts,
/// none zero, each within a factor of 2 of their mean. They run under
/// QEMU `-icount` (one pCPU): virtual time is then executed instructions,
/// so what the host's own scheduling does to QEMU cannot move the shares.
pub struct ShareScenario {
    pub scenario: &'static str,
    pub vcpus: usize,
}

pub const SHARE_SCENARIOS: &[ShareScenario] = &[
    ShareScenario { scenario: "scale-256-vcpus", vcpus: 256 },
    ShareScenario { scenario: "scale-64-vms", vcpus: 128 },
];

/// The fairness check of a [`ShareScenario`]; Ok carries a one-line summary.
pub fn check_shares(s: &ShareScenario, lines: &[String]) -> Result<String, String> {
    let mut counts = Vec::new();
    for l in lines {
        let Some(list) = l.split_once("shares: [").map(|(_, r)| r.trim_end_matches(']')) else { continue };
        for n in list.split(", ") {
            counts.push(n.trim().parse::<u64>().map_err(|_| format!("unreadable share {n:?} in {l:?}"))?);
        }
    }
    if counts.len() != s.vcpus {
        return Err(format!("{} vCPU shares reported, expected {}", counts.len(), s.vcpus));
    }
    let mean = counts.iter().sum::<u64>() / counts.len() as u64;
    let (min, max) = (*counts.iter().min().unwrap_or(&0), *counts.iter().max().unwrap_or(&0));
    if min == 0 || min * 2 < mean || max > mean * 2 {
        return Err(format!("unfair shares: min {min}, mean {mean}, max {max} (each must be within 2x of the mean)"));
    }
    Ok(format!(
        "{} vCPU shares: min {:.2}x, max {:.2}x of the mean",
        counts.len(),
        min as f64 / mean as f64,
        max as f64 / mean as f64
    ))
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "hello",
        config: "tests/configs/hello.toml",
        deadline_secs: 60,
        vms: &[("hello", Want::Exit(0))],
        lines: &[
            "tessera: vm \"hello\" (id 1): 1 vCPU(s)",
            "hello: cmdline: id=1 vcpus=1 greeting",
            "hello: check SMCCC_VERSION: ok",
            "hello: console write through the hypercall",
            "hello: check TESSERA_VM_INFO: ok",
            "hello: check unknown function id: ok",
            "hello: 16 checks passed, 0 failed",
            "tessera: vm \"hello\" (id 1): exited, status 0",
            "tessera: all VMs have ended; powering off",
        ],
        absent: &[],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "hello-reset",
        config: "tests/configs/hello-reset.toml",
        deadline_secs: 60,
        vms: &[("hello", Want::Exit(0))],
        lines: &[
            "hello: reset count 0: asking for PSCI SYSTEM_RESET",
            "tessera: vm \"hello\" (id 1): reset #1 (PSCI SYSTEM_RESET)",
            "hello: back after reset, reset count 1",
            "hello: 16 checks passed, 0 failed",
        ],
        absent: &[],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "two-vms-two-pcpus",
        config: "tests/configs/two-pcpus.toml",
        deadline_secs: 120,
        vms: &[("left", Want::Exit(0)), ("right", Want::Exit(0))],
        lines: &[
            "tessera: vm \"left\": 1 vCPU(s) on pCPU 0",
            "tessera: vm \"right\": 1 vCPU(s) on pCPU 1",
            "tessera: pCPU 1 up",
            "left: rendezvous: 10000 alternations with the VM at the channel's other end, each on its own pCPU",
            "right: rendezvous: 10000 alternations with the VM at the channel's other end, each on its own pCPU",
        ],
        absent: &[],
        overlap: &[("left", "right")],
        typed: &[],
    },
    Scenario {
        name: "two-vms-one-pcpu",
        config: "tests/configs/same-pcpu.toml",
        deadline_secs: 120,
        vms: &[("first", Want::Exit(0)), ("second", Want::Exit(0))],
        lines: &[
            "tessera: vm \"first\": 1 vCPU(s) on pCPU 0",
            "tessera: vm \"second\": 1 vCPU(s) on pCPU 0",
            "tessera: pCPU 1: no vCPU may run on it: left powered off",
        ],
        absent: &["tessera: pCPU 1 up"],
        overlap: &[("first", "second")],
        typed: &[],
    },
    Scenario {
        name: "scale-256-vcpus",
        config: "tests/configs/scale-256.toml",
        deadline_secs: 300,
        vms: &[("s01", Want::Exit(0)), ("s16", Want::Exit(0)), ("s32", Want::Exit(0))],
        lines: &[
            "tessera: vm \"s32\": 8 vCPU(s) on pCPU 0",
            "s01: vm 1: 8 vCPUs counting for 2 s",
            "s32: vm 32: 8 vCPUs counting for 2 s",
            "tessera: all VMs have ended; powering off",
        ],
        absent: &["WRONG", "FAILED"],
        // The shares check that they ran at the same time: a VM's virtual
        // counter runs whether it is scheduled or not.
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "scale-64-vms",
        config: "tests/configs/scale-64-vms.toml",
        deadline_secs: 300,
        vms: &[("v01", Want::Exit(0)), ("v64", Want::Exit(0))],
        lines: &["tessera: vm \"v64\" (id 64): 2 vCPU(s)", "v64: vm 64: 2 vCPUs counting for 2 s"],
        absent: &["WRONG", "FAILED"],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "migration",
        config: "tests/configs/migrate.toml",
        deadline_secs: 60,
        vms: &[("a", Want::Exit(0)), ("b", Want::Exit(0)), ("c", Want::Exit(0))],
        lines: &[
            "tessera: vm \"a\": 1 vCPU(s) on pCPU 0",
            "tessera: vm \"b\": 1 vCPU(s) on pCPU 1",
            "tessera: vm \"c\": 1 vCPU(s) on pCPU 0",
            "a: from 4 s on:",
            "c: from 4 s on:",
        ],
        absent: &["WRONG"],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "affinity-holds",
        config: "tests/configs/pinned.toml",
        deadline_secs: 60,
        vms: &[("a", Want::Exit(0)), ("b", Want::Exit(0)), ("c", Want::Exit(0))],
        lines: &["tessera: vm \"a\": 1 vCPU(s) on pCPU 0", "tessera: vm \"c\": 1 vCPU(s) on pCPU 0"],
        absent: &["WRONG", "\"a\" (id 1): its vCPUs moved", "\"c\" (id 3): its vCPUs moved"],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "dynamic-scaling",
        config: "tests/configs/dynamic-scaling.toml",
        deadline_secs: 60,
        vms: &[("burst", Want::Exit(0))],
        lines: &[
            "tessera: pCPU 1 up",
            "tessera: pCPU 1: powered off (idle); its 1 vCPU(s) now wait on pCPU 0",
            "tessera: pCPU 1: powering on (1 vCPU(s) waiting on pCPU 0)",
            "tessera: pCPU 1: up again",
            "tessera: pCPU 1: powered off (idle)",
            "tessera: pCPU 1: powering on",
            "tessera: pCPU 1: up again",
            "tessera: pCPU 1: powered off (idle)",
            "tessera: pCPU power changes: ",
            // Both vCPUs made progress in each of the 3 busy phases.
            "burst: shares: [3, 3]",
        ],
        absent: &["WRONG"],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "linux-dynamic-scaling",
        config: "tests/configs/linux-bursts.toml",
        deadline_secs: 180,
        vms: &[("linux", Want::Exit(0))],
        lines: &[
            "tessera: pCPU 1 up",
            "tessera: pCPU 1: powered off (idle)",
            "tessera: pCPU 1: up again",
            "tessera: pCPU 1: powered off (idle)",
            "tessera: pCPU 1: up again",
            "tessera: pCPU 1: powered off (idle)",
            "linux: tessera-init: up, 4 CPUs online (0-3)",
            "linux: tessera-init: burst 1 of 3 done",
            "linux: tessera-init: burst 2 of 3 done",
            "linux: tessera-init: burst 3 of 3 done",
            "tessera: pCPU power changes: ",
        ],
        absent: &[],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "linux-4-vcpus-on-2-pcpus-under-load",
        config: "tests/configs/linux-4on2-storm.toml",
        deadline_secs: 180,
        vms: &[("linux", Want::Exit(0))],
        lines: &["linux: tessera-init: up, 4 CPUs online (0-3)", "linux: dirstorm: 4 workers x 1500 mkdir+rmdir in"],
        absent: &[],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "smp-2-vcpus-on-2-pcpus",
        config: "tests/configs/smp-2on2.toml",
        deadline_secs: 60,
        vms: &[("smp", Want::Exit(0))],
        lines: &[
            "tessera: vm \"smp\": 1 vCPU(s) on pCPU 1",
            "smp: hello through the emulated PL011",
            "smp: vCPU 1: 10 timer ticks, telling vCPU 0",
            "smp: ticks per vCPU: [10, 10]",
            "smp: 2 vCPUs took 10 timer interrupts each, 1 IPIs reached vCPU 0, all secondaries off",
        ],
        absent: &[],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "smp-4-vcpus-on-1-pcpu",
        config: "tests/configs/smp-4on1.toml",
        deadline_secs: 60,
        vms: &[("smp", Want::Exit(0))],
        lines: &[
            "tessera: vm \"smp\": 4 vCPU(s) on pCPU 0",
            "smp: ticks per vCPU: [10, 10, 10, 10]",
            "smp: 4 vCPUs took 10 timer interrupts each, 3 IPIs reached vCPU 0, all secondaries off",
        ],
        absent: &[],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "linux-2-vcpus-on-2-pcpus",
        config: "tests/configs/linux-2on2.toml",
        deadline_secs: 180,
        vms: &[("linux", Want::Exit(0))],
        lines: &[
            "linux: Booting Linux on physical CPU 0x0",
            "linux: CPU1: thread -1, cpu 1, socket 0",
            "linux: tessera-init: up, 2 CPUs online (0-1)",
            "linux: tessera-init: reset count 0",
            "linux: tessera-init: powering off",
        ],
        absent: &["Kernel panic", "Oops", "BUG:"],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "linux-4-vcpus-on-1-pcpu",
        config: "tests/configs/linux-4on1.toml",
        deadline_secs: 240,
        vms: &[("linux", Want::Exit(0))],
        lines: &[
            "tessera: vm \"linux\": 4 vCPU(s) on pCPU 0",
            "linux: tessera-init: up, 4 CPUs online (0-3)",
            "linux: tessera-init: powering off",
        ],
        absent: &["Kernel panic", "Oops", "BUG:"],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "linux-two-vms",
        config: "tests/configs/linux-two-vms.toml",
        deadline_secs: 240,
        vms: &[("alpha", Want::Exit(0)), ("beta", Want::Exit(0))],
        lines: &["alpha: tessera-init: up, 2 CPUs online (0-1)", "beta: tessera-init: up, 2 CPUs online (0-1)"],
        absent: &["Kernel panic", "Oops", "BUG:"],
        overlap: &[("alpha", "beta")],
        typed: &[],
    },
    Scenario {
        name: "linux-reboot",
        config: "tests/configs/linux-reboot.toml",
        deadline_secs: 240,
        vms: &[("linux", Want::Exit(0))],
        lines: &[
            "linux: tessera-init: reset count 0",
            "linux: tessera-init: rebooting",
            "tessera: vm \"linux\" (id 1): reset #1 (PSCI SYSTEM_RESET)",
            "linux: tessera-init: up, 2 CPUs online (0-1)",
            "linux: tessera-init: reset count 1",
            "linux: tessera-init: back after reboot",
        ],
        absent: &["Kernel panic", "Oops", "BUG:"],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "linux-cpu-hotplug",
        config: "tests/configs/linux-hotplug.toml",
        deadline_secs: 180,
        vms: &[("linux", Want::Exit(0))],
        lines: &[
            "linux: tessera-init: up, 2 CPUs online (0-1)",
            "linux: tessera-init: after cpu1 off: 0",
            "linux: tessera-init: after cpu1 on: 0-1",
        ],
        absent: &["Kernel panic", "Oops", "BUG:"],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "linux-paravirt",
        config: "tests/configs/linux-paravirt.toml",
        deadline_secs: 180,
        vms: &[("hello", Want::Exit(0)), ("pv", Want::Exit(0))],
        lines: &[
            "pv: tessera: running on Tessera, ABI 1.3, VM 2 with 2 vCPU(s), features 0x0000006f",
            "pv: tessera-init: hypervisor tessera, ABI 1.3, vm_id 2, vcpus 2, features 0x0000006f",
            "pv: tessera-init: DTB /hypervisor is tessera,hypervisor",
            "pv: tessera-init: sleep 2 slept",
        ],
        absent: &["Kernel panic", "Oops", "BUG:", "WRONG"],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "linux-hvc-console",
        config: "tests/configs/linux-hvc-console.toml",
        deadline_secs: 180,
        vms: &[("pv", Want::Exit(0))],
        lines: &[
            // The first line Linux prints, through earlycon=tessera.
            "pv: Booting Linux on physical CPU 0x0",
            "pv: tessera-init: type poweroff to end",
            // Only the shell's arithmetic makes 42: the tty's echo of
            // the typed line shows "$((6 * 7))".
            "pv: typed 42 on hvc0",
        ],
        absent: &["Kernel panic", "Oops", "BUG:", "WRONG"],
        overlap: &[],
        typed: &[(
            "tessera-init: type poweroff to end",
            "echo typed $((6 * 7)) on $(cat /sys/class/tty/console/active); poweroff -f\n",
        )],
    },
    Scenario {
        name: "linux-steal-shared",
        config: "tests/configs/linux-steal-shared.toml",
        deadline_secs: 300,
        vms: &[("a", Want::Exit(0)), ("b", Want::Exit(0))],
        lines: &[
            "a: tessera: using stolen time accounting",
            "a: tessera-init: up, 2 CPUs online (0-1)",
            "a: tessera-init: steal within 65-85%",
            "b: tessera: using stolen time accounting",
            "b: tessera-init: up, 2 CPUs online (0-1)",
            "b: tessera-init: steal within 65-85%",
        ],
        absent: &["Kernel panic", "Oops", "BUG:", "WRONG"],
        overlap: &[("a", "b")],
        typed: &[],
    },
    Scenario {
        name: "linux-steal-alone",
        config: "tests/configs/linux-steal-alone.toml",
        deadline_secs: 180,
        vms: &[("alone", Want::Exit(0))],
        lines: &[
            "alone: tessera: using stolen time accounting",
            "alone: tessera-init: up, 2 CPUs online (0-1)",
            "alone: tessera-init: steal within 0-1.9%",
        ],
        absent: &["Kernel panic", "Oops", "BUG:", "WRONG"],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "linux-channel",
        config: "tests/configs/linux-channel.toml",
        deadline_secs: 300,
        vms: &[("a", Want::Exit(0)), ("b", Want::Exit(0)), ("c", Want::Exit(0))],
        lines: &[
            "a: tessera-init: channels: link",
            "a: tessera-chan: channel link: 65536 bytes, id 0, side a",
            "a: tessera-chan: sent 1048576 bytes, fnv 0x",
            "a: tessera-chan: received 1048576 bytes, fnv 0x",
            "a: tessera-chan: 1000 round trips, every reply right",
            "a: tessera-init: tessera-chan exited 0",
            "b: tessera-init: channels: link",
            "b: tessera-chan: received 1048576 bytes, fnv 0x",
            "b: tessera-chan: sent 1048576 bytes, fnv 0x",
            "b: tessera-chan: answered 1000 round trips",
            "b: tessera-init: tessera-chan exited 0",
            "c: tessera-init: channels: none",
        ],
        absent: &["Kernel panic", "Oops", "BUG:", "WRONG"],
        overlap: &[("a", "b")],
        typed: &[],
    },
    Scenario {
        name: "linux-freertos-channel",
        config: "tests/configs/linux-freertos-channel.toml",
        deadline_secs: 300,
        vms: &[("linux", Want::Exit(0)), ("rtos", Want::Exit(0))],
        lines: &[
            "linux: tessera-init: channels: link",
            "linux: tessera-chan: channel link: 65536 bytes, id 0, side a",
            "linux: tessera-chan: sent 1048576 bytes, fnv 0x",
            "linux: tessera-chan: received 1048576 bytes, fnv 0x",
            "linux: tessera-chan: 1000 round trips, every reply right",
            "linux: tessera-init: tessera-chan exited 0",
            "rtos: link: serving channel id 0 (64 KiB at 0x10000000",
            "rtos: link: received 1048576 bytes, fnv 0x",
            "rtos: link: sent 1048576 bytes, fnv 0x",
            "rtos: link: answered 1000 round trips",
            "rtos: link: 1 session(s) served",
            "rtos: freertos demo: all checks passed; shutting the VM down",
        ],
        absent: &["FreeRTOS: ", "Kernel panic", "Oops", "BUG:", "WRONG"],
        overlap: &[("linux", "rtos")],
        typed: &[],
    },
    Scenario {
        name: "linux-debian-stock-kernel",
        config: "tests/configs/linux-debian.toml",
        deadline_secs: 300,
        vms: &[("linux", Want::Exit(0))],
        lines: &["linux: tessera-init: up, 2 CPUs online (0-1)", "linux: tessera-init: powering off"],
        absent: &["Kernel panic", "Oops", "BUG:"],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "linux-virtio-rng",
        config: "tests/configs/linux-rng.toml",
        deadline_secs: 180,
        vms: &[("linux", Want::Exit(0))],
        lines: &[
            "tessera: physical virtio-rng at",
            "tessera: vm \"linux\": virtio-rng at IPA 0x0a000000, SPI 16",
            "linux: tessera-init: hwrng virtio_rng.0",
            "linux: tessera-init: read 4096 bytes from /dev/hwrng",
            "linux: tessera-init: hwrng bytes look random",
        ],
        absent: &["Kernel panic", "Oops", "BUG:", "NOT random"],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "hostile-virtqueue",
        config: "tests/configs/hostile-virtqueue.toml",
        deadline_secs: 90,
        vms: &[("peer", Want::Exit(0)), ("hostile", Want::Exit(0))],
        lines: &[
            "hostile: virtio slot 0: magic 0x74726976 version 2 device 4",
            "hostile: virtio device reported NEEDS_RESET",
            "hostile: after reset status 0x0",
            "peer: memory intact",
        ],
        absent: &[],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "guest-virtio-drivers",
        config: "tests/configs/virtio-drivers-rng.toml",
        deadline_secs: 60,
        vms: &[("vrng", Want::Exit(0))],
        lines: &["vrng: virtio-rng through virtio-drivers: 4096 bytes", "vrng: virtio-rng bytes look random"],
        absent: &[],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "linux-blk-two-vms",
        config: "tests/configs/linux-blk-two-vms.toml",
        deadline_secs: 180,
        vms: &[("left", Want::Exit(0)), ("right", Want::Exit(0))],
        lines: &[
            "tessera: disk \"shared\": 64 MiB, virtio-blk at",
            "tessera: vm \"left\": virtio-blk at IPA 0x0a000000, SPI 16: disk \"shared\" bytes 0x0..0x2000000",
            "tessera: vm \"right\": virtio-blk at IPA 0x0a000000, SPI 16: disk \"shared\" bytes 0x2000000..0x4000000",
            "left: tessera-init: made ext2 on /dev/vda (32768 KiB)",
            "left: tessera-init: wrote /data md5 ",
            "right: tessera-init: made ext2 on /dev/vda (32768 KiB)",
            "right: tessera-init: wrote /data md5 ",
        ],
        absent: &["Kernel panic", "Oops", "BUG:", "I/O error", "EXT2-fs error"],
        overlap: &[("left", "right")],
        typed: &[],
    },
    Scenario {
        name: "linux-blk-shared-ro",
        config: "tests/configs/linux-blk-shared-ro.toml",
        deadline_secs: 180,
        vms: &[("left", Want::Exit(0)), ("right", Want::Exit(0))],
        lines: &[
            "tessera: vm \"left\": virtio-blk at IPA 0x0a000000, SPI 16: disk \"ro\" bytes 0x0..0x1000000, read-only",
            "left: tessera-init: read /data md5 ",
            "left: tessera-init: write to the filesystem refused",
            "left: tessera-init: write to /dev/vda refused",
            "right: tessera-init: read /data md5 ",
            "right: tessera-init: write to the filesystem refused",
            "right: tessera-init: write to /dev/vda refused",
        ],
        absent: &["Kernel panic", "Oops", "BUG:", "EXT2-fs error"],
        overlap: &[("left", "right")],
        typed: &[],
    },
    Scenario {
        name: "guest-virtio-blk",
        config: "tests/configs/guest-virtio-blk.toml",
        deadline_secs: 60,
        vms: &[("vblk", Want::Exit(0))],
        lines: &[
            "vblk: rw: 4096 sectors, read sector 7: \"sector 2055\"",
            "vblk: rw: wrote sector 5 and read it back",
            "vblk: rw: a read past the end of the range is refused",
            "vblk: ro: 2048 sectors, read-only, read sector 2047: \"sector 2047\"",
            "vblk: ro: a write is refused",
            "vblk: all block checks passed",
        ],
        absent: &[],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "channel",
        config: "tests/configs/channel.toml",
        deadline_secs: 60,
        vms: &[("ping", Want::Exit(0)), ("pong", Want::Exit(0))],
        lines: &[
            "tessera: channel 0 \"ring\": 16 KiB at IPA 0x10000000 in vm \"ping\", doorbell SPI 48",
            "tessera: channel 0 \"ring\": 16 KiB at IPA 0x10000000 in vm \"pong\", doorbell SPI 48",
            "ping: channel 0: 16 KiB at 0x10000000, doorbell interrupt 80",
            "ping: round 1: sent \"ping 1\" to Ok(1) peer(s), got \"pong 1\" (seq 1)",
            "ping: round 3: sent \"ping 3\" to Ok(1) peer(s), got \"pong 3\" (seq 3)",
            "ping: 3 rounds through the channel",
            "pong: round 1: got \"ping 1\" (seq 1)",
            "pong: round 3: got \"ping 3\" (seq 3)",
            "pong: 3 rounds through the channel",
        ],
        absent: &[],
        overlap: &[("ping", "pong")],
        typed: &[],
    },
    Scenario {
        name: "linux-virtio-console",
        config: "tests/configs/linux-console.toml",
        deadline_secs: 120,
        vms: &[("linux", Want::Exit(0))],
        lines: &[
            "tessera: vm \"linux\": virtio-console at IPA 0x0a000000, SPI 16",
            "linux: tessera-init: hvc1 is a virtio-console",
            "linux.hvc0: hello from Linux through the virtio-console",
        ],
        absent: &["Kernel panic", "Oops", "BUG:"],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "hostile-gic-garbage",
        config: "tests/configs/hostile-gic-garbage.toml",
        deadline_secs: 90,
        vms: &[("peer", Want::Exit(0)), ("hostile", Want::Exit(0)), ("smp", Want::Exit(0))],
        lines: &[
            "hostile: still running after 8192 garbage writes to the GIC distributor and UART",
            "peer: memory intact",
            "smp: ticks per vCPU: [10, 10]",
            "smp: 2 vCPUs took 10 timer interrupts each, 1 IPIs reached vCPU 0, all secondaries off",
        ],
        absent: &[],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "hostile-console-flood",
        config: "tests/configs/hostile-console-flood.toml",
        deadline_secs: 120,
        vms: &[("peer", Want::Exit(0)), ("hostile", Want::Exit(0))],
        lines: &[
            "tessera: warning: vm console \"hostile\" prints faster than the console takes: output dropped",
            "tessera: warning: vm console \"hostile\": ",
            "peer: memory intact",
        ],
        absent: &["\u{1b}", "\r", "\u{9b}", "owned"],
        overlap: &[("peer", "hostile")],
        typed: &[],
    },
    Scenario {
        name: "hostile-side-channels",
        config: "tests/configs/hostile-side-channels.toml",
        deadline_secs: 60,
        vms: &[("peer", Want::Exit(0)), ("hostile", Want::Exit(0)), ("second", Want::Exit(0))],
        lines: &[
            "hostile: PMCCNTR (not counting): 0x0 as expected",
            "hostile: DBGDIDR (no debug architecture): 0x0 as expected",
            "hostile: DBGBVR0 after a write: 0x0 as expected",
            "hostile: TEEHBR at start: 0x0 as expected",
            "hostile: TEEHBR after the other VM ran: 0x1002 as expected",
            "second: TEEHBR at start: 0x0 as expected",
            "second: TEEHBR after the other VM ran: 0x1003 as expected",
            "second: side channels: 0 wrong",
            "hostile: set/way invalidate done; still running",
            "hostile: side channels: 0 wrong",
            "peer: memory intact",
        ],
        absent: &[],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "hostile-probe",
        config: "tests/configs/hostile-probe.toml",
        deadline_secs: 120,
        vms: &[("peer", Want::Exit(0)), ("probe", Want::Exit(0))],
        lines: &[
            "probe: answered 0x08000000-0x0801ffff",
            "probe: answered 0x09000000-0x0900ffff",
            "probe: answered 0x0a000000-0x0a00ffff",
            "probe: answered 0x10000000-0x1000ffff",
            "probe: answered 0x40000000-0x401fffff",
            "probe: 5 ranges answered, 65499 pages aborted",
            "probe: 0 marker writes outside its RAM and devices landed",
            "peer: no marker of another VM in 16 MiB of RAM",
            "peer: memory intact",
        ],
        absent: &[],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "hostile-cpu-off-last-vcpu",
        config: "tests/configs/hostile-cpu-off-last.toml",
        deadline_secs: 90,
        vms: &[("peer", Want::Exit(0)), ("hostile", Want::Exit(0))],
        lines: &[
            "hostile: hostile case cpu-off-last",
            "tessera: vm \"hostile\" (id 2): its last running vCPU called PSCI CPU_OFF",
            "peer: memory intact",
        ],
        absent: &[],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "hostile-unmapped",
        config: "tests/configs/hostile-unmapped.toml",
        deadline_secs: 90,
        vms: &[("peer", Want::Exit(0)), ("hostile", Want::Stopped("read from IPA 0x20000000 (no stage-2 mapping"))],
        lines: &["hostile: hostile case unmapped", "peer: memory intact"],
        absent: &[],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "hostile-hypercall-arguments",
        config: "tests/configs/hostile-bad-args.toml",
        deadline_secs: 90,
        vms: &[("peer", Want::Exit(0)), ("hostile", Want::Exit(0))],
        lines: &[
            "hostile: refused as documented: console buffer outside RAM -> -4",
            "hostile: refused as documented: console length 1 MiB -> -3",
            "hostile: refused as documented: unknown Tessera function -> -1",
            "hostile: refused as documented: firmware SYSTEM_OFF through SMC -> -1",
            "hostile: still running after 11 hostile calls",
            "peer: memory intact",
        ],
        absent: &[],
        overlap: &[],
        typed: &[],
    },
    // FreeRTOS (rtos-port/): the demo checks its own queues (every sequence
    // number), the cores its tasks ran on and the port's fault count, and
    // says "all checks passed" only if every check did.
    Scenario {
        name: "freertos-1-vcpu",
        config: "tests/configs/freertos-up.toml",
        deadline_secs: 30,
        vms: &[("rtos", Want::Exit(0))],
        lines: &[
            "rtos: FreeRTOS V11.2.0 on Tessera: 1-core kernel, 1 vCPU(s), tick 1000 Hz from the virtual timer",
            "rtos: queues: 2 producers x 300 messages, every one delivered once and in order",
            "rtos: periodic: 100 releases every 2 ms: release latency min/avg/max",
            "rtos: cores: the demo's tasks ran on [0] of this 1-core kernel",
            "rtos: freertos demo: all checks passed; shutting the VM down",
            "tessera: vm \"rtos\" (id 1): exited, status 0",
        ],
        absent: &["FreeRTOS: "],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "freertos-smp-2-vcpus",
        config: "tests/configs/freertos-smp.toml",
        deadline_secs: 30,
        vms: &[("rtos", Want::Exit(0))],
        lines: &[
            "rtos: FreeRTOS V11.2.0 on Tessera: 2-core kernel, 2 vCPU(s)",
            "tessera: pCPU 1 up",
            "rtos: queues: 2 producers x 300 messages, every one delivered once and in order",
            "rtos: periodic: 100 releases every 2 ms: release latency min/avg/max",
            "rtos: cores: the demo's tasks ran on [0, 1] of this 2-core kernel",
            "rtos: freertos demo: all checks passed; shutting the VM down",
        ],
        absent: &["FreeRTOS: "],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "freertos-beside-linux",
        config: "tests/configs/freertos-linux.toml",
        deadline_secs: 120,
        vms: &[("rtos", Want::Exit(0)), ("linux", Want::Exit(0))],
        lines: &[
            "tessera: vm \"rtos\": 1 vCPU(s) on pCPU 1",
            "tessera: vm \"linux\": 1 vCPU(s) on pCPU 1",
            "rtos: queues: 2 producers x 500 messages, every one delivered once and in order",
            "rtos: periodic: 1000 releases every 3 ms: release latency min/avg/max",
            "rtos: freertos demo: all checks passed; shutting the VM down",
            "linux: tessera-init: up, 2 CPUs online (0-1)",
            "linux: tessera-init: busy",
            "linux: reboot: Power down",
        ],
        absent: &["FreeRTOS: ", "Kernel panic", "Oops", "BUG:"],
        overlap: &[("rtos", "linux")],
        typed: &[],
    },
    Scenario {
        name: "freertos-fault-beside-linux",
        config: "tests/configs/freertos-fault.toml",
        deadline_secs: 120,
        vms: &[("rtos", Want::Exit(0)), ("linux", Want::Exit(0))],
        lines: &[
            "rtos: faulty: loading a word from the odd address",
            "rtos: FreeRTOS: task \"faulty\" on core",
            "(DFSR 0x1: alignment fault); task suspended",
            "rtos: queues: 2 producers x 500 messages, every one delivered once and in order",
            "rtos: fault: the faulting task was reported and suspended; every other task finished",
            "rtos: freertos demo: all checks passed; shutting the VM down",
            "linux: tessera-init: busy",
            "linux: reboot: Power down",
        ],
        absent: &["Kernel panic", "Oops", "BUG:"],
        overlap: &[("rtos", "linux")],
        typed: &[],
    },
    Scenario {
        name: "freertos-unmapped-beside-linux",
        config: "tests/configs/freertos-unmapped.toml",
        deadline_secs: 120,
        vms: &[("rtos", Want::Stopped("read from IPA 0x20000000 (no stage-2 mapping")), ("linux", Want::Exit(0))],
        lines: &[
            "rtos: faulty: loading a word from 0x20000000, outside the VM's RAM",
            "tessera: error: vm \"rtos\" vCPU",
            "linux: tessera-init: up, 2 CPUs online (0-1)",
            "linux: tessera-init: busy",
            "linux: reboot: Power down",
        ],
        absent: &["Kernel panic", "Oops", "BUG:"],
        overlap: &[],
        typed: &[],
    },
    Scenario {
        name: "linux-net",
        config: "tests/configs/linux-net.toml",
        deadline_secs: 240,
        vms: &[("server", Want::Exit(0)), ("client", Want::Exit(0))],
        // The server's MAC is the default one (VM 1, slot 0), the client's
        // the configured one. The two md5 lines must agree (SAME_VALUES).
        lines: &[
            "tessera: vm \"server\": virtio-net at IPA 0x0a000000, SPI 16: switch 0, MAC 02:54:53:00:01:00",
            "tessera: vm \"client\": virtio-net at IPA 0x0a000000, SPI 16: switch 0, MAC 02:00:00:00:00:02",
            "server: tessera-init: eth0 02:54:53:00:01:00 is 10.0.0.1",
            "server: tessera-init: ping 10.0.0.2: 3 of 3 replies",
            "server: tessera-init: received 10485760 bytes, md5 ",
            "client: tessera-init: eth0 02:00:00:00:00:02 is 10.0.0.2",
            "client: tessera-init: ping 10.0.0.1: 3 of 3 replies",
            "client: tessera-init: sending 10485760 bytes, md5 ",
            "client: tessera-init: sent 10485760 bytes in ",
        ],
        absent: &["Kernel panic", "Oops", "BUG:", "virtio_net", "NETDEV WATCHDOG"],
        overlap: &[("server", "client")],
        typed: &[],
    },
    Scenario {
        name: "hostile-net",
        config: "tests/configs/hostile-net.toml",
        deadline_secs: 240,
        vms: &[("server", Want::Exit(0)), ("client", Want::Exit(0)), ("hostile", Want::Exit(0))],
        lines: &[
            "tessera: vm \"hostile\": virtio-net at IPA 0x0a000000, SPI 16: switch 0, MAC 02:54:53:00:03:00",
            "hostile: virtio-net in slot 0, MAC [02, 54, 53, 00, 03, 00]; spoofing [02, 54, 53, 00, 01, 00]",
            "hostile: round 1: refused frames returned, then NEEDS_RESET for a TX chain outside RAM",
            "hostile: every refused frame returned, every bad chain NEEDS_RESET: ",
            "server: tessera-init: ping 10.0.0.2: 3 of 3 replies",
            "server: tessera-init: received 4194304 bytes, md5 ",
            "client: tessera-init: ping 10.0.0.1: 3 of 3 replies",
            "client: tessera-init: sending 4194304 bytes, md5 ",
        ],
        absent: &["Kernel panic", "Oops", "BUG:", "virtio_net", "NETDEV WATCHDOG"],
        overlap: &[("hostile", "client")],
        typed: &[],
    },
];

/// Checks a scenario's console. `Err` says what a user would have seen wrong.
pub fn check(s: &Scenario, lines: &[String], qemu_status: Option<i32>, timed_out: bool) -> Result<(), String> {
    let report = Report::parse(lines);
    let mut problems = Vec::new();
    if timed_out {
        problems.push(format!("did not finish within {} s", s.deadline_secs));
    }
    if let Some(p) = &report.panic {
        problems.push(format!("hypervisor panic: {p}"));
    }
    if let Some(e) = &report.boot_error {
        problems.push(format!("boot refused: {e}"));
    }
    if !timed_out && qemu_status != Some(0) {
        problems.push(format!("QEMU exit status {qemu_status:?}, expected 0"));
    }
    for (vm, want) in s.vms {
        match (report.end_of(vm), want) {
            (Some(VmEnd::Exited(got)), Want::Exit(st)) if got == *st => {}
            (Some(VmEnd::Stopped(reason)), Want::Stopped(frag)) if reason.contains(frag) => {}
            (got, _) => problems.push(format!("vm \"{vm}\": expected {want:?}, got {got:?}")),
        }
    }
    let mut from: Vec<(&str, usize)> = Vec::new();
    for want in s.lines {
        let source = want.split(": ").next().unwrap_or("");
        let start = from.iter().find(|(src, _)| *src == source).map_or(0, |(_, i)| *i);
        match lines[start..].iter().position(|l| l.contains(want)) {
            Some(i) => {
                from.retain(|(src, _)| *src != source);
                from.push((source, start + i + 1));
            }
            None => {
                let anywhere = lines.iter().any(|l| l.contains(want));
                problems.push(format!(
                    "missing line {want:?}{}",
                    if anywhere { " (present, but out of order)" } else { "" }
                ));
            }
        }
    }
    for bad in s.absent.iter().chain(ALWAYS_ABSENT) {
        if let Some(l) = lines.iter().find(|l| l.contains(bad)) {
            problems.push(format!("unexpected line: {l}"));
        }
    }
    for (a, b) in SAME_VALUES.iter().filter(|v| v.scenario == s.name).flat_map(|v| v.pairs) {
        let value = |prefix: &str| lines.iter().find_map(|l| l.strip_prefix(prefix)).map(str::trim_end);
        match (value(a), value(b)) {
            (Some(x), Some(y)) if x == y && !x.is_empty() => {}
            (x, y) => problems.push(format!("lines {a:?} and {b:?} do not agree: {x:?} and {y:?}")),
        }
    }
    for (a, b) in s.overlap {
        let span = |vm: &str| {
            let prefix = format!("{vm}: ");
            let idx: Vec<usize> =
                lines.iter().enumerate().filter(|(_, l)| l.starts_with(&prefix)).map(|(i, _)| i).collect();
            Some((*idx.first()?, *idx.last()?))
        };
        match (span(a), span(b)) {
            (Some((a0, a1)), Some((b0, b1))) if a0 < b1 && b0 < a1 => {}
            (sa, sb) => {
                problems.push(format!("VMs {a} and {b} did not run at the same time (line spans {sa:?} and {sb:?})"))
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    const HOSTILE: Scenario = Scenario {
        name: "t",
        config: "",
        deadline_secs: 1,
        vms: &[("peer", Want::Exit(0)), ("bad", Want::Stopped("IPA 0x20000000"))],
        lines: &["bad: x", "peer: a", "peer: b"],
        absent: &["oops"],
        overlap: &[("peer", "bad")],
        typed: &[],
    };

    #[test]
    fn a_good_log_passes() {
        let log = lines(
            "tessera: start\npeer: a\nbad: x\npeer: b\n\
             tessera: error: vm \"bad\" vCPU 0 stopped: read from IPA 0x20000000 (no stage-2 mapping); PC 0x40000010, HSR 0x93000006 (EC 0x24)\n\
             tessera: vm \"bad\" (id 2): stopped by the hypervisor\n\
             peer: c\ntessera: vm \"peer\" (id 1): exited, status 0",
        );
        assert_eq!(check(&HOSTILE, &log, Some(0), false), Ok(()));
    }

    #[test]
    fn each_kind_of_problem_is_reported() {
        let log =
            lines("peer: b\npeer: a\noops\ntessera: vm \"peer\" (id 1): exited, status 3\ntessera: PANIC on pCPU 0: x");
        let e = check(&HOSTILE, &log, Some(1), false).unwrap_err();
        for want in [
            "hypervisor panic",
            "QEMU exit status Some(1)",
            "vm \"peer\": expected Exit(0), got Some(Exited(3))",
            "vm \"bad\": expected Stopped",
            "missing line \"peer: b\" (present, but out of order)",
            "unexpected line: oops",
            "did not run at the same time",
        ] {
            assert!(e.contains(want), "{want:?} not in {e}");
        }
        assert!(check(&HOSTILE, &[], None, true).unwrap_err().contains("did not finish"));
    }

    #[test]
    fn same_values_must_agree() {
        static S: Scenario = Scenario {
            name: "linux-net",
            config: "",
            deadline_secs: 1,
            vms: &[],
            lines: &[],
            absent: &[],
            overlap: &[],
            typed: &[],
        };
        let (tx, rx) = SAME_VALUES[0].pairs[0];
        let good = lines(&format!("{tx}0123abcd\nother: x\n{rx}0123abcd"));
        assert_eq!(check(&S, &good, Some(0), false), Ok(()));
        let bad = lines(&format!("{tx}0123abcd\n{rx}0123abce"));
        assert!(check(&S, &bad, Some(0), false).unwrap_err().contains("do not agree"));
        let missing = lines(&format!("{tx}0123abcd"));
        assert!(check(&S, &missing, Some(0), false).unwrap_err().contains("None"));
        let empty = lines(&format!("{tx}\n{rx}"));
        assert!(check(&S, &empty, Some(0), false).is_err());
        for v in SAME_VALUES {
            assert!(SCENARIOS.iter().any(|s| s.name == v.scenario), "{}: no such scenario", v.scenario);
        }
    }

    #[test]
    fn scenarios_name_existing_configs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        for s in SCENARIOS {
            assert!(root.join(s.config).exists(), "{}: {} missing", s.name, s.config);
        }
    }

    /// The disk and same-value tables are joined to scenarios by name: each
    /// must name exactly one scenario, and no scenario twice, or its checks
    /// would silently never run.
    #[test]
    fn the_side_tables_name_existing_scenarios() {
        let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        let mut seen = std::collections::HashSet::new();
        for n in &names {
            assert!(seen.insert(n), "scenario {n} is listed twice");
        }
        for d in DISK_SCENARIOS {
            assert!(names.contains(&d.scenario), "DISK_SCENARIOS names {:?}, which is no scenario", d.scenario);
        }
        for v in SAME_VALUES {
            assert!(names.contains(&v.scenario), "SAME_VALUES names {:?}, which is no scenario", v.scenario);
        }
        let (mut disks, mut values) = (std::collections::HashSet::new(), std::collections::HashSet::new());
        assert!(DISK_SCENARIOS.iter().all(|d| disks.insert(d.scenario)), "a scenario has two DISK_SCENARIOS entries");
        assert!(SAME_VALUES.iter().all(|v| values.insert(v.scenario)), "a scenario has two SAME_VALUES entries");
    }
}

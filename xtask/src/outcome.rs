//! `cargo xtask run CONFIG`: build, pack, boot, and say how each VM ended.
//! Exit status 0 only when every VM shut down by itself with status 0.

use crate::{build, pack, qemu, root, setup};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_scenarios::console::{Report, VmEnd};

/// How long `run` lets a system go before it gives up (override with
/// TESSERA_DEADLINE_SECS).
const RUN_DEADLINE_SECS: u64 = 600;

pub fn out_dir() -> PathBuf {
    build::target_dir().join("tessera")
}

/// Resolves a config path given on the command line (relative to the
/// current directory, or else to the workspace root).
pub fn config_path(arg: &str) -> PathBuf {
    let p = Path::new(arg);
    if p.exists() {
        p.to_path_buf()
    } else {
        root().join(p)
    }
}

pub fn run_verb(config: &str) -> Result<(), String> {
    setup::run()?;
    let hyp = build::all()?;
    crate::linux::ensure_artifacts_for(&config_path(config))?;
    let packed = pack::pack(&config_path(config), &hyp, &out_dir()).map_err(|e| e.to_string())?;
    let deadline =
        std::env::var("TESSERA_DEADLINE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(RUN_DEADLINE_SECS);
    let boot = qemu::Boot {
        image: &packed.image,
        pcpus: packed.pcpus,
        memory_mib: packed.memory_mib,
        deadline: Duration::from_secs(deadline),
        echo: true,
        icount: false,
        disks: &packed.disks,
        input: qemu::Input::Inherit,
    };
    eprintln!("xtask: booting {} ({} pCPUs, {} MiB)", packed.image.display(), packed.pcpus, packed.memory_mib);
    let console = qemu::boot(&boot)?;
    verdict(&packed.vm_names, &console)
}

/// One line per problem, naming the VM and the reason.
pub fn verdict(vm_names: &[String], c: &qemu::Console) -> Result<(), String> {
    verdict_with(vm_names, c, true)
}

/// [`verdict`] without a line per VM that ended well (for runs of many VMs).
pub fn verdict_quiet(vm_names: &[String], c: &qemu::Console) -> Result<(), String> {
    verdict_with(vm_names, c, false)
}

fn verdict_with(vm_names: &[String], c: &qemu::Console, each: bool) -> Result<(), String> {
    let report = Report::parse(&c.lines);
    let mut problems = Vec::new();
    if let Some(p) = &report.panic {
        problems.push(format!("the hypervisor panicked: {p}"));
    }
    if let Some(e) = &report.boot_error {
        problems.push(format!("the hypervisor refused to boot: {e}"));
    }
    for name in vm_names {
        match report.end_of(name) {
            Some(VmEnd::Exited(0)) if each => eprintln!("xtask: vm \"{name}\": shut down cleanly (status 0)"),
            Some(VmEnd::Exited(0)) => {}
            Some(VmEnd::Exited(s)) => problems.push(format!("vm \"{name}\" exited with status {s}")),
            Some(VmEnd::Stopped(why)) => problems.push(format!("vm \"{name}\" was stopped by the hypervisor: {why}")),
            None => problems.push(format!("vm \"{name}\" never shut down")),
        }
    }
    if c.timed_out {
        problems.push(format!("the system was still running after {} s and was killed", c.elapsed.as_secs()));
    } else if c.status != Some(0) {
        problems.push(format!("QEMU exited with status {:?}", c.status));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\nxtask: "))
    }
}

//! `cargo xtask bench`: micro-benchmarks under QEMU `-icount shift=0` on a
//! one-pCPU board. Each instruction then advances the virtual clock by 1 ns,
//! so counter ticks convert to instruction counts (ticks * 1e9 / CNTFRQ),
//! identical from run to run whatever the host's load.

use crate::{build, outcome, pack, qemu, root, setup};
use std::time::Duration;

pub fn run() -> Result<(), String> {
    setup::run()?;
    let hyp = build::all()?;
    let cfg = root().join("tests/configs/bench.toml");
    let packed = pack::pack(&cfg, &hyp, &outcome::out_dir()).map_err(|e| e.to_string())?;
    let c = qemu::boot(&qemu::Boot {
        image: &packed.image,
        pcpus: 1,
        memory_mib: packed.memory_mib,
        deadline: Duration::from_secs(300),
        echo: false,
        icount: true,
    })?;
    outcome::verdict(&packed.vm_names, &c)?;
    let line = c
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("bench: bench null-hypercall "))
        .ok_or("the bench guest printed no result")?;
    let field = |k: &str| -> Result<u64, String> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
            .ok_or(format!("no {k} in {line:?}"))
    };
    let (calls, loop_ticks, call_ticks, freq) = (field("calls")?, field("loop_ticks")?, field("call_ticks")?, field("cntfrq")?);
    let ns_per_tick = 1e9 / freq as f64;
    let per_call = (call_ticks as f64 - loop_ticks as f64) * ns_per_tick / calls as f64;
    println!("null hypercall round trip (TESSERA_ABI_VERSION, guest hvc -> hypervisor -> guest):");
    println!("  {per_call:.0} instructions per call ({calls} calls, loop overhead subtracted; -icount shift=0, 1 pCPU)");
    Ok(())
}

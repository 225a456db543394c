//! `cargo xtask bench`: micro-benchmarks under QEMU `-icount shift=0` on a
//! one-pCPU board. Each instruction then advances the virtual clock by 1 ns,
//! so counter ticks convert to instruction counts (ticks * 1e9 / CNTFRQ),
//! identical from run to run whatever the host's load.

use crate::{build, outcome, pack, qemu, root, setup};
use std::time::Duration;

/// The parts of the bench, in the order they run; `cargo xtask bench PART`
/// runs one.
pub const PARTS: &[&str] = &["micro", "switch", "create", "freertos", "linux", "channel", "locks", "blk", "net"];

pub fn run(only: Option<&str>) -> Result<(), String> {
    if let Some(p) = only.filter(|p| !PARTS.contains(p)) {
        return Err(format!("no bench part {p:?}: use one of {}", PARTS.join(", ")));
    }
    setup::run()?;
    let hyp = build::all()?;
    let want = |p: &str| only.is_none_or(|o| o == p);
    if want("micro") {
        micro(&hyp)?;
    }
    if want("switch") {
        switch_cost(&hyp)?;
    }
    if want("create") {
        vm_creation(&hyp)?;
    }
    if want("freertos") {
        freertos(&hyp)?;
    }
    if want("linux") {
        linux_boot(&hyp)?;
    }
    if want("channel") {
        linux_freertos_channel(&hyp)?;
    }
    if want("locks") {
        preempted_hint(&hyp)?;
    }
    if want("blk") {
        block_throughput(&hyp)?;
    }
    if want("net") {
        net_throughput(&hyp)?;
    }
    Ok(())
}

/// Instruction counts of the hot paths (bench guest) and the channel
/// doorbell.
fn micro(hyp: &std::path::Path) -> Result<(), String> {
    let hyp = hyp.to_path_buf();
    let cfg = root().join("tests/configs/bench.toml");
    let packed = pack::pack(&cfg, &hyp, &outcome::out_dir()).map_err(|e| e.to_string())?;
    let c = boot(&packed, 1, true)?;
    outcome::verdict(&packed.vm_names, &c)?;
    let null = Fields::find(&c.lines, "bench", "null-hypercall")?;
    let ns_per_tick = 1e9 / null.get("cntfrq")? as f64;
    let calls = null.get("calls")? as f64;
    let per_call = (null.get("call_ticks")? as f64 - null.get("loop_ticks")? as f64) * ns_per_tick / calls;
    println!("micro-benchmarks (QEMU -icount shift=0, 1 pCPU: instruction counts, identical on every run)");
    println!("  null hypercall round trip (TESSERA_ABI_VERSION):  {per_call:>6.0} instructions  ({calls} calls, loop overhead subtracted)");
    for (name, what) in [
        ("vtimer-latency", "virtual timer: deadline to guest handler"),
        ("ipi-round-trip", "virtual IPI round trip, 2 vCPUs on 1 pCPU"),
    ] {
        let f = Fields::find(&c.lines, "bench", name)?;
        let avg = f.get("total_ticks")? as f64 * ns_per_tick / f.get("samples")? as f64;
        println!("  {what:<48} {avg:>6.0} instructions  ({} samples)", f.get("samples")?);
    }
    doorbell(&hyp)
}

/// The vCPU switch paths with N vCPUs on one pCPU: the bench VM's two
/// vCPUs beside N - 2 idle vCPUs (`share sleep=1`: VMs of 8 vCPUs asleep
/// in WFI with a virtual timer pending, so every deadline is one the
/// scheduler keeps). A scheduler that visits every vCPU per switch shows
/// it here; Tessera's cost should not move with N.
fn switch_cost(hyp: &std::path::Path) -> Result<(), String> {
    println!(
        "vCPU switch paths with N vCPUs on 1 pCPU (instructions, -icount; N - 2 of them idle with timers pending):"
    );
    println!("  {:>5} {:>16} {:>16} {:>16}", "N", "null hypercall", "virtual timer", "virtual IPI");
    let dir = outcome::out_dir().join("bench-switch");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let guests = root().join("target/armv7a-none-eabi/release");
    for n in [2u32, 16, 64, 256] {
        let mut toml = format!(
            "[system]\npcpus = 1\nmemory_mib = 256\n\n[[vm]]\nname = \"bench\"\nkernel = \"{}\"\n\
             cmdline = \"calls=20000 settle_ms=1000\"\nvcpus = 2\nmemory_mib = 16\n",
            guests.join("bench").display()
        );
        let mut idle = n - 2;
        let mut k = 0;
        while idle > 0 {
            let v = idle.min(8);
            k += 1;
            toml += &format!(
                "\n[[vm]]\nname = \"idle{k}\"\nkernel = \"{}\"\ncmdline = \"sleep=1 secs=30\"\nvcpus = {v}\nmemory_mib = 2\n",
                guests.join("share").display()
            );
            idle -= v;
        }
        let cfg = dir.join(format!("switch-{n}.toml"));
        std::fs::write(&cfg, toml).map_err(|e| format!("{}: {e}", cfg.display()))?;
        let packed = pack::pack(&cfg, hyp, &dir).map_err(|e| e.to_string())?;
        let c = boot(&packed, 1, true)?;
        outcome::verdict_quiet(&packed.vm_names, &c)?;
        let null = Fields::find(&c.lines, "bench", "null-hypercall")?;
        let ns_per_tick = 1e9 / null.get("cntfrq")? as f64;
        let per_call =
            (null.get("call_ticks")? as f64 - null.get("loop_ticks")? as f64) * ns_per_tick / null.get("calls")? as f64;
        let avg = |name: &str| -> Result<f64, String> {
            let f = Fields::find(&c.lines, "bench", name)?;
            Ok(f.get("total_ticks")? as f64 * ns_per_tick / f.get("samples")? as f64)
        };
        println!("  {n:>5} {per_call:>16.0} {:>16.0} {:>16.0}", avg("vtimer-latency")?, avg("ipi-round-trip")?);
    }
    Ok(())
}

/// VM creation: the wall-clock time from the hypervisor's banner to the
/// first line of a small guest (`hello`) in a VM of 64 and of 512 MiB,
/// median of 3 runs each. The guest touches a few MiB: creation should
/// cost that, not the RAM's size.
fn vm_creation(hyp: &std::path::Path) -> Result<(), String> {
    println!("VM creation: hypervisor banner to the guest's first line (wall clock, median of 3):");
    let dir = outcome::out_dir().join("bench-create");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for mib in [64u32, 512] {
        let toml = format!(
            "[system]\npcpus = 1\nmemory_mib = 1024\n\n[[vm]]\nname = \"hello\"\nkernel = \"{}\"\n\
             cmdline = \"id=1 vcpus=1 greeting\"\nvcpus = 1\nmemory_mib = {mib}\n",
            root().join("target/armv7a-none-eabi/release/hello").display()
        );
        let cfg = dir.join(format!("hello-{mib}.toml"));
        std::fs::write(&cfg, toml).map_err(|e| format!("{}: {e}", cfg.display()))?;
        let packed = pack::pack(&cfg, hyp, &dir).map_err(|e| e.to_string())?;
        let mut runs = Vec::new();
        for _ in 0..3 {
            let cmd = qemu::command(&spec(&packed, packed.pcpus, false));
            let t = qemu::times_to_markers(cmd, &["tessera: Tessera ", "hello: "], Duration::from_secs(60))?;
            runs.push((t[1] - t[0]).as_secs_f64());
        }
        runs.sort_by(f64::total_cmp);
        println!("  {mib:>4} MiB VM: {:>5.2} s", runs[1]);
    }
    Ok(())
}

/// The channel doorbell round trip between two VMs on one pCPU: ping
/// writes, rings, pong answers and rings back (instructions, -icount).
fn doorbell(hyp: &std::path::Path) -> Result<(), String> {
    let cfg = root().join("tests/configs/bench-channel.toml");
    let packed = pack::pack(&cfg, hyp, &outcome::out_dir()).map_err(|e| e.to_string())?;
    let c = boot(&packed, 1, true)?;
    outcome::verdict(&packed.vm_names, &c)?;
    let f = Fields::find(&c.lines, "ping", "doorbell-round-trip")?;
    let ns_per_tick = 1e9 / f.get("cntfrq")? as f64;
    let avg = f.get("total_ticks")? as f64 * ns_per_tick / f.get("samples")? as f64;
    let what = "channel message + doorbell round trip, 2 VMs on 1 pCPU";
    println!("  {what:<48} {avg:>6.0} instructions  ({} samples)", f.get("samples")?);
    Ok(())
}

/// The round trip between a Linux program (`tessera-chan a`, through the
/// channel driver) and the FreeRTOS demo's link task: instructions on one
/// pCPU under `-icount` (the guest's clock then counts one ns per
/// instruction), and the wall clock on two pCPUs.
fn linux_freertos_channel(hyp: &std::path::Path) -> Result<(), String> {
    println!("Linux user space <-> FreeRTOS task through a channel (tessera-chan, 2000 round trips):");
    for (pcpus, icount) in [(1, true), (2, false)] {
        let cfg = root().join(format!("tests/configs/bench-linux-freertos-channel-{pcpus}pcpu.toml"));
        crate::linux::ensure_artifacts_for(&cfg)?;
        let packed = pack::pack(&cfg, hyp, &outcome::out_dir()).map_err(|e| e.to_string())?;
        let c = boot(&packed, pcpus, icount)?;
        outcome::verdict(&packed.vm_names, &c)?;
        let line = c
            .lines
            .iter()
            .find_map(|l| l.strip_prefix("linux: tessera-chan: 2000 round trips, every reply right, "))
            .ok_or("no round-trip line from tessera-chan")?;
        let ns: f64 = line.trim_end_matches(" ns each").parse().map_err(|_| format!("round trip {line:?}"))?;
        if icount {
            println!("  1 pCPU, -icount: {ns:>9.0} instructions per round trip");
        } else {
            println!("  2 pCPUs, wall clock: {:>6.1} us per round trip", ns / 1000.0);
        }
    }
    Ok(())
}

/// 4 vCPUs on 1 pCPU: boot to userspace and `dirstorm` (a lock-heavy
/// workload) as configured (spin-yield on, the preempted-vCPU hint off),
/// with neither, with the hint alone and with both,
/// under `-icount` (the guest's clock counts instructions, so the host's
/// load does not enter; on the wall clock it was larger than the effects),
/// medians and ranges of interleaved runs: a 4-vCPU Linux boot is chaotic
/// (one early difference changes everything after it), so runs differ.
fn preempted_hint(hyp: &std::path::Path) -> Result<(), String> {
    const VARIANTS: [(&str, &str); 4] = [
        ("spin-yield", ""),
        ("neither", "tessera_spin_yield=0"),
        ("preempted hint", "tessera_spin_yield=0 tessera_preempted=1"),
        ("both", "tessera_preempted=1"),
    ];
    const RUNS: usize = 3;
    let base = root().join("tests/configs/bench-dirstorm.toml");
    crate::linux::ensure_artifacts_for(&base)?;
    let text = std::fs::read_to_string(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    // Written beside the original, so its relative paths still hold.
    let mut configs = Vec::new();
    for (i, (_, arg)) in VARIANTS.iter().enumerate() {
        let cfg = base.with_file_name(format!("bench-dirstorm-{i}.toml.tmp"));
        let with = format!("tessera.test=dirstorm {arg}");
        std::fs::write(&cfg, text.replace("tessera.test=dirstorm", with.trim_end()))
            .map_err(|e| format!("{}: {e}", cfg.display()))?;
        configs.push(cfg);
    }
    let run = |cfg: &std::path::Path| -> Result<(f64, f64), String> {
        let packed = pack::pack(cfg, hyp, &outcome::out_dir()).map_err(|e| e.to_string())?;
        let c = boot(&packed, 1, true)?;
        outcome::verdict(&packed.vm_names, &c)?;
        let up = c.lines.iter().find_map(|l| l.strip_prefix("linux: tessera-init: uptime ")).ok_or("no uptime line")?;
        let up: f64 = up.trim_end_matches(" s").parse().map_err(|_| format!("uptime {up:?}"))?;
        let storm = c.lines.iter().find_map(|l| l.split_once("mkdir+rmdir in ")).ok_or("no dirstorm line")?.1;
        let ns: f64 = storm.trim_end_matches(" ns").parse().map_err(|_| format!("dirstorm {storm:?}"))?;
        Ok((up, ns / 1e9))
    };
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); VARIANTS.len()];
    let outcome = (|| {
        for _ in 0..RUNS {
            for (i, cfg) in configs.iter().enumerate() {
                let (up, storm) = run(cfg)?;
                results[i].0.push(up);
                results[i].1.push(storm);
            }
        }
        Ok::<(), String>(())
    })();
    for cfg in &configs {
        let _ = std::fs::remove_file(cfg);
    }
    outcome?;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<(f64, f64)> = results.iter_mut().map(|(u, s)| (median(u), median(s))).collect();
    let (up0, storm0) = medians[0];
    println!(
        "4 vCPUs on 1 pCPU, QEMU -icount (10^9 instructions of guest time), median [min-max] of {RUNS} interleaved runs,"
    );
    println!("dirstorm: 4 workers x 600 mkdir+rmdir in one directory:");
    for (((name, arg), (up, storm)), (ups, storms)) in VARIANTS.iter().zip(&medians).zip(&results) {
        println!(
            "  {name:<15} boot {up:>5.2} [{:.2}-{:.2}] ({:.2}x)   dirstorm {storm:>5.2} [{:.2}-{:.2}] ({:.2}x)   {}",
            ups[0],
            ups[ups.len() - 1],
            up / up0,
            storms[0],
            storms[storms.len() - 1],
            storm / storm0,
            if arg.is_empty() { "(the default)" } else { arg },
        );
    }
    Ok(())
}

/// virtio-blk sequential read and write (dd, 32 MiB) in a Linux guest under
/// Tessera, and the same kernel on QEMU's own virtio-blk; wall clock.
fn block_throughput(hyp: &std::path::Path) -> Result<(), String> {
    let cfg = root().join("tests/configs/bench-blk.toml");
    crate::linux::ensure_artifacts_for(&cfg)?;
    let packed = pack::pack(&cfg, hyp, &outcome::out_dir()).map_err(|e| e.to_string())?;
    // A fresh zeroed image for every run (`create_disks` only makes one
    // the configuration found missing, and this one may exist already).
    let image = packed.disks[0].image.clone();
    std::fs::create_dir_all(image.parent().unwrap_or(&root())).map_err(|e| e.to_string())?;
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(packed.disks[0].size))
        .map_err(|e| format!("{}: {e}", image.display()))?;
    let mut native = qemu::native_linux(true, 1, 96, "tessera.test=blk-bench");
    native
        .args(["-nic", "none"])
        .args(["-drive", &format!("if=none,id=d,format=raw,file={}", image.display().to_string().replace(',', ",,"))])
        .args(["-device", "virtio-blk-device,drive=d"]);
    let n = qemu::collect(native, Duration::from_secs(300), false, qemu::Input::None)?;
    let t = boot(&packed, packed.pcpus, false)?;
    outcome::verdict(&packed.vm_names, &t)?;
    println!("virtio-blk, Linux guest, 1 vCPU, dd of 32 MiB with bs=1M (writes with conv=fsync), wall clock:");
    for op in ["read", "write"] {
        let secs = |lines: &[String], who: &str| -> Result<f64, String> {
            let key = format!("tessera-init: blk {op} 32 MiB in ");
            lines
                .iter()
                .find_map(|l| l.split_once(&key).and_then(|(_, r)| r.trim_end_matches(" s").parse::<f64>().ok()))
                .ok_or(format!("{who}: no \"blk {op}\" line"))
        };
        let (ns, ts) = (secs(&n.lines, "native")?, secs(&t.lines, "tessera")?);
        let mbs = |s: f64| 32.0 / s.max(0.01);
        println!(
            "  {op:<5}  QEMU's virtio-blk {:>6.1} MiB/s   Tessera's {:>6.1} MiB/s   ratio {:.2}x",
            mbs(ns),
            mbs(ts),
            mbs(ts) / mbs(ns)
        );
    }
    Ok(())
}

/// Guest-to-guest TCP throughput: a Linux VM sends 32 MiB to another
/// with nc over Tessera's virtual switch (each VM 1 vCPU on its own pCPU),
/// and the same two guests as two QEMUs joined by QEMU's socket network
/// backend, each with QEMU's own virtio-net; the client times the
/// transfer from /proc/uptime. Interleaved runs, medians compared.
fn net_throughput(hyp: &std::path::Path) -> Result<(), String> {
    const MIB: f64 = 32.0;
    const RUNS: usize = 3;
    let cfg = root().join("tests/configs/bench-net.toml");
    crate::linux::ensure_artifacts_for(&cfg)?;
    let packed = pack::pack(&cfg, hyp, &outcome::out_dir()).map_err(|e| e.to_string())?;
    let secs = |lines: &[String], who: &str| -> Result<f64, String> {
        let bytes = MIB as u64 * 1048576;
        let key = format!("client: tessera-init: sent {bytes} bytes in ");
        let md5 = |what: &str| {
            let p = format!("tessera-init: {what} {bytes} bytes, md5 ");
            lines.iter().find_map(|l| l.split_once(&p).map(|(_, r)| r.trim().to_string()))
        };
        if md5("sending").is_none() || md5("sending") != md5("received") {
            return Err(format!("{who}: the data received is not the data sent: {lines:?}"));
        }
        lines
            .iter()
            .find_map(|l| l.split_once(&key).and_then(|(_, r)| r.trim_end_matches(" s").parse::<f64>().ok()))
            .ok_or(format!("{who}: no \"sent\" line: {lines:?}"))
    };
    let (mut native, mut tessera) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let n = native_pair()?;
        native.push(secs(&n, "native")?);
        let t = boot(&packed, packed.pcpus, false)?;
        outcome::verdict(&packed.vm_names, &t)?;
        tessera.push(secs(&t.lines, "tessera")?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mbs = |s: f64| MIB * 1.048576 / s.max(0.01);
    let (n, t) = (mbs(median(&mut native)), mbs(median(&mut tessera)));
    println!("virtio-net guest to guest, Linux, 1 vCPU each on its own pCPU, nc of {MIB} MiB over TCP, median of {RUNS} interleaved runs:");
    println!("  two QEMUs, QEMU's virtio-net over its socket backend   {n:>6.1} MB/s");
    println!("  Tessera's virtual switch                                {t:>6.1} MB/s   ratio {:.2}x", t / n);
    Ok(())
}

/// The net bench's two guests natively: two QEMUs of one core each, their
/// virtio-nets joined by QEMU's socket backend over a local TCP port.
/// Returns both consoles' lines, labelled "server: " and "client: ".
fn native_pair() -> Result<Vec<String>, String> {
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let guest = |name: &str, net: String, args: &str| {
        let mut c = qemu::native_linux(true, 1, 128, args);
        c.args([
            "-netdev",
            &net,
            "-device",
            &format!(
                "virtio-net-device,netdev=n,mac={}",
                if name == "server" { "02:00:00:00:00:01" } else { "02:00:00:00:00:02" }
            ),
        ]);
        c
    };
    let server = guest(
        "server",
        format!("socket,id=n,listen=127.0.0.1:{port}"),
        "tessera.test=net-server tessera.ip=10.0.0.1 tessera.peer=10.0.0.2",
    );
    let client = guest(
        "client",
        format!("socket,id=n,connect=127.0.0.1:{port}"),
        "tessera.test=net-client tessera.ip=10.0.0.2 tessera.peer=10.0.0.1 tessera.net_mib=32",
    );
    let s = std::thread::spawn(move || qemu::collect(server, Duration::from_secs(300), false, qemu::Input::None));
    // The listening side must be up before the other connects.
    std::thread::sleep(Duration::from_millis(1500));
    let c = qemu::collect(client, Duration::from_secs(300), false, qemu::Input::None)?;
    let s = s.join().map_err(|_| "the native server's QEMU thread panicked".to_string())??;
    for (who, con) in [("server", &s), ("client", &c)] {
        if con.timed_out || con.status != Some(0) {
            return Err(format!(
                "native {who}: QEMU status {:?}, timed out {}: {:?}",
                con.status, con.timed_out, con.lines
            ));
        }
    }
    let label =
        |who: &str, con: qemu::Console| con.lines.into_iter().map(move |l| format!("{who}: {l}")).collect::<Vec<_>>();
    Ok(label("server", s).into_iter().chain(label("client", c)).collect())
}

/// FreeRTOS (rtos-port): tick-to-task latency and periodic jitter. The
/// demo's periodic task runs every tick (1 ms) and measures each release
/// against the virtual counter: latency = when it ran - when its tick was
/// due; jitter = max - min. Alone, then beside a busy Linux VM on the same
/// pCPU, in instructions (-icount, 1 pCPU); then the same two and Linux on
/// the other pCPU, wall clock.
fn freertos(hyp: &std::path::Path) -> Result<(), String> {
    let cases = [
        ("alone", "tests/configs/bench-freertos.toml"),
        ("beside busy Linux, same pCPU", "tests/configs/bench-freertos-linux-1pcpu.toml"),
        ("beside busy Linux, other pCPU", "tests/configs/bench-freertos-linux-2pcpu.toml"),
    ];
    println!("FreeRTOS periodic task every tick (1 ms, virtual timer), latency from the tick's deadline to the task:");
    for icount in [true, false] {
        let unit = if icount { "instructions (-icount shift=0, 1 pCPU)" } else { "wall clock, microseconds" };
        println!("  {unit:<40}{:>10}{:>10}{:>10}{:>10}", "min", "avg", "max", "jitter");
        for (what, cfg) in cases {
            let cfg = root().join(cfg);
            crate::linux::ensure_artifacts_for(&cfg)?;
            let packed = pack::pack(&cfg, hyp, &outcome::out_dir()).map_err(|e| e.to_string())?;
            if icount && packed.pcpus > 1 {
                continue; // QEMU's -icount works with one pCPU only
            }
            let c = boot(&packed, packed.pcpus, icount)?;
            outcome::verdict(&packed.vm_names, &c)?;
            let (min, avg, max, cntfrq) = freertos_periodic(&c.lines, packed.vm_names.len() > 1)?;
            // -icount shift=0: one counter tick per ns, one ns per instruction.
            let scale = if icount { 1e9 } else { 1e6 } / cntfrq as f64;
            let [min, avg, max] = [min, avg, max].map(|t| t as f64 * scale);
            println!("    {what:<38}{min:>10.0}{avg:>10.0}{max:>10.0}{:>10.0}", max - min);
        }
    }
    Ok(())
}

/// (min, avg, max ticks, CNTFRQ) from the demo's `bench freertos-periodic`
/// line; with a Linux VM, also checks that Linux was up before the
/// measurement began (the demo's warm-up) and still busy when it ended.
fn freertos_periodic(lines: &[String], with_linux: bool) -> Result<(u64, u64, u64, u64), String> {
    let at = |pat: &str| lines.iter().position(|l| l.starts_with(pat));
    let i = at("rtos: bench freertos-periodic ").ok_or("the FreeRTOS demo printed no bench line")?;
    if with_linux {
        let up = at("linux: tessera-init: up").ok_or("Linux never reached userspace")?;
        let last_busy = lines.iter().rposition(|l| l.starts_with("linux: tessera-init: busy"));
        if up > i || last_busy.is_none_or(|b| b < i) {
            return Err("Linux was not busy during the whole FreeRTOS measurement: raise warmup_ms or busy_secs".into());
        }
    }
    let get = |key: &str| {
        lines[i]
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse::<u64>().ok())
            .ok_or(format!("no {key} in {:?}", lines[i]))
    };
    Ok((get("min_ticks")?, get("avg_ticks")?, get("max_ticks")?, get("cntfrq")?))
}

/// Linux boot to userspace (the init's first line), natively and under
/// Tessera, same kernel, initramfs, QEMU, vCPU count and guest memory;
/// interleaved runs, medians compared.
fn linux_boot(hyp: &std::path::Path) -> Result<(), String> {
    let cfg = root().join("tests/configs/linux-2on2.toml");
    crate::linux::ensure_artifacts_for(&cfg)?;
    let packed = pack::pack(&cfg, hyp, &outcome::out_dir()).map_err(|e| e.to_string())?;
    let what = "Linux 6.1 boot to userspace, 2 vCPUs (2 pCPUs), busybox initramfs, wall clock";
    compare_boots(what, &packed, || qemu::native_linux(true, 2, 96, "tessera.test=poweroff"))?;
    stock_kernel_boot(hyp)
}

/// Boots natively (`native()`) and `packed` under Tessera, 3 times each,
/// interleaved, to the init's first line; prints the medians and ratio.
fn compare_boots(what: &str, packed: &pack::Packed, native: impl Fn() -> std::process::Command) -> Result<(), String> {
    let marker = "tessera-init: up";
    let (mut times_native, mut times_tessera) = (Vec::new(), Vec::new());
    const RUNS: usize = 3;
    for _ in 0..RUNS {
        let mut n = native();
        n.args(["-nic", "none"]);
        times_native.push(qemu::time_to_marker(n, marker, Duration::from_secs(300))?.as_secs_f64());
        let t = qemu::command(&spec(packed, packed.pcpus, false));
        times_tessera.push(qemu::time_to_marker(t, marker, Duration::from_secs(300))?.as_secs_f64());
    }
    times_native.sort_by(f64::total_cmp);
    times_tessera.sort_by(f64::total_cmp);
    let (n, t) = (times_native[RUNS / 2], times_tessera[RUNS / 2]);
    println!("{what}, median of {RUNS} interleaved runs:");
    println!("  native (QEMU boots the kernel)   {n:>6.2} s");
    println!("  under Tessera                    {t:>6.2} s   ratio {:.2}x", t / n);
    Ok(())
}

/// Debian's stock armmp-lpae kernel in a 512 MiB VM (2 vCPUs, 2 pCPUs),
/// natively and under Tessera: the boot where creating a large VM and the
/// kernel's own memory setup show.
fn stock_kernel_boot(hyp: &std::path::Path) -> Result<(), String> {
    let dir = outcome::out_dir().join("bench-debian");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let base = root().join("tests/configs/linux-debian.toml");
    crate::linux::ensure_artifacts_for(&base)?;
    let linux = crate::linux::out_dir();
    let toml = format!(
        "[system]\npcpus = 2\nmemory_mib = 1024\n\n[[vm]]\nname = \"linux\"\nkernel = \"{}\"\ninitrd = \"{}\"\n\
         cmdline = \"console=ttyAMA0 tessera.test=poweroff\"\nvcpus = 2\nmemory_mib = 512\n",
        linux.join("debian-zImage").display(),
        linux.join("initramfs.cpio.gz").display()
    );
    let cfg = dir.join("debian-512.toml");
    std::fs::write(&cfg, toml).map_err(|e| format!("{}: {e}", cfg.display()))?;
    let packed = pack::pack(&cfg, hyp, &dir).map_err(|e| e.to_string())?;
    let what = "Debian's stock kernel, 512 MiB VM, 2 vCPUs (2 pCPUs), boot to userspace, wall clock";
    compare_boots(what, &packed, || qemu::native_kernel("debian-zImage", true, 2, 512, "tessera.test=poweroff"))
}

/// Boots a packed configuration on `pcpus` pCPUs (under `-icount` or on
/// the wall clock), quietly, with a 300 s deadline.
fn boot(packed: &pack::Packed, pcpus: u32, icount: bool) -> Result<qemu::Console, String> {
    qemu::boot(&spec(packed, pcpus, icount))
}

/// How the bench boots a packed configuration: quietly, nothing typed, a
/// 300 s deadline.
fn spec(packed: &pack::Packed, pcpus: u32, icount: bool) -> qemu::Boot<'_> {
    qemu::Boot {
        image: &packed.image,
        pcpus,
        memory_mib: packed.memory_mib,
        deadline: Duration::from_secs(300),
        echo: false,
        icount,
        disks: &packed.disks,
        input: qemu::Input::None,
    }
}

/// `bench NAME key=value ...` from the bench guest's console.
struct Fields(String);

impl Fields {
    fn find(lines: &[String], vm: &str, name: &str) -> Result<Self, String> {
        let prefix = format!("{vm}: bench {name} ");
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|s| Fields(s.to_string()))
            .ok_or(format!("the bench guest printed no {name} result"))
    }

    fn get(&self, key: &str) -> Result<u64, String> {
        self.0
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .ok_or(format!("no {key} in {:?}", self.0))
    }
}

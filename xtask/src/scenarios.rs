//! `cargo xtask test`: every test. Formatting and clippy first, then host
//! unit tests (cargo test), then
//! the checks that need the target build: bad configurations, corrupt
//! images, and the QEMU scenarios of `tests/src/lib.rs`. Ends with the line
//! `N passed, N failed` for the scenarios.

use crate::{build, elf_image, outcome, pack, qemu, root, setup};
use std::path::Path;
use std::time::{Duration, Instant};
use tessera_scenarios::{check, check_shares, DISK_SCENARIOS, SCENARIOS, SHARE_SCENARIOS};

struct Tally {
    passed: u32,
    failed: Vec<String>,
}

impl Tally {
    fn record(&mut self, name: &str, r: Result<(), String>, secs: f64) {
        match r {
            Ok(()) => {
                self.passed += 1;
                println!("scenario {name} ... ok ({secs:.1} s)");
            }
            Err(e) => {
                println!("scenario {name} ... FAILED ({secs:.1} s): {e}");
                self.failed.push(name.to_string());
            }
        }
    }
}

pub fn test_verb() -> Result<(), String> {
    let start = Instant::now();
    setup::run()?;
    build::lint()?;
    build::cargo(&["test", "--workspace", "--exclude", "test-guests", "--all-features"])?;
    scenarios(start, std::env::var("TESSERA_SCENARIO").ok())
}

/// `cargo xtask scenario [FILTER]`: only the QEMU and packer scenarios
/// whose names contain FILTER (all without one), for working on a guest.
pub fn scenario_verb(filter: Option<&str>) -> Result<(), String> {
    setup::run()?;
    scenarios(Instant::now(), filter.map(str::to_string))
}

fn scenarios(start: Instant, only: Option<String>) -> Result<(), String> {
    let hyp = build::all()?;
    let mut t = Tally { passed: 0, failed: Vec::new() };
    if only.is_none() {
        bad_configs(&hyp, &mut t)?;
        corrupt_images(&hyp, &mut t)?;
    }
    only_filter(&mut t, &hyp, only.as_deref())?;
    if only.as_deref().is_none_or(|o| "linux-paravirt-native".contains(o)) {
        let t0 = Instant::now();
        let r = native_paravirt_kernel();
        t.record("linux-paravirt-native", r, t0.elapsed().as_secs_f64());
    }
    if only.as_deref().is_none_or(|o| "trace-dynamic-scaling".contains(o)) {
        let t0 = Instant::now();
        let r = trace_of_a_short_run();
        t.record("trace-dynamic-scaling", r, t0.elapsed().as_secs_f64());
    }
    if only.as_deref().is_none_or(|o| "linux-patches-checkpatch".contains(o)) {
        let t0 = Instant::now();
        let r = crate::linux::checkpatch().map(|lines| lines.iter().for_each(|l| println!("    {l}")));
        t.record("linux-patches-checkpatch", r, t0.elapsed().as_secs_f64());
    }
    println!(
        "\nQEMU and packer scenarios: {} in {:.0} s",
        t.passed as usize + t.failed.len(),
        start.elapsed().as_secs_f64()
    );
    println!("{} passed, {} failed", t.passed, t.failed.len());
    if t.failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {}", t.failed.join(", ")))
    }
}

fn only_filter(t: &mut Tally, hyp: &Path, only: Option<&str>) -> Result<(), String> {
    for s in SCENARIOS.iter().filter(|s| only.is_none_or(|o| s.name.contains(o))) {
        let t0 = Instant::now();
        let r = run_scenario(s, hyp);
        t.record(s.name, r, t0.elapsed().as_secs_f64());
    }
    Ok(())
}

fn run_scenario(s: &tessera_scenarios::Scenario, hyp: &Path) -> Result<(), String> {
    crate::linux::ensure_artifacts_for(&root().join(s.config))?;
    let disks = DISK_SCENARIOS.iter().find(|d| d.scenario == s.name);
    if let Some(d) = disks {
        crate::disks::prepare(d)?;
    }
    let packed = pack::pack(&root().join(s.config), hyp, &outcome::out_dir()).map_err(|e| e.to_string())?;
    let c = qemu::boot(&qemu::Boot {
        image: &packed.image,
        pcpus: packed.pcpus,
        memory_mib: packed.memory_mib,
        deadline: Duration::from_secs(s.deadline_secs),
        echo: std::env::var_os("TESSERA_ECHO").is_some(),
        // The fairness scenarios count in instructions (see ShareScenario).
        icount: SHARE_SCENARIOS.iter().any(|f| f.scenario == s.name),
        disks: &packed.disks,
        input: qemu::Input::Script(s.typed),
    })?;
    let mut r = check(s, &c.lines, c.status, c.timed_out);
    if let (Ok(()), Some(d)) = (&r, disks) {
        r = crate::disks::verify(d, &c.lines);
    }
    if let (Ok(()), Some(f)) = (&r, SHARE_SCENARIOS.iter().find(|f| f.scenario == s.name)) {
        r = check_shares(f, &c.lines).map(|summary| println!("    {summary}"));
    }
    if r.is_err() {
        // Show the console of a failed scenario: that is what a developer needs.
        println!("--- console of {} ---", s.name);
        for l in &c.lines {
            println!("    {l}");
        }
        println!("--- end of console ---");
    }
    r
}

/// `cargo xtask trace` of the dynamic-scaling configuration: the JSON
/// parses, has a track per pCPU with the vCPUs' runs on both, pCPU 1's
/// powered-off stretches, and instant events for exits, injections and
/// migrations; the SVG timeline is there.
fn trace_of_a_short_run() -> Result<(), String> {
    let w = crate::trace::run(Path::new("tests/configs/dynamic-scaling.toml"), 60)?;
    let text = std::fs::read_to_string(&w.json).map_err(|e| format!("{}: {e}", w.json.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", w.json.display()))?;
    let ev = doc["traceEvents"].as_array().ok_or("no traceEvents array")?;
    let has = |f: &dyn Fn(&serde_json::Value) -> bool| ev.iter().any(f);
    let mut problems = Vec::new();
    for p in 0..2 {
        if !has(&|e| e["ph"] == "M" && e["tid"] == p && e["args"]["name"] == format!("pCPU {p}")) {
            problems.push(format!("no track named pCPU {p}"));
        }
        if !has(&|e| e["ph"] == "X" && e["cat"] == "vcpu" && e["tid"] == p) {
            problems.push(format!("no vCPU ran on pCPU {p}'s track"));
        }
    }
    if !has(&|e| e["ph"] == "X" && e["cat"] == "power" && e["tid"] == 1 && e["dur"].as_f64().is_some_and(|d| d > 0.0)) {
        problems.push("pCPU 1 was never shown powered off".into());
    }
    for cat in ["exit", "inject", "migrate", "power"] {
        if !has(&|e| e["ph"] == "i" && e["cat"] == cat) {
            problems.push(format!("no {cat} event"));
        }
    }
    let svg = std::fs::read_to_string(&w.svg).map_err(|e| format!("{}: {e}", w.svg.display()))?;
    if !svg.starts_with("<svg") || !svg.contains("pCPU 1") {
        problems.push("the SVG timeline is not one".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The kernel built here, with the Tessera patches, booted by QEMU itself
/// (no hypervisor; PSCI and the SMCCC queries answered by QEMU over HVC):
/// it reaches user space, finds no Tessera, and the Tessera code prints
/// nothing.
fn native_paravirt_kernel() -> Result<(), String> {
    crate::linux::ensure_artifacts_for(&root().join("tests/configs/linux-paravirt.toml"))?;
    let mut cmd = qemu::native_linux(false, 2, 96, "tessera.test=paravirt");
    cmd.args(["-nic", "none"]);
    let c =
        qemu::collect(cmd, Duration::from_secs(180), std::env::var_os("TESSERA_ECHO").is_some(), qemu::Input::None)?;
    let want = [
        "tessera-init: up, 2 CPUs online (0-1)",
        "tessera-init: no hypervisor type",
        "tessera-init: DTB has no /hypervisor",
        "tessera-init: sleep 2 slept",
        "reboot: Power down",
    ];
    let mut problems: Vec<String> = want
        .iter()
        .filter(|w| !c.lines.iter().any(|l| l.contains(*w)))
        .map(|w| format!("no line contains {w:?}"))
        .collect();
    for l in &c.lines {
        // The Tessera driver's messages start "tessera: " (pr_fmt).
        if l.contains("tessera: ") || ["Kernel panic", "Oops", "BUG:", "WRONG"].iter().any(|b| l.contains(b)) {
            problems.push(format!("unexpected line {l:?}"));
        }
    }
    if c.timed_out || c.status != Some(0) {
        problems.push(format!("QEMU ended with status {:?} (timed out: {})", c.status, c.timed_out));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        println!("--- console of linux-paravirt-native ---");
        for l in &c.lines {
            println!("    {l}");
        }
        Err(problems.join("; "))
    }
}

/// Every file in tests/configs/bad is refused before QEMU starts, with the
/// fragment its first line names, and the error names the file.
fn bad_configs(hyp: &Path, t: &mut Tally) -> Result<(), String> {
    let dir = root().join("tests/configs/bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let out = outcome::out_dir().join("bad");
    for f in files {
        let t0 = Instant::now();
        let name = format!("bad-config/{}", f.file_stem().unwrap().to_string_lossy());
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let expect = text.lines().next().and_then(|l| l.strip_prefix("# expect:")).map(str::trim);
        let r = match (expect, pack::pack(&f, hyp, &out)) {
            (None, _) => Err("first line must be `# expect: <fragment>`".to_string()),
            (_, Ok(_)) => Err("was accepted".to_string()),
            (Some(frag), Err(e)) => {
                let msg = e.to_string();
                let file = f.file_name().unwrap().to_string_lossy();
                if msg.contains(frag) && msg.contains(file.as_ref()) && !msg.contains('\n') {
                    println!("    {msg}");
                    Ok(())
                } else {
                    Err(format!("refused with {msg:?}, expected one line naming {file} and containing {frag:?}"))
                }
            }
        };
        t.record(&name, r, t0.elapsed().as_secs_f64());
    }
    Ok(())
}

/// A well-formed payload that the packer would never write: two VMs whose
/// writable ranges of one disk overlap. The hypervisor checks this itself.
fn shared_writable_disk() -> Vec<u8> {
    use tessera_payload::write::{build, DiskImage, Shared, VmImage};
    use tessera_payload::{Device, DeviceDesc, RegionKind};
    let vm = |name: &str, offset: u64| VmImage {
        name: name.into(),
        vcpus: 1,
        ram_base: 0x4000_0000,
        ram_size: 2 << 20,
        affinity: 1,
        entry: 0x4000_0000,
        boot_regs: [0; 3],
        devices: vec![DeviceDesc {
            slot: 0,
            device: Device::Block { disk: 0, offset, size: 1 << 20, read_only: false },
        }],
        channels: 0,
        fault_abort: false,
        regions: vec![(RegionKind::Kernel, 0x4000_0000, vec![0; 4])],
    };
    let shared = Shared {
        disks: vec![DiskImage { name: "disk0".into(), size: 4 << 20 }],
        channels: vec![],
        ..Default::default()
    };
    build(1, 128, &[vm("a", 0), vm("b", 512 << 10)], &shared)
}

/// A corrupt or truncated payload is refused by the hypervisor at boot,
/// with a clear line, and QEMU ends with a failure status.
fn corrupt_images(hyp: &Path, t: &mut Tally) -> Result<(), String> {
    let cfg = crate::config::load(&root().join("tests/configs/hello.toml")).map_err(|e| e.to_string())?;
    let payload = pack::build_payload(&cfg).map_err(|e| e.to_string())?;
    let hyp_elf = std::fs::read(hyp).map_err(|e| format!("{}: {e}", hyp.display()))?;
    let mut flipped = payload.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    // Cut into the payload's content, not only its zero padding: QEMU's RAM
    // is zero, so losing trailing zeros changes nothing the hypervisor reads.
    let mut truncated = payload.clone();
    let content_end = payload.iter().rposition(|&b| b != 0).map_or(payload.len(), |i| i + 1);
    truncated.truncate(content_end.saturating_sub(16));
    let mut bad_magic = payload.clone();
    bad_magic[0] = b'X';
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("corrupt-image/bit-flip", flipped, "payload checksum mismatch"),
        ("corrupt-image/truncated", truncated, "the image is corrupt or truncated"),
        ("corrupt-image/not-a-payload", bad_magic, "no payload magic"),
        ("corrupt-image/shared-writable-disk", shared_writable_disk(), "and one of them is writable"),
    ];
    let dir = outcome::out_dir().join("corrupt");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for (name, bytes, want) in cases {
        let t0 = Instant::now();
        let image = dir.join(format!("{}.elf", name.replace('/', "-")));
        let elf = elf_image::write_bootable_elf(&hyp_elf, &bytes, pack::PAYLOAD_BASE)?;
        std::fs::write(&image, elf).map_err(|e| e.to_string())?;
        let c = qemu::boot(&qemu::Boot {
            image: &image,
            pcpus: 1,
            memory_mib: 128,
            deadline: Duration::from_secs(30),
            echo: false,
            icount: false,
            disks: &[],
            input: qemu::Input::None,
        })?;
        let report = tessera_scenarios::console::Report::parse(&c.lines);
        let r = match (&report.boot_error, c.status) {
            (Some(e), Some(st)) if e.contains(want) && st != 0 => {
                println!("    tessera: error: {e} (QEMU status {st})");
                Ok(())
            }
            _ => Err(format!(
                "expected a refusal containing {want:?} and a failure status; got {:?}, status {:?}, console: {:?}",
                report.boot_error, c.status, c.lines
            )),
        };
        t.record(name, r, t0.elapsed().as_secs_f64());
    }
    Ok(())
}

//! `cargo xtask trace CONFIG [--secs N]`: runs a configuration on a
//! hypervisor built with its `trace` feature and turns the trace it prints
//! when the system powers off (`tessera: trace: ...` lines, see
//! `hypervisor/src/trace.rs`) into `target/trace/NAME.json`, a
//! Chrome/Perfetto trace (one track per pCPU: which vCPU ran when and when
//! the pCPU was powered off; instant events for exits by exception class,
//! vGIC injections, migrations and power-on requests), and
//! `target/trace/NAME.svg`, the same timeline as a picture.

use crate::{build, outcome, pack, qemu, root, setup};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One record as the hypervisor printed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub pcpu: usize,
    pub t: u64,
    pub kind: u8,
    pub vm: u32,
    pub vcpu: u32,
    pub arg: u32,
}

// The record kinds of hypervisor/src/trace.rs.
const RUN: u8 = 1;
const STOP: u8 = 2;
const EXIT: u8 = 3;
const INJECT: u8 = 4;
const MIGRATE: u8 = 5;
const POWER_OFF: u8 = 6;
const POWER_ON: u8 = 7;
const UP: u8 = 8;

/// What `trace` wrote.
pub struct Written {
    pub json: PathBuf,
    pub svg: PathBuf,
}

pub fn verb(args: &[String]) -> Result<(), String> {
    let mut config = None;
    let mut secs = 60u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => {
                secs = it.next().and_then(|s| s.parse().ok()).ok_or("--secs needs a number of seconds")?;
            }
            c if config.is_none() => config = Some(c.to_string()),
            other => return Err(format!("unexpected argument {other:?}: usage: cargo xtask trace CONFIG [--secs N]")),
        }
    }
    let config = config.ok_or("usage: cargo xtask trace CONFIG [--secs N]")?;
    setup::run()?;
    let w = run(Path::new(&config), secs)?;
    println!("trace: {}", w.json.display());
    println!("timeline: {}", w.svg.display());
    println!("open the JSON in https://ui.perfetto.dev (Open trace file) or chrome://tracing; the SVG in any browser");
    Ok(())
}

/// Builds the traced hypervisor (in a target directory of its own, so the
/// normal build is not disturbed), boots `config` until it powers off
/// (at most `secs` seconds), and writes the trace files.
pub fn run(config: &Path, secs: u64) -> Result<Written, String> {
    build::all()?;
    let td = build::target_dir().join("trace-build");
    build::cargo(&[
        "build",
        "--release",
        "--target",
        crate::setup::TARGET,
        "--target-dir",
        td.to_str().ok_or("target directory is not UTF-8")?,
        "-p",
        "tessera-hypervisor",
        "--features",
        "trace",
    ])?;
    let hyp = td.join(crate::setup::TARGET).join("release").join("tessera");
    let config = if config.is_absolute() { config.to_path_buf() } else { root().join(config) };
    crate::linux::ensure_artifacts_for(&config)?;
    let out = build::target_dir().join("trace");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let packed = pack::pack(&config, &hyp, &outcome::out_dir()).map_err(|e| e.to_string())?;
    let c = qemu::boot(&qemu::Boot {
        image: &packed.image,
        pcpus: packed.pcpus,
        memory_mib: packed.memory_mib,
        deadline: Duration::from_secs(secs),
        echo: std::env::var_os("TESSERA_ECHO").is_some(),
        icount: false,
        disks: &packed.disks,
        input: qemu::Input::None,
    })?;
    let (hz, records) = parse(&c.lines).ok_or_else(|| {
        format!(
            "no trace from {}: the system did not power off within {secs} s (and no trace buffer filled); \
             give it more time with --secs",
            config.display()
        )
    })?;
    let name = config.file_stem().and_then(|s| s.to_str()).unwrap_or("trace");
    let json = out.join(format!("{name}.json"));
    let svg = out.join(format!("{name}.svg"));
    let doc = chrome_json(hz, &records, &packed.vm_names);
    std::fs::write(&json, serde_json::to_string(&doc).map_err(|e| e.to_string())?)
        .map_err(|e| format!("{}: {e}", json.display()))?;
    std::fs::write(&svg, timeline_svg(hz, &records, &packed.vm_names))
        .map_err(|e| format!("{}: {e}", svg.display()))?;
    Ok(Written { json, svg })
}

/// The counter frequency and the records between `trace: begin` and
/// `trace: end`; None if there was no complete trace.
pub fn parse(lines: &[String]) -> Option<(u64, Vec<Record>)> {
    let begin = lines.iter().position(|l| l.contains("tessera: trace: begin hz="))?;
    let hz = lines[begin].rsplit("hz=").next()?.trim().parse().ok()?;
    let mut out = Vec::new();
    for l in &lines[begin + 1..] {
        let rest = l.strip_prefix("tessera: trace: ")?;
        if rest.starts_with("end") {
            return Some((hz, out));
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() != 6 {
            return None;
        }
        out.push(Record {
            pcpu: f[0].parse().ok()?,
            t: u64::from_str_radix(f[1], 16).ok()?,
            kind: f[2].parse().ok()?,
            vm: f[3].parse().ok()?,
            vcpu: f[4].parse().ok()?,
            arg: u32::from_str_radix(f[5], 16).ok()?,
        });
    }
    None
}

fn vcpu_name(names: &[String], vm: u32, vcpu: u32) -> String {
    let n = names.get(vm as usize - 1).map_or("?", String::as_str);
    format!("{n} vCPU {vcpu}")
}

/// The exception classes a guest exit has (HSR.EC), by name.
fn exit_name(ec: u32) -> String {
    let what = match ec {
        0x100 => "physical interrupt",
        0x01 => "WFI/WFE",
        0x03..=0x06 => "CP15/CP14 access",
        0x07 => "VFP access",
        0x12 => "HVC",
        0x13 => "SMC",
        0x20 => "instruction abort",
        0x24 => "data abort (MMIO or first touch)",
        _ => "other",
    };
    format!("exit: {what}")
}

/// Slices of each pCPU's track: (pCPU, start, end, label, category).
fn slices(records: &[Record], names: &[String]) -> Vec<(usize, u64, u64, String, &'static str)> {
    let t_end = records.iter().map(|r| r.t).max().unwrap_or(0);
    let mut out = Vec::new();
    let pcpus = records.iter().map(|r| r.pcpu + 1).max().unwrap_or(0);
    for p in 0..pcpus {
        let (mut running, mut off) = (None, None);
        for r in records.iter().filter(|r| r.pcpu == p) {
            match r.kind {
                RUN => running = Some((r.t, r.vm, r.vcpu)),
                STOP => {
                    if let Some((t0, vm, vcpu)) = running.take() {
                        out.push((p, t0, r.t, vcpu_name(names, vm, vcpu), "vcpu"));
                    }
                }
                POWER_OFF => off = Some(r.t),
                UP => {
                    if let Some(t0) = off.take() {
                        out.push((p, t0, r.t, "powered off".to_string(), "power"));
                    }
                }
                _ => {}
            }
        }
        if let Some((t0, vm, vcpu)) = running {
            out.push((p, t0, t_end, vcpu_name(names, vm, vcpu), "vcpu"));
        }
        if let Some(t0) = off {
            out.push((p, t0, t_end, "powered off".to_string(), "power"));
        }
    }
    out
}

/// The Chrome trace-event format (what chrome://tracing and Perfetto read).
pub fn chrome_json(hz: u64, records: &[Record], names: &[String]) -> Value {
    let t0 = records.iter().map(|r| r.t).min().unwrap_or(0);
    let us = |t: u64| (t - t0) as f64 * 1e6 / hz as f64;
    let mut ev = vec![json!({"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "Tessera"}})];
    let pcpus = records.iter().map(|r| r.pcpu + 1).max().unwrap_or(0);
    for p in 0..pcpus {
        ev.push(json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": p, "args": {"name": format!("pCPU {p}")}}));
    }
    for (p, a, b, label, cat) in slices(records, names) {
        ev.push(json!({"name": label, "cat": cat, "ph": "X", "pid": 1, "tid": p, "ts": us(a), "dur": us(b) - us(a)}));
    }
    for r in records {
        let (name, cat) = match r.kind {
            EXIT => (exit_name(r.arg), "exit"),
            INJECT => ("vGIC: interrupts into list registers".to_string(), "inject"),
            MIGRATE => (format!("{} moves to pCPU {}", vcpu_name(names, r.vm, r.vcpu), r.arg), "migrate"),
            POWER_ON => (format!("powering pCPU {} on", r.arg), "power"),
            _ => continue,
        };
        let mut e = json!({"name": name, "cat": cat, "ph": "i", "s": "t", "pid": 1, "tid": r.pcpu, "ts": us(r.t)});
        if matches!(r.kind, EXIT | INJECT) {
            e["args"] = json!({"vcpu": vcpu_name(names, r.vm, r.vcpu)});
        }
        ev.push(e);
    }
    json!({"traceEvents": ev, "displayTimeUnit": "ms"})
}

/// One row per pCPU: a coloured bar per vCPU run (a colour per VM), grey
/// where the pCPU was off, a red tick per migration.
pub fn timeline_svg(hz: u64, records: &[Record], names: &[String]) -> String {
    let t0 = records.iter().map(|r| r.t).min().unwrap_or(0);
    let t1 = records.iter().map(|r| r.t).max().unwrap_or(t0 + 1).max(t0 + 1);
    let pcpus = records.iter().map(|r| r.pcpu + 1).max().unwrap_or(1);
    let (left, width, row) = (90.0, 1100.0, 40.0);
    let x = |t: u64| left + (t - t0) as f64 / (t1 - t0) as f64 * width;
    let height = 60.0 + row * pcpus as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="12">"#,
        left + width + 20.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="16">Tessera: which vCPU ran on each pCPU ({:.3} s; grey: powered off, red: a vCPU moved here)</text>"#,
        (t1 - t0) as f64 / hz as f64
    );
    for p in 0..pcpus {
        let y = 30.0 + row * p as f64;
        let _ = writeln!(s, r#"<text x="4" y="{}">pCPU {p}</text>"#, y + row / 2.0);
        let _ = writeln!(s, r##"<rect x="{left}" y="{y}" width="{width}" height="{}" fill="#f4f4f4"/>"##, row - 8.0);
    }
    for (p, a, b, label, cat) in slices(records, names) {
        let y = 30.0 + row * p as f64;
        let fill = if cat == "power" {
            "#9e9e9e".to_string()
        } else {
            let vm = names.iter().position(|n| label.starts_with(&format!("{n} vCPU"))).unwrap_or(0);
            format!("hsl({}, 65%, 55%)", vm * 67 % 360)
        };
        let w = (x(b) - x(a)).max(0.5);
        let _ = writeln!(
            s,
            r#"<rect x="{:.2}" y="{y}" width="{w:.2}" height="{}" fill="{fill}"><title>{label}</title></rect>"#,
            x(a),
            row - 8.0
        );
    }
    for r in records.iter().filter(|r| r.kind == MIGRATE) {
        let y = 30.0 + row * r.arg as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{0:.2}" x2="{0:.2}" y1="{y}" y2="{1}" stroke="red" stroke-width="1.5"><title>{2} arrives</title></line>"#,
            x(r.t),
            y + row - 8.0,
            vcpu_name(names, r.vm, r.vcpu)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn records_become_tracks_slices_and_events() {
        let l = lines(&[
            "tessera: booting",
            "tessera: trace: begin hz=1000",
            "tessera: trace: 0 a 1 1 0 0",
            "tessera: trace: 0 b 3 1 0 12",
            "tessera: trace: 0 14 2 1 0 0",
            "tessera: trace: 0 14 5 1 1 1",
            "tessera: trace: 1 5 8 0 0 0",
            "tessera: trace: 1 1e 6 0 0 0",
            "tessera: trace: end",
        ]);
        let (hz, recs) = parse(&l).unwrap();
        assert_eq!((hz, recs.len()), (1000, 6));
        let names = vec!["vm".to_string()];
        let doc = chrome_json(hz, &recs, &names);
        let ev = doc["traceEvents"].as_array().unwrap();
        let find = |ph: &str, name: &str| ev.iter().find(|e| e["ph"] == ph && e["name"] == name).cloned();
        assert_eq!(find("M", "thread_name").unwrap()["args"]["name"], "pCPU 0");
        let run = find("X", "vm vCPU 0").unwrap();
        // 10 ms to 20 ms after the first record (5 ms): ts 5000 us, dur 10000 us.
        assert_eq!(
            (run["ts"].as_f64(), run["dur"].as_f64(), run["tid"].as_u64()),
            (Some(5000.0), Some(10000.0), Some(0))
        );
        assert!(find("i", "exit: HVC").is_some());
        assert!(find("i", "vm vCPU 1 moves to pCPU 1").is_some());
        let off = find("X", "powered off").unwrap();
        assert_eq!(off["tid"], 1, "pCPU 1 is off until the end");
        let svg = timeline_svg(hz, &recs, &names);
        assert!(svg.starts_with("<svg") && svg.contains("pCPU 1") && svg.contains("stroke=\"red\""));
        assert_eq!(parse(&l[..4]), None, "an unfinished trace is not a trace");
    }
}

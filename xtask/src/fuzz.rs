//! `cargo xtask fuzz [TARGET] [--secs N] [--merge]`: the fuzz targets of
//! tests/fuzz under libFuzzer, on the stable toolchain.
//!
//! cargo-fuzz needs nightly for its sanitizer flags; libFuzzer itself only
//! needs the code built with LLVM's coverage instrumentation, which stable
//! rustc exposes through `-Cpasses=sancov-module` and the sanitizer-coverage
//! LLVM options. So this verb builds the targets with those flags (for an
//! explicit host target, so build scripts stay uninstrumented) into
//! target/fuzz, then runs each binary for N seconds over a working corpus
//! seeded from tests/fuzz/corpus/<target>/. Crashes land in
//! target/fuzz/artifacts/<target>/; `--merge` folds what the run found that
//! reaches new code back into the checked-in corpus.

use crate::{build, root, setup};
use std::path::Path;
use std::process::{Command, Stdio};

/// The targets, as tests/fuzz/Cargo.toml names its binaries (and
/// tessera_fuzz::TARGETS lists them).
pub const TARGETS: &[&str] = &[
    "hypercall",
    "trap",
    "vgic",
    "pl011",
    "virtqueue",
    "virtio_rng",
    "virtio_console",
    "virtio_blk",
    "net",
    "payload",
    "config",
];

const DEFAULT_SECS: u64 = 60;

const COVERAGE_FLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks";

#[derive(Debug)]
struct Options {
    targets: Vec<&'static str>,
    secs: u64,
    merge: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut opts = Options { targets: TARGETS.to_vec(), secs: DEFAULT_SECS, merge: false };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--secs" => {
                let v = it.next().ok_or("--secs needs a number of seconds")?;
                opts.secs = v.parse().map_err(|_| format!("--secs {v}: not a number of seconds"))?;
            }
            "--merge" => opts.merge = true,
            name => {
                let t = TARGETS
                    .iter()
                    .find(|&&t| t == name)
                    .ok_or_else(|| format!("no fuzz target `{name}` (targets: {})", TARGETS.join(", ")))?;
                opts.targets = vec![t];
            }
        }
    }
    Ok(opts)
}

fn host_triple() -> Result<String, String> {
    let out = Command::new("rustc").arg("-vV").output().map_err(|e| format!("cannot run rustc: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .ok_or_else(|| "rustc -vV names no host triple".into())
}

/// What one run reported.
struct Report {
    target: &'static str,
    execs: u64,
    corpus: usize,
    crashed: bool,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse(args)?;
    setup::run()?;
    if Command::new("c++").arg("--version").stdout(Stdio::null()).status().is_err() {
        setup::apt_install(&["g++"])?;
    }
    let triple = host_triple()?;
    let target_dir = build::target_dir().join("fuzz");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .args(["build", "--release", "-p", "tessera-fuzz", "--features", "libfuzzer", "--bins", "--target", &triple])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", COVERAGE_FLAGS)
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !st.success() {
        return Err("building the fuzz targets failed".into());
    }
    let bins = target_dir.join(&triple).join("release");
    let mut reports = Vec::new();
    for &target in &opts.targets {
        reports.push(fuzz_one(&bins, target, &opts)?);
    }
    println!("\n{:<16} {:>14} {:>8}  result", "target", "executions", "corpus");
    for r in &reports {
        let result = if r.crashed { format!("CRASH (see target/fuzz/artifacts/{}/)", r.target) } else { "ok".into() };
        println!("{:<16} {:>14} {:>8}  {result}", r.target, r.execs, r.corpus);
    }
    let crashed: Vec<_> = reports.iter().filter(|r| r.crashed).map(|r| r.target).collect();
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzz targets failed: {}", crashed.join(", ")))
    }
}

fn fuzz_one(bins: &Path, target: &'static str, opts: &Options) -> Result<Report, String> {
    let seeds = root().join("tests/fuzz/corpus").join(target);
    let work = build::target_dir().join("fuzz/corpus").join(target);
    let artifacts = build::target_dir().join("fuzz/artifacts").join(target);
    for dir in [&seeds, &work, &artifacts] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let bin = bins.join(target);
    println!("fuzz: {target} for {} s", opts.secs);
    let out = Command::new(&bin)
        .arg(format!("-max_total_time={}", opts.secs))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-max_len=4096")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&work)
        .arg(&seeds)
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let stat = |key: &str| {
        log.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse::<u64>().ok())).unwrap_or(0)
    };
    let crashed = !out.status.success();
    if crashed {
        // The tail holds the panic message and the artifact's name.
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
    }
    if opts.merge && !crashed {
        merge(&bin, &seeds, &work)?;
    }
    Ok(Report { target, execs: stat("stat::number_of_executed_units:"), corpus: count(&work), crashed })
}

/// Folds the working corpus into the checked-in one, which becomes the
/// smallest set of inputs libFuzzer finds covering what both cover
/// (`-set_cover_merge`), so the repository holds no more than it needs.
fn merge(bin: &Path, seeds: &Path, work: &Path) -> Result<(), String> {
    let out = work.with_extension("merged");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let st = Command::new(bin)
        .arg("-set_cover_merge=1")
        .arg("-max_len=4096")
        .arg(&out)
        .arg(seeds)
        .arg(work)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !st.success() {
        return Err(format!("merging into {} failed", seeds.display()));
    }
    std::fs::remove_dir_all(seeds).map_err(|e| format!("{}: {e}", seeds.display()))?;
    std::fs::rename(&out, seeds).map_err(|e| format!("{}: {e}", seeds.display()))?;
    println!("fuzz: {} now holds {} inputs", seeds.display(), count(seeds));
    Ok(())
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verb_knows_every_target_the_crate_builds() {
        let manifest = std::fs::read_to_string(root().join("tests/fuzz/Cargo.toml")).unwrap();
        let bins: Vec<&str> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix("name = \"").and_then(|r| r.strip_suffix('"')))
            .filter(|n| *n != "tessera-fuzz")
            .collect();
        assert_eq!(bins, TARGETS);
    }

    #[test]
    fn arguments_pick_a_target_and_a_duration() {
        let o = parse(&["net".into(), "--secs".into(), "5".into()]).unwrap();
        assert_eq!((o.targets, o.secs, o.merge), (vec!["net"], 5, false));
        assert!(parse(&["nope".into()]).unwrap_err().contains("no fuzz target `nope`"));
        assert!(parse(&["--secs".into(), "x".into()]).is_err());
    }
}

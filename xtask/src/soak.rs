//! `cargo xtask soak [--mins N]`: tests/configs/soak.toml for N minutes
//! (default 10), then a table of what moved and whether every check agreed.
//!
//! The run passes when every VM shut down cleanly, every checksum a sender
//! printed matches the receiver's (TCP streams, per stream), every disk
//! round read back what it wrote, the last file of each Linux VM reads back
//! from the image on the host with the MD5 its VM printed, the channel's two
//! ends counted the same rounds, and the hypervisor printed no warning or
//! error. FreeRTOS's missed ticks are reported, not judged: under software
//! emulation a vCPU can be descheduled for more than a tick.

use crate::{build, disks, linux, outcome, pack, qemu, root, setup};
use std::collections::BTreeMap;
use std::time::Duration;
use tessera_scenarios::{DiskContent, DiskImage, DiskScenario, Readback};

const TEMPLATE: &str = "tests/configs/soak.toml";
const DEFAULT_MINS: u64 = 10;
const LINUX_VMS: [&str; 2] = ["linux-a", "linux-b"];

/// The board disk, made fresh, and each Linux VM's last file read back.
const DISK: DiskScenario = DiskScenario {
    scenario: "soak",
    images: &[DiskImage { path: "target/soak/disk.img", size_mib: 64, content: DiskContent::Zero }],
    readback: &[
        Readback {
            image: "target/soak/disk.img",
            offset_mib: 0,
            size_mib: 32,
            file: "last",
            line: "linux-a: tessera-init: soak disk last md5 ",
        },
        Readback {
            image: "target/soak/disk.img",
            offset_mib: 32,
            size_mib: 32,
            file: "last",
            line: "linux-b: tessera-init: soak disk last md5 ",
        },
    ],
    expect_content: &[],
};

fn parse(args: &[String]) -> Result<u64, String> {
    match args {
        [] => Ok(DEFAULT_MINS),
        [flag, n] if flag == "--mins" => match n.parse() {
            Ok(m) if m > 0 => Ok(m),
            _ => Err(format!("--mins {n}: not a whole number of minutes")),
        },
        _ => Err("usage: cargo xtask soak [--mins N]".into()),
    }
}

/// The template with the run's length filled in.
fn config_text(template: &str, mins: u64) -> String {
    let secs = mins * 60;
    template
        .replace("{secs}", &secs.to_string())
        // 10 ms periods for the whole run.
        .replace("{releases}", &(secs * 100).to_string())
        .replace("{rounds}", &(mins * 2000).to_string())
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mins = parse(args)?;
    setup::run()?;
    let hyp = build::all()?;
    let dir = build::target_dir().join("soak");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let template = std::fs::read_to_string(root().join(TEMPLATE)).map_err(|e| format!("{TEMPLATE}: {e}"))?;
    let config = dir.join("soak.toml");
    std::fs::write(&config, config_text(&template, mins)).map_err(|e| format!("{}: {e}", config.display()))?;
    linux::ensure_artifacts_for(&config)?;
    disks::prepare(&DISK)?;
    let packed = pack::pack(&config, &hyp, &dir).map_err(|e| e.to_string())?;
    eprintln!("xtask: soak for {mins} min ({} pCPUs, {} VMs)", packed.pcpus, packed.vm_names.len());
    let boot = qemu::Boot {
        image: &packed.image,
        pcpus: packed.pcpus,
        memory_mib: packed.memory_mib,
        // Booting both kernels and draining the last transfers take a few
        // minutes of their own under emulation.
        deadline: Duration::from_secs(mins * 60 * 2 + 900),
        echo: true,
        icount: false,
        disks: &packed.disks,
        input: qemu::Input::None,
    };
    let console = qemu::boot(&boot)?;
    let mut problems = Vec::new();
    if let Err(e) = outcome::verdict(&packed.vm_names, &console) {
        problems.push(e);
    }
    let readback = disks::verify(&DISK, &console.lines);
    if let Err(e) = &readback {
        problems.push(e.clone());
    }
    let s = Summary::parse(&console.lines);
    problems.extend(s.problems());
    s.print(readback.is_ok(), console.elapsed);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\nxtask: "))
    }
}

/// What the console says happened.
#[derive(Default, Debug)]
struct Summary {
    disk_rounds: u64,
    disk_wrong: u64,
    /// Per (sender, stream number): bytes and MD5, as sent and as received.
    sent: BTreeMap<(String, u64), (u64, String)>,
    got: BTreeMap<(String, u64), (u64, String)>,
    done: u64,
    wrong: Vec<String>,
    chan_rounds: Vec<(String, u64)>,
    rtos_passed: bool,
    rtos_ticks: u64,
    rtos_late_ticks: Option<u64>,
    rtos_late_releases: Option<u64>,
    warnings: Vec<String>,
}

impl Summary {
    fn parse(lines: &[String]) -> Summary {
        let mut s = Summary::default();
        for l in lines {
            let l = l.trim_end();
            if l.starts_with("tessera: warning: ") || l.starts_with("tessera: error: ") {
                s.warnings.push(l.to_string());
                continue;
            }
            let Some((vm, text)) = l.split_once(": ") else { continue };
            if text.contains("WRONG") {
                s.wrong.push(l.to_string());
            }
            let peer = |vm: &str| LINUX_VMS.iter().find(|&&v| v != vm).map(|v| v.to_string());
            if let Some(rest) = text.strip_prefix("tessera-init: soak ") {
                if rest.starts_with("disk round ") && rest.ends_with(" ok") {
                    s.disk_rounds += 1;
                } else if rest.starts_with("disk round") {
                    s.disk_wrong += 1;
                } else if let Some(t) = rest.strip_prefix("net sent ") {
                    if let Some((k, v)) = stream(t) {
                        s.sent.insert((vm.to_string(), k), v);
                    }
                } else if let Some(t) = rest.strip_prefix("net got ") {
                    // What this VM got, the peer sent.
                    if let (Some((k, v)), Some(from)) = (stream(t), peer(vm)) {
                        s.got.insert((from, k), v);
                    }
                } else if rest.starts_with("done: ") {
                    s.done += 1;
                }
            } else if let Some(n) = text.strip_suffix(" rounds through the channel") {
                s.chan_rounds.push((vm.to_string(), n.parse().unwrap_or(0)));
            } else if text == "freertos demo: all checks passed; shutting the VM down" {
                s.rtos_passed = true;
            } else if let Some(rest) = text.strip_prefix("port: ").filter(|r| r.contains(" tick interrupts (")) {
                // "N tick interrupts (M ticks counted late), ..."
                let mut words = rest.split_whitespace();
                s.rtos_ticks = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                s.rtos_late_ticks = rest.split_once('(').and_then(|(_, r)| r.split_whitespace().next()?.parse().ok());
            } else if let Some(rest) = text.strip_prefix("periodic: ") {
                s.rtos_late_releases = rest
                    .strip_suffix(" late by a period or more")
                    .and_then(|r| r.rsplit_once(", "))
                    .and_then(|(_, n)| n.parse().ok());
            }
        }
        s
    }

    /// Streams whose two ends agree, and those that do not.
    fn streams(&self) -> (u64, Vec<String>) {
        let mut agree = 0;
        let mut bad = Vec::new();
        for (key, sent) in &self.sent {
            match self.got.get(key) {
                Some(got) if got == sent => agree += 1,
                Some(got) => bad.push(format!(
                    "{} stream {}: sent {} bytes md5 {}, received {} bytes md5 {}",
                    key.0, key.1, sent.0, sent.1, got.0, got.1
                )),
                None => bad.push(format!("{} stream {}: sent, never received", key.0, key.1)),
            }
        }
        for key in self.got.keys().filter(|k| !self.sent.contains_key(*k)) {
            bad.push(format!("{} stream {}: received, never reported sent", key.0, key.1));
        }
        (agree, bad)
    }

    fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = self.wrong.iter().map(|w| format!("a guest says: {w}")).collect();
        p.extend(self.streams().1);
        if self.disk_rounds == 0 {
            p.push("no disk round completed".into());
        }
        if self.sent.is_empty() {
            p.push("no TCP stream was sent".into());
        }
        if self.done != LINUX_VMS.len() as u64 {
            p.push(format!("{} of {} Linux VMs finished their soak", self.done, LINUX_VMS.len()));
        }
        match self.chan_rounds.as_slice() {
            [(_, a), (_, b)] if a == b && *a > 0 => {}
            other => p.push(format!("the channel's ends disagree or made no rounds: {other:?}")),
        }
        if !self.rtos_passed {
            p.push("the FreeRTOS demo did not pass its checks".into());
        }
        p.extend(self.warnings.iter().map(|w| format!("the hypervisor warned: {w}")));
        p
    }

    fn print(&self, readback_ok: bool, elapsed: Duration) {
        let (agree, bad) = self.streams();
        let net_bytes: u64 = self.got.values().map(|v| v.0).sum();
        let opt = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        println!("\nsoak: {} s of QEMU", elapsed.as_secs());
        let rows: [(&str, String); 9] = [
            (
                "disk rounds (1 MiB written, synced, read back)",
                format!("{} ok, {} wrong", self.disk_rounds, self.disk_wrong),
            ),
            ("disk bytes written", (self.disk_rounds << 20).to_string()),
            ("last files read back by the host", if readback_ok { "2 of 2 agree".into() } else { "DISAGREE".into() }),
            ("TCP streams (checksums compared)", format!("{agree} agree, {} do not", bad.len())),
            ("TCP bytes received", net_bytes.to_string()),
            ("channel round trips", format!("{:?}", self.chan_rounds)),
            ("FreeRTOS tick interrupts (ticks missed)", format!("{} ({})", self.rtos_ticks, opt(self.rtos_late_ticks))),
            ("FreeRTOS 10 ms releases a period late", opt(self.rtos_late_releases)),
            ("hypervisor warnings and errors", self.warnings.len().to_string()),
        ];
        for (what, value) in rows {
            println!("  {what:<48} {value}");
        }
    }
}

/// "K N bytes md5 SUM" -> (K, (N, SUM)).
fn stream(t: &str) -> Option<(u64, (u64, String))> {
    let w: Vec<&str> = t.split_whitespace().collect();
    match w.as_slice() {
        [k, n, "bytes", "md5", sum] => Some((k.parse().ok()?, (n.parse().ok()?, sum.to_string()))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn the_template_becomes_a_valid_config() {
        let template = std::fs::read_to_string(root().join(TEMPLATE)).unwrap();
        let text = config_text(&template, 3);
        assert!(!text.contains('{'), "every placeholder is filled");
        assert!(text.contains("tessera.soak_secs=180 ") && text.contains("releases=18000 "));
        let value: toml::Table = text.parse().expect("the filled template is TOML");
        assert_eq!(value["vm"].as_array().map(Vec::len), Some(5));
    }

    #[test]
    fn streams_are_matched_by_sender_and_number() {
        let s = Summary::parse(&lines(
            "linux-a: tessera-init: soak net sent 1 1048576 bytes md5 aa\n\
             linux-b: tessera-init: soak net got 1 1048576 bytes md5 aa\n\
             linux-b: tessera-init: soak net sent 1 1048576 bytes md5 bb\n\
             linux-a: tessera-init: soak net got 1 1048576 bytes md5 bc\n\
             linux-a: tessera-init: soak net sent 2 1048576 bytes md5 cc\n",
        ));
        let (agree, bad) = s.streams();
        assert_eq!(agree, 1);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].contains("linux-a stream 2: sent, never received"));
        assert!(bad[1].contains("linux-b stream 1: sent 1048576 bytes md5 bb, received 1048576 bytes md5 bc"));
    }

    #[test]
    fn a_clean_run_has_no_problems_and_a_warning_is_one() {
        let text = "linux-a: tessera-init: soak disk round 1 ok\n\
                    linux-a: tessera-init: soak net sent 1 10 bytes md5 aa\n\
                    linux-b: tessera-init: soak net got 1 10 bytes md5 aa\n\
                    linux-a: tessera-init: soak done: 1 disk rounds, 1 streams sent, 0 received\n\
                    linux-b: tessera-init: soak done: 0 disk rounds, 0 streams sent, 1 received\n\
                    ping: 5 rounds through the channel\n\
                    pong: 5 rounds through the channel\n\
                    rtos: port: 6000 tick interrupts (3 ticks counted late), yield SGIs sent 1\n\
                    rtos: port: kernel locks contended 845 times, longest wait 46796 us\n\
                    rtos: periodic: 600 releases every 10 ms: release latency min/avg/max = 1/2/3 us, jitter 2 us, 4 late by a period or more\n\
                    rtos: freertos demo: all checks passed; shutting the VM down\n";
        let s = Summary::parse(&lines(text));
        assert_eq!(s.problems(), Vec::<String>::new());
        assert_eq!((s.rtos_ticks, s.rtos_late_ticks, s.rtos_late_releases), (6000, Some(3), Some(4)));
        let s = Summary::parse(&lines(&format!("{text}tessera: warning: vm \"linux-a\": console dropped 10 bytes\n")));
        assert_eq!(s.problems().len(), 1);
    }

    #[test]
    fn arguments() {
        assert_eq!(parse(&[]), Ok(DEFAULT_MINS));
        assert_eq!(parse(&["--mins".into(), "2".into()]), Ok(2));
        assert!(parse(&["--mins".into(), "0".into()]).is_err());
        assert!(parse(&["2".into()]).is_err());
    }
}

//! Boots an image in QEMU's `virt` board with a deadline and collects the
//! console, line by line, optionally echoing it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Boot<'a> {
    pub image: &'a Path,
    pub pcpus: u32,
    pub memory_mib: u32,
    pub deadline: Duration,
    pub echo: bool,
    /// `-icount shift=0`: the virtual clock advances one ns per instruction.
    pub icount: bool,
}

pub struct Console {
    pub lines: Vec<String>,
    /// QEMU's exit status; None if it was killed at the deadline.
    pub status: Option<i32>,
    pub timed_out: bool,
    pub elapsed: Duration,
}

/// The QEMU command line (also printed by `cargo xtask run`).
pub fn command(b: &Boot) -> Command {
    let mut c = Command::new("qemu-system-arm");
    c.args(["-M", "virt,virtualization=on,highmem=off", "-cpu", "cortex-a15"])
        .args(["-smp", &b.pcpus.to_string(), "-m", &b.memory_mib.to_string()])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio", "-nic", "none", "-no-reboot"])
        // A hypervisor panic ends QEMU with a failure status.
        .args(["-device", "pvpanic-pci", "-action", "panic=exit-failure"])
        .arg("-kernel")
        .arg(b.image);
    if b.icount {
        c.args(["-icount", "shift=0"]);
    }
    c
}

pub fn boot(b: &Boot) -> Result<Console, String> {
    let start = Instant::now();
    let mut child = command(b)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-arm: {e} (run `cargo xtask setup`)"))?;
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let tx2 = tx.clone();
    let readers = [
        std::thread::spawn(move || {
            for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                let _ = tx.send(String::from_utf8_lossy(&line).trim_end_matches('\r').to_string());
            }
        }),
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("qemu: {line}"));
            }
        }),
    ];
    let mut lines = Vec::new();
    let mut timed_out = false;
    loop {
        let left = b.deadline.saturating_sub(start.elapsed());
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(l) => {
                if b.echo {
                    println!("{l}");
                }
                lines.push(l);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if start.elapsed() >= b.deadline {
                    timed_out = true;
                    let _ = child.kill();
                    break;
                }
            }
        }
    }
    let status = child.wait().map_err(|e| format!("waiting for QEMU: {e}"))?;
    for r in readers {
        let _ = r.join();
    }
    // Anything still queued after the kill.
    while let Ok(l) = rx.try_recv() {
        if b.echo {
            println!("{l}");
        }
        lines.push(l);
    }
    Ok(Console { lines, status: if timed_out { None } else { status.code() }, timed_out, elapsed: start.elapsed() })
}

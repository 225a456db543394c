//! Boots an image in QEMU's `virt` board with a deadline and collects the
//! console, line by line, optionally echoing it.

use std::io::{BufRead, BufReader, Read, Write};
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
    /// Where the guest consoles' input comes from.
    pub input: Input<'a>,
    /// `-icount shift=0`: the virtual clock advances one ns per instruction.
    pub icount: bool,
    /// The board's disks, each a virtio-blk whose serial is its name.
    pub disks: &'a [crate::config::DiskConfig],
}

/// The console's input.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    /// Nothing is typed.
    None,
    /// This process's standard input (`run`).
    Inherit,
    /// Scripted keys: each `(after, keys)` types `keys` once console output
    /// (a whole line, or the line being written, such as a prompt) contains
    /// `after`, in order.
    Script(&'a [(&'a str, &'a str)]),
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
        // The board's entropy source, which VMs with a virtio-rng share.
        .args(["-device", "virtio-rng-device"]);
    for d in b.disks {
        // QEMU option values escape a comma by doubling it.
        let file = d.image.display().to_string().replace(',', ",,");
        c.args(["-drive", &format!("if=none,id=disk-{},format=raw,file={file}", d.name)]);
        c.args(["-device", &format!("virtio-blk-device,drive=disk-{0},serial={0}", d.name)]);
    }
    c.arg("-kernel").arg(b.image);
    if b.icount {
        c.args(["-icount", "shift=0,sleep=off"]); // idle time warps to the next event: no host time counts
    }
    c
}

/// QEMU booting `target/linux/`'s kernel and initramfs itself, with no
/// hypervisor, for comparisons and for the paravirt kernel's native check:
/// `smp` cores, `memory_mib`, the kernel command line `console=ttyAMA0`
/// then `append`. With `virtualization` the board is the one Tessera runs
/// on (the kernel then enters in HYP mode and QEMU answers PSCI over SMC);
/// without, QEMU answers PSCI and the SMCCC queries over HVC, as a
/// hypervisor would. Callers add the devices (or `-nic none`).
pub fn native_linux(virtualization: bool, smp: u32, memory_mib: u32, append: &str) -> Command {
    native_kernel("zImage", virtualization, smp, memory_mib, append)
}

/// The same with another kernel of `target/linux/` (`debian-zImage`: the
/// distribution's stock kernel).
pub fn native_kernel(kernel: &str, virtualization: bool, smp: u32, memory_mib: u32, append: &str) -> Command {
    let dir = crate::linux::out_dir();
    let machine = if virtualization { "virt,virtualization=on,highmem=off" } else { "virt,highmem=off" };
    let mut c = Command::new("qemu-system-arm");
    c.args(["-M", machine, "-cpu", "cortex-a15", "-smp", &smp.to_string(), "-m", &memory_mib.to_string()])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(dir.join(kernel))
        .arg("-initrd")
        .arg(dir.join("initramfs.cpio.gz"))
        .args(["-append", &format!("console=ttyAMA0 {append}")]);
    c
}

/// Creates the disk images the configuration asked for that do not exist
/// yet: zero-filled (sparse) files of their size.
pub fn create_disks(disks: &[crate::config::DiskConfig]) -> Result<(), String> {
    for d in disks.iter().filter(|d| d.create && !d.image.exists()) {
        if let Some(dir) = d.image.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        crate::disks::write_sparse(&d.image, d.size).map_err(|e| format!("cannot create disk image {e}"))?;
        eprintln!("xtask: created disk image {} ({} MiB)", d.image.display(), d.size >> 20);
    }
    Ok(())
}

pub fn boot(b: &Boot) -> Result<Console, String> {
    create_disks(b.disks)?;
    collect(command(b), b.deadline, b.echo, b.input)
}

/// Runs a QEMU command line to its end (or the deadline) and returns its
/// console, split into lines.
pub fn collect(mut cmd: Command, deadline: Duration, echo: bool, input: Input) -> Result<Console, String> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(match input {
            Input::None => Stdio::null(),
            Input::Inherit => Stdio::inherit(),
            Input::Script(_) => Stdio::piped(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-arm: {e} (run `cargo xtask setup`)"))?;
    // Console bytes arrive as they come (a shell prompt has no newline):
    // echoed at once, and split into lines for the checks.
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let tx2 = tx.clone();
    let readers = [
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        }),
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("qemu: {line}\n").into_bytes());
            }
        }),
    ];
    let mut lines = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut timed_out = false;
    let mut stdin = child.stdin.take();
    let mut script = match input {
        Input::Script(s) => s,
        _ => &[],
    };
    // Output already searched for the next trigger: a whole line is
    // searched once, the line being written each time it grows.
    let mut searched = 0;
    let mut take = |chunk: &[u8], lines: &mut Vec<String>| {
        if echo {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(chunk);
            let _ = o.flush();
        }
        for &c in chunk {
            if c == b'\n' {
                lines.push(String::from_utf8_lossy(&partial).trim_end_matches('\r').to_string());
                partial.clear();
            } else {
                partial.push(c);
            }
        }
        while let Some(&(after, keys)) = script.first() {
            let seen = lines[searched..].iter().any(|l| l.contains(after))
                || String::from_utf8_lossy(&partial).contains(after);
            if !seen {
                searched = lines.len();
                break;
            }
            searched = lines.len();
            if let Some(w) = stdin.as_mut() {
                let _ = w.write_all(keys.as_bytes()).and_then(|_| w.flush());
            }
            script = &script[1..];
        }
    };
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(chunk) => take(&chunk, &mut lines),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if start.elapsed() >= deadline {
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
    while let Ok(chunk) = rx.try_recv() {
        take(&chunk, &mut lines);
    }
    if !partial.is_empty() {
        lines.push(String::from_utf8_lossy(&partial).to_string());
    }
    Ok(Console { lines, status: if timed_out { None } else { status.code() }, timed_out, elapsed: start.elapsed() })
}

/// Runs `cmd` (a QEMU command line) and returns how long it took until a
/// console line contained `marker`; the process is then left to finish
/// (or killed at the deadline). For wall-clock comparisons.
pub fn time_to_marker(cmd: Command, marker: &str, deadline: Duration) -> Result<Duration, String> {
    times_to_markers(cmd, &[marker], deadline).map(|t| t[0])
}

/// When each of `markers` first appeared on the console (in that order),
/// from QEMU's start; waits for the system to end (at most 30 s after the
/// last marker), then kills it.
pub fn times_to_markers(mut cmd: Command, markers: &[&str], deadline: Duration) -> Result<Vec<Duration>, String> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-arm: {e}"))?;
    let out = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut found = Vec::new();
    while found.len() < markers.len() {
        let left = deadline.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(markers[found.len()]) => found.push(start.elapsed()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end && child.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(rx);
    let _ = reader.join();
    match markers.get(found.len()) {
        None => Ok(found),
        Some(m) => Err(format!("no line containing {m:?} within {} s", deadline.as_secs())),
    }
}

//! The system configuration: one TOML file, read strictly, checked, and
//! turned into plain data for the packer.
//!
//! ```toml
//! [system]
//! pcpus = 2            # physical cores (QEMU -smp), 1..=8
//! memory_mib = 1024    # physical RAM (QEMU -m), 64..=3072
//! power = "balanced"   # optional: performance | balanced | powersave
//! log = "info"         # optional: warn | info | debug (the hypervisor's log)
//!
//! [[vm]]
//! name = "hello"       # 1..=31 of [A-Za-z0-9_-], unique
//! kernel = "path"      # ELF, raw binary or zImage; relative to this file
//! initrd = "path"      # optional
//! cmdline = "..."      # optional, at most 1024 bytes
//! vcpus = 1            # 1..=64
//! memory_mib = 16      # a multiple of 2, at least 2
//! pcpus = [0]          # optional pCPU affinity; absent = every pCPU
//!
//! [[vm.device]]        # virtio devices, in virtio-mmio slots 0, 1, ...
//! type = "rng"         # rng | console | block | net
//! # block: disk = "name", offset_mib = 0, size_mib = 32, read_only = false
//! # net:   switch = "name", mac = "02:00:00:00:00:01" (optional)
//!
//! [[disk]]             # a board disk that block devices take ranges of
//! name = "disk0"
//! image = "path"       # raw image, relative to this file
//! size_mib = 64        # optional: create a zeroed image if there is none
//!
//! [[channel]]          # inter-VM shared memory with a doorbell
//! name = "ring"
//! size_kib = 64        # 4 to 16384, a multiple of 4
//! vms = ["a", "b"]     # the VMs that map it
//! ```
//!
//! Parsing happens twice on purpose: first into toml's spanned tree, which
//! gives line and column for syntax errors and lets any later error be mapped
//! back to its key path (`vm[1].vcpus`); then with serde into structs that
//! refuse unknown keys (`deny_unknown_fields`). The semantic checks that follow
//! only need the structs. Every refusal is one [`ConfigError`], which names
//! the file, the key and the reason on one line.
//!
//! What depends on the images (kernel layout, payload size) is checked again
//! by the packer (`pack.rs`), which has the bytes; `load` checks the lower
//! bound it can know without them.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Limits of the configuration language (the payload format has its own,
/// equal or wider: `tessera_payload::MAX_VMS`, `MAX_VCPUS`).
pub const MAX_PCPUS: u32 = 8;
pub const MIN_SYSTEM_MIB: u32 = 64;
/// 0x4000_0000 + 3 GiB is the top of the 32-bit physical address space.
pub const MAX_SYSTEM_MIB: u32 = 3072;
pub const MAX_VCPUS: u32 = tessera_payload::MAX_VCPUS;
pub const MAX_VMS: usize = tessera_payload::MAX_VMS;
/// The payload stores the name NUL-terminated in 32 bytes.
pub const MAX_NAME_LEN: usize = tessera_payload::NAME_LEN - 1;
pub const MAX_CMDLINE_LEN: usize = 1024;
/// VM RAM is mapped with 2 MiB stage-2 blocks.
pub const VM_MEMORY_GRANULE_MIB: u32 = 2;

/// The hypervisor's share of physical RAM, in MiB (see [`hypervisor_reserve_mib`]).
pub const RESERVE_LOW_MIB: u32 = 16;
pub const RESERVE_HEAP_MIB: u32 = 8;

/// Physical RAM the hypervisor keeps for itself: the first 16 MiB (QEMU's DTB
/// at the RAM base and the hypervisor image), the payload rounded up to 2 MiB
/// (it stays where the loader put it, at `pack::PAYLOAD_BASE`), and 8 MiB for
/// stage-2 page tables and the heap.
pub fn hypervisor_reserve_mib(payload_bytes: u64) -> u64 {
    let payload_mib = payload_bytes.div_ceil(2 << 20) * 2;
    RESERVE_LOW_MIB as u64 + payload_mib.max(2) + RESERVE_HEAP_MIB as u64
}

/// A checked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The configuration file as the user named it (for messages).
    pub file: PathBuf,
    pub system: SystemConfig,
    /// In file order; never empty.
    pub vms: Vec<VmConfig>,
    /// `[[disk]]`, in file order (a block device's `disk` is an index here).
    pub disks: Vec<DiskConfig>,
    /// `[[channel]]`, in file order.
    pub channels: Vec<ChannelConfig>,
    /// Virtual switch names, in order of first use (a net device's `switch`
    /// is an index here).
    pub switches: Vec<String>,
}

/// A board disk: QEMU attaches `image` as a virtio-blk whose serial is `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    pub name: String,
    pub image: PathBuf,
    /// Bytes. With `create`, the size to create it with; else the file's.
    pub size: u64,
    /// The image does not exist yet: `cargo xtask` creates it zeroed.
    pub create: bool,
}

/// A shared-memory channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    pub name: String,
    pub size: u32,
    /// Indexes of member VMs.
    pub vms: Vec<usize>,
}

/// A VM's virtio device in virtio-mmio slot `slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    pub slot: u32,
    pub kind: DeviceKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Rng,
    Console,
    Block { disk: usize, offset: u64, size: u64, read_only: bool },
    Net { switch: usize, mac: [u8; 6] },
}

/// Limits of the devices sections.
pub const MAX_DEVICES: usize = tessera_payload::MAX_DEVICES;
pub const MAX_DISKS: usize = tessera_payload::MAX_DISKS;
pub const MAX_CHANNELS: usize = tessera_payload::MAX_CHANNELS;
/// A channel's memory fills at most its slot of the guest map (channel k
/// lies at `guest_map::channel(k)` in every member VM).
pub const MAX_CHANNEL_KIB: u32 = tessera_payload::guest_map::CHANNEL_STRIDE >> 10;

/// The board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemConfig {
    pub pcpus: u32,
    pub memory_mib: u32,
    pub power: tessera_payload::PowerPolicy,
    pub log: tessera_payload::LogLevel,
}

/// One VM, with its file paths made absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub name: String,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Empty when the file has none.
    pub cmdline: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// The pCPUs this VM may run on, as written; `None` = all of them.
    pub pcpus: Option<Vec<u32>>,
    /// `[[vm.device]]`, in slot order.
    pub devices: Vec<DeviceConfig>,
    /// Channels this VM maps (indexes into `Config::channels`).
    pub channels: Vec<usize>,
    /// `on_fault = "abort"`: accesses the hypervisor cannot serve are
    /// given back to the guest as aborts; default "stop": the VM stops.
    pub fault_abort: bool,
}

impl VmConfig {
    /// Bit n set: the VM may run on pCPU n.
    pub fn affinity(&self, system: &SystemConfig) -> u32 {
        match &self.pcpus {
            Some(list) => list.iter().fold(0, |m, &p| m | (1 << p)),
            None => (((1u64 << system.pcpus) - 1) & 0xffff_ffff) as u32,
        }
    }
}

/// Where in a file an error is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// The file as a whole (cannot be read, is not the kind expected).
    File,
    /// A TOML key path: `system.pcpus`, `vm[1].memory_mib`.
    Key(String),
    /// A place in the text (1-based), for syntax errors.
    Line { line: usize, column: usize },
}

/// A refused configuration (or a file the packer needs and cannot use).
/// Displays as one line: `error: <file>: <key>: <reason>`, or
/// `error: <file>:<line>:<column>: <reason>` for syntax errors, or
/// `error: <file>: <reason>` when it is about the whole file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as the user named it.
    pub file: PathBuf,
    pub at: Location,
    pub reason: String,
}

impl ConfigError {
    pub fn key(file: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), at: Location::Key(key.into()), reason: reason.into() }
    }

    pub fn file(file: &Path, reason: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), at: Location::File, reason: reason.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match &self.at {
            Location::File => write!(f, "error: {file}: ")?,
            Location::Key(key) => write!(f, "error: {file}: {key}: ")?,
            Location::Line { line, column } => write!(f, "error: {file}:{line}:{column}: ")?,
        }
        // One line, whatever the reason's source wrote.
        let mut first = true;
        for part in self.reason.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !first {
                f.write_str("; ")?;
            }
            f.write_str(part)?;
            first = false;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    system: RawSystem,
    #[serde(default)]
    vm: Vec<RawVm>,
    #[serde(default)]
    disk: Vec<RawDisk>,
    #[serde(default)]
    channel: Vec<RawChannel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    name: String,
    image: PathBuf,
    size_mib: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    name: String,
    size_kib: u32,
    vms: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSystem {
    pcpus: u32,
    memory_mib: u32,
    #[serde(default)]
    power: Option<String>,
    #[serde(default)]
    log: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: String,
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    cmdline: Option<String>,
    vcpus: u32,
    memory_mib: u32,
    pcpus: Option<Vec<u32>>,
    on_fault: Option<String>,
    #[serde(default)]
    device: Vec<RawDevice>,
}

/// `[[vm.device]]`: a virtual device of the VM.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    #[serde(rename = "type")]
    kind: String,
    disk: Option<String>,
    offset_mib: Option<u32>,
    size_mib: Option<u32>,
    read_only: Option<bool>,
    switch: Option<String>,
    mac: Option<String>,
}

impl RawDevice {
    /// The keys set, for "does not apply" checks.
    fn keys(&self) -> Vec<&'static str> {
        let mut k = Vec::new();
        let set = [
            ("disk", self.disk.is_some()),
            ("offset_mib", self.offset_mib.is_some()),
            ("size_mib", self.size_mib.is_some()),
            ("read_only", self.read_only.is_some()),
            ("switch", self.switch.is_some()),
            ("mac", self.mac.is_some()),
        ];
        for (name, on) in set {
            if on {
                k.push(name);
            }
        }
        k
    }
}

/// "52:54:00:12:34:56" -> bytes.
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// Reads, parses and checks a configuration file. Paths inside it are taken
/// relative to the file's folder and made absolute; kernel and initrd files
/// must exist and be readable.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::file(path, format!("cannot read the configuration: {e}")))?;
    parse(path, &text)
}

/// [`load`] on text already read; `path` names the file in messages and is
/// the base of relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let tree = DeTable::parse(text).map_err(|e| syntax_error(path, text, &e))?;
    let raw: RawConfig = toml::from_str(text).map_err(|e| schema_error(path, text, tree.get_ref(), &e))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    check(path, &dir, raw)
}

fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let reason = format!("TOML syntax error: {}", e.message());
    match e.span() {
        Some(span) => {
            let (line, column) = line_col(text, span.start);
            ConfigError { file: path.to_path_buf(), at: Location::Line { line, column }, reason }
        }
        None => ConfigError::file(path, reason),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Turns serde's message (unknown field, missing field, wrong type) into one
/// naming the key path, found from the error's span in the spanned tree.
fn schema_error(path: &Path, text: &str, tree: &DeTable<'_>, e: &toml::de::Error) -> ConfigError {
    let msg = e.message().trim();
    let span = e.span().unwrap_or(0..0);
    let (line, column) = line_col(text, span.start);
    let at = find_key(tree, &span, "").unwrap_or_default();
    let vm = vm_name_of(tree, &at).map(|n| format!("VM \"{n}\", ")).unwrap_or_default();
    let join = |parent: &str, key: &str| {
        if parent.is_empty() {
            key.to_string()
        } else {
            format!("{parent}.{key}")
        }
    };
    let table = |parent: &str| {
        if parent.is_empty() {
            "at the top level".to_string()
        } else {
            format!("in table {parent}")
        }
    };

    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected.trim_start_matches(", ").replace('`', "");
        // The span is the unknown key itself, so `at` already ends with it.
        let parent = at.strip_suffix(name).map(|p| p.trim_end_matches('.')).unwrap_or(&at).to_string();
        let reason = format!("unknown key \"{name}\" {} ({vm}line {line}:{column}); {expected}", table(&parent));
        return ConfigError::key(path, join(&parent, name), reason);
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let name = rest.trim_end_matches('`');
        // The span is the table that lacks the key (its header).
        let place =
            if at.is_empty() { "at the top level".to_string() } else { format!("in table {at} ({vm}line {line})") };
        return ConfigError::key(path, join(&at, name), format!("missing required key \"{name}\" {place}"));
    }
    let mut reason = msg.replace("expected u32", "expected an integer from 0 to 4294967295");
    if at == "vm" && msg.contains("expected a sequence") {
        reason.push_str("; write each VM as a [[vm]] table");
    }
    ConfigError::key(path, at, format!("{reason} ({vm}line {line}:{column})"))
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// The deepest key path whose key or value covers `span`. Table values span
/// only their header, so every table is searched, not just covering ones.
fn find_key(table: &DeTable<'_>, span: &Range<usize>, prefix: &str) -> Option<String> {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        if let Some(found) = find_in_value(value, span, &path) {
            return Some(found);
        }
        if contains(&key.span(), span) || contains(&value.span(), span) {
            return Some(path);
        }
    }
    None
}

fn find_in_value(value: &Spanned<DeValue<'_>>, span: &Range<usize>, path: &str) -> Option<String> {
    match value.get_ref() {
        DeValue::Table(t) => find_key(t, span, path),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let p = format!("{path}[{i}]");
            find_in_value(item, span, &p).or_else(|| contains(&item.span(), span).then_some(p))
        }),
        _ => None,
    }
}

/// For a key path under `vm[i]`, the name that VM gives itself, if any.
fn vm_name_of(tree: &DeTable<'_>, path: &str) -> Option<String> {
    let index: usize = path.strip_prefix("vm[")?.split(']').next()?.parse().ok()?;
    let vms = tree.get("vm")?.get_ref().as_array()?;
    let vm = vms.get(index)?.get_ref().as_table()?;
    Some(vm.get("name")?.get_ref().as_str()?.to_string())
}

// ---------------------------------------------------------------------------
// Semantic checks, in file order; the first failure is reported.

fn check(path: &Path, dir: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
    let err = |key: String, reason: String| Err(ConfigError::key(path, key, reason));
    let RawSystem { pcpus, memory_mib, power, log } = raw.system;
    if !(1..=MAX_PCPUS).contains(&pcpus) {
        return err("system.pcpus".into(), format!("must be 1 to {MAX_PCPUS} physical CPUs (got {pcpus})"));
    }
    if !(MIN_SYSTEM_MIB..=MAX_SYSTEM_MIB).contains(&memory_mib) {
        return err(
            "system.memory_mib".into(),
            format!("must be {MIN_SYSTEM_MIB} to {MAX_SYSTEM_MIB} MiB of physical RAM (got {memory_mib})"),
        );
    }
    use tessera_payload::{LogLevel, PowerPolicy};
    let power = one_of(
        power.as_deref(),
        "power policy",
        &[
            ("performance", PowerPolicy::Performance),
            ("balanced", PowerPolicy::Balanced),
            ("powersave", PowerPolicy::Powersave),
        ],
    );
    let power = match power {
        Ok(p) => p,
        Err(e) => return err("system.power".into(), e),
    };
    let log = one_of(
        log.as_deref(),
        "log level",
        &[("warn", LogLevel::Warn), ("info", LogLevel::Info), ("debug", LogLevel::Debug)],
    );
    let log = match log {
        Ok(l) => l,
        Err(e) => return err("system.log".into(), e),
    };
    let system = SystemConfig { pcpus, memory_mib, power, log };
    if raw.vm.is_empty() {
        return err("vm".into(), "no VM defined: add at least one [[vm]] table".into());
    }
    if raw.vm.len() > MAX_VMS {
        return err("vm".into(), format!("{} VMs defined, at most {MAX_VMS} are supported", raw.vm.len()));
    }

    let disks = check_disks(path, dir, &raw.disk)?;
    let mut switches: Vec<String> = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut vms = Vec::with_capacity(raw.vm.len());
    for (i, vm) in raw.vm.into_iter().enumerate() {
        let key = |k: &str| format!("vm[{i}].{k}");
        let name = vm.name;
        if !valid_name(&name, MAX_NAME_LEN) {
            return err(
                key("name"),
                format!(
                    "{name:?} is not a valid VM name: use 1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9, _ and -"
                ),
            );
        }
        if let Some(first) = names.insert(name.clone(), i) {
            return err(key("name"), format!("duplicate VM name \"{name}\" (vm[{first}] has it too)"));
        }
        let vm_ = format!("VM \"{name}\"");
        if !(1..=MAX_VCPUS).contains(&vm.vcpus) {
            return err(key("vcpus"), format!("{vm_} must have 1 to {MAX_VCPUS} vCPUs (got {})", vm.vcpus));
        }
        let mib = vm.memory_mib;
        if mib == 0 || mib % VM_MEMORY_GRANULE_MIB != 0 || mib > MAX_SYSTEM_MIB {
            return err(
                key("memory_mib"),
                format!(
                    "{vm_} memory must be a multiple of {VM_MEMORY_GRANULE_MIB} MiB, from 2 to {MAX_SYSTEM_MIB} (got {mib})"
                ),
            );
        }
        if let Some(list) = &vm.pcpus {
            if list.is_empty() {
                return err(
                    key("pcpus"),
                    format!("{vm_} has an empty pCPU list: name at least one pCPU, or leave the key out to allow all"),
                );
            }
            let mut seen = 0u64;
            for &p in list {
                if p >= pcpus {
                    return err(
                        key("pcpus"),
                        format!(
                            "{vm_} is pinned to pCPU {p}, which does not exist: the system has {pcpus} pCPU{} (0 to {})",
                            if pcpus == 1 { "" } else { "s" },
                            pcpus - 1
                        ),
                    );
                }
                if seen & (1 << p) != 0 {
                    return err(key("pcpus"), format!("{vm_} lists pCPU {p} more than once"));
                }
                seen |= 1 << p;
            }
        }
        let cmdline = vm.cmdline.unwrap_or_default();
        if cmdline.len() > MAX_CMDLINE_LEN {
            return err(
                key("cmdline"),
                format!("{vm_} command line is {} bytes, at most {MAX_CMDLINE_LEN} are allowed", cmdline.len()),
            );
        }
        if cmdline.contains('\0') {
            return err(key("cmdline"), format!("{vm_} command line contains a NUL character"));
        }
        let kernel = readable_file(dir, &vm.kernel)
            .map_err(|e| ConfigError::key(path, key("kernel"), format!("{vm_}: cannot use kernel file {e}")))?;
        let initrd = match &vm.initrd {
            Some(p) => Some(
                readable_file(dir, p)
                    .map_err(|e| ConfigError::key(path, key("initrd"), format!("{vm_}: cannot use initrd file {e}")))?,
            ),
            None => None,
        };
        if vm.device.len() > MAX_DEVICES {
            return err(
                key("device"),
                format!("{vm_} has {} devices, at most {MAX_DEVICES} fit its virtio-mmio slots", vm.device.len()),
            );
        }
        let fault_abort = match vm.on_fault.as_deref() {
            None | Some("stop") => false,
            Some("abort") => true,
            Some(other) => {
                return err(
                    key("on_fault"),
                    format!("{vm_}: on_fault is \"{other}\": use \"stop\" (the default) or \"abort\""),
                )
            }
        };
        let mut devices = Vec::new();
        for (d, dev) in vm.device.iter().enumerate() {
            let kind = check_device(path, i, d, &vm_, dev, &disks, &mut switches)?;
            devices.push(DeviceConfig { slot: d as u32, kind });
        }
        vms.push(VmConfig {
            name,
            kernel,
            initrd,
            cmdline,
            vcpus: vm.vcpus,
            memory_mib: mib,
            pcpus: vm.pcpus,
            devices,
            channels: Vec::new(),
            fault_abort,
        });
    }
    check_disk_sharing(path, &vms, &disks)?;
    check_run_queues(path, &system, &vms)?;
    check_heap(path, &vms)?;
    check_macs(path, &vms)?;
    let channels = check_channels(path, &raw.channel, &mut vms, &names)?;

    let config = Config { file: path.to_path_buf(), system, vms, disks, channels, switches };
    // The payload is at least one 2 MiB block; the packer checks again with
    // its real size.
    check_memory_fit(&config, 0)?;
    Ok(config)
}

/// A name of VMs, disks, switches and channels: 1 to `max` characters of
/// A-Z, a-z, 0-9, _ and -.
fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty() && name.len() <= max && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

fn check_disks(path: &Path, dir: &Path, raw: &[RawDisk]) -> Result<Vec<DiskConfig>, ConfigError> {
    if raw.len() > MAX_DISKS {
        return Err(ConfigError::key(
            path,
            "disk",
            format!("{} disks defined, at most {MAX_DISKS} are supported", raw.len()),
        ));
    }
    let mut out: Vec<DiskConfig> = Vec::new();
    for (k, d) in raw.iter().enumerate() {
        let key = |f: &str| format!("disk[{k}].{f}");
        // The virtio-blk serial holds 20 bytes.
        if !valid_name(&d.name, 20) {
            return Err(ConfigError::key(
                path,
                key("name"),
                format!("{:?} is not a valid disk name: use 1 to 20 characters of A-Z, a-z, 0-9, _ and -", d.name),
            ));
        }
        if let Some(j) = out.iter().position(|o| o.name == d.name) {
            return Err(ConfigError::key(
                path,
                key("name"),
                format!("duplicate disk name \"{}\" (disk[{j}] has it too)", d.name),
            ));
        }
        let joined = dir.join(&d.image);
        let image = std::path::absolute(&joined).unwrap_or(joined);
        let who = format!("disk \"{}\"", d.name);
        let (size, create) = match (std::fs::metadata(&image), d.size_mib) {
            (Ok(m), want) => {
                if !m.is_file() {
                    return Err(ConfigError::key(
                        path,
                        key("image"),
                        format!("{who}: {}: not a regular file", image.display()),
                    ));
                }
                if m.len() == 0 || m.len() % tessera_payload::SECTOR != 0 {
                    return Err(ConfigError::key(
                        path,
                        key("image"),
                        format!("{who}: {}: {} bytes, not a non-zero multiple of 512", image.display(), m.len()),
                    ));
                }
                if let Some(mib) = want.filter(|&mib| mib as u64 * MIB != m.len()) {
                    return Err(ConfigError::key(
                        path,
                        key("size_mib"),
                        format!("{who}: the image {} has {} bytes, not {mib} MiB", image.display(), m.len()),
                    ));
                }
                (m.len(), false)
            }
            (Err(_), Some(mib)) if (1..=65536).contains(&mib) => (mib as u64 * MIB, true),
            (Err(_), Some(mib)) => {
                return Err(ConfigError::key(
                    path,
                    key("size_mib"),
                    format!("{who}: must be 1 to 65536 MiB (got {mib})"),
                ));
            }
            (Err(e), None) => {
                return Err(ConfigError::key(
                    path,
                    key("image"),
                    format!("{who}: cannot use image file {}: {e} (give size_mib to create it)", image.display()),
                ));
            }
        };
        out.push(DiskConfig { name: d.name.clone(), image, size, create });
    }
    Ok(out)
}

const MIB: u64 = 1 << 20;

fn check_device(
    path: &Path,
    vm: usize,
    d: usize,
    who: &str,
    dev: &RawDevice,
    disks: &[DiskConfig],
    switches: &mut Vec<String>,
) -> Result<DeviceKind, ConfigError> {
    let key = |f: &str| format!("vm[{vm}].device[{d}].{f}");
    let err = |f: &str, reason: String| Err(ConfigError::key(path, key(f), reason));
    let allowed: &[&str] = match dev.kind.as_str() {
        "rng" | "console" => &[],
        "block" => &["disk", "offset_mib", "size_mib", "read_only"],
        "net" => &["switch", "mac"],
        other => {
            return err(
                "type",
                format!("{who}: unknown device type {other:?}: use \"rng\", \"console\", \"block\" or \"net\""),
            );
        }
    };
    if let Some(k) = dev.keys().into_iter().find(|k| !allowed.contains(k)) {
        return err(k, format!("{who}: key \"{k}\" does not apply to a {} device", dev.kind));
    }
    Ok(match dev.kind.as_str() {
        "rng" => DeviceKind::Rng,
        "console" => DeviceKind::Console,
        "block" => {
            let Some(name) = &dev.disk else {
                return err("disk", format!("{who}: a block device needs disk = \"<name of a [[disk]]>\""));
            };
            let Some(disk) = disks.iter().position(|x| &x.name == name) else {
                let known: Vec<&str> = disks.iter().map(|x| x.name.as_str()).collect();
                return err(
                    "disk",
                    format!(
                        "{who}: no [[disk]] is named {name:?} (defined: {})",
                        if known.is_empty() { "none".into() } else { known.join(", ") }
                    ),
                );
            };
            let offset = dev.offset_mib.unwrap_or(0) as u64 * MIB;
            let avail = disks[disk].size.saturating_sub(offset);
            let size = match dev.size_mib {
                Some(0) => return err("size_mib", format!("{who}: a block device needs at least 1 MiB")),
                Some(mib) => mib as u64 * MIB,
                None => avail,
            };
            if offset >= disks[disk].size || size > avail {
                return err(
                    if dev.size_mib.is_some() { "size_mib" } else { "offset_mib" },
                    format!(
                        "{who}: the range {} MiB + {} MiB does not fit in disk \"{name}\" ({} bytes)",
                        offset / MIB,
                        size / MIB,
                        disks[disk].size
                    ),
                );
            }
            DeviceKind::Block { disk, offset, size, read_only: dev.read_only.unwrap_or(false) }
        }
        _ => {
            let Some(name) = &dev.switch else {
                return err("switch", format!("{who}: a net device needs switch = \"<name>\""));
            };
            if !valid_name(name, MAX_NAME_LEN) {
                return err("switch", format!("{who}: {name:?} is not a valid switch name"));
            }
            let switch = match switches.iter().position(|s| s == name) {
                Some(s) => s,
                None if switches.len() < tessera_payload::MAX_SWITCHES as usize => {
                    switches.push(name.clone());
                    switches.len() - 1
                }
                None => return err("switch", format!("{who}: more than {} switches", tessera_payload::MAX_SWITCHES)),
            };
            let mac = match &dev.mac {
                Some(m) => {
                    let Some(mac) = parse_mac(m) else {
                        return err("mac", format!("{who}: {m:?} is not a MAC address like \"02:00:00:00:00:01\""));
                    };
                    if mac[0] & 1 != 0 || mac == [0; 6] {
                        return err("mac", format!("{who}: {m} is a group (multicast) or zero address, not a port's"));
                    }
                    mac
                }
                // Locally administered (bit 1), unicast: 02:54:53 ("TS"), VM, slot.
                None => [0x02, 0x54, 0x53, 0, vm as u8 + 1, d as u8],
            };
            DeviceKind::Net { switch, mac }
        }
    })
}

/// Places every vCPU as the hypervisor will (`tessera_payload::place`, in
/// configuration order) and refuses a configuration that puts more vCPUs
/// on one pCPU than its run queue holds: the hypervisor would refuse it at
/// boot.
fn check_run_queues(path: &Path, system: &SystemConfig, vms: &[VmConfig]) -> Result<(), ConfigError> {
    let mut load = vec![0u32; system.pcpus as usize];
    for (i, vm) in vms.iter().enumerate() {
        for _ in 0..vm.vcpus {
            // The affinity was checked to name pCPUs of the board.
            let Some(p) = tessera_payload::place(&load, vm.affinity(system)) else { break };
            load[p] += 1;
            if load[p] > tessera_payload::MAX_VCPUS_PER_PCPU {
                return Err(ConfigError::key(
                    path,
                    format!("vm[{i}].vcpus"),
                    format!(
                        "VM \"{}\": its vCPUs would put more than {} vCPUs on pCPU {p}, the most one pCPU runs: give the VMs fewer vCPUs or more pCPUs to spread over",
                        vm.name,
                        tessera_payload::MAX_VCPUS_PER_PCPU
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a configuration whose VMs, vCPUs and devices would not fit in
/// the hypervisor's heap (`tessera_payload::heap_budget`): the hypervisor
/// would run out of it while it builds them.
fn check_heap(path: &Path, vms: &[VmConfig]) -> Result<(), ConfigError> {
    let vcpus = vms.iter().map(|v| v.vcpus as usize).sum();
    let devices = vms.iter().flat_map(|v| &v.devices);
    let blocks = devices.clone().filter(|d| matches!(d.kind, DeviceKind::Block { .. })).count();
    let others = devices.count() - blocks;
    let need = tessera_payload::heap_budget(vms.len(), vcpus, blocks, others);
    if need <= tessera_payload::HEAP_SIZE {
        return Ok(());
    }
    Err(ConfigError::key(
        path,
        "vm",
        format!(
            "{} VMs with {vcpus} vCPUs, {blocks} block and {others} other devices need {} KiB of the hypervisor's \
             {} KiB heap: use fewer VMs, vCPUs or devices",
            vms.len(),
            need >> 10,
            tessera_payload::HEAP_SIZE >> 10
        ),
    ))
}

/// A writable range may not overlap any other VM's range on the same
/// disk; read-only ranges may overlap each other (that is sharing).
fn check_disk_sharing(path: &Path, vms: &[VmConfig], disks: &[DiskConfig]) -> Result<(), ConfigError> {
    let mut ranges = Vec::new();
    for (i, vm) in vms.iter().enumerate() {
        for dev in &vm.devices {
            if let DeviceKind::Block { disk, offset, size, read_only } = dev.kind {
                ranges.push((i, dev.slot, disk, offset..offset + size, read_only));
            }
        }
    }
    for (a, x) in ranges.iter().enumerate() {
        for y in &ranges[..a] {
            let overlap = x.2 == y.2 && x.3.start < y.3.end && y.3.start < x.3.end;
            if overlap && !(x.4 && y.4) {
                return Err(ConfigError::key(
                    path,
                    format!("vm[{}].device[{}].offset_mib", x.0, x.1),
                    format!(
                        "VM \"{}\": its range of disk \"{}\" overlaps VM \"{}\"'s, and one of them is writable: only read-only ranges may be shared",
                        vms[x.0].name, disks[x.2].name, vms[y.0].name
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_macs(path: &Path, vms: &[VmConfig]) -> Result<(), ConfigError> {
    let mut seen: Vec<([u8; 6], usize, usize, u32)> = Vec::new();
    for (i, vm) in vms.iter().enumerate() {
        for dev in &vm.devices {
            if let DeviceKind::Net { switch, mac } = dev.kind {
                if let Some(o) = seen.iter().find(|o| o.0 == mac && o.2 == switch) {
                    let m: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
                    return Err(ConfigError::key(
                        path,
                        format!("vm[{i}].device[{}].mac", dev.slot),
                        format!(
                            "VM \"{}\": MAC {} is already used on this switch by VM \"{}\"",
                            vm.name,
                            m.join(":"),
                            vms[o.1].name
                        ),
                    ));
                }
                seen.push((mac, i, switch, dev.slot));
            }
        }
    }
    Ok(())
}

fn check_channels(
    path: &Path,
    raw: &[RawChannel],
    vms: &mut [VmConfig],
    names: &BTreeMap<String, usize>,
) -> Result<Vec<ChannelConfig>, ConfigError> {
    if raw.len() > MAX_CHANNELS {
        return Err(ConfigError::key(
            path,
            "channel",
            format!("{} channels defined, at most {MAX_CHANNELS} are supported", raw.len()),
        ));
    }
    let mut out: Vec<ChannelConfig> = Vec::new();
    for (k, c) in raw.iter().enumerate() {
        let key = |f: &str| format!("channel[{k}].{f}");
        if !valid_name(&c.name, MAX_NAME_LEN) {
            return Err(ConfigError::key(path, key("name"), format!("{:?} is not a valid channel name", c.name)));
        }
        if let Some(j) = out.iter().position(|o| o.name == c.name) {
            return Err(ConfigError::key(
                path,
                key("name"),
                format!("duplicate channel name \"{}\" (channel[{j}] has it too)", c.name),
            ));
        }
        if c.size_kib == 0 || c.size_kib % 4 != 0 || c.size_kib > MAX_CHANNEL_KIB {
            return Err(ConfigError::key(
                path,
                key("size_kib"),
                format!(
                    "channel \"{}\": must be a multiple of 4 KiB from 4 to {MAX_CHANNEL_KIB} (got {})",
                    c.name, c.size_kib
                ),
            ));
        }
        let mut members = Vec::new();
        for v in &c.vms {
            let Some(&i) = names.get(v) else {
                return Err(ConfigError::key(
                    path,
                    key("vms"),
                    format!("channel \"{}\": no VM is named {v:?}", c.name),
                ));
            };
            if members.contains(&i) {
                return Err(ConfigError::key(
                    path,
                    key("vms"),
                    format!("channel \"{}\": VM {v:?} is listed twice", c.name),
                ));
            }
            members.push(i);
        }
        if members.len() < 2 {
            return Err(ConfigError::key(path, key("vms"), format!("channel \"{}\": name at least two VMs", c.name)));
        }
        for &i in &members {
            vms[i].channels.push(k);
        }
        out.push(ChannelConfig { name: c.name.clone(), size: c.size_kib << 10, vms: members });
    }
    Ok(out)
}

/// A key that names one of a few choices: its value, the default when it
/// is absent, or why the name is not one of them.
fn one_of<T: Copy + Default>(value: Option<&str>, what: &str, choices: &[(&str, T)]) -> Result<T, String> {
    let Some(v) = value else { return Ok(T::default()) };
    if let Some(&(_, t)) = choices.iter().find(|(name, _)| *name == v) {
        return Ok(t);
    }
    let names: Vec<String> = choices.iter().map(|(name, _)| format!("{name:?}")).collect();
    let (last, rest) = names.split_last().expect("at least one choice");
    Err(format!("unknown {what} {v:?}: use {} or {last}", rest.join(", ")))
}

/// Resolves `p` against the config's folder and checks it is a non-empty file
/// that can be opened. The error text starts with the path.
fn readable_file(dir: &Path, p: &Path) -> Result<PathBuf, String> {
    let joined = dir.join(p);
    let abs = std::path::absolute(&joined).unwrap_or(joined);
    let meta = std::fs::metadata(&abs).map_err(|e| format!("{}: {e}", abs.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", abs.display()));
    }
    if meta.len() == 0 {
        return Err(format!("{}: the file is empty", abs.display()));
    }
    File::open(&abs).map_err(|e| format!("{}: {e}", abs.display()))?;
    Ok(abs)
}

/// Checks that all VMs' RAM plus the hypervisor's reserve (with a payload of
/// `payload_bytes`) fit in the board's RAM.
pub fn check_memory_fit(config: &Config, payload_bytes: u64) -> Result<(), ConfigError> {
    let vms: u64 = config.vms.iter().map(|v| v.memory_mib as u64).sum();
    let reserve = hypervisor_reserve_mib(payload_bytes);
    let have = config.system.memory_mib as u64;
    if vms + reserve <= have {
        return Ok(());
    }
    let each: Vec<String> = config.vms.iter().map(|v| format!("{} {}", v.name, v.memory_mib)).collect();
    Err(ConfigError::key(
        &config.file,
        "system.memory_mib",
        format!(
            "the VMs' memory ({vms} MiB: {}) and the hypervisor's reserve ({reserve} MiB: {RESERVE_LOW_MIB} for the hypervisor \
             and the board DTB, {} for the payload, {RESERVE_HEAP_MIB} for page tables and heap) need {} MiB, which does not \
             fit in {have} MiB",
            each.join(" + "),
            reserve - RESERVE_LOW_MIB as u64 - RESERVE_HEAP_MIB as u64,
            vms + reserve
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::key_path;
    use std::fs;

    struct Dir {
        dir: tempfile::TempDir,
    }

    impl Dir {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("k.bin"), [0xfe, 0xff, 0xff, 0xea]).unwrap();
            fs::write(dir.path().join("initrd.img"), [7; 100]).unwrap();
            Dir { dir }
        }

        fn load(&self, text: &str) -> Result<Config, ConfigError> {
            let path = self.dir.path().join("sys.toml");
            fs::write(&path, text).unwrap();
            load(&path)
        }

        fn refuse(&self, text: &str, key: &str, fragment: &str) -> ConfigError {
            let e = self.load(text).expect_err("config accepted");
            let line = e.to_string();
            assert!(!line.contains('\n'), "multi-line message: {line}");
            assert!(line.starts_with("error: ") && line.contains("sys.toml"), "{line}");
            assert_eq!(key_path(&e), Some(key), "{line}");
            assert!(line.contains(&format!(": {key}: ")), "key {key} not in: {line}");
            assert!(line.contains(fragment), "{fragment:?} not in: {line}");
            e
        }
    }

    const SYSTEM: &str = "[system]\npcpus = 2\nmemory_mib = 256\n";

    fn vm(extra: &str) -> String {
        format!("{SYSTEM}\n[[vm]]\nname = \"a\"\nkernel = \"k.bin\"\nvcpus = 1\nmemory_mib = 16\n{extra}")
    }

    #[test]
    fn valid_config_loads() {
        let d = Dir::new();
        let c = d
            .load(&format!(
                "{SYSTEM}\n[[vm]]\nname = \"hello\"\nkernel = \"k.bin\"\ninitrd = \"initrd.img\"\n\
                 cmdline = \"console=hvc0\"\nvcpus = 2\nmemory_mib = 32\npcpus = [1]\n\n\
                 [[vm]]\nname = \"other-2\"\nkernel = \"k.bin\"\nvcpus = 1\nmemory_mib = 4\n"
            ))
            .unwrap();
        assert_eq!(
            c.system,
            SystemConfig { pcpus: 2, memory_mib: 256, power: Default::default(), log: Default::default() }
        );
        assert_eq!(c.vms.len(), 2);
        let a = &c.vms[0];
        assert_eq!((a.name.as_str(), a.vcpus, a.memory_mib), ("hello", 2, 32));
        assert!(a.kernel.is_absolute() && a.kernel.ends_with("k.bin"));
        assert!(a.initrd.as_ref().unwrap().ends_with("initrd.img"));
        assert_eq!(a.cmdline, "console=hvc0");
        assert_eq!(a.affinity(&c.system), 0b10);
        assert_eq!(c.vms[1].cmdline, "");
        assert_eq!(c.vms[1].affinity(&c.system), 0b11);
    }

    #[test]
    fn relative_paths_are_relative_to_the_config() {
        let d = Dir::new();
        fs::create_dir(d.dir.path().join("sub")).unwrap();
        let path = d.dir.path().join("sub/c.toml");
        fs::write(&path, vm("").replace("k.bin", "../k.bin")).unwrap();
        let c = load(&path).unwrap();
        assert_eq!(fs::read(&c.vms[0].kernel).unwrap(), [0xfe, 0xff, 0xff, 0xea]);
    }

    #[test]
    fn unknown_keys_name_key_and_table() {
        let d = Dir::new();
        let e = d.refuse(&vm("colour = \"red\"\n"), "vm[0].colour", "unknown key \"colour\" in table vm[0]");
        assert!(e.to_string().contains("VM \"a\""), "{e}");
        assert!(e.to_string().contains("line 10:1"), "{e}");
        d.refuse(&format!("{SYSTEM}threads = 4\n"), "system.threads", "unknown key \"threads\" in table system");
        d.refuse(&format!("{}\n[extra]\n", vm("")), "extra", "unknown key \"extra\" at the top level");
    }

    #[test]
    fn missing_keys() {
        let d = Dir::new();
        d.refuse(&vm("").replace("kernel = \"k.bin\"\n", ""), "vm[0].kernel", "missing required key \"kernel\"");
        d.refuse("[system]\npcpus = 2\n", "system.memory_mib", "missing required key");
        d.refuse("", "system", "missing required key \"system\"");
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let d = Dir::new();
        let e = d.load("[system]\npcpus = 2\nmemory_mib = = 3\n").unwrap_err();
        assert_eq!(e.at, Location::Line { line: 3, column: 14 });
        assert!(e.to_string().contains("sys.toml:3:14: TOML syntax error"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let d = Dir::new();
        d.refuse("[system]\npcpus = \"two\"\nmemory_mib = 256\n", "system.pcpus", "invalid type");
        d.refuse(&vm("").replace("vcpus = 1", "vcpus = -1"), "vm[0].vcpus", "line 8:9");
        d.refuse(&vm("pcpus = [0, \"x\"]\n"), "vm[0].pcpus[1]", "invalid type");
        d.refuse(&format!("{SYSTEM}[vm]\nname = \"a\"\n"), "vm", "[[vm]]");
    }

    #[test]
    fn power_and_log_keys() {
        let d = Dir::new();
        let c = d
            .load(&vm("").replace("memory_mib = 256\n", "memory_mib = 256\npower = \"powersave\"\nlog = \"debug\"\n"))
            .unwrap();
        assert_eq!(
            (c.system.power, c.system.log),
            (tessera_payload::PowerPolicy::Powersave, tessera_payload::LogLevel::Debug)
        );
        d.refuse(
            &vm("").replace("memory_mib = 256\n", "memory_mib = 256\npower = \"turbo\"\n"),
            "system.power",
            "unknown power policy \"turbo\": use \"performance\", \"balanced\" or \"powersave\"",
        );
        d.refuse(
            &vm("").replace("memory_mib = 256\n", "memory_mib = 256\nlog = \"loud\"\n"),
            "system.log",
            "unknown log level \"loud\": use \"warn\", \"info\" or \"debug\"",
        );
    }

    #[test]
    fn the_vm_count_is_limited_by_memory_and_heap() {
        let d = Dir::new();
        let many = |n: usize, devices: usize| {
            let mut t = String::from("[system]\npcpus = 8\nmemory_mib = 3072\n");
            for k in 0..n {
                t += &format!("\n[[vm]]\nname = \"v{k}\"\nkernel = \"k.bin\"\nvcpus = 1\nmemory_mib = 2\n");
                t += &"[[vm.device]]\ntype = \"rng\"\n".repeat(devices);
            }
            t
        };
        assert_eq!(d.load(&many(200, 0)).unwrap().vms.len(), 200, "far more than 16 VMs");
        d.refuse(&many(60, 32), "vm", "need 8588 KiB of the hypervisor's 8192 KiB heap");
        d.refuse(&many(256, 0), "vm", "256 VMs defined, at most 255");
    }

    #[test]
    fn value_checks() {
        let d = Dir::new();
        d.refuse(&vm("").replace("vcpus = 1", "vcpus = 0"), "vm[0].vcpus", "VM \"a\" must have 1 to 64 vCPUs (got 0)");
        d.refuse(&vm("").replace("vcpus = 1", "vcpus = 65"), "vm[0].vcpus", "(got 65)");
        d.refuse(&vm("").replace("memory_mib = 16", "memory_mib = 3"), "vm[0].memory_mib", "multiple of 2");
        d.refuse(&vm("").replace("memory_mib = 16", "memory_mib = 0"), "vm[0].memory_mib", "multiple of 2");
        d.refuse(&vm("pcpus = [2]\n"), "vm[0].pcpus", "pinned to pCPU 2, which does not exist");
        d.refuse(&vm("pcpus = []\n"), "vm[0].pcpus", "empty pCPU list");
        d.refuse(&vm("pcpus = [1, 0, 1]\n"), "vm[0].pcpus", "pCPU 1 more than once");
        d.refuse(
            &vm("cmdline = \"x\"\n").replace("\"x\"", &format!("\"{}\"", "y".repeat(1025))),
            "vm[0].cmdline",
            "1025 bytes",
        );
        d.refuse(&vm("").replace("name = \"a\"", "name = \"a b\""), "vm[0].name", "not a valid VM name");
        d.refuse(&vm("").replace("name = \"a\"", "name = \"\""), "vm[0].name", "not a valid VM name");
        d.refuse(&vm("").replace("name = \"a\"", &format!("name = \"{}\"", "n".repeat(32))), "vm[0].name", "1 to 31");
        d.load(&vm("").replace("name = \"a\"", &format!("name = \"{}\"", "n".repeat(31)))).unwrap();
        let two = format!("{}\n[[vm]]\nname = \"a\"\nkernel = \"k.bin\"\nvcpus = 1\nmemory_mib = 2\n", vm(""));
        d.refuse(&two, "vm[1].name", "duplicate VM name \"a\" (vm[0] has it too)");
        d.refuse(SYSTEM, "vm", "no VM defined");
        d.refuse(&vm("").replace("pcpus = 2", "pcpus = 0"), "system.pcpus", "(got 0)");
        d.refuse(&vm("").replace("pcpus = 2", "pcpus = 9"), "system.pcpus", "1 to 8");
        d.refuse(&vm("").replace("memory_mib = 256", "memory_mib = 32"), "system.memory_mib", "64 to 3072");
        d.refuse(&vm("").replace("memory_mib = 256", "memory_mib = 4096"), "system.memory_mib", "(got 4096)");
    }

    #[test]
    fn devices_disks_and_channels() {
        let d = Dir::new();
        fs::write(d.dir.path().join("disk.img"), vec![0u8; 4 << 20]).unwrap();
        let c = d
            .load(&format!(
                "{SYSTEM}\n[[disk]]\nname = \"d0\"\nimage = \"disk.img\"\n\n[[disk]]\nname = \"new\"\nimage = \"new.img\"\nsize_mib = 2\n\n\
                 [[vm]]\nname = \"a\"\nkernel = \"k.bin\"\nvcpus = 1\nmemory_mib = 16\n\
                 [[vm.device]]\ntype = \"block\"\ndisk = \"d0\"\noffset_mib = 1\nsize_mib = 2\n\
                 [[vm.device]]\ntype = \"net\"\nswitch = \"lan\"\n\
                 [[vm.device]]\ntype = \"console\"\n\n\
                 [[vm]]\nname = \"b\"\nkernel = \"k.bin\"\nvcpus = 1\nmemory_mib = 16\n\
                 [[vm.device]]\ntype = \"block\"\ndisk = \"d0\"\nread_only = true\noffset_mib = 3\n\
                 [[vm.device]]\ntype = \"net\"\nswitch = \"lan\"\nmac = \"02:00:00:00:00:09\"\n\n\
                 [[channel]]\nname = \"ring\"\nsize_kib = 64\nvms = [\"b\", \"a\"]\n"
            ))
            .unwrap();
        assert_eq!(c.disks.len(), 2);
        assert_eq!((c.disks[0].size, c.disks[0].create), (4 << 20, false));
        assert_eq!((c.disks[1].size, c.disks[1].create), (2 << 20, true));
        assert!(!d.dir.path().join("new.img").exists(), "loading creates nothing");
        let a = &c.vms[0];
        assert_eq!(
            a.devices[0],
            DeviceConfig {
                slot: 0,
                kind: DeviceKind::Block { disk: 0, offset: 1 << 20, size: 2 << 20, read_only: false }
            }
        );
        assert_eq!(
            a.devices[1],
            DeviceConfig { slot: 1, kind: DeviceKind::Net { switch: 0, mac: [2, 0x54, 0x53, 0, 1, 1] } }
        );
        assert_eq!(a.devices[2].kind, DeviceKind::Console);
        // b's range defaults to the rest of the disk.
        assert_eq!(
            c.vms[1].devices[0].kind,
            DeviceKind::Block { disk: 0, offset: 3 << 20, size: 1 << 20, read_only: true }
        );
        assert_eq!(c.vms[1].devices[1].kind, DeviceKind::Net { switch: 0, mac: [2, 0, 0, 0, 0, 9] });
        assert_eq!(c.switches, ["lan"]);
        assert_eq!(c.channels, [ChannelConfig { name: "ring".into(), size: 64 << 10, vms: vec![1, 0] }]);
        assert_eq!((c.vms[0].channels.clone(), c.vms[1].channels.clone()), (vec![0], vec![0]));
    }

    #[test]
    fn bad_devices() {
        let d = Dir::new();
        fs::write(d.dir.path().join("disk.img"), vec![0u8; 4 << 20]).unwrap();
        let disk = "[[disk]]\nname = \"d0\"\nimage = \"disk.img\"\n";
        let refuse = |extra: &str, key: &str, frag: &str| {
            d.refuse(&format!("{disk}\n{}", vm(extra)), key, frag);
        };
        refuse(
            "[[vm.device]]\ntype = \"block\"\ndisk = \"d0\"\noffset_mib = 3\nsize_mib = 2\n",
            "vm[0].device[0].size_mib",
            "does not fit",
        );
        refuse(
            "[[vm.device]]\ntype = \"block\"\ndisk = \"d0\"\noffset_mib = 4\n",
            "vm[0].device[0].offset_mib",
            "does not fit",
        );
        refuse("[[vm.device]]\ntype = \"block\"\n", "vm[0].device[0].disk", "needs disk");
        refuse("[[vm.device]]\ntype = \"net\"\nswitch = \"s\"\nmac = \"zz\"\n", "vm[0].device[0].mac", "not a MAC");
        refuse("[[vm.device]]\ntype = \"rng\"\nswitch = \"s\"\n", "vm[0].device[0].switch", "does not apply");
        refuse("[[vm.device]]\ntype = \"net\"\n", "vm[0].device[0].switch", "needs switch");
        d.refuse(
            &format!("{SYSTEM}[[disk]]\nname = \"x\"\nimage = \"nope.img\"\n{}", &vm("")[SYSTEM.len()..]),
            "disk[0].image",
            "give size_mib",
        );
        d.refuse(
            &format!("{SYSTEM}[[disk]]\nname = \"x\"\nimage = \"disk.img\"\nsize_mib = 8\n{}", &vm("")[SYSTEM.len()..]),
            "disk[0].size_mib",
            "not 8 MiB",
        );
        d.refuse(
            &format!("{}\n[[channel]]\nname = \"c\"\nsize_kib = 6\nvms = [\"a\", \"a\"]\n", vm("")),
            "channel[0].size_kib",
            "multiple of 4",
        );
        d.refuse(
            &format!("{}\n[[channel]]\nname = \"c\"\nsize_kib = 8\nvms = [\"a\", \"zz\"]\n", vm("")),
            "channel[0].vms",
            "no VM is named \"zz\"",
        );
    }

    #[test]
    fn files_must_exist() {
        let d = Dir::new();
        let e = d.refuse(&vm("").replace("k.bin", "nope.bin"), "vm[0].kernel", "cannot use kernel file");
        assert!(e.reason.contains(&d.dir.path().join("nope.bin").display().to_string()), "{e}");
        d.refuse(&vm("initrd = \"gone.cpio\"\n"), "vm[0].initrd", "gone.cpio");
        d.refuse(&vm("").replace("k.bin", "."), "vm[0].kernel", "not a regular file");
        fs::write(d.dir.path().join("empty"), []).unwrap();
        d.refuse(&vm("").replace("k.bin", "empty"), "vm[0].kernel", "is empty");
    }

    #[test]
    fn memory_must_fit() {
        let d = Dir::new();
        // 256 - 16 - 2 - 8 = 230 MiB for VMs.
        d.load(&vm("").replace("memory_mib = 16", "memory_mib = 230")).unwrap();
        d.refuse(
            &vm("").replace("memory_mib = 16", "memory_mib = 232"),
            "system.memory_mib",
            "258 MiB, which does not fit in 256 MiB",
        );
    }

    #[test]
    fn unreadable_config() {
        let e = load(Path::new("/nonexistent/x.toml")).unwrap_err();
        assert_eq!(e.at, Location::File);
        assert!(e.to_string().starts_with("error: /nonexistent/x.toml: cannot read the configuration"), "{e}");
    }

    #[test]
    fn reserve() {
        assert_eq!(hypervisor_reserve_mib(0), 26);
        assert_eq!(hypervisor_reserve_mib(1), 26);
        assert_eq!(hypervisor_reserve_mib(2 << 20), 26);
        assert_eq!(hypervisor_reserve_mib((2 << 20) + 1), 28);
    }
}

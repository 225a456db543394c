//! The spec as written (`Raw*`, straight from TOML) and as checked (`Abi`).
//!
//! Checking gathers every problem rather than stopping at the first, so one
//! run of the generator tells the whole story.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    abi: RawAbi,
    service: Vec<RawService>,
    error: Vec<RawError>,
    #[serde(default)]
    feature: Vec<RawFeature>,
    #[serde(default)]
    constant: Vec<RawConstant>,
    call: Vec<RawCall>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAbi {
    version: String,
    uid: String,
    #[serde(default)]
    retired: Vec<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    key: String,
    title: String,
    owner: u32,
    first: u32,
    last: u32,
    errors: String,
    doc: String,
    #[serde(default)]
    counted: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawError {
    space: String,
    name: String,
    code: i32,
    doc: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    name: String,
    bit: u32,
    doc: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConstant {
    #[serde(default)]
    module: Option<String>,
    name: String,
    #[serde(rename = "type")]
    ty: String,
    value: i64,
    doc: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCall {
    name: String,
    rust: String,
    id: u32,
    service: String,
    since: String,
    doc: String,
    #[serde(default)]
    feature: Option<String>,
    #[serde(default)]
    args: Vec<Reg>,
    #[serde(default)]
    results: Vec<Reg>,
    errors: Vec<String>,
    #[serde(default)]
    noreturn: bool,
}

/// One register of a call's arguments or results.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reg {
    /// Register number: 1..=7 for arguments, 0..=3 for results.
    pub reg: u32,
    /// Short name, a Rust/C identifier.
    pub name: String,
    /// What it holds.
    pub doc: String,
}

/// An SMCCC owner range that calls belong to.
#[derive(Clone, Debug)]
pub struct Service {
    pub key: String,
    pub title: String,
    pub owner: u32,
    pub first: u32,
    pub last: u32,
    /// Error space the service's calls report in.
    pub errors: String,
    pub doc: String,
    /// Whether TESSERA_CALL_COUNT counts this service's calls.
    pub counted: bool,
}

/// An error code of one space (`smccc` or `psci`).
#[derive(Clone, Debug)]
pub struct ErrorCode {
    pub space: String,
    pub name: String,
    pub code: i32,
    pub doc: String,
}

/// A bit of TESSERA_FEATURES' bitmap.
#[derive(Clone, Debug)]
pub struct Feature {
    pub name: String,
    pub bit: u32,
    pub doc: String,
}

/// A named number.
#[derive(Clone, Debug)]
pub struct Constant {
    /// `None` for the crate root, `Some("psci")` for `hypercall_abi::psci`.
    pub module: Option<String>,
    pub name: String,
    /// `u32` or `i32`.
    pub ty: String,
    pub value: i64,
    pub doc: String,
}

/// One hypercall.
#[derive(Clone, Debug)]
pub struct Call {
    pub name: String,
    pub rust: String,
    pub id: u32,
    pub service: String,
    pub since: (u32, u32),
    pub doc: String,
    pub feature: Option<String>,
    pub args: Vec<Reg>,
    pub results: Vec<Reg>,
    pub errors: Vec<String>,
    pub noreturn: bool,
}

impl Call {
    /// `TESSERA_FN_` + the SCREAMING_SNAKE form of the Rust name.
    pub fn c_name(&self) -> String {
        format!("TESSERA_FN_{}", screaming_snake(&self.rust))
    }
}

/// The checked spec.
#[derive(Clone, Debug)]
pub struct Abi {
    pub version: (u32, u32),
    pub uid: String,
    pub uid_words: [u32; 4],
    pub retired: Vec<u32>,
    pub services: Vec<Service>,
    pub errors: Vec<ErrorCode>,
    pub features: Vec<Feature>,
    pub constants: Vec<Constant>,
    pub calls: Vec<Call>,
}

/// A number the C header and the Rust crate both publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// The C macro, e.g. `TESSERA_FN_CONSOLE_WRITE`.
    pub c: String,
    /// The Rust item, e.g. `Function::ConsoleWrite`, `psci::DENIED`,
    /// `TESSERA_UID[2]`.
    pub rust: String,
}

/// Names the generator derives itself; a `[[constant]]` may not take them.
const DERIVED_CONSTANTS: [&str; 5] =
    ["ABI_VERSION_MAJOR", "ABI_VERSION_MINOR", "TESSERA_UID", "TESSERA_CALL_COUNT", "SUCCESS"];

/// Error space that becomes the Rust `Error` enum.
pub const SMCCC_SPACE: &str = "smccc";
/// Error space that becomes constants in `hypercall_abi::psci`.
pub const PSCI_SPACE: &str = "psci";

impl Abi {
    /// Parses and checks the spec; the error lists every problem found.
    pub fn parse(text: &str) -> Result<Abi, String> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| format!("abi.toml is not a valid spec: {e}"))?;
        let mut problems = Vec::new();
        let abi = check(raw, &mut problems);
        if problems.is_empty() {
            Ok(abi)
        } else {
            Err(problems.join("\n"))
        }
    }

    /// The service with this key.
    pub fn service(&self, key: &str) -> &Service {
        self.services.iter().find(|s| s.key == key).expect("calls name checked services")
    }

    /// The error code `name` of `space`.
    pub fn error(&self, space: &str, name: &str) -> &ErrorCode {
        self.errors.iter().find(|e| e.space == space && e.name == name).expect("calls name checked errors")
    }

    /// Error codes of one space, success first, then by decreasing code.
    pub fn errors_of(&self, space: &str) -> Vec<&ErrorCode> {
        let mut v: Vec<_> = self.errors.iter().filter(|e| e.space == space).collect();
        v.sort_by_key(|e| -e.code);
        v
    }

    /// Calls of one service, in spec order.
    pub fn calls_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Call> + 'a {
        self.calls.iter().filter(move |c| c.service == service)
    }

    /// TESSERA_CALL_COUNT: calls of the counted service.
    pub fn call_count(&self) -> u32 {
        let counted: Vec<_> = self.services.iter().filter(|s| s.counted).collect();
        self.calls.iter().filter(|c| counted.iter().any(|s| s.key == c.service)).count() as u32
    }

    /// Constants of one module (`None` = crate root), in spec order.
    pub fn constants_of<'a>(&'a self, module: Option<&'a str>) -> impl Iterator<Item = &'a Constant> + 'a {
        self.constants.iter().filter(move |c| c.module.as_deref() == module)
    }

    /// Every numbered C macro with its Rust counterpart.
    pub fn symbols(&self) -> Vec<Symbol> {
        let mut out = Vec::new();
        let mut add = |c: String, rust: String| out.push(Symbol { c, rust });
        add("TESSERA_ABI_VERSION_MAJOR".into(), "ABI_VERSION_MAJOR".into());
        add("TESSERA_ABI_VERSION_MINOR".into(), "ABI_VERSION_MINOR".into());
        for c in self.constants_of(None) {
            add(c_constant_name(None, &c.name), c.name.clone());
        }
        for i in 0..4 {
            add(format!("TESSERA_UID_{i}"), format!("TESSERA_UID[{i}]"));
        }
        add("TESSERA_CALL_COUNT".into(), "TESSERA_CALL_COUNT".into());
        add("TESSERA_SUCCESS".into(), "SUCCESS".into());
        for e in self.errors_of(SMCCC_SPACE) {
            if e.code != 0 {
                add(format!("TESSERA_ERR_{}", e.name), format!("Error::{}", camel(&e.name)));
            }
        }
        for f in &self.features {
            add(format!("TESSERA_FEATURE_{}", f.name), format!("feature::{}", f.name));
        }
        for e in self.errors_of(PSCI_SPACE) {
            add(format!("TESSERA_PSCI_{}", e.name), format!("psci::{}", e.name));
        }
        for c in self.constants_of(Some("psci")) {
            add(c_constant_name(Some("psci"), &c.name), format!("psci::{}", c.name));
        }
        for c in &self.calls {
            add(c.c_name(), format!("Function::{}", c.rust));
        }
        out
    }
}

/// The C macro of a constant: `TESSERA_` (+ `PSCI_`) + name, without
/// doubling a `TESSERA_` the name already has.
pub fn c_constant_name(module: Option<&str>, name: &str) -> String {
    match module {
        Some(m) => format!("TESSERA_{}_{name}", m.to_uppercase()),
        None if name.starts_with("TESSERA_") => name.to_string(),
        None => format!("TESSERA_{name}"),
    }
}

/// `NOT_SUPPORTED` -> `NotSupported`.
pub fn camel(screaming: &str) -> String {
    screaming
        .split('_')
        .map(|w| {
            let mut cs = w.chars();
            match cs.next() {
                Some(f) => f.to_uppercase().chain(cs.flat_map(char::to_lowercase)).collect(),
                None => String::new(),
            }
        })
        .collect()
}

/// `the call succeeded` -> `The call succeeded`.
pub fn capitalise(s: &str) -> String {
    let mut cs = s.chars();
    match cs.next() {
        Some(f) => f.to_uppercase().chain(cs).collect(),
        None => String::new(),
    }
}

/// `ConsoleWrite` -> `CONSOLE_WRITE`.
pub fn screaming_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && i != 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

fn parse_version(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.split_once('.')?;
    let ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !ok(major) || !ok(minor) {
        return None;
    }
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// SMCCC packs a UID into r0..r3 as the UUID's bytes, in RFC 4122 order,
/// four per register, each register read little-endian (Linux's and KVM's
/// reading of SMCCC's "UID" queries).
fn parse_uid(s: &str) -> Option<[u32; 4]> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex: String = groups.concat();
    if !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    let mut words = [0u32; 4];
    for (i, w) in words.iter_mut().enumerate() {
        *w = u32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]);
    }
    Some(words)
}

fn is_screaming(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_uppercase()
        && b.iter().all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
        && !s.ends_with('_')
        && !s.contains("__")
}

fn is_camel(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && b[0].is_ascii_uppercase() && b.iter().all(|c| c.is_ascii_alphanumeric())
}

fn is_snake(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_lowercase()
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Doc lines end up in Rust doc comments, C comments and Markdown tables.
fn check_doc(what: &str, doc: &str, problems: &mut Vec<String>) {
    if doc.trim().is_empty() {
        problems.push(format!("{what}: doc is empty"));
    }
    if doc.contains('\n') || doc.contains('|') || doc.contains("*/") {
        problems.push(format!("{what}: doc must be one line without `|` or `*/` (it goes into tables and C comments)"));
    }
}

/// Checks the SMCCC fields of a fast SMC32 function ID (Arm DEN 0028,
/// "Function Identifier"): bit 31 fast call, bit 30 SMC32, bits 29:24 the
/// owner, bits 23:16 zero.
fn smccc_problem(id: u32, owner: u32) -> Option<String> {
    if id & 0x8000_0000 == 0 {
        return Some("is not a fast call (bit 31 clear)".into());
    }
    if id & 0x4000_0000 != 0 {
        return Some("is not SMC32 (bit 30 set)".into());
    }
    if (id >> 24) & 0x3f != owner {
        return Some(format!("has owner {} in bits 29:24, not {owner}", (id >> 24) & 0x3f));
    }
    if (id >> 16) & 0xff != 0 {
        return Some("has bits 23:16 set (must be zero)".into());
    }
    None
}

fn check(raw: RawSpec, problems: &mut Vec<String>) -> Abi {
    let version = parse_version(&raw.abi.version).unwrap_or_else(|| {
        problems.push(format!("[abi] version {:?} is not MAJOR.MINOR", raw.abi.version));
        (0, 0)
    });
    let uid_words = parse_uid(&raw.abi.uid).unwrap_or_else(|| {
        problems.push(format!(
            "[abi] uid {:?} is not a lower-case UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
            raw.abi.uid
        ));
        [0; 4]
    });
    if uid_words[0] == u32::MAX {
        // SMCCC: r0 = 0xFFFF_FFFF means "UID query not supported".
        problems.push("[abi] uid: its first word may not be 0xFFFFFFFF (SMCCC's NOT_SUPPORTED)".into());
    }

    // Error spaces.
    let mut errors = Vec::new();
    let mut seen_names = BTreeSet::new();
    let mut seen_codes = BTreeMap::new();
    for e in raw.error {
        let what = format!("error {}/{}", e.space, e.name);
        if e.space != SMCCC_SPACE && e.space != PSCI_SPACE {
            problems.push(format!("{what}: space must be {SMCCC_SPACE:?} or {PSCI_SPACE:?}"));
        }
        if !is_screaming(&e.name) {
            problems.push(format!("{what}: name must be SCREAMING_SNAKE_CASE"));
        }
        if !seen_names.insert((e.space.clone(), e.name.clone())) {
            problems.push(format!("{what}: duplicate error name"));
        }
        if let Some(other) = seen_codes.insert((e.space.clone(), e.code), e.name.clone()) {
            problems.push(format!("{what}: duplicate code {} (also {other})", e.code));
        }
        if (e.name == "SUCCESS") != (e.code == 0) {
            problems.push(format!("{what}: code 0 is SUCCESS and SUCCESS is code 0"));
        }
        if e.code > 0 {
            problems.push(format!("{what}: error codes are negative"));
        }
        check_doc(&what, &e.doc, problems);
        errors.push(ErrorCode { space: e.space, name: e.name, code: e.code, doc: e.doc });
    }
    for space in [SMCCC_SPACE, PSCI_SPACE] {
        if !errors.iter().any(|e| e.space == space && e.code == 0) {
            problems.push(format!("error space {space:?} has no SUCCESS (code 0)"));
        }
    }

    // Services.
    let mut services: Vec<Service> = Vec::new();
    for s in raw.service {
        let what = format!("service {:?}", s.key);
        if services.iter().any(|o| o.key == s.key) {
            problems.push(format!("{what}: duplicate service key"));
        }
        if s.first > s.last {
            problems.push(format!("{what}: first {:#010x} > last {:#010x}", s.first, s.last));
        }
        for (end, id) in [("first", s.first), ("last", s.last)] {
            if let Some(p) = smccc_problem(id, s.owner) {
                problems.push(format!("{what}: {end} {id:#010x} {p}"));
            }
        }
        for o in &services {
            if s.first <= o.last && o.first <= s.last {
                problems.push(format!("{what}: range overlaps service {:?}", o.key));
            }
        }
        if s.errors != SMCCC_SPACE && s.errors != PSCI_SPACE {
            problems.push(format!("{what}: errors must be {SMCCC_SPACE:?} or {PSCI_SPACE:?}"));
        }
        check_doc(&what, &s.doc, problems);
        services.push(Service {
            key: s.key,
            title: s.title,
            owner: s.owner,
            first: s.first,
            last: s.last,
            errors: s.errors,
            doc: s.doc,
            counted: s.counted,
        });
    }
    if services.iter().filter(|s| s.counted).count() != 1 {
        problems.push("exactly one service must be `counted = true` (TESSERA_CALL_COUNT counts its calls)".into());
    }

    // Features.
    let mut features: Vec<Feature> = Vec::new();
    for f in raw.feature {
        let what = format!("feature {}", f.name);
        if !is_screaming(&f.name) {
            problems.push(format!("{what}: name must be SCREAMING_SNAKE_CASE"));
        }
        if f.bit >= 32 {
            problems.push(format!("{what}: bit {} does not fit in r1", f.bit));
        }
        if let Some(o) = features.iter().find(|o| o.name == f.name) {
            problems.push(format!("{what}: duplicate feature name (bit {})", o.bit));
        }
        if let Some(o) = features.iter().find(|o| o.bit == f.bit) {
            problems.push(format!("{what}: duplicate bit {} (also {})", f.bit, o.name));
        }
        check_doc(&what, &f.doc, problems);
        features.push(Feature { name: f.name, bit: f.bit, doc: f.doc });
    }

    // Constants.
    let mut constants: Vec<Constant> = Vec::new();
    for c in raw.constant {
        let module = c.module.as_deref();
        let what = match module {
            Some(m) => format!("constant {m}::{}", c.name),
            None => format!("constant {}", c.name),
        };
        if module.is_some_and(|m| m != "psci") {
            problems.push(format!("{what}: module must be absent or \"psci\""));
        }
        if !is_screaming(&c.name) {
            problems.push(format!("{what}: name must be SCREAMING_SNAKE_CASE"));
        }
        let taken = match module {
            None => DERIVED_CONSTANTS.contains(&c.name.as_str()),
            Some(_) => errors.iter().any(|e| e.space == PSCI_SPACE && e.name == c.name),
        };
        if taken || constants.iter().any(|o| o.module == c.module && o.name == c.name) {
            problems.push(format!("{what}: duplicate name"));
        }
        let fits = match c.ty.as_str() {
            "u32" => u32::try_from(c.value).is_ok(),
            "i32" => i32::try_from(c.value).is_ok(),
            _ => {
                problems.push(format!("{what}: type must be \"u32\" or \"i32\""));
                true
            }
        };
        if !fits {
            problems.push(format!("{what}: value {} does not fit {}", c.value, c.ty));
        }
        check_doc(&what, &c.doc, problems);
        constants.push(Constant { module: c.module, name: c.name, ty: c.ty, value: c.value, doc: c.doc });
    }

    // Calls.
    let mut calls: Vec<Call> = Vec::new();
    for c in raw.call {
        let what = format!("call {}", c.name);
        if !is_screaming(&c.name) {
            problems.push(format!("{what}: name must be SCREAMING_SNAKE_CASE"));
        }
        if !is_camel(&c.rust) {
            problems.push(format!("{what}: rust name {:?} must be CamelCase", c.rust));
        }
        if let Some(o) = calls.iter().find(|o| o.name == c.name) {
            problems.push(format!("{what}: duplicate name (IDs {:#010x} and {:#010x})", o.id, c.id));
        }
        if let Some(o) = calls.iter().find(|o| o.rust == c.rust) {
            problems.push(format!("{what}: duplicate rust name {:?} (also {})", c.rust, o.name));
        }
        if let Some(o) = calls.iter().find(|o| o.id == c.id) {
            problems.push(format!("{what}: duplicate ID {:#010x} (also {})", c.id, o.name));
        }
        if raw.abi.retired.contains(&c.id) {
            problems.push(format!("{what}: ID {:#010x} is retired and may not be reused", c.id));
        }
        let space = match services.iter().find(|s| s.key == c.service) {
            None => {
                problems.push(format!("{what}: unknown service {:?}", c.service));
                None
            }
            Some(s) => {
                if c.id < s.first || c.id > s.last {
                    problems.push(format!(
                        "{what}: ID {:#010x} is outside service {:?} ({:#010x}..={:#010x})",
                        c.id, s.key, s.first, s.last
                    ));
                }
                Some(s.errors.clone())
            }
        };
        let since = match parse_version(&c.since) {
            Some(v) if v.0 == version.0 && v <= version => v,
            Some(_) => {
                problems.push(format!(
                    "{what}: since {:?} is not within ABI version {}.x up to {}.{}",
                    c.since, version.0, version.0, version.1
                ));
                (0, 0)
            }
            None => {
                problems.push(format!("{what}: since {:?} is not MAJOR.MINOR", c.since));
                (0, 0)
            }
        };
        if let Some(f) = &c.feature {
            if !features.iter().any(|x| &x.name == f) {
                problems.push(format!("{what}: unknown feature {f:?}"));
            }
        }
        for (kind, regs, range) in [("args", &c.args, 1..=7), ("results", &c.results, 0..=3)] {
            let mut seen = BTreeSet::new();
            for r in regs {
                if !range.contains(&r.reg) {
                    problems.push(format!(
                        "{what}: {kind} register r{} is outside r{}..r{}",
                        r.reg,
                        range.start(),
                        range.end()
                    ));
                }
                if !seen.insert(r.reg) {
                    problems.push(format!("{what}: {kind} register r{} listed twice", r.reg));
                }
                if !is_snake(&r.name) {
                    problems.push(format!("{what}: {kind} name {:?} must be snake_case", r.name));
                }
                check_doc(&format!("{what} r{}", r.reg), &r.doc, problems);
            }
        }
        if c.noreturn && !c.results.is_empty() {
            problems.push(format!("{what}: a call that does not return has no results"));
        }
        let mut seen = BTreeSet::new();
        for e in &c.errors {
            if !seen.insert(e) {
                problems.push(format!("{what}: error {e} listed twice"));
            }
            if let Some(space) = &space {
                if e == "SUCCESS" || !errors.iter().any(|x| &x.space == space && &x.name == e) {
                    problems.push(format!("{what}: {e} is not an error of space {space:?}"));
                }
            }
        }
        check_doc(&what, &c.doc, problems);
        let mut args = c.args;
        args.sort_by_key(|r| r.reg);
        let mut results = c.results;
        results.sort_by_key(|r| r.reg);
        calls.push(Call {
            name: c.name,
            rust: c.rust,
            id: c.id,
            service: c.service,
            since,
            doc: c.doc,
            feature: c.feature,
            args,
            results,
            errors: c.errors,
            noreturn: c.noreturn,
        });
    }
    let c_names: Vec<String> = calls.iter().map(Call::c_name).collect();
    for (i, n) in c_names.iter().enumerate() {
        if c_names[..i].contains(n) {
            problems.push(format!("call {}: C name {n} is taken by another call", calls[i].name));
        }
    }
    if calls.is_empty() {
        problems.push("the spec defines no [[call]]".into());
    }
    // Every output lists calls grouped by service, in the spec's order within
    // a service; the sort is stable.
    calls.sort_by_key(|c| services.iter().position(|s| s.key == c.service));

    Abi { version, uid: raw.abi.uid, uid_words, retired: raw.abi.retired, services, errors, features, constants, calls }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_packing_matches_the_smccc_convention() {
        // KVM's vendor hypervisor UID, as Linux documents its r0..r3.
        assert_eq!(
            parse_uid("28b46fb6-2ec5-11e9-a9ca-4b564d003a74"),
            Some([0xb66f_b428, 0xe911_c52e, 0x564b_caa9, 0x743a_004d])
        );
        assert_eq!(parse_uid("28b46fb6-2ec5-11e9-a9ca-4b564d003a7"), None);
        assert_eq!(parse_uid("28B46FB6-2ec5-11e9-a9ca-4b564d003a74"), None);
    }

    #[test]
    fn name_conversions() {
        assert_eq!(camel("NOT_SUPPORTED"), "NotSupported");
        assert_eq!(screaming_snake("SmcccArchFeatures"), "SMCCC_ARCH_FEATURES");
        assert_eq!(c_constant_name(None, "CONSOLE_WRITE_MAX"), "TESSERA_CONSOLE_WRITE_MAX");
        assert_eq!(c_constant_name(None, "TESSERA_UID"), "TESSERA_UID");
        assert_eq!(c_constant_name(Some("psci"), "DENIED"), "TESSERA_PSCI_DENIED");
    }

    #[test]
    fn smccc_fields() {
        assert_eq!(smccc_problem(0x8600_0002, 6), None);
        assert!(smccc_problem(0x0600_0002, 6).is_some());
        assert!(smccc_problem(0xC600_0002, 6).is_some());
        assert!(smccc_problem(0x8400_0002, 6).is_some());
        assert!(smccc_problem(0x8601_0002, 6).is_some());
    }
}

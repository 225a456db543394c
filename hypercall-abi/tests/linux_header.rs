//! The Linux patch series carries the ABI's numbers in its own header
//! (include/linux/tessera.h, written in kernel style, dual-licensed). This
//! keeps it from drifting: every number it defines must be the one the
//! generated C header (and so abi.toml and the Rust crate) defines.

use std::collections::BTreeMap;
use std::path::Path;

/// `#define NAME VALUE` lines of a header, values evaluated (`0x..U`,
/// `(-1)`, `BIT(n)`, `(1u << n)`); defines whose value is not a number
/// (function-like macros, include guards) are left out.
fn defines(lines: impl Iterator<Item = String>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for l in lines {
        let Some(rest) = l.trim_start().strip_prefix("#define ") else { continue };
        let mut it = rest.splitn(2, char::is_whitespace);
        let (Some(name), Some(value)) = (it.next(), it.next()) else { continue };
        if name.contains('(') {
            continue;
        }
        if let Some(v) = eval(value.trim()) {
            out.insert(name.to_string(), v);
        }
    }
    out
}

fn eval(v: &str) -> Option<i64> {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix("BIT(").and_then(|r| r.strip_suffix(')')) {
        return Some(1 << eval(inner)?);
    }
    if let Some(inner) = v.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        return eval(inner);
    }
    if let Some((a, b)) = v.split_once("<<") {
        return Some(eval(a)? << eval(b)?);
    }
    if let Some(n) = v.strip_prefix('-') {
        return Some(-eval(n)?);
    }
    let v = v.trim_end_matches(['u', 'U']);
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// The patches of linux-patches/, in the order they are applied.
fn patches() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../linux-patches");
    let mut patches: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    patches.sort();
    patches
}

/// The lines of include/linux/tessera.h as the series adds it.
fn kernel_header() -> Vec<String> {
    for p in patches() {
        let text = std::fs::read_to_string(&p).unwrap();
        let Some((_, rest)) = text.split_once("+++ b/include/linux/tessera.h\n") else { continue };
        return rest
            .lines()
            .skip(1) // the hunk header
            .take_while(|l| l.starts_with('+'))
            .map(|l| l[1..].to_string())
            .collect();
    }
    panic!("no patch in linux-patches/ adds include/linux/tessera.h");
}

#[test]
fn the_kernel_header_agrees_with_the_abi() {
    let c_header = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/tessera/hypercall.h");
    let abi = defines(std::fs::read_to_string(c_header).unwrap().lines().map(str::to_string));
    let kernel = defines(kernel_header().into_iter());
    assert!(kernel.len() >= 20, "the header defines the ABI's numbers: {kernel:?}");
    for (name, value) in &kernel {
        // Function numbers: the C header has the whole function ID.
        let (abi_name, want) = match name.strip_prefix("TESSERA_FUNC_") {
            Some(f) => (format!("TESSERA_FN_{f}"), 0x8600_0000 | value),
            None => (name.clone(), *value),
        };
        match abi.get(&abi_name) {
            Some(v) => assert_eq!(*v, want, "{name} in include/linux/tessera.h is {want:#x}, the ABI has {v:#x}"),
            None => panic!("{name} in include/linux/tessera.h is not in the ABI (no {abi_name})"),
        }
    }
}

#[test]
fn the_kernel_header_has_every_vendor_call_and_feature() {
    let c_header = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/tessera/hypercall.h");
    let abi = defines(std::fs::read_to_string(c_header).unwrap().lines().map(str::to_string));
    let kernel = defines(kernel_header().into_iter());
    for (name, id) in &abi {
        let want = if let Some(f) = name.strip_prefix("TESSERA_FN_").filter(|_| (0x8600_0000..0x8600_FF00).contains(id))
        {
            format!("TESSERA_FUNC_{f}")
        } else if name.starts_with("TESSERA_FEATURE_") || name.starts_with("TESSERA_ABI_VERSION_") {
            name.clone()
        } else {
            continue;
        };
        assert!(kernel.contains_key(&want), "include/linux/tessera.h lacks {want} (the ABI's {name})");
    }
}

/// The ABI's numbers live in the header as the first patch adds it (the
/// tests above read that); a later patch that changed them there would
/// escape the comparison.
#[test]
fn later_patches_do_not_change_the_numbers() {
    for p in patches() {
        let text = std::fs::read_to_string(&p).unwrap();
        for diff in text.split("\ndiff --git ").skip(1) {
            if !diff.starts_with("a/include/linux/tessera.h ") || diff.contains("\nnew file mode") {
                continue;
            }
            for l in
                diff.lines().filter(|l| l.starts_with(['+', '-']) && !l.starts_with("+++") && !l.starts_with("---"))
            {
                assert!(
                    !l[1..].trim_start().starts_with("#define TESSERA_"),
                    "{}: changes a number of include/linux/tessera.h ({l}): put it in the patch that adds the header",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn values_are_read_as_c_reads_them() {
    assert_eq!(eval("0xebeb3167U"), Some(0xebeb_3167));
    assert_eq!(eval("(-3)"), Some(-3));
    assert_eq!(eval("BIT(4)"), Some(16));
    assert_eq!(eval("(1u << 2)"), Some(4));
    assert_eq!(eval("1024u"), Some(1024));
    assert_eq!(eval("ARM_SMCCC_CALL_VAL(x)"), None);
}

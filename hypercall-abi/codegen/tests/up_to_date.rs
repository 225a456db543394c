//! The committed generated files must be exactly what `abi.toml` generates:
//! nobody edits them by hand and nobody forgets to regenerate.

use std::path::Path;

#[test]
fn generated_files_match_the_spec() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec =
        std::fs::read_to_string(dir.join(hypercall_abi_codegen::SPEC_PATH)).expect("read hypercall-abi/abi.toml");
    let outputs = hypercall_abi_codegen::generate(&spec).unwrap_or_else(|e| panic!("abi.toml is invalid:\n{e}"));
    let mut stale = Vec::new();
    for (rel, want) in outputs.files() {
        let path = dir.join(rel);
        let shown = format!("hypercall-abi/{}", rel.trim_start_matches("../"));
        match std::fs::read_to_string(&path) {
            Err(e) => stale.push(format!("{shown}: cannot read it ({e})")),
            Ok(have) if have != want => {
                let line = have
                    .lines()
                    .zip(want.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or_else(|| have.lines().count().min(want.lines().count()));
                stale.push(format!("{shown}: differs from what abi.toml generates (first at line {})", line + 1));
            }
            Ok(_) => {}
        }
    }
    assert!(
        stale.is_empty(),
        "generated ABI files are stale:\n  {}\nRun `cargo run -p hypercall-abi-codegen` and commit the result \
         (never edit generated files by hand: change hypercall-abi/abi.toml).",
        stale.join("\n  ")
    );
}

//! `cargo run -p hypercall-abi-codegen`: rewrites the generated ABI files
//! from `hypercall-abi/abi.toml`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec_path = dir.join(hypercall_abi_codegen::SPEC_PATH);
    let spec = match std::fs::read_to_string(&spec_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", spec_path.display());
            return ExitCode::FAILURE;
        }
    };
    let outputs = match hypercall_abi_codegen::generate(&spec) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {}:\n{e}", spec_path.display());
            return ExitCode::FAILURE;
        }
    };
    for (rel, text) in outputs.files() {
        let path = dir.join(rel);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text) {
            println!("unchanged  {}", path.display());
            continue;
        }
        if let Some(parent) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(parent) {
                eprintln!("error: cannot create {}: {e}", parent.display());
                return ExitCode::FAILURE;
            }
        }
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote      {}", path.display());
    }
    ExitCode::SUCCESS
}

//! Generator for Tessera's hypercall ABI.
//!
//! `hypercall-abi/abi.toml` describes every call, error code, feature bit
//! and constant once. This crate checks that description (IDs unique and
//! inside their SMCCC service range, names unique, references resolved) and
//! renders it three ways: the Rust module of the `hypercall-abi` crate, the
//! C header for C guests and the reference page. The outputs are committed;
//! the tests of this crate fail when they drift from the spec, so the three
//! can never disagree.

mod model;
mod render_c;
mod render_md;
mod render_rust;

use model::Abi;
pub use model::Symbol;

/// Path of the spec, relative to this crate's manifest directory.
pub const SPEC_PATH: &str = "../abi.toml";

/// The text of the generated files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outputs {
    /// `hypercall-abi/src/generated.rs`.
    pub rust: String,
    /// `hypercall-abi/include/tessera/hypercall.h`.
    pub c_header: String,
    /// `hypercall-abi/ABI.md`.
    pub markdown: String,
}

impl Outputs {
    /// Each output with its path relative to this crate's manifest directory.
    pub fn files(&self) -> [(&'static str, &str); 3] {
        [
            ("../src/generated.rs", &self.rust),
            ("../include/tessera/hypercall.h", &self.c_header),
            ("../ABI.md", &self.markdown),
        ]
    }
}

/// Parses and checks `spec` (the text of `abi.toml`) and renders the
/// generated files. The error lists every problem found, one per line.
pub fn generate(spec: &str) -> Result<Outputs, String> {
    let abi = Abi::parse(spec)?;
    Ok(Outputs { rust: render_rust::render(&abi), c_header: render_c::render(&abi), markdown: render_md::render(&abi) })
}

/// Every macro of the generated C header that carries a number, with the
/// Rust item holding the same number, for tests that compare the two.
pub fn symbols(spec: &str) -> Result<Vec<Symbol>, String> {
    Ok(Abi::parse(spec)?.symbols())
}

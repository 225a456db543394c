//! Links the guests at the start of guest RAM (IPA 0x4000_0000).
fn main() {
    println!("cargo:rerun-if-changed=link.x");
    if std::env::var("TARGET").unwrap_or_default().starts_with("armv7a") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
        println!("cargo:rustc-link-arg-bins=-T{dir}/link.x");
    }
}

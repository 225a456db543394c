//! Links the hypervisor binary with `link.x` when building for the target.
fn main() {
    println!("cargo:rerun-if-changed=link.x");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("armv7a") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
        println!("cargo:rustc-link-arg-bins=-T{dir}/link.x");
    }
}

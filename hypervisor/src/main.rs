//! The hypervisor image. Everything lives in the library; this binary only
//! links it with the memory layout of `link.x`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
use tessera as _;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the Tessera hypervisor runs in HYP mode on armv7a-none-eabi: build it with `cargo xtask build`");
    std::process::exit(2);
}

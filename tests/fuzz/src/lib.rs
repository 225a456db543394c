//! Fuzz targets for everything a guest or a file feeds Tessera: hypercall
//! arguments, trapped accesses and their decoding, the virtual GIC's
//! registers, the PL011, virtqueues and the virtio devices (rng, console,
//! block, net with its switch), the boot payload and the VM configuration.
//!
//! Each target is a `fn(&[u8])` that turns its bytes into operations, runs
//! them against the real code (built for the host with the fake arch), and
//! asserts what must hold whatever the input: no panic, no access outside the
//! guest's RAM, no write the driver did not allow, bounded work per pass, a
//! device that a clean driver can still use afterwards.
//!
//! `cargo xtask fuzz` runs them under libFuzzer (feature `libfuzzer`, one
//! binary per target in fuzz_targets/); `cargo test` replays the seed corpus
//! and a few thousand generated inputs through the same functions.

pub mod config;
pub mod hypercall;
pub mod net;
pub mod payload;
pub mod pl011;
pub mod ram;
pub mod trap;
pub mod vgic;
pub mod virtio;
pub mod virtqueue;

/// `TESSERA_FUZZ_TRACE=1`: targets print each operation they decode (to
/// read what a crash input does: run the target's binary on it).
pub fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("TESSERA_FUZZ_TRACE").is_some())
}

/// One fuzz target: its name (the binary's and the corpus folder's) and entry.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[Target] = &[
    ("hypercall", hypercall::run),
    ("trap", trap::run),
    ("vgic", vgic::run),
    ("pl011", pl011::run),
    ("virtqueue", virtqueue::run),
    ("virtio_rng", virtio::rng),
    ("virtio_console", virtio::console),
    ("virtio_blk", virtio::block),
    ("net", net::run),
    ("payload", payload::run),
    ("config", config::run),
];

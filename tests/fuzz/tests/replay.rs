//! Every fuzz target over its seed corpus (tests/fuzz/corpus/<target>/, the
//! inputs `cargo xtask fuzz` found that reach new code, and any crash it once
//! found, kept after the fix) and over a few thousand pseudo-random inputs.
//! A cheap smoke test in `cargo xtask test`; the search itself is
//! `cargo xtask fuzz`.

use std::path::Path;

/// xorshift64*: deterministic, so a failure here is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

const RANDOM_INPUTS: usize = 2000;

fn replay(name: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(name);
    let mut seeds = 0;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{name}: seed {} fails", file.display());
            seeds += 1;
        }
    }
    let mut rng = Rng(0x7e55_e7a0 ^ (name.len() as u64 * 0x9e37_79b9));
    let mut data = Vec::new();
    for i in 0..RANDOM_INPUTS {
        let len = (rng.next() % if i % 8 == 0 { 4096 } else { 256 }) as usize;
        data.clear();
        data.extend((0..len).map(|_| rng.next() as u8));
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{name}: random input {i} ({len} bytes) fails");
    }
    eprintln!("{name}: {seeds} seeds, {RANDOM_INPUTS} random inputs");
}

#[test]
fn every_target_survives_its_corpus_and_random_inputs() {
    for &(name, run) in tessera_fuzz::TARGETS {
        replay(name, run);
    }
}

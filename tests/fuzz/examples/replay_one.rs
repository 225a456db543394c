//! `cargo run -p tessera-fuzz --example replay_one -- TARGET FILE`: one
//! input through one target, outside libFuzzer (with TESSERA_FUZZ_TRACE=1
//! to see its operations).
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, file] = args.as_slice() else {
        eprintln!("usage: replay_one TARGET FILE");
        std::process::exit(2);
    };
    let Some((_, run)) = tessera_fuzz::TARGETS.iter().find(|(n, _)| n == target) else {
        eprintln!("no target {target}");
        std::process::exit(2);
    };
    let data = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    run(&data);
    println!("{target}: {file} passes");
}

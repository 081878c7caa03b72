//! Every input a fuzzer ever crashed on (`fuzz/regressions/<target>/`), and the seed corpus
//! (`fuzz/seeds/<target>/`), run through the same property checks as the fuzz targets, on
//! stable Rust, in every test run.

use std::path::Path;

#[test]
fn every_stored_fuzz_input_passes_its_targets_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut checked = 0;
    for (target, check) in sluice::fuzz::TARGETS {
        for kind in ["regressions", "seeds"] {
            let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else { continue };
            for entry in entries {
                let path = entry.expect("dir entry").path();
                if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                    continue;
                }
                let data = std::fs::read(&path).expect("read input");
                if std::panic::catch_unwind(|| check(&data)).is_err() {
                    panic!("{} fails {target}'s checks", path.display());
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= sluice::fuzz::TARGETS.len(), "every target has at least a seed ({checked} inputs)");
}

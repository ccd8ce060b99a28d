//! The golden fixtures: rebuilt in memory they must match the committed files
//! byte for byte, and the Rust verifier must give each file its stated verdict.
//!
//! Set `FOLIO_REGENERATE_GOLDEN=1` to rewrite `fixtures/golden/` instead.

use std::path::PathBuf;

use domain::verify::verify_export;
use folio_e2e::golden::{golden_files, verdicts_json, Verdict, VERDICTS_FILE};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/golden")
}

fn regenerate_requested() -> bool {
    std::env::var("FOLIO_REGENERATE_GOLDEN").is_ok_and(|value| value == "1")
}

#[test]
fn golden_files_match_committed() {
    let files = golden_files();
    let dir = golden_dir();
    if regenerate_requested() {
        std::fs::create_dir_all(&dir).expect("create fixtures/golden");
        for file in &files {
            std::fs::write(dir.join(file.name), &file.bytes).expect("write fixture");
        }
        std::fs::write(dir.join(VERDICTS_FILE), verdicts_json(&files)).expect("write verdicts");
        return;
    }

    let regenerate = "run FOLIO_REGENERATE_GOLDEN=1 cargo test -p folio-e2e --test golden if the change is intended";
    for file in &files {
        let path = dir.join(file.name);
        let committed = std::fs::read(&path).unwrap_or_else(|error| {
            panic!("cannot read {}: {error}; {regenerate}", path.display())
        });
        assert!(
            committed == file.bytes,
            "{} differs from the rebuilt fixture; {regenerate}",
            file.name
        );
    }
    let committed = std::fs::read_to_string(dir.join(VERDICTS_FILE)).expect("read verdicts.json");
    assert_eq!(
        committed,
        verdicts_json(&files),
        "verdicts.json differs; {regenerate}"
    );
}

#[test]
fn rust_verifier_matches_verdicts() {
    for file in golden_files() {
        let actual = match verify_export(&file.bytes) {
            Ok(_) => Verdict {
                intact: true,
                position: None,
                code: "ok".to_owned(),
            },
            Err(failure) => Verdict {
                intact: false,
                position: failure.position,
                code: failure.kind.code().to_owned(),
            },
        };
        assert_eq!(actual, file.verdict, "verdict for {}", file.name);
    }
}

#[test]
fn golden_build_is_deterministic() {
    let first = golden_files();
    let second = golden_files();
    assert_eq!(first.len(), second.len());
    for (a, b) in first.iter().zip(&second) {
        assert!(a.bytes == b.bytes, "{} differs between two builds", a.name);
    }
}

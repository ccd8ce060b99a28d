//! The independent Python verifier must give every golden fixture the verdict
//! stated in `fixtures/golden/verdicts.json`.
//!
//! Requires Python 3 with the packages in `tests/verifier/requirements.txt`: the
//! interpreter named by `FOLIO_PYTHON` (which `.ci/test` points at its virtual
//! environment), else `python3`. The test fails (it does not skip) when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use folio_e2e::golden::VERDICTS_FILE;

const INSTALL_HINT: &str = "run .ci/test, or pip install -r tests/verifier/requirements.txt \
                            and set FOLIO_PYTHON to that interpreter";

/// Returns a command for the Python interpreter that runs the verifier.
fn python() -> Command {
    Command::new(std::env::var_os("FOLIO_PYTHON").unwrap_or_else(|| "python3".into()))
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn verifier_script() -> PathBuf {
    repo_root().join("tests/verifier/folio_verify.py")
}

/// Fails with an install hint unless python3 can import the verifier's packages.
fn require_python_packages() {
    let output = python()
        .args(["-c", "import blake3, nacl.signing"])
        .output()
        .unwrap_or_else(|error| panic!("python3 cannot be started ({error}); {INSTALL_HINT}"));
    assert!(
        output.status.success(),
        "python3 lacks the verifier's packages ({}); {INSTALL_HINT}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

fn python_verdict(file: &Path) -> (serde_json::Value, Option<i32>) {
    let output = python()
        .arg(verifier_script())
        .arg("--json")
        .arg(file)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let verdict = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!(
            "verifier output for {} is not JSON ({error}): {stdout} {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (verdict, output.status.code())
}

#[test]
fn python_verifier_agrees_on_every_fixture() {
    require_python_packages();
    let dir = repo_root().join("fixtures/golden");
    let verdicts_text =
        std::fs::read_to_string(dir.join(VERDICTS_FILE)).expect("read verdicts.json");
    let verdicts: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&verdicts_text).expect("verdicts.json is a JSON object");
    assert!(
        verdicts.len() >= 10,
        "expected the full fixture set, found {}",
        verdicts.len()
    );

    for (name, expected) in &verdicts {
        let (actual, exit_code) = python_verdict(&dir.join(name));
        assert_eq!(&actual, expected, "Python verdict for {name}");
        let intact = expected["intact"].as_bool().expect("intact is a bool");
        assert_eq!(
            exit_code,
            Some(if intact { 0 } else { 1 }),
            "exit status for {name}"
        );
    }
}

#[test]
fn every_fixture_file_has_a_verdict() {
    let dir = repo_root().join("fixtures/golden");
    let verdicts_text =
        std::fs::read_to_string(dir.join(VERDICTS_FILE)).expect("read verdicts.json");
    let verdicts: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&verdicts_text).expect("verdicts.json is a JSON object");
    for entry in std::fs::read_dir(&dir).expect("list fixtures/golden") {
        let name = entry
            .expect("directory entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".folio") {
            assert!(
                verdicts.contains_key(&name),
                "{name} has no entry in verdicts.json"
            );
        }
    }
}

/// A small deterministic generator (xorshift64), so the mutations are the same on every run.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

/// Applies one random corruption: bit flips, a cut, a replaced byte or two swapped bytes.
fn mutate(bytes: &mut Vec<u8>, rng: &mut Xorshift) {
    match rng.below(4) {
        0 => {
            for _ in 0..=rng.below(3) {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
            }
        }
        1 => bytes.truncate(rng.below(bytes.len())),
        2 => {
            let at = rng.below(bytes.len());
            bytes[at] = rng.below(256) as u8;
        }
        _ => {
            let (a, b) = (rng.below(bytes.len()), rng.below(bytes.len()));
            bytes.swap(a, b);
        }
    }
}

fn rust_verdict(bytes: &[u8]) -> serde_json::Value {
    match domain::verify::verify_export(bytes) {
        Ok(_) => serde_json::json!({"intact": true, "position": null, "code": "ok"}),
        Err(failure) => serde_json::json!({
            "intact": false,
            "position": failure.position,
            "code": failure.kind.code(),
        }),
    }
}

#[test]
fn python_and_rust_agree_on_corruptions() {
    require_python_packages();
    let sources = folio_e2e::golden::golden_files();
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut rng = Xorshift(0x5eed_f011_0000_0001);
    let mut expected = Vec::new();
    for index in 0..200 {
        let source = &sources[if index % 3 == 0 {
            rng.below(sources.len())
        } else {
            0
        }];
        let mut bytes = source.bytes.clone();
        mutate(&mut bytes, &mut rng);
        let path = dir.path().join(format!("corrupt-{index:03}.folio"));
        std::fs::write(&path, &bytes).expect("write corrupted copy");
        expected.push((path, rust_verdict(&bytes)));
    }

    let output = python()
        .arg(verifier_script())
        .arg("--json")
        .args(expected.iter().map(|(path, _)| path))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        expected.len(),
        "one verdict per file; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    for ((path, rust), line) in expected.iter().zip(lines) {
        let mut python: serde_json::Value = serde_json::from_str(line).expect("JSON verdict line");
        let file = python
            .as_object_mut()
            .and_then(|o| o.remove("file"))
            .expect("file key");
        assert_eq!(file.as_str(), path.to_str(), "verdict order");
        assert_eq!(
            &python,
            rust,
            "Python and Rust disagree on {}",
            path.display()
        );
    }
}

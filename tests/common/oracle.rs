//! The legacy implementation (Python 2.7 + `hardware==0.18`) as a black-box
//! oracle: one batched python2.7 process per test.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value as Json;

fn python(args: &[&str]) -> std::io::Result<Output> {
    Command::new("python2.7")
        .env("PYENV_VERSION", "2.7.18")
        .args(args)
        .output()
}

/// Whether python2.7 can import `modules`. Missing, the test fails unless
/// `EDEPLOY_SKIP_ORACLE=1` (then the caller skips).
pub fn available(modules: &str) -> bool {
    if python(&["-c", &format!("import {modules}")]).is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var("EDEPLOY_SKIP_ORACLE").as_deref() == Ok("1") {
        eprintln!("oracle (python2.7 + hardware) missing: skipped");
        return false;
    }
    panic!("oracle missing: install python2.7 + hardware==0.18, or set EDEPLOY_SKIP_ORACLE=1");
}

/// Runs `tests/oracle/<script> cases.json` on `cases` (a JSON array) and
/// returns its JSON answer, one result per case; `None` when skipped.
pub fn run(script: &str, modules: &str, cases: &Json) -> Option<Vec<Json>> {
    if !available(modules) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("cases.json");
    std::fs::write(&input, serde_json::to_vec(cases).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/oracle")
        .join(script);
    let out = python(&[script.to_str().unwrap(), input.to_str().unwrap()]).unwrap();
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Json> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), cases.as_array().unwrap().len());
    Some(results)
}

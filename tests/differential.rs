//! Differential test of `upload -f` against the legacy implementation.
//!
//! The acceptance test of the project: thousands of random requests
//! (tests/oracle/gen_cases.py) are run both by the legacy server flow on
//! Python 2.7 with `hardware==0.18` (tests/oracle/legacy_upload.py) and by our
//! `upload` binary, each on its own copy of the case. The profile (or the
//! error message), the `var` dict as printed in the configure script, and
//! every file the request leaves behind (state, CMDB, `.cmdb.orig`, the
//! `<sysname>.hw` file: names and bytes) must be identical.
//!
//! Environment: EDEPLOY_DIFF_CASES (default 2000), EDEPLOY_DIFF_SEED,
//! EDEPLOY_DIFF_SHOW (mismatches printed, default 10), EDEPLOY_DIFF_KEEP=1
//! (keep the work directory), EDEPLOY_SKIP_ORACLE=1 (skip when the oracle
//! is missing; otherwise a missing oracle fails the test), EDEPLOY_PYTHON2
//! and EDEPLOY_PYTHON3 (interpreters), EDEPLOY_DIFF_UPLOAD (the `upload`
//! executable under test, default: this package's), EDEPLOY_DIFF_HARD=1
//! (`gen_cases.py --hard`: deep backtracking; the legacy gets 120 s a case
//! unless EDEPLOY_ORACLE_TIMEOUT says otherwise, and the slowest cases of
//! both are printed).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

const DEFAULT_CASES: usize = 2000;
const DEFAULT_SEED: &str = "20240611";
/// First line of every generated `.configure`: the `var = ...` block of a
/// configure script ends where it starts (see gen_cases.py).
const MARKER: &str = "# edeploy-difftest: the .configure file starts here\n";
/// Entries of a case directory that are inputs or scratch, never results.
const NOT_RESULTS: [&str; 4] = ["edeploy.conf", "request.json", "expected", "run"];
/// Error kinds of the contract: anything else the oracle raised is a crash of
/// the legacy code (Python exception text), which we do not imitate.
const CONTRACT_ERRORS: [&str; 3] = ["StateError", "CmdbError", "InvalidHw"];
const ORACLE_BATCHES: usize = 2;
const OUR_TIMEOUT: Duration = Duration::from_secs(20);

fn oracle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("oracle")
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn python2() -> Command {
    let mut cmd = Command::new(env_or("EDEPLOY_PYTHON2", "python2.7"));
    if std::env::var_os("PYENV_VERSION").is_none() {
        cmd.env("PYENV_VERSION", "2.7.18");
    }
    cmd
}

/// Why the oracle cannot run, if it cannot.
fn oracle_missing() -> Option<String> {
    let probe = python2()
        .args([
            "-c",
            "import hardware.state, hardware.matcher, hardware.cmdb",
        ])
        .output();
    match probe {
        Err(err) => Some(format!("cannot run python2.7: {err}")),
        Ok(out) if !out.status.success() => Some(format!(
            "python2.7 cannot import the hardware library: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// Every result file of a case: relative path -> bytes.
fn result_files(case: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, rel: &str, top: bool, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).expect("read directory") {
            let entry = entry.expect("directory entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            if top && NOT_RESULTS.contains(&name.as_str()) {
                continue;
            }
            // The spares the state and CMDB are exchanged with (an older
            // version, see store::prepare_file_locked), the layouts of CMDBs
            // (cmdb::Layout) and the record of the last commit
            // (store::commit_all): ours only, by design.
            let hidden = |suffix| name.starts_with('.') && name.ends_with(suffix);
            if hidden(".spare") || hidden(".layout") || name == ".edeploy-commit" {
                continue;
            }
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if entry.file_type().expect("file type").is_dir() {
                walk(&entry.path(), &path, false, out);
            } else {
                out.insert(path, fs::read(entry.path()).expect("read file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(case, "", true, &mut out);
    out
}

struct Ours {
    status: Option<ExitStatus>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    elapsed: Duration,
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// The `upload` under test: ours, or EDEPLOY_DIFF_UPLOAD (another build, or
/// a stand-in to check this harness).
fn upload_binary() -> PathBuf {
    std::env::var_os("EDEPLOY_DIFF_UPLOAD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_upload")))
}

/// Run our binary on a case; its output goes to files beside the case so
/// that a large script can never block on a full pipe.
fn run_ours(case: &Path, failure: Option<&str>, out_dir: &Path) -> Ours {
    let name = case.file_name().expect("case name").to_string_lossy();
    let stdout_path = out_dir.join(format!("{name}.stdout"));
    let stderr_path = out_dir.join(format!("{name}.stderr"));
    let mut cmd = Command::new(upload_binary());
    cmd.arg("-f").arg(case.join("hw.json"));
    if let Some(profile) = failure {
        cmd.arg("-F").arg(profile);
    }
    cmd.env("EDEPLOY_CONF", case.join("edeploy.conf"))
        .env_remove("GATEWAY_INTERFACE")
        .env_remove("REQUEST_METHOD")
        .current_dir(case)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).expect("create stdout file"))
        .stderr(fs::File::create(&stderr_path).expect("create stderr file"));
    let start = Instant::now();
    let status = match cmd.spawn() {
        Ok(mut child) => wait_with_timeout(&mut child, OUR_TIMEOUT),
        Err(err) => panic!("cannot run {}: {err}", upload_binary().display()),
    };
    Ours {
        status,
        stdout: fs::read(&stdout_path).unwrap_or_default(),
        stderr: fs::read(&stderr_path).unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// The slowest cases of each engine: (legacy seconds, ours, case).
fn slowest(times: &mut [(f64, f64, &str)]) -> String {
    let mut out = String::from("slowest cases (legacy s / ours s):");
    times.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (legacy, ours, name) in times.iter().take(8) {
        let _ = write!(out, "\n  legacy {legacy:8.3}  ours {ours:7.4}  {name}");
    }
    times.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (legacy, ours, name) in times.iter().take(8) {
        let _ = write!(out, "\n  ours {ours:7.4}  legacy {legacy:8.3}  {name}");
    }
    out
}

/// The message of an error script: the body of its heredoc.
fn heredoc_message(script: &str) -> Option<String> {
    let mut lines = script.lines();
    let start = lines.find(|l| l.trim_start().starts_with("cat <<"))?;
    let delim = start.trim_start()["cat <<".len()..]
        .trim()
        .trim_start_matches('-')
        .trim_matches(|c| c == '\'' || c == '"');
    let body: Vec<&str> = lines.take_while(|l| *l != delim).collect();
    Some(body.join("\n"))
}

/// The `var = ...` block of a configure script, as pprint printed it.
fn var_block(script: &str) -> Option<&str> {
    let start = script.find("\nvar = ")? + "\nvar = ".len();
    let end = start + script[start..].find(MARKER)?;
    Some(&script[start..end])
}

fn json_str<'a>(result: &'a Json, key: &str) -> Option<&'a str> {
    result.get(key).and_then(Json::as_str)
}

fn show_bytes(bytes: &[u8]) -> String {
    const MAX: usize = 1500;
    let text = String::from_utf8_lossy(bytes);
    if text.len() > MAX {
        let cut = (0..=MAX)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}\n... ({} bytes)", &text[..cut], bytes.len())
    } else {
        text.into_owned()
    }
}

/// Where two texts first differ, with a little context.
fn first_difference(expected: &str, actual: &str) -> String {
    let exp: Vec<&str> = expected.split('\n').collect();
    let act: Vec<&str> = actual.split('\n').collect();
    let at = exp
        .iter()
        .zip(&act)
        .position(|(e, a)| e != a)
        .unwrap_or(exp.len().min(act.len()));
    let from = at.saturating_sub(2);
    let mut out = format!("    first difference at line {}:\n", at + 1);
    for (label, lines) in [("legacy", &exp), ("ours  ", &act)] {
        for (n, line) in lines.iter().enumerate().skip(from).take(5) {
            let mark = if n == at { '>' } else { ' ' };
            let _ = writeln!(out, "    {label} {mark}{:4}| {line:?}", n + 1);
        }
    }
    out
}

/// Compare one case; returns the list of differences (empty when equal).
fn compare_case(oracle_case: &Path, our_case: &Path, result: &Json, ours: &Ours) -> Vec<String> {
    let mut diffs = Vec::new();
    let outcome = json_str(result, "outcome").unwrap_or("");
    let stdout = String::from_utf8_lossy(&ours.stdout);
    let code = ours.status.and_then(|s| s.code());
    match outcome {
        "match" => {
            if code != Some(0) {
                diffs.push(format!(
                    "legacy matched profile {:?}; ours exited {:?}:\n{}",
                    json_str(result, "profile"),
                    code,
                    show_bytes(&ours.stdout)
                ));
            } else {
                let profile = json_str(result, "profile").unwrap_or("");
                let want = format!("#EDEPLOY_PROFILE = {profile}\n");
                if !stdout.contains(&want) {
                    let got = stdout.lines().find(|l| l.starts_with("#EDEPLOY_PROFILE"));
                    diffs.push(format!("profile: legacy {profile:?}, ours {got:?}"));
                }
                let legacy_var = json_str(result, "var").unwrap_or("");
                match var_block(&stdout) {
                    None => diffs.push(format!(
                        "no `var = ...` block followed by the .configure marker in our script:\n{}",
                        show_bytes(&ours.stdout)
                    )),
                    Some(var) if var != legacy_var => diffs.push(format!(
                        "var differs:\n  legacy:\n{legacy_var}\n  ours:\n{var}\n{}",
                        first_difference(legacy_var, var)
                    )),
                    Some(_) => {}
                }
                let configure = fs::read_to_string(
                    our_case.join("config").join(format!("{profile}.configure")),
                )
                .unwrap_or_default();
                if !configure.is_empty() && !stdout.ends_with(&configure) {
                    diffs.push("our script does not end with the .configure file verbatim".into());
                }
            }
        }
        "failure-recorded" | "failure-ignored" => {
            if code != Some(0) || !ours.stdout.is_empty() {
                diffs.push(format!(
                    "failure report ({outcome}): legacy answers nothing; ours exited {code:?} with:\n{}",
                    show_bytes(&ours.stdout)
                ));
            }
        }
        "error" => {
            let legacy = json_str(result, "message")
                .unwrap_or("")
                .replace(&oracle_case.display().to_string(), "<CASE>");
            let ours_msg = heredoc_message(&stdout)
                .map(|m| m.replace(&our_case.display().to_string(), "<CASE>"));
            let same = match (&ours_msg, json_str(result, "exc_type")) {
                // Python's JSON error text is not ours to copy.
                (Some(m), Some("InvalidHw")) => m.starts_with("Invalid hardware file"),
                (Some(m), _) => *m == legacy,
                (None, _) => false,
            };
            if code != Some(1) || !same {
                diffs.push(format!(
                    "legacy error {legacy:?}; ours exited {code:?} with message {ours_msg:?}:\n{}",
                    show_bytes(&ours.stdout)
                ));
            }
        }
        other => diffs.push(format!("unexpected oracle outcome {other:?}")),
    }

    let expected = result_files(&oracle_case.join("expected/files"));
    let actual = result_files(our_case);
    for (path, bytes) in &expected {
        match actual.get(path) {
            None => diffs.push(format!(
                "file {path}: written by legacy, missing in ours; legacy:\n{}",
                show_bytes(bytes)
            )),
            Some(our_bytes) if our_bytes != bytes => {
                let (e, a) = (
                    String::from_utf8_lossy(bytes),
                    String::from_utf8_lossy(our_bytes),
                );
                diffs.push(format!(
                    "file {path} differs:\n{}  legacy:\n{}\n  ours:\n{}",
                    first_difference(&e, &a),
                    show_bytes(bytes),
                    show_bytes(our_bytes)
                ));
            }
            Some(_) => {}
        }
    }
    for (path, bytes) in &actual {
        if !expected.contains_key(path) {
            diffs.push(format!(
                "file {path}: written by ours only:\n{}",
                show_bytes(bytes)
            ));
        }
    }
    diffs
}

#[test]
fn upload_matches_legacy() {
    if let Some(why) = oracle_missing() {
        if std::env::var("EDEPLOY_SKIP_ORACLE").as_deref() == Ok("1") {
            eprintln!("differential test skipped (EDEPLOY_SKIP_ORACLE=1): {why}");
            return;
        }
        panic!(
            "the legacy oracle is required: {why}\n\
             install Python 2.7 with hardware==0.18 and ipaddr (pyenv 2.7.18), \
             or set EDEPLOY_SKIP_ORACLE=1 to skip this test"
        );
    }
    let cases: usize = env_or("EDEPLOY_DIFF_CASES", &DEFAULT_CASES.to_string())
        .parse()
        .expect("EDEPLOY_DIFF_CASES must be a number");
    let seed = env_or("EDEPLOY_DIFF_SEED", DEFAULT_SEED);
    let hard = std::env::var("EDEPLOY_DIFF_HARD").as_deref() == Ok("1");
    let show: usize = env_or("EDEPLOY_DIFF_SHOW", "10").parse().unwrap_or(10);
    let started = Instant::now();

    let work = tempfile::Builder::new()
        .prefix("edeploy-difftest-")
        .tempdir()
        .expect("create work directory");
    let root = work.path().to_path_buf();
    let (oracle_root, our_root, out_dir) = (
        root.join("oracle"),
        root.join("ours"),
        root.join("ours-output"),
    );
    fs::create_dir_all(&out_dir).expect("create output directory");

    // The same cases twice (they depend on the seed, not on the directory),
    // by two generators side by side: cheaper than copying.
    let generators: Vec<_> = [&oracle_root, &our_root]
        .iter()
        .map(|dir| {
            Command::new(env_or("EDEPLOY_PYTHON3", "python3"))
                .arg(oracle_dir().join("gen_cases.py"))
                .arg("--out")
                .arg(dir)
                .args(["--count", &cases.to_string(), "--seed", &seed])
                .args(hard.then_some("--hard"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run python3 gen_cases.py")
        })
        .collect();
    for generator in generators {
        let out = generator.wait_with_output().expect("wait for gen_cases.py");
        assert!(
            out.status.success(),
            "gen_cases.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let names: Vec<String> = (0..cases).map(|i| format!("case-{i:05}")).collect();
    let prepared = started.elapsed();

    // Two oracle batches, one per core, while ours run beside them.
    let mut oracles = Vec::new();
    for batch in 0..ORACLE_BATCHES {
        let list = root.join(format!("oracle-cases-{batch}.txt"));
        let listing: String = names
            .iter()
            .skip(batch)
            .step_by(ORACLE_BATCHES)
            .map(|n| format!("{}\n", oracle_root.join(n).display()))
            .collect();
        fs::write(&list, listing).expect("write case list");
        let log = root.join(format!("oracle-{batch}.log"));
        let mut oracle = python2();
        if hard && std::env::var_os("EDEPLOY_ORACLE_TIMEOUT").is_none() {
            oracle.env("EDEPLOY_ORACLE_TIMEOUT", "120");
        }
        let child = oracle
            .arg(oracle_dir().join("legacy_upload.py"))
            .arg("-")
            .stdin(fs::File::open(&list).expect("open case list"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("create oracle log"))
            .spawn()
            .expect("run legacy_upload.py");
        oracles.push((child, log));
    }

    let mut ours = Vec::with_capacity(cases);
    for name in &names {
        let case = our_root.join(name);
        let request: Json = serde_json::from_slice(
            &fs::read(case.join("request.json")).expect("read request.json"),
        )
        .expect("parse request.json");
        let failure = request.get("failure").and_then(Json::as_str);
        ours.push(run_ours(&case, failure, &out_dir));
    }
    let ours_done = started.elapsed();
    for (mut child, log) in oracles {
        let status = child.wait().expect("wait for the oracle");
        assert!(
            status.success(),
            "legacy_upload.py failed; see {}",
            log.display()
        );
    }
    let oracle_done = started.elapsed();

    let mut times: Vec<(f64, f64, &str)> = Vec::new();
    let mut mismatches: Vec<(String, Vec<String>)> = Vec::new();
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (name, ours) in names.iter().zip(&ours) {
        let oracle_case = oracle_root.join(name);
        let our_case = our_root.join(name);
        let result: Json = match fs::read(oracle_case.join("expected/result.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).expect("parse result.json"),
            Err(_) => {
                *skipped.entry("oracle wrote no result".into()).or_default() += 1;
                continue;
            }
        };
        let outcome = json_str(&result, "outcome").unwrap_or("").to_string();
        let legacy_seconds = result.get("seconds").and_then(Json::as_f64);
        times.push((
            legacy_seconds.unwrap_or(f64::INFINITY),
            ours.elapsed.as_secs_f64(),
            name,
        ));
        let exc_type = json_str(&result, "exc_type").unwrap_or("");
        let panicked = String::from_utf8_lossy(&ours.stderr).contains("panicked");
        if ours.status.is_none() || panicked {
            mismatches.push((
                name.clone(),
                vec![format!(
                    "ours {}:\n{}",
                    if panicked { "panicked" } else { "timed out" },
                    show_bytes(&ours.stderr)
                )],
            ));
            continue;
        }
        if outcome == "timeout" || (outcome == "error" && !CONTRACT_ERRORS.contains(&exc_type)) {
            // The legacy crashed (or looped): no behaviour to imitate.
            let why = if outcome == "timeout" {
                "legacy timed out".to_string()
            } else {
                format!("legacy crashed with {exc_type}")
            };
            *skipped.entry(why).or_default() += 1;
            continue;
        }
        *outcomes.entry(outcome).or_default() += 1;
        let diffs = compare_case(&oracle_case, &our_case, &result, ours);
        if !diffs.is_empty() {
            mismatches.push((name.clone(), diffs));
        }
    }

    let compared: usize = outcomes.values().sum();
    let mut summary = format!(
        "differential test: {cases} cases (seed {seed}) in {:.1}s (generated {:.1}s, ours done {:.1}s, \
         oracle done {:.1}s); compared {compared}: {outcomes:?}; not compared: {skipped:?}",
        started.elapsed().as_secs_f64(),
        prepared.as_secs_f64(),
        ours_done.as_secs_f64(),
        oracle_done.as_secs_f64(),
    );
    eprintln!("{summary}");
    if hard {
        eprintln!("{}", slowest(&mut times));
    }
    // A generator that mostly makes legacy crashes would test nothing.
    let enough = compared * 100 >= cases * 85;
    if mismatches.is_empty() && enough {
        if std::env::var("EDEPLOY_DIFF_KEEP").as_deref() == Ok("1") {
            eprintln!("work directory kept: {}", work.keep().display());
        }
        return;
    }
    let root = work.keep();
    let gen_cmd = format!(
        "python3 {} --seed {seed}",
        oracle_dir().join("gen_cases.py").display()
    );
    let _ = write!(
        summary,
        "\n{} of {compared} compared cases differ from the legacy.\n\
         Work directory kept: {} (oracle/ and ours/: the cases after each request, \
         oracle/*/expected/ what the legacy left, ours-output/ our stdout and stderr).\n\
         Reproduce: EDEPLOY_DIFF_SEED={seed} EDEPLOY_DIFF_CASES={cases} cargo test --test differential\n\
         Fresh inputs of case N: {gen_cmd} --out DIR --first N --count 1\n",
        mismatches.len(),
        root.display()
    );
    if !enough {
        let _ = writeln!(
            summary,
            "Only {compared} of {cases} cases were comparable: fix gen_cases.py."
        );
    }
    for (name, diffs) in mismatches.iter().take(show) {
        let case = root.join("ours").join(name);
        let request = fs::read_to_string(case.join("request.json")).unwrap_or_default();
        let _ = writeln!(
            summary,
            "\n=== {name} ({}) request {}",
            case.display(),
            request.trim()
        );
        for diff in diffs {
            let _ = writeln!(summary, "  - {diff}");
        }
    }
    panic!("{summary}");
}

#[test]
fn heredoc_message_reads_both_delimiter_styles() {
    let legacy = "#!/bin/sh\n\ncat <<EOF\nNo more role available in /x/state\nEOF\n\nexit 1\n";
    let quoted = "#!/bin/sh\n\ncat <<'EOF'\nline 1\nline 2\nEOF\n\nexit 1\n";
    assert_eq!(
        heredoc_message(legacy).as_deref(),
        Some("No more role available in /x/state")
    );
    assert_eq!(heredoc_message(quoted).as_deref(), Some("line 1\nline 2"));
    assert_eq!(heredoc_message("#!/usr/bin/env python\nvar = {}\n"), None);
}

#[test]
fn var_block_ends_at_the_configure_marker() {
    let script = format!(
        "#!/usr/bin/env python\n#EDEPLOY_PROFILE = vm\n\ndef run(cmd):\n    pass\nvar = {{'a': 1,\n 'b': 2}}\n{MARKER}run('x')\n"
    );
    assert_eq!(var_block(&script), Some("{'a': 1,\n 'b': 2}\n"));
    assert_eq!(var_block("var = {}\nno marker\n"), None);
}

//! Matching speed: real profiles on real machines, and the hardest cases of
//! the differential generator (`gen_cases.py --hard`: many `$` variables
//! over many similar disks), by our `upload -f` and by the legacy server.
//!
//! `cargo bench --bench matching`. Environment: EDEPLOY_BENCH_HARD_CASES
//! (default 40), EDEPLOY_BENCH_SEED (default 3), EDEPLOY_BENCH_LEGACY=0 (skip
//! the legacy runs, which take minutes), EDEPLOY_BENCH_UPLOAD (another
//! build of `upload`).

#[path = "common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edeploy::hw::{self, Item};
use edeploy::spec::{self, Spec, Vars};

const REAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/real-hw");
const ORACLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oracle");

fn read_hw(name: &str) -> Vec<Item> {
    let path = Path::new(REAL).join("hw").join(format!("{name}.hw"));
    hw::parse_hw(&path, &fs::read(&path).expect("real .hw file")).expect("parse")
}

fn read_specs(profile: &str) -> Vec<Spec> {
    let path = Path::new(REAL)
        .join("config")
        .join(format!("{profile}.specs"));
    spec::parse_specs(&path, &fs::read(&path).expect("specs")).expect("parse specs")
}

/// Mean time of one `match_all` of `specs` on `items`, and its answer.
fn time_match(items: &[Item], specs: &[Spec]) -> (Duration, bool) {
    let rounds = 2_000;
    let mut answer = false;
    let start = Instant::now();
    for _ in 0..rounds {
        let (mut v, mut f) = (Vars::new(), Vars::new());
        answer = spec::match_all(items, specs, &mut v, &mut f).expect("match");
    }
    (start.elapsed() / rounds, answer)
}

fn real_profiles() {
    println!("real profiles (tests/fixtures/real-hw), one match_all, in process:");
    for (machine, profile) in [
        ("hp-proliant-dl360p-gen8", "hp"),
        ("hp-proliant-dl360p-gen8", "dell"),
        ("dell-poweredge-m520", "dell"),
        ("dell-poweredge-m520", "hp"),
    ] {
        let items = read_hw(machine);
        let (mean, matched) = time_match(&items, &read_specs(profile));
        println!(
            "  {machine:<26} {profile:<5} {:>8.1} us  {}",
            mean.as_secs_f64() * 1e6,
            if matched { "match" } else { "no match" }
        );
    }
}

/// The hard cases, made by the differential generator.
fn hard_cases(dir: &Path, count: usize, seed: &str) -> Vec<PathBuf> {
    let out = Command::new("python3")
        .arg(Path::new(ORACLE).join("gen_cases.py"))
        .args(["--hard", "--out"])
        .arg(dir)
        .args(["--count", &count.to_string(), "--seed", seed])
        .output()
        .expect("python3 gen_cases.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// A copy of each case, for the legacy to run on its own.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read case") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Our answer to a case: its first line and the wall time.
fn run_ours(case: &Path) -> (Duration, String) {
    let start = Instant::now();
    let out = Command::new(common::upload_binary())
        .args(["-f", "hw.json"])
        .env("EDEPLOY_CONF", case.join("edeploy.conf"))
        .current_dir(case)
        .stdin(Stdio::null())
        .output()
        .expect("run upload");
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let answer = text
        .lines()
        .find_map(|l| l.strip_prefix("#EDEPLOY_PROFILE = ").map(str::to_string))
        .unwrap_or_else(|| match text.lines().nth(3) {
            Some(message) if !text.is_empty() => format!("error: {message}"),
            _ => "empty answer".into(),
        });
    (elapsed, answer)
}

/// The legacy's time and outcome on a case (after legacy_upload.py ran).
fn legacy_result(case: &Path) -> Option<(f64, String)> {
    let bytes = fs::read(case.join("expected/result.json")).ok()?;
    let result: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let seconds = result["seconds"].as_f64()?;
    let answer = match result["outcome"].as_str()? {
        "match" => result["profile"].as_str()?.to_string(),
        "timeout" => "timeout (120 s)".into(),
        other => format!("{other}: {}", result["message"].as_str().unwrap_or("")),
    };
    Some((seconds, answer))
}

fn main() {
    if !common::benchmarking("matching") {
        return;
    }
    real_profiles();
    let count = common::env_usize("EDEPLOY_BENCH_HARD_CASES", 40);
    let seed = std::env::var("EDEPLOY_BENCH_SEED").unwrap_or_else(|_| "3".into());
    let scratch = tempfile::tempdir_in(common::scratch_parent()).expect("scratch");
    let ours_dir = scratch.path().join("ours");
    let cases = hard_cases(&ours_dir, count, &seed);
    let legacy = std::env::var("EDEPLOY_BENCH_LEGACY").as_deref() != Ok("0");
    let legacy_cases: Vec<PathBuf> = cases
        .iter()
        .map(|c| {
            let copy = scratch
                .path()
                .join("legacy")
                .join(c.file_name().expect("name"));
            copy_tree(c, &copy);
            let conf = fs::read_to_string(copy.join("edeploy.conf")).expect("conf");
            let conf = conf.replace(&c.display().to_string(), &copy.display().to_string());
            fs::write(copy.join("edeploy.conf"), conf).expect("conf");
            copy
        })
        .collect();
    let ours: Vec<(Duration, String)> = cases.iter().map(|c| run_ours(c)).collect();
    if legacy {
        println!("running the legacy server on {count} hard cases (up to 120 s each)...");
        let mut oracle = Command::new("python2.7");
        oracle
            .env("PYENV_VERSION", "2.7.18")
            .env("EDEPLOY_ORACLE_TIMEOUT", "120")
            .arg(Path::new(ORACLE).join("legacy_upload.py"))
            .args(&legacy_cases)
            .stdout(Stdio::null());
        let status = oracle.status().expect("python2.7 legacy_upload.py");
        assert!(status.success(), "the legacy harness failed");
    }
    let mut rows: Vec<Row> = cases
        .iter()
        .zip(&ours)
        .zip(&legacy_cases)
        .map(|((case, (time, answer)), copy)| Row {
            name: case
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned(),
            ours: *time,
            answer: answer.clone(),
            legacy: legacy.then(|| legacy_result(copy)).flatten(),
        })
        .collect();
    let slowest = rows.iter().map(|r| r.ours).max().unwrap_or_default();
    let total: Duration = rows.iter().map(|r| r.ours).sum();
    println!(
        "hard cases (gen_cases.py --hard, seed {seed}): {count}, ours {:.3} s in all, \
         slowest {:.1} ms",
        total.as_secs_f64(),
        slowest.as_secs_f64() * 1e3
    );
    println!("slowest for us:");
    rows.sort_by_key(|r| std::cmp::Reverse(r.ours));
    for r in rows.iter().take(8) {
        println!("  {}  ours {:8.1} ms  {}", r.name, ms(r.ours), r.answer);
    }
    if !legacy {
        return;
    }
    // Errors name the case directory, which differs: compare their kind.
    let kind = |answer: &str| answer.split(':').next().unwrap_or("").to_string();
    let same = rows
        .iter()
        .filter(|r| {
            r.legacy
                .as_ref()
                .is_some_and(|(_, a)| kind(a) == kind(&r.answer))
        })
        .count();
    println!("slowest for the legacy (the same answer in {same} of {count} cases):");
    rows.sort_by(|a, b| legacy_seconds(b).total_cmp(&legacy_seconds(a)));
    for r in rows.iter().take(8) {
        if let Some((seconds, legacy_answer)) = &r.legacy {
            println!(
                "  {}  legacy {seconds:8.2} s  ours {:7.1} ms  legacy: {legacy_answer}; ours: {}",
                r.name,
                ms(r.ours),
                r.answer
            );
        }
    }
}

/// One hard case: our time and answer, the legacy's.
struct Row {
    name: String,
    ours: Duration,
    answer: String,
    legacy: Option<(f64, String)>,
}

fn legacy_seconds(row: &Row) -> f64 {
    row.legacy.as_ref().map_or(0.0, |l| l.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

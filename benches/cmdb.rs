//! Benchmark: one `upload -f` request against a large CMDB (issue 2).
//!
//! Runs the release `upload` binary as an operator would, once per run on a
//! fresh copy of the configuration so that every run selects an entry and
//! rewrites (and fsyncs) the CMDB, and measures each process's wall time and
//! peak RSS. CMDBs: 65,536 and 250 entries, already expanded (half of them
//! used, holding their machine's variables) and as a `generate()` model (the
//! first request expands it). The legacy library runs the 65,536-entry
//! request once for comparison, and must leave the same CMDB behind.
//!
//! Targets: 65,536 entries in at most 50 ms and 32 MiB; 250 entries in at
//! most 3 ms. `EDEPLOY_BENCH_RUNS` (default 20) sets the number of runs;
//! `EDEPLOY_BENCH_LEGACY=0` skips the legacy runs (about a minute).

mod common;

use std::ffi::{c_int, c_long};
use std::fs;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{ms, Summary, PROFILE};
use edeploy::cmdb::DEFAULT_MAX_CMDB_SIZE;
use edeploy::config::DEFAULT_MAX_HW_SIZE;
use edeploy::hw::DEFAULT_MAX_HW_LINES;

const ORACLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/oracle_request.py");

/// `struct rusage` of Linux: two `struct timeval`s (user and system CPU
/// time), then 14 longs.
#[repr(C)]
struct Rusage {
    utime: [c_long; 2],
    stime: [c_long; 2],
    rest: [c_long; 14],
}

extern "C" {
    /// std reaps children with waitpid and drops their resource usage.
    fn wait4(pid: c_int, status: *mut c_int, options: c_int, rusage: *mut Rusage) -> c_int;
}

/// Waits for `child` and returns its exit status and CPU time (user +
/// system). Its `ru_maxrss` is useless here: a child's peak RSS includes
/// the memory of the process it was spawned from (this one, which holds
/// the CMDBs), so peak RSS is measured through /usr/bin/time instead.
fn wait_with_cpu(child: Child) -> io::Result<(ExitStatus, Duration)> {
    let pid = c_int::try_from(child.id()).map_err(io::Error::other)?;
    let mut status: c_int = 0;
    let mut usage = Rusage {
        utime: [0; 2],
        stime: [0; 2],
        rest: [0; 14],
    };
    loop {
        // SAFETY: both pointers are to live, properly sized locals; `pid` is
        // our unreaped child (std only reaps in wait/try_wait, never called).
        let r = unsafe { wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let time = |tv: [c_long; 2]| {
        Duration::from_secs(u64::try_from(tv[0]).unwrap_or(0))
            + Duration::from_micros(u64::try_from(tv[1]).unwrap_or(0))
    };
    Ok((
        ExitStatus::from_raw(status),
        time(usage.utime) + time(usage.stime),
    ))
}

/// One process run: wall time from spawn to exit, and CPU time.
struct Run {
    wall: Duration,
    cpu: Duration,
}

/// Runs `cmd` (output into `out_dir/stdout` and `stderr`), failing the
/// benchmark if it fails.
fn run(cmd: Command, out_dir: &Path) -> Run {
    run_expecting(cmd, out_dir, true)
}

/// [`run`], failing the benchmark unless the command succeeds (`success`)
/// or fails (a request refused).
fn run_expecting(mut cmd: Command, out_dir: &Path, success: bool) -> Run {
    let stdout = fs::File::create(out_dir.join("stdout")).expect("stdout file");
    let stderr = fs::File::create(out_dir.join("stderr")).expect("stderr file");
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    let start = Instant::now();
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let (status, cpu) = wait_with_cpu(child).expect("wait4");
    let wall = start.elapsed();
    if status.success() != success {
        panic!(
            "{cmd:?}: {status}\n{}{}",
            fs::read_to_string(out_dir.join("stdout")).unwrap_or_default(),
            fs::read_to_string(out_dir.join("stderr")).unwrap_or_default()
        );
    }
    Run { wall, cpu }
}

const TIME: &str = "/usr/bin/time";

/// Runs `cmd` under /usr/bin/time (a small process, whose children's peak
/// RSS is their own) and returns the peak RSS in bytes, or `None` without
/// /usr/bin/time.
fn peak_rss(cmd: &Command, out_dir: &Path) -> Option<u64> {
    peak_rss_expecting(cmd, out_dir, true)
}

/// [`peak_rss`] of a command that succeeds (`success`) or fails.
fn peak_rss_expecting(cmd: &Command, out_dir: &Path, success: bool) -> Option<u64> {
    if !Path::new(TIME).exists() {
        return None;
    }
    let report = out_dir.join("time");
    let mut timed = Command::new(TIME);
    timed.arg("-f").arg("%M").arg("-o").arg(&report);
    timed.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            timed.env(k, v);
        }
    }
    run_expecting(timed, out_dir, success);
    let kb: u64 = fs::read_to_string(&report)
        .ok()
        // After "Command exited with non-zero status N" for a failure.
        .and_then(|s| s.lines().last()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {}", report.display()));
    Some(kb * 1024)
}

/// A CMDB to benchmark.
struct Case {
    label: String,
    entries: usize,
    /// The CMDB file's text.
    cmdb: Vec<u8>,
    /// Index of the entry a new machine gets.
    chosen: usize,
    target_ms: f64,
    target_rss: Option<u64>,
}

impl Case {
    fn expanded(entries: usize, target_ms: f64, target_rss: Option<u64>) -> Case {
        let used = entries / 2;
        Case {
            label: format!("{entries} entries, list ({used} used)"),
            entries,
            cmdb: common::cmdb_expanded(entries, used),
            chosen: used,
            target_ms,
            target_rss,
        }
    }

    fn generated(entries: usize, target_ms: f64, target_rss: Option<u64>) -> Case {
        Case {
            label: format!("{entries} entries, generate()"),
            entries,
            cmdb: common::cmdb_model(entries).into_bytes(),
            chosen: 0,
            target_ms,
            target_rss,
        }
    }

    /// The scratch root `dir` holding a fresh copy of this case's
    /// configuration and the hardware description of machine `machine`;
    /// returns the `edeploy.conf` and hardware file paths.
    ///
    /// The files are rewritten in place, the rest stays: as on a server in
    /// service, the spares of the state and CMDB exist. Removing the tree
    /// between runs would also make file creation slow for minutes on ext4
    /// without a journal, which skips recently freed inodes.
    fn prepare(&self, dir: &Path, machine: usize) -> (PathBuf, PathBuf) {
        fs::create_dir_all(dir).expect("scratch root");
        let conf = dir.join("edeploy.conf");
        common::write_edeploy_conf(&conf, &dir.join("data"));
        common::write_profile(&dir.join("data/config"), None, Some(&self.cmdb));
        let hw = dir.join("hw.json");
        fs::write(&hw, common::hw_json(machine)).expect("write hw.json");
        (conf, hw)
    }

    fn cmdb_file(dir: &Path) -> PathBuf {
        dir.join("data/config").join(format!("{PROFILE}.cmdb"))
    }

    /// Checks what the request did: the chosen entry, in the script and the file.
    fn check(&self, dir: &Path) {
        let hostname = format!("'hostname': 'node{:05}'", self.chosen + 1);
        let script = fs::read_to_string(dir.join("stdout")).expect("stdout");
        assert!(
            script.contains(&format!("#EDEPLOY_PROFILE = {PROFILE}\n"))
                && script.contains(&hostname),
            "{}: unexpected script:\n{script}",
            self.label
        );
        let cmdb = fs::read(Self::cmdb_file(dir)).expect("cmdb");
        let used = count(&cmdb, b"'used': 1");
        let expected_used = self.chosen + 1;
        assert_eq!(
            used, expected_used,
            "{}: used entries after the request",
            self.label
        );
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

struct Measured {
    wall: Summary,
    cpu: Summary,
    rss_max: Option<u64>,
}

/// `runs` requests, each on a fresh copy, timed; then as many under
/// /usr/bin/time for the peak RSS.
fn measure(case: &Case, scratch: &Path, runs: usize) -> Measured {
    let dir = scratch.join("upload");
    let request = |conf: &Path, hw: &Path| {
        let mut cmd = Command::new(common::upload_binary());
        cmd.arg("-f").arg(hw).env("EDEPLOY_CONF", conf);
        cmd
    };
    let mut walls = Vec::with_capacity(runs);
    let mut cpus = Vec::with_capacity(runs);
    for r in 0..runs {
        let (conf, hw) = case.prepare(&dir, r);
        let run = run(request(&conf, &hw), &dir);
        case.check(&dir);
        walls.push(run.wall);
        cpus.push(run.cpu);
    }
    let mut rss_max = None;
    for r in 0..runs {
        let (conf, hw) = case.prepare(&dir, r);
        let Some(rss) = peak_rss(&request(&conf, &hw), &dir) else {
            eprintln!("{TIME} missing (apt-get install time): peak RSS not measured");
            break;
        };
        case.check(&dir);
        rss_max = rss_max.max(Some(rss));
    }
    Measured {
        wall: Summary::of(&walls),
        cpu: Summary::of(&cpus),
        rss_max,
    }
}

/// The legacy library on the same request, once timed and once for its
/// peak RSS; `None` when Python 2.7 with `hardware` is missing. Checks that
/// it leaves the same CMDB and state as we do.
fn oracle(case: &Case, scratch: &Path) -> Option<(Run, Option<u64>)> {
    let probe = Command::new("python2.7")
        .args(["-c", "import hardware.state"])
        .env("PYENV_VERSION", "2.7.18")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("python2.7 with hardware==0.18 missing: legacy comparison skipped");
        return None;
    }
    let dir = scratch.join("oracle");
    let request = |hw: &Path| {
        let mut cmd = Command::new("python2.7");
        cmd.env("PYENV_VERSION", "2.7.18")
            .arg(ORACLE)
            .arg(format!("{}/", dir.join("data/config").display()))
            .arg(hw)
            .arg(dir.join("data/lock/legacy.lock"));
        cmd
    };
    let (_, hw) = case.prepare(&dir, 0);
    let rss = peak_rss(&request(&hw), &dir);
    let (_, hw) = case.prepare(&dir, 0);
    let legacy = run(request(&hw), &dir);

    let ours = scratch.join("ours");
    let (conf, hw) = case.prepare(&ours, 0);
    let mut cmd = Command::new(common::upload_binary());
    cmd.arg("-f").arg(&hw).env("EDEPLOY_CONF", &conf);
    run(cmd, &ours);
    for name in [format!("{PROFILE}.cmdb"), "state".to_owned()] {
        let a = fs::read(ours.join("data/config").join(&name)).expect("our file");
        let b = fs::read(dir.join("data/config").join(&name)).expect("legacy file");
        assert!(a == b, "{}: {name} differs from the legacy one", case.label);
    }
    Some((legacy, rss))
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".to_owned(), |b| {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    })
}

/// A file size for the table.
fn size(bytes: usize) -> String {
    match bytes {
        0..10_000 => format!("{bytes} B"),
        10_000..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        _ => format!("{:.2} MB", bytes as f64 / 1e6),
    }
}

/// A hardware description as large as the default limits allow: machine
/// 0's, padded to MAXHWLINES lines filling MAXHWSIZE.
fn hw_json_at_limits() -> Vec<u8> {
    let mut lines: Vec<[String; 4]> =
        serde_json::from_str(&common::hw_json(0)).expect("hw json of machine 0");
    let value_len = (DEFAULT_MAX_HW_SIZE / DEFAULT_MAX_HW_LINES as u64) as usize - 32;
    for i in lines.len()..DEFAULT_MAX_HW_LINES {
        lines.push([
            "pad".into(),
            format!("p{i}"),
            "value".into(),
            "x".repeat(value_len),
        ]);
    }
    let json = serde_json::to_vec(&lines).expect("hw json");
    assert!(json.len() as u64 <= DEFAULT_MAX_HW_SIZE, "{}", json.len());
    json
}

/// 4 MiB of `0,`: 2 million lines, refused by MAXHWLINES.
fn hw_json_hostile() -> Vec<u8> {
    let mut json = b"[".to_vec();
    while (json.len() as u64) < DEFAULT_MAX_HW_SIZE - 2 {
        json.extend_from_slice(b"0,");
    }
    json.extend_from_slice(b"0]");
    json
}

/// A `generate()` model whose expansion is just under MAXCMDBSIZE: entries
/// of 1 kB (`{'n': '00001',\n  'pad': 'xx…'}` and the separator).
fn cmdb_model_at_limit() -> Vec<u8> {
    let entry = 1000 + 50;
    let entries = DEFAULT_MAX_CMDB_SIZE as usize / entry;
    format!(
        "generate({{'hostname': 'node00001-{entries:05}', 'pad': '{}'}})\n",
        "x".repeat(1000)
    )
    .into_bytes()
}

/// A request at the limits: label, hardware, CMDB, requests made before the
/// measured one (to expand the CMDB), whether it succeeds.
type LimitCase<'a> = (&'a str, &'a [u8], &'a [u8], usize, bool);

/// Peak RSS (max of `runs`) and median wall time of requests at the
/// default limits: the largest hardware accepted, a hostile one refused,
/// and a CMDB near MAXCMDBSIZE, expanded by the first request and read and
/// rewritten whole by the next. Every one must stay under 64 MiB.
fn limits(scratch: &Path, runs: usize) -> Vec<String> {
    const TARGET: u64 = 64 * 1024 * 1024;
    let dir = scratch.join("limits");
    let big_hw = hw_json_at_limits();
    let hostile = hw_json_hostile();
    let model = cmdb_model_at_limit();
    let small_model = common::cmdb_model(250).into_bytes();
    // (label, hardware, CMDB, requests before the measured one, succeeds)
    let cases: [LimitCase; 5] = [
        ("4 MiB hw, 20,000 lines", &big_hw, &small_model, 0, true),
        (
            "4 MiB hw, 2M lines (refused)",
            &hostile,
            &small_model,
            0,
            false,
        ),
        (
            "generate() near limit, 1st",
            &common::hw_json(0).into_bytes(),
            &model,
            0,
            true,
        ),
        (
            "generate() near limit, 2nd",
            &common::hw_json(1).into_bytes(),
            &model,
            1,
            true,
        ),
        ("both, 2nd request", &big_hw, &model, 1, true),
    ];
    println!();
    println!(
        "at the default limits (MAXHWSIZE {}, MAXHWLINES {DEFAULT_MAX_HW_LINES}, MAXCMDBSIZE {}):",
        mib(Some(DEFAULT_MAX_HW_SIZE)),
        mib(Some(DEFAULT_MAX_CMDB_SIZE))
    );
    let mut missed = Vec::new();
    for (label, hw, cmdb, before, success) in cases {
        let mut walls = Vec::new();
        let mut rss_max = None;
        let mut cmdb_size = 0;
        for _ in 0..runs {
            fs::create_dir_all(&dir).expect("scratch root");
            let conf = dir.join("edeploy.conf");
            common::write_edeploy_conf(&conf, &dir.join("data"));
            common::write_profile(&dir.join("data/config"), None, Some(cmdb));
            let hw_file = dir.join("hw.json");
            let request = || {
                let mut cmd = Command::new(common::upload_binary());
                cmd.arg("-f").arg(&hw_file).env("EDEPLOY_CONF", &conf);
                cmd
            };
            for m in 0..before {
                fs::write(&hw_file, common::hw_json(1000 + m)).expect("write hw.json");
                run(request(), &dir);
            }
            fs::write(&hw_file, hw).expect("write hw.json");
            let start = Instant::now();
            let rss = peak_rss_expecting(&request(), &dir, success);
            walls.push(start.elapsed());
            rss_max = rss_max.max(rss);
            cmdb_size = fs::metadata(Case::cmdb_file(&dir)).map_or(0, |m| m.len() as usize);
        }
        let wall = Summary::of(&walls);
        let ok = rss_max.is_none_or(|r| r <= TARGET);
        println!(
            "{label:<32} {:>8} {:>6.2} ms {:>19} {:>9}  RSS <= 64.0 MiB: {}",
            size(cmdb_size),
            ms(wall.median),
            "",
            mib(rss_max),
            if ok { "met" } else { "MISSED" }
        );
        if !ok {
            missed.push(label.to_owned());
        }
    }
    missed
}

fn main() {
    if !common::benchmarking("cmdb") {
        return;
    }
    let runs = common::env_usize("EDEPLOY_BENCH_RUNS", 20).max(1);
    let scratch = tempfile::Builder::new()
        .prefix("edeploy-bench-cmdb-")
        .tempdir_in(common::scratch_parent())
        .expect("scratch directory");
    let big_rss = Some(32 * 1024 * 1024);
    let cases = [
        Case::expanded(65_536, 50.0, big_rss),
        Case::generated(65_536, 50.0, big_rss),
        Case::expanded(250, 3.0, None),
        Case::generated(250, 3.0, None),
    ];

    println!("upload: {}", common::upload_binary().display());
    println!("load average: {}", common::load_average());
    println!(
        "scratch: {} ({runs} timed runs per case and {runs} under {TIME}, each on a fresh copy)",
        scratch.path().display()
    );
    println!();
    println!(
        "{:<32} {:>8} {:>9} {:>9} {:>9} {:>9}  target",
        "CMDB", "file", "median", "max", "CPU med", "peak RSS"
    );
    let mut missed = Vec::new();
    for case in &cases {
        let m = measure(case, scratch.path(), runs);
        let mut ok = ms(m.wall.max) <= case.target_ms;
        let mut target = format!("max <= {} ms", case.target_ms);
        if let Some(limit) = case.target_rss {
            ok &= m.rss_max.is_some_and(|r| r <= limit);
            target.push_str(&format!(", RSS <= {}", mib(Some(limit))));
        }
        println!(
            "{:<32} {:>8} {:>6.2} ms {:>6.2} ms {:>6.2} ms {:>9}  {target}: {}",
            case.label,
            size(case.cmdb.len()),
            ms(m.wall.median),
            ms(m.wall.max),
            ms(m.cpu.median),
            mib(m.rss_max),
            if ok { "met" } else { "MISSED" }
        );
        if !ok {
            missed.push(case.label.clone());
        }
    }

    missed.extend(limits(scratch.path(), runs.min(5)));

    // What no request can go below: the process starting and exiting.
    let dir = scratch.path().join("baseline");
    fs::create_dir_all(&dir).expect("baseline directory");
    let baseline: Vec<Run> = (0..runs)
        .map(|_| {
            let mut cmd = Command::new(common::upload_binary());
            cmd.arg("--help");
            run(cmd, &dir)
        })
        .collect();
    let wall = Summary::of(&baseline.iter().map(|r| r.wall).collect::<Vec<_>>());
    let cpu = Summary::of(&baseline.iter().map(|r| r.cpu).collect::<Vec<_>>());
    println!(
        "{:<32} {:>8} {:>6.2} ms {:>6.2} ms {:>6.2} ms",
        "baseline: upload --help",
        "",
        ms(wall.median),
        ms(wall.max),
        ms(cpu.median),
    );

    let legacy_cases = cases.iter().filter(|c| {
        c.entries == 65_536 && std::env::var("EDEPLOY_BENCH_LEGACY").as_deref() != Ok("0")
    });
    for (i, case) in legacy_cases.enumerate() {
        if i == 0 {
            println!();
            println!(
                "legacy (Python 2.7, hardware 0.18: load, find_match, save, unlock), one run:"
            );
        }
        if let Some((legacy, rss)) = oracle(case, scratch.path()) {
            println!(
                "{:<32} {:>8} {:>9.1} ms {:>19} {:>9}  same CMDB and state as ours",
                case.label,
                "",
                ms(legacy.wall),
                "",
                mib(rss)
            );
        }
    }
    println!();
    println!("load average: {}", common::load_average());
    if !missed.is_empty() {
        println!("targets missed: {}", missed.join("; "));
    }
}

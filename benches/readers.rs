//! Benchmark: provisioning latency under a flood of status views (issue 11).
//!
//! Starts the end-to-end tests' private Apache (tests/common/apache.rs:
//! event MPM, mod_cgid, 127.0.0.1 only, CGIs run as `www-data` when root)
//! with `upload.py` and `status.py`, against a profile whose CMDB has
//! 65,536 entries, expanded (about 9 MB, the first half used), and with
//! Debian's pool of 150 workers (`EDEPLOY_BENCH_WORKERS`): with fewer
//! workers than the flood has connections (the tests' 16), an upload
//! also waits for a worker behind the flood, whatever the CGI does. One
//! client posts distinct machines to `upload.py`, one request at a time,
//! in four phases of `EDEPLOY_BENCH_SECONDS` (default 20):
//!
//! 1. alone;
//! 2. while `wrk -c32` fetches `status.py` as fast as it answers (started
//!    a second before the first upload; uploads go on until it stops);
//! 3. the same with a null CGI instead of `status.py` (bench/null_cgi.rs,
//!    which prints a fixed answer): what Apache starting a CGI program 32
//!    at a time costs the uploads by itself, the floor for any status page;
//! 4. alone again, to see the drift of the machine between phases.
//!
//! Prints the uploads' p50/p99/max latency in each phase, the pages per
//! second of each flood, and the ratio of the status flood's p50 and p99
//! to those of the two unloaded phases together. Target: at most 2. Then
//! checks that no update was lost; views answered "busy" (503, see
//! `edeploy::status::pace`) are counted.
//!
//! `EDEPLOY_BENCH_CONNECTIONS` (default 32) sets wrk's connections.
//! `EDEPLOY_BENCH_UPLOAD` and `EDEPLOY_BENCH_STATUS` measure other builds
//! of `upload` and `status` (those of an older commit, for a before/after).

// Its `start` is load.rs's; this benchmark sizes the worker pool.
#[allow(dead_code)]
#[path = "../tests/common/apache.rs"]
mod apache;
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use apache::{Apache, APACHE};
use common::http::{exchange, port, request};
use common::{ms, Summary, PROFILE};

const WRK: &str = "wrk";
const ENTRIES: usize = 65_536;
const USED: usize = ENTRIES / 2;

/// The `status` binary to measure: `$EDEPLOY_BENCH_STATUS`, else the one
/// `cargo bench` built.
fn status_binary() -> PathBuf {
    std::env::var_os("EDEPLOY_BENCH_STATUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_status")))
}

/// Whether wrk runs; the benchmark needs it.
fn wrk_available() -> bool {
    Command::new(WRK)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Starts Apache with the binaries measured and the 65,536-entry profile.
fn start_apache() -> Apache {
    let workers = common::env_usize("EDEPLOY_BENCH_WORKERS", 150).max(1);
    let threads = workers.min(25);
    let apache = Apache::start_with(
        "event",
        "cgid",
        &format!(
            "ServerLimit {}\nThreadsPerChild {threads}\nMaxRequestWorkers {workers}\n",
            workers.div_ceil(threads)
        ),
    );
    let cgi_dir = apache.root.join("cgi-bin/edeploy");
    for (binary, name) in [
        (common::upload_binary(), "upload.py"),
        (status_binary(), "status.py"),
    ] {
        fs::copy(&binary, cgi_dir.join(name))
            .unwrap_or_else(|e| panic!("install {}: {e}", binary.display()));
    }
    common::install_null_cgi(&cgi_dir.join("null.py"));
    let profile = tempfile::tempdir().expect("temporary directory");
    let cmdb = common::cmdb_expanded(ENTRIES, USED);
    common::write_profile(profile.path(), Some(ENTRIES - USED), Some(&cmdb));
    apache.set_config(profile.path());
    apache
}

/// Uploads, one at a time, each a new machine (`next` counts them).
struct Uploader {
    port: u16,
    marker: String,
    next: usize,
}

/// What the uploads of one phase measured.
struct Phase {
    latencies: Vec<Duration>,
    failed: Vec<String>,
}

impl Uploader {
    fn one(&mut self, phase: &mut Phase) {
        let req = request(self.port, "upload.py", &common::hw_json(self.next));
        self.next += 1;
        let t = Instant::now();
        match exchange(self.port, &req) {
            Ok((200, body)) if contains(&body, self.marker.as_bytes()) => {
                phase.latencies.push(t.elapsed())
            }
            Ok((status, body)) => phase.failed.push(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body)
            )),
            Err(e) => phase.failed.push(e),
        }
    }

    /// Uploads for `limit`.
    fn for_duration(&mut self, limit: Duration) -> Phase {
        let mut phase = Phase {
            latencies: Vec::new(),
            failed: Vec::new(),
        };
        let end = Instant::now() + limit;
        while Instant::now() < end {
            self.one(&mut phase);
        }
        phase
    }

    /// Uploads until `flood` exits.
    fn during(&mut self, flood: &mut Child) -> Phase {
        let mut phase = Phase {
            latencies: Vec::new(),
            failed: Vec::new(),
        };
        while flood.try_wait().expect("wrk").is_none() {
            self.one(&mut phase);
        }
        phase
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The value after `label` on wrk's output line that starts with it.
fn wrk_line<'a>(output: &'a str, label: &str) -> Option<&'a str> {
    output
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .map(str::trim)
}

/// A flood of `connections` wrk connections on `script` for `seconds`
/// (plus one before the first upload), with uploads one at a time until
/// it ends; returns them and wrk's report.
fn flood(
    uploader: &mut Uploader,
    apache: &Apache,
    script: &str,
    connections: usize,
    seconds: u64,
) -> (Phase, String) {
    let mut wrk = Command::new(WRK)
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{}s", seconds + 1),
            "--timeout",
            "60s",
            "--latency",
        ])
        .arg(apache.url(script))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk");
    thread::sleep(Duration::from_secs(1));
    let phase = uploader.during(&mut wrk);
    let out = wrk.wait_with_output().expect("wrk");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk: {report}");
    (phase, report)
}

/// One line about a flood: pages per second and their latency.
fn flood_line(script: &str, report: &str) -> String {
    format!(
        "{script} flood: {} pages/s, latency p50 {}, p99 {}; answered busy (503): {}; \
         socket errors: {}",
        wrk_line(report, "Requests/sec:").unwrap_or("?"),
        wrk_line(report, "50%").unwrap_or("?"),
        wrk_line(report, "99%").unwrap_or("?"),
        wrk_line(report, "Non-2xx or 3xx responses:").unwrap_or("0"),
        wrk_line(report, "Socket errors:").unwrap_or("none"),
    )
}

/// Checks that every upload is accounted for by the state and the CMDB.
fn check_no_lost_update(data: &Path, served: usize) {
    let state = fs::read_to_string(data.join("config/state")).expect("state");
    let expected = format!("[('{PROFILE}', {})]\n", ENTRIES - USED - served);
    assert_eq!(state, expected, "state after {served} installations");
    let cmdb = fs::read(data.join(format!("config/{PROFILE}.cmdb"))).expect("cmdb");
    let used = cmdb.windows(9).filter(|w| w == b"'used': 1").count();
    assert_eq!(used, USED + served, "CMDB entries used");
}

fn main() {
    if !common::benchmarking("readers") {
        return;
    }
    if !apache::apache_available() {
        return;
    }
    assert!(wrk_available(), "{WRK} missing: apt-get install wrk");
    let seconds = common::env_usize("EDEPLOY_BENCH_SECONDS", 20).max(2) as u64;
    let connections = common::env_usize("EDEPLOY_BENCH_CONNECTIONS", 32).max(1);
    let limit = Duration::from_secs(seconds);

    let apache = start_apache();
    let port = port(&apache.url(""));
    let cmdb_size = fs::metadata(apache.data(&format!("config/{PROFILE}.cmdb")))
        .expect("cmdb")
        .len();
    println!(
        "apache: {APACHE} (event MPM, mod_cgid, {} workers), 127.0.0.1:{port}",
        common::env_usize("EDEPLOY_BENCH_WORKERS", 150).max(1)
    );
    println!("scratch: {}", apache.root.display());
    println!(
        "upload.py: {}; status.py: {}",
        common::upload_binary().display(),
        status_binary().display()
    );
    println!(
        "CMDB: {ENTRIES} entries, {USED} used, {:.2} MB; one upload at a time, \
         {seconds} s per phase; flood: {WRK} -c{connections} on status.py",
        cmdb_size as f64 / 1e6
    );
    println!("load average: {}", common::load_average());
    println!();

    let mut uploader = Uploader {
        port,
        marker: format!("#EDEPLOY_PROFILE = {PROFILE}\n"),
        next: 0,
    };
    // A status view and a few uploads first: the files are in the page
    // cache and the spares exist, as on a server in service.
    let (status, _) = exchange(port, status_get(port).as_bytes()).expect("status.py");
    assert_eq!(status, 200, "status.py");
    let warm = uploader.for_duration(Duration::from_secs(1));

    let alone = uploader.for_duration(limit);
    let (flooded, status_report) = flood(&mut uploader, &apache, "status.py", connections, seconds);
    let (null_flooded, null_report) =
        flood(&mut uploader, &apache, "null.py", connections, seconds);
    let again = uploader.for_duration(limit);

    println!(
        "{:<24} {:>7} {:>7} {:>10} {:>10} {:>10}",
        "upload.py, one at a time", "ok", "failed", "p50", "p99", "max"
    );
    for (name, p) in [
        ("alone", &alone),
        ("status.py flood", &flooded),
        ("null CGI flood", &null_flooded),
        ("alone again", &again),
    ] {
        let s = Summary::of(&p.latencies);
        println!(
            "{:<24} {:>7} {:>7} {:>7.1} ms {:>7.1} ms {:>7.1} ms",
            name,
            s.count,
            p.failed.len(),
            ms(s.median),
            ms(s.p99),
            ms(s.max)
        );
    }
    let unloaded: Vec<Duration> = alone
        .latencies
        .iter()
        .chain(&again.latencies)
        .copied()
        .collect();
    let (base, loaded) = (Summary::of(&unloaded), Summary::of(&flooded.latencies));
    let null = Summary::of(&null_flooded.latencies);
    println!();
    println!("{}", flood_line("status.py", &status_report));
    println!("{}", flood_line("null CGI", &null_report));
    for (name, b, l, n) in [
        ("p50", base.median, loaded.median, null.median),
        ("p99", base.p99, loaded.p99, null.p99),
    ] {
        let ratio = l.as_secs_f64() / b.as_secs_f64();
        println!(
            "upload.py {name} under the status.py flood / alone: {:.1} ms / {:.1} ms = {ratio:.2} \
             (target <= 2: {}; under the null CGI flood: {:.2})",
            ms(l),
            ms(b),
            if ratio <= 2.0 { "met" } else { "MISSED" },
            n.as_secs_f64() / b.as_secs_f64()
        );
    }
    println!("load average: {}", common::load_average());

    let phases = [
        ("warm-up", &warm),
        ("alone", &alone),
        ("status.py flood", &flooded),
        ("null CGI flood", &null_flooded),
        ("alone again", &again),
    ];
    for (name, p) in phases {
        if let Some(first) = p.failed.first() {
            eprintln!("{name}: {} failed uploads, first: {first}", p.failed.len());
        }
    }
    let failed: usize = phases.iter().map(|(_, p)| p.failed.len()).sum();
    assert_eq!(failed, 0, "failed uploads (see above)");
    check_no_lost_update(&apache.data(""), uploader.next);
    println!(
        "no lost update: state and CMDB account for all {} uploads",
        uploader.next
    );
    drop(apache);
}

/// A plain GET of status.py.
fn status_get(port: u16) -> String {
    format!(
        "GET //cgi-bin/edeploy//status.py HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Connection: close\r\n\r\n"
    )
}

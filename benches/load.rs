//! Benchmark: `upload.py` behind a real Apache under concurrent load (issue 5).
//!
//! Starts the end-to-end tests' private Apache (tests/common/apache.rs:
//! event MPM, mod_cgid, 127.0.0.1 only, CGIs run as `www-data` when root)
//! with two CGIs: our `upload` installed as `upload.py`, and a null CGI
//! that reads the body and prints a fixed answer. 16 client threads post distinct machines'
//! hardware (`curl -F section=SERVER -F file=@hw.json`, one connection per
//! request) first to the null CGI, then to `upload.py`, against a profile
//! with a numeric quota and a generated CMDB sized for the run. Every write
//! of `upload.py` is durable (fsynced) as in production.
//!
//! Prints requests/s and p50/p99/max latency for both and their ratio, then
//! checks that no update was lost: the quota, the CMDB and HWDIR account for
//! every request. Targets (issue 14, group commit): at least 60% of the null
//! CGI's throughput with a 4,096-entry CMDB and 40% with 65,536, p99 at most
//! 100 ms at 4,096.
//!
//! `EDEPLOY_BENCH_CMDB` entries in the CMDB (default: one per request,
//! rounded up to 256; a multiple of 256 up to 65,536),
//! `EDEPLOY_BENCH_REQUESTS` (default 1000) requests per phase,
//! `EDEPLOY_BENCH_CLIENTS` (default 16) concurrent clients,
//! `EDEPLOY_BENCH_SECONDS` (default 60) bound each phase's duration.

#[path = "../tests/common/apache.rs"]
mod apache;
mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use apache::{Apache, APACHE};
use common::http::{exchange, port, request};
use common::{ms, Summary, PROFILE};

/// Starts Apache and installs the benchmark's CGIs (`upload.py`, the
/// binary measured; `null.py`) and profile (`quota` installations, `cmdb`)
/// in its data directories, owned as the CGIs' user.
fn start_apache(quota: usize, cmdb: &str) -> Apache {
    let apache = Apache::start("event", "cgid");
    let cgi_dir = apache.root.join("cgi-bin/edeploy");
    fs::copy(common::upload_binary(), cgi_dir.join("upload.py")).expect("install upload.py");
    common::install_null_cgi(&cgi_dir.join("null.py"));
    let profile = tempfile::tempdir().expect("temporary directory");
    common::write_profile(profile.path(), Some(quota), Some(cmdb.as_bytes()));
    apache.set_config(profile.path());
    apache
}

/// What one load phase measured.
struct Phase {
    ok: usize,
    failed: Vec<String>,
    elapsed: Duration,
    latency: Summary,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Posts `requests` (prepared request texts) with `clients` threads, each
/// taking the next one until none is left or `deadline` has passed. An
/// answer without `expect` in its body counts as failed.
fn load(port: u16, requests: &[Vec<u8>], clients: usize, limit: Duration, expect: &str) -> Phase {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let deadline = start + limit;
    let results: Vec<(Vec<Duration>, Vec<String>)> = thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut latencies = Vec::new();
                    let mut failed = Vec::new();
                    while Instant::now() < deadline {
                        let Some(req) = requests.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        let t = Instant::now();
                        match exchange(port, req) {
                            Ok((200, body)) if contains(&body, expect.as_bytes()) => {
                                latencies.push(t.elapsed())
                            }
                            Ok((status, body)) => failed.push(format!(
                                "status {status}: {}",
                                String::from_utf8_lossy(&body)
                            )),
                            Err(e) => failed.push(e),
                        }
                    }
                    (latencies, failed)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("client thread"))
            .collect()
    });
    let elapsed = start.elapsed();
    let latencies: Vec<Duration> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    let failed: Vec<String> = results.into_iter().flat_map(|r| r.1).collect();
    assert!(!latencies.is_empty(), "no request succeeded: {failed:?}");
    Phase {
        ok: latencies.len(),
        failed,
        elapsed,
        latency: Summary::of(&latencies),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The mean time to create an empty file under `root`. Each request
/// creates one (its `.hw` file), and on ext4 without a journal this costs
/// far more for minutes after many files were deleted (a test run, an
/// earlier benchmark): the inode allocator skips every recently freed
/// inode. Printed so that such a run can be recognised.
fn file_creation_us(root: &Path) -> f64 {
    const FILES: usize = 100;
    let dir = root.join("creation-probe");
    fs::create_dir(&dir).expect("probe directory");
    let start = Instant::now();
    for i in 0..FILES {
        fs::File::create_new(dir.join(i.to_string())).expect("probe file");
    }
    start.elapsed().as_secs_f64() * 1e6 / FILES as f64
}

/// Checks that every successful `upload.py` request is accounted for.
fn check_no_lost_update(data: &Path, quota: usize, served: usize) {
    let state = fs::read_to_string(data.join("config/state")).expect("state");
    let expected = format!("[('{PROFILE}', {})]\n", quota - served);
    assert_eq!(state, expected, "state after {served} installations");
    let cmdb = fs::read(data.join(format!("config/{PROFILE}.cmdb"))).expect("cmdb");
    let used = cmdb.windows(9).filter(|w| w == b"'used': 1").count();
    assert_eq!(used, served, "CMDB entries used");
    let hw = fs::read_dir(data.join("hw")).expect("HWDIR").count();
    assert_eq!(hw, served, ".hw files saved");
}

fn main() {
    if !common::benchmarking("load") {
        return;
    }
    // Without Apache: a panic, or nothing with EDEPLOY_SKIP_APACHE=1.
    if !apache::apache_available() {
        return;
    }
    let requests = common::env_usize("EDEPLOY_BENCH_REQUESTS", 1000).max(1);
    let clients = common::env_usize("EDEPLOY_BENCH_CLIENTS", 16).max(1);
    let limit = Duration::from_secs(common::env_usize("EDEPLOY_BENCH_SECONDS", 60) as u64);
    let warmup = 2 * clients;
    // One CMDB entry and one installation per machine that may be served.
    let machines = requests + warmup;
    let entries = common::env_usize("EDEPLOY_BENCH_CMDB", 0).max(machines.div_ceil(256) * 256);
    assert!(
        entries <= 65_536 && entries.is_multiple_of(256),
        "a CMDB of at most 65,536 entries, a multiple of 256, and at most 65,536 - {warmup} requests"
    );
    let cmdb = common::cmdb_model(entries);

    let apache = start_apache(entries, &cmdb);
    let port = port(&apache.url(""));
    let hw: Vec<String> = (0..machines).map(common::hw_json).collect();
    let null: Vec<Vec<u8>> = hw.iter().map(|h| request(port, "null.py", h)).collect();
    let upload: Vec<Vec<u8>> = hw.iter().map(|h| request(port, "upload.py", h)).collect();

    println!("apache: {APACHE} (event MPM, mod_cgid), 127.0.0.1:{port}");
    println!("scratch: {}", apache.root.display());
    println!("load average: {}", common::load_average());
    println!(
        "file creation in the scratch directory: {:.0} us per file",
        file_creation_us(&apache.root)
    );
    println!(
        "{requests} requests per phase, {clients} concurrent clients, a new connection each; \
         profile quota {entries}, CMDB generate() of {entries} entries"
    );
    println!();

    let null_marker = "#EDEPLOY_PROFILE = null\n";
    let upload_marker = format!("#EDEPLOY_PROFILE = {PROFILE}\n");
    load(port, &null[..warmup], clients, limit, null_marker);
    let null_phase = load(port, &null[warmup..], clients, limit, null_marker);
    let warm = load(port, &upload[..warmup], clients, limit, &upload_marker);
    let upload_phase = load(port, &upload[warmup..], clients, limit, &upload_marker);
    let served = warm.ok + upload_phase.ok;

    println!(
        "{:<12} {:>6} {:>7} {:>9} {:>10} {:>10} {:>10}",
        "CGI", "ok", "failed", "req/s", "p50", "p99", "max"
    );
    for (name, p) in [("null", &null_phase), ("upload.py", &upload_phase)] {
        println!(
            "{:<12} {:>6} {:>7} {:>9.1} {:>7.1} ms {:>7.1} ms {:>7.1} ms",
            name,
            p.ok,
            p.failed.len(),
            p.rate(),
            ms(p.latency.median),
            ms(p.latency.p99),
            ms(p.latency.max)
        );
    }
    let ratio = upload_phase.rate() / null_phase.rate();
    let p99 = ms(upload_phase.latency.p99);
    // Issue 14's targets: 60% up to 4,096 entries, 40% beyond.
    let target = if entries <= 4096 { 0.6 } else { 0.4 };
    println!();
    println!(
        "upload.py / null throughput: {:.0}% (target >= {:.0}% at {entries} entries: {})",
        100.0 * ratio,
        100.0 * target,
        if ratio >= target { "met" } else { "MISSED" }
    );
    println!(
        "upload.py p99: {p99:.1} ms (target <= 100 ms: {})",
        if p99 <= 100.0 { "met" } else { "MISSED" }
    );
    println!("legacy upload.py (issue 5's figure): 5.5 req/s");
    println!("load average: {}", common::load_average());

    for (name, p) in [
        ("null", &null_phase),
        ("upload.py", &warm),
        ("upload.py", &upload_phase),
    ] {
        if let Some(first) = p.failed.first() {
            eprintln!("{name}: {} failed requests, first: {first}", p.failed.len());
        }
    }
    let total_failed = null_phase.failed.len() + warm.failed.len() + upload_phase.failed.len();
    assert_eq!(total_failed, 0, "failed requests (see above)");
    check_no_lost_update(&apache.data(""), entries, served);
    println!("no lost update: state, CMDB and HWDIR account for all {served} installations");
    drop(apache);
}

//! Benchmark: `upload.py` behind a real Apache under concurrent load (issue 5).
//!
//! Starts a private Apache as tests/apache_e2e.rs does (same httpd.conf
//! template: event MPM, mod_cgid, 127.0.0.1 only) with two CGIs: our
//! `upload` installed as `upload.py`, and a null CGI that reads the body and
//! prints a fixed answer. 16 client threads post distinct machines'
//! hardware (`curl -F section=SERVER -F file=@hw.json`, one connection per
//! request) first to the null CGI, then to `upload.py`, against a profile
//! with a numeric quota and a generated CMDB sized for the run. Every write
//! of `upload.py` is durable (fsynced) as in production.
//!
//! Prints requests/s and p50/p99/max latency for both and their ratio, then
//! checks that no update was lost: the quota, the CMDB and HWDIR account for
//! every request. Targets: at least 40% of the null CGI's throughput, p99 at
//! most 100 ms.
//!
//! `EDEPLOY_BENCH_REQUESTS` (default 1000) requests per phase,
//! `EDEPLOY_BENCH_CLIENTS` (default 16) concurrent clients,
//! `EDEPLOY_BENCH_SECONDS` (default 60) bound each phase's duration.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{ms, Summary, PROFILE};

const APACHE: &str = "/usr/sbin/apache2";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BOUNDARY: &str = "------------------------bench0123456789abcdef";

/// A running private Apache; stopped on drop.
struct Apache {
    child: Child,
    conf: PathBuf,
    root: PathBuf,
    port: u16,
}

fn substitute(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(template.to_owned(), |s, (k, v)| {
        s.replace(&format!("@{k}@"), v)
    })
}

/// uid and gid of a user, from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        match f.as_slice() {
            [n, _, uid, gid, ..] if *n == name => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    })
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() {
        for e in fs::read_dir(path).expect("read_dir") {
            chown_tree(&e.expect("dir entry").path(), uid, gid);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Builds the null CGI with rustc (`$RUSTC`, else `rustc`) into `out`.
fn build_null_cgi(out: &Path) {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let status = Command::new(&rustc)
        .args(["-O", "--edition", "2021", "-o"])
        .arg(out)
        .arg(Path::new(ROOT).join("bench/null_cgi.rs"))
        .status()
        .unwrap_or_else(|e| panic!("{rustc}: {e}"));
    assert!(status.success(), "building the null CGI failed");
}

impl Apache {
    /// Sets up `root` (cgi-bin with `upload.py` and `null.py`, data
    /// directories, `edeploy.conf`) and starts Apache with the event MPM
    /// and mod_cgid.
    fn start(root: &Path, quota: usize, cmdb: &str) -> Apache {
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod root");
        for d in ["conf", "logs", "run", "cgi-bin/edeploy"] {
            fs::create_dir_all(root.join(d)).expect("create directories");
        }
        let cgi_dir = root.join("cgi-bin/edeploy");
        fs::copy(common::upload_binary(), cgi_dir.join("upload.py")).expect("install upload.py");
        build_null_cgi(&cgi_dir.join("null.py"));
        for name in ["upload.py", "null.py"] {
            fs::set_permissions(cgi_dir.join(name), fs::Permissions::from_mode(0o755))
                .expect("chmod cgi");
        }
        let data = root.join("data");
        common::write_edeploy_conf(&cgi_dir.join("edeploy.conf"), &data);
        common::write_profile(&data.join("config"), Some(quota), Some(cmdb.as_bytes()));

        let am_root = fs::metadata("/proc/self").expect("/proc/self").uid() == 0;
        let user = if am_root { "www-data" } else { "nobody" };
        if am_root {
            let (uid, gid) = user_ids(user).expect("user www-data");
            chown_tree(&data, uid, gid);
        }
        let port = free_port();
        let port_s = port.to_string();
        let root_s = root.to_str().expect("UTF-8 scratch path");
        let template = fs::read_to_string(Path::new(ROOT).join("tests/apache/httpd.conf.in"))
            .expect("tests/apache/httpd.conf.in");
        let conf = root.join("conf/httpd.conf");
        let vars = [
            ("ROOT", root_s),
            ("PORT", port_s.as_str()),
            ("MPM", "event"),
            ("CGI", "cgid"),
            ("USER", user),
            ("GROUP", user),
        ];
        fs::write(&conf, substitute(&template, &vars)).expect("write httpd.conf");
        // Its own process group, as in tests/apache_e2e.rs.
        let child = Command::new(APACHE)
            .arg("-f")
            .arg(&conf)
            .arg("-DFOREGROUND")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(fs::File::create(root.join("logs/stdout")).expect("log file"))
            .stderr(fs::File::create(root.join("logs/stderr")).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("{APACHE}: {e}"));
        let mut apache = Apache {
            child,
            conf,
            root: root.to_path_buf(),
            port,
        };
        apache.wait_ready();
        apache
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "apache exited ({status}): {}{}",
                    self.read_log("stderr"),
                    self.read_log("error.log")
                );
            }
            assert!(Instant::now() < deadline, "apache did not start");
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn read_log(&self, name: &str) -> String {
        fs::read_to_string(self.root.join("logs").join(name)).unwrap_or_default()
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        // `apache2 -k stop` waits for the server to be gone, and a zombie
        // is not gone: reap our child while the stop command runs.
        let stop = Command::new(APACHE)
            .arg("-f")
            .arg(&self.conf)
            .args(["-k", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut stopped = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                stopped = true;
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        if let Ok(mut stop) = stop {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = stop.try_wait() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = stop.kill();
            let _ = stop.wait();
        }
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The request `curl -s -S -F section=SERVER -F file=@hw.json URL` sends
/// (without `Expect: 100-continue`), asking to close the connection after.
fn request(port: u16, script: &str, hw: &str) -> Vec<u8> {
    let body = format!(
        "--{BOUNDARY}\r\n\
         Content-Disposition: form-data; name=\"section\"\r\n\r\n\
         SERVER\r\n\
         --{BOUNDARY}\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"hw.json\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n\
         {hw}\r\n\
         --{BOUNDARY}--\r\n"
    );
    format!(
        "POST //cgi-bin/edeploy//{script} HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\n\
         User-Agent: curl/7.88.1\r\n\
         Accept: */*\r\n\
         Connection: close\r\n\
         Content-Length: {}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n\
         {body}",
        body.len()
    )
    .into_bytes()
}

/// Sends one request on a new connection; returns the status and body.
fn exchange(port: u16, request: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    stream.write_all(request).map_err(|e| e.to_string())?;
    let _ = stream.shutdown(Shutdown::Write);
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).map_err(|e| e.to_string())?;
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&reply[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let body = &reply[end + 4..];
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or("bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let data = body.get(eol + 2..eol + 2 + size).ok_or("short chunk")?;
        out.extend_from_slice(data);
        body = body.get(eol + 4 + size..).ok_or("short chunk")?;
    }
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
    if !Path::new(APACHE).exists() {
        eprintln!("load: {APACHE} missing (apt-get install apache2): nothing measured");
        std::process::exit(1);
    }
    let requests = common::env_usize("EDEPLOY_BENCH_REQUESTS", 1000).max(1);
    let clients = common::env_usize("EDEPLOY_BENCH_CLIENTS", 16).max(1);
    let limit = Duration::from_secs(common::env_usize("EDEPLOY_BENCH_SECONDS", 60) as u64);
    let warmup = 2 * clients;
    // One CMDB entry and one installation per machine that may be served.
    let machines = requests + warmup;
    let entries = machines.div_ceil(256) * 256;
    assert!(entries <= 65_536, "at most 65,536 - {warmup} requests");
    let cmdb = common::cmdb_model(entries);

    let scratch = tempfile::Builder::new()
        .prefix("edeploy-bench-load-")
        .tempdir_in(common::scratch_parent())
        .expect("scratch directory");
    let apache = Apache::start(scratch.path(), entries, &cmdb);
    let port = apache.port;
    let hw: Vec<String> = (0..machines).map(common::hw_json).collect();
    let null: Vec<Vec<u8>> = hw.iter().map(|h| request(port, "null.py", h)).collect();
    let upload: Vec<Vec<u8>> = hw.iter().map(|h| request(port, "upload.py", h)).collect();

    println!("apache: {APACHE} (event MPM, mod_cgid), 127.0.0.1:{port}");
    println!("scratch: {}", scratch.path().display());
    println!("load average: {}", common::load_average());
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
    println!();
    println!(
        "upload.py / null throughput: {:.0}% (target >= 40%: {})",
        100.0 * ratio,
        if ratio >= 0.4 { "met" } else { "MISSED" }
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
    check_no_lost_update(&scratch.path().join("data"), entries, served);
    println!("no lost update: state, CMDB and HWDIR account for all {served} installations");
    drop(apache);
}

//! End to end through a real Apache: our binaries installed as
//! `upload.py` / `upload-health.py` behind `ScriptAlias`, driven by the
//! initrd's own `curl` command lines.
//!
//! Each test starts a private Apache (`/usr/sbin/apache2`, Debian package
//! `apache2`) with its own ServerRoot in a temporary directory, listening on
//! a free port of 127.0.0.1, running the CGIs as `www-data` when we are root.
//! The event MPM with mod_cgid and the prefork MPM with mod_cgi are both
//! exercised. Apache is stopped when the test ends, even on failure.
//!
//! Without `/usr/sbin/apache2` the tests fail, unless `EDEPLOY_SKIP_APACHE=1`.

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use edeploy::health::run_dir_name;
use edeploy::{hw, literal};

const APACHE: &str = "/usr/sbin/apache2";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apache");

/// A running private Apache; stopped on drop.
struct Apache {
    child: Child,
    conf: PathBuf,
    root: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Whether to run: Apache present, or explicitly skipped.
fn apache_available() -> bool {
    if Path::new(APACHE).exists() {
        return true;
    }
    if std::env::var("EDEPLOY_SKIP_APACHE").as_deref() == Ok("1") {
        eprintln!("{APACHE} missing: skipped because EDEPLOY_SKIP_APACHE=1");
        return false;
    }
    panic!("{APACHE} missing: apt-get install apache2, or set EDEPLOY_SKIP_APACHE=1 to skip");
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
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for e in fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Apache {
    /// Starts Apache with `mpm` (`event`, `prefork`) and `cgi` (`cgid`,
    /// `cgi`), our two binaries and the fixtures' configuration directory.
    fn start(mpm: &str, cgi: &str) -> Apache {
        let dir = tempfile::Builder::new()
            .prefix("edeploy-apache-")
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        for d in [
            "conf",
            "logs",
            "run",
            "cgi-bin/edeploy",
            "data/config",
            "data/hw",
            "data/logs",
            "data/health",
            "data/lock",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let cgi_dir = root.join("cgi-bin/edeploy");
        for (bin, name) in [
            (env!("CARGO_BIN_EXE_upload"), "upload.py"),
            (env!("CARGO_BIN_EXE_upload-health"), "upload-health.py"),
        ] {
            fs::copy(bin, cgi_dir.join(name)).unwrap();
            fs::set_permissions(cgi_dir.join(name), fs::Permissions::from_mode(0o755)).unwrap();
        }
        for f in ["state", "vm.specs", "vm.configure"] {
            fs::copy(
                Path::new(FIXTURES).join("config").join(f),
                root.join("data/config").join(f),
            )
            .unwrap();
        }
        let root_s = root.to_str().unwrap();
        let template = fs::read_to_string(Path::new(FIXTURES).join("edeploy.conf.in")).unwrap();
        fs::write(
            cgi_dir.join("edeploy.conf"),
            substitute(&template, &[("ROOT", root_s)]),
        )
        .unwrap();

        let am_root = fs::metadata("/proc/self").unwrap().uid() == 0;
        let user = if am_root { "www-data" } else { "nobody" };
        if am_root {
            let (uid, gid) = user_ids(user).expect("user www-data");
            chown_tree(&root.join("data"), uid, gid);
        }
        let port = free_port();
        let port_s = port.to_string();
        let template = fs::read_to_string(Path::new(FIXTURES).join("httpd.conf.in")).unwrap();
        let conf = root.join("conf/httpd.conf");
        fs::write(
            &conf,
            substitute(
                &template,
                &[
                    ("ROOT", root_s),
                    ("PORT", &port_s),
                    ("MPM", mpm),
                    ("CGI", cgi),
                    ("USER", user),
                    ("GROUP", user),
                ],
            ),
        )
        .unwrap();
        // Its own process group: at shutdown, prefork signals its whole
        // group, which would otherwise include this test.
        let child = Command::new(APACHE)
            .arg("-f")
            .arg(&conf)
            .arg("-DFOREGROUND")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(fs::File::create(root.join("logs/stdout")).unwrap())
            .stderr(fs::File::create(root.join("logs/stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut apache = Apache {
            child,
            conf,
            root,
            port,
            _dir: dir,
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
            if let Some(status) = self.child.try_wait().unwrap() {
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

    /// The URL the initrd builds: `http://${SERV}:${HTTP_PORT}/${HTTP_PATH}/<script>`
    /// with `HTTP_PATH=/cgi-bin/edeploy/` (double slashes included).
    fn url(&self, script: &str) -> String {
        format!("http://127.0.0.1:{}//cgi-bin/edeploy//{script}", self.port)
    }

    fn data(&self, sub: &str) -> PathBuf {
        self.root.join("data").join(sub)
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- apache error.log ---\n{}", self.read_log("error.log"));
        }
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
        if stopped {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What curl got: HTTP status, and its stdout.
struct Reply {
    status: u16,
    stdout: Vec<u8>,
}

/// Runs one of the initrd's curl command lines (its `/file` paths made
/// relative to `initrd`, which plays the initrd's root), adding only `-D`
/// to see the status.
fn curl(initrd: &Path, args: &[&str]) -> Reply {
    let headers = initrd.join(".headers");
    let out = Command::new("curl")
        .args(args)
        .arg("-D")
        .arg(&headers)
        .current_dir(initrd)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = fs::read_to_string(&headers).unwrap();
    let status = head
        .lines()
        .find(|l| l.starts_with("HTTP/") && !l.contains(" 100 "))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/x-python"),
        "{head}"
    );
    Reply {
        status,
        stdout: out.stdout,
    }
}

/// A directory playing the initrd's `/`, with the client's files.
fn initrd() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["hw.json", "health.py"] {
        fs::copy(Path::new(FIXTURES).join(f), dir.path().join(f)).unwrap();
    }
    dir
}

/// `HEALTHDIR/<session>/<run dir>/<sysname>.hw` for a request made between
/// `before` and now (the minute may have turned meanwhile).
fn find_health_file(dir: &Path, before: SystemTime, name: &str) -> PathBuf {
    let candidates = [run_dir_name(before), run_dir_name(SystemTime::now())];
    candidates
        .iter()
        .map(|run| dir.join(run).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no {name} under {} for {candidates:?}", dir.display()))
}

fn expected_hw_file(src: &[u8]) -> Vec<u8> {
    let items = hw::parse_hw(Path::new("health.py"), src).unwrap();
    literal::pformat(&hw::items_value(&items))
}

const SYSNAME: &str = "edeploy_test_vm-ABC123-52-54-12-34-00-03";

fn health_and_logs(mpm: &str, cgi: &str) {
    if !apache_available() {
        return;
    }
    let apache = Apache::start(mpm, cgi);
    let initrd = initrd();
    let dir = initrd.path();
    let health_src = fs::read(dir.join("health.py")).unwrap();

    // init.health: curl -s -S -F file=@/health.py http://…/upload-health.py
    let before = SystemTime::now();
    let url = apache.url("upload-health.py");
    let r = curl(dir, &["-s", "-S", "-F", "file=@health.py", &url]);
    assert_eq!(r.status, 200);
    assert_eq!(r.stdout, b"");
    let saved = find_health_file(&apache.data("health"), before, &format!("{SYSNAME}.hw"));
    assert_eq!(fs::read(&saved).unwrap(), expected_hw_file(&health_src));

    // With a session, and one trying to climb out of HEALTHDIR.
    let before = SystemTime::now();
    let r = curl(
        dir,
        &[
            "-s",
            "-S",
            "-F",
            "file=@health.py",
            "-F",
            "session=bench-1",
            &url,
        ],
    );
    assert_eq!(r.status, 200);
    let saved = find_health_file(
        &apache.data("health/bench-1"),
        before,
        &format!("{SYSNAME}.hw"),
    );
    assert_eq!(fs::read(&saved).unwrap(), expected_hw_file(&health_src));
    let before = SystemTime::now();
    let r = curl(
        dir,
        &[
            "-s",
            "-S",
            "-F",
            "file=@health.py",
            "-F",
            "session=../../up",
            &url,
        ],
    );
    assert_eq!(r.status, 200);
    find_health_file(&apache.data("health/up"), before, &format!("{SYSNAME}.hw"));
    let r = curl(
        dir,
        &[
            "-s",
            "-S",
            "-F",
            "file=@health.py",
            "-F",
            "session=..",
            &url,
        ],
    );
    assert_eq!(r.status, 400);
    assert!(r.stdout.starts_with(b"#!/bin/sh"));

    // A log, twice (upload_log in init.common): the first one is rotated.
    fs::write(dir.join("Red-Hat-vm-ABC.log.gz"), b"first log").unwrap();
    let args = [
        "-s",
        "-S",
        "-o/dev/null",
        "-F",
        "section=SERVER",
        "-F",
        "file=@Red-Hat-vm-ABC.log.gz",
        &url,
    ];
    assert_eq!(curl(dir, &args).status, 200);
    fs::write(dir.join("Red-Hat-vm-ABC.log.gz"), b"second log").unwrap();
    assert_eq!(curl(dir, &args).status, 200);
    assert_rotated(
        &apache.data("logs"),
        "Red-Hat-vm-ABC",
        b"first log",
        b"second log",
    );

    // A GET: no file.
    let r = curl(dir, &["-s", "-S", &url]);
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("No file passed to the CGI"),
        "{:?}",
        String::from_utf8_lossy(&r.stdout)
    );

    // Over MAXHWSIZE (100000): refused with 413, nothing saved.
    fs::write(dir.join("big.json"), vec![b' '; 300_000]).unwrap();
    let r = curl(dir, &["-s", "-S", "-F", "file=@big.json", &url]);
    assert_eq!(r.status, 413);

    // Our stderr reaches Apache's error log, one line per event.
    let log = apache.read_log("error.log");
    assert!(
        log.lines().any(|l| l.contains("[upload-health:info]")
            && l.contains("[client 127.0.0.1]")
            && l.contains("health result saved")),
        "{log}"
    );
    assert!(log.contains("refused (413)"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

fn assert_rotated(logs: &Path, stem: &str, first: &[u8], second: &[u8]) {
    assert_eq!(
        fs::read(logs.join(format!("{stem}.log.gz"))).unwrap(),
        second
    );
    let rotated: Vec<PathBuf> = fs::read_dir(logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.strip_prefix(&format!("{stem}."))
                .and_then(|r| r.strip_suffix(".log.gz"))
                .is_some_and(|ts| ts.len() == 14 && ts.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    assert_eq!(fs::read(&rotated[0]).unwrap(), first);
}

#[test]
fn health_and_logs_event_mpm_mod_cgid() {
    health_and_logs("event", "cgid");
}

#[test]
fn health_and_logs_prefork_mpm_mod_cgi() {
    health_and_logs("prefork", "cgi");
}

/// `upload.py`, against the CLI/CGI contract of the lead's engine.
#[test]
fn upload_py_initrd_session() {
    if !apache_available() {
        return;
    }
    let apache = Apache::start("event", "cgid");
    let initrd = initrd();
    let dir = initrd.path();
    let url = apache.url("upload.py");

    // init: curl -s -S -o/configure -F section=${SECTION} -F file=@/hw.json …/upload.py
    let r = curl(
        dir,
        &[
            "-s",
            "-S",
            "-oconfigure",
            "-F",
            "section=SERVER",
            "-F",
            "file=@hw.json",
            &url,
        ],
    );
    assert_eq!(r.status, 200);
    let configure = fs::read_to_string(dir.join("configure")).unwrap();
    assert!(
        configure.starts_with("#!/usr/bin/env python\n"),
        "{configure}"
    );
    assert!(
        configure.contains("\n#EDEPLOY_PROFILE = vm\n"),
        "{configure}"
    );
    assert!(configure.contains("set_role('vm', 'D7-H.1.0.0', var['disk'])"));
    assert!(apache.data("hw").join(format!("{SYSNAME}.hw")).exists());
    let state = fs::read_to_string(apache.data("config/state")).unwrap();
    assert_eq!(state, "[('vm', 1)]\n");

    // report_failure: curl -s -S -F section=${SECTION} -F failure=$PROFILE -F file=@/hw.json …
    let r = curl(
        dir,
        &[
            "-s",
            "-S",
            "-F",
            "section=SERVER",
            "-F",
            "failure=vm",
            "-F",
            "file=@hw.json",
            &url,
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.stdout, b"");
    let state = fs::read_to_string(apache.data("config/state")).unwrap();
    assert_eq!(state, "[('vm', 2)]\n");

    // upload_log: curl -s -S -o/log.stats -F section=${SECTION} -F file=@/${log_file} …
    fs::write(dir.join("Red-Hat-vm-ABC.log.gz"), b"first log").unwrap();
    let args = [
        "-s",
        "-S",
        "-olog.stats",
        "-F",
        "section=SERVER",
        "-F",
        "file=@Red-Hat-vm-ABC.log.gz",
        &url,
    ];
    assert_eq!(curl(dir, &args).status, 200);
    fs::write(dir.join("Red-Hat-vm-ABC.log.gz"), b"second log").unwrap();
    assert_eq!(curl(dir, &args).status, 200);
    assert_rotated(
        &apache.data("logs"),
        "Red-Hat-vm-ABC",
        b"first log",
        b"second log",
    );

    // An unknown section: an error script the initrd runs, so status 200.
    let r = curl(
        dir,
        &[
            "-s",
            "-S",
            "-F",
            "section=NOPE",
            "-F",
            "file=@hw.json",
            &url,
        ],
    );
    assert_eq!(r.status, 200);
    let body = String::from_utf8_lossy(&r.stdout);
    assert!(
        body.starts_with("#!/bin/sh") && body.contains("exit 1"),
        "{body}"
    );
    assert!(body.contains("NOPE"), "{body}");

    // A GET: no file.
    let r = curl(dir, &["-s", "-S", &url]);
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.stdout).contains("No file passed to the CGI"));

    let mut buf = String::new();
    fs::File::open(apache.root.join("logs/error.log"))
        .unwrap()
        .read_to_string(&mut buf)
        .unwrap();
    assert!(!buf.contains("panicked"), "{buf}");
}

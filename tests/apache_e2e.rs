//! End to end through a real Apache: our binaries installed as
//! `upload.py` / `upload-health.py` behind `ScriptAlias`, driven by the
//! initrd's own `curl` command lines.
//!
//! Each test starts a private Apache (`/usr/sbin/apache2`, Debian package
//! `apache2`, see tests/common/apache.rs). The event MPM with mod_cgid and
//! the prefork MPM with mod_cgi are both exercised.
//!
//! Without `/usr/sbin/apache2` the tests fail, unless `EDEPLOY_SKIP_APACHE=1`.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use common::apache::{apache_available, Apache, FIXTURES};
use edeploy::health::run_dir_name;
use edeploy::{hw, literal};

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
    upload_log_twice(&apache, dir, &url, "-o/dev/null");

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
            && l.contains("[client 127.0.0.1")
            && l.contains(&format!("{SYSNAME}: health result saved"))),
        "{log}"
    );
    assert!(log.contains("refused (413)"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// The initrd's log upload (`curl -s -S -o… -F section=… -F file=@….log.gz`)
/// made twice: the first log must be rotated, the second in place.
fn upload_log_twice(apache: &Apache, dir: &Path, url: &str, output: &str) {
    fs::write(dir.join("Red-Hat-vm-ABC.log.gz"), b"first log").unwrap();
    let args = [
        "-s",
        "-S",
        output,
        "-F",
        "section=SERVER",
        "-F",
        "file=@Red-Hat-vm-ABC.log.gz",
        url,
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

/// `upload.py`, against the CLI/CGI contract of the lead's engine, and the
/// log lines of its decisions under `cgi` (mod_cgid or mod_cgi).
fn upload_py_initrd_session(mpm: &str, cgi: &str) {
    if !apache_available() {
        return;
    }
    let apache = Apache::start(mpm, cgi);
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
    upload_log_twice(&apache, dir, &url, "-olog.stats");

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

    // A machine that matches no profile (its disk is too small).
    let hw = fs::read_to_string(dir.join("hw.json")).unwrap();
    let small = hw.replace(
        r#"["disk", "vda", "size", "20"]"#,
        r#"["disk", "vda", "size", "5"]"#,
    );
    assert_ne!(small, hw);
    fs::write(dir.join("small.json"), small).unwrap();
    let r = curl(dir, &["-s", "-S", "-F", "file=@small.json", &url]);
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.stdout).contains("Unable to match"));

    let mut buf = String::new();
    fs::File::open(apache.root.join("logs/error.log"))
        .unwrap()
        .read_to_string(&mut buf)
        .unwrap();
    assert!(!buf.contains("panicked"), "{buf}");
    // Every decision names the machine; each line names the client once
    // and carries one date: ours under mod_cgid, Apache's under mod_cgi.
    let ours: Vec<&str> = buf.lines().filter(|l| l.contains("[upload:")).collect();
    for decision in [
        "[upload:info] [pid ".to_owned(),
        format!("{SYSNAME}: profile vm matched"),
        format!("{SYSNAME}: failure reported for profile vm: one installation given back"),
        format!("{SYSNAME}: Unable to match requirements"),
    ] {
        assert!(
            ours.iter().any(|l| l.contains(&decision)),
            "{decision}\n{buf}"
        );
    }
    let date = regex::Regex::new(r"\d\d:\d\d:\d\d\.\d{6} \d{4}\]").unwrap();
    for line in &ours {
        assert_eq!(line.matches("[client 127.0.0.1").count(), 1, "{line}");
        assert_eq!(date.find_iter(line).count(), 1, "{line}");
        match cgi {
            "cgid" => assert!(line.starts_with('[') && line.contains("] [upload:")),
            _ => assert!(line.contains("upload.py: [upload:"), "{line}"),
        }
    }
}

#[test]
fn upload_py_initrd_session_event_mpm_mod_cgid() {
    upload_py_initrd_session("event", "cgid");
}

#[test]
fn upload_py_initrd_session_prefork_mpm_mod_cgi() {
    upload_py_initrd_session("prefork", "cgi");
}

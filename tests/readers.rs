//! Readers never wait for the lock (issue 11): while a writer holds
//! LOCKFILE, the status page, `edeploy explain`, `try-match`, `check`,
//! `cmdb-used` and `upload --dry-run` still answer, with the configuration
//! as it is, and write nothing (but the status page's cache of CMDB
//! summaries).
//!
//! A reader that takes the lock is caught as soon as it waits for it: the
//! kernel lists it as a blocked waiter in /proc/locks. No timing is
//! asserted; a deadline only bounds a reader that hangs for another reason.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The bundled legacy-config/ in a temporary directory, with an
/// `edeploy.conf` whose lock file is `lock/edeploy.lock`.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["config", "hw", "logs", "lock"] {
            fs::create_dir(root.join(d)).unwrap();
        }
        for entry in fs::read_dir(Path::new(ROOT).join("legacy-config")).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                fs::copy(entry.path(), root.join("config").join(entry.file_name())).unwrap();
            }
        }
        let r = root.display();
        fs::write(
            root.join("edeploy.conf"),
            format!(
                "[SERVER]\nCONFIGDIR = {r}/config\nHWDIR = {r}/hw\nLOGDIR = {r}/logs\n\
                 LOCKFILE = {r}/lock/edeploy.lock\n"
            ),
        )
        .unwrap();
        Site { dir }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Every file of the site with its bytes.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in fs::read_dir(dir).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.insert(path.clone(), fs::read(&path).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.dir.path(), &mut out);
        out
    }
}

/// Whether process `pid` is waiting for a `flock` (a `->` line of
/// /proc/locks: `1: -> FLOCK ADVISORY READ <pid> <dev:inode> 0 EOF`).
fn waits_for_a_lock(pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    // Status views wait for each other's turn (an flock on the program,
    // see edeploy::status::pace), never for a writer: that one is allowed.
    let turn = fs::metadata(env!("CARGO_BIN_EXE_status")).unwrap().ino();
    let locks = fs::read_to_string("/proc/locks").expect("/proc/locks");
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let inode = fields.get(6).and_then(|f| f.rsplit(':').next());
        fields.get(1) == Some(&"->")
            && fields.get(5) == Some(&pid.to_string().as_str())
            && inode != Some(turn.to_string().as_str())
    })
}

/// Runs `cmd` to completion; fails the test as soon as it waits for a lock.
fn run_without_waiting(what: &str, cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let pid = child.id();
    // Bounds a reader hung for another reason; a lock wait fails at once.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if waits_for_a_lock(pid) || Instant::now() > deadline {
            let blocked = waits_for_a_lock(pid);
            let _ = child.kill();
            let _ = child.wait();
            assert!(!blocked, "{what} waits for the lock a writer holds");
            panic!("{what} did not finish");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn readers_answer_while_a_writer_holds_the_lock() {
    let site = Site::new();
    let conf = site.path("edeploy.conf");
    let hw = Path::new(ROOT).join("legacy-config/hw/kvm-test.json");
    // The writer: an exclusive flock, as upload.py holds while it commits.
    let lock = File::create(site.path("lock/edeploy.lock")).unwrap();
    lock.lock().unwrap();
    let before = site.snapshot();

    let out = run_without_waiting(
        "status.py",
        Command::new(env!("CARGO_BIN_EXE_status"))
            .arg("--json")
            .env("EDEPLOY_CONF", &conf),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let section = &j["sections"][0];
    assert_eq!(section["errors"], serde_json::json!([]));
    let profiles = section["profiles"].as_array().unwrap();
    let kvm = profiles.iter().find(|p| p["name"] == "kvm-test").unwrap();
    assert_eq!(kvm["unlimited"], true);
    assert_eq!(kvm["cmdb"]["total"], 100);
    assert_eq!(kvm["cmdb"]["used"], 0);
    let hp = profiles.iter().find(|p| p["name"] == "hp").unwrap();
    assert_eq!(hp["remaining"], 4);

    // The same page as a CGI answer.
    let out = run_without_waiting(
        "status.py (CGI)",
        Command::new(env!("CARGO_BIN_EXE_status"))
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("REQUEST_METHOD", "GET")
            .env("QUERY_STRING", "")
            .env("EDEPLOY_CONF", &conf),
    );
    let page = text(&out.stdout);
    assert!(page.starts_with("Content-Type: text/html"), "{page}");
    assert!(
        page.contains("<td class=\"profile\">kvm-test</td>"),
        "{page}"
    );

    let out = run_without_waiting(
        "edeploy explain",
        Command::new(env!("CARGO_BIN_EXE_edeploy"))
            .arg("explain")
            .arg(&hw)
            .arg(&conf),
    );
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    assert!(
        report.contains("CMDB entry 0 of ")
            && report.ends_with("answer: profile kvm-test would be installed\n"),
        "{report}"
    );

    let out = run_without_waiting(
        "upload --dry-run",
        Command::new(env!("CARGO_BIN_EXE_upload"))
            .args(["--dry-run", "-f"])
            .arg(&hw)
            .env("EDEPLOY_CONF", &conf),
    );
    let script = text(&out.stdout);
    assert!(out.status.success(), "{script}{}", text(&out.stderr));
    assert!(
        script.contains("'edeploy-profile': 'kvm-test'") && script.contains("'vm100'"),
        "{script}"
    );

    let config = site.path("config");
    for (what, args) in [
        (
            "edeploy try-match",
            vec![
                "try-match".into(),
                hw.display().to_string(),
                config.join("kvm-test.specs").display().to_string(),
            ],
        ),
        (
            "edeploy check",
            vec!["check".into(), config.display().to_string()],
        ),
    ] {
        let out = run_without_waiting(
            what,
            Command::new(env!("CARGO_BIN_EXE_edeploy")).args(&args),
        );
        assert!(
            out.status.success(),
            "{what}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let out = run_without_waiting(
        "edeploy cmdb-used",
        Command::new(env!("CARGO_BIN_EXE_edeploy"))
            .args(["cmdb-used", "hostname", "vm100"])
            .arg(config.join("kvm-test.cmdb")),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .ends_with("kvm-test.cmdb: entry 0 has hostname 'vm100' but is not used\n"),
        "{}",
        text(&out.stdout)
    );

    let mut after = site.snapshot();
    let cache: Vec<PathBuf> = after
        .keys()
        .filter(|p| p.to_string_lossy().ends_with(".cmdb.status"))
        .cloned()
        .collect();
    assert_eq!(
        cache,
        [
            site.path("config/.hp.cmdb.status"),
            site.path("config/.kvm-test.cmdb.status")
        ]
    );
    for p in cache {
        after.remove(&p);
    }
    assert_eq!(after, before, "a reader wrote something");
    drop(lock);
}

/// The nice value and scheduling policy of process `pid` (fields 19 and
/// 41 of /proc/<pid>/stat).
fn priority_of(pid: u32) -> Option<(i64, i64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces, start at 3.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse().ok();
    Some((field(19)?, field(41)?))
}

/// status.py, as a CGI, takes the lowest CPU priority before it reads
/// anything: seen while it waits to read its configuration from a FIFO,
/// which this test then feeds.
#[test]
fn the_status_page_yields_the_cpu_to_provisioning() {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let site = Site::new();
    let conf = fs::read(site.path("edeploy.conf")).unwrap();
    let fifo = site.path("fifo.conf");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let child = Command::new(env!("CARGO_BIN_EXE_status"))
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", "GET")
        .env("QUERY_STRING", "format=json")
        .env("EDEPLOY_CONF", &fifo)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Blocked opening the FIFO (until a writer opens it): nothing has been
    // read yet.
    let waiting = |pid| {
        fs::read_to_string(format!("/proc/{pid}/wchan"))
            .is_ok_and(|w| w == "wait_for_partner" || w.contains("fifo"))
    };
    while !waiting(pid) {
        assert!(
            Instant::now() < deadline,
            "status.py never opened its configuration"
        );
        thread::sleep(Duration::from_millis(5));
    }
    let priority = priority_of(pid);
    // Its open completes with ours; later reads find a plain file there.
    let mut writer = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let plain = site.path("plain.conf");
    fs::write(&plain, &conf).unwrap();
    fs::rename(&plain, &fifo).unwrap();
    writer.write_all(&conf).unwrap();
    drop(writer);
    let out = child.wait_with_output().unwrap();
    assert_eq!(priority, Some((19, i64::from(libc::SCHED_IDLE))));
    let page = text(&out.stdout);
    assert!(
        page.starts_with("Content-Type: application/json") && page.contains("\"kvm-test\""),
        "{page}{}",
        text(&out.stderr)
    );
}

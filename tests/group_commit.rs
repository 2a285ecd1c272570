//! Group commit (src/batch.rs): requests that wait for the lock are
//! committed together by the one that takes it, and the outcome is that of
//! the same requests served one by one.
//!
//! The test holds the lock itself (it is a `flock`), starts the requests
//! one at a time, each only once the previous one's intent is queued, so
//! that their order of arrival is known, then releases the lock: one of
//! them commits them all. A serial replay runs the same requests one after
//! the other on a fresh copy of the site; the state, the CMDBs, their
//! `.orig` backups and every answer must be byte for byte the same.
//!
//! Then the kills: a waiter killed after queuing is never applied; a
//! combiner killed at each crash point of a batch in turn (debug builds)
//! leaves files that agree, and the requests it was committing are served
//! by another.

#[path = "fixtures/robust/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use edeploy::batch::queue_dir;
use edeploy::store::Lock;
use support::{
    generated_cmdb, is_used, mac, machine_json, multipart, text, Answer, Running, Site, BOUNDARY,
    PROFILE, SPECS, UPLOAD,
};

/// The second profile: the same specs, its own CMDB and script.
const SPARE: &str = "spare";
const SPARE_CONFIGURE: &str = "print('spare')\n";

/// One request of a scenario.
#[derive(Clone, Copy, Debug)]
enum Req {
    /// Machine `i` asks for its configuration (the initrd's POST).
    Machine(usize),
    /// A failed installation of a profile is reported (`upload -F`).
    Failure(&'static str),
}

/// A site with two profiles, `robust` (quota `robust`) then `spare`
/// (quota 3).
fn site(robust: i64) -> Site {
    let site = Site::new(
        &format!("[('{PROFILE}', {robust}), ('{SPARE}', 3)]\n"),
        &generated_cmdb(20),
    );
    let dir = &site.config_dir;
    fs::write(dir.join(format!("{SPARE}.specs")), SPECS).unwrap();
    fs::write(dir.join(format!("{SPARE}.configure")), SPARE_CONFIGURE).unwrap();
    fs::write(
        dir.join(format!("{SPARE}.cmdb")),
        "generate({'ip': '10.30.0.1-9', 'hostname': 'spare1-9'})\n",
    )
    .unwrap();
    site
}

/// Starts request `req` on `site`, with more environment variables.
fn start(site: &Site, req: Req, env: &[(&str, &str)]) -> Running {
    let mut command = Command::new(UPLOAD);
    command
        .env_clear()
        .envs(env.iter().copied())
        .env("PATH", "/usr/bin:/bin")
        .env("EDEPLOY_CONF", &site.conf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let body = match req {
        Req::Machine(i) => {
            let body = multipart(&machine_json(i));
            command
                .env("GATEWAY_INTERFACE", "CGI/1.1")
                .env("REQUEST_METHOD", "POST")
                .env(
                    "CONTENT_TYPE",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .env("CONTENT_LENGTH", body.len().to_string())
                .env("REMOTE_ADDR", "192.0.2.7");
            body
        }
        Req::Failure(profile) => {
            let hw = site.config_dir.join("../failed.json");
            fs::write(&hw, machine_json(999)).unwrap();
            command.arg("-f").arg(hw).args(["-F", profile]);
            Vec::new()
        }
    };
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(&body);
    Running::new(child, started)
}

/// The intents queued next to the lock file.
fn queued(site: &Site) -> Vec<PathBuf> {
    match fs::read_dir(queue_dir(&site.lock_file)) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "intent"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Waits until `n` intents are queued.
#[track_caller]
fn wait_queued(site: &Site, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while queued(site).len() < n {
        assert!(Instant::now() < deadline, "{n} intents never queued");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `reqs` while the test holds the lock, each started once the one
/// before it is queued, then releases the lock; returns the answers.
fn batched(site: &Site, reqs: &[Req]) -> Vec<Answer> {
    let lock = Lock::exclusive(&site.lock_file).unwrap();
    let mut running = Vec::new();
    for (n, &req) in reqs.iter().enumerate() {
        running.push(start(site, req, &[]));
        wait_queued(site, n + 1);
    }
    drop(lock);
    running.into_iter().map(Running::wait).collect()
}

/// Runs `reqs` one after the other.
fn serial(site: &Site, reqs: &[Req]) -> Vec<Answer> {
    reqs.iter()
        .map(|&req| start(site, req, &[]).wait())
        .collect()
}

/// Every file of CONFIGDIR but the record and spares, by name.
fn config_files(site: &Site) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(&site.config_dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            let name = e.file_name().into_string().unwrap();
            (name, fs::read(e.path()).unwrap())
        })
        .collect()
}

/// The entries of the last commit record: `(kind, target)`.
fn last_commit(site: &Site) -> Vec<(String, String)> {
    let record = fs::read(site.config_dir.join(".edeploy-commit")).unwrap();
    let text = String::from_utf8_lossy(&record[4096..]).into_owned();
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            match fields.as_slice() {
                // KIND DEV NEW_INO NEW_LEN OLD_INO OLD_LEN HASH SOURCE TARGET
                [kind, _, _, _, _, _, _, _, target] => Some((kind.to_string(), target.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// The serial replay of `reqs` in `order` (indexes of `reqs`) on a fresh
/// site gives the same answers as `got` and leaves the same files as
/// `batched`.
#[track_caller]
fn assert_same_outcome(batched: &Site, reqs: &[Req], got: &[Answer], order: &[usize]) {
    let replay_site = site(5);
    let replay: Vec<Req> = order.iter().map(|&i| reqs[i]).collect();
    let expected = serial(&replay_site, &replay);
    for (&i, want) in order.iter().zip(&expected) {
        let a = &got[i];
        assert!(a.exit.success(), "{:?}: {}", reqs[i], a.describe());
        assert_eq!(
            String::from_utf8_lossy(&a.raw),
            String::from_utf8_lossy(&want.raw),
            "{:?}: batched and serial answers differ",
            reqs[i]
        );
    }
    assert_eq!(config_files(batched), config_files(&replay_site));
}

#[test]
fn a_batch_equals_the_same_requests_served_one_by_one() {
    use Req::{Failure, Machine};
    // Two failure reports among the machines: one gives an installation
    // back to `robust` after it was spent, the other to `spare`.
    let reqs = [
        Machine(1),
        Machine(2),
        Machine(3),
        Machine(4),
        Failure(PROFILE),
        Machine(5),
        Machine(6),
        Failure(SPARE),
    ];
    let site = site(5);
    let got = batched(&site, &reqs);
    // One commit: the state, the CMDB of `robust` (`spare` is untouched),
    // and an answer for each of the 7 requests that waited.
    let entries = last_commit(&site);
    let answers = entries
        .iter()
        .filter(|(k, path)| k == "volatile" && path.ends_with(".answer"))
        .count();
    assert_eq!(answers, reqs.len() - 1, "{entries:?}");
    assert!(queued(&site).is_empty());
    let profiles: Vec<String> = got
        .iter()
        .filter_map(|a| a.script_vars())
        .map(|v| text(&v, "edeploy-profile"))
        .collect();
    assert_eq!(profiles, vec![PROFILE; 6]);
    assert_same_outcome(&site, &reqs, &got, &(0..reqs.len()).collect::<Vec<_>>());
}

/// The inode numbers of the queue's files kept for reuse.
fn recycled_inodes(site: &Site) -> BTreeSet<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir(queue_dir(&site.lock_file))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".recycled"))
        .map(|e| e.metadata().unwrap().ino())
        .collect()
}

#[test]
fn waiting_requests_reuse_the_queue_files_of_those_before() {
    use std::os::unix::fs::MetadataExt;
    use Req::Machine;
    let site = site(20);
    let first: Vec<Req> = (1..=6).map(Machine).collect();
    for a in batched(&site, &first) {
        assert!(a.script_vars().is_some(), "{}", a.describe());
    }
    // Each file of the queue kept for reuse: the 6 intents, and the
    // answers of the 5 waiters but one, which the combiner wrote in its
    // own intent's file, recycled before it.
    let kept = recycled_inodes(&site);
    assert_eq!(kept.len(), 10, "{kept:?}");
    assert!(queued(&site).is_empty());
    // The CMDB's layout is rewritten in place by each batch: no inode freed.
    let layout = site.config_dir.join(format!(".{PROFILE}.cmdb.layout"));
    let layout_inode = fs::metadata(&layout).unwrap().ino();

    // The next batch writes its intents and answers in those files: no
    // file is created (nor removed) in the queue.
    let second: Vec<Req> = (7..=12).map(Machine).collect();
    let got = batched(&site, &second);
    for a in &got {
        assert!(a.script_vars().is_some(), "{}", a.describe());
    }
    assert_eq!(recycled_inodes(&site), kept);
    assert_eq!(fs::metadata(&layout).unwrap().ino(), layout_inode);
    let hostnames: BTreeSet<String> = got
        .iter()
        .filter_map(|a| a.script_vars())
        .map(|v| text(&v, "hostname"))
        .collect();
    assert_eq!(hostnames.len(), second.len(), "{hostnames:?}");
}

#[test]
fn a_guess_spent_by_an_earlier_request_of_the_batch_is_matched_again() {
    use Req::{Failure, Machine};
    // Machine 6 matched `robust` while it had quota; by its turn the five
    // before it spent it: it is matched again, after the batch, as the
    // serial server lets the others go first while it matches again. The
    // failure report then gives `robust` back, and machine 7 takes it.
    let reqs = [
        Machine(1),
        Machine(2),
        Machine(3),
        Machine(4),
        Machine(5),
        Machine(6),
        Failure(PROFILE),
        Machine(7),
    ];
    let site = site(5);
    let got = batched(&site, &reqs);
    let profile = |i: usize| text(&got[i].script_vars().unwrap(), "edeploy-profile");
    let spare = got[5].body().unwrap();
    assert!(spare.starts_with(b"#!/usr/bin/env python\n#EDEPLOY_PROFILE = spare\n"));
    assert_eq!(profile(7), PROFILE);
    assert_same_outcome(&site, &reqs, &got, &[0, 1, 2, 3, 4, 6, 7, 5]);
}

/// CMDB entries used, by MAC: (ip, hostname); none shared.
fn used(site: &Site) -> BTreeMap<String, (String, String)> {
    let mut used = BTreeMap::new();
    let src = fs::read(site.cmdb_file()).unwrap();
    if src.starts_with(b"generate(") {
        return used;
    }
    for e in site.cmdb().iter().filter(|e| is_used(e)) {
        let old = used.insert(text(e, "mac"), (text(e, "ip"), text(e, "hostname")));
        assert!(old.is_none(), "two entries for {}", text(e, "mac"));
    }
    let mut ips: Vec<&String> = used.values().map(|(ip, _)| ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), used.len(), "an address given twice");
    used
}

/// The count of `robust` in the state.
fn robust_count(site: &Site) -> i64 {
    let state = fs::read_to_string(site.state_file()).unwrap();
    let start = state.find(&format!("('{PROFILE}', ")).unwrap() + PROFILE.len() + 5;
    let end = start + state[start..].find(')').unwrap();
    state[start..end].parse().unwrap()
}

#[test]
fn a_waiter_killed_after_queuing_is_never_applied() {
    let site = site(5);
    let lock = Lock::exclusive(&site.lock_file).unwrap();
    let mut killed = start(&site, Req::Machine(1), &[]);
    wait_queued(&site, 1);
    killed.kill();
    killed.wait();
    let other = start(&site, Req::Machine(2), &[]);
    wait_queued(&site, 2);
    drop(lock);
    let a = other.wait();
    let vars = a
        .script_vars()
        .unwrap_or_else(|| panic!("{}", a.describe()));
    let used = used(&site);
    assert_eq!(used.keys().cloned().collect::<Vec<_>>(), [mac(2)]);
    assert_eq!(used[&mac(2)], (text(&vars, "ip"), text(&vars, "hostname")));
    assert_eq!(robust_count(&site), 4);
    // The dead waiter's intent was dropped by the combiner.
    assert!(queued(&site).is_empty(), "{:?}", queued(&site));
}

/// A batch whose committer is killed at each of its crash points in turn
/// (debug builds: `EDEPLOY_CRASH_AT=N` with `EDEPLOY_CRASH_ONCE`: the first
/// of the batch's processes to reach its N-th crash point dies, the others
/// go on). The processes pass the same points until they take the lock
/// (their `.hw` file, their intent), so the first to reach the N-th one
/// past them is the one committing the batch. Whatever N, every request
/// that was not killed gets its script: a request whose committer died is
/// served by another; every script is recorded, used entries = quota
/// spent, none shared; and after a last request nothing is pending and
/// the queue is empty.
#[test]
fn a_combiner_killed_at_any_step_of_a_batch_leaves_the_others_served() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: release builds have no crash points");
        return;
    }
    const BATCH: usize = 4;
    const QUOTA: i64 = 20;
    let mut in_batch = Vec::new();
    for n in 1.. {
        assert!(n < 200, "no end to the crash points");
        let site = site(QUOTA);
        // Warm: the CMDB is expanded and the spares exist.
        let first = start(&site, Req::Machine(100), &[]).wait();
        assert!(first.script_vars().is_some(), "{}", first.describe());
        let once = site.config_dir.join("../crashed");
        let crash = n.to_string();
        let env = [
            ("EDEPLOY_CRASH_AT", crash.as_str()),
            ("EDEPLOY_CRASH_ONCE", once.to_str().unwrap()),
        ];
        let lock = Lock::exclusive(&site.lock_file).unwrap();
        let mut running = Vec::new();
        for i in 0..BATCH {
            running.push(start(&site, Req::Machine(1 + i), &env));
            // A process killed before queuing never queues.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let exited = running
                    .iter_mut()
                    .map(Running::has_exited)
                    .filter(|&exited| exited)
                    .count();
                if queued(&site).len() + exited >= running.len() {
                    break;
                }
                assert!(Instant::now() < deadline, "never queued");
                thread::sleep(Duration::from_millis(2));
            }
        }
        drop(lock);
        let answers: Vec<Answer> = running.into_iter().map(Running::wait).collect();
        let Some(victim) = answers.iter().find(|a| a.killed()) else {
            break;
        };
        assert_eq!(answers.iter().filter(|a| a.killed()).count(), 1);
        let point = victim
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix(&format!("edeploy: crash point {n}: ")))
            .unwrap_or_else(|| panic!("{}", victim.describe()))
            .to_owned();
        // The `.hw` file or the intent; a batch writes the answers.
        let before_the_lock =
            point.contains(&*site.hw_dir.to_string_lossy()) || point.contains(".intent");
        if !before_the_lock {
            in_batch.push(point.clone());
        }
        let why = format!("killed at crash point {n}: {point}");
        let mut received = BTreeMap::new();
        for (i, a) in answers.iter().enumerate().filter(|(_, a)| !a.killed()) {
            let vars = a
                .script_vars()
                .unwrap_or_else(|| panic!("{why}: machine {}: {}", 1 + i, a.describe()));
            received.insert(mac(1 + i), (text(&vars, "ip"), text(&vars, "hostname")));
        }
        // A last request completes whatever is pending.
        let last = start(&site, Req::Machine(50), &[]).wait();
        let vars = last
            .script_vars()
            .unwrap_or_else(|| panic!("{why}: last: {}", last.describe()));
        received.insert(mac(50), (text(&vars, "ip"), text(&vars, "hostname")));
        let used = used(&site);
        for (m, given) in &received {
            assert_eq!(used.get(m), Some(given), "{why}: {m} not recorded");
        }
        assert_eq!(
            used.len() as i64,
            QUOTA - robust_count(&site),
            "{why}: used entries != quota spent ({used:?})"
        );
        let check = Command::new(env!("CARGO_BIN_EXE_edeploy"))
            .arg("check")
            .arg(&site.config_dir)
            .output()
            .unwrap();
        assert!(check.status.success(), "{why}: {check:?}");
        assert!(queued(&site).is_empty(), "{why}: {:?}", queued(&site));
    }
    eprintln!("killed in the batch at: {in_batch:?}");
    for step in [
        "write the commit record",
        "flush the commit record",
        "exchange",
        "write",
        "rename",
        "flush the directory",
        "mark the commit durable",
    ] {
        assert!(
            in_batch.iter().any(|p| p.starts_with(&format!("{step} /"))),
            "never killed at {step}: {in_batch:?}"
        );
    }
}

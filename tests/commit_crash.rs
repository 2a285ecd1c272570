//! A request killed at each write, flush and rename of its commit in turn,
//! then the next request: the CMDB and state must change together or not
//! at all.
//!
//! The crash points of `store::crash_point` (debug builds only) precede
//! every write, flush, exchange and rename a request makes, and the
//! completion of an interrupted commit; `EDEPLOY_CRASH_AT=N` makes the
//! process SIGKILL itself at the N-th. For each N, on a fresh site (first
//! request: the `generate()` CMDB is expanded and the spares are created;
//! and after a first request: the spares are reused), machine A is killed
//! at point N, then machine B is served. After B, both files must parse,
//! the CMDB entries marked used must be exactly the quota spent, no entry
//! may be shared by two machines, and A's entry must be used exactly when
//! A was killed after writing its commit record (the commit point: the
//! flushes of the record and the new files come after it). Before
//! B, `edeploy check` must report the pending commit exactly when the files
//! disagree. Where A left a commit to complete, B is also killed at each
//! step of that completion in turn, then machine C is served, with the same
//! checks: completion is idempotent.
//!
//! A second test walks the real system calls instead, with `strace`'s
//! fault injection (installed by .ci/run; skipped where it cannot run):
//! the request is killed at each `write`, `pwrite64`, `ftruncate`, `fsync`,
//! `fdatasync`, `rename*` and `unlink` in turn.
//!
//! Without the commit record, the kill between the CMDB and the state
//! exchange leaves an entry used with the quota unspent for good.

#[path = "fixtures/robust/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::Command;

use edeploy::literal::{self, Document};

use support::{
    assert_distinct, generated_cmdb, is_used, mac, machine_json, spawn, spawn_under, spawn_with,
    text, Answer, Site, PROFILE,
};

const QUOTA: i64 = 40;
const CMDB_SIZE: usize = 50;
const EDEPLOY: &str = env!("CARGO_BIN_EXE_edeploy");
/// The crash point before the commit record is written: a kill at any
/// point after it leaves a decided commit.
const RECORD_POINT: &str = "write the commit record";

/// The name of the crash point a process was killed at, from its stderr
/// (`edeploy: crash point N: WHAT PATH`); `None` if it was not killed.
fn crash_point(a: &Answer, n: u64) -> Option<String> {
    if !a.killed() {
        assert!(!a.stderr.contains("crash point"), "{}", a.describe());
        return None;
    }
    let prefix = format!("edeploy: crash point {n}: ");
    let line = a
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("killed, but not at crash point {n}: {}", a.describe()));
    // WHAT is made of words, PATH is absolute.
    let what = line.split(" /").next().unwrap_or(line);
    Some(what.to_owned())
}

fn request(site: &Site, machine: usize, crash_at: Option<u64>) -> Answer {
    let hw = machine_json(machine);
    match crash_at {
        Some(n) => spawn_with(&site.conf, &hw, &[("EDEPLOY_CRASH_AT", &n.to_string())]).wait(),
        None => spawn(&site.conf, &hw).wait(),
    }
}

/// A request that must get its configure script: returns (ip, hostname).
#[track_caller]
fn served(site: &Site, machine: usize) -> (String, String) {
    let a = request(site, machine, None);
    let vars = a
        .script_vars()
        .unwrap_or_else(|| panic!("machine {machine}: {}", a.describe()));
    assert_eq!(text(&vars, "mac"), mac(machine));
    (text(&vars, "ip"), text(&vars, "hostname"))
}

/// Both files parse; MAC -> (ip, hostname) of the used entries, each
/// machine with one entry at most and no address or name given twice;
/// and the quota spent.
fn used_and_spent(site: &Site) -> (BTreeMap<String, (String, String)>, i64) {
    let spent = QUOTA - site.state_count();
    let mut used = BTreeMap::new();
    let src = std::fs::read(site.cmdb_file()).unwrap();
    if let Ok(Document::Generate(_)) = literal::parse(&site.cmdb_file(), &src) {
        // Not expanded yet: nothing used.
        return (used, spent);
    }
    for e in site.cmdb().iter().filter(|e| is_used(e)) {
        let old = used.insert(text(e, "mac"), (text(e, "ip"), text(e, "hostname")));
        assert!(old.is_none(), "two entries for {}", text(e, "mac"));
    }
    let ips: Vec<String> = used.values().map(|(ip, _)| ip.clone()).collect();
    assert_distinct("IP address", &ips);
    let names: Vec<String> = used.values().map(|(_, h)| h.clone()).collect();
    assert_distinct("host name", &names);
    (used, spent)
}

/// Whether `edeploy check` reports an unfinished commit in CONFIGDIR.
fn check_reports_pending(site: &Site) -> bool {
    let out = Command::new(EDEPLOY)
        .arg("check")
        .arg(&site.config_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pending = stdout.contains("a request was killed while committing");
    assert_eq!(out.status.success(), !pending, "{stdout}");
    pending
}

/// A fresh site; with `warm`, machine 100 was served first (spares exist,
/// the CMDB is expanded).
fn site(warm: bool) -> Site {
    let site = Site::new(
        &format!("[('{PROFILE}', {QUOTA})]\n"),
        &generated_cmdb(CMDB_SIZE),
    );
    if warm {
        served(&site, 100);
    }
    site
}

/// After the kills, the next request: machine `next` is served, and the
/// files agree. `a_decided`: machine `a`'s commit was recorded.
#[track_caller]
fn assert_whole_after(site: &Site, warm: bool, a: usize, a_decided: bool, next: usize, why: &str) {
    let given = served(site, next);
    let (used, spent) = used_and_spent(site);
    assert_eq!(
        used.len() as i64,
        spent,
        "{why}: used entries != quota spent"
    );
    assert_eq!(used.get(&mac(next)), Some(&given), "{why}");
    assert_eq!(
        used.contains_key(&mac(a)),
        a_decided,
        "{why}: killed machine's entry"
    );
    assert_eq!(
        used.len(),
        usize::from(warm) + usize::from(a_decided) + 1,
        "{why}"
    );
    assert!(!check_reports_pending(site), "{why}");
}

#[test]
fn a_request_killed_at_any_step_of_its_commit_changes_all_or_nothing() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: release builds have no crash points");
        return;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut pending_seen = 0;
    let mut recovery_kills = 0;
    for warm in [false, true] {
        let mut decided = false;
        let mut record_written = false;
        let mut points = Vec::new();
        for n in 1.. {
            let site = site(warm);
            let a = request(&site, 1, Some(n));
            let Some(point) = crash_point(&a, n) else {
                // Past the last crash point: the request went through.
                assert!(a.script_vars().is_some(), "{}", a.describe());
                break;
            };
            assert!(n < 100, "no end to the crash points");
            decided |= record_written;
            record_written |= point == RECORD_POINT;
            let why = format!("warm {warm}, killed at point {n} ({point})");
            eprintln!("{why}");
            seen.push(point.clone());
            points.push(point.clone());

            // Between the kill and the next request: before the commit
            // point nothing of A is there; after it, check reports the
            // commit until all of it is in place, and the files may only
            // disagree meanwhile.
            let (used, spent) = used_and_spent(&site);
            let before = i64::from(warm);
            let a_in_place = used.contains_key(&mac(1)) && spent == before + 1;
            if !decided {
                assert_eq!((used.len() as i64, spent), (before, before), "{why}");
            }
            let pending = check_reports_pending(&site);
            assert_eq!(pending, decided && !a_in_place, "{why}");
            assert!(pending || used.len() as i64 == spent, "{why}");
            if !pending {
                assert_whole_after(&site, warm, 1, decided, 2, &why);
                continue;
            }
            pending_seen += 1;
            assert!(decided, "{why}: pending before the commit point");

            // The next request killed while completing that commit, at
            // each step of the completion in turn, then another one.
            let mut completion_points = 0;
            for m in 1.. {
                let site = self::site(warm);
                let a = request(&site, 1, Some(n));
                assert_eq!(crash_point(&a, n).as_deref(), Some(point.as_str()));
                let b = request(&site, 2, Some(m));
                let b_point = crash_point(&b, m).unwrap_or_default();
                if !b_point.starts_with("recover:") {
                    // Before the completion (B's own .hw file) or past it.
                    if completion_points > 0 {
                        break;
                    }
                    assert!(m < 50, "{why}: no completion point in the next request");
                    continue;
                }
                completion_points += 1;
                recovery_kills += 1;
                seen.push(b_point.clone());
                let why = format!("{why}, next killed at point {m} ({b_point})");
                eprintln!("{why}");
                // B's own commit never started: only A's may be in place.
                assert_whole_after(&site, warm, 1, true, 3, &why);
            }
        }
        // The fast path: once the previous commit marked itself durable,
        // the directory is not flushed again under the lock.
        let flushed = points
            .iter()
            .any(|p| p == "flush the directory before the commit record");
        assert_eq!(flushed, !warm, "{points:?}");
    }
    // The walk must have gone through the steps that matter.
    for step in [
        "write",
        "flush",
        "flush the directory before the commit record",
        RECORD_POINT,
        "flush the commit record",
        "exchange",
        "flush the directory",
        "mark the commit durable",
        "answer",
        "recover: flush the commit record",
        "recover: exchange",
        "recover: flush the directory",
    ] {
        assert!(
            seen.iter().any(|p| p == step),
            "never killed at {step}: {seen:?}"
        );
    }
    assert!(
        pending_seen >= 4,
        "{pending_seen} kills left a commit pending"
    );
    eprintln!(
        "{} kills, {pending_seen} of them left a commit to complete, {recovery_kills} kills \
         while completing one",
        seen.len()
    );
}

/// System calls that write, flush or rename, as `strace -e inject` names
/// them on x86_64 and aarch64 (unknown ones are refused by strace: then
/// that name is skipped).
const WRITING_CALLS: [&str; 9] = [
    "write",
    "pwrite64",
    "ftruncate",
    "fsync",
    "fdatasync",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
];

/// The same walk with real system calls instead of crash points, in any
/// build: `strace` kills the request at the N-th call of each kind that
/// writes, flushes or renames (`-e inject=CALL:signal=SIGKILL:when=N`),
/// for every N until the request goes through; then the next request must
/// leave files that agree. This needs no hook, and fails on the code
/// before the commit record (a kill at the second `renameat2`).
#[test]
fn a_request_killed_at_each_of_its_system_calls_changes_all_or_nothing() {
    let probe = Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: strace cannot run here (.ci/run installs it)");
        return;
    }
    let mut kills = 0;
    let mut completed = 0;
    for call in WRITING_CALLS {
        for n in 1.. {
            assert!(n < 100, "{call}: no end");
            let site = site(true);
            let inject = format!("inject={call}:signal=SIGKILL:when={n}");
            let wrapper = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", &inject];
            let a = spawn_under(&wrapper, &site.conf, &machine_json(1), &[]).wait();
            if !a.killed() {
                // Past the last such call, or a call strace does not know.
                assert!(
                    a.script_vars().is_some() || a.stderr.contains("invalid system call"),
                    "{call} #{n}: {}",
                    a.describe()
                );
                break;
            }
            kills += 1;
            let why = format!("killed at {call} #{n}");
            let b = request(&site, 2, None);
            let vars = b
                .script_vars()
                .unwrap_or_else(|| panic!("{why}: next request: {}", b.describe()));
            completed += usize::from(b.stderr.contains("completed the commit"));
            let (used, spent) = used_and_spent(&site);
            assert_eq!(
                used.len() as i64,
                spent,
                "{why}: used entries != quota spent"
            );
            assert_eq!(
                used.get(&mac(2)),
                Some(&(text(&vars, "ip"), text(&vars, "hostname"))),
                "{why}"
            );
            assert!(!check_reports_pending(&site), "{why}");
        }
    }
    eprintln!("{kills} kills, {completed} commits completed by the next request");
    assert!(kills >= 10, "only {kills} kills");
    // The kills between the record and the last exchange.
    assert!(completed >= 2, "{completed} commits completed");
}

//! `edeploy plan` on a realistic fleet: the two real servers of
//! tests/fixtures/real-hw and copies of them with other serial numbers,
//! installed through the server's own `provision` against a scratch copy
//! of their configuration (so the state, CMDBs and `.hw` files are what
//! the server leaves), plus machines the configuration cannot install and
//! a broken `.hw` file. Table and JSON output, `--changed`, exit statuses,
//! a proposed configuration, and that nothing is written or locked.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fleet;
use edeploy::config::Config;
use edeploy::hw::Item;
use edeploy::plan::{self, Decision, Last};
use edeploy::provision::{self, Outcome};

const EXE: &str = env!("CARGO_BIN_EXE_edeploy");

const HP: &str = "hp-proliant-dl360p-gen8";
const DELL: &str = "dell-poweredge-m520";

/// A scratch site: CONFIGDIR, HWDIR, a lock file, and an edeploy.conf
/// naming them.
struct Site {
    tmp: tempfile::TempDir,
    cfg: Config,
    conf: PathBuf,
    /// Sysnames, in the order the machines were seen.
    names: Vec<String>,
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn hp(serial: &str, n: usize) -> Vec<Item> {
    let ip = format!("10.66.6.{}", 50 + n);
    fleet::variant(&fleet::real(HP), serial, &fleet::mac(n), &ip)
}

fn dell(serial: &str, n: usize) -> Vec<Item> {
    let ip = format!("10.142.32.{}", 50 + n);
    fleet::variant(&fleet::real(DELL), serial, &fleet::mac(n), &ip)
}

/// The real configuration (hp: count 2, a CMDB by `$$serial`; dell:
/// unlimited, a generate() CMDB of three serials) after the server
/// installed both real machines and one more of each kind; then seen but
/// not installable: an HP machine once hp's count is spent, and a Dell
/// machine whose serial is in no CMDB entry; and a broken `.hw` file.
fn site() -> Site {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    let hw_dir = tmp.path().join("hw");
    copy_dir(&Path::new(fleet::REAL_HW).join("config"), &config);
    fs::create_dir(&hw_dir).unwrap();
    let mut cfg = Config::for_dir(&config);
    cfg.hw_dir = Config::for_dir(&hw_dir).config_dir;
    cfg.lock_file = tmp.path().join("edeploy.lock");
    let conf = tmp.path().join("edeploy.conf");
    fs::write(
        &conf,
        format!(
            "[SERVER]\nCONFIGDIR={}\nHWDIR={}\nLOCKFILE={}\n",
            config.display(),
            hw_dir.display(),
            cfg.lock_file.display()
        ),
    )
    .unwrap();

    let mut names = Vec::new();
    let installed = [
        fleet::real(HP),
        fleet::real(DELL),
        hp("CZ0000AAAA", 1),
        dell("9K9PW00", 2),
    ];
    for items in installed {
        let Outcome::Configured(c) = provision::provision(&cfg, &items, None, false).unwrap()
        else {
            panic!("not configured");
        };
        let file = cfg.hw_dir.join(provision::hw_file_name(&c.sysname));
        let f = fs::File::options().write(true).open(&file).unwrap();
        f.set_modified(fleet::minute(names.len() as u64)).unwrap();
        names.push(c.sysname);
    }
    for items in [hp("CZ9999ZZZZ", 3), dell("9K9PW77", 4)] {
        let (_, sysname) = fleet::save(&cfg.hw_dir, &items, fleet::minute(names.len() as u64));
        names.push(sysname);
    }
    let broken = cfg.hw_dir.join("broken.hw");
    fs::write(
        &broken,
        "[('system', 'product', 'name', 'x'),\n ('disk', 'sda', 'size', '1']\n",
    )
    .unwrap();
    let f = fs::File::options().write(true).open(&broken).unwrap();
    f.set_modified(fleet::minute(names.len() as u64)).unwrap();
    Site {
        tmp,
        cfg,
        conf,
        names,
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `edeploy` with the site's configuration; fails if it takes more
/// than a minute (it would be waiting for a lock).
fn edeploy(site: &Site, args: &[&str]) -> Run {
    let mut child = Command::new(EXE)
        .args(args)
        .env("EDEPLOY_CONF", &site.conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run edeploy");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("edeploy {args:?} did not finish in a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The table's line for machine `sysname`, its fields split on blanks.
fn row<'a>(table: &'a str, sysname: &str) -> Vec<&'a str> {
    let line = table
        .lines()
        .find(|l| l.ends_with(sysname))
        .unwrap_or_else(|| panic!("no line for {sysname} in\n{table}"));
    line.split_whitespace().collect()
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn machine<'a>(plan: &'a serde_json::Value, sysname: &str) -> &'a serde_json::Value {
    plan["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["sysname"] == sysname)
        .unwrap_or_else(|| panic!("{sysname} not in {plan}"))
}

#[test]
fn the_live_configuration_keeps_its_installed_fleet() {
    let site = site();
    let run = edeploy(&site, &["plan"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    let n = &site.names;
    // Installed machines keep their profile although hp's count is 0.
    assert_eq!(row(out, &n[0]), ["hp", "-", n[0].as_str()]);
    assert_eq!(row(out, &n[1]), ["dell", "-", n[1].as_str()]);
    assert_eq!(row(out, &n[2]), ["hp", "-", n[2].as_str()]);
    assert_eq!(row(out, &n[3]), ["dell", "-", n[3].as_str()]);
    assert_eq!(row(out, &n[4]), ["(none)", "-", n[4].as_str()]);
    assert_eq!(row(out, &n[5]), ["(none)", "-", n[5].as_str()]);
    assert_eq!(row(out, "broken"), ["(unreadable)", "-", "broken"]);
    // In the order they were seen.
    let order: Vec<usize> = n.iter().map(|s| out.find(s.as_str()).unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{out}");

    let profile = |name: &str| {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} line in\n{out}"));
        line.split_whitespace().collect::<Vec<_>>()
    };
    // PROFILE COUNT AFTER MACHINES NEW NO-COUNT CMDB-FREE AFTER
    assert_eq!(profile("hp"), ["hp", "0", "0", "2", "0", "1", "0/2", "0"]);
    assert_eq!(
        profile("dell"),
        ["dell", "*", "*", "2", "0", "0", "1/3", "1"]
    );
    let config_dir = site.cfg.config_dir.display().to_string();
    let scratch = site.tmp.path().display().to_string();
    assert!(
        out.contains(&format!(
            "     1  Unable to match requirements on the following available roles in {config_dir}: dell\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("     1  No entry matched in the CMDB, aborting.\n"),
        "{out}"
    );
    // The broken file, with its line and column, here and on stderr.
    let broken = site.cfg.hw_dir.join("broken.hw");
    let position = format!("{}:2:", broken.display());
    assert!(out.contains(&format!("  {position}")), "{out}");
    assert!(run.stderr.contains(&position), "{}", run.stderr);
    assert!(
        out.ends_with(
            "7 machine(s): 0 would change profile, 2 would get nothing, 1 unreadable;\n\
             last decision unknown for 7 (not counted as changes).\n"
        ),
        "{out}"
    );
    // Readable at 80 columns: only machine names may go past.
    for line in out.lines() {
        if !n.iter().any(|s| line.ends_with(s.as_str())) && !line.contains(&scratch) {
            assert!(line.chars().count() <= 80, "too wide: {line}");
        }
    }

    let run = edeploy(&site, &["plan", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let plan = json(&run);
    assert_eq!(
        machine(&plan, &n[0])["now"],
        serde_json::json!({"profile": "hp", "cmdb_entry": 1, "kept": true})
    );
    assert_eq!(machine(&plan, &n[2])["now"]["cmdb_entry"], 0);
    assert_eq!(machine(&plan, &n[0])["last"], serde_json::Value::Null);
    assert_eq!(
        machine(&plan, &n[5])["now"],
        serde_json::json!({"profile": null, "reason": "No entry matched in the CMDB, aborting."})
    );
    assert!(machine(&plan, "broken")["now"]["error"]
        .as_str()
        .unwrap()
        .starts_with(&position));
    assert_eq!(
        plan["profiles"][0],
        serde_json::json!({
            "profile": "hp", "count": 0, "count_after": 0, "machines": 2, "new": 0,
            "turned_away": 1, "cmdb": {"entries": 2, "free": 0, "free_after": 0},
            "cmdb_short": 0,
        })
    );
    assert_eq!(plan["profiles"][1]["count"], "*");
    assert_eq!(plan["profiles"][1]["cmdb_short"], 1);
    assert_eq!(
        plan["summary"],
        serde_json::json!({"machines": 7, "changed": 0, "nothing": 2, "unreadable": 1, "last_unknown": 7})
    );
    assert!(plan.get("live_config_dir").is_some_and(|v| v.is_null()));

    let run = edeploy(&site, &["plan", "--changed"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("\nNo machine would change profile.\n"),
        "{}",
        run.stdout
    );
}

/// A copy of the live configuration where hp gets one more installation
/// and a CMDB entry for the machine it turned away, and dell wants more
/// memory than the Dell machines have.
fn proposal(site: &Site) -> PathBuf {
    let dir = site.tmp.path().join("proposed");
    copy_dir(&site.cfg.config_dir, &dir);
    fs::write(dir.join("state"), "[('hp', 1), ('dell', '*')]\n").unwrap();
    let cmdb = fs::read_to_string(dir.join("hp.cmdb")).unwrap();
    let cmdb = cmdb.trim_end().trim_end_matches(']').to_owned()
        + ",\n {'serial': 'CZ9999ZZZZ', 'ipmi_channel': 2, 'hostname': 'hp-3', 'ip': '10.66.6.12'}]\n";
    fs::write(dir.join("hp.cmdb"), cmdb).unwrap();
    let specs = fs::read_to_string(dir.join("dell.specs")).unwrap();
    fs::write(
        dir.join("dell.specs"),
        specs.replace("ge(137438953472)", "ge(1099511627776)"),
    )
    .unwrap();
    dir
}

#[test]
fn a_proposed_configuration_shows_the_machines_it_moves() {
    let site = site();
    let dir = proposal(&site);
    let n = &site.names;
    let run = edeploy(&site, &["plan", "--config", dir.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    let header = out.lines().find(|l| l.contains("MACHINE")).unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["PROPOSED", "LIVE", "LAST", "MACHINE"]
    );
    assert_eq!(row(out, &n[0]), ["hp", "hp", "-", n[0].as_str()]);
    assert_eq!(row(out, &n[1]), ["*", "(none)", "dell", "-", n[1].as_str()]);
    assert_eq!(row(out, &n[3]), ["*", "(none)", "dell", "-", n[3].as_str()]);
    assert_eq!(row(out, &n[4]), ["*", "hp", "(none)", "-", n[4].as_str()]);
    // Nothing before, nothing now: no change.
    assert_eq!(row(out, &n[5]), ["(none)", "(none)", "-", n[5].as_str()]);
    assert!(
        out.contains("7 machine(s): 3 would change profile, 3 would get nothing, 1 unreadable;\nlast decision unknown for 7 (compared with the live answer).\n"),
        "{out}"
    );
    // hp's new installation is spent by the machine it turned away.
    let hp_line = out.lines().find(|l| l.starts_with("hp ")).unwrap();
    assert_eq!(
        hp_line.split_whitespace().collect::<Vec<_>>(),
        ["hp", "1", "0", "3", "1", "0", "1/3", "0"]
    );

    let run = edeploy(
        &site,
        &["plan", "--config", dir.to_str().unwrap(), "--changed"],
    );
    assert_eq!(run.code, 1);
    let shown: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("* ")).collect();
    assert_eq!(shown.len(), 3, "{}", run.stdout);
    assert!(!run.stdout.contains(&n[0]), "{}", run.stdout);

    let run = edeploy(
        &site,
        &[
            "plan",
            "--json",
            "--changed",
            "--config",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 1);
    let plan = json(&run);
    let moved: Vec<&str> = plan["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sysname"].as_str().unwrap())
        .collect();
    assert_eq!(moved, [&n[1], &n[3], &n[4]]);
    let m = machine(&plan, &n[4]);
    assert_eq!(m["now"]["profile"], "hp");
    assert_eq!(m["now"]["kept"], false);
    assert_eq!(m["live"]["profile"], serde_json::Value::Null);
    assert_eq!(m["changed"], true);
    assert_eq!(plan["summary"]["changed"], 3);
    assert_eq!(
        plan["live_config_dir"],
        site.cfg.config_dir.display().to_string()
    );
}

/// Every file of a tree, with its contents and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            files.extend(snapshot(&path));
        } else {
            let modified = entry.metadata().unwrap().modified().unwrap();
            files.insert(path.clone(), (fs::read(&path).unwrap(), modified));
        }
    }
    files
}

fn set_mode(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn nothing_is_written_and_no_lock_is_taken() {
    let site = site();
    let dir = proposal(&site);
    // A request holds the lock for as long as the plans run.
    let lock = edeploy::store::Lock::exclusive(&site.cfg.lock_file).unwrap();
    for d in [&site.cfg.config_dir, &site.cfg.hw_dir, &dir] {
        set_mode(d, 0o555);
    }
    let before = snapshot(site.tmp.path());
    let live = edeploy(&site, &["plan"]);
    let proposed = edeploy(
        &site,
        &["plan", "--json", "--config", dir.to_str().unwrap()],
    );
    let after = snapshot(site.tmp.path());
    for d in [&site.cfg.config_dir, &site.cfg.hw_dir, &dir] {
        set_mode(d, 0o755);
    }
    drop(lock);
    assert_eq!((live.code, proposed.code), (0, 1), "{}", live.stderr);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    assert!(before == after, "a file changed");
}

#[test]
fn usage_and_input_errors_exit_2() {
    let site = site();
    for args in [
        &["plan", "extra"][..],
        &["plan", "--unknown"],
        &["plan", "--config"],
    ] {
        let run = edeploy(&site, args);
        assert_eq!(run.code, 2, "{args:?}");
        assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
        assert!(
            run.stderr.contains("Usage: edeploy plan") || run.stderr.contains("--config <DIR>"),
            "{}",
            run.stderr
        );
    }
    let missing = site.tmp.path().join("nowhere");
    let run = edeploy(&site, &["plan", "--config", missing.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(&format!("{}/state", missing.display())),
        "{}",
        run.stderr
    );
    fs::write(site.cfg.config_dir.join("state"), "[('hp', 1)\n").unwrap();
    let run = edeploy(&site, &["plan"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("state:2:"), "{}", run.stderr);
    let run = edeploy(&site, &["help", "plan"]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("Usage: edeploy plan"), "{}", run.stdout);
}

/// Last decisions come from the caller (the journal): a machine changes
/// when it would get another profile than it got last; one whose last
/// decision gave it a profile keeps it without its count.
#[test]
fn last_decisions_decide_what_changes() {
    let site = site();
    let n = site.names.clone();
    let last = |sysname: &str| {
        if sysname == n[0] || sysname == n[1] {
            Some(Last::Profile("dell".to_owned()))
        } else if sysname == n[4] || sysname == n[5] {
            Some(Last::Nothing)
        } else {
            None
        }
    };
    let plan = plan::plan(&site.cfg, None, &last).unwrap();
    let changed: Vec<&str> = plan
        .rows
        .iter()
        .filter(|r| r.changed)
        .map(|r| r.sysname.as_str())
        .collect();
    assert_eq!(changed, [n[0].as_str()]);
    assert_eq!(plan.changed(), 1);

    // A profile without a CMDB, its count spent: the machine it gave a
    // profile last keeps it, a new one is turned away.
    fs::write(site.cfg.config_dir.join("hp.cmdb"), "[]\n").unwrap();
    let last = |sysname: &str| (sysname == n[2]).then(|| Last::Profile("hp".to_owned()));
    let plan = plan::plan(&site.cfg, None, &last).unwrap();
    let now: Vec<Option<&str>> = plan.rows.iter().map(|r| r.now.profile()).collect();
    assert_eq!(
        now,
        [
            None,
            Some("dell"),
            Some("hp"),
            Some("dell"),
            None,
            None,
            None
        ]
    );
    assert!(matches!(
        &plan.rows[2].now,
        Decision::Profile {
            kept: true,
            cmdb_entry: None,
            ..
        }
    ));
    assert_eq!(plan.profiles[0].turned_away, 2);
    assert_eq!(plan.changed(), 0);
}

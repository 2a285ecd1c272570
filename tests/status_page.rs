//! The status page (`status.py`): what it gathers from a configuration
//! (quotas, CMDB usage, latest files, inline errors), that it escapes every
//! value in HTML and keeps it intact in JSON, that it writes nothing, and,
//! end to end, the page served by a private Apache (tests/common/apache.rs)
//! and rendered by headless Chromium.
//!
//! The end-to-end test fails without `/usr/sbin/apache2` unless
//! `EDEPLOY_SKIP_APACHE=1`, and without `/usr/bin/chromium` unless
//! `EDEPLOY_SKIP_BROWSER=1`. With `EDEPLOY_STATUS_SCREENSHOT=<file.png>` it
//! also saves a screenshot of the page there.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File, FileTimes};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::apache::{apache_available, Apache, FIXTURES};
use common::chromium;
use edeploy::status::{self, Status, FILES_SHOWN, USED_SHOWN};
use serde_json::Value as Json;

const HOSTILE_HOST: &str = "<script>alert(1)</script>";
const HOSTILE_ATTR: &str = "\"onmouseover=alert(2) x=\"";
const HOSTILE_PROFILE: &str = "<b>bold</b>'s";
const HOSTILE_FILE: &str = "<img src=x onerror=alert(3)>.hw";

/// A configuration in a temporary directory: `edeploy.conf` and the
/// directories of its sections under `data/`.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in ["data/config", "data/hw", "data/logs", "data/lock", "script"] {
            fs::create_dir_all(site.path(d)).unwrap();
        }
        site
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn conf(&self) -> PathBuf {
        self.path("edeploy.conf")
    }

    /// `[SERVER]` with every directory under `data/`, then `extra`.
    fn write_conf(&self, extra: &str) {
        let root = self.dir.path().display();
        let conf = format!(
            "[SERVER]\nCONFIGDIR = {root}/data/config\nHWDIR = {root}/data/hw/\n\
             LOGDIR = {root}/data/logs\nLOCKFILE = {root}/data/lock/edeploy.lock\n{extra}"
        );
        fs::write(self.conf(), conf).unwrap();
    }

    fn write(&self, sub: &str, contents: &str) {
        fs::write(self.path(sub), contents).unwrap();
    }

    fn gather(&self) -> Status {
        status::gather(&self.conf(), true, &self.path("script"))
    }
}

fn set_mtime(path: &Path, secs: u64) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(FileTimes::new().set_modified(UNIX_EPOCH + Duration::from_secs(secs)))
        .unwrap();
}

fn json(status: &Status) -> Json {
    serde_json::from_slice(&status::to_json(status).unwrap()).unwrap()
}

/// The profiles of one section of the JSON, by name.
fn profiles(j: &Json, section: usize) -> BTreeMap<String, Json> {
    j["sections"][section]["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p.clone()))
        .collect()
}

/// The site of most tests: three profiles in the state file, one more with
/// only specs, a list CMDB with two used entries and a `generate()` one.
fn fleet() -> Site {
    let site = Site::new();
    site.write_conf("");
    site.write(
        "data/config/state",
        "[('vm', 3), ('hp', '*'), ('old', '0')]\n",
    );
    for f in ["vm.specs", "vm.configure", "hp.specs", "spare.specs"] {
        site.write(&format!("data/config/{f}"), "[]\n");
    }
    site.write(
        "data/config/vm.cmdb",
        "[{'hostname': 'node1', 'ip': '10.0.0.1', 'mac': '52:54:00:00:00:01', 'used': 1},\n \
         {'hostname': 'node2', 'ip': '10.0.0.2'},\n \
         {'hostname': 'node3', 'ip': '10.0.0.3', 'used': 1},\n \
         {'hostname': 'node4', 'ip': '10.0.0.4'},\n \
         {'hostname': 'node5', 'ip': '10.0.0.5'}]\n",
    );
    site.write(
        "data/config/hp.cmdb",
        "generate({'hostname': 'hp-1-100', 'ip': '192.168.0.1-100'})\n",
    );
    site
}

#[test]
fn quotas_and_cmdb_usage() {
    let site = fleet();
    let j = json(&site.gather());
    assert_eq!(j["error"], Json::Null);
    assert_eq!(j["sections"].as_array().unwrap().len(), 1);
    let s = &j["sections"][0];
    assert_eq!(s["name"], "SERVER");
    assert_eq!(s["errors"], serde_json::json!([]));
    assert_eq!(s["lock_warning"], Json::Null);
    let names: Vec<&str> = s["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vm", "hp", "old", "spare"]);
    let p = profiles(&j, 0);

    let vm = &p["vm"];
    assert_eq!(
        (&vm["remaining"], &vm["unlimited"]),
        (&Json::from(3), &Json::from(false))
    );
    assert_eq!(
        (&vm["specs"], &vm["configure"]),
        (&Json::from(true), &Json::from(true))
    );
    let c = &vm["cmdb"];
    assert_eq!(
        (&c["total"], &c["used"], &c["free"]),
        (&Json::from(5), &Json::from(2), &Json::from(3))
    );
    assert_eq!(c["generated"], false);
    assert_eq!(
        c["used_entries"],
        serde_json::json!([
            {"index": 0, "hostname": "node1", "ip": "10.0.0.1", "mac": "52:54:00:00:00:01"},
            {"index": 2, "hostname": "node3", "ip": "10.0.0.3", "mac": null},
        ])
    );

    let hp = &p["hp"];
    assert_eq!(
        (&hp["unlimited"], &hp["remaining"]),
        (&Json::from(true), &Json::Null)
    );
    assert_eq!(hp["configure"], false);
    let c = &hp["cmdb"];
    assert_eq!(c["generated"], true);
    assert_eq!(
        (&c["total"], &c["used"], &c["free"]),
        (&Json::from(100), &Json::from(0), &Json::from(100))
    );

    assert_eq!(p["old"]["remaining"], 0);
    assert_eq!(p["old"]["cmdb"], Json::Null);
    assert_eq!(
        (&p["spare"]["in_state"], &p["spare"]["remaining"]),
        (&Json::from(false), &Json::Null)
    );

    let html = status::to_html(&site.gather());
    for row in [
        "<tr><td class=\"profile\">vm</td><td class=\"num remaining\">3</td>",
        "<td class=\"num used\">2</td><td class=\"num free\">3</td><td class=\"num total\">5</td>",
        "<tr><td class=\"profile\">hp</td><td class=\"num remaining\"><span class=\"unlimited\">unlimited</span></td>",
        "<td class=\"num used\">0</td><td class=\"num free\">100</td><td class=\"num total\">100</td>",
        "<tr><td class=\"profile\">old</td><td class=\"num remaining\"><span class=\"exhausted\">0</span></td>",
        "<tr><td class=\"profile\">spare</td><td class=\"num remaining\"><span class=\"none\">not in state</span></td>",
        "<td class=\"hostname\">node3</td><td>10.0.0.3</td>",
        "(a generate() model, expanded at the first installation)",
    ] {
        assert!(html.contains(row), "{row} not in\n{html}");
    }
}

#[test]
fn latest_files_newest_first_and_bounded() {
    let site = fleet();
    for i in 0..FILES_SHOWN + 5 {
        let path = site.path(&format!("data/hw/m{i:02}.hw"));
        fs::write(&path, "x".repeat(i)).unwrap();
        set_mtime(&path, 1_700_000_000 + i as u64 * 60);
    }
    site.write("data/hw/notes.txt", "not a hardware file");
    for (name, secs) in [
        ("b.log.gz", 1_600_000_000),
        ("a.log.gz", 1_600_000_100),
        ("c.log", 1_600_000_200),
    ] {
        let path = site.path(&format!("data/logs/{name}"));
        fs::write(&path, "log").unwrap();
        set_mtime(&path, secs);
    }
    let j = json(&site.gather());
    let hw = &j["sections"][0]["hw_files"];
    assert_eq!(hw["total"], FILES_SHOWN + 5);
    let files = hw["files"].as_array().unwrap();
    assert_eq!(files.len(), FILES_SHOWN);
    let newest = FILES_SHOWN + 4;
    assert_eq!(files[0]["name"], format!("m{newest}.hw"));
    assert_eq!(files[0]["size"], newest);
    assert_eq!(files[0]["mtime"], 1_700_000_000 + newest as u64 * 60);
    assert_eq!(files[0]["modified"], "2023-11-14 23:07:20 UTC");
    assert_eq!(files[FILES_SHOWN - 1]["name"], "m05.hw");
    let logs = &j["sections"][0]["logs"];
    assert_eq!(logs["total"], 2);
    let names: Vec<&str> = logs["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.log.gz", "b.log.gz"]);
    let html = status::to_html(&site.gather());
    assert!(
        html.contains(&format!("{} <code>*.hw</code> in", FILES_SHOWN + 5)),
        "{html}"
    );
    assert!(
        html.contains(&format!("the newest {FILES_SHOWN} shown")),
        "{html}"
    );
    assert!(
        html.contains("<td class=\"path\">a.log.gz</td><td>2020-09-13 12:28:20 UTC</td>"),
        "{html}"
    );
    assert!(
        !html.contains("m04.hw") && !html.contains("notes.txt"),
        "{html}"
    );
}

#[test]
fn hostile_values_are_escaped_in_html_and_intact_in_json() {
    let site = fleet();
    site.write(
        "data/config/state",
        &format!("[('vm', 3), ({HOSTILE_PROFILE:?}, 1)]\n"),
    );
    site.write(
        "data/config/vm.cmdb",
        &format!(
            "[{{'hostname': {HOSTILE_HOST:?}, 'ip': '10.0.0.1', 'mac': '{}', 'used': 1}}]\n",
            HOSTILE_ATTR.replace('\'', "\\'")
        ),
    );
    site.write(&format!("data/hw/{HOSTILE_FILE}"), "");
    let status = site.gather();

    let j = json(&status);
    let p = profiles(&j, 0);
    assert!(p.contains_key(HOSTILE_PROFILE), "{p:?}");
    let entry = &p["vm"]["cmdb"]["used_entries"][0];
    assert_eq!(entry["hostname"], HOSTILE_HOST);
    assert_eq!(entry["mac"], HOSTILE_ATTR);
    assert_eq!(
        j["sections"][0]["hw_files"]["files"][0]["name"],
        HOSTILE_FILE
    );

    let html = status::to_html(&status);
    for raw in [
        HOSTILE_HOST,
        HOSTILE_ATTR,
        HOSTILE_PROFILE,
        HOSTILE_FILE,
        "\"onmouseover=",
    ] {
        assert!(!html.contains(raw), "{raw} unescaped in\n{html}");
    }
    for escaped in [
        "<td class=\"hostname\">&lt;script&gt;alert(1)&lt;/script&gt;</td>",
        "<td>&quot;onmouseover=alert(2) x=&quot;</td>",
        "<td class=\"profile\">&lt;b&gt;bold&lt;/b&gt;&#39;s</td>",
        "<td class=\"path\">&lt;img src=x onerror=alert(3)&gt;.hw</td>",
    ] {
        assert!(html.contains(escaped), "{escaped} not in\n{html}");
    }
    assert!(
        !html.contains("<script") && !html.contains("<img"),
        "{html}"
    );
}

#[test]
fn errors_are_shown_inline_per_section() {
    let site = fleet();
    let root = site.dir.path().display().to_string();
    fs::create_dir_all(site.path("data/lab")).unwrap();
    fs::create_dir_all(site.path("data/bad")).unwrap();
    site.write_conf(&format!(
        "[lab]\nCONFIGDIR = {root}/data/lab\nLOCKFILE = {root}/no/such/dir/lock\n\
         [bad]\nCONFIGDIR = {root}/data/bad\nMAXHWSIZE = lots\n\
         [health]\nHEALTHDIR = /srv/health\n"
    ));
    // lab: a state that does not parse, a CMDB with a non-dict entry.
    site.write("data/lab/state", "[('vm', 3),\n ('hp' 2)]\n");
    site.write("data/lab/vm.specs", "[]\n");
    site.write("data/lab/vm.cmdb", "[{'used': 1}, 42, {}]\n");
    // SERVER: one CMDB that does not parse, the other profile still shown.
    site.write(
        "data/config/vm.cmdb",
        "[{'hostname': 'a', 'used': 1},\n {'ip': }]\n",
    );

    let status = site.gather();
    let j = json(&status);
    let names: Vec<&str> = j["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["SERVER", "bad", "lab"],
        "a section without CONFIGDIR is not shown"
    );

    let server = profiles(&j, 0);
    let vm = &server["vm"]["cmdb"];
    let cmdb_file = format!("{root}/data/config/vm.cmdb");
    let e = vm["error"].as_str().unwrap();
    assert!(e.starts_with(&format!("{cmdb_file}:2:9: ")), "{e}");
    assert_eq!(
        (&vm["used"], &vm["total"]),
        (&Json::from(1), &Json::from(1))
    );
    assert_eq!(server["hp"]["cmdb"]["total"], 100);

    let bad = &j["sections"][1];
    assert_eq!(bad["config_dir"], Json::Null);
    let e = bad["errors"][0].as_str().unwrap();
    assert!(
        e.starts_with(&format!("{}:11: [bad] MAXHWSIZE", site.conf().display())),
        "{e}"
    );

    let lab = &j["sections"][2];
    let warning = lab["lock_warning"].as_str().unwrap();
    assert_eq!(
        warning,
        format!(
            "upload.py cannot take its lock: directory {root}/no/such/dir \
             of {root}/no/such/dir/lock does not exist"
        )
    );
    let e = lab["errors"][0].as_str().unwrap();
    assert!(
        e.starts_with(&format!("{root}/data/lab/state:2:8: ")),
        "{e}"
    );
    let lab_vm = &profiles(&j, 2)["vm"];
    assert_eq!(lab_vm["in_state"], false);
    assert_eq!(
        lab_vm["cmdb"]["error"],
        format!("{root}/data/lab/vm.cmdb: entry 1 is not a dict (counts stop there)")
    );

    let html = status::to_html(&status);
    assert!(
        html.contains(&format!("<p class=\"error\">{cmdb_file}:2:9: ")),
        "{html}"
    );
    assert!(
        html.contains("<p class=\"warn\">upload.py cannot take its lock: "),
        "{html}"
    );
    assert!(
        html.contains(&format!("<p class=\"error\">{root}/data/lab/state:2:8: ")),
        "{html}"
    );
    assert_eq!(html.matches("<section>").count(), 3);
}

#[test]
fn profile_names_naming_other_directories_are_not_followed() {
    let site = fleet();
    let root = site.dir.path().display().to_string();
    fs::create_dir_all(site.path("data/outside")).unwrap();
    site.write("data/outside/x.specs", "[]\n");
    site.write("data/outside/x.cmdb", "[{'ip': '10.9.9.9', 'used': 1}]\n");
    site.write("data/config/state", "[('vm', 3), ('../outside/x', 1)]\n");
    let j = json(&site.gather());
    let server = profiles(&j, 0);
    let x = &server["../outside/x"];
    assert_eq!(
        (&x["in_state"], &x["specs"], &x["cmdb"]),
        (&Json::from(true), &Json::from(false), &Json::Null)
    );
    assert_eq!(server["vm"]["in_state"], true);
    assert_eq!(
        j["sections"][0]["errors"],
        serde_json::json!([format!(
            "{root}/data/config/state: profile '../outside/x' refused: it contains '/', and \
             profile names must not contain '/' or '..' (they name files of the configuration \
             directory)"
        )])
    );
}

#[test]
fn whole_configuration_problems() {
    let site = Site::new();
    site.write(
        "edeploy.conf",
        "[SERVER]\nCONFIGDIR = /x\nnot an option\nHWDIR = /y\n",
    );
    let j = json(&site.gather());
    assert_eq!(j["sections"], serde_json::json!([]));
    let e = j["error"].as_str().unwrap();
    assert!(
        e.starts_with(&format!("{}:3: ", site.conf().display())),
        "{e}"
    );

    // No [SERVER], which upload.py reads first: shown as an error.
    site.write("data/config/state", "[]\n");
    site.write(
        "edeploy.conf",
        &format!(
            "[lab]\nCONFIGDIR = {}\n",
            site.path("data/config").display()
        ),
    );
    let j = json(&site.gather());
    assert_eq!(j["sections"][0]["name"], "SERVER");
    assert_eq!(
        j["sections"][0]["errors"][0],
        format!(
            "{}: no section [SERVER] in this file",
            site.conf().display()
        )
    );
    assert_eq!(j["sections"][1]["name"], "lab");
    assert_eq!(j["sections"][1]["errors"], serde_json::json!([]));

    // A missing file asked for: an error. Not asked for: the legacy defaults.
    let missing = site.path("nope.conf");
    let j = json(&status::gather(&missing, true, &site.path("script")));
    assert!(j["error"]
        .as_str()
        .unwrap()
        .starts_with(&missing.display().to_string()));
    let j = json(&status::gather(&missing, false, &site.path("script")));
    assert_eq!(j["config_missing"], true);
    assert_eq!(
        j["sections"][0]["config_dir"],
        format!("{}/", site.path("config").display())
    );
    let html = status::to_html(&status::gather(&missing, false, &site.path("script")));
    assert!(html.contains("(missing: legacy defaults shown)"), "{html}");
}

/// Files with their bytes and modification time.
type Snapshot = BTreeMap<PathBuf, (Vec<u8>, SystemTime)>;

/// Every file under `dir`.
fn snapshot(dir: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(snapshot(&path));
        } else {
            let mtime = fs::metadata(&path).unwrap().modified().unwrap();
            out.insert(path.clone(), (fs::read(&path).unwrap(), mtime));
        }
    }
    out
}

/// `snapshot` without the status page's cache files, and their names.
fn without_cache(mut files: Snapshot) -> (Snapshot, Vec<String>) {
    let cache: Vec<PathBuf> = files
        .keys()
        .filter(|p| p.to_string_lossy().ends_with(".cmdb.status"))
        .cloned()
        .collect();
    let names = cache
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for p in cache {
        files.remove(&p);
    }
    (files, names)
}

#[test]
fn writes_nothing_but_its_cache() {
    let site = fleet();
    site.write("data/hw/a.hw", "[]\n");
    let before = snapshot(site.dir.path());
    let html = status::to_html(&site.gather());
    assert!(html.contains("<td class=\"num total\">100</td>"), "{html}");
    // Not even the lock file: readers take no lock.
    assert!(!site.path("data/lock/edeploy.lock").exists());
    let (after, cache) = without_cache(snapshot(site.dir.path()));
    assert_eq!(after, before);
    assert_eq!(cache, [".hp.cmdb.status", ".vm.cmdb.status"]);
    assert!(!site.path("data/config/hp.cmdb.orig").exists());
    // With the lock file present, nothing changes either; the cache is
    // used as it is.
    site.write("data/lock/edeploy.lock", "");
    let with_lock = snapshot(site.dir.path());
    site.gather();
    assert_eq!(snapshot(site.dir.path()), with_lock);
}

/// The summary of `vm.cmdb` in a view of `site`: (total, used, free, the
/// indices of the used entries shown).
fn vm_usage(site: &Site) -> (u64, u64, u64, Vec<u64>) {
    let j = json(&site.gather());
    let c = &profiles(&j, 0)["vm"]["cmdb"];
    assert_eq!(c["error"], Json::Null, "{c}");
    let shown = c["used_entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    let n = |k: &str| c[k].as_u64().unwrap();
    (n("total"), n("used"), n("free"), shown)
}

/// A `vm.cmdb` of `total` entries whose first `used` are used.
fn vm_cmdb(total: usize, used: usize) -> String {
    let entries: Vec<String> = (0..total)
        .map(|i| {
            let mark = if i < used { ", 'used': 1" } else { "" };
            format!("{{'hostname': 'node{i}', 'ip': '10.0.0.{i}'{mark}}}")
        })
        .collect();
    format!("[{}]\n", entries.join(",\n "))
}

/// Waits until the coarse clock files are stamped with is past the
/// modification time of `meta`.
fn wait_for_the_clock_to_pass(meta: &fs::Metadata) {
    loop {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) };
        if (now.tv_sec, now.tv_nsec) > (meta.mtime(), meta.mtime_nsec()) {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_cached_summary_serves_until_the_cmdb_changes() {
    let site = fleet();
    let cmdb = site.path("data/config/vm.cmdb");
    let cache = status::cache::cache_file(&cmdb).unwrap();
    assert_eq!(cache, site.path("data/config/.vm.cmdb.status"));
    assert_eq!(vm_usage(&site), (5, 2, 3, vec![0, 2]));

    // A doctored summary of the same version is shown as it is: the view
    // did not read the CMDB.
    let mut cached: Json = serde_json::from_slice(&fs::read(&cache).unwrap()).unwrap();
    assert_eq!(cached["format"], 1);
    cached["cmdb"]["used"] = Json::from(1);
    cached["cmdb"]["free"] = Json::from(4);
    cached["cmdb"]["used_entries"] =
        serde_json::json!([{"index": 4, "hostname": null, "ip": null, "mac": null}]);
    fs::write(&cache, serde_json::to_vec(&cached).unwrap()).unwrap();
    assert_eq!(vm_usage(&site), (5, 1, 4, vec![4]));

    // A new version, as upload.py writes it (exchanged with a spare), then
    // as an editor rewrites it in place (same inode, same size).
    let prepared = edeploy::store::prepare_file_locked(&cmdb, vm_cmdb(6, 3).as_bytes()).unwrap();
    prepared.commit().unwrap();
    assert_eq!(vm_usage(&site), (6, 3, 3, vec![0, 1, 2]));
    let inode = fs::metadata(&cmdb).unwrap().ino();
    let in_place = vm_cmdb(6, 3).replace(
        "{'hostname': 'node5', 'ip': '10.0.0.5'}",
        "{'used': 1, 'ip': '10.0.0.5', 'h': 'x'}",
    );
    assert_eq!(in_place.len(), vm_cmdb(6, 3).len());
    // Kernels before 6.13 stamp files with a clock that ticks every few
    // milliseconds: an edit within the same tick would keep the file's
    // identity (the cache module says so). Edits are not that fast.
    wait_for_the_clock_to_pass(&fs::metadata(&cmdb).unwrap());
    fs::write(&cmdb, &in_place).unwrap();
    assert_eq!(fs::metadata(&cmdb).unwrap().ino(), inode);
    assert_eq!(vm_usage(&site), (6, 4, 2, vec![0, 1, 2, 5]));
}

#[test]
fn broken_cache_files_are_recomputed_and_replaced() {
    let site = fleet();
    let cmdb = site.path("data/config/vm.cmdb");
    let cache = status::cache::cache_file(&cmdb).unwrap();
    let expected = vm_usage(&site);
    assert_eq!(expected, (5, 2, 3, vec![0, 2]));
    let good: Json = serde_json::from_slice(&fs::read(&cache).unwrap()).unwrap();
    let altered = |path: &[&str], value: Json| {
        let mut j = good.clone();
        let mut at = &mut j;
        for k in path {
            at = &mut at[*k];
        }
        *at = value;
        serde_json::to_vec(&j).unwrap()
    };
    let mut padded = serde_json::to_vec(&good).unwrap();
    padded.resize(status::cache::MAX_SIZE as usize + 1, b' ');
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", fs::read(&cache).unwrap()[..40].to_vec()),
        ("not JSON", b"\x00\xffgarbage".to_vec()),
        ("another format", altered(&["format"], Json::from(2))),
        ("another version", altered(&["key", "ino"], Json::from(1))),
        (
            "another file",
            altered(&["cmdb", "file"], Json::from("/etc/passwd")),
        ),
        (
            "more used than entries",
            altered(&["cmdb", "used"], Json::from(9)),
        ),
        (
            "inconsistent free",
            altered(&["cmdb", "free"], Json::from(1)),
        ),
        (
            "negative count",
            altered(&["cmdb", "total"], Json::from(-1)),
        ),
        ("too large", padded),
    ];
    for (what, text) in cases {
        // The doctored counts would show if the file were taken.
        fs::write(&cache, &text).unwrap();
        assert_eq!(vm_usage(&site), expected, "{what}");
        let now: Json = serde_json::from_slice(&fs::read(&cache).unwrap())
            .unwrap_or_else(|e| panic!("{what}: not replaced: {e}"));
        assert_eq!(now, good, "{what}");
    }

    // A link planted there is replaced, never written through.
    let victim = site.path("victim");
    fs::write(&victim, "keep").unwrap();
    fs::remove_file(&cache).unwrap();
    std::os::unix::fs::symlink(&victim, &cache).unwrap();
    assert_eq!(vm_usage(&site), expected);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    assert!(fs::symlink_metadata(&cache).unwrap().is_file());

    // A cache that cannot be written: the view is made all the same.
    fs::remove_file(&cache).unwrap();
    fs::create_dir(&cache).unwrap();
    fs::write(cache.join("x"), "").unwrap();
    assert_eq!(vm_usage(&site), expected);
    let left: Vec<_> = fs::read_dir(site.path("data/config"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Views while upload-like writers replace the CMDB: every view shows one
/// version whole (version `k` has its first `k` entries used), never a
/// mix of a summary and another version, and the last view the last one.
#[test]
fn concurrent_views_and_writers_agree() {
    const VERSIONS: usize = 60;
    const TOTAL: usize = 80;
    let site = fleet();
    let cmdb = site.path("data/config/vm.cmdb");
    fs::write(&cmdb, vm_cmdb(TOTAL, 0)).unwrap();
    let lock = site.path("data/lock/edeploy.lock");
    let done = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        let writer = s.spawn(|| {
            for k in 1..=VERSIONS {
                let _lock = edeploy::store::Lock::exclusive(&lock).unwrap();
                let prepared =
                    edeploy::store::prepare_file_locked(&cmdb, vm_cmdb(TOTAL, k).as_bytes())
                        .unwrap();
                prepared.commit().unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let viewers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut seen = 0;
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        let (total, used, free, shown) = vm_usage(&site);
                        assert_eq!((total, free), (TOTAL as u64, total - used));
                        assert_eq!(shown, (0..used).collect::<Vec<_>>());
                        assert!(used >= seen, "a view went back from {seen} to {used}");
                        seen = used;
                    }
                })
            })
            .collect();
        writer.join().unwrap();
        for v in viewers {
            v.join().unwrap();
        }
    });
    let last = VERSIONS as u64;
    assert_eq!(
        vm_usage(&site),
        (TOTAL as u64, last, TOTAL as u64 - last, (0..last).collect())
    );
}

#[test]
fn large_cmdb_is_counted_quickly() {
    let site = fleet();
    let n = 65_536;
    let mut src = String::with_capacity(n * 90);
    src.push('[');
    for i in 0..n {
        if i > 0 {
            src.push_str(",\n ");
        }
        let used = if i % 3 == 0 { ", 'used': 1" } else { "" };
        src.push_str(&format!(
            "{{'hostname': 'node{i}', 'ip': '10.{}.{}.{}', 'mac': '52:54:00:00:{:02x}:{:02x}'{used}}}",
            i >> 16,
            (i >> 8) & 255,
            i & 255,
            (i >> 8) & 255,
            i & 255
        ));
    }
    src.push_str("]\n");
    site.write("data/config/vm.cmdb", &src);
    let start = Instant::now();
    let status = site.gather();
    let elapsed = start.elapsed();
    // Generous for an unoptimised build on a slow machine; a quadratic
    // walk would take minutes.
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    let j = json(&status);
    let c = &profiles(&j, 0)["vm"]["cmdb"];
    let used = n.div_ceil(3);
    assert_eq!(
        (&c["total"], &c["used"], &c["free"]),
        (&Json::from(n), &Json::from(used), &Json::from(n - used))
    );
    let shown = c["used_entries"].as_array().unwrap();
    assert_eq!(shown.len(), USED_SHOWN);
    assert_eq!(shown[USED_SHOWN - 1]["index"], 65_535);
    assert_eq!(shown[USED_SHOWN - 1]["hostname"], "node65535");
    assert_eq!(shown[0]["index"], 65_535 - 3 * (USED_SHOWN - 1));
    let html = status::to_html(&status);
    assert!(
        html.contains(&format!("The last {USED_SHOWN} of {used} used entries")),
        "{}",
        &html[..2000]
    );
}

/// A `generate()` model of 2^20 entries whose entries are all used (it has
/// a `used` key): the page counts them and shows the last ones without
/// expanding the model. The status program runs with one second of CPU
/// (`ulimit -t 1`): expanding a million entries takes several, even
/// optimised; counting them takes microseconds.
#[test]
fn million_entry_model_is_summarised_without_expanding_it() {
    let site = fleet();
    site.write(
        "data/config/hp.cmdb",
        "generate({'hostname': 'hp0000001-1048576', 'ip': '10.0-15.0-255.0-255', 'used': 1})\n",
    );
    let out = Command::new("sh")
        .args(["-c", "ulimit -t 1; exec \"$0\" --json"])
        .arg(env!("CARGO_BIN_EXE_status"))
        .env("EDEPLOY_CONF", site.conf())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Json = serde_json::from_slice(&out.stdout).unwrap();
    let c = &profiles(&j, 0)["hp"]["cmdb"];
    let n = 1 << 20;
    assert_eq!(c["error"], Json::Null);
    assert_eq!(c["generated"], true);
    assert_eq!(
        (&c["total"], &c["used"], &c["free"]),
        (&Json::from(n), &Json::from(n), &Json::from(0))
    );
    let shown = c["used_entries"].as_array().unwrap();
    assert_eq!(shown.len(), USED_SHOWN);
    assert_eq!(
        shown[USED_SHOWN - 1],
        serde_json::json!({"index": n - 1, "hostname": "hp1048576", "ip": "10.15.255.255", "mac": null})
    );
    assert_eq!(
        shown[0],
        serde_json::json!({"index": n - USED_SHOWN, "hostname": "hp1048377", "ip": "10.15.255.56", "mac": null})
    );
}

// ---- End to end: Apache and Chromium ----

/// HTTP status, headers (lower-cased) and body of a GET, or of `curl_args`.
fn fetch(url: &str, curl_args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "-i"])
        .args(curl_args)
        .arg(url)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{text}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[test]
fn status_page_through_apache_and_chromium() {
    if !apache_available() {
        return;
    }
    let apache = Apache::start("event", "cgid");
    let root = apache.root.display().to_string();

    // A CMDB whose first free entry has hostile values, given to the test
    // machine by a real upload.
    let cmdb = format!(
        "[{{'hostname': {HOSTILE_HOST:?}, 'ip': '{}'}},\n \
         {{'hostname': 'node2', 'ip': '10.1.0.2'}},\n {{'hostname': 'node3', 'ip': '10.1.0.3'}}]\n",
        HOSTILE_ATTR.replace('\'', "\\'")
    );
    fs::write(apache.data("config/vm.cmdb"), cmdb).unwrap();
    let hw = Path::new(FIXTURES).join("hw.json");
    let out = Command::new("curl")
        .args(["-s", "-S", "-F", "section=SERVER", "-F"])
        .arg(format!("file=@{}", hw.display()))
        .arg(apache.url("upload.py"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("#EDEPLOY_PROFILE = vm"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    fs::write(apache.data("logs/Red-Hat-vm-ABC.log.gz"), b"log").unwrap();
    // A second section with a broken state file.
    fs::create_dir_all(apache.data("lab")).unwrap();
    fs::write(apache.data("lab/state"), "[('lab', 1)\n").unwrap();
    let conf = apache.root.join("cgi-bin/edeploy/edeploy.conf");
    let mut text = fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "[lab]\nCONFIGDIR = {root}/data/lab\nLOCKFILE = {root}/data/lock/edeploy.lock\n"
    ));
    fs::write(&conf, text).unwrap();

    let url = apache.url("status.py");
    let (code, head, html) = fetch(&url, &[]);
    assert_eq!(code, 200, "{head}{html}");
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(
        html.contains("<td class=\"hostname\">&lt;script&gt;alert(1)&lt;/script&gt;</td>"),
        "{html}"
    );
    assert!(
        !html.contains(HOSTILE_HOST) && !html.contains("\"onmouseover"),
        "{html}"
    );

    let (code, head, body) = fetch(&format!("{url}?format=json"), &[]);
    assert_eq!(code, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    let j: Json = serde_json::from_str(&body).unwrap();
    let vm = &profiles(&j, 0)["vm"];
    assert_eq!(vm["remaining"], 1, "{vm}");
    let c = &vm["cmdb"];
    assert_eq!(
        (&c["used"], &c["free"], &c["total"]),
        (&Json::from(1), &Json::from(2), &Json::from(3))
    );
    // The machine's variables were merged into its entry.
    let entry = &c["used_entries"][0];
    assert_eq!(entry["hostname"], HOSTILE_HOST);
    assert_eq!(entry["ip"], HOSTILE_ATTR);
    assert_eq!(entry["mac"], "52:54:12:34:00:03");
    assert_eq!(j["sections"][0]["lock_warning"], Json::Null);
    assert_eq!(j["sections"][1]["name"], "lab");

    let (code, head, _) = fetch(&url, &["-X", "POST", "-d", "x=1"]);
    assert_eq!(code, 405);
    assert!(head.contains("allow: get, head"), "{head}");
    // Nothing but the status page was read: the state is as upload left it.
    assert_eq!(
        fs::read_to_string(apache.data("config/state")).unwrap(),
        "[('vm', 1)]\n"
    );

    if !chromium::available() {
        return;
    }
    let dom = chromium::run(&url, &["--dump-dom"]);
    assert!(dom.contains("<h1>eDeploy status</h1>"), "{dom}");
    for shown in [
        "<tr><td class=\"profile\">vm</td><td class=\"num remaining\">1</td>",
        "<td class=\"num used\">1</td><td class=\"num free\">2</td><td class=\"num total\">3</td>",
        "<h2>Section <code>[lab]</code></h2>",
        &format!("<p class=\"error\">{root}/data/lab/state:2:1: "),
        "<td class=\"path\">edeploy_test_vm-ABC123-52-54-12-34-00-03.hw</td>",
        "<td class=\"path\">Red-Hat-vm-ABC.log.gz</td>",
        // The hostile values are text: escaped in the serialised DOM.
        "<td class=\"hostname\">&lt;script&gt;alert(1)&lt;/script&gt;</td>",
        "<td>\"onmouseover=alert(2) x=\"</td><td>52:54:12:34:00:03</td>",
    ] {
        assert!(dom.contains(shown), "{shown} not in the DOM:\n{dom}");
    }
    assert!(
        !dom.contains("<script"),
        "a script element was injected:\n{dom}"
    );
    assert!(
        !dom.to_ascii_lowercase().contains(" onmouseover="),
        "an attribute was injected:\n{dom}"
    );

    if let Some(png) = std::env::var_os("EDEPLOY_STATUS_SCREENSHOT") {
        let png = PathBuf::from(png);
        chromium::run(
            &url,
            &[
                &format!("--screenshot={}", png.display()),
                "--window-size=1200,900",
            ],
        );
        assert!(fs::metadata(&png).unwrap().len() > 0);
    }
    let log = apache.read_log("error.log");
    assert!(!log.contains("panicked"), "{log}");
}

//! The `edeploy` operator tools, run as a user would: output and exit status
//! of try-match, explain, check and cmdb-used on the bundled legacy-config
//! (copied to a scratch directory whenever something could write) and on
//! crafted broken configurations under tests/fixtures/tools/. `explain` is
//! also checked against `provision(…, dry_run = true)` on which profile wins.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use edeploy::config::Config;
use edeploy::explain::{self, ProfileOutcome};
use edeploy::hw;
use edeploy::provision::{self, Outcome};

const EXE: &str = env!("CARGO_BIN_EXE_edeploy");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn fixture(name: &str) -> PathBuf {
    Path::new(ROOT).join("tests/fixtures/tools").join(name)
}

fn legacy(name: &str) -> PathBuf {
    Path::new(ROOT).join("legacy-config").join(name)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `edeploy` with `args`; `conf` becomes $EDEPLOY_CONF (otherwise
/// unset, so the host's configuration never leaks in).
fn edeploy(args: &[&str], conf: Option<&Path>) -> Run {
    let mut cmd = Command::new(EXE);
    cmd.args(args).env_remove("EDEPLOY_CONF");
    if let Some(conf) = conf {
        cmd.env("EDEPLOY_CONF", conf);
    }
    let out = cmd.output().expect("run edeploy");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A scratch copy of legacy-config and an edeploy.conf pointing at it.
struct Scratch {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    conf: PathBuf,
}

fn scratch_config() -> Scratch {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("config");
    copy_dir(&legacy(""), &dir);
    let conf = tmp.path().join("edeploy.conf");
    fs::write(
        &conf,
        format!(
            "[SERVER]\nCONFIGDIR = {}\nLOCKFILE = {}\n",
            dir.display(),
            tmp.path().join("edeploy.lock").display()
        ),
    )
    .expect("write conf");
    Scratch {
        _tmp: tmp,
        dir,
        conf,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Every file under `dir` with its content, to prove nothing was written.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.insert(path.clone(), fs::read(&path).expect("read"));
            }
        }
    }
    files
}

// ---------------------------------------------------------------- try-match

/// Swapped arguments are named as such, not as a syntax error of the
/// specs read as hardware.
#[test]
fn try_match_names_swapped_arguments() {
    let hw = legacy("hw/kvm-test.json");
    let specs = legacy("kvm-test.specs");
    let r = edeploy(&["try-match", s(&specs), s(&hw)], None);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(
        r.stderr,
        format!(
            "edeploy: error: the arguments are swapped: {} is the hardware description and \
             {} the specs (usage: edeploy try-match HW_FILE SPECS_FILE)\n",
            hw.display(),
            specs.display()
        )
    );
}

/// A specs entry of the wrong shape is located as `check` locates it.
#[test]
fn try_match_locates_shape_errors_like_check() {
    let tmp = tempfile::tempdir().unwrap();
    let specs = tmp.path().join("bad.specs");
    fs::write(
        &specs,
        "# comment\n[\n    ('disk', '$disk', 'size', 'gt(4)'),\n    ('system', 'product'),\n]\n",
    )
    .unwrap();
    let r = edeploy(
        &["try-match", s(&legacy("hw/kvm-test.json")), s(&specs)],
        None,
    );
    assert_eq!(r.code, 2, "{}", r.stdout);
    let place = format!("{}:4:5: ", specs.display());
    assert_eq!(
        r.stderr,
        format!("edeploy: error: {place}entry 1: expected 4 fields, found 2\n")
    );
    fs::write(tmp.path().join("state"), "[('bad', 1)]\n").unwrap();
    let r = edeploy(&["check", s(tmp.path())], None);
    assert!(
        r.stdout
            .contains(&format!("{place}error: expected 4 fields")),
        "{}",
        r.stdout
    );
}

#[test]
fn try_match_prints_the_variables() {
    let r = edeploy(
        &[
            "try-match",
            s(&legacy("hw/kvm-test.json")),
            s(&legacy("kvm-test.specs")),
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "{'disk': 'vda', 'eth': 'eth0', 'mac': '52:54:12:34:00:03'}\n"
    );
}

#[test]
fn try_match_reads_saved_hw_files_and_names_forced_variables() {
    let r = edeploy(
        &[
            "try-match",
            s(&fixture("dell.hw")),
            s(&fixture("twodisks.specs")),
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "{'d1': 'sda', 'd2': 'sdb', 'eth': 'eth0', 'mac': 'aa:bb:cc:dd:ee:01'}\n\
         # looked up in the CMDB ($$): mac\n"
    );
}

#[test]
fn try_match_names_the_failing_spec_and_the_closest_lines() {
    let specs = fixture("bigdisk.specs");
    let r = edeploy(&["try-match", s(&fixture("dell.hw")), s(&specs)], None);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!(
            "{}:4:5: no hardware line satisfies spec 2 ('disk', '$disk', 'size', 'gt(100)') \
             \u{2014} closest: ('disk', 'sda', 'size', '20'): field 4 '20' fails gt(100)\n  \
             also close: ('disk', 'sdb', 'size', '50'): field 4 '50' fails gt(100)\n",
            specs.display()
        )
    );
}

#[test]
fn try_match_first_spec_failing_on_plain_text() {
    let r = edeploy(
        &[
            "try-match",
            s(&legacy("hw/kvm-test.json")),
            s(&legacy("hp.specs")),
        ],
        None,
    );
    assert_eq!(r.code, 1);
    let first = r.stdout.lines().next().unwrap_or_default();
    assert!(
        first.ends_with(
            "hp.specs:5:5: no hardware line satisfies spec 1 ('system', 'product', 'vendor', 'HP') \
             \u{2014} closest: ('system', 'product', 'vendor', 'QEMU'): field 4 'QEMU' is not 'HP'"
        ),
        "{}",
        r.stdout
    );
}

#[test]
fn try_match_variable_bound_earlier() {
    let r = edeploy(
        &[
            "try-match",
            s(&fixture("dell.hw")),
            s(&fixture("link.specs")),
        ],
        None,
    );
    assert_eq!(r.code, 1);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(
        lines[0].ends_with(
            "link.specs:3:5: spec 2 ('network', '$eth', 'link', 'yes') cannot be satisfied \
             together with spec 1 (backtracking exhausted: no choice of lines for them leaves \
             one for it)"
        ),
        "{}",
        r.stdout
    );
    assert_eq!(
        lines[1],
        "  ('network', 'eth1', 'link', 'yes'): field 2 'eth1': $eth is already 'eth0' \
         (bound by spec 1)"
    );
}

#[test]
fn try_match_lines_used_by_earlier_specs() {
    let r = edeploy(
        &[
            "try-match",
            s(&fixture("dell.hw")),
            s(&fixture("threedisks.specs")),
        ],
        None,
    );
    assert_eq!(r.code, 1);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].contains(":4:5: spec 3 ('disk', '$d3', 'size', 'ge(20)')"));
    assert_eq!(
        &lines[1..],
        [
            "  ('disk', 'sda', 'size', '20') satisfies it alone but is used by spec 1 \
             ('disk', '$d1', 'size', 'ge(20)')",
            "  ('disk', 'sdb', 'size', '50') satisfies it alone but is used by spec 2 \
             ('disk', '$d2', 'size', 'ge(20)')",
        ]
    );
}

#[test]
fn try_match_reports_unreadable_input_with_its_position() {
    let r = edeploy(
        &[
            "try-match",
            s(&fixture("dell.hw")),
            s(&fixture("broken/syntax.specs")),
        ],
        None,
    );
    assert_eq!(r.code, 2);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr
            .contains("broken/syntax.specs:4:5: expected ',' or ']' after list element"),
        "{}",
        r.stderr
    );
    let r = edeploy(
        &["try-match", "/nonexistent.json", s(&legacy("hp.specs"))],
        None,
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("cannot open /nonexistent.json"),
        "{}",
        r.stderr
    );
}

// ------------------------------------------------------------------ explain

#[test]
fn explain_reports_every_profile_and_writes_nothing() {
    let sc = scratch_config();
    let before = snapshot(sc.dir.parent().expect("parent"));
    let r = edeploy(
        &["explain", s(&sc.dir.join("hw/kvm-test.json")), s(&sc.conf)],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = sc.dir.display();
    let expected = format!(
        "machine: edeploy_test_vm-52-54-12-34-00-03\n\
         state: {dir}/state\n\
         profile hp (count 4): no match\n  \
         {dir}/hp.specs:5:5: no hardware line satisfies spec 1 ('system', 'product', 'vendor', 'HP') \
         \u{2014} closest: ('system', 'product', 'vendor', 'QEMU'): field 4 'QEMU' is not 'HP'\n    \
         also close: ('system', 'product', 'name', 'edeploy_test_vm ()'): field 3 'name' is not 'vendor'\n    \
         also close: ('system', 'product', 'version', 'pc-i440fx-7.2'): field 3 'version' is not 'vendor'\n\
         profile kvm-test (count '*'): matched\n  \
         CMDB entry 0 of {dir}/kvm-test.cmdb would be given\n  \
         var = {{'disk': 'vda',\n         \
         'edeploy-profile': 'kvm-test',\n         \
         'eth': 'eth0',\n         \
         'gateway': '192.168.122.1',\n         \
         'hostname': 'vm100',\n         \
         'ip': '192.168.122.100',\n         \
         'mac': '52:54:12:34:00:03',\n         \
         'netmask': '255.255.255.0',\n         \
         'used': 1}}\n\
         answer: profile kvm-test would be installed\n"
    );
    assert_eq!(r.stdout, expected);
    assert_eq!(snapshot(sc.dir.parent().expect("parent")), before);
}

#[test]
fn explain_skipped_missing_specs_and_no_match() {
    let sc = scratch_config();
    fs::write(
        sc.dir.join("state"),
        "[('hp', 0), ('ghost', 1), ('kvm-test', '*')]\n",
    )
    .expect("state");
    let r = edeploy(&["explain", s(&fixture("dell.hw")), s(&sc.conf)], None);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let dir = sc.dir.display();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[2],
        "profile hp (count 0): skipped: no installation left"
    );
    assert_eq!(
        lines[3],
        format!("profile ghost (count 1): no {dir}/ghost.specs: never matches")
    );
    assert_eq!(lines[4], "profile kvm-test (count '*'): no match");
    assert!(
        lines[5].contains("kvm-test.specs:4:5: no hardware line satisfies spec 1"),
        "{}",
        r.stdout
    );
    assert_eq!(
        lines.last().copied(),
        Some(
            format!(
                "answer: error: Unable to match requirements on the following available \
                 roles in {dir}/: ghost, kvm-test"
            )
            .as_str()
        )
    );
}

#[test]
fn explain_cmdb_exhausted_stops_the_request() {
    let sc = scratch_config();
    fs::write(
        sc.dir.join("kvm-test.cmdb"),
        "[{'hostname': 'vm1', 'ip': '192.168.122.5', 'used': 1}]\n",
    )
    .expect("cmdb");
    fs::write(sc.dir.join("state"), "[('kvm-test', '*'), ('hp', 4)]\n").expect("state");
    let r = edeploy(
        &["explain", s(&sc.dir.join("hw/kvm-test.json")), s(&sc.conf)],
        None,
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let dir = sc.dir.display();
    assert_eq!(
        r.stdout.lines().skip(2).collect::<Vec<_>>(),
        [
            format!(
                "profile kvm-test (count '*'): matched, but {dir}/kvm-test.cmdb has no entry \
                 for it: No more entry in the CMDB, aborting."
            )
            .as_str(),
            "profile hp (count 4): not tried",
            "answer: error: No more entry in the CMDB, aborting.",
        ]
    );
}

#[test]
fn explain_uses_the_default_configuration() {
    let sc = scratch_config();
    let r = edeploy(&["explain", s(&sc.dir.join("hw/hp.json"))], Some(&sc.conf));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(&format!(
        "profile hp (count 4): matched\n  CMDB entry 1 of {}/hp.cmdb would be given\n",
        sc.dir.display()
    )));
    assert!(r.stdout.contains("'serial': 'CZJ3010A02',"));
    assert!(r
        .stdout
        .contains("profile kvm-test (count '*'): not tried\n"));
}

/// explain and the server (dry run) agree on the answer in every scenario.
#[test]
fn explain_agrees_with_provision() {
    let scenarios: [(&str, &[(&str, &str)]); 9] = [
        ("as shipped", &[]),
        ("kvm first", &[("state", "[('kvm-test', 1), ('hp', 4)]")]),
        ("no quota", &[("state", "[('hp', 0), ('kvm-test', 0)]")]),
        (
            "missing specs",
            &[("state", "[('ghost', 1), ('hp', '*'), ('kvm-test', '*')]")],
        ),
        (
            "exhausted",
            &[(
                "hp.cmdb",
                "[{'serial': 'CZJ3010A09', 'ip': '10.0.1.19', 'used': 1}]",
            )],
        ),
        ("broken specs", &[("hp.specs", "[('system', 'product',\n")]),
        (
            "invalid cmdb",
            &[
                ("state", "[('kvm-test', 1)]"),
                ("kvm-test.cmdb", "[{'ip': '1.2.3.4'}, 'oops']"),
            ],
        ),
        (
            "no configure",
            &[("state", "[('kvm-test', '*')]"), ("kvm-test.configure", "")],
        ),
        // The files exist, through `..`: refused all the same.
        ("climbing", &[("state", "[('../config/kvm-test', '*')]")]),
    ];
    let machines = [
        legacy("hw/kvm-test.json"),
        legacy("hw/hp.json"),
        fixture("dell.hw"),
    ];
    let mut answers = Vec::new();
    for (name, changes) in scenarios {
        let sc = scratch_config();
        for (file, text) in changes {
            let path = sc.dir.join(file);
            if *file == "kvm-test.configure" {
                fs::remove_file(&path).expect("remove");
            } else {
                fs::write(&path, text).expect("write");
            }
        }
        let cfg = Config::for_dir(&sc.dir);
        for machine in &machines {
            let items = hw::parse_hw(machine, &fs::read(machine).expect("hw")).expect("parse hw");
            let before = snapshot(&sc.dir);
            let report = explain::explain_config(&cfg, &items).expect("explain");
            assert_eq!(snapshot(&sc.dir), before, "{name}: explain wrote");
            let server = match provision::provision(&cfg, &items, None, true) {
                Ok(Outcome::Configured(c)) => {
                    let matched = report.profiles.iter().find_map(|p| match &p.outcome {
                        ProfileOutcome::Matched { vars, cmdb } => Some((vars, cmdb)),
                        _ => None,
                    });
                    let (vars, cmdb) = matched.expect("explain found no match");
                    assert_eq!(vars, &c.vars, "{name} {}", machine.display());
                    assert_eq!(cmdb.as_ref().map(|c| c.1), c.cmdb_entry);
                    Ok(c.profile)
                }
                Ok(other) => panic!("{name}: unexpected {other:?}"),
                Err(e) => Err(e.to_string()),
            };
            assert_eq!(report.answer, server, "{name} {}", machine.display());
            // cmdb::select reports a non-dict entry at line 0, column 0.
            let dir = sc.dir.to_string_lossy();
            answers.push(server.unwrap_or_else(|e| e.replace(&*dir, "DIR").replace(":0:0:", ":")));
        }
    }
    // Every kind of answer was compared.
    answers.sort();
    answers.dedup();
    assert_eq!(
        answers,
        [
            "DIR/hp.specs:2:1: expected a value, found end of file",
            "DIR/kvm-test.cmdb: entry 1 is not a dict",
            "DIR/kvm-test.configure: No such file or directory (os error 2)",
            "DIR/state: profile '../config/kvm-test' refused: it contains '/', and profile \
             names must not contain '/' or '..' (they name files of the configuration directory)",
            "No entry matched in the CMDB, aborting.",
            "No more role available in DIR/state",
            "Unable to match requirements on the following available roles in DIR/: ghost, hp, kvm-test",
            "Unable to match requirements on the following available roles in DIR/: hp, kvm-test",
            "Unable to match requirements on the following available roles in DIR/: kvm-test",
            "Unable to match requirements on the following available roles in DIR/: kvm-test, hp",
            "hp",
            "kvm-test",
        ]
    );
}

// -------------------------------------------------------------------- check

#[test]
fn check_accepts_the_bundled_config() {
    let r = edeploy(&["check", "--strict", s(&legacy(""))], None);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        r.stdout,
        format!(
            "{}: 7 file(s) checked, 0 error(s), 0 warning(s)\n",
            legacy("").display()
        )
    );
}

#[test]
fn check_reports_every_problem_with_its_position() {
    let dir = fixture("broken");
    let r = edeploy(&["check", s(&dir)], None);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let d = dir.display();
    let expected = [
        format!("{d}/state:3:2: error: profile 'nospecs' has no nospecs.specs: it never matches"),
        format!("{d}/state:4:2: warning: profile 'used-up' has no installation left (count 0)"),
        format!("{d}/funcs.cmdb:3:2: error: entries 0 and 2 have the same ip '10.0.0.1'"),
        format!(
            "{d}/funcs.specs:2:37: error: field 4: \"foo(HP)\": unknown function, the field never matches"
        ),
        format!(
            "{d}/funcs.specs:3:32: error: field 4: regexp(): \"^(SAS\" is not a regular \
             expression we support (invalid, or uses backreferences, lookaround or conditionals)"
        ),
        format!(
            "{d}/funcs.specs:4:33: error: field 4: network(): \"10.0.300.0/24\" \
             is not an IPv4 network"
        ),
        format!(
            "{d}/gen.cmdb:1:11: warning: generate(): 'ip' has 5 values but 'hostname' only 3: \
             only 3 entries are generated"
        ),
        format!("{d}/syntax.specs:4:5: error: expected ',' or ']' after list element, found '('"),
        format!("{d}: 10 file(s) checked, 6 error(s), 2 warning(s)"),
    ];
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn check_warnings_fail_only_when_strict() {
    let sc = scratch_config();
    fs::write(sc.dir.join("state"), "[('hp', 0), ('kvm-test', '*')]\n").expect("state");
    let r = edeploy(&["check", s(&sc.dir)], None);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.starts_with(&format!(
        "{}/state:1:2: warning: profile 'hp' has no installation left (count 0)\n",
        sc.dir.display()
    )));
    assert!(r.stdout.ends_with("0 error(s), 1 warning(s)\n"));
    assert_eq!(edeploy(&["check", "--strict", s(&sc.dir)], None).code, 1);
}

#[test]
fn check_more_broken_files() {
    let sc = scratch_config();
    let d = sc.dir.display();
    fs::write(
        sc.dir.join("state"),
        "[('hp', 4),\n ('kvm-test', '*'),\n ('extra', 1)]\n",
    )
    .expect("state");
    fs::write(
        sc.dir.join("extra.specs"),
        "[('a', 'b', '$x', '$$x'),\n ('a', 'b', 'c')]\n",
    )
    .expect("specs");
    fs::remove_file(sc.dir.join("kvm-test.configure")).expect("rm");
    fs::write(
        sc.dir.join("kvm-test.cmdb"),
        "[{'hostname': 'vm1', 'used': 1},\n {'hostname': 'vm1', 'used': 1}]\n",
    )
    .expect("cmdb");
    let r = edeploy(&["check", s(&sc.dir)], None);
    assert_eq!(r.code, 1);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{d}/state:2:2: error: profile 'kvm-test' has no kvm-test.configure: a machine \
                 matching it gets an error"
            ),
            format!(
                "{d}/state:3:2: error: profile 'extra' has no extra.configure: a machine \
                 matching it gets an error"
            ),
            format!("{d}/extra.specs:2:2: error: expected 4 fields, found 3"),
            format!("{d}/kvm-test.cmdb:2:2: error: entries 0 and 1 have the same hostname 'vm1'"),
            format!(
                "{d}/kvm-test.cmdb: warning: no unused entry left among 2: a new machine of \
                 this profile gets 'No more entry in the CMDB'"
            ),
            format!("{d}: 7 file(s) checked, 4 error(s), 1 warning(s)"),
        ]
    );
    fs::write(sc.dir.join("extra.specs"), "[('a', 'b', '$x', '$$x')]\n").expect("specs");
    let r = edeploy(&["check", s(&sc.dir)], None);
    assert!(
        r.stdout.contains(&format!(
            "{d}/extra.specs:1:19: error: both $x and $$x are used: the legacy server fails \
             after matching such specs"
        )),
        "{}",
        r.stdout
    );
}

#[test]
fn check_refuses_profile_names_that_name_other_directories() {
    let sc = scratch_config();
    let d = sc.dir.display();
    fs::write(
        sc.dir.join("state"),
        "[('../config/hp', 4),\n ('kvm-test', '*'),\n ('a..b', 0)]\n",
    )
    .expect("state");
    let r = edeploy(&["check", s(&sc.dir)], None);
    assert_eq!(r.code, 1);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{d}/state:1:2: error: profile '../config/hp' refused: it contains '/', and \
                 profile names must not contain '/' or '..' (they name files of the \
                 configuration directory)"
            ),
            format!("{d}/state:3:2: warning: profile 'a..b' has no installation left (count 0)"),
            format!(
                "{d}/state:3:2: error: profile 'a..b' refused: it contains '..', and \
                 profile names must not contain '/' or '..' (they name files of the \
                 configuration directory)"
            ),
            format!("{d}: 7 file(s) checked, 2 error(s), 1 warning(s)"),
        ]
    );
}

#[test]
fn check_defaults_to_the_configured_directory() {
    let sc = scratch_config();
    fs::remove_file(sc.dir.join("hp.specs")).expect("rm");
    let r = edeploy(&["check"], Some(&sc.conf));
    assert_eq!(r.code, 1);
    assert!(r
        .stdout
        .contains("profile 'hp' has no hp.specs: it never matches"));
}

// ---------------------------------------------------------------- cmdb-used

#[test]
fn cmdb_used_finds_used_entries_only() {
    let used = fixture("used.cmdb");
    let r = edeploy(&["cmdb-used", "hostname", "node1", s(&used)], None);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout,
        format!(
            "{}: entry 0 has hostname 'node1' and is used\n",
            used.display()
        )
    );
    let r = edeploy(&["cmdb-used", "ip", "10.0.0.2", s(&used)], None);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout,
        format!(
            "{}: entry 1 has ip '10.0.0.2' but is not used\n",
            used.display()
        )
    );
    let gen = fixture("broken/gen.cmdb");
    let r = edeploy(&["cmdb-used", "hostname", "node9", s(&gen), s(&used)], None);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout,
        format!(
            "no entry has hostname 'node9' in {}, {}\n",
            gen.display(),
            used.display()
        )
    );
    // Found in the second file; generated entries are searched too.
    let r = edeploy(&["cmdb-used", "hostname", "node1", s(&gen), s(&used)], None);
    assert_eq!(r.code, 0);
    let r = edeploy(&["cmdb-used", "hostname", "node11", s(&gen)], None);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout,
        format!(
            "{}: entry 1 has hostname 'node11' but is not used\n",
            gen.display()
        )
    );
}

#[test]
fn cmdb_used_errors() {
    let r = edeploy(&["cmdb-used", "hostname", "node1"], None);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("required arguments were not provided:\n  <CMDB>..."),
        "{}",
        r.stderr
    );
    let r = edeploy(
        &[
            "cmdb-used",
            "hostname",
            "x",
            s(&fixture("broken/syntax.specs")),
        ],
        None,
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("syntax.specs:4:5:"), "{}", r.stderr);
}

// --------------------------------------------------------------------- help

#[test]
fn help_and_usage_errors() {
    for args in [&["--help"][..], &["help"], &["-h"]] {
        let r = edeploy(args, None);
        assert_eq!(r.code, 0, "{args:?}");
        assert!(
            r.stdout.contains("Usage: edeploy <COMMAND>\n"),
            "{}",
            r.stdout
        );
        assert!(r.stdout.contains("  cmdb-used "), "{}", r.stdout);
        assert!(r.stdout.contains("Exit status: 0 for yes"), "{}", r.stdout);
        assert!(!r.stdout.contains("gen-docs"), "{}", r.stdout);
    }
    for (command, usage) in [
        (
            "try-match",
            "Usage: edeploy try-match <HW_FILE> <SPECS_FILE>\n",
        ),
        (
            "explain",
            "Usage: edeploy explain [OPTIONS] <HW_FILE> [CONFIG]\n",
        ),
        ("check", "Usage: edeploy check [OPTIONS] [CONFIGDIR]\n"),
        (
            "cmdb-used",
            "Usage: edeploy cmdb-used <KEY> <VALUE> <CMDB>...\n",
        ),
    ] {
        let r = edeploy(&[command, "--help"], None);
        assert_eq!(
            (r.code, r.stdout.contains(usage)),
            (0, true),
            "{}",
            r.stdout
        );
        assert_eq!(edeploy(&["help", command], None).stdout, r.stdout);
    }
    let r = edeploy(&["explain", "--help"], None);
    assert!(r.stdout.contains("--section <NAME>"), "{}", r.stdout);
    let r = edeploy(&["frobnicate"], None);
    assert_eq!(r.code, 2);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr
            .starts_with("error: unrecognized subcommand 'frobnicate'\n"),
        "{}",
        r.stderr
    );
    let r = edeploy(&[], None);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("Usage: edeploy <COMMAND>"),
        "{}",
        r.stderr
    );
    let r = edeploy(&["try-match", "only-one"], None);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("required arguments were not provided:\n  <SPECS_FILE>"),
        "{}",
        r.stderr
    );
    let r = edeploy(&["check", "--bogus"], None);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("unexpected argument '--bogus'"),
        "{}",
        r.stderr
    );
    // A directory that cannot be read is an input error, as --help says.
    let r = edeploy(&["check", "/nonexistent"], None);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .starts_with("edeploy: error: cannot read /nonexistent: No such file"),
        "{}",
        r.stderr
    );
}

/// The real HP machine, whose detection sent integers, with its profile in
/// tests/fixtures/real-hw: the tools read, bind and explain the numbers.
#[test]
fn tools_on_a_real_machine_with_numbers() {
    let real = Path::new(ROOT).join("tests/fixtures/real-hw");
    let hw = real.join("hw/hp-proliant-dl360p-gen8.hw");
    let config = real.join("config");
    let r = edeploy(&["try-match", s(&hw), s(&config.join("hp.specs"))], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(" 'ipmi_channel': 2,\n"), "{}", r.stdout);
    assert!(r.stdout.contains(" 'ncpus': '8',\n"), "{}", r.stdout);
    assert!(
        r.stdout
            .ends_with("# looked up in the CMDB ($$): ipmi_channel, serial\n"),
        "{}",
        r.stdout
    );

    let tmp = tempfile::tempdir().unwrap();
    let specs = tmp.path().join("text.specs");
    fs::write(&specs, "[('cpu', 'physical', 'number', '2')]\n").unwrap();
    let r = edeploy(&["try-match", s(&hw), s(&specs)], None);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "closest: ('cpu', 'physical', 'number', 2): field 4 2 is not '2' \
             (a number never equals text"
        ),
        "{}",
        r.stdout
    );

    let conf = tmp.path().join("edeploy.conf");
    fs::write(
        &conf,
        format!(
            "[SERVER]\nCONFIGDIR={}/\nHWDIR={}/\n",
            s(&config),
            s(tmp.path())
        ),
    )
    .unwrap();
    let r = edeploy(&["explain", s(&hw), s(&conf)], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("profile hp (count 2): matched\n  CMDB entry 1 of "),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("answer: profile hp would be installed\n"),
        "{}",
        r.stdout
    );

    let r = edeploy(&["check", s(&config)], None);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("0 error(s), 0 warning(s)"),
        "{}",
        r.stdout
    );
}

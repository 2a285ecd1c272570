//! The decisions journal through the real CGI programs: each kind of
//! decision of `upload.py` and `upload-health.py` is one whole line, many
//! simultaneous requests lose none, the journal rotates at JOURNALSIZE, and
//! a journal that cannot be written costs a warning, not the installation.

#[path = "fixtures/robust/support.rs"]
mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use edeploy::journal::{self, Decision, Record};
use support::{generated_cmdb, machine_json, Site, BOUNDARY, PROFILE, REMOTE};

const UPLOAD: &str = env!("CARGO_BIN_EXE_upload");
const UPLOAD_HEALTH: &str = env!("CARGO_BIN_EXE_upload-health");

/// What a CGI run answered.
struct Reply {
    stdout: String,
    stderr: String,
}

/// Runs `program` as a CGI: a POST of the form `fields` and the file
/// `file` (name, content), or a GET when there is neither.
fn cgi(program: &str, conf: &Path, fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> Reply {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    if let Some((filename, data)) = file {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; \
                 filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    let get = body.is_empty();
    if !get {
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    }
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("EDEPLOY_CONF", conf)
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REMOTE_ADDR", REMOTE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if get {
        command.env("REQUEST_METHOD", "GET");
    } else {
        command
            .env("REQUEST_METHOD", "POST")
            .env(
                "CONTENT_TYPE",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .env("CONTENT_LENGTH", body.len().to_string());
    }
    let mut child = command.spawn().unwrap();
    let _ = child.stdin.take().unwrap().write_all(&body);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    Reply {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A site whose journal is `base/logs/edeploy-journal.jsonl` (the default:
/// in LOGDIR), with `extra` lines added to its `[SERVER]` section.
fn site(state: &str, extra: &str) -> (Site, PathBuf) {
    let site = Site::new(state, &generated_cmdb(10));
    let base = site.conf.parent().unwrap().to_path_buf();
    let mut conf = fs::read_to_string(&site.conf).unwrap();
    conf.push_str(extra);
    fs::write(&site.conf, conf).unwrap();
    (site, base.join("logs/edeploy-journal.jsonl"))
}

fn records(journal: &Path) -> Vec<Record> {
    let mut all = Vec::new();
    journal::for_each(journal, |r| all.push(r)).unwrap();
    all
}

/// Every line of the file parses: none is torn.
fn assert_whole_lines(path: &Path) -> usize {
    let text = fs::read_to_string(path).unwrap();
    for line in text.lines() {
        assert!(
            serde_json::from_str::<Record>(line).is_ok(),
            "not a record: {line}"
        );
    }
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines().count()
}

#[test]
fn each_decision_is_one_line() {
    let (site, journal) = site(&format!("[('other', 5), ('{PROFILE}', 1)]\n"), "");
    let config = &site.config_dir;
    fs::write(
        config.join("other.specs"),
        "[('system', 'product', 'name', 'robust_node'),\n \
         ('disk', '$d', 'size', 'gt(100)')]\n",
    )
    .unwrap();
    fs::write(config.join("other.configure"), "pass\n").unwrap();

    // Configured: the second profile, with its CMDB entry.
    let reply = cgi(
        UPLOAD,
        &site.conf,
        &[("section", "")],
        Some(("hw.json", &machine_json(1))),
    );
    assert!(reply.stdout.contains("var = "), "{}", reply.stdout);
    // No match: the quota of robust is spent, `other` fails its spec 2.
    let reply = cgi(UPLOAD, &site.conf, &[], Some(("hw.json", &machine_json(2))));
    assert!(reply.stdout.contains("Unable to match"), "{}", reply.stdout);
    // A failure report gives the installation back.
    cgi(
        UPLOAD,
        &site.conf,
        &[("failure", PROFILE)],
        Some(("hw.json", &machine_json(1))),
    );
    // A log.
    cgi(
        UPLOAD,
        &site.conf,
        &[],
        Some(("robust_node-SN000001.log.gz", b"log")),
    );
    // Refused: no file (the install check), a hardware file that is not
    // one, an unknown section, a request that is not a form.
    cgi(UPLOAD, &site.conf, &[], None);
    cgi(UPLOAD, &site.conf, &[], Some(("hw.json", b"not json")));
    cgi(
        UPLOAD,
        &site.conf,
        &[("section", "NOPE")],
        Some(("hw.json", &machine_json(3))),
    );
    // A health result, with a session.
    cgi(
        UPLOAD_HEALTH,
        &site.conf,
        &[("session", "bench1")],
        Some(("health.py", &machine_json(4))),
    );

    let all = records(&journal);
    assert_eq!(assert_whole_lines(&journal), all.len());
    let kinds: Vec<&str> = all.iter().map(|r| r.decision.kind()).collect();
    assert_eq!(
        kinds,
        [
            "configured",
            "no_match",
            "failure_report",
            "log_stored",
            "refused",
            "refused",
            "refused",
            "health_stored"
        ]
    );
    for r in &all {
        assert_eq!(r.client, REMOTE);
        assert!(r.time.ends_with('Z') && r.time.len() == 27, "{}", r.time);
    }
    let sysname = |i: usize| support::hw_file_name(i).trim_end_matches(".hw").to_owned();
    let r = &all[0];
    assert_eq!(
        (r.cgi.as_str(), r.section.as_deref()),
        ("upload.py", Some("SERVER"))
    );
    assert_eq!(r.sysname.as_deref(), Some(sysname(1).as_str()));
    assert_eq!(
        r.decision,
        Decision::Configured {
            profile: PROFILE.into(),
            cmdb_entry: Some(0),
            hostname: Some("node001".into()),
            ip: Some("10.20.0.1".into()),
        }
    );
    let Decision::NoMatch { profiles, more } = &all[1].decision else {
        panic!("{:?}", all[1]);
    };
    assert_eq!(*more, 0);
    assert_eq!(all[1].sysname.as_deref(), Some(sysname(2).as_str()));
    assert_eq!(profiles.len(), 1, "robust has no quota left: {profiles:?}");
    assert_eq!(profiles[0].profile, "other");
    assert_eq!(profiles[0].spec, Some(2));
    assert_eq!(
        profiles[0].spec_text.as_deref(),
        Some("('disk', '$d', 'size', 'gt(100)')")
    );
    assert_eq!(
        all[2].decision,
        Decision::FailureReport {
            profile: PROFILE.into(),
            quota_given_back: true
        }
    );
    assert_eq!(
        all[3].decision,
        Decision::LogStored {
            file: "robust_node-SN000001.log.gz".into()
        }
    );
    assert_eq!(all[3].sysname.as_deref(), Some("robust_node-SN000001"));
    assert_eq!(
        all[4].decision,
        Decision::Refused {
            status: 200,
            reason: "No file passed to the CGI".into()
        }
    );
    match &all[5].decision {
        Decision::Refused {
            status: 200,
            reason,
        } => {
            assert!(reason.starts_with("Invalid hardware file"), "{reason}")
        }
        d => panic!("{d:?}"),
    }
    assert_eq!(all[6].section.as_deref(), Some("NOPE"));
    assert!(
        matches!(&all[6].decision, Decision::Refused { status: 200, reason } if reason.contains("no section [NOPE]"))
    );
    let r = &all[7];
    assert_eq!(r.cgi, "upload-health.py");
    assert_eq!(r.sysname.as_deref(), Some(sysname(4).as_str()));
    let Decision::HealthStored { file } = &r.decision else {
        panic!("{r:?}");
    };
    assert!(
        file.starts_with("bench1/") && file.ends_with(".hw"),
        "{file}"
    );
    assert!(site
        .conf
        .parent()
        .unwrap()
        .join("health")
        .join(file)
        .is_file());
}

#[test]
fn a_request_refused_before_its_form_is_journaled() {
    let (site, journal) = site(&format!("[('{PROFILE}', 1)]\n"), "");
    let out = Command::new(UPLOAD)
        .env_clear()
        .env("EDEPLOY_CONF", &site.conf)
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", "POST")
        .env("CONTENT_TYPE", "text/plain")
        .env("CONTENT_LENGTH", "0")
        .env("REMOTE_ADDR", REMOTE)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Status: 415"));
    let all = records(&journal);
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].section.as_deref(), all[0].sysname.as_deref()),
        (None, None)
    );
    assert!(matches!(
        all[0].decision,
        Decision::Refused { status: 415, .. }
    ));
}

#[test]
fn simultaneous_requests_write_whole_lines_and_rotate() {
    const MACHINES: usize = 48;
    // About the length of a line here: one rotation, after 30 lines.
    let line = 240;
    let (site, journal) = site(
        &format!("[('{PROFILE}', 8)]\n"),
        &format!("JOURNALSIZE = {}\n", 30 * line),
    );
    let running: Vec<_> = (0..MACHINES)
        .map(|i| support::spawn(&site.conf, &machine_json(i)))
        .collect();
    for r in running {
        let answer = r.wait();
        assert!(answer.exit.success(), "{}", answer.describe());
    }
    let rotated = journal::rotated_path(&journal);
    let sizes = (
        fs::metadata(&journal).map(|m| m.len()),
        fs::metadata(&rotated).map(|m| m.len()),
    );
    assert!(matches!(sizes, (Ok(_), Ok(_))), "no rotation: {sizes:?}");
    let lines = assert_whole_lines(&journal) + assert_whole_lines(&rotated);
    assert_eq!(lines, MACHINES, "lines lost");
    let all = records(&journal);
    let configured = all
        .iter()
        .filter(|r| r.decision.kind() == "configured")
        .count();
    assert_eq!(configured, 8);
    let mut names: Vec<_> = all.iter().filter_map(|r| r.sysname.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), MACHINES);
}

#[test]
fn an_unwritable_journal_costs_a_warning_not_the_installation() {
    let (site, _) = site(
        &format!("[('{PROFILE}', 1)]\n"),
        "JOURNAL = /nonexistent/edeploy/journal\n",
    );
    let reply = cgi(UPLOAD, &site.conf, &[], Some(("hw.json", &machine_json(1))));
    assert!(reply.stdout.contains("var = "), "{}", reply.stdout);
    assert!(
        reply.stderr.contains("[upload:warn]")
            && reply
                .stderr
                .contains("cannot write the journal /nonexistent/edeploy/journal"),
        "{}",
        reply.stderr
    );
    assert_eq!(support::state_count(&site.state_file()), 0);
}

#[test]
fn an_empty_journal_setting_turns_it_off() {
    let (site, journal) = site(&format!("[('{PROFILE}', 1)]\n"), "JOURNAL =\n");
    let reply = cgi(UPLOAD, &site.conf, &[], Some(("hw.json", &machine_json(1))));
    assert!(reply.stdout.contains("var = "));
    assert!(!reply.stderr.contains("journal"), "{}", reply.stderr);
    assert!(!journal.exists());
    let logs = journal.parent().unwrap();
    assert_eq!(fs::read_dir(logs).unwrap().count(), 0);
}

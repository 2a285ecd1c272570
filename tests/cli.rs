//! The command lines of `upload`, `upload-health`, `status` and `edeploy`
//! as a user meets them: help, usage errors and their exit statuses, the
//! configuration `upload` says it used, a CGI run that arguments cannot
//! disturb, and the man pages and completions of `edeploy gen-docs`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const UPLOAD: &str = env!("CARGO_BIN_EXE_upload");
const HEALTH: &str = env!("CARGO_BIN_EXE_upload-health");
const STATUS: &str = env!("CARGO_BIN_EXE_status");
const EDEPLOY: &str = env!("CARGO_BIN_EXE_edeploy");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `exe` with `args` and `env` on top of an environment without
/// EDEPLOY_CONF nor GATEWAY_INTERFACE.
fn run(exe: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(exe)
        .args(args)
        .env_remove("EDEPLOY_CONF")
        .env_remove("GATEWAY_INTERFACE")
        .envs(env.iter().copied())
        .output()
        .expect("run the program");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn legacy(name: &str) -> PathBuf {
    Path::new(ROOT).join("legacy-config").join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn help_of_every_program() {
    for (exe, usage) in [
        (UPLOAD, "Usage: upload [OPTIONS] -f <HW_FILE>"),
        (HEALTH, "Usage: upload-health"),
        (STATUS, "Usage: status [OPTIONS]"),
        (EDEPLOY, "Usage: edeploy <COMMAND>"),
    ] {
        for flag in ["--help", "-h"] {
            let r = run(exe, &[flag], &[]);
            assert_eq!(r.code, 0, "{exe} {flag}: {}", r.stderr);
            assert!(r.stdout.contains(usage), "{exe} {flag}: {}", r.stdout);
            assert!(!r.stdout.contains("#!/bin/sh"), "{}", r.stdout);
        }
        let r = run(exe, &["--version"], &[]);
        assert_eq!(r.code, 0);
        assert!(
            r.stdout
                .ends_with(&format!(" {}\n", env!("CARGO_PKG_VERSION"))),
            "{}",
            r.stdout
        );
    }
    let r = run(UPLOAD, &["--help"], &[]);
    for option in [
        "-f <HW_FILE>",
        "-F <PROFILE>",
        "--dry-run",
        "--config-dir <DIR>",
    ] {
        assert!(r.stdout.contains(option), "{option}: {}", r.stdout);
    }
    assert!(r.stdout.contains("Exit status: 0"), "{}", r.stdout);
    assert!(run(STATUS, &["--help"], &[]).stdout.contains("--json"));
}

#[test]
fn usage_errors_exit_2() {
    for (exe, args, message) in [
        (
            UPLOAD,
            &[][..],
            "the following required arguments were not provided",
        ),
        (UPLOAD, &["-f"], "a value is required for '-f <HW_FILE>'"),
        (
            UPLOAD,
            &["-f", "x", "--bogus"],
            "unexpected argument '--bogus'",
        ),
        (STATUS, &["--bogus"], "unexpected argument '--bogus'"),
        (HEALTH, &["--bogus"], "unexpected argument '--bogus'"),
        (HEALTH, &[], "a CGI program, run by the web server"),
        (EDEPLOY, &["check", "a", "b"], "unexpected argument 'b'"),
    ] {
        let r = run(exe, args, &[]);
        assert_eq!(r.code, 2, "{exe} {args:?}: {}", r.stderr);
        assert!(r.stderr.contains(message), "{exe} {args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{exe} {args:?}: {}", r.stdout);
    }
}

/// The initrd's `upload.py -f /hw.json [-F PROFILE]`, and the exit status
/// of a machine that gets an error script.
#[test]
fn upload_legacy_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    fs::create_dir(&config).unwrap();
    for name in [
        "state",
        "kvm-test.specs",
        "kvm-test.configure",
        "kvm-test.cmdb",
    ] {
        fs::copy(legacy(name), config.join(name)).unwrap();
    }
    fs::write(config.join("state"), "[('kvm-test', 3)]\n").unwrap();
    let hw = legacy("hw/kvm-test.json");
    let dir = ["--config-dir", s(&config)];

    let r = run(UPLOAD, &[&dir[..], &["-f", s(&hw)]].concat(), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("#!/usr/bin/env python\n"),
        "{}",
        r.stdout
    );
    assert_eq!(
        fs::read_to_string(config.join("state")).unwrap(),
        "[('kvm-test', 2)]\n"
    );

    let r = run(
        UPLOAD,
        &[&dir[..], &["-f", s(&hw), "-F", "kvm-test"]].concat(),
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.contains(
            "upload: info: edeploy_test_vm-52-54-12-34-00-03: failure reported for profile \
             kvm-test: one installation given back"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(
        fs::read_to_string(config.join("state")).unwrap(),
        "[('kvm-test', 3)]\n"
    );

    // No profile left: the machine gets an error script, exit 1, and the
    // log line names it.
    fs::write(config.join("state"), "[('kvm-test', 0)]\n").unwrap();
    let r = run(UPLOAD, &[&dir[..], &["-f", s(&hw)]].concat(), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.starts_with("#!/bin/sh\n"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("upload: error: edeploy_test_vm-52-54-12-34-00-03: No more role available"),
        "{}",
        r.stderr
    );
}

/// The configuration used is logged: the file and section, the directory
/// of --config-dir, or the bundled examples.
#[test]
fn upload_logs_the_configuration_used() {
    let hw = legacy("hw/kvm-test.json");
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("edeploy.conf");
    fs::write(&conf, format!("[SERVER]\nCONFIGDIR={}\n", s(&legacy("")))).unwrap();
    let r = run(
        UPLOAD,
        &["--dry-run", "-f", s(&hw)],
        &[("EDEPLOY_CONF", s(&conf))],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.starts_with(&format!(
            "upload: info: configuration: {} [SERVER]\n",
            conf.display()
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("#EDEPLOY_PROFILE = kvm-test\n"),
        "{}",
        r.stdout
    );

    // Without any configuration file, the line says so.
    let r = run(UPLOAD, &["--dry-run", "-f", s(&hw)], &[]);
    assert!(
        r.stderr.starts_with("upload: info: configuration: /etc/edeploy.conf [SERVER]\n")
            || r.stderr.starts_with(&format!(
                "upload: info: configuration: none (no /etc/edeploy.conf): the bundled {ROOT}/legacy-config\n"
            )),
        "{}",
        r.stderr
    );
}

/// The README's first command runs on the bundled legacy-config/ whatever
/// the host's configuration, and says so.
#[test]
fn readme_first_command_uses_the_bundled_config() {
    let readme = fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let command = readme
        .lines()
        .find_map(|l| l.strip_prefix("cargo run --release --bin upload -- "))
        .expect("the README's first command");
    let out = Command::new(UPLOAD)
        .current_dir(ROOT)
        .args(command.split_whitespace())
        .env("EDEPLOY_CONF", "/nonexistent/edeploy.conf")
        .env_remove("GATEWAY_INTERFACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .starts_with("upload: info: configuration: directory legacy-config/ (--config-dir)\n"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("#EDEPLOY_PROFILE = kvm-test\n"),
        "{stderr}"
    );
}

#[test]
fn empty_edeploy_conf_is_named() {
    let hw = legacy("hw/kvm-test.json");
    let env = [("EDEPLOY_CONF", "")];
    let r = run(UPLOAD, &["--dry-run", "-f", s(&hw)], &env);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "upload: error: $EDEPLOY_CONF: set but empty: name a configuration file, or unset it"
        ),
        "{}",
        r.stderr
    );
    let r = run(EDEPLOY, &["explain", s(&hw)], &env);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("edeploy: error: $EDEPLOY_CONF: set but empty"),
        "{}",
        r.stderr
    );
}

/// Under a web server arguments are not parsed: whatever Apache passes
/// (an ISINDEX query becomes arguments), the answer is the CGI's.
#[test]
fn cgi_ignores_arguments() {
    for (exe, page) in [
        (UPLOAD, "Content-Type: text/x-python\n"),
        (HEALTH, "Content-Type: text/x-python\n"),
        (STATUS, "Content-Type: text/html"),
    ] {
        for args in [&["--help"][..], &["--bogus", "x"]] {
            let tmp = tempfile::tempdir().unwrap();
            let conf = tmp.path().join("edeploy.conf");
            fs::write(
                &conf,
                format!("[SERVER]\nCONFIGDIR={}/\n", tmp.path().display()),
            )
            .unwrap();
            let r = run(
                exe,
                args,
                &[
                    ("GATEWAY_INTERFACE", "CGI/1.1"),
                    ("REQUEST_METHOD", "GET"),
                    ("SERVER_PROTOCOL", "HTTP/1.1"),
                    ("REMOTE_ADDR", "192.0.2.1"),
                    ("EDEPLOY_CONF", s(&conf)),
                ],
            );
            assert_eq!(r.code, 0, "{exe} {args:?}: {}", r.stderr);
            assert!(r.stdout.contains(page), "{exe} {args:?}: {}", r.stdout);
            assert!(!r.stdout.contains("Usage:"), "{exe} {args:?}: {}", r.stdout);
            assert!(!r.stderr.contains("Usage:"), "{exe} {args:?}: {}", r.stderr);
        }
    }
}

/// `edeploy gen-docs OUTDIR`, as the packages run it.
#[test]
fn gen_docs_writes_man_pages_and_completions() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("docs");
    let r = run(EDEPLOY, &["gen-docs", s(&out)], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let files = [
        "man/edeploy.1",
        "man/upload.8",
        "man/edeploy.conf.5",
        "completions/edeploy.bash",
        "completions/_edeploy",
        "completions/edeploy.fish",
    ];
    let listed: Vec<&str> = r.stdout.lines().collect();
    let expected: Vec<String> = files
        .iter()
        .map(|f| format!("{}/{f}", out.display()))
        .collect();
    assert_eq!(listed, expected);
    let read = |f: &str| fs::read_to_string(out.join(f)).unwrap();
    assert!(read("man/edeploy.1").contains(".TH edeploy 1 "));
    assert!(read("man/upload.8").contains(".TH upload 8 "));
    let conf = read("man/edeploy.conf.5");
    assert!(conf.contains(".TH EDEPLOY.CONF 5 "));
    assert!(conf.contains("\\fBMAXCMDBSIZE\\fR"), "{conf}");
    for shell in [
        "completions/edeploy.bash",
        "completions/_edeploy",
        "completions/edeploy.fish",
    ] {
        let text = read(shell);
        assert!(
            text.contains("try-match") && text.contains("strict"),
            "{shell}"
        );
        assert!(!text.contains("gen-docs"), "{shell}: {text}");
    }
    // The bash completion is valid bash.
    let ok = Command::new("bash")
        .arg("-n")
        .arg(out.join("completions/edeploy.bash"))
        .status()
        .unwrap();
    assert!(ok.success());
    // A second run gives the same files: the pages do not depend on the
    // terminal or the date.
    let again = tmp.path().join("again");
    assert_eq!(run(EDEPLOY, &["gen-docs", s(&again)], &[]).code, 0);
    for f in files {
        assert_eq!(read(f), fs::read_to_string(again.join(f)).unwrap(), "{f}");
    }
}

/// Errors a new operator met: a JSON error says where once, columns from
/// 1.
#[test]
fn hardware_json_error_names_the_place_once() {
    let tmp = tempfile::tempdir().unwrap();
    let hw = tmp.path().join("hw.json");
    fs::write(&hw, "[[\"a\", \"b\", \"c\", \"d\"],\n\n").unwrap();
    let r = run(
        UPLOAD,
        &["--dry-run", "--config-dir", s(&legacy("")), "-f", s(&hw)],
        &[],
    );
    assert_eq!(r.code, 1);
    let place = format!(
        "{}:3:1: invalid JSON: EOF while parsing a value\n",
        hw.display()
    );
    assert!(r.stderr.ends_with(&place), "{}", r.stderr);
    assert!(!r.stderr.contains("at line"), "{}", r.stderr);
}

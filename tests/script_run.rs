//! Runs the scripts of `edeploy::script` for real: compiled by Python 2.7 and
//! 3, executed by Python, `sh` and `bash` inside a scratch root (a chroot in
//! a private mount namespace, with the host's /usr, /etc and Python
//! installations bind-mounted read-only), so that their effects on /vars,
//! /post_rsync and /grub_options can be checked without touching the real /.
//!
//! Tests whose script holds a `var = ...` block need `literal::pformat`.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use edeploy::literal::{Dict, Value};
use edeploy::script::{configure_script, error_script, PYTHON_PRELUDE};

fn skip_oracle() -> bool {
    std::env::var_os("EDEPLOY_SKIP_ORACLE").is_some_and(|v| v == "1")
}

/// A Python interpreter of the host, as found through PATH (pyenv shims).
#[derive(Debug, Clone)]
struct Python {
    /// How to call it on the host.
    command: &'static str,
    pyenv_version: Option<&'static str>,
    /// The real binary and its installation, for the scratch root.
    executable: PathBuf,
    prefix: PathBuf,
}

impl Python {
    fn host(&self) -> Command {
        let mut cmd = Command::new(self.command);
        if let Some(v) = self.pyenv_version {
            cmd.env("PYENV_VERSION", v);
        }
        cmd
    }
}

fn find_python(command: &'static str, pyenv_version: Option<&'static str>) -> Option<Python> {
    let mut cmd = Command::new(command);
    if let Some(v) = pyenv_version {
        cmd.env("PYENV_VERSION", v);
    }
    let out = cmd
        .args(["-c", "import sys; print(sys.executable); print(sys.prefix)"])
        .output();
    let found = out.ok().filter(|o| o.status.success()).and_then(|o| {
        let text = String::from_utf8(o.stdout).ok()?;
        let mut lines = text.lines();
        Some((PathBuf::from(lines.next()?), PathBuf::from(lines.next()?)))
    });
    match found {
        Some((executable, prefix)) => Some(Python {
            command,
            pyenv_version,
            executable,
            prefix,
        }),
        None if skip_oracle() => {
            eprintln!("{command} not available, skipped (EDEPLOY_SKIP_ORACLE=1)");
            None
        }
        None => panic!("{command} is required (set EDEPLOY_SKIP_ORACLE=1 to skip)"),
    }
}

/// Python 2.7 (the legacy initrd's) and Python 3.
fn pythons() -> Vec<Python> {
    [("python2.7", Some("2.7.18")), ("python3", None)]
        .into_iter()
        .filter_map(|(c, v)| find_python(c, v))
        .collect()
}

fn py_compile(python: &Python, source: &[u8]) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("configure.py");
    fs::write(&file, source).unwrap();
    let out = python
        .host()
        .arg("-m")
        .arg("py_compile")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} -m py_compile failed:\n{}",
        python.command,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether this machine lets us make a private mount namespace (root).
fn can_unshare() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let ok = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "true"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            common::feature_missing(
                "`unshare --mount` is not permitted here (needs root): scripts not run",
            );
        }
        ok
    })
}

/// Builds the scratch root inside the new mount namespace, then runs "$@"
/// chrooted in it with a minimal environment.
const ROOT_SETUP: &str = r#"
set -e
R=$EDEPLOY_ROOT
bind() {
    mkdir -p "$R$1"
    mount --bind "$1" "$R$1"
    mount -o remount,bind,ro "$R$1"
}
bind /usr
bind /etc
for l in bin sbin lib lib32 lib64 libx32; do
    if [ -L "/$l" ]; then
        ln -s "$(readlink "/$l")" "$R/$l"
    elif [ -d "/$l" ]; then
        bind "/$l"
    fi
done
mkdir -p "$R/dev"
: > "$R/dev/null"
mount --bind /dev/null "$R/dev/null"
for p in $EDEPLOY_BINDS; do
    bind "$p"
done
exec chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"
"#;

/// An empty root directory in which one script runs.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        Root {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.dir.path().join(inside.trim_start_matches('/'))
    }

    fn read(&self, inside: &str) -> String {
        let path = self.path(inside);
        String::from_utf8(fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .unwrap()
    }

    /// Writes `script` as /configure and runs `interpreter /configure`.
    fn run(&self, script: &[u8], interpreter: &Path, extra_binds: &[&Path]) -> Output {
        let configure = self.path("configure");
        fs::write(&configure, script).unwrap();
        fs::set_permissions(&configure, fs::Permissions::from_mode(0o755)).unwrap();
        let binds: Vec<String> = extra_binds
            .iter()
            .filter(|p| !p.starts_with("/usr"))
            .map(|p| p.display().to_string())
            .collect();
        assert!(binds.iter().all(|b| !b.contains(char::is_whitespace)));
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                ROOT_SETUP,
                "sh",
            ])
            .arg(interpreter)
            .arg("/configure")
            .env("EDEPLOY_ROOT", self.dir.path())
            .env("EDEPLOY_BINDS", binds.join(" "))
            .output()
            .unwrap()
    }

    /// Files whose name says the script was broken into.
    fn pwned(&self) -> Vec<String> {
        fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("pwned"))
            .collect()
    }
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn dict(items: &[(&str, Value)]) -> Dict {
    items
        .iter()
        .map(|(k, v)| (Value::str(k), v.clone()))
        .collect()
}

/// The variables of the run tests and their Python literal, written by hand
/// so that the prelude can be tested without `literal::pformat`.
fn sample_vars() -> Dict {
    dict(&[
        ("disk", Value::str("sda")),
        ("edeploy-profile", Value::str("vm")),
        ("eth", Value::str("eth0")),
        ("ip", Value::str("10.0.0.5")),
        ("count", Value::Int(3)),
    ])
}
const SAMPLE_VARS_LITERAL: &str =
    "{'count': 3, 'disk': 'sda', 'edeploy-profile': 'vm', 'eth': 'eth0', 'ip': '10.0.0.5'}\n";

const PYTHON_CONFIGURE: &str = r#"config('/etc/network/interfaces').write('auto %(eth)s\niface %(eth)s inet static\n    address %(ip)s\n' % var)
inject_facts(var)
grub_options('console=ttyS0 quiet')
set_role('mysql', 'D7-F.1.0.0', '/dev/' + var['disk'])
run('echo run-output; cat; test ! -t 0')
"#;

const SHELL_CONFIGURE: &str = r#"#!/bin/sh
printf 'auto %s\niface %s inet static\n    address %s\n' "$eth" "$eth" "$ip" | config /etc/network/interfaces
inject_facts
grub_options console=ttyS0 quiet
set_role mysql D7-F.1.0.0 "/dev/$disk"
run 'echo run-output; cat; test ! -t 0'
"#;

const ROLE_VARS: &str = "ROLE=mysql\nVERS=D7-F.1.0.0\nDISK=/dev/sda\nPROFILE=vm\n";

/// The facts of the sample variables in Python 2's order of the `var`
/// dict, as the legacy `inject_facts` wrote them (the shell prelude too).
const FACTS_PYTHON2: &str =
    "---\nhw_count: 3\nhw_ip: 10.0.0.5\nhw_eth: eth0\nhw_disk: sda\nhw_edeploy-profile: vm\n";
/// Python 3 goes through a dict in insertion (here sorted) order.
const FACTS_PYTHON3: &str =
    "---\nhw_count: 3\nhw_disk: sda\nhw_edeploy-profile: vm\nhw_eth: eth0\nhw_ip: 10.0.0.5\n";

/// The facts file a run by `python` writes.
fn facts_of(python: &Python) -> &'static str {
    match python.pyenv_version {
        Some(_) => FACTS_PYTHON2,
        None => FACTS_PYTHON3,
    }
}

/// What every sample configure run must leave in the root.
fn check_sample_run(root: &Root, out: &Output, vars_file: &str, facts: &str) {
    assert!(out.status.success(), "{}", show(out));
    assert_eq!(root.read("/vars"), vars_file);
    let interfaces = "/post_rsync/etc/network/interfaces";
    assert_eq!(
        root.read(interfaces),
        "auto eth0\niface eth0 inet static\n    address 10.0.0.5\n"
    );
    let meta = fs::metadata(root.path(interfaces)).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o644, 0, 0)
    );
    assert_eq!(
        root.read("/post_rsync/etc/facter/facts.d/edeploy.yaml"),
        facts
    );
    assert_eq!(root.read("/grub_options"), "console=ttyS0 quiet");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("+ echo run-output; cat; test ! -t 0\n"),
        "{}",
        show(out)
    );
    assert!(stderr.contains("\nrun-output\n"), "{}", show(out));
}

#[test]
fn python_prelude_compiles_under_python2_and_python3() {
    let mut source = format!(
        "#!/usr/bin/env python\n#EDEPLOY_PROFILE = vm\n{PYTHON_PRELUDE}var = {SAMPLE_VARS_LITERAL}"
    )
    .into_bytes();
    source.extend_from_slice(PYTHON_CONFIGURE.as_bytes());
    for python in pythons() {
        py_compile(&python, &source);
    }
}

#[test]
fn python_prelude_runs_in_scratch_root() {
    for python in pythons() {
        if !can_unshare() {
            return;
        }
        let root = Root::new();
        let script = format!(
            "#!/usr/bin/env python\n#EDEPLOY_PROFILE = vm\n{PYTHON_PRELUDE}var = {SAMPLE_VARS_LITERAL}{PYTHON_CONFIGURE}"
        );
        let out = root.run(script.as_bytes(), &python.executable, &[&python.prefix]);
        check_sample_run(&root, &out, ROLE_VARS, facts_of(&python));
    }
}

#[test]
fn python_run_failure_stops_the_script() {
    for python in pythons() {
        if !can_unshare() {
            return;
        }
        let root = Root::new();
        let script = format!(
            "{PYTHON_PRELUDE}var = {{}}\nrun('echo before; exit 3')\ngrub_options('not reached')\n"
        );
        let out = root.run(script.as_bytes(), &python.executable, &[&python.prefix]);
        assert_eq!(out.status.code(), Some(3), "{}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("before\nCommand 'echo before; exit 3' failed\n!!!!"),
            "{}",
            show(&out)
        );
        assert!(!root.path("/grub_options").exists());
    }
}

#[test]
fn shell_configure_script_runs_in_scratch_root() {
    if !can_unshare() {
        return;
    }
    for shell in ["/bin/sh", "/bin/bash"] {
        let root = Root::new();
        let script = configure_script(
            "vm",
            &sample_vars(),
            SHELL_CONFIGURE.as_bytes(),
            Some("http://10.0.0.1:8000/"),
            Some("http://10.0.0.1/"),
        );
        let text = String::from_utf8(script.clone()).unwrap();
        assert!(
            text.starts_with("#!/bin/sh\n#EDEPLOY_PROFILE = vm\n"),
            "{text}"
        );
        let out = root.run(&script, Path::new(shell), &[]);
        check_sample_run(
            &root,
            &out,
            &format!(
                "{ROLE_VARS}PXEMNGR_URL=http://10.0.0.1:8000/\nMETADATA_URL=http://10.0.0.1/\n"
            ),
            FACTS_PYTHON2,
        );
    }
}

#[test]
fn shell_run_failure_stops_the_script() {
    if !can_unshare() {
        return;
    }
    let configure = b"#!/bin/sh\nset -e\nrun 'echo before; exit 3'\ngrub_options not reached\n";
    let script = configure_script("vm", &sample_vars(), configure, None, None);
    for shell in ["/bin/sh", "/bin/bash"] {
        let root = Root::new();
        let out = root.run(&script, Path::new(shell), &[]);
        assert_eq!(out.status.code(), Some(3), "{}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("before\nCommand 'echo before; exit 3' failed\n!!!!"),
            "{}",
            show(&out)
        );
        assert!(!root.path("/grub_options").exists());
    }
}

/// Values and keys that would break out of a badly quoted script.
fn hostile_vars(profile: &str, ascii_only: bool) -> Dict {
    let mut items = vec![
        ("edeploy-profile", Value::str(profile)),
        ("q", Value::str(r#"it's "quoted" '''triple''' """too""" "#)),
        ("nl", Value::str("line1\nline2\r\n\n")),
        ("sub", Value::str("$(touch /pwned-sub)")),
        ("bt", Value::str("`touch /pwned-bt`")),
        ("bs", Value::str("back\\slash\\n \\x41 \\")),
        ("mix", Value::str("'; touch /pwned-mix; echo '")),
        ("evil'key; touch /pwned-key", Value::str("k")),
        ("$(touch /pwned-key2)", Value::str("k2")),
        ("EOF", Value::str("\nEOF\n")),
    ];
    if !ascii_only {
        items.push(("utf8", Value::Unicode("café ünïcode".to_string())));
    }
    dict(&items)
}

const HOSTILE_PROFILE: &str = "vm\ntouch /pwned-profile\r";
const HOSTILE_PXEMNGR: &str = "http://x/a\"b$(touch /pwned-url1)`touch /pwned-url2`'c\\d%s\n\u{e9}";
const HOSTILE_METADATA: &str = "'; touch /pwned-url3; echo '";

/// Checks the files `/post_rsync/out/<i>` hold the values in sorted order.
fn check_hostile_run(root: &Root, out: &Output, vars: &Dict) {
    assert!(out.status.success(), "{}", show(out));
    for (i, (_, value)) in vars.sorted_items().into_iter().enumerate() {
        let want = match value {
            Value::Str(b) => b.clone(),
            Value::Unicode(s) => s.as_bytes().to_vec(),
            other => panic!("unexpected {other:?}"),
        };
        let path = root.path(&format!("/post_rsync/out/{i}"));
        assert_eq!(fs::read(&path).unwrap(), want, "{}", path.display());
    }
    assert_eq!(
        root.read("/vars"),
        format!("PXEMNGR_URL={HOSTILE_PXEMNGR}\nMETADATA_URL={HOSTILE_METADATA}\n")
    );
    assert_eq!(root.pwned(), Vec::<String>::new());
}

#[test]
fn hostile_values_cannot_break_out_of_shell_script() {
    let vars = hostile_vars(HOSTILE_PROFILE, false);
    let mut configure = String::from("#!/bin/bash\n");
    for (i, (key, _)) in vars.sorted_items().into_iter().enumerate() {
        let key = key.as_text().unwrap().replace('\'', "'\\''");
        configure.push_str(&format!("var '{key}' | config /out/{i}\n"));
    }
    configure.push_str("printf '%s' \"$sub$bt$mix\" | config /env\n");
    let script = configure_script(
        HOSTILE_PROFILE,
        &vars,
        configure.as_bytes(),
        Some(HOSTILE_PXEMNGR),
        Some(HOSTILE_METADATA),
    );
    let text = String::from_utf8_lossy(&script);
    assert_eq!(
        text.lines().nth(1),
        Some("#EDEPLOY_PROFILE = vm touch /pwned-profile ")
    );
    if !can_unshare() {
        return;
    }
    for shell in ["/bin/sh", "/bin/bash"] {
        let root = Root::new();
        let out = root.run(&script, Path::new(shell), &[]);
        check_hostile_run(&root, &out, &vars);
        assert_eq!(
            root.read("/post_rsync/env"),
            "$(touch /pwned-sub)`touch /pwned-bt`'; touch /pwned-mix; echo '"
        );
    }
}

// Needs literal::pformat.
#[test]
fn hostile_values_cannot_break_out_of_python_script() {
    let vars = hostile_vars(HOSTILE_PROFILE, true);
    let configure =
        "for i, key in enumerate(sorted(var.keys())):\n    config('/out/%d' % i).write(var[key])\n";
    let script = configure_script(
        HOSTILE_PROFILE,
        &vars,
        configure.as_bytes(),
        Some(HOSTILE_PXEMNGR),
        Some(HOSTILE_METADATA),
    );
    let text = String::from_utf8_lossy(&script);
    assert_eq!(
        text.lines().nth(1),
        Some("#EDEPLOY_PROFILE = vm touch /pwned-profile ")
    );
    for python in pythons() {
        py_compile(&python, &script);
        if !can_unshare() {
            continue;
        }
        let root = Root::new();
        let out = root.run(&script, &python.executable, &[&python.prefix]);
        check_hostile_run(&root, &out, &vars);
    }
}

// Needs literal::pformat.
#[test]
fn python_configure_script_is_prelude_then_pprint_then_configure() {
    let vars = dict(&[
        ("edeploy-profile", Value::str("vm")),
        ("disk", Value::str("sda")),
    ]);
    let script = configure_script(
        "vm",
        &vars,
        b"pass\n",
        Some("http://10.0.0.1:8000/"),
        Some(""),
    );
    let want = format!(
        "#!/usr/bin/env python\n#EDEPLOY_PROFILE = vm\n{PYTHON_PRELUDE}var = {{'disk': 'sda', 'edeploy-profile': 'vm'}}\npass\n\nrun('echo \"PXEMNGR_URL=http://10.0.0.1:8000/\" >> /vars')\n\n"
    );
    assert_eq!(String::from_utf8(script).unwrap(), want);
}

// Needs literal::pformat.
#[test]
fn python_configure_script_runs_in_scratch_root() {
    let script = configure_script(
        "vm",
        &sample_vars(),
        PYTHON_CONFIGURE.as_bytes(),
        Some("http://10.0.0.1:8000/"),
        Some("http://10.0.0.1/"),
    );
    for python in pythons() {
        py_compile(&python, &script);
        if !can_unshare() {
            continue;
        }
        let root = Root::new();
        let out = root.run(&script, &python.executable, &[&python.prefix]);
        check_sample_run(
            &root,
            &out,
            &format!(
                "{ROLE_VARS}PXEMNGR_URL=http://10.0.0.1:8000/\nMETADATA_URL=http://10.0.0.1/\n"
            ),
            facts_of(&python),
        );
    }
}

#[test]
fn error_script_prints_message_verbatim() {
    let message = "Unable to match\nEOF\n'EOF'\nEOF_\n EOF\n$(rm -rf /)\n`echo pwned > canary1`\n\
                   $(echo pwned > canary2)\n\\ \"quoted\" 'single' $HOME\n\nexit 0\nEOF";
    let script = error_script(message);
    let tmp = tempfile::tempdir().unwrap();
    // Only `cat` can be found: should the quoting fail, nothing harmful runs,
    // and the shell's own redirections would leave canary files.
    let bin = tmp.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let cat = ["/bin/cat", "/usr/bin/cat"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("cat");
    std::os::unix::fs::symlink(cat, bin.join("cat")).unwrap();
    fs::write(tmp.path().join("error.sh"), &script).unwrap();
    for shell in ["/bin/sh", "/bin/bash"] {
        let out = Command::new(shell)
            .arg("error.sh")
            .current_dir(tmp.path())
            .env_clear()
            .env("PATH", &bin)
            .env("HOME", "/home/nobody")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{message}\n"),
            "{}",
            show(&out)
        );
        assert!(out.stderr.is_empty(), "{}", show(&out));
        for canary in ["canary1", "canary2"] {
            assert!(!tmp.path().join(canary).exists());
        }
    }
}

//! Real machines: the hardware of two real servers (tests/fixtures/real-hw:
//! an HP ProLiant DL360p Gen8 whose detection sent integers, a Dell
//! PowerEdge M520) with profiles of our own, through the legacy server (the
//! oracle), `upload -f` as the USB-key initrd calls it, and Apache with the
//! PXE initrd's curl command. All three must give the same profile, the
//! same variables and the same state, CMDB and `.hw` bytes.
//!
//! The oracle and Apache must be installed (see .ci/run), unless
//! `EDEPLOY_SKIP_ORACLE=1` / `EDEPLOY_SKIP_APACHE=1`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::apache::{apache_available, Apache};
use serde_json::Value as Json;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/real-hw");
const MARKER: &str = "# edeploy-difftest: the .configure file starts here\n";

/// The two machines: `.hw` file, the profile they get, the CMDB entry's
/// host name, and a line of their `var` that must be there.
const MACHINES: [(&str, &str, &str); 2] = [
    ("hp-proliant-dl360p-gen8", "hp", " 'ipmi_channel': 2,\n"),
    ("dell-poweredge-m520", "dell", " 'hostname': 'dell-3',\n"),
];

/// The `.hw` file sent as the initrd sends it: a JSON list of lists.
fn hw_json(machine: &str) -> Vec<u8> {
    let path = Path::new(FIXTURES).join("hw").join(format!("{machine}.hw"));
    let items = edeploy::hw::parse_hw(&path, &fs::read(&path).unwrap()).unwrap();
    serde_json::to_vec(&items).unwrap()
}

/// A case directory as tests/oracle/legacy_upload.py takes it.
fn case(root: &Path, name: &str, machine: &str) -> PathBuf {
    let dir = root.join(name);
    for sub in ["config", "hw", "run"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let config = Path::new(FIXTURES).join("config");
    for entry in fs::read_dir(&config).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.join("config").join(entry.file_name())).unwrap();
    }
    fs::write(dir.join("hw.json"), hw_json(machine)).unwrap();
    let d = dir.display();
    fs::write(
        dir.join("edeploy.conf"),
        format!("[SERVER]\nCONFIGDIR={d}/config/\nHWDIR={d}/hw/\nLOCKFILE={d}/run/lock\n"),
    )
    .unwrap();
    fs::write(
        dir.join("request.json"),
        r#"{"hw": "hw.json", "failure": null}"#,
    )
    .unwrap();
    dir
}

/// The files a request leaves: CONFIGDIR and HWDIR, by name (our hidden
/// spares excepted).
fn results(config: &Path, hw: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for (prefix, dir) in [("config", config), ("hw", hw)] {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                files.push((format!("{prefix}/{name}"), fs::read(entry.path()).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// The `var = {...}` text of a configure script.
fn var_text(script: &str) -> &str {
    let start = script.find("\nvar = ").expect("var in the script") + "\nvar = ".len();
    let end = script[start..].find(MARKER).expect("the .configure file") + start;
    &script[start..end]
}

fn run_upload(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_upload"))
        .args(["-f", "hw.json"])
        .env("EDEPLOY_CONF", dir.join("edeploy.conf"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "upload -f: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn real_machines_through_upload_f_match_the_legacy() {
    let root = tempfile::tempdir().unwrap();
    for (machine, profile, var_line) in MACHINES {
        let ours = case(root.path(), &format!("ours-{machine}"), machine);
        let script = run_upload(&ours);
        assert!(
            script.contains(&format!("\n#EDEPLOY_PROFILE = {profile}\n")),
            "{machine}: {script}"
        );
        let var = var_text(&script);
        assert!(var.contains(var_line), "{machine}: {var}");
        let files = results(&ours.join("config"), &ours.join("hw"));
        let hw: Vec<&(String, Vec<u8>)> = files.iter().filter(|f| f.0.starts_with("hw/")).collect();
        assert_eq!(hw.len(), 1, "{machine}: one .hw file");
        // The .hw file is the description the legacy server saved, to the byte.
        let original = fs::read(Path::new(FIXTURES).join("hw").join(format!("{machine}.hw")));
        assert_eq!(hw[0].1, original.unwrap(), "{machine}");

        if !common::oracle::available("hardware.state, hardware.matcher") {
            continue;
        }
        let legacy = case(root.path(), &format!("legacy-{machine}"), machine);
        let status = Command::new("python2.7")
            .env("PYENV_VERSION", "2.7.18")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/legacy_upload.py"))
            .arg(&legacy)
            .status()
            .unwrap();
        assert!(status.success());
        let expected = legacy.join("expected");
        let result: Json =
            serde_json::from_slice(&fs::read(expected.join("result.json")).unwrap()).unwrap();
        assert_eq!(result["outcome"], "match", "{machine}: {result}");
        assert_eq!(result["profile"], profile, "{machine}");
        assert_eq!(Some(var), result["var"].as_str(), "{machine}");
        let legacy_files = results(&expected.join("files/config"), &expected.join("files/hw"));
        let names = |f: &[(String, Vec<u8>)]| f.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&files), names(&legacy_files), "{machine}");
        for ((name, ours), (_, theirs)) in files.iter().zip(&legacy_files) {
            assert!(
                ours == theirs,
                "{machine}: {name} differs from the legacy's"
            );
        }
    }
}

#[test]
fn real_machines_through_apache_get_what_upload_f_gives() {
    if !apache_available() {
        return;
    }
    let apache = Apache::start("event", "cgid");
    apache.set_config(&Path::new(FIXTURES).join("config"));
    let root = tempfile::tempdir().unwrap();
    for (machine, profile, _) in MACHINES {
        // The initrd's root, and its command (HTTP_PATH=/cgi-bin/edeploy/).
        let initrd = root.path().join(format!("initrd-{machine}"));
        fs::create_dir_all(&initrd).unwrap();
        fs::write(initrd.join("hw.json"), hw_json(machine)).unwrap();
        // The initrd's `curl -s -S -F section=SERVER -F file=@/hw.json`,
        // its `/` being `initrd`.
        let out = Command::new("curl")
            .args(["-s", "-S", "-F", "section=SERVER", "-F", "file=@hw.json"])
            .arg(apache.url("upload.py"))
            .current_dir(&initrd)
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8(out.stdout).unwrap();

        // The same request by `upload -f` on a copy of the configuration
        // as it was before (the server's files now hold the machine's entry).
        let alone = case(root.path(), &format!("cli-{machine}"), machine);
        let expected = run_upload(&alone);
        assert!(
            script.contains(&format!("\n#EDEPLOY_PROFILE = {profile}\n")),
            "{machine}: {script}"
        );
        assert_eq!(var_text(&script), var_text(&expected), "{machine}");
        let ours = results(&apache.data("config"), &apache.data("hw"));
        let cli = results(&alone.join("config"), &alone.join("hw"));
        let find = |files: &[(String, Vec<u8>)], name: &str| {
            files.iter().find(|f| f.0 == name).map(|f| f.1.clone())
        };
        for (name, bytes) in &cli {
            if name.starts_with("hw/") || name.contains(&format!("{profile}.cmdb")) {
                assert_eq!(find(&ours, name).as_ref(), Some(bytes), "{machine}: {name}");
            }
        }
    }
}

//! A CMDB served request after request, as in a boot storm, against the
//! legacy (Python 2.7 + `hardware==0.18`, tests/oracle/legacy_upload.py).
//!
//! From the second request on, our server finds its entries in a CMDB it
//! printed itself by searching the text through its layout
//! (`cmdb::Layout`), not by parsing it. The differential test runs one
//! request per case, so it never gets there; this test runs one sequence:
//! new machines given the first unused entry, machines whose MAC an entry
//! already holds (anywhere in the file), machines coming back for their
//! entry, `$$` variables with and without their entry, int values, a
//! failure report. Every answer must be the legacy's, and the state and
//! CMDB files after each request too.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value as Json;

const RACK: usize = 60;
const PINNED: usize = 25;

fn mac(n: usize) -> String {
    format!("52:54:00:00:{:02x}:{:02x}", n / 256, n % 256)
}

/// Where the legacy or ours keeps the shared files: `config` and `hw`.
fn site(root: &Path) -> PathBuf {
    let config = root.join("config");
    fs::create_dir_all(&config).unwrap();
    fs::create_dir_all(root.join("hw")).unwrap();
    fs::write(config.join("state"), "[('rack', 40), ('pinned', '*')]\n").unwrap();
    fs::write(
        config.join("rack.specs"),
        "[('system', 'product', 'vendor', 'QEMU'),\n ('network', '$eth', 'serial', '$mac')]\n",
    )
    .unwrap();
    fs::write(
        config.join("pinned.specs"),
        "[('system', 'product', 'vendor', 'Dell'),\n ('network', '$eth', 'serial', '$$mac')]\n",
    )
    .unwrap();
    for profile in ["rack", "pinned"] {
        fs::write(
            config.join(format!("{profile}.configure")),
            "config('/etc/hostname').write(var['hostname'] + '\\n')\n",
        )
        .unwrap();
    }
    // Entries 0-2 were given before; 10 is used without a machine; 17
    // and 44 are reserved for machines 30 and 31, which come late.
    let rack: Vec<String> = (0..RACK)
        .map(|i| {
            let mut entry = format!("{{'hostname': 'node{i:02}', 'ip': '10.0.0.{i}', 'rack': 3");
            match i {
                0..=2 => entry += &format!(", 'eth': 'eth0', 'mac': '{}', 'used': 1", mac(200 + i)),
                10 => entry += ", 'used': 1",
                17 => entry += &format!(", 'mac': '{}'", mac(30)),
                44 => entry += &format!(", 'mac': '{}'", mac(31)),
                _ => {}
            }
            entry + "}"
        })
        .collect();
    fs::write(
        config.join("rack.cmdb"),
        format!("[{}]\n", rack.join(",\n ")),
    )
    .unwrap();
    // Machines 100 to 124 each have their entry, but for 104.
    let pinned: Vec<String> = (0..PINNED)
        .filter(|&i| i != 4)
        .map(|i| format!("{{'hostname': 'db{i:02}', 'mac': '{}'}}", mac(100 + i)))
        .collect();
    fs::write(
        config.join("pinned.cmdb"),
        format!("[{}]\n", pinned.join(", ")),
    )
    .unwrap();
    config
}

/// One request: a machine (its number) posting its hardware, or a
/// failure report from a machine.
#[derive(Clone, Copy)]
enum Req {
    Machine(usize),
    Failure(usize, &'static str),
}

fn hw(n: usize) -> String {
    let vendor = if (100..200).contains(&n) {
        "Dell"
    } else {
        "QEMU"
    };
    format!(
        "[[\"system\", \"product\", \"vendor\", \"{vendor}\"],\
          [\"system\", \"product\", \"serial\", \"S{n}\"],\
          [\"network\", \"eth0\", \"serial\", \"{}\"]]",
        mac(n)
    )
}

/// The request directories of the sequence under `root`, in order, all
/// sharing `root`'s site.
fn cases(root: &Path, reqs: &[Req]) -> Vec<PathBuf> {
    let config = site(root);
    reqs.iter()
        .enumerate()
        .map(|(k, req)| {
            let case = root.join(format!("req-{k:03}"));
            fs::create_dir_all(case.join("run")).unwrap();
            fs::write(
                case.join("edeploy.conf"),
                format!(
                    "[SERVER]\nCONFIGDIR = {}/\nHWDIR = {}/\nLOCKFILE = {}\n",
                    config.display(),
                    root.join("hw").display(),
                    case.join("run/lock").display()
                ),
            )
            .unwrap();
            let (n, failure) = match *req {
                Req::Machine(n) => (n, Json::Null),
                Req::Failure(n, profile) => (n, Json::from(profile)),
            };
            fs::write(case.join("hw.json"), hw(n)).unwrap();
            let request = serde_json::json!({"hw": "hw.json", "failure": failure});
            fs::write(case.join("request.json"), request.to_string()).unwrap();
            case
        })
        .collect()
}

fn sequence() -> Vec<Req> {
    use Req::{Failure, Machine};
    let mut reqs: Vec<Req> = (0..12).map(Machine).collect();
    reqs.extend([Machine(30), Machine(3), Machine(31), Machine(0)]);
    reqs.extend((100..110).map(Machine));
    reqs.extend([Failure(5, "rack"), Machine(5), Machine(12), Machine(104)]);
    reqs.extend((13..30).map(Machine));
    reqs.extend([Machine(30), Machine(106), Machine(7), Machine(40)]);
    reqs
}

#[test]
fn a_cmdb_served_request_after_request_ends_as_the_legacys() {
    if !common::oracle::available("hardware.state, hardware.matcher, hardware.cmdb") {
        return;
    }
    let reqs = sequence();
    let tmp = tempfile::tempdir().unwrap();
    let legacy_root = tmp.path().join("legacy");
    let ours_root = tmp.path().join("ours");
    let legacy_cases = cases(&legacy_root, &reqs);
    let our_cases = cases(&ours_root, &reqs);

    // The legacy runs the whole sequence in one process, in order; each
    // case keeps its answer and a copy of its own files, and the site's
    // files after each request are kept here.
    let oracle = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/legacy_upload.py");
    let listing: String = legacy_cases
        .iter()
        .map(|c| format!("{}\n", c.display()))
        .collect();
    let list = tmp.path().join("cases");
    fs::write(&list, listing).unwrap();
    let status = Command::new("python2.7")
        .env("PYENV_VERSION", "2.7.18")
        .arg(&oracle)
        .arg("-")
        .stdin(fs::File::open(&list).unwrap())
        .stdout(Stdio::null())
        .status()
        .expect("run legacy_upload.py");
    assert!(status.success());
    let legacy_final = files(&legacy_root.join("config"));

    let mut matched = 0;
    let mut searched = 0;
    for (k, (case, req)) in our_cases.iter().zip(&reqs).enumerate() {
        let layout_before = ours_root.join("config/.rack.cmdb.layout").exists();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_upload"));
        cmd.arg("-f").arg(case.join("hw.json"));
        if let Req::Failure(_, profile) = req {
            cmd.arg("-F").arg(profile);
        }
        let out = cmd
            .env("EDEPLOY_CONF", case.join("edeploy.conf"))
            .env_remove("GATEWAY_INTERFACE")
            .env_remove("REQUEST_METHOD")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let result: Json = serde_json::from_slice(
            &fs::read(legacy_cases[k].join("expected/result.json")).unwrap(),
        )
        .unwrap();
        let field = |name: &str| result[name].as_str().unwrap_or_default().to_owned();
        match field("outcome").as_str() {
            "match" => {
                let profile = field("profile");
                assert!(
                    stdout.contains(&format!("#EDEPLOY_PROFILE = {profile}\n"))
                        && stdout.contains(&format!("var = {}", field("var"))),
                    "request {k}: the legacy gives {profile} with\n{}\nours:\n{stdout}",
                    field("var")
                );
                matched += 1;
                searched += usize::from(layout_before && profile == "rack");
            }
            "error" => assert!(
                out.status.code() == Some(1) && stdout.contains(&field("message")),
                "request {k}: the legacy says {:?}; ours:\n{stdout}",
                field("message")
            ),
            "failure-recorded" => assert!(out.status.success() && out.stdout.is_empty()),
            other => panic!("request {k}: legacy outcome {other}"),
        }
    }
    assert_eq!(files(&ours_root.join("config")), legacy_final);
    // The sequence did what it is for.
    assert!(matched >= 40, "{matched} machines configured");
    assert!(searched >= 30, "{searched} answers found through a layout");
}

/// The state and CMDB files of a configuration directory (the ones both
/// servers write): name -> text.
fn files(config: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = ["state", "rack.cmdb", "pinned.cmdb"]
        .iter()
        .map(|name| {
            let text = fs::read_to_string(config.join(name)).unwrap();
            (name.to_string(), text)
        })
        .collect();
    files.sort();
    files
}

//! The fleet views of `status.py` end to end: machines installed, unmatched,
//! refused and failed through the real `upload.py` and `upload-health.py`
//! of a private Apache (tests/common/apache.rs), then the machines list,
//! a machine's page, the health results and the downloads, as HTML and
//! JSON, their escaping and their refusal of names that are not listed,
//! and the pages rendered by headless Chromium.
//!
//! Fails without `/usr/sbin/apache2` unless `EDEPLOY_SKIP_APACHE=1`, and
//! without `/usr/bin/chromium` unless `EDEPLOY_SKIP_BROWSER=1`. With
//! `EDEPLOY_FLEET_SCREENSHOTS=<dir>` it saves a screenshot of each view
//! there.

mod common;

use std::fs::{self};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::apache::{apache_available, Apache};
use common::chromium;
use serde_json::Value as Json;

const REAL_HW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/real-hw");
const HOSTILE_SERIAL: &str = "<img src=x onerror=alert(1)>";

const COMPUTE_SPECS: &str = "[
    ('system', 'product', 'vendor', 'Supermicro'),
    ('system', 'product', 'name', 'SYS-1029P-WTR'),
    ('system', 'product', 'serial', '$serial'),
    ('memory', 'total', 'size', 'ge(68719476736)'),
    ('disk', '$disk', 'size', 'gt(400)'),
    ('network', '$eth', 'ipv4', 'network(10.0.1.0/24)'),
    ('network', '$eth', 'serial', '$mac'),
]
";

/// A generated server: vendor, product, serial, memory (GiB), disk sizes
/// (GB) and an address on 10.0.1.0/24 for its first NIC.
fn server(vendor: &str, product: &str, serial: &str, i: u8, mem: u64, disks: &[u32]) -> Vec<u8> {
    let mac = |n: u8| format!("0c:c4:7a:{i:02x}:{n:02x}:{:02x}", 0x10 + i);
    let mut items: Vec<[String; 4]> = vec![
        ["system", "product", "vendor", vendor],
        ["system", "product", "name", product],
        ["system", "product", "serial", serial],
        ["cpu", "physical", "number", "2"],
        ["cpu", "logical", "number", "48"],
    ]
    .into_iter()
    .map(|l| l.map(str::to_owned))
    .collect();
    items.push(["memory", "total", "size", &(mem << 30).to_string()].map(str::to_owned));
    for (d, size) in disks.iter().enumerate() {
        let name = format!("sd{}", (b'a' + d as u8) as char);
        items.push(["disk".into(), name, "size".into(), size.to_string()]);
    }
    for n in 0..2u8 {
        let eth = format!("eth{n}");
        items.push(["network".into(), eth.clone(), "serial".into(), mac(n)]);
        let link = if n == 0 { "yes" } else { "no" };
        items.push(["network".into(), eth.clone(), "link".into(), link.into()]);
        if n == 0 {
            let ip = format!("10.0.1.{}", 100 + i);
            items.push(["network".into(), eth, "ipv4".into(), ip]);
        }
    }
    serde_json::to_vec(&items).unwrap()
}

/// Posts a form to `script` of `apache` as the initrd's curl does; returns
/// the body.
fn post(apache: &Apache, script: &str, fields: &[&str], file: &Path) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S"]);
    for f in fields {
        cmd.args(["-F", f]);
    }
    cmd.arg("-F").arg(format!("file=@{}", file.display()));
    let out = cmd.arg(apache.url(script)).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// HTTP status, headers (lower-cased) and body of a GET.
fn fetch(url: &str) -> (u16, String, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "-S", "-i", url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let at = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout[..at]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, head, out.stdout[at + 4..].to_vec())
}

fn page(url: &str) -> (String, String) {
    let (code, head, body) = fetch(url);
    assert_eq!(code, 200, "{url}: {head}{}", String::from_utf8_lossy(&body));
    (head, String::from_utf8(body).unwrap())
}

fn json(url: &str) -> Json {
    let (head, body) = page(url);
    assert!(head.contains("content-type: application/json"), "{head}");
    serde_json::from_str(&body).unwrap()
}

/// A fleet: the two real servers, eight compute nodes installed, three
/// machines no profile accepts, one refused (its serial has no CMDB
/// entry), one that reported a failure and uploaded its log, and health
/// results of three of them.
struct Fleet {
    apache: Apache,
    unmatched: String,
    failed: String,
    hp: String,
    _dir: tempfile::TempDir,
}

fn fleet() -> Fleet {
    let apache = Apache::start("event", "cgid");
    let config = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(Path::new(REAL_HW).join("config")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), config.path().join(entry.file_name())).unwrap();
    }
    fs::write(config.path().join("compute.specs"), COMPUTE_SPECS).unwrap();
    fs::write(
        config.path().join("compute.cmdb"),
        "generate({'hostname': 'compute01-20', 'ip': '10.0.1.11-30', 'gateway': '10.0.1.1'})\n",
    )
    .unwrap();
    fs::write(config.path().join("compute.configure"), "pass\n").unwrap();
    fs::write(
        config.path().join("state"),
        "[('hp', 2), ('dell', '*'), ('compute', 20)]\n",
    )
    .unwrap();
    apache.set_config(config.path());

    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, data: &[u8]| {
        let path = dir.path().join(name);
        fs::write(&path, data).unwrap();
        path
    };
    for real in ["hp-proliant-dl360p-gen8.hw", "dell-poweredge-m520.hw"] {
        let path = Path::new(REAL_HW).join("hw").join(real);
        let answer = post(&apache, "upload.py", &["section=SERVER"], &path);
        assert!(answer.contains("var = "), "{real}: {answer}");
    }
    for i in 0..8 {
        let hw = server(
            "Supermicro",
            "SYS-1029P-WTR",
            &format!("S{i:04}"),
            i,
            256,
            &[480, 480],
        );
        let answer = post(
            &apache,
            "upload.py",
            &["section=SERVER"],
            &file("hw.json", &hw),
        );
        assert!(answer.contains("compute"), "{answer}");
    }
    // Too little memory, a small disk, another vendor (hostile serial).
    let unmatched = [
        server("Supermicro", "SYS-1029P-WTR", "S0100", 100, 32, &[480]),
        server("Supermicro", "SYS-1029P-WTR", "S0101", 101, 128, &[240]),
        server(
            "Lenovo",
            "ThinkSystem SR630",
            HOSTILE_SERIAL,
            102,
            192,
            &[960],
        ),
    ];
    for hw in &unmatched {
        let answer = post(&apache, "upload.py", &[], &file("hw.json", hw));
        assert!(answer.contains("Unable to match"), "{answer}");
    }
    // A Dell whose serial has no CMDB entry.
    let dell = fs::read_to_string(Path::new(REAL_HW).join("hw/dell-poweredge-m520.hw")).unwrap();
    let other = dell.replace("9K9PW02", "9K9ZZ99");
    let answer = post(
        &apache,
        "upload.py",
        &[],
        &file("dell.hw", other.as_bytes()),
    );
    assert!(answer.contains("CMDB"), "{answer}");
    // An installed node that fails, and sends its log.
    let failing = server("Supermicro", "SYS-1029P-WTR", "S0200", 50, 256, &[960]);
    let answer = post(&apache, "upload.py", &[], &file("hw.json", &failing));
    assert!(answer.contains("compute"), "{answer}");
    post(
        &apache,
        "upload.py",
        &["failure=compute"],
        &file("hw.json", &failing),
    );
    let failed = sysname(&apache, "S0200");
    let log = file(&format!("{failed}.log.gz"), b"\x1f\x8bfake log");
    post(&apache, "upload.py", &[], &log);
    // Health results of three nodes.
    for i in 0..3 {
        let hw = server(
            "Supermicro",
            "SYS-1029P-WTR",
            &format!("S{i:04}"),
            i,
            256,
            &[480, 480],
        );
        post(
            &apache,
            "upload-health.py",
            &["session=burnin"],
            &file("health.py", &hw),
        );
    }
    let unmatched = sysname(&apache, "S0100");
    let hp = sysname(&apache, "CZ3323FDVK");
    Fleet {
        apache,
        unmatched,
        failed,
        hp,
        _dir: dir,
    }
}

/// The name of the `.hw` file of HWDIR holding `serial`, without `.hw`.
fn sysname(apache: &Apache, serial: &str) -> String {
    fs::read_dir(apache.data("hw"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.contains(serial) && n.ends_with(".hw"))
        .unwrap_or_else(|| panic!("no .hw file for {serial}"))
        .trim_end_matches(".hw")
        .to_owned()
}

#[test]
fn fleet_views_through_apache_and_chromium() {
    if !apache_available() {
        return;
    }
    let f = fleet();
    let url = f.apache.url("status.py");

    // The machines view, as JSON: every machine once, newest first.
    let j = json(&format!("{url}?view=machines&format=json"));
    assert_eq!(j["total"], 15, "{j:#}");
    assert_eq!(j["standings"]["installed"], 10, "{:#}", j["standings"]);
    assert_eq!(j["standings"]["unmatched"], 3);
    assert_eq!(j["standings"]["refused"], 1);
    assert_eq!(j["standings"]["failed"], 1);
    let rows = j["machines"].as_array().unwrap();
    assert_eq!(rows.len(), 15);
    let seen: Vec<&str> = rows
        .iter()
        .map(|r| r["last_seen"].as_str().unwrap())
        .collect();
    assert!(seen.windows(2).all(|w| w[0] >= w[1]), "{seen:?}");
    let hp = rows.iter().find(|r| r["sysname"] == f.hp).unwrap();
    assert_eq!(hp["installed"]["profile"], "hp");
    assert_eq!(hp["installed"]["hostname"], "hp-2");
    // Its detection sent no memory total; the Dell's did.
    assert_eq!(hp["hardware"]["memory"], Json::Null);
    let dell = rows
        .iter()
        .find(|r| r["installed"]["profile"] == "dell")
        .unwrap();
    assert_eq!(dell["hardware"]["memory"], 137438953472u64);
    assert_eq!(hp["hardware"]["cpus"], "2");
    assert_eq!(hp["hardware"]["disks"].as_array().unwrap().len(), 6);
    assert_eq!(hp["hardware"]["nics"][0]["mac"], "d8:9d:67:1a:d0:fc");
    assert_eq!(hp["hardware"]["nics"][0]["link"], "yes");

    // Filters: standing, profile, search by MAC, serial, hostname, IP.
    let count = |q: &str| json(&format!("{url}?view=machines&format=json&{q}"))["matching"].clone();
    assert_eq!(count("standing=unmatched"), 3);
    assert_eq!(count("profile=compute"), 9);
    assert_eq!(count("profile=dell"), 1);
    assert_eq!(count("q=d8%3A9D%3A67%3A1a%3Ad0%3Afd"), 1);
    assert_eq!(count("q=CZ3323FDVK"), 1);
    assert_eq!(count("q=compute03"), 1);
    assert_eq!(count("q=10.142.32.203"), 1);
    assert_eq!(count("q=nothing-like-it"), 0);

    // The HTML: unmatched and failed rows stand out, values escaped, the
    // same policy as the status page (forms only to the page itself).
    let (head, html) = page(&format!("{url}?view=machines"));
    assert!(
        head.contains(
            "content-security-policy: default-src 'none'; style-src 'unsafe-inline'; \
             base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        ),
        "{head}"
    );
    assert_eq!(html.matches("<tr class=\"st-unmatched\">").count(), 3);
    assert_eq!(html.matches("<tr class=\"st-failed\">").count(), 1);
    assert_eq!(html.matches("<tr class=\"st-refused\">").count(), 1);
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    assert!(!html.contains(HOSTILE_SERIAL));

    // An unmatched machine's page says why, profile by profile.
    let (_, html) = page(&format!("{url}?view=machine&name={}", f.unmatched));
    assert!(html.contains("Why each profile matches or not"), "{html}");
    assert!(html.contains("profile compute (count "), "{html}");
    assert!(
        html.contains("field 4 &#39;34359738368&#39; fails ge(68719476736)"),
        "{html}"
    );
    let j = json(&format!(
        "{url}?view=machine&name={}&format=json",
        f.unmatched
    ));
    assert_eq!(j["machine"]["standing"], "unmatched");
    let last = &j["history"][0]["decision"];
    assert_eq!(last["kind"], "no_match", "{j:#}");
    let tried: Vec<&str> = last["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["profile"].as_str().unwrap())
        .collect();
    assert_eq!(tried, ["hp", "dell", "compute"]);
    assert_eq!(last["profiles"][2]["spec"], 4);

    // The failed machine: its history, its log, downloadable.
    let j = json(&format!("{url}?view=machine&name={}&format=json", f.failed));
    let kinds: Vec<&str> = j["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["decision"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["log_stored", "failure_report", "configured"]);
    let log_name = format!("{}.log.gz", f.failed);
    assert_eq!(j["logs"][0]["name"], log_name);
    let (code, head, body) = fetch(&format!("{url}?view=log&name={log_name}"));
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("content-type: application/gzip"), "{head}");
    assert!(
        head.contains(&format!(
            "content-disposition: attachment; filename=\"{}\"",
            log_name.to_ascii_lowercase()
        )),
        "{head}"
    );
    assert_eq!(body, b"\x1f\x8bfake log");

    // Health results: the session and its machines; a result is served.
    let j = json(&format!("{url}?view=health&format=json"));
    let session = &j["sessions"][0];
    assert_eq!(session["name"], "burnin");
    assert_eq!(session["machines"], 3);
    let path = session["runs"][0]["results"][0]["path"].as_str().unwrap();
    let (code, head, body) = fetch(&format!("{url}?view=health-result&path={path}"));
    assert_eq!(code, 200, "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("('system', 'product', 'vendor', 'Supermicro')")
    );
    let j = json(&format!(
        "{url}?view=machine&name={}&format=json",
        sysname(&f.apache, "S0000")
    ));
    assert_eq!(j["health"][0]["session"], "burnin");

    // Names not listed are not found, whatever they point to.
    for q in [
        "view=machine&name=..%2F..%2F..%2Fetc%2Fpasswd",
        "view=machine&name=",
        "view=log&name=..%2Fconfig%2Fstate",
        "view=log&name=%2Fetc%2Fpasswd",
        &format!("view=log&name={}.hw", f.failed),
        "view=health-result&path=..%2F..%2Fetc%2Fpasswd",
        "view=health-result&path=burnin%2F..%2F..%2Fconfig%2Fstate",
        "view=machines&section=nope",
        "view=nope",
    ] {
        let (code, _, body) = fetch(&format!("{url}?{q}"));
        assert_eq!(code, 404, "{q}: {}", String::from_utf8_lossy(&body));
    }

    if !chromium::available() {
        return;
    }
    let dom = chromium::run(&format!("{url}?view=machines"), &["--dump-dom"]);
    assert!(dom.contains("<h1>Machines</h1>"), "{dom}");
    assert!(!dom.contains("<img"), "an element was injected:\n{dom}");
    let shots = std::env::var_os("EDEPLOY_FLEET_SCREENSHOTS").map(PathBuf::from);
    let views = [
        ("machines", "?view=machines".to_owned()),
        (
            "machines-unmatched",
            "?view=machines&standing=unmatched".to_owned(),
        ),
        (
            "machine-unmatched",
            format!("?view=machine&name={}", f.unmatched),
        ),
        ("machine-failed", format!("?view=machine&name={}", f.failed)),
        ("machine-hp", format!("?view=machine&name={}", f.hp)),
        ("health", "?view=health".to_owned()),
    ];
    for (name, q) in views {
        let dom = chromium::run(&format!("{url}{q}"), &["--dump-dom"]);
        assert!(dom.contains("<nav>"), "{name}: {dom}");
        if let Some(dir) = &shots {
            fs::create_dir_all(dir).unwrap();
            let png = dir.join(format!("{name}.png"));
            chromium::run(
                &format!("{url}{q}"),
                &[
                    &format!("--screenshot={}", png.display()),
                    "--window-size=1400,1000",
                ],
            );
            assert!(fs::metadata(&png).unwrap().len() > 0);
        }
    }
    let log = f.apache.read_log("error.log");
    assert!(!log.contains("panicked"), "{log}");
}

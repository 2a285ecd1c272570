//! Hostile requests against the two CGI binaries, run directly as CGI
//! processes (CGI variables set, body piped on stdin; no web server).
//!
//! Every case must end with a clear answer — an error script with a
//! meaningful status, or a safe result — a clean exit, no panic, one log line
//! per event on stderr, and nothing written outside the configured
//! directories (a sentinel directory next to them must stay empty).
//!
//! The `upload_*` tests drive the lead's `upload` binary through the CGI
//! contract of COMMON.md; the `health_*` tests drive `upload-health`.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use edeploy::config::DEFAULT_JOURNAL_NAME;
use edeploy::{hw, literal};

const UPLOAD: &str = env!("CARGO_BIN_EXE_upload");
const HEALTH: &str = env!("CARGO_BIN_EXE_upload-health");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apache");
const MAX_HW: u64 = 100_000;
const MAX_LOG: u64 = 1_000_000;
const REMOTE: &str = "198.51.100.9";

/// A server installation in a temporary directory: `data/` holds every
/// configured directory, `outside/` must stay empty.
struct Site {
    dir: tempfile::TempDir,
    conf: PathBuf,
    /// Put first in PATH: a fake `pxemngr`, with USEPXEMNGR on.
    bin: Option<tempfile::TempDir>,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [
            "data/config",
            "data/hw",
            "data/logs",
            "data/health",
            "data/lock",
            "outside",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["state", "vm.specs", "vm.configure"] {
            fs::copy(
                Path::new(FIXTURES).join("config").join(f),
                root.join("data/config").join(f),
            )
            .unwrap();
        }
        let conf = root.join("edeploy.conf");
        let d = root.join("data");
        fs::write(
            &conf,
            format!(
                "[SERVER]\nCONFIGDIR={0}/config/\nHWDIR={0}/hw/\nLOGDIR={0}/logs/\n\
                 HEALTHDIR={0}/health/\nLOCKFILE={0}/lock/edeploy.lock\nUSEPXEMNGR=False\n\
                 MAXHWSIZE={MAX_HW}\nMAXLOGSIZE={MAX_LOG}\n",
                d.display()
            ),
        )
        .unwrap();
        Site {
            dir,
            conf,
            bin: None,
        }
    }

    /// Turns USEPXEMNGR on, with a fake `pxemngr` running `body` (a shell
    /// script; `$0` is in a directory of its own, outside the site).
    fn with_pxemngr(mut self, body: &str) -> Site {
        use std::os::unix::fs::PermissionsExt;
        let bin = tempfile::tempdir().unwrap();
        let fake = bin.path().join("pxemngr");
        fs::write(&fake, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        let conf = fs::read_to_string(&self.conf).unwrap();
        fs::write(
            &self.conf,
            conf.replace("USEPXEMNGR=False", "USEPXEMNGR=True"),
        )
        .unwrap();
        self.bin = Some(bin);
        self
    }

    /// A file next to the fake `pxemngr`.
    fn bin_file(&self, name: &str) -> PathBuf {
        self.bin.as_ref().unwrap().path().join(name)
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Every regular file under `sub`, relative to it, but the journal.
    fn files(&self, sub: &str) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                // The server's own, not named by a request (see
                // `journal_is_whole_lines`).
                if p.file_name() == Some(DEFAULT_JOURNAL_NAME.as_ref()) {
                    continue;
                }
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.path(sub), &self.path(sub), &mut out);
        out.sort();
        out
    }

    /// The decisions journal in LOGDIR: every line a whole record, whatever
    /// the requests sent.
    fn journal_is_whole_lines(&self) {
        let text = fs::read_to_string(self.path("data/logs").join(DEFAULT_JOURNAL_NAME)).unwrap();
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            let record: Result<edeploy::journal::Record, _> = serde_json::from_str(line);
            assert!(record.is_ok(), "{line}");
        }
    }

    /// Nothing outside `data/` but our own configuration; `outside/` empty.
    fn assert_contained(&self) {
        assert_eq!(self.files("outside"), Vec::<String>::new());
        let mut top: Vec<String> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        top.sort();
        assert_eq!(top, ["data", "edeploy.conf", "outside"]);
        let mut data: Vec<String> = fs::read_dir(self.path("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        data.sort();
        assert_eq!(data, ["config", "health", "hw", "lock", "logs"]);
    }
}

/// A request body: bytes, or a generated stream of `total` bytes (a prefix
/// then filler) that never exists in memory.
enum Body {
    Bytes(Vec<u8>),
    Stream { prefix: Vec<u8>, total: u64 },
}

struct Outcome {
    exit: ExitStatus,
    status: u16,
    head: String,
    body: Vec<u8>,
    stderr: String,
    /// Bytes of the body the process accepted before closing stdin.
    written: u64,
    elapsed: Duration,
}

impl Outcome {
    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A clean answer: exit 0, our content type, no panic, at least one log
    /// line naming the client.
    #[track_caller]
    fn assert_clean(&self) {
        assert!(self.exit.success(), "{:?}\n{}", self.exit, self.stderr);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        assert!(
            self.head.contains("Content-Type: text/x-python"),
            "{}",
            self.head
        );
        assert!(
            self.stderr
                .lines()
                .any(|l| l.contains(&format!("[client {REMOTE}]"))),
            "{}",
            self.stderr
        );
        for line in self.stderr.lines() {
            assert!(line.starts_with('['), "not a log line: {line:?}");
        }
    }

    /// A clean refusal with `status` and an error script as body.
    #[track_caller]
    fn assert_refused(&self, status: u16) {
        self.assert_clean();
        assert_eq!(self.status, status, "{}{}", self.head, self.body_text());
        let body = self.body_text();
        assert!(
            body.starts_with("#!/bin/sh\n") && body.contains("\nexit 1\n"),
            "{body}"
        );
    }
}

/// Runs `bin` as a CGI with `vars` (on top of the basic CGI variables) and
/// `body` on stdin, under a 256 MiB address-space limit, for at most 60 s.
fn run_cgi(bin: &str, site: &Site, vars: &[(&str, &str)], body: Body) -> Outcome {
    let start = Instant::now();
    let path = match &site.bin {
        Some(dir) => format!("{}:/usr/bin:/bin", dir.path().display()),
        None => "/usr/bin:/bin".to_owned(),
    };
    let mut err_file = tempfile::tempfile().unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -v 262144 && exec \"$0\"", bin])
        .env_clear()
        .env("PATH", path)
        .env("EDEPLOY_CONF", &site.conf)
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REMOTE_ADDR", REMOTE)
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // A file, as mod_cgid gives: the lines are then complete (see
        // `edeploy::cgi::LogTarget`).
        .stderr(err_file.try_clone().unwrap())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = thread::spawn(move || {
        let mut written = 0u64;
        match body {
            Body::Bytes(b) => {
                if stdin.write_all(&b).is_ok() {
                    written = b.len() as u64;
                }
            }
            Body::Stream { prefix, total } => {
                if stdin.write_all(&prefix).is_err() {
                    return 0;
                }
                written = prefix.len() as u64;
                let chunk = vec![b'x'; 64 * 1024];
                while written < total {
                    let n = chunk.len().min((total - written) as usize);
                    if stdin.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    written += n as u64;
                }
            }
        }
        written
    });
    let mut stdout = child.stdout.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let deadline = start + Duration::from_secs(60);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{bin} still running after 60 s");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let written = writer.join().unwrap();
    let out = out_reader.join().unwrap();
    let mut stderr = String::new();
    err_file.seek(SeekFrom::Start(0)).unwrap();
    err_file.read_to_string(&mut stderr).unwrap();
    let split = out
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or_else(|| {
            panic!(
                "no CGI header in {:?}\n{stderr}",
                String::from_utf8_lossy(&out)
            )
        });
    let head = String::from_utf8_lossy(&out[..split + 1]).into_owned();
    let status = head
        .lines()
        .find_map(|l| l.strip_prefix("Status: "))
        .map(|s| s[..3].parse().unwrap())
        .unwrap_or(200);
    Outcome {
        exit,
        status,
        head,
        body: out[split + 2..].to_vec(),
        stderr,
        written,
        elapsed,
    }
}

const BOUNDARY: &str = "------------------------7af6a1c71b685c87";

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// One form field: name, file name (for a file), value.
type Part<'a> = (&'a str, Option<&'a [u8]>, &'a [u8]);

/// A multipart body as curl builds it.
fn form(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, value) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        body.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(f) = filename {
            body.extend_from_slice(b"; filename=\"");
            body.extend_from_slice(f);
            body.extend_from_slice(b"\"\r\nContent-Type: application/octet-stream");
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn post(bin: &str, site: &Site, body: Vec<u8>) -> Outcome {
    let len = body.len().to_string();
    run_cgi(
        bin,
        site,
        &[
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_TYPE", &multipart_type()),
            ("CONTENT_LENGTH", &len),
        ],
        Body::Bytes(body),
    )
}

fn hw_json() -> Vec<u8> {
    fs::read(Path::new(FIXTURES).join("hw.json")).unwrap()
}

/// The protocol-level cases, the same for both binaries.
fn protocol_cases(bin: &str) {
    let site = Site::new();
    let good = form(&[
        ("section", None, b"SERVER"),
        ("file", Some(b"hw.json"), &hw_json()),
    ]);
    let good_len = good.len().to_string();
    let ct = multipart_type();

    for method in ["PUT", "DELETE", "PATCH"] {
        let o = run_cgi(
            bin,
            &site,
            &[
                ("REQUEST_METHOD", method),
                ("CONTENT_TYPE", &ct),
                ("CONTENT_LENGTH", &good_len),
            ],
            Body::Bytes(good.clone()),
        );
        o.assert_refused(405);
        assert!(o.head.contains("Allow: GET, HEAD, POST"), "{}", o.head);
    }

    // Missing, non-numeric, too long and too short CONTENT_LENGTH.
    let o = run_cgi(
        bin,
        &site,
        &[("REQUEST_METHOD", "POST"), ("CONTENT_TYPE", &ct)],
        Body::Bytes(good.clone()),
    );
    o.assert_refused(411);
    for (len, status) in [("12abc", 400), ("-5", 400)] {
        let o = run_cgi(
            bin,
            &site,
            &[
                ("REQUEST_METHOD", "POST"),
                ("CONTENT_TYPE", &ct),
                ("CONTENT_LENGTH", len),
            ],
            Body::Bytes(good.clone()),
        );
        o.assert_refused(status);
    }
    let long = (good.len() + 100).to_string();
    let o = run_cgi(
        bin,
        &site,
        &[
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_TYPE", &ct),
            ("CONTENT_LENGTH", &long),
        ],
        Body::Bytes(good.clone()),
    );
    o.assert_refused(400);
    assert!(o.body_text().contains("truncated"), "{}", o.body_text());
    let short = (good.len() - 30).to_string();
    let o = run_cgi(
        bin,
        &site,
        &[
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_TYPE", &ct),
            ("CONTENT_LENGTH", &short),
        ],
        Body::Bytes(good.clone()),
    );
    o.assert_refused(400);

    // Wrong content types, missing boundary.
    for (t, status) in [
        ("text/plain", 415),
        ("application/json", 415),
        ("multipart/form-data", 400),
        ("multipart/form-data; boundary=", 400),
    ] {
        let o = run_cgi(
            bin,
            &site,
            &[
                ("REQUEST_METHOD", "POST"),
                ("CONTENT_TYPE", t),
                ("CONTENT_LENGTH", &good_len),
            ],
            Body::Bytes(good.clone()),
        );
        o.assert_refused(status);
    }

    // Truncated multipart (CONTENT_LENGTH matching the cut body).
    for cut in [5, 40, good.len() / 2] {
        post(bin, &site, good[..good.len() - cut].to_vec()).assert_refused(400);
    }

    // Non-UTF-8 in a file name and in text fields.
    for body in [
        form(&[("file", Some(b"hw\xff.json"), &hw_json())]),
        form(&[
            ("section", None, b"SER\xffVER"),
            ("file", Some(b"hw.json"), &hw_json()),
        ]),
        form(&[
            ("failure", None, b"\xc3\x28"),
            ("file", Some(b"hw.json"), &hw_json()),
        ]),
        form(&[
            ("session", None, b"\xfe"),
            ("file", Some(b"hw.json"), &hw_json()),
        ]),
    ] {
        post(bin, &site, body).assert_refused(400);
    }

    // Oversized fields.
    let big_section = vec![b'S'; 5000];
    post(
        bin,
        &site,
        form(&[
            ("section", None, &big_section),
            ("file", Some(b"hw.json"), &hw_json()),
        ]),
    )
    .assert_refused(413);
    let big_hw = vec![b' '; MAX_HW as usize + 1];
    post(bin, &site, form(&[("file", Some(b"hw.json"), &big_hw)])).assert_refused(413);
    let big_log = vec![0u8; MAX_LOG as usize + 1];
    post(bin, &site, form(&[("file", Some(b"x.log.gz"), &big_log)])).assert_refused(413);

    // A GET: no file, status 200, the legacy message.
    let o = run_cgi(
        bin,
        &site,
        &[("REQUEST_METHOD", "GET"), ("QUERY_STRING", "")],
        Body::Bytes(vec![]),
    );
    o.assert_refused(200);
    assert!(
        o.body_text().contains("No file passed to the CGI"),
        "{}",
        o.body_text()
    );

    site.assert_contained();
    assert_eq!(site.files("data/hw"), Vec::<String>::new());
    assert_eq!(site.files("data/logs"), Vec::<String>::new());
    assert_eq!(site.files("data/health"), Vec::<String>::new());
}

/// Huge uploads: refused quickly, without reading the body (or at most what
/// a valid request could be), in bounded memory (the 256 MiB address-space
/// limit would kill a process buffering a gigabyte).
fn huge_cases(bin: &str) {
    const GIB: u64 = 1 << 30;
    let site = Site::new();
    let ct = multipart_type();
    let prefix = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"hw.json\"\r\n\r\n"
    )
    .into_bytes();

    // An honest CONTENT_LENGTH of 1 GiB: refused before reading.
    let o = run_cgi(
        bin,
        &site,
        &[
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_TYPE", &ct),
            ("CONTENT_LENGTH", &GIB.to_string()),
        ],
        Body::Stream {
            prefix: prefix.clone(),
            total: GIB,
        },
    );
    o.assert_refused(413);
    assert!(o.written < 4 << 20, "wrote {}", o.written);
    assert!(o.elapsed < Duration::from_secs(20), "{:?}", o.elapsed);

    // No CONTENT_LENGTH and a 1 GiB stream: refused before reading.
    let o = run_cgi(
        bin,
        &site,
        &[("REQUEST_METHOD", "POST"), ("CONTENT_TYPE", &ct)],
        Body::Stream {
            prefix: prefix.clone(),
            total: GIB,
        },
    );
    o.assert_refused(411);
    assert!(o.written < 4 << 20, "wrote {}", o.written);

    // An acceptable CONTENT_LENGTH but a hardware file over MAXHWSIZE, in a
    // 1 GiB stream: parsing stops at the limit; the rest of the announced
    // body is discarded, never more.
    let announced = MAX_LOG;
    let o = run_cgi(
        bin,
        &site,
        &[
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_TYPE", &ct),
            ("CONTENT_LENGTH", &announced.to_string()),
        ],
        Body::Stream {
            prefix: prefix.clone(),
            total: GIB,
        },
    );
    o.assert_refused(413);
    assert!(o.written < announced + (4 << 20), "wrote {}", o.written);
    assert!(o.elapsed < Duration::from_secs(20), "{:?}", o.elapsed);

    // CONTENT_LENGTH lying low under a 1 GiB stream: only that much is read.
    let o = run_cgi(
        bin,
        &site,
        &[
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_TYPE", &ct),
            ("CONTENT_LENGTH", "1000"),
        ],
        Body::Stream { prefix, total: GIB },
    );
    o.assert_refused(400);
    assert!(o.written < 4 << 20, "wrote {}", o.written);

    site.assert_contained();
}

/// Hardware lines whose strings carry shell metacharacters, quotes and
/// newlines, as a hostile DMI or NIC could report them.
fn hostile_items(mac: &str) -> Vec<[&str; 4]> {
    vec![
        [
            "system",
            "product",
            "vendor",
            "$(touch ../../outside/pwned)",
        ],
        ["system", "product", "name", "a;b|c&d`id` >x"],
        ["system", "product", "serial", "it's \"quoted\"\nnew\\line"],
        ["network", "eth0", "serial", mac],
        ["disk", "vda", "size", "20"],
        ["bios", "vendor", "$(reboot)", "'; rm -rf / #"],
    ]
}

fn items_json(items: &[[&str; 4]]) -> Vec<u8> {
    serde_json::to_vec(items).unwrap()
}

#[test]
fn health_protocol() {
    protocol_cases(HEALTH);
}

#[test]
fn health_huge_uploads() {
    huge_cases(HEALTH);
}

#[test]
fn health_paths_from_the_network() {
    let site = Site::new();
    let hw = hw_json();

    // Sessions: reduced to their base name, `..` and control characters refused.
    for (session, status) in [
        ("../../outside", 200),
        ("..", 400),
        ("a\nb", 400),
        ("/", 200),
    ] {
        let o = post(
            HEALTH,
            &site,
            form(&[
                ("session", None, session.as_bytes()),
                ("file", Some(b"hw.json"), &hw),
            ]),
        );
        if status == 200 {
            o.assert_clean();
            assert_eq!(o.status, 200, "{session:?}: {}", o.body_text());
            assert_eq!(o.body, b"");
        } else {
            o.assert_refused(status);
        }
    }
    let files = site.files("data/health");
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("outside/")), "{files:?}");
    assert!(files.iter().any(|f| !f.contains("outside")), "{files:?}");

    // Log file names: reduced to their base name, never leaving LOGDIR.
    for name in ["../../outside/evil.log.gz", "/etc/cron.d/evil.log.gz"] {
        let o = post(
            HEALTH,
            &site,
            form(&[("file", Some(name.as_bytes()), b"gz")]),
        );
        o.assert_clean();
        assert_eq!(o.status, 200, "{}", o.body_text());
    }
    // Both reduce to evil.log.gz: the second upload rotated the first.
    let logs = site.files("data/logs");
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert_eq!(logs[1], "evil.log.gz");
    assert!(
        logs[0].starts_with("evil.") && logs[0].len() == "evil.20240102030405.log.gz".len(),
        "{logs:?}"
    );
    for name in ["...log.gz/..", "..", "\x01.log.gz"] {
        let o = post(
            HEALTH,
            &site,
            form(&[("file", Some(name.as_bytes()), b"gz")]),
        );
        o.assert_refused(400);
    }
    // A .log.gz name that cannot be a file name: refused alike by upload.py.
    let o = post(
        UPLOAD,
        &site,
        form(&[("file", Some(b"\x01.log.gz"), b"gz")]),
    );
    o.assert_refused(400);
    site.assert_contained();
}

#[test]
fn health_hostile_hardware_strings() {
    let site = Site::new();
    // A MAC without '/': stored under an odd but plain file name, never run.
    let items = hostile_items("52:54:00:$(reboot);`x`:01");
    let data = items_json(&items);
    let o = post(HEALTH, &site, form(&[("file", Some(b"hw.json"), &data)]));
    o.assert_clean();
    assert_eq!(o.status, 200, "{}", o.body_text());
    let files = site.files("data/health");
    assert_eq!(files.len(), 1, "{files:?}");
    let parsed = hw::parse_hw(Path::new("hw.json"), &data).unwrap();
    let (sysname, _) = hw::sysname_and_macs(&parsed);
    assert!(
        files[0].ends_with(&format!("/{sysname}.hw")),
        "{files:?} {sysname}"
    );
    // The file is the pprint of the items, and reads back to them.
    let saved = fs::read(site.path("data/health").join(&files[0])).unwrap();
    assert_eq!(saved, literal::pformat(&hw::items_value(&parsed)));
    assert_eq!(hw::parse_hw(Path::new("saved.hw"), &saved).unwrap(), parsed);

    // A MAC with '/': the system name would be a path; refused.
    let data = items_json(&hostile_items("../../../outside/x"));
    let o = post(HEALTH, &site, form(&[("file", Some(b"hw.json"), &data)]));
    o.assert_refused(400);
    assert_eq!(site.files("data/health").len(), 1);

    // Invalid hardware files, including non-UTF-8 bytes inside strings.
    for bad in [
        &b"not json at all"[..],
        b"[[\"a\", \"b\"]]",
        b"[[\"system\", \"product\", \"name\", \"\xff\xfe\"]]",
        b"",
        b"[(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((]",
    ] {
        let o = post(HEALTH, &site, form(&[("file", Some(b"hw.json"), bad)]));
        o.assert_clean();
        if o.status == 200 {
            // Accepted after ASCII reduction: what was saved is ASCII.
            let files = site.files("data/health");
            for f in &files {
                assert!(fs::read(site.path("data/health").join(f))
                    .unwrap()
                    .is_ascii());
            }
        } else {
            o.assert_refused(400);
            assert!(
                o.body_text().contains("Invalid hardware file"),
                "{}",
                o.body_text()
            );
        }
    }
    assert!(!site.path("outside/pwned").exists());
    site.assert_contained();
}

#[test]
fn upload_protocol() {
    protocol_cases(UPLOAD);
}

#[test]
fn upload_huge_uploads() {
    huge_cases(UPLOAD);
}

#[test]
fn upload_hostile_fields_and_strings() {
    let site = Site::new();
    // Unknown or climbing sections: an error script, run by the initrd (200).
    for section in ["../SERVER", "NOPE", "SERVER]\n[x", "'; rm -rf / #"] {
        let o = post(
            UPLOAD,
            &site,
            form(&[
                ("section", None, section.as_bytes()),
                ("file", Some(b"hw.json"), &hw_json()),
            ]),
        );
        o.assert_refused(200);
    }
    // Log names from the network stay in LOGDIR.
    let o = post(
        UPLOAD,
        &site,
        form(&[("file", Some(b"../../outside/evil.log.gz"), b"gz")]),
    );
    o.assert_clean();
    assert_eq!(o.status, 200, "{}", o.body_text());
    assert_eq!(site.files("data/logs"), ["evil.log.gz"]);
    site.journal_is_whole_lines();
    // Hostile hardware strings: a configure script or an error script,
    // never a file outside HWDIR.
    for mac in ["52:54:00:$(reboot);`x`:01", "../../../outside/x"] {
        let data = items_json(&hostile_items(mac));
        let o = post(UPLOAD, &site, form(&[("file", Some(b"hw.json"), &data)]));
        o.assert_clean();
        assert_eq!(o.status, 200, "{}", o.body_text());
        let body = o.body_text();
        assert!(
            body.starts_with("#!/usr/bin/env python\n") || body.starts_with("#!/bin/sh\n"),
            "{body}"
        );
    }
    // A failure report with quotes and newlines in the profile: nothing to run.
    let o = post(
        UPLOAD,
        &site,
        form(&[
            ("failure", None, b"vm'\n\"x"),
            ("file", Some(b"hw.json"), &hw_json()),
        ]),
    );
    o.assert_clean();
    assert_eq!(o.status, 200);
    assert!(!site.path("outside/pwned").exists());
    site.assert_contained();
}

/// Whether process `pid` (as written by `echo $!`) is gone or a zombie,
/// waiting up to 2 s for it.
fn gone(pid: &str) -> bool {
    let stat = format!("/proc/{}/stat", pid.trim());
    for _ in 0..200 {
        match fs::read_to_string(&stat) {
            Err(_) => return true,
            Ok(s)
                if s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                return true
            }
            Ok(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
    false
}

/// A site whose only profile takes any machine with a MAC address, as
/// often as needed, with pxemngr faked by `body`.
fn pxemngr_site(body: &str) -> Site {
    let site = Site::new().with_pxemngr(body);
    let config = site.path("data/config");
    fs::write(config.join("state"), "[('vm', '*')]\n").unwrap();
    fs::write(
        config.join("vm.specs"),
        "[('network', '$eth', 'serial', '$mac')]\n",
    )
    .unwrap();
    site
}

/// Provisions a machine described by `items` and checks that it got its
/// configure script.
#[track_caller]
fn provision_ok(site: &Site, items: &[[&str; 4]]) -> Outcome {
    let o = post(
        UPLOAD,
        site,
        form(&[("file", Some(b"hw.json"), &items_json(items))]),
    );
    o.assert_clean();
    assert_eq!(o.status, 200);
    assert!(
        o.body_text().starts_with("#!/usr/bin/env python\n"),
        "{}\n{}",
        o.body_text(),
        o.stderr
    );
    o
}

/// The warnings the request logged.
fn warnings(o: &Outcome) -> Vec<&str> {
    o.stderr.lines().filter(|l| l.contains(":warn]")).collect()
}

#[test]
fn upload_pxemngr_never_gets_options() {
    // One line per call: its arguments, bracketed.
    let site = pxemngr_site("{ printf 'call'; printf ' [%s]' \"$@\"; echo; } >> \"$0.calls\"");
    let calls = site.bin_file("pxemngr.calls");

    // Only a MAC-like option: it would be the system name and a MAC.
    let o = provision_ok(&site, &[["network", "eth0", "serial", "--settings=/tmp/x"]]);
    assert!(!calls.exists(), "{}", fs::read_to_string(&calls).unwrap());
    let w = warnings(&o);
    assert_eq!(w.len(), 1, "{}", o.stderr);
    assert!(
        w[0].ends_with(
            "pxemngr: machine not registered: system name \"--settings=/tmp/x\" \
             starts with '-' (an option)"
        ),
        "{}",
        w[0]
    );

    // A real name and MAC: registered, without the option-like MAC.
    let o = provision_ok(
        &site,
        &[
            ["system", "product", "name", "vm"],
            ["network", "eth0", "serial", "52:54:00:12:34:56"],
            ["network", "eth1", "serial", "--settings=/tmp/x"],
            ["network", "eth2", "serial", "-rf /:/:/:/:/:/:/"],
        ],
    );
    assert_eq!(
        fs::read_to_string(&calls).unwrap(),
        "call [addsystem] [vm-52-54-00-12-34-56] [52:54:00:12:34:56]\n"
    );
    let w = warnings(&o);
    assert_eq!(w.len(), 2, "{}", o.stderr);
    assert!(w[0].contains("\"--settings=/tmp/x\" left out"), "{}", w[0]);
    assert!(w[1].contains("\"-rf /:/:/:/:/:/:/\" left out"), "{}", w[1]);
    site.assert_contained();
}

#[test]
fn upload_pxemngr_child_holding_its_output() {
    // pxemngr returns at once, leaving a child that holds its output.
    let site = pxemngr_site("sleep 30 &\necho $! > \"$0.child\"\necho registered\nexit 0");
    let o = provision_ok(&site, &[["network", "eth0", "serial", "52:54:00:12:34:56"]]);
    assert!(o.elapsed < Duration::from_secs(5), "{:?}", o.elapsed);
    assert_eq!(warnings(&o), Vec::<&str>::new());
    let child = fs::read_to_string(site.bin_file("pxemngr.child")).unwrap();
    assert!(gone(&child), "pxemngr's child {child} outlived the request");
    site.assert_contained();
}

#[test]
fn upload_pxemngr_killed_with_its_children_at_the_deadline() {
    // pxemngr hangs, and so does its child: both are killed after 10 s and
    // the machine is provisioned all the same.
    let site = pxemngr_site(
        "echo $$ > \"$0.self\"\nsleep 60 &\necho $! > \"$0.child\"\necho hanging\nsleep 60",
    );
    let o = provision_ok(&site, &[["network", "eth0", "serial", "52:54:00:12:34:56"]]);
    assert!(
        o.elapsed >= Duration::from_secs(10) && o.elapsed < Duration::from_secs(14),
        "{:?}",
        o.elapsed
    );
    for file in ["pxemngr.self", "pxemngr.child"] {
        let pid = fs::read_to_string(site.bin_file(file)).unwrap();
        assert!(gone(&pid), "{file}: {pid} outlived the request");
    }
    let w = warnings(&o);
    assert_eq!(w.len(), 1, "{}", o.stderr);
    assert!(
        w[0].ends_with(
            "pxemngr addsystem 52-54-00-12-34-56 52:54:00:12:34:56: killed after 10s: hanging"
        ),
        "{}",
        w[0]
    );
    site.assert_contained();
}

#[test]
fn upload_hw_file_never_written_through_a_symlink() {
    let site = Site::new();
    fs::write(site.path("data/config/state"), "[('vm', '*')]\n").unwrap();
    let parsed = hw::parse_hw(Path::new("hw.json"), &hw_json()).unwrap();
    let (sysname, _) = hw::sysname_and_macs(&parsed);
    let hw_file = site.path("data/hw").join(format!("{sysname}.hw"));
    let victim = site.path("outside/victim");
    fs::write(&victim, "keep").unwrap();
    let upload = || {
        let o = post(
            UPLOAD,
            &site,
            form(&[("file", Some(b"hw.json"), &hw_json())]),
        );
        o.assert_clean();
        assert!(
            o.body_text().starts_with("#!/usr/bin/env python\n"),
            "{}",
            o.body_text()
        );
    };
    let saved = literal::pformat(&hw::items_value(&parsed));

    // A link to a file outside: the link is replaced, the file kept.
    std::os::unix::fs::symlink(&victim, &hw_file).unwrap();
    upload();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    assert!(fs::symlink_metadata(&hw_file).unwrap().is_file());
    assert_eq!(fs::read(&hw_file).unwrap(), saved);

    // A dangling link: nothing is created where it points.
    fs::remove_file(&hw_file).unwrap();
    std::os::unix::fs::symlink(site.path("outside/created"), &hw_file).unwrap();
    upload();
    assert!(fs::symlink_metadata(&hw_file).unwrap().is_file());
    assert_eq!(fs::read(&hw_file).unwrap(), saved);

    fs::remove_file(&victim).unwrap();
    site.assert_contained();
}

#[test]
fn upload_profile_names_never_lead_outside_configdir() {
    let site = Site::new();
    // A complete profile outside CONFIGDIR, reached through `..`.
    let outside = site.path("outside");
    let files = [
        ("x.specs", "[]\n"),
        ("x.configure", "print('outside')\n"),
        ("x.cmdb", "[{'ip': '10.0.0.1'}]\n"),
    ];
    for (name, text) in files {
        fs::write(outside.join(name), text).unwrap();
    }
    let state = site.path("data/config/state");
    fs::write(&state, "[('../../outside/x', '*'), ('vm', 1)]\n").unwrap();
    let o = post(
        UPLOAD,
        &site,
        form(&[("file", Some(b"hw.json"), &hw_json())]),
    );
    o.assert_refused(200);
    assert!(
        o.body_text().contains(&format!(
            "{}: profile '../../outside/x' refused: it contains '/'",
            state.display()
        )),
        "{}",
        o.body_text()
    );
    for (name, text) in files {
        assert_eq!(fs::read_to_string(outside.join(name)).unwrap(), text);
        fs::remove_file(outside.join(name)).unwrap();
    }
    // Nothing was consumed either.
    assert_eq!(
        fs::read_to_string(&state).unwrap(),
        "[('../../outside/x', '*'), ('vm', 1)]\n"
    );
    site.assert_contained();
}

/// Hardware that would make matching expensive is refused or bounded: a
/// value longer than MAXHWVALUE or more lines than MAXHWLINES are refused
/// before any matching, naming the limit; within the limits, long values
/// against specs whose search stays exponential end with "specs too
/// complex" under a 3 s CPU limit (`ulimit -t`), where the budget once
/// counted steps whatever the bytes they compared.
#[test]
fn upload_work_is_bounded_by_the_limits() {
    let site = Site::new();
    let long = "x".repeat(5000);
    let data = items_json(&[["disk", &long, "size", "20"]]);
    let o = post(UPLOAD, &site, form(&[("file", Some(b"hw.json"), &data)]));
    o.assert_refused(200);
    assert!(
        o.body_text()
            .contains("element 0: field 1 is 5000 bytes long, more than MAXHWVALUE (4096)"),
        "{}",
        o.body_text()
    );
    let many: Vec<[&str; 4]> = vec![["a", "b", "c", "d"]; 20_001];
    let data = items_json(&many);
    assert!(data.len() < 1 << 20);
    fs::write(
        &site.conf,
        fs::read_to_string(&site.conf).unwrap() + "MAXHWSIZE = 1M\n",
    )
    .unwrap();
    let o = post(UPLOAD, &site, form(&[("file", Some(b"hw.json"), &data)]));
    o.assert_refused(200);
    assert!(
        o.body_text()
            .contains("20001 hardware lines, more than MAXHWLINES (20000)"),
        "{}",
        o.body_text()
    );
    assert_eq!(site.files("data/hw"), Vec::<String>::new());

    // An odd cycle of "different" constraints over variables taken from 40
    // similar lines whose values are 4000 bytes long, equal but for their
    // last byte: no assignment exists, and pruning does not see it early.
    let value = |c: char| format!("{}{c}", "v".repeat(3999));
    let (a, b) = (value('a'), value('b'));
    let mut lines: Vec<Vec<String>> = Vec::new();
    for i in 0..40 {
        let v = if i % 2 == 0 { &a } else { &b };
        lines.push(vec!["k".into(), v.clone(), format!("n{i}"), "-".into()]);
    }
    for _ in 0..12 {
        lines.push(vec!["ne".into(), a.clone(), b.clone(), "-".into()]);
        lines.push(vec!["ne".into(), b.clone(), a.clone(), "-".into()]);
    }
    let n = 7;
    let specs: Vec<String> = (0..n)
        .map(|i| format!("('k', '$x{i}', '$id{i}', '-')"))
        .chain((0..n).map(|i| format!("('ne', '$x{i}', '$x{}', '-')", (i + 1) % n)))
        .collect();
    let config = site.path("data/config");
    fs::write(
        config.join("vm.specs"),
        format!("[{}]\n", specs.join(",\n ")),
    )
    .unwrap();
    let hw = site.path("outside/hw.json");
    fs::write(&hw, serde_json::to_vec(&lines).unwrap()).unwrap();
    let out = Command::new("sh")
        .args([
            "-c",
            "ulimit -t 3 && exec \"$0\" --dry-run -f \"$1\"",
            UPLOAD,
        ])
        .arg(&hw)
        .env("EDEPLOY_CONF", &site.conf)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("specs too complex: matching gave up after"),
        "{stdout}"
    );
    fs::remove_file(&hw).unwrap();
}

/// A `generate()` model of 2^20 entries of 1 kB (within MAX_ENTRIES) would
/// expand to a 1.09 GB CMDB: refused at MAXCMDBSIZE, naming the file and
/// the limit, before anything is written (the CGI runs under a 256 MiB
/// address-space limit).
#[test]
fn upload_generate_is_bounded_by_the_cmdb_size() {
    let site = Site::new();
    let config = site.path("data/config");
    let model = format!(
        "generate({{'n': '0000001-1048576', 'pad': '{}'}})\n",
        "x".repeat(1000)
    );
    fs::write(config.join("vm.cmdb"), &model).unwrap();
    let state = fs::read(config.join("state")).unwrap();
    let o = post(
        UPLOAD,
        &site,
        form(&[("file", Some(b"hw.json"), &hw_json())]),
    );
    o.assert_refused(200);
    let expected = format!(
        "{}: generate() model expands to a CMDB of more than 16777216 bytes (MAXCMDBSIZE)",
        config.join("vm.cmdb").display()
    );
    assert!(o.body_text().contains(&expected), "{}", o.body_text());
    assert_eq!(fs::read_to_string(config.join("vm.cmdb")).unwrap(), model);
    assert_eq!(fs::read(config.join("state")).unwrap(), state);
    assert!(!config.join("vm.cmdb.orig").exists());

    // The limit is the one of edeploy.conf.
    fs::write(
        &site.conf,
        fs::read_to_string(&site.conf).unwrap() + "MAXCMDBSIZE = 20K\n",
    )
    .unwrap();
    let small = "generate({'n': '001-100', 'pad': 'x'})\n";
    fs::write(config.join("vm.cmdb"), small).unwrap();
    let o = post(
        UPLOAD,
        &site,
        form(&[("file", Some(b"hw.json"), &hw_json())]),
    );
    assert!(o.body_text().contains("'n': '001'"), "{}", o.body_text());
    fs::write(
        config.join("vm.cmdb"),
        "generate({'n': '001-999', 'pad': 'x'})\n",
    )
    .unwrap();
    let o = post(
        UPLOAD,
        &site,
        form(&[("file", Some(b"hw.json"), &hw_json())]),
    );
    o.assert_refused(200);
    assert!(
        o.body_text()
            .contains("more than 20480 bytes (MAXCMDBSIZE)"),
        "{}",
        o.body_text()
    );
}

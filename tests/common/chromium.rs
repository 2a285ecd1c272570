//! Headless Chromium for the tests of the pages (the status page, the
//! fleet views): it renders them as a person's browser would, with the
//! flags this machine's closed network needs.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether to run the browser part: Chromium present, or explicitly skipped.
pub fn available() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    if std::env::var("EDEPLOY_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("{CHROMIUM} missing: browser checks skipped because EDEPLOY_SKIP_BROWSER=1");
        return false;
    }
    panic!("{CHROMIUM} missing: apt-get install chromium, or set EDEPLOY_SKIP_BROWSER=1 to skip");
}

/// Runs headless Chromium on `url` with `args` and a fresh profile;
/// returns its stdout.
pub fn run(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let stdout = out_dir.path().join("stdout");
    let stderr = out_dir.path().join("stderr");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).unwrap())
        .stderr(File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium timed out: {}",
                fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "chromium {status}: {}",
        fs::read_to_string(&stderr).unwrap_or_default()
    );
    fs::read_to_string(&stdout).unwrap()
}

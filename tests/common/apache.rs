//! A private Apache for the end-to-end tests (tests/apache_e2e.rs,
//! tests/status_page.rs): our CGIs installed as `upload.py`,
//! `upload-health.py` and `status.py` behind `ScriptAlias`.
//!
//! Each [`Apache`] has its own ServerRoot in a temporary directory (built
//! from tests/apache/httpd.conf.in), listens on a free port of 127.0.0.1 and
//! runs the CGIs as `www-data` when we are root; it is stopped on drop, even
//! when the test fails.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const APACHE: &str = "/usr/sbin/apache2";
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apache");

/// A running private Apache; stopped on drop.
pub struct Apache {
    child: Child,
    conf: PathBuf,
    pub root: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Whether to run: Apache present, or explicitly skipped.
pub fn apache_available() -> bool {
    if Path::new(APACHE).exists() {
        return true;
    }
    if std::env::var("EDEPLOY_SKIP_APACHE").as_deref() == Ok("1") {
        eprintln!("{APACHE} missing: skipped because EDEPLOY_SKIP_APACHE=1");
        return false;
    }
    panic!("{APACHE} missing: apt-get install apache2, or set EDEPLOY_SKIP_APACHE=1 to skip");
}

fn substitute(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(template.to_owned(), |s, (k, v)| {
        s.replace(&format!("@{k}@"), v)
    })
}

/// uid and gid of a user, from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        match f.as_slice() {
            [n, _, uid, gid, ..] if *n == name => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    })
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for e in fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Apache {
    /// Starts Apache with `mpm` (`event`, `prefork`) and `cgi` (`cgid`,
    /// `cgi`), our CGIs and the fixtures' configuration directory.
    pub fn start(mpm: &str, cgi: &str) -> Apache {
        Apache::start_with(mpm, cgi, "")
    }

    /// [`Apache::start`], with `directives` appended to httpd.conf (they
    /// override the template's: a benchmark's worker pool).
    pub fn start_with(mpm: &str, cgi: &str, directives: &str) -> Apache {
        let dir = tempfile::Builder::new()
            .prefix("edeploy-apache-")
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        for d in [
            "conf",
            "logs",
            "run",
            "cgi-bin/edeploy",
            "data/config",
            "data/hw",
            "data/logs",
            "data/health",
            "data/lock",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let cgi_dir = root.join("cgi-bin/edeploy");
        for (bin, name) in [
            (env!("CARGO_BIN_EXE_upload"), "upload.py"),
            (env!("CARGO_BIN_EXE_upload-health"), "upload-health.py"),
            (env!("CARGO_BIN_EXE_status"), "status.py"),
        ] {
            fs::copy(bin, cgi_dir.join(name)).unwrap();
            fs::set_permissions(cgi_dir.join(name), fs::Permissions::from_mode(0o755)).unwrap();
        }
        for f in ["state", "vm.specs", "vm.configure"] {
            fs::copy(
                Path::new(FIXTURES).join("config").join(f),
                root.join("data/config").join(f),
            )
            .unwrap();
        }
        let root_s = root.to_str().unwrap();
        let template = fs::read_to_string(Path::new(FIXTURES).join("edeploy.conf.in")).unwrap();
        fs::write(
            cgi_dir.join("edeploy.conf"),
            substitute(&template, &[("ROOT", root_s)]),
        )
        .unwrap();

        let am_root = fs::metadata("/proc/self").unwrap().uid() == 0;
        let user = if am_root { "www-data" } else { "nobody" };
        if am_root {
            let (uid, gid) = user_ids(user).expect("user www-data");
            chown_tree(&root.join("data"), uid, gid);
        }
        let port = free_port();
        let port_s = port.to_string();
        let template = fs::read_to_string(Path::new(FIXTURES).join("httpd.conf.in")).unwrap();
        let conf = root.join("conf/httpd.conf");
        fs::write(
            &conf,
            substitute(
                &template,
                &[
                    ("ROOT", root_s),
                    ("PORT", &port_s),
                    ("MPM", mpm),
                    ("CGI", cgi),
                    ("USER", user),
                    ("GROUP", user),
                ],
            ) + directives,
        )
        .unwrap();
        // Its own process group: at shutdown, prefork signals its whole
        // group, which would otherwise include this test.
        let child = Command::new(APACHE)
            .arg("-f")
            .arg(&conf)
            .arg("-DFOREGROUND")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(fs::File::create(root.join("logs/stdout")).unwrap())
            .stderr(fs::File::create(root.join("logs/stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut apache = Apache {
            child,
            conf,
            root,
            port,
            _dir: dir,
        };
        apache.wait_ready();
        apache
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "apache exited ({status}): {}{}",
                    self.read_log("stderr"),
                    self.read_log("error.log")
                );
            }
            assert!(Instant::now() < deadline, "apache did not start");
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn read_log(&self, name: &str) -> String {
        fs::read_to_string(self.root.join("logs").join(name)).unwrap_or_default()
    }

    /// The URL the initrd builds: `http://${SERV}:${HTTP_PORT}/${HTTP_PATH}/<script>`
    /// with `HTTP_PATH=/cgi-bin/edeploy/` (double slashes included).
    pub fn url(&self, script: &str) -> String {
        format!("http://127.0.0.1:{}//cgi-bin/edeploy//{script}", self.port)
    }

    pub fn data(&self, sub: &str) -> PathBuf {
        self.root.join("data").join(sub)
    }

    /// Replaces the server's CONFIGDIR by the files of `from`, owned by the
    /// server's user as an installation's are.
    pub fn set_config(&self, from: &Path) {
        let config = self.data("config");
        fs::remove_dir_all(&config).unwrap();
        fs::create_dir_all(&config).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), config.join(entry.file_name())).unwrap();
        }
        if fs::metadata("/proc/self").unwrap().uid() == 0 {
            let (uid, gid) = user_ids("www-data").expect("user www-data");
            chown_tree(&config, uid, gid);
        }
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- apache error.log ---\n{}", self.read_log("error.log"));
        }
        // `apache2 -k stop` waits for the server to be gone, and a zombie
        // is not gone: reap our child while the stop command runs.
        let stop = Command::new(APACHE)
            .arg("-f")
            .arg(&self.conf)
            .args(["-k", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut stopped = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                stopped = true;
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        if let Ok(mut stop) = stop {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = stop.try_wait() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = stop.kill();
            let _ = stop.wait();
        }
        if stopped {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A full disk under CONFIGDIR and HWDIR: the request must fail with a clear
//! error script naming the file and `No space left on device`, and leave the
//! state and CMDB exactly as they were (the legacy server truncated them in
//! place and could leave them empty).
//!
//! CONFIGDIR and HWDIR live on a 256 KiB tmpfs mounted for the test (we run
//! as root); where mounting is not permitted the tests are skipped with the
//! reason printed, except on CI (`CI` set), where they fail.

mod common;

#[path = "fixtures/robust/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use edeploy::literal::{self, Dict, Value};
use support::{
    generated_cmdb, hw_file_name, is_used, mac, machine_json, spawn, text, Answer, Site, PROFILE,
};

const TMPFS_SIZE: &str = "256k";
const PAGE: u64 = 4096;

/// A mounted tmpfs, unmounted when dropped.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    fn tmpfs(dir: &Path) -> Result<Mount, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy: detach it so the temporary directory can go.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A site whose CONFIGDIR and HWDIR are on a small tmpfs. Fields drop in
/// order: unmount before removing the directory.
struct SmallDisk {
    site: Site,
    mount: Mount,
    _tmp: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (with the reason printed) when tmpfs cannot be mounted here.
    fn new(state: &str, cmdb: &[u8]) -> Option<SmallDisk> {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("small");
        fs::create_dir(&data).unwrap();
        let mount = match Mount::tmpfs(&data) {
            Ok(m) => m,
            Err(why) => {
                common::feature_missing(&why);
                return None;
            }
        };
        let site = Site::create(tmp.path(), &data, state, "");
        fs::write(site.cmdb_file(), cmdb).unwrap();
        Some(SmallDisk {
            site,
            mount,
            _tmp: tmp,
        })
    }

    /// Bytes still free on the tmpfs (`stat -f`).
    fn free(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(&self.mount.dir)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (blocks, size) = text.trim().split_once(' ').unwrap();
        blocks.parse::<u64>().unwrap() * size.parse::<u64>().unwrap()
    }

    /// Fills the tmpfs completely with `filler`, then frees `pages` pages.
    fn fill(&self, pages: u64) -> PathBuf {
        let path = self.mount.dir.join("filler");
        let mut file = File::create(&path).unwrap();
        let chunk = vec![b'f'; PAGE as usize];
        let err = loop {
            if let Err(e) = file.write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        let len = file.metadata().unwrap().len();
        file.set_len(len.saturating_sub(pages * PAGE)).unwrap();
        assert!(self.free() <= pages * PAGE, "{} bytes free", self.free());
        path
    }
}

/// Every file of `dir` and its content.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// `dir` holds exactly the files of `before`, byte for byte.
#[track_caller]
fn assert_unchanged(dir: &Path, before: &BTreeMap<String, Vec<u8>>) {
    let after = snapshot(dir);
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&after), names(before), "files in {}", dir.display());
    let changed: Vec<&String> = before
        .iter()
        .filter(|(name, content)| after.get(*name) != Some(content))
        .map(|(name, _)| name)
        .collect();
    assert!(
        changed.is_empty(),
        "changed in {}: {changed:?}",
        dir.display()
    );
}

/// A plain-list CMDB of `n` entries as the server prints it, each with a
/// long `location` so that a few hundred fill the disk.
fn list_cmdb(n: usize) -> Vec<u8> {
    let entries = (0..n)
        .map(|i| {
            let mut d = Dict::new();
            d.insert(
                Value::str("ip"),
                Value::str(&format!("10.30.{}.{}", i / 250, i % 250 + 1)),
            );
            d.insert(Value::str("hostname"), Value::str(&format!("full{i:04}")));
            d.insert(Value::str("netmask"), Value::str("255.255.0.0"));
            d.insert(
                Value::str("location"),
                Value::str(&format!("room 1, rack {i:04}, {}", "u".repeat(160))),
            );
            Value::Dict(d)
        })
        .collect();
    literal::pformat(&Value::List(entries))
}

/// The request must have been answered (status 200, exit 0, no panic) with
/// an error script whose message names `file` and the full disk.
#[track_caller]
fn assert_disk_full_error(a: &Answer, file: &Path) -> String {
    assert!(a.exit.success(), "{}", a.describe());
    assert!(!a.stderr.contains("panicked"), "{}", a.describe());
    let message = a
        .error_message()
        .unwrap_or_else(|| panic!("not an error script: {}", a.describe()));
    assert!(
        message.contains(&file.display().to_string()),
        "{message:?} does not name {}",
        file.display()
    );
    assert!(message.contains("No space left on device"), "{message:?}");
    assert!(a.stderr.contains("No space left on device"), "{}", a.stderr);
    message
}

/// Nothing but `expected` in `dir`: no temporary file left.
#[track_caller]
fn assert_names(dir: &Path, expected: &[&str]) {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, expected);
}

#[test]
fn nearly_full_disk_refuses_the_cmdb_write_and_keeps_the_files() {
    let cmdb = list_cmdb(600);
    let Some(disk) = SmallDisk::new(&format!("[('{PROFILE}', 10)]\n"), &cmdb) else {
        return;
    };
    let site = &disk.site;
    // The CMDB takes more than half the disk: its new copy cannot fit.
    let free = disk.free();
    eprintln!("CMDB of {} bytes, {free} bytes free", cmdb.len());
    assert!((cmdb.len() as u64) > free && free > 4 * PAGE);
    let before = snapshot(&site.config_dir);

    let a = spawn(&site.conf, &machine_json(1)).wait();
    let message = assert_disk_full_error(&a, &site.cmdb_file());
    eprintln!("answer: {message}");
    assert_unchanged(&site.config_dir, &before);
    // The hardware file fitted and was saved, as the legacy server did
    // before matching.
    assert_names(&site.hw_dir, &[&hw_file_name(1)]);
}

#[test]
fn full_disk_refuses_the_first_write_then_recovers() {
    let cmdb = list_cmdb(20);
    let Some(disk) = SmallDisk::new(&format!("[('{PROFILE}', 10)]\n"), &cmdb) else {
        return;
    };
    let site = &disk.site;
    let filler = disk.fill(0);
    eprintln!("{} bytes free", disk.free());
    let before = snapshot(&site.config_dir);

    let a = spawn(&site.conf, &machine_json(2)).wait();
    let message = assert_disk_full_error(&a, &site.hw_dir.join(hw_file_name(2)));
    eprintln!("answer: {message}");
    assert_unchanged(&site.config_dir, &before);
    assert_names(&site.hw_dir, &[]);

    // Space freed: the next request goes through (no lock or temporary
    // file left in the way) and is recorded.
    fs::remove_file(filler).unwrap();
    let a = spawn(&site.conf, &machine_json(2)).wait();
    let vars = a
        .script_vars()
        .unwrap_or_else(|| panic!("no configure script: {}", a.describe()));
    assert_eq!(text(&vars, "mac"), mac(2));
    assert_eq!(site.state_count(), 9);
    let used: Vec<Dict> = site.cmdb().into_iter().filter(is_used).collect();
    assert_eq!(used.len(), 1);
    assert_eq!(text(&used[0], "ip"), text(&vars, "ip"));
    assert_names(&site.hw_dir, &[&hw_file_name(2)]);
}

/// The CMDB fits but the state does not: neither may change, or the CMDB
/// would record an entry as used for a machine that got an error and whose
/// quota was not spent.
#[test]
fn state_that_does_not_fit_leaves_the_cmdb_unchanged() {
    let mut state = format!("[('{PROFILE}', 5)");
    for i in 0..4000 {
        state.push_str(&format!(",\n ('retired{i:04}', 0)"));
    }
    state.push_str("]\n");
    let cmdb = list_cmdb(3);
    let Some(disk) = SmallDisk::new(&state, &cmdb) else {
        return;
    };
    let site = &disk.site;
    // Room for the .hw file and the new CMDB, not for the new state.
    disk.fill(4);
    let free = disk.free();
    eprintln!(
        "state of {} bytes, CMDB of {} bytes, {free} bytes free",
        state.len(),
        cmdb.len()
    );
    assert!(free >= 2 * PAGE && (state.len() as u64) > free);
    let before = snapshot(&site.config_dir);

    let a = spawn(&site.conf, &machine_json(3)).wait();
    let message = assert_disk_full_error(&a, &site.state_file());
    eprintln!("answer: {message}");
    assert_unchanged(&site.config_dir, &before);
}

/// A `generate()` model whose expansion does not fit stays the model; only
/// its `.orig` backup (a copy of the model, as the legacy server made
/// before expanding) may be left.
#[test]
fn generated_cmdb_that_cannot_expand_stays_a_model() {
    let cmdb = generated_cmdb(250);
    let Some(disk) = SmallDisk::new(&format!("[('{PROFILE}', 10)]\n"), cmdb.as_bytes()) else {
        return;
    };
    let site = &disk.site;
    // Room for the .hw file and the backup, not for 250 expanded entries.
    disk.fill(3);
    eprintln!("{} bytes free", disk.free());
    let before = snapshot(&site.config_dir);

    let a = spawn(&site.conf, &machine_json(4)).wait();
    let message = assert_disk_full_error(&a, &site.cmdb_file());
    eprintln!("answer: {message}");
    let mut after = snapshot(&site.config_dir);
    let orig = after.remove(&format!("{PROFILE}.cmdb.orig"));
    assert_eq!(orig.as_deref(), Some(cmdb.as_bytes()));
    assert_eq!(after, before);
}

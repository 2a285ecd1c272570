//! The index of the machines view, kept in HWDIR as
//! `.edeploy-fleet/index`: each `.hw` file's summary by file identity,
//! and each machine's journal summary with how far the journal was read.
//!
//! A view stats the `.hw` files and parses only those whose identity
//! (device, inode, size, modification and change times) is not the one
//! indexed, and reads only the journal's lines past the indexed offset:
//! the journal only grows, until it is rotated, and then the indexed file
//! is `<journal>.1`, read to its end before the new journal. Anything else
//! (a journal truncated or replaced, another journal named) rebuilds the
//! journal's part from both files.
//!
//! The directory's own identity is kept too: while HWDIR has not changed
//! (no file created, renamed or removed in it, which is how the server
//! replaces a machine's file), its files are not even stated. A directory
//! changed less than two seconds (`SETTLE`) before a view is always scanned again:
//! its time may not have ticked between two changes. A `.hw` file written
//! in place by hand shows once anything else changes in HWDIR.
//!
//! The index is binary (`postcard`): ten thousand machines take about six
//! megabytes, read in milliseconds. Like the CMDB summaries' cache
//! (`status::cache`) it is written
//! atomically and not durably (`store::replace_cache_file`), readable by
//! its owner only; a missing, corrupt or foreign index is rebuilt; two
//! views updating it at once each write a whole index, the last one wins.
//! When HWDIR is not writable, views rebuild it every time.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{summarize_hw, Hardware, Seen};
use crate::config::Config;
use crate::hw;
use crate::journal;
use crate::status::cache::Key;
use crate::store;

/// The directory of the index in HWDIR. The index is replaced there, not
/// in HWDIR itself, so that writing it does not change HWDIR.
pub const DIR_NAME: &str = ".edeploy-fleet";

/// The format of the index this version writes; others are rebuilt.
const FORMAT: u32 = 2;

/// How old a change of HWDIR must be for its time to identify the
/// directory's content.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Largest index read: ten thousand machines take a few megabytes.
const MAX_SIZE: u64 = 512 << 20;

/// What the index holds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Index {
    format: u32,
    /// HWDIR as it was when its files were last stated, if it had settled.
    hw_dir: Option<Key>,
    /// By `.hw` file name.
    pub hw: BTreeMap<String, HwEntry>,
    pub journal: Option<JournalIndex>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HwEntry {
    key: Key,
    /// Modification time, microseconds since the epoch.
    pub mtime_micros: u64,
    /// Serial, MACs and addresses, lower case: what a search looks at.
    pub search: String,
    /// The summary (JSON of `Result<Hardware, String>`), decoded only for
    /// the rows shown: decoding every machine's was most of a view's cost.
    summary: String,
}

impl HwEntry {
    /// The summary, or why the file could not be read.
    pub fn summary(&self) -> Result<Hardware, String> {
        serde_json::from_str(&self.summary)
            .unwrap_or_else(|e| Err(format!("damaged index entry: {e}")))
    }
}

/// The journal's part of the index.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JournalIndex {
    /// The journal read (`JOURNAL`).
    path: String,
    /// The file read last, and the offset after its last whole line.
    dev: u64,
    ino: u64,
    offset: u64,
    /// Its first bytes (the first line's time, to the microsecond): a new
    /// file that got the same inode number is not taken for it.
    head: Vec<u8>,
    /// By section, then by sysname.
    pub sections: BTreeMap<String, BTreeMap<String, Seen>>,
}

impl JournalIndex {
    fn new(path: &Path) -> JournalIndex {
        JournalIndex {
            path: path.display().to_string(),
            ..JournalIndex::default()
        }
    }

    fn add(&mut self, r: &journal::Record) {
        if let (Some(section), Some(sysname)) = (&r.section, &r.sysname) {
            self.sections
                .entry(section.clone())
                .or_default()
                .entry(sysname.clone())
                .or_default()
                .add(r);
        }
    }

    /// Reads the whole lines of `file` from `offset`, and marks the file
    /// read up to the last of them.
    fn read(&mut self, file: &mut File, offset: u64) -> io::Result<()> {
        let meta = file.metadata()?;
        file.seek(SeekFrom::Start(offset))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)?;
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in text[..whole].split(|&b| b == b'\n') {
            if let Some(r) = journal::parse_line(line) {
                self.add(&r);
            }
        }
        self.dev = meta.dev();
        self.ino = meta.ino();
        self.offset = offset + whole as u64;
        self.head = head(file)?;
        Ok(())
    }

    /// Is `file` the one read last?
    fn is(&self, file: &File, meta: &fs::Metadata) -> io::Result<bool> {
        Ok((self.dev, self.ino) == (meta.dev(), meta.ino())
            && self.ino != 0
            && meta.size() >= self.offset
            && head(file)? == self.head)
    }
}

/// Length of [`JournalIndex::head`].
const HEAD: usize = 48;

fn head(file: &File) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; HEAD];
    let n = file.read_at(&mut buf, 0)?;
    buf.truncate(n);
    Ok(buf)
}

/// Opens `path`, `None` when it does not exist.
fn open(path: &Path) -> io::Result<Option<(File, fs::Metadata)>> {
    match File::open(path) {
        Ok(file) => {
            let meta = file.metadata()?;
            Ok(Some((file, meta)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Brings the journal's part up to date; `true` when it changed.
fn update_journal(index: &mut Option<JournalIndex>, path: &Path) -> io::Result<bool> {
    let mut current = open(path)?;
    let mut ji = match index.take() {
        Some(ji) if ji.path == path.display().to_string() => ji,
        _ => JournalIndex::new(path),
    };
    let before = (ji.dev, ji.ino, ji.offset);
    let same = match &current {
        Some((file, meta)) => ji.is(file, meta)?,
        None => false,
    };
    let continued = if same {
        let offset = ji.offset;
        if let Some((file, _)) = &mut current {
            ji.read(file, offset)?;
        }
        true
    } else {
        match open(&journal::rotated_path(path))? {
            // Rotated since: the rest of the old file, then the new one.
            Some((mut old, meta)) if ji.is(&old, &meta)? => {
                let offset = ji.offset;
                ji.read(&mut old, offset)?;
                if let Some((file, _)) = &mut current {
                    ji.read(file, 0)?;
                }
                true
            }
            _ => false,
        }
    };
    if !continued {
        ji = JournalIndex::new(path);
        if let Some((mut old, _)) = open(&journal::rotated_path(path))? {
            ji.read(&mut old, 0)?;
        }
        if let Some((file, _)) = &mut current {
            ji.read(file, 0)?;
        }
    }
    let changed = !continued || before != (ji.dev, ji.ino, ji.offset);
    *index = Some(ji);
    Ok(changed)
}

/// The index of HWDIR and the journal of `cfg`, brought up to date (and
/// saved when it changed). What cannot be read is added to `errors`.
pub fn load_and_update(cfg: &Config, errors: &mut Vec<String>) -> Index {
    let path = super::index_path(&cfg.hw_dir);
    let mut index = load(&path).unwrap_or_default();
    let mut changed = index.format != FORMAT;
    index.format = FORMAT;
    match update_hw(&mut index, cfg) {
        Ok(c) => changed |= c,
        Err(e) => errors.push(format!("{}: {e}", cfg.hw_dir.display())),
    }
    match &cfg.journal {
        Some(journal) => match update_journal(&mut index.journal, journal) {
            Ok(c) => changed |= c,
            Err(e) => errors.push(format!("{}: {e}", journal.display())),
        },
        None => changed |= index.journal.take().is_some(),
    }
    if changed {
        if let Ok(text) = postcard::to_stdvec(&index) {
            // A failure only means the next view does the work again.
            if let Some(dir) = path.parent() {
                let _ = fs::DirBuilder::new().mode(0o700).create(dir);
            }
            let _ = store::replace_cache_file(&path, &text);
        }
    }
    index
}

fn load(path: &Path) -> Option<Index> {
    let file = File::open(path).ok()?;
    let mut text = Vec::new();
    file.take(MAX_SIZE + 1).read_to_end(&mut text).ok()?;
    if text.len() as u64 > MAX_SIZE {
        return None;
    }
    let index: Index = postcard::from_bytes(&text).ok()?;
    (index.format == FORMAT).then_some(index)
}

/// Brings the `.hw` summaries up to date; `true` when one changed.
fn update_hw(index: &mut Index, cfg: &Config) -> io::Result<bool> {
    let scanned = SystemTime::now();
    let dir = Key::of(&fs::metadata(&cfg.hw_dir)?);
    if index.hw_dir == Some(dir) {
        return Ok(false);
    }
    let settled = scanned
        .duration_since(UNIX_EPOCH + Duration::new(dir.mtime.max(0) as u64, 0))
        .is_ok_and(|age| age > SETTLE)
        && scanned
            .duration_since(UNIX_EPOCH + Duration::new(dir.ctime.max(0) as u64, 0))
            .is_ok_and(|age| age > SETTLE);
    let known = index.hw_dir;
    index.hw_dir = settled.then_some(dir);
    let entries = &mut index.hw;
    let mut fresh = BTreeMap::new();
    let mut changed = false;
    for entry in fs::read_dir(&cfg.hw_dir)? {
        let Ok(entry) = entry else { continue };
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".hw") {
            continue;
        }
        // Not followed: a link is not a machine's file (the server
        // replaces links by files).
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let key = Key::of(&meta);
        let known = entries.remove(&name).filter(|e| e.key == key);
        let hw_entry = match known {
            Some(e) => e,
            None => {
                changed = true;
                summarize_file(&cfg.hw_dir.join(&name), cfg, key)
            }
        };
        fresh.insert(name, hw_entry);
    }
    changed |= !entries.is_empty() || known != index.hw_dir;
    *entries = fresh;
    Ok(changed)
}

fn summarize_file(path: &Path, cfg: &Config, key: Key) -> HwEntry {
    let read = store::read_version_and_metadata(path);
    // Indexed under the identity of the version read, when it is known.
    let key = match &read {
        Ok((_, Some(meta))) => Key::of(meta),
        _ => key,
    };
    let summary: Result<Hardware, String> = read
        .map_err(|e| format!("{}: {e}", path.display()))
        .and_then(|(src, _)| {
            hw::parse_hw_with(path, &src, &cfg.hw_limits).map_err(|e| e.to_string())
        })
        .map(|items| summarize_hw(&items));
    let mut search = Vec::new();
    if let Ok(h) = &summary {
        search.extend(h.serial.iter().cloned());
        for n in &h.nics {
            search.extend(n.mac.iter().chain(&n.ipv4).cloned());
        }
    }
    let mtime_micros =
        (key.mtime.max(0) as u64) * 1_000_000 + (key.mtime_nsec.max(0) as u64) / 1000;
    HwEntry {
        key,
        mtime_micros,
        search: search.join(" ").to_lowercase(),
        summary: serde_json::to_string(&summary).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Decision, Record};

    fn record(sysname: &str, profile: &str) -> Record {
        Record::new(
            "upload.py",
            "192.0.2.1",
            Some("SERVER"),
            Some(sysname),
            Decision::Configured {
                profile: profile.into(),
                cmdb_entry: None,
                hostname: None,
                ip: None,
            },
        )
    }

    fn profile(ji: &JournalIndex, sysname: &str) -> Option<String> {
        ji.sections["SERVER"][sysname]
            .installed
            .as_ref()
            .map(|i| i.profile.clone())
    }

    #[test]
    fn the_journal_is_read_on_from_where_it_was_left_across_a_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("journal");
        let line = record("m1", "a").to_line().len() as u64;
        let mut index = None;
        journal::append(&path, 3 * line, &record("m1", "a")).unwrap();
        journal::append(&path, 3 * line, &record("m2", "a")).unwrap();
        assert!(update_journal(&mut index, &path).unwrap());
        assert!(!update_journal(&mut index, &path).unwrap());
        // m1 again, then past the size: rotated, and m2 in the new file.
        journal::append(&path, 3 * line, &record("m1", "b")).unwrap();
        journal::append(&path, 3 * line, &record("m2", "c")).unwrap();
        assert!(journal::rotated_path(&path).exists());
        assert!(update_journal(&mut index, &path).unwrap());
        let ji = index.as_ref().unwrap();
        assert_eq!(profile(ji, "m1").as_deref(), Some("b"));
        assert_eq!(profile(ji, "m2").as_deref(), Some("c"));
        assert_eq!(ji.sections["SERVER"]["m1"].lines, 2);
        // A half-written line is left for the next view.
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| io::Write::write_all(&mut f, b"{\"time\":\"20"))
            .unwrap();
        update_journal(&mut index, &path).unwrap();
        assert_eq!(index.as_ref().unwrap().sections["SERVER"]["m2"].lines, 2);
        // Replaced by another file: rebuilt from both files.
        fs::remove_file(&path).unwrap();
        journal::append(&path, u64::MAX, &record("m3", "d")).unwrap();
        assert!(update_journal(&mut index, &path).unwrap());
        let ji = index.as_ref().unwrap();
        assert_eq!(profile(ji, "m3").as_deref(), Some("d"));
        assert_eq!(ji.sections["SERVER"]["m1"].lines, 2);
    }

    #[test]
    fn hardware_files_added_changed_or_removed_are_seen_by_the_next_view() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = Config::for_dir(tmp.path());
        let hw = |serial: &str| {
            format!("[('system', 'product', 'serial', '{serial}'),\n ('memory', 'total', 'size', '1024')]\n")
        };
        let serials = |index: &Index| -> Vec<(String, Option<String>)> {
            index
                .hw
                .iter()
                .map(|(name, e)| (name.clone(), e.summary().unwrap().serial))
                .collect()
        };
        fs::write(tmp.path().join("a.hw"), hw("S1")).unwrap();
        fs::write(tmp.path().join("notes.txt"), "not a machine").unwrap();
        let mut errors = Vec::new();
        let index = load_and_update(&cfg, &mut errors);
        assert_eq!(serials(&index), [("a.hw".into(), Some("S1".into()))]);
        assert!(errors.is_empty(), "{errors:?}");
        // The index is kept in a directory of its own.
        assert!(crate::status::fleet::index_path(tmp.path()).is_file());
        // Replaced as the server replaces it, and another one added.
        fs::write(tmp.path().join("a.tmp"), hw("S2")).unwrap();
        fs::rename(tmp.path().join("a.tmp"), tmp.path().join("a.hw")).unwrap();
        fs::write(tmp.path().join("b.hw"), "not a literal").unwrap();
        let index = load_and_update(&cfg, &mut errors);
        let a = index.hw["a.hw"].summary().unwrap();
        assert_eq!(a.serial.as_deref(), Some("S2"));
        assert!(index.hw["b.hw"].summary().is_err());
        fs::remove_file(tmp.path().join("b.hw")).unwrap();
        let index = load_and_update(&cfg, &mut errors);
        assert_eq!(index.hw.len(), 1);
        // A damaged index is rebuilt.
        fs::write(crate::status::fleet::index_path(tmp.path()), "garbage").unwrap();
        let index = load_and_update(&cfg, &mut errors);
        assert_eq!(serials(&index), [("a.hw".into(), Some("S2".into()))]);
    }
}

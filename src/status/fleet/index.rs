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
//! When HWDIR is not writable, views rebuild it every time, whole (a view
//! otherwise indexes for [`BUDGET`] only, and the next ones go on).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{summarize_hw, summarize_scanned, Hardware, Latest, Seen};
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

/// How long a view may spend indexing (loading and saving the index
/// included) before it shows what is indexed:
/// the first view of ten thousand machines and a 100,000-line journal
/// reads 95 MB in as many files and 31 MB of JSON, several times a
/// page's 200 ms on a small server. What is left is indexed by the next
/// views: the journal first (a chunk at least), then the `.hw` files
/// (for [`MIN_SLICE`] at least).
pub const BUDGET: Duration = Duration::from_millis(70);

/// The least time a view spends summarising new `.hw` files, when there
/// are: the first view of a large journal may have used all of [`BUDGET`]
/// reading it.
const MIN_SLICE: Duration = Duration::from_millis(30);

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
    /// `.hw` files this view had no time to summarise (see [`BUDGET`]).
    #[serde(skip)]
    pub pending: Vec<String>,
    /// Whether the journal is left to read further (see [`BUDGET`]).
    #[serde(skip)]
    pub journal_pending: bool,
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

    /// Reads the whole lines of `file` from `offset`, a chunk at a time
    /// while another fits before `deadline` (one at least), and marks the file read up to the
    /// last of them; `true` when that is its end.
    fn read(&mut self, file: &mut File, offset: u64, deadline: Instant) -> io::Result<bool> {
        let mut offset = offset;
        let at_end = loop {
            let started = Instant::now();
            file.seek(SeekFrom::Start(offset))?;
            let mut text = Vec::with_capacity(CHUNK as usize);
            file.by_ref().take(CHUNK).read_to_end(&mut text)?;
            let mut at_end = (text.len() as u64) < CHUNK;
            if !at_end && !text.contains(&b'\n') {
                // A line longer than a chunk: read whole.
                file.read_to_end(&mut text)?;
                at_end = true;
            }
            let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            self.parse(&text[..whole]);
            offset += whole as u64;
            // Another chunk would take about as long as this one.
            if at_end || Instant::now() + started.elapsed() >= deadline {
                break at_end;
            }
        };
        let meta = file.metadata()?;
        self.dev = meta.dev();
        self.ino = meta.ino();
        self.offset = offset;
        self.head = head(file)?;
        Ok(at_end)
    }

    /// Takes the whole lines of `text` into account.
    fn parse(&mut self, text: &[u8]) {
        let whole = text.len();
        // Parsing is most of the work: two threads each summarise a half,
        // and the later half's summaries are merged into the earlier's.
        let halves = text[..whole].split_at(
            text[whole / 2..whole]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(whole, |i| whole / 2 + i + 1),
        );
        let parts = in_parallel(&[halves.0, halves.1], |half| {
            let mut part: HashMap<String, HashMap<String, Latest>> = HashMap::new();
            for line in half.split(|&b| b == b'\n') {
                let Some(mut r) = journal::parse_line(line) else {
                    continue;
                };
                let (Some(section), Some(sysname)) = (r.section.take(), r.sysname.take()) else {
                    continue;
                };
                let machines = match part.get_mut(&section) {
                    Some(machines) => machines,
                    None => part.entry(section).or_default(),
                };
                match machines.get_mut(&sysname) {
                    Some(latest) => latest.add(r),
                    None => machines.entry(sysname).or_default().add(r),
                }
            }
            part
        });
        for sections in parts {
            for (section, machines) in sections {
                let known = self.sections.entry(section).or_default();
                for (sysname, latest) in machines {
                    known.entry(sysname).or_default().merge(latest.seen());
                }
            }
        }
    }

    /// Is `file` the one read last?
    fn is(&self, file: &File, meta: &fs::Metadata) -> io::Result<bool> {
        Ok((self.dev, self.ino) == (meta.dev(), meta.ino())
            && self.ino != 0
            && meta.size() >= self.offset
            && head(file)? == self.head)
    }
}

/// Bytes of the journal read at a time (see [`JournalIndex::read`]): tens
/// of milliseconds of parsing.
const CHUNK: u64 = 2 << 20;

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

/// Brings the journal's part up to date, reading until `deadline` (a
/// chunk at least); whether it changed, and whether it is read to its end.
fn update_journal(
    index: &mut Option<JournalIndex>,
    path: &Path,
    deadline: Instant,
) -> io::Result<(bool, bool)> {
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
    let (continued, complete) = if same {
        let offset = ji.offset;
        match &mut current {
            Some((file, _)) => (true, ji.read(file, offset, deadline)?),
            None => (true, true),
        }
    } else {
        match open(&journal::rotated_path(path))? {
            // Rotated since: the rest of the old file, then the new one.
            Some((mut old, meta)) if ji.is(&old, &meta)? => {
                let offset = ji.offset;
                let mut complete = ji.read(&mut old, offset, deadline)?;
                if let (true, Some((file, _))) = (complete, &mut current) {
                    complete = ji.read(file, 0, deadline)?;
                }
                (true, complete)
            }
            _ => (false, false),
        }
    };
    let mut complete = complete;
    if !continued {
        ji = JournalIndex::new(path);
        complete = true;
        if let Some((mut old, _)) = open(&journal::rotated_path(path))? {
            complete = ji.read(&mut old, 0, deadline)?;
        }
        if let (true, Some((file, _))) = (complete, &mut current) {
            complete = ji.read(file, 0, deadline)?;
        }
    }
    let changed = !continued || before != (ji.dev, ji.ino, ji.offset);
    *index = Some(ji);
    Ok((changed, complete))
}

/// The index of HWDIR and the journal of `cfg`, brought up to date (and
/// saved when it changed). What cannot be read is added to `errors`.
pub fn load_and_update(cfg: &Config, errors: &mut Vec<String>) -> Index {
    let start = Instant::now();
    let path = super::index_path(&cfg.hw_dir);
    if let Some(dir) = path.parent() {
        let _ = fs::DirBuilder::new().mode(0o700).create(dir);
    }
    let mut index = load(&path).unwrap_or_default();
    // Saving the index takes about as long as loading it did. An index
    // that cannot be saved is built whole: no later view could go on.
    let budget = if writable(path.parent().unwrap_or(&cfg.hw_dir)) {
        BUDGET.saturating_sub(start.elapsed())
    } else {
        WHOLE
    };
    let deadline = start + budget;
    let mut changed = index.format != FORMAT;
    index.format = FORMAT;
    // The journal first: the standing of the machines shown.
    match &cfg.journal {
        Some(journal) => match update_journal(&mut index.journal, journal, deadline) {
            Ok((c, complete)) => {
                changed |= c;
                index.journal_pending = !complete;
            }
            Err(e) => errors.push(format!("{}: {e}", journal.display())),
        },
        None => changed |= index.journal.take().is_some(),
    }
    match update_hw(&mut index, cfg, deadline, MIN_SLICE) {
        Ok(c) => changed |= c,
        Err(e) => errors.push(format!("{}: {e}", cfg.hw_dir.display())),
    }
    if changed {
        if let Ok(text) = postcard::to_stdvec(&index) {
            // A failure only means the next view does the work again.
            let _ = store::replace_cache_file(&path, &text);
        }
    }
    index
}

/// A time no indexing reaches: the deadline of a view that indexes all.
const WHOLE: Duration = Duration::from_secs(86_400);

/// Can this process create files in `dir`?
fn writable(dir: &Path) -> bool {
    let Ok(dir) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access only reads the NUL-terminated path it is given.
    unsafe { libc::access(dir.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
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

/// Brings the `.hw` summaries up to date, summarising new files until
/// `deadline` (for `slice` at least); `true` when one changed.
/// Files left for later are listed in `index.pending`, and HWDIR is then
/// not taken as indexed.
fn update_hw(
    index: &mut Index,
    cfg: &Config,
    deadline: Instant,
    slice: Duration,
) -> io::Result<bool> {
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
    let mut names = Vec::new();
    for entry in fs::read_dir(&cfg.hw_dir)? {
        let Ok(entry) = entry else { continue };
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.starts_with('.') && name.ends_with(".hw") {
            names.push(name);
        }
    }
    let keys = in_parallel(&names, |name| {
        // Not followed: a link is not a machine's file (the server
        // replaces links by files).
        fs::symlink_metadata(cfg.hw_dir.join(name))
            .ok()
            .filter(fs::Metadata::is_file)
            .map(|meta| Key::of(&meta))
    });
    let mut fresh = BTreeMap::new();
    let mut new = Vec::new();
    for (name, key) in names.into_iter().zip(keys) {
        let Some(key) = key else { continue };
        match index.hw.remove(&name) {
            Some(entry) if entry.key == key => {
                fresh.insert(name, entry);
            }
            _ => new.push((name, key)),
        }
    }
    let changed = !index.hw.is_empty() || !new.is_empty();
    let deadline = deadline.max(Instant::now() + slice);
    let summaries = in_parallel(&new, |(name, key)| {
        (Instant::now() < deadline).then(|| summarize_file(&cfg.hw_dir.join(name), cfg, *key))
    });
    index.pending.clear();
    for ((name, _), summary) in new.into_iter().zip(summaries) {
        match summary {
            Some(entry) => {
                fresh.insert(name, entry);
            }
            None => index.pending.push(name),
        }
    }
    index.hw_dir = (settled && index.pending.is_empty()).then_some(dir);
    index.hw = fresh;
    Ok(changed || known != index.hw_dir)
}

/// `f` of each item, in order, computed by two threads (a view must leave
/// the other processors, if any, to provisioning): reading and summarising
/// thousands of files is mostly system calls, which the second processor
/// of a small server halves.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    if threads < 2 || items.len() < 2 {
        return items.iter().map(f).collect();
    }
    // Interleaved, so that both threads stop at the deadline with the same
    // share done, whatever the order of the directory.
    let next = AtomicUsize::new(0);
    let (f, next) = (&f, &next);
    let mut results: Vec<Option<R>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        let mut results: Vec<Option<R>> = items.iter().map(|_| None).collect();
        for worker in workers {
            let done = worker
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            for (i, r) in done {
                results[i] = Some(r);
            }
        }
        results
    });
    // Every index was taken by one worker.
    results.iter_mut().filter_map(Option::take).collect()
}

fn summarize_file(path: &Path, cfg: &Config, key: Key) -> HwEntry {
    // The server replaces these files by renaming new ones over them: a
    // file opened is one whole version, indexed under its own identity.
    let read = File::open(path).and_then(|mut file| {
        let meta = file.metadata()?;
        let mut src = Vec::with_capacity(meta.size() as usize + 1);
        file.read_to_end(&mut src)?;
        Ok((src, meta))
    });
    let key = match &read {
        Ok((_, meta)) => Key::of(meta),
        _ => key,
    };
    let summary: Result<Hardware, String> = read
        .map_err(|e| format!("{}: {e}", path.display()))
        .and_then(|(src, _)| match hw::scan_saved(&src, &cfg.hw_limits) {
            Some(lines) => Ok(summarize_scanned(&lines)),
            None => hw::parse_hw_with(path, &src, &cfg.hw_limits)
                .map(|items| summarize_hw(&items))
                .map_err(|e| e.to_string()),
        });
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

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
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
        assert!(update_journal(&mut index, &path, far()).unwrap().0);
        assert!(!update_journal(&mut index, &path, far()).unwrap().0);
        // m1 again, then past the size: rotated, and m2 in the new file.
        journal::append(&path, 3 * line, &record("m1", "b")).unwrap();
        journal::append(&path, 3 * line, &record("m2", "c")).unwrap();
        assert!(journal::rotated_path(&path).exists());
        assert!(update_journal(&mut index, &path, far()).unwrap().0);
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
        update_journal(&mut index, &path, far()).unwrap();
        assert_eq!(index.as_ref().unwrap().sections["SERVER"]["m2"].lines, 2);
        // Replaced by another file: rebuilt from both files.
        fs::remove_file(&path).unwrap();
        journal::append(&path, u64::MAX, &record("m3", "d")).unwrap();
        assert!(update_journal(&mut index, &path, far()).unwrap().0);
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

    /// The journal is read by two threads, each summarising its half: the
    /// same summaries as reading it line by line.
    #[test]
    fn the_journal_read_in_halves_gives_what_it_gives_line_by_line() {
        use crate::journal::Tried;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("journal");
        let mut expected: BTreeMap<String, Seen> = BTreeMap::new();
        for n in 0..400usize {
            let sysname = format!("m{}", n * 7 % 13);
            let decision = match n % 5 {
                0 => Decision::Configured {
                    profile: format!("p{}", n % 3),
                    cmdb_entry: Some(n),
                    hostname: Some(format!("h{n}")),
                    ip: None,
                },
                1 => Decision::NoMatch {
                    profiles: vec![Tried {
                        profile: "p1".into(),
                        spec: Some(n % 4),
                        spec_text: None,
                        note: None,
                    }],
                    more: 0,
                },
                2 => Decision::LogStored {
                    file: format!("{sysname}.log.gz"),
                },
                3 => Decision::FailureReport {
                    profile: "p0".into(),
                    quota_given_back: true,
                },
                _ => Decision::Refused {
                    status: 200,
                    reason: format!("reason {n}"),
                },
            };
            let r = Record::new(
                "upload.py",
                "192.0.2.1",
                Some("SERVER"),
                Some(&sysname),
                decision,
            );
            expected.entry(sysname).or_default().add(&r);
            journal::append(&path, u64::MAX, &r).unwrap();
        }
        let mut index = None;
        update_journal(&mut index, &path, far()).unwrap();
        assert_eq!(index.unwrap().sections["SERVER"], expected);
    }

    /// A view out of time leaves the files it did not summarise to the
    /// next views, and does not take HWDIR as indexed until they are.
    #[test]
    fn files_left_by_a_view_out_of_time_are_indexed_by_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = Config::for_dir(tmp.path());
        for i in 0..100 {
            fs::write(
                tmp.path().join(format!("m{i}.hw")),
                format!("[('system', 'product', 'serial', 'S{i}')]\n"),
            )
            .unwrap();
        }
        let mut index = Index::default();
        update_hw(&mut index, &cfg, Instant::now(), Duration::ZERO).unwrap();
        assert_eq!(index.hw.len() + index.pending.len(), 100);
        assert!(!index.pending.is_empty());
        let later = Instant::now() + Duration::from_secs(60);
        update_hw(&mut index, &cfg, later, Duration::ZERO).unwrap();
        assert!(index.pending.is_empty());
        assert_eq!(index.hw.len(), 100);
        let serial = index.hw["m42.hw"].summary().unwrap().serial;
        assert_eq!(serial.as_deref(), Some("S42"));
    }
}

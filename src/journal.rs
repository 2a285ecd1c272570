//! The decisions journal: one JSON line per request of `upload.py` and
//! `upload-health.py`, saying what the server decided for which machine.
//!
//! The server otherwise keeps each machine's `.hw` file and the CMDB, and
//! nothing of its decisions: a machine that matched nothing left no trace
//! but a line in Apache's error log. The status page's machine views and
//! `edeploy plan` read the journal back ([`for_each`], [`last_decisions`]).
//!
//! Writing it must never cost a machine its installation, nor delay the
//! others: a line is appended after the answer is decided, outside the
//! provisioning lock, by a single `write(2)` on a file opened with
//! `O_APPEND`, so that concurrent requests never interleave their lines
//! (Linux appends one `write` to a regular file as a whole). A line is
//! bounded ([`MAX_LINE`]: long values are cut, long lists shortened). A
//! failure is returned for the caller to log as a warning. The journal is
//! not flushed to disk: it is a record for people, not a commit.
//!
//! At `JOURNALSIZE` bytes the journal is renamed `<journal>.1` (replacing
//! the previous one) and a new one is started. Writers that find it full
//! serialise on an `flock` of the full file and rename it only if the name
//! still gives that file, so that two of them never rotate twice (which
//! would lose the first rotated file). A writer that opened the file just
//! before the rename appends to `<journal>.1`: its line is kept. Readers
//! take no lock: they read `<journal>.1`, then `<journal>`, and skip what
//! is not a whole line (a write cut short by a full disk).

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::explain;
use crate::hw::Item;
use crate::literal::Dict;
use crate::logs::UtcTime;
use crate::spec::{self, Budget};
use crate::state::State;
use crate::store;

/// Longest line written, newline included.
pub const MAX_LINE: usize = 64 * 1024;
/// Longest text value kept in a line, in bytes (longer ones are cut).
pub const MAX_TEXT: usize = 512;
/// Most profiles listed in a `no_match` decision.
pub const MAX_PROFILES: usize = 50;
/// Matching work allowed to explain a machine that matched nothing, for
/// all its profiles together: a tenth of what its request may use.
pub const EXPLAIN_BUDGET: u64 = spec::MATCH_BUDGET / 10;

/// What every line starts with: a reader finds whole lines from it.
const LINE_START: &[u8] = b"{\"time\":\"";

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// UTC, `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub time: String,
    /// `REMOTE_ADDR`.
    pub client: String,
    /// The CGI that answered: `upload.py` or `upload-health.py`.
    pub cgi: String,
    /// The section of edeploy.conf used; `None` for a request refused
    /// before its form was read.
    pub section: Option<String>,
    /// The machine's name (its `.hw` file's, or its log's), when known.
    pub sysname: Option<String>,
    pub decision: Decision,
}

/// What the server decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decision {
    /// A profile matched: the machine got its configure script.
    Configured {
        profile: String,
        /// The CMDB entry given (0-based), when the profile has a CMDB.
        cmdb_entry: Option<usize>,
        /// `hostname` and `ip` of that entry, when it has them.
        hostname: Option<String>,
        ip: Option<String>,
    },
    /// Profiles had quota, none matched.
    NoMatch {
        /// Each profile tried, in the state's order.
        profiles: Vec<Tried>,
        /// Profiles tried but not listed (beyond [`MAX_PROFILES`]).
        #[serde(default, skip_serializing_if = "is_zero")]
        more: usize,
    },
    /// The machine reported a failed installation of `profile`.
    FailureReport {
        profile: String,
        /// A numeric count got one installation back.
        quota_given_back: bool,
    },
    /// An installation log was stored in LOGDIR under this name.
    LogStored { file: String },
    /// A health-check result was stored, as this path under HEALTHDIR.
    HealthStored { file: String },
    /// The request was refused: the answer's HTTP status (200 for the
    /// error scripts the initrd runs) and the message it got.
    Refused { status: u16, reason: String },
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A profile that did not match, and its first spec the machine fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tried {
    pub profile: String,
    /// 1-based number of the failing spec in the `.specs` file.
    pub spec: Option<usize>,
    /// That spec, as the file writes it.
    pub spec_text: Option<String>,
    /// Why no spec is named (no `.specs` file, the explanation's budget ran
    /// out...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Decision {
    /// The short name of the decision, as in the JSON (`configured`...).
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Configured { .. } => "configured",
            Decision::NoMatch { .. } => "no_match",
            Decision::FailureReport { .. } => "failure_report",
            Decision::LogStored { .. } => "log_stored",
            Decision::HealthStored { .. } => "health_stored",
            Decision::Refused { .. } => "refused",
        }
    }

    /// The profile the decision is about, if any.
    pub fn profile(&self) -> Option<&str> {
        match self {
            Decision::Configured { profile, .. } | Decision::FailureReport { profile, .. } => {
                Some(profile)
            }
            _ => None,
        }
    }

    /// A configured machine: `hostname` and `ip` from its variables, which
    /// hold its CMDB entry merged in (only read when it got one).
    pub fn configured(profile: &str, cmdb_entry: Option<usize>, vars: &Dict) -> Decision {
        let text = |key: &str| {
            cmdb_entry?;
            let v = vars.get_str(key)?;
            Some(match v.as_text() {
                Some(s) => s.to_owned(),
                None => String::from_utf8_lossy(&crate::literal::repr(v)).into_owned(),
            })
        };
        Decision::Configured {
            profile: profile.to_owned(),
            cmdb_entry,
            hostname: text("hostname"),
            ip: text("ip"),
        }
    }

    /// A machine that matched none of `profiles` (in the state's order):
    /// each with its first failing spec, found by the explain machinery
    /// ([`explain::first_failing_spec`]) within [`EXPLAIN_BUDGET`] for all
    /// of them. Reads the state and specs as any reader does, without the
    /// lock.
    pub fn no_match(cfg: &Config, items: &[Item], profiles: &[String]) -> Decision {
        let state_file = cfg.config_dir.join("state");
        let state = store::read_version(&state_file)
            .map_err(|e| e.to_string())
            .and_then(|src| State::parse(&state_file, &src).map_err(|e| e.to_string()));
        let mut budget = Budget::new(EXPLAIN_BUDGET);
        let tried = profiles
            .iter()
            .take(MAX_PROFILES)
            .map(|profile| {
                let (spec, spec_text, note) = match &state {
                    Ok(state) => explain_profile(state, profile, items, &mut budget),
                    Err(e) => (None, None, Some(e.clone())),
                };
                Tried {
                    profile: profile.clone(),
                    spec,
                    spec_text,
                    note,
                }
            })
            .collect();
        Decision::NoMatch {
            profiles: tried,
            more: profiles.len().saturating_sub(MAX_PROFILES),
        }
    }
}

/// The failing spec of one profile: its number and text, or a note.
fn explain_profile(
    state: &State,
    profile: &str,
    items: &[Item],
    budget: &mut Budget,
) -> (Option<usize>, Option<String>, Option<String>) {
    let note = |s: String| (None, None, Some(s));
    let file = match state.profile_file(profile, "specs") {
        Ok(file) => file,
        Err(e) => return note(e.to_string()),
    };
    let src = match store::read_version(&file) {
        Ok(src) => src,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return note(format!("no {}", file.display()))
        }
        Err(e) => return note(format!("{}: {e}", file.display())),
    };
    let specs = match spec::parse_specs(&file, &src) {
        Ok(specs) => specs,
        Err(e) => return note(e.to_string()),
    };
    match explain::first_failing_spec(items, &specs, budget) {
        Ok(Some(i)) => (Some(i + 1), specs.get(i).map(explain::py_tuple), None),
        Ok(None) => note("matches now (the state or specs changed meanwhile)".to_owned()),
        Err(spec::SpecError::TooComplex { .. }) => {
            note("not explained: the explanation's work budget ran out".to_owned())
        }
        Err(e) => note(e.to_string()),
    }
}

impl Record {
    /// A record of now.
    pub fn new(
        cgi: &str,
        client: &str,
        section: Option<&str>,
        sysname: Option<&str>,
        decision: Decision,
    ) -> Record {
        Record {
            time: timestamp(SystemTime::now()),
            client: client.to_owned(),
            cgi: cgi.to_owned(),
            section: section.map(str::to_owned),
            sysname: sysname.map(str::to_owned),
            decision,
        }
    }

    /// The line written: JSON, at most [`MAX_LINE`] bytes with its newline.
    pub fn to_line(&self) -> Vec<u8> {
        let mut r = self.clone();
        for s in [&mut r.time, &mut r.client, &mut r.cgi] {
            clip(s);
        }
        for s in [&mut r.section, &mut r.sysname].into_iter().flatten() {
            clip(s);
        }
        match &mut r.decision {
            Decision::Configured {
                profile,
                hostname,
                ip,
                ..
            } => {
                clip(profile);
                for s in [hostname, ip].into_iter().flatten() {
                    clip(s);
                }
            }
            Decision::NoMatch { profiles, .. } => {
                for t in profiles {
                    clip(&mut t.profile);
                    for s in [&mut t.spec_text, &mut t.note].into_iter().flatten() {
                        clip(s);
                    }
                }
            }
            Decision::FailureReport { profile, .. } => clip(profile),
            Decision::LogStored { file } | Decision::HealthStored { file } => clip(file),
            Decision::Refused { reason, .. } => clip(reason),
        }
        let mut line = serialize(&r);
        if line.len() > MAX_LINE {
            // Only a list of profiles can get there: keep its count.
            if let Decision::NoMatch { profiles, more } = &mut r.decision {
                *more += profiles.len();
                profiles.clear();
            }
            line = serialize(&r);
        }
        line
    }
}

fn serialize(r: &Record) -> Vec<u8> {
    // A record of strings and numbers always serialises.
    let mut line = serde_json::to_vec(r).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Cuts `s` to [`MAX_TEXT`] bytes, on a character boundary, marking the cut.
fn clip(s: &mut String) {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
}

/// `t` as the journal writes it.
pub fn timestamp(t: SystemTime) -> String {
    let t = UtcTime::from_system_time(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.micros
    )
}

/// Why a line could not be appended.
#[derive(Debug)]
pub struct JournalError {
    pub path: PathBuf,
    pub source: io::Error,
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot write the journal {}: {}",
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for JournalError {}

/// `<journal>.1`: the journal before its last rotation.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Appends `record` to the journal of `cfg` (`JOURNAL`, `JOURNALSIZE`),
/// if it has one.
pub fn record(cfg: &Config, record: &Record) -> Result<(), JournalError> {
    match &cfg.journal {
        Some(path) => append(path, cfg.journal_size, record),
        None => Ok(()),
    }
}

/// Times a writer reopens the journal because another one rotated it.
const OPEN_TRIES: usize = 4;

/// Appends `record` to the journal `path`, rotating it first when the line
/// would take it past `max_size` bytes.
pub fn append(path: &Path, max_size: u64, record: &Record) -> Result<(), JournalError> {
    let error = |source| JournalError {
        path: path.to_path_buf(),
        source,
    };
    let line = record.to_line();
    let mut attempt = 1;
    loop {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(error)?;
        let size = file.metadata().map_err(error)?.len();
        if attempt < OPEN_TRIES && size > 0 && size + line.len() as u64 > max_size {
            rotate(path, &file).map_err(error)?;
            attempt += 1;
            continue;
        }
        // One write: appended whole, never interleaved with another's.
        let written = (&file).write(&line).map_err(error)?;
        if written != line.len() {
            return Err(error(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("only {written} of the line's {} bytes written", line.len()),
            )));
        }
        return Ok(());
    }
}

/// Renames the full journal `file` (opened as `path`) to `<path>.1`,
/// unless another writer did it already.
fn rotate(path: &Path, file: &File) -> io::Result<()> {
    file.lock()?;
    let opened = file.metadata()?;
    let same = match fs::metadata(path) {
        Ok(named) => (named.dev(), named.ino()) == (opened.dev(), opened.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    if same {
        fs::rename(path, rotated_path(path))?;
    }
    // Unlocked when `file` is closed.
    Ok(())
}

/// The record on `line` (without its newline), skipping anything before
/// the start of the last record on it (what a write cut short left).
pub fn parse_line(line: &[u8]) -> Option<Record> {
    if let Ok(record) = serde_json::from_slice(line) {
        return Some(record);
    }
    let start = line
        .windows(LINE_START.len())
        .rposition(|w| w == LINE_START)
        .filter(|&start| start > 0)?;
    serde_json::from_slice(&line[start..]).ok()
}

/// Calls `f` on every record of the journal `path`, oldest first:
/// `<path>.1`, then `<path>`. A missing file is an empty one.
pub fn for_each(path: &Path, mut f: impl FnMut(Record)) -> io::Result<()> {
    for_each_in(&rotated_path(path), &mut f)?;
    for_each_in(path, &mut f)
}

/// Calls `f` on every record of the one file `path`.
fn for_each_in(path: &Path, f: &mut impl FnMut(Record)) -> io::Result<()> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if let Some(record) = parse_line(&line) {
                f(record);
            }
        }
    }
}

/// The last decision about each machine, by sysname: its last record
/// other than a stored log or health result.
pub fn last_decisions(path: &Path) -> io::Result<HashMap<String, Record>> {
    let mut last = HashMap::new();
    for_each(path, |r| {
        if is_decision(&r.decision) {
            if let Some(sysname) = r.sysname.clone() {
                last.insert(sysname, r);
            }
        }
    })?;
    Ok(last)
}

/// A decision about a machine's installation (not a stored file).
pub fn is_decision(d: &Decision) -> bool {
    !matches!(
        d,
        Decision::LogStored { .. } | Decision::HealthStored { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn record(i: usize) -> Record {
        Record::new(
            "upload.py",
            "192.0.2.1",
            Some("SERVER"),
            Some(&format!("machine-{i}")),
            Decision::Configured {
                profile: "hp".into(),
                cmdb_entry: Some(i),
                hostname: Some(format!("host{i}")),
                ip: None,
            },
        )
    }

    /// The records of the one file `path`.
    fn records(path: &Path) -> Vec<Record> {
        let mut all = Vec::new();
        for_each_in(path, &mut |r| all.push(r)).unwrap();
        all
    }

    #[test]
    fn a_line_is_json_with_its_fields() {
        let line = record(3).to_line();
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.starts_with("{\"time\":\"20"), "{text}");
        assert!(text.ends_with("}\n"));
        assert!(
            text.contains(
                "\"decision\":{\"kind\":\"configured\",\"profile\":\"hp\",\"cmdb_entry\":3,\
                 \"hostname\":\"host3\",\"ip\":null}"
            ),
            "{text}"
        );
        assert_eq!(parse_line(&line[..line.len() - 1]), Some(record_at(&line)));
    }

    fn record_at(line: &[u8]) -> Record {
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn lines_are_bounded() {
        let long = "x".repeat(10 * MAX_TEXT);
        let tried = (0..MAX_PROFILES)
            .map(|i| Tried {
                profile: format!("{i}{long}"),
                spec: Some(1),
                spec_text: Some(long.clone()),
                note: Some(long.clone()),
            })
            .collect();
        let r = Record::new(
            "upload.py",
            &long,
            Some(&long),
            Some(&long),
            Decision::NoMatch {
                profiles: tried,
                more: 0,
            },
        );
        let line = r.to_line();
        assert!(line.len() <= MAX_LINE, "{}", line.len());
        let back = parse_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(back.client.len(), MAX_TEXT);
        assert!(back.client.ends_with("..."));
        let Decision::NoMatch { profiles, more } = back.decision else {
            panic!("{back:?}");
        };
        assert_eq!(profiles.len() + more, MAX_PROFILES);

        let mut s = "é".repeat(MAX_TEXT);
        clip(&mut s);
        assert!(s.len() <= MAX_TEXT && s.ends_with("..."));
    }

    #[test]
    fn a_torn_line_is_skipped_and_the_next_one_found() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("journal");
        let mut text = b"garbage\n{\"time\":\"2026-01-01T00:00:00.000000Z\",\"cli".to_vec();
        text.extend_from_slice(&record(1).to_line());
        text.extend_from_slice(&record(2).to_line());
        text.extend_from_slice(b"{\"time\":\"cut short");
        fs::write(&path, text).unwrap();
        let names: Vec<_> = records(&path).into_iter().map(|r| r.sysname).collect();
        assert_eq!(names, [Some("machine-1".into()), Some("machine-2".into())]);
    }

    #[test]
    fn concurrent_writers_lose_no_line_and_rotate_once_per_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("journal");
        let line_len = record(1000).to_line().len() as u64;
        // 8 x 60 lines, a limit of 300: one rotation. A second one (two
        // writers finding the file full) would replace the rotated file
        // and lose its lines.
        let max = 300 * line_len;
        std::thread::scope(|s| {
            for t in 1..=8 {
                let path = &path;
                s.spawn(move || {
                    for i in 0..60 {
                        append(path, max, &record(t * 1000 + i)).unwrap();
                    }
                });
            }
        });
        let rotated = records(&rotated_path(&path));
        let current = records(&path);
        for file in [rotated_path(&path), path.clone()] {
            let size = fs::metadata(&file).unwrap().len();
            // Past the limit by at most what the other writers appended
            // before one of them rotated it.
            assert!(size <= max + 8 * line_len, "{size}");
            let text = fs::read(&file).unwrap();
            assert_eq!(text.len() as u64 % line_len, 0, "a torn line");
        }
        assert!(rotated.len() as u64 >= 300 - 8, "{}", rotated.len());
        assert_eq!(rotated.len() + current.len(), 480, "lines lost");
        // Each writer's lines, whole and in its order.
        for t in 1..=8 {
            let mine: Vec<usize> = rotated
                .iter()
                .chain(&current)
                .filter_map(|r| match &r.decision {
                    Decision::Configured { cmdb_entry, .. } => *cmdb_entry,
                    _ => None,
                })
                .filter(|i| i / 1000 == t)
                .collect();
            assert_eq!(mine, (t * 1000..t * 1000 + 60).collect::<Vec<_>>());
        }
    }

    #[test]
    fn nothing_is_lost_without_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("journal");
        std::thread::scope(|s| {
            for t in 0..8 {
                let path = &path;
                s.spawn(move || {
                    for i in 0..200 {
                        append(path, u64::MAX, &record(t * 1000 + i)).unwrap();
                    }
                });
            }
        });
        assert_eq!(records(&path).len(), 1600);
        assert!(!rotated_path(&path).exists());
    }

    #[test]
    fn rotation_replaces_the_previous_rotated_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("journal");
        let line_len = record(0).to_line().len() as u64;
        for i in 0..5 {
            append(&path, 2 * line_len, &record(i)).unwrap();
        }
        let entries = |p: &Path| -> Vec<usize> {
            records(p)
                .iter()
                .filter_map(|r| match r.decision {
                    Decision::Configured { cmdb_entry, .. } => cmdb_entry,
                    _ => None,
                })
                .collect()
        };
        assert_eq!(entries(&rotated_path(&path)), [2, 3]);
        assert_eq!(entries(&path), [4]);
    }

    #[test]
    fn an_unwritable_journal_is_an_error_to_log() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("no/such/dir/journal");
        let e = append(&missing, u64::MAX, &record(1)).unwrap_err();
        assert_eq!(e.path, missing);
        assert!(e.to_string().starts_with("cannot write the journal"), "{e}");
        // A directory where the file should be.
        let dir = tmp.path().join("journal");
        fs::create_dir(&dir).unwrap();
        assert!(append(&dir, u64::MAX, &record(1)).is_err());
        // A file without write permission (root writes anyway).
        let ro = tmp.path().join("ro");
        fs::write(&ro, "").unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o444)).unwrap();
        let am_root = fs::metadata("/proc/self").unwrap().uid() == 0;
        assert_eq!(append(&ro, u64::MAX, &record(1)).is_err(), !am_root);
    }

    #[test]
    fn readers_of_the_last_decisions() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("journal");
        let mut r = record(1);
        append(&path, u64::MAX, &r).unwrap();
        r.decision = Decision::LogStored {
            file: "machine-1.log.gz".into(),
        };
        append(&path, u64::MAX, &r).unwrap();
        r.sysname = Some("machine-2".into());
        r.decision = Decision::NoMatch {
            profiles: Vec::new(),
            more: 0,
        };
        append(&path, u64::MAX, &r).unwrap();
        let last = last_decisions(&path).unwrap();
        assert_eq!(last.len(), 2);
        assert_eq!(last["machine-1"].decision.kind(), "configured");
        assert_eq!(last["machine-2"].decision.kind(), "no_match");
        assert!(last_decisions(&tmp.path().join("none")).unwrap().is_empty());
    }
}

//! `edeploy check`: validation of a configuration directory before it
//! reaches the server.
//!
//! The legacy server finds mistakes only when a machine boots: a syntax
//! error in a `.specs` file fails every request, an unknown function or a
//! typo in a regexp silently never matches, two CMDB entries with the same
//! address give it to two machines. This module reads CONFIGDIR the way the
//! server does (same parsers, same matcher checks) and reports every finding
//! with its file, line and column, so it can run in a pre-commit hook.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::cmdb::DEFAULT_MAX_CMDB_SIZE;
use crate::generate::{self, GenerateError};
use crate::literal::{self, Dict, Document, Value};
use crate::spec::{self, SpecError};
use crate::state::{Quota, State, StateError};
use crate::store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One problem found, with its 1-based line and column when known.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub path: PathBuf,
    pub position: Option<(usize, usize)>,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Finding {
    /// `path:line:col: error: message`, the format editors and CI parse.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {severity}: {}", self.message)
    }
}

/// Everything found in a configuration directory.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// How many files were read.
    pub files: usize,
}

impl Report {
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    fn add(
        &mut self,
        path: &Path,
        position: Option<(usize, usize)>,
        severity: Severity,
        message: String,
    ) {
        self.findings.push(Finding {
            path: path.to_path_buf(),
            position,
            severity,
            message,
        });
    }
}

/// CMDB keys whose values must be unique: two machines must not get the
/// same address or name.
const UNIQUE_KEYS: [&str; 2] = ["ip", "hostname"];

/// Checks the state file and every `*.specs`, `*.cmdb` and `*.configure`
/// file of `dir`. Findings come file by file (state first, then by name).
pub fn check_dir(dir: &Path) -> Report {
    let mut report = Report::default();
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(e) => {
            report.add(
                dir,
                None,
                Severity::Error,
                format!("cannot read the directory: {e}"),
            );
            return report;
        }
    };
    names.sort();

    if names.iter().any(|n| n == store::COMMIT_RECORD) {
        check_commit_record(&dir.join(store::COMMIT_RECORD), &mut report);
    }
    let quotas = check_state(dir, &names, &mut report);
    for name in &names {
        let path = dir.join(name);
        if name.ends_with(".specs") {
            check_specs(&path, &mut report);
        } else if let Some(profile) = name.strip_suffix(".cmdb") {
            let in_use = quotas.get(profile).is_some_and(|q| q.available());
            check_cmdb(&path, in_use, &mut report);
        } else if name.ends_with(".configure") {
            report.files += 1;
            if let Err(e) = std::fs::read(&path) {
                report.add(&path, None, Severity::Error, format!("cannot read: {e}"));
            }
        }
    }
    report
}

/// The record of the last commit of the state and a CMDB: one that a
/// killed request left unfinished means the files disagree until the next
/// request completes it (check writes nothing, it only says so).
fn check_commit_record(path: &Path, report: &mut Report) {
    let found = match store::pending_commit(path) {
        Ok(found) => found,
        Err(e) => {
            report.add(path, None, Severity::Error, format!("cannot read: {e}"));
            return;
        }
    };
    if !found.completed.is_empty() {
        report.add(
            path,
            None,
            Severity::Error,
            format!(
                "a request was killed while committing: {} not yet replaced by its new \
                 content, so the state and CMDB disagree; the next request completes it",
                store::path_list(&found.completed)
            ),
        );
    }
    if !found.changed.is_empty() {
        report.add(
            path,
            None,
            Severity::Warning,
            format!(
                "the interrupted commit will leave {} as is: changed by someone else since",
                store::path_list(&found.changed)
            ),
        );
    }
    if found.damaged {
        report.add(
            path,
            None,
            Severity::Warning,
            "torn commit record (a request killed while writing it, before it changed \
             anything): ignored, the next request rewrites it"
                .into(),
        );
    }
}

/// Reads a file for checking; `None` (and an error finding) when it cannot.
fn read(path: &Path, report: &mut Report) -> Option<Vec<u8>> {
    report.files += 1;
    match crate::store::read_version(path) {
        Ok(src) => Some(src),
        Err(e) => {
            report.add(path, None, Severity::Error, format!("cannot read: {e}"));
            None
        }
    }
}

/// The state file and the files each of its profiles needs; returns the
/// profiles' quotas.
fn check_state(dir: &Path, names: &[String], report: &mut Report) -> HashMap<String, Quota> {
    let mut quotas = HashMap::new();
    let path = dir.join("state");
    if !names.iter().any(|n| n == "state") {
        report.add(
            &path,
            None,
            Severity::Error,
            "no state file: the server answers every machine with an error".into(),
        );
        return quotas;
    }
    let Some(src) = read(&path, report) else {
        return quotas;
    };
    let positions = Positions::new(&src);
    let state = match State::parse(&path, &src) {
        Ok(state) => state,
        Err(StateError::Parse(e)) => {
            report.add(&path, Some((e.line, e.column)), Severity::Error, e.message);
            return quotas;
        }
        Err(StateError::Invalid { index, message, .. }) => {
            report.add(&path, positions.at(&[0, index]), Severity::Error, message);
            return quotas;
        }
    };
    let has = |name: String| names.contains(&name);
    for (index, entry) in state.entries().iter().enumerate() {
        let at = positions.at(&[0, index]);
        let profile = &entry.profile;
        if quotas.insert(profile.clone(), entry.quota).is_some() {
            report.add(
                &path,
                at,
                Severity::Warning,
                format!("profile '{profile}' is listed more than once"),
            );
        }
        if let Quota::Remaining(n) = entry.quota {
            if n <= 0 {
                report.add(
                    &path,
                    at,
                    Severity::Warning,
                    format!("profile '{profile}' has no installation left (count {n})"),
                );
            }
        }
        // The server refuses the name before looking for its files.
        if let Err(e) = state.profile_file(profile, "specs") {
            report.add(&path, at, Severity::Error, e.message());
            continue;
        }
        let severity = if entry.quota.available() {
            Severity::Error
        } else {
            Severity::Warning
        };
        if !has(format!("{profile}.specs")) {
            report.add(
                &path,
                at,
                severity,
                format!("profile '{profile}' has no {profile}.specs: it never matches"),
            );
        }
        if !has(format!("{profile}.configure")) {
            report.add(
                &path,
                at,
                severity,
                format!(
                    "profile '{profile}' has no {profile}.configure: \
                     a machine matching it gets an error"
                ),
            );
        }
    }
    quotas
}

fn check_specs(path: &Path, report: &mut Report) {
    let Some(src) = read(path, report) else {
        return;
    };
    let positions = Positions::new(&src);
    let specs = match spec::parse_specs(path, &src) {
        Ok(specs) => specs,
        Err(SpecError::Parse(e)) => {
            report.add(path, Some((e.line, e.column)), Severity::Error, e.message);
            return;
        }
        Err(SpecError::Invalid { index, message, .. }) => {
            let at = match index {
                Some(i) => positions.at(&[0, i]),
                None => positions.at(&[0]),
            };
            report.add(path, at, Severity::Error, message);
            return;
        }
        Err(e) => {
            report.add(path, None, Severity::Error, e.to_string());
            return;
        }
    };
    if specs.is_empty() {
        report.add(
            path,
            positions.at(&[0]),
            Severity::Warning,
            "no specs: every machine matches this profile".into(),
        );
    }
    // `$x` and `$$x` in one profile crash the legacy server after a match.
    let mut single = BTreeMap::new();
    let mut double = BTreeMap::new();
    for (i, s) in specs.iter().enumerate() {
        for (j, field) in s.iter().enumerate() {
            if let Err(problem) = spec::check_field(field) {
                report.add(
                    path,
                    positions.at(&[0, i, j]),
                    Severity::Error,
                    format!("field {}: {problem}", j + 1),
                );
            }
            if let Some(var) = field.as_str().and_then(|f| f.strip_prefix('$')) {
                let name = var.split_once('=').map_or(var, |(n, _)| n);
                match name.strip_prefix('$') {
                    Some(n) => double.entry(n.to_string()).or_insert((i, j)),
                    None => single.entry(name.to_string()).or_insert((i, j)),
                };
            }
        }
    }
    for (name, &(i, j)) in &double {
        if single.contains_key(name) {
            report.add(
                path,
                positions.at(&[0, i, j]),
                Severity::Error,
                format!(
                    "both ${name} and $${name} are used: the legacy server fails \
                     after matching such specs"
                ),
            );
        }
    }
}

/// A CMDB file: syntax, entries, `generate()` model, unique addresses and
/// names, and whether any entry is left (`in_use`: its profile has quota).
fn check_cmdb(path: &Path, in_use: bool, report: &mut Report) {
    let Some(src) = read(path, report) else {
        return;
    };
    if src.len() as u64 > DEFAULT_MAX_CMDB_SIZE {
        report.add(
            path,
            None,
            Severity::Warning,
            format!(
                "{} bytes, more than the default MAXCMDBSIZE ({DEFAULT_MAX_CMDB_SIZE} bytes): \
                 the server refuses it unless edeploy.conf sets a larger MAXCMDBSIZE",
                src.len()
            ),
        );
    }
    let document = match literal::parse(path, &src) {
        Ok(d) => d,
        Err(e) => {
            report.add(path, Some((e.line, e.column)), Severity::Error, e.message);
            return;
        }
    };
    let positions = Positions::new(&src);
    let mut scan = EntryScan::default();
    match document {
        Document::Literal(Value::List(values)) => {
            for (i, v) in values.iter().enumerate() {
                let at = positions.at(&[0, i]);
                match v {
                    Value::Dict(d) => scan.push(path, i, d, at, report),
                    _ => report.add(
                        path,
                        at,
                        Severity::Error,
                        format!("entry {i} is not a dict"),
                    ),
                }
            }
        }
        Document::Literal(_) => {
            report.add(
                path,
                positions.at(&[0]),
                Severity::Error,
                "expected a list of dicts or generate({...})".into(),
            );
            return;
        }
        Document::Generate(model) => {
            let Some(entries) = expand(path, &model, &positions, report) else {
                return;
            };
            // Generated entries have no text of their own: point at the model.
            let at = positions.at(&[0]);
            for (i, v) in entries.enumerate() {
                if let Value::Dict(d) = &v {
                    scan.push(path, i, d, at, report);
                }
            }
        }
    }
    if in_use && !scan.unused_left {
        report.add(
            path,
            None,
            Severity::Warning,
            format!(
                "no unused entry left among {}: a new machine of this profile gets \
                 'No more entry in the CMDB'",
                scan.entries
            ),
        );
    }
}

/// What is remembered of the entries of a CMDB while they go by: the values
/// that must be unique, whether one is still unused.
#[derive(Default)]
struct EntryScan {
    seen: [HashMap<Vec<u8>, usize>; UNIQUE_KEYS.len()],
    entries: usize,
    unused_left: bool,
}

impl EntryScan {
    fn push(
        &mut self,
        path: &Path,
        i: usize,
        entry: &Dict,
        at: Option<(usize, usize)>,
        report: &mut Report,
    ) {
        self.entries += 1;
        self.unused_left |= entry.get_str("used").is_none();
        for (key, seen) in UNIQUE_KEYS.iter().zip(self.seen.iter_mut()) {
            let Some(value) = entry.get_str(key) else {
                continue;
            };
            let text = match value {
                Value::Str(b) => b.clone(),
                other => literal::repr(other),
            };
            match seen.get(&text) {
                Some(&first) => {
                    let shown = String::from_utf8_lossy(&literal::repr(value)).into_owned();
                    report.add(
                        path,
                        at,
                        Severity::Error,
                        format!("entries {first} and {i} have the same {key} {shown}"),
                    );
                }
                None => {
                    seen.insert(text, i);
                }
            }
        }
    }
}

/// Expands a `generate()` model, warning when its ranges and lists have
/// different lengths: the longer ones are silently cut to the shortest.
fn expand(
    path: &Path,
    model: &Value,
    positions: &Positions,
    report: &mut Report,
) -> Option<generate::Generated> {
    let at = positions.at(&[0]);
    let entries = match generate::generate(model) {
        Ok(g) => g,
        Err(e) => {
            report.add(path, at, Severity::Error, e.to_string());
            return None;
        }
    };
    if let Value::Dict(dict) = model {
        for (k, (key, value)) in dict.iter().enumerate() {
            if matches!(value, Value::Tuple(_)) {
                let key_text = String::from_utf8_lossy(&literal::repr(key)).into_owned();
                report.add(
                    path,
                    positions.at(&[0, 0, k]).or(at),
                    Severity::Warning,
                    format!(
                        "generate(): the tuple {key_text} is copied whole into every entry (as by the legacy server); write a list to give one value per entry"
                    ),
                );
            }
        }
        let lengths: Vec<(usize, &Value, usize)> = dict
            .iter()
            .enumerate()
            .filter_map(|(k, (key, value))| Some((k, key, sequence_len(key, value)?)))
            .collect();
        if let Some(&(_, shortest_key, shortest)) = lengths.iter().min_by_key(|l| l.2) {
            for &(k, key, len) in &lengths {
                if len != shortest {
                    let key_text = String::from_utf8_lossy(&literal::repr(key)).into_owned();
                    let short_text =
                        String::from_utf8_lossy(&literal::repr(shortest_key)).into_owned();
                    let many = if len > generate::MAX_ENTRIES {
                        format!("more than {}", generate::MAX_ENTRIES)
                    } else {
                        len.to_string()
                    };
                    report.add(
                        path,
                        positions.at(&[0, 0, k]).or(at),
                        Severity::Warning,
                        format!(
                            "generate(): {key_text} has {many} values but {short_text} only \
                             {shortest}: only {shortest} entries are generated"
                        ),
                    );
                }
            }
        }
    }
    Some(entries)
}

/// How many values one key of a model takes, `None` when it repeats one
/// value: the count of the model made of that key alone.
fn sequence_len(key: &Value, value: &Value) -> Option<usize> {
    let alone: Dict = std::iter::once((key.clone(), value.clone())).collect();
    let alone = Value::Dict(alone);
    match generate::generate(&alone) {
        Ok(mut g) => {
            let n = g.len();
            // A plain string gives the model back: it repeats.
            (n != 1 || g.next().as_ref() != Some(&alone)).then_some(n)
        }
        Err(GenerateError::TooManyEntries) if matches!(value, Value::Str(_) | Value::List(_)) => {
            Some(generate::MAX_ENTRIES + 1)
        }
        Err(_) => None,
    }
}

/// Where the elements of a literal file start: the parser keeps no
/// positions, so findings about parsed values are located by a light scan of
/// the (already validated) text. `at(&[0, i, j])` is field `j` of entry `i`
/// of the top-level list; in `generate({...})`, `at(&[0, 0, k])` is key `k`.
pub struct Positions<'a> {
    src: &'a [u8],
    /// Offsets where lines start.
    lines: Vec<usize>,
    top: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    start: usize,
    children: Vec<Node>,
}

/// Elements are recorded down to this depth (`at` paths of this length).
const MAX_PATH: usize = 3;

impl<'a> Positions<'a> {
    pub fn new(src: &'a [u8]) -> Positions<'a> {
        let bom = if src.starts_with(b"\xef\xbb\xbf") {
            3
        } else {
            0
        };
        let mut lines = vec![bom];
        let mut i = 0;
        while let Some(&b) = src.get(i) {
            i += 1;
            if b == b'\r' && src.get(i) == Some(&b'\n') {
                i += 1;
            }
            if b == b'\n' || b == b'\r' {
                lines.push(i);
            }
        }
        Positions {
            src,
            lines,
            top: scan(src, bom),
        }
    }

    /// The 1-based line and column of the element at `path`.
    pub fn at(&self, path: &[usize]) -> Option<(usize, usize)> {
        let (&first, rest) = path.split_first()?;
        let mut node = self.top.get(first)?;
        for &i in rest {
            node = node.children.get(i)?;
        }
        Some(self.line_col(node.start))
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.lines.partition_point(|&start| start <= offset).max(1);
        let start = self.lines.get(line - 1).copied().unwrap_or(0).min(offset);
        let text = self.src.get(start..offset).unwrap_or_default();
        (line, String::from_utf8_lossy(text).chars().count() + 1)
    }
}

/// One open bracket: the elements found in it so far.
struct Frame {
    items: Vec<Node>,
    /// The next token starts a new element (after the bracket or a comma).
    at_item: bool,
}

fn scan(src: &[u8], from: usize) -> Vec<Node> {
    let mut frames = vec![Frame {
        items: Vec::new(),
        at_item: true,
    }];
    let mut i = from;
    while let Some(&b) = src.get(i) {
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c | b'\\' | b':' => {
                i += 1;
                continue;
            }
            b'#' => {
                i += src[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .unwrap_or(src.len() - i);
                continue;
            }
            b',' => {
                if let Some(top) = frames.last_mut() {
                    top.at_item = true;
                }
                i += 1;
                continue;
            }
            b')' | b']' | b'}' => {
                if frames.len() > 1 {
                    if let Some(done) = frames.pop() {
                        let owner = frames.last_mut().and_then(|f| f.items.last_mut());
                        if let Some(owner) = owner.filter(|o| o.children.is_empty()) {
                            owner.children = done.items;
                        }
                    }
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        let depth = frames.len();
        if let Some(top) = frames.last_mut() {
            if top.at_item {
                top.at_item = false;
                if depth <= MAX_PATH {
                    top.items.push(Node {
                        start: i,
                        children: Vec::new(),
                    });
                }
            }
        }
        match b {
            b'(' | b'[' | b'{' => {
                frames.push(Frame {
                    items: Vec::new(),
                    at_item: true,
                });
                i += 1;
            }
            b'\'' | b'"' => i = skip_string(src, i),
            _ if is_word(b) => {
                let end = i + src[i..].iter().take_while(|&&c| is_word(c)).count();
                let prefix = end - i <= 2
                    && src[i..end].iter().all(|c| b"uUbBrR".contains(c))
                    && matches!(src.get(end), Some(b'\'' | b'"'));
                i = if prefix { skip_string(src, end) } else { end };
            }
            _ => i += 1,
        }
    }
    frames.truncate(1);
    frames.pop().map(|f| f.items).unwrap_or_default()
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b >= 0x80
}

/// The offset after the string literal whose opening quote is at `start`.
fn skip_string(src: &[u8], start: usize) -> usize {
    let Some(&quote) = src.get(start) else {
        return start + 1;
    };
    let triple = src.get(start..start + 3) == Some(&[quote; 3][..]);
    let mut i = start + if triple { 3 } else { 1 };
    while let Some(&b) = src.get(i) {
        if b == b'\\' {
            i += 2;
        } else if triple && src.get(i..i + 3) == Some(&[quote; 3][..]) {
            return i + 3;
        } else if !triple && b == quote {
            return i + 1;
        } else {
            i += 1;
        }
    }
    src.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_entries_and_fields() {
        let src =
            b"# specs\n[\n    ('a', 'b(,)', \"c'\", 'd'),\n  ('e', u'''f\n]''', 'g', 'h'),\n]\n";
        let p = Positions::new(src);
        assert_eq!(p.at(&[0]), Some((2, 1)));
        assert_eq!(p.at(&[0, 0]), Some((3, 5)));
        assert_eq!(p.at(&[0, 0, 2]), Some((3, 19)));
        assert_eq!(p.at(&[0, 1, 1]), Some((4, 9)));
        assert_eq!(p.at(&[0, 1, 2]), Some((5, 7)));
        assert_eq!(p.at(&[0, 2]), None);
    }

    #[test]
    fn positions_in_generate_and_crlf() {
        let src = b"generate({'ip': '10.0.0.1-4',\r\n          'hostname': ['a', 'b']})\r\n";
        let p = Positions::new(src);
        assert_eq!(p.at(&[0]), Some((1, 1)));
        assert_eq!(p.at(&[0, 0, 0]), Some((1, 11)));
        assert_eq!(p.at(&[0, 0, 1]), Some((2, 11)));
    }

    #[test]
    fn sequence_lengths() {
        let len = |v: Value| sequence_len(&Value::str("k"), &v);
        assert_eq!(len(Value::str("10.0.0.1-4")), Some(4));
        assert_eq!(len(Value::str("host1-3")), Some(3));
        assert_eq!(len(Value::List(vec![Value::str("x")])), Some(1));
        assert_eq!(len(Value::str("plain")), None);
        assert_eq!(len(Value::Int(5)), None);
    }

    /// The findings for a directory holding `files`, as text without the
    /// directory.
    fn findings(files: &[(&str, &str)]) -> Vec<String> {
        let tmp = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(tmp.path().join(name), text).expect("write");
        }
        let prefix = format!("{}/", tmp.path().display());
        check_dir(tmp.path())
            .findings
            .iter()
            .map(|f| f.to_string().replace(&prefix, ""))
            .collect()
    }

    #[test]
    fn invalid_state_entries_and_missing_state() {
        assert_eq!(
            findings(&[("state", "[('a', 1),\n ('b', 'x')]")]),
            ["state:2:2: error: invalid count 'x' for profile 'b'"]
        );
        let none = findings(&[]);
        assert_eq!(none.len(), 1);
        assert!(none[0].ends_with(
            "state: error: no state file: the server answers every machine with an error"
        ));
    }

    #[test]
    fn a_cmdb_the_server_would_refuse_is_flagged() {
        let profile = [
            ("state", "[('a', 1)]"),
            ("a.specs", "[('system', 'product', 'vendor', 'HP')]"),
            ("a.configure", "pass"),
        ];
        let pad = DEFAULT_MAX_CMDB_SIZE as usize - "[{'pad': ''}]\n".len();
        let at_limit = format!("[{{'pad': '{}'}}]\n", "x".repeat(pad));
        assert_eq!(
            findings(&[profile[0], profile[1], profile[2], ("a.cmdb", &at_limit)]),
            Vec::<String>::new()
        );
        let over = format!("[{{'pad': '{}'}}]\n", "x".repeat(pad + 1));
        assert_eq!(
            findings(&[profile[0], profile[1], profile[2], ("a.cmdb", &over)]),
            [format!(
                "a.cmdb: warning: {} bytes, more than the default MAXCMDBSIZE \
                 ({DEFAULT_MAX_CMDB_SIZE} bytes): the server refuses it unless edeploy.conf \
                 sets a larger MAXCMDBSIZE",
                DEFAULT_MAX_CMDB_SIZE + 1
            )]
        );
    }

    #[test]
    fn cmdb_entries_and_models() {
        let state = ("state", "[]");
        assert_eq!(
            findings(&[state, ("a.cmdb", "[{'ip': '1'},\n 3]")]),
            ["a.cmdb:2:2: error: entry 1 is not a dict"]
        );
        assert_eq!(
            findings(&[state, ("a.cmdb", "{'ip': '1'}")]),
            ["a.cmdb:1:1: error: expected a list of dicts or generate({...})"]
        );
        assert_eq!(
            findings(&[state, ("a.cmdb", "generate({'n': 5})")]),
            [format!(
                "a.cmdb:1:1: error: generate() model expands to more than {} entries",
                generate::MAX_ENTRIES
            )]
        );
        assert_eq!(
            findings(&[state, ("a.cmdb", "generate({'ip': '1.2.3.1-3',\n 'tag': ('A', 'B')})")]),
            ["a.cmdb:2:2: warning: generate(): the tuple 'tag' is copied whole into every entry \
              (as by the legacy server); write a list to give one value per entry"]
        );
        // Lists repeat their values: a duplicate inside a generated CMDB.
        assert_eq!(
            findings(&[
                state,
                ("a.cmdb", "generate({'ip': ['1', '2', '1'], 'n': 'x'})")
            ]),
            ["a.cmdb:1:1: error: entries 0 and 2 have the same ip '1'"]
        );
        // Plain strings repeat: no length warning.
        assert!(
            findings(&[state, ("a.cmdb", "generate({'ip': '1.2.3.1-3', 'm': 'x'})")]).is_empty()
        );
    }

    #[test]
    fn specs_files() {
        let state = ("state", "[]");
        assert_eq!(
            findings(&[state, ("a.specs", "generate({})")]),
            ["a.specs:1:1: error: generate() is only allowed in CMDB files"]
        );
        assert_eq!(
            findings(&[state, ("a.specs", "[]")]),
            ["a.specs:1:1: warning: no specs: every machine matches this profile"]
        );
        assert_eq!(
            findings(&[state, ("a.specs", "[('a', 'b', 'c', 'd'), 'x']")]),
            ["a.specs:1:24: error: expected a 4-tuple of strings"]
        );
        assert_eq!(
            findings(&[state, ("a.specs", "[('a', 'b', 'c', 'range(1, 2)')]")]),
            [
                "a.specs:1:18: error: field 4: range() is unknown to the legacy server: it never \
              matches there"
            ]
        );
    }
}

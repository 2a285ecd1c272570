//! The status page (`status.py`): what each section of edeploy.conf has left
//! to give (profiles, quotas, CMDB entries) and what came in lately (hardware
//! files, installation logs), as HTML for people and JSON for scripts.
//!
//! It changes nothing, and takes no lock: under a flood of views, a shared
//! lock kept provisioning requests waiting for as long as the flood lasted.
//! Each file is one whole version of it (`store` says why), but the state
//! and the CMDBs are read one after the other: a CMDB may be seen one or
//! more installations ahead of the state (more entries used than quota
//! spent), never behind it. Each figure is true of a moment during the
//! view, which is all a view needs. A broken section, state or CMDB shows
//! its error where its data would be, with file, line and column; the rest
//! of the page is still shown.
//!
//! The only files it writes are its cache of CMDB summaries, hidden next to
//! each CMDB (`.<profile>.cmdb.status`, see [`cache`]): a view of an
//! unchanged CMDB then costs the same whatever its size; and the index of
//! the machines views in HWDIR (see [`fleet`], whose views of the machines
//! and health results [`pages`] renders).
//!
//! Profile names, CMDB values and file names come from whoever writes the
//! configuration or sends hardware descriptions: every one of them is
//! escaped in the HTML ([`escape_html`]).
//!
//! A CMDB of tens of thousands of entries is counted while it is streamed,
//! from its text (no value is built for a flat entry), keeping only the
//! last [`USED_SHOWN`] used entries; a `generate()` model not yet expanded
//! is sized, and its last entries made, without expanding it.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{self, Config, ConfigErrorKind};
use crate::generate;
use crate::literal::{self, Dict, FlatDict, ListSink, ParseError, Plain, Streamed, Value};
use crate::logs::UtcTime;
use crate::state::{Quota, State};
use crate::store;

pub mod cache;
pub mod fleet;
pub mod pace;
pub mod pages;

/// Most hardware files, and most logs, listed per section (the newest).
pub const FILES_SHOWN: usize = 50;
/// Most used entries of one CMDB listed (the last ones in the file).
pub const USED_SHOWN: usize = 200;

/// The section `upload.py` reads first for every request: always shown.
const DEFAULT_SECTION: &str = "SERVER";

/// Everything the page shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The configuration file read.
    pub config_file: String,
    /// Set when the configuration file does not exist and the legacy
    /// defaults are shown instead.
    pub config_missing: bool,
    /// When the page was made, UTC (`YYYY-MM-DD HH:MM:SS UTC`).
    pub generated: String,
    /// The configuration file could not be read at all.
    pub error: Option<String>,
    pub sections: Vec<Section>,
}

/// One section of the configuration file.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub name: String,
    /// The section's directories and lock file; `None` when the section
    /// could not be read (see `errors`).
    pub config_dir: Option<String>,
    pub hw_dir: Option<String>,
    pub log_dir: Option<String>,
    pub lock_file: Option<String>,
    /// Set when `upload.py` cannot take its lock: the directory of the
    /// lock file does not exist.
    pub lock_warning: Option<String>,
    /// What could not be read: the section itself, its state file, its
    /// configuration directory.
    pub errors: Vec<String>,
    /// The profiles of the state file in its order, then those with a
    /// `.specs` file but no line in the state file.
    pub profiles: Vec<Profile>,
    pub hw_files: Option<Listing>,
    pub logs: Option<Listing>,
}

/// One profile: its quota and its CMDB.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub name: String,
    /// Listed in the state file (else only a `.specs` file exists).
    pub in_state: bool,
    /// `'*'` in the state file: no limit.
    pub unlimited: bool,
    /// Installations left, for a numeric count.
    pub remaining: Option<i64>,
    /// `<name>.specs` and `<name>.configure` exist in CONFIGDIR.
    pub specs: bool,
    pub configure: bool,
    /// `<name>.cmdb`, when it exists.
    pub cmdb: Option<Cmdb>,
}

/// How much of a CMDB is used, and by whom.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cmdb {
    pub file: String,
    /// A `generate()` model: the first installation will expand it.
    pub generated: bool,
    pub total: usize,
    pub used: usize,
    pub free: usize,
    /// The last used entries in file order, at most [`USED_SHOWN`].
    pub used_entries: Vec<UsedEntry>,
    /// The file could not be read or parsed (the counts are then those of
    /// the entries before the error).
    pub error: Option<String>,
}

/// A used CMDB entry: which machine got which settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsedEntry {
    /// 0-based position in the (expanded) CMDB.
    pub index: usize,
    pub hostname: Option<String>,
    pub ip: Option<String>,
    pub mac: Option<String>,
}

/// The newest files of a directory with one suffix.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub dir: String,
    /// How many such files the directory holds.
    pub total: usize,
    /// The newest first, at most [`FILES_SHOWN`].
    pub files: Vec<FileEntry>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// The same, `YYYY-MM-DD HH:MM:SS UTC`.
    pub modified: String,
}

/// Gathers the status of every section of the configuration file `conf`
/// that sets a CONFIGDIR, and of `SERVER` in any case. When `conf` does not
/// exist and was not asked for explicitly (`required` false), the legacy
/// defaults relative to `script_dir` are shown, as `upload.py` uses them.
pub fn gather(conf: &Path, required: bool, script_dir: &Path) -> Status {
    let mut status = Status {
        config_file: conf.display().to_string(),
        config_missing: false,
        generated: utc(SystemTime::now()),
        error: None,
        sections: Vec::new(),
    };
    let names = match config::sections_setting(conf, "CONFIGDIR") {
        Ok(names) => names,
        Err(e) if !required && e.kind == ConfigErrorKind::Io(io::ErrorKind::NotFound) => {
            status.config_missing = true;
            let cfg = Config::legacy_defaults(script_dir);
            status.sections.push(section(DEFAULT_SECTION, &cfg));
            return status;
        }
        Err(e) => {
            status.error = Some(e.to_string());
            return status;
        }
    };
    let others = names.into_iter().filter(|n| n != DEFAULT_SECTION);
    for name in std::iter::once(DEFAULT_SECTION.to_owned()).chain(others) {
        status
            .sections
            .push(match Config::load(conf, &name, script_dir) {
                Ok(cfg) => section(&name, &cfg),
                Err(e) => Section {
                    name,
                    config_dir: None,
                    hw_dir: None,
                    log_dir: None,
                    lock_file: None,
                    lock_warning: None,
                    errors: vec![e.to_string()],
                    profiles: Vec::new(),
                    hw_files: None,
                    logs: None,
                },
            });
    }
    status
}

/// The sections the status page shows: `SERVER`, then every other section
/// of the configuration file `conf` that sets a CONFIGDIR (see [`gather`]).
pub fn section_names(conf: &Path, required: bool) -> Vec<String> {
    let mut names = vec![DEFAULT_SECTION.to_owned()];
    if let Ok(others) = config::sections_setting(conf, "CONFIGDIR") {
        names.extend(others.into_iter().filter(|n| n != DEFAULT_SECTION));
    } else if required {
        names.clear();
    }
    names
}

/// The settings of `section`, if it is one of [`section_names`]: a view
/// names a section only among those the page lists. Without a
/// configuration file (and `required` false), the legacy defaults of
/// `SERVER`, as `upload.py` uses them.
pub fn section_config(
    conf: &Path,
    required: bool,
    script_dir: &Path,
    section: &str,
) -> Result<Config, String> {
    if !section_names(conf, required).iter().any(|n| n == section) {
        return Err(format!("no section [{section}] with a CONFIGDIR"));
    }
    match Config::load(conf, section, script_dir) {
        Err(e) if !required && e.kind == ConfigErrorKind::Io(io::ErrorKind::NotFound) => {
            Ok(Config::legacy_defaults(script_dir))
        }
        other => other.map_err(|e| e.to_string()),
    }
}

/// The status of one section whose settings were read.
fn section(name: &str, cfg: &Config) -> Section {
    let mut errors = Vec::new();
    // A missing lock file is created by the first request, unless its
    // directory is missing too: then every request fails.
    let lock_warning = match cfg.lock_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => Some(format!(
            "upload.py cannot take its lock: directory {} of {} does not exist",
            dir.display(),
            cfg.lock_file.display()
        )),
        _ => None,
    };
    let profiles = profiles(&cfg.config_dir, &mut errors);
    Section {
        name: name.to_owned(),
        config_dir: Some(cfg.config_dir.display().to_string()),
        hw_dir: Some(cfg.hw_dir.display().to_string()),
        log_dir: Some(cfg.log_dir.display().to_string()),
        lock_file: Some(cfg.lock_file.display().to_string()),
        lock_warning,
        errors,
        profiles,
        hw_files: Some(latest(&cfg.hw_dir, ".hw")),
        logs: Some(latest(&cfg.log_dir, ".log.gz")),
    }
}

/// The profiles of the state file, then those with only a `.specs` file.
fn profiles(config_dir: &Path, errors: &mut Vec<String>) -> Vec<Profile> {
    let state_path = config_dir.join("state");
    let state = store::read_version(&state_path)
        .map_err(|e| format!("{}: {e}", state_path.display()))
        .and_then(|src| State::parse(&state_path, &src).map_err(|e| e.to_string()));
    let mut listed = BTreeSet::new();
    let mut profiles = Vec::new();
    match state {
        Ok(state) => {
            for entry in state.entries() {
                let (unlimited, remaining) = match entry.quota {
                    Quota::Unlimited => (true, None),
                    Quota::Remaining(n) => (false, Some(n)),
                };
                listed.insert(entry.profile.clone());
                // Shown, but its files, outside CONFIGDIR, are not looked at.
                if let Err(e) = state.profile_file(&entry.profile, "specs") {
                    errors.push(e.to_string());
                    profiles.push(Profile {
                        name: entry.profile.clone(),
                        in_state: true,
                        unlimited,
                        remaining,
                        specs: false,
                        configure: false,
                        cmdb: None,
                    });
                    continue;
                }
                profiles.push(profile(
                    config_dir,
                    &entry.profile,
                    true,
                    unlimited,
                    remaining,
                ));
            }
        }
        Err(e) => errors.push(e),
    }
    let specs = match fs::read_dir(config_dir) {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".specs"))
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
            })
            .collect(),
        Err(e) => {
            errors.push(format!("{}: {e}", config_dir.display()));
            BTreeSet::new()
        }
    };
    for name in specs.difference(&listed) {
        profiles.push(profile(config_dir, name, false, false, None));
    }
    profiles
}

fn profile(
    config_dir: &Path,
    name: &str,
    in_state: bool,
    unlimited: bool,
    remaining: Option<i64>,
) -> Profile {
    let file = |ext: &str| config_dir.join(format!("{name}.{ext}"));
    let cmdb_path = file("cmdb");
    Profile {
        name: name.to_owned(),
        in_state,
        unlimited,
        remaining,
        specs: file("specs").is_file(),
        configure: file("configure").is_file(),
        cmdb: cmdb_path.exists().then(|| cache::cmdb_usage(&cmdb_path)),
    }
}

/// Counts of a CMDB's entries while they stream by.
#[derive(Default)]
struct Counter {
    total: usize,
    used: usize,
    last_used: VecDeque<UsedEntry>,
    /// Index of an entry that is not a dict (the count stops there).
    not_a_dict: Option<usize>,
}

impl Counter {
    fn push(&mut self, file: &Path, value: Value) -> Result<(), ParseError> {
        let index = self.total;
        let Value::Dict(entry) = value else {
            self.not_a_dict = Some(index);
            return Err(ParseError {
                file: file.to_path_buf(),
                line: 0,
                column: 0,
                message: format!("entry {index} is not a dict"),
            });
        };
        self.total += 1;
        // As when a machine is given an entry: `used` present means used.
        if entry.get_str("used").is_some() {
            self.used += 1;
            self.show_used(index, &entry);
        }
        Ok(())
    }

    /// Keeps used entry `index` among the last [`USED_SHOWN`].
    fn show_used(&mut self, index: usize, entry: &Dict) {
        let text = |key| entry.get_str(key).map(value_text);
        self.remember(UsedEntry {
            index,
            hostname: text("hostname"),
            ip: text("ip"),
            mac: text("mac"),
        });
    }

    fn remember(&mut self, entry: UsedEntry) {
        if self.last_used.len() == USED_SHOWN {
            self.last_used.pop_front();
        }
        self.last_used.push_back(entry);
    }
}

/// A [`Counter`] fed by the streaming parser. Flat entries (every entry of
/// a CMDB written by either server: plain strings and ints) are counted
/// from the source text, without building a `Dict` for each: most of the
/// cost of a view of a large CMDB was making and freeing them.
struct Sink<'c> {
    file: &'c Path,
    counter: &'c mut Counter,
}

impl ListSink for Sink<'_> {
    fn flat(&mut self, entry: &FlatDict<'_, '_>) -> bool {
        let c = &mut *self.counter;
        let index = c.total;
        c.total += 1;
        if entry.get(b"used").is_some() {
            c.used += 1;
            let text = |key: &[u8]| {
                entry.get(key).map(|v| {
                    value_text(&match v {
                        Plain::Str(s) => Value::Str(s.to_vec()),
                        Plain::Int(i) => Value::Int(i),
                    })
                })
            };
            c.remember(UsedEntry {
                index,
                hostname: text(b"hostname"),
                ip: text(b"ip"),
                mac: text(b"mac"),
            });
        }
        true
    }

    fn value(&mut self, value: Value) -> Result<(), ParseError> {
        self.counter.push(self.file, value)
    }
}

/// A value as shown: the text of a string, else its Python repr.
fn value_text(v: &Value) -> String {
    match v.as_text() {
        Some(s) => s.to_owned(),
        None => String::from_utf8_lossy(&literal::repr(v)).into_owned(),
    }
}

/// The summary of the CMDB `path` whose content is `src`.
fn summarize(path: &Path, src: io::Result<&[u8]>) -> Cmdb {
    let mut counter = Counter::default();
    let mut generated = false;
    let error = match src {
        Err(e) => Some(format!("{}: {e}", path.display())),
        Ok(src) => {
            let mut sink = Sink {
                file: path,
                counter: &mut counter,
            };
            match literal::parse_list_streaming_flat(path, src, &mut sink) {
                Ok(Streamed::List) => None,
                Ok(Streamed::Generate(model)) => {
                    generated = true;
                    generate_usage(path, &model, &mut counter)
                }
                Err(e) => Some(match counter.not_a_dict {
                    Some(index) => format!(
                        "{}: entry {index} is not a dict (counts stop there)",
                        path.display()
                    ),
                    None => e.to_string(),
                }),
            }
        }
    };
    Cmdb {
        file: path.display().to_string(),
        generated,
        total: counter.total,
        used: counter.used,
        free: counter.total - counter.used,
        used_entries: counter.last_used.into(),
        error,
    }
}

/// Sizes a `generate()` model without expanding it: its length is known
/// from its ranges and lists, and every entry has every key of the model,
/// so either all entries are used (a model with a `used` key: odd, but
/// possible) or none. Only the entries shown are made, from their index:
/// a view of a 2^20-entry model costs what a 200-entry one does.
fn generate_usage(path: &Path, model: &Value, counter: &mut Counter) -> Option<String> {
    let mut entries = match generate::generate(model) {
        Ok(entries) => entries,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    counter.total = entries.len();
    let has_used = matches!(model, Value::Dict(d) if d.get_str("used").is_some());
    if !has_used {
        return None;
    }
    counter.used = counter.total;
    let first = counter.total.saturating_sub(USED_SHOWN);
    if let Some(skipped) = first.checked_sub(1) {
        entries.nth(skipped);
    }
    for (index, entry) in (first..).zip(entries) {
        let Value::Dict(entry) = entry else {
            return Some(format!(
                "{}: generate() gave an entry that is not a dict",
                path.display()
            ));
        };
        counter.show_used(index, &entry);
    }
    None
}

/// The newest files of `dir` whose name ends with `suffix`.
fn latest(dir: &Path, suffix: &str) -> Listing {
    let mut listing = Listing {
        dir: dir.display().to_string(),
        total: 0,
        files: Vec::new(),
        error: None,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            listing.error = Some(format!("{}: {e}", dir.display()));
            return listing;
        }
    };
    let mut found: Vec<(SystemTime, String, u64)> = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(suffix) {
            continue;
        }
        // Follow a symbolic link, as the web server would.
        let Ok(meta) = fs::metadata(entry.path()) else {
            continue;
        };
        if meta.is_file() {
            let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
            found.push((mtime, name, meta.len()));
        }
    }
    listing.total = found.len();
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    found.truncate(FILES_SHOWN);
    listing.files = found
        .into_iter()
        .map(|(mtime, name, size)| FileEntry {
            name,
            size,
            mtime: unix_seconds(mtime),
            modified: utc(mtime),
        })
        .collect();
    listing
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

fn utc(t: SystemTime) -> String {
    let t = UtcTime::from_system_time(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// The page as JSON: the [`Status`] fields as they are named here.
pub fn to_json(status: &Status) -> serde_json::Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(status)?;
    out.push(b'\n');
    Ok(out)
}

/// Text for HTML, in element content and in quoted attribute values alike.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:75em;padding:0 1em;color:#222;background:#f7f7f7}
h1{font-size:1.6em;margin:0 0 .2em}
h2{font-size:1.3em;border-bottom:2px solid #36c;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin:1.3em 0 .4em}
.meta{color:#555}
table{border-collapse:collapse;margin:.3em 0 1em;background:#fff}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#e6ecf5}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.path{font-family:ui-monospace,monospace;font-size:.95em}
.error{color:#900;background:#fdecec;border-left:4px solid #c00;padding:.4em .7em;white-space:pre-wrap;font-family:ui-monospace,monospace}
.warn{background:#fff5d1;border-left:4px solid #d9a400;padding:.4em .7em}
.none{color:#888;font-style:italic}
.unlimited{color:#060}
.exhausted{color:#a00;font-weight:bold}
";

/// The page as HTML: one self-contained document, inline style, no script.
pub fn to_html(status: &Status) -> String {
    let mut h = String::with_capacity(16 * 1024);
    h.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>eDeploy status</title>\n<style>\n",
    );
    h.push_str(STYLE);
    h.push_str("</style>\n</head>\n<body>\n<h1>eDeploy status</h1>\n");
    h.push_str(
        "<p class=\"meta\"><a href=\"?view=machines\">Machines</a> &middot; \
         <a href=\"?view=health\">Health results</a></p>\n",
    );
    let _ = writeln!(
        h,
        "<p class=\"meta\">Configuration <code>{}</code>{} &middot; generated {} &middot; \
         <a href=\"?format=json\">JSON</a></p>",
        escape_html(&status.config_file),
        if status.config_missing {
            " (missing: legacy defaults shown)"
        } else {
            ""
        },
        escape_html(&status.generated),
    );
    if let Some(e) = &status.error {
        error_block(&mut h, e);
    }
    for section in &status.sections {
        section_html(&mut h, section);
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn error_block(h: &mut String, message: &str) {
    let _ = writeln!(h, "<p class=\"error\">{}</p>", escape_html(message));
}

fn section_html(h: &mut String, s: &Section) {
    let _ = writeln!(
        h,
        "<section>\n<h2>Section <code>[{}]</code></h2>",
        escape_html(&s.name)
    );
    let dirs = [
        ("CONFIGDIR", &s.config_dir),
        ("HWDIR", &s.hw_dir),
        ("LOGDIR", &s.log_dir),
        ("LOCKFILE", &s.lock_file),
    ];
    if dirs.iter().any(|(_, v)| v.is_some()) {
        h.push_str("<table class=\"dirs\">\n");
        for (key, value) in dirs {
            if let Some(v) = value {
                let _ = writeln!(
                    h,
                    "<tr><th>{key}</th><td class=\"path\">{}</td></tr>",
                    escape_html(v)
                );
            }
        }
        h.push_str("</table>\n");
    }
    if let Some(why) = &s.lock_warning {
        let _ = writeln!(h, "<p class=\"warn\">{}</p>", escape_html(why));
    }
    for e in &s.errors {
        error_block(h, e);
    }
    if s.config_dir.is_some() {
        profiles_html(h, &s.profiles);
        for p in &s.profiles {
            if let Some(c) = &p.cmdb {
                cmdb_html(h, &p.name, c);
            }
        }
    }
    if let Some(l) = &s.hw_files {
        listing_html(h, "Latest hardware files", ".hw", l);
    }
    if let Some(l) = &s.logs {
        listing_html(h, "Latest installation logs", ".log.gz", l);
    }
    h.push_str("</section>\n");
}

fn profiles_html(h: &mut String, profiles: &[Profile]) {
    h.push_str("<h3>Profiles</h3>\n");
    if profiles.is_empty() {
        h.push_str("<p class=\"none\">No profile.</p>\n");
        return;
    }
    h.push_str(
        "<table class=\"profiles\">\n<thead><tr><th>Profile</th><th>Remaining</th>\
         <th>.specs</th><th>.configure</th><th>CMDB used</th><th>CMDB free</th>\
         <th>CMDB entries</th></tr></thead>\n<tbody>\n",
    );
    let yes_no = |b: bool| {
        if b {
            "yes"
        } else {
            "<span class=\"exhausted\">missing</span>"
        }
    };
    for p in profiles {
        let remaining = match (p.in_state, p.unlimited, p.remaining) {
            (false, _, _) => "<span class=\"none\">not in state</span>".to_owned(),
            (true, true, _) => "<span class=\"unlimited\">unlimited</span>".to_owned(),
            (true, false, Some(n)) if n > 0 => n.to_string(),
            (true, false, n) => {
                format!("<span class=\"exhausted\">{}</span>", n.unwrap_or_default())
            }
        };
        let _ = write!(
            h,
            "<tr><td class=\"profile\">{}</td><td class=\"num remaining\">{remaining}</td>\
             <td>{}</td><td>{}</td>",
            escape_html(&p.name),
            yes_no(p.specs),
            yes_no(p.configure),
        );
        match &p.cmdb {
            Some(c) => {
                let _ = writeln!(
                    h,
                    "<td class=\"num used\">{}</td><td class=\"num free\">{}</td>\
                     <td class=\"num total\">{}</td></tr>",
                    c.used, c.free, c.total
                );
            }
            None => h.push_str("<td colspan=\"3\" class=\"none\">no CMDB</td></tr>\n"),
        }
    }
    h.push_str("</tbody>\n</table>\n");
}

fn cmdb_html(h: &mut String, profile: &str, c: &Cmdb) {
    let _ = writeln!(
        h,
        "<h3>CMDB of <code>{}</code></h3>\n<p class=\"meta\"><code>{}</code>: \
         {} used, {} free, {} entries{}.</p>",
        escape_html(profile),
        escape_html(&c.file),
        c.used,
        c.free,
        c.total,
        if c.generated {
            " (a generate() model, expanded at the first installation)"
        } else {
            ""
        },
    );
    if let Some(e) = &c.error {
        error_block(h, e);
    }
    if c.used_entries.is_empty() {
        return;
    }
    if c.used > c.used_entries.len() {
        let _ = writeln!(
            h,
            "<p class=\"meta\">The last {} of {} used entries:</p>",
            c.used_entries.len(),
            c.used
        );
    }
    h.push_str(
        "<table class=\"cmdb\">\n<thead><tr><th>Entry</th><th>Hostname</th><th>IP</th>\
         <th>MAC</th></tr></thead>\n<tbody>\n",
    );
    let cell = |v: &Option<String>| match v {
        Some(v) => escape_html(v),
        None => "<span class=\"none\">-</span>".to_owned(),
    };
    for e in &c.used_entries {
        let _ = writeln!(
            h,
            "<tr><td class=\"num\">{}</td><td class=\"hostname\">{}</td><td>{}</td>\
             <td>{}</td></tr>",
            e.index,
            cell(&e.hostname),
            cell(&e.ip),
            cell(&e.mac)
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

fn listing_html(h: &mut String, title: &str, suffix: &str, l: &Listing) {
    let _ = writeln!(h, "<h3>{title}</h3>");
    if let Some(e) = &l.error {
        error_block(h, e);
        return;
    }
    let shown = if l.total > l.files.len() {
        format!(", the newest {} shown", l.files.len())
    } else {
        String::new()
    };
    let _ = writeln!(
        h,
        "<p class=\"meta\">{} <code>*{suffix}</code> in <code>{}</code>{shown}.</p>",
        l.total,
        escape_html(&l.dir)
    );
    if l.files.is_empty() {
        return;
    }
    h.push_str(
        "<table class=\"files\">\n<thead><tr><th>Name</th><th>Modified</th><th>Size</th>\
         </tr></thead>\n<tbody>\n",
    );
    for f in &l.files {
        let _ = writeln!(
            h,
            "<tr><td class=\"path\">{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            escape_html(&f.name),
            escape_html(&f.modified),
            f.size
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_five_characters() {
        assert_eq!(
            escape_html(r#"<a href="x" title='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(escape_html("plain é"), "plain é");
    }

    #[test]
    fn keeps_only_the_last_used_entries() {
        let mut c = Counter::default();
        let file = Path::new("x.cmdb");
        let n = 2 * USED_SHOWN + 10;
        for i in 0..n {
            let mut d = literal::Dict::new();
            d.insert(Value::str("hostname"), Value::str(&format!("h{i}")));
            if i % 2 == 0 {
                d.insert(Value::str("used"), Value::Int(1));
            }
            c.push(file, Value::Dict(d)).unwrap();
        }
        assert!(c.push(file, Value::Int(3)).is_err());
        assert_eq!(c.not_a_dict, Some(n));
        assert_eq!((c.total, c.used), (n, n / 2));
        assert_eq!(c.last_used.len(), USED_SHOWN);
        let first = c.last_used.front().unwrap();
        assert_eq!(first.index, n - 2 * USED_SHOWN);
        let last = c.last_used.back().unwrap();
        assert_eq!(last.index, n - 2);
        assert_eq!(last.hostname, Some(format!("h{}", n - 2)));
        assert_eq!(last.ip, None);
    }

    #[test]
    fn flat_entries_are_counted_as_parsed_ones() {
        // Flat entries (plain strings and ints) and entries the general
        // parser takes (escapes, unicode, nested values, repeated keys).
        let src = br#"[{'hostname': 'a', 'ip': '10.0.0.1', 'used': 1},
 {'hostname': 'b'},
 {'hostname': 'c\x41', 'mac': u'52:54', 'used': 1},
 {'hostname': 'd', 'ip': 7, 'mac': ['x'], 'used': 0},
 {'used': 1, 'used': 1, 'hostname': "e"},
 {'ip': '@', 'used': 'yes'},
 {}]"#;
        // A string that is not UTF-8, in a flat entry.
        let src: Vec<u8> = src
            .iter()
            .map(|&b| if b == b'@' { 0xff } else { b })
            .collect();
        let src = &src[..];
        let file = Path::new("x.cmdb");
        let mut flat = Counter::default();
        let mut sink = Sink {
            file,
            counter: &mut flat,
        };
        literal::parse_list_streaming_flat(file, src, &mut sink).unwrap();
        let mut parsed = Counter::default();
        literal::parse_list_streaming(file, src, &mut |v| parsed.push(file, v)).unwrap();
        assert_eq!((flat.total, flat.used), (7, 5));
        assert_eq!((parsed.total, parsed.used), (7, 5));
        assert_eq!(flat.last_used, parsed.last_used);
        let shown: Vec<_> = flat
            .last_used
            .iter()
            .map(|e| {
                (
                    e.index,
                    e.hostname.as_deref(),
                    e.ip.as_deref(),
                    e.mac.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (0, Some("a"), Some("10.0.0.1"), None),
                (2, Some("cA"), None, Some("52:54")),
                (3, Some("d"), Some("7"), Some("['x']")),
                (4, Some("e"), None, None),
                (5, None, Some("'\\xff'"), None),
            ]
        );
    }

    #[test]
    fn non_text_values_show_as_python() {
        assert_eq!(value_text(&Value::Int(7)), "7");
        assert_eq!(value_text(&Value::Unicode("é".into())), "é");
        assert_eq!(value_text(&Value::List(vec![Value::str("a")])), "['a']");
    }
}

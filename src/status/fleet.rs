//! The fleet views of the status page: every machine of a section (from
//! its `.hw` files in HWDIR and the decisions journal), a page per machine
//! (hardware, decision history, why each profile matches it or not, logs,
//! health results), and the health-check sessions of HEALTHDIR.
//!
//! A list of 10,000 machines cannot parse 10,000 hardware files and a
//! 100,000-line journal at each view: an index ([`index`]) keeps each
//! `.hw` file's summary by file identity and each machine's journal
//! summary with how far the journal was read, so that a view stats the
//! files, parses the new ones and reads the journal's new lines.
//!
//! Nothing here takes a lock (files are read as `store::read_version`
//! does, the journal by whole lines), and no request input reaches a file
//! path: a machine, log or health result is looked up among the names the
//! directory listing gives, and only a listed name is opened.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cgi::LOG_SUFFIX;
use crate::config::Config;
use crate::explain;
use crate::hw::{self, HwValue, Item};
use crate::journal::{self, Decision, Record};
use crate::logs;
use crate::store;

pub mod index;

/// Machines per page of the machines view.
pub const PAGE_SIZE: usize = 100;
/// Most decisions shown on a machine's page (the newest).
pub const HISTORY_SHOWN: usize = 200;

/// What a `.hw` file says of a machine, in short.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    /// `('cpu', 'physical', 'number', N)` and `('cpu', 'logical', ...)`.
    pub cpus: Option<String>,
    pub threads: Option<String>,
    /// `('memory', 'total', 'size', bytes)`.
    pub memory: Option<u64>,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
}

impl Hardware {
    /// Vendor and product, as far as known (`"HP ProLiant DL360p Gen8"`).
    pub fn model(&self) -> String {
        [&self.vendor, &self.product]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    pub name: String,
    /// As detected: gigabytes.
    pub size: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub mac: Option<String>,
    pub ipv4: Option<String>,
    /// `yes` or `no`.
    pub link: Option<String>,
}

/// The summary of a machine's hardware lines.
pub fn summarize_hw(items: &[Item]) -> Hardware {
    summarize(items)
}

/// [`summarize_hw`] of the lines of a `.hw` file as [`hw::scan_saved`]
/// reads them: the same summary as of the lines the full parser reads.
pub fn summarize_scanned(lines: &[[hw::Field<'_>; 4]]) -> Hardware {
    summarize(lines)
}

/// A hardware field, parsed or scanned.
trait FieldText {
    fn as_str(&self) -> Option<&str>;
    fn text(&self) -> String;
}

impl FieldText for HwValue {
    fn as_str(&self) -> Option<&str> {
        HwValue::as_str(self)
    }

    fn text(&self) -> String {
        HwValue::text(self)
    }
}

impl FieldText for hw::Field<'_> {
    fn as_str(&self) -> Option<&str> {
        hw::Field::as_str(*self)
    }

    fn text(&self) -> String {
        hw::Field::text(*self).to_owned()
    }
}

fn summarize<F: FieldText>(lines: &[[F; 4]]) -> Hardware {
    let mut h = Hardware::default();
    let mut disks: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut nics: Vec<Nic> = Vec::new();
    for [kind, name, key, value] in lines {
        let (Some(kind), Some(name), Some(key)) = (kind.as_str(), name.as_str(), key.as_str())
        else {
            continue;
        };
        let text = || Some(value.text());
        match (kind, name, key) {
            ("system", "product", "vendor") => h.vendor = h.vendor.take().or_else(text),
            ("system", "product", "name") => h.product = h.product.take().or_else(text),
            ("system", "product", "serial") => h.serial = h.serial.take().or_else(text),
            ("cpu", "physical", "number") => h.cpus = text(),
            ("cpu", "logical", "number") => h.threads = text(),
            ("memory", "total", "size") => h.memory = value.text().trim().parse().ok(),
            ("disk", "logical", _) => {}
            ("disk", _, "size") => {
                disks.insert(name.to_owned(), text());
            }
            ("network", _, "serial" | "ipv4" | "link") => {
                let nic = match nics.iter_mut().position(|n| n.name == name) {
                    Some(i) => &mut nics[i],
                    None => {
                        nics.push(Nic {
                            name: name.to_owned(),
                            mac: None,
                            ipv4: None,
                            link: None,
                        });
                        let last = nics.len() - 1;
                        &mut nics[last]
                    }
                };
                match key {
                    "serial" => nic.mac = text(),
                    "ipv4" => nic.ipv4 = text(),
                    _ => nic.link = text(),
                }
            }
            _ => {}
        }
    }
    h.disks = disks
        .into_iter()
        .map(|(name, size)| Disk { name, size })
        .collect();
    h.nics = nics;
    h
}

/// What the journal says of one machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// The time of its last line of any kind.
    pub last_time: String,
    /// Its last decision (a stored log or health result is not one).
    pub last: Option<Summary>,
    /// Its last installation.
    pub installed: Option<Installed>,
    /// How many lines the journal has about it.
    pub lines: usize,
}

/// A decision in a few words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub time: String,
    /// `configured`, `no_match`, `failure_report`, `refused`.
    pub kind: String,
    pub profile: Option<String>,
    /// What the decision says beyond its kind, in one line.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Installed {
    pub time: String,
    pub profile: String,
    pub cmdb_entry: Option<usize>,
    pub hostname: Option<String>,
    pub ip: Option<String>,
}

impl Seen {
    /// Takes into account the lines summarised in `later`, all of them
    /// after those summarised here: the same as adding them one by one.
    pub fn merge(&mut self, later: Seen) {
        self.lines += later.lines;
        if later.last_time > self.last_time {
            self.last_time = later.last_time;
        }
        if later.last.is_some() {
            self.last = later.last;
        }
        if later.installed.is_some() {
            self.installed = later.installed;
        }
    }

    /// Takes the journal's next line about this machine into account.
    pub fn add(&mut self, r: &Record) {
        self.lines += 1;
        if r.time > self.last_time {
            self.last_time = r.time.clone();
        }
        if !journal::is_decision(&r.decision) {
            return;
        }
        self.last = Some(Summary::of(r));
        if let Some(installed) = Installed::of(r) {
            self.installed = Some(installed);
        }
    }
}

impl Summary {
    fn of(r: &Record) -> Summary {
        Summary {
            time: r.time.clone(),
            kind: r.decision.kind().to_owned(),
            profile: r.decision.profile().map(str::to_owned),
            detail: brief(&r.decision),
        }
    }
}

impl Installed {
    /// The installation `r` records, if it is one.
    fn of(r: &Record) -> Option<Installed> {
        match &r.decision {
            Decision::Configured {
                profile,
                cmdb_entry,
                hostname,
                ip,
            } => Some(Installed {
                time: r.time.clone(),
                profile: profile.clone(),
                cmdb_entry: *cmdb_entry,
                hostname: hostname.clone(),
                ip: ip.clone(),
            }),
            _ => None,
        }
    }
}

/// The journal's lines about one machine, gathered without summarising
/// each decision (most are replaced by later ones): [`Seen::add`] of
/// each line in turn gives [`Latest::seen`].
#[derive(Debug, Default)]
pub struct Latest {
    lines: usize,
    last_time: String,
    /// The last decision.
    last: Option<Record>,
    /// The last installation before `last`, when it is not one itself.
    installed: Option<Record>,
}

impl Latest {
    pub fn add(&mut self, r: Record) {
        self.lines += 1;
        if r.time > self.last_time {
            self.last_time.clone_from(&r.time);
        }
        if !journal::is_decision(&r.decision) {
            return;
        }
        if let Some(last) = self.last.take() {
            if matches!(last.decision, Decision::Configured { .. }) {
                self.installed = Some(last);
            }
        }
        self.last = Some(r);
    }

    pub fn seen(&self) -> Seen {
        let last = self.last.as_ref();
        let installed = last
            .and_then(Installed::of)
            .or_else(|| self.installed.as_ref().and_then(Installed::of));
        Seen {
            last_time: self.last_time.clone(),
            last: last.map(Summary::of),
            installed,
            lines: self.lines,
        }
    }
}

/// A decision's details in a few words, for a list: a machine that
/// matched nothing lists the number of the spec each profile failed at,
/// a refusal's reason is cut at 160 characters.
pub fn brief(d: &Decision) -> String {
    match d {
        Decision::NoMatch { profiles, more } => {
            let mut tried: Vec<String> = profiles
                .iter()
                .map(|t| match t.spec {
                    Some(n) => format!("{} spec {n}", t.profile),
                    None => t.profile.clone(),
                })
                .collect();
            if *more > 0 {
                tried.push(format!("{more} more"));
            }
            format!("failed {}", tried.join(", "))
        }
        Decision::Refused { status, reason } if reason.chars().count() > 160 => {
            let cut: String = reason.chars().take(157).collect();
            format!("{status}: {cut}...")
        }
        _ => detail(d),
    }
}

/// A decision's details in one line.
pub fn detail(d: &Decision) -> String {
    match d {
        Decision::Configured {
            cmdb_entry: Some(i),
            ..
        } => format!("CMDB entry {i}"),
        Decision::Configured { .. } => "no CMDB".to_owned(),
        Decision::NoMatch { profiles, more } => {
            let mut tried: Vec<String> = profiles
                .iter()
                .map(|t| match (&t.spec, &t.spec_text, &t.note) {
                    (Some(n), Some(spec), _) => format!("{}: spec {n} {spec}", t.profile),
                    (_, _, Some(note)) => format!("{}: {note}", t.profile),
                    _ => t.profile.clone(),
                })
                .collect();
            if *more > 0 {
                tried.push(format!("and {more} more"));
            }
            if tried.is_empty() {
                "no profile tried".to_owned()
            } else {
                format!("failed {}", tried.join("; "))
            }
        }
        Decision::FailureReport {
            quota_given_back, ..
        } => if *quota_given_back {
            "one installation given back"
        } else {
            "no numeric quota to give back"
        }
        .to_owned(),
        Decision::LogStored { file } | Decision::HealthStored { file } => file.clone(),
        Decision::Refused { status, reason } => format!("{status}: {reason}"),
    }
}

/// How a machine stands, from its last decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    Installed,
    /// It matched no profile.
    Unmatched,
    /// It reported a failed installation.
    Failed,
    /// Its last request was refused (an error, no quota, no CMDB entry).
    Refused,
    /// Known from its `.hw` file only.
    Unknown,
}

impl Standing {
    fn of(last: Option<&Summary>) -> Standing {
        match last.map(|s| s.kind.as_str()) {
            Some("configured") => Standing::Installed,
            Some("no_match") => Standing::Unmatched,
            Some("failure_report") => Standing::Failed,
            Some(_) => Standing::Refused,
            None => Standing::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Installed => "installed",
            Standing::Unmatched => "unmatched",
            Standing::Failed => "failed",
            Standing::Refused => "refused",
            Standing::Unknown => "unknown",
        }
    }
}

/// One row of the machines view.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub sysname: String,
    /// Its file in HWDIR, when there is one.
    pub hw_file: Option<String>,
    pub hardware: Option<Hardware>,
    /// Why its `.hw` file could not be read.
    pub hw_error: Option<String>,
    /// The newest of its last journal line and its `.hw` file's time
    /// (journal format: `YYYY-MM-DDTHH:MM:SS.ffffffZ`).
    pub last_seen: Option<String>,
    pub standing: Standing,
    pub last_decision: Option<Summary>,
    /// The profile it got last, with its CMDB hostname and IP.
    pub installed: Option<Installed>,
}

impl Machine {
    /// A machine known by its name (and its file, if any) only so far.
    fn unknown(sysname: String, hw_file: Option<String>) -> Machine {
        Machine {
            sysname,
            hw_file,
            hardware: None,
            hw_error: None,
            last_seen: None,
            standing: Standing::Unknown,
            last_decision: None,
            installed: None,
        }
    }
}

/// The filters of the machines view.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Filter {
    /// The profile it got last.
    pub profile: Option<String>,
    /// Its standing (`installed`, `unmatched`...).
    pub standing: Option<String>,
    /// Text searched in MACs, serial, hostname, IPs and name.
    pub search: Option<String>,
    /// 1-based.
    pub page: usize,
}

/// The machines view.
#[derive(Debug, Clone, Serialize)]
pub struct Machines {
    pub section: String,
    pub hw_dir: String,
    pub journal: Option<String>,
    pub filter: Filter,
    /// Machines known, and how many of them stand each way.
    pub total: usize,
    pub standings: BTreeMap<String, usize>,
    /// Profiles machines got, for the filter.
    pub profiles: Vec<String>,
    /// Machines passing the filter.
    pub matching: usize,
    pub page: usize,
    pub pages: usize,
    pub page_size: usize,
    /// This page of them, newest first.
    pub machines: Vec<Machine>,
    /// Machines not counted nor shown yet: their `.hw` files are left to
    /// the next views to index (the first view of a large HWDIR).
    pub pending: usize,
    /// Whether the journal is still being read: the decisions shown may
    /// not be the last ones.
    pub journal_pending: bool,
    /// What could not be read (HWDIR, the journal).
    pub errors: Vec<String>,
}

/// A machine of the list before it is shown: its hardware summary is only
/// decoded for the rows of the page.
struct Row {
    machine: Machine,
    hw: Option<index::HwEntry>,
}

impl Row {
    /// Does `text` (lower case) occur in its MACs, serial, hostname, IPs
    /// or name?
    fn mentions(&self, text: &str) -> bool {
        let opt = |s: &Option<String>| {
            s.as_deref()
                .is_some_and(|s| s.to_lowercase().contains(text))
        };
        self.machine.sysname.to_lowercase().contains(text)
            || self.hw.as_ref().is_some_and(|h| h.search.contains(text))
            || self
                .machine
                .installed
                .as_ref()
                .is_some_and(|i| opt(&i.hostname) || opt(&i.ip))
    }

    /// The machine, with its hardware.
    fn into_machine(self) -> Machine {
        let mut m = self.machine;
        if let Some(hw) = self.hw {
            match hw.summary() {
                Ok(h) => m.hardware = Some(h),
                Err(e) => m.hw_error = Some(e),
            }
        }
        m
    }
}

/// Every machine of the section whose settings are `cfg`, newest first.
/// Machines whose `.hw` file is not indexed yet are left out (their
/// number is returned too), unless `with_pending` (then without their
/// hardware summary).
fn all_rows(
    cfg: &Config,
    section: &str,
    with_pending: bool,
    errors: &mut Vec<String>,
) -> (Vec<Row>, Indexing) {
    let mut index = index::load_and_update(cfg, errors);
    let journal_pending = index.journal_pending;
    let mut pending: BTreeSet<String> = BTreeSet::new();
    for file in std::mem::take(&mut index.pending) {
        if let Some(sysname) = file.strip_suffix(".hw") {
            pending.insert(sysname.to_owned());
        }
    }
    let pending_files = if with_pending {
        std::mem::take(&mut pending)
    } else {
        BTreeSet::new()
    };
    let seen = index
        .journal
        .and_then(|mut j| j.sections.remove(section))
        .unwrap_or_default();
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for (file, entry) in index.hw {
        let Some(sysname) = file.strip_suffix(".hw").map(str::to_owned) else {
            continue;
        };
        let mut machine = Machine::unknown(sysname.clone(), Some(file));
        machine.last_seen = Some(journal::timestamp(
            UNIX_EPOCH + std::time::Duration::from_micros(entry.mtime_micros),
        ));
        rows.insert(
            sysname,
            Row {
                machine,
                hw: Some(entry),
            },
        );
    }
    for sysname in pending_files {
        let machine = Machine::unknown(sysname.clone(), Some(format!("{sysname}.hw")));
        rows.insert(sysname, Row { machine, hw: None });
    }
    for (sysname, s) in seen {
        let stem = hw_stem(&sysname);
        if pending.contains(&stem) {
            continue;
        }
        let row = rows.entry(stem.clone()).or_insert_with(|| Row {
            machine: Machine::unknown(stem, None),
            hw: None,
        });
        let m = &mut row.machine;
        m.standing = Standing::of(s.last.as_ref());
        if m.last_seen.as_deref() < Some(s.last_time.as_str()) {
            m.last_seen = Some(s.last_time);
        }
        m.last_decision = s.last;
        m.installed = s.installed;
    }
    let mut all: Vec<Row> = rows.into_values().collect();
    all.sort_by(|a, b| {
        b.machine
            .last_seen
            .cmp(&a.machine.last_seen)
            .then_with(|| a.machine.sysname.cmp(&b.machine.sysname))
    });
    let indexing = Indexing {
        pending: pending.len(),
        journal_pending,
    };
    (all, indexing)
}

/// What the views have not indexed yet (see [`index::BUDGET`]).
struct Indexing {
    pending: usize,
    journal_pending: bool,
}

/// The name of a machine's `.hw` file without `.hw`, as the server names
/// it from its sysname.
fn hw_stem(sysname: &str) -> String {
    let file = crate::provision::hw_file_name(sysname);
    file.strip_suffix(".hw").unwrap_or(&file).to_owned()
}

/// The machines view of `section` (settings `cfg`) with `filter`.
pub fn machines(cfg: &Config, section: &str, filter: Filter) -> Machines {
    let mut errors = Vec::new();
    let (all, indexing) = all_rows(cfg, section, false, &mut errors);
    let mut standings = BTreeMap::new();
    let mut profiles = BTreeSet::new();
    for m in all.iter().map(|r| &r.machine) {
        *standings.entry(m.standing.as_str().to_owned()).or_insert(0) += 1;
        if let Some(i) = &m.installed {
            profiles.insert(i.profile.clone());
        }
    }
    let search = filter.search.as_deref().map(|s| s.trim().to_lowercase());
    let search = search.filter(|s| !s.is_empty());
    let matching: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, row)| {
            let m = &row.machine;
            filter
                .profile
                .as_deref()
                .is_none_or(|p| m.installed.as_ref().is_some_and(|i| i.profile == p))
                && filter
                    .standing
                    .as_deref()
                    .is_none_or(|s| m.standing.as_str() == s)
                && search.as_deref().is_none_or(|s| row.mentions(s))
        })
        .map(|(i, _)| i)
        .collect();
    let pages = matching.len().div_ceil(PAGE_SIZE).max(1);
    let page = filter.page.clamp(1, pages);
    let total = all.len();
    // Only the rows shown are moved out; the others are dropped whole.
    let mut all: Vec<Option<Row>> = all.into_iter().map(Some).collect();
    let machines = matching
        .iter()
        .skip((page - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .filter_map(|&i| all.get_mut(i)?.take())
        .map(Row::into_machine)
        .collect();
    Machines {
        section: section.to_owned(),
        hw_dir: cfg.hw_dir.display().to_string(),
        journal: cfg.journal.as_ref().map(|p| p.display().to_string()),
        total,
        standings,
        profiles: profiles.into_iter().collect(),
        matching: matching.len(),
        page,
        pages,
        page_size: PAGE_SIZE,
        filter: Filter { page, ..filter },
        machines,
        pending: indexing.pending,
        journal_pending: indexing.journal_pending,
        errors,
    }
}

/// A machine's page.
#[derive(Debug, Clone, Serialize)]
pub struct MachinePage {
    pub section: String,
    pub machine: Machine,
    /// Every line of its `.hw` file, as the file writes each field.
    pub hardware_lines: Vec<[String; 4]>,
    /// Its decisions and stored files, newest first, at most
    /// [`HISTORY_SHOWN`].
    pub history: Vec<Record>,
    pub history_total: usize,
    /// Why each profile of the state matches it or not (`edeploy explain`).
    pub explain: Option<String>,
    /// Its installation logs in LOGDIR, newest first.
    pub logs: Vec<StoredFile>,
    /// Its health-check results in HEALTHDIR, newest first.
    pub health: Vec<HealthResult>,
    pub errors: Vec<String>,
}

/// A file of LOGDIR.
#[derive(Debug, Clone, Serialize)]
pub struct StoredFile {
    pub name: String,
    pub size: u64,
    pub modified: String,
}

/// One health-check result: `HEALTHDIR/[session/]run/<sysname>.hw`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthResult {
    pub session: Option<String>,
    pub run: String,
    pub sysname: String,
    /// The path under HEALTHDIR, `[session/]run/file`.
    pub path: String,
    pub size: u64,
    pub modified: String,
}

/// The page of machine `name` of `section`, if the section knows it (from
/// HWDIR or the journal).
pub fn machine(cfg: &Config, section: &str, name: &str) -> Option<MachinePage> {
    let mut errors = Vec::new();
    // A machine not indexed yet has its page (without its summary).
    let machine = all_rows(cfg, section, true, &mut errors)
        .0
        .into_iter()
        .find(|r| r.machine.sysname == name)?
        .into_machine();
    let mut hardware_lines = Vec::new();
    let mut explain_text = None;
    if let Some(file) = &machine.hw_file {
        // A name of the directory listing (see `index`), not the request's.
        let path = cfg.hw_dir.join(file);
        match store::read_version(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|src| {
                hw::parse_hw_with(&path, &src, &cfg.hw_limits).map_err(|e| e.to_string())
            }) {
            Ok(items) => {
                hardware_lines = items
                    .iter()
                    .map(|l| l.clone().map(|f| field_text(&f)))
                    .collect();
                explain_text = Some(match explain::explain_config(cfg, &items) {
                    Ok(report) => {
                        let mut text = Vec::new();
                        match explain::write_report(&report, &mut text) {
                            Ok(()) => String::from_utf8_lossy(&text).into_owned(),
                            Err(e) => e.to_string(),
                        }
                    }
                    Err(e) => format!("error: {e}"),
                });
            }
            Err(e) => errors.push(e),
        }
    }
    let (history, history_total) = match &cfg.journal {
        Some(path) => match history(path, section, &machine.sysname) {
            Ok(h) => h,
            Err(e) => {
                errors.push(format!("{}: {e}", path.display()));
                (Vec::new(), 0)
            }
        },
        None => (Vec::new(), 0),
    };
    let logs = match machine_logs(&cfg.log_dir, &machine.sysname) {
        Ok(logs) => logs,
        Err(e) => {
            errors.push(format!("{}: {e}", cfg.log_dir.display()));
            Vec::new()
        }
    };
    let mut health = health_results(&cfg.health_dir, &mut errors);
    health.retain(|h| h.sysname == machine.sysname);
    Some(MachinePage {
        section: section.to_owned(),
        machine,
        hardware_lines,
        history,
        history_total,
        explain: explain_text,
        logs,
        health,
        errors,
    })
}

/// A hardware field as the `.hw` file writes it: text as is, numbers as
/// Python prints them.
fn field_text(f: &HwValue) -> String {
    match f.as_str() {
        Some(s) => s.to_owned(),
        None => f.to_string(),
    }
}

/// The journal's lines about `sysname` in `section`, newest first (at most
/// [`HISTORY_SHOWN`]), and how many there are. Only lines holding the
/// machine's name are parsed.
fn history(path: &Path, section: &str, sysname: &str) -> io::Result<(Vec<Record>, usize)> {
    let needle = format!(
        "\"sysname\":{}",
        serde_json::to_string(sysname).unwrap_or_default()
    );
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    let mut found = Vec::new();
    for file in [journal::rotated_path(path), path.to_path_buf()] {
        let text = match fs::read(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut from = 0;
        while let Some(at) = finder.find(&text[from..]) {
            let at = from + at;
            let start = text[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let Some(len) = text[at..].iter().position(|&b| b == b'\n') else {
                break;
            };
            let end = at + len;
            if let Some(r) = journal::parse_line(&text[start..end]) {
                if r.section.as_deref() == Some(section) && hw_stem_eq(&r.sysname, sysname) {
                    found.push(r);
                }
            }
            from = end + 1;
        }
    }
    let total = found.len();
    found.reverse();
    found.truncate(HISTORY_SHOWN);
    Ok((found, total))
}

fn hw_stem_eq(recorded: &Option<String>, sysname: &str) -> bool {
    recorded.as_deref().is_some_and(|r| hw_stem(r) == sysname)
}

/// The installation logs of `sysname` in `log_dir`, newest first.
fn machine_logs(log_dir: &Path, sysname: &str) -> io::Result<Vec<StoredFile>> {
    let mut logs: Vec<(SystemTime, StoredFile)> = Vec::new();
    for entry in fs::read_dir(log_dir)? {
        let Ok(entry) = entry else { continue };
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if logs::machine_of_log(&name) != Some(sysname) || name.starts_with('.') {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        logs.push((
            mtime,
            StoredFile {
                name,
                size: meta.len(),
                modified: journal::timestamp(mtime),
            },
        ));
    }
    logs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    Ok(logs.into_iter().map(|(_, f)| f).collect())
}

/// Is `name` a health run directory's (`YYYY_MM_DD-HHhMM`)?
fn is_run_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 16
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'_',
            10 => c == b'-',
            13 => c == b'h',
            _ => c.is_ascii_digit(),
        })
}

/// The names of the real directories (never links) of a directory, and
/// its regular files with their metadata.
type Listing = (Vec<String>, Vec<(String, fs::Metadata)>);

/// The real directories (never links) and regular files of `dir`, but
/// hidden ones.
fn listing(dir: &Path) -> io::Result<Listing> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            dirs.push(name);
        } else if kind.is_file() {
            if let Ok(meta) = entry.metadata() {
                files.push((name, meta));
            }
        }
    }
    Ok((dirs, files))
}

/// Every health result of HEALTHDIR, newest run first.
pub fn health_results(health_dir: &Path, errors: &mut Vec<String>) -> Vec<HealthResult> {
    let mut results = Vec::new();
    let top = match listing(health_dir) {
        Ok((dirs, _)) => dirs,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return results,
        Err(e) => {
            errors.push(format!("{}: {e}", health_dir.display()));
            return results;
        }
    };
    let mut runs: Vec<(Option<String>, String)> = Vec::new();
    for dir in top {
        if is_run_name(&dir) {
            runs.push((None, dir));
        } else if let Ok((sub, _)) = listing(&health_dir.join(&dir)) {
            runs.extend(
                sub.into_iter()
                    .filter(|r| is_run_name(r))
                    .map(|r| (Some(dir.clone()), r)),
            );
        }
    }
    for (session, run) in runs {
        let rel = match &session {
            Some(s) => format!("{s}/{run}"),
            None => run.clone(),
        };
        let Ok((_, files)) = listing(&health_dir.join(&rel)) else {
            continue;
        };
        for (name, meta) in files {
            let Some(sysname) = name.strip_suffix(".hw") else {
                continue;
            };
            results.push(HealthResult {
                session: session.clone(),
                run: run.clone(),
                sysname: sysname.to_owned(),
                path: format!("{rel}/{name}"),
                size: meta.len(),
                modified: journal::timestamp(meta.modified().unwrap_or(UNIX_EPOCH)),
            });
        }
    }
    results.sort_by(|a, b| {
        b.run
            .cmp(&a.run)
            .then_with(|| a.session.cmp(&b.session))
            .then_with(|| a.sysname.cmp(&b.sysname))
    });
    results
}

/// The health view: the sessions of HEALTHDIR and the machines in each.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub health_dir: String,
    pub sessions: Vec<Session>,
    pub errors: Vec<String>,
}

/// A session (`None`: results posted without one), its runs newest first.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub name: Option<String>,
    pub runs: Vec<Run>,
    /// Distinct machines over its runs.
    pub machines: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub name: String,
    pub results: Vec<HealthResult>,
}

/// The health view of HEALTHDIR `health_dir`.
pub fn health(health_dir: &Path) -> Health {
    let mut errors = Vec::new();
    let results = health_results(health_dir, &mut errors);
    let mut sessions: BTreeMap<Option<String>, BTreeMap<String, Vec<HealthResult>>> =
        BTreeMap::new();
    for r in results {
        sessions
            .entry(r.session.clone())
            .or_default()
            .entry(r.run.clone())
            .or_default()
            .push(r);
    }
    let mut sessions: Vec<Session> = sessions
        .into_iter()
        .map(|(name, runs)| {
            let machines = runs
                .values()
                .flatten()
                .map(|r| r.sysname.as_str())
                .collect::<BTreeSet<_>>()
                .len();
            Session {
                name,
                runs: runs
                    .into_iter()
                    .rev()
                    .map(|(name, results)| Run { name, results })
                    .collect(),
                machines,
            }
        })
        .collect();
    // The session with the newest run first.
    sessions.sort_by(|a, b| {
        let newest = |s: &Session| s.runs.first().map(|r| r.name.clone());
        newest(b).cmp(&newest(a))
    });
    Health {
        health_dir: health_dir.display().to_string(),
        sessions,
        errors,
    }
}

/// A file offered for download, opened from a directory listing.
pub struct Download {
    /// The listed name, for the answer's headers.
    pub name: String,
    pub file: File,
    pub size: u64,
}

/// The log `name` of LOGDIR, if the directory lists a regular file of that
/// name that is a log.
pub fn open_log(cfg: &Config, name: &str) -> Option<Download> {
    logs::machine_of_log(name)?;
    if !name.ends_with(LOG_SUFFIX) {
        return None;
    }
    let (_, files) = listing(&cfg.log_dir).ok()?;
    let (listed, _) = files.into_iter().find(|(n, _)| n == name)?;
    open_listed(&cfg.log_dir.join(&listed), listed)
}

/// The health result `path` (`[session/]run/<sysname>.hw`) of HEALTHDIR,
/// if it is one of those [`health_results`] lists.
pub fn open_health(cfg: &Config, path: &str) -> Option<Download> {
    let mut errors = Vec::new();
    let result = health_results(&cfg.health_dir, &mut errors)
        .into_iter()
        .find(|r| r.path == path)?;
    let name = path.rsplit('/').next()?.to_owned();
    open_listed(&cfg.health_dir.join(&result.path), name)
}

/// Opens a listed file without following a link put there since.
fn open_listed(path: &Path, name: String) -> Option<Download> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    meta.is_file().then_some(Download {
        name,
        size: meta.size(),
        file,
    })
}

/// The path of the index of HWDIR `hw_dir` (see [`index`]).
pub fn index_path(hw_dir: &Path) -> PathBuf {
    hw_dir.join(index::DIR_NAME).join("index")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(f: [&str; 4]) -> Item {
        f.map(HwValue::from)
    }

    #[test]
    fn summary_of_hardware_lines() {
        let items = [
            item(["system", "product", "vendor", "HP"]),
            item(["system", "product", "name", "ProLiant"]),
            item(["system", "product", "serial", "CZ1"]),
            item(["disk", "logical", "count", "1"]),
            item(["disk", "sda", "size", "899"]),
            item(["disk", "sda", "vendor", "HP"]),
            item(["disk", "sdb", "size", "16"]),
            item(["network", "eth0", "serial", "d8:9d:67:1a:d0:fc"]),
            item(["network", "eth0", "ipv4", "10.66.6.249"]),
            item(["network", "eth0", "link", "yes"]),
            item(["network", "eth1", "serial", "d8:9d:67:1a:d0:fd"]),
            item(["memory", "total", "size", "137438953472"]),
            [
                HwValue::from("cpu"),
                "physical".into(),
                "number".into(),
                HwValue::Int(2),
            ],
            item(["cpu", "logical", "number", "24"]),
        ];
        let h = summarize_hw(&items);
        assert_eq!(h.vendor.as_deref(), Some("HP"));
        assert_eq!(h.product.as_deref(), Some("ProLiant"));
        assert_eq!(h.serial.as_deref(), Some("CZ1"));
        assert_eq!(
            (h.cpus.as_deref(), h.threads.as_deref()),
            (Some("2"), Some("24"))
        );
        assert_eq!(h.memory, Some(137438953472));
        let disks: Vec<_> = h
            .disks
            .iter()
            .map(|d| (d.name.as_str(), d.size.as_deref()))
            .collect();
        assert_eq!(disks, [("sda", Some("899")), ("sdb", Some("16"))]);
        assert_eq!(h.nics.len(), 2);
        assert_eq!(h.nics[0].ipv4.as_deref(), Some("10.66.6.249"));
        assert_eq!(h.nics[0].link.as_deref(), Some("yes"));
        assert_eq!(h.nics[1].mac.as_deref(), Some("d8:9d:67:1a:d0:fd"));
        assert_eq!(h.nics[1].ipv4, None);
    }

    #[test]
    fn run_names() {
        assert!(is_run_name("2026_12_03-06h50"));
        assert!(!is_run_name("2026_12_03-06h5"));
        assert!(!is_run_name("bench1"));
        assert!(!is_run_name("../../etc/passw"));
    }
}

//! `edeploy plan`: what a configuration would give every known machine,
//! before it is deployed.
//!
//! An operator about to edit `state`, a `.specs` or a `.cmdb` wants to know
//! which of the machines already seen would get another profile, or none.
//! The server keeps each machine's hardware in HWDIR; the plan replays the
//! server's choice (LEGACY-SEMANTICS §4, with the matcher and the CMDB rule
//! the server uses: [`provision::match_specs`], [`cmdb::Indexed`]) on every one
//! of them, against the live configuration or a proposed copy of it, and
//! writes nothing and takes no lock.
//!
//! Machines compete for quotas and CMDB entries, so the answer depends on
//! an order: the machines are replayed one after the other in the order
//! they were last seen (the modification time of their `.hw` file, oldest
//! first, then by name), each seeing the counts and entries the earlier
//! ones left, as if they all booted again in that order. A machine already
//! installed with a profile keeps it without spending anything more: it
//! found its own entry in the profile's CMDB (one marked used before the
//! replay), or its last decision gave it that profile. It is then given the
//! profile even when the count is 0, as its installation is among those the
//! count already took. So the live configuration replayed on the fleet it
//! made changes nothing. (The server itself spends a count again when an
//! installed machine is installed once more: the plan counts each machine
//! once, to show the fleet a configuration makes.)
//!
//! Profiles the server would skip for want of quota are matched too (with
//! a budget of their own, so the answer is the server's): that is how an
//! installed machine is recognised, and how the machines turned away by an
//! exhausted count are counted.
//!
//! The matching is most of the work, and the order only matters for the
//! counts and CMDB entries: each `.hw` file is read, parsed and matched
//! ahead in parallel (its profiles in order, until one matches), then the
//! replay runs in order on those results. A machine whose replay may need
//! more (the profile it matched has a count, which may run out) keeps its
//! file's text, to be parsed again if it does; the others keep nothing of
//! their hardware, so memory stays well below the size of HWDIR.
//!
//! The last decision of each machine comes from the caller (the journal):
//! a machine changes when it would now get another profile than the one it
//! got last, or a profile when it got none, or none when it got one. When
//! its last decision is unknown, the live configuration's answer stands for
//! it: with a proposed configuration, the machine changes when the two
//! answers differ; without one, it never counts as a change.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value as Json};

use crate::cmdb::{self, CmdbError, Indexed};
use crate::config::Config;
use crate::hw::{self, HwError, HwLimits, Item};
use crate::journal;
use crate::literal::Dict;
use crate::provision::{self, read_if_exists, ProvisionError};
use crate::spec::{self, Budget, Spec, SpecError};
use crate::state::{Quota, State, StateError};
use crate::store;

/// A machine stored in HWDIR, read, parsed and matched ahead.
struct Machine {
    file: PathBuf,
    /// When the server last saved its `.hw` file: the replay's order.
    seen: SystemTime,
    /// The machine's name (from its hardware; from the file name when the
    /// file cannot be read), the key of its last decision.
    sysname: String,
    /// For each configuration replayed, the matches made ahead.
    ahead: Vec<Vec<Option<Tried>>>,
    /// The file's text, kept when a replay may need more matches than were
    /// made ahead (its hardware is parsed again then); the error when the
    /// file could not be read.
    source: Result<Option<Vec<u8>>, MachineError>,
}

/// Why a `.hw` file was not replayed.
#[derive(Debug)]
pub enum MachineError {
    Io {
        file: PathBuf,
        source: io::Error,
    },
    TooLarge {
        file: PathBuf,
        limit: u64,
    },
    /// With the line and column when the syntax is at fault.
    Hw(HwError),
}

impl fmt::Display for MachineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MachineError::Io { file, source } => write!(f, "{}: {source}", file.display()),
            MachineError::TooLarge { file, limit } => write!(
                f,
                "{}: larger than the {limit} bytes allowed (MAXHWSIZE)",
                file.display()
            ),
            MachineError::Hw(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for MachineError {}

/// Why no plan could be made.
#[derive(Debug)]
pub enum PlanError {
    Io { path: PathBuf, source: io::Error },
    State(StateError),
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            PlanError::State(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PlanError {}

/// What a machine got the last time it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Last {
    Profile(String),
    /// An error: no profile matched, no quota, no CMDB entry...
    Nothing,
}

/// What each machine got last, by sysname, from the decisions journal
/// `path`: the profile of a `configured` decision, else nothing (no match,
/// a refusal, or a failure report: that installation failed and its count
/// was given back). Stored logs and health results are no decisions.
pub fn last_decisions(path: &Path) -> io::Result<HashMap<String, Last>> {
    Ok(journal::last_decisions(path)?
        .into_iter()
        .map(|(sysname, record)| {
            let last = match record.decision {
                journal::Decision::Configured { profile, .. } => Last::Profile(profile),
                _ => Last::Nothing,
            };
            (sysname, last)
        })
        .collect())
}

/// What the server would answer a machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A profile, with the index of its CMDB entry when it has a CMDB.
    /// `kept`: the machine was installed with it already, and takes no
    /// count nor new entry.
    Profile {
        profile: String,
        cmdb_entry: Option<usize>,
        kept: bool,
    },
    /// The error the server would answer.
    Nothing { reason: String },
    /// The `.hw` file could not be read: not replayed.
    Unreadable { error: String },
}

impl Decision {
    /// The profile given, if any.
    pub fn profile(&self) -> Option<&str> {
        match self {
            Decision::Profile { profile, .. } => Some(profile),
            _ => None,
        }
    }
}

/// How the machines replayed use one entry of the state file.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileUse {
    pub profile: String,
    /// The count in the state file.
    pub quota: Quota,
    /// The count left once every machine is replayed.
    pub left: Quota,
    /// Machines that would get it.
    pub machines: usize,
    /// Of those, the ones spending a count (not installed with it yet).
    pub new: usize,
    /// Machines matching its specs that no count was left for.
    pub turned_away: usize,
    /// Its CMDB, when it has a readable one.
    pub cmdb: Option<CmdbUse>,
    /// Machines that matched it but for which its CMDB had no entry.
    pub cmdb_short: usize,
}

/// A profile's CMDB before and after the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdbUse {
    pub entries: usize,
    /// Entries not used yet (without a `used` key).
    pub free: usize,
    pub free_after: usize,
}

/// The answers of one configuration to every machine, in the machines'
/// order.
struct Replay {
    decisions: Vec<Decision>,
    profiles: Vec<ProfileUse>,
}

/// One machine in the plan.
#[derive(Debug)]
pub struct Row {
    pub sysname: String,
    pub file: PathBuf,
    pub seen: SystemTime,
    /// Its last decision, `None` when unknown.
    pub last: Option<Last>,
    /// The answer of the configuration examined.
    pub now: Decision,
    /// The live configuration's answer, when a proposed one is examined.
    pub live: Option<Decision>,
    pub changed: bool,
}

/// A whole plan: every machine of HWDIR and every profile of the state file.
#[derive(Debug)]
pub struct Plan {
    /// The configuration examined.
    pub config_dir: PathBuf,
    /// The live configuration, when a proposed one is examined.
    pub live_dir: Option<PathBuf>,
    pub hw_dir: PathBuf,
    pub rows: Vec<Row>,
    pub profiles: Vec<ProfileUse>,
}

/// Replays the configuration `cfg` (or, with `proposed`, the directory
/// holding a proposed `state`, `.specs`, `.cmdb` and `.configure` files,
/// with the other settings of `cfg`) on every machine of `cfg`'s HWDIR.
/// `last` gives a machine's last decision from its sysname.
pub fn plan(
    cfg: &Config,
    proposed: Option<&Path>,
    last: &dyn Fn(&str) -> Option<Last>,
) -> Result<Plan, PlanError> {
    let live = Setup::load(cfg)?;
    let proposed = match proposed {
        Some(dir) => {
            let mut proposed_cfg = cfg.clone();
            proposed_cfg.config_dir = Config::for_dir(dir).config_dir;
            Some(Setup::load(&proposed_cfg)?)
        }
        None => None,
    };
    let setups: Vec<&Setup> = [Some(&live), proposed.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    let mut machines = read_machines(cfg, &setups)?;
    let lasts: Vec<Option<Last>> = machines.iter().map(|m| last(&m.sysname)).collect();
    let live_dir = proposed.as_ref().map(|_| cfg.config_dir.clone());
    let live = live.replay(&mut machines, 0, &lasts, &cfg.hw_limits);
    let (examined, now, live) = match proposed {
        Some(proposed) => {
            let dir = proposed.cfg.config_dir.clone();
            let now = proposed.replay(&mut machines, 1, &lasts, &cfg.hw_limits);
            (dir, now, Some(live))
        }
        None => (cfg.config_dir.clone(), live, None),
    };
    let mut live_decisions = live.as_ref().map(|l| l.decisions.iter());
    let rows = machines
        .into_iter()
        .zip(lasts)
        .zip(now.decisions)
        .map(|((machine, last), now)| {
            let live = live_decisions.as_mut().and_then(|d| d.next()).cloned();
            let changed = changed(&now, last.as_ref(), live.as_ref());
            Row {
                sysname: machine.sysname,
                file: machine.file,
                seen: machine.seen,
                last,
                now,
                live,
                changed,
            }
        })
        .collect();
    Ok(Plan {
        config_dir: examined,
        live_dir,
        hw_dir: cfg.hw_dir.clone(),
        rows,
        profiles: now.profiles,
    })
}

/// Whether a machine moves: its answer against its last decision, or
/// against the live answer when that is unknown (see the module's doc).
fn changed(now: &Decision, last: Option<&Last>, live: Option<&Decision>) -> bool {
    if matches!(now, Decision::Unreadable { .. }) {
        return false;
    }
    match (last, live) {
        (Some(Last::Profile(p)), _) => now.profile() != Some(p.as_str()),
        (Some(Last::Nothing), _) => now.profile().is_some(),
        (None, Some(live)) => now.profile() != live.profile(),
        (None, None) => false,
    }
}

/// Reads every `<sysname>.hw` of HWDIR, in the order they were last saved
/// (oldest first, then by name), within the limits the server applies to
/// an upload, and matches each ahead for each of `setups`. The files are
/// read, parsed and matched in parallel, one at a time per thread; one
/// that cannot be read is kept with its error, which names its file (and
/// line and column when its syntax is at fault).
fn read_machines(cfg: &Config, setups: &[&Setup]) -> Result<Vec<Machine>, PlanError> {
    let hw_dir = &cfg.hw_dir;
    let dir_error = |source| PlanError::Io {
        path: hw_dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(hw_dir).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let name = entry.file_name();
        // Temporary files (hidden, `.tmp`) never end in `.hw`.
        if name.as_encoded_bytes().ends_with(b".hw") && entry.file_type().is_ok_and(|t| !t.is_dir())
        {
            files.push(entry.path());
        }
    }
    let specs: Vec<_> = setups.iter().map(|s| (s.specs(), s.unlimited())).collect();
    let mut machines = in_parallel(&files, |file| {
        let (seen, read) = read_hw(file, cfg.max_hw_size);
        let parsed = read.and_then(|src| Ok((hw::parse_hw_with(file, &src, &cfg.hw_limits)?, src)));
        match parsed {
            Ok((items, src)) => {
                let mut complete = true;
                let ahead = specs
                    .iter()
                    .map(|(specs, unlimited)| {
                        let (ahead, all) = match_ahead(&items, specs, unlimited);
                        complete &= all;
                        ahead
                    })
                    .collect();
                Machine {
                    file: file.clone(),
                    seen,
                    sysname: hw::sysname_and_macs(&items).0,
                    ahead,
                    source: Ok((!complete).then_some(src)),
                }
            }
            Err(e) => Machine {
                file: file.clone(),
                seen,
                sysname: file
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
                    .trim_end_matches(".hw")
                    .to_owned(),
                ahead: Vec::new(),
                source: Err(e),
            },
        }
    });
    machines.sort_by(|a, b| a.seen.cmp(&b.seen).then_with(|| a.file.cmp(&b.file)));
    Ok(machines)
}

/// A `.hw` file's modification time and text, at most `max_size` bytes.
fn read_hw(file: &Path, max_size: u64) -> (SystemTime, Result<Vec<u8>, MachineError>) {
    let io_error = |source| MachineError::Io {
        file: file.to_path_buf(),
        source,
    };
    let mut seen = UNIX_EPOCH;
    let mut read = || {
        // The server replaces these files by renaming new ones over them:
        // a file opened is one whole version.
        let opened = File::open(file).map_err(io_error)?;
        if let Ok(modified) = opened.metadata().and_then(|m| m.modified()) {
            seen = modified;
        }
        let mut src = Vec::new();
        opened
            .take(max_size.saturating_add(1))
            .read_to_end(&mut src)
            .map_err(io_error)?;
        if src.len() as u64 > max_size {
            return Err(MachineError::TooLarge {
                file: file.to_path_buf(),
                limit: max_size,
            });
        }
        Ok(src)
    };
    let read = read();
    (seen, read)
}

impl From<HwError> for MachineError {
    fn from(e: HwError) -> MachineError {
        MachineError::Hw(e)
    }
}

/// `f` of each item, in order, computed by as many threads as there are
/// processors (at most 8).
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let chunk = items.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// A profile's specs matched against a machine with the whole budget of a
/// request, and the work it took.
struct Tried {
    result: Result<Option<(Dict, Dict)>, SpecError>,
    spent: u64,
}

impl Tried {
    fn new(items: &[Item], specs: &[Spec]) -> Tried {
        let mut budget = Budget::request();
        let result = provision::match_specs(items, specs, &mut budget);
        Tried {
            result,
            spent: budget.total() - budget.left(),
        }
    }

    /// The outcome with only `left` of the budget (see [`Budget::left`]),
    /// which it is charged.
    fn within(self, left: &mut u64) -> Result<Option<(Dict, Dict)>, SpecError> {
        match self.result {
            Ok(_) if self.spent > *left => Err(SpecError::TooComplex {
                budget: spec::MATCH_BUDGET,
            }),
            Ok(matched) => {
                *left -= self.spent;
                Ok(matched)
            }
            Err(e) => Err(e),
        }
    }
}

/// The matches the replay of a machine needs for sure, made ahead in
/// parallel: its profiles in order, until one matches (or fails). And
/// whether they are all the replay can need: the last one tried has no
/// count to run out of (`unlimited`), or every profile was tried.
fn match_ahead(
    items: &[Item],
    specs: &[Option<&[Spec]>],
    unlimited: &[bool],
) -> (Vec<Option<Tried>>, bool) {
    let mut ahead: Vec<Option<Tried>> = specs.iter().map(|_| None).collect();
    for (index, (slot, specs)) in ahead.iter_mut().zip(specs).enumerate() {
        let Some(specs) = specs else { continue };
        let tried = Tried::new(items, specs);
        let stop = !matches!(tried.result, Ok(None));
        *slot = Some(tried);
        if stop {
            let all = unlimited.get(index).copied().unwrap_or(false);
            return (ahead, all);
        }
    }
    (ahead, true)
}

/// A profile's files, read once for the whole replay. Errors are the
/// messages the server answers when it reaches the profile.
struct Files {
    /// `None`: no `.specs` file, which never matches.
    specs: Result<Option<Vec<Spec>>, String>,
    cmdb: Result<Option<Held>, String>,
    configure: Result<(), String>,
}

/// A CMDB during the replay, and which entries the replay gave.
struct Held {
    pool: Indexed,
    free: usize,
    given: Vec<bool>,
}

impl Files {
    fn read(cfg: &Config, state: &State, profile: &str) -> Files {
        let paths = (
            state.profile_file(profile, "specs"),
            state.profile_file(profile, "cmdb"),
            state.profile_file(profile, "configure"),
        );
        let (specs_file, cmdb_file, configure_file) = match paths {
            (Ok(specs), Ok(cmdb), Ok(configure)) => (specs, cmdb, configure),
            (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
                return Files {
                    specs: Err(e.to_string()),
                    cmdb: Err(e.to_string()),
                    configure: Err(e.to_string()),
                }
            }
        };
        let io = |path: &Path, e: io::Error| format!("{}: {e}", path.display());
        let specs = match read_if_exists(&specs_file) {
            Ok(Some(src)) => spec::parse_specs(&specs_file, &src)
                .map(Some)
                .map_err(|e| e.to_string()),
            Ok(None) => Ok(None),
            Err(e) => Err(io(&specs_file, e)),
        };
        let cmdb = match read_if_exists(&cmdb_file) {
            Ok(Some(src)) => match Indexed::parse(&cmdb_file, &src, cfg.max_cmdb_size) {
                Ok(Some(pool)) => Ok(Some(Held {
                    free: pool.free(),
                    given: vec![false; pool.len()],
                    pool,
                })),
                Ok(None) => Ok(None),
                Err(e) => Err(e.to_string()),
            },
            Ok(None) => Ok(None),
            Err(e) => Err(io(&cmdb_file, e)),
        };
        let configure = File::open(&configure_file)
            .map(drop)
            .map_err(|e| io(&configure_file, e));
        Files {
            specs,
            cmdb,
            configure,
        }
    }
}

/// A configuration to replay: its settings, its state and its profiles'
/// files, which the replay changes in memory.
struct Setup {
    cfg: Config,
    state: State,
    files: Vec<Files>,
    /// For each entry of the state file, its profile's files.
    slots: Vec<usize>,
}

impl Setup {
    fn load(cfg: &Config) -> Result<Setup, PlanError> {
        let state_file = cfg.config_dir.join("state");
        let src = store::read_version(&state_file).map_err(|source| PlanError::Io {
            path: state_file.clone(),
            source,
        })?;
        let state = State::parse(&state_file, &src).map_err(PlanError::State)?;
        let mut files: Vec<Files> = Vec::new();
        let mut file_of: HashMap<&str, usize> = HashMap::new();
        let slots = state
            .entries()
            .iter()
            .map(|entry| {
                *file_of.entry(&entry.profile).or_insert_with(|| {
                    files.push(Files::read(cfg, &state, &entry.profile));
                    files.len() - 1
                })
            })
            .collect();
        Ok(Setup {
            cfg: cfg.clone(),
            state,
            files,
            slots,
        })
    }

    /// Each entry's specs, when it has readable ones.
    fn specs(&self) -> Vec<Option<&[Spec]>> {
        self.slots
            .iter()
            .map(|&slot| match &self.files[slot].specs {
                Ok(Some(specs)) => Some(specs.as_slice()),
                _ => None,
            })
            .collect()
    }

    /// Whether each entry's count is `'*'`.
    fn unlimited(&self) -> Vec<bool> {
        let entries = self.state.entries();
        entries
            .iter()
            .map(|e| e.quota == Quota::Unlimited)
            .collect()
    }

    /// Replays the configuration on `machines` in their order (see the
    /// module's doc), with the matches made ahead for it (`ahead[setup]`);
    /// `lasts[i]` is the last decision of `machines[i]`.
    fn replay(
        mut self,
        machines: &mut [Machine],
        setup: usize,
        lasts: &[Option<Last>],
        limits: &HwLimits,
    ) -> Replay {
        let mut profiles: Vec<ProfileUse> = self
            .state
            .entries()
            .iter()
            .map(|e| ProfileUse {
                profile: e.profile.clone(),
                quota: e.quota,
                left: e.quota,
                machines: 0,
                new: 0,
                turned_away: 0,
                cmdb: None,
                cmdb_short: 0,
            })
            .collect();
        let mut decisions = Vec::with_capacity(machines.len());
        for (machine, last) in machines.iter_mut().zip(lasts) {
            let decision = match &machine.source {
                Ok(source) => {
                    let mut ahead =
                        std::mem::take(machine.ahead.get_mut(setup).unwrap_or(&mut Vec::new()));
                    let hardware = Hardware {
                        file: &machine.file,
                        source: source.as_deref(),
                        limits,
                        items: None,
                    };
                    self.decide(&mut profiles, hardware, &mut ahead, last.as_ref())
                }
                Err(e) => Decision::Unreadable {
                    error: e.to_string(),
                },
            };
            decisions.push(decision);
        }
        let entries = self.state.entries();
        for ((usage, entry), slot) in profiles.iter_mut().zip(entries).zip(&self.slots) {
            usage.left = entry.quota;
            if let Ok(Some(held)) = &self.files[*slot].cmdb {
                usage.cmdb = Some(CmdbUse {
                    entries: held.pool.len(),
                    free: held.free,
                    free_after: held.pool.free(),
                });
            }
        }
        Replay {
            decisions,
            profiles,
        }
    }
}

/// A machine's hardware when the replay needs more matches than were made
/// ahead: parsed from the text kept (or read again) at the first need.
struct Hardware<'a> {
    file: &'a Path,
    source: Option<&'a [u8]>,
    limits: &'a HwLimits,
    items: Option<Vec<Item>>,
}

impl Hardware<'_> {
    fn items(&mut self) -> Result<&[Item], String> {
        if self.items.is_none() {
            let read;
            let src = match self.source {
                Some(src) => src,
                None => {
                    read = store::read_version(self.file)
                        .map_err(|e| format!("{}: {e}", self.file.display()))?;
                    &read
                }
            };
            let items =
                hw::parse_hw_with(self.file, src, self.limits).map_err(|e| e.to_string())?;
            self.items = Some(items);
        }
        Ok(self.items.as_deref().unwrap_or_default())
    }
}

impl Setup {
    /// The server's profile loop for one machine, on the replay's state.
    /// `ahead` are the matches made ahead for this machine (see [`match_ahead`]).
    fn decide(
        &mut self,
        profiles: &mut [ProfileUse],
        mut hardware: Hardware<'_>,
        ahead: &mut [Option<Tried>],
        last: Option<&Last>,
    ) -> Decision {
        let Setup {
            cfg,
            state,
            files,
            slots,
        } = self;
        let nothing = |reason: String| Decision::Nothing { reason };
        let mut left = spec::MATCH_BUDGET;
        // For the profiles the server would not try: never the server's budget.
        let mut spare = spec::MATCH_BUDGET;
        let mut tried = Vec::new();
        for index in 0..slots.len() {
            let entry = &state.entries()[index];
            let has_quota = entry.quota.available();
            let held_by_last = matches!(last, Some(Last::Profile(p)) if *p == entry.profile);
            if has_quota {
                tried.push(entry.profile.clone());
            }
            // Errors are the server's answer when it would serve this profile.
            let mut serve = has_quota || held_by_last;
            let profile_files = &mut files[slots[index]];
            let specs = match &profile_files.specs {
                Ok(Some(specs)) => specs,
                Ok(None) => continue,
                Err(e) if serve => return nothing(e.clone()),
                Err(_) => continue,
            };
            let tried = match ahead.get_mut(index).and_then(Option::take) {
                Some(tried) => tried,
                None => match hardware.items() {
                    Ok(items) => Tried::new(items, specs),
                    Err(error) => return Decision::Unreadable { error },
                },
            };
            let (vars, forced) = match tried.within(if has_quota { &mut left } else { &mut spare })
            {
                Ok(Some(matched)) => matched,
                Ok(None) => continue,
                Err(e) if serve => return nothing(e.to_string()),
                Err(_) => continue,
            };
            let chosen: Result<Option<usize>, CmdbError> = match &profile_files.cmdb {
                Ok(Some(held)) => held.pool.choose(&vars, &forced).map(Some),
                Ok(None) => Ok(None),
                Err(e) if serve => return nothing(e.clone()),
                Err(_) => continue,
            };
            // The machine's own entry: used before the replay, given by no
            // earlier machine of it.
            let own = match (&profile_files.cmdb, &chosen) {
                (Ok(Some(held)), Ok(Some(i))) => {
                    let given = held.given.get(*i).copied().unwrap_or(true);
                    held.pool.entry(*i).is_some_and(cmdb::is_used) && !given
                }
                _ => false,
            };
            let kept = held_by_last || own;
            serve |= kept;
            if !serve {
                profiles[index].turned_away += 1;
                continue;
            }
            let chosen = match chosen {
                Ok(chosen) => chosen,
                Err(e) => {
                    if matches!(e, CmdbError::Exhausted { .. }) {
                        profiles[index].cmdb_short += 1;
                    }
                    return nothing(e.to_string());
                }
            };
            if let Err(e) = &profile_files.configure {
                return nothing(e.clone());
            }
            if let (Some(i), Ok(Some(held))) = (chosen, &mut profile_files.cmdb) {
                held.pool.take(i, &vars);
                if let Some(given) = held.given.get_mut(i) {
                    *given = true;
                }
            }
            let usage = &mut profiles[index];
            usage.machines += 1;
            if !kept {
                state.consume(index);
                usage.new += 1;
            }
            return Decision::Profile {
                profile: usage.profile.clone(),
                cmdb_entry: chosen,
                kept,
            };
        }
        let error = if tried.is_empty() {
            ProvisionError::NoQuota {
                state_file: cfg.config_dir.join("state"),
            }
        } else {
            ProvisionError::NoMatch {
                config_dir: cfg.config_dir.clone(),
                profiles: tried,
            }
        };
        nothing(error.to_string())
    }
}

/// Widest profile column of the tables, so that they fit 80 columns.
const PROFILE_WIDTH: usize = 16;

/// A profile name cut to the table's column.
fn cell(text: &str) -> String {
    if text.chars().count() <= PROFILE_WIDTH {
        return text.to_owned();
    }
    let cut: String = text.chars().take(PROFILE_WIDTH - 1).collect();
    format!("{cut}~")
}

fn decision_cell(decision: &Decision) -> String {
    match decision {
        Decision::Profile { profile, .. } => cell(profile),
        Decision::Nothing { .. } => "(none)".to_owned(),
        Decision::Unreadable { .. } => "(unreadable)".to_owned(),
    }
}

fn last_cell(last: Option<&Last>) -> String {
    match last {
        Some(Last::Profile(p)) => cell(p),
        Some(Last::Nothing) => "(none)".to_owned(),
        None => "-".to_owned(),
    }
}

fn quota_cell(quota: Quota) -> String {
    match quota {
        Quota::Unlimited => "*".to_owned(),
        Quota::Remaining(n) => n.to_string(),
    }
}

impl Plan {
    /// Machines that would change profile.
    pub fn changed(&self) -> usize {
        self.rows.iter().filter(|r| r.changed).count()
    }

    fn count(&self, f: impl Fn(&Row) -> bool) -> usize {
        self.rows.iter().filter(|r| f(r)).count()
    }

    /// The plan for people: a line per machine (only those that change with
    /// `only_changed`), the profiles, why machines would get nothing, the
    /// files that could not be read, and a summary line. Profile columns
    /// are cut to 16 characters; the machine's name comes last.
    pub fn write_table(&self, out: &mut dyn Write, only_changed: bool) -> io::Result<()> {
        let examined = match &self.live_dir {
            Some(live) => format!(
                "{} (proposed; live: {})",
                self.config_dir.display(),
                live.display()
            ),
            None => format!("{} (live)", self.config_dir.display()),
        };
        writeln!(
            out,
            "Machines: {} in {}, oldest .hw file first\n\
             Configuration: {examined}\n\
             Each machine takes the counts and CMDB entries the server would give it\n\
             after the earlier ones; one installed with a profile already keeps it.",
            self.rows.len(),
            self.hw_dir.display()
        )?;
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.changed || !only_changed)
            .collect();
        let mut headers = vec!["NOW"];
        if self.live_dir.is_some() {
            headers = vec!["PROPOSED", "LIVE"];
        }
        headers.push("LAST");
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let mut cells = vec![decision_cell(&r.now)];
                if let Some(live) = &r.live {
                    cells.push(decision_cell(live));
                }
                cells.push(last_cell(r.last.as_ref()));
                cells
            })
            .collect();
        let widths: Vec<usize> = (0..headers.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|c| c[i].chars().count())
                    .chain([headers[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        writeln!(out)?;
        if rows.is_empty() {
            writeln!(
                out,
                "{}",
                if only_changed {
                    "No machine would change profile."
                } else {
                    "No machine in HWDIR."
                }
            )?;
        } else {
            write!(out, "  ")?;
            for (header, width) in headers.iter().zip(&widths) {
                write!(out, "{header:<width$}  ")?;
            }
            writeln!(out, "MACHINE")?;
            for (row, cells) in rows.iter().zip(&cells) {
                write!(out, "{} ", if row.changed { '*' } else { ' ' })?;
                for (cell, width) in cells.iter().zip(&widths) {
                    write!(out, "{cell:<width$}  ")?;
                }
                writeln!(out, "{}", row.sysname)?;
            }
            writeln!(out, "(* would change profile)")?;
        }

        writeln!(out)?;
        let width = self
            .profiles
            .iter()
            .map(|p| cell(&p.profile).chars().count())
            .chain(["PROFILE".len()])
            .max()
            .unwrap_or(0);
        writeln!(
            out,
            "{:<width$}  COUNT  AFTER  MACHINES  NEW  NO-COUNT  CMDB-FREE  AFTER",
            "PROFILE"
        )?;
        for p in &self.profiles {
            let (free, after) = match p.cmdb {
                Some(c) => (
                    format!("{}/{}", c.free, c.entries),
                    c.free_after.to_string(),
                ),
                None => ("-".to_owned(), "-".to_owned()),
            };
            writeln!(
                out,
                "{:<width$}  {:>5}  {:>5}  {:>8}  {:>3}  {:>8}  {free:>9}  {after:>5}",
                cell(&p.profile),
                quota_cell(p.quota),
                quota_cell(p.left),
                p.machines,
                p.new,
                p.turned_away,
            )?;
        }
        writeln!(
            out,
            "(NEW: machines not installed with it yet, each spending a count; NO-COUNT:\n\
             machines matching it that no count was left for)"
        )?;

        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for row in &self.rows {
            if let Decision::Nothing { reason } = &row.now {
                *reasons.entry(reason).or_default() += 1;
            }
        }
        if !reasons.is_empty() {
            writeln!(
                out,
                "\nWould get nothing (`edeploy explain HWDIR/<machine>.hw` says why):"
            )?;
            for (reason, n) in reasons {
                writeln!(out, "{n:>6}  {reason}")?;
            }
        }
        let unreadable: Vec<&str> = self
            .rows
            .iter()
            .filter_map(|r| match &r.now {
                Decision::Unreadable { error } => Some(error.as_str()),
                _ => None,
            })
            .collect();
        if !unreadable.is_empty() {
            writeln!(out, "\nNot replayed, unreadable:")?;
            for error in unreadable {
                writeln!(out, "  {error}")?;
            }
        }
        writeln!(out)?;
        writeln!(out, "{}", self.summary())
    }

    /// The last line of the table.
    fn summary(&self) -> String {
        let unknown = self.count(|r| r.last.is_none());
        let compared = if self.live_dir.is_some() {
            "compared with the live answer"
        } else {
            "not counted as changes"
        };
        format!(
            "{} machine(s): {} would change profile, {} would get nothing, {} unreadable;\n\
             last decision unknown for {unknown} ({compared}).",
            self.rows.len(),
            self.changed(),
            self.count(|r| matches!(r.now, Decision::Nothing { .. })),
            self.count(|r| matches!(r.now, Decision::Unreadable { .. })),
        )
    }

    /// The plan for scripts, with every machine (those that change only
    /// with `only_changed`).
    pub fn to_json(&self, only_changed: bool) -> Json {
        let machines: Vec<Json> = self
            .rows
            .iter()
            .filter(|r| r.changed || !only_changed)
            .map(|r| {
                let seen = r.seen.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let last = match &r.last {
                    Some(Last::Profile(p)) => json!({ "profile": p }),
                    Some(Last::Nothing) => json!({ "profile": null }),
                    None => Json::Null,
                };
                let mut machine = json!({
                    "sysname": r.sysname,
                    "file": r.file.to_string_lossy(),
                    "seen": seen,
                    "last": last,
                    "now": decision_json(&r.now),
                    "changed": r.changed,
                });
                if let Some(live) = &r.live {
                    machine["live"] = decision_json(live);
                }
                machine
            })
            .collect();
        let quota = |q: Quota| match q {
            Quota::Unlimited => json!("*"),
            Quota::Remaining(n) => json!(n),
        };
        let profiles: Vec<Json> = self
            .profiles
            .iter()
            .map(|p| {
                json!({
                    "profile": p.profile,
                    "count": quota(p.quota),
                    "count_after": quota(p.left),
                    "machines": p.machines,
                    "new": p.new,
                    "turned_away": p.turned_away,
                    "cmdb": p.cmdb.map(|c| json!({
                        "entries": c.entries,
                        "free": c.free,
                        "free_after": c.free_after,
                    })),
                    "cmdb_short": p.cmdb_short,
                })
            })
            .collect();
        json!({
            "config_dir": self.config_dir.to_string_lossy(),
            "live_config_dir": self.live_dir.as_ref().map(|d| d.to_string_lossy()),
            "hw_dir": self.hw_dir.to_string_lossy(),
            "order": "last seen, oldest first (.hw modification time, then name)",
            "machines": machines,
            "profiles": profiles,
            "summary": {
                "machines": self.rows.len(),
                "changed": self.changed(),
                "nothing": self.count(|r| matches!(r.now, Decision::Nothing { .. })),
                "unreadable": self.count(|r| matches!(r.now, Decision::Unreadable { .. })),
                "last_unknown": self.count(|r| r.last.is_none()),
            },
        })
    }
}

fn decision_json(decision: &Decision) -> Json {
    match decision {
        Decision::Profile {
            profile,
            cmdb_entry,
            kept,
        } => json!({ "profile": profile, "cmdb_entry": cmdb_entry, "kept": kept }),
        Decision::Nothing { reason } => json!({ "profile": null, "reason": reason }),
        Decision::Unreadable { error } => json!({ "profile": null, "error": error }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Decision as Logged, Record};

    #[test]
    fn the_last_decision_of_each_machine_from_the_journal() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("journal");
        let log = |sysname: &str, decision: Logged| {
            let r = Record::new(
                "upload.py",
                "192.0.2.1",
                Some("SERVER"),
                Some(sysname),
                decision,
            );
            journal::append(&path, u64::MAX, &r).unwrap();
        };
        let configured = |profile: &str| Logged::Configured {
            profile: profile.into(),
            cmdb_entry: None,
            hostname: None,
            ip: None,
        };
        log("installed", configured("hp"));
        log(
            "installed",
            Logged::LogStored {
                file: "installed.log.gz".into(),
            },
        );
        log("failed", configured("dell"));
        log(
            "failed",
            Logged::FailureReport {
                profile: "dell".into(),
                quota_given_back: true,
            },
        );
        log(
            "unmatched",
            Logged::NoMatch {
                profiles: Vec::new(),
                more: 0,
            },
        );
        let last = last_decisions(&path).unwrap();
        assert_eq!(last.len(), 3);
        assert_eq!(last["installed"], Last::Profile("hp".into()));
        assert_eq!(last["failed"], Last::Nothing);
        assert_eq!(last["unmatched"], Last::Nothing);
    }
}

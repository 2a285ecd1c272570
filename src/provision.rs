//! One provisioning request from start to finish: the legacy `upload.py`
//! transaction (LEGACY-SEMANTICS.md §1 and §4).
//!
//! Save the machine's `.hw` file and register it with pxemngr (outside the
//! lock: they concern this machine only), then, under one exclusive lock,
//! either record a failure report or find the first profile with quota
//! whose specs match, choose its CMDB entry and build the configure
//! script. Unlike the legacy server, nothing of the match is
//! written until everything it needs has been read, and the answer is only
//! produced once the CMDB and state files are durably replaced, together:
//! they are one commit (see `store::commit_all`), which the next request
//! completes if a crash interrupted it, before anything else. So a crash at
//! any point leaves the old files or the new ones, never the CMDB entry
//! used without the quota spent, and a client never receives a script
//! whose CMDB entry is not recorded as used.
//!
//! Requests queue on the lock, so it is held as briefly as possible. The
//! match, the expensive part, is never made under it: matching reads only
//! the hardware and the `.specs` files, which no request writes, so the
//! profiles are matched before the lock is taken, from the state as it is
//! then (a machine that matches nothing is answered without the lock at
//! all). Under the lock the state is read again, and only checked: the
//! first profile with quota must be one already matched, with the same
//! `.specs` text; otherwise the lock is released, the missing profiles are
//! matched, and the request tries again. The directory holding the new
//! files is flushed after the lock is released.
//! A dry run takes no lock at all, so that no reader delays a request
//! (see `store`).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::cmdb::{self, CmdbError};
use crate::config::Config;
use crate::hw::{self, Item};
use crate::literal::{Dict, Value};
use crate::pxemngr;
use crate::script;
use crate::spec::{self, SpecError, Vars};
use crate::state::{State, StateError, UnsafeProfile};
use crate::store::{self, Lock};

/// What a request produced.
#[derive(Debug)]
pub enum Outcome {
    /// A profile matched: the script to send back.
    Configured(Configured),
    /// A failure report was recorded (or ignored: `'*'` or unknown profile).
    /// The legacy client expects an empty answer.
    FailureReported {
        profile: String,
        quota_restored: bool,
        /// Problems that did not stop the request, for the log.
        warnings: Vec<String>,
    },
}

/// A successful match.
#[derive(Debug)]
pub struct Configured {
    pub sysname: String,
    pub profile: String,
    pub vars: Dict,
    /// Index of the CMDB entry given to the machine, when the profile has a CMDB.
    pub cmdb_entry: Option<usize>,
    pub script: Vec<u8>,
    /// Problems that did not stop provisioning (pxemngr, the completion of
    /// an interrupted commit), for the log.
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub enum ProvisionError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    State(StateError),
    /// A profile of the state file whose name cannot name its files.
    UnsafeProfile(UnsafeProfile),
    Spec(SpecError),
    Cmdb(CmdbError),
    /// No profile has quota left.
    NoQuota {
        state_file: PathBuf,
    },
    /// Profiles had quota but none matched.
    NoMatch {
        config_dir: PathBuf,
        profiles: Vec<String>,
    },
    /// Concurrent requests kept spending the quota of every profile the
    /// machine matched, faster than it could match the next ones.
    Unsettled,
}

impl fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProvisionError::Io { path, source } => write!(f, "{}: {}", path.display(), source),
            ProvisionError::State(e) => e.fmt(f),
            ProvisionError::UnsafeProfile(e) => e.fmt(f),
            ProvisionError::Spec(e) => e.fmt(f),
            ProvisionError::Cmdb(e) => e.fmt(f),
            // The legacy messages, verbatim.
            ProvisionError::NoQuota { state_file } => {
                write!(f, "No more role available in {}", state_file.display())
            }
            ProvisionError::NoMatch {
                config_dir,
                profiles,
            } => write!(
                f,
                "Unable to match requirements on the following available roles in {}: {}",
                config_dir.display(),
                profiles.join(", ")
            ),
            ProvisionError::Unsettled => write!(
                f,
                "the state kept changing while this machine was matched \
                 ({MAX_ROUNDS} times): try again"
            ),
        }
    }
}

impl std::error::Error for ProvisionError {}

impl From<StateError> for ProvisionError {
    fn from(e: StateError) -> ProvisionError {
        ProvisionError::State(e)
    }
}

impl From<UnsafeProfile> for ProvisionError {
    fn from(e: UnsafeProfile) -> ProvisionError {
        ProvisionError::UnsafeProfile(e)
    }
}

impl From<CmdbError> for ProvisionError {
    fn from(e: CmdbError) -> ProvisionError {
        ProvisionError::Cmdb(e)
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ProvisionError + '_ {
    move |source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Serves one request for the machine described by `items`.
///
/// `failure` is the profile of a failed installation (the initrd's `-F` /
/// `failure=`): its numeric count is given back and nothing else happens; we
/// never consume quota on a failure report. With `dry_run`, nothing is
/// written, no external command is run and no lock is taken.
pub fn provision(
    cfg: &Config,
    items: &[Item],
    failure: Option<&str>,
    dry_run: bool,
) -> Result<Outcome, ProvisionError> {
    let (sysname, macs) = hw::sysname_and_macs(items);
    let mut known = Known::default();
    if dry_run {
        for _ in 0..MAX_ROUNDS {
            if failure.is_none() {
                known.match_profiles(cfg, items)?;
            }
            if let Some((decided, _)) = transaction(cfg, failure, &mut known, false)? {
                return Ok(decided.finish(sysname, Vec::new()));
            }
        }
        return Err(ProvisionError::Unsettled);
    }

    // What needs no lock is done before taking it or after releasing it,
    // so that requests wait for each other as little as possible. The
    // machine's own file concerns no other request (it is replaced
    // atomically), and pxemngr may be slow. Its name comes from the
    // machine: a link of that name is replaced, never written through.
    let hw_file = cfg.hw_dir.join(hw_file_name(&sysname));
    let text = hw::items_text(items);
    store::replace_file_no_follow(&hw_file, &text).map_err(io_error(&hw_file))?;
    let mut warnings = if cfg.use_pxemngr {
        pxemngr::register(&sysname, &macs)
    } else {
        Vec::new()
    };
    // Temporary files of killed requests, harmless but piling up; the
    // directories may be large, so only now and then.
    let record = cfg.config_dir.join(store::COMMIT_RECORD);
    let dirs = [&*cfg.config_dir, &cfg.hw_dir, &cfg.log_dir];
    match store::sweep_now_and_then(&cfg.lock_file, &dirs, Some(&record)) {
        Ok(Some(n)) if n > 0 => warnings.push(format!(
            "removed {n} temporary file(s) left by killed requests"
        )),
        Ok(_) => {}
        Err(e) => warnings.push(format!("cannot remove temporary files: {e}")),
    }

    let mut committed = None;
    for _ in 0..MAX_ROUNDS {
        if failure.is_none() {
            known.match_profiles(cfg, items)?;
        }
        let _lock = Lock::exclusive(&cfg.lock_file).map_err(io_error(&cfg.lock_file))?;
        // Whatever a killed request left half-committed is completed first:
        // everything below reads files that agree.
        let recovery = store::recover(&record).map_err(io_error(&record))?;
        warnings.extend(describe_recovery(&recovery));
        committed = transaction(cfg, failure, &mut known, true)?;
        if committed.is_some() {
            break;
        }
    }
    let (decided, renamed) = committed.ok_or(ProvisionError::Unsettled)?;
    if let Some(renamed) = renamed {
        renamed.sync().map_err(io_error(&cfg.config_dir))?;
    }
    store::crash_point("answer", &hw_file);
    Ok(decided.finish(sysname, warnings))
}

/// Log lines for what [`store::recover`] did, if anything.
fn describe_recovery(recovery: &store::Recovery) -> Vec<String> {
    let mut lines = Vec::new();
    if !recovery.completed.is_empty() {
        lines.push(format!(
            "completed the commit of an interrupted request: {}",
            store::path_list(&recovery.completed)
        ));
    }
    if !recovery.changed.is_empty() {
        lines.push(format!(
            "interrupted commit: changed by someone else since, left as is: {}",
            store::path_list(&recovery.changed)
        ));
    }
    if recovery.damaged {
        lines.push(
            "ignored a commit record torn by a crash (its commit had changed nothing)".to_owned(),
        );
    }
    lines
}

/// What the locked part decided, before the parts that need no lock.
enum Decided {
    Configured(Found, Vec<u8>),
    FailureReported {
        profile: String,
        quota_restored: bool,
    },
}

impl Decided {
    fn finish(self, sysname: String, warnings: Vec<String>) -> Outcome {
        match self {
            Decided::FailureReported {
                profile,
                quota_restored,
            } => Outcome::FailureReported {
                profile,
                quota_restored,
                warnings,
            },
            Decided::Configured(found, script) => Outcome::Configured(Configured {
                sysname,
                profile: found.matched.profile,
                vars: found.vars,
                cmdb_entry: found.cmdb.map(|u| u.selection.index),
                script,
                warnings,
            }),
        }
    }
}

/// Times a request matches again because the state changed under it
/// (each time a concurrent request spent the quota of the profile it had
/// matched) before it gives up.
const MAX_ROUNDS: usize = 16;

/// What a committed request decided, and the renames to flush.
type Committed = (Decided, Option<store::Renamed>);

/// The part of a request that runs under the lock: read the state, record
/// a failure report or take the profile matched before the lock, and with
/// `write` commit the new CMDB and state files (their directory is not
/// flushed yet: the caller does it once the lock is released). `None` when
/// the state now wants a profile not matched yet (or whose specs changed):
/// the caller matches it without the lock and comes back.
fn transaction(
    cfg: &Config,
    failure: Option<&str>,
    known: &mut Known,
    write: bool,
) -> Result<Option<Committed>, ProvisionError> {
    let state_file = cfg.config_dir.join("state");
    let record = cfg.config_dir.join(store::COMMIT_RECORD);
    let src = store::read_version(&state_file).map_err(io_error(&state_file))?;
    let mut state = State::parse(&state_file, &src)?;

    if let Some(profile) = failure {
        let quota_restored = state.give_back(profile);
        let decided = Decided::FailureReported {
            profile: profile.to_owned(),
            quota_restored,
        };
        if !quota_restored || !write {
            return Ok(Some((decided, None)));
        }
        let new_state = store::prepare_file_locked(&state_file, &state.to_bytes())
            .map_err(io_error(&state_file))?;
        // Through the record too: it must name the last commit of these
        // files, or its recovery could undo this one (see `store`).
        let renamed = store::commit_all(&record, vec![new_state]).map_err(io_error(&state_file))?;
        return Ok(Some((decided, Some(renamed))));
    }

    let Some(matched) = known.still_matched(cfg, &state)? else {
        return Ok(None);
    };
    let mut found = select_cmdb(cfg, &state, matched)?;
    let configure_file = state.profile_file(&found.matched.profile, "configure")?;
    let configure = store::read_version(&configure_file).map_err(io_error(&configure_file))?;
    state.consume(found.matched.state_index);

    found.vars.insert(
        Value::str("edeploy-profile"),
        Value::str(&found.matched.profile),
    );
    let pxemngr_url = cfg.pxemngr_url.as_deref().filter(|_| cfg.use_pxemngr);
    let script = script::configure_script(
        &found.matched.profile,
        &found.vars,
        &configure,
        pxemngr_url,
        cfg.metadata_url.as_deref(),
    );

    if !write {
        return Ok(Some((Decided::Configured(found, script), None)));
    }
    // Both new files are written before either is renamed: a failed write
    // (a full disk) changes neither. From the commit record on, the next
    // request completes the commit if this one dies.
    let cmdb = match &found.cmdb {
        Some(update) => {
            if update.selection.backup_original {
                let orig = append_to_name(&update.file, ".orig");
                store::copy_file_atomic(&update.file, &orig).map_err(io_error(&orig))?;
            }
            let prepared = store::prepare_file_locked(&update.file, &update.selection.contents)
                .map_err(io_error(&update.file))?;
            Some(prepared)
        }
        None => None,
    };
    let new_state = store::prepare_file_locked(&state_file, &state.to_bytes())
        .map_err(io_error(&state_file))?;
    let files = cmdb.into_iter().chain([new_state]);
    let renamed = store::commit_all(&record, files.collect()).map_err(io_error(&cfg.config_dir))?;
    Ok(Some((Decided::Configured(found, script), Some(renamed))))
}

/// A profile whose specs match, with the variables they gave.
struct Matched {
    state_index: usize,
    profile: String,
    vars: Dict,
    forced: Dict,
}

/// A profile that matched, with everything needed to commit it.
struct Found {
    matched: Matched,
    /// The machine's variables, with its CMDB entry merged in.
    vars: Dict,
    cmdb: Option<CmdbUpdate>,
}

struct CmdbUpdate {
    file: PathBuf,
    selection: cmdb::Selection,
}

/// What matching gave for each profile tried, made without the lock.
struct Known {
    profiles: HashMap<String, Tried>,
    /// Matching work left to the request, whatever the profiles tried.
    budget: spec::Budget,
}

impl Default for Known {
    fn default() -> Known {
        Known {
            profiles: HashMap::new(),
            budget: spec::Budget::request(),
        }
    }
}

/// One profile matched against the machine: its `.specs` text as read
/// (`None`: no such file, which never matches), and the variables and
/// forced variables when it matched.
struct Tried {
    specs: Option<Vec<u8>>,
    matched: Option<(Dict, Dict)>,
}

impl Known {
    /// The legacy `find_match`, first half, without the lock: the profiles
    /// that have quota in the state as it is now, in order, are matched
    /// until one matches (those already matched are not matched again).
    /// Errors when none matches: the machine is answered without the lock.
    fn match_profiles(&mut self, cfg: &Config, items: &[Item]) -> Result<(), ProvisionError> {
        let state_file = cfg.config_dir.join("state");
        let src = store::read_version(&state_file).map_err(io_error(&state_file))?;
        let state = State::parse(&state_file, &src)?;
        for entry in state.entries().iter().filter(|e| e.quota.available()) {
            if !self.profiles.contains_key(&entry.profile) {
                let specs_file = state.profile_file(&entry.profile, "specs")?;
                let tried = try_profile(&specs_file, items, &mut self.budget)?;
                self.profiles.insert(entry.profile.clone(), tried);
            }
            if self.profiles[&entry.profile].matched.is_some() {
                return Ok(());
            }
        }
        self.choose(cfg, &state).map(|_| ())
    }

    /// The first profile of `state` with quota, if it matched; `None` when
    /// one before it is not known yet. Errors: none has quota, or none of
    /// them matches.
    fn choose(&self, cfg: &Config, state: &State) -> Result<Option<usize>, ProvisionError> {
        let mut tried = Vec::new();
        for (state_index, entry) in state.entries().iter().enumerate() {
            if !entry.quota.available() {
                continue;
            }
            tried.push(entry.profile.clone());
            match self.profiles.get(&entry.profile) {
                None => return Ok(None),
                Some(t) if t.matched.is_some() => return Ok(Some(state_index)),
                Some(_) => {}
            }
        }
        if tried.is_empty() {
            Err(ProvisionError::NoQuota {
                state_file: cfg.config_dir.join("state"),
            })
        } else {
            Err(ProvisionError::NoMatch {
                config_dir: cfg.config_dir.clone(),
                profiles: tried,
            })
        }
    }

    /// Under the lock: the profile that `state` gives the machine, if it
    /// was matched before and its `.specs` file still says the same (read
    /// again, not matched again). `None`: match again without the lock.
    fn still_matched(
        &mut self,
        cfg: &Config,
        state: &State,
    ) -> Result<Option<Matched>, ProvisionError> {
        let Some(state_index) = self.choose(cfg, state)? else {
            return Ok(None);
        };
        let profile = &state.entries()[state_index].profile;
        let specs_file = state.profile_file(profile, "specs")?;
        let specs = read_if_exists(&specs_file).map_err(io_error(&specs_file))?;
        let tried = &self.profiles[profile];
        let (Some(vars), true) = (&tried.matched, tried.specs == specs) else {
            self.profiles.remove(profile);
            return Ok(None);
        };
        Ok(Some(Matched {
            state_index,
            profile: profile.clone(),
            vars: vars.0.clone(),
            forced: vars.1.clone(),
        }))
    }
}

/// Matches one profile's specs against the machine.
fn try_profile(
    specs_file: &Path,
    items: &[Item],
    budget: &mut spec::Budget,
) -> Result<Tried, ProvisionError> {
    // A profile without specs never matches, as in the legacy server.
    let Some(src) = read_if_exists(specs_file).map_err(io_error(specs_file))? else {
        return Ok(Tried {
            specs: None,
            matched: None,
        });
    };
    let specs = spec::parse_specs(specs_file, &src).map_err(ProvisionError::Spec)?;
    let matched = match_specs(items, &specs, budget).map_err(ProvisionError::Spec)?;
    Ok(Tried {
        specs: Some(src),
        matched,
    })
}

/// The variables a machine gets from a profile's specs, and its `$$` ones
/// (what its CMDB entry is chosen by); `None` when the specs do not match.
pub fn match_specs(
    items: &[Item],
    specs: &[spec::Spec],
    budget: &mut spec::Budget,
) -> Result<Option<(Dict, Dict)>, SpecError> {
    let mut vars = Vars::new();
    let mut forced = Vars::new();
    let matched = spec::match_all_within(items, specs, &mut vars, &mut forced, budget)?;
    Ok(matched.then(|| (spec::vars_dict(&vars), spec::vars_dict(&forced))))
}

/// The legacy `find_match`, second half: the matched profile's CMDB entry,
/// if it has a CMDB. An error here does not try the next profile.
fn select_cmdb(cfg: &Config, state: &State, matched: Matched) -> Result<Found, ProvisionError> {
    let cmdb_file = state.profile_file(&matched.profile, "cmdb")?;
    let selection = match read_if_exists(&cmdb_file).map_err(io_error(&cmdb_file))? {
        Some(src) => cmdb::select_within(
            &cmdb_file,
            &src,
            &matched.vars,
            &matched.forced,
            cfg.max_cmdb_size,
        )?,
        None => None,
    };
    Ok(match selection {
        Some(selection) => Found {
            vars: selection.vars.clone(),
            matched,
            cmdb: Some(CmdbUpdate {
                file: cmdb_file,
                selection,
            }),
        },
        None => Found {
            vars: matched.vars.clone(),
            matched,
            cmdb: None,
        },
    })
}

/// A file's bytes (one whole version: see [`store::read_version`]), `None`
/// when it does not exist (optional `.specs`, `.cmdb`).
pub(crate) fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match store::read_version(path) {
        Ok(src) => Ok(Some(src)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn append_to_name(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `<sysname>.hw`, made a single path component whatever the hardware
/// reported (a MAC address is used as is in the legacy name).
pub fn hw_file_name(sysname: &str) -> String {
    let safe: String = sysname
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    format!("{safe}.hw")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two profiles that match any machine, one installation each.
    fn site() -> (tempfile::TempDir, Config, Vec<Item>) {
        let tmp = tempfile::tempdir().unwrap();
        for profile in ["first", "second"] {
            let dir = tmp.path();
            std::fs::write(dir.join(format!("{profile}.specs")), "[]\n").unwrap();
            std::fs::write(dir.join(format!("{profile}.configure")), "pass\n").unwrap();
        }
        std::fs::write(tmp.path().join("state"), "[('first', 1), ('second', 1)]\n").unwrap();
        let cfg = Config::for_dir(tmp.path());
        let items = vec![["system", "product", "serial", "S1"].map(hw::HwValue::from)];
        (tmp, cfg, items)
    }

    fn profile(decided: &Decided) -> &str {
        match decided {
            Decided::Configured(found, _) => &found.matched.profile,
            Decided::FailureReported { .. } => panic!("not a match"),
        }
    }

    #[test]
    fn the_lock_only_checks_the_match_made_before_it() {
        // Nothing matched yet: the locked part does not match, it asks.
        let (_tmp, cfg, items) = site();
        assert!(transaction(&cfg, None, &mut Known::default(), true)
            .unwrap()
            .is_none());

        // Matched before the lock: taken as is.
        let mut known = Known::default();
        known.match_profiles(&cfg, &items).unwrap();
        let (decided, renamed) = transaction(&cfg, None, &mut known, true).unwrap().unwrap();
        renamed.unwrap().sync().unwrap();
        assert_eq!(profile(&decided), "first");

        // Another request took the last installation of the matched
        // profile meanwhile: the next one is matched, without the lock.
        let (tmp, cfg, items) = site();
        let mut known = Known::default();
        known.match_profiles(&cfg, &items).unwrap();
        std::fs::write(tmp.path().join("state"), "[('first', 0), ('second', 1)]\n").unwrap();
        assert!(transaction(&cfg, None, &mut known, true).unwrap().is_none());
        known.match_profiles(&cfg, &items).unwrap();
        let (decided, renamed) = transaction(&cfg, None, &mut known, true).unwrap().unwrap();
        renamed.unwrap().sync().unwrap();
        assert_eq!(profile(&decided), "second");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("state")).unwrap(),
            "[('first', 0), ('second', 0)]\n"
        );

        // The specs changed since they were matched: matched again.
        let (tmp, cfg, items) = site();
        let mut known = Known::default();
        known.match_profiles(&cfg, &items).unwrap();
        let specs = tmp.path().join("first.specs");
        std::fs::write(&specs, "[('system', 'product', 'serial', 'other')]\n").unwrap();
        assert!(transaction(&cfg, None, &mut known, true).unwrap().is_none());
        known.match_profiles(&cfg, &items).unwrap();
        let (decided, _) = transaction(&cfg, None, &mut known, false).unwrap().unwrap();
        assert_eq!(profile(&decided), "second");
    }

    #[test]
    fn no_match_is_answered_without_the_lock() {
        let (tmp, cfg, _) = site();
        for profile in ["first", "second"] {
            let specs = tmp.path().join(format!("{profile}.specs"));
            std::fs::write(specs, "[('system', 'product', 'serial', 'S2')]\n").unwrap();
        }
        let items = vec![["system", "product", "serial", "S1"].map(hw::HwValue::from)];
        // A writer holds the lock for as long as this test runs.
        let _held = Lock::exclusive(&cfg.lock_file).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(provision(&cfg, &items, None, false).map(|_| ()));
        });
        let answer = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("a machine that matches nothing waited for the lock");
        assert!(
            matches!(answer, Err(ProvisionError::NoMatch { ref profiles, .. }) if profiles == &["first", "second"]),
            "{answer:?}"
        );
    }
}

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
//! all). What the match found is the request's `Intent`; under the lock
//! it is only checked (`decide`): the first profile with quota must be
//! one already matched, with the same `.specs` text; otherwise the lock is
//! released, the missing profiles are matched, and the request tries
//! again. The request holding the lock decides the intents of the
//! requests waiting for it too, in their order of arrival, and commits
//! them all at once (see `batch`).
//! A dry run takes no lock at all, so that no reader delays a request
//! (see `store`).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::batch;
use crate::cmdb::{self, CmdbError};
use crate::config::Config;
use crate::hw::{self, Item};
use crate::literal::{Dict, Value};
use crate::pxemngr;
use crate::script;
use crate::spec::{self, SpecError, Vars};
use crate::state::{State, StateError, UnsafeProfile};
use crate::store;

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
    /// The error another request met deciding this one, in its batch (see
    /// `batch`): its message, as that request would have given it.
    Decided(String),
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
            ProvisionError::Decided(message) => f.write_str(message),
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
            let intent = known.intent(failure);
            let mut decisions = decide(cfg, &[&intent], false)?;
            match decisions.replies.pop() {
                Some(Reply::Retry { forget }) => known.forget(forget.as_deref()),
                Some(reply) => return reply.finish(sysname, Vec::new()),
                None => break,
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
    let queue = batch::queue_dir(&cfg.lock_file);
    let mut dirs = vec![&*cfg.config_dir, &cfg.hw_dir, &cfg.log_dir];
    if queue.is_dir() {
        dirs.push(&queue);
    }
    match store::sweep_now_and_then(&cfg.lock_file, &dirs, Some(&record)) {
        Ok(Some(n)) if n > 0 => warnings.push(format!(
            "removed {n} temporary file(s) left by killed requests"
        )),
        Ok(_) => {}
        Err(e) => warnings.push(format!("cannot remove temporary files: {e}")),
    }

    for _ in 0..MAX_ROUNDS {
        if failure.is_none() {
            known.match_profiles(cfg, items)?;
        }
        let intent = known.intent(failure);
        match batch::commit(cfg, &intent, &mut warnings)? {
            Reply::Retry { forget } => known.forget(forget.as_deref()),
            reply => {
                store::crash_point("answer", &hw_file);
                return reply.finish(sysname, warnings);
            }
        }
    }
    Err(ProvisionError::Unsettled)
}

/// Times a request matches again because the state changed under it
/// (each time a concurrent request spent the quota of the profile it had
/// matched) before it gives up.
const MAX_ROUNDS: usize = 16;

/// What one request asks of the commit: a failure report, or what matching
/// found for its machine (the profiles tried, made without the lock). This
/// is all the commit needs to decide the request: see [`decide`].
#[derive(Debug)]
pub(crate) struct Intent {
    pub(crate) failure: Option<String>,
    pub(crate) profiles: HashMap<String, Tried>,
}

/// How the commit decided one [`Intent`].
#[derive(Debug)]
pub(crate) enum Reply {
    Configured {
        profile: String,
        vars: Dict,
        cmdb_entry: Option<usize>,
        script: Vec<u8>,
    },
    FailureReported {
        profile: String,
        quota_restored: bool,
    },
    /// The state now wants a profile not matched yet (or whose `.specs`
    /// changed, `forget`): match it without the lock and ask again.
    Retry {
        forget: Option<String>,
    },
    Failed(ProvisionError),
}

impl Reply {
    fn finish(self, sysname: String, warnings: Vec<String>) -> Result<Outcome, ProvisionError> {
        match self {
            Reply::FailureReported {
                profile,
                quota_restored,
            } => Ok(Outcome::FailureReported {
                profile,
                quota_restored,
                warnings,
            }),
            Reply::Configured {
                profile,
                vars,
                cmdb_entry,
                script,
            } => Ok(Outcome::Configured(Configured {
                sysname,
                profile,
                vars,
                cmdb_entry,
                script,
                warnings,
            })),
            Reply::Failed(e) => Err(e),
            Reply::Retry { .. } => Err(ProvisionError::Unsettled),
        }
    }
}

/// What [`decide`] decided for a batch of intents, and the new files that
/// commit it (not committed yet).
pub(crate) struct Decisions {
    /// One per intent, in the same order.
    pub(crate) replies: Vec<Reply>,
    /// The new CMDBs, then the new state; empty when nothing changed.
    pub(crate) files: Vec<store::Prepared>,
    /// The new CMDBs' layouts, each with its CMDB, to write once they are
    /// committed (`cmdb::Layout::write`).
    pub(crate) layouts: Vec<(PathBuf, cmdb::Layout)>,
}

/// Decides `intents` one after the other, exactly as the legacy server
/// would serve them one by one in that order, under the exclusive lock:
/// each sees the state and CMDBs as the ones before it left them. The
/// state is read and parsed once, each CMDB and `.specs` and `.configure`
/// file read at most once; with `write`, the new state and CMDB files are
/// prepared once, whatever the number of intents.
///
/// An error about the batch as a whole (the state cannot be read) is
/// returned as such: every intent would have met it. An error about one
/// intent (its profile's CMDB is exhausted) is its reply, and changes
/// nothing, as the failed request changed nothing.
pub(crate) fn decide(
    cfg: &Config,
    intents: &[&Intent],
    write: bool,
) -> Result<Decisions, ProvisionError> {
    let state_file = cfg.config_dir.join("state");
    let src = store::read_version(&state_file).map_err(io_error(&state_file))?;
    let mut batch = Batch {
        cfg,
        intents,
        state: State::parse(&state_file, &src)?,
        state_changed: false,
        texts: HashMap::new(),
        cmdbs: Vec::new(),
    };
    let replies = intents
        .iter()
        .enumerate()
        .map(|(position, intent)| batch.decide_one(position, intent))
        .collect();
    let mut files = Vec::new();
    let mut layouts = Vec::new();
    if write {
        // Every new file is written before any is renamed: a failed write
        // (a full disk) changes none. From the commit record on, the next
        // request completes the commit if this one dies.
        for cmdb in batch.cmdbs {
            let Ok(Some(pool)) = cmdb.pool else {
                continue;
            };
            if !pool.is_changed() {
                continue;
            }
            if pool.backup_original() {
                let orig = append_to_name(&cmdb.file, ".orig");
                store::copy_file_atomic(&cmdb.file, &orig).map_err(io_error(&orig))?;
            }
            let (contents, layout) = pool.into_text();
            let prepared = store::prepare_file_locked_from_parts(&cmdb.file, &contents.parts())
                .map_err(io_error(&cmdb.file))?;
            files.push(prepared);
            if let Some(layout) = layout {
                layouts.push((cmdb.file.clone(), layout));
            }
        }
        if batch.state_changed {
            let prepared = store::prepare_file_locked(&state_file, &batch.state.to_bytes())
                .map_err(io_error(&state_file))?;
            files.push(prepared);
        }
    }
    Ok(Decisions {
        replies,
        files,
        layouts,
    })
}

/// The files of CONFIGDIR as a batch of decisions has left them so far.
struct Batch<'a> {
    cfg: &'a Config,
    intents: &'a [&'a Intent],
    state: State,
    state_changed: bool,
    /// `.specs` and `.configure` files read (`None`: no such file).
    texts: HashMap<PathBuf, Option<Vec<u8>>>,
    /// CMDB files read, in the order first read.
    cmdbs: Vec<CmdbFile>,
}

/// A profile's CMDB as the batch has left it, read once for all the
/// intents that matched the profile.
struct CmdbFile {
    profile: String,
    file: PathBuf,
    /// `Ok(None)`: no such file, or no entry (the profile has no CMDB).
    pool: Result<Option<cmdb::Pool>, CmdbError>,
    /// Which preference given to the pool is each intent's, by position.
    prefs: HashMap<usize, usize>,
}

impl Batch<'_> {
    fn decide_one(&mut self, position: usize, intent: &Intent) -> Reply {
        if let Some(profile) = &intent.failure {
            let quota_restored = self.state.give_back(profile);
            self.state_changed |= quota_restored;
            return Reply::FailureReported {
                profile: profile.clone(),
                quota_restored,
            };
        }
        self.configure(position, intent)
            .unwrap_or_else(Reply::Failed)
    }

    /// The legacy `find_match` for a machine matched before the lock: the
    /// first profile with quota must be one it matched, with the same
    /// `.specs` text (read again, not matched again); then its CMDB entry,
    /// its script, and the quota spent.
    fn configure(&mut self, position: usize, intent: &Intent) -> Result<Reply, ProvisionError> {
        let Some(state_index) = choose(self.cfg, &self.state, &intent.profiles)? else {
            return Ok(Reply::Retry { forget: None });
        };
        let profile = self.state.entries()[state_index].profile.clone();
        let specs_file = self.state.profile_file(&profile, "specs")?;
        let tried = &intent.profiles[&profile];
        let specs = self.text(&specs_file)?;
        let (Some((vars, forced)), true) = (&tried.matched, tried.specs.as_deref() == specs) else {
            return Ok(Reply::Retry {
                forget: Some(profile),
            });
        };

        // The legacy `find_match`, second half: an error here does not try
        // the next profile.
        let cmdb_file = self.state.profile_file(&profile, "cmdb")?;
        let cmdb = self.cmdb(&profile, &cmdb_file)?;
        let file = &self.cmdbs[cmdb];
        let selection = match &file.pool {
            Err(e) => return Err(e.clone().into()),
            Ok(None) => None,
            Ok(Some(pool)) => Some(pool.choose(file.prefs[&position], vars, forced)?),
        };
        let configure_file = self.state.profile_file(&profile, "configure")?;
        let configure = match self.text(&configure_file)? {
            Some(text) => text.to_vec(),
            // The error of reading it (it was missing).
            None => store::read_version(&configure_file).map_err(io_error(&configure_file))?,
        };

        // Decided: from here on nothing fails.
        self.state.consume(state_index);
        self.state_changed = true;
        let (mut vars, cmdb_entry) = match selection {
            Some((index, merged)) => {
                if let Ok(Some(pool)) = &mut self.cmdbs[cmdb].pool {
                    pool.mark(index, merged.clone());
                }
                (merged, Some(index))
            }
            None => (vars.clone(), None),
        };
        vars.insert(Value::str("edeploy-profile"), Value::str(&profile));
        let pxemngr_url = self
            .cfg
            .pxemngr_url
            .as_deref()
            .filter(|_| self.cfg.use_pxemngr);
        let script = script::configure_script(
            &profile,
            &vars,
            &configure,
            pxemngr_url,
            self.cfg.metadata_url.as_deref(),
        );
        Ok(Reply::Configured {
            profile,
            vars,
            cmdb_entry,
            script,
        })
    }

    /// A `.specs` or `.configure` file's text, read once per batch.
    fn text(&mut self, path: &Path) -> Result<Option<&[u8]>, ProvisionError> {
        if !self.texts.contains_key(path) {
            let text = read_if_exists(path).map_err(io_error(path))?;
            self.texts.insert(path.to_path_buf(), text);
        }
        Ok(self.texts[path].as_deref())
    }

    /// The index in `cmdbs` of the CMDB `path` of `profile`, read once per
    /// batch, for the preferences of every intent that matched `profile`.
    fn cmdb(&mut self, profile: &str, path: &Path) -> Result<usize, ProvisionError> {
        if let Some(i) = self.cmdbs.iter().position(|c| c.profile == profile) {
            return Ok(i);
        }
        let src = read_cmdb(self.cfg, path).map_err(io_error(path))?;
        let mut prefs = HashMap::new();
        let mut wanted = Vec::new();
        for (position, intent) in self.intents.iter().enumerate() {
            if let Some(Tried {
                matched: Some((vars, forced)),
                ..
            }) = intent.profiles.get(profile)
            {
                prefs.insert(position, wanted.len());
                wanted.push(cmdb::preference(vars, forced));
            }
        }
        let pool = match src {
            Some(src) => {
                let layout = cmdb::Layout::read(path);
                let max = self.cfg.max_cmdb_size;
                cmdb::Pool::read_laid_out(path, src, layout.as_ref(), &wanted, max)
            }
            None => Ok(None),
        };
        self.cmdbs.push(CmdbFile {
            profile: profile.to_owned(),
            file: path.to_path_buf(),
            pool,
            prefs,
        });
        Ok(self.cmdbs.len() - 1)
    }
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
#[derive(Debug, Clone)]
pub(crate) struct Tried {
    pub(crate) specs: Option<Vec<u8>>,
    pub(crate) matched: Option<(Dict, Dict)>,
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
        choose(cfg, &state, &self.profiles).map(|_| ())
    }

    fn intent(&self, failure: Option<&str>) -> Intent {
        Intent {
            failure: failure.map(str::to_owned),
            profiles: self.profiles.clone(),
        }
    }

    /// After a [`Reply::Retry`]: the profile whose specs changed is matched
    /// again.
    fn forget(&mut self, profile: Option<&str>) {
        if let Some(profile) = profile {
            self.profiles.remove(profile);
        }
    }
}

/// The first profile of `state` with quota, if it matched according to
/// `profiles`; `None` when one before it is not known yet. Errors: none has
/// quota, or none of them matches.
fn choose(
    cfg: &Config,
    state: &State,
    profiles: &HashMap<String, Tried>,
) -> Result<Option<usize>, ProvisionError> {
    let mut tried = Vec::new();
    for (state_index, entry) in state.entries().iter().enumerate() {
        if !entry.quota.available() {
            continue;
        }
        tried.push(entry.profile.clone());
        match profiles.get(&entry.profile) {
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

/// A file's bytes (one whole version: see [`store::read_version`]), `None`
/// when it does not exist (optional `.specs`, `.cmdb`).
pub(crate) fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match store::read_version(path) {
        Ok(src) => Ok(Some(src)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A CMDB's bytes, `None` when it does not exist. One larger than
/// `MAXCMDBSIZE` is refused before it is read: each request holds it
/// twice (read and rewritten).
pub(crate) fn read_cmdb(cfg: &Config, path: &Path) -> io::Result<Option<Vec<u8>>> {
    match store::read_version_within(path, cfg.max_cmdb_size, "MAXCMDBSIZE") {
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

    fn profile(reply: &Reply) -> &str {
        match reply {
            Reply::Configured { profile, .. } => profile,
            other => panic!("not a match: {other:?}"),
        }
    }

    /// Decides `intents` as one batch and commits it.
    fn commit(cfg: &Config, intents: &[&Intent]) -> Vec<Reply> {
        let decisions = decide(cfg, intents, true).unwrap();
        if !decisions.files.is_empty() {
            let record = cfg.config_dir.join(store::COMMIT_RECORD);
            store::commit_all(&record, decisions.files)
                .unwrap()
                .sync()
                .unwrap();
            for (file, layout) in &decisions.layouts {
                layout.write(file);
            }
        }
        decisions.replies
    }

    fn matched(cfg: &Config, items: &[Item]) -> Intent {
        let mut known = Known::default();
        known.match_profiles(cfg, items).unwrap();
        known.intent(None)
    }

    #[test]
    fn the_lock_only_checks_the_match_made_before_it() {
        // Nothing matched yet: the locked part does not match, it asks.
        let (_tmp, cfg, items) = site();
        let replies = commit(&cfg, &[&Known::default().intent(None)]);
        assert!(matches!(replies[..], [Reply::Retry { forget: None }]));

        // Matched before the lock: taken as is.
        let intent = matched(&cfg, &items);
        assert_eq!(profile(&commit(&cfg, &[&intent])[0]), "first");

        // Another request took the last installation of the matched
        // profile meanwhile: the next one is matched, without the lock.
        let (tmp, cfg, items) = site();
        let mut known = Known::default();
        known.match_profiles(&cfg, &items).unwrap();
        std::fs::write(tmp.path().join("state"), "[('first', 0), ('second', 1)]\n").unwrap();
        let replies = commit(&cfg, &[&known.intent(None)]);
        assert!(matches!(replies[..], [Reply::Retry { forget: None }]));
        known.match_profiles(&cfg, &items).unwrap();
        assert_eq!(profile(&commit(&cfg, &[&known.intent(None)])[0]), "second");
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
        let replies = commit(&cfg, &[&known.intent(None)]);
        let [Reply::Retry { forget }] = &replies[..] else {
            panic!("{replies:?}")
        };
        known.forget(forget.as_deref());
        known.match_profiles(&cfg, &items).unwrap();
        let decisions = decide(&cfg, &[&known.intent(None)], false).unwrap();
        assert!(decisions.files.is_empty());
        assert_eq!(profile(&decisions.replies[0]), "second");
    }

    #[test]
    fn a_batch_decides_each_intent_after_the_ones_before_it() {
        let (tmp, cfg, items) = site();
        // Both matched while `first` had quota; a failure report of
        // `second` comes between them.
        let one = matched(&cfg, &items);
        let two = matched(&cfg, &items);
        let failure = Known::default().intent(Some("second"));
        std::fs::write(tmp.path().join("state"), "[('first', 1), ('second', 0)]\n").unwrap();
        let replies = commit(&cfg, &[&one, &failure, &two]);
        assert_eq!(profile(&replies[0]), "first");
        assert!(matches!(
            &replies[1],
            Reply::FailureReported {
                quota_restored: true,
                ..
            }
        ));
        // `first` is spent by then: its guess no longer holds.
        assert!(
            matches!(replies[2], Reply::Retry { forget: None }),
            "{replies:?}"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("state")).unwrap(),
            "[('first', 0), ('second', 1)]\n"
        );
        // A profile whose configure file is missing fails that intent alone.
        let (tmp, cfg, items) = site();
        let one = matched(&cfg, &items);
        std::fs::remove_file(tmp.path().join("first.configure")).unwrap();
        let failure = Known::default().intent(Some("first"));
        let replies = commit(&cfg, &[&one, &failure]);
        assert!(
            matches!(&replies[0], Reply::Failed(ProvisionError::Io { .. })),
            "{replies:?}"
        );
        assert!(matches!(
            &replies[1],
            Reply::FailureReported {
                quota_restored: true,
                ..
            }
        ));
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("state")).unwrap(),
            "[('first', 2), ('second', 1)]\n"
        );
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
        let _held = store::Lock::exclusive(&cfg.lock_file).unwrap();
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

    /// A CMDB larger than MAXCMDBSIZE is refused before it is read, naming
    /// the file and the limit; nothing is written.
    #[test]
    fn a_cmdb_over_maxcmdbsize_is_refused() {
        let (tmp, mut cfg, items) = site();
        let cmdb = tmp.path().join("first.cmdb");
        let src = "[{'ip': '10.0.0.1'}]\n";
        std::fs::write(&cmdb, src).unwrap();
        cfg.max_cmdb_size = src.len() as u64 - 1;
        let err = provision(&cfg, &items, None, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: larger than MAXCMDBSIZE ({} bytes)",
                cmdb.display(),
                src.len() - 1
            )
        );
        assert_eq!(std::fs::read_to_string(&cmdb).unwrap(), src);
        cfg.max_cmdb_size = src.len() as u64;
        let outcome = provision(&cfg, &items, None, false).unwrap();
        assert!(matches!(outcome, Outcome::Configured(_)), "{outcome:?}");
    }
}

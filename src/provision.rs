//! One provisioning request from start to finish: the legacy `upload.py`
//! transaction (LEGACY-SEMANTICS.md §1 and §4).
//!
//! Save the machine's `.hw` file and register it with pxemngr (outside the
//! lock: they concern this machine only), then, under one exclusive lock,
//! either record a failure report or find the first profile with quota
//! whose specs match, choose its CMDB entry and build the configure
//! script. Unlike the legacy server, nothing of the match is
//! written until everything it needs has been read, and the answer is only
//! produced once the CMDB and state files are durably replaced: a crash at
//! any point leaves either the old files or the new ones, and a client never
//! receives a script whose CMDB entry is not recorded as used.
//!
//! Requests queue on the lock, so it is held as briefly as possible: the
//! match is guessed before it is taken (and made again only if the
//! profiles with quota changed meanwhile), and the directory holding the
//! new files is flushed after it is released. A dry run takes no lock at
//! all, so that no reader delays a request (see `store`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmdb::{self, CmdbError};
use crate::config::Config;
use crate::hw::{self, Item};
use crate::literal::{self, Dict, Value};
use crate::script;
use crate::spec::{self, SpecError, Vars};
use crate::state::{State, StateError};
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
    /// Problems that did not stop provisioning (pxemngr), for the log.
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub enum ProvisionError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    State(StateError),
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
}

impl fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProvisionError::Io { path, source } => write!(f, "{}: {}", path.display(), source),
            ProvisionError::State(e) => e.fmt(f),
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
        }
    }
}

impl std::error::Error for ProvisionError {}

impl From<StateError> for ProvisionError {
    fn from(e: StateError) -> ProvisionError {
        ProvisionError::State(e)
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

/// How long `pxemngr addsystem` may take before it is abandoned.
const PXEMNGR_TIMEOUT: Duration = Duration::from_secs(10);

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
    if dry_run {
        let (decided, _) = transaction(cfg, items, failure, None, false)?;
        return Ok(decided.finish(sysname, Vec::new()));
    }

    // What needs no lock is done before taking it or after releasing it,
    // so that requests wait for each other as little as possible. The
    // machine's own file concerns no other request (it is replaced
    // atomically), and pxemngr may be slow.
    let hw_file = cfg.hw_dir.join(hw_file_name(&sysname));
    let text = literal::pformat(&hw::items_value(items));
    store::replace_file(&hw_file, &text).map_err(io_error(&hw_file))?;
    let mut warnings = Vec::new();
    if cfg.use_pxemngr {
        if let Err(e) = register_pxemngr(&sysname, &macs) {
            warnings.push(e);
        }
    }
    // Leftovers of killed requests; harmless, but they would pile up.
    store::remove_stale_temps(&cfg.config_dir).map_err(io_error(&cfg.config_dir))?;
    let guess = failure.is_none().then(|| guess_match(cfg, items)).flatten();

    let (decided, renamed) = {
        let _lock = Lock::exclusive(&cfg.lock_file).map_err(io_error(&cfg.lock_file))?;
        transaction(cfg, items, failure, guess, true)?
    };
    if let Some(renamed) = renamed {
        renamed.sync().map_err(io_error(&cfg.config_dir))?;
    }
    Ok(decided.finish(sysname, warnings))
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

/// The part of a request that runs under the lock: read the state, record
/// a failure report or match a profile (`guess`, made before the lock, if
/// the profiles that have quota are still the same), and with `write`
/// commit the new CMDB and state files. Their directory is not flushed
/// yet: the caller does it once the lock is released.
fn transaction(
    cfg: &Config,
    items: &[Item],
    failure: Option<&str>,
    guess: Option<Guess>,
    write: bool,
) -> Result<(Decided, Option<store::Renamed>), ProvisionError> {
    let state_file = cfg.config_dir.join("state");
    let src = store::read_version(&state_file).map_err(io_error(&state_file))?;
    let mut state = State::parse(&state_file, &src)?;

    if let Some(profile) = failure {
        let quota_restored = state.give_back(profile);
        let decided = Decided::FailureReported {
            profile: profile.to_owned(),
            quota_restored,
        };
        if !quota_restored || !write {
            return Ok((decided, None));
        }
        let new_state = store::prepare_file_locked(&state_file, &state.to_bytes())
            .map_err(io_error(&state_file))?;
        let renamed = store::commit_all(vec![new_state]).map_err(io_error(&state_file))?;
        return Ok((decided, Some(renamed)));
    }

    let matched = match guess {
        Some(guess) if guess.available == available(&state) => guess.matched,
        _ => match_specs(cfg, &state, items)?,
    };
    let mut found = select_cmdb(cfg, matched)?;
    let configure_file = cfg
        .config_dir
        .join(format!("{}.configure", found.matched.profile));
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
        return Ok((Decided::Configured(found, script), None));
    }
    // Both new files are written before either is renamed: a failed write
    // (a full disk) changes neither. Only a crash between the renames can
    // leave the CMDB entry used without the quota spent; the machine gets
    // that entry back when it retries.
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
    // CMDB first: a crash between the renames may leave an entry used
    // without quota spent, never quota spent without its entry.
    let files = cmdb.into_iter().chain([new_state]);
    let renamed = store::commit_all(files.collect()).map_err(io_error(&cfg.config_dir))?;
    Ok((Decided::Configured(found, script), Some(renamed)))
}

/// The match made before taking the lock. It still holds under the lock
/// if the profiles with quota left are the same: matching reads nothing
/// else that requests write.
struct Guess {
    available: Vec<(usize, String)>,
    matched: Matched,
}

/// The matching profile from the state as it is now, without the lock;
/// `None` on any error (the locked attempt then reports it).
fn guess_match(cfg: &Config, items: &[Item]) -> Option<Guess> {
    let state_file = cfg.config_dir.join("state");
    let src = store::read_version(&state_file).ok()?;
    let state = State::parse(&state_file, &src).ok()?;
    let matched = match_specs(cfg, &state, items).ok()?;
    Some(Guess {
        available: available(&state),
        matched,
    })
}

/// The profiles that have quota left, with their place in the state.
fn available(state: &State) -> Vec<(usize, String)> {
    state
        .entries()
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.quota.available())
        .map(|(i, entry)| (i, entry.profile.clone()))
        .collect()
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

/// The legacy `find_match`, first half: the first profile, in state order,
/// that has quota and whose specs match.
fn match_specs(cfg: &Config, state: &State, items: &[Item]) -> Result<Matched, ProvisionError> {
    let mut tried = Vec::new();
    for (state_index, entry) in state.entries().iter().enumerate() {
        if !entry.quota.available() {
            continue;
        }
        tried.push(entry.profile.clone());
        let specs_file = cfg.config_dir.join(format!("{}.specs", entry.profile));
        // A profile without specs never matches, as in the legacy server.
        let Some(specs) = read_if_exists(&specs_file).map_err(io_error(&specs_file))? else {
            continue;
        };
        let specs = spec::parse_specs(&specs_file, &specs).map_err(ProvisionError::Spec)?;
        let mut vars = Vars::new();
        let mut forced = Vars::new();
        if !spec::match_all(items, &specs, &mut vars, &mut forced).map_err(ProvisionError::Spec)? {
            continue;
        }
        return Ok(Matched {
            state_index,
            profile: entry.profile.clone(),
            vars: spec::vars_dict(&vars),
            forced: spec::vars_dict(&forced),
        });
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

/// The legacy `find_match`, second half: the matched profile's CMDB entry,
/// if it has a CMDB. An error here does not try the next profile.
fn select_cmdb(cfg: &Config, matched: Matched) -> Result<Found, ProvisionError> {
    let cmdb_file = cfg.config_dir.join(format!("{}.cmdb", matched.profile));
    let selection = match read_if_exists(&cmdb_file).map_err(io_error(&cmdb_file))? {
        Some(src) => cmdb::select(&cmdb_file, &src, &matched.vars, &matched.forced)?,
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

/// `pxemngr addsystem <sysname> <macs...>`, run without a shell and bounded
/// in time. Only MAC-shaped values are passed, as the legacy server did.
fn register_pxemngr(sysname: &str, macs: &[String]) -> Result<(), String> {
    let mut args = vec!["addsystem".to_owned(), sysname.to_owned()];
    args.extend(macs.iter().filter(|m| m.len() == 17).cloned());
    let handle = duct::cmd("pxemngr", &args)
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .start()
        .map_err(|e| format!("pxemngr addsystem {sysname}: cannot run: {e}"))?;
    let deadline = std::time::Instant::now() + PXEMNGR_TIMEOUT;
    loop {
        match handle.try_wait() {
            Ok(Some(out)) if out.status.success() => return Ok(()),
            Ok(Some(out)) => {
                return Err(format!(
                    "pxemngr addsystem {sysname}: {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = handle.kill();
                return Err(format!(
                    "pxemngr addsystem {sysname}: killed after {}s",
                    PXEMNGR_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("pxemngr addsystem {sysname}: {e}")),
        }
    }
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
    fn a_guess_holds_only_while_the_same_profiles_have_quota() {
        // Still valid: it is used as is (the specs it read are not read again).
        let (tmp, cfg, items) = site();
        let guess = guess_match(&cfg, &items).unwrap();
        assert_eq!(guess.matched.profile, "first");
        std::fs::remove_file(tmp.path().join("first.specs")).unwrap();
        let (decided, renamed) = transaction(&cfg, &items, None, Some(guess), true).unwrap();
        renamed.unwrap().sync().unwrap();
        assert_eq!(profile(&decided), "first");

        // Another request took the last installation of the guessed profile
        // meanwhile: the match is made again.
        let (tmp, cfg, items) = site();
        let guess = guess_match(&cfg, &items).unwrap();
        std::fs::write(tmp.path().join("state"), "[('first', 0), ('second', 1)]\n").unwrap();
        let (decided, renamed) = transaction(&cfg, &items, None, Some(guess), true).unwrap();
        renamed.unwrap().sync().unwrap();
        assert_eq!(profile(&decided), "second");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("state")).unwrap(),
            "[('first', 0), ('second', 0)]\n"
        );
    }
}

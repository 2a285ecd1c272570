//! Health-check results (`upload-health.py`): where an uploaded hardware and
//! benchmark description is filed.
//!
//! The legacy companion CGI saved the items of each upload, pretty-printed,
//! to `HEALTHDIR/<basename(session)>/<YYYY_MM_DD-HHhMM>/<sysname>.hw` (without
//! the session level when the form has none), creating the directories. This
//! module computes that path from untrusted input and writes the file without
//! ever leaving HEALTHDIR; the binary `upload-health` does the parsing.
//!
//! Deliberate differences with the legacy:
//! - The time is UTC, where the legacy used the server's local time
//!   (`time.strftime`): the standard library offers no time zone database
//!   and reading `/etc/localtime` ourselves is not worth its risk. Servers
//!   usually run in UTC; elsewhere the directory names are shifted by the
//!   zone offset.
//! - A session that reduces to `..`, or holds control characters, is refused
//!   (the legacy wrote outside HEALTHDIR); one that reduces to nothing or to
//!   `.` files the result without a session level, which is where the
//!   legacy's `os.path.join` put it too.
//! - A system name that is not a plain file name (it ends with the first MAC
//!   address, which the client controls) is refused instead of being used as
//!   a path.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::logs::{safe_base_name, NameError, UtcTime};
use crate::store;

/// Why a health result was not stored.
#[derive(Debug)]
pub enum HealthError {
    Session(NameError),
    SystemName(NameError),
    /// A directory level is not a real directory (a symlink could lead
    /// outside HEALTHDIR).
    Escapes {
        path: PathBuf,
        health_dir: PathBuf,
    },
    /// The target exists and is not a regular file.
    NotAFile(PathBuf),
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for HealthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthError::Session(e) => write!(f, "invalid session: {e}"),
            HealthError::SystemName(e) => write!(f, "unusable system name: {e}"),
            HealthError::Escapes { path, health_dir } => write!(
                f,
                "{} is not a directory inside the health directory {}",
                path.display(),
                health_dir.display()
            ),
            HealthError::NotAFile(p) => {
                write!(f, "{} exists and is not a regular file", p.display())
            }
            HealthError::Io {
                path,
                action,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for HealthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HealthError::Session(e) | HealthError::SystemName(e) => Some(e),
            HealthError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The directory level of a session: its base name, `None` when that is
/// empty or `.` (no level, as the legacy's `os.path.join` gave).
pub fn session_component(session: &str) -> Result<Option<&str>, NameError> {
    let base = session.rsplit('/').next().unwrap_or(session);
    if base.is_empty() || base == "." {
        return Ok(None);
    }
    safe_base_name(base).map(Some).map_err(|e| NameError {
        name: session.to_owned(),
        ..e
    })
}

/// `YYYY_MM_DD-HHhMM` of `now` (UTC, see the module documentation).
pub fn run_dir_name(now: SystemTime) -> String {
    let t = UtcTime::from_system_time(now);
    format!(
        "{:04}_{:02}_{:02}-{:02}h{:02}",
        t.year, t.month, t.day, t.hour, t.minute
    )
}

/// Writes `contents` to `health_dir/[session/]<run dir>/<sysname>.hw` and
/// returns that path. HEALTHDIR and the levels below are created as needed.
pub fn store_health(
    health_dir: &Path,
    session: Option<&str>,
    sysname: &str,
    contents: &[u8],
    now: SystemTime,
) -> Result<PathBuf, HealthError> {
    let file_name = format!("{sysname}.hw");
    match safe_base_name(&file_name) {
        Ok(base) if base == file_name => {}
        Ok(_) => {
            return Err(HealthError::SystemName(NameError {
                name: sysname.to_owned(),
                reason: "contains a '/'",
            }))
        }
        Err(e) => return Err(HealthError::SystemName(e)),
    }
    let session = match session {
        Some(s) => session_component(s).map_err(HealthError::Session)?,
        None => None,
    };
    let io_err = |path: &Path, action: &'static str| {
        let path = path.to_owned();
        move |source| HealthError::Io {
            path,
            action,
            source,
        }
    };
    fs::create_dir_all(health_dir).map_err(io_err(health_dir, "create"))?;
    let root = fs::canonicalize(health_dir).map_err(io_err(health_dir, "resolve"))?;
    // Level by level, each opened from the previous one's descriptor and
    // refused if it is not a real directory: a session or run directory
    // planted as a symlink, even while we are at it, must not lead out of
    // HEALTHDIR, not even to create a directory there.
    let run = run_dir_name(now);
    let mut dir = fs::File::open(&root).map_err(io_err(&root, "open"))?;
    let mut dir_path = root.clone();
    for level in session.into_iter().chain([run.as_str()]) {
        dir_path.push(level);
        dir = match store::open_subdir_no_follow(&dir, level) {
            Ok(dir) => dir,
            Err(e) if store::is_not_a_directory(&e) => {
                return Err(HealthError::Escapes {
                    path: dir_path,
                    health_dir: root,
                })
            }
            Err(source) => {
                return Err(HealthError::Io {
                    path: dir_path,
                    action: "create",
                    source,
                })
            }
        };
    }
    let path = dir_path.join(&file_name);
    match store::is_file_at(&dir, &file_name) {
        Ok(Some(false)) => return Err(HealthError::NotAFile(path)),
        Ok(_) => {}
        Err(source) => {
            return Err(HealthError::Io {
                path,
                action: "inspect",
                source,
            })
        }
    }
    store::replace_file_at(&dir, &dir_path, &file_name, contents)
        .map_err(io_err(&path, "write"))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn now() -> SystemTime {
        // 2023-11-14 22:13:20 UTC
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn run_dir() {
        assert_eq!(run_dir_name(now()), "2023_11_14-22h13");
    }

    #[test]
    fn sessions() {
        assert_eq!(session_component("s1"), Ok(Some("s1")));
        assert_eq!(session_component("../../s1"), Ok(Some("s1")));
        assert_eq!(session_component(""), Ok(None));
        assert_eq!(session_component("a/"), Ok(None));
        assert_eq!(session_component("."), Ok(None));
        assert!(session_component("..").is_err());
        assert!(session_component("a/..").is_err());
        assert!(session_component("a\nb").is_err());
    }

    #[test]
    fn stores_with_and_without_session() {
        let tmp = tempfile::tempdir().unwrap();
        let health = tmp.path().join("health");
        let p = store_health(&health, None, "vm-52-54", b"[]\n", now()).unwrap();
        let root = health.canonicalize().unwrap();
        assert_eq!(p, root.join("2023_11_14-22h13/vm-52-54.hw"));
        assert_eq!(fs::read(&p).unwrap(), b"[]\n");
        let p = store_health(&health, Some("../x/bench"), "vm", b"1", now()).unwrap();
        assert_eq!(p, root.join("bench/2023_11_14-22h13/vm.hw"));
        // Same minute, same machine: replaced, as the legacy did.
        let p = store_health(&health, Some("bench"), "vm", b"2", now()).unwrap();
        assert_eq!(fs::read(p).unwrap(), b"2");
    }

    #[test]
    fn refuses_hostile_names_and_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let health = tmp.path().join("health");
        for bad in ["a/../../x", "../x", "x\n", ""] {
            let r = store_health(&health, None, &format!("vm-{bad}"), b"", now());
            assert!(bad.is_empty() == r.is_ok(), "{bad:?}: {r:?}");
        }
        assert!(matches!(
            store_health(&health, Some(".."), "vm", b"", now()),
            Err(HealthError::Session(_))
        ));
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, health.join("evil")).unwrap();
        assert!(matches!(
            store_health(&health, Some("evil"), "vm", b"", now()),
            Err(HealthError::Escapes { .. })
        ));
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }

    /// The session directory is swapped with a symlink to the outside while
    /// results are stored: every result lands inside HEALTHDIR or is
    /// refused, and nothing is ever created outside. (Checking the path
    /// before using it, the previous code created directories outside in
    /// about half of the runs, and failed on moved directories in all.)
    #[test]
    fn a_session_swapped_for_a_symlink_never_leads_outside() {
        use std::sync::atomic::{AtomicBool, Ordering};
        /// Stops the swapping thread however the test ends.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let health = tmp.path().join("health");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(health.join("evil")).unwrap();
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, health.join("spare")).unwrap();
        let root = health.canonicalize().unwrap();
        let stop = AtomicBool::new(false);
        let outcomes = std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    crate::store::exchange(&health.join("evil"), &health.join("spare")).unwrap();
                }
            });
            let _stop = Stop(&stop);
            let mut outcomes = Vec::new();
            for i in 0..20000 {
                let minute = now() + Duration::from_secs(60 * (i % 50));
                let r = store_health(&health, Some("evil"), "vm", b"x", minute);
                outcomes.push(match r {
                    Ok(path) => {
                        assert!(path.starts_with(&root), "{}", path.display());
                        "stored".to_string()
                    }
                    Err(HealthError::Escapes { .. }) => "refused".to_string(),
                    Err(e) => e.to_string(),
                });
            }
            outcomes
        });
        let found: Vec<_> = fs::read_dir(&outside).unwrap().collect();
        let others: Vec<_> = outcomes
            .iter()
            .filter(|o| *o != "stored" && *o != "refused")
            .take(5)
            .collect();
        assert!(found.is_empty(), "{found:?}\n{others:?}");
        // Once HEALTHDIR/evil is opened, its name does not matter: no error
        // from it being moved meanwhile.
        assert_eq!(others, Vec::<&String>::new());
        assert!(outcomes.iter().any(|o| o == "stored"));
        assert!(outcomes.iter().any(|o| o == "refused"));
    }
}

//! Installation logs uploaded by the initrd (`<vendor>-<product>-<serial>.log.gz`).
//!
//! The legacy server saved them in LOGDIR under their base name, first
//! renaming an existing file of that name to
//! `<name without .log.gz>.<YYYYmmddHHMMSS of its mtime, UTC>.log.gz`. We do
//! the same, but the name comes from the network: it is reduced to a base
//! name and refused when it could name anything but a new file directly in
//! LOGDIR, and the write is atomic (temporary file and rename in LOGDIR).
//!
//! Two differences with the legacy, both only where it lost data: a rotated
//! name that already exists (two rotations in the same second) is not
//! overwritten but gets a counter (`name.20240102030405.1.log.gz`); an
//! existing entry that is not a regular file (a symlink, a directory) is
//! refused instead of being followed or clobbered.
//!
//! This module also holds the UTC calendar arithmetic ([`UtcTime`]) used
//! for rotated names, health directories and log lines, since the project
//! has no date crate.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cgi::LOG_SUFFIX;
use crate::store;

/// Longest accepted base name, leaving room under the usual 255-byte limit
/// for the rotation stamp and for temporary names.
pub const MAX_NAME_LEN: usize = 200;

/// Most rotated names tried for one upload (`.1` … `.99` after the plain one).
const MAX_ROTATIONS: u32 = 100;

/// A name from the network that cannot be used as a file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    pub name: String,
    pub reason: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid name {:?}: {}", self.name, self.reason)
    }
}

impl std::error::Error for NameError {}

/// The last path component of `name` (as Python's `os.path.basename`),
/// refused when empty, `.` or `..`, with a NUL or another control character,
/// or longer than [`MAX_NAME_LEN`].
pub fn safe_base_name(name: &str) -> Result<&str, NameError> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let reason = if base.is_empty() {
        "empty file name"
    } else if base == "." || base == ".." {
        "not a file name"
    } else if base.chars().any(char::is_control) {
        "control character in file name"
    } else if base.len() > MAX_NAME_LEN {
        "file name too long"
    } else {
        return Ok(base);
    };
    Err(NameError {
        name: name.to_owned(),
        reason,
    })
}

/// Why a log upload was not stored.
#[derive(Debug)]
pub enum LogError {
    /// The uploaded file name is unusable.
    Name(NameError),
    /// The file name does not end with `.log.gz`.
    NotALog(String),
    /// LOGDIR does not exist or cannot be resolved.
    Dir { dir: PathBuf, source: io::Error },
    /// An entry of that name exists and is not a regular file.
    NotAFile(PathBuf),
    /// Every rotated name is taken.
    NoRotationName(PathBuf),
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Name(e) => write!(f, "log upload refused: {e}"),
            LogError::NotALog(name) => {
                write!(
                    f,
                    "log upload refused: {name:?} does not end with {LOG_SUFFIX}"
                )
            }
            LogError::Dir { dir, source } => {
                write!(f, "log directory {}: {source}", dir.display())
            }
            LogError::NotAFile(p) => write!(
                f,
                "log upload refused: {} exists and is not a regular file",
                p.display()
            ),
            LogError::NoRotationName(p) => {
                write!(f, "no free rotated name left for {}", p.display())
            }
            LogError::Io {
                path,
                action,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Name(e) => Some(e),
            LogError::Dir { source, .. } | LogError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Where an upload went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLog {
    pub path: PathBuf,
    /// The previous file of that name, after its rotation.
    pub rotated: Option<PathBuf>,
}

/// Stores an uploaded log as `log_dir/<base name of filename>`, rotating an
/// existing file of that name first.
pub fn store_log(log_dir: &Path, filename: &str, data: &[u8]) -> Result<StoredLog, LogError> {
    let base = safe_base_name(filename).map_err(LogError::Name)?;
    let Some(stem) = base.strip_suffix(LOG_SUFFIX) else {
        return Err(LogError::NotALog(filename.to_owned()));
    };
    let dir = fs::canonicalize(log_dir).map_err(|source| LogError::Dir {
        dir: log_dir.to_owned(),
        source,
    })?;
    if !dir.is_dir() {
        return Err(LogError::Dir {
            dir: log_dir.to_owned(),
            source: io::Error::new(io::ErrorKind::NotFound, "not a directory"),
        });
    }
    // `base` has no `/` and is not `.` or `..`: the target is directly in
    // the canonical LOGDIR.
    let path = dir.join(base);
    let rotated = match fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_file() => {
            let mtime = meta.modified().map_err(|source| LogError::Io {
                path: path.clone(),
                action: "read the mtime of",
                source,
            })?;
            Some(rotate(&dir, &path, stem, mtime)?)
        }
        Ok(_) => return Err(LogError::NotAFile(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(LogError::Io {
                path,
                action: "inspect",
                source,
            })
        }
    };
    store::replace_file_no_follow(&path, data).map_err(|source| LogError::Io {
        path: path.clone(),
        action: "write",
        source,
    })?;
    Ok(StoredLog { path, rotated })
}

/// The machine a log of LOGDIR belongs to: the name it was uploaded under
/// (`<sysname>.log.gz`), without the rotation stamp it may have got since
/// (`.<YYYYmmddHHMMSS>[.<n>]`). `None` for a name that is not a log's.
pub fn machine_of_log(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(LOG_SUFFIX)?;
    let is_stamp = |s: &str| s.len() == 14 && s.bytes().all(|b| b.is_ascii_digit());
    let is_counter =
        |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    let unrotated = match stem.rsplit_once('.') {
        Some((rest, n)) if is_counter(n) => match rest.rsplit_once('.') {
            Some((machine, stamp)) if is_stamp(stamp) => Some(machine),
            _ => None,
        },
        Some((machine, stamp)) if is_stamp(stamp) => Some(machine),
        _ => None,
    };
    Some(unrotated.unwrap_or(stem)).filter(|m| !m.is_empty())
}

/// Gives the current file at `path` its rotated name. A hard link makes
/// the new name appear atomically and never replaces an existing file; the
/// old name is then replaced by the upload.
fn rotate(dir: &Path, path: &Path, stem: &str, mtime: SystemTime) -> Result<PathBuf, LogError> {
    let stamp = UtcTime::from_system_time(mtime).compact();
    for n in 0..MAX_ROTATIONS {
        let name = match n {
            0 => format!("{stem}.{stamp}{LOG_SUFFIX}"),
            n => format!("{stem}.{stamp}.{n}{LOG_SUFFIX}"),
        };
        let target = dir.join(name);
        match fs::hard_link(path, &target) {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(LogError::Io {
                    path: target,
                    action: "rotate to",
                    source,
                })
            }
        }
    }
    Err(LogError::NoRotationName(path.to_owned()))
}

/// A UTC calendar time, to the microsecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

impl UtcTime {
    pub fn from_system_time(t: SystemTime) -> UtcTime {
        // Times before 1970 only come from odd file systems; handle them
        // rather than panic.
        let micros: i128 = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_micros() as i128,
            Err(e) => -(e.duration().as_micros() as i128),
        };
        let secs = micros.div_euclid(1_000_000) as i64;
        let sub = micros.rem_euclid(1_000_000) as u32;
        let days = secs.div_euclid(86_400);
        let tod = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        UtcTime {
            year,
            month,
            day,
            hour: tod / 3600,
            minute: tod / 60 % 60,
            second: tod % 60,
            micros: sub,
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    /// `YYYYmmddHHMMSS`, as in rotated log names.
    pub fn compact(&self) -> String {
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    pub fn weekday_name(&self) -> &'static str {
        ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
            .get(self.weekday as usize)
            .copied()
            .unwrap_or("???")
    }

    pub fn month_name(&self) -> &'static str {
        [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .get(self.month.wrapping_sub(1) as usize)
        .copied()
        .unwrap_or("???")
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_of_a_log() {
        for (name, machine) in [
            ("Dell-R630-ABC.log.gz", Some("Dell-R630-ABC")),
            ("Dell-R630-ABC.20240102030405.log.gz", Some("Dell-R630-ABC")),
            (
                "Dell-R630-ABC.20240102030405.7.log.gz",
                Some("Dell-R630-ABC"),
            ),
            ("a.b.7.log.gz", Some("a.b.7")),
            ("a.2024.log.gz", Some("a.2024")),
            (".log.gz", None),
            ("x.hw", None),
        ] {
            assert_eq!(machine_of_log(name), machine, "{name}");
        }
    }
    use std::time::Duration;

    fn epoch_plus(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn calendar() {
        let t = UtcTime::from_system_time(epoch_plus(0));
        assert_eq!(
            (t.year, t.month, t.day, t.weekday_name()),
            (1970, 1, 1, "Thu")
        );
        // 2000-02-29 23:59:59 (leap day of a century leap year).
        let t = UtcTime::from_system_time(epoch_plus(951_868_799));
        assert_eq!(t.compact(), "20000229235959");
        assert_eq!(t.weekday_name(), "Tue");
        // 2100-03-01 00:00:00 (2100 is not a leap year).
        let t = UtcTime::from_system_time(epoch_plus(4_107_542_400));
        assert_eq!(t.compact(), "21000301000000");
        assert_eq!(t.month_name(), "Mar");
        let t = UtcTime::from_system_time(UNIX_EPOCH - Duration::from_micros(1));
        assert_eq!(
            (t.compact(), t.micros),
            ("19691231235959".to_owned(), 999_999)
        );
    }

    #[test]
    fn base_names() {
        assert_eq!(safe_base_name("a/b/c.log.gz"), Ok("c.log.gz"));
        assert_eq!(safe_base_name("../../etc/x.log.gz"), Ok("x.log.gz"));
        assert_eq!(safe_base_name("c:\\x.log.gz"), Ok("c:\\x.log.gz"));
        for bad in [
            "", "a/", "..", "x/..", ".", "a\0b", "a\nb", "a\u{7f}", "a\u{85}",
        ] {
            assert!(safe_base_name(bad).is_err(), "{bad:?}");
        }
        assert!(safe_base_name(&"x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(safe_base_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn store_rotates_and_never_clobbers() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let first = store_log(dir, "/x/h-p-s.log.gz", b"one").unwrap();
        assert_eq!(first.path, dir.canonicalize().unwrap().join("h-p-s.log.gz"));
        assert_eq!(first.rotated, None);
        let mtime = epoch_plus(1_700_000_000);
        fs::File::options()
            .write(true)
            .open(&first.path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let second = store_log(dir, "h-p-s.log.gz", b"two").unwrap();
        let rotated = second.rotated.unwrap();
        assert_eq!(rotated.file_name().unwrap(), "h-p-s.20231114221320.log.gz");
        assert_eq!(fs::read(&rotated).unwrap(), b"one");
        assert_eq!(fs::read(&second.path).unwrap(), b"two");
        // Same mtime again: the first rotation is kept, a counter is added.
        fs::File::options()
            .write(true)
            .open(&second.path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let third = store_log(dir, "h-p-s.log.gz", b"three").unwrap();
        assert_eq!(
            third.rotated.unwrap().file_name().unwrap(),
            "h-p-s.20231114221320.1.log.gz"
        );
        assert_eq!(fs::read(&rotated).unwrap(), b"one");
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "h-p-s.20231114221320.1.log.gz",
                "h-p-s.20231114221320.log.gz",
                "h-p-s.log.gz"
            ]
        );
    }

    #[test]
    fn refuses_symlinks_and_bad_names() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        let logs = tmp.path().join("logs");
        fs::create_dir(&logs).unwrap();
        fs::write(&outside, b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, logs.join("l.log.gz")).unwrap();
        assert!(matches!(
            store_log(&logs, "l.log.gz", b"x"),
            Err(LogError::NotAFile(_))
        ));
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
        assert!(matches!(
            store_log(&logs, "..", b"x"),
            Err(LogError::Name(_))
        ));
        assert!(matches!(
            store_log(&logs, "a.log", b"x"),
            Err(LogError::NotALog(_))
        ));
        assert!(matches!(
            store_log(&tmp.path().join("missing"), "a.log.gz", b"x"),
            Err(LogError::Dir { .. })
        ));
    }
}

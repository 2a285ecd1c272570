//! The `state` file: which profiles may still be installed, and how often.
//!
//! It is a Python list of `(profile, count)` pairs, tried in order. A count is
//! an int, a numeric string or `'*'` (no limit). The legacy server rewrites
//! the file with `pprint` after each installation, storing a decremented
//! count as an int; we keep every other value exactly as read so the file
//! stays byte-identical.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::literal::{self, Document, ParseError, Value};

/// How many more installations a profile allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quota {
    Unlimited,
    Remaining(i64),
}

impl Quota {
    pub fn available(self) -> bool {
        match self {
            Quota::Unlimited => true,
            Quota::Remaining(n) => n > 0,
        }
    }
}

/// One line of the state file.
#[derive(Clone, Debug)]
pub struct Entry {
    pub profile: String,
    pub quota: Quota,
    /// The entry as read (a tuple or a list), printed back unchanged unless
    /// the count changes: the legacy server then writes a new tuple.
    raw: Value,
}

/// The parsed state file.
#[derive(Clone, Debug)]
pub struct State {
    pub path: PathBuf,
    entries: Vec<Entry>,
}

#[derive(Debug)]
pub enum StateError {
    Parse(ParseError),
    /// The file parsed but is not a list of `(profile, count)` pairs.
    Invalid {
        file: PathBuf,
        index: usize,
        message: String,
    },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Parse(e) => e.fmt(f),
            StateError::Invalid {
                file,
                index,
                message,
            } => {
                write!(f, "{}: entry {}: {}", file.display(), index, message)
            }
        }
    }
}

impl std::error::Error for StateError {}

/// A profile name of the state file that cannot be turned into the name
/// of its files (`<profile>.specs`, ...): it would lead outside CONFIGDIR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsafeProfile {
    pub state_file: PathBuf,
    pub profile: String,
    /// What it contains: `'/'`, `'..'` or `a NUL character`.
    pub contains: &'static str,
}

impl UnsafeProfile {
    /// The message without the file name.
    pub fn message(&self) -> String {
        format!(
            "profile '{}' refused: it contains {}, and profile names must not \
             contain '/' or '..' (they name files of the configuration directory)",
            self.profile, self.contains
        )
    }
}

impl fmt::Display for UnsafeProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.state_file.display(), self.message())
    }
}

impl std::error::Error for UnsafeProfile {}

impl From<ParseError> for StateError {
    fn from(e: ParseError) -> StateError {
        StateError::Parse(e)
    }
}

/// Reads a count the way the legacy code does: `'*'`, an int, or a string
/// that Python's `int()` accepts (surrounding white space, a sign).
fn quota_of(count: &Value) -> Option<Quota> {
    match count {
        Value::Int(n) => Some(Quota::Remaining(*n)),
        Value::Long(n) => Some(Quota::Remaining(i64::try_from(*n).ok()?)),
        Value::Bool(b) => Some(Quota::Remaining(*b as i64)),
        _ => {
            let text = count.as_text()?;
            if text == "*" {
                return Some(Quota::Unlimited);
            }
            let t = text.trim();
            let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse().ok().map(Quota::Remaining)
        }
    }
}

impl State {
    /// Parses the state file's text (`path` names it in errors and messages).
    pub fn parse(path: &Path, src: &[u8]) -> Result<State, StateError> {
        let invalid = |index, message: String| StateError::Invalid {
            file: path.to_path_buf(),
            index,
            message,
        };
        let list = match literal::parse(path, src)? {
            Document::Literal(Value::List(items)) => items,
            _ => {
                return Err(invalid(
                    0,
                    "expected a list of (profile, count) pairs".into(),
                ))
            }
        };
        let mut entries = Vec::with_capacity(list.len());
        for (index, item) in list.into_iter().enumerate() {
            let (name, count) = match &item {
                Value::Tuple(pair) | Value::List(pair) if pair.len() == 2 => (&pair[0], &pair[1]),
                other => {
                    let shown = String::from_utf8_lossy(&literal::repr(other)).into_owned();
                    return Err(invalid(
                        index,
                        format!("expected (profile, count), got {shown}"),
                    ));
                }
            };
            let profile = name
                .as_text()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    invalid(index, "the profile name must be a non-empty string".into())
                })?
                .to_owned();
            let quota = quota_of(count).ok_or_else(|| {
                let shown = String::from_utf8_lossy(&literal::repr(count)).into_owned();
                invalid(
                    index,
                    format!("invalid count {shown} for profile '{profile}'"),
                )
            })?;
            entries.push(Entry {
                profile,
                quota,
                raw: item.clone(),
            });
        }
        Ok(State {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// `<profile>.<extension>` next to the state file, in CONFIGDIR: the
    /// one place where profile names become paths. A name with `/` or
    /// `..` is refused (the legacy server read and wrote outside CONFIGDIR).
    pub fn profile_file(&self, profile: &str, extension: &str) -> Result<PathBuf, UnsafeProfile> {
        let contains = if profile.contains('/') {
            "'/'"
        } else if profile.contains("..") {
            "'..'"
        } else if profile.contains('\0') {
            "a NUL character"
        } else {
            return Ok(self.path.with_file_name(format!("{profile}.{extension}")));
        };
        Err(UnsafeProfile {
            state_file: self.path.clone(),
            profile: profile.to_owned(),
            contains,
        })
    }

    fn set_count(&mut self, index: usize, n: i64) {
        if let Some(e) = self.entries.get_mut(index) {
            e.quota = Quota::Remaining(n);
            let name = match &e.raw {
                Value::Tuple(pair) | Value::List(pair) => pair.first().cloned(),
                _ => None,
            };
            e.raw = Value::Tuple(vec![name.unwrap_or(Value::None), Value::Int(n)]);
        }
    }

    /// Uses one installation of entry `index` (numeric counts only).
    pub fn consume(&mut self, index: usize) {
        if let Some(Quota::Remaining(n)) = self.entries.get(index).map(|e| e.quota) {
            self.set_count(index, n.saturating_sub(1));
        }
    }

    /// Gives back one installation after a failure report. Returns whether
    /// anything changed: `'*'` and unknown profiles are left alone.
    pub fn give_back(&mut self, profile: &str) -> bool {
        let found = self
            .entries
            .iter()
            .position(|e| e.profile == profile && matches!(e.quota, Quota::Remaining(_)));
        match found.map(|i| (i, self.entries[i].quota)) {
            Some((i, Quota::Remaining(n))) => {
                self.set_count(i, n.saturating_add(1));
                true
            }
            _ => false,
        }
    }

    /// The file's new text, as the legacy `pprint` would write it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let list = self.entries.iter().map(|e| e.raw.clone()).collect();
        literal::pformat(&Value::List(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(src: &str) -> Result<State, StateError> {
        State::parse(Path::new("/cfg/state"), src.as_bytes())
    }

    #[test]
    fn counts_of_every_legacy_form() {
        let s = state("[('hp', 4), ('vm', '*'), ('kvm', ' 2'), ('old', 0), ('neg', -1)]").unwrap();
        let q: Vec<_> = s
            .entries()
            .iter()
            .map(|e| (e.profile.as_str(), e.quota))
            .collect();
        assert_eq!(
            q,
            [
                ("hp", Quota::Remaining(4)),
                ("vm", Quota::Unlimited),
                ("kvm", Quota::Remaining(2)),
                ("old", Quota::Remaining(0)),
                ("neg", Quota::Remaining(-1)),
            ]
        );
        assert!(!s.entries()[3].quota.available());
        assert!(!s.entries()[4].quota.available());
    }

    #[test]
    fn consume_stores_an_int_and_keeps_the_rest() {
        let mut s = state("[('hp', '4'), ('vm', '*')]").unwrap();
        s.consume(0);
        s.consume(1);
        assert_eq!(s.to_bytes(), b"[('hp', 3), ('vm', '*')]\n");
    }

    #[test]
    fn list_entries_stay_lists_until_their_count_changes() {
        let mut s = state("[['a', 2], ['b', '3'], ('c', '*')]").unwrap();
        s.consume(0);
        assert_eq!(s.to_bytes(), b"[('a', 1), ['b', '3'], ('c', '*')]\n");
        let mut s = state("[['a', 2], ['b', '3'], ('c', '*')]").unwrap();
        assert!(s.give_back("b"));
        assert_eq!(s.to_bytes(), b"[['a', 2], ('b', 4), ('c', '*')]\n");
    }

    #[test]
    fn give_back_only_touches_numeric_counts() {
        let mut s = state("[('hp', 0), ('vm', '*')]").unwrap();
        assert!(s.give_back("hp"));
        assert!(!s.give_back("vm"));
        assert!(!s.give_back("nope"));
        assert_eq!(s.to_bytes(), b"[('hp', 1), ('vm', '*')]\n");
    }

    #[test]
    fn profile_files_stay_in_the_configuration_directory() {
        let s = state("[('vm', 1)]").unwrap();
        assert_eq!(
            s.profile_file("vm", "specs"),
            Ok(PathBuf::from("/cfg/vm.specs"))
        );
        assert_eq!(
            s.profile_file("a.b-c_d", "cmdb"),
            Ok(PathBuf::from("/cfg/a.b-c_d.cmdb"))
        );
        for (profile, contains) in [
            ("../etc/x", "'/'"),
            ("/etc/x", "'/'"),
            ("sub/vm", "'/'"),
            ("..", "'..'"),
            ("a..b", "'..'"),
            ("a\0b", "a NUL character"),
        ] {
            let e = s.profile_file(profile, "specs").unwrap_err();
            assert_eq!(e.contains, contains, "{profile:?}");
        }
        assert_eq!(
            s.profile_file("../x", "cmdb").unwrap_err().to_string(),
            "/cfg/state: profile '../x' refused: it contains '/', and profile names \
             must not contain '/' or '..' (they name files of the configuration directory)"
        );
    }

    #[test]
    fn bad_entries_are_named() {
        let e = state("[('hp', 4), ('vm', 'lots')]")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "/cfg/state: entry 1: invalid count 'lots' for profile 'vm'"
        );
        let e = state("[('hp', 4, 5)]").unwrap_err().to_string();
        assert!(e.contains("entry 0: expected (profile, count)"), "{e}");
        let e = state("{'hp': 4}").unwrap_err().to_string();
        assert!(e.contains("expected a list"), "{e}");
        let e = state("[('hp', 4)").unwrap_err().to_string();
        assert!(e.starts_with("/cfg/state:1:"), "{e}");
    }
}

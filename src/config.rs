//! `/etc/edeploy.conf`: where the server finds its files and what it may do.
//!
//! The legacy server reads this file with Python 2's `ConfigParser`, so an
//! operator's existing file must mean exactly the same thing to us. The
//! `rust-ini` crate cannot be told to follow those rules (it trims section
//! names, keeps blank continuation lines, merges a line without separator
//! into the next key and keeps no line numbers), so this module carries its
//! own small reader of the `ConfigParser` dialect:
//!
//! - `[name]` starts a section; the name is everything between `[` and the
//!   first `]`, case-sensitive and not trimmed; text after `]` is ignored.
//!   `[DEFAULT]` holds values inherited by every section. A section seen
//!   twice is merged.
//! - `key = value` or `key: value` (the first `=` or `:` separates); keys are
//!   case-insensitive (ASCII lower-cased), spaces around key and value are
//!   stripped, a value of exactly `""` is empty. The last definition wins.
//! - A line whose first character is `#` or `;`, a line whose first word is
//!   `rem` (any case, no leading space) and a blank line are comments.
//! - In a value, the first `;` starts a comment only when the character
//!   before it is white space (Python looks at the last character when the
//!   `;` is the first one).
//! - A line starting with white space continues the previous value: its
//!   stripped text is appended after a `\n` (blank lines are skipped).
//! - A value containing `%(` is interpolated on reading: `%(key)s` is
//!   replaced by that key of the same section (or `[DEFAULT]`), `%%` by `%`,
//!   repeated up to 10 levels. Other `%` forms in such a value are errors
//!   (Python would format them; no sane configuration uses them).
//!
//! Unlike the legacy server, a section that does not exist is an error
//! rather than a silent fallback to the defaults, and bad values are errors
//! naming the file and line.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Default `MAXHWSIZE`: largest hardware description accepted, in bytes.
pub const DEFAULT_MAX_HW_SIZE: u64 = 4 << 20;
/// Default `MAXLOGSIZE`: largest uploaded `.log.gz` accepted, in bytes.
pub const DEFAULT_MAX_LOG_SIZE: u64 = 64 << 20;
/// Default `LOCKFILE` when the configuration file does not name one.
pub const DEFAULT_LOCK_FILE: &str = "/var/run/httpd/edeploy.lock";

/// Interpolation levels followed before giving up, as in `ConfigParser`.
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// The server settings of one section of the configuration file.
///
/// Directories are normalised as the legacy server did with
/// `os.path.normpath(value) + '/'`: they always end with `/`, so that
/// `config_dir` printed in messages is byte-identical to the legacy one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `CONFIGDIR`: state, `*.specs`, `*.configure`, `*.cmdb`.
    pub config_dir: PathBuf,
    /// `HWDIR`: where `<sysname>.hw` files are saved (default CONFIGDIR).
    pub hw_dir: PathBuf,
    /// `LOGDIR`: where uploaded `.log.gz` files are saved (default CONFIGDIR).
    pub log_dir: PathBuf,
    /// `HEALTHDIR`: where `upload-health` saves its results (default
    /// `<script dir>/../health`, as the legacy `upload-health.py`).
    pub health_dir: PathBuf,
    /// `LOCKFILE`: serialises every reader and writer of CONFIGDIR.
    pub lock_file: PathBuf,
    /// `USEPXEMNGR`: register machines with `pxemngr`.
    pub use_pxemngr: bool,
    /// `PXEMNGRURL` (absent or empty: `None`).
    pub pxemngr_url: Option<String>,
    /// `METADATAURL` (absent or empty: `None`).
    pub metadata_url: Option<String>,
    /// `MAXHWSIZE`: largest hardware description accepted, in bytes.
    pub max_hw_size: u64,
    /// `MAXLOGSIZE`: largest uploaded log accepted, in bytes.
    pub max_log_size: u64,
}

impl Config {
    /// Reads `section` of the configuration file `path`.
    ///
    /// `script_dir` is the directory of the running program (symbolic links
    /// resolved), from which the legacy defaults `<script_dir>/../config`
    /// (CONFIGDIR) and `<script_dir>/../health` (HEALTHDIR) are derived.
    pub fn load(path: &Path, section: &str, script_dir: &Path) -> Result<Config, ConfigError> {
        read_ini(path)?.config(section.as_bytes(), script_dir.as_os_str().as_bytes())
    }

    /// The configuration used when there is no configuration file: every
    /// directory is `config_dir`, the lock file is `config_dir/.edeploy.lock`.
    pub fn for_dir(config_dir: &Path) -> Config {
        let dir = dir_path(config_dir.as_os_str().as_bytes());
        Config {
            config_dir: dir.clone(),
            hw_dir: dir.clone(),
            log_dir: dir.clone(),
            health_dir: dir.clone(),
            lock_file: dir.join(".edeploy.lock"),
            use_pxemngr: false,
            pxemngr_url: None,
            metadata_url: None,
            max_hw_size: DEFAULT_MAX_HW_SIZE,
            max_log_size: DEFAULT_MAX_LOG_SIZE,
        }
    }
}

/// The names of the sections of the configuration file `path` that set
/// `key`, themselves or through `[DEFAULT]`, sorted (the status page shows
/// every section with a `CONFIGDIR`). Names that are not UTF-8 are given
/// lossily: [`Config::load`] then reports them as missing.
pub fn sections_setting(path: &Path, key: &str) -> Result<Vec<String>, ConfigError> {
    let ini = read_ini(path)?;
    let key = key.to_ascii_lowercase();
    Ok(ini
        .sections
        .iter()
        .filter(|(_, options)| ini.lookup(Some(options), key.as_bytes()).is_some())
        .map(|(name, _)| String::from_utf8_lossy(name).into_owned())
        .collect())
}

fn read_ini(path: &Path) -> Result<Ini, ConfigError> {
    let src = std::fs::read(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        kind: ConfigErrorKind::Io(e.kind()),
        message: e.to_string(),
    })?;
    Ini::parse(path, &src)
}

/// Where the programs look for their configuration: `$EDEPLOY_CONF` when
/// set (then the file must exist), else `/etc/edeploy.conf`.
pub fn default_path() -> (PathBuf, bool) {
    match std::env::var_os("EDEPLOY_CONF") {
        Some(path) => (PathBuf::from(path), true),
        None => (PathBuf::from("/etc/edeploy.conf"), false),
    }
}

/// Reads `section` of the file named by [`default_path`]. When that is
/// `/etc/edeploy.conf` and it does not exist, `fallback` gives the
/// configuration instead (the legacy defaults, or the bundled examples).
pub fn load_default(
    section: &str,
    script_dir: &Path,
    fallback: impl FnOnce() -> Config,
) -> Result<Config, ConfigError> {
    let (path, explicit) = default_path();
    match Config::load(&path, section, script_dir) {
        Err(e) if !explicit && e.kind == ConfigErrorKind::Io(io::ErrorKind::NotFound) => Ok(fallback()),
        other => other,
    }
}

/// The directory of the running program, symbolic links resolved: the
/// legacy defaults (`<script_dir>/../config`, `../health`) are relative to it.
pub fn program_dir() -> PathBuf {
    std::env::current_exe()
        .map(|exe| exe.canonicalize().unwrap_or(exe))
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// What kind of problem a [`ConfigError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The file could not be read (`NotFound` lets callers fall back).
    Io(io::ErrorKind),
    /// A line that is neither a section, an option, a continuation nor a
    /// comment, or an option before the first section.
    Syntax,
    /// The requested section is not in the file.
    MissingSection,
    /// A value that cannot be used (bad number, boolean, interpolation).
    Value,
}

/// A configuration problem, naming the file and, when known, the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub kind: ConfigErrorKind,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A raw value and the 1-based line of its `key = value` line.
#[derive(Debug, Clone)]
struct Entry {
    lines: Vec<Vec<u8>>,
    line: usize,
}

impl Entry {
    fn value(&self) -> Vec<u8> {
        self.lines.join(&b'\n')
    }
}

type Options = BTreeMap<Vec<u8>, Entry>;

/// A parsed file: `[DEFAULT]` and the other sections by exact name.
#[derive(Debug)]
struct Ini {
    file: PathBuf,
    defaults: Options,
    sections: BTreeMap<Vec<u8>, Options>,
}

/// Python 2's `str.isspace()` for one byte (also the `\s` of its regexes).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

/// Python 2's `str.strip()`.
fn strip(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_space(b)).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| !is_space(b))
        .map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// Python 2's `str.rstrip()`.
fn rstrip(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| !is_space(b)).map_or(0, |i| i + 1);
    s.get(..end).unwrap_or_default()
}

impl Ini {
    fn parse(file: &Path, src: &[u8]) -> Result<Ini, ConfigError> {
        let mut ini = Ini {
            file: file.to_path_buf(),
            defaults: Options::new(),
            sections: BTreeMap::new(),
        };
        // Current section (None: DEFAULT) once one was seen, and the key a
        // continuation line extends.
        let mut cursect: Option<Option<Vec<u8>>> = None;
        let mut optname: Option<Vec<u8>> = None;
        let mut first_bad_line = None;
        for (index, line) in src.split_inclusive(|&b| b == b'\n').enumerate() {
            let lineno = index + 1;
            let Some(&first) = line.first() else {
                continue;
            };
            if strip(line).is_empty() || first == b'#' || first == b';' {
                continue;
            }
            let first_word = line.split(|&b| is_space(b)).find(|w| !w.is_empty());
            if matches!(first, b'r' | b'R')
                && first_word.is_some_and(|w| w.eq_ignore_ascii_case(b"rem"))
            {
                continue;
            }
            if is_space(first) {
                if let (Some(sect), Some(key)) = (&cursect, &optname) {
                    let value = strip(line);
                    if !value.is_empty() {
                        if let Some(entry) = ini.options_mut(sect).get_mut(key) {
                            entry.lines.push(value.to_vec());
                        }
                    }
                    continue;
                }
            }
            if let Some(name) = section_header(line) {
                let sect = if name == b"DEFAULT" {
                    None
                } else {
                    let options = ini.sections.entry(name.to_vec()).or_default();
                    options
                        .entry(b"__name__".to_vec())
                        .or_insert_with(|| Entry {
                            lines: vec![name.to_vec()],
                            line: lineno,
                        });
                    Some(name.to_vec())
                };
                cursect = Some(sect);
                optname = None;
                continue;
            }
            let Some(sect) = &cursect else {
                return Err(ini.error(
                    lineno,
                    ConfigErrorKind::Syntax,
                    format!(
                        "option before the first [section]: {}",
                        String::from_utf8_lossy(strip(line))
                    ),
                ));
            };
            match option_line(line) {
                Some((key, value)) => {
                    let entry = Entry {
                        lines: vec![value],
                        line: lineno,
                    };
                    ini.options_mut(&sect.clone()).insert(key.clone(), entry);
                    optname = Some(key);
                }
                // ConfigParser reads on and reports every bad line at the
                // end; the first one is enough to fix the file.
                None => {
                    first_bad_line.get_or_insert(lineno);
                }
            }
        }
        match first_bad_line {
            Some(lineno) => Err(ini.error(
                lineno,
                ConfigErrorKind::Syntax,
                "expected `[section]`, `key = value`, `key: value` or a comment".to_string(),
            )),
            None => Ok(ini),
        }
    }

    fn options_mut(&mut self, sect: &Option<Vec<u8>>) -> &mut Options {
        match sect {
            None => &mut self.defaults,
            Some(name) => self.sections.entry(name.clone()).or_default(),
        }
    }

    fn error(&self, line: usize, kind: ConfigErrorKind, message: String) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: Some(line),
            kind,
            message,
        }
    }

    /// The options of `section`, `Err` when absent (`DEFAULT` always exists).
    fn section(&self, section: &[u8]) -> Result<Option<&Options>, ConfigError> {
        if section == b"DEFAULT" {
            return Ok(None);
        }
        match self.sections.get(section) {
            Some(options) => Ok(Some(options)),
            None => Err(ConfigError {
                file: self.file.clone(),
                line: None,
                kind: ConfigErrorKind::MissingSection,
                message: format!(
                    "no section [{}] in this file",
                    String::from_utf8_lossy(section)
                ),
            }),
        }
    }

    fn lookup<'a>(&'a self, options: Option<&'a Options>, key: &[u8]) -> Option<&'a Entry> {
        options
            .and_then(|o| o.get(key))
            .or_else(|| self.defaults.get(key))
    }

    /// `ConfigParser.get(section, key)`: the interpolated value and its line,
    /// `None` when the key is in neither the section nor `[DEFAULT]`.
    fn get(&self, section: &[u8], key: &str) -> Result<Option<(Vec<u8>, usize)>, ConfigError> {
        let options = self.section(section)?;
        let key = key.to_ascii_lowercase();
        let Some(entry) = self.lookup(options, key.as_bytes()) else {
            return Ok(None);
        };
        let mut value = entry.value();
        for _ in 0..MAX_INTERPOLATION_DEPTH {
            if !contains(&value, b"%(") {
                return Ok(Some((value, entry.line)));
            }
            value = self
                .substitute(options, &value)
                .map_err(|m| self.error(entry.line, ConfigErrorKind::Value, m))?;
        }
        if contains(&value, b"%(") {
            return Err(self.error(
                entry.line,
                ConfigErrorKind::Value,
                format!(
                    "interpolation of `{key}` nests deeper than {MAX_INTERPOLATION_DEPTH} levels"
                ),
            ));
        }
        Ok(Some((value, entry.line)))
    }

    /// One round of `value % section_and_defaults` with lower-cased keys.
    fn substitute(&self, options: Option<&Options>, value: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(value.len());
        let mut rest = value;
        while let Some(pos) = rest.iter().position(|&b| b == b'%') {
            out.extend_from_slice(rest.get(..pos).unwrap_or_default());
            let after = rest.get(pos + 1..).unwrap_or_default();
            match after.first() {
                Some(b'%') => {
                    out.push(b'%');
                    rest = after.get(1..).unwrap_or_default();
                }
                Some(b'(') => {
                    let (name, tail) = interpolation_key(after).ok_or_else(|| {
                        "bad interpolation: `%(` without matching `)s`".to_string()
                    })?;
                    let name = name.to_ascii_lowercase();
                    let entry = self.lookup(options, &name).ok_or_else(|| {
                        format!(
                            "bad interpolation: no option `{}` in this section or [DEFAULT]",
                            String::from_utf8_lossy(&name)
                        )
                    })?;
                    out.extend_from_slice(&entry.value());
                    rest = tail;
                }
                _ => {
                    return Err(
                        "bad interpolation: `%` must be followed by `%` or `(key)s`".to_string()
                    )
                }
            }
        }
        out.extend_from_slice(rest);
        Ok(out)
    }

    fn config(&self, section: &[u8], script_dir: &[u8]) -> Result<Config, ConfigError> {
        self.section(section)?;
        let get = |key: &str| self.get(section, key);
        let script_relative = |name: &str| {
            let mut p = script_dir.to_vec();
            if !p.ends_with(b"/") && !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(b"../");
            p.extend_from_slice(name.as_bytes());
            p
        };
        let config_dir = match get("CONFIGDIR")? {
            Some((v, _)) => dir_path(&v),
            None => dir_path(&script_relative("config")),
        };
        let dir_or_config = |key: &str| -> Result<PathBuf, ConfigError> {
            Ok(match get(key)? {
                Some((v, _)) => dir_path(&v),
                None => config_dir.clone(),
            })
        };
        let hw_dir = dir_or_config("HWDIR")?;
        let log_dir = dir_or_config("LOGDIR")?;
        let health_dir = match get("HEALTHDIR")? {
            Some((v, _)) => dir_path(&v),
            None => dir_path(&script_relative("health")),
        };
        let lock_file = match get("LOCKFILE")? {
            Some((v, line)) if v.is_empty() => {
                return Err(self.error(
                    line,
                    ConfigErrorKind::Value,
                    "LOCKFILE is empty".to_string(),
                ))
            }
            Some((v, _)) => PathBuf::from(OsString::from_vec(v)),
            None => PathBuf::from(DEFAULT_LOCK_FILE),
        };
        let use_pxemngr = match get("USEPXEMNGR")? {
            Some((v, line)) => parse_bool(&v).ok_or_else(|| {
                self.bad_value(
                    line,
                    "USEPXEMNGR",
                    &v,
                    "a boolean (True/False, yes/no, on/off, 1/0)",
                )
            })?,
            None => false,
        };
        let url = |key: &str| -> Result<Option<String>, ConfigError> {
            match get(key)? {
                Some((v, _)) if v.is_empty() => Ok(None),
                Some((v, line)) => String::from_utf8(v)
                    .map(Some)
                    .map_err(|e| self.bad_value(line, key, e.as_bytes(), "valid UTF-8")),
                None => Ok(None),
            }
        };
        let size = |key: &str, default: u64| -> Result<u64, ConfigError> {
            match get(key)? {
                Some((v, line)) => parse_size(&v).ok_or_else(|| {
                    self.bad_value(
                        line,
                        key,
                        &v,
                        "a positive number of bytes, optionally followed by K, M or G",
                    )
                }),
                None => Ok(default),
            }
        };
        Ok(Config {
            config_dir,
            hw_dir,
            log_dir,
            health_dir,
            lock_file,
            use_pxemngr,
            pxemngr_url: url("PXEMNGRURL")?,
            metadata_url: url("METADATAURL")?,
            max_hw_size: size("MAXHWSIZE", DEFAULT_MAX_HW_SIZE)?,
            max_log_size: size("MAXLOGSIZE", DEFAULT_MAX_LOG_SIZE)?,
        })
    }

    fn bad_value(&self, line: usize, key: &str, value: &[u8], expected: &str) -> ConfigError {
        self.error(
            line,
            ConfigErrorKind::Value,
            format!(
                "{key} = {:?}: expected {expected}",
                String::from_utf8_lossy(value)
            ),
        )
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `\[(?P<header>[^]]+)\]` matched at the start of the line.
fn section_header(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"[")?;
    let end = rest.iter().position(|&b| b == b']')?;
    (end > 0).then(|| rest.get(..end)).flatten()
}

/// `(?P<option>[^:=\s][^:=]*)\s*(?P<vi>[:=])\s*(?P<value>.*)$` plus the
/// processing `ConfigParser` applies: lower-cased key, inline `;` comment,
/// stripped value, `""` read as empty.
fn option_line(line: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let first = *line.first()?;
    if first == b':' || first == b'=' || is_space(first) {
        return None;
    }
    let sep = line.iter().position(|&b| b == b':' || b == b'=')?;
    let key = rstrip(line.get(..sep)?).to_ascii_lowercase();
    let after = line.get(sep + 1..)?;
    let after = after.strip_suffix(b"\n").unwrap_or(after);
    let start = after
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(after.len());
    let mut value = after.get(start..)?;
    if let Some(pos) = value.iter().position(|&b| b == b';') {
        // Python reads optval[pos - 1], the last character when pos is 0.
        let before = if pos == 0 {
            value.last()
        } else {
            value.get(pos - 1)
        };
        if before.is_some_and(|&b| is_space(b)) {
            value = value.get(..pos)?;
        }
    }
    let value = strip(value);
    let value = if value == b"\"\"" { &b""[..] } else { value };
    Some((key, value.to_vec()))
}

/// After `%`, the text `(key)s`: returns the key and what follows. Parentheses
/// nest inside the key, as in Python's `%` operator.
fn interpolation_key(after_percent: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut depth = 0usize;
    for (i, &b) in after_percent.iter().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    let key = after_percent.get(1..i)?;
                    let tail = after_percent.get(i + 1..)?;
                    return Some((key, tail.strip_prefix(b"s")?));
                }
            }
            _ => {}
        }
    }
    None
}

/// `ConfigParser.getboolean` spellings.
fn parse_bool(v: &[u8]) -> Option<bool> {
    match v.to_ascii_lowercase().as_slice() {
        b"1" | b"yes" | b"true" | b"on" => Some(true),
        b"0" | b"no" | b"false" | b"off" => Some(false),
        _ => None,
    }
}

/// A positive byte count: decimal digits, optionally followed by `K`, `M` or
/// `G` (binary multiples, any case).
fn parse_size(v: &[u8]) -> Option<u64> {
    let (digits, shift) = match v.last()?.to_ascii_uppercase() {
        b'K' => (v.get(..v.len() - 1)?, 10),
        b'M' => (v.get(..v.len() - 1)?, 20),
        b'G' => (v.get(..v.len() - 1)?, 30),
        _ => (v, 0),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let n = n.checked_mul(1u64 << shift)?;
    (n > 0).then_some(n)
}

/// Python 2's `os.path.normpath` on a byte path.
fn normpath(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b".".to_vec();
    }
    let initial_slashes = if path.starts_with(b"//") && !path.starts_with(b"///") {
        2
    } else if path.starts_with(b"/") {
        1
    } else {
        0
    };
    let mut comps: Vec<&[u8]> = Vec::new();
    for comp in path.split(|&b| b == b'/') {
        if comp.is_empty() || comp == b"." {
            continue;
        }
        if comp != b".."
            || (initial_slashes == 0 && comps.is_empty())
            || comps.last() == Some(&&b".."[..])
        {
            comps.push(comp);
        } else {
            comps.pop();
        }
    }
    let mut out = vec![b'/'; initial_slashes];
    out.extend_from_slice(&comps.join(&b'/'));
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

/// `os.path.normpath(value) + '/'`, the legacy directory normalisation.
fn dir_path(value: &[u8]) -> PathBuf {
    let mut p = normpath(value);
    p.push(b'/');
    PathBuf::from(OsString::from_vec(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Ini {
        Ini::parse(Path::new("/etc/edeploy.conf"), src.as_bytes()).unwrap()
    }

    fn get(ini: &Ini, section: &str, key: &str) -> Option<String> {
        ini.get(section.as_bytes(), key)
            .unwrap()
            .map(|(v, _)| String::from_utf8(v).unwrap())
    }

    #[test]
    fn normpath_matches_python() {
        for (input, want) in [
            ("", "."),
            ("/", "/"),
            ("//", "//"),
            ("///", "/"),
            ("//a//b/", "//a/b"),
            ("/a/./b/../c/", "/a/c"),
            ("/..", "/"),
            ("../a/..", ".."),
            ("a/../..", ".."),
            ("a/..", "."),
            ("/usr/lib/cgi-bin/../config", "/usr/lib/config"),
        ] {
            assert_eq!(normpath(input.as_bytes()), want.as_bytes(), "{input:?}");
        }
    }

    #[test]
    fn keys_case_insensitive_sections_case_sensitive() {
        let ini = parse("[SERVER]\nConfigDir = /a\n[server]\nconfigdir=/b\n");
        assert_eq!(get(&ini, "SERVER", "CONFIGDIR").as_deref(), Some("/a"));
        assert_eq!(get(&ini, "server", "CONFIGDIR").as_deref(), Some("/b"));
        assert!(ini.get(b"Server", "CONFIGDIR").is_err());
    }

    #[test]
    fn separators_comments_and_continuations() {
        let ini = parse(
            "# comment\n; comment\nrem comment\n[S]\n\
             a: x ; comment\n\
             b = x;y ;z\n\
             c = x #y\n\
             d = \"\"\n\
             e =\n\
             f = one\n  two\n\n\t three\n\
             g = ;x \n\
             h =   spaced   \n\
             [S]\nI = merged\n",
        );
        assert_eq!(get(&ini, "S", "a").as_deref(), Some("x"));
        assert_eq!(get(&ini, "S", "b").as_deref(), Some("x;y ;z"));
        assert_eq!(get(&ini, "S", "c").as_deref(), Some("x #y"));
        assert_eq!(get(&ini, "S", "d").as_deref(), Some(""));
        assert_eq!(get(&ini, "S", "e").as_deref(), Some(""));
        assert_eq!(get(&ini, "S", "f").as_deref(), Some("one\ntwo\nthree"));
        assert_eq!(get(&ini, "S", "g").as_deref(), Some(""));
        assert_eq!(get(&ini, "S", "h").as_deref(), Some("spaced"));
        assert_eq!(get(&ini, "S", "i").as_deref(), Some("merged"));
        assert_eq!(get(&ini, "S", "__name__").as_deref(), Some("S"));
    }

    #[test]
    fn defaults_and_interpolation() {
        let ini = parse(
            "[DEFAULT]\nbase = /srv\nlock = %(base)s/lock\n\
             [S]\nconfigdir = %(BASE)s/config\npct = 100%% %(base)s\nloop = %(loop)s\nbad = %(nope)s\nodd = %(base)s %d\n",
        );
        assert_eq!(get(&ini, "S", "configdir").as_deref(), Some("/srv/config"));
        assert_eq!(get(&ini, "S", "lock").as_deref(), Some("/srv/lock"));
        assert_eq!(get(&ini, "S", "pct").as_deref(), Some("100% /srv"));
        assert_eq!(get(&ini, "DEFAULT", "base").as_deref(), Some("/srv"));
        for key in ["loop", "bad", "odd"] {
            let err = ini.get(b"S", key).unwrap_err();
            assert_eq!(err.kind, ConfigErrorKind::Value, "{key}");
            assert!(err.line.is_some(), "{key}");
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = Ini::parse(Path::new("/x.conf"), b"key = 1\n").unwrap_err();
        assert_eq!((err.kind, err.line), (ConfigErrorKind::Syntax, Some(1)));
        let err =
            Ini::parse(Path::new("/x.conf"), b"[S]\na = 1\nnovalue\nb = 2\n  =x\n").unwrap_err();
        assert_eq!((err.kind, err.line), (ConfigErrorKind::Syntax, Some(3)));
        assert!(err.to_string().starts_with("/x.conf:3: "), "{err}");
        // An indented line right after a section header continues nothing.
        let err = Ini::parse(Path::new("/x.conf"), b"[S]\n  a = 1\n").unwrap_err();
        assert_eq!(err.line, Some(2));
    }

    /// Python 2.7's ConfigParser reading `src`: the first bad line, or for
    /// each (section, key) "V <hex value>", "NOOPT", "NOSECT" or "ERR".
    fn python_reads(src: &str, queries: &[(&str, &str)]) -> Result<Vec<String>, usize> {
        const SCRIPT: &str = r#"
import ConfigParser, sys, binascii
c = ConfigParser.ConfigParser()
try:
    c.read(sys.argv[1])
except ConfigParser.MissingSectionHeaderError as e:
    print('PARSEERR %d' % e.lineno); sys.exit(0)
except ConfigParser.ParsingError as e:
    print('PARSEERR %d' % e.errors[0][0]); sys.exit(0)
for q in sys.argv[2:]:
    section, key = q.split('\t')
    try:
        print('V ' + binascii.hexlify(c.get(section, key)))
    except ConfigParser.NoSectionError:
        print('NOSECT')
    except ConfigParser.NoOptionError:
        print('NOOPT')
    except Exception:
        print('ERR')
"#;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c.ini");
        std::fs::write(&path, src).unwrap();
        let out = std::process::Command::new("python2.7")
            .env("PYENV_VERSION", "2.7.18")
            .arg("-c")
            .arg(SCRIPT)
            .arg(&path)
            .args(queries.iter().map(|(s, k)| format!("{s}\t{k}")))
            .output()
            .expect("python2.7 (the oracle) must be installed; EDEPLOY_SKIP_ORACLE=1 skips");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        if let Some(line) = text.strip_prefix("PARSEERR ") {
            return Err(line.trim().parse().unwrap());
        }
        Ok(text.lines().map(str::to_string).collect())
    }

    fn hex(v: &[u8]) -> String {
        v.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn reads_like_python_configparser() {
        if std::env::var_os("EDEPLOY_SKIP_ORACLE").is_some_and(|v| v == "1") {
            eprintln!("EDEPLOY_SKIP_ORACLE=1: not comparing with Python's ConfigParser");
            return;
        }
        let texts = [
            "[S]\na = 1\n",
            "[ S ]\na = 1\n[S]x\nb=2\n",
            "# c\n; c\nREM c\nrem\n[S]\nrem = 3\nRem: 4\n",
            "[S]\na: x ; c\nb = x;y ;z\nc = x #y\nd = \"\"\ne =\nf = ;x \ng = ; x\nh=a\t;b\n",
            "[S]\nf = one\n  two\n\n\t three  \r\nA = upper\n",
            "[S]\na = 1\r\nb = x \r\n[T]\na = 2",
            "[DEFAULT]\nbase = /srv\nlock = %(base)s/lock\n[S]\nconfigdir = %(BASE)s/c\npct = 100%% %(base)s\nloop = %(loop)s\nbad = %(nope)s\nname = %(__name__)s\npp = %%(base)s\n",
            "[S]\na = x\n[DEFAULT]\na = y\nb = z\n[S]\nb = w\n",
            "[S]\nnovalue\nb = 2\n",
            "a = 1\n[S]\n",
            "[S]\n  a = 1\n",
            "[]\n[S]\n",
            "[S]\n:a = 1\n",
            "[S]\nkey with space = v\nk=v=w\nk2 : v:w\n",
        ];
        let keys = [
            "a",
            "b",
            "c",
            "d",
            "e",
            "f",
            "g",
            "h",
            "rem",
            "configdir",
            "lock",
            "pct",
            "loop",
            "bad",
            "name",
            "pp",
            "key with space",
            "k",
            "k2",
            "__name__",
        ];
        let sections = ["S", " S ", "T", "DEFAULT", "missing"];
        let queries: Vec<(&str, &str)> = sections
            .iter()
            .flat_map(|s| keys.iter().map(move |k| (*s, *k)))
            .collect();
        for text in texts {
            let python = python_reads(text, &queries);
            let ours = Ini::parse(Path::new("c.ini"), text.as_bytes());
            match (python, ours) {
                (Err(line), Err(e)) => assert_eq!(e.line, Some(line), "{text:?}"),
                (Ok(answers), Ok(ini)) => {
                    for ((section, key), answer) in queries.iter().zip(&answers) {
                        let mine = match ini.get(section.as_bytes(), key) {
                            Ok(Some((v, _))) => format!("V {}", hex(&v)),
                            Ok(None) => "NOOPT".to_string(),
                            Err(e) if e.kind == ConfigErrorKind::MissingSection => {
                                "NOSECT".to_string()
                            }
                            Err(_) => "ERR".to_string(),
                        };
                        assert_eq!(&mine, answer, "{text:?} [{section}] {key}");
                    }
                }
                (python, ours) => panic!("{text:?}: python {python:?}, ours {ours:?}"),
            }
        }
    }

    fn write_conf(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("edeploy.conf");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn load_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write_conf(tmp.path(), "[SERVER]\n");
        let cfg = Config::load(&path, "SERVER", Path::new("/usr/lib/cgi-bin")).unwrap();
        assert_eq!(
            cfg,
            Config {
                config_dir: "/usr/lib/config/".into(),
                hw_dir: "/usr/lib/config/".into(),
                log_dir: "/usr/lib/config/".into(),
                health_dir: "/usr/lib/health/".into(),
                lock_file: DEFAULT_LOCK_FILE.into(),
                use_pxemngr: false,
                pxemngr_url: None,
                metadata_url: None,
                max_hw_size: 4 * 1024 * 1024,
                max_log_size: 64 * 1024 * 1024,
            }
        );
    }

    #[test]
    fn load_every_key() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write_conf(
            tmp.path(),
            "[SERVER]\n\
             HEALTHDIR   = /var/lib/edeploy/health/\n\
             CONFIGDIR   = /var/lib/edeploy//config/.\n\
             LOGDIR      = /var/lib/edeploy/config/logs\n\
             HWDIR       = /var/lib/edeploy/hw/\n\
             LOCKFILE    = /var/lock/apache2/edeploy.lock\n\
             USEPXEMNGR  = True\n\
             PXEMNGRURL  = http://192.168.122.1:8000/\n\
             METADATAURL = http://192.168.122.1/\n\
             MAXHWSIZE   = 1M\n\
             MAXLOGSIZE  = 12345\n\
             [OTHER]\nUSEPXEMNGR = off\nMETADATAURL =\n",
        );
        let cfg = Config::load(&path, "SERVER", Path::new("/cgi")).unwrap();
        assert_eq!(cfg.config_dir, Path::new("/var/lib/edeploy/config/"));
        assert_eq!(cfg.config_dir.as_os_str(), "/var/lib/edeploy/config/");
        assert_eq!(cfg.log_dir.as_os_str(), "/var/lib/edeploy/config/logs/");
        assert_eq!(cfg.hw_dir.as_os_str(), "/var/lib/edeploy/hw/");
        assert_eq!(cfg.health_dir.as_os_str(), "/var/lib/edeploy/health/");
        assert_eq!(cfg.lock_file.as_os_str(), "/var/lock/apache2/edeploy.lock");
        assert!(cfg.use_pxemngr);
        assert_eq!(
            cfg.pxemngr_url.as_deref(),
            Some("http://192.168.122.1:8000/")
        );
        assert_eq!(cfg.metadata_url.as_deref(), Some("http://192.168.122.1/"));
        assert_eq!((cfg.max_hw_size, cfg.max_log_size), (1 << 20, 12345));

        let other = Config::load(&path, "OTHER", Path::new("/cgi")).unwrap();
        assert!(!other.use_pxemngr);
        assert_eq!(other.metadata_url, None);
        assert_eq!(other.config_dir.as_os_str(), "/config/");
    }

    #[test]
    fn load_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write_conf(
            tmp.path(),
            "[SERVER]\nMAXHWSIZE = 4 MB\nUSEPXEMNGR = maybe\n",
        );
        let err = Config::load(&path, "SERVER", Path::new("/cgi")).unwrap_err();
        assert_eq!((err.kind, err.line), (ConfigErrorKind::Value, Some(3)));
        assert!(err.to_string().contains("USEPXEMNGR"), "{err}");

        let path = write_conf(tmp.path(), "[SERVER]\nMAXHWSIZE = 4 MB\n");
        let err = Config::load(&path, "SERVER", Path::new("/cgi")).unwrap_err();
        assert_eq!((err.kind, err.line), (ConfigErrorKind::Value, Some(2)));
        assert!(
            err.to_string()
                .starts_with(&format!("{}:2: MAXHWSIZE", path.display())),
            "{err}"
        );

        let err = Config::load(&path, "server", Path::new("/cgi")).unwrap_err();
        assert_eq!(err.kind, ConfigErrorKind::MissingSection);
        assert_eq!(
            err.to_string(),
            format!("{}: no section [server] in this file", path.display())
        );

        let missing = tmp.path().join("nope.conf");
        let err = Config::load(&missing, "SERVER", Path::new("/cgi")).unwrap_err();
        assert_eq!(err.kind, ConfigErrorKind::Io(io::ErrorKind::NotFound));
        assert!(err.to_string().starts_with(&missing.display().to_string()));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"4k"), Some(4096));
        assert_eq!(parse_size(b"2G"), Some(2 << 30));
        for bad in [
            &b""[..],
            b"0",
            b"K",
            b"-1",
            b"1.5M",
            b"99999999999999999999",
            b"17179869184G",
        ] {
            assert_eq!(parse_size(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn sections_setting_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edeploy.conf");
        let src = "[SERVER]\nconfigdir = /a\n[health]\nHWDIR = /h\n[B]\nCONFIGDIR: /b\n";
        std::fs::write(&path, src).unwrap();
        assert_eq!(
            sections_setting(&path, "CONFIGDIR").unwrap(),
            ["B", "SERVER"]
        );
        std::fs::write(&path, format!("[DEFAULT]\nCONFIGDIR = /d\n{src}")).unwrap();
        assert_eq!(
            sections_setting(&path, "CONFIGDIR").unwrap(),
            ["B", "SERVER", "health"]
        );
        std::fs::write(&path, "[SERVER]\nbad line\n").unwrap();
        let e = sections_setting(&path, "CONFIGDIR").unwrap_err();
        assert_eq!((e.kind, e.line), (ConfigErrorKind::Syntax, Some(2)));
        let e = sections_setting(&dir.path().join("nope"), "CONFIGDIR").unwrap_err();
        assert_eq!(e.kind, ConfigErrorKind::Io(io::ErrorKind::NotFound));
    }

    #[test]
    fn for_dir_uses_one_directory() {
        let cfg = Config::for_dir(Path::new("/srv/legacy-config"));
        for dir in [&cfg.config_dir, &cfg.hw_dir, &cfg.log_dir, &cfg.health_dir] {
            assert_eq!(dir.as_os_str(), "/srv/legacy-config/");
        }
        assert_eq!(
            cfg.lock_file.as_os_str(),
            "/srv/legacy-config/.edeploy.lock"
        );
        assert!(!cfg.use_pxemngr);
    }
}

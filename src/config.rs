//! `/etc/edeploy.conf`: where the server finds its files and what it may do.
//!
//! The legacy server reads this file with Python 2's `ConfigParser`, so an
//! operator's file must mean the same thing to us. The `rust-ini` crate reads
//! it (`[section]`, `key = value` or `key: value`, `#`/`;` comment lines,
//! indented continuation lines), without quotes or escapes so that values
//! stay verbatim. Its features are left off: `inline-comment` would cut
//! values at ` #`, which `ConfigParser` keeps, and `case-insensitive` would
//! fold section names too, which `ConfigParser` does not.
//!
//! What `ConfigParser` does beyond that is done here: keys are
//! case-insensitive (ASCII lower-cased), `[DEFAULT]` values are inherited by
//! every section, in the first line of a value a `;` after white space starts
//! a comment, blank lines inside a continued value are dropped, a value of
//! exactly `""` is empty, every section has a `__name__`, and `%(key)s` is
//! replaced by that key of the same section or `[DEFAULT]` (`%%` by `%`, up
//! to 10 levels and 1 MiB; other `%` forms are errors). Then come the legacy
//! defaults and normalisation, and the values are checked. `rust-ini` does
//! not locate keys, so a cheap scan of the text finds the line of a bad value.
//!
//! Where `rust-ini` cannot follow `ConfigParser` (on files nobody writes):
//! - section names are trimmed (`[ S ]` is `S`); `[]` is a section named "";
//! - text after a section's `]` is not ignored: a comment there is a syntax
//!   error, other text is read as an option;
//! - an indented option or section line that continues no value (after a
//!   section header or a comment line) is read as unindented, not rejected;
//! - a line without `=` or `:` is an error as in Python, but on the last line
//!   the error names the end of the file; `rem` lines are not comments;
//! - a line ending with `\` is joined with the next one;
//! - a continued value whose first line is empty loses that line (`a =` then
//!   `  x` reads `x`, Python `\nx`);
//! - a value starting with `;` is kept even when its line ends with white
//!   space (Python then reads an empty value);
//! - Unicode white space is trimmed too, a lone CR ends a line, and the file
//!   must be UTF-8.
//!
//! Unlike the legacy server, a section that does not exist is an error
//! rather than a silent fallback to the defaults, and a bad value is an
//! error naming the file, section and key.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use ini::{Ini, ParseOption};

use crate::cmdb::DEFAULT_MAX_CMDB_SIZE;
use crate::hw::{HwLimits, DEFAULT_MAX_HW_LINES, DEFAULT_MAX_HW_VALUE};

/// Default `MAXHWSIZE`: largest hardware description accepted, in bytes.
pub const DEFAULT_MAX_HW_SIZE: u64 = 4 << 20;
/// Default `MAXLOGSIZE`: largest uploaded `.log.gz` accepted, in bytes.
pub const DEFAULT_MAX_LOG_SIZE: u64 = 64 << 20;
/// Default `LOCKFILE` when the configuration file does not name one.
pub const DEFAULT_LOCK_FILE: &str = "/var/run/httpd/edeploy.lock";
/// The journal's file name in LOGDIR when `JOURNAL` is not set.
pub const DEFAULT_JOURNAL_NAME: &str = "edeploy-journal.jsonl";
/// Default `JOURNALSIZE`: the journal is rotated at this size, in bytes.
pub const DEFAULT_JOURNAL_SIZE: u64 = 64 << 20;

/// One key of the configuration file, as the reference documents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDoc {
    pub name: &'static str,
    /// The default, in Markdown (`code` in backquotes).
    pub default: &'static str,
    /// What the key does, in Markdown.
    pub meaning: &'static str,
}

/// The reference of the keys: the README's table and edeploy.conf(5) are
/// made from it (a test checks that the README's table is this one).
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        name: "CONFIGDIR",
        default: "`<dir of the CGI>/../config`",
        meaning: "`state`, `*.specs`, `*.configure`, `*.cmdb`",
    },
    KeyDoc {
        name: "HWDIR",
        default: "`CONFIGDIR`",
        meaning: "where `<sysname>.hw` is saved",
    },
    KeyDoc {
        name: "LOGDIR",
        default: "`CONFIGDIR`",
        meaning: "uploaded `*.log.gz`",
    },
    KeyDoc {
        name: "HEALTHDIR",
        default: "`<dir of the CGI>/../health`",
        meaning: "upload-health results",
    },
    KeyDoc {
        name: "LOCKFILE",
        default: "`/var/run/httpd/edeploy.lock`",
        meaning: "the lock serialising requests; requests waiting for it queue in the \
                  directory `LOCKFILE.queue` next to it, created by the packages (or by the \
                  first request that waits, where it may) (see \"Waiting requests are \
                  committed together\")",
    },
    KeyDoc {
        name: "USEPXEMNGR",
        default: "off",
        meaning: "`True` (any ConfigParser boolean) runs `pxemngr addsystem <sysname> <macs>` \
                  (no `--`: pxemngr's `addsystem` reads its arguments itself and would take it \
                  for the name)",
    },
    KeyDoc {
        name: "PXEMNGRURL",
        default: "—",
        meaning: "with USEPXEMNGR, appended to `/vars` as `PXEMNGR_URL=`",
    },
    KeyDoc {
        name: "METADATAURL",
        default: "—",
        meaning: "appended to `/vars` as `METADATA_URL=`",
    },
    KeyDoc {
        name: "MAXHWSIZE",
        default: "4 MiB",
        meaning: "largest hardware upload, bytes (`K`/`M`/`G` suffixes)",
    },
    KeyDoc {
        name: "MAXLOGSIZE",
        default: "64 MiB",
        meaning: "largest `.log.gz` upload",
    },
    KeyDoc {
        name: "MAXHWLINES",
        default: "20000",
        meaning: "most lines in a hardware description",
    },
    KeyDoc {
        name: "MAXHWVALUE",
        default: "4096",
        meaning: "longest value of a hardware line, bytes",
    },
    KeyDoc {
        name: "MAXCMDBSIZE",
        default: "16 MiB",
        meaning: "largest CMDB, bytes (`K`/`M`/`G`): a CMDB file larger than this, or a \
                  `generate()` model expanding to more, is refused naming the file \
                  (`edeploy check` warns of a file over the default). Each request holds \
                  the CMDB twice (read, rewritten), so 16 MiB keeps it under 64 MiB of \
                  RSS; raise it only with the memory to match",
    },
    KeyDoc {
        name: "JOURNAL",
        default: "`LOGDIR/edeploy-journal.jsonl`",
        meaning: "the decisions journal (see [The decisions \
                  journal](#the-decisions-journal)); an empty value turns it off",
    },
    KeyDoc {
        name: "JOURNALSIZE",
        default: "64 MiB",
        meaning: "size at which the journal is renamed `<JOURNAL>.1` (replacing the \
                  previous one) and a new one started, bytes (`K`/`M`/`G`)",
    },
];

/// Interpolation levels followed before giving up, as in `ConfigParser`.
const MAX_INTERPOLATION_DEPTH: usize = 10;
/// Bound on an interpolated value: ten levels could otherwise grow it
/// exponentially.
const MAX_VALUE_LEN: usize = 1 << 20;

/// `ConfigParser` has no quotes nor escapes, and continues indented lines.
const PARSE_OPTION: ParseOption = ParseOption {
    enabled_quote: false,
    enabled_escape: false,
    enabled_indented_mutiline_value: true,
    enabled_preserve_key_leading_whitespace: false,
};

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
    /// `LOCKFILE`: serialises the writers of CONFIGDIR (readers take no lock).
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
    /// `MAXHWLINES` and `MAXHWVALUE`: bounds on a hardware description.
    pub hw_limits: HwLimits,
    /// `MAXCMDBSIZE`: largest CMDB file read, and largest CMDB a
    /// `generate()` model may expand to, in bytes.
    pub max_cmdb_size: u64,
    /// `JOURNAL`: the decisions journal (default
    /// `LOGDIR/edeploy-journal.jsonl`; an empty value turns it off).
    pub journal: Option<PathBuf>,
    /// `JOURNALSIZE`: the journal's size at which it is rotated, in bytes.
    pub journal_size: u64,
}

impl Config {
    /// Reads `section` of the configuration file `path`.
    ///
    /// `script_dir` is the directory of the running program (symbolic links
    /// resolved), from which the legacy defaults `<script_dir>/../config`
    /// (CONFIGDIR) and `<script_dir>/../health` (HEALTHDIR) are derived.
    pub fn load(path: &Path, section: &str, script_dir: &Path) -> Result<Config, ConfigError> {
        let src = read_file(path)?;
        Parsed::new(path, &src)?.config(section, script_dir.as_os_str().as_bytes())
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
            hw_limits: HwLimits::default(),
            max_cmdb_size: DEFAULT_MAX_CMDB_SIZE,
            journal: Some(dir.join(DEFAULT_JOURNAL_NAME)),
            journal_size: DEFAULT_JOURNAL_SIZE,
        }
    }

    /// What the CGIs use without a configuration file, as the legacy
    /// scripts did: CONFIGDIR `<script_dir>/../config` (also HWDIR and
    /// LOGDIR), HEALTHDIR `<script_dir>/../health`.
    pub fn legacy_defaults(script_dir: &Path) -> Config {
        let mut cfg = Config::for_dir(&script_dir.join("../config"));
        cfg.health_dir = dir_path(script_dir.join("../health").as_os_str().as_bytes());
        cfg
    }
}

/// The example configuration shipped with the sources, used by the command
/// line tools when there is no configuration file.
pub const BUNDLED_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/legacy-config");

/// The names of the sections of the configuration file `path` that set
/// `key`, themselves or through `[DEFAULT]`, sorted (the status page shows
/// every section with a `CONFIGDIR`). Names that are not UTF-8 are given
/// lossily: [`Config::load`] then reports them as missing.
pub fn sections_setting(path: &Path, key: &str) -> Result<Vec<String>, ConfigError> {
    let src = read_file(path)?;
    let parsed = Parsed::new(path, &src)?;
    let key = key.to_ascii_lowercase();
    let in_defaults = parsed.defaults.contains_key(&key);
    Ok(parsed
        .sections
        .iter()
        .filter(|(_, options)| in_defaults || options.contains_key(&key))
        .map(|(name, _)| name.clone())
        .collect())
}

fn read_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        kind: ConfigErrorKind::Io(e.kind()),
        message: e.to_string(),
    })
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
    load_default_from(section, script_dir, fallback).map(|(cfg, _)| cfg)
}

/// [`load_default`], with the file read: `None` when `fallback` was used.
pub fn load_default_from(
    section: &str,
    script_dir: &Path,
    fallback: impl FnOnce() -> Config,
) -> Result<(Config, Option<PathBuf>), ConfigError> {
    let (path, explicit) = default_path();
    if explicit && path.as_os_str().is_empty() {
        return Err(ConfigError {
            file: PathBuf::from("$EDEPLOY_CONF"),
            line: None,
            kind: ConfigErrorKind::Io(io::ErrorKind::InvalidInput),
            message: "set but empty: name a configuration file, or unset it".into(),
        });
    }
    match Config::load(&path, section, script_dir) {
        Ok(cfg) => Ok((cfg, Some(path))),
        Err(e) if !explicit && e.kind == ConfigErrorKind::Io(io::ErrorKind::NotFound) => {
            Ok((fallback(), None))
        }
        Err(e) => Err(e),
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
    /// Text that is not an INI file (the message starts with the column),
    /// or an option before the first section.
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

/// Values by lower-cased key.
type Options = BTreeMap<String, String>;

/// A file as `ConfigParser` holds it: `[DEFAULT]` and the other sections by
/// exact name, with the text kept to locate errors.
struct Parsed<'a> {
    file: &'a Path,
    src: &'a str,
    defaults: Options,
    sections: BTreeMap<String, Options>,
}

impl<'a> Parsed<'a> {
    fn new(file: &'a Path, src: &'a [u8]) -> Result<Parsed<'a>, ConfigError> {
        let src = std::str::from_utf8(src).map_err(|e| {
            let at = line_col(src, e.valid_up_to());
            syntax_error(file, Some(at), "the file is not valid UTF-8")
        })?;
        let ini = Ini::load_from_str_opt(src, PARSE_OPTION).map_err(|e| {
            // rust-ini counts the column one past the offending character.
            syntax_error(file, Some((e.line, e.col.saturating_sub(1).max(1))), &e.msg)
        })?;
        let mut parsed = Parsed {
            file,
            src,
            defaults: Options::new(),
            sections: BTreeMap::new(),
        };
        for (name, properties) in ini.iter() {
            // rust-ini looks past the end of the line for the `]`, `=` or `:`
            // it expects: a name spanning lines means a line lacked one.
            if let Some(name) = name.filter(|name| name.contains('\n')) {
                return Err(syntax_error(file, find(src, name), "`[` without `]`"));
            }
            if let Some((key, _)) = properties.iter().find(|(key, _)| key.contains('\n')) {
                return Err(syntax_error(
                    file,
                    find(src, key),
                    "line without `=` or `:`",
                ));
            }
            let options = match name {
                None => match properties.iter().next() {
                    Some((key, _)) => {
                        let at = locate(src, None, key);
                        return Err(syntax_error(file, at, "option before the first [section]"));
                    }
                    None => continue,
                },
                Some("DEFAULT") => &mut parsed.defaults,
                Some(name) => parsed
                    .sections
                    .entry(name.to_string())
                    .or_insert_with(|| Options::from([("__name__".to_string(), name.to_string())])),
            };
            for (key, value) in properties {
                options.insert(key.to_ascii_lowercase(), stored_value(value));
            }
        }
        Ok(parsed)
    }

    /// The options of `section`, `None` for `[DEFAULT]` (which always exists).
    fn section(&self, section: &str) -> Result<Option<&Options>, ConfigError> {
        if section == "DEFAULT" {
            return Ok(None);
        }
        match self.sections.get(section) {
            Some(options) => Ok(Some(options)),
            None => Err(ConfigError {
                file: self.file.to_path_buf(),
                line: None,
                kind: ConfigErrorKind::MissingSection,
                message: format!("no section [{section}] in this file"),
            }),
        }
    }

    /// `ConfigParser.get(section, key)`: the interpolated value and the
    /// section it is set in, `None` when in neither `section` nor `[DEFAULT]`.
    fn get<'s>(
        &'s self,
        section: &'s str,
        key: &str,
    ) -> Result<Option<(String, &'s str)>, ConfigError> {
        let options = self.section(section)?;
        let lookup = |key: &str| match options.and_then(|o| o.get(key)) {
            Some(value) => Some((value, section)),
            None => self.defaults.get(key).map(|value| (value, "DEFAULT")),
        };
        let Some((raw, set_in)) = lookup(&key.to_ascii_lowercase()) else {
            return Ok(None);
        };
        let mut value = raw.clone();
        let mut depth = 0;
        while value.contains("%(") {
            if depth == MAX_INTERPOLATION_DEPTH {
                let problem =
                    format!("interpolation nests deeper than {MAX_INTERPOLATION_DEPTH} levels");
                return Err(self.value_error(set_in, key, problem));
            }
            value = substitute(&value, |name| lookup(name).map(|(v, _)| v.as_str()))
                .map_err(|problem| self.value_error(set_in, key, problem))?;
            depth += 1;
        }
        Ok(Some((value, set_in)))
    }

    /// An error about `key` of `section`, on its line when a scan finds it.
    fn value_error(&self, section: &str, key: &str, problem: String) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: locate(self.src, Some(section), key).map(|(line, _)| line),
            kind: ConfigErrorKind::Value,
            message: format!("[{section}] {key}: {problem}"),
        }
    }

    fn bad_value(&self, section: &str, key: &str, value: &str, expected: &str) -> ConfigError {
        self.value_error(section, key, format!("{value:?} is not {expected}"))
    }

    fn config(&self, section: &str, script_dir: &[u8]) -> Result<Config, ConfigError> {
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
            Some((v, _)) => dir_path(v.as_bytes()),
            None => dir_path(&script_relative("config")),
        };
        let dir_or_config = |key: &str| -> Result<PathBuf, ConfigError> {
            Ok(match get(key)? {
                Some((v, _)) => dir_path(v.as_bytes()),
                None => config_dir.clone(),
            })
        };
        let hw_dir = dir_or_config("HWDIR")?;
        let log_dir = dir_or_config("LOGDIR")?;
        let health_dir = match get("HEALTHDIR")? {
            Some((v, _)) => dir_path(v.as_bytes()),
            None => dir_path(&script_relative("health")),
        };
        let lock_file = match get("LOCKFILE")? {
            Some((v, set_in)) if v.is_empty() => {
                return Err(self.bad_value(set_in, "LOCKFILE", &v, "a file name"))
            }
            Some((v, _)) => PathBuf::from(v),
            None => PathBuf::from(DEFAULT_LOCK_FILE),
        };
        let use_pxemngr = match get("USEPXEMNGR")? {
            Some((v, set_in)) => parse_bool(v.as_bytes()).ok_or_else(|| {
                let expected = "a boolean (True/False, yes/no, on/off, 1/0)";
                self.bad_value(set_in, "USEPXEMNGR", &v, expected)
            })?,
            None => false,
        };
        let url = |key: &str| -> Result<Option<String>, ConfigError> {
            Ok(get(key)?.map(|(v, _)| v).filter(|v| !v.is_empty()))
        };
        let count = |key: &str, default: usize| -> Result<usize, ConfigError> {
            match get(key)? {
                Some((v, set_in)) => v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| self.bad_value(set_in, key, &v, "a positive whole number")),
                None => Ok(default),
            }
        };
        let size = |key: &str, default: u64| -> Result<u64, ConfigError> {
            match get(key)? {
                Some((v, set_in)) => parse_size(v.as_bytes()).ok_or_else(|| {
                    let expected = "a positive number of bytes, optionally followed by K, M or G";
                    self.bad_value(set_in, key, &v, expected)
                }),
                None => Ok(default),
            }
        };
        Ok(Config {
            config_dir,
            hw_dir,
            health_dir,
            lock_file,
            use_pxemngr,
            pxemngr_url: url("PXEMNGRURL")?,
            metadata_url: url("METADATAURL")?,
            max_hw_size: size("MAXHWSIZE", DEFAULT_MAX_HW_SIZE)?,
            max_log_size: size("MAXLOGSIZE", DEFAULT_MAX_LOG_SIZE)?,
            hw_limits: HwLimits {
                max_lines: count("MAXHWLINES", DEFAULT_MAX_HW_LINES)?,
                max_value: count("MAXHWVALUE", DEFAULT_MAX_HW_VALUE)?,
            },
            max_cmdb_size: size("MAXCMDBSIZE", DEFAULT_MAX_CMDB_SIZE)?,
            journal: match get("JOURNAL")? {
                Some((v, _)) if v.is_empty() => None,
                Some((v, _)) => Some(PathBuf::from(v)),
                None => Some(log_dir.join(DEFAULT_JOURNAL_NAME)),
            },
            journal_size: size("JOURNALSIZE", DEFAULT_JOURNAL_SIZE)?,
            log_dir,
        })
    }
}

fn syntax_error(file: &Path, at: Option<(usize, usize)>, what: &str) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: at.map(|(line, _)| line),
        kind: ConfigErrorKind::Syntax,
        message: match at {
            Some((_, col)) => format!("column {col}: {what}"),
            None => what.to_string(),
        },
    }
}

/// Python 2's `str.isspace()` for one character.
fn is_py_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// What `ConfigParser` keeps of a value `rust-ini` read (trimmed lines
/// joined by `\n`): a `;` after white space in the first line starts a
/// comment, `""` alone is empty, blank continuation lines do not count.
fn stored_value(raw: &str) -> String {
    let mut lines = raw.split('\n');
    let first = lines.next().unwrap_or_default();
    let first = match first.split_once(';') {
        Some((before, _)) if before.ends_with(is_py_space) => before.trim_end_matches(is_py_space),
        _ => first,
    };
    let mut value = if first == "\"\"" { "" } else { first }.to_string();
    for line in lines.filter(|line| !line.is_empty()) {
        value.push('\n');
        value.push_str(line);
    }
    value
}

/// The 1-based line and column of byte `offset` of `src`.
fn line_col(src: &[u8], offset: usize) -> (usize, usize) {
    let before = src.get(..offset).unwrap_or(src);
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    (line, before.len() - line_start + 1)
}

/// Where `text` first occurs in `src` (for text spanning lines: unique).
fn find(src: &str, text: &str) -> Option<(usize, usize)> {
    src.find(text)
        .map(|offset| line_col(src.as_bytes(), offset))
}

/// The line and column of the last `key = ...` or `key: ...` line (key in
/// any case) of `section` (`None`: before the first section).
fn locate(src: &str, section: Option<&str>, key: &str) -> Option<(usize, usize)> {
    let mut current = None;
    let mut found = None;
    for (index, line) in src.lines().enumerate() {
        let text = line.trim_start_matches([' ', '\t']);
        if let Some(header) = text.strip_prefix('[') {
            current = Some(
                header
                    .split_once(']')
                    .map_or(header, |(name, _)| name)
                    .trim(),
            );
        } else if current == section
            && text
                .get(..key.len())
                .is_some_and(|k| k.eq_ignore_ascii_case(key))
            && text
                .get(key.len()..)
                .is_some_and(|rest| rest.trim_start().starts_with(['=', ':']))
        {
            found = Some((index + 1, line.len() - text.len() + 1));
        }
    }
    found
}

/// One round of `value % section_and_defaults` with lower-cased keys.
fn substitute<'v>(value: &str, lookup: impl Fn(&str) -> Option<&'v str>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some((before, after)) = rest.split_once('%') {
        out.push_str(before);
        if let Some(tail) = after.strip_prefix('%') {
            out.push('%');
            rest = tail;
        } else if after.starts_with('(') {
            let (name, tail) = interpolation_key(after)
                .ok_or_else(|| "bad interpolation: `%(` without matching `)s`".to_string())?;
            let name = name.to_ascii_lowercase();
            let found = lookup(&name).ok_or_else(|| {
                format!("bad interpolation: no option `{name}` in this section or [DEFAULT]")
            })?;
            if out.len() + found.len() > MAX_VALUE_LEN {
                return Err(format!(
                    "interpolation makes the value longer than {MAX_VALUE_LEN} bytes"
                ));
            }
            out.push_str(found);
            rest = tail;
        } else {
            return Err("bad interpolation: `%` must be followed by `%` or `(key)s`".to_string());
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// After `%`, the text `(key)s`: returns the key and what follows. Parentheses
/// nest inside the key, as in Python's `%` operator.
fn interpolation_key(after_percent: &str) -> Option<(&str, &str)> {
    let mut depth = 0usize;
    for (i, c) in after_percent.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    let key = after_percent.get(1..i)?;
                    let tail = after_percent.get(i + 1..)?;
                    return Some((key, tail.strip_prefix('s')?));
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

    /// The README's reference table is [`KEYS`], row for row.
    #[test]
    fn readme_table_is_the_key_table() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let section = readme
            .split("\n## edeploy.conf reference\n")
            .nth(1)
            .expect("an edeploy.conf reference section");
        let rows: Vec<&str> = section
            .lines()
            .skip_while(|l| !l.starts_with("| key |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .collect();
        let expected: Vec<String> = KEYS
            .iter()
            .map(|k| format!("| `{}` | {} | {} |", k.name, k.default, k.meaning))
            .collect();
        assert_eq!(rows, expected);
    }

    /// Every documented key is one the parser reads.
    #[test]
    fn key_table_names_the_keys_read() {
        let src = include_str!("config.rs");
        let code = src.split("\n#[cfg(test)]").next().unwrap();
        for key in KEYS {
            assert!(
                code.contains(&format!("(\"{}\"", key.name)),
                "{} is not read",
                key.name
            );
        }
    }

    fn parse(src: &str) -> Parsed<'_> {
        Parsed::new(Path::new("/etc/edeploy.conf"), src.as_bytes()).unwrap()
    }

    fn parse_err(src: &[u8]) -> ConfigError {
        match Parsed::new(Path::new("/x.conf"), src) {
            Ok(_) => panic!("{:?} parsed", String::from_utf8_lossy(src)),
            Err(e) => e,
        }
    }

    fn get(ini: &Parsed, section: &str, key: &str) -> Option<String> {
        ini.get(section, key).unwrap().map(|(v, _)| v)
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
        assert!(ini.get("Server", "CONFIGDIR").is_err());
    }

    #[test]
    fn separators_comments_and_continuations() {
        let ini = parse(
            "# comment\n; comment\n[S]\n\
             a: x ; comment\n\
             b = x;y ;z\n\
             c = x #y\n\
             d = \"\"\n\
             e =\n\
             f = one\n  two\n\n\t three\n   \n  ;four\n\
             g = ;x\n\
             h =   spaced   \n\
             [S]\nI = merged\n",
        );
        assert_eq!(get(&ini, "S", "a").as_deref(), Some("x"));
        assert_eq!(get(&ini, "S", "b").as_deref(), Some("x;y ;z"));
        assert_eq!(get(&ini, "S", "c").as_deref(), Some("x #y"));
        assert_eq!(get(&ini, "S", "d").as_deref(), Some(""));
        assert_eq!(get(&ini, "S", "e").as_deref(), Some(""));
        assert_eq!(
            get(&ini, "S", "f").as_deref(),
            Some("one\ntwo\nthree\n;four")
        );
        assert_eq!(get(&ini, "S", "g").as_deref(), Some(";x"));
        assert_eq!(get(&ini, "S", "h").as_deref(), Some("spaced"));
        assert_eq!(get(&ini, "S", "i").as_deref(), Some("merged"));
        assert_eq!(get(&ini, "S", "__name__").as_deref(), Some("S"));
    }

    #[test]
    fn defaults_and_interpolation() {
        let ini = parse(
            "[DEFAULT]\nbase = /srv\nlock = %(base)s/lock\n\
             [S]\nconfigdir = %(BASE)s/config\npct = 100%% %(base)s\nloop = %(loop)s\n\
             bad = %(nope)s\nodd = %(base)s %d\n",
        );
        assert_eq!(get(&ini, "S", "configdir").as_deref(), Some("/srv/config"));
        assert_eq!(get(&ini, "S", "lock").as_deref(), Some("/srv/lock"));
        assert_eq!(get(&ini, "S", "pct").as_deref(), Some("100% /srv"));
        assert_eq!(get(&ini, "DEFAULT", "base").as_deref(), Some("/srv"));
        for (key, line) in [("loop", 7), ("bad", 8), ("odd", 9)] {
            let err = ini.get("S", key).unwrap_err();
            assert_eq!((err.kind, err.line), (ConfigErrorKind::Value, Some(line)));
            assert!(err.message.starts_with(&format!("[S] {key}: ")), "{err}");
        }
    }

    #[test]
    fn syntax_errors_name_the_line_and_column() {
        let err = parse_err(b"# c\nkey = 1\n[S]\n");
        assert_eq!((err.kind, err.line), (ConfigErrorKind::Syntax, Some(2)));
        assert_eq!(
            err.to_string(),
            "/x.conf:2: column 1: option before the first [section]"
        );
        let err = parse_err(b"[S]\na = 1\nnovalue\nb = 2\n");
        assert_eq!(
            err.to_string(),
            "/x.conf:3: column 1: line without `=` or `:`"
        );
        let err = parse_err(b"[S]\na = 1\n=x\n");
        assert_eq!((err.kind, err.line), (ConfigErrorKind::Syntax, Some(3)));
        assert!(err.message.starts_with("column 1: "), "{err}");
        let err = parse_err(b"[S\na = 1\n[T]\n");
        assert_eq!(err.to_string(), "/x.conf:1: column 2: `[` without `]`");
        let err = parse_err(b"[S]\na = /\xff\n");
        assert_eq!(
            err.to_string(),
            "/x.conf:2: column 6: the file is not valid UTF-8"
        );
    }

    /// What we read where `rust-ini` cannot follow `ConfigParser` (the list
    /// in the module documentation).
    #[test]
    fn deviations_from_configparser() {
        let ini = parse("[ S ]\na = 1\n[]\n");
        assert_eq!(get(&ini, "S", "a").as_deref(), Some("1"));
        assert!(ini.get(" S ", "a").is_err());
        assert!(ini.get("", "a").unwrap().is_none());

        let err = parse_err(b"[S] ; comment\n");
        assert_eq!((err.kind, err.line), (ConfigErrorKind::Syntax, Some(1)));
        assert!(err.message.starts_with("column 5: "), "{err}");
        assert_eq!(get(&parse("[S]x = 1\n"), "S", "x").as_deref(), Some("1"));
        assert_eq!(parse_err(b"[S]x\nb = 2\n").line, Some(1));

        let ini = parse("  [S]\n  a = 1\nb = 2\n# c\n  c = 3\n");
        for (key, want) in [("a", "1"), ("b", "2"), ("c", "3")] {
            assert_eq!(get(&ini, "S", key).as_deref(), Some(want));
        }

        let err = parse_err(b"[S]\na = 1\nnovalue\n");
        assert_eq!((err.kind, err.line), (ConfigErrorKind::Syntax, Some(4)));
        assert_eq!(parse_err(b"rem comment\n[S]\na = 1\n").line, Some(1));
        assert_eq!(
            get(&parse("[S]\nrem = 1\n"), "S", "rem").as_deref(),
            Some("1")
        );

        let ini = parse("[S]\na = x\\\nb = y\nc =\n  z\nd = ;x \ne = x\u{a0}\nf = 1\rg = 2\n");
        assert_eq!(get(&ini, "S", "a").as_deref(), Some("xb = y"));
        assert_eq!(get(&ini, "S", "b"), None);
        assert_eq!(get(&ini, "S", "c").as_deref(), Some("z"));
        assert_eq!(get(&ini, "S", "d").as_deref(), Some(";x"));
        assert_eq!(get(&ini, "S", "e").as_deref(), Some("x"));
        assert_eq!(get(&ini, "S", "f").as_deref(), Some("1"));
        assert_eq!(get(&ini, "S", "g").as_deref(), Some("2"));
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

    /// Realistic files (and the odd ones both read alike) read as Python
    /// reads them; see `deviations_from_configparser` for the others.
    #[test]
    fn reads_like_python_configparser() {
        if std::env::var_os("EDEPLOY_SKIP_ORACLE").is_some_and(|v| v == "1") {
            eprintln!("EDEPLOY_SKIP_ORACLE=1: not comparing with Python's ConfigParser");
            return;
        }
        let texts = [
            "[S]\na = 1\n",
            "# c\n; c\n\n[S]\n# c\nRem: 4\n; c\n",
            "[S]\na: x ; c\nb = x;y ;z\nc = x #y\nd = \"\"\ne =\nf = ;x\ng = ; x\nh=a\t;b\n",
            "[S]\nf = one\n  two\n\n\t three  \r\n  # four\nA = upper\n",
            "[S]\na = 1\r\nb = x \r\n[T]\na = 2",
            "[DEFAULT]\nbase = /srv\nlock = %(base)s/lock\n[S]\nconfigdir = %(BASE)s/c\n\
             pct = 100%% %(base)s\nloop = %(loop)s\nbad = %(nope)s\nname = %(__name__)s\n\
             pp = %%(base)s\n",
            "[S]\na = x\n[DEFAULT]\na = y\nb = z\n[S]\nb = w\n",
            "[S]\nnovalue\nb = 2\n",
            "a = 1\n[S]\n",
            "[S]\n:a = 1\n",
            "[S]\na = 1\n=x\n",
            "[S\na = 1\n[T]\n",
            "[S]\n  # c\na = 1\n",
            "[S]\nkey with space = v\nk=v=w\nk2 : v:w\n",
            "[S]\na\t=\t1\t\nb=\nc:'q' \"r\" \\n\n",
            "[S]\r\nA = 1\r\n\r\n[T]\r\nb = %(a)s\r\n[DEFAULT]\r\na = 2\r\n",
            "[S]\nA = 1\na = 2\n[T]\nb = 3\n[S]\nB = 4\n",
            "[DEFAULT]\nk = v\n",
            "[S]\nk = caf\u{e9} \u{2013} %(a)s\na = \u{e9}t\u{e9}\n",
            // The example of the eDeploy README.
            "[SERVER]\n\nHEALTHDIR   = /var/lib/edeploy/health/\n\
             CONFIGDIR   = /var/lib/edeploy/config/\n\
             LOGDIR      = /var/lib/edeploy/config/logs\n\
             HWDIR       = /var/lib/edeploy/hw/\n\
             LOCKFILE    = /var/lock/apache2/edeploy.lock\n\
             USEPXEMNGR  = True\n\
             PXEMNGRURL  = http://192.168.122.1:8000/\n\
             METADATAURL = http://192.168.122.1/\n",
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
            "k",
            "rem",
            "configdir",
            "lock",
            "pct",
            "loop",
            "bad",
            "name",
            "pp",
            "key with space",
            "k2",
            "__name__",
            "healthdir",
            "logdir",
            "hwdir",
            "lockfile",
            "usepxemngr",
            "pxemngrurl",
            "metadataurl",
        ];
        let sections = ["S", "T", "SERVER", "DEFAULT", "missing"];
        let queries: Vec<(&str, &str)> = sections
            .iter()
            .flat_map(|s| keys.iter().map(move |k| (*s, *k)))
            .collect();
        for text in texts {
            let python = python_reads(text, &queries);
            let ours = Parsed::new(Path::new("c.ini"), text.as_bytes());
            match (python, ours) {
                (Err(line), Err(e)) => assert_eq!(e.line, Some(line), "{text:?}"),
                (Ok(answers), Ok(ini)) => {
                    for ((section, key), answer) in queries.iter().zip(&answers) {
                        let mine = match ini.get(section, key) {
                            Ok(Some((v, _))) => format!("V {}", hex(v.as_bytes())),
                            Ok(None) => "NOOPT".to_string(),
                            Err(e) if e.kind == ConfigErrorKind::MissingSection => {
                                "NOSECT".to_string()
                            }
                            Err(_) => "ERR".to_string(),
                        };
                        assert_eq!(&mine, answer, "{text:?} [{section}] {key}");
                    }
                }
                (python, ours) => {
                    panic!("{text:?}: python {python:?}, ours {:?}", ours.map(|_| ()))
                }
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
                hw_limits: HwLimits {
                    max_lines: 20_000,
                    max_value: 4096,
                },
                max_cmdb_size: 16 * 1024 * 1024,
                journal: Some("/usr/lib/config/edeploy-journal.jsonl".into()),
                journal_size: 64 * 1024 * 1024,
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
             MAXHWLINES  = 500\n\
             MAXHWVALUE  = 256\n\
             MAXCMDBSIZE = 2G\n\
             JOURNAL     = /var/log/edeploy/journal\n\
             JOURNALSIZE = 10M\n\
             [OTHER]\nUSEPXEMNGR = off\nMETADATAURL =\nJOURNAL =\n",
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
        assert_eq!(
            (cfg.hw_limits.max_lines, cfg.hw_limits.max_value),
            (500, 256)
        );
        assert_eq!(cfg.max_cmdb_size, 2 << 30);
        assert_eq!(
            cfg.journal.as_deref(),
            Some(Path::new("/var/log/edeploy/journal"))
        );
        assert_eq!(cfg.journal_size, 10 << 20);

        let other = Config::load(&path, "OTHER", Path::new("/cgi")).unwrap();
        assert_eq!(other.journal, None);
        assert!(!other.use_pxemngr);
        assert_eq!(other.metadata_url, None);
        assert_eq!(other.config_dir.as_os_str(), "/config/");
    }

    #[test]
    fn load_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write_conf(
            tmp.path(),
            "[OTHER]\nMAXHWSIZE = 1\n[SERVER]\nMaxHwSize = 4 MB\nUSEPXEMNGR = maybe\n",
        );
        let err = Config::load(&path, "SERVER", Path::new("/cgi")).unwrap_err();
        assert_eq!((err.kind, err.line), (ConfigErrorKind::Value, Some(5)));
        assert!(err.message.starts_with("[SERVER] USEPXEMNGR: "), "{err}");

        let path = write_conf(
            tmp.path(),
            "[OTHER]\nMAXHWSIZE = 1\n[SERVER]\nMaxHwSize = lots\n",
        );
        let err = Config::load(&path, "SERVER", Path::new("/cgi")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:4: [SERVER] MAXHWSIZE: \"lots\" is not a positive number of bytes, \
                 optionally followed by K, M or G",
                path.display()
            )
        );

        let path = write_conf(tmp.path(), "[SERVER]\nMAXHWLINES = 0\n");
        let err = Config::load(&path, "SERVER", Path::new("/cgi")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2: [SERVER] MAXHWLINES: \"0\" is not a positive whole number",
                path.display()
            )
        );

        let path = write_conf(tmp.path(), "[DEFAULT]\n\nLOCKFILE =\n[SERVER]\n");
        let err = Config::load(&path, "SERVER", Path::new("/cgi")).unwrap_err();
        assert_eq!((err.kind, err.line), (ConfigErrorKind::Value, Some(3)));
        assert!(err.message.starts_with("[DEFAULT] LOCKFILE: "), "{err}");

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
    fn interpolation_is_bounded() {
        let refs = |key: &str| format!("%({key})s").repeat(64);
        let src = format!(
            "[S]\na = {}\nb = {}\nc = {}\nd = {}\ne = 0123456789\n",
            refs("b"),
            refs("c"),
            refs("d"),
            refs("e")
        );
        let err = parse(&src).get("S", "a").unwrap_err();
        assert_eq!((err.kind, err.line), (ConfigErrorKind::Value, Some(2)));
        assert!(err.message.contains("longer than"), "{err}");
        assert_eq!(
            parse(&src).get("S", "c").unwrap().unwrap().0.len(),
            64 * 64 * 10
        );
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
        std::fs::write(&path, "[SERVER]\nbad line\nx = 1\n").unwrap();
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

//! The CMDB: a profile's pool of per-machine settings (addresses, names).
//!
//! A `<profile>.cmdb` file is a list of dicts, or a `generate({...})` model
//! that expands to one. When a machine matches a profile, one entry is chosen
//! for it, merged with its variables, marked `'used': 1` and written back; a
//! machine that comes back finds its own entry again because the entry holds
//! the variables it matched with.
//!
//! Large CMDBs (tens of thousands of entries) are handled one entry at a time:
//! each entry is printed as soon as it is parsed and only the candidates are
//! kept, so memory stays close to the size of the file. Most entries are flat
//! dicts of plain strings and ints: those are printed straight from the
//! source text, without building a `Dict`, unless they may be chosen.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

mod layout;
mod pool;

pub use layout::Layout;
pub use pool::Pool;

use crate::generate::{self, GenerateError};
use crate::literal::Dict;
use crate::literal::{self, ParseError, Streamed, Value};

/// The result of choosing an entry for a machine.
#[derive(Debug)]
pub struct Selection {
    /// The machine's variables merged with the chosen entry (`used` set).
    pub vars: Dict,
    /// Index of the chosen entry in the (expanded) CMDB.
    pub index: usize,
    /// The CMDB file's new text.
    pub contents: Vec<u8>,
    /// The file held a `generate()` model to keep as `<name>.orig`.
    pub backup_original: bool,
}

#[derive(Debug, Clone)]
pub enum CmdbError {
    Parse(ParseError),
    Generate {
        file: PathBuf,
        source: GenerateError,
    },
    /// An entry that is not a dict.
    NotADict {
        file: PathBuf,
        index: usize,
    },
    /// No entry left for this machine (`forced`: `$$` variables were used).
    Exhausted {
        file: PathBuf,
        forced: bool,
    },
}

impl CmdbError {
    /// The legacy server's message for an exhausted CMDB, kept verbatim
    /// because operators grep their logs for it.
    pub fn legacy_message(&self) -> Option<&'static str> {
        match self {
            CmdbError::Exhausted { forced: true, .. } => {
                Some("No entry matched in the CMDB, aborting.")
            }
            CmdbError::Exhausted { forced: false, .. } => {
                Some("No more entry in the CMDB, aborting.")
            }
            _ => None,
        }
    }
}

impl fmt::Display for CmdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdbError::Parse(e) => e.fmt(f),
            CmdbError::Generate { file, source } => write!(f, "{}: {}", file.display(), source),
            CmdbError::NotADict { file, index } => {
                write!(f, "{}: entry {} is not a dict", file.display(), index)
            }
            CmdbError::Exhausted { .. } => f.write_str(self.legacy_message().unwrap_or_default()),
        }
    }
}

impl std::error::Error for CmdbError {}

/// Python's `is_included(pref, entry)`: every key of `pref` is in `entry`
/// with an equal value.
pub fn is_included(pref: &Dict, entry: &Dict) -> bool {
    pref.iter()
        .all(|(k, v)| entry.get(k).is_some_and(|w| w == v))
}

/// Chooses the entry for a machine and returns the CMDB's new text.
///
/// `vars` are the machine's matched variables; `forced` the `$$` ones. The
/// first entry that includes the preference (`forced`, or all of `vars` when
/// there are none) wins; failing that, without `$$` variables, the first entry
/// not yet `used`. An empty CMDB is no CMDB at all (`None`), as for the
/// legacy server.
pub fn select(
    file: &Path,
    src: &[u8],
    vars: &Dict,
    forced: &Dict,
) -> Result<Option<Selection>, CmdbError> {
    select_within(file, src, vars, forced, DEFAULT_MAX_CMDB_SIZE)
}

/// Default `MAXCMDBSIZE`: largest CMDB file read, and largest CMDB a
/// `generate()` model may expand to, in bytes. The expansion and the next request's copy of it are both held
/// in memory (the file is read whole, and its new text is built whole before
/// it replaces it), and entries grow by about half once used: 16 MiB keeps
/// every request under 64 MiB of RSS, and holds a /16 of addresses.
pub const DEFAULT_MAX_CMDB_SIZE: u64 = 16 << 20;

/// [`select`], a `generate()` model expanding to at most `max_generated`
/// bytes of text (`MAXCMDBSIZE`).
pub fn select_within(
    file: &Path,
    src: &[u8],
    vars: &Dict,
    forced: &Dict,
    max_generated: u64,
) -> Result<Option<Selection>, CmdbError> {
    let pref = preference(vars, forced);
    let Some(mut pool) = Pool::read(file, src, &[pref], max_generated)? else {
        return Ok(None);
    };
    let (index, vars) = pool.pick(0, vars, forced)?;
    let backup_original = pool.backup_original();
    Ok(Some(Selection {
        vars,
        index,
        contents: pool.into_contents(),
        backup_original,
    }))
}

/// What an entry must include to be chosen: the `$$` variables if any,
/// else all the machine's variables.
pub fn preference<'a>(vars: &'a Dict, forced: &'a Dict) -> &'a Dict {
    if forced.is_empty() {
        vars
    } else {
        forced
    }
}

/// A CMDB held in memory, to choose entries for many machines in a row
/// without writing anything: the replay of `edeploy plan`. Unlike
/// [`Pool`], which keeps only the entries a known batch may choose and
/// prints the new text, it indexes every entry for choices not known in
/// advance. Each choice is
/// the one [`select_within`] makes on the file that the choices before it
/// would have left (a test checks they agree).
///
/// A machine's variables are looked up through an index of the entries by
/// item, and the first unused entry is remembered (entries are only ever
/// taken), so that a choice costs little even in a CMDB of 65,536 entries.
#[derive(Debug, Clone)]
pub struct Indexed {
    file: PathBuf,
    entries: Vec<Dict>,
    /// The entries holding each item of a text key, in order (or more:
    /// an entry may have changed the value since): an entry including a
    /// machine's variables holds each of them.
    by_item: HashMap<(Vec<u8>, Key), Vec<usize>>,
    /// No entry before it is unused.
    first_free: usize,
}

/// What the index knows of a value: values equal in Python have the same
/// `Key` (text by its bytes, numbers by their integer value when they have
/// one); other values are not indexed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Text(Vec<u8>),
    Integer(i128),
    Float(u64),
}

fn key_of(value: &Value) -> Option<Key> {
    Some(match value {
        Value::Str(text) => Key::Text(text.clone()),
        Value::Unicode(text) => Key::Text(text.as_bytes().to_vec()),
        Value::Int(n) => Key::Integer(i128::from(*n)),
        Value::Long(n) => Key::Integer(*n),
        Value::Bool(b) => Key::Integer(i128::from(*b)),
        // Saturating: huge floats share a key, which only costs a check.
        Value::Float(f) if f.fract() == 0.0 => Key::Integer(*f as i128),
        Value::Float(f) => Key::Float(f.to_bits()),
        _ => return None,
    })
}

/// An item's index key: a text key and an indexed value.
fn item_key(key: &Value, value: &Value) -> Option<(Vec<u8>, Key)> {
    let key = match key {
        Value::Str(text) => text.clone(),
        Value::Unicode(text) => text.as_bytes().to_vec(),
        _ => return None,
    };
    Some((key, key_of(value)?))
}

impl Indexed {
    /// Reads a CMDB file's text as [`select_within`] does: a list of dicts,
    /// or a `generate()` model expanding to at most `max_generated` bytes of
    /// text. `None` for an empty CMDB, which is no CMDB at all.
    pub fn parse(
        file: &Path,
        src: &[u8],
        max_generated: u64,
    ) -> Result<Option<Indexed>, CmdbError> {
        let mut entries = Vec::new();
        let mut not_a_dict = None;
        let mut each = |value: Value| match value {
            Value::Dict(entry) => {
                entries.push(entry);
                Ok(())
            }
            _ => {
                let index = entries.len();
                not_a_dict = Some(index);
                Err(ParseError {
                    file: file.to_path_buf(),
                    line: 0,
                    column: 0,
                    message: format!("entry {index} is not a dict"),
                })
            }
        };
        let streamed = literal::parse_list_streaming(file, src, &mut each);
        if let Some(index) = not_a_dict {
            return Err(CmdbError::NotADict {
                file: file.to_path_buf(),
                index,
            });
        }
        if let Streamed::Generate(model) = streamed.map_err(CmdbError::Parse)? {
            let generated = generate::generate(&model).map_err(|source| CmdbError::Generate {
                file: file.to_path_buf(),
                source,
            })?;
            // The size of the text `select_within` prints as it expands:
            // `[`, the entries separated by `,\n `, then `]\n`.
            let mut size: u64 = 1;
            let mut text = Vec::new();
            for (index, value) in generated.enumerate() {
                text.clear();
                literal::format_at(&mut text, &value, 1, 1);
                let separator = if index > 0 { 3 } else { 0 };
                size = size.saturating_add(text.len() as u64 + separator);
                if size.saturating_add(2) > max_generated {
                    return Err(CmdbError::Generate {
                        file: file.to_path_buf(),
                        source: GenerateError::TooLarge {
                            limit: max_generated,
                        },
                    });
                }
                match value {
                    Value::Dict(entry) => entries.push(entry),
                    _ => {
                        return Err(CmdbError::NotADict {
                            file: file.to_path_buf(),
                            index,
                        })
                    }
                }
            }
        }
        let mut by_item: HashMap<(Vec<u8>, Key), Vec<usize>> = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            for item in entry.iter().filter_map(|(k, v)| item_key(k, v)) {
                by_item.entry(item).or_default().push(index);
            }
        }
        Ok((!entries.is_empty()).then(|| Indexed {
            file: file.to_path_buf(),
            entries,
            by_item,
            first_free: 0,
        }))
    }

    /// The first entry including `pref`.
    fn including(&self, pref: &Dict) -> Option<usize> {
        let indexed = pref.iter().filter_map(|(k, v)| item_key(k, v));
        let shortest = indexed
            .map(|item| self.by_item.get(&item).map_or(&[][..], Vec::as_slice))
            .min_by_key(|entries| entries.len());
        // No item the index knows: every entry is looked at.
        let Some(candidates) = shortest else {
            return self.entries.iter().position(|e| is_included(pref, e));
        };
        candidates
            .iter()
            .copied()
            .find(|&i| self.entries.get(i).is_some_and(|e| is_included(pref, e)))
    }

    /// The entry the server would give a machine with these variables
    /// (`forced`: its `$$` ones), without taking it.
    pub fn choose(&self, vars: &Dict, forced: &Dict) -> Result<usize, CmdbError> {
        let pref = if forced.is_empty() { vars } else { forced };
        let unused = || {
            let mut free = self.entries.iter().skip(self.first_free);
            let next = free.position(|e| !is_used(e)).map(|i| self.first_free + i);
            next.filter(|_| forced.is_empty())
        };
        self.including(pref)
            .or_else(unused)
            .ok_or_else(|| CmdbError::Exhausted {
                file: self.file.clone(),
                forced: !forced.is_empty(),
            })
    }

    /// Gives entry `index` to a machine with variables `vars`, as the
    /// server records it; returns the machine's variables merged with it.
    pub fn take(&mut self, index: usize, vars: &Dict) -> Option<Dict> {
        let entry = self.entries.get_mut(index)?;
        entry.update(vars);
        entry.insert(Value::str("used"), Value::Int(1));
        for item in entry.iter().filter_map(|(k, v)| item_key(k, v)) {
            let holding = self.by_item.entry(item).or_default();
            if let Err(at) = holding.binary_search(&index) {
                holding.insert(at, index);
            }
        }
        let merged = entry.clone();
        while self.entries.get(self.first_free).is_some_and(is_used) {
            self.first_free += 1;
        }
        Some(merged)
    }

    pub fn entry(&self, index: usize) -> Option<&Dict> {
        self.entries.get(index)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true: an empty CMDB is no pool.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries no machine was given yet (without a `used` key).
    pub fn free(&self) -> usize {
        self.entries.iter().filter(|e| !is_used(e)).count()
    }
}

/// Whether a machine was given this entry: the legacy test is the presence
/// of the key, whatever its value.
pub fn is_used(entry: &Dict) -> bool {
    entry.get_str("used").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::literal::{FlatDict, ListSink};

    fn dict(pairs: &[(&str, &str)]) -> Dict {
        pairs
            .iter()
            .map(|(k, v)| (Value::str(k), Value::str(v)))
            .collect()
    }

    fn select_str(src: &str, vars: &Dict, forced: &Dict) -> Result<Selection, CmdbError> {
        let selection = select(Path::new("/cfg/p.cmdb"), src.as_bytes(), vars, forced)?;
        Ok(selection.expect("a CMDB with entries"))
    }

    #[test]
    fn an_empty_cmdb_is_no_cmdb() {
        let vars = dict(&[("eth", "eth0")]);
        let none = select(Path::new("/cfg/p.cmdb"), b"[\n\n]", &vars, &Dict::new()).unwrap();
        assert!(none.is_none());
    }

    const POOL: &str = "[{'ip': '10.0.0.1', 'used': 1}, {'ip': '10.0.0.2'}, {'ip': '10.0.0.3'}]";

    #[test]
    fn first_unused_entry_is_merged_and_marked() {
        let vars = dict(&[("eth", "eth0")]);
        let s = select_str(POOL, &vars, &Dict::new()).unwrap();
        assert_eq!(s.index, 1);
        assert!(!s.backup_original);
        assert_eq!(s.vars.get_str("used"), Some(&Value::Int(1)));
        let mut vars = s.vars.clone();
        vars.insert(Value::str("used"), Value::str(""));
        assert_eq!(
            vars,
            dict(&[("ip", "10.0.0.2"), ("eth", "eth0"), ("used", "")])
        );
        assert_eq!(
            String::from_utf8(s.contents).unwrap(),
            "[{'ip': '10.0.0.1', 'used': 1},\n {'eth': 'eth0', 'ip': '10.0.0.2', 'used': 1},\n {'ip': '10.0.0.3'}]\n"
        );
    }

    #[test]
    fn a_returning_machine_gets_its_entry_back() {
        let src =
            "[{'ip': '1', 'mac': 'a', 'used': 1}, {'ip': '2', 'mac': 'b', 'used': 1}, {'ip': '3'}]";
        let s = select_str(src, &dict(&[("mac", "b")]), &Dict::new()).unwrap();
        assert_eq!(s.index, 1);
        assert_eq!(s.vars.get_str("ip"), Some(&Value::str("2")));
    }

    #[test]
    fn forced_variables_only_match_their_entry() {
        let src = "[{'tag': 'T1', 'ip': '1'}, {'tag': 'T2', 'ip': '2'}]";
        let vars = dict(&[("tag", "T2"), ("eth", "eth1")]);
        let s = select_str(src, &vars, &dict(&[("tag", "T2")])).unwrap();
        assert_eq!(s.index, 1);
        assert_eq!(s.vars.get_str("eth"), Some(&Value::str("eth1")));
        let e = select_str(src, &vars, &dict(&[("tag", "T3")])).unwrap_err();
        assert_eq!(e.to_string(), "No entry matched in the CMDB, aborting.");
    }

    #[test]
    fn a_chosen_entry_that_shrinks_can_put_the_list_on_one_line() {
        // 'used' was a long text: the new entry, and the list, are short.
        let src = format!("[{{}}, {{'k': 'v', 'used': '{}'}}]", "x".repeat(70));
        let s = select_str(&src, &dict(&[("k", "v")]), &Dict::new()).unwrap();
        assert_eq!(s.index, 1);
        assert_eq!(
            String::from_utf8(s.contents).unwrap(),
            "[{}, {'k': 'v', 'used': 1}]\n"
        );
    }

    #[test]
    fn exhausted_pool_gives_the_legacy_message() {
        let src = "[{'ip': '1', 'used': 1}]";
        let e = select_str(src, &dict(&[("eth", "eth0")]), &Dict::new()).unwrap_err();
        assert_eq!(e.to_string(), "No more entry in the CMDB, aborting.");
    }

    /// MAXCMDBSIZE bounds the expansion as pprint prints it (`]\n`
    /// included): a model that expands to exactly the limit is expanded,
    /// one byte more is refused, naming the file and the limit.
    #[test]
    fn generated_size_is_bounded() {
        let src = "generate({'ip': '10.0.0.1-200', 'hostname': 'host001-200'})";
        let model = match literal::parse(Path::new("m"), src.as_bytes()) {
            Ok(literal::Document::Generate(m)) => m,
            other => panic!("{other:?}"),
        };
        let expanded =
            literal::pformat(&Value::List(generate::generate(&model).unwrap().collect()));
        let size = expanded.len() as u64;
        let vars = dict(&[("eth", "eth0")]);
        let file = Path::new("/cfg/p.cmdb");
        let within = select_within(file, src.as_bytes(), &vars, &Dict::new(), size).unwrap();
        assert_eq!(within.unwrap().index, 0);
        let err = select_within(file, src.as_bytes(), &vars, &Dict::new(), size - 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "/cfg/p.cmdb: generate() model expands to a CMDB of more than {} bytes (MAXCMDBSIZE)",
                size - 1
            )
        );
        // The default stops 2^20 entries of 1 kB (1.09 GB) early.
        let src = format!(
            "generate({{'n': '1-1048576', 'pad': '{}'}})",
            "x".repeat(1000)
        );
        let start = std::time::Instant::now();
        let err = select(file, src.as_bytes(), &vars, &Dict::new()).unwrap_err();
        assert!(
            matches!(
                err,
                CmdbError::Generate {
                    source: GenerateError::TooLarge {
                        limit: DEFAULT_MAX_CMDB_SIZE
                    },
                    ..
                }
            ),
            "{err}"
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn generated_pool_is_expanded_and_flagged_for_backup() {
        let src = "generate({'ip': '10.0.0.1-30', 'hostname': 'h1-30'})";
        let s = select_str(src, &dict(&[("eth", "eth0")]), &Dict::new()).unwrap();
        assert!(s.backup_original);
        let text = String::from_utf8(s.contents).unwrap();
        assert!(text.starts_with("[{'eth': 'eth0', 'hostname': 'h1', 'ip': '10.0.0.1', 'used': 1},\n {'hostname': 'h2', 'ip': '10.0.0.2'},\n"), "{text}");
        assert!(
            text.ends_with(" {'hostname': 'h30', 'ip': '10.0.0.30'}]\n"),
            "{text}"
        );
    }

    #[test]
    fn a_model_behind_a_long_comment_is_not_backed_up() {
        // As the legacy server: `generate(` must lie in the first 20 bytes.
        let vars = dict(&[("eth", "eth0")]);
        let s = select_str("#23456789\ngenerate({'ip': '1-2'})", &vars, &Dict::new()).unwrap();
        assert!(s.backup_original);
        let s = select_str("# generated\ngenerate({'ip': '1-2'})", &vars, &Dict::new()).unwrap();
        assert!(!s.backup_original);
    }

    #[test]
    fn entries_that_are_not_dicts_are_named() {
        let e = select_str("[{'ip': '1'}, 'oops']", &Dict::new(), &Dict::new()).unwrap_err();
        assert!(matches!(e, CmdbError::NotADict { index: 1, .. }), "{e:?}");
        assert_eq!(e.to_string(), "/cfg/p.cmdb: entry 1 is not a dict");
    }

    #[test]
    fn syntax_errors_keep_their_position() {
        let e = select_str("[{'ip': '1'},\n {'ip' '2'}]", &Dict::new(), &Dict::new()).unwrap_err();
        assert!(e.to_string().starts_with("/cfg/p.cmdb:2:"), "{e}");
    }

    /// A small deterministic generator (xorshift64*) for the random CMDBs.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }

        fn pick<'p>(&mut self, pool: &[&'p str]) -> &'p str {
            pool[self.below(pool.len())]
        }
    }

    /// Key literals: some need sorting, some are not plain (escapes, u'',
    /// numbers), two spell the same key, one repeats a common prefix.
    const KEYS: &[&str] = &[
        "'ip'",
        "'hostname'",
        "'gateway'",
        "'netmask'",
        "'used'",
        "\"used\"",
        "'a'",
        "'B'",
        "'ab'",
        "'_x'",
        "'ip2'",
        "'i'",
        "'z\"q'",
        "\"k'ey\"",
        "'\\x41'",
        "u'uk'",
        "'été'",
        "'\x1f'",
        "'mac'",
        "'eth'",
        "1",
    ];

    /// Value literals: plain ones, ones whose repr differs from the
    /// literal, long ones forcing a split, and ones only the general path
    /// takes (escapes, negative, octal, huge ints, floats, containers).
    const VALUES: &[&str] = &[
        "'10.0.0.1'",
        "'eth0'",
        "'T2'",
        "'b'",
        "''",
        "\"dq\"",
        "\"it's\"",
        "'say \"hi\"'",
        "\"both ' and \\\"\"",
        "'back\\\\slash'",
        "'tab\\t'",
        "'é\u{ff}'",
        "'\x0e\x7f'",
        "0",
        "1",
        "7",
        "123456789012345678",
        "1234567890123456789",
        "0123",
        "-4",
        "1L",
        "2.5",
        "True",
        "None",
        "u'text'",
        "[1, 2]",
        "{'n': 1}",
        "'a' 'b'",
        "'a long value that goes on and on, longer than any line of pprint output can be'",
        "'medium length value of forty characters'",
    ];

    /// Separators as pprint writes them, and as people do.
    const SEPARATORS: &[&str] = &[", ", ",\n  ", ",", " , ", ",\n# note\n  "];

    fn random_entry(rng: &mut Rng) -> String {
        let mut entry = String::from("{");
        let n = rng.below(6);
        for i in 0..n {
            if i > 0 {
                entry.push_str(rng.pick(SEPARATORS));
            }
            entry.push_str(rng.pick(KEYS));
            entry.push_str(rng.pick(&[": ", ":", " : "]));
            entry.push_str(rng.pick(VALUES));
        }
        entry.push('}');
        entry
    }

    /// `select` done the simple way: the whole list parsed into values,
    /// the new text printed by `pformat`.
    fn reference_select(src: &[u8], vars: &Dict, forced: &Dict) -> Option<(usize, Dict, Vec<u8>)> {
        let Ok(literal::Document::Literal(Value::List(mut entries))) =
            literal::parse(Path::new("r"), src)
        else {
            panic!("reference parse failed");
        };
        let pref = if forced.is_empty() { vars } else { forced };
        let dicts = || {
            entries.iter().enumerate().map(|(i, e)| match e {
                Value::Dict(d) => (i, d),
                _ => panic!("not a dict"),
            })
        };
        let index = dicts()
            .find(|(_, d)| is_included(pref, d))
            .or_else(|| {
                let unused = dicts().find(|(_, d)| d.get_str("used").is_none());
                unused.filter(|_| forced.is_empty())
            })?
            .0;
        let Value::Dict(mut merged) = entries[index].clone() else {
            unreachable!()
        };
        merged.update(vars);
        merged.insert(Value::str("used"), Value::Int(1));
        entries[index] = Value::Dict(merged.clone());
        Some((index, merged, literal::pformat(&Value::List(entries))))
    }

    /// Records how each element of a streamed list would be printed.
    #[derive(Default)]
    struct Printed {
        flat: Vec<Vec<u8>>,
        general: Vec<Vec<u8>>,
    }

    impl ListSink for Printed {
        fn flat(&mut self, dict: &FlatDict<'_, '_>) -> bool {
            let mut out = Vec::new();
            dict.format_at(&mut out, 1, 1);
            self.flat.push(out);
            true
        }

        fn value(&mut self, value: Value) -> Result<(), ParseError> {
            let mut out = Vec::new();
            literal::format_at(&mut out, &value, 1, 1);
            self.general.push(out);
            Ok(())
        }
    }

    #[test]
    fn flat_entries_print_as_their_values() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut flat = 0;
        for _ in 0..3000 {
            let entry = random_entry(&mut rng);
            let src = format!("[{entry}]");
            let mut printed = Printed::default();
            let fast =
                literal::parse_list_streaming_flat(Path::new("f"), src.as_bytes(), &mut printed);
            let mut want = Vec::new();
            let slow = literal::parse_list_streaming(Path::new("f"), src.as_bytes(), &mut |v| {
                literal::format_at(&mut want, &v, 1, 1);
                Ok(())
            });
            match (fast, slow) {
                (Ok(_), Ok(_)) => {
                    flat += printed.flat.len();
                    let got: Vec<u8> = printed
                        .flat
                        .into_iter()
                        .chain(printed.general)
                        .flatten()
                        .collect();
                    assert_eq!(got, want, "{src}");
                }
                (Err(f), Err(s)) => assert_eq!(f.to_string(), s.to_string(), "{src}"),
                (f, s) => panic!("{src}: {f:?} vs {s:?}"),
            }
        }
        assert!(flat > 300, "the fast lane was taken {flat} times");
    }

    /// Machines in a row: the pool gives each the entry `select` gives it
    /// on the file the earlier machines left, with the same variables, and
    /// fails as it does.
    #[test]
    fn pool_chooses_as_select_on_the_file_it_leaves() {
        let mut rng = Rng(0x005e_ed0f_900d_cafe);
        let var_pool = [
            ("ip", "10.0.0.1"),
            ("eth", "eth0"),
            ("a", "b"),
            ("mac", "T2"),
        ];
        let mut compared = 0;
        for _ in 0..400 {
            let n = 1 + rng.below(8);
            let entries: Vec<String> = (0..n).map(|_| random_entry(&mut rng)).collect();
            let mut src = format!("[{}]", entries.join(", ")).into_bytes();
            let file = Path::new("r");
            let pool = Indexed::parse(file, &src, DEFAULT_MAX_CMDB_SIZE);
            let Ok(Some(mut pool)) = pool else {
                let got = select(file, &src, &Dict::new(), &Dict::new());
                match (pool, got) {
                    (Ok(None), Ok(None)) => continue,
                    (Err(p), Err(s)) => assert_eq!(p.to_string(), s.to_string()),
                    (p, s) => panic!("{}: {p:?} vs {s:?}", String::from_utf8_lossy(&src)),
                }
                continue;
            };
            for _ in 0..6 {
                let mut vars = Dict::new();
                for _ in 0..1 + rng.below(2) {
                    let (k, v) = var_pool[rng.below(var_pool.len())];
                    vars.insert(Value::str(k), Value::str(v));
                }
                // Numbers equal across types, as the entries' 1, True, 1L.
                let numbers = [
                    Value::Int(1),
                    Value::Float(1.0),
                    Value::Bool(true),
                    Value::Long(1),
                    Value::Float(2.5),
                    Value::Int(7),
                ];
                if rng.below(2) == 0 {
                    let n = numbers[rng.below(numbers.len())].clone();
                    vars.insert(Value::str("a"), n);
                }
                let forced = if rng.below(4) == 0 {
                    vars.clone()
                } else {
                    Dict::new()
                };
                let want = select(file, &src, &vars, &forced);
                let got = pool.choose(&vars, &forced);
                match (got, want) {
                    (Ok(index), Ok(Some(s))) => {
                        assert_eq!(index, s.index);
                        assert_eq!(pool.take(index, &vars), Some(s.vars));
                        src = s.contents;
                        compared += 1;
                    }
                    (Err(g), Err(w)) => assert_eq!(g.to_string(), w.to_string()),
                    (g, w) => panic!("{}: {g:?} vs {w:?}", String::from_utf8_lossy(&src)),
                }
            }
            let reparsed = Indexed::parse(file, &src, DEFAULT_MAX_CMDB_SIZE)
                .unwrap()
                .unwrap();
            assert_eq!(reparsed.free(), pool.free());
        }
        assert!(compared > 300, "{compared} choices compared");
    }

    #[test]
    fn pool_bounds_generated_cmdbs_as_select() {
        let src = b"generate({'ip': '10.0.0.1-250', 'hostname': 'host-1-250'})";
        let file = Path::new("g");
        let vars = dict(&[("eth", "eth0")]);
        let whole = select(file, src, &vars, &Dict::new()).unwrap().unwrap();
        // The largest limit select refuses, and the smallest it accepts.
        let mut limit = whole.contents.len() as u64;
        while select_within(file, src, &vars, &Dict::new(), limit).is_ok() {
            limit -= 1;
        }
        let refused = Indexed::parse(file, src, limit).unwrap_err();
        assert!(matches!(refused, CmdbError::Generate { .. }), "{refused:?}");
        let pool = Indexed::parse(file, src, limit + 1).unwrap().unwrap();
        assert_eq!((pool.len(), pool.free()), (250, 250));
    }

    #[test]
    fn fast_path_selects_and_prints_as_the_general_path() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let var_pool = [
            ("ip", "10.0.0.1"),
            ("eth", "eth0"),
            ("a", "b"),
            ("used", "1"),
            ("mac", "T2"),
        ];
        for _ in 0..1500 {
            let n = 1 + rng.below(12);
            let entries: Vec<String> = (0..n).map(|_| random_entry(&mut rng)).collect();
            let src = format!("[{}]", entries.join(rng.pick(&[",\n ", ", "])));
            // Skip lists with non-dict or non-hashable content: not the point here.
            let Ok(literal::Document::Literal(Value::List(parsed))) =
                literal::parse(Path::new("r"), src.as_bytes())
            else {
                continue;
            };
            let mut vars = Dict::new();
            // A returning machine: some variables taken from a later entry.
            if let Some(Value::Dict(d)) = parsed.get(rng.below(2 * n)) {
                for (k, v) in d.iter().filter(|_| rng.below(2) == 0) {
                    vars.insert(k.clone(), v.clone());
                }
            }
            for _ in 0..rng.below(3) {
                let (k, v) = var_pool[rng.below(var_pool.len())];
                vars.insert(Value::str(k), Value::str(v));
            }
            if rng.below(4) == 0 {
                vars.insert(Value::str("tag"), Value::Int(rng.below(8) as i64));
            }
            let forced = if rng.below(5) == 0 {
                vars.clone()
            } else {
                Dict::new()
            };
            let got = select(Path::new("r"), src.as_bytes(), &vars, &forced);
            match (got, reference_select(src.as_bytes(), &vars, &forced)) {
                (Ok(Some(s)), Some((index, merged, contents))) => {
                    assert_eq!(s.index, index, "{src}");
                    assert_eq!(s.vars, merged, "{src}");
                    assert_eq!(
                        String::from_utf8_lossy(&s.contents),
                        String::from_utf8_lossy(&contents),
                        "{src}"
                    );
                }
                (Err(CmdbError::Exhausted { .. }), None) => {}
                (got, want) => panic!("{src}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn flat_entries_edge_cases() {
        let cases: &[(&str, &str)] = &[
            ("{}", "{}"),
            ("{'b': 1, 'a': 2}", "{'a': 2, 'b': 1}"),
            ("{'a': 1, 'a': 2}", "{'a': 2}"),
            ("{\"k\": \"it's\"}", "{'k': \"it's\"}"),
            ("{'k': 'say \"hi\"'}", "{'k': 'say \"hi\"'}"),
            ("{'k': 'é'}", "{'k': '\\xc3\\xa9'}"),
            ("{'used': 1, 'B': 'x', 'a': ''}", "{'B': 'x', 'a': '', 'used': 1}"),
            (
                "{'hostname': 'host-0001', 'ip': '10.0.0.1', 'netmask': '255.255.255.0', 'x': '1'}",
                "{'hostname': 'host-0001',\n  'ip': '10.0.0.1',\n  'netmask': '255.255.255.0',\n  'x': '1'}",
            ),
        ];
        for (src, want) in cases {
            let mut printed = Printed::default();
            literal::parse_list_streaming_flat(
                Path::new("f"),
                format!("[{src}]").as_bytes(),
                &mut printed,
            )
            .unwrap();
            let got: Vec<u8> = printed
                .flat
                .into_iter()
                .chain(printed.general)
                .flatten()
                .collect();
            assert_eq!(String::from_utf8_lossy(&got), *want, "{src}");
        }
    }

    /// Selections made on one pool, one after the other, are those of
    /// `select` run on the text each one left: same entries, same merged
    /// variables, same errors, same final text (one-line lists included).
    mod pool_equals_select_in_a_row {
        use super::*;
        use proptest::prelude::*;

        fn text_value() -> impl Strategy<Value = Value> {
            prop_oneof![
                prop::sample::select(vec!["a", "b", "eth0", "x".repeat(30).leak()])
                    .prop_map(Value::str),
                (0i64..3).prop_map(Value::Int),
            ]
        }

        fn dict_of(keys: &'static [&'static str]) -> impl Strategy<Value = Dict> {
            prop::collection::vec((prop::sample::select(keys), text_value()), 0..4)
                .prop_map(|items| items.into_iter().map(|(k, v)| (Value::str(k), v)).collect())
        }

        fn entry() -> impl Strategy<Value = Dict> {
            (dict_of(&["ip", "mac", "eth"]), prop::bool::weighted(0.3)).prop_map(|(mut d, used)| {
                if used {
                    d.insert(Value::str("used"), Value::Int(1));
                }
                d
            })
        }

        proptest! {
            #[test]
            fn picks(
                entries in prop::collection::vec(entry(), 0..40),
                requests in prop::collection::vec(
                    (dict_of(&["ip", "mac", "eth"]), dict_of(&["mac"]), prop::bool::weighted(0.2)),
                    1..8,
                ),
            ) {
                let file = Path::new("/cfg/p.cmdb");
                let list = Value::List(entries.into_iter().map(Value::Dict).collect());
                let src = literal::pformat(&list);
                let requests: Vec<(Dict, Dict)> = requests
                    .into_iter()
                    .map(|(vars, forced, force)| {
                        let mut vars = vars;
                        vars.update(&forced);
                        (vars, if force { forced } else { Dict::new() })
                    })
                    .collect();
                let prefs: Vec<&Dict> = requests.iter().map(|(v, f)| preference(v, f)).collect();
                let mut pool = Pool::read(file, &src, &prefs, DEFAULT_MAX_CMDB_SIZE).unwrap();
                let mut text = src.clone();
                for (i, (vars, forced)) in requests.iter().enumerate() {
                    let serial = select(file, &text, vars, forced);
                    let Some(pool) = &mut pool else {
                        prop_assert!(matches!(serial, Ok(None)));
                        continue;
                    };
                    match (serial, pool.pick(i, vars, forced)) {
                        (Ok(Some(s)), Ok((index, merged))) => {
                            prop_assert_eq!(s.index, index);
                            prop_assert_eq!(&s.vars, &merged);
                            text = s.contents;
                        }
                        (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                        (a, b) => prop_assert!(false, "select {a:?}, pool {b:?}"),
                    }
                }
                if let Some(pool) = pool {
                    if pool.is_changed() {
                        let contents = pool.into_contents();
                        prop_assert_eq!(
                            String::from_utf8_lossy(&contents),
                            String::from_utf8_lossy(&text)
                        );
                    }
                }
            }
        }
    }
}

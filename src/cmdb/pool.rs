//! The pool of a batch: a CMDB read once for the selections of all the
//! requests of a batch (see `batch`), and written once.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::{is_included, is_used, preference, CmdbError};
use crate::generate::{self, GenerateError};
use crate::literal::{self, Dict, FlatDict, ListSink, ParseError, Plain, Streamed, Value};

/// A CMDB read once for several selections in a row, as a batch of
/// requests makes them (see `batch`): each is the one [`select`] would make
/// on the text the ones before it left, and the new text is printed once.
///
/// The file is read in one pass that keeps, for each preference given,
/// the first entries that include it, and the first unused entries, as
/// many as there are preferences: each selection changes one entry, so
/// the one the next selection wants is among those, or among the entries
/// changed already, which are checked as they now are.
pub struct Pool {
    file: PathBuf,
    /// The list printed as pprint does, but for its closing `]\n`; the
    /// changed entries are printed over their text at the end.
    out: Vec<u8>,
    /// Every entry, when the whole list may still fit on one line: pprint
    /// then decides from all of them.
    small: Option<Vec<Value>>,
    /// The entries that may be chosen, by index: as read, and where their
    /// text is in `out`.
    candidates: BTreeMap<usize, (Dict, Range<usize>)>,
    /// For each preference, the indexes of the first entries including it.
    matching: Vec<Vec<usize>>,
    /// The indexes of the first entries without `used`.
    unused: Vec<usize>,
    /// Entries chosen so far, as they now are.
    changed: BTreeMap<usize, Dict>,
    backup_original: bool,
}

impl Pool {
    /// Reads the CMDB text `src` (a list, or a `generate()` model expanding
    /// to at most `max_generated` bytes) for selections with `prefs`. An
    /// empty CMDB is no CMDB at all (`None`).
    pub fn read(
        file: &Path,
        src: &[u8],
        prefs: &[&Dict],
        max_generated: u64,
    ) -> Result<Option<Pool>, CmdbError> {
        let mut scan = Scan::new(file, prefs, src.len());
        let streamed = literal::parse_list_streaming_flat(file, src, &mut scan);
        // A non-dict entry stopped the parse: report it as such.
        if let Some(e) = scan.error.take() {
            return Err(e);
        }
        let was_generated = match streamed.map_err(CmdbError::Parse)? {
            Streamed::List => false,
            Streamed::Generate(model) => {
                let entries = generate::generate(&model).map_err(|source| CmdbError::Generate {
                    file: file.to_path_buf(),
                    source,
                })?;
                for entry in entries {
                    scan.push(entry).map_err(CmdbError::Parse)?;
                    // Counted as it is printed, with the closing `]\n`: the
                    // expansion stops at the limit, before it takes more memory.
                    let size = u64::try_from(scan.out.len()).unwrap_or(u64::MAX);
                    if size.saturating_add(2) > max_generated {
                        return Err(CmdbError::Generate {
                            file: file.to_path_buf(),
                            source: GenerateError::TooLarge {
                                limit: max_generated,
                            },
                        });
                    }
                }
                true
            }
        };
        if let Some(e) = scan.error.take() {
            return Err(e);
        }
        if scan.count == 0 {
            return Ok(None);
        }
        // The legacy server backs the model up only when `generate(` lies in the
        // first 20 bytes of the file (a long leading comment hides it).
        let head = &src[..src.len().min(20)];
        let backup_original = was_generated && head.windows(9).any(|w| w == b"generate(");
        Ok(Some(Pool {
            file: file.to_path_buf(),
            out: scan.out,
            small: scan.small.map(|(_, _, values)| values),
            candidates: scan.candidates,
            matching: scan.matching,
            unused: scan.unused,
            changed: BTreeMap::new(),
            backup_original,
        }))
    }

    /// Chooses the entry for a machine whose variables are `vars` and `$$`
    /// variables `forced`, whose preference (see [`preference`]) is the
    /// `pref`-th given to [`Pool::read`], as [`select`] would on the
    /// current text, and marks it used; returns its index and the
    /// machine's variables merged with it. On error nothing changes.
    pub fn pick(
        &mut self,
        pref: usize,
        vars: &Dict,
        forced: &Dict,
    ) -> Result<(usize, Dict), CmdbError> {
        let (index, merged) = self.choose(pref, vars, forced)?;
        self.mark(index, merged.clone());
        Ok((index, merged))
    }

    /// [`Pool::pick`] without marking the entry: [`Pool::mark`] does.
    pub fn choose(
        &self,
        pref: usize,
        vars: &Dict,
        forced: &Dict,
    ) -> Result<(usize, Dict), CmdbError> {
        let wanted = preference(vars, forced);
        let changed = self
            .changed
            .iter()
            .find(|(_, entry)| is_included(wanted, entry))
            .map(|(&i, _)| i);
        let unchanged = self
            .matching
            .get(pref)
            .and_then(|m| m.iter().find(|i| !self.changed.contains_key(i)))
            .copied();
        let chosen = match (changed, unchanged) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .or_else(|| {
            if forced.is_empty() {
                self.unused
                    .iter()
                    .find(|i| !self.changed.contains_key(i))
                    .copied()
            } else {
                None
            }
        });
        let Some(index) = chosen else {
            return Err(CmdbError::Exhausted {
                file: self.file.clone(),
                forced: !forced.is_empty(),
            });
        };
        // Python: entry.update(var); var.update(entry); var['used'] = 1
        let mut merged = match self.changed.get(&index) {
            Some(entry) => entry.clone(),
            None => self.candidates[&index].0.clone(),
        };
        merged.update(vars);
        merged.insert(Value::str("used"), Value::Int(1));
        Ok((index, merged))
    }

    /// Replaces the entry `index` (chosen by [`Pool::choose`]) by `entry`.
    pub fn mark(&mut self, index: usize, entry: Dict) {
        self.changed.insert(index, entry);
    }

    /// Whether the file held a `generate()` model to keep as `<name>.orig`.
    pub fn backup_original(&self) -> bool {
        self.backup_original
    }

    /// Whether an entry was chosen: the text is to be written.
    pub fn is_changed(&self) -> bool {
        !self.changed.is_empty()
    }

    /// The CMDB's new text.
    pub fn into_contents(self) -> Vec<u8> {
        if let Some(mut values) = self.small {
            // The list may fit on one line: let the printer decide.
            for (&i, entry) in &self.changed {
                values[i] = Value::Dict(entry.clone());
            }
            return literal::pformat(&Value::List(values));
        }
        let mut out = self.out;
        // From the last: the texts before keep their place.
        for (i, entry) in self.changed.iter().rev() {
            let mut replaced = Vec::new();
            literal::format_at(&mut replaced, &Value::Dict(entry.clone()), 1, 1);
            out.splice(self.candidates[i].1.clone(), replaced);
        }
        out.extend_from_slice(b"]\n");
        out
    }
}

/// A dict of str keys and str or int values, as flat entries are compared.
type PlainDict<'a> = Vec<(&'a [u8], Plain<'a>)>;

/// Accumulates the printed entries and the candidates during one pass.
struct Scan<'a> {
    file: &'a Path,
    prefs: &'a [&'a Dict],
    /// The preferences as plain items when all their keys are str and their
    /// values str or int (matched variables are): then flat entries can be
    /// compared without a `Value`. Otherwise every entry takes the general
    /// path.
    plain_prefs: Option<Vec<PlainDict<'a>>>,
    /// Candidates kept per preference, and unused entries kept: one per
    /// selection to come.
    keep: usize,
    /// The new file's text so far: `[`, then every entry printed as a list
    /// element (indent 1, allowance 1), separated by `,\n `. The chosen
    /// entries' texts are replaced in place at the end, so the file is
    /// never copied.
    out: Vec<u8>,
    count: usize,
    /// While the whole list may still fit on one line once the chosen
    /// entries are replaced: its repr length, those of its `keep` longest
    /// entries (which may be chosen, shrunk down to `{}`), and the entries
    /// themselves (a handful at most).
    small: Option<(usize, Vec<usize>, Vec<Value>)>,
    candidates: BTreeMap<usize, (Dict, Range<usize>)>,
    matching: Vec<Vec<usize>>,
    unused: Vec<usize>,
    error: Option<CmdbError>,
}

impl ListSink for Scan<'_> {
    /// Prints a flat entry straight from the source, unless it may be
    /// chosen (it is then parsed into a `Dict` and pushed) or the whole list
    /// may still fit on one line.
    fn flat(&mut self, entry: &FlatDict<'_, '_>) -> bool {
        let Some(prefs) = &self.plain_prefs else {
            return false;
        };
        if self.small.is_some() {
            return false;
        }
        for (pref, matching) in prefs.iter().zip(&self.matching) {
            if matching.len() < self.keep && pref.iter().all(|&(k, v)| entry.get(k) == Some(v)) {
                return false;
            }
        }
        if self.unused.len() < self.keep && entry.get(b"used").is_none() {
            return false;
        }
        if self.count > 0 {
            self.out.extend_from_slice(b",\n ");
        }
        entry.format_at(&mut self.out, 1, 1);
        self.count += 1;
        true
    }

    fn value(&mut self, value: Value) -> Result<(), ParseError> {
        self.push(value)
    }
}

/// Python's pprint puts a list on one line when its repr is this short.
const ONE_LINE: usize = 79;

impl<'a> Scan<'a> {
    /// `size_hint`: the expected size of the new text (that of the old one).
    fn new(file: &'a Path, prefs: &'a [&'a Dict], size_hint: usize) -> Scan<'a> {
        let mut out = Vec::with_capacity(size_hint.saturating_add(64));
        out.push(b'[');
        let plain_prefs = prefs
            .iter()
            .map(|pref| {
                pref.iter()
                    .map(|(k, v)| match (k, v) {
                        (Value::Str(k), Value::Str(v)) => Some((k.as_slice(), Plain::Str(v))),
                        (Value::Str(k), Value::Int(v)) => Some((k.as_slice(), Plain::Int(*v))),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        Scan {
            file,
            prefs,
            plain_prefs,
            keep: prefs.len(),
            out,
            count: 0,
            small: Some((0, Vec::new(), Vec::new())),
            candidates: BTreeMap::new(),
            matching: vec![Vec::new(); prefs.len()],
            unused: Vec::new(),
            error: None,
        }
    }

    fn push(&mut self, value: Value) -> Result<(), ParseError> {
        let index = self.count;
        let Value::Dict(entry) = &value else {
            // Stop the parse; the typed error is returned by `select`.
            self.error.get_or_insert(CmdbError::NotADict {
                file: self.file.to_path_buf(),
                index,
            });
            return Err(ParseError {
                file: self.file.to_path_buf(),
                line: 0,
                column: 0,
                message: format!("entry {index} is not a dict"),
            });
        };
        if index > 0 {
            self.out.extend_from_slice(b",\n ");
        }
        let start = self.out.len();
        literal::format_at(&mut self.out, &value, 1, 1);
        let text = start..self.out.len();
        let mut candidate = false;
        for (pref, matching) in self.prefs.iter().zip(&mut self.matching) {
            if matching.len() < self.keep && is_included(pref, entry) {
                matching.push(index);
                candidate = true;
            }
        }
        if self.unused.len() < self.keep && !is_used(entry) {
            self.unused.push(index);
            candidate = true;
        }
        if candidate {
            self.candidates.insert(index, (entry.clone(), text));
        }
        self.count += 1;
        if let Some((len, longest, values)) = &mut self.small {
            // repr of a list of n items: their lengths + 2n.
            let own = literal::repr(&value).len();
            *len += own + 2;
            let at = longest.partition_point(|&l| l > own);
            longest.insert(at, own);
            longest.truncate(self.keep);
            let shrinkable: usize = longest.iter().sum();
            if *len + 2 * longest.len() <= ONE_LINE + shrinkable {
                values.push(value);
            } else {
                self.small = None;
            }
        }
        Ok(())
    }
}

//! The pool of a batch: a CMDB read once for the selections of all the
//! requests of a batch (see `batch`), and written once.

use std::collections::{btree_map, BTreeMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use memchr::memmem;

use super::layout::{Layout, MIN_ENTRIES};
use super::{is_included, is_used, preference, CmdbError};
use crate::generate::{self, GenerateError};
use crate::literal::{
    self, Dict, Document, FlatDict, ListSink, ParseError, Plain, Streamed, Value,
};

/// A CMDB read once for several selections in a row, as a batch of
/// requests makes them (see `batch`): each is the one [`select`] would make
/// on the text the ones before it left, and the new text is printed once.
///
/// The file is read in one pass that keeps, for each preference given,
/// the first entries that include it, and the first unused entries, one
/// more than there are preferences: each selection changes one entry, so
/// the one the next selection wants is among those, or among the entries
/// changed already, which are checked as they now are (and one is left
/// unused to start the next layout from). A text the server printed
/// itself, recognised by its [`Layout`], is not parsed: those entries are
/// found by searching its text.
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
    /// Entries in the list.
    count: usize,
    /// Every entry read is a dict of str keys and str or int values: the
    /// new text may have a layout.
    plain: bool,
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
            count: scan.count,
            plain: scan.plain,
        }))
    }

    /// [`Pool::read`], but a text that `layout` describes (the server
    /// printed it) is searched rather than parsed.
    pub fn read_laid_out(
        file: &Path,
        src: Vec<u8>,
        layout: Option<&Layout>,
        prefs: &[&Dict],
        max_generated: u64,
    ) -> Result<Option<Pool>, CmdbError> {
        let Some(found) = layout.and_then(|layout| Found::search(file, &src, layout, prefs)) else {
            return Pool::read(file, &src, prefs, max_generated);
        };
        let mut out = src;
        out.truncate(out.len() - b"]\n".len());
        Ok(Some(Pool {
            file: file.to_path_buf(),
            out,
            small: None,
            candidates: found.candidates,
            matching: found.matching,
            unused: found.unused,
            changed: BTreeMap::new(),
            backup_original: false,
            count: found.count,
            plain: true,
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
        self.into_text().0.parts().concat()
    }

    /// The CMDB's new text, and its layout when it may have one.
    pub fn into_text(self) -> (Text, Option<Layout>) {
        if let Some(mut values) = self.small {
            // The list may fit on one line: let the printer decide.
            for (&i, entry) in &self.changed {
                values[i] = Value::Dict(entry.clone());
            }
            let text = literal::pformat(&Value::List(values));
            let whole = 0..text.len();
            let text = Text {
                old: text,
                pieces: vec![Piece::Old(whole)],
            };
            return (text, None);
        }
        let mut pieces = Vec::with_capacity(2 * self.changed.len() + 2);
        // Where the old text is copied up to, and how much longer the new
        // text is up to there.
        let (mut copied, mut grown) = (0, 0isize);
        // The first unused entry left, and where it starts in the new text.
        let first_unused = self
            .unused
            .iter()
            .copied()
            .find(|i| !self.changed.contains_key(i));
        let mut first_unused_at = None;
        for (&i, entry) in &self.changed {
            if let Some(u) = first_unused.filter(|&u| u < i && first_unused_at.is_none()) {
                first_unused_at = self.candidates[&u].1.start.checked_add_signed(grown);
            }
            let range = &self.candidates[&i].1;
            let mut new = Vec::new();
            literal::format_at(&mut new, &Value::Dict(entry.clone()), 1, 1);
            grown += new.len() as isize - range.len() as isize;
            pieces.push(Piece::Old(copied..range.start));
            pieces.push(Piece::New(new));
            copied = range.end;
        }
        if let Some(u) = first_unused.filter(|_| first_unused_at.is_none()) {
            first_unused_at = self.candidates[&u].1.start.checked_add_signed(grown);
        }
        pieces.push(Piece::Old(copied..self.out.len()));
        pieces.push(Piece::New(b"]\n".to_vec()));
        let text = Text {
            old: self.out,
            pieces,
        };
        // All the unused entries read were chosen: there is no other one
        // only if fewer were found than were looked for.
        let known = first_unused.is_some() || self.unused.len() <= self.matching.len();
        let plain = self.plain && self.changed.values().all(is_plain);
        let layout = (known && plain && self.count >= MIN_ENTRIES)
            .then(|| Layout::of(&text.parts(), self.count, first_unused.zip(first_unused_at)));
        (text, layout)
    }
}

/// A CMDB's new text, as pieces of the old one and new entries: a large
/// CMDB is written from them, never copied whole.
pub struct Text {
    old: Vec<u8>,
    pieces: Vec<Piece>,
}

enum Piece {
    Old(Range<usize>),
    New(Vec<u8>),
}

impl Text {
    /// The text, in order.
    pub fn parts(&self) -> Vec<&[u8]> {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Old(range) => &self.old[range.clone()],
                Piece::New(text) => text.as_slice(),
            })
            .collect()
    }
}

/// Whether a dict has only str keys and str or int values, as the entries
/// of a text with a layout.
fn is_plain(entry: &Dict) -> bool {
    entry.iter().all(|(k, v)| is_plain_item(k, v))
}

/// A str key with a str or int value.
fn is_plain_item(key: &Value, value: &Value) -> bool {
    matches!(key, Value::Str(_)) && matches!(value, Value::Str(_) | Value::Int(_))
}

/// What a pool keeps of a text with a layout, found by searching it.
struct Found {
    count: usize,
    candidates: BTreeMap<usize, (Dict, Range<usize>)>,
    matching: Vec<Vec<usize>>,
    unused: Vec<usize>,
}

/// Where every entry but the first starts in a text with a layout.
const ENTRY_START: &[u8] = b"\n {";

impl Found {
    /// Finds in `src`, if `layout` describes it, what [`Pool::read`] would
    /// keep for `prefs`; `None` if it may not be searched (it must then be
    /// parsed).
    fn search(file: &Path, src: &[u8], layout: &Layout, prefs: &[&Dict]) -> Option<Found> {
        if !layout.describes(src) {
            return None;
        }
        let out = src.strip_suffix(b"]\n")?;
        if !out.starts_with(b"[{") {
            return None;
        }
        let keep = prefs.len();
        // By where each entry starts: the entries found, and their index
        // when known.
        let mut entries: BTreeMap<usize, (Dict, Range<usize>, Option<usize>)> = BTreeMap::new();
        let mut matching_at = vec![Vec::new(); keep];
        for (pref, matching) in prefs.iter().zip(&mut matching_at) {
            // An entry including `pref` holds the text of each of its
            // items: the longest is searched, the entries found checked.
            let needles: Option<Vec<Vec<u8>>> = pref.iter().map(|(k, v)| item_text(k, v)).collect();
            let needle = needles?.into_iter().max_by_key(Vec::len);
            let starts: Box<dyn Iterator<Item = usize>> = match &needle {
                Some(needle) => {
                    Box::new(memmem::find_iter(out, needle).map(|at| entry_start(out, at)))
                }
                // An empty preference: every entry includes it.
                None => Box::new(entry_starts(out, 1)),
            };
            let mut last = None;
            for start in starts {
                if matching.len() == keep {
                    break;
                }
                if last.replace(start) == Some(start) {
                    continue;
                }
                if let btree_map::Entry::Vacant(vacant) = entries.entry(start) {
                    let range = start..entry_end(out, start);
                    vacant.insert((parse_entry(file, &out[range.clone()])?, range, None));
                }
                if is_included(pref, &entries[&start].0) {
                    matching.push(start);
                }
            }
        }
        let mut unused = Vec::new();
        if let Some((mut index, start)) = layout.first_unused {
            for start in entry_starts(out, start) {
                if unused.len() > keep {
                    break;
                }
                let range = start..entry_end(out, start);
                let entry = match entries.remove(&start) {
                    Some((entry, _, _)) => entry,
                    None => parse_entry(file, &out[range.clone()])?,
                };
                if !is_used(&entry) {
                    unused.push(index);
                }
                entries.insert(start, (entry, range, Some(index)));
                index += 1;
            }
        }
        // The index of an entry is the number of entry starts before it,
        // counted only as far as an entry of unknown index needs: those
        // read on from the first unused one have theirs.
        let mut boundaries = memmem::find_iter(out, ENTRY_START).peekable();
        let mut before = 0;
        let unknown = entries
            .iter_mut()
            .filter(|(_, (_, _, index))| index.is_none());
        for (&start, (_, _, index)) in unknown {
            while boundaries.next_if(|&at| at + 2 <= start).is_some() {
                before += 1;
            }
            index.get_or_insert(before);
        }
        let index_at = |start: &usize| entries[start].2.unwrap_or_default();
        let matching = matching_at
            .iter()
            .map(|starts| starts.iter().map(index_at).collect())
            .collect();
        let candidates = entries
            .into_values()
            .map(|(entry, range, index)| (index.unwrap_or_default(), (entry, range)))
            .collect();
        Some(Found {
            count: layout.count,
            candidates,
            matching,
            unused,
        })
    }
}

/// The text of the item `key: value` in a text with a layout; `None` if
/// no such text may hold it (the key is not a str, or the value neither
/// a str nor an int).
fn item_text(key: &Value, value: &Value) -> Option<Vec<u8>> {
    if !is_plain_item(key, value) {
        return None;
    }
    let mut text = literal::repr(key);
    text.extend_from_slice(b": ");
    text.extend_from_slice(&literal::repr(value));
    Some(text)
}

/// Where the entry holding the text at `at` starts (its `{`).
fn entry_start(out: &[u8], at: usize) -> usize {
    memmem::rfind(&out[..at], ENTRY_START).map_or(1, |boundary| boundary + 2)
}

/// Where the entry starting at `start` ends (after its `}`).
fn entry_end(out: &[u8], start: usize) -> usize {
    memmem::find(&out[start..], ENTRY_START).map_or(out.len(), |next| start + next - 1)
}

/// Where each entry starts, from the one starting at `start` on.
fn entry_starts(out: &[u8], start: usize) -> impl Iterator<Item = usize> + '_ {
    std::iter::once(start)
        .chain(memmem::find_iter(&out[start..], ENTRY_START).map(move |at| start + at + 2))
}

/// An entry of a text with a layout; `None` if it is not a dict.
fn parse_entry(file: &Path, text: &[u8]) -> Option<Dict> {
    match literal::parse(file, text) {
        Ok(Document::Literal(Value::Dict(entry))) => Some(entry),
        _ => None,
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
    /// Candidates kept per preference: one per selection to come; and one
    /// more unused entry.
    keep: usize,
    /// Every entry so far is a dict of str keys and str or int values.
    plain: bool,
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
        if self.unused.len() <= self.keep && entry.get(b"used").is_none() {
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
            plain: true,
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
        self.plain &= is_plain(entry);
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
        if self.unused.len() <= self.keep && !is_used(entry) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdb::DEFAULT_MAX_CMDB_SIZE;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            8 => prop::sample::select(vec!["a", "b", "eth0", "10.0.0.1", "it's", "x\ny"])
                .prop_map(Value::str),
            3 => (0i64..3).prop_map(Value::Int),
        ]
    }

    fn dict_of(keys: &'static [&'static str]) -> impl Strategy<Value = Dict> {
        prop::collection::vec((prop::sample::select(keys), value()), 0..4)
            .prop_map(|items| items.into_iter().map(|(k, v)| (Value::str(k), v)).collect())
    }

    fn entry() -> impl Strategy<Value = Dict> {
        (
            dict_of(&["ip", "mac", "eth", "mac2"]),
            prop::bool::weighted(0.4),
        )
            .prop_map(|(mut d, used)| {
                if used {
                    d.insert(Value::str("used"), Value::Int(1));
                }
                d
            })
    }

    fn requests() -> impl Strategy<Value = Vec<(Dict, Dict)>> {
        let request = (
            dict_of(&["ip", "mac", "eth"]),
            dict_of(&["mac"]),
            prop::bool::weighted(0.2),
        );
        prop::collection::vec(request, 0..6).prop_map(|requests| {
            requests
                .into_iter()
                .map(|(mut vars, forced, force)| {
                    vars.update(&forced);
                    (vars, if force { forced } else { Dict::new() })
                })
                .collect()
        })
    }

    type Picks = Vec<Result<(usize, Dict), String>>;

    /// Runs a batch on `pool`: the picks, the new text and its layout.
    fn batch(mut pool: Pool, requests: &[(Dict, Dict)]) -> (Picks, Vec<u8>, Option<Layout>) {
        let picks = requests
            .iter()
            .enumerate()
            .map(|(i, (vars, forced))| pool.pick(i, vars, forced).map_err(|e| e.to_string()))
            .collect();
        let (text, layout) = pool.into_text();
        (picks, text.parts().concat(), layout)
    }

    fn prefs(requests: &[(Dict, Dict)]) -> Vec<&Dict> {
        requests.iter().map(|(v, f)| preference(v, f)).collect()
    }

    proptest! {
        /// A batch on a text with its layout, searched, picks and prints
        /// exactly as one on the same text parsed whole, and leaves the
        /// same layout; the layout says where the first unused entry is.
        #[test]
        fn a_laid_out_text_is_searched_as_it_would_be_parsed(
            mut entries in prop::collection::vec(entry(), 0..48),
            // Not plain: a text holding one has no layout.
            spoil in prop::option::weighted(0.1, (any::<prop::sample::Index>(), prop_oneof![
                Just(Value::Long(1)),
                Just(Value::Unicode("a".to_owned())),
            ])),
            first in requests(),
            second in requests(),
        ) {
            let file = Path::new("/cfg/p.cmdb");
            if let (Some((at, value)), false) = (spoil, entries.is_empty()) {
                let at = at.index(entries.len());
                entries[at].insert(Value::str("ip"), value);
            }
            let src = literal::pformat(&Value::List(entries.into_iter().map(Value::Dict).collect()));
            let Some(pool) = Pool::read(file, &src, &prefs(&first), DEFAULT_MAX_CMDB_SIZE).unwrap()
            else {
                return Ok(());
            };
            let (_, text, layout) = batch(pool, &first);
            let parsed = Pool::read(file, &text, &prefs(&second), DEFAULT_MAX_CMDB_SIZE)
                .unwrap()
                .unwrap();
            let searched = Pool::read_laid_out(
                file,
                text.clone(),
                layout.as_ref(),
                &prefs(&second),
                DEFAULT_MAX_CMDB_SIZE,
            )
            .unwrap()
            .unwrap();
            if let Some(layout) = &layout {
                let found = Found::search(file, &text, layout, &prefs(&second));
                prop_assert!(found.is_some(), "a layout that describes its text is used");
                // Where the first unused entry starts, counted afresh.
                let whole = literal::parse(file, &text).unwrap();
                let Document::Literal(Value::List(list)) = whole else { panic!("a list") };
                let first_unused = list.iter().position(|e| match e {
                    Value::Dict(d) => !is_used(d),
                    _ => false,
                });
                prop_assert_eq!(layout.first_unused.map(|(i, _)| i), first_unused);
                if let Some((i, at)) = layout.first_unused {
                    let mut printed = Vec::new();
                    literal::format_at(&mut printed, &list[i], 1, 1);
                    prop_assert!(text[at..].starts_with(&printed));
                }
            }
            let (want_picks, want_text, want_layout) = batch(parsed, &second);
            let (picks, text, layout) = batch(searched, &second);
            prop_assert_eq!(picks, want_picks);
            prop_assert_eq!(String::from_utf8_lossy(&text), String::from_utf8_lossy(&want_text));
            prop_assert_eq!(layout, want_layout);
        }
    }

    /// A text changed since its layout was made (an operator's edit) is
    /// parsed: the edit is seen.
    #[test]
    fn a_stale_layout_is_not_used() {
        let file = Path::new("/cfg/p.cmdb");
        let entries: Vec<Value> = (0..30)
            .map(|i| {
                let mut d = Dict::new();
                d.insert(Value::str("ip"), Value::str(&format!("10.0.0.{i}")));
                Value::Dict(d)
            })
            .collect();
        let src = literal::pformat(&Value::List(entries));
        let mut vars = Dict::new();
        vars.insert(Value::str("mac"), Value::str("m1"));
        let pool = Pool::read(file, &src, &[&vars], DEFAULT_MAX_CMDB_SIZE)
            .unwrap()
            .unwrap();
        let (picks, text, layout) = batch(pool, &[(vars.clone(), Dict::new())]);
        assert_eq!(picks[0].as_ref().map(|(i, _)| *i), Ok(0));
        let layout = layout.expect("30 plain entries have a layout");
        // The operator gives entry 7 to machine m2, by hand.
        let edited = String::from_utf8(text)
            .unwrap()
            .replace("'ip': '10.0.0.7'", "'ip': '10.0.0.7', 'mac': 'm2'");
        let mut m2 = Dict::new();
        m2.insert(Value::str("mac"), Value::str("m2"));
        let pool = Pool::read_laid_out(
            file,
            edited.into_bytes(),
            Some(&layout),
            &[&m2],
            DEFAULT_MAX_CMDB_SIZE,
        )
        .unwrap()
        .unwrap();
        let (picks, _, _) = batch(pool, &[(m2, Dict::new())]);
        assert_eq!(picks[0].as_ref().map(|(i, _)| *i), Ok(7));
    }
}

//! Python 2 literals: the data model of every legacy configuration file.
//!
//! The legacy server `eval()`s its state, specs and CMDB files and writes them
//! back with `pprint`. We never evaluate code: this module parses the literal
//! subset those files use into [`Value`], and prints values back exactly as
//! Python 2.7's `repr()` and `pprint.pprint()` would, so that files written by
//! either implementation are byte-identical.

use std::cmp::Ordering;
use std::collections::hash_map::{DefaultHasher, HashMap};
use std::fmt;
use std::hash::Hasher;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A Python 2 value as found in the legacy files.
///
/// `Str` is Python 2's byte string (`'abc'`), `Unicode` its text string
/// (`u'abc'`); both print differently, so both are kept. Equality follows
/// Python: `1 == 1.0 == True`, `'a' == u'a'`, but a list never equals a tuple.
#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    /// A Python `int` (machine word).
    Int(i64),
    /// A Python `long` (`1L`, or an integer literal beyond `i64`); prints with `L`.
    Long(i128),
    Float(f64),
    Str(Vec<u8>),
    Unicode(String),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Dict),
}

/// A Python dict: unique keys (by Python equality), insertion order kept.
///
/// Printing sorts keys as Python 2 does, so the order only matters for
/// iteration by callers. Lookups are linear: dicts in eDeploy files are small.
#[derive(Clone, Default)]
pub struct Dict {
    /// Keys and values interleaved (k0, v0, k1, v1, ...): the parser builds
    /// this vector in place, without moving each parsed value once more.
    flat: Vec<Value>,
}

/// Above this many items, building a dict from parsed items dedups keys
/// through a hash index instead of linear scans, so a hostile file with one
/// huge dict cannot make parsing quadratic.
const INDEX_THRESHOLD: usize = 16;

impl Dict {
    pub fn new() -> Dict {
        Dict { flat: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.flat.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.flat.is_empty()
    }

    pub fn get(&self, key: &Value) -> Option<&Value> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Looks up a key given as text (the common case: CMDB and var keys).
    pub fn get_str(&self, key: &str) -> Option<&Value> {
        self.get(&Value::str(key))
    }

    /// Inserts or replaces; like Python, an existing key keeps its position
    /// and its original key object.
    pub fn insert(&mut self, key: Value, value: Value) {
        match self.flat.chunks_exact_mut(2).find(|kv| kv[0] == key) {
            Some(kv) => kv[1] = value,
            None => {
                self.flat.push(key);
                self.flat.push(value);
            }
        }
    }

    pub fn remove(&mut self, key: &Value) -> Option<Value> {
        let pos = self.iter().position(|(k, _)| k == key)?;
        self.flat.drain(2 * pos..2 * pos + 2).nth(1)
    }

    /// `self.update(other)` in Python.
    pub fn update(&mut self, other: &Dict) {
        for (k, v) in other.iter() {
            self.insert(k.clone(), v.clone());
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Value, &Value)> {
        self.flat.chunks_exact(2).map(|kv| (&kv[0], &kv[1]))
    }

    /// Items sorted as Python 2's `sorted(d.items())` sorts them.
    pub fn sorted_items(&self) -> Vec<(&Value, &Value)> {
        let mut items: Vec<_> = self.iter().collect();
        if !self.is_sorted() {
            sort_stable(&mut items, &mut |a, b| item_cmp(*a, *b));
        }
        items
    }

    /// Whether iteration order already is the sorted order (files written
    /// by pprint), which lets printing skip the sort and its allocation.
    fn is_sorted(&self) -> bool {
        let mut items = self.iter();
        let Some(mut prev) = items.next() else {
            return true;
        };
        for item in items {
            if item_cmp(prev, item) == Ordering::Greater {
                return false;
            }
            prev = item;
        }
        true
    }

    /// Calls `f` on every item in sorted order.
    fn for_each_sorted(&self, mut f: impl FnMut(&Value, &Value)) {
        if self.is_sorted() {
            self.iter().for_each(|(k, v)| f(k, v));
        } else {
            let mut items: Vec<_> = self.iter().collect();
            sort_stable(&mut items, &mut |a, b| item_cmp(*a, *b));
            items.into_iter().for_each(|(k, v)| f(k, v));
        }
    }

    /// A dict display `{k: v, ...}` from interleaved keys and values (an
    /// odd last value is ignored): later duplicates replace the value but
    /// keep the first key, as in Python.
    fn from_flat(mut flat: Vec<Value>) -> Dict {
        flat.truncate(flat.len() / 2 * 2);
        let n = flat.len() / 2;
        let unique = || (1..n).all(|i| (0..i).all(|j| !key_eq(&flat[2 * j], &flat[2 * i])));
        if n <= INDEX_THRESHOLD && unique() {
            return Dict { flat };
        }
        let mut d = Dict {
            flat: Vec::with_capacity(flat.len()),
        };
        let mut index: Option<HashMap<u64, usize>> = None;
        let mut items = flat.into_iter();
        while let (Some(k), Some(v)) = (items.next(), items.next()) {
            if d.len() < INDEX_THRESHOLD && index.is_none() {
                d.insert(k, v);
                continue;
            }
            let map = index.get_or_insert_with(|| {
                let mut map = HashMap::with_capacity(2 * n);
                for (i, (key, _)) in d.iter().enumerate() {
                    map.entry(key_hash(key)).or_insert(i);
                }
                map
            });
            let h = key_hash(&k);
            match map.get(&h).copied() {
                Some(i) if d.flat.get(2 * i).is_some_and(|key| *key == k) => {
                    if let Some(slot) = d.flat.get_mut(2 * i + 1) {
                        *slot = v;
                    }
                }
                // A 64-bit hash collision between unequal keys: fall back
                // to a scan; the new key then lives outside the index.
                Some(_) => d.insert(k, v),
                None => {
                    map.insert(h, d.len());
                    d.flat.push(k);
                    d.flat.push(v);
                }
            }
        }
        d
    }
}

/// Python key equality, with the common str/str case inlined.
#[inline(always)]
fn key_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => x == y,
        _ => a == b,
    }
}

impl Drop for Dict {
    fn drop(&mut self) {
        // Frees plain strings here, inline, instead of through the generic
        // drop of every value: a CMDB is mostly dicts of strings.
        while let Some(v) = self.flat.pop() {
            if let Value::Str(bytes) = v {
                drop(bytes);
            }
        }
    }
}

impl fmt::Debug for Dict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl PartialEq for Dict {
    fn eq(&self, other: &Dict) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(k, v)| other.get(k).is_some_and(|w| v == w))
    }
}

impl FromIterator<(Value, Value)> for Dict {
    fn from_iter<I: IntoIterator<Item = (Value, Value)>>(iter: I) -> Dict {
        Dict::from_flat(iter.into_iter().flat_map(|(k, v)| [k, v]).collect())
    }
}

impl Value {
    /// A Python 2 byte string from text.
    pub fn str(s: &str) -> Value {
        Value::Str(s.as_bytes().to_vec())
    }

    /// The text of a `str` (when valid UTF-8) or `unicode` value.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Str(b) => std::str::from_utf8(b).ok(),
            Value::Unicode(s) => Some(s),
            _ => None,
        }
    }

    /// The numeric value of bool/int/long/float, for Python's mixed comparisons.
    fn as_number(&self) -> Option<Number> {
        match *self {
            Value::Bool(b) => Some(Number::Int(b as i128)),
            Value::Int(i) => Some(Number::Int(i as i128)),
            Value::Long(i) => Some(Number::Int(i)),
            Value::Float(f) => Some(Number::Float(f)),
            _ => None,
        }
    }

    /// Python 2's type name, which orders values of unrelated types.
    fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Long(_) => "long",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Unicode(_) => "unicode",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
        }
    }
}

#[derive(Clone, Copy)]
enum Number {
    Int(i128),
    Float(f64),
}

/// 2**127 as a float: the first float beyond every `i128`.
const TWO_POW_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;

/// Exact comparison of an integer with a float, as Python 2.7 does it (a
/// cast to float would make 2**53 + 1 equal to 2.0**53). NaN compares equal
/// to everything here so that sorting stays total.
fn int_float_cmp(x: i128, y: f64) -> Ordering {
    if y.is_nan() {
        return Ordering::Equal;
    }
    if y >= TWO_POW_127 {
        return Ordering::Less;
    }
    if y < -TWO_POW_127 {
        return Ordering::Greater;
    }
    let t = y.trunc();
    x.cmp(&(t as i128)).then_with(|| {
        if y > t {
            Ordering::Less
        } else if y < t {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    })
}

fn num_cmp(a: Number, b: Number) -> Ordering {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => x.cmp(&y),
        (Number::Int(x), Number::Float(y)) => int_float_cmp(x, y),
        (Number::Float(x), Number::Int(y)) => int_float_cmp(y, x).reverse(),
        (Number::Float(x), Number::Float(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// Text of a string value for cross-type comparison: Python 2 compares `str`
/// with `unicode` by decoding the `str` as ASCII.
fn text_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Str(b) => Some(b),
        Value::Unicode(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// Python 2's ordering (`cmp`), total enough for sorting dict keys:
/// None first, numbers by value, then other types by type name.
pub fn py_cmp(a: &Value, b: &Value) -> Ordering {
    if let (Value::Str(x), Value::Str(y)) = (a, b) {
        return x.cmp(y);
    }
    if let (Some(x), Some(y)) = (a.as_number(), b.as_number()) {
        return num_cmp(x, y);
    }
    match (a, b) {
        (Value::None, Value::None) => Ordering::Equal,
        (Value::None, _) => Ordering::Less,
        (_, Value::None) => Ordering::Greater,
        _ if a.as_number().is_some() => Ordering::Less,
        _ if b.as_number().is_some() => Ordering::Greater,
        (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => seq_cmp(x, y),
        (Value::Dict(x), Value::Dict(y)) => x
            .len()
            .cmp(&y.len())
            .then_with(|| seq_cmp_pairs(&x.sorted_items(), &y.sorted_items())),
        _ => match (text_of(a), text_of(b)) {
            (Some(x), Some(y)) => x.cmp(y),
            _ => a.type_name().cmp(b.type_name()),
        },
    }
}

/// Order of `(key, value)` items, as Python compares the tuples.
#[inline(always)]
fn item_cmp(a: (&Value, &Value), b: (&Value, &Value)) -> Ordering {
    let keys = match (a.0, b.0) {
        // Short str keys (the usual) mostly differ early: no memcmp call.
        (Value::Str(x), Value::Str(y)) => match x.iter().zip(y).position(|(p, q)| p != q) {
            Some(i) => x[i].cmp(&y[i]),
            None => x.len().cmp(&y.len()),
        },
        _ => py_cmp(a.0, b.0),
    };
    keys.then_with(|| py_cmp(a.1, b.1))
}

fn seq_cmp(x: &[Value], y: &[Value]) -> Ordering {
    for (a, b) in x.iter().zip(y) {
        let o = py_cmp(a, b);
        if o != Ordering::Equal {
            return o;
        }
    }
    x.len().cmp(&y.len())
}

fn seq_cmp_pairs(x: &[(&Value, &Value)], y: &[(&Value, &Value)]) -> Ordering {
    for (a, b) in x.iter().zip(y) {
        let o = item_cmp(*a, *b);
        if o != Ordering::Equal {
            return o;
        }
    }
    x.len().cmp(&y.len())
}

/// A stable merge sort that tolerates inconsistent comparisons.
///
/// Python 2's ordering is not transitive across str, tuple and unicode keys
/// (`'z' < (1,) < u'a' < 'z'`), and the standard library's sorts may panic
/// on such orders; this one just yields some order. Short inputs use an
/// insertion sort, which leaves an already sorted slice untouched.
fn sort_stable<T: Copy>(v: &mut [T], cmp: &mut impl FnMut(&T, &T) -> Ordering) {
    if v.len() <= 16 {
        for i in 1..v.len() {
            let mut j = i;
            while j > 0 && cmp(&v[j - 1], &v[j]) == Ordering::Greater {
                v.swap(j - 1, j);
                j -= 1;
            }
        }
        return;
    }
    let mid = v.len() / 2;
    sort_stable(&mut v[..mid], cmp);
    sort_stable(&mut v[mid..], cmp);
    if cmp(&v[mid - 1], &v[mid]) != Ordering::Greater {
        return;
    }
    let left = v[..mid].to_vec();
    let (mut i, mut j, mut k) = (0, mid, 0);
    while i < left.len() && j < v.len() {
        if cmp(&v[j], &left[i]) == Ordering::Less {
            v[k] = v[j];
            j += 1;
        } else {
            v[k] = left[i];
            i += 1;
        }
        k += 1;
    }
    v[k..k + left.len() - i].copy_from_slice(&left[i..]);
}

/// A hash consistent with Python equality (`1`, `1.0` and `True` hash alike,
/// as do `'a'` and `u'a'`), for deduplicating the keys of large dicts.
fn key_hash(v: &Value) -> u64 {
    fn feed(v: &Value, h: &mut DefaultHasher) {
        match v {
            Value::None => h.write_u8(0),
            Value::Bool(b) => feed_int(*b as i128, h),
            Value::Int(i) => feed_int(*i as i128, h),
            Value::Long(i) => feed_int(*i, h),
            Value::Float(f) => {
                if f.fract() == 0.0 && f.abs() < TWO_POW_127 {
                    feed_int(*f as i128, h);
                } else {
                    h.write_u8(2);
                    h.write_u64(f.to_bits());
                }
            }
            Value::Str(b) => {
                h.write_u8(3);
                h.write(b);
            }
            Value::Unicode(s) => {
                h.write_u8(3);
                h.write(s.as_bytes());
            }
            Value::List(items) | Value::Tuple(items) => {
                h.write_u8(if matches!(v, Value::List(_)) { 4 } else { 5 });
                h.write_usize(items.len());
                items.iter().for_each(|e| feed(e, h));
            }
            Value::Dict(d) => {
                h.write_u8(6);
                h.write_usize(d.len());
            }
        }
    }
    fn feed_int(i: i128, h: &mut DefaultHasher) {
        h.write_u8(1);
        h.write_i128(i);
    }
    let mut h = DefaultHasher::new();
    feed(v, &mut h);
    h.finish()
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        if let (Value::Str(a), Value::Str(b)) = (self, other) {
            return a == b;
        }
        if let (Some(x), Some(y)) = (self.as_number(), other.as_number()) {
            return match (x, y) {
                (Number::Float(a), Number::Float(b)) => a == b,
                (Number::Float(f), _) | (_, Number::Float(f)) if f.is_nan() => false,
                _ => num_cmp(x, y) == Ordering::Equal,
            };
        }
        match (self, other) {
            (Value::None, Value::None) => true,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Unicode(a), Value::Unicode(b)) => a == b,
            // Python 2 decodes the str as ASCII; non-ASCII never compares equal.
            (Value::Str(a), Value::Unicode(b)) | (Value::Unicode(b), Value::Str(a)) => {
                a.is_ascii() && a == b.as_bytes()
            }
            (Value::List(a), Value::List(b)) | (Value::Tuple(a), Value::Tuple(b)) => a == b,
            (Value::Dict(a), Value::Dict(b)) => a == b,
            _ => false,
        }
    }
}

/// Where a literal file went wrong: file, 1-based line and column, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// Parsed content of a legacy file: a plain literal, or a `generate({...})`
/// call (only CMDB files use it).
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Literal(Value),
    Generate(Value),
}

/// What [`parse_list_streaming`] found at the top level.
#[derive(Debug, Clone, PartialEq)]
pub enum Streamed {
    /// A list: every element was passed to the callback, in order.
    List,
    /// `generate(model)`: the callback was not called.
    Generate(Value),
}

/// Maximum nesting of containers accepted by [`parse`].
pub const MAX_DEPTH: usize = 64;

/// Parses a whole file's text (`file` only names it in errors).
///
/// Accepts one literal expression surrounded by white space and comments, or
/// `generate(<literal>)`. Nesting deeper than [`MAX_DEPTH`] is an error.
pub fn parse(file: &Path, src: &[u8]) -> Result<Document, ParseError> {
    parse_document(file, src).map_err(|e| *e)
}

fn parse_document(file: &Path, src: &[u8]) -> PResult<Document> {
    let mut p = Parser::new(file, src)?;
    p.skip_ws(true)?;
    let doc = if p.at_generate() {
        Document::Generate(p.generate_call()?)
    } else {
        Document::Literal(p.top_expr()?)
    };
    p.finish()?;
    Ok(doc)
}

/// Parses a file whose top level is a list (or a `generate()` call), handing
/// each element to `each` as soon as it is parsed instead of building the
/// list, so memory stays bounded by one element (65k-entry CMDBs).
/// An error returned by `each` stops the parse and is returned as is.
pub fn parse_list_streaming(
    file: &Path,
    src: &[u8],
    each: &mut dyn FnMut(Value) -> Result<(), ParseError>,
) -> Result<Streamed, ParseError> {
    struct Values<'e>(&'e mut dyn FnMut(Value) -> Result<(), ParseError>);
    impl ListSink for Values<'_> {
        fn flat(&mut self, _: &FlatDict<'_, '_>) -> bool {
            false
        }
        fn value(&mut self, v: Value) -> Result<(), ParseError> {
            (self.0)(v)
        }
    }
    stream_list(file, src, &mut Values(each)).map_err(|e| *e)
}

/// `parse_list_streaming` with a fast lane: a list element that is a flat
/// dict of plain items (see [`FlatDict`]) is first offered to the sink as
/// is, borrowed from the source, so that most CMDB entries are handled
/// without building (and freeing) a `Value`.
pub fn parse_list_streaming_flat(
    file: &Path,
    src: &[u8],
    sink: &mut dyn ListSink,
) -> Result<Streamed, ParseError> {
    stream_list(file, src, sink).map_err(|e| *e)
}

/// Receives the elements of a streamed list.
pub trait ListSink {
    /// A flat dict element. Returning false (which must leave the sink
    /// unchanged) has it parsed into a `Value` and handed to `value`.
    fn flat(&mut self, dict: &FlatDict<'_, '_>) -> bool;
    /// Any other element; an error stops the parse and is returned as is.
    fn value(&mut self, value: Value) -> Result<(), ParseError>;
}

/// A plain dict value as the source spells it: the body of a string
/// literal without escapes, or a small canonical decimal int.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Plain<'a> {
    Str(&'a [u8]),
    Int(i64),
}

/// A dict whose items all are `'key': plain`: its keys are unique and
/// sorted bytewise, which is how Python 2 sorts str keys.
pub struct FlatDict<'s, 'a> {
    items: &'s [(&'a [u8], Plain<'a>)],
}

impl<'a> FlatDict<'_, 'a> {
    pub fn get(&self, key: &[u8]) -> Option<Plain<'a>> {
        // A handful of keys, mostly of different lengths: a scan that
        // compares lengths first beats a binary search's memcmp calls.
        self.items.iter().find(|(k, _)| *k == key).map(|&(_, v)| v)
    }

    /// `format_at` of the dict as a `Value`.
    pub fn format_at(&self, out: &mut Vec<u8>, indent: usize, allowance: usize) {
        // Written split over lines (the common case: CMDB entries are long),
        // then joined back when the one-line repr fits: the two forms only
        // differ in separators, and a repr never holds a raw newline.
        let start = out.len();
        let inner = indent.saturating_add(1);
        out.push(b'{');
        for (i, (k, v)) in self.items.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b",\n");
                pad(out, inner);
            }
            write_str_repr(out, k);
            out.extend_from_slice(b": ");
            match v {
                Plain::Str(b) => write_str_repr(out, b),
                Plain::Int(i) => write_int(out, *i as i128),
            }
        }
        out.push(b'}');
        let separators = self.items.len().saturating_sub(1);
        let one_line = out.len() - start - separators.saturating_mul(inner);
        let room = (WIDTH - 1).checked_sub(indent.saturating_add(allowance));
        if separators > 0 && room.is_some_and(|room| one_line <= room) {
            let mut to = start;
            let mut from = start;
            while let Some(&b) = out.get(from) {
                let (put, skip) = if b == b'\n' {
                    (b' ', 1 + inner)
                } else {
                    (b, 1)
                };
                if let Some(slot) = out.get_mut(to) {
                    *slot = put;
                }
                to += 1;
                from += skip;
            }
            out.truncate(to);
        }
    }
}

fn stream_list(file: &Path, src: &[u8], each: &mut dyn ListSink) -> PResult<Streamed> {
    let mut p = Parser::new(file, src)?;
    p.skip_ws(true)?;
    if p.at_generate() {
        let model = p.generate_call()?;
        p.finish()?;
        return Ok(Streamed::Generate(model));
    }
    // `([...])` still is a list for `parse`; `([...],)` is not.
    let mut parens = Vec::new();
    while p.peek() == Some(b'(') {
        parens.push(p.pos);
        p.enter()?;
        p.skip()?;
    }
    if p.peek() != Some(b'[') {
        return Err(p.expected("a list at the top level"));
    }
    p.list_items(&mut Vec::with_capacity(1), Some(each))?;
    for open_pos in parens.into_iter().rev() {
        p.skip()?;
        match p.peek() {
            Some(b')') => p.leave(),
            Some(b',') => return Err(p.err(p.pos, "the top level is a tuple, not a list")),
            _ => return Err(p.unclosed_or(open_pos, "')' after the top-level list")),
        }
    }
    p.skip()?;
    if p.peek() == Some(b',') {
        return Err(p.err(p.pos, "the top level is a tuple, not a list"));
    }
    p.finish()?;
    Ok(Streamed::List)
}

/// How raw non-ASCII bytes inside `u''` literals become characters: the
/// source encoding, which Python 2 takes from a BOM or a PEP 263 comment.
/// Without either, `eval()` of a byte string reads them as Latin-1.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Encoding {
    Latin1,
    Utf8,
    Ascii,
}

struct Parser<'a> {
    file: &'a Path,
    src: &'a [u8],
    pos: usize,
    /// Start of the text proper (after a UTF-8 BOM), for column numbers.
    start: usize,
    /// Containers currently open, bounded by MAX_DEPTH.
    depth: usize,
    /// Brackets currently open: inside them newlines are white space.
    open: usize,
    encoding: Encoding,
}

/// Bytes that start trivia: blanks, newlines, comments, line continuations.
static TRIVIA: [bool; 256] = {
    let mut t = [false; 256];
    t[b' ' as usize] = true;
    t[b'\t' as usize] = true;
    t[0x0c] = true;
    t[b'\n' as usize] = true;
    t[b'\r' as usize] = true;
    t[b'#' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Internal results box the (large) error so that the hot path moves less.
type PResult<T> = Result<T, Box<ParseError>>;

/// What a string literal decoder reports: offset in the body and message.
type BodyError = (usize, &'static str);

impl<'a> Parser<'a> {
    fn new(file: &'a Path, src: &'a [u8]) -> PResult<Parser<'a>> {
        let bom = src.starts_with(b"\xef\xbb\xbf");
        let mut p = Parser {
            file,
            src,
            pos: 0,
            start: if bom { 3 } else { 0 },
            depth: 0,
            open: 0,
            encoding: Encoding::Latin1,
        };
        p.pos = p.start;
        // `contains` is a fast memchr; the position is only needed on error.
        if src.contains(&0) {
            let nul = src.iter().position(|&b| b == 0).unwrap_or(0);
            return Err(p.err(nul, "NUL byte in input"));
        }
        let declared = p.coding_declaration();
        p.encoding = match (bom, declared) {
            (_, None) if bom => Encoding::Utf8,
            (_, None) => Encoding::Latin1,
            (_, Some((at, name))) => match normal_encoding(name) {
                Some(Encoding::Utf8) => Encoding::Utf8,
                Some(_) if bom => {
                    return Err(p.err(at, format!("encoding problem: {} with BOM", lossy(name))))
                }
                Some(e) => e,
                None => {
                    return Err(p.err(at, format!("unsupported source encoding '{}'", lossy(name))))
                }
            },
        };
        // Python decodes an ASCII file as a whole, but a UTF-8 one only in
        // its u'' literals: str literals and comments keep any byte.
        if p.encoding == Encoding::Ascii {
            if let Some(at) = src.iter().position(|b| !b.is_ascii()) {
                return Err(p.err(at, "non-ASCII byte in a file declared as ASCII"));
            }
        }
        Ok(p)
    }

    /// The PEP 263 `coding[:=]name` of line 1, or of line 2 when line 1 is
    /// blank or a comment: its offset and name.
    fn coding_declaration(&self) -> Option<(usize, &'a [u8])> {
        let mut line_start = self.start;
        for _ in 0..2 {
            let rest = self.src.get(line_start..)?;
            let len = rest
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
                .unwrap_or(rest.len());
            let line = &rest[..len];
            let text = trim_blank(line);
            if text.first() == Some(&b'#') {
                if let Some((off, name)) = coding_spec(text) {
                    return Some((line_start + (line.len() - text.len()) + off, name));
                }
            } else if !text.is_empty() {
                return None;
            }
            line_start += len + 1;
            if rest.get(len) == Some(&b'\r') && rest.get(len + 1) == Some(&b'\n') {
                line_start += 1;
            }
        }
        None
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    #[inline]
    fn peek_at(&self, off: usize) -> Option<u8> {
        self.src.get(self.pos + off).copied()
    }

    fn err(&self, pos: usize, message: impl Into<String>) -> Box<ParseError> {
        let pos = pos.min(self.src.len());
        let before = &self.src[..pos];
        let mut line = 1;
        let mut line_start = self.start.min(pos);
        let mut i = 0;
        while let Some(off) = before[i..].iter().position(|&b| b == b'\n' || b == b'\r') {
            i += off + 1;
            if before[i - 1] == b'\r' && before.get(i) == Some(&b'\n') {
                i += 1;
            }
            line += 1;
            line_start = i.min(pos);
        }
        let column = String::from_utf8_lossy(&self.src[line_start..pos])
            .chars()
            .count()
            + 1;
        Box::new(ParseError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        })
    }

    /// "expected X, found Y" at the current position.
    fn expected(&self, what: &str) -> Box<ParseError> {
        self.err(self.pos, format!("expected {what}, found {}", self.found()))
    }

    /// At end of file an unclosed bracket is the likely culprit: say where it
    /// was opened; elsewhere, "expected X".
    fn unclosed_or(&self, open_pos: usize, what: &str) -> Box<ParseError> {
        if self.pos < self.src.len() {
            return self.expected(what);
        }
        let at = self.err(open_pos, "");
        let bracket = self.src.get(open_pos).map_or('?', |&b| b as char);
        self.err(
            self.pos,
            format!(
                "end of file inside '{bracket}' opened at line {}, column {} (expected {what})",
                at.line, at.column
            ),
        )
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "end of file".to_string(),
            Some(b'\n' | b'\r') => "end of line".to_string(),
            Some(b) if b.is_ascii_graphic() => format!("'{}'", b as char),
            Some(b) if b.is_ascii() => format!("byte 0x{b:02x}"),
            Some(_) => {
                let end = (self.pos + 4).min(self.src.len());
                match String::from_utf8_lossy(&self.src[self.pos..end])
                    .chars()
                    .next()
                {
                    Some(c) if c != char::REPLACEMENT_CHARACTER => format!("'{c}'"),
                    _ => format!("byte 0x{:02x}", self.src[self.pos]),
                }
            }
        }
    }

    /// Skips blanks, comments and line continuations; newlines too when
    /// `newlines` (inside brackets, or around the top-level expression).
    fn skip_ws(&mut self, newlines: bool) -> PResult<()> {
        let s = self.src;
        let mut i = self.pos;
        while let Some(&b) = s.get(i) {
            match b {
                b' ' | b'\t' | b'\x0c' => i += 1,
                b'\n' | b'\r' if newlines => i += 1,
                b'#' => {
                    i += s[i..]
                        .iter()
                        .position(|&b| b == b'\n' || b == b'\r')
                        .unwrap_or(s.len() - i);
                }
                b'\\' => match (s.get(i + 1), s.get(i + 2)) {
                    (Some(b'\r'), Some(b'\n')) => i += 3,
                    (Some(b'\n' | b'\r'), _) => i += 2,
                    _ => {
                        return Err(
                            self.err(i, "unexpected character after line continuation character")
                        )
                    }
                },
                _ => break,
            }
        }
        self.pos = i;
        Ok(())
    }

    /// Skips trivia between tokens; inlined because most calls find none.
    #[inline]
    fn skip(&mut self) -> PResult<()> {
        match self.peek() {
            // A lone space (`key: value`) needs no loop.
            Some(b' ') if !self.peek_at(1).is_some_and(|b| TRIVIA[b as usize]) => {
                self.pos += 1;
                Ok(())
            }
            Some(b) if TRIVIA[b as usize] => self.skip_ws(self.open > 0),
            _ => Ok(()),
        }
    }

    /// After a `,` inside brackets: skips the newline and indentation that
    /// pprint puts there without the general loop, then any other trivia.
    #[inline(always)]
    fn skip_separator(&mut self) -> PResult<()> {
        let s = self.src;
        let mut i = self.pos;
        if s.get(i) == Some(&b'\n') {
            i += 1;
            while s.get(i) == Some(&b' ') {
                i += 1;
            }
            self.pos = i;
        }
        self.skip()
    }

    /// Consumes an opening bracket.
    fn enter(&mut self) -> PResult<()> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err(self.pos, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        self.open += 1;
        self.pos += 1;
        Ok(())
    }

    /// Consumes a closing bracket.
    fn leave(&mut self) {
        self.depth -= 1;
        self.open -= 1;
        self.pos += 1;
    }

    fn ident(&self) -> &'a [u8] {
        let rest = &self.src[self.pos.min(self.src.len())..];
        let len = rest
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
            .unwrap_or(rest.len());
        if rest.first().is_some_and(|b| b.is_ascii_digit()) {
            return &[];
        }
        &rest[..len]
    }

    fn at_generate(&self) -> bool {
        self.ident() == b"generate"
    }

    /// `generate(<literal>)`, the identifier being at the current position.
    fn generate_call(&mut self) -> PResult<Value> {
        self.pos += b"generate".len();
        self.skip()?;
        if self.peek() != Some(b'(') {
            return Err(self.expected("'(' after 'generate'"));
        }
        let open_pos = self.pos;
        self.pos += 1;
        self.open += 1;
        self.skip()?;
        if self.peek() == Some(b')') {
            return Err(self.err(self.pos, "generate() takes exactly one argument"));
        }
        let model = self.expr()?;
        self.skip()?;
        if self.peek() == Some(b',') {
            self.pos += 1;
            self.skip()?;
            if self.peek() != Some(b')') && self.pos < self.src.len() {
                return Err(self.err(self.pos, "generate() takes exactly one argument"));
            }
        }
        if self.peek() != Some(b')') {
            return Err(self.unclosed_or(open_pos, "')' after the argument of generate()"));
        }
        self.pos += 1;
        self.open -= 1;
        Ok(model)
    }

    /// The top-level expression: a value, or a bare tuple `1, 2`.
    fn top_expr(&mut self) -> PResult<Value> {
        if self.pos >= self.src.len() {
            return Err(self.expected("a value"));
        }
        let first = self.expr()?;
        self.skip()?;
        if self.peek() != Some(b',') {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.peek() == Some(b',') {
            self.pos += 1;
            self.skip()?;
            if !self.peek().is_some_and(starts_value) {
                break;
            }
            items.push(self.expr()?);
            self.skip()?;
        }
        Ok(Value::Tuple(items))
    }

    /// Only trivia may follow the top-level expression.
    fn finish(&mut self) -> PResult<()> {
        self.skip_ws(true)?;
        if self.pos < self.src.len() {
            return Err(self.err(
                self.pos,
                format!("unexpected trailing data: {}", self.found()),
            ));
        }
        Ok(())
    }

    /// Parses one expression and pushes it onto `out`.
    ///
    /// Values are built in their final place: returning them through
    /// several calls and copying them each time costs a store-forwarding
    /// stall per move. Plain strings, most of a CMDB, are parsed inline.
    #[inline(always)]
    fn value_into(&mut self, out: &mut Vec<Value>) -> PResult<()> {
        self.skip()?;
        if let Some(bytes) = self.plain_str() {
            self.skip()?;
            if self.at_string() {
                let joined = self.concatenation(Value::Str(bytes))?;
                out.push(joined);
            } else {
                out.push(Value::Str(bytes));
            }
            return Ok(());
        }
        self.other_value_into(out)
    }

    /// `value_into` for everything but plain strings.
    fn other_value_into(&mut self, out: &mut Vec<Value>) -> PResult<()> {
        match self.peek() {
            Some(b'[') => {
                let mut items = Vec::new();
                self.list_items(&mut items, None)?;
                out.push(Value::List(items));
            }
            Some(b'(') => self.paren(out)?,
            Some(b'{') => self.dict(out)?,
            Some(b'\'' | b'"') => {
                let v = self.strings()?;
                out.push(v);
            }
            _ => {
                let v = self.scalar()?;
                out.push(v);
            }
        }
        Ok(())
    }

    /// One expression, returned.
    fn expr(&mut self) -> PResult<Value> {
        let mut one = Vec::with_capacity(1);
        self.value_into(&mut one)?;
        one.pop().ok_or_else(|| self.expected("a value"))
    }

    /// Numbers, names, prefixed strings and signed expressions.
    fn scalar(&mut self) -> PResult<Value> {
        match self.peek() {
            Some(b'-' | b'+') => self.signed(),
            _ if self.at_number() => self.number(false),
            Some(b) if b.is_ascii_alphabetic() || b == b'_' => {
                let name = self.ident();
                let quoted = matches!(self.src.get(self.pos + name.len()), Some(b'\'' | b'"'));
                if quoted && string_prefix(name).is_some() {
                    return self.strings();
                }
                let value = match name {
                    b"True" => Value::Bool(true),
                    b"False" => Value::Bool(false),
                    b"None" => Value::None,
                    b"generate" => {
                        return Err(
                            self.err(self.pos, "generate() is only allowed around the whole file")
                        )
                    }
                    _ if quoted => {
                        return Err(
                            self.err(self.pos, format!("invalid string prefix '{}'", lossy(name)))
                        )
                    }
                    _ => return Err(self.err(self.pos, format!("unknown name '{}'", lossy(name)))),
                };
                self.pos += name.len();
                Ok(value)
            }
            _ => Err(self.expected("a value")),
        }
    }

    /// An expression starting with unary signs.
    fn signed(&mut self) -> PResult<Value> {
        // Signs are collected rather than recursed into: `------1` cannot
        // overflow the stack.
        let mut ops = Vec::new();
        while let Some(op @ (b'-' | b'+')) = self.peek() {
            ops.push((op, self.pos));
            self.pos += 1;
            self.skip()?;
        }
        // Python folds a minus directly before a number into the literal:
        // -9223372036854775808 is an int, -(9223372036854775808) a long.
        let mut value = match ops.last() {
            Some(&(b'-', _)) if self.at_number() => {
                ops.pop();
                self.number(true)?
            }
            _ => self.expr()?,
        };
        for &(op, at) in ops.iter().rev() {
            value = unary(op, value).map_err(|msg| self.err(at, msg))?;
        }
        Ok(value)
    }

    fn at_number(&self) -> bool {
        match self.peek() {
            Some(b'0'..=b'9') => true,
            Some(b'.') => self.peek_at(1).is_some_and(|b| b.is_ascii_digit()),
            _ => false,
        }
    }

    /// `[a, b, ...]`: elements are pushed onto `items`, or when streaming
    /// handed one by one to `each`.
    fn list_items(
        &mut self,
        items: &mut Vec<Value>,
        mut each: Option<&mut dyn ListSink>,
    ) -> PResult<()> {
        let open_pos = self.pos;
        self.enter()?;
        self.skip()?;
        let mut flat = Vec::new();
        while self.peek() != Some(b']') {
            if let Some(each) = each.as_deref_mut() {
                if !self.flat_dict(each, &mut flat) {
                    self.value_into(items)?;
                    if let Some(item) = items.pop() {
                        each.value(item).map_err(Box::new)?;
                    }
                }
            } else {
                self.value_into(items)?;
            }
            self.skip()?;
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_separator()?;
                }
                Some(b']') => break,
                _ => return Err(self.unclosed_or(open_pos, "',' or ']' after list element")),
            }
        }
        self.leave();
        Ok(())
    }

    /// `()`, `(x,)`, `(x, y)` or a parenthesised `(x)`, pushed onto `out`.
    fn paren(&mut self, out: &mut Vec<Value>) -> PResult<()> {
        let open_pos = self.pos;
        self.enter()?;
        self.skip()?;
        let mut items = Vec::new();
        if self.peek() != Some(b')') {
            self.value_into(&mut items)?;
            self.skip()?;
            if self.peek() == Some(b')') {
                self.leave();
                out.append(&mut items);
                return Ok(());
            }
            loop {
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.skip()?;
                    }
                    Some(b')') => break,
                    _ => return Err(self.unclosed_or(open_pos, "',' or ')' after tuple element")),
                }
                if self.peek() == Some(b')') {
                    break;
                }
                self.value_into(&mut items)?;
                self.skip()?;
            }
        }
        self.leave();
        out.push(Value::Tuple(items));
        Ok(())
    }

    /// `{k: v, ...}`, pushed onto `out`.
    fn dict(&mut self, out: &mut Vec<Value>) -> PResult<()> {
        let open_pos = self.pos;
        self.enter()?;
        self.skip()?;
        // Room for four items (a CMDB entry) at once, not grown 0, 4, 8.
        let mut flat = Vec::with_capacity(8);
        while self.peek() != Some(b'}') {
            if self.plain_item(&mut flat) {
                // It stopped on the ',' or '}' that follows the item.
                if self.peek() == Some(b'}') {
                    break;
                }
                self.pos += 1;
                self.skip_separator()?;
                continue;
            }
            let key_pos = self.pos;
            self.value_into(&mut flat)?;
            if let Some(kind) = flat.last().and_then(unhashable) {
                return Err(self.err(key_pos, format!("unhashable dict key (a {kind})")));
            }
            self.skip()?;
            if self.peek() != Some(b':') {
                return Err(self.unclosed_or(open_pos, "':' after dict key"));
            }
            self.pos += 1;
            self.value_into(&mut flat)?;
            self.skip()?;
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip()?;
                }
                Some(b'}') => break,
                _ => return Err(self.unclosed_or(open_pos, "',' or '}' after dict value")),
            }
        }
        self.leave();
        out.push(Value::Dict(Dict::from_flat(flat)));
        Ok(())
    }

    /// Fast lane for the items pprint writes in CMDB files: `'key': 'text'`
    /// or `'key': 123` (plain strings, a small decimal int) directly
    /// followed by `,` or `}`. Parses the item and stops on that delimiter;
    /// anything else is left untouched (false) for the general path, which
    /// would give the same result, only slower.
    #[inline(always)]
    fn plain_item(&mut self, flat: &mut Vec<Value>) -> bool {
        let Some((key, value, end)) = self.plain_item_at() else {
            return false;
        };
        flat.push(Value::Str(key.to_vec()));
        flat.push(match value {
            Plain::Int(v) => Value::Int(v),
            Plain::Str(b) => Value::Str(b.to_vec()),
        });
        self.pos = end;
        true
    }

    /// Offers the element at the current position to `sink` when it is a
    /// flat dict of plain items (`plain_item_at`) with unique keys; then
    /// true, past the dict. Otherwise false, nothing consumed: the general
    /// path parses it (and reports any error).
    fn flat_dict<'b>(
        &mut self,
        sink: &mut dyn ListSink,
        flat: &mut Vec<(&'b [u8], Plain<'b>)>,
    ) -> bool
    where
        'a: 'b,
    {
        let start = self.pos;
        let found = self.flat_items(flat);
        if found {
            // Files written by pprint have their keys sorted already.
            let ascending = |f: &[(&[u8], Plain)]| f.windows(2).all(|w| key_lt(w[0].0, w[1].0));
            if !ascending(flat) {
                flat.sort_unstable_by(|a, b| a.0.cmp(b.0));
            }
            // Still not ascending: a key is repeated.
            if ascending(flat) && sink.flat(&FlatDict { items: flat }) {
                return true;
            }
        }
        self.pos = start;
        false
    }

    /// Reads a flat dict's items into `flat`, and moves past its `}`.
    fn flat_items<'b>(&mut self, flat: &mut Vec<(&'b [u8], Plain<'b>)>) -> bool
    where
        'a: 'b,
    {
        flat.clear();
        // Inside the list, whose depth was already checked: one more level.
        if self.skip().is_err() || self.peek() != Some(b'{') || self.depth >= MAX_DEPTH {
            return false;
        }
        self.pos += 1;
        loop {
            if self.skip().is_err() {
                return false;
            }
            if self.peek() == Some(b'}') {
                break;
            }
            let Some((key, value, end)) = self.plain_item_at() else {
                return false;
            };
            flat.push((key, value));
            self.pos = end;
            if self.peek() == Some(b'}') {
                break;
            }
            self.pos += 1;
            if self.skip_separator().is_err() {
                return false;
            }
        }
        self.pos += 1;
        true
    }

    /// The plain item (see `plain_item`) at the current position: key and
    /// value as written, and the position of the `,` or `}` after it.
    #[inline(always)]
    fn plain_item_at(&self) -> Option<(&'a [u8], Plain<'a>, usize)> {
        let s = self.src;
        let plain_str_end = |at: usize| -> Option<usize> {
            let q = *s.get(at).filter(|&&b| b == b'\'' || b == b'"')?;
            let len = find_string_stop(s.get(at + 1..)?, q)?;
            (len > 0 && s.get(at + 1 + len) == Some(&q)).then_some(at + 1 + len)
        };
        let key_start = self.pos;
        let key_end = plain_str_end(key_start)?;
        if s.get(key_end + 1) != Some(&b':') {
            return None;
        }
        let mut at = key_end + 2;
        if s.get(at) == Some(&b' ') {
            at += 1;
        }
        let (value_end, value) = match s.get(at) {
            Some(b'\'' | b'"') => {
                let end = plain_str_end(at)?;
                (end + 1, Plain::Str(s.get(at + 1..end)?))
            }
            Some(b'0'..=b'9') => {
                let digits = s[at..].iter().take(19).take_while(|b| b.is_ascii_digit());
                let (n, v) = digits.fold((0, 0i64), |(n, v), &d| {
                    (n + 1, v.wrapping_mul(10).wrapping_add((d - b'0') as i64))
                });
                // Not old octal (017), nor 19 digits that may overflow.
                if n > 18 || (n > 1 && s[at] == b'0') {
                    return None;
                }
                (at + n, Plain::Int(v))
            }
            _ => return None,
        };
        if !matches!(s.get(value_end), Some(b',' | b'}')) {
            return None;
        }
        Some((s.get(key_start + 1..key_end)?, value, value_end))
    }

    /// Integer or float literal; `negative` when a folded `-` preceded it.
    fn number(&mut self, negative: bool) -> PResult<Value> {
        let start = self.pos;
        let s = self.src;
        let digits_end = |from: usize, radix: u32| {
            from + s[from..]
                .iter()
                .position(|&b| !(b as char).is_digit(radix))
                .unwrap_or(s.len() - from)
        };
        let invalid = |p: &Parser, msg: &str| p.err(start, msg.to_string());
        let prefixed = match (s.get(start), s.get(start + 1)) {
            (Some(b'0'), Some(b'x' | b'X')) => Some(16),
            (Some(b'0'), Some(b'o' | b'O')) => Some(8),
            (Some(b'0'), Some(b'b' | b'B')) => Some(2),
            _ => None,
        };
        let (digits, radix, mut end) = if let Some(radix) = prefixed {
            let end = digits_end(start + 2, radix);
            if end == start + 2 {
                return Err(invalid(self, "invalid number literal"));
            }
            (&s[start + 2..end], radix, end)
        } else {
            let int_end = digits_end(start, 10);
            let mut end = int_end;
            let mut float = false;
            if s.get(end) == Some(&b'.') {
                float = true;
                end = digits_end(end + 1, 10);
            }
            if matches!(s.get(end), Some(b'e' | b'E')) {
                float = true;
                let mut e = end + 1;
                if matches!(s.get(e), Some(b'+' | b'-')) {
                    e += 1;
                }
                let e_end = digits_end(e, 10);
                if e_end == e {
                    return Err(invalid(self, "invalid number literal (bad exponent)"));
                }
                end = e_end;
            }
            if matches!(s.get(end), Some(b'j' | b'J')) {
                return Err(invalid(self, "complex numbers are not supported"));
            }
            if float {
                let text = std::str::from_utf8(&s[start..end]).unwrap_or("");
                let f: f64 = text
                    .parse()
                    .map_err(|_| invalid(self, "invalid float literal"))?;
                self.pos = end;
                self.no_ident_after(start)?;
                return Ok(Value::Float(if negative { -f } else { f }));
            }
            let digits = &s[start..int_end];
            if digits.len() > 1 && digits[0] == b'0' {
                // Python 2 octal: 017 == 15; 08 is an error.
                if digits.iter().any(|&b| b > b'7') {
                    return Err(invalid(
                        self,
                        "invalid number literal (octal digit expected)",
                    ));
                }
                (&digits[1..], 8, int_end)
            } else {
                (digits, 10, int_end)
            }
        };
        let long = matches!(s.get(end), Some(b'l' | b'L'));
        if long {
            end += 1;
        }
        let mut magnitude: u128 = 0;
        for &d in digits {
            let d = (d as char).to_digit(radix).unwrap_or(0) as u128;
            magnitude = magnitude
                .checked_mul(radix as u128)
                .and_then(|m| m.checked_add(d))
                .ok_or_else(|| invalid(self, "integer literal too large (beyond 128 bits)"))?;
        }
        let value = if negative {
            if magnitude > i128::MAX as u128 + 1 {
                return Err(invalid(self, "integer literal too large (beyond 128 bits)"));
            }
            (magnitude as i128).wrapping_neg()
        } else {
            i128::try_from(magnitude)
                .map_err(|_| invalid(self, "integer literal too large (beyond 128 bits)"))?
        };
        self.pos = end;
        self.no_ident_after(start)?;
        Ok(match i64::try_from(value) {
            Ok(i) if !long => Value::Int(i),
            _ => Value::Long(value),
        })
    }

    /// `1x`, `0L0`, `1e5L`: a number glued to a name is a syntax error.
    fn no_ident_after(&self, start: usize) -> PResult<()> {
        match self.peek() {
            Some(b) if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' => {
                Err(self.err(start, "invalid number literal"))
            }
            _ => Ok(()),
        }
    }

    #[inline]
    fn at_string(&self) -> bool {
        match self.peek() {
            Some(b'\'' | b'"') => true,
            Some(b) if b.is_ascii_alphabetic() => self.at_prefixed_string(),
            _ => false,
        }
    }

    fn at_prefixed_string(&self) -> bool {
        let name = self.ident();
        string_prefix(name).is_some()
            && matches!(self.src.get(self.pos + name.len()), Some(b'\'' | b'"'))
    }

    /// Adjacent literals concatenate: `'a' "b"`; unicode if any part is.
    fn strings(&mut self) -> PResult<Value> {
        let value = self.string_literal()?;
        self.skip()?;
        if self.at_string() {
            self.concatenation(value)
        } else {
            Ok(value)
        }
    }

    fn concatenation(&mut self, mut value: Value) -> PResult<Value> {
        while self.at_string() {
            let part_pos = self.pos;
            let part = self.string_literal()?;
            value = match (value, part) {
                (Value::Str(mut a), Value::Str(b)) => {
                    a.extend_from_slice(&b);
                    Value::Str(a)
                }
                (Value::Unicode(mut a), Value::Unicode(b)) => {
                    a.push_str(&b);
                    Value::Unicode(a)
                }
                (Value::Str(a), Value::Unicode(b)) => match String::from_utf8(a) {
                    Ok(mut s) if s.is_ascii() => {
                        s.push_str(&b);
                        Value::Unicode(s)
                    }
                    _ => return Err(self.err(part_pos, NON_ASCII_CONCAT)),
                },
                (Value::Unicode(mut a), Value::Str(b)) if b.is_ascii() => {
                    a.extend(b.iter().map(|&c| c as char));
                    Value::Unicode(a)
                }
                _ => return Err(self.err(part_pos, NON_ASCII_CONCAT)),
            };
            self.skip()?;
        }
        Ok(value)
    }

    /// One string literal.
    fn string_literal(&mut self) -> PResult<Value> {
        match self.plain_str() {
            Some(bytes) => Ok(Value::Str(bytes)),
            None => self.general_string_literal(),
        }
    }

    /// The common `'plain text'` literal (no prefix, escape or triple
    /// quote) at the current position, consumed; None for the others.
    #[inline(always)]
    fn plain_str(&mut self) -> Option<Vec<u8>> {
        let q = self.peek().filter(|&b| b == b'\'' || b == b'"')?;
        let body = self.src.get(self.pos + 1..)?;
        let end = find_string_stop(body, q)?;
        if end == 0 || body.get(end) != Some(&q) {
            return None; // '' or ''', an escape, or a newline
        }
        self.pos += end + 2;
        Some(body[..end].to_vec())
    }

    /// One string literal with its prefix, at the current position.
    fn general_string_literal(&mut self) -> PResult<Value> {
        let start = self.pos;
        let prefix = self.ident();
        let (unicode, raw) = string_prefix(prefix).unwrap_or((false, false));
        let s = self.src;
        let qpos = start + prefix.len();
        let Some(&q) = s.get(qpos) else {
            return Err(self.err(start, "unterminated string"));
        };
        let triple = s.get(qpos + 1) == Some(&q) && s.get(qpos + 2) == Some(&q);
        let body_start = qpos + if triple { 3 } else { 1 };
        let mut i = body_start;
        let mut plain = true;
        let body_end = loop {
            let Some(off) = s[i..]
                .iter()
                .position(|&b| b == q || b == b'\\' || b == b'\n' || b == b'\r')
            else {
                return Err(self.err(start, "unterminated string"));
            };
            i += off;
            match s[i] {
                b'\\' => {
                    plain = false;
                    i += match (s.get(i + 1), s.get(i + 2)) {
                        (None, _) => return Err(self.err(start, "unterminated string")),
                        (Some(b'\r'), Some(b'\n')) => 3,
                        _ => 2,
                    };
                }
                b'\n' | b'\r' if !triple => {
                    return Err(self.err(start, "unterminated string (end of line)"))
                }
                b'\n' => i += 1,
                b'\r' => {
                    plain = false;
                    i += 1;
                }
                _ if !triple => {
                    self.pos = i + 1;
                    break i;
                }
                _ if s.get(i + 1) == Some(&q) && s.get(i + 2) == Some(&q) => {
                    self.pos = i + 3;
                    break i;
                }
                _ => i += 1,
            }
        };
        let body = &s[body_start..body_end];
        let decoded = match (unicode, raw) {
            (false, _) if plain => Ok(Value::Str(body.to_vec())),
            (false, false) => decode_str(body).map(Value::Str),
            (false, true) => Ok(Value::Str(normalize_newlines(body))),
            (true, _) if plain && body.is_ascii() => {
                Ok(Value::Unicode(String::from_utf8_lossy(body).into_owned()))
            }
            (true, raw) => decode_unicode(body, raw, self.encoding).map(Value::Unicode),
        };
        decoded.map_err(|(off, msg)| self.err(body_start + off, msg))
    }
}

/// `a < b` bytewise, deciding on the first byte without a memcmp call
/// when it differs (as for most neighbouring keys of a dict).
#[inline(always)]
fn key_lt(a: &[u8], b: &[u8]) -> bool {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x < y,
        _ => a < b,
    }
}

/// Index of the first byte of `s` that ends or complicates a string
/// literal: the quote `q`, a backslash, or a control byte below 0x0e (which
/// includes the newlines). Scans eight bytes at a time with the classic
/// "has a zero byte" bit trick: string bodies are most of a CMDB file.
fn find_string_stop(s: &[u8], q: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let below = |w: u64, n: u8| w.wrapping_sub(LO * n as u64) & !w & HI;
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let w = u64::from_le_bytes(bytes);
        let hits =
            below(w ^ (LO * q as u64), 1) | below(w ^ (LO * b'\\' as u64), 1) | below(w, 0x0e);
        if hits != 0 {
            // Borrows only create false hits above a true one.
            return Some(at + hits.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == q || b == b'\\' || b < 0x0e)
        .map(|i| at + i)
}

const NON_ASCII_CONCAT: &str = "cannot concatenate a non-ASCII str literal with a unicode literal";

/// Bytes that can start an expression, to tell `1, 2` from `1,` at top level.
fn starts_value(b: u8) -> bool {
    matches!(
        b,
        b'[' | b'(' | b'{' | b'\'' | b'"' | b'-' | b'+' | b'.' | b'_'
    ) || b.is_ascii_alphanumeric()
}

/// `(unicode, raw)` for a valid Python 2 string prefix: `[uUbB]?[rR]?`.
fn string_prefix(p: &[u8]) -> Option<(bool, bool)> {
    match p {
        [] => Some((false, false)),
        [a] => match a.to_ascii_lowercase() {
            b'u' => Some((true, false)),
            b'b' => Some((false, false)),
            b'r' => Some((false, true)),
            _ => None,
        },
        [a, r] if r.eq_ignore_ascii_case(&b'r') => match a.to_ascii_lowercase() {
            b'u' => Some((true, true)),
            b'b' => Some((false, true)),
            _ => None,
        },
        _ => None,
    }
}

fn unary(op: u8, v: Value) -> Result<Value, String> {
    let neg = op == b'-';
    Ok(match v {
        Value::Bool(b) => Value::Int(if neg { -(b as i64) } else { b as i64 }),
        Value::Int(i) if neg => i
            .checked_neg()
            .map_or(Value::Long(-(i as i128)), Value::Int),
        Value::Long(i) if neg => Value::Long(
            i.checked_neg()
                .ok_or_else(|| "integer too large (beyond 128 bits)".to_string())?,
        ),
        Value::Float(f) if neg => Value::Float(-f),
        v @ (Value::Int(_) | Value::Long(_) | Value::Float(_)) => v,
        other => {
            return Err(format!(
                "bad operand type for unary {}: '{}'",
                op as char,
                other.type_name()
            ))
        }
    })
}

/// The type name that makes a dict key unhashable, if any.
fn unhashable(v: &Value) -> Option<&'static str> {
    match v {
        Value::List(_) | Value::Dict(_) => Some(v.type_name()),
        Value::Tuple(items) => items.iter().find_map(unhashable),
        _ => None,
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn trim_blank(line: &[u8]) -> &[u8] {
    let n = line
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t' | b'\x0c'))
        .unwrap_or(line.len());
    &line[n..]
}

/// `coding[:=][ \t]*NAME` inside a comment line: offset and NAME.
fn coding_spec(comment: &[u8]) -> Option<(usize, &[u8])> {
    let mut from = 0;
    while let Some(off) = comment.get(from..)?.windows(6).position(|w| w == b"coding") {
        let after = from + off + 6;
        from = after;
        if !matches!(comment.get(after), Some(b':' | b'=')) {
            continue;
        }
        let begin = after + 1 + trim_len(&comment[after + 1..]);
        let len = comment[begin..]
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
            .unwrap_or(comment.len() - begin);
        if len > 0 {
            return Some((begin, &comment[begin..begin + len]));
        }
    }
    None
}

fn trim_len(b: &[u8]) -> usize {
    b.iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(b.len())
}

/// The encodings we can honour in a coding declaration.
fn normal_encoding(name: &[u8]) -> Option<Encoding> {
    let n: String = String::from_utf8_lossy(name)
        .to_ascii_lowercase()
        .replace('_', "-");
    let is = |base: &str| n == base || n.starts_with(&format!("{base}-"));
    if is("utf-8") || n == "utf8" || n == "u8" {
        Some(Encoding::Utf8)
    } else if is("latin-1")
        || is("iso-8859-1")
        || is("iso-latin-1")
        || matches!(n.as_str(), "latin1" | "iso8859-1" | "l1" | "latin")
    {
        Some(Encoding::Latin1)
    } else if matches!(n.as_str(), "ascii" | "us-ascii" | "646") {
        Some(Encoding::Ascii)
    } else {
        None
    }
}

/// Python reads `\r\n` and `\r` as `\n` everywhere in the source.
fn normalize_newlines(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while let Some(off) = body[i..].iter().position(|&b| b == b'\r') {
        out.extend_from_slice(&body[i..i + off]);
        out.push(b'\n');
        i += off + 1;
        if body.get(i) == Some(&b'\n') {
            i += 1;
        }
    }
    out.extend_from_slice(&body[i..]);
    out
}

/// Length of the newline at `body[i..]` (after a backslash): 0 if none.
fn newline_len(body: &[u8], i: usize) -> usize {
    match (body.get(i), body.get(i + 1)) {
        (Some(b'\r'), Some(b'\n')) => 2,
        (Some(b'\n' | b'\r'), _) => 1,
        _ => 0,
    }
}

/// Value of the `n` hex digits at `body[i..]`, if they all are hex digits.
fn hex_at(body: &[u8], i: usize, n: usize) -> Option<u32> {
    let digits = body.get(i..i + n)?;
    digits
        .iter()
        .try_fold(0u32, |acc, &b| Some(acc * 16 + (b as char).to_digit(16)?))
}

/// Up to three octal digits at `body[i..]`: value and count (the first is
/// known to be octal).
fn octal_at(body: &[u8], i: usize) -> (u32, usize) {
    let mut v = 0;
    let mut n = 0;
    while n < 3 {
        match body.get(i + n) {
            Some(&b @ b'0'..=b'7') => v = v * 8 + (b - b'0') as u32,
            _ => break,
        }
        n += 1;
    }
    (v, n)
}

/// The character escaped by `\c` in both str and unicode literals.
fn simple_escape(c: u8) -> Option<u8> {
    Some(match c {
        b'\\' | b'\'' | b'"' => c,
        b'a' => 0x07,
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'v' => 0x0b,
        _ => return None,
    })
}

/// Body of a non-raw str literal (Python 2 `string-escape` rules).
fn decode_str(body: &[u8]) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let off = body[i..]
            .iter()
            .position(|&b| b == b'\\' || b == b'\r')
            .unwrap_or(body.len() - i);
        out.extend_from_slice(&body[i..i + off]);
        i += off;
        match body.get(i) {
            None => break,
            Some(b'\r') => {
                out.push(b'\n');
                i += newline_len(body, i);
                continue;
            }
            Some(_) => {}
        }
        let esc = i;
        let Some(&c) = body.get(i + 1) else {
            return Err((esc, "unterminated string"));
        };
        i += 2;
        if let Some(b) = simple_escape(c) {
            out.push(b);
        } else if let n @ 1.. = newline_len(body, i - 1) {
            i += n - 1;
        } else if let b'0'..=b'7' = c {
            let (v, n) = octal_at(body, i - 1);
            out.push(v as u8);
            i += n - 1;
        } else if c == b'x' {
            let v = hex_at(body, i, 2).ok_or((esc, "invalid \\x escape"))?;
            out.push(v as u8);
            i += 2;
        } else {
            // Unknown escapes keep their backslash.
            out.push(b'\\');
            i -= 1;
        }
    }
    Ok(out)
}

/// Pushes raw source bytes of a unicode literal as characters.
fn push_source_text(
    out: &mut String,
    chunk: &[u8],
    encoding: Encoding,
) -> Result<(), &'static str> {
    match encoding {
        Encoding::Latin1 => out.extend(chunk.iter().map(|&b| b as char)),
        Encoding::Utf8 | Encoding::Ascii => out
            .push_str(std::str::from_utf8(chunk).map_err(|_| "invalid UTF-8 in unicode literal")?),
    }
    Ok(())
}

fn code_point(v: u32) -> Result<char, &'static str> {
    match v {
        0xd800..=0xdfff => Err("surrogate code points (\\ud800-\\udfff) are not supported"),
        _ => char::from_u32(v).ok_or("illegal Unicode character (beyond \\U0010ffff)"),
    }
}

/// Body of a unicode literal: `unicode-escape` rules, or for `ur''`
/// `raw-unicode-escape` (only `\u`/`\U` after an odd run of backslashes).
fn decode_unicode(body: &[u8], raw: bool, encoding: Encoding) -> Result<String, BodyError> {
    let mut out = String::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let off = body[i..]
            .iter()
            .position(|&b| b == b'\\' || b == b'\r')
            .unwrap_or(body.len() - i);
        push_source_text(&mut out, &body[i..i + off], encoding).map_err(|m| (i, m))?;
        i += off;
        match body.get(i) {
            None => break,
            Some(b'\r') => {
                out.push('\n');
                i += newline_len(body, i);
                continue;
            }
            Some(_) => {}
        }
        let esc = i;
        if raw {
            let run = body[i..].iter().take_while(|&&b| b == b'\\').count();
            i += run;
            let width = match body.get(i) {
                Some(b'u') if run % 2 == 1 => 4,
                Some(b'U') if run % 2 == 1 => 8,
                _ => {
                    out.extend(std::iter::repeat_n('\\', run));
                    continue;
                }
            };
            out.extend(std::iter::repeat_n('\\', run - 1));
            let v = hex_at(body, i + 1, width).ok_or((i - 1, TRUNCATED_U[width / 8]))?;
            out.push(code_point(v).map_err(|m| (i - 1, m))?);
            i += 1 + width;
            continue;
        }
        let Some(&c) = body.get(i + 1) else {
            return Err((esc, "unterminated string"));
        };
        i += 2;
        if let Some(b) = simple_escape(c) {
            out.push(b as char);
        } else if let n @ 1.. = newline_len(body, i - 1) {
            i += n - 1;
        } else if let b'0'..=b'7' = c {
            let (v, n) = octal_at(body, i - 1);
            out.push(code_point(v).map_err(|m| (esc, m))?);
            i += n - 1;
        } else if let Some(width) = match c {
            b'x' => Some(2),
            b'u' => Some(4),
            b'U' => Some(8),
            _ => None,
        } {
            let msg = match width {
                2 => "truncated \\xXX escape",
                w => TRUNCATED_U[w / 8],
            };
            let v = hex_at(body, i, width).ok_or((esc, msg))?;
            out.push(code_point(v).map_err(|m| (esc, m))?);
            i += width;
        } else if c == b'N' {
            return Err((esc, "\\N{...} escapes are not supported"));
        } else {
            out.push('\\');
            i -= 1;
        }
    }
    Ok(out)
}

const TRUNCATED_U: [&str; 2] = ["truncated \\uXXXX escape", "truncated \\UXXXXXXXX escape"];

/// pprint's line width.
const WIDTH: usize = 80;

/// Python 2.7 `repr(value)`.
///
/// Dict items come out sorted, as `pprint.saferepr` writes them (the
/// builtin `repr` follows hash order, which no file relies on).
pub fn repr(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_repr(&mut out, value);
    out
}

/// Python 2.7 `pprint.pprint(value)` output, trailing newline included.
pub fn pformat(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    format_at(&mut out, value, 0, 0);
    out.push(b'\n');
    out
}

/// Python 2.7 `PrettyPrinter._format(value, indent, allowance)`: appends the
/// pretty form of `value` as if it started at column `indent` (no newline).
/// Lets callers print a huge top-level list one element at a time.
pub fn format_at(out: &mut Vec<u8>, value: &Value, indent: usize, allowance: usize) {
    // pprint splits a container over lines only when its repr is longer than
    // `width - 1 - indent - allowance`; when it fits, the pretty form is the
    // repr itself (every part then fits too).
    let split = |v: &Value| match (WIDTH - 1).checked_sub(indent.saturating_add(allowance)) {
        Some(room) => !repr_fits(v, room),
        None => true,
    };
    let inner = indent.saturating_add(1);
    let allowance = allowance.saturating_add(1);
    match value {
        Value::Dict(d) if !d.is_empty() && split(value) => {
            out.push(b'{');
            let mut first = true;
            d.for_each_sorted(|k, v| {
                if !first {
                    out.extend_from_slice(b",\n");
                    pad(out, inner);
                }
                first = false;
                let before = out.len();
                write_repr(out, k);
                let key_len = out.len() - before;
                out.extend_from_slice(b": ");
                format_at(out, v, inner.saturating_add(key_len + 2), allowance);
            });
            out.push(b'}');
        }
        Value::List(items) | Value::Tuple(items) if !items.is_empty() && split(value) => {
            let tuple = matches!(value, Value::Tuple(_));
            out.push(if tuple { b'(' } else { b'[' });
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b",\n");
                    pad(out, inner);
                }
                format_at(out, item, inner, allowance);
            }
            if tuple && items.len() == 1 {
                out.push(b',');
            }
            out.push(if tuple { b')' } else { b']' });
        }
        _ => write_repr(out, value),
    }
}

fn pad(out: &mut Vec<u8>, n: usize) {
    const SPACES: &[u8; 32] = b"                                ";
    match SPACES.get(..n) {
        Some(spaces) => out.extend_from_slice(spaces),
        None => out.resize(out.len() + n, b' '),
    }
}

#[inline(always)]
fn write_repr(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Str(b) => write_str_repr(out, b),
        _ => write_other_repr(out, value),
    }
}

fn write_other_repr(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::None => out.extend_from_slice(b"None"),
        Value::Bool(true) => out.extend_from_slice(b"True"),
        Value::Bool(false) => out.extend_from_slice(b"False"),
        Value::Int(i) => write_int(out, *i as i128),
        Value::Long(i) => {
            write_int(out, *i);
            out.push(b'L');
        }
        Value::Float(f) => write_float(out, *f),
        Value::Str(b) => write_str_repr(out, b),
        Value::Unicode(s) => write_unicode_repr(out, s),
        Value::List(items) => {
            out.push(b'[');
            write_items(out, items);
            out.push(b']');
        }
        Value::Tuple(items) => {
            out.push(b'(');
            write_items(out, items);
            if items.len() == 1 {
                out.push(b',');
            }
            out.push(b')');
        }
        Value::Dict(d) => {
            out.push(b'{');
            let mut first = true;
            d.for_each_sorted(|k, v| {
                if !first {
                    out.extend_from_slice(b", ");
                }
                first = false;
                write_repr(out, k);
                out.extend_from_slice(b": ");
                write_repr(out, v);
            });
            out.push(b'}');
        }
    }
}

fn write_items(out: &mut Vec<u8>, items: &[Value]) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        write_repr(out, item);
    }
}

fn write_int(out: &mut Vec<u8>, i: i128) {
    let mut buf = [0u8; 40];
    let mut n = i.unsigned_abs();
    let mut at = buf.len();
    // 128-bit division is a library call: only for the digits beyond u64.
    while n > u64::MAX as u128 {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let mut n = n as u64;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    out.extend_from_slice(&buf[at..]);
}

fn int_len(i: i128) -> usize {
    let n = i.unsigned_abs();
    let sign = (i < 0) as usize;
    match u64::try_from(n) {
        Ok(n) => sign + n.checked_ilog10().unwrap_or(0) as usize + 1,
        Err(_) => sign + n.ilog10() as usize + 1,
    }
}

/// Python 2.7 `repr(float)`: the shortest digits that round-trip, in
/// positional form when the decimal exponent is in [-4, 16), else
/// `d.ddde+XX`; integral values get `.0`.
fn write_float(out: &mut Vec<u8>, f: f64) {
    if f.is_nan() {
        out.extend_from_slice(b"nan");
        return;
    }
    if f.is_infinite() {
        out.extend_from_slice(if f < 0.0 { b"-inf" } else { b"inf" });
        return;
    }
    // Python's digits are the shortest that round-trip and, among those,
    // the closest to the exact value. Rust's `{:e}` gives the shortest
    // length but not always the closest digits (1530168601031372.3 instead
    // of ...372.2), so the value is formatted again, correctly rounded to
    // that many digits: the closest decimal of that length.
    let (_, shortest, _) = scientific(f.abs(), None);
    let (digits, mut nd, exp) = scientific(f.abs(), Some(shortest.saturating_sub(1)));
    while nd > 1 && digits[nd - 1] == b'0' {
        nd -= 1;
    }
    let digits = &digits[..nd];
    let decpt = exp + 1;
    if f.is_sign_negative() {
        out.push(b'-');
    }
    if !(-4 < decpt && decpt <= 16) {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        if exp.abs() < 10 {
            out.push(b'0');
        }
        write_int(out, exp.abs() as i128);
    } else if decpt <= 0 {
        out.extend_from_slice(b"0.");
        pad_with(out, b'0', (-decpt) as usize);
        out.extend_from_slice(digits);
    } else if decpt as usize >= digits.len() {
        out.extend_from_slice(digits);
        pad_with(out, b'0', decpt as usize - digits.len());
        out.extend_from_slice(b".0");
    } else {
        let (int, frac) = digits.split_at(decpt as usize);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    }
}

/// The mantissa digits (at least one), their count and the decimal exponent
/// of `f` (finite, non-negative) in `{:e}` form, shortest or with
/// `precision` digits after the point.
fn scientific(f: f64, precision: Option<usize>) -> ([u8; 24], usize, i32) {
    let mut buf = [0u8; 40];
    let len = {
        let mut cursor = &mut buf[..];
        let _ = match precision {
            None => write!(cursor, "{f:e}"),
            Some(p) => write!(cursor, "{f:.p$e}"),
        };
        40 - cursor.len()
    };
    let text = &buf[..len];
    let e = text.iter().position(|&b| b == b'e').unwrap_or(len);
    let exp = std::str::from_utf8(text.get(e + 1..).unwrap_or(b"0"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut digits = [b'0'; 24];
    let mut nd = 0;
    for &b in text[..e].iter().filter(|b| b.is_ascii_digit()).take(24) {
        digits[nd] = b;
        nd += 1;
    }
    (digits, nd.max(1), exp)
}

fn pad_with(out: &mut Vec<u8>, b: u8, n: usize) {
    out.resize(out.len() + n, b);
}

/// The quote Python 2 puts around a string: `"` only if it avoids escaping.
fn quote_for(has_single: bool, has_double: bool) -> u8 {
    if has_single && !has_double {
        b'"'
    } else {
        b'\''
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Per byte of a str, what its repr adds to the byte itself (quotes aside:
/// they depend on the quote chosen): `\\` `\t` `\n` `\r` one, `\xNN` three.
static STR_EXTRA: [u8; 256] = {
    let mut t = [3u8; 256];
    let mut i = 0x20;
    while i < 0x7f {
        t[i] = 0;
        i += 1;
    }
    t[b'\\' as usize] = 1;
    t[b'\t' as usize] = 1;
    t[b'\n' as usize] = 1;
    t[b'\r' as usize] = 1;
    t
};

/// 1 for the bytes a str repr does not show as themselves.
static NOT_PLAIN: [u8; 256] = {
    let mut t = [1u8; 256];
    let mut i = 0x20;
    while i < 0x7f {
        t[i] = 0;
        i += 1;
    }
    t[b'\\' as usize] = 1;
    t[b'\'' as usize] = 1;
    t[b'"' as usize] = 1;
    t
};

/// The quote of a str's repr and the repr's length.
#[inline(always)]
fn str_repr_shape(b: &[u8]) -> (u8, usize) {
    // Most strings need no escape nor quote choice: one cheap pass.
    if b.iter().fold(0, |m, &c| m | NOT_PLAIN[c as usize]) == 0 {
        return (b'\'', b.len() + 2);
    }
    let (mut extra, mut single, mut double) = (0usize, 0usize, false);
    for &c in b {
        extra += STR_EXTRA[c as usize] as usize;
        single += (c == b'\'') as usize;
        double |= c == b'"';
    }
    let q = quote_for(single > 0, double);
    let quotes = if q == b'\'' { single } else { 0 };
    (q, 2 + b.len() + extra + quotes)
}

#[inline(always)]
fn write_str_repr(out: &mut Vec<u8>, b: &[u8]) {
    let (q, len) = str_repr_shape(b);
    if len == b.len() + 2 {
        out.reserve(len);
        out.push(q);
        out.extend_from_slice(b);
        out.push(q);
    } else {
        write_escaped_str(out, b, q);
    }
}

fn write_escaped_str(out: &mut Vec<u8>, b: &[u8], q: u8) {
    out.push(q);
    let mut i = 0;
    while i < b.len() {
        let run = b[i..]
            .iter()
            .position(|&c| c == q || c == b'\\' || !(0x20..0x7f).contains(&c))
            .unwrap_or(b.len() - i);
        out.extend_from_slice(&b[i..i + run]);
        i += run;
        let Some(&c) = b.get(i) else { break };
        write_escape(out, c as u32, q);
        i += 1;
    }
    out.push(q);
}

fn write_unicode_repr(out: &mut Vec<u8>, s: &str) {
    let q = quote_for(s.contains('\''), s.contains('"'));
    out.push(b'u');
    out.push(q);
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let run = b[i..]
            .iter()
            .position(|&c| c == q || c == b'\\' || !(0x20..0x7f).contains(&c))
            .unwrap_or(b.len() - i);
        out.extend_from_slice(&b[i..i + run]);
        i += run;
        let Some(c) = s.get(i..).and_then(|rest| rest.chars().next()) else {
            break;
        };
        write_escape(out, c as u32, q);
        i += c.len_utf8();
    }
    out.push(q);
}

/// The escape of one byte or character that is not printed as itself.
fn write_escape(out: &mut Vec<u8>, c: u32, q: u8) {
    let hex = |out: &mut Vec<u8>, prefix: &[u8], width: u32| {
        out.extend_from_slice(prefix);
        for k in (0..width).rev() {
            out.push(HEX[((c >> (4 * k)) & 0xf) as usize]);
        }
    };
    match c {
        _ if c == q as u32 || c == '\\' as u32 => {
            out.push(b'\\');
            out.push(c as u8);
        }
        0x09 => out.extend_from_slice(b"\\t"),
        0x0a => out.extend_from_slice(b"\\n"),
        0x0d => out.extend_from_slice(b"\\r"),
        0x20..=0x7e => out.push(c as u8),
        0..=0xff => hex(out, b"\\x", 2),
        0x100..=0xffff => hex(out, b"\\u", 4),
        _ => hex(out, b"\\U", 8),
    }
}

/// Length of the escape written by `write_escape` (1 for plain characters).
fn escape_len(c: u32, q: u8) -> usize {
    match c {
        _ if c == q as u32 || c == '\\' as u32 => 2,
        0x09 | 0x0a | 0x0d => 2,
        0x20..=0x7e => 1,
        0..=0xff => 4,
        0x100..=0xffff => 6,
        _ => 10,
    }
}

/// Whether `repr(v)` is at most `room` bytes long. Stops measuring as soon
/// as the answer is known, so deciding where pprint breaks lines costs
/// O(width) per container instead of the size of the subtree.
fn repr_fits(v: &Value, room: usize) -> bool {
    let mut len = 0;
    add_repr_len(v, &mut len, room)
}

/// Adds the length of `repr(v)` to `len`; false once it exceeds `room`.
#[inline(always)]
fn add_repr_len(v: &Value, len: &mut usize, room: usize) -> bool {
    match v {
        Value::Str(b) => {
            // Escapes only lengthen: a long string is decided by its size.
            if *len + b.len() + 2 > room {
                return false;
            }
            *len += str_repr_shape(b).1;
            *len <= room
        }
        _ => add_other_repr_len(v, len, room),
    }
}

fn add_other_repr_len(v: &Value, len: &mut usize, room: usize) -> bool {
    let own = match v {
        Value::None => 4,
        Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Int(i) => int_len(*i as i128),
        Value::Long(i) => int_len(*i) + 1,
        Value::Float(f) => {
            let mut buf = Vec::with_capacity(32);
            write_float(&mut buf, *f);
            buf.len()
        }
        Value::Str(b) => str_repr_shape(b).1,
        Value::Unicode(s) => {
            if *len + s.chars().count() + 3 > room {
                return false;
            }
            let q = quote_for(s.contains('\''), s.contains('"'));
            3 + s.chars().map(|c| escape_len(c as u32, q)).sum::<usize>()
        }
        Value::List(items) | Value::Tuple(items) => {
            let one_tuple = matches!(v, Value::Tuple(_)) && items.len() == 1;
            *len += 2 + one_tuple as usize + 2 * items.len().saturating_sub(1);
            return *len <= room && items.iter().all(|item| add_repr_len(item, len, room));
        }
        Value::Dict(d) => {
            *len += 2 + 4 * d.len() - 2 * !d.is_empty() as usize;
            return *len <= room
                && d.iter()
                    .all(|(k, v)| add_repr_len(k, len, room) && add_repr_len(v, len, room));
        }
    };
    *len += own;
    *len <= room
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(text: &str) -> Value {
        Value::str(text)
    }

    fn u(text: &str) -> Value {
        Value::Unicode(text.to_string())
    }

    fn dict(items: Vec<(Value, Value)>) -> Value {
        Value::Dict(items.into_iter().collect())
    }

    /// Strict identity (types, float bits), dict order aside; Python's ==
    /// would equate 1, 1.0 and True.
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            (Value::Dict(x), Value::Dict(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.iter().any(|(k2, v2)| same(k, k2) && same(v, v2)))
            }
            _ => format!("{a:?}") == format!("{b:?}"),
        }
    }

    fn assert_same(got: &Value, want: &Value) {
        assert!(same(got, want), "got {got:?}\nwant {want:?}");
    }

    fn lit(src: &[u8]) -> Value {
        match parse(Path::new("t"), src) {
            Ok(Document::Literal(v)) => v,
            other => panic!("{}: {other:?}", String::from_utf8_lossy(src)),
        }
    }

    fn check(src: &str, want: Value) {
        assert_same(&lit(src.as_bytes()), &want);
    }

    fn fail(src: &[u8]) -> ParseError {
        match parse(Path::new("f.cmdb"), src) {
            Err(e) => e,
            Ok(doc) => panic!("{}: parsed as {doc:?}", String::from_utf8_lossy(src)),
        }
    }

    /// The error's line, column and a fragment of its message.
    fn check_err(src: &str, line: usize, column: usize, message: &str) {
        let e = fail(src.as_bytes());
        assert_eq!((e.line, e.column), (line, column), "{src:?}: {e}");
        assert!(e.message.contains(message), "{src:?}: {e}");
    }

    #[test]
    fn containers() {
        check("[]", Value::List(vec![]));
        check("[1, 2,]", Value::List(vec![Value::Int(1), Value::Int(2)]));
        check("()", Value::Tuple(vec![]));
        check("(1,)", Value::Tuple(vec![Value::Int(1)]));
        check("(1)", Value::Int(1));
        check("((1))", Value::Int(1));
        check(
            "(1, (2,),)",
            Value::Tuple(vec![Value::Int(1), Value::Tuple(vec![Value::Int(2)])]),
        );
        check("{}", dict(vec![]));
        check(
            "{'a': [1], 2: (3,), }",
            dict(vec![
                (s("a"), Value::List(vec![Value::Int(1)])),
                (Value::Int(2), Value::Tuple(vec![Value::Int(3)])),
            ]),
        );
        check(
            "[{'ip': '10.0.0.1',\n  'used': 1},\n {}]\n",
            Value::List(vec![
                dict(vec![(s("ip"), s("10.0.0.1")), (s("used"), Value::Int(1))]),
                dict(vec![]),
            ]),
        );
    }

    #[test]
    fn dict_items_as_pprint_writes_them() {
        // The fast lane for `'key': 'text'` / `'key': 123` items and its
        // fallbacks must all agree with the general path.
        let one = |k: Value, v: Value| dict(vec![(k, v)]);
        check("{'a': 'b'}", one(s("a"), s("b")));
        check("{\"a\":\"b\",}", one(s("a"), s("b")));
        check("{'a': 'b' 'c'}", one(s("a"), s("bc")));
        check("{'a': 'b'\n}", one(s("a"), s("b")));
        check("{'a': 0}", one(s("a"), Value::Int(0)));
        check("{'a': 017}", one(s("a"), Value::Int(15)));
        check("{'a': 1L}", one(s("a"), Value::Long(1)));
        check("{'a': 1.5}", one(s("a"), Value::Float(1.5)));
        check("{'a': -1}", one(s("a"), Value::Int(-1)));
        check(
            "{'a': 999999999999999999}",
            one(s("a"), Value::Int(999_999_999_999_999_999)),
        );
        check(
            "{'a': 9999999999999999999}",
            one(s("a"), Value::Long(9_999_999_999_999_999_999)),
        );
        check("{'': ''}", one(s(""), s("")));
        check("{'a\\n': 'b\\n'}", one(s("a\n"), s("b\n")));
        check("{'a': u'b'}", one(s("a"), u("b")));
        check("{'a' : 'b'}", one(s("a"), s("b")));
        check("{'a': 1, 'a': 2}", one(s("a"), Value::Int(2)));
        check(
            "[{'a': 1,\n  'b': 'x'},\n {'c': None}]",
            Value::List(vec![
                dict(vec![(s("a"), Value::Int(1)), (s("b"), s("x"))]),
                one(s("c"), Value::None),
            ]),
        );
        check_err(
            "{'a': 'b' x}",
            1,
            11,
            "expected ',' or '}' after dict value",
        );
        check_err("{'a': 1x}", 1, 7, "invalid number literal");
    }

    #[test]
    fn top_level_forms() {
        check("1, 2", Value::Tuple(vec![Value::Int(1), Value::Int(2)]));
        check("1,", Value::Tuple(vec![Value::Int(1)]));
        check("  \t[1]", Value::List(vec![Value::Int(1)]));
        check(
            "# state\n\n[1] # done\n\n",
            Value::List(vec![Value::Int(1)]),
        );
        check(
            "[1,\r\n 2]\r\n",
            Value::List(vec![Value::Int(1), Value::Int(2)]),
        );
        check("[1,\r 2]", Value::List(vec![Value::Int(1), Value::Int(2)]));
        check(
            "[1, \\\n 2]",
            Value::List(vec![Value::Int(1), Value::Int(2)]),
        );
        check("'a' \\\n 'b'", s("ab"));
        check("[\x0c1]", Value::List(vec![Value::Int(1)]));
        check("\u{feff}[1]", Value::List(vec![Value::Int(1)]));
        check("True", Value::Bool(true));
        check(
            "[False, None]",
            Value::List(vec![Value::Bool(false), Value::None]),
        );
    }

    #[test]
    fn generate_call() {
        let model = dict(vec![(s("hostname"), s("host001-010"))]);
        for src in [
            "generate({'hostname': 'host001-010'})",
            "  generate ( {'hostname': 'host001-010'} , )\n",
            "generate(\n  {'hostname':\n   'host001-010'}\n)\n",
        ] {
            match parse(Path::new("t"), src.as_bytes()) {
                Ok(Document::Generate(v)) => assert_same(&v, &model),
                other => panic!("{src}: {other:?}"),
            }
        }
        check_err("[generate({})]", 1, 2, "only allowed around the whole file");
        check_err("generate()", 1, 10, "exactly one argument");
        check_err("generate({}, {})", 1, 14, "exactly one argument");
        check_err("generate {}", 1, 10, "expected '(' after 'generate'");
        check_err("generate({}) x", 1, 14, "unexpected trailing data");
        check_err(
            "generate({}",
            1,
            12,
            "end of file inside '(' opened at line 1, column 9",
        );
    }

    #[test]
    fn string_quotes_and_prefixes() {
        check(r#"'a"b'"#, s("a\"b"));
        check(r#""a'b""#, s("a'b"));
        check("'''a\n'b''c'''", s("a\n'b''c"));
        check(r#""""a"b""""#, s("a\"b"));
        check("''''''", s(""));
        check("''", s(""));
        check("u'x'", u("x"));
        check("U'x'", u("x"));
        check("b'x'", s("x"));
        check("B'x'", s("x"));
        check(r"r'\n'", s("\\n"));
        check(r"R'\n'", s("\\n"));
        check(r"br'\n'", s("\\n"));
        check(r"BR'\n'", s("\\n"));
        check(r"ur'\n'", u("\\n"));
        check(r"Ur'\n'", u("\\n"));
        check(r"uR'\n'", u("\\n"));
        check_err("rb'x'", 1, 1, "invalid string prefix 'rb'");
        check_err("bu'x'", 1, 1, "invalid string prefix 'bu'");
        check_err("[x]", 1, 2, "unknown name 'x'");
    }

    #[test]
    fn str_escapes() {
        check(
            r#"'\\ \' \" \a \b \f \n \r \t \v'"#,
            s("\\ ' \" \x07 \x08 \x0c \n \r \t \x0b"),
        );
        check(r"'\0\1\12\123\1234'", s("\0\x01\nS\x534"));
        check(r"'\777\400'", Value::Str(vec![0xff, 0x00]));
        check(r"'\x41\xfF'", Value::Str(vec![b'A', 0xff]));
        // Unknown escapes keep their backslash; \u is unknown in a str.
        check(r"'\8 \N{x} \u0041 \q'", s("\\8 \\N{x} \\u0041 \\q"));
        check("'a\\\nb'", s("ab"));
        check("'a\\\r\nb'", s("ab"));
        check("'''a\r\nb\rc'''", s("a\nb\nc"));
    }

    #[test]
    fn raw_strings() {
        check(r"r'\''", s("\\'"));
        check(r#"r"\"""#, s("\\\""));
        check("r'a\\\nb'", s("a\\\nb"));
        check(r"r'\x41\\'", s("\\x41\\\\"));
        check_err(r"r'\'", 1, 1, "unterminated string");
    }

    #[test]
    fn unicode_literals() {
        check(r"u'\u00e9\U0001F600\x41\101\n'", u("\u{e9}\u{1f600}AA\n"));
        check(r"u'\400\777'", u("\u{100}\u{1ff}"));
        check(r"u'\q'", u("\\q"));
        check("u'a\\\nb'", u("ab"));
        // ur'' decodes \u only after an odd run of backslashes.
        check(r"ur'\u0041\n'", u("A\\n"));
        check(r"ur'\\u0041'", u("\\\\u0041"));
        check(r"ur'\\\u0041'", u("\\\\A"));
        check_err(r"[u'\u004']", 1, 4, "truncated \\uXXXX escape");
        check_err(r"u'\U0000004'", 1, 3, "truncated \\UXXXXXXXX escape");
        check_err(r"u'\x4'", 1, 3, "truncated \\xXX escape");
        check_err(r"ur'\u12'", 1, 4, "truncated \\uXXXX escape");
        check_err(r"u'\U00110000'", 1, 3, "illegal Unicode character");
        check_err(r"u'\ud800'", 1, 3, "surrogate");
        check_err(
            r"u'\N{LATIN SMALL LETTER E}'",
            1,
            3,
            "\\N{...} escapes are not supported",
        );
        check_err(r"'\x4'", 1, 2, "invalid \\x escape");
    }

    #[test]
    fn source_encoding_of_unicode_literals() {
        // Like eval() of a byte string: raw bytes are Latin-1 by default...
        assert_same(&lit(b"u'\xc3\xa9'"), &u("\u{c3}\u{a9}"));
        assert_same(&lit(b"u'\\\xe9'"), &u("\\\u{e9}"));
        // ...and decoded as declared, by a PEP 263 line or a BOM.
        assert_same(&lit(b"# -*- coding: utf-8 -*-\nu'\xc3\xa9'"), &u("\u{e9}"));
        assert_same(
            &lit(b"#!/x\n# vim: fileencoding=utf8\nu'\xc3\xa9'"),
            &u("\u{e9}"),
        );
        assert_same(&lit(b"\xef\xbb\xbfu'\xc3\xa9'"), &u("\u{e9}"));
        assert_same(&lit(b"# coding=latin-1\nu'\xe9'"), &u("\u{e9}"));
        // A declaration after code is just a comment.
        assert_same(
            &lit(b"[1,\n# coding: utf-8\nu'\xc3\xa9']"),
            &Value::List(vec![Value::Int(1), u("\u{c3}\u{a9}")]),
        );
        // str literals always keep their bytes.
        assert_same(&lit(b"'\xc3\xa9\xff'"), &Value::Str(vec![0xc3, 0xa9, 0xff]));
        // Only u'' literals must then be valid UTF-8.
        assert_same(
            &lit(b"# coding: utf-8\n# \xff\n['\xff']"),
            &Value::List(vec![Value::Str(vec![0xff])]),
        );
        let e = fail(b"# coding: utf-8\n['ok', u'a\xff']");
        assert_eq!((e.line, e.column), (2, 10), "{e}");
        assert!(
            e.message.contains("invalid UTF-8 in unicode literal"),
            "{e}"
        );
        let e = fail(b"# coding: ascii\n'\xe9'");
        assert_eq!((e.line, e.column), (2, 2), "{e}");
        check_err(
            "# coding: koi8-r\n1",
            1,
            11,
            "unsupported source encoding 'koi8-r'",
        );
        check_err("\u{feff}# coding: latin-1\n1", 1, 11, "encoding problem");
    }

    #[test]
    fn string_concatenation() {
        check("'a' \"b\" '''c'''", s("abc"));
        check("('a'\n 'b')", s("ab"));
        check("'a' u'b' 'c'", u("abc"));
        check("u'\\xe9' 'a'", u("\u{e9}a"));
        assert_same(
            &lit(b"['a' r'\\n' 'b', 1]"),
            &Value::List(vec![s("a\\nb"), Value::Int(1)]),
        );
        check_err(
            "'\u{e9}' u'a'",
            1,
            5,
            "non-ASCII str literal with a unicode literal",
        );
        check_err(
            "u'a' '\u{e9}'",
            1,
            6,
            "non-ASCII str literal with a unicode literal",
        );
        // A newline ends the top-level expression.
        check_err("'a'\n'b'", 2, 1, "unexpected trailing data");
    }

    #[test]
    fn integers() {
        check(
            "[0, 7, -7, +7, 00]",
            Value::List([0, 7, -7, 7, 0].into_iter().map(Value::Int).collect()),
        );
        check("0x1F", Value::Int(31));
        check("0XfF", Value::Int(255));
        check("0o17", Value::Int(15));
        check("0O17", Value::Int(15));
        check("017", Value::Int(15));
        check("0b101", Value::Int(5));
        check("0B1", Value::Int(1));
        check("1L", Value::Long(1));
        check("0xffl", Value::Long(255));
        check("-0L", Value::Long(0));
        check("9223372036854775807", Value::Int(i64::MAX));
        check("9223372036854775808", Value::Long(1 << 63));
        check("-9223372036854775808", Value::Int(i64::MIN));
        check("-(9223372036854775808)", Value::Long(-(1 << 63)));
        check("--9223372036854775808", Value::Long(1 << 63));
        check("0x8000000000000000", Value::Long(1 << 63));
        check("-0x8000000000000000", Value::Int(i64::MIN));
        check(
            "170141183460469231731687303715884105727",
            Value::Long(i128::MAX),
        );
        check(
            "-170141183460469231731687303715884105728",
            Value::Long(i128::MIN),
        );
        check("- - 5", Value::Int(5));
        check("-+-1", Value::Int(1));
        check("-True", Value::Int(-1));
        check("+False", Value::Int(0));
        check_err("170141183460469231731687303715884105728", 1, 1, "too large");
        check_err(
            "[1, 99999999999999999999999999999999999999999]",
            1,
            5,
            "too large",
        );
        check_err(
            "-(-170141183460469231731687303715884105728)",
            1,
            1,
            "too large",
        );
        check_err("08", 1, 1, "octal digit expected");
        check_err("0x", 1, 1, "invalid number literal");
        check_err("0b2", 1, 1, "invalid number literal");
        check_err("0o8", 1, 1, "invalid number literal");
        check_err("1_0", 1, 1, "invalid number literal");
        check_err("0L0", 1, 1, "invalid number literal");
        check_err("1j", 1, 1, "complex numbers are not supported");
        check_err("[-'a']", 1, 2, "bad operand type for unary -: 'str'");
        check_err("+None", 1, 1, "bad operand type for unary +: 'NoneType'");
        check_err("-(1,)", 1, 1, "bad operand type for unary -: 'tuple'");
    }

    #[test]
    fn floats() {
        check("1.5", Value::Float(1.5));
        check("1e3", Value::Float(1000.0));
        check("1E-5", Value::Float(1e-5));
        check("1e+5", Value::Float(1e5));
        check(".5", Value::Float(0.5));
        check("5.", Value::Float(5.0));
        check("1.e2", Value::Float(100.0));
        check("09.5", Value::Float(9.5));
        check("0e5", Value::Float(0.0));
        check("-0.0", Value::Float(-0.0));
        check("- .5", Value::Float(-0.5));
        check("1e400", Value::Float(f64::INFINITY));
        check("-1e400", Value::Float(f64::NEG_INFINITY));
        check("1e-400", Value::Float(0.0));
        check("4.9e-324", Value::Float(5e-324));
        check_err("1e", 1, 1, "bad exponent");
        check_err("1.5L", 1, 1, "invalid number literal");
        check_err("1e5L", 1, 1, "invalid number literal");
        check_err("1.5.2", 1, 1, "invalid number literal");
    }

    #[test]
    fn syntax_errors_have_positions() {
        check_err(
            "[1 2]",
            1,
            4,
            "expected ',' or ']' after list element, found '2'",
        );
        check_err("[1,,]", 1, 4, "expected a value, found ','");
        check_err("(1 2)", 1, 4, "expected ',' or ')' after tuple element");
        check_err("{1 2}", 1, 4, "expected ':' after dict key");
        check_err("{1: 2 3}", 1, 7, "expected ',' or '}' after dict value");
        check_err("{,}", 1, 2, "expected a value");
        check_err("[\n  1,\n  'abc\n]", 3, 3, "unterminated string");
        check_err("['''abc\n", 1, 2, "unterminated string");
        check_err("[1] [2]", 1, 5, "unexpected trailing data: '['");
        check_err("[1]\n  x", 2, 3, "unexpected trailing data");
        check_err("", 1, 1, "expected a value, found end of file");
        check_err("  # nothing\n", 2, 1, "expected a value, found end of file");
        check_err(
            "[1,\n 2",
            2,
            3,
            "end of file inside '[' opened at line 1, column 1",
        );
        check_err(
            "{'a': 1",
            1,
            8,
            "end of file inside '{' opened at line 1, column 1",
        );
        check_err(
            "[1]\\",
            1,
            4,
            "unexpected character after line continuation",
        );
        check_err(
            "[1] \\ \n",
            1,
            5,
            "unexpected character after line continuation",
        );
        check_err("{[1]: 2}", 1, 2, "unhashable dict key (a list)");
        check_err("{(1, {}): 2}", 1, 2, "unhashable dict key (a dict)");
        check_err("[1, \0]", 1, 5, "NUL byte");
        check_err("[1, @]", 1, 5, "expected a value, found '@'");
        check_err("1,\n2", 2, 1, "unexpected trailing data");
        // Columns count characters, not bytes; \r\n is one line break.
        check_err("['\u{e9}\u{e9}', x]", 1, 8, "unknown name 'x'");
        check_err("[1,\r\n 2,\r\n x]", 3, 2, "unknown name 'x'");
        check_err("[1,\r 2,\r x]", 3, 2, "unknown name 'x'");
        check_err("[\u{e9}]", 1, 2, "found '\u{e9}'");
        assert!(fail(b"[\xff]").message.contains("found byte 0xff"));
        let e = fail(b"[1 2]");
        assert_eq!(
            e.to_string(),
            "f.cmdb:1:4: expected ',' or ']' after list element, found '2'"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(Path::new("t"), ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        check_err(&deep, 1, MAX_DEPTH + 1, "nesting deeper than 64 levels");
        // Hostile depths must fail cleanly, not overflow the stack.
        for open in ["[", "(", "{1: ", "-(", "(-", "{(", "[{1: ["] {
            for prefix in ["", "generate("] {
                let src = format!("{prefix}{}", open.repeat(100_000));
                let e = fail(src.as_bytes());
                assert!(e.message.contains("nesting deeper"), "{open}: {e}");
            }
        }
        let signs = format!("{}1", "-".repeat(1_000_000));
        check(&signs, Value::Int(1));
    }

    #[test]
    fn large_dicts_dedup_keys_like_python() {
        // Duplicates keep the first key object and the last value.
        check(
            "{1: 'a', True: 'b', 1.0: 'c', 2: 'd'}",
            dict(vec![(Value::Int(1), s("c")), (Value::Int(2), s("d"))]),
        );
        let mut src = String::from("{");
        for i in 0..1000 {
            src.push_str(&format!("'k{}': {i}, ", i % 300));
        }
        src.push_str("1: 'x', 1.0: 'y', True: 'z'}");
        let Value::Dict(d) = lit(src.as_bytes()) else {
            panic!()
        };
        assert_eq!(d.len(), 301);
        assert_same(d.get_str("k5").unwrap(), &Value::Int(905));
        let one: Vec<_> = d.iter().filter(|(k, _)| **k == Value::Int(1)).collect();
        assert_eq!(format!("{one:?}"), "[(Int(1), Str([122]))]");
    }

    #[test]
    fn python_equality_and_order() {
        assert_eq!(Value::Int(1), Value::Float(1.0));
        assert_eq!(Value::Bool(true), Value::Long(1));
        assert_eq!(s("a"), u("a"));
        assert_ne!(Value::Str(vec![0xe9]), u("\u{e9}"));
        assert_ne!(Value::List(vec![]), Value::Tuple(vec![]));
        // Exact int/float comparison, as Python does.
        assert_ne!(Value::Long((1 << 53) + 1), Value::Float(9007199254740992.0));
        assert_eq!(
            py_cmp(
                &Value::Long((1 << 53) + 1),
                &Value::Float(9007199254740992.0)
            ),
            Ordering::Greater
        );
        assert_eq!(
            py_cmp(&Value::Long(i128::MAX), &Value::Float(1e300)),
            Ordering::Less
        );
        assert_eq!(py_cmp(&Value::Int(-3), &Value::Float(-2.5)), Ordering::Less);
        assert_ne!(Value::Int(0), Value::Float(f64::NAN));
        // None < numbers < other types by name; str and unicode by text.
        let mut keys = vec![
            u("b"),
            Value::Tuple(vec![]),
            s("a"),
            Value::Float(0.5),
            Value::None,
            Value::Int(-1),
        ];
        keys.sort_by(py_cmp);
        assert_eq!(
            format!("{keys:?}"),
            r#"[None, Int(-1), Float(0.5), Str([97]), Tuple([]), Unicode("b")]"#
        );
    }

    #[test]
    fn inconsistent_python_orders_do_not_panic() {
        // 'z' < (1,) < u'a' < 'z': Python 2 has no consistent order here.
        let mut items = Vec::new();
        for i in 0..40 {
            items.push((s(&format!("z{i}")), Value::Int(i)));
            items.push((Value::Tuple(vec![Value::Int(i)]), Value::Int(i)));
            items.push((u(&format!("a{i}")), Value::Int(i)));
        }
        let d: Dict = items.into_iter().collect();
        assert_eq!(d.sorted_items().len(), 120);
        assert!(!pformat(&Value::Dict(d)).is_empty());
    }

    #[test]
    fn dict_api() {
        let mut d = Dict::new();
        assert!(d.is_empty());
        d.insert(s("b"), Value::Int(1));
        d.insert(s("a"), Value::Int(2));
        d.insert(u("b"), Value::Int(3));
        assert_eq!(d.len(), 2);
        assert_same(d.get_str("b").unwrap(), &Value::Int(3));
        assert_eq!(format!("{d:?}"), "{Str([98]): Int(3), Str([97]): Int(2)}");
        let mut e = Dict::new();
        e.insert(s("c"), Value::None);
        d.update(&e);
        assert_eq!(d.remove(&s("a")), Some(Value::Int(2)));
        assert_eq!(d.remove(&s("a")), None);
        assert_eq!(
            format!("{:?}", d.sorted_items()),
            "[(Str([98]), Int(3)), (Str([99]), None)]"
        );
        assert_eq!(
            String::from_utf8(repr(&Value::Dict(d))).unwrap(),
            "{'b': 3, 'c': None}"
        );
    }

    fn repr_str(v: &Value) -> String {
        String::from_utf8(repr(v)).unwrap()
    }

    #[test]
    fn repr_scalars() {
        let cases: &[(Value, &str)] = &[
            (Value::None, "None"),
            (Value::Bool(true), "True"),
            (Value::Int(-5), "-5"),
            (Value::Long(5), "5L"),
            (
                Value::Long(i128::MIN),
                "-170141183460469231731687303715884105728L",
            ),
            (Value::Float(1e16), "1e+16"),
            (Value::Float(1e15), "1000000000000000.0"),
            (Value::Float(0.0001), "0.0001"),
            (Value::Float(0.00001), "1e-05"),
            (Value::Float(-0.0), "-0.0"),
            (Value::Float(1e22), "1e+22"),
            (Value::Float(0.1), "0.1"),
            (Value::Float(1.0 / 3.0), "0.3333333333333333"),
            (Value::Float(123456789.125), "123456789.125"),
            (Value::Float(2.5e-7), "2.5e-07"),
            (Value::Float(1e-300), "1e-300"),
            (Value::Float(f64::INFINITY), "inf"),
            (Value::Float(f64::NEG_INFINITY), "-inf"),
            (Value::Float(f64::NAN), "nan"),
            (s("it's"), r#""it's""#),
            (s("say \"hi\""), r#"'say "hi"'"#),
            (s("both ' and \""), r#"'both \' and "'"#),
            (
                Value::Str(b"\t\n\r\x00\x7f\xff\\".to_vec()),
                r"'\t\n\r\x00\x7f\xff\\'",
            ),
            (
                u("\u{1234}\u{1f600}\u{80} 'x' \"y\""),
                r#"u'\u1234\U0001f600\x80 \'x\' "y"'"#,
            ),
            (u("caf\u{e9}"), r"u'caf\xe9'"),
            (Value::Tuple(vec![]), "()"),
            (Value::Tuple(vec![Value::Int(1)]), "(1,)"),
            (Value::List(vec![Value::Int(1), Value::None]), "[1, None]"),
            (
                dict(vec![
                    (s("b"), Value::Int(1)),
                    (Value::Float(2.5), Value::Long(1)),
                    (s("a"), Value::List(vec![])),
                ]),
                "{2.5: 1L, 'a': [], 'b': 1}",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(repr_str(v), *want, "{v:?}");
        }
    }

    #[test]
    fn pformat_wraps_like_python() {
        let entry = dict(vec![
            (s("used"), Value::Int(1)),
            (s("mac"), s("52:54:00:aa:bb:cc")),
            (s("ip"), s("10.0.1.23")),
            (s("hostname"), s("host00123")),
        ]);
        assert_eq!(
            String::from_utf8(pformat(&entry)).unwrap(),
            "{'hostname': 'host00123',\n 'ip': '10.0.1.23',\n 'mac': '52:54:00:aa:bb:cc',\n 'used': 1}\n"
        );
        let nested = dict(vec![
            (
                s("a"),
                Value::List(vec![
                    Value::Int(1),
                    Value::Int(2),
                    dict(vec![(s("b"), s(&"c".repeat(70)))]),
                ]),
            ),
            (Value::Tuple(vec![Value::Int(1), s("k")]), Value::None),
            (Value::Float(2.5), Value::Long(1)),
        ]);
        assert_eq!(
            String::from_utf8(pformat(&nested)).unwrap(),
            format!(
                "{{2.5: 1L,\n 'a': [1,\n       2,\n       {{'b': '{}'}}],\n (1, 'k'): None}}\n",
                "c".repeat(70)
            )
        );
        // Long strings are never split; a 1-tuple keeps its comma.
        let long = Value::Tuple(vec![s(&"x".repeat(100))]);
        assert_eq!(
            String::from_utf8(pformat(&long)).unwrap(),
            format!("('{}',)\n", "x".repeat(100))
        );
        // A repr of exactly 80 columns is split: the room is 80 - 1 - indent
        // - allowance (LEGACY-SEMANTICS §10 says 80 - indent - allowance).
        let pair = |n| Value::List(vec![Value::Int(1), s(&"y".repeat(n))]);
        assert_eq!(
            pformat(&pair(72)),
            format!("[1, '{}']\n", "y".repeat(72)).into_bytes()
        );
        assert_eq!(
            pformat(&pair(73)),
            format!("[1,\n '{}']\n", "y".repeat(73)).into_bytes()
        );
        // Fits exactly in 80 - 1 - indent - allowance columns, or not.
        let fits = Value::List(vec![s(&"y".repeat(75))]);
        assert_eq!(pformat(&fits).len(), 80);
        let mut out = Vec::new();
        format_at(&mut out, &fits, 1, 0);
        assert_eq!(out, repr(&fits));
        out.clear();
        format_at(&mut out, &fits, 1, 1);
        assert_eq!(out, repr(&fits));
        out.clear();
        format_at(
            &mut out,
            &Value::List(vec![Value::Int(1), s(&"y".repeat(74))]),
            1,
            1,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("[1,\n  '{}']", "y".repeat(74))
        );
        // Beyond the width everything splits, without underflow.
        let mut out = Vec::new();
        format_at(
            &mut out,
            &Value::List(vec![Value::Int(1), Value::Int(2)]),
            100,
            usize::MAX,
        );
        assert_eq!(out, b"[1,\n                                                                                                     2]");
    }

    #[test]
    fn streaming_matches_parse() {
        let src = b"# cmdb\n[{'a': 1},\n {'b': [2, 3]},\n 'x' 'y', -4,\n]\n";
        let mut seen = Vec::new();
        let top = parse_list_streaming(Path::new("c"), src, &mut |v| {
            seen.push(v);
            Ok(())
        });
        assert_eq!(top, Ok(Streamed::List));
        assert_same(&Value::List(seen), &lit(src));

        let mut count = 0;
        let top = parse_list_streaming(Path::new("c"), b"( [1, 2] )", &mut |_| {
            count += 1;
            Ok(())
        });
        assert_eq!((top, count), (Ok(Streamed::List), 2));

        let top = parse_list_streaming(
            Path::new("c"),
            b"generate({'ip': '10.0.0.1-9'})\n",
            &mut |_| panic!("no element for generate"),
        );
        assert_eq!(
            top,
            Ok(Streamed::Generate(dict(vec![(s("ip"), s("10.0.0.1-9"))])))
        );

        let stop =
            |src: &[u8]| parse_list_streaming(Path::new("c"), src, &mut |_| Ok(())).unwrap_err();
        assert!(stop(b"{'a': 1}")
            .message
            .contains("expected a list at the top level"));
        assert!(stop(b"[1], [2]")
            .message
            .contains("the top level is a tuple"));
        assert!(stop(b"([1],)").message.contains("the top level is a tuple"));
        assert!(stop(b"[1] [2]")
            .message
            .contains("unexpected trailing data"));
        assert!(stop(b"([1]").message.contains("end of file inside '('"));
        let e = stop(b"[1, 2 3]");
        assert_eq!((e.line, e.column), (1, 7));

        // The callback's error comes back unchanged and stops the parse.
        let mine = ParseError {
            file: PathBuf::from("mine"),
            line: 9,
            column: 9,
            message: "stop".into(),
        };
        let mut calls = 0;
        let got = parse_list_streaming(Path::new("c"), b"[1, 2, 3]", &mut |_| {
            calls += 1;
            Err(mine.clone())
        });
        assert_eq!((got, calls), (Err(mine), 1));
    }

    /// Every outcome of `parse` on a top-level list or generate() is also
    /// the outcome of streaming, and streaming fails on anything else.
    fn assert_stream_agrees(src: &[u8]) {
        let mut seen = Vec::new();
        let streamed = parse_list_streaming(Path::new("f"), src, &mut |v| {
            seen.push(v);
            Ok(())
        });
        match (parse(Path::new("f"), src), streamed) {
            (Ok(Document::Literal(Value::List(items))), Ok(Streamed::List)) => {
                assert_same(&Value::List(seen), &Value::List(items))
            }
            (Ok(Document::Generate(m)), Ok(Streamed::Generate(n))) => assert_same(&m, &n),
            (Ok(Document::Literal(v)), Err(_)) => {
                assert!(
                    !matches!(v, Value::List(_)),
                    "{}",
                    String::from_utf8_lossy(src)
                )
            }
            (Err(_), Err(_)) => {}
            (p, st) => panic!(
                "{}: parse {p:?}, stream {st:?}",
                String::from_utf8_lossy(src)
            ),
        }
    }

    const SEEDS: &[&str] = &[
        "[{'hostname': 'host00123',\n  'ip': '10.0.1.23',\n  'used': 1},\n {'x': (1, 2L, -3.5e-7)}]\n",
        "generate({'hostname': 'host001-010', 'ip': '10.0.0.1-10', 'k': [1, 2]})\n",
        "[('disk', 'sda', 'size', '100'), (u'caf\\xe9', r'\\d+', b'\\x41', ur'\\u0041')]",
        "# comment\n[  # more\n 0x1F, 017, 0b11, .5, 1e3, True, None, \"\"\"tri\nple\"\"\", 'a' 'b',\n]",
        "([1], [2])",
        "{1: {2: {3: [4, (5,)]}}}",
    ];

    proptest! {
        // Failures are reported, not saved as files in the source tree.
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(2000) })]

        #[test]
        fn parse_never_panics_on_random_bytes(src in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(Path::new("r"), &src);
            assert_stream_agrees(&src);
        }

        #[test]
        fn parse_never_panics_on_mutated_files(
            seed in 0..SEEDS.len(),
            edits in proptest::collection::vec(
                (any::<prop::sample::Index>(), 0u8..3, prop::sample::select(
                    b"[](){}:,'\"\\#\n\r -+.0123456789eLlxXuUrRbBjJ_aN\xc3\xa9\xff\x00".to_vec()
                )),
                1..6,
            ),
        ) {
            let mut src = SEEDS[seed].as_bytes().to_vec();
            for (at, op, byte) in edits {
                let i = at.index(src.len() + 1);
                match op {
                    0 => src.insert(i, byte),
                    1 if i < src.len() => { src.remove(i); }
                    _ if i < src.len() => src[i] = byte,
                    _ => src.push(byte),
                }
            }
            if let Ok(Document::Literal(v) | Document::Generate(v)) = parse(Path::new("m"), &src) {
                // Whatever parses prints, and the print parses back.
                let text = pformat(&v);
                if !format!("{v:?}").contains("inf") && !format!("{v:?}").contains("NaN") {
                    match parse(Path::new("p"), &text) {
                        Ok(Document::Literal(back)) => assert_same(&back, &v),
                        other => panic!("{}: {other:?}", String::from_utf8_lossy(&text)),
                    }
                }
            }
            assert_stream_agrees(&src);
        }
    }
}

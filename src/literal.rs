//! Python 2 literals: the data model of every legacy configuration file.
//!
//! The legacy server `eval()`s its state, specs and CMDB files and writes them
//! back with `pprint`. We never evaluate code: this module parses the literal
//! subset those files use into [`Value`], and prints values back exactly as
//! Python 2.7's `repr()` and `pprint.pprint()` would, so that files written by
//! either implementation are byte-identical.

use std::cmp::Ordering;
use std::fmt;
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
#[derive(Clone, Debug, Default)]
pub struct Dict {
    items: Vec<(Value, Value)>,
}

impl Dict {
    pub fn new() -> Dict {
        Dict { items: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, key: &Value) -> Option<&Value> {
        self.items.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Looks up a key given as text (the common case: CMDB and var keys).
    pub fn get_str(&self, key: &str) -> Option<&Value> {
        self.get(&Value::str(key))
    }

    /// Inserts or replaces; like Python, an existing key keeps its position
    /// and its original key object.
    pub fn insert(&mut self, key: Value, value: Value) {
        match self.items.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.items.push((key, value)),
        }
    }

    pub fn remove(&mut self, key: &Value) -> Option<Value> {
        let pos = self.items.iter().position(|(k, _)| k == key)?;
        Some(self.items.remove(pos).1)
    }

    /// `self.update(other)` in Python.
    pub fn update(&mut self, other: &Dict) {
        for (k, v) in other.iter() {
            self.insert(k.clone(), v.clone());
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Value, &Value)> {
        self.items.iter().map(|(k, v)| (k, v))
    }

    /// Items sorted as Python 2's `sorted(d.items())` sorts them.
    pub fn sorted_items(&self) -> Vec<(&Value, &Value)> {
        let mut items: Vec<_> = self.iter().collect();
        items.sort_by(|a, b| py_cmp(a.0, b.0).then_with(|| py_cmp(a.1, b.1)));
        items
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
        let mut d = Dict::new();
        for (k, v) in iter {
            d.insert(k, v);
        }
        d
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

fn num_cmp(a: Number, b: Number) -> Ordering {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => x.cmp(&y),
        (Number::Int(x), Number::Float(y)) => (x as f64).partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Number::Float(x), Number::Int(y)) => x.partial_cmp(&(y as f64)).unwrap_or(Ordering::Equal),
        (Number::Float(x), Number::Float(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// Text of a string value for cross-type comparison: Python 2 compares `str`
/// with `unicode` by decoding the `str` as ASCII.
fn text_of(v: &Value) -> Option<std::borrow::Cow<'_, [u8]>> {
    match v {
        Value::Str(b) => Some(std::borrow::Cow::Borrowed(b)),
        Value::Unicode(s) => Some(std::borrow::Cow::Borrowed(s.as_bytes())),
        _ => None,
    }
}

/// Python 2's ordering (`cmp`), total enough for sorting dict keys:
/// None first, numbers by value, then other types by type name.
pub fn py_cmp(a: &Value, b: &Value) -> Ordering {
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
        (Value::Dict(x), Value::Dict(y)) => x.len().cmp(&y.len()).then_with(|| {
            seq_cmp_pairs(&x.sorted_items(), &y.sorted_items())
        }),
        _ => match (text_of(a), text_of(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => a.type_name().cmp(b.type_name()),
        },
    }
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
        let o = py_cmp(a.0, b.0).then_with(|| py_cmp(a.1, b.1));
        if o != Ordering::Equal {
            return o;
        }
    }
    x.len().cmp(&y.len())
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        if let (Some(x), Some(y)) = (self.as_number(), other.as_number()) {
            return match (x, y) {
                (Number::Float(a), Number::Float(b)) => a == b,
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

/// Parses a whole file's text (`file` only names it in errors).
///
/// Accepts one literal expression surrounded by white space and comments, or
/// `generate(<literal>)`. Nesting deeper than [`MAX_DEPTH`] is an error.
pub fn parse(file: &Path, src: &[u8]) -> Result<Document, ParseError> {
    let _ = (file, src);
    todo!()
}

/// Maximum nesting of containers accepted by [`parse`].
pub const MAX_DEPTH: usize = 64;

/// Python 2.7 `repr(value)`.
pub fn repr(value: &Value) -> Vec<u8> {
    let _ = value;
    todo!()
}

/// Python 2.7 `pprint.pprint(value)` output, trailing newline included.
pub fn pformat(value: &Value) -> Vec<u8> {
    let _ = value;
    todo!()
}

/// Python 2.7 `PrettyPrinter._format(value, indent, allowance)`: appends the
/// pretty form of `value` as if it started at column `indent` (no newline).
/// Lets callers print a huge top-level list one element at a time.
pub fn format_at(out: &mut Vec<u8>, value: &Value, indent: usize, allowance: usize) {
    let _ = (out, value, indent, allowance);
    todo!()
}

/// What [`parse_list_streaming`] found at the top level.
#[derive(Debug, Clone, PartialEq)]
pub enum Streamed {
    /// A list: every element was passed to the callback, in order.
    List,
    /// `generate(model)`: the callback was not called.
    Generate(Value),
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
    let _ = (file, src, each);
    todo!()
}

//! The values of Python 2 literals, with Python's equality: [`Value`] and
//! [`Dict`], the insertion-ordered dict the legacy files' dicts become.

use std::cmp::Ordering;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hasher;

use super::order::{item_cmp, num_cmp, sort_stable, Number, TWO_POW_127};

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
    pub(super) fn for_each_sorted(&self, mut f: impl FnMut(&Value, &Value)) {
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
    pub(super) fn from_flat(mut flat: Vec<Value>) -> Dict {
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
    pub(super) fn as_number(&self) -> Option<Number> {
        match *self {
            Value::Bool(b) => Some(Number::Int(b as i128)),
            Value::Int(i) => Some(Number::Int(i as i128)),
            Value::Long(i) => Some(Number::Int(i)),
            Value::Float(f) => Some(Number::Float(f)),
            _ => None,
        }
    }

    /// Python 2's type name, which orders values of unrelated types.
    pub(super) fn type_name(&self) -> &'static str {
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

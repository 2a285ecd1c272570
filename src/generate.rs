//! `generate({...})`: the CMDB shorthand that expands one model dict into
//! many entries (`'ip': '10.0.0.1-254'` gives one entry per address).
//!
//! Entries are produced lazily and each value is computed from the entry's
//! index, so memory does not grow with the number of entries: a 65,536-address
//! range costs no more than a 2-address one. The rules are those of the
//! legacy `hardware.generate` (LEGACY-SEMANTICS §8), checked against it.

use std::cmp::Ordering;
use std::fmt;
use std::sync::OnceLock;

use regex::bytes::Regex;

use crate::literal::{Dict, Value};
use crate::pydict;

/// Most entries one model may expand to.
pub const MAX_ENTRIES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum GenerateError {
    /// `generate()` was given something else than a dict.
    NotADict,
    /// The model would expand to more than [`MAX_ENTRIES`] entries, or
    /// without end (no range and no list, but not only strings: the legacy
    /// code then builds 16 million copies).
    TooManyEntries,
    /// An IPv4 range part `-N` (nothing before the dash): the legacy code
    /// crashes (`IndexError`).
    InvalidRange { value: String },
    /// The expansion, printed, would be larger than `limit` bytes
    /// (`MAXCMDBSIZE`): checked while it is printed, before anything is
    /// written (see `cmdb::select_within`).
    TooLarge { limit: u64 },
}

impl fmt::Display for GenerateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GenerateError::NotADict => f.write_str("generate() expects a dict"),
            GenerateError::TooManyEntries => write!(
                f,
                "generate() model expands to more than {MAX_ENTRIES} entries"
            ),
            GenerateError::InvalidRange { value } => {
                write!(f, "generate(): invalid range in {value:?}")
            }
            GenerateError::TooLarge { limit } => write!(
                f,
                "generate() model expands to a CMDB of more than {limit} bytes (MAXCMDBSIZE)"
            ),
        }
    }
}

impl std::error::Error for GenerateError {}

/// The entries of a model, in order. Each is a `Value::Dict`, or the model
/// itself when it has nothing to expand.
#[derive(Debug)]
pub struct Generated {
    keys: Vec<(Value, Seq)>,
    /// The model, when it is returned as is.
    whole: Option<Value>,
    next: usize,
    count: usize,
}

impl Iterator for Generated {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        if let Some(model) = self.whole.take() {
            self.next = self.count;
            return Some(model);
        }
        if self.next >= self.count {
            return None;
        }
        let index = self.next as u128;
        self.next += 1;
        let mut entry = Dict::new();
        for (key, seq) in &self.keys {
            entry.insert(key.clone(), seq.get(index));
        }
        Some(Value::Dict(entry))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count - self.next;
        (n, Some(n))
    }

    /// Skips `n` entries without making them: each entry is computed from
    /// its index, so the last entries of a 2^20-entry model (`skip`, `last`)
    /// cost no more than the first.
    fn nth(&mut self, n: usize) -> Option<Value> {
        if self.whole.is_some() && n > 0 {
            self.whole = None;
            self.next = self.count;
        }
        self.next = self.next.saturating_add(n).min(self.count);
        self.next()
    }

    fn last(mut self) -> Option<Value> {
        let left = self.len();
        left.checked_sub(1).and_then(|n| self.nth(n))
    }
}

impl ExactSizeIterator for Generated {}

/// Expands a model: every value becomes a sequence (a string with a range
/// its numbers, a list its elements, anything else itself forever) and
/// entry `i` takes element `i` of each; the shortest sequence ends the
/// expansion. A model whose values are all strings without a range is
/// returned as is.
///
/// The legacy code crashes on an IPv4 range part `-N` when it reaches it,
/// taking the keys in Python's dict order each round: that is replayed to
/// know whether a shorter sequence ends the expansion first.
pub fn generate(model: &Value) -> Result<Generated, GenerateError> {
    let Value::Dict(dict) = model else {
        return Err(GenerateError::NotADict);
    };
    let plain = dict.iter().all(|(_, v)| match v {
        Value::Str(s) => range_parts(s).is_none(),
        _ => false,
    });
    if plain {
        return Ok(Generated {
            keys: Vec::new(),
            whole: Some(model.clone()),
            next: 0,
            count: 1,
        });
    }
    let keys: Vec<(Value, Seq)> = dict.iter().map(|(k, v)| (k.clone(), Seq::new(v))).collect();
    let mut end: Option<(End, usize)> = None;
    for i in python_order(dict) {
        let Some(e) = keys.get(i).and_then(|(_, seq)| seq.end()) else {
            continue;
        };
        if end.is_none_or(|(best, _)| e.at < best.at) {
            end = Some((e, i));
        }
    }
    let (end, key) = end.ok_or(GenerateError::TooManyEntries)?;
    let count = usize::try_from(end.at)
        .ok()
        .filter(|&c| c <= MAX_ENTRIES)
        .ok_or(GenerateError::TooManyEntries)?;
    if end.raises {
        let value = match dict.iter().nth(key) {
            Some((_, Value::Str(s))) => String::from_utf8_lossy(s).into_owned(),
            _ => String::new(),
        };
        return Err(GenerateError::InvalidRange { value });
    }
    Ok(Generated {
        keys,
        whole: None,
        next: 0,
        count,
    })
}

/// The indices of the model's items in the order the legacy code goes
/// through them: that of a copy of the dict Python 2.7 evaluates from the
/// file (checked against the reference). Insertion order when a key's hash
/// is not reproduced here (keys other than strings and numbers).
fn python_order(dict: &Dict) -> Vec<usize> {
    let keys: Vec<&Value> = dict.iter().map(|(k, _)| k).collect();
    pydict::display_order(&keys, true).unwrap_or_else(|| (0..dict.len()).collect())
}

/// Where a sequence ends: after `at` elements, by running out or (legacy
/// crash) by raising.
#[derive(Clone, Copy, Debug, PartialEq)]
struct End {
    at: u128,
    raises: bool,
}

/// The values one key takes.
#[derive(Debug)]
enum Seq {
    Repeat(Value),
    List(Vec<Value>),
    /// `<prefix><range>:<range>...<suffix>`.
    Text {
        prefix: Vec<u8>,
        ranges: Parts,
        suffix: Vec<u8>,
    },
    /// Four octets; the last one varies fastest.
    Ipv4([Octet; 4]),
}

/// The values of an IPv4 octet up to its first invalid part (`-N`), if any.
#[derive(Debug)]
struct Octet {
    parts: Parts,
    poisoned: bool,
}

impl Seq {
    fn new(value: &Value) -> Seq {
        match value {
            Value::Str(s) => match range_parts(s) {
                None => Seq::Repeat(value.clone()),
                Some(text) => ipv4_octets(s).map_or(text, Seq::Ipv4),
            },
            Value::List(items) => Seq::List(items.clone()),
            // The legacy code empties nested dicts while expanding.
            Value::Dict(_) => Seq::Repeat(Value::Dict(Dict::new())),
            other => Seq::Repeat(other.clone()),
        }
    }

    /// `None` for endless repetition.
    fn end(&self) -> Option<End> {
        let stop = |at| End { at, raises: false };
        match self {
            Seq::Repeat(_) => None,
            Seq::List(items) => Some(stop(items.len() as u128)),
            Seq::Text { ranges, .. } => Some(stop(ranges.len())),
            // Nested generators: octet j is restarted for every value of
            // the octets before it, and crashes when it runs out if poisoned.
            Seq::Ipv4(octets) => Some(octets.iter().rev().fold(stop(1), |inner, o| {
                let m = o.parts.len();
                if m == 0 {
                    End {
                        at: 0,
                        raises: o.poisoned,
                    }
                } else if inner.raises {
                    inner
                } else {
                    End {
                        at: m.saturating_mul(inner.at),
                        raises: o.poisoned,
                    }
                }
            })),
        }
    }

    fn get(&self, index: u128) -> Value {
        match self {
            Seq::Repeat(v) => v.clone(),
            Seq::List(items) => usize::try_from(index)
                .ok()
                .and_then(|i| items.get(i))
                .cloned()
                .unwrap_or(Value::None),
            Seq::Text {
                prefix,
                ranges,
                suffix,
            } => {
                let mut s = prefix.clone();
                s.extend(ranges.get(index));
                s.extend(suffix);
                Value::Str(s)
            }
            Seq::Ipv4(octets) => {
                let mut digits = [0u128; 4];
                let mut rest = index;
                for (d, octet) in digits.iter_mut().zip(octets).rev() {
                    let len = octet.parts.len().max(1);
                    *d = rest % len;
                    rest /= len;
                }
                let mut s = Vec::new();
                for (i, (octet, d)) in octets.iter().zip(digits).enumerate() {
                    if i > 0 {
                        s.push(b'.');
                    }
                    s.extend(octet.parts.get(d));
                }
                Value::Str(s)
            }
        }
    }
}

/// A concatenation of parts (`1-3:7-8`).
#[derive(Debug)]
struct Parts(Vec<Part>);

#[derive(Debug)]
enum Part {
    Range(Range),
    /// Kept as is (an IPv4 octet part that is not a range yields the whole
    /// octet text).
    Text(Vec<u8>),
}

impl Parts {
    fn len(&self) -> u128 {
        self.0
            .iter()
            .map(|p| match p {
                Part::Range(r) => r.len,
                Part::Text(_) => 1,
            })
            .fold(0u128, u128::saturating_add)
    }

    fn get(&self, mut index: u128) -> Vec<u8> {
        for part in &self.0 {
            match part {
                Part::Range(r) if index < r.len => return r.get(index),
                Part::Range(r) => index -= r.len,
                Part::Text(t) if index == 0 => return t.clone(),
                Part::Text(_) => index -= 1,
            }
        }
        Vec::new()
    }
}

/// `A-B`: from A to B inclusive, counting down when B < A, zero-padded to
/// the width of A when A starts with `0`.
#[derive(Debug)]
struct Range {
    start: Vec<u8>,
    down: bool,
    len: u128,
    width: usize,
}

impl Range {
    fn new(a: &[u8], b: &[u8]) -> Range {
        let (x, y) = (trim_zeros(a), trim_zeros(b));
        let down = dec_cmp(y, x) == Ordering::Less;
        let diff = if down { dec_sub(x, y) } else { dec_sub(y, x) };
        Range {
            start: x.to_vec(),
            down,
            len: dec_to_u128(&diff).saturating_add(1),
            width: if a.first() == Some(&b'0') { a.len() } else { 0 },
        }
    }

    fn get(&self, index: u128) -> Vec<u8> {
        let offset = index.to_string().into_bytes();
        let n = if self.down {
            dec_sub(&self.start, &offset)
        } else {
            dec_add(&self.start, &offset)
        };
        let mut s = vec![b'0'; self.width.saturating_sub(n.len())];
        s.extend(n);
        s
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let t = d
        .iter()
        .position(|&b| b != b'0')
        .map_or(&d[d.len()..], |i| &d[i..]);
    if t.is_empty() {
        b"0"
    } else {
        t
    }
}

/// Compares decimal digit strings without leading zeros.
fn dec_cmp(a: &[u8], b: &[u8]) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn dec_add(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
    let mut carry = 0;
    let (mut i, mut j) = (a.len(), b.len());
    while i > 0 || j > 0 || carry > 0 {
        let mut d = carry;
        if i > 0 {
            i -= 1;
            d += a[i] - b'0';
        }
        if j > 0 {
            j -= 1;
            d += b[j] - b'0';
        }
        out.push(b'0' + d % 10);
        carry = d / 10;
    }
    out.reverse();
    trim_zeros(&out).to_vec()
}

/// `a - b` for `a >= b`.
fn dec_sub(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len());
    let mut borrow = 0;
    let mut j = b.len();
    for &da in a.iter().rev() {
        let mut d = i16::from(da - b'0') - borrow;
        if j > 0 {
            j -= 1;
            d -= i16::from(b[j] - b'0');
        }
        borrow = i16::from(d < 0);
        out.push(b'0' + (d + 10 * borrow) as u8);
    }
    out.reverse();
    trim_zeros(&out).to_vec()
}

fn dec_to_u128(d: &[u8]) -> u128 {
    d.iter().fold(0u128, |n, &b| {
        n.saturating_mul(10).saturating_add(u128::from(b - b'0'))
    })
}

/// Python's `$`: the text may end with one newline, not part of the match.
fn without_final_newline(s: &[u8]) -> &[u8] {
    s.strip_suffix(b"\n").unwrap_or(s)
}

/// The text sequence of a string with a range (`host001-250`, `1-3:7-8`):
/// the first run of `digits-digits(:digits-digits)*`, with the text around
/// it kept. `None` when the string has no range (or a newline before its
/// end: the legacy pattern does not cross lines).
fn range_parts(s: &[u8]) -> Option<Seq> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"(?-u)\A(.*?)([0-9]+-[0-9]+(?::[0-9]+-[0-9]+)*)(.*)\z").expect("static regex")
    });
    let caps = re.captures(without_final_newline(s))?;
    let ranges = caps
        .get(2)?
        .as_bytes()
        .split(|&b| b == b':')
        .filter_map(|r| {
            let dash = r.iter().position(|&b| b == b'-')?;
            Some(Part::Range(Range::new(&r[..dash], &r[dash + 1..])))
        })
        .collect();
    Some(Seq::Text {
        prefix: caps.get(1)?.as_bytes().to_vec(),
        ranges: Parts(ranges),
        suffix: caps.get(3)?.as_bytes().to_vec(),
    })
}

/// The octets of an IPv4 range (four dot-separated runs of digits, `-` and
/// `:`), each split on `:` into parts: `A-B` is a range, any other part
/// stands for the whole octet text, and `-B` is where the legacy code
/// crashes (`IndexError`).
fn ipv4_octets(s: &[u8]) -> Option<[Octet; 4]> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"(?-u)\A[0-9:-]*\.[0-9:-]*\.[0-9:-]*\.[0-9:-]*\z").expect("static regex")
    });
    if !re.is_match(without_final_newline(s)) {
        return None;
    }
    let octets: Vec<Octet> = s.split(|&b| b == b'.').map(octet).collect();
    octets.try_into().ok()
}

fn octet(text: &[u8]) -> Octet {
    let mut parts = Vec::new();
    for part in text.split(|&b| b == b':') {
        let mut pieces = part.split(|&b| b == b'-');
        let range = match (pieces.next(), pieces.next(), pieces.next()) {
            (Some([]), Some(_), None) => {
                return Octet {
                    parts: Parts(parts),
                    poisoned: true,
                }
            }
            (Some(a), Some(b), None) => {
                let b = b.strip_suffix(b"\n").unwrap_or(b);
                (!b.is_empty()).then(|| Range::new(a, b))
            }
            _ => None,
        };
        parts.push(match range {
            Some(r) => Part::Range(r),
            None => Part::Text(text.to_vec()),
        });
    }
    Octet {
        parts: Parts(parts),
        poisoned: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(pairs: &[(&str, Value)]) -> Value {
        Value::Dict(
            pairs
                .iter()
                .map(|(k, v)| (Value::str(k), v.clone()))
                .collect(),
        )
    }

    fn s(v: &str) -> Value {
        Value::str(v)
    }

    /// The values of key `k` in every entry, as text.
    fn column(m: &Value, k: &str) -> Vec<String> {
        generate(m)
            .unwrap()
            .map(|e| match e {
                Value::Dict(d) => match d.get_str(k) {
                    Some(Value::Str(b)) => String::from_utf8(b.clone()).unwrap(),
                    other => format!("{other:?}"),
                },
                other => panic!("not a dict: {other:?}"),
            })
            .collect()
    }

    fn expand(v: &str) -> Vec<String> {
        column(&model(&[("a", s(v))]), "a")
    }

    #[test]
    fn plain_model_is_returned_as_is() {
        let m = model(&[("a", s("b")), ("ip", s("10.0.0.1"))]);
        let out: Vec<Value> = generate(&m).unwrap().collect();
        assert_eq!(out, vec![m]);
        let empty = Value::Dict(Dict::new());
        assert_eq!(generate(&empty).unwrap().collect::<Vec<_>>(), vec![empty]);
    }

    #[test]
    fn numeric_ranges() {
        assert_eq!(expand("1-3"), ["1", "2", "3"]);
        assert_eq!(expand("3-1"), ["3", "2", "1"]);
        assert_eq!(expand("host001-003"), ["host001", "host002", "host003"]);
        assert_eq!(expand("001-003:7-8"), ["001", "002", "003", "7", "8"]);
        assert_eq!(expand("010-5"), ["010", "009", "008", "007", "006", "005"]);
        assert_eq!(expand("5-010"), ["5", "6", "7", "8", "9", "10"]);
        assert_eq!(expand("007-7"), ["007"]);
        assert_eq!(expand("a1-2b3-4"), ["a1b3-4", "a2b3-4"]);
        assert_eq!(expand("1-2-3"), ["1-3", "2-3"]);
        assert_eq!(expand("-1-2"), ["-1", "-2"]);
        assert_eq!(expand("1-2::3-4"), ["1::3-4", "2::3-4"]);
        assert_eq!(expand("1-2x\n"), ["1x", "2x"]);
        assert_eq!(
            expand("99999999999999999999-100000000000000000000"),
            ["99999999999999999999", "100000000000000000000"]
        );
    }

    #[test]
    fn strings_without_range_stay() {
        for v in ["a-b", "1 - 2", "4-", "1-2\n3-4", "x\n1-2", "1-2\n\n"] {
            assert_eq!(expand(v), [v], "{v:?}");
        }
    }

    #[test]
    fn ipv4_ranges() {
        assert_eq!(
            expand("10.0.1-2.2-3"),
            ["10.0.1.2", "10.0.1.3", "10.0.2.2", "10.0.2.3"]
        );
        assert_eq!(expand("10.0.0.1-2:4-5").len(), 4);
        assert_eq!(
            expand("10.0.0.1-2:"),
            ["10.0.0.1", "10.0.0.2", "10.0.0.1-2:"]
        );
        assert_eq!(
            expand("10.0.0.5:1-2"),
            ["10.0.0.5:1-2", "10.0.0.1", "10.0.0.2"]
        );
        assert_eq!(expand("10.0.0.1-2-3"), ["10.0.0.1-2-3"]);
        assert_eq!(expand("1-2.3.4.5:").len(), 4);
        assert_eq!(
            expand("10.0.0.00-02"),
            ["10.0.0.00", "10.0.0.01", "10.0.0.02"]
        );
        assert_eq!(expand("10.0.0.1-2\n"), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(expand("10.0.0.1-2:\n")[2], "10.0.0.1-2:\n");
        assert_eq!(expand("D7-H.1.0.0"), ["D7-H.1.0.0"]);
        assert_eq!(
            generate(&model(&[("a", s("10.0.1-2.-5"))])).unwrap_err(),
            GenerateError::InvalidRange {
                value: "10.0.1-2.-5".into()
            }
        );
    }

    #[test]
    fn large_ipv4_range_is_lazy() {
        let g = generate(&model(&[("ip", s("10.0-255.0-255.1"))])).unwrap();
        assert_eq!(g.len(), 65536);
        let last = g.last().unwrap();
        let Value::Dict(d) = last else { panic!() };
        assert_eq!(d.get_str("ip"), Some(&s("10.255.255.1")));
    }

    #[test]
    fn skipping_gives_the_entries_iterating_gives() {
        let m = model(&[
            ("ip", s("10.0.0-3.1-5")),
            ("host", s("h01-20")),
            ("tag", Value::List((0..30).map(Value::Int).collect())),
        ]);
        let all: Vec<Value> = generate(&m).unwrap().collect();
        assert_eq!(all.len(), 20);
        for n in 0..=21 {
            let mut g = generate(&m).unwrap();
            assert_eq!(g.nth(n), all.get(n).cloned(), "nth({n})");
            assert_eq!(
                g.len(),
                all.len().saturating_sub(n + 1),
                "left after nth({n})"
            );
            assert_eq!(g.next(), all.get(n + 1).cloned(), "next after nth({n})");
        }
        let mut g = generate(&m).unwrap();
        assert_eq!(g.nth(3), all.get(3).cloned());
        assert_eq!(g.nth(2), all.get(6).cloned());
        assert_eq!(
            generate(&m).unwrap().skip(18).collect::<Vec<_>>(),
            all[18..]
        );
        assert_eq!(generate(&m).unwrap().last(), all.last().cloned());

        let plain = model(&[("a", s("b"))]);
        for (n, entry) in [(0, Some(plain.clone())), (1, None)] {
            let mut g = generate(&plain).unwrap();
            assert_eq!(g.nth(n), entry);
            assert_eq!((g.len(), g.next()), (0, None));
        }
        assert_eq!(generate(&plain).unwrap().last(), Some(plain));
        assert_eq!(generate(&m).unwrap().nth(usize::MAX), None);
    }

    #[test]
    fn the_last_of_a_million_entries_is_made_directly() {
        let m = model(&[("ip", s("10.0-15.0-255.0-255")), ("n", s("1-1048576"))]);
        let last = generate(&m).unwrap().last().unwrap();
        let Value::Dict(d) = last else { panic!() };
        assert_eq!(d.get_str("ip"), Some(&s("10.15.255.255")));
        assert_eq!(d.get_str("n"), Some(&s("1048576")));
        let mut g = generate(&m).unwrap();
        let Some(Value::Dict(d)) = g.nth(MAX_ENTRIES - 200) else {
            panic!()
        };
        assert_eq!(d.get_str("n"), Some(&s("1048377")));
        assert_eq!(g.len(), 199);
    }

    #[test]
    fn shortest_sequence_ends() {
        let m = model(&[
            ("a", Value::List(vec![s("x"), s("y"), s("z")])),
            ("b", s("1-2")),
            ("c", Value::Int(5)),
            ("d", s("plain")),
        ]);
        let out: Vec<Value> = generate(&m).unwrap().collect();
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[1],
            model(&[
                ("a", s("y")),
                ("b", s("2")),
                ("c", Value::Int(5)),
                ("d", s("plain"))
            ])
        );
        let empty = model(&[("a", s("1-3")), ("b", Value::List(vec![]))]);
        assert_eq!(generate(&empty).unwrap().count(), 0);
    }

    #[test]
    fn tuples_unicode_and_dicts_repeat() {
        let tuple = Value::Tuple(vec![s("x"), s("y")]);
        let nested: Dict = [(s("k"), s("1-2"))].into_iter().collect();
        let m = model(&[
            ("a", s("1-3")),
            ("t", tuple.clone()),
            ("u", Value::Unicode("1-2".into())),
            ("n", Value::Dict(nested)),
        ]);
        let out: Vec<Value> = generate(&m).unwrap().collect();
        assert_eq!(out.len(), 3);
        let Value::Dict(d) = &out[2] else { panic!() };
        assert_eq!(d.get_str("t"), Some(&tuple));
        assert_eq!(d.get_str("u"), Some(&Value::Unicode("1-2".into())));
        assert_eq!(d.get_str("n"), Some(&Value::Dict(Dict::new())));
    }

    #[test]
    fn bounds() {
        assert_eq!(
            generate(&model(&[("a", Value::Int(1))])).unwrap_err(),
            GenerateError::TooManyEntries
        );
        assert_eq!(
            generate(&model(&[("a", s("0-2000000"))])).unwrap_err(),
            GenerateError::TooManyEntries
        );
        assert_eq!(
            generate(&model(&[(
                "a",
                s("1-99999999999999999999999999999999999999999999")
            )]))
            .unwrap_err(),
            GenerateError::TooManyEntries
        );
        let short = model(&[("a", s("0-99999999999")), ("b", Value::List(vec![s("x")]))]);
        assert_eq!(generate(&short).unwrap().count(), 1);
        assert_eq!(generate(&s("1-2")).unwrap_err(), GenerateError::NotADict);
    }

    #[test]
    fn decimal_helpers() {
        assert_eq!(dec_add(b"999", b"1"), b"1000");
        assert_eq!(dec_sub(b"1000", b"1"), b"999");
        assert_eq!(dec_sub(b"5", b"5"), b"0");
        assert_eq!(trim_zeros(b"000"), b"0");
        assert_eq!(dec_cmp(b"10", b"9"), Ordering::Greater);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_strings_never_panic(v in "[0-9.:\n -]{0,20}", w in "[0-9:-]{0,12}") {
            let m = model(&[("a", s(&v)), ("b", s(&w))]);
            if let Ok(g) = generate(&m) {
                let n = g.len();
                proptest::prop_assert!(n <= MAX_ENTRIES);
                proptest::prop_assert_eq!(g.take(1000).count(), n.min(1000));
            }
        }
    }
}

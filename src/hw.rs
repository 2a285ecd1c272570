//! Hardware items: what a machine reports about itself, as 4-field lines
//! (`('disk', 'sda', 'size', '20')`, `('cpu', 'physical', 'number', 2)`).
//!
//! The initrd posts them as JSON; the legacy server reduces every string to
//! ASCII, keeps every other JSON scalar as the Python value it parses to
//! (int, long, float, True, False, None), saves the lines as a pprinted
//! Python list in `<sysname>.hw`, and names that file after the machine
//! (`sysname`). Older tools read those `.hw` files back, so both forms are
//! accepted here.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::literal::{self, Document, Value};

/// One field of a hardware line, as the legacy server holds it: real
/// detection sends numbers too (`('cpu', 'physical', 'number', 2)`), and
/// they stay numbers. Equality is Python's: `2 == 2.0 == True`, `'2' != 2`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum HwValue {
    /// A string, ASCII only.
    Str(String),
    /// A Python `int` (machine word).
    Int(i64),
    /// A Python `long`: an integer beyond `i64` (prints with `L`).
    Long(i128),
    Float(f64),
    Bool(bool),
    None,
}

impl HwValue {
    /// The text of a string value; `None` for numbers, booleans and null,
    /// on which the legacy functions and name rules raise.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HwValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a Python literal value, for printing and comparing.
    pub fn to_value(&self) -> Value {
        match self {
            HwValue::Str(s) => Value::str(s),
            HwValue::Int(i) => Value::Int(*i),
            HwValue::Long(i) => Value::Long(*i),
            HwValue::Float(f) => Value::Float(*f),
            HwValue::Bool(b) => Value::Bool(*b),
            HwValue::None => Value::None,
        }
    }

    /// The text of a string, else the Python `repr` (`2`, `2.5`, `True`).
    pub fn text(&self) -> String {
        match self {
            HwValue::Str(s) => s.clone(),
            _ => self.to_string(),
        }
    }
}

impl PartialEq for HwValue {
    fn eq(&self, other: &HwValue) -> bool {
        match (self, other) {
            (HwValue::Str(a), HwValue::Str(b)) => a == b,
            (HwValue::Str(_), _) | (_, HwValue::Str(_)) => false,
            _ => self.to_value() == other.to_value(),
        }
    }
}

impl PartialEq<str> for HwValue {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl PartialEq<&str> for HwValue {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl From<String> for HwValue {
    fn from(s: String) -> HwValue {
        HwValue::Str(s)
    }
}

impl From<&str> for HwValue {
    fn from(s: &str) -> HwValue {
        HwValue::Str(s.to_string())
    }
}

impl fmt::Display for HwValue {
    /// The Python `repr`, as the value appears in `.hw` files and `var`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&literal::repr(&self.to_value())))
    }
}

/// One hardware line.
pub type Item = [HwValue; 4];

/// Default `MAXHWLINES`: most lines in a hardware description.
pub const DEFAULT_MAX_HW_LINES: usize = 20_000;
/// Default `MAXHWVALUE`: longest field of a hardware line, in bytes.
pub const DEFAULT_MAX_HW_VALUE: usize = 4096;

/// Bounds on a hardware description besides its size in bytes: with them
/// the work of matching it is bounded too (a field is compared as a whole,
/// and each spec looks at every line). Real servers stay far below: a few
/// hundred lines, values of at most a few hundred bytes (CPU flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HwLimits {
    /// `MAXHWLINES`.
    pub max_lines: usize,
    /// `MAXHWVALUE`, in bytes.
    pub max_value: usize,
}

impl Default for HwLimits {
    fn default() -> HwLimits {
        HwLimits {
            max_lines: DEFAULT_MAX_HW_LINES,
            max_value: DEFAULT_MAX_HW_VALUE,
        }
    }
}

/// Why a hardware file was rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct HwError {
    pub file: PathBuf,
    /// 1-based line and column, when the syntax is at fault.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for HwError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                line,
                column,
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for HwError {}

/// Parses a hardware file: a JSON list of 4-string lists (what the initrd
/// sends), or the Python literal list of 4-tuples the server saves (told
/// apart by its first element starting with `(` or a quote other than `"`).
/// Non-ASCII characters are dropped from every string, as the legacy server
/// does. Nesting is bounded by both parsers (serde_json stops at 128 levels).
pub fn parse_hw(file: &Path, src: &[u8]) -> Result<Vec<Item>, HwError> {
    parse_hw_with(file, src, &HwLimits::default())
}

/// [`parse_hw`] within `limits` (those of edeploy.conf).
pub fn parse_hw_with(file: &Path, src: &[u8], limits: &HwLimits) -> Result<Vec<Item>, HwError> {
    match scan_saved(src, limits) {
        Some(lines) => Ok(lines.iter().map(|l| l.map(Field::to_hw)).collect()),
        None => parse_hw_fully(file, src, limits),
    }
}

/// [`parse_hw_with`] by the full parsers (Python literal or JSON).
fn parse_hw_fully(file: &Path, src: &[u8], limits: &HwLimits) -> Result<Vec<Item>, HwError> {
    let error = |position, message: String| HwError {
        file: file.to_path_buf(),
        position,
        message,
    };
    if looks_like_python(src) {
        let value = match literal::parse(file, src) {
            Ok(Document::Literal(v)) => v,
            Ok(Document::Generate(_)) => {
                return Err(error(
                    None,
                    "expected a list of hardware lines, found generate()".into(),
                ))
            }
            Err(e) => return Err(error(Some((e.line, e.column)), e.message)),
        };
        return items_from_literal(&value, limits).map_err(|m| error(None, m));
    }
    let src = drop_non_ascii_escapes(src);
    let syntax = |e| json_error(file, &e);
    // As serde_json::from_slice, but into items directly: a tree of the
    // whole upload costs up to 30 times its size (a list of 2 million
    // zeros is 4 MiB of JSON and 140 MB of `serde_json::Value`s).
    let mut de = serde_json::Deserializer::from_slice(&src);
    let read =
        serde::Deserializer::deserialize_any(&mut de, Reader::Top(limits)).map_err(syntax)?;
    de.end().map_err(syntax)?;
    match read {
        Read::Lines(lines) => lines.map_err(|m| error(None, m)),
        _ => Err(error(None, "expected a list of hardware lines".into())),
    }
}

/// A field of a `.hw` file written as the server writes it, borrowed from
/// the file's text: a string of printable ASCII, or a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    Str(&'a str),
    /// Its digits: at most 18, no leading zero (an `i64`, printed as is).
    Int(&'a str),
}

impl<'a> Field<'a> {
    /// The text of a string, `None` for a number (as [`HwValue::as_str`]).
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            Field::Str(s) => Some(s),
            Field::Int(_) => None,
        }
    }

    /// The text of a string, else the digits ([`HwValue::text`]).
    pub fn text(self) -> &'a str {
        match self {
            Field::Str(s) | Field::Int(s) => s,
        }
    }

    pub fn to_hw(self) -> HwValue {
        match self {
            Field::Str(s) => HwValue::Str(s.to_owned()),
            // At most 18 digits: always an `i64`.
            Field::Int(digits) => digits.parse().map_or(HwValue::None, HwValue::Int),
        }
    }
}

/// The lines of a `.hw` file in the form the server saves (a pprinted
/// list of 4-tuples whose fields are quoted printable ASCII without
/// backslashes, or plain integers), within `limits`; `None` for any other
/// text, which the full parser reads (and rejects or not). Where this
/// reads a file, the full parser reads the same lines from it: this only
/// skips building a tree of Python values, which was most of the cost of
/// listing thousands of machines.
pub fn scan_saved<'a>(src: &'a [u8], limits: &HwLimits) -> Option<Vec<[Field<'a>; 4]>> {
    let mut s = Scanner {
        src: std::str::from_utf8(src).ok()?,
        at: 0,
    };
    s.blank();
    s.eat(b'[')?;
    s.blank();
    // Nothing is allocated for another form (a JSON upload of 4 MiB).
    if s.src.as_bytes().get(s.at) != Some(&b'(') {
        return None;
    }
    let mut lines = Vec::with_capacity((src.len() / 40).min(limits.max_lines + 1));
    loop {
        s.blank();
        s.eat(b'(')?;
        let mut line = [Field::Int("0"); 4];
        for (i, slot) in line.iter_mut().enumerate() {
            s.blank();
            *slot = s.field(limits.max_value)?;
            s.blank();
            s.eat(if i == 3 { b')' } else { b',' })?;
        }
        lines.push(line);
        if lines.len() > limits.max_lines {
            return None;
        }
        s.blank();
        match s.next()? {
            b',' => continue,
            b']' => break,
            _ => return None,
        }
    }
    s.blank();
    (s.at == src.len()).then_some(lines)
}

struct Scanner<'a> {
    src: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn next(&mut self) -> Option<u8> {
        let b = *self.src.as_bytes().get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, expected: u8) -> Option<()> {
        (self.next()? == expected).then_some(())
    }

    /// Spaces and newlines, all pprint puts between tokens.
    fn blank(&mut self) {
        while matches!(self.src.as_bytes().get(self.at), Some(b' ' | b'\n')) {
            self.at += 1;
        }
    }

    fn field(&mut self, max_value: usize) -> Option<Field<'a>> {
        let start = self.at;
        let bytes = self.src.as_bytes();
        match self.next()? {
            quote @ (b'\'' | b'"') => {
                let len = memchr::memchr(quote, &bytes[self.at..])?;
                let end = self.at + len;
                // Printable ASCII but backslashes: the text is the value.
                let plain = bytes[self.at..end].iter().fold(true, |ok, &b| {
                    ok & (b' '..=b'~').contains(&b) & (b != b'\\')
                });
                if !plain || len > max_value {
                    return None;
                }
                let text = self.src.get(self.at..end)?;
                self.at = end + 1;
                Some(Field::Str(text))
            }
            b'1'..=b'9' => {
                while bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
                    self.at += 1;
                }
                let digits = self.src.get(start..self.at)?;
                (digits.len() <= 18).then_some(Field::Int(digits))
            }
            b'0' if !bytes.get(self.at).is_some_and(u8::is_ascii_alphanumeric) => {
                Some(Field::Int("0"))
            }
            _ => None,
        }
    }
}

/// The saved `.hw` form: `[('disk', ...` or `[u'...` / `['...`.
/// A JSON syntax error. serde_json repeats the place in its message, and
/// counts the column 0 at the end of a line (an end of file after a newline
/// is "line 2 column 0"): the place once, columns from 1.
fn json_error(file: &Path, e: &serde_json::Error) -> HwError {
    let text = e.to_string();
    let place = format!(" at line {} column {}", e.line(), e.column());
    HwError {
        file: file.to_path_buf(),
        position: (e.line() > 0).then(|| (e.line(), e.column().max(1))),
        message: format!(
            "invalid JSON: {}",
            text.strip_suffix(&place).unwrap_or(&text)
        ),
    }
}

fn looks_like_python(src: &[u8]) -> bool {
    let mut rest = src.iter().skip_while(|b| b.is_ascii_whitespace());
    if rest.next() != Some(&b'[') {
        return false;
    }
    let mut rest = rest.skip_while(|b| b.is_ascii_whitespace());
    match rest.next() {
        Some(b'(') => true,
        Some(b'[') => {
            let mut rest = rest.skip_while(|b| b.is_ascii_whitespace());
            matches!(
                rest.next(),
                Some(b'\'' | b'u' | b'b' | b'r' | b'U' | b'B' | b'R')
            )
        }
        _ => false,
    }
}

/// Removes JSON `\uXXXX` escapes of non-ASCII characters: they would be
/// dropped anyway, and serde_json rejects the lone surrogates Python's
/// `json.dumps` can produce. Borrows the source when there are none (the
/// usual case: no copy of the upload).
fn drop_non_ascii_escapes(src: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    // `src[..kept]` is in `out`, but for the escapes dropped.
    let mut kept = 0;
    let mut in_string = false;
    let mut i = 0;
    while let Some(&b) = src.get(i) {
        if in_string && b == b'\\' {
            let escape = src.get(i + 2..i + 6);
            let code = escape
                .filter(|_| src.get(i + 1) == Some(&b'u'))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            if code.is_some_and(|c| c >= 0x80) {
                let out = out.get_or_insert_with(|| Vec::with_capacity(src.len()));
                out.extend_from_slice(src.get(kept..i).unwrap_or_default());
                kept = i + 6;
            }
            i += if code.is_some_and(|c| c >= 0x80) {
                6
            } else {
                2
            };
            continue;
        }
        if b == b'"' {
            in_string = !in_string;
        }
        i += 1;
    }
    match out {
        None => Cow::Borrowed(src),
        Some(mut out) => {
            out.extend_from_slice(src.get(kept..).unwrap_or_default());
            Cow::Owned(out)
        }
    }
}

/// What the JSON reader expects at a point of the document. Everything is
/// read through `deserialize_any`, as `serde_json::Value` reads it, so the
/// same documents are valid (UTF-8, nesting within 128 levels...) and the
/// errors carry the same positions; but only what becomes an item is kept.
#[derive(Clone, Copy)]
enum Reader<'a> {
    /// The document: a list of lines.
    Top(&'a HwLimits),
    /// A line: a list of fields.
    Line,
    /// A field: a scalar.
    Field,
    /// Anything, read to validate it and dropped.
    Skip,
}

/// What [`Reader`] read.
enum Read {
    /// A scalar (a string outside [`Reader::Field`] is not kept), or what
    /// else a field is (`field_from_json`'s error).
    Scalar(Result<HwValue, &'static str>),
    /// The list of [`Reader::Top`]: the items, or the first thing wrong.
    Lines(Result<Vec<Item>, String>),
    /// The list of [`Reader::Line`]: its first four fields and its length.
    Fields(Vec<Result<HwValue, &'static str>>, usize),
    /// Another list.
    List,
    Object,
}

impl<'de> serde::de::DeserializeSeed<'de> for Reader<'_> {
    type Value = Read;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Read, D::Error> {
        de.deserialize_any(self)
    }
}

impl Reader<'_> {
    fn number(self, n: serde_json::Number) -> Read {
        Read::Scalar(field_from_json(&serde_json::Value::Number(n)))
    }

    fn string(self, s: &str) -> Read {
        Read::Scalar(Ok(match self {
            Reader::Field => HwValue::Str(ascii(s)),
            _ => HwValue::None,
        }))
    }
}

impl<'de> serde::de::Visitor<'de> for Reader<'_> {
    type Value = Read;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Read, E> {
        Ok(Read::Scalar(Ok(HwValue::Bool(b))))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Read, E> {
        Ok(self.number(i.into()))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Read, E> {
        Ok(self.number(u.into()))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Read, E> {
        Ok(match serde_json::Number::from_f64(f) {
            Some(n) => self.number(n),
            None => Read::Scalar(Ok(HwValue::None)),
        })
    }

    fn visit_str<E>(self, s: &str) -> Result<Read, E> {
        Ok(self.string(s))
    }

    fn visit_unit<E>(self) -> Result<Read, E> {
        Ok(Read::Scalar(Ok(HwValue::None)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Read, A::Error> {
        match self {
            Reader::Top(limits) => {
                // Past the first error or MAXHWLINES, lines are only read
                // through: the error reported is the one a whole tree gave
                // (the line count first), nothing more is kept.
                let mut items = Vec::new();
                let mut wrong = None;
                let mut lines = 0;
                loop {
                    let keep = wrong.is_none() && lines < limits.max_lines;
                    let reader = if keep { Reader::Line } else { Reader::Skip };
                    let Some(read) = seq.next_element_seed(reader)? else {
                        break;
                    };
                    if keep {
                        let item = match read {
                            Read::Fields(fields, count) => item_from(lines, count, fields, limits),
                            _ => Err(format!("element {lines}: expected a list of 4 fields")),
                        };
                        match item {
                            Ok(item) => items.push(item),
                            Err(e) => wrong = Some(e),
                        }
                    }
                    lines += 1;
                }
                let lines = check_lines(lines, limits).and(wrong.map_or(Ok(items), Err));
                Ok(Read::Lines(lines))
            }
            Reader::Line => {
                let mut fields = Vec::with_capacity(4);
                let mut count = 0;
                loop {
                    let reader = if count < 4 {
                        Reader::Field
                    } else {
                        Reader::Skip
                    };
                    let Some(read) = seq.next_element_seed(reader)? else {
                        break;
                    };
                    if count < 4 {
                        fields.push(match read {
                            Read::Scalar(field) => field,
                            Read::Object => Err("an object"),
                            _ => Err("a list"),
                        });
                    }
                    count += 1;
                }
                Ok(Read::Fields(fields, count))
            }
            Reader::Field | Reader::Skip => {
                while seq.next_element_seed(Reader::Skip)?.is_some() {}
                Ok(Read::List)
            }
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Read, A::Error> {
        // serde_json (arbitrary_precision) hands the numbers it cannot give
        // as i64 or u64 over as this one-entry map; `serde_json::Value`
        // reads any such map as that number, and so does this.
        match map.next_key::<Key>()? {
            Some(Key::Number) => {
                let text: String = map.next_value()?;
                let n = text.parse().map_err(serde::de::Error::custom)?;
                Ok(self.number(n))
            }
            Some(Key::Other) => {
                map.next_value_seed(Reader::Skip)?;
                while map.next_key::<Key>()?.is_some() {
                    map.next_value_seed(Reader::Skip)?;
                }
                Ok(Read::Object)
            }
            None => Ok(Read::Object),
        }
    }
}

/// An object key, as `serde_json::Value` tells them apart.
enum Key {
    /// serde_json's private marker of a number given as text.
    Number,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }

            fn visit_str<E>(self, s: &str) -> Result<Key, E> {
                Ok(if s == "$serde_json::private::Number" {
                    Key::Number
                } else {
                    Key::Other
                })
            }
        }
        de.deserialize_str(KeyVisitor)
    }
}

fn ascii(s: &str) -> String {
    s.chars().filter(char::is_ascii).collect()
}

fn items_from_literal(value: &Value, limits: &HwLimits) -> Result<Vec<Item>, String> {
    let Value::List(elements) = value else {
        return Err("expected a list of hardware lines".into());
    };
    check_lines(elements.len(), limits)?;
    let mut items = Vec::with_capacity(elements.len());
    for (i, element) in elements.iter().enumerate() {
        let (Value::Tuple(fields) | Value::List(fields)) = element else {
            return Err(format!("element {i}: expected a tuple of 4 fields"));
        };
        let fields = fields.iter().map(field_from_literal);
        items.push(item_from(i, fields.len(), fields, limits)?);
    }
    Ok(items)
}

fn check_lines(lines: usize, limits: &HwLimits) -> Result<(), String> {
    if lines > limits.max_lines {
        return Err(format!(
            "{lines} hardware lines, more than MAXHWLINES ({})",
            limits.max_lines
        ));
    }
    Ok(())
}

/// Element `i`: exactly four fields (`count`, of which `fields` are
/// the first four as read), each a string (within `limits.max_value`) or a
/// scalar.
fn item_from(
    i: usize,
    count: usize,
    fields: impl IntoIterator<Item = Result<HwValue, &'static str>>,
    limits: &HwLimits,
) -> Result<Item, String> {
    if count != 4 {
        return Err(format!("element {i}: expected 4 fields, found {count}"));
    }
    let mut item: Item = [HwValue::None, HwValue::None, HwValue::None, HwValue::None];
    for (j, (slot, f)) in item.iter_mut().zip(fields).enumerate() {
        *slot = f.map_err(|what| {
            format!("element {i}: field {j} is {what}, expected a string or a number")
        })?;
        if let HwValue::Str(text) = slot {
            if text.len() > limits.max_value {
                return Err(format!(
                    "element {i}: field {j} is {} bytes long, more than MAXHWVALUE ({})",
                    text.len(),
                    limits.max_value
                ));
            }
        }
    }
    Ok(item)
}

/// A JSON scalar as Python's `json` module reads it (an error names what
/// else it is): integers beyond the
/// machine word are longs, numbers with a fraction or exponent are floats.
pub fn field_from_json(v: &serde_json::Value) -> Result<HwValue, &'static str> {
    Ok(match v {
        serde_json::Value::String(s) => HwValue::Str(ascii(s)),
        serde_json::Value::Bool(b) => HwValue::Bool(*b),
        serde_json::Value::Null => HwValue::None,
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => HwValue::Int(i),
            None => {
                // The number's own text (serde_json's arbitrary_precision).
                let text = n.to_string();
                if text.contains(['.', 'e', 'E']) {
                    HwValue::Float(text.parse().map_err(|_| "an unreadable number")?)
                } else {
                    HwValue::Long(text.parse().map_err(|_| "an integer beyond 2**127")?)
                }
            }
        },
        serde_json::Value::Array(_) => return Err("a list"),
        serde_json::Value::Object(_) => return Err("an object"),
    })
}

fn field_from_literal(v: &Value) -> Result<HwValue, &'static str> {
    Ok(match v {
        Value::Str(b) => HwValue::Str(
            b.iter()
                .filter(|b| b.is_ascii())
                .map(|&b| char::from(b))
                .collect(),
        ),
        Value::Unicode(s) => HwValue::Str(ascii(s)),
        Value::Int(i) => HwValue::Int(*i),
        Value::Long(i) => HwValue::Long(*i),
        Value::Float(f) => HwValue::Float(*f),
        Value::Bool(b) => HwValue::Bool(*b),
        Value::None => HwValue::None,
        Value::List(_) => return Err("a list"),
        Value::Tuple(_) => return Err("a tuple"),
        Value::Dict(_) => return Err("a dict"),
    })
}

/// The items as a list of 4-tuples: the value pprinted into `<sysname>.hw`.
pub fn items_value(items: &[Item]) -> Value {
    Value::List(
        items
            .iter()
            .map(|item| Value::Tuple(item.iter().map(HwValue::to_value).collect()))
            .collect(),
    )
}

/// `pformat(items_value(items))`, the text of `<sysname>.hw`, printed
/// one line at a time: the tree of a large upload costs more than its text.
pub fn items_text(items: &[Item]) -> Vec<u8> {
    // The shortest line, `(0, 0, 0, 0)`, has 12 characters: from 6 lines
    // on, the list is longer than pprint's 80 columns and printed one
    // element a line (indent 1, allowance 1). Shorter ones are left to it.
    if items.len() < 6 {
        return literal::pformat(&items_value(items));
    }
    let mut out = Vec::with_capacity(items.len() * 48);
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",\n ");
        }
        let line = Value::Tuple(item.iter().map(HwValue::to_value).collect());
        literal::format_at(&mut out, &line, 1, 1);
    }
    out.extend_from_slice(b"]\n");
    out
}

/// The machine's name for its `.hw` file, and its MAC addresses
/// (LEGACY-SEMANTICS §6).
///
/// The product vendor gives the name, the product name replaces it, the
/// product serial is appended (each stripped to `[A-Za-z0-9_]` and followed
/// by `-`), then the first MAC with `:` turned into `-`. The MACs are the
/// values of every `('network', <nic>, 'serial', <mac>)` line, in order.
/// A number there (the legacy server crashes on it) is taken as its repr,
/// so that such a machine is still named and installed.
pub fn sysname_and_macs(items: &[Item]) -> (String, Vec<String>) {
    let first = |key: &str| {
        items
            .iter()
            .find(|i| i[0] == *"system" && i[1] == *"product" && i[2] == *key)
            .map(|i| clean(&i[3].text()) + "-")
    };
    let mut sysname = first("vendor").unwrap_or_default();
    if let Some(name) = first("name") {
        sysname = name;
    }
    if let Some(serial) = first("serial") {
        sysname.push_str(&serial);
    }
    let macs: Vec<String> = items
        .iter()
        .filter(|i| i[0] == *"network" && i[2] == *"serial")
        .map(|i| i[3].text())
        .collect();
    if let Some(mac) = macs.first() {
        sysname.push_str(&mac.replace(':', "-"));
    }
    (sysname, macs)
}

/// Python's `re.sub(r'\W+', '', s)` on a byte string.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Vec<Item>, HwError> {
        parse_hw(Path::new("/tmp/hw.json"), src.as_bytes())
    }

    fn item(f: [&str; 4]) -> Item {
        f.map(HwValue::from)
    }

    #[test]
    fn json_items() {
        let items = parse(
            r#" [["disk", "vda", "size", "20"], ["network","eth0","serial","52:54:00:12:34:56"]] "#,
        )
        .unwrap();
        assert_eq!(
            items,
            [
                item(["disk", "vda", "size", "20"]),
                item(["network", "eth0", "serial", "52:54:00:12:34:56"])
            ]
        );
        assert_eq!(parse("[]").unwrap(), Vec::<Item>::new());
    }

    /// Real detection sends numbers; they stay the Python values that
    /// `json.loads` makes of them, and print as the legacy `.hw` files do.
    #[test]
    fn json_scalars_are_kept() {
        let items = parse(
            r#"[["cpu", "physical", "number", 2], ["a", "b", "c", -0],
                ["a", "b", "c", 9223372036854775807], ["a", "b", "c", 9223372036854775808],
                ["a", "b", "c", 2.5], ["a", "b", "c", 3.0], ["a", "b", "c", 1e20],
                ["a", "b", "c", -0.0], ["a", "b", "c", 1E400], ["a", "b", "c", 100000000000000000000000],
                ["a", "b", "c", true], ["a", "b", "c", false], ["a", "b", "c", null]]"#,
        )
        .unwrap();
        let reprs: Vec<String> = items.iter().map(|i| i[3].to_string()).collect();
        assert_eq!(
            reprs,
            [
                "2",
                "0",
                "9223372036854775807",
                "9223372036854775808L",
                "2.5",
                "3.0",
                "1e+20",
                "-0.0",
                "inf",
                "100000000000000000000000L",
                "True",
                "False",
                "None"
            ]
        );
        let text = literal::pformat(&items_value(&items[..1]));
        assert_eq!(text, b"[('cpu', 'physical', 'number', 2)]\n");
        // The saved form reads back to the same values (but `inf`, which
        // is no Python literal, for the legacy tools either).
        let finite: Vec<Item> = items
            .into_iter()
            .filter(|i| !matches!(i[3], HwValue::Float(f) if f.is_infinite()))
            .collect();
        let text = literal::pformat(&items_value(&finite));
        let again = parse_hw(Path::new("x.hw"), &text).unwrap();
        assert_eq!(again.len(), 12);
        for (a, b) in again.iter().zip(&finite) {
            assert_eq!(a[3].to_string(), b[3].to_string());
        }
    }

    #[test]
    fn python_equality() {
        use HwValue::*;
        assert_eq!(Int(2), Float(2.0));
        assert_eq!(Int(1), Bool(true));
        assert_eq!(Int(0), Bool(false));
        assert_eq!(Long(2), Int(2));
        assert_eq!(None, None);
        assert_ne!(Int(2), Str("2".into()));
        assert_ne!(None, Bool(false));
        assert_ne!(Float(f64::NAN), Float(f64::NAN));
        assert_eq!(Str("2".into()), "2");
        assert_ne!(Int(2), "2");
    }

    #[test]
    fn non_ascii_is_dropped() {
        let items =
            parse(r#"[["system", "product", "vendor", "Caf\u00e9 \ud800Inc\\u00e9 é"]]"#).unwrap();
        assert_eq!(items[0][3], "Caf Inc\\u00e9 ");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let msg = |src: &str| parse(src).unwrap_err().to_string();
        assert_eq!(
            msg(r#"{"a": 1}"#),
            "/tmp/hw.json: expected a list of hardware lines"
        );
        assert_eq!(
            msg(r#"[["a","b","c","d"], ["a","b","c"]]"#),
            "/tmp/hw.json: element 1: expected 4 fields, found 3"
        );
        assert_eq!(
            msg(r#"[["a","b","c",[4]]]"#),
            "/tmp/hw.json: element 0: field 3 is a list, expected a string or a number"
        );
        assert_eq!(
            msg(r#"[["a",{},"c",4]]"#),
            "/tmp/hw.json: element 0: field 1 is an object, expected a string or a number"
        );
        assert_eq!(
            msg(r#"["abcd"]"#),
            "/tmp/hw.json: element 0: expected a list of 4 fields"
        );
        let err = parse("[\n[\"a\",\n").unwrap_err();
        assert!(err.position.is_some(), "{err}");
        assert!(err.to_string().starts_with("/tmp/hw.json:3:"), "{err}");
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(parse(&deep)
            .unwrap_err()
            .message
            .contains("recursion limit"));
    }

    #[test]
    fn python_form_is_recognised() {
        assert!(looks_like_python(b" [('disk', 'vda', 'size', '20')]"));
        assert!(looks_like_python(b"[\n ['disk', 'vda', 'size', '20']]"));
        assert!(looks_like_python(b"[[u'disk', u'vda', u'size', u'20']]"));
        assert!(!looks_like_python(
            b"[[\"disk\", \"vda\", \"size\", \"20\"]]"
        ));
        assert!(!looks_like_python(b"[]"));
        assert!(!looks_like_python(b"{}"));
    }

    #[test]
    fn python_literal_items() {
        let src =
            b"[('disk', 'vda', 'size', '20'),\n ('system', 'product', 'name', 'caf\\xc3\\xa9')]\n";
        let items = parse_hw(Path::new("x.hw"), src).unwrap();
        assert_eq!(items[1], item(["system", "product", "name", "caf"]));
        let err = parse_hw(Path::new("x.hw"), b"[('a', 'b', 'c')]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.hw: element 0: expected 4 fields, found 3"
        );
        let err = parse_hw(Path::new("x.hw"), b"[('a', 'b',").unwrap_err();
        assert!(err.position.is_some());
    }

    #[test]
    fn items_as_value() {
        let v = items_value(&[item(["disk", "vda", "size", "20"])]);
        let tuple = Value::Tuple(
            ["disk", "vda", "size", "20"]
                .iter()
                .map(|s| Value::str(s))
                .collect(),
        );
        assert_eq!(v, Value::List(vec![tuple]));
    }

    #[test]
    fn sysname() {
        let items = [
            item(["system", "product", "name", "edeploy_test_vm ()"]),
            item(["network", "eth0", "serial", "52:54:12:34:00:03"]),
            item(["network", "eth1", "serial", "52:54:12:34:00:04"]),
        ];
        let (name, macs) = sysname_and_macs(&items);
        assert_eq!(name, "edeploy_test_vm-52-54-12-34-00-03");
        assert_eq!(macs, ["52:54:12:34:00:03", "52:54:12:34:00:04"]);
        let items = [
            item(["system", "product", "vendor", "Dell Inc."]),
            item(["system", "product", "serial", "AB-12 3"]),
            item(["system", "product", "name", "Power Edge"]),
        ];
        assert_eq!(
            sysname_and_macs(&items),
            ("PowerEdge-AB123-".into(), vec![])
        );
        assert_eq!(sysname_and_macs(&[]), (String::new(), vec![]));
        // Numbers where the legacy server crashes: named all the same.
        let mut serial = item(["system", "product", "serial", "-"]);
        serial[3] = HwValue::Float(2.5);
        let mut mac = item(["network", "eth0", "serial", "-"]);
        mac[3] = HwValue::Int(12);
        assert_eq!(
            sysname_and_macs(&[serial, mac]),
            ("25-12".into(), vec!["12".to_string()])
        );
    }

    /// What the reader replaced: the whole document as a
    /// `serde_json::Value`, then its items. The reader must give the same
    /// items and the same errors.
    fn reference(src: &str, limits: &HwLimits) -> Result<Vec<Item>, HwError> {
        let file = Path::new("/tmp/hw.json");
        let error = |position, message| HwError {
            file: file.to_path_buf(),
            position,
            message,
        };
        let src = drop_non_ascii_escapes(src.as_bytes());
        let json: serde_json::Value =
            serde_json::from_slice(&src).map_err(|e| json_error(file, &e))?;
        let serde_json::Value::Array(elements) = json else {
            return Err(error(None, "expected a list of hardware lines".into()));
        };
        check_lines(elements.len(), limits).map_err(|m| error(None, m))?;
        let mut items = Vec::new();
        for (i, element) in elements.iter().enumerate() {
            let serde_json::Value::Array(fields) = element else {
                return Err(error(
                    None,
                    format!("element {i}: expected a list of 4 fields"),
                ));
            };
            let fields = fields.iter().map(field_from_json);
            items.push(item_from(i, fields.len(), fields, limits).map_err(|m| error(None, m))?);
        }
        Ok(items)
    }

    fn small_limits() -> HwLimits {
        HwLimits {
            max_lines: 3,
            max_value: 5,
        }
    }

    fn parse_small(src: &str) -> Result<Vec<Item>, HwError> {
        parse_hw_with(Path::new("/tmp/hw.json"), src.as_bytes(), &small_limits())
    }

    /// The first error of a whole-document reading wins: a syntax error
    /// anywhere, then the line count, then the first line at fault.
    #[test]
    fn error_precedence_is_that_of_a_whole_document() {
        let msg = |src: &str| parse_small(src).unwrap_err().to_string();
        let cases = [
            (
                r#"[["a","b","c",[1]], 1, 2, 3, 4]"#,
                "/tmp/hw.json: 5 hardware lines, more than MAXHWLINES (3)",
            ),
            (
                r#"[["a","b","c",[1]], 1, 2, 3, {"a": [[[]]]}, "x"]"#,
                "/tmp/hw.json: 6 hardware lines, more than MAXHWLINES (3)",
            ),
            (
                r#"[["a","b","c","d"], ["a","b","c","toolong"], ["a"]]"#,
                "/tmp/hw.json: element 1: field 3 is 7 bytes long, more than MAXHWVALUE (5)",
            ),
            (
                r#"[["a","b","c",[1]], ["a","b"], 2"#,
                "/tmp/hw.json:1:32: invalid JSON: EOF while parsing a list",
            ),
            (
                "[[\"a\",\"b\",\"c\",\"d\"],\n\n",
                "/tmp/hw.json:3:1: invalid JSON: EOF while parsing a value",
            ),
            (
                r#"[["a","b","c",[1]], ["x", "\ud800"]]"#,
                "/tmp/hw.json: element 0: field 3 is a list, expected a string or a number",
            ),
            (
                "[[\"a\",\"b\",\"c\",[1]], [\"x\", \"\t\"]]",
                "/tmp/hw.json:1:28: invalid JSON: control character (\\u0000-\\u001F) found \
                 while parsing a string",
            ),
            (
                r#"[["a","b","c","d","e",[[[[]]]],{}]]"#,
                "/tmp/hw.json: element 0: expected 4 fields, found 7",
            ),
            (
                r#"[["a",1e999999,"c",{}]]"#,
                "/tmp/hw.json: element 0: field 3 is an object, expected a string or a number",
            ),
            (
                r#""abc""#,
                "/tmp/hw.json: expected a list of hardware lines",
            ),
            (
                r#"{"a": [1, 2]}"#,
                "/tmp/hw.json: expected a list of hardware lines",
            ),
        ];
        for (src, expected) in cases {
            assert_eq!(msg(src), expected, "{src}");
            assert_eq!(
                reference(src, &small_limits()).unwrap_err().to_string(),
                expected,
                "reference: {src}"
            );
        }
    }

    /// serde_json gives the numbers it cannot give as integers as a map
    /// with a private key; `serde_json::Value` takes any such map for a
    /// number, and so does the reader.
    #[test]
    fn number_marker_objects_read_as_numbers() {
        let src = r#"[["a","b",{"$serde_json::private::Number": "1.5"},
                      {"$serde_json::private::Number": "99999999999999999999"}]]"#;
        let items = parse(src).unwrap();
        assert_eq!(items[0][2].to_string(), "1.5");
        assert_eq!(items[0][3].to_string(), "99999999999999999999L");
        assert_eq!(items, reference(src, &HwLimits::default()).unwrap());
        let bad = r#"[["a","b","c",{"$serde_json::private::Number": "x"}]]"#;
        assert_eq!(
            parse(bad).unwrap_err().to_string(),
            reference(bad, &HwLimits::default())
                .unwrap_err()
                .to_string()
        );
    }

    #[test]
    fn escapes_are_copied_only_when_dropped() {
        assert!(matches!(
            drop_non_ascii_escapes(br#"["a\n\u0041\\u00e9"]"#),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            drop_non_ascii_escapes(br#"["a\u00e9b\ud800", "\u00e9"]"#).as_ref(),
            br#"["ab", ""]"#
        );
        assert_eq!(drop_non_ascii_escapes(br#""\u00e"#).as_ref(), br#""\u00e"#);
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// The `.hw` text printed line by line is pprint's.
        #[test]
        fn items_text_is_pformat(
            lines in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![
                        "[a-z' ]{0,40}".prop_map(HwValue::Str),
                        proptest::num::i64::ANY.prop_map(HwValue::Int),
                        (0i64..10).prop_map(HwValue::Int),
                        proptest::strategy::Just(HwValue::Float(2.5)),
                        proptest::strategy::Just(HwValue::None),
                    ],
                    4,
                ),
                0..12,
            ),
        ) {
            let items: Vec<Item> = lines
                .into_iter()
                .filter_map(|l| <[HwValue; 4]>::try_from(l).ok())
                .collect();
            let (ours, pprint) = (items_text(&items), literal::pformat(&items_value(&items)));
            proptest::prop_assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&pprint)
            );
        }
    }

    proptest::proptest! {
        /// Documents built of the pieces hardware lines are made of, often
        /// wrong: the reader and a whole-document reading agree on the
        /// items, or on the error.
        #[test]
        fn reader_agrees_with_a_whole_document(
            lines in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![
                        "\"[a-z\\\\é]{0,7}\"",
                        "-?[0-9]{1,22}(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?",
                        proptest::strategy::Just("true".to_owned()),
                        proptest::strategy::Just("null".to_owned()),
                        proptest::strategy::Just("[1, [\"x\"]]".to_owned()),
                        proptest::strategy::Just("{\"k\": [1]}".to_owned()),
                        proptest::strategy::Just("\"\\ud83d\\u00e9\"".to_owned()),
                        "[\\[\\]{}\",:a0 ]{1,3}",
                    ],
                    0..6,
                ),
                0..6,
            ),
            max_lines in 1usize..6,
            max_value in 1usize..8,
        ) {
            let src = format!(
                "[{}]",
                lines.iter().map(|l| format!("[{}]", l.join(","))).collect::<Vec<_>>().join(",")
            );
            let limits = HwLimits { max_lines, max_value };
            let got = parse_hw_with(Path::new("/tmp/hw.json"), src.as_bytes(), &limits);
            proptest::prop_assert_eq!(got, reference(&src, &limits), "{}", src);
        }

        #[test]
        fn reader_agrees_on_arbitrary_text(src in r#"[\[\]{}",:a-z0-9 .eE+\\u-]{0,40}"#) {
            proptest::prop_assume!(!looks_like_python(src.as_bytes()));
            proptest::prop_assert_eq!(parse(&src), reference(&src, &HwLimits::default()));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_json_never_panics(src in r#"[\[\]{}",:a-z0-9 \\u]{0,40}"#) {
            proptest::prop_assume!(!looks_like_python(src.as_bytes()));
            let _ = parse(&src);
        }
    }

    /// The server's saved form is read without the full parser, to the
    /// same lines; anything else is left to the full parser.
    #[test]
    fn saved_files_are_scanned_to_the_lines_the_full_parser_reads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real-hw/hw");
        let limits = HwLimits::default();
        for name in ["hp-proliant-dl360p-gen8.hw", "dell-poweredge-m520.hw"] {
            let src = std::fs::read(dir.join(name)).unwrap();
            let full = parse_hw_fully(Path::new(name), &src, &limits).unwrap();
            let scanned = scan_saved(&src, &limits).expect(name);
            let scanned: Vec<Item> = scanned.iter().map(|l| l.map(Field::to_hw)).collect();
            assert_eq!(scanned, full, "{name}");
            // The HP's integers stay integers.
            let ints = full.iter().filter(|l| matches!(l[3], HwValue::Int(_)));
            assert_eq!(ints.count() > 0, name.starts_with("hp"), "{name}");
            // As saved again by the server.
            assert!(scan_saved(&items_text(&full), &limits).is_some());
        }
        let hostile = [
            "",
            "[]",
            "[('a', 'b', 'c', 'd'),]",
            "[('a', 'b', 'c', 'd',)]",
            "[('a', 'b', 'c')]",
            "[('a', 'b', 'c', 'd', 'e')]",
            "[('a', 'b', 'c', 'd')] x",
            "[('a', 'b', 'c', 'd')",
            "[('a', 'b', 'c', 'd' 'e')]",
            "[('a', 'b', 'c', 'it''s')]",
            "[('a', 'b', 'c', 'd\\'')]",
            "[('a', 'b', 'c', 'caf\u{e9}')]",
            "[('a', 'b', 'c', u'd')]",
            "[('a', 'b', 'c', 010)]",
            "[('a', 'b', 'c', 10L)]",
            "[('a', 'b', 'c', 1.5)]",
            "[('a', 'b', 'c', -1)]",
            "[('a', 'b', 'c', 0x10)]",
            "[('a', 'b', 'c', 1e3)]",
            "[('a', 'b', 'c', 12345678901234567890)]",
            "[('a', 'b', 'c', True)]",
            "[('a', 'b', 'c', None)]",
            "[['a', 'b', 'c', 'd']]",
            "[('a', 'b', 'c', 'd'),\t('e', 'f', 'g', 'h')]",
            "[('a', 'b', 'c', 'd')] # comment",
            "[('a', 'b', 'c', 'tab\there')]",
            "[('a', 'b', 'c', \"it's\")]",
            "[('a', 'b', 'c', 'd')]\r\n",
            "[('a', 'b', 'c', 0),\n ('a',\n  'b',\n  'c',\n  'ef')]\n",
            "generate([('a', 'b', 'c', 'd')])",
        ];
        for text in hostile {
            let src = text.as_bytes();
            for limits in [
                limits,
                HwLimits {
                    max_lines: 1,
                    max_value: 2,
                },
            ] {
                let got = parse_hw_with(Path::new("h.hw"), src, &limits);
                assert_eq!(
                    got,
                    parse_hw_fully(Path::new("h.hw"), src, &limits),
                    "{text}"
                );
            }
        }
        // The forms the scanner takes.
        for text in [
            "[('a', 'b', 'c', 'd')]",
            "[('a', 'b', 'c', \"it's\")]",
            "[('a', 'b', 'c', 0),\n ('a',\n  'b',\n  'c',\n  12)]\n",
        ] {
            assert!(scan_saved(text.as_bytes(), &limits).is_some(), "{text}");
        }
    }

    proptest::proptest! {
        /// Any lines the server may save, and any text near that form,
        /// read the same with and without the scanner.
        #[test]
        fn scanned_and_fully_parsed_files_agree(
            lines in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![
                        r"[ -~]{0,6}".prop_map(HwValue::Str),
                        "[a-z\\\\'\"\t\u{e9}]{0,4}".prop_map(HwValue::Str),
                        proptest::num::i64::ANY.prop_map(HwValue::Int),
                        (0i64..1000).prop_map(HwValue::Int),
                        proptest::bool::ANY.prop_map(HwValue::Bool),
                        (-1e3f64..1e3).prop_map(HwValue::Float),
                    ],
                    4,
                ),
                0..8,
            ),
            cut in 0usize..400,
            byte in 0u8..128,
            max_value in 2usize..8,
        ) {
            let items: Vec<Item> = lines
                .into_iter()
                .map(|l| [l[0].clone(), l[1].clone(), l[2].clone(), l[3].clone()])
                .collect();
            let saved = items_text(&items);
            let mut mutated = saved.clone();
            if !mutated.is_empty() {
                let at = cut % mutated.len();
                mutated[at] = byte;
            }
            for src in [&saved, &mutated] {
                for limits in [HwLimits::default(), HwLimits { max_lines: 3, max_value }] {
                    proptest::prop_assert_eq!(
                        parse_hw_with(Path::new("p.hw"), src, &limits),
                        parse_hw_fully(Path::new("p.hw"), src, &limits),
                        "{}", String::from_utf8_lossy(src)
                    );
                }
            }
        }
    }
}

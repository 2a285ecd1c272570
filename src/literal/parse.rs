//! Reading literal files: the entry points, their errors, and the
//! streaming of a large top-level list entry by entry.

use std::fmt;
use std::path::{Path, PathBuf};

use super::parser::{parse_document, stream_list};
use super::pprint::{pad, WIDTH};
use super::repr::{write_int, write_str_repr};
use super::value::Value;

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
    pub(super) items: &'s [(&'a [u8], Plain<'a>)],
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

//! Python 2 literals: the data model of every legacy configuration file.
//!
//! The legacy server `eval()`s its state, specs and CMDB files and writes them
//! back with `pprint`. We never evaluate code: this module parses the literal
//! subset those files use into [`Value`], and prints values back exactly as
//! Python 2.7's `repr()` and `pprint.pprint()` would, so that files written by
//! either implementation are byte-identical.
//!
//! One rule, one place: `value` (the data model and Python's equality),
//! `order` (Python's ordering), `parse` (the entry points and their errors),
//! `parser` (the grammar), `strings` (string literal bodies and the source
//! encoding), `repr` and `pprint` (writing values back).

mod order;
mod parse;
mod parser;
mod pprint;
mod repr;
mod strings;
mod value;

pub use order::py_cmp;
pub use parse::{
    parse, parse_list_streaming, parse_list_streaming_flat, Document, FlatDict, ListSink,
    ParseError, Plain, Streamed, MAX_DEPTH,
};
pub use pprint::{format_at, pformat};
pub use repr::repr;
pub use value::{Dict, Value};

#[cfg(test)]
mod tests;

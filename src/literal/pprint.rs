//! Python 2.7's `pprint`: where it breaks lines and how it indents, so
//! that the files written back are byte-identical to the legacy's.

use super::repr::{escape_len, int_len, quote_for, str_repr_shape, write_float, write_repr};
use super::value::Value;

/// pprint's line width.
pub(super) const WIDTH: usize = 80;

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

pub(super) fn pad(out: &mut Vec<u8>, n: usize) {
    const SPACES: &[u8; 32] = b"                                ";
    match SPACES.get(..n) {
        Some(spaces) => out.extend_from_slice(spaces),
        None => out.resize(out.len() + n, b' '),
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

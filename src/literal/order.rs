//! Python 2's ordering of values (`cmp`), which `pprint` sorts dict items
//! by: numbers by value whatever their type, then other types by name.

use std::cmp::Ordering;

use super::value::Value;

#[derive(Clone, Copy)]
pub(super) enum Number {
    Int(i128),
    Float(f64),
}

/// 2**127 as a float: the first float beyond every `i128`.
pub(super) const TWO_POW_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;

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

pub(super) fn num_cmp(a: Number, b: Number) -> Ordering {
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
pub(super) fn item_cmp(a: (&Value, &Value), b: (&Value, &Value)) -> Ordering {
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
pub(super) fn sort_stable<T: Copy>(v: &mut [T], cmp: &mut impl FnMut(&T, &T) -> Ordering) {
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

//! Python 2.7's `repr()` of values, byte for byte: quotes, escapes, long
//! integers and the shortest float that reads back.

use std::io::Write as _;

use super::value::Value;

/// Python 2.7 `repr(value)`.
///
/// Dict items come out sorted, as `pprint.saferepr` writes them (the
/// builtin `repr` follows hash order, which no file relies on).
pub fn repr(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_repr(&mut out, value);
    out
}

#[inline(always)]
pub(super) fn write_repr(out: &mut Vec<u8>, value: &Value) {
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

pub(super) fn write_int(out: &mut Vec<u8>, i: i128) {
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

pub(super) fn int_len(i: i128) -> usize {
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
pub(super) fn write_float(out: &mut Vec<u8>, f: f64) {
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
pub(super) fn quote_for(has_single: bool, has_double: bool) -> u8 {
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
pub(super) fn str_repr_shape(b: &[u8]) -> (u8, usize) {
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
pub(super) fn write_str_repr(out: &mut Vec<u8>, b: &[u8]) {
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
pub(super) fn escape_len(c: u32, q: u8) -> usize {
    match c {
        _ if c == q as u32 || c == '\\' as u32 => 2,
        0x09 | 0x0a | 0x0d => 2,
        0x20..=0x7e => 1,
        0..=0xff => 4,
        0x100..=0xffff => 6,
        _ => 10,
    }
}

//! The bodies of string literals: escapes, raw strings, the source
//! encoding, and the byte-level helpers the parser shares.

use super::parser::{BodyError, Encoding};

/// `a < b` bytewise, deciding on the first byte without a memcmp call
/// when it differs (as for most neighbouring keys of a dict).
#[inline(always)]
pub(super) fn key_lt(a: &[u8], b: &[u8]) -> bool {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x < y,
        _ => a < b,
    }
}

/// Index of the first byte of `s` that ends or complicates a string
/// literal: the quote `q`, a backslash, or a control byte below 0x0e (which
/// includes the newlines). Scans eight bytes at a time with the classic
/// "has a zero byte" bit trick: string bodies are most of a CMDB file.
pub(super) fn find_string_stop(s: &[u8], q: u8) -> Option<usize> {
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

pub(super) const NON_ASCII_CONCAT: &str =
    "cannot concatenate a non-ASCII str literal with a unicode literal";

/// Bytes that can start an expression, to tell `1, 2` from `1,` at top level.
pub(super) fn starts_value(b: u8) -> bool {
    matches!(
        b,
        b'[' | b'(' | b'{' | b'\'' | b'"' | b'-' | b'+' | b'.' | b'_'
    ) || b.is_ascii_alphanumeric()
}

/// `(unicode, raw)` for a valid Python 2 string prefix: `[uUbB]?[rR]?`.
pub(super) fn string_prefix(p: &[u8]) -> Option<(bool, bool)> {
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

pub(super) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(super) fn trim_blank(line: &[u8]) -> &[u8] {
    let n = line
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t' | b'\x0c'))
        .unwrap_or(line.len());
    &line[n..]
}

/// `coding[:=][ \t]*NAME` inside a comment line: offset and NAME.
pub(super) fn coding_spec(comment: &[u8]) -> Option<(usize, &[u8])> {
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
pub(super) fn normal_encoding(name: &[u8]) -> Option<Encoding> {
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
pub(super) fn normalize_newlines(body: &[u8]) -> Vec<u8> {
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
pub(super) fn decode_str(body: &[u8]) -> Result<Vec<u8>, BodyError> {
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
pub(super) fn decode_unicode(
    body: &[u8],
    raw: bool,
    encoding: Encoding,
) -> Result<String, BodyError> {
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

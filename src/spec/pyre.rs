//! Python 2.7 regular expressions (`re`, byte strings) on top of the `regex`
//! crate.
//!
//! The pattern is parsed with Python's rules and re-emitted in `regex`
//! syntax, so that the text means what it meant to the legacy server: `{`
//! not starting a repetition is literal, `[` inside a class is literal,
//! `\e` is `e`, `\Z` ends the text, `$` also matches before a final newline,
//! inline flags apply to the whole pattern, `\d \w \s \b` are ASCII.
//! Unsupported (the field then never matches): backreferences, lookaround,
//! conditionals. Known differences: patterns Python 2.7 rejects because a
//! repeated group can match the empty string (`(a*)*`) are accepted; in a
//! text with a newline before its last character, what follows a `$`
//! cannot match the final newline.
use regex::bytes::{Regex, RegexBuilder};
use std::cell::OnceCell;
use std::fmt::Write;

/// Compiled size limit: hostile patterns fail instead of using memory.
const SIZE_LIMIT: usize = 1 << 20;

/// A Python pattern. Python's `$` (end of text, or before a final
/// newline) and `\B` (never in an empty text) have no exact `regex`
/// equivalent, so texts that need it get their own variant, compiled
/// when first needed.
#[derive(Debug)]
pub struct PyRegex {
    pattern: String,
    /// `$` as `(?m:$)`: exact on texts without a newline before their
    /// last character (hardware values have none).
    line_end: Regex,
    /// `$` as "an optional newline, then the end".
    final_end: OnceCell<Option<Regex>>,
    /// For the empty text.
    empty: OnceCell<Option<Regex>>,
}

const NON_BOUNDARY: &str = r"(?-u:\B)";

impl PyRegex {
    /// `re.search(pattern, text)` is a match.
    pub fn search(&self, text: &str) -> bool {
        let inner_newline = text.find('\n').is_some_and(|i| i + 1 < text.len());
        let variant = if text.is_empty() {
            &self.empty
        } else if inner_newline {
            &self.final_end
        } else {
            return self.line_end.is_match(text.as_bytes());
        };
        variant
            .get_or_init(|| {
                if text.is_empty() {
                    build(&self.pattern, "(?m:$)", r"(?-u:\b\B)")
                } else {
                    build(&self.pattern, r"(?:\n?\z)", NON_BOUNDARY)
                }
            })
            .as_ref()
            .is_some_and(|re| re.is_match(text.as_bytes()))
    }
}

fn build(pattern: &str, dollar: &'static str, non_boundary: &'static str) -> Option<Regex> {
    let translated = translate(pattern.as_bytes(), dollar, non_boundary)?;
    RegexBuilder::new(&translated)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .build()
        .ok()
}

pub fn compile(pattern: &str) -> Option<PyRegex> {
    Some(PyRegex {
        pattern: pattern.to_string(),
        line_end: build(pattern, "(?m:$)", NON_BOUNDARY)?,
        final_end: OnceCell::new(),
        empty: OnceCell::new(),
    })
}

#[derive(Clone, Copy, Default, PartialEq)]
struct Flags {
    ignore_case: bool,
    multiline: bool,
    dotall: bool,
    verbose: bool,
}

impl Flags {
    fn union(self, o: Flags) -> Flags {
        Flags {
            ignore_case: self.ignore_case || o.ignore_case,
            multiline: self.multiline || o.multiline,
            dotall: self.dotall || o.dotall,
            verbose: self.verbose || o.verbose,
        }
    }
}

/// Translates, re-parsing from the start when inline flags appear (they
/// are global in Python 2, and verbose mode changes the parse).
/// `dollar` replaces `$` outside multi-line mode, `non_boundary` `\B`.
fn translate(pattern: &[u8], dollar: &'static str, non_boundary: &'static str) -> Option<String> {
    let mut flags = Flags::default();
    loop {
        let mut p = Parser {
            s: pattern,
            pos: 0,
            dollar,
            non_boundary,
            flags,
            seen: Flags::default(),
            names: Vec::new(),
            groups: 0,
            out: String::new(),
            depth: 0,
        };
        p.parse_alternation()?;
        if p.pos != pattern.len() {
            return None; // unbalanced ')'
        }
        let all = flags.union(p.seen);
        if all == flags {
            // Bytes, as Python 2 `str` patterns: `.` is one byte, `\xe9`
            // the byte 0xe9, case folding ASCII only.
            let mut prefix = String::from("(?-u)");
            if flags.ignore_case {
                prefix.push_str("(?i)");
            }
            if flags.multiline {
                prefix.push_str("(?m)");
            }
            if flags.dotall {
                prefix.push_str("(?s)");
            }
            return Some(prefix + &p.out);
        }
        flags = all;
    }
}

/// What precedes a repetition operator.
#[derive(Clone, Copy, PartialEq)]
enum Last {
    Nothing,
    Anchor,
    Item,
    Repeat,
}

/// Groups nest at most this deep (the parser is recursive).
const MAX_DEPTH: usize = 100;

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    dollar: &'static str,
    non_boundary: &'static str,
    flags: Flags,
    seen: Flags,
    /// Group names seen: Python rejects a name defined twice.
    names: Vec<&'a [u8]>,
    /// Capturing groups: Python 2.7 supports at most 99.
    groups: usize,
    out: String,
    depth: usize,
}

enum ClassItem {
    Byte(u8),
    Range(u8, u8),
    /// A class escape (`\d` ...), already in `regex` syntax.
    Category(&'static str),
}

fn push_byte(out: &mut String, b: u8) {
    if b.is_ascii_alphanumeric() {
        out.push(char::from(b));
    } else {
        let _ = write!(out, "\\x{{{b:02X}}}");
    }
}

/// `\d \D \s \S \w \W` as Python 2 defines them on byte strings, usable
/// inside and outside a class.
fn category(c: u8) -> Option<&'static str> {
    Some(match c {
        b'd' => "[0-9]",
        b'D' => "[^0-9]",
        b's' => r"[\t\n\x0B\x0C\r ]",
        b'S' => r"[^\t\n\x0B\x0C\r ]",
        b'w' => "[0-9A-Za-z_]",
        b'W' => "[^0-9A-Za-z_]",
        _ => return None,
    })
}

/// Simple escapes shared by classes and the rest.
fn simple_escape(c: u8) -> Option<u8> {
    Some(match c {
        b'a' => 0x07,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'v' => 0x0b,
        b'\\' => b'\\',
        _ => return None,
    })
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<u8> {
        self.s.get(self.pos + n).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn digits(&mut self) -> &[u8] {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    fn parse_alternation(&mut self) -> Option<()> {
        loop {
            self.parse_sequence()?;
            if !self.eat(b'|') {
                return Some(());
            }
            self.out.push('|');
        }
    }

    fn parse_sequence(&mut self) -> Option<()> {
        let mut last = Last::Nothing;
        while let Some(c) = self.peek() {
            if c == b'|' || c == b')' {
                break;
            }
            self.pos += 1;
            if self.flags.verbose {
                if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
                    continue;
                }
                if c == b'#' {
                    while let Some(c) = self.peek() {
                        self.pos += 1;
                        if c == b'\n' {
                            break;
                        }
                    }
                    continue;
                }
            }
            last = match c {
                b'[' => {
                    self.parse_class()?;
                    Last::Item
                }
                b'*' | b'+' | b'?' | b'{' => {
                    let Some((min, max)) = self.repeat_bounds(c)? else {
                        push_byte(&mut self.out, b'{');
                        last = Last::Item;
                        continue;
                    };
                    if matches!(last, Last::Nothing | Last::Anchor | Last::Repeat) {
                        return None; // nothing to repeat / multiple repeat
                    }
                    match max {
                        Some(max) => write!(self.out, "{{{min},{max}}}").ok()?,
                        None => write!(self.out, "{{{min},}}").ok()?,
                    }
                    if self.eat(b'?') {
                        self.out.push('?');
                    }
                    Last::Repeat
                }
                b'.' => {
                    self.out.push('.');
                    Last::Item
                }
                b'^' => {
                    self.out.push('^');
                    Last::Anchor
                }
                b'$' => {
                    self.out.push_str(if self.flags.multiline {
                        "$"
                    } else {
                        self.dollar
                    });
                    Last::Anchor
                }
                b'(' => match self.parse_group()? {
                    true => Last::Item,
                    false => continue, // comment or flags: no item
                },
                b'\\' => self.parse_escape()?,
                _ => {
                    push_byte(&mut self.out, c);
                    Last::Item
                }
            };
        }
        Some(())
    }

    /// Bounds of `* + ?` or `{m,n}`: `Some(None)` when `{` is literal.
    #[allow(clippy::type_complexity)]
    fn repeat_bounds(&mut self, c: u8) -> Option<Option<(u32, Option<u32>)>> {
        Some(Some(match c {
            b'*' => (0, None),
            b'+' => (1, None),
            b'?' => (0, Some(1)),
            _ => {
                let here = self.pos;
                if self.peek() == Some(b'}') {
                    return Some(None);
                }
                let lo = self.digits().to_vec();
                let hi = if self.eat(b',') {
                    Some(self.digits().to_vec())
                } else {
                    None
                };
                if !self.eat(b'}') {
                    self.pos = here;
                    return Some(None);
                }
                let num = |d: &[u8]| -> Option<Option<u32>> {
                    if d.is_empty() {
                        return Some(None);
                    }
                    let n: u64 = std::str::from_utf8(d).ok()?.parse().ok()?;
                    // Python's MAXREPEAT; beyond it raises.
                    u32::try_from(n).ok().filter(|&n| n < u32::MAX).map(Some)
                };
                let min = num(&lo)?.unwrap_or(0);
                let max = match hi {
                    None => Some(min),
                    Some(h) => num(&h)?,
                };
                if max.is_some_and(|m| m < min) {
                    return None;
                }
                (min, max)
            }
        }))
    }

    /// After `(`: `true` if a group was emitted, `false` for a comment
    /// or a flags group.
    fn parse_group(&mut self) -> Option<bool> {
        let mut open = "(";
        if self.eat(b'?') {
            match self.peek()? {
                b'P' => {
                    self.pos += 1;
                    if !self.eat(b'<') {
                        return None; // (?P=name) backreference, or invalid
                    }
                    let start = self.pos;
                    while self.peek().is_some_and(|b| b != b'>') {
                        self.pos += 1;
                    }
                    let name = &self.s[start..self.pos];
                    let valid = name.first().is_some_and(|b| !b.is_ascii_digit())
                        && name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
                    if !self.eat(b'>') || !valid || self.names.contains(&name) {
                        return None;
                    }
                    self.names.push(name);
                }
                b':' => {
                    self.pos += 1;
                    open = "(?:";
                }
                b'#' => {
                    while self.peek().is_some_and(|b| b != b')') {
                        self.pos += 1;
                    }
                    return self.eat(b')').then_some(false);
                }
                b'i' | b'L' | b'm' | b's' | b'u' | b'x' => {
                    while let Some(f) = self.peek() {
                        match f {
                            b'i' => self.seen.ignore_case = true,
                            b'm' => self.seen.multiline = true,
                            b's' => self.seen.dotall = true,
                            b'x' => self.seen.verbose = true,
                            b'L' | b'u' => {}
                            _ => break,
                        }
                        self.pos += 1;
                    }
                    return self.eat(b')').then_some(false);
                }
                // Lookaround, conditionals, unknown extensions.
                _ => return None,
            }
        }
        if open == "(" {
            self.groups += 1;
        }
        if self.depth >= MAX_DEPTH || self.groups > 99 {
            return None;
        }
        self.depth += 1;
        self.out.push_str(open);
        self.parse_alternation()?;
        self.depth -= 1;
        if !self.eat(b')') {
            return None;
        }
        self.out.push(')');
        Some(true)
    }

    /// After `\` outside a class.
    fn parse_escape(&mut self) -> Option<Last> {
        let c = self.peek()?;
        self.pos += 1;
        let anchor = match c {
            b'A' => Some(r"\A"),
            b'Z' => Some(r"\z"),
            b'b' => Some(r"(?-u:\b)"),
            b'B' => Some(self.non_boundary),
            _ => None,
        };
        if let Some(a) = anchor {
            self.out.push_str(a);
            return Some(Last::Anchor);
        }
        if let Some(cat) = category(c) {
            self.out.push_str(cat);
            return Some(Last::Item);
        }
        let byte = match c {
            b'x' => self.hex_escape()?,
            b'0' => self.octal_digits(u32::from(c - b'0'), 2),
            b'1'..=b'9' => {
                let (d1, d2) = (self.peek(), self.peek_at(1));
                let octal = |b: Option<u8>| b.is_some_and(|b| (b'0'..=b'7').contains(&b));
                if c <= b'7' && octal(d1) && octal(d2) {
                    self.octal_digits(u32::from(c - b'0'), 2)
                } else {
                    return None; // group reference
                }
            }
            _ => simple_escape(c).unwrap_or(c),
        };
        push_byte(&mut self.out, byte);
        Some(Last::Item)
    }

    /// `\xhh`: exactly two hex digits.
    fn hex_escape(&mut self) -> Option<u8> {
        let h = self.s.get(self.pos..self.pos + 2)?;
        let h = std::str::from_utf8(h).ok()?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 2;
        u8::from_str_radix(h, 16).ok()
    }

    /// Up to `more` further octal digits after the first; value & 0xff.
    fn octal_digits(&mut self, mut value: u32, more: usize) -> u8 {
        for _ in 0..more {
            match self.peek() {
                Some(d @ b'0'..=b'7') => {
                    value = value * 8 + u32::from(d - b'0');
                    self.pos += 1;
                }
                _ => break,
            }
        }
        (value & 0xff) as u8
    }

    /// One element of a class: a byte or a category.
    fn class_atom(&mut self, c: u8) -> Option<ClassItem> {
        if c != b'\\' {
            return Some(ClassItem::Byte(c));
        }
        let e = self.peek()?;
        self.pos += 1;
        if e == b'b' {
            return Some(ClassItem::Byte(0x08));
        }
        if let Some(b) = simple_escape(e) {
            return Some(ClassItem::Byte(b));
        }
        if let Some(cat) = category(e) {
            return Some(ClassItem::Category(cat));
        }
        Some(ClassItem::Byte(match e {
            b'x' => self.hex_escape()?,
            b'0'..=b'7' => self.octal_digits(u32::from(e - b'0'), 2),
            b'8' | b'9' => return None,
            _ => e,
        }))
    }

    /// After `[`, following `sre_parse` (Python 2.7).
    fn parse_class(&mut self) -> Option<()> {
        let negate = self.eat(b'^');
        let mut items = Vec::new();
        loop {
            let c = self.peek()?;
            self.pos += 1;
            if c == b']' && !items.is_empty() {
                break;
            }
            let first = self.class_atom(c)?;
            if self.eat(b'-') {
                let c2 = self.peek()?;
                self.pos += 1;
                if c2 == b']' {
                    items.push(first);
                    items.push(ClassItem::Byte(b'-'));
                    break;
                }
                let second = self.class_atom(c2)?;
                match (first, second) {
                    (ClassItem::Byte(lo), ClassItem::Byte(hi)) if lo <= hi => {
                        items.push(ClassItem::Range(lo, hi))
                    }
                    _ => return None, // bad character range
                }
            } else {
                items.push(first);
            }
        }
        self.out.push_str(if negate { "[^" } else { "[" });
        for item in items {
            match item {
                ClassItem::Byte(b) => {
                    let _ = write!(self.out, "\\x{{{b:02X}}}");
                }
                ClassItem::Range(lo, hi) => {
                    let _ = write!(self.out, "\\x{{{lo:02X}}}-\\x{{{hi:02X}}}");
                }
                ClassItem::Category(cat) => self.out.push_str(cat),
            }
        }
        self.out.push(']');
        Some(())
    }
}

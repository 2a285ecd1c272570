//! The recursive-descent parser of the literal subset: tokens, nesting
//! bound, and the source encoding of `u''` literals.

use std::path::Path;

use super::parse::{Document, FlatDict, ListSink, ParseError, Plain, Streamed, MAX_DEPTH};
use super::strings::{
    coding_spec, decode_str, decode_unicode, find_string_stop, key_lt, lossy, normal_encoding,
    normalize_newlines, starts_value, string_prefix, trim_blank, NON_ASCII_CONCAT,
};
use super::value::{Dict, Value};

pub(super) fn parse_document(file: &Path, src: &[u8]) -> PResult<Document> {
    let mut p = Parser::new(file, src)?;
    p.skip_ws(true)?;
    let doc = if p.at_generate() {
        Document::Generate(p.generate_call()?)
    } else {
        Document::Literal(p.top_expr()?)
    };
    p.finish()?;
    Ok(doc)
}

pub(super) fn stream_list(file: &Path, src: &[u8], each: &mut dyn ListSink) -> PResult<Streamed> {
    let mut p = Parser::new(file, src)?;
    p.skip_ws(true)?;
    if p.at_generate() {
        let model = p.generate_call()?;
        p.finish()?;
        return Ok(Streamed::Generate(model));
    }
    // `([...])` still is a list for `parse`; `([...],)` is not.
    let mut parens = Vec::new();
    while p.peek() == Some(b'(') {
        parens.push(p.pos);
        p.enter()?;
        p.skip()?;
    }
    if p.peek() != Some(b'[') {
        return Err(p.expected("a list at the top level"));
    }
    p.list_items(&mut Vec::with_capacity(1), Some(each))?;
    for open_pos in parens.into_iter().rev() {
        p.skip()?;
        match p.peek() {
            Some(b')') => p.leave(),
            Some(b',') => return Err(p.err(p.pos, "the top level is a tuple, not a list")),
            _ => return Err(p.unclosed_or(open_pos, "')' after the top-level list")),
        }
    }
    p.skip()?;
    if p.peek() == Some(b',') {
        return Err(p.err(p.pos, "the top level is a tuple, not a list"));
    }
    p.finish()?;
    Ok(Streamed::List)
}

/// How raw non-ASCII bytes inside `u''` literals become characters: the
/// source encoding, which Python 2 takes from a BOM or a PEP 263 comment.
/// Without either, `eval()` of a byte string reads them as Latin-1.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Encoding {
    Latin1,
    Utf8,
    Ascii,
}

struct Parser<'a> {
    file: &'a Path,
    src: &'a [u8],
    pos: usize,
    /// Start of the text proper (after a UTF-8 BOM), for column numbers.
    start: usize,
    /// Containers currently open, bounded by MAX_DEPTH.
    depth: usize,
    /// Brackets currently open: inside them newlines are white space.
    open: usize,
    encoding: Encoding,
}

/// Bytes that start trivia: blanks, newlines, comments, line continuations.
static TRIVIA: [bool; 256] = {
    let mut t = [false; 256];
    t[b' ' as usize] = true;
    t[b'\t' as usize] = true;
    t[0x0c] = true;
    t[b'\n' as usize] = true;
    t[b'\r' as usize] = true;
    t[b'#' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Internal results box the (large) error so that the hot path moves less.
type PResult<T> = Result<T, Box<ParseError>>;

/// What a string literal decoder reports: offset in the body and message.
pub(super) type BodyError = (usize, &'static str);

impl<'a> Parser<'a> {
    fn new(file: &'a Path, src: &'a [u8]) -> PResult<Parser<'a>> {
        let bom = src.starts_with(b"\xef\xbb\xbf");
        let mut p = Parser {
            file,
            src,
            pos: 0,
            start: if bom { 3 } else { 0 },
            depth: 0,
            open: 0,
            encoding: Encoding::Latin1,
        };
        p.pos = p.start;
        // `contains` is a fast memchr; the position is only needed on error.
        if src.contains(&0) {
            let nul = src.iter().position(|&b| b == 0).unwrap_or(0);
            return Err(p.err(nul, "NUL byte in input"));
        }
        let declared = p.coding_declaration();
        p.encoding = match (bom, declared) {
            (_, None) if bom => Encoding::Utf8,
            (_, None) => Encoding::Latin1,
            (_, Some((at, name))) => match normal_encoding(name) {
                Some(Encoding::Utf8) => Encoding::Utf8,
                Some(_) if bom => {
                    return Err(p.err(at, format!("encoding problem: {} with BOM", lossy(name))))
                }
                Some(e) => e,
                None => {
                    return Err(p.err(at, format!("unsupported source encoding '{}'", lossy(name))))
                }
            },
        };
        // Python decodes an ASCII file as a whole, but a UTF-8 one only in
        // its u'' literals: str literals and comments keep any byte.
        if p.encoding == Encoding::Ascii {
            if let Some(at) = src.iter().position(|b| !b.is_ascii()) {
                return Err(p.err(at, "non-ASCII byte in a file declared as ASCII"));
            }
        }
        Ok(p)
    }

    /// The PEP 263 `coding[:=]name` of line 1, or of line 2 when line 1 is
    /// blank or a comment: its offset and name.
    fn coding_declaration(&self) -> Option<(usize, &'a [u8])> {
        let mut line_start = self.start;
        for _ in 0..2 {
            let rest = self.src.get(line_start..)?;
            let len = rest
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
                .unwrap_or(rest.len());
            let line = &rest[..len];
            let text = trim_blank(line);
            if text.first() == Some(&b'#') {
                if let Some((off, name)) = coding_spec(text) {
                    return Some((line_start + (line.len() - text.len()) + off, name));
                }
            } else if !text.is_empty() {
                return None;
            }
            line_start += len + 1;
            if rest.get(len) == Some(&b'\r') && rest.get(len + 1) == Some(&b'\n') {
                line_start += 1;
            }
        }
        None
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    #[inline]
    fn peek_at(&self, off: usize) -> Option<u8> {
        self.src.get(self.pos + off).copied()
    }

    fn err(&self, pos: usize, message: impl Into<String>) -> Box<ParseError> {
        let pos = pos.min(self.src.len());
        let before = &self.src[..pos];
        let mut line = 1;
        let mut line_start = self.start.min(pos);
        let mut i = 0;
        while let Some(off) = before[i..].iter().position(|&b| b == b'\n' || b == b'\r') {
            i += off + 1;
            if before[i - 1] == b'\r' && before.get(i) == Some(&b'\n') {
                i += 1;
            }
            line += 1;
            line_start = i.min(pos);
        }
        let column = String::from_utf8_lossy(&self.src[line_start..pos])
            .chars()
            .count()
            + 1;
        Box::new(ParseError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        })
    }

    /// "expected X, found Y" at the current position.
    fn expected(&self, what: &str) -> Box<ParseError> {
        self.err(self.pos, format!("expected {what}, found {}", self.found()))
    }

    /// At end of file an unclosed bracket is the likely culprit: say where it
    /// was opened; elsewhere, "expected X".
    fn unclosed_or(&self, open_pos: usize, what: &str) -> Box<ParseError> {
        if self.pos < self.src.len() {
            return self.expected(what);
        }
        let at = self.err(open_pos, "");
        let bracket = self.src.get(open_pos).map_or('?', |&b| b as char);
        self.err(
            self.pos,
            format!(
                "end of file inside '{bracket}' opened at line {}, column {} (expected {what})",
                at.line, at.column
            ),
        )
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "end of file".to_string(),
            Some(b'\n' | b'\r') => "end of line".to_string(),
            Some(b) if b.is_ascii_graphic() => format!("'{}'", b as char),
            Some(b) if b.is_ascii() => format!("byte 0x{b:02x}"),
            Some(_) => {
                let end = (self.pos + 4).min(self.src.len());
                match String::from_utf8_lossy(&self.src[self.pos..end])
                    .chars()
                    .next()
                {
                    Some(c) if c != char::REPLACEMENT_CHARACTER => format!("'{c}'"),
                    _ => format!("byte 0x{:02x}", self.src[self.pos]),
                }
            }
        }
    }

    /// Skips blanks, comments and line continuations; newlines too when
    /// `newlines` (inside brackets, or around the top-level expression).
    fn skip_ws(&mut self, newlines: bool) -> PResult<()> {
        let s = self.src;
        let mut i = self.pos;
        while let Some(&b) = s.get(i) {
            match b {
                b' ' | b'\t' | b'\x0c' => i += 1,
                b'\n' | b'\r' if newlines => i += 1,
                b'#' => {
                    i += s[i..]
                        .iter()
                        .position(|&b| b == b'\n' || b == b'\r')
                        .unwrap_or(s.len() - i);
                }
                b'\\' => match (s.get(i + 1), s.get(i + 2)) {
                    (Some(b'\r'), Some(b'\n')) => i += 3,
                    (Some(b'\n' | b'\r'), _) => i += 2,
                    _ => {
                        return Err(
                            self.err(i, "unexpected character after line continuation character")
                        )
                    }
                },
                _ => break,
            }
        }
        self.pos = i;
        Ok(())
    }

    /// Skips trivia between tokens; inlined because most calls find none.
    #[inline]
    fn skip(&mut self) -> PResult<()> {
        match self.peek() {
            // A lone space (`key: value`) needs no loop.
            Some(b' ') if !self.peek_at(1).is_some_and(|b| TRIVIA[b as usize]) => {
                self.pos += 1;
                Ok(())
            }
            Some(b) if TRIVIA[b as usize] => self.skip_ws(self.open > 0),
            _ => Ok(()),
        }
    }

    /// After a `,` inside brackets: skips the newline and indentation that
    /// pprint puts there without the general loop, then any other trivia.
    #[inline(always)]
    fn skip_separator(&mut self) -> PResult<()> {
        let s = self.src;
        let mut i = self.pos;
        if s.get(i) == Some(&b'\n') {
            i += 1;
            while s.get(i) == Some(&b' ') {
                i += 1;
            }
            self.pos = i;
        }
        self.skip()
    }

    /// Consumes an opening bracket.
    fn enter(&mut self) -> PResult<()> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err(self.pos, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        self.open += 1;
        self.pos += 1;
        Ok(())
    }

    /// Consumes a closing bracket.
    fn leave(&mut self) {
        self.depth -= 1;
        self.open -= 1;
        self.pos += 1;
    }

    fn ident(&self) -> &'a [u8] {
        let rest = &self.src[self.pos.min(self.src.len())..];
        let len = rest
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
            .unwrap_or(rest.len());
        if rest.first().is_some_and(|b| b.is_ascii_digit()) {
            return &[];
        }
        &rest[..len]
    }

    fn at_generate(&self) -> bool {
        self.ident() == b"generate"
    }

    /// `generate(<literal>)`, the identifier being at the current position.
    fn generate_call(&mut self) -> PResult<Value> {
        self.pos += b"generate".len();
        self.skip()?;
        if self.peek() != Some(b'(') {
            return Err(self.expected("'(' after 'generate'"));
        }
        let open_pos = self.pos;
        self.pos += 1;
        self.open += 1;
        self.skip()?;
        if self.peek() == Some(b')') {
            return Err(self.err(self.pos, "generate() takes exactly one argument"));
        }
        let model = self.expr()?;
        self.skip()?;
        if self.peek() == Some(b',') {
            self.pos += 1;
            self.skip()?;
            if self.peek() != Some(b')') && self.pos < self.src.len() {
                return Err(self.err(self.pos, "generate() takes exactly one argument"));
            }
        }
        if self.peek() != Some(b')') {
            return Err(self.unclosed_or(open_pos, "')' after the argument of generate()"));
        }
        self.pos += 1;
        self.open -= 1;
        Ok(model)
    }

    /// The top-level expression: a value, or a bare tuple `1, 2`.
    fn top_expr(&mut self) -> PResult<Value> {
        if self.pos >= self.src.len() {
            return Err(self.expected("a value"));
        }
        let first = self.expr()?;
        self.skip()?;
        if self.peek() != Some(b',') {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.peek() == Some(b',') {
            self.pos += 1;
            self.skip()?;
            if !self.peek().is_some_and(starts_value) {
                break;
            }
            items.push(self.expr()?);
            self.skip()?;
        }
        Ok(Value::Tuple(items))
    }

    /// Only trivia may follow the top-level expression.
    fn finish(&mut self) -> PResult<()> {
        self.skip_ws(true)?;
        if self.pos < self.src.len() {
            return Err(self.err(
                self.pos,
                format!("unexpected trailing data: {}", self.found()),
            ));
        }
        Ok(())
    }

    /// Parses one expression and pushes it onto `out`.
    ///
    /// Values are built in their final place: returning them through
    /// several calls and copying them each time costs a store-forwarding
    /// stall per move. Plain strings, most of a CMDB, are parsed inline.
    #[inline(always)]
    fn value_into(&mut self, out: &mut Vec<Value>) -> PResult<()> {
        self.skip()?;
        if let Some(bytes) = self.plain_str() {
            self.skip()?;
            if self.at_string() {
                let joined = self.concatenation(Value::Str(bytes))?;
                out.push(joined);
            } else {
                out.push(Value::Str(bytes));
            }
            return Ok(());
        }
        self.other_value_into(out)
    }

    /// `value_into` for everything but plain strings.
    fn other_value_into(&mut self, out: &mut Vec<Value>) -> PResult<()> {
        match self.peek() {
            Some(b'[') => {
                let mut items = Vec::new();
                self.list_items(&mut items, None)?;
                out.push(Value::List(items));
            }
            Some(b'(') => self.paren(out)?,
            Some(b'{') => self.dict(out)?,
            Some(b'\'' | b'"') => {
                let v = self.strings()?;
                out.push(v);
            }
            _ => {
                let v = self.scalar()?;
                out.push(v);
            }
        }
        Ok(())
    }

    /// One expression, returned.
    fn expr(&mut self) -> PResult<Value> {
        let mut one = Vec::with_capacity(1);
        self.value_into(&mut one)?;
        one.pop().ok_or_else(|| self.expected("a value"))
    }

    /// Numbers, names, prefixed strings and signed expressions.
    fn scalar(&mut self) -> PResult<Value> {
        match self.peek() {
            Some(b'-' | b'+') => self.signed(),
            _ if self.at_number() => self.number(false),
            Some(b) if b.is_ascii_alphabetic() || b == b'_' => {
                let name = self.ident();
                let quoted = matches!(self.src.get(self.pos + name.len()), Some(b'\'' | b'"'));
                if quoted && string_prefix(name).is_some() {
                    return self.strings();
                }
                let value = match name {
                    b"True" => Value::Bool(true),
                    b"False" => Value::Bool(false),
                    b"None" => Value::None,
                    b"generate" => {
                        return Err(
                            self.err(self.pos, "generate() is only allowed around the whole file")
                        )
                    }
                    _ if quoted => {
                        return Err(
                            self.err(self.pos, format!("invalid string prefix '{}'", lossy(name)))
                        )
                    }
                    _ => return Err(self.err(self.pos, format!("unknown name '{}'", lossy(name)))),
                };
                self.pos += name.len();
                Ok(value)
            }
            _ => Err(self.expected("a value")),
        }
    }

    /// An expression starting with unary signs.
    fn signed(&mut self) -> PResult<Value> {
        // Signs are collected rather than recursed into: `------1` cannot
        // overflow the stack.
        let mut ops = Vec::new();
        while let Some(op @ (b'-' | b'+')) = self.peek() {
            ops.push((op, self.pos));
            self.pos += 1;
            self.skip()?;
        }
        // Python folds a minus directly before a number into the literal:
        // -9223372036854775808 is an int, -(9223372036854775808) a long.
        let mut value = match ops.last() {
            Some(&(b'-', _)) if self.at_number() => {
                ops.pop();
                self.number(true)?
            }
            _ => self.expr()?,
        };
        for &(op, at) in ops.iter().rev() {
            value = unary(op, value).map_err(|msg| self.err(at, msg))?;
        }
        Ok(value)
    }

    fn at_number(&self) -> bool {
        match self.peek() {
            Some(b'0'..=b'9') => true,
            Some(b'.') => self.peek_at(1).is_some_and(|b| b.is_ascii_digit()),
            _ => false,
        }
    }

    /// `[a, b, ...]`: elements are pushed onto `items`, or when streaming
    /// handed one by one to `each`.
    fn list_items(
        &mut self,
        items: &mut Vec<Value>,
        mut each: Option<&mut dyn ListSink>,
    ) -> PResult<()> {
        let open_pos = self.pos;
        self.enter()?;
        self.skip()?;
        let mut flat = Vec::new();
        while self.peek() != Some(b']') {
            if let Some(each) = each.as_deref_mut() {
                if !self.flat_dict(each, &mut flat) {
                    self.value_into(items)?;
                    if let Some(item) = items.pop() {
                        each.value(item).map_err(Box::new)?;
                    }
                }
            } else {
                self.value_into(items)?;
            }
            self.skip()?;
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_separator()?;
                }
                Some(b']') => break,
                _ => return Err(self.unclosed_or(open_pos, "',' or ']' after list element")),
            }
        }
        self.leave();
        Ok(())
    }

    /// `()`, `(x,)`, `(x, y)` or a parenthesised `(x)`, pushed onto `out`.
    fn paren(&mut self, out: &mut Vec<Value>) -> PResult<()> {
        let open_pos = self.pos;
        self.enter()?;
        self.skip()?;
        let mut items = Vec::new();
        if self.peek() != Some(b')') {
            self.value_into(&mut items)?;
            self.skip()?;
            if self.peek() == Some(b')') {
                self.leave();
                out.append(&mut items);
                return Ok(());
            }
            loop {
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.skip()?;
                    }
                    Some(b')') => break,
                    _ => return Err(self.unclosed_or(open_pos, "',' or ')' after tuple element")),
                }
                if self.peek() == Some(b')') {
                    break;
                }
                self.value_into(&mut items)?;
                self.skip()?;
            }
        }
        self.leave();
        out.push(Value::Tuple(items));
        Ok(())
    }

    /// `{k: v, ...}`, pushed onto `out`.
    fn dict(&mut self, out: &mut Vec<Value>) -> PResult<()> {
        let open_pos = self.pos;
        self.enter()?;
        self.skip()?;
        // Room for four items (a CMDB entry) at once, not grown 0, 4, 8.
        let mut flat = Vec::with_capacity(8);
        while self.peek() != Some(b'}') {
            if self.plain_item(&mut flat) {
                // It stopped on the ',' or '}' that follows the item.
                if self.peek() == Some(b'}') {
                    break;
                }
                self.pos += 1;
                self.skip_separator()?;
                continue;
            }
            let key_pos = self.pos;
            self.value_into(&mut flat)?;
            if let Some(kind) = flat.last().and_then(unhashable) {
                return Err(self.err(key_pos, format!("unhashable dict key (a {kind})")));
            }
            self.skip()?;
            if self.peek() != Some(b':') {
                return Err(self.unclosed_or(open_pos, "':' after dict key"));
            }
            self.pos += 1;
            self.value_into(&mut flat)?;
            self.skip()?;
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip()?;
                }
                Some(b'}') => break,
                _ => return Err(self.unclosed_or(open_pos, "',' or '}' after dict value")),
            }
        }
        self.leave();
        out.push(Value::Dict(Dict::from_flat(flat)));
        Ok(())
    }

    /// Fast lane for the items pprint writes in CMDB files: `'key': 'text'`
    /// or `'key': 123` (plain strings, a small decimal int) directly
    /// followed by `,` or `}`. Parses the item and stops on that delimiter;
    /// anything else is left untouched (false) for the general path, which
    /// would give the same result, only slower.
    #[inline(always)]
    fn plain_item(&mut self, flat: &mut Vec<Value>) -> bool {
        let Some((key, value, end)) = self.plain_item_at() else {
            return false;
        };
        flat.push(Value::Str(key.to_vec()));
        flat.push(match value {
            Plain::Int(v) => Value::Int(v),
            Plain::Str(b) => Value::Str(b.to_vec()),
        });
        self.pos = end;
        true
    }

    /// Offers the element at the current position to `sink` when it is a
    /// flat dict of plain items (`plain_item_at`) with unique keys; then
    /// true, past the dict. Otherwise false, nothing consumed: the general
    /// path parses it (and reports any error).
    fn flat_dict<'b>(
        &mut self,
        sink: &mut dyn ListSink,
        flat: &mut Vec<(&'b [u8], Plain<'b>)>,
    ) -> bool
    where
        'a: 'b,
    {
        let start = self.pos;
        let found = self.flat_items(flat);
        if found {
            // Files written by pprint have their keys sorted already.
            let ascending = |f: &[(&[u8], Plain)]| f.windows(2).all(|w| key_lt(w[0].0, w[1].0));
            if !ascending(flat) {
                flat.sort_unstable_by(|a, b| a.0.cmp(b.0));
            }
            // Still not ascending: a key is repeated.
            if ascending(flat) && sink.flat(&FlatDict { items: flat }) {
                return true;
            }
        }
        self.pos = start;
        false
    }

    /// Reads a flat dict's items into `flat`, and moves past its `}`.
    fn flat_items<'b>(&mut self, flat: &mut Vec<(&'b [u8], Plain<'b>)>) -> bool
    where
        'a: 'b,
    {
        flat.clear();
        // Inside the list, whose depth was already checked: one more level.
        if self.skip().is_err() || self.peek() != Some(b'{') || self.depth >= MAX_DEPTH {
            return false;
        }
        self.pos += 1;
        loop {
            if self.skip().is_err() {
                return false;
            }
            if self.peek() == Some(b'}') {
                break;
            }
            let Some((key, value, end)) = self.plain_item_at() else {
                return false;
            };
            flat.push((key, value));
            self.pos = end;
            if self.peek() == Some(b'}') {
                break;
            }
            self.pos += 1;
            if self.skip_separator().is_err() {
                return false;
            }
        }
        self.pos += 1;
        true
    }

    /// The plain item (see `plain_item`) at the current position: key and
    /// value as written, and the position of the `,` or `}` after it.
    #[inline(always)]
    fn plain_item_at(&self) -> Option<(&'a [u8], Plain<'a>, usize)> {
        let s = self.src;
        let plain_str_end = |at: usize| -> Option<usize> {
            let q = *s.get(at).filter(|&&b| b == b'\'' || b == b'"')?;
            let len = find_string_stop(s.get(at + 1..)?, q)?;
            (len > 0 && s.get(at + 1 + len) == Some(&q)).then_some(at + 1 + len)
        };
        let key_start = self.pos;
        let key_end = plain_str_end(key_start)?;
        if s.get(key_end + 1) != Some(&b':') {
            return None;
        }
        let mut at = key_end + 2;
        if s.get(at) == Some(&b' ') {
            at += 1;
        }
        let (value_end, value) = match s.get(at) {
            Some(b'\'' | b'"') => {
                let end = plain_str_end(at)?;
                (end + 1, Plain::Str(s.get(at + 1..end)?))
            }
            Some(b'0'..=b'9') => {
                let digits = s[at..].iter().take(19).take_while(|b| b.is_ascii_digit());
                let (n, v) = digits.fold((0, 0i64), |(n, v), &d| {
                    (n + 1, v.wrapping_mul(10).wrapping_add((d - b'0') as i64))
                });
                // Not old octal (017), nor 19 digits that may overflow.
                if n > 18 || (n > 1 && s[at] == b'0') {
                    return None;
                }
                (at + n, Plain::Int(v))
            }
            _ => return None,
        };
        if !matches!(s.get(value_end), Some(b',' | b'}')) {
            return None;
        }
        Some((s.get(key_start + 1..key_end)?, value, value_end))
    }

    /// Integer or float literal; `negative` when a folded `-` preceded it.
    fn number(&mut self, negative: bool) -> PResult<Value> {
        let start = self.pos;
        let s = self.src;
        let digits_end = |from: usize, radix: u32| {
            from + s[from..]
                .iter()
                .position(|&b| !(b as char).is_digit(radix))
                .unwrap_or(s.len() - from)
        };
        let invalid = |p: &Parser, msg: &str| p.err(start, msg.to_string());
        let prefixed = match (s.get(start), s.get(start + 1)) {
            (Some(b'0'), Some(b'x' | b'X')) => Some(16),
            (Some(b'0'), Some(b'o' | b'O')) => Some(8),
            (Some(b'0'), Some(b'b' | b'B')) => Some(2),
            _ => None,
        };
        let (digits, radix, mut end) = if let Some(radix) = prefixed {
            let end = digits_end(start + 2, radix);
            if end == start + 2 {
                return Err(invalid(self, "invalid number literal"));
            }
            (&s[start + 2..end], radix, end)
        } else {
            let int_end = digits_end(start, 10);
            let mut end = int_end;
            let mut float = false;
            if s.get(end) == Some(&b'.') {
                float = true;
                end = digits_end(end + 1, 10);
            }
            if matches!(s.get(end), Some(b'e' | b'E')) {
                float = true;
                let mut e = end + 1;
                if matches!(s.get(e), Some(b'+' | b'-')) {
                    e += 1;
                }
                let e_end = digits_end(e, 10);
                if e_end == e {
                    return Err(invalid(self, "invalid number literal (bad exponent)"));
                }
                end = e_end;
            }
            if matches!(s.get(end), Some(b'j' | b'J')) {
                return Err(invalid(self, "complex numbers are not supported"));
            }
            if float {
                let text = std::str::from_utf8(&s[start..end]).unwrap_or("");
                let f: f64 = text
                    .parse()
                    .map_err(|_| invalid(self, "invalid float literal"))?;
                self.pos = end;
                self.no_ident_after(start)?;
                return Ok(Value::Float(if negative { -f } else { f }));
            }
            let digits = &s[start..int_end];
            if digits.len() > 1 && digits[0] == b'0' {
                // Python 2 octal: 017 == 15; 08 is an error.
                if digits.iter().any(|&b| b > b'7') {
                    return Err(invalid(
                        self,
                        "invalid number literal (octal digit expected)",
                    ));
                }
                (&digits[1..], 8, int_end)
            } else {
                (digits, 10, int_end)
            }
        };
        let long = matches!(s.get(end), Some(b'l' | b'L'));
        if long {
            end += 1;
        }
        let mut magnitude: u128 = 0;
        for &d in digits {
            let d = (d as char).to_digit(radix).unwrap_or(0) as u128;
            magnitude = magnitude
                .checked_mul(radix as u128)
                .and_then(|m| m.checked_add(d))
                .ok_or_else(|| invalid(self, "integer literal too large (beyond 128 bits)"))?;
        }
        let value = if negative {
            if magnitude > i128::MAX as u128 + 1 {
                return Err(invalid(self, "integer literal too large (beyond 128 bits)"));
            }
            (magnitude as i128).wrapping_neg()
        } else {
            i128::try_from(magnitude)
                .map_err(|_| invalid(self, "integer literal too large (beyond 128 bits)"))?
        };
        self.pos = end;
        self.no_ident_after(start)?;
        Ok(match i64::try_from(value) {
            Ok(i) if !long => Value::Int(i),
            _ => Value::Long(value),
        })
    }

    /// `1x`, `0L0`, `1e5L`: a number glued to a name is a syntax error.
    fn no_ident_after(&self, start: usize) -> PResult<()> {
        match self.peek() {
            Some(b) if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' => {
                Err(self.err(start, "invalid number literal"))
            }
            _ => Ok(()),
        }
    }

    #[inline]
    fn at_string(&self) -> bool {
        match self.peek() {
            Some(b'\'' | b'"') => true,
            Some(b) if b.is_ascii_alphabetic() => self.at_prefixed_string(),
            _ => false,
        }
    }

    fn at_prefixed_string(&self) -> bool {
        let name = self.ident();
        string_prefix(name).is_some()
            && matches!(self.src.get(self.pos + name.len()), Some(b'\'' | b'"'))
    }

    /// Adjacent literals concatenate: `'a' "b"`; unicode if any part is.
    fn strings(&mut self) -> PResult<Value> {
        let value = self.string_literal()?;
        self.skip()?;
        if self.at_string() {
            self.concatenation(value)
        } else {
            Ok(value)
        }
    }

    fn concatenation(&mut self, mut value: Value) -> PResult<Value> {
        while self.at_string() {
            let part_pos = self.pos;
            let part = self.string_literal()?;
            value = match (value, part) {
                (Value::Str(mut a), Value::Str(b)) => {
                    a.extend_from_slice(&b);
                    Value::Str(a)
                }
                (Value::Unicode(mut a), Value::Unicode(b)) => {
                    a.push_str(&b);
                    Value::Unicode(a)
                }
                (Value::Str(a), Value::Unicode(b)) => match String::from_utf8(a) {
                    Ok(mut s) if s.is_ascii() => {
                        s.push_str(&b);
                        Value::Unicode(s)
                    }
                    _ => return Err(self.err(part_pos, NON_ASCII_CONCAT)),
                },
                (Value::Unicode(mut a), Value::Str(b)) if b.is_ascii() => {
                    a.extend(b.iter().map(|&c| c as char));
                    Value::Unicode(a)
                }
                _ => return Err(self.err(part_pos, NON_ASCII_CONCAT)),
            };
            self.skip()?;
        }
        Ok(value)
    }

    /// One string literal.
    fn string_literal(&mut self) -> PResult<Value> {
        match self.plain_str() {
            Some(bytes) => Ok(Value::Str(bytes)),
            None => self.general_string_literal(),
        }
    }

    /// The common `'plain text'` literal (no prefix, escape or triple
    /// quote) at the current position, consumed; None for the others.
    #[inline(always)]
    fn plain_str(&mut self) -> Option<Vec<u8>> {
        let q = self.peek().filter(|&b| b == b'\'' || b == b'"')?;
        let body = self.src.get(self.pos + 1..)?;
        let end = find_string_stop(body, q)?;
        if end == 0 || body.get(end) != Some(&q) {
            return None; // '' or ''', an escape, or a newline
        }
        self.pos += end + 2;
        Some(body[..end].to_vec())
    }

    /// One string literal with its prefix, at the current position.
    fn general_string_literal(&mut self) -> PResult<Value> {
        let start = self.pos;
        let prefix = self.ident();
        let (unicode, raw) = string_prefix(prefix).unwrap_or((false, false));
        let s = self.src;
        let qpos = start + prefix.len();
        let Some(&q) = s.get(qpos) else {
            return Err(self.err(start, "unterminated string"));
        };
        let triple = s.get(qpos + 1) == Some(&q) && s.get(qpos + 2) == Some(&q);
        let body_start = qpos + if triple { 3 } else { 1 };
        let mut i = body_start;
        let mut plain = true;
        let body_end = loop {
            let Some(off) = s[i..]
                .iter()
                .position(|&b| b == q || b == b'\\' || b == b'\n' || b == b'\r')
            else {
                return Err(self.err(start, "unterminated string"));
            };
            i += off;
            match s[i] {
                b'\\' => {
                    plain = false;
                    i += match (s.get(i + 1), s.get(i + 2)) {
                        (None, _) => return Err(self.err(start, "unterminated string")),
                        (Some(b'\r'), Some(b'\n')) => 3,
                        _ => 2,
                    };
                }
                b'\n' | b'\r' if !triple => {
                    return Err(self.err(start, "unterminated string (end of line)"))
                }
                b'\n' => i += 1,
                b'\r' => {
                    plain = false;
                    i += 1;
                }
                _ if !triple => {
                    self.pos = i + 1;
                    break i;
                }
                _ if s.get(i + 1) == Some(&q) && s.get(i + 2) == Some(&q) => {
                    self.pos = i + 3;
                    break i;
                }
                _ => i += 1,
            }
        };
        let body = &s[body_start..body_end];
        let decoded = match (unicode, raw) {
            (false, _) if plain => Ok(Value::Str(body.to_vec())),
            (false, false) => decode_str(body).map(Value::Str),
            (false, true) => Ok(Value::Str(normalize_newlines(body))),
            (true, _) if plain && body.is_ascii() => {
                Ok(Value::Unicode(String::from_utf8_lossy(body).into_owned()))
            }
            (true, raw) => decode_unicode(body, raw, self.encoding).map(Value::Unicode),
        };
        decoded.map_err(|(off, msg)| self.err(body_start + off, msg))
    }
}

fn unary(op: u8, v: Value) -> Result<Value, String> {
    let neg = op == b'-';
    Ok(match v {
        Value::Bool(b) => Value::Int(if neg { -(b as i64) } else { b as i64 }),
        Value::Int(i) if neg => i
            .checked_neg()
            .map_or(Value::Long(-(i as i128)), Value::Int),
        Value::Long(i) if neg => Value::Long(
            i.checked_neg()
                .ok_or_else(|| "integer too large (beyond 128 bits)".to_string())?,
        ),
        Value::Float(f) if neg => Value::Float(-f),
        v @ (Value::Int(_) | Value::Long(_) | Value::Float(_)) => v,
        other => {
            return Err(format!(
                "bad operand type for unary {}: '{}'",
                op as char,
                other.type_name()
            ))
        }
    })
}

/// The type name that makes a dict key unhashable, if any.
fn unhashable(v: &Value) -> Option<&'static str> {
    match v {
        Value::List(_) | Value::Dict(_) => Some(v.type_name()),
        Value::Tuple(items) => items.iter().find_map(unhashable),
        _ => None,
    }
}

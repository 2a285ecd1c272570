//! What a spec field is, read as the legacy code reads it: plain text, a
//! variable (`$x`, `$$x`, `$x=call`) or a call of a known function, with
//! the legacy's own argument splitting; and the static checks that
//! `edeploy check` makes of a field.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use super::functions::{is_py_space, parse_network, py_float};
use super::pyre;
use crate::hw::HwValue;

/// Nesting of function calls inside a field (`not(and(gt(1), ...))`); deeper
/// fields fail instead of exhausting the stack.
const MAX_NESTING: usize = 32;

/// `name=func(...)` when the text (after `$`) holds exactly one `=`.
pub(super) fn split_assignment(var: &str) -> Option<(&str, &str)> {
    let (name, func) = var.split_once('=')?;
    (!func.contains('=')).then_some((name, func))
}

/// Length of the white space (the legacy's `\s`) that starts `s`.
fn leading_space(s: &str) -> usize {
    s.len() - s.trim_start_matches(is_py_space).len()
}

/// The legacy call syntax, `name(first, rest...)`: the legacy matches the
/// field against `([^(]+)\(\s*([^,]+)(?:\s*,\s*(.+))?\)$`. Written out
/// rather than as a regex, which every request built again (a tenth of a
/// millisecond): the name is everything before the first `(`; the closing
/// `)` ends the text or precedes its one final newline (Python's `$`);
/// the first argument runs to the first comma, white space before it
/// skipped but for its last byte when it is all there is; the rest, after
/// the comma and the white space that follows it (again, all but the last
/// byte if that is all), is one line. Every split is next to an ASCII
/// byte, so the parts of a `&str` are `&str`. The regex is the oracle of
/// the tests.
fn split_call(text: &str) -> Option<(&str, &str, Option<&str>)> {
    let open = text.find('(').filter(|&open| open > 0)?;
    let inner = &text[open + 1..];
    let body = inner
        .strip_suffix('\n')
        .unwrap_or(inner)
        .strip_suffix(')')?;
    let (head, rest) = match body.find(',') {
        None => (body, None),
        Some(comma) => {
            let after = &body[comma + 1..];
            let skip = leading_space(after).min(after.len().checked_sub(1)?);
            let rest = &after[skip..];
            if rest.contains('\n') {
                return None;
            }
            (&body[..comma], Some(rest))
        }
    };
    let skip = leading_space(head).min(head.len().checked_sub(1)?);
    Some((&text[..open], &head[skip..], rest))
}

/// `rest` split on commas and the white space around them.
fn split_args(rest: &str) -> impl Iterator<Item = &str> {
    let mut start = Some(0);
    std::iter::from_fn(move || {
        let from = start?;
        let Some(comma) = rest[from..].find(',').map(|i| from + i) else {
            start = None;
            return Some(&rest[from..]);
        };
        start = Some(comma + 1 + leading_space(&rest[comma + 1..]));
        Some(rest[from..comma].trim_end_matches(is_py_space))
    })
}

const FUNCTIONS: [&str; 11] = [
    "gt", "ge", "lt", "le", "in", "network", "regexp", "range", "not", "and", "or",
];

/// A call of a known function, parsed once per field text: specs are
/// evaluated against every hardware line.
#[derive(Debug)]
pub(super) struct Call {
    pub(super) name: &'static str,
    pub(super) args: Vec<Expr>,
}

#[derive(Debug)]
pub(super) enum Expr {
    /// Plain text, quotes stripped.
    Text(String),
    Call(Call),
    /// A call nested deeper than [`MAX_NESTING`]: never computed.
    TooDeep,
}

/// The function name and the quote-stripped arguments of a known call.
fn call_parts(text: &str) -> Option<(&'static str, Vec<&str>)> {
    let (head, first, rest) = split_call(text)?;
    let name = *FUNCTIONS.iter().find(|f| **f == head)?;
    let rest = rest.into_iter().flat_map(split_args);
    Some((
        name,
        std::iter::once(first)
            .chain(rest)
            .map(strip_quotes)
            .collect(),
    ))
}

fn parse_call_at(text: &str, depth: usize) -> Option<Call> {
    let (name, raw) = call_parts(text)?;
    let args = raw
        .into_iter()
        .map(|a| {
            if depth + 1 >= MAX_NESTING {
                return match call_parts(a) {
                    Some(_) => Expr::TooDeep,
                    None => Expr::Text(a.to_string()),
                };
            }
            match parse_call_at(a, depth + 1) {
                Some(c) => Expr::Call(c),
                None => Expr::Text(a.to_string()),
            }
        })
        .collect();
    Some(Call { name, args })
}

/// What a field ending with `)` is.
#[derive(Clone)]
pub(super) enum Field {
    /// Not the call syntax: compared as text.
    NotCall,
    /// A call of an unknown function: never matches.
    Unknown,
    Call(Rc<Call>),
}

/// Classifies `text` (cached: a spec field is met once per hardware line).
pub(super) fn classify(text: &str) -> Field {
    thread_local! {
        static CACHE: RefCell<HashMap<String, Field>> = RefCell::new(HashMap::new());
    }
    CACHE.with(|cache| {
        if let Some(hit) = cache.borrow().get(text) {
            return hit.clone();
        }
        let field = match parse_call_at(text, 0) {
            Some(c) => Field::Call(Rc::new(c)),
            None if split_call(text).is_some() => Field::Unknown,
            None => Field::NotCall,
        };
        let mut cache = cache.borrow_mut();
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(text.to_string(), field.clone());
        field
    })
}

pub(super) fn parse_call(text: &str) -> Option<Rc<Call>> {
    match classify(text) {
        Field::Call(c) => Some(c),
        _ => None,
    }
}

/// What is wrong with one spec field, found without any hardware: used by
/// `edeploy check`. Plain text and variables are always fine.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldProblem(pub String);

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FieldProblem {}

/// Checks one spec field statically: unknown function names (the legacy
/// server then never matches the field), wrong argument counts, unreadable
/// numbers, invalid regexps or networks (it raises), `range` (missing from
/// the legacy library), and the variable forms the legacy server crashes on.
pub fn check_field(field: &HwValue) -> Result<(), FieldProblem> {
    let Some(field) = field.as_str() else {
        return Ok(());
    };
    let problem = |m: String| Err(FieldProblem(m));
    let call = |text: &str| match parse_call(text) {
        Some(c) => check_call(&c),
        None => problem(format!(
            "{text:?}: unknown function, the field never matches"
        )),
    };
    if let Some(var) = field.strip_prefix('$') {
        return match split_assignment(var) {
            Some((_, func)) if !func.ends_with(')') || matches!(classify(func), Field::NotCall) => {
                problem(format!(
                    "{field:?}: after '=' a function call is expected, this never matches"
                ))
            }
            Some((name, func)) => check_var_name(name).and_then(|_| call(func)),
            None => check_var_name(var),
        };
    }
    if field.ends_with(')') && !matches!(classify(field), Field::NotCall) {
        return call(field);
    }
    Ok(())
}

fn check_var_name(name: &str) -> Result<(), FieldProblem> {
    if name.is_empty() || name == "$" {
        return Err(FieldProblem(format!(
            "variable {:?} has an empty name: the legacy server crashes on it",
            format!("${name}")
        )));
    }
    Ok(())
}

fn check_call(call: &Call) -> Result<(), FieldProblem> {
    let problem = |m: String| Err(FieldProblem(m));
    let name = call.name;
    let expected = match name {
        "in" => None,
        "and" | "or" | "range" => Some(2),
        _ => Some(1),
    };
    if let Some(n) = expected.filter(|&n| n != call.args.len()) {
        return problem(format!(
            "{name}() takes {n} argument(s), {} given (commas always split arguments)",
            call.args.len()
        ));
    }
    if name == "range" {
        return problem("range() is unknown to the legacy server: it never matches there".into());
    }
    for arg in &call.args {
        let text = match arg {
            Expr::Call(c) => {
                check_call(c)?;
                continue;
            }
            Expr::TooDeep => return problem(format!("{name}(): functions nested too deeply")),
            Expr::Text(t) => t,
        };
        match name {
            "gt" | "ge" | "lt" | "le" if py_float(text).is_none() => {
                return problem(format!("{name}(): {text:?} is not a number"))
            }
            "network" if parse_network(text).is_none() => {
                return problem(format!("network(): {text:?} is not an IPv4 network"))
            }
            "regexp" if pyre::compile(text).is_none() => {
                return problem(format!(
                    "regexp(): {text:?} is not a regular expression we support \
                     (invalid, or uses backreferences, lookaround or conditionals)"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The legacy strips quotes around arguments (and around the value).
pub(super) fn strip_quotes(s: &str) -> &str {
    s.trim_matches(|c| c == '\'' || c == '"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex::bytes::Regex;

    /// The legacy's call syntax as a regex (Python's `$` is `\n?\z`).
    fn func_re() -> Regex {
        Regex::new(r"(?-u)\A([^(]+)\(\s*([^,]+)(?:\s*,\s*(.+))?\)\n?\z").unwrap()
    }

    /// What the regexes make of `text`: the call's parts, and the rest
    /// split on `\s*,\s*`.
    fn by_regex(text: &str) -> Option<(String, String, Option<Vec<String>>)> {
        let caps = func_re().captures(text.as_bytes())?;
        let part = |i: usize| caps.get(i).map(|m| text[m.range()].to_owned());
        let rest = part(3).map(|rest| {
            Regex::new(r"(?-u)\s*,\s*")
                .unwrap()
                .split(rest.as_bytes())
                .map(|a| String::from_utf8(a.to_vec()).unwrap())
                .collect()
        });
        Some((part(1)?, part(2)?, rest))
    }

    fn by_hand(text: &str) -> Option<(String, String, Option<Vec<String>>)> {
        let (name, first, rest) = split_call(text)?;
        let rest = rest.map(|r| split_args(r).map(str::to_owned).collect());
        Some((name.to_owned(), first.to_owned(), rest))
    }

    #[test]
    fn calls_are_split_as_the_legacy_regex_splits_them() {
        for text in [
            "gt(4)",
            "network(192.168.0.0/16)\n",
            "in('a', 'b' ,c)",
            "f(  , x)",
            "f( \n, x)",
            "f(a, \n)",
            "f(a,  )",
            "f(a, b\nc)",
            "f(,x)",
            "(a)",
            "f()",
            "f(a)\n\n",
            "and(gt(1), lt(2))",
            "f(a),",
            "f(a , , b)",
        ] {
            assert_eq!(by_hand(text), by_regex(text), "{text:?}");
        }
    }

    /// Texts made of the bytes the syntax turns on.
    fn pieces(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("f"),
                Just("in"),
                Just("("),
                Just(")"),
                Just(","),
                Just(" "),
                Just("\n"),
                Just("\t"),
                Just("\x0b"),
                Just("\x0c"),
                Just("\r"),
                Just("a"),
                Just("1"),
                Just("é"),
                Just("'"),
            ],
            0..max,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn any_text_is_split_as_the_legacy_regex_splits_it(
            text in prop_oneof![
                pieces(14),
                // Mostly calls: a name, `(`, anything, `)`, maybe a newline.
                (pieces(3), pieces(10), prop_oneof![Just(")"), Just(")\n")])
                    .prop_map(|(name, inner, end)| format!("{name}({inner}{end}")),
            ]
        ) {
            prop_assert_eq!(by_hand(&text), by_regex(&text), "{:?}", text);
        }
    }
}

//! What a spec field is, read as the legacy code reads it: plain text, a
//! variable (`$x`, `$$x`, `$x=call`) or a call of a known function, with
//! the legacy's own argument splitting; and the static checks that
//! `edeploy check` makes of a field.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::OnceLock;

use regex::bytes::Regex;

use super::functions::{parse_network, py_float};
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

/// The legacy call syntax: `name(first, rest...)`. The name is everything
/// before the first `(`; the first argument runs to the first comma; the
/// closing `)` may be followed by one newline (Python's `$`). Byte regexes
/// without Unicode classes: as fast to build as to run, once per request,
/// and every capture starts and ends next to an ASCII byte, so the captures
/// of a `&str` are `&str` again.
fn func_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?-u)\A([^(]+)\(\s*([^,]+)(?:\s*,\s*(.+))?\)\n?\z").expect("static regex")
    })
}

fn arg_split_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(?-u)\s*,\s*").expect("static regex"))
}

/// The text of capture `i` of `caps` taken on `text`.
fn capture<'t>(text: &'t str, caps: &regex::bytes::Captures<'_>, i: usize) -> Option<&'t str> {
    caps.get(i).and_then(|m| text.get(m.range()))
}

/// `rest` split on commas and the white space around them.
fn split_args(rest: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let ends = arg_split_re()
        .find_iter(rest.as_bytes())
        .map(|m| (m.start(), m.end()))
        .chain(std::iter::once((rest.len(), rest.len())));
    ends.filter_map(move |(end, next)| {
        let arg = rest.get(start..end);
        start = next;
        arg
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
    let caps = func_re().captures(text.as_bytes())?;
    let head = capture(text, &caps, 1)?;
    let name = *FUNCTIONS.iter().find(|f| **f == head)?;
    let first = capture(text, &caps, 2)?;
    let rest = capture(text, &caps, 3).into_iter().flat_map(split_args);
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
            None if func_re().is_match(text.as_bytes()) => Field::Unknown,
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

//! Legacy spec matching: which hardware lines a profile's `.specs` accepts,
//! and which variables it binds.
//!
//! The variables end up in the configure script and in the CMDB, and a
//! machine that re-installs finds its CMDB entry again only if it gets the
//! same variables, so every observable detail of the legacy matcher is kept:
//! the backtracking order of `match_all`, the argument parsing of the
//! functions, and even the iteration order of the CPython 2.7 dict that holds
//! the variables (see [`pydict`]): it decides which `$$x` variables the legacy
//! code forgets to rename.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::OnceLock;

use regex::bytes::Regex;

use crate::hw::{HwValue, Item};
use crate::literal::{self, Dict, Document, ParseError, Value};

/// One line of a `.specs` file: four fields matched against a hardware line.
/// A field is text (plain, `$var` or a function call), or a number (or
/// boolean, None) that the line's field must equal, as Python compares.
pub type Spec = [HwValue; 4];

/// Variables bound by matching (name without the leading `$`): the line
/// values they took, numbers included.
pub type Vars = BTreeMap<String, HwValue>;

/// Work allowed to one [`match_all`]: a match_spec call costs 1 plus the
/// number of lines it looks at, a backtracking point the lines it copies.
/// Real profiles use a few thousand units; a hostile spec file would
/// otherwise backtrack for hours (the legacy recursion is exponential).
pub const MATCH_BUDGET: u64 = 20_000_000;

/// Depth of the legacy recursion, after which a branch fails.
const MAX_LEVEL: usize = 50;

/// Nesting of function calls inside a field (`not(and(gt(1), ...))`); deeper
/// fields fail instead of exhausting the stack.
const MAX_NESTING: usize = 32;

/// Why specs could not be used.
#[derive(Debug, Clone, PartialEq)]
pub enum SpecError {
    /// The specs file is not a literal (or is a `generate()` call).
    Parse(ParseError),
    /// The specs file is not a list of 4-tuples of strings.
    Invalid {
        file: PathBuf,
        /// Index of the bad entry, when one entry is at fault.
        index: Option<usize>,
        message: String,
    },
    /// [`match_all`] ran out of its work budget: the specs backtrack too much.
    TooComplex { budget: u64 },
    /// The legacy server crashes on these specs after a successful match; we
    /// report an error as it does. `message` is the Python exception.
    LegacyCrash { message: &'static str },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Parse(e) => e.fmt(f),
            SpecError::Invalid {
                file,
                index: Some(i),
                message,
            } => write!(f, "{}: entry {}: {}", file.display(), i, message),
            SpecError::Invalid {
                file,
                index: None,
                message,
            } => write!(f, "{}: {}", file.display(), message),
            SpecError::TooComplex { budget } => write!(
                f,
                "specs too complex: matching gave up after {budget} steps of backtracking"
            ),
            SpecError::LegacyCrash { message } => write!(
                f,
                "specs not supported (the legacy server fails with {message:?}): \
                 a variable is named both $x and $$x, or a field is a bare '$'"
            ),
        }
    }
}

impl std::error::Error for SpecError {}

/// Parses a profile's `.specs` file: one literal list of 4-tuples of
/// strings; `generate()` belongs to CMDB files only.
pub fn parse_specs(file: &Path, src: &[u8]) -> Result<Vec<Spec>, SpecError> {
    match literal::parse(file, src).map_err(SpecError::Parse)? {
        Document::Literal(v) => specs_from_value(file, &v),
        Document::Generate(_) => Err(SpecError::Parse(ParseError {
            file: file.to_path_buf(),
            line: 1,
            column: 1,
            message: "generate() is only allowed in CMDB files".into(),
        })),
    }
}

/// Variables as the dict the CMDB and the configure script get.
pub fn vars_dict(vars: &Vars) -> Dict {
    vars.iter()
        .map(|(k, v)| (Value::str(k), v.to_value()))
        .collect()
}

/// Reads the specs of a profile from the value of its `.specs` file: a list
/// of 4-tuples (or 4-lists) of strings. `file` only names it in errors.
pub fn specs_from_value(file: &Path, v: &Value) -> Result<Vec<Spec>, SpecError> {
    let invalid = |index, message: String| SpecError::Invalid {
        file: file.to_path_buf(),
        index,
        message,
    };
    let Value::List(entries) = v else {
        return Err(invalid(
            None,
            "expected a list of 4-tuples of strings".to_string(),
        ));
    };
    let mut specs = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let fields = match entry {
            Value::Tuple(f) | Value::List(f) if f.len() == 4 => f,
            Value::Tuple(f) | Value::List(f) => {
                return Err(invalid(
                    Some(i),
                    format!("expected 4 fields, found {}", f.len()),
                ))
            }
            _ => return Err(invalid(Some(i), "expected a 4-tuple of strings".into())),
        };
        let mut spec: Spec = [HwValue::None, HwValue::None, HwValue::None, HwValue::None];
        for (slot, field) in spec.iter_mut().zip(fields) {
            *slot = match field {
                Value::Str(_) | Value::Unicode(_) => match field.as_text() {
                    Some(s) => HwValue::Str(s.to_string()),
                    None => return Err(invalid(Some(i), "a field is not valid UTF-8".into())),
                },
                Value::Int(n) => HwValue::Int(*n),
                Value::Long(n) => HwValue::Long(*n),
                Value::Float(f) => HwValue::Float(*f),
                Value::Bool(b) => HwValue::Bool(*b),
                Value::None => HwValue::None,
                _ => {
                    return Err(invalid(
                        Some(i),
                        "a field is not a string or a number".into(),
                    ))
                }
            };
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// Matches one spec against `lines`: on success removes the matching line
/// from `lines`, binds the spec's variables in `vars` and returns the line.
///
/// A line equal to the spec is taken first; otherwise the first line whose
/// four fields all pass (equal text, true function, or a variable that is
/// unbound or bound to the same value).
pub fn match_spec(spec: &Spec, lines: &mut Vec<Item>, vars: &mut Vars) -> Option<Item> {
    let (pos, binds) = find_line(spec, lines, |l| l, |k| vars.get(k))?;
    for (k, v) in binds {
        vars.insert(k, v);
    }
    Some(lines.remove(pos))
}

/// Finds the line for `spec` (`item` gives a line's fields); returns its
/// position with the variables to bind, in field order.
fn find_line<'l, 'a, T>(
    spec: &Spec,
    lines: &'l [T],
    item: impl Fn(&'l T) -> &'l Item,
    bound: impl Fn(&str) -> Option<&'a HwValue>,
) -> Option<(usize, Vec<(String, HwValue)>)> {
    if let Some(pos) = lines.iter().position(|l| item(l) == spec) {
        return Some((pos, Vec::new()));
    }
    'lines: for (pos, line) in lines.iter().map(&item).enumerate() {
        let mut binds = Vec::new();
        for (field, value) in spec.iter().zip(line.iter()) {
            // A number in a spec is only ever compared (the legacy code
            // raises on it past the exact-line pass).
            let HwValue::Str(field) = field else {
                if value != field {
                    continue 'lines;
                }
                continue;
            };
            if let Some(var) = field.strip_prefix('$') {
                let name = match split_assignment(var) {
                    Some((name, func)) => {
                        if !func.ends_with(')') || call_field(func, value) != Some(true) {
                            continue 'lines;
                        }
                        name
                    }
                    None => var,
                };
                if bound(name).is_some_and(|b| b != value) {
                    continue 'lines;
                }
                binds.push((name.to_string(), value.clone()));
            } else if field.ends_with(')') && !matches!(classify(field), Field::NotCall) {
                if call_field(field, value) != Some(true) {
                    continue 'lines;
                }
            } else if *value != **field {
                continue 'lines;
            }
        }
        return Some((pos, binds));
    }
    None
}

/// `name=func(...)` when the text (after `$`) holds exactly one `=`.
fn split_assignment(var: &str) -> Option<(&str, &str)> {
    let (name, func) = var.split_once('=')?;
    (!func.contains('=')).then_some((name, func))
}

/// Evaluates a field that looks like a function call against a line value:
/// `None` when it is not a call of a known function, `Some(false)` also when
/// it cannot be computed, as on a value that is not a string (the legacy
/// code raises there; we do not match).
fn call_field(field: &str, value: &HwValue) -> Option<bool> {
    let call = parse_call(field)?;
    let value = value.as_str();
    Some(value.is_some_and(|v| call.eval(v).is_ok_and(|a| a.truthy())))
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
struct Call {
    name: &'static str,
    args: Vec<Expr>,
}

#[derive(Debug)]
enum Expr {
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
enum Field {
    /// Not the call syntax: compared as text.
    NotCall,
    /// A call of an unknown function: never matches.
    Unknown,
    Call(Rc<Call>),
}

/// Classifies `text` (cached: a spec field is met once per hardware line).
fn classify(text: &str) -> Field {
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

fn parse_call(text: &str) -> Option<Rc<Call>> {
    match classify(text) {
        Field::Call(c) => Some(c),
        _ => None,
    }
}

/// A function argument once evaluated: text, or the result of a nested call.
#[derive(Debug, PartialEq)]
enum Arg<'a> {
    Str(&'a str),
    Bool(bool),
    /// A `regexp` result (Python returns a match object, not a bool).
    Match(bool),
}

impl Arg<'_> {
    fn truthy(&self) -> bool {
        match self {
            Arg::Str(s) => !s.is_empty(),
            Arg::Bool(b) | Arg::Match(b) => *b,
        }
    }

    /// Python's `float(arg)`.
    fn float(&self) -> Option<f64> {
        match self {
            Arg::Str(s) => py_float(s),
            Arg::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Arg::Match(_) => None,
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Arg::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Why a call could not be computed (the legacy code raises an exception).
#[derive(Debug, PartialEq)]
struct CallFailed;

impl Call {
    /// Calls the function with the (quote-stripped) line value as implicit
    /// first argument, after evaluating nested calls with the same value.
    fn eval(&self, value: &str) -> Result<Arg<'_>, CallFailed> {
        let value = strip_quotes(value);
        let mut args = Vec::with_capacity(self.args.len());
        for arg in &self.args {
            args.push(match arg {
                Expr::Text(t) => Arg::Str(t),
                Expr::Call(c) => c.eval(value)?,
                Expr::TooDeep => return Err(CallFailed),
            });
        }
        apply(self.name, value, &args).ok_or(CallFailed)
    }
}

fn strip_quotes(s: &str) -> &str {
    s.trim_matches(|c| c == '\'' || c == '"')
}

/// Applies a known function to the (quote-stripped) line value and the
/// evaluated arguments; `None` when Python would raise.
fn apply(name: &str, value: &str, args: &[Arg<'_>]) -> Option<Arg<'static>> {
    let cmp = |f: fn(f64, f64) -> bool| match args {
        [a] => Some(Arg::Bool(f(py_float(value)?, a.float()?))),
        _ => None,
    };
    match name {
        "gt" => cmp(|v, a| v > a),
        "ge" => cmp(|v, a| v >= a),
        "lt" => cmp(|v, a| v < a),
        "le" => cmp(|v, a| v <= a),
        "in" => Some(Arg::Bool(args.iter().any(|a| a.text() == Some(value)))),
        "network" => match args {
            [net] => Some(Arg::Bool(in_network(value, net.text()?)?)),
            _ => None,
        },
        "regexp" => match args {
            [re] => Some(Arg::Match(regexp_search(re.text()?, value)?)),
            _ => None,
        },
        "range" => match args {
            [lo, hi] => {
                let v = py_float(value)?;
                Some(Arg::Bool(lo.float()? <= v && v <= hi.float()?))
            }
            _ => None,
        },
        "not" => match args {
            [a] => Some(Arg::Bool(!a.truthy())),
            _ => None,
        },
        "and" => match args {
            [a, b] => Some(Arg::Bool(a.truthy() && b.truthy())),
            _ => None,
        },
        "or" => match args {
            [a, b] => Some(Arg::Bool(a.truthy() || b.truthy())),
            _ => None,
        },
        _ => None,
    }
}

/// Python's whitespace for `float()`, `int()` and `\s` on byte strings.
fn is_py_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Python 2's `float(s)` on a byte string: surrounding whitespace allowed,
/// decimal or exponent notation, `inf`/`infinity`/`nan` in any case.
fn py_float(s: &str) -> Option<f64> {
    let s = s.trim_matches(is_py_space);
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let special = ["inf", "infinity", "nan"]
        .iter()
        .any(|w| body.eq_ignore_ascii_case(w));
    let numeric = body
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !special && !numeric {
        return None;
    }
    s.parse().ok()
}

/// `network(cidr)`: is `value` an IPv4 address inside `cidr`? Host bits in
/// `cidr` are allowed; the prefix is a length or a dotted netmask/hostmask.
/// `None` when either side does not parse (the legacy code raises).
fn in_network(value: &str, cidr: &str) -> Option<bool> {
    let addr = u32::from(value.parse::<Ipv4Addr>().ok()?);
    let (net, mask) = parse_network(cidr)?;
    Some(addr & mask == net & mask)
}

/// Parses `a.b.c.d[/prefix]` as the legacy `ipaddr.IPv4Network` does.
fn parse_network(cidr: &str) -> Option<(u32, u32)> {
    let (addr, prefix) = match cidr.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (cidr, None),
    };
    let net = u32::from(addr.parse::<Ipv4Addr>().ok()?);
    let len = match prefix {
        None => 32,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            let digits = p.trim_start_matches('0');
            if digits.len() > 2 {
                return None;
            }
            match digits.parse::<u32>().unwrap_or(0) {
                n @ 0..=32 => n,
                _ => return None,
            }
        }
        Some(p) => {
            let m = u32::from(p.parse::<Ipv4Addr>().ok()?);
            if m.leading_ones() + m.trailing_zeros() == 32 {
                m.leading_ones()
            } else if m.leading_zeros() + m.trailing_ones() == 32 {
                m.leading_zeros()
            } else {
                return None;
            }
        }
    };
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Some((net, mask))
}

/// Python `re.search(pattern, value)`; `None` when the pattern is invalid
/// for Python or beyond what the `regex` crate does (backreferences,
/// lookaround, conditionals).
fn regexp_search(pattern: &str, value: &str) -> Option<bool> {
    thread_local! {
        static CACHE: RefCell<HashMap<String, Option<Rc<pyre::PyRegex>>>> =
            RefCell::new(HashMap::new());
    }
    let re = CACHE.with(|cache| {
        if let Some(hit) = cache.borrow().get(pattern) {
            return hit.clone();
        }
        let re = pyre::compile(pattern).map(Rc::new);
        let mut cache = cache.borrow_mut();
        if cache.len() >= 1024 {
            cache.clear();
        }
        cache.insert(pattern.to_string(), re.clone());
        re
    })?;
    Some(re.search(value))
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

/// Matches all the specs against the hardware lines, backtracking exactly as
/// the legacy `match_all` does (LEGACY-SEMANTICS §3), within
/// [`MATCH_BUDGET`].
///
/// On success `vars` holds every bound variable; `$$x` variables are renamed
/// `x` and also put in `forced`, except where the legacy code skips them
/// (see [`pydict`]). `vars` is expected empty, as the legacy server passes it.
/// Errors: [`SpecError::TooComplex`] and [`SpecError::LegacyCrash`].
pub fn match_all(
    lines: &[Item],
    specs: &[Spec],
    vars: &mut Vars,
    forced: &mut Vars,
) -> Result<bool, SpecError> {
    match_all_with_budget(lines, specs, vars, forced, MATCH_BUDGET)
}

/// [`match_all`] with an explicit work budget.
pub fn match_all_with_budget(
    lines: &[Item],
    specs: &[Spec],
    vars: &mut Vars,
    forced: &mut Vars,
    budget: u64,
) -> Result<bool, SpecError> {
    run_matcher(lines, specs, vars, forced, budget, true)
}

/// The legacy search step by step, without pruning: as slow as the legacy
/// code (exponential on hard specs). The reference that tests and
/// benchmarks compare [`match_all`] with; never used to serve a machine.
#[doc(hidden)]
pub fn match_all_unpruned(
    lines: &[Item],
    specs: &[Spec],
    vars: &mut Vars,
    forced: &mut Vars,
    budget: u64,
) -> Result<bool, SpecError> {
    run_matcher(lines, specs, vars, forced, budget, false)
}

fn run_matcher(
    lines: &[Item],
    specs: &[Spec],
    vars: &mut Vars,
    forced: &mut Vars,
    budget: u64,
    prune: bool,
) -> Result<bool, SpecError> {
    let mut dict = pydict::PyDict::new();
    for (k, v) in vars.iter() {
        dict.insert(k, v);
    }
    let mut forced_dict = pydict::PyDict::new();
    for (k, v) in forced.iter() {
        forced_dict.insert(k, v);
    }
    let mut m = Matcher {
        lines,
        specs,
        forced: &mut forced_dict,
        left: budget,
        budget,
        prune,
        backtracking: false,
        failed: HashMap::new(),
    };
    let ok = m.match_all((0..lines.len()).collect(), 0, &mut dict, 0)?;
    *vars = dict.to_map();
    *forced = forced_dict.to_map();
    Ok(ok)
}

struct Matcher<'s, 'f> {
    lines: &'s [Item],
    specs: &'s [Spec],
    forced: &'f mut pydict::PyDict,
    left: u64,
    budget: u64,
    /// Whether to cut branches that cannot succeed (always, but for the
    /// reference [`match_all_unpruned`]).
    prune: bool,
    /// Set when a spec first finds no line: the search backtracks from then
    /// on, and pruning pays for itself. A match found greedily never pays.
    backtracking: bool,
    /// Calls that failed, with the lowest level at which each did.
    failed: HashMap<CallKey, usize>,
}

/// What a call of the legacy `match_all` depends on: its lines in order,
/// its first spec and its variables (values by repr, which is stricter than
/// Python's equality). The same call fails again at the same or a deeper
/// level, where it may explore less but never more.
#[derive(PartialEq, Eq, Hash)]
struct CallKey {
    lines: Vec<usize>,
    spec: usize,
    vars: Vec<(String, String)>,
}

/// Failed calls remembered at most; past it the search goes on unpruned
/// by memory (still bounded by the budget).
const MAX_REMEMBERED: usize = 1 << 20;

/// A backtracking point: the lines (indices, the matched one moved last),
/// the index of the spec to retry from and the variables before it matched.
struct Point {
    lines: Vec<usize>,
    spec: usize,
    vars: pydict::PyDict,
}

impl Matcher<'_, '_> {
    fn charge(&mut self, units: usize) -> Result<(), SpecError> {
        let units = u64::try_from(units).unwrap_or(u64::MAX);
        self.left = self.left.checked_sub(units).ok_or(SpecError::TooComplex {
            budget: self.budget,
        })?;
        Ok(())
    }

    /// The legacy `match_all` from spec `first_spec` on; `lines` are
    /// indices into `self.lines`, in the legacy list's order.
    ///
    /// Once backtracking, a call first asks whether it can succeed at all:
    /// not if it failed before at this level or above, nor if its specs
    /// cannot each get a line of their own (see [`Matcher::feasible`]).
    /// Such a call would search and fail, and a failed call changes nothing
    /// (its variables are a copy), so answering `false` at once gives the
    /// legacy's answer, and its first solution, sooner.
    fn match_all(
        &mut self,
        lines: Vec<usize>,
        first_spec: usize,
        vars: &mut pydict::PyDict,
        level: usize,
    ) -> Result<bool, SpecError> {
        if level == MAX_LEVEL {
            return Ok(false);
        }
        if !(self.prune && self.backtracking) {
            return self.search(lines, first_spec, vars, level);
        }
        let mut bound: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        bound.sort_unstable();
        let key = CallKey {
            lines: lines.clone(),
            spec: first_spec,
            vars: bound,
        };
        self.charge(key.lines.len() + key.vars.len())?;
        if self.failed.get(&key).is_some_and(|&l| l <= level) {
            return Ok(false);
        }
        if !self.feasible(&lines, first_spec, vars)? {
            return Ok(false);
        }
        let ok = self.search(lines, first_spec, vars, level)?;
        if !ok && self.failed.len() < MAX_REMEMBERED {
            let at = self.failed.entry(key).or_insert(level);
            *at = (*at).min(level);
        }
        Ok(ok)
    }

    /// The legacy loop: each spec takes the first line it accepts; a spec
    /// that binds a new variable leaves a point to retry it with its line
    /// moved last; a spec without a line retries the points, newest first.
    fn search(
        &mut self,
        mut lines: Vec<usize>,
        first_spec: usize,
        vars: &mut pydict::PyDict,
        level: usize,
    ) -> Result<bool, SpecError> {
        let mut saved = vars.copy();
        let mut points: Vec<Point> = Vec::new();
        // Set once the specs left cannot all be matched: the path goes on
        // (its bindings are the variables that the legacy merges a retried
        // branch into, stale keys and all) to the spec that finds no line,
        // but leaves no more points: retried, they would only fail (they
        // hold fewer lines and more bindings).
        let mut doomed = false;
        for (index, spec) in self.specs.iter().enumerate().skip(first_spec) {
            self.charge(1 + lines.len())?;
            let all = self.lines;
            let found = find_line(spec, &lines, |&i| &all[i], |k| vars.get(k));
            let Some((pos, binds)) = found else {
                self.backtracking = true;
                return self.retry(points, vars, level);
            };
            let line = lines.remove(pos);
            for (k, v) in &binds {
                vars.insert(k, v);
            }
            if doomed {
                continue;
            }
            if *vars != saved {
                self.charge(lines.len() + 1)?;
                let mut retry = lines.clone();
                retry.push(line);
                points.push(Point {
                    lines: retry,
                    spec: index,
                    vars: std::mem::replace(&mut saved, vars.copy()),
                });
            }
            if self.prune && self.backtracking {
                doomed = !self.feasible(&lines, index + 1, vars)?;
            }
        }
        vars.move_forced(self.forced)
            .map_err(|message| SpecError::LegacyCrash { message })?;
        Ok(true)
    }

    /// A spec found no line: retries the points, newest first.
    fn retry(
        &mut self,
        mut points: Vec<Point>,
        vars: &mut pydict::PyDict,
        level: usize,
    ) -> Result<bool, SpecError> {
        while let Some(p) = points.pop() {
            let mut v = p.vars;
            if self.match_all(p.lines, p.spec, &mut v, level + 1)? {
                // The legacy code merges the successful branch's variables
                // into the failed one's: stale `$x` keys stay, unrenamed.
                vars.update(&v);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Can the specs from `first` on still all be matched? Each takes a
    /// line of its own, among those it accepts now; later it accepts fewer
    /// (lines are only removed, variables only bound), so if no assignment
    /// of distinct lines exists now (Hall's condition, checked by bipartite
    /// matching), none ever will.
    fn feasible(
        &mut self,
        lines: &[usize],
        first: usize,
        vars: &pydict::PyDict,
    ) -> Result<bool, SpecError> {
        let rest = self.specs.get(first..).unwrap_or_default();
        self.charge(rest.len().saturating_mul(lines.len() + 1))?;
        let all = self.lines;
        let mut accepted: Vec<Vec<usize>> = Vec::with_capacity(rest.len());
        for spec in rest {
            let positions: Vec<usize> = (0..lines.len())
                .filter(|&p| {
                    let one = std::slice::from_ref(&lines[p]);
                    find_line(spec, one, |&i| &all[i], |k| vars.get(k)).is_some()
                })
                .collect();
            if positions.is_empty() {
                return Ok(false);
            }
            accepted.push(positions);
        }
        Ok(distinct_lines(&accepted, lines.len()))
    }
}

/// Whether each spec can be given a line of its own from `accepted[spec]`
/// (positions below `lines`): Kuhn's augmenting paths, iterative so that a
/// long specs file cannot exhaust the stack.
fn distinct_lines(accepted: &[Vec<usize>], lines: usize) -> bool {
    const FREE: usize = usize::MAX;
    let mut owner = vec![FREE; lines];
    let mut seen = vec![0usize; lines];
    for (round, start) in (1..).zip(0..accepted.len()) {
        // (spec, next of its lines to try); `via[k]` is the line that
        // `path[k]` takes if the path succeeds.
        let mut path = vec![(start, 0usize)];
        let mut via: Vec<usize> = Vec::new();
        let found = loop {
            let Some((spec, next)) = path.last_mut() else {
                break false;
            };
            let Some(&line) = accepted[*spec].get(*next) else {
                path.pop();
                via.pop();
                continue;
            };
            *next += 1;
            if seen[line] == round {
                continue;
            }
            seen[line] = round;
            via.push(line);
            match owner[line] {
                FREE => break true,
                other => path.push((other, 0)),
            }
        };
        if !found {
            return false;
        }
        for (&(spec, _), &line) in path.iter().zip(&via) {
            owner[line] = spec;
        }
    }
    true
}

/// A simulation of the CPython 2.7 dict holding the legacy variables.
///
/// After matching, the legacy code renames each `$x` key to `x` while
/// iterating over the same dict. Inserting may resize the table mid-loop,
/// and the iteration then skips some keys: those `$$` variables stay `$x`
/// and are not forced. Which ones depends on string hashes, table size and
/// the history of insertions and deletions, so this module replays them on
/// a copy of CPython's table (open addressing, perturbation probing).
/// Hash randomisation is off in Python 2.7 by default.
pub(crate) mod pydict {
    use std::collections::BTreeMap;

    use crate::hw::HwValue;

    const MINSIZE: usize = 8;
    const PERTURB_SHIFT: u32 = 5;

    #[derive(Clone, Debug)]
    enum Slot {
        Empty,
        Dummy,
        Active {
            hash: i64,
            key: String,
            value: HwValue,
        },
    }

    #[derive(Clone, Debug)]
    pub struct PyDict {
        table: Vec<Slot>,
        used: usize,
        fill: usize,
    }

    /// Python 2.7's `hash()` of a byte string (64-bit build).
    pub fn str_hash(s: &[u8]) -> i64 {
        seq_hash(s.iter().map(|&b| i64::from(b)), s.len())
    }

    /// Python 2.7's `hash()` of a `unicode` string (UCS-4 build, as the
    /// reference): the same algorithm on code points.
    pub fn unicode_hash(s: &str) -> i64 {
        seq_hash(
            s.chars().map(|c| i64::from(u32::from(c))),
            s.chars().count(),
        )
    }

    fn seq_hash(mut units: impl Iterator<Item = i64>, len: usize) -> i64 {
        let Some(first) = units.next() else {
            return 0;
        };
        let mut x = first << 7;
        x = x.wrapping_mul(1_000_003) ^ first;
        for c in units {
            x = x.wrapping_mul(1_000_003) ^ c;
        }
        x ^= len as i64;
        if x == -1 {
            -2
        } else {
            x
        }
    }

    /// The dict a display `{k0: v0, k1: v1, ...}` evaluates to, for
    /// distinct keys with the given hashes; its keys are the indices
    /// (`"0"`, `"1"`...). The table is presized for more than 5 keys, then
    /// filled in order.
    pub fn display(hashes: &[i64]) -> PyDict {
        let mut d = PyDict::new();
        if hashes.len() > 5 {
            d.resize(hashes.len().min(0xffff));
        }
        for (i, &h) in hashes.iter().enumerate() {
            d.insert_hashed(&i.to_string(), h, &HwValue::None);
        }
        d
    }

    impl PartialEq for PyDict {
        fn eq(&self, other: &PyDict) -> bool {
            self.used == other.used && self.iter().all(|(k, v)| other.get(k) == Some(v))
        }
    }

    impl PyDict {
        pub fn new() -> PyDict {
            PyDict {
                table: vec![Slot::Empty; MINSIZE],
                used: 0,
                fill: 0,
            }
        }

        fn mask(&self) -> usize {
            self.table.len() - 1
        }

        /// `lookdict_string`: the slot holding `key`, else the slot where
        /// it would go (the first dummy on its probe path, or the empty
        /// slot ending it).
        fn lookup(&self, key: &str, hash: i64) -> usize {
            let mask = self.mask();
            let mut i = (hash as u64 as usize) & mask;
            let mut freeslot = None;
            match &self.table[i] {
                Slot::Empty => return i,
                Slot::Active { key: k, .. } if k == key => return i,
                Slot::Dummy => freeslot = Some(i),
                Slot::Active { .. } => {}
            }
            let mut perturb = hash as u64 as usize;
            loop {
                i = (i << 2)
                    .wrapping_add(i)
                    .wrapping_add(perturb)
                    .wrapping_add(1);
                let j = i & mask;
                match &self.table[j] {
                    Slot::Empty => return freeslot.unwrap_or(j),
                    Slot::Active { key: k, .. } if k == key => return j,
                    Slot::Dummy if freeslot.is_none() => freeslot = Some(j),
                    _ => {}
                }
                perturb >>= PERTURB_SHIFT;
            }
        }

        pub fn get(&self, key: &str) -> Option<&HwValue> {
            match &self.table[self.lookup(key, str_hash(key.as_bytes()))] {
                Slot::Active { value, .. } => Some(value),
                _ => None,
            }
        }

        /// `insertdict`, without the resize check.
        fn insert_no_resize(&mut self, key: &str, hash: i64, value: &HwValue) {
            let j = self.lookup(key, hash);
            match &mut self.table[j] {
                Slot::Active { value: v, .. } => *v = value.clone(),
                slot => {
                    if matches!(slot, Slot::Empty) {
                        self.fill += 1;
                    }
                    *slot = Slot::Active {
                        hash,
                        key: key.to_string(),
                        value: value.clone(),
                    };
                    self.used += 1;
                }
            }
        }

        /// `d[key] = value` (`PyDict_SetItem`).
        pub fn insert(&mut self, key: &str, value: &HwValue) {
            self.insert_hashed(key, str_hash(key.as_bytes()), value);
        }

        fn insert_hashed(&mut self, key: &str, hash: i64, value: &HwValue) {
            let n_used = self.used;
            self.insert_no_resize(key, hash, value);
            if self.used > n_used && self.fill * 3 >= self.table.len() * 2 {
                let factor = if self.used > 50_000 { 2 } else { 4 };
                self.resize(factor * self.used);
            }
        }

        /// `del d[key]`.
        fn remove(&mut self, key: &str) {
            let j = self.lookup(key, str_hash(key.as_bytes()));
            if matches!(self.table[j], Slot::Active { .. }) {
                self.table[j] = Slot::Dummy;
                self.used -= 1;
            }
        }

        /// `dictresize`: a table of the smallest power of two above
        /// `minused`, active entries re-inserted in old table order.
        fn resize(&mut self, minused: usize) {
            let mut size = MINSIZE;
            while size <= minused {
                size <<= 1;
            }
            let old = std::mem::replace(&mut self.table, vec![Slot::Empty; size]);
            self.used = 0;
            self.fill = 0;
            let mask = size - 1;
            for slot in old {
                if let Slot::Active { hash, key, value } = slot {
                    let mut i = (hash as u64 as usize) & mask;
                    let mut perturb = hash as u64 as usize;
                    while !matches!(self.table[i & mask], Slot::Empty) {
                        i = (i << 2)
                            .wrapping_add(i)
                            .wrapping_add(perturb)
                            .wrapping_add(1);
                        perturb >>= PERTURB_SHIFT;
                    }
                    self.table[i & mask] = Slot::Active { hash, key, value };
                    self.used += 1;
                    self.fill += 1;
                }
            }
        }

        /// `self.update(other)` (`PyDict_Merge`): one resize up front if
        /// needed, then the entries in `other`'s table order.
        pub fn update(&mut self, other: &PyDict) {
            if other.used == 0 {
                return;
            }
            if (self.fill + other.used) * 3 >= self.table.len() * 2 {
                self.resize((self.used + other.used) * 2);
            }
            for slot in &other.table {
                if let Slot::Active { hash, key, value } = slot {
                    self.insert_no_resize(key, *hash, value);
                }
            }
        }

        /// `d.copy()`.
        pub fn copy(&self) -> PyDict {
            let mut d = PyDict::new();
            d.update(self);
            d
        }

        pub fn iter(&self) -> impl Iterator<Item = (&str, &HwValue)> {
            self.table.iter().filter_map(|s| match s {
                Slot::Active { key, value, .. } => Some((key.as_str(), value)),
                _ => None,
            })
        }

        pub fn to_map(&self) -> BTreeMap<String, HwValue> {
            self.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        }

        /// The legacy rename loop, run on the live table:
        /// `for k in d: if k[0] == '$': d[k[1:]] = d[k]; forced[k[1:]] =
        /// d[k]; del d[k]`. Errors are the exceptions Python raises: a key
        /// `''` (`IndexError`), or a rename onto an existing key, which
        /// shrinks the dict under the iterator (`RuntimeError`).
        pub fn move_forced(&mut self, forced: &mut PyDict) -> Result<(), &'static str> {
            let size_at_start = self.used;
            let mut pos = 0;
            loop {
                if self.used != size_at_start {
                    return Err("RuntimeError: dictionary changed size during iteration");
                }
                let Some(i) =
                    (pos..self.table.len()).find(|&i| matches!(self.table[i], Slot::Active { .. }))
                else {
                    return Ok(());
                };
                pos = i + 1;
                let Slot::Active { key, value, .. } = &self.table[i] else {
                    continue;
                };
                let Some(name) = key.strip_prefix('$') else {
                    if key.is_empty() {
                        return Err("IndexError: string index out of range");
                    }
                    continue;
                };
                let (key, name, value) = (key.clone(), name.to_string(), value.clone());
                self.insert(&name, &value);
                forced.insert(&name, &value);
                self.remove(&key);
            }
        }
    }
}

/// Python 2.7 regular expressions (`re`, byte strings) on top of the `regex`
/// crate.
///
/// The pattern is parsed with Python's rules and re-emitted in `regex`
/// syntax, so that the text means what it meant to the legacy server: `{`
/// not starting a repetition is literal, `[` inside a class is literal,
/// `\e` is `e`, `\Z` ends the text, `$` also matches before a final newline,
/// inline flags apply to the whole pattern, `\d \w \s \b` are ASCII.
/// Unsupported (the field then never matches): backreferences, lookaround,
/// conditionals. Known differences: patterns Python 2.7 rejects because a
/// repeated group can match the empty string (`(a*)*`) are accepted; in a
/// text with a newline before its last character, what follows a `$`
/// cannot match the final newline.
mod pyre {
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
    fn translate(
        pattern: &[u8],
        dollar: &'static str,
        non_boundary: &'static str,
    ) -> Option<String> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hardware line or a spec, as the context wants.
    fn item<T: for<'a> From<&'a str>>(f: [&str; 4]) -> [T; 4] {
        f.map(T::from)
    }

    /// The `$y` keeps the spec from equalling the line (taken first).
    fn field_matches(field: &str, value: &str) -> bool {
        let spec = item(["a", "$y", "c", field]);
        let mut lines = vec![item(["a", "b", "c", value])];
        match_spec(&spec, &mut lines, &mut Vars::new()).is_some()
    }

    #[test]
    fn python_floats() {
        for (s, v) in [
            ("10", 10.0),
            (" 12 ", 12.0),
            ("\t7\n", 7.0),
            ("1e3", 1000.0),
            ("+5", 5.0),
            ("5.", 5.0),
            (".5", 0.5),
            ("-iNF", f64::NEG_INFINITY),
            ("Infinity", f64::INFINITY),
        ] {
            assert_eq!(py_float(s), Some(v), "{s:?}");
        }
        assert!(py_float("nan").is_some_and(f64::is_nan));
        for s in ["abc", "", "0x10", "1_0", "12abc", "1e", ".", "5\u{a0}"] {
            assert_eq!(py_float(s), None, "{s:?}");
        }
    }

    #[test]
    fn networks() {
        assert_eq!(in_network("10.1.2.3", "10.0.0.0/8"), Some(true));
        assert_eq!(in_network("10.1.2.3", "10.1.2.3/8"), Some(true));
        assert_eq!(in_network("10.1.2.3", "10.1.2.4/31"), Some(false));
        assert_eq!(in_network("10.1.2.3", "10.1.2.2/31"), Some(true));
        assert_eq!(in_network("10.1.2.3", "10.1.2.3"), Some(true));
        assert_eq!(in_network("10.5.5.5", "10.1.2.3/0000008"), Some(true));
        assert_eq!(
            in_network("10.1.2.3", "10.1.2.0/255.255.255.252"),
            Some(true)
        );
        assert_eq!(in_network("10.1.3.4", "10.1.2.3/0.0.0.255"), Some(false));
        assert_eq!(in_network("11.0.0.0", "10.1.2.3/0.0.0.0"), Some(true));
        for (value, net) in [
            ("010.1.2.3", "10.0.0.0/8"),
            (" 10.1.2.3", "10.0.0.0/8"),
            ("10.1.2", "10.0.0.0/8"),
            ("10.1.2.3", "10.0.0.0/33"),
            ("10.1.2.3", "10.0.0.0/ 8"),
            ("10.1.2.3", "10.0.0.0/"),
            ("10.1.2.3", "10.0.0.0/255.0.255.0"),
            ("10.1.2.3", "::/0"),
        ] {
            assert_eq!(in_network(value, net), None, "{value:?} {net:?}");
        }
    }

    #[test]
    fn function_fields() {
        assert!(field_matches("gt(5)", "10"));
        assert!(field_matches("gt( 5 )", "10"));
        assert!(field_matches("gt('5')", "10"));
        assert!(!field_matches("gt(abc)", "10"));
        assert!(!field_matches("gt(4)", "abc"));
        assert!(!field_matches("gt(1, 2)", "10"));
        assert!(field_matches("in(11, 10)", "10"));
        assert!(field_matches("in(11,,10)", "10"));
        assert!(!field_matches("in(11 , 10 )", "10"));
        assert!(field_matches("in('a,b')", "'a"));
        assert!(field_matches("and(gt(5), lt(20))", "10"));
        assert!(!field_matches("and(gt(5), in(10, 11))", "10"));
        assert!(field_matches("and(foo(1), lt(20))", "10"));
        assert!(!field_matches("and(gt(5), 'lt(2)')", "10"));
        assert!(field_matches("not(not(a))", "10"));
        assert!(field_matches("not('')", "10"));
        assert!(field_matches("or(gt(50), x)", "10"));
        assert!(field_matches("regexp(^28:d2:)", "28:d2:44:00:00:01"));
        assert!(field_matches("not(regexp(^28:d2:))", "52:54:00:12:34:56"));
        assert!(field_matches("network(10.0.0.0/8)", "10.1.2.3"));
        assert!(field_matches("range(1, 10)", "10"));
        assert!(!field_matches("range(1, 9.5)", "10"));
        // Unknown functions never match, even the same text.
        assert!(!field_matches("foo(1)", "foo(1)"));
        assert!(!field_matches(" gt(5)", "10"));
        // Not the call syntax: plain text.
        assert!(field_matches("gt()", "gt()"));
        assert!(field_matches("(a)", "(a)"));
        assert!(field_matches("gt(5)\n", "gt(5)\n"));
        // Nested deeper than the limit: never computed.
        let deep = format!("{}gt(5){}", "not(".repeat(40), ")".repeat(40));
        assert!(!field_matches(&deep, "10"));
        assert!(!field_matches(&deep, "1"));
    }

    #[test]
    fn variables() {
        let mut vars = Vars::new();
        let spec = item(["a", "$x", "$x", "d"]);
        let mut lines = vec![item(["a", "1", "2", "d"])];
        assert!(match_spec(&spec, &mut lines, &mut vars).is_some());
        assert_eq!(vars.get("x").and_then(HwValue::as_str), Some("2"));
        assert!(lines.is_empty());

        let mut vars = Vars::new();
        let mut lines = vec![item(["a", "b", "c", "10"])];
        let spec = item(["a", "b", "c", "$x=y=z"]);
        assert!(match_spec(&spec, &mut lines.clone(), &mut vars).is_some());
        assert_eq!(vars.get("x=y=z").and_then(HwValue::as_str), Some("10"));
        for f in ["$x=10", "$x=foo", "$x=", "$x=()", "$x=gt(50)", "$x= gt(5)"] {
            let spec = item(["a", "b", "c", f]);
            assert!(
                match_spec(&spec, &mut lines, &mut Vars::new()).is_none(),
                "{f}"
            );
        }
        let mut vars = Vars::new();
        let spec = item(["a", "b", "c", "$$x=gt(5)"]);
        assert!(match_spec(&spec, &mut lines, &mut vars).is_some());
        assert_eq!(vars.get("$x").and_then(HwValue::as_str), Some("10"));
    }

    #[test]
    fn exact_line_first() {
        let spec = item(["disk", "$d", "size", "20"]);
        let mut lines = vec![
            item(["disk", "sda", "size", "20"]),
            item(["disk", "$d", "size", "20"]),
        ];
        let mut vars = Vars::new();
        assert_eq!(
            match_spec(&spec, &mut lines, &mut vars),
            Some(item(["disk", "$d", "size", "20"]))
        );
        assert!(vars.is_empty());
        assert_eq!(lines.len(), 1);
    }

    fn specs<T: for<'a> From<&'a str>>(list: &[[&str; 4]]) -> Vec<[T; 4]> {
        list.iter().map(|s| item(*s)).collect()
    }

    fn vars_of<const N: usize>(pairs: [(&str, &str); N]) -> Vars {
        pairs.map(|(k, v)| (k.to_string(), HwValue::from(v))).into()
    }

    #[test]
    fn backtracking_keeps_consistent_variables() {
        let lines = specs(&[
            ["disk", "sda", "size", "10"],
            ["disk", "sdb", "size", "30"],
            ["disk", "sdb", "vendor", "ATA"],
        ]);
        let s = specs(&[
            ["disk", "$d", "size", "gt(5)"],
            ["disk", "$d", "vendor", "ATA"],
        ]);
        let (mut vars, mut forced) = (Vars::new(), Vars::new());
        assert_eq!(match_all(&lines, &s, &mut vars, &mut forced), Ok(true));
        assert_eq!(vars.get("d").and_then(HwValue::as_str), Some("sdb"));
        assert!(forced.is_empty());
    }

    #[test]
    fn forced_variables_and_crashes() {
        let lines = specs(&[["a", "p", "-", "-"], ["b", "q", "-", "-"]]);
        let (mut vars, mut forced) = (Vars::new(), Vars::new());
        let s = specs(&[["a", "$$x", "-", "-"]]);
        assert_eq!(match_all(&lines, &s, &mut vars, &mut forced), Ok(true));
        assert_eq!(vars, vars_of([("x", "p")]));
        assert_eq!(forced, vars);
        for s in [
            specs(&[["a", "$$x", "-", "-"], ["b", "$x", "-", "-"]]),
            specs(&[["a", "$", "-", "-"]]),
        ] {
            let got = match_all(&lines, &s, &mut Vars::new(), &mut Vars::new());
            assert!(matches!(got, Err(SpecError::LegacyCrash { .. })), "{s:?}");
        }
        // `$$$x` is renamed twice when the loop meets `$x` again.
        let s = specs(&[["a", "$$$x", "-", "-"]]);
        let (mut vars, mut forced) = (Vars::new(), Vars::new());
        assert_eq!(match_all(&lines, &s, &mut vars, &mut forced), Ok(true));
        assert_eq!(vars, vars_of([("x", "p")]));
        assert_eq!(forced.len(), 2);
    }

    #[test]
    fn pruning_cuts_exponential_backtracking() {
        // Every variable spec leaves a retry point and the last spec never
        // matches: the legacy code explores these for hours.
        let mut lines = Vec::new();
        let mut s = Vec::new();
        for i in 0..12 {
            lines.push(item(["k", &format!("n{i}"), "v", "-"]));
            s.push(item(["k", &format!("n{i}"), &format!("$v{i}"), "-"]));
        }
        s.push(item(["none", "-", "-", "-"]));
        let (v, f) = (&mut Vars::new(), &mut Vars::new());
        let got = match_all_unpruned(&lines, &s, v, f, 100_000);
        assert_eq!(got, Err(SpecError::TooComplex { budget: 100_000 }));
        assert_eq!(match_all_with_budget(&lines, &s, v, f, 10_000), Ok(false));
    }

    #[test]
    fn budget_bounds_the_work() {
        let lines = specs(&[
            ["a", "1", "-", "-"],
            ["a", "2", "-", "-"],
            ["b", "2", "-", "-"],
        ]);
        let s = specs(&[["a", "$x", "-", "-"], ["b", "$x", "-", "-"]]);
        let (v, f) = (&mut Vars::new(), &mut Vars::new());
        let got = match_all_with_budget(&lines, &s, v, f, 10);
        assert_eq!(got, Err(SpecError::TooComplex { budget: 10 }));
        assert_eq!(match_all_with_budget(&lines, &s, v, f, 1_000), Ok(true));
    }

    mod pruning {
        use super::*;
        use proptest::prelude::*;

        /// Cases the unpruned reference cannot finish within this are
        /// left out (a debug build runs it slowly).
        const REFERENCE_BUDGET: u64 = 100_000;

        fn line() -> impl Strategy<Value = Item> {
            (0..3usize, 0..4usize, 0..2usize, 0..4usize).prop_map(|(a, b, c, d)| {
                let value = match d {
                    3 => HwValue::Int(2),
                    d => HwValue::from(["1", "2", "x"][d]),
                };
                [
                    HwValue::from(["disk", "net", "cpu"][a]),
                    HwValue::from(["sda", "sdb", "eth0", "eth1"][b]),
                    HwValue::from(["size", "id"][c]),
                    value,
                ]
            })
        }

        fn field() -> impl Strategy<Value = HwValue> {
            prop_oneof![
                3 => prop::sample::select(vec!["$a", "$b", "$c", "$$a", "$$d", "$e"]),
                2 => prop::sample::select(vec!["disk", "net", "sda", "size", "id", "1", "2"]),
                1 => prop::sample::select(vec!["gt(1)", "$b=lt(2)", "in(sda, eth0)"]),
            ]
            .prop_map(HwValue::from)
        }

        /// Disks described by two lines each (size, model), few distinct
        /// values: specs that tie a disk's size to its model through a
        /// shared variable make the greedy choice fail and backtracking
        /// find another disk, or no disk at all.
        fn disks() -> impl Strategy<Value = Vec<Item>> {
            prop::collection::vec((0..4usize, 0..3usize), 1..9).prop_map(|disks| {
                let mut lines = Vec::new();
                for (i, (size, model)) in disks.into_iter().enumerate() {
                    let size = match size {
                        3 => HwValue::Int(100),
                        s => HwValue::from(["100", "200", "300"][s]),
                    };
                    let name = HwValue::Str(format!("sd{i}"));
                    lines.push(["disk".into(), name.clone(), "size".into(), size]);
                    let model = HwValue::from(["A", "B", "C"][model]);
                    lines.push(["disk".into(), name, "model".into(), model]);
                }
                lines
            })
        }

        fn disk_spec() -> impl Strategy<Value = Spec> {
            let disk = prop::sample::select(vec!["$d0", "$d1", "$d2", "$$d0", "$$d1", "$d"]);
            let size = prop::sample::select(vec!["$s", "$t", "$$s", "100", "200", "gt(150)"]);
            let model = prop::sample::select(vec!["$m", "$n", "A", "B", "C", "$$m"]);
            (any::<bool>(), disk, size, model).prop_map(|(is_size, d, s, m)| {
                let (key, value) = if is_size { ("size", s) } else { ("model", m) };
                ["disk".into(), d.into(), key.into(), value.into()]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn pruned_search_gives_the_legacy_answer_on_disks(
                lines in disks(),
                specs in prop::collection::vec(disk_spec(), 1..8),
            ) {
                let (mut v, mut f) = (Vars::new(), Vars::new());
                let reference = match_all_unpruned(&lines, &specs, &mut v, &mut f, REFERENCE_BUDGET);
                prop_assume!(reference != Err(SpecError::TooComplex { budget: REFERENCE_BUDGET }));
                let (mut pv, mut pf) = (Vars::new(), Vars::new());
                let pruned = match_all(&lines, &specs, &mut pv, &mut pf);
                prop_assert_eq!(&pruned, &reference);
                if reference == Ok(true) {
                    prop_assert_eq!(pv, v);
                    prop_assert_eq!(pf, f);
                }
            }

            /// Pruning only cuts branches that fail: the answer, the
            /// variables (stale keys and skipped renames included) and the
            /// legacy crashes are those of the unpruned legacy search.
            #[test]
            fn pruned_search_gives_the_legacy_answer(
                lines in prop::collection::vec(line(), 0..14),
                specs in prop::collection::vec([field(), field(), field(), field()], 1..9),
            ) {
                let (mut v, mut f) = (Vars::new(), Vars::new());
                let reference = match_all_unpruned(&lines, &specs, &mut v, &mut f, REFERENCE_BUDGET);
                prop_assume!(reference != Err(SpecError::TooComplex { budget: REFERENCE_BUDGET }));
                let (mut pv, mut pf) = (Vars::new(), Vars::new());
                let pruned = match_all(&lines, &specs, &mut pv, &mut pf);
                prop_assert_eq!(&pruned, &reference);
                if reference == Ok(true) {
                    prop_assert_eq!(pv, v);
                    prop_assert_eq!(pf, f);
                }
            }
        }
    }

    #[test]
    fn specs_from_values() {
        let file = Path::new("/cfg/vm.specs");
        let tuple = |f: [&str; 4]| Value::Tuple(f.iter().map(|s| Value::str(s)).collect());
        let good = Value::List(vec![
            tuple(["disk", "$disk", "size", "gt(4)"]),
            Value::List(vec![
                Value::str("a"),
                Value::Unicode("b".into()),
                Value::str("c"),
                Value::str("d"),
            ]),
        ]);
        let got = specs_from_value(file, &good).unwrap();
        assert_eq!(got[1], item::<HwValue>(["a", "b", "c", "d"]));
        // A number is a field the line must equal.
        let numeric = Value::List(vec![Value::Tuple(vec![
            Value::str("cpu"),
            Value::str("physical"),
            Value::str("number"),
            Value::Int(2),
        ])]);
        let got = specs_from_value(file, &numeric).unwrap();
        assert!(matches!(got[0][3], HwValue::Int(2)));
        let bad = Value::List(vec![
            tuple(["a", "b", "c", "d"]),
            Value::Tuple(vec![
                Value::str("a"),
                Value::List(vec![]),
                Value::str("c"),
                Value::str("d"),
            ]),
        ]);
        let err = specs_from_value(file, &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/cfg/vm.specs: entry 1: a field is not a string or a number"
        );
        let short = Value::List(vec![Value::Tuple(vec![Value::str("a")])]);
        assert!(specs_from_value(file, &short)
            .unwrap_err()
            .to_string()
            .contains("entry 0: expected 4 fields, found 1"));
        assert!(specs_from_value(file, &Value::Int(1)).is_err());
        let non_utf8 = Value::List(vec![Value::Tuple(vec![Value::Str(vec![0xff]); 4])]);
        assert!(specs_from_value(file, &non_utf8).is_err());
    }

    #[test]
    fn python_hashes_and_dict_order() {
        use pydict::*;
        assert_eq!(str_hash(b""), 0);
        assert_eq!(str_hash(b"a"), 12416037344);
        assert_eq!(str_hash(b"eth"), -3051142320817332998);
        assert_eq!(str_hash(b"\xff\x00"), 32640195839293759);
        assert_eq!(unicode_hash("eth"), str_hash(b"eth"));
        assert_eq!(unicode_hash("\u{e9}t\u{20ac}"), -4116773383342150334);
        let keys = ["eth", "ip", "netmask", "x", "mac", "a"];
        let hashes: Vec<i64> = keys.iter().map(|k| str_hash(k.as_bytes())).collect();
        let order = |d: &PyDict| -> Vec<&str> {
            d.iter()
                .map(|(k, _)| keys[k.parse::<usize>().unwrap()])
                .collect()
        };
        let d = display(&hashes);
        assert_eq!(order(&d), ["a", "ip", "netmask", "mac", "x", "eth"]);
        assert_eq!(order(&d.copy()), ["a", "netmask", "x", "ip", "eth", "mac"]);
    }

    #[test]
    fn python_regexps() {
        let search = |p: &str, v: &str| regexp_search(p, v);
        assert_eq!(search("[[:digit:]]", "1"), Some(false));
        assert_eq!(search("[[:digit:]]", ":]"), Some(true));
        assert_eq!(search("a{", "a{"), Some(true));
        assert_eq!(search("a{,2}b", "aab"), Some(true));
        assert_eq!(search(r"\e", "e"), Some(true));
        assert_eq!(search(r"0\Z", "10"), Some(true));
        assert_eq!(search(r"a\Z", "a\n"), Some(false));
        assert_eq!(search("a$", "a\n"), Some(true));
        assert_eq!(search("a$", "a\nb"), Some(false));
        assert_eq!(search("a(?i)B", "Ab"), Some(true));
        assert_eq!(search(r"\061", "1"), Some(true));
        assert_eq!(search(r"[\b]", "\u{8}"), Some(true));
        assert_eq!(search(r"\B", ""), Some(false));
        assert_eq!(search("(?x)a b # c", "ab"), Some(true));
        assert_eq!(search("(?#c)1", "1"), Some(true));
        assert_eq!(search(r"\w", "\u{e9}"), Some(false));
        // Backreferences, lookaround, invalid patterns: never match.
        for p in [
            r"(1)\1",
            "1(?=0)",
            "(?<=1)0",
            "[",
            "[z-a]",
            "a**",
            "{1}",
            r"\x4",
            "(?P<g>a)(?P<g>b)",
        ] {
            assert_eq!(search(p, "10"), None, "{p}");
        }
        assert_eq!(search(&"(".repeat(200), "x"), None);
        assert_eq!(search("a{99999}{99999}", "a"), None);
    }

    #[test]
    fn static_checks() {
        for ok in [
            "sda",
            "$disk",
            "$$mac",
            "gt(4)",
            "$size=ge(20)",
            "not(regexp(^28:d2:))",
            "in(a, b, c)",
            "network(10.0.0.0/24)",
            "and(gt(1), lt(5))",
            "gt()",
        ] {
            assert_eq!(check_field(&HwValue::from(ok)), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("foo(1)", "unknown function"),
            ("$x=10", "function call is expected"),
            ("$", "empty name"),
            ("gt(abc)", "not a number"),
            ("gt(1, 2)", "takes 1 argument"),
            ("and(gt(1))", "takes 2 argument"),
            ("network(10.0.0.0/33)", "not an IPv4 network"),
            ("regexp((a)\\1)", "not a regular expression we support"),
            ("not(regexp([))", "not a regular expression we support"),
            ("range(1, 5)", "unknown to the legacy server"),
        ] {
            let err = check_field(&HwValue::from(bad)).unwrap_err();
            assert!(err.0.contains(why), "{bad}: {err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_fields_never_panic(
            field in r#"[$a-z(),'" =\\{}\[\]^.*+?|0-9-]{0,24}"#,
            value in "[ -~]{0,12}",
        ) {
            let spec = item(["a", "$y", "c", &field]);
            let mut lines = vec![item(["a", "b", "c", &value])];
            let _ = match_spec(&spec, &mut lines, &mut Vars::new());
            let _ = check_field(&HwValue::Str(field.clone()));
            let _ = pyre::compile(&field);
        }

        #[test]
        fn arbitrary_patterns_never_panic(pattern in proptest::collection::vec(proptest::num::u8::ANY, 0..32)) {
            let _ = pyre::compile(&String::from_utf8_lossy(&pattern));
        }
    }
}

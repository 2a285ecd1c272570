//! Legacy spec matching: which hardware lines a profile's `.specs` accepts,
//! and which variables it binds.
//!
//! The variables end up in the configure script and in the CMDB, and a
//! machine that re-installs finds its CMDB entry again only if it gets the
//! same variables, so every observable detail of the legacy matcher is kept:
//! the backtracking order of `match_all`, the argument parsing of the
//! functions, and even the iteration order of the CPython 2.7 dict that holds
//! the variables (see [`crate::pydict`]): it decides which `$$x` variables
//! the legacy code forgets to rename.
//!
//! - [`syntax`]: what a spec field is (text, `$var`, `$var=call`, a call),
//!   how calls are parsed, and the static checks of `edeploy check`;
//! - [`functions`]: the functions (`gt`, `network`, `regexp`...) on a value;
//! - [`pyre`]: Python 2.7 regular expressions for `regexp()`;
//! - [`search`]: how a spec picks its line, and the legacy backtracking
//!   over all the specs, pruned without changing its answer.

mod functions;
mod pyre;
mod search;
mod syntax;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::hw::{HwValue, Item};
use crate::literal::{self, Dict, Document, ParseError, Value};

pub use syntax::{check_field, FieldProblem};

/// One line of a `.specs` file: four fields matched against a hardware line.
/// A field is text (plain, `$var` or a function call), or a number (or
/// boolean, None) that the line's field must equal, as Python compares.
pub type Spec = [HwValue; 4];

/// Variables bound by matching (name without the leading `$`): the line
/// values they took, numbers included.
pub type Vars = BTreeMap<String, HwValue>;

/// Work allowed to one request's matching (all the profiles it tries): a
/// step costs a unit per line it looks at, times one more per 256 bytes of
/// the machine's longest value, which bounds what comparing them costs.
/// Real profiles use a few thousand units; searches that stay exponential
/// despite the pruning stop here, after about 0.3 s of CPU on a 2-core VM.
pub const MATCH_BUDGET: u64 = 20_000_000;

/// The matching work left to a request, shared by the profiles it tries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    total: u64,
    left: u64,
}

impl Budget {
    pub fn new(total: u64) -> Budget {
        Budget { total, left: total }
    }

    /// [`MATCH_BUDGET`].
    pub fn request() -> Budget {
        Budget::new(MATCH_BUDGET)
    }

    /// The work left: a match that ran with the whole budget and spent
    /// `total - left` ends the same way with any budget at least that large
    /// (and with [`SpecError::TooComplex`] with a smaller one).
    pub fn left(&self) -> u64 {
        self.left
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

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
    let (pos, binds) = search::find_line(spec, lines, |l| l, |k| vars.get(k))?;
    let binds: Vec<(String, HwValue)> = binds
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    vars.extend(binds);
    Some(lines.remove(pos))
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
    match_all_within(lines, specs, vars, forced, &mut Budget::request())
}

/// [`match_all`] with an explicit work budget.
pub fn match_all_with_budget(
    lines: &[Item],
    specs: &[Spec],
    vars: &mut Vars,
    forced: &mut Vars,
    budget: u64,
) -> Result<bool, SpecError> {
    match_all_within(lines, specs, vars, forced, &mut Budget::new(budget))
}

/// [`match_all`] drawing on `budget`, what is left to the whole request.
pub fn match_all_within(
    lines: &[Item],
    specs: &[Spec],
    vars: &mut Vars,
    forced: &mut Vars,
    budget: &mut Budget,
) -> Result<bool, SpecError> {
    search::run(lines, specs, vars, forced, budget, true, search::MAX_LEVEL)
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
    search::run(
        lines,
        specs,
        vars,
        forced,
        &mut Budget::new(budget),
        false,
        search::MAX_LEVEL,
    )
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

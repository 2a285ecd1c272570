//! The functions a spec field may call (`gt`, `in`, `network`, `regexp`,
//! `not`...), evaluated on a hardware value as the legacy library does:
//! Python's `float()`, `ipaddr` networks, `re.search`. Where the legacy
//! code raises (an unreadable value, a value that is not a string) the
//! field does not match.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::rc::Rc;

use super::pyre;
use super::syntax::{strip_quotes, Call, Expr};
use crate::hw::HwValue;

/// Is `call` true of a line value? Never of a value that is not a string,
/// nor where it cannot be computed (the legacy code raises there; the
/// line just does not match).
pub(super) fn call_holds(call: &Call, value: &HwValue) -> bool {
    value
        .as_str()
        .is_some_and(|v| call.eval(v).is_ok_and(|a| a.truthy()))
}

/// A function argument once evaluated: text, or the result of a nested call.
#[derive(Debug, PartialEq)]
pub(super) enum Arg<'a> {
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
pub(super) struct CallFailed;

impl Call {
    /// Calls the function with the (quote-stripped) line value as implicit
    /// first argument, after evaluating nested calls with the same value.
    pub(super) fn eval(&self, value: &str) -> Result<Arg<'_>, CallFailed> {
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
pub(super) fn is_py_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Python 2's `float(s)` on a byte string: surrounding whitespace allowed,
/// decimal or exponent notation, `inf`/`infinity`/`nan` in any case.
pub(super) fn py_float(s: &str) -> Option<f64> {
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
pub(super) fn parse_network(cidr: &str) -> Option<(u32, u32)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! Differential tests of spec matching against the legacy Python 2.7 library
//! (`hardware.matcher`): thousands of seeded random cases, run in one batched
//! python2.7 process per test.
//!
//! The oracle must be installed (`PYENV_VERSION=2.7.18 python2.7` with
//! `hardware`); without it these tests fail unless `EDEPLOY_SKIP_ORACLE=1`.
//! Cases where the legacy code raises inside a function (`gt(abc)`, bad
//! arity...) are skipped: there we deliberately do not match instead.

mod common;
use common::rng::Rng;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use edeploy::hw::{field_from_json, sysname_and_macs, HwValue, Item};
use edeploy::spec::{match_all, match_all_unpruned, match_spec, Spec, SpecError, Vars};
use serde_json::{json, Value as Json};

fn oracle(script: &str, cases: &Json) -> Option<Vec<Json>> {
    common::oracle::run(script, "hardware.matcher, hardware.generate", cases)
}

const DISKS: [&str; 4] = ["sda", "sdb", "sdc", "vda"];
const SIZES: [&str; 7] = ["8", "20", "100", "500", "1e3", " 50", "abc"];
const VENDORS: [&str; 4] = ["ATA", "QEMU", "Dell", "'HP'"];
const NICS: [&str; 4] = ["eth0", "eth1", "eth2", "em1"];
const MACS: [&str; 5] = [
    "52:54:00:12:34:56",
    "52:54:00:12:34:57",
    "28:d2:44:00:00:01",
    "00:25:90:aa:bb:cc",
    "52:54:00:12:34:56",
];
const IPS: [&str; 6] = [
    "10.0.0.5",
    "192.168.122.10",
    "10.1.2.3",
    "172.16.0.1",
    "10.0.0.300",
    "",
];
const NUMBERS: [&str; 8] = ["4", "8", "10", "20", "50", "99.5", "'16'", " 30 "];
const NETWORKS: [&str; 7] = [
    "10.0.0.0/8",
    "10.0.0.0/24",
    "192.168.122.0/24",
    "10.1.2.3/16",
    "0.0.0.0/0",
    "172.16.0.0/255.255.0.0",
    "10.0.0.5",
];
const REGEXPS: [&str; 22] = [
    "^sd",
    "a$",
    "[0-9]+",
    "(?i)SD",
    "^(sda|vda)$",
    "[[:digit:]]",
    "x{",
    "\\d\\d",
    "^28:d2:",
    "5[46]",
    "^$",
    "eth[0-1]",
    "^\\w+\\Z",
    "[^a-z]",
    "Q.*U",
    "(?x) e t h",
    "\\bem",
    "1{2}",
    "[a-]",
    "'^10'",
    "(eth|em)\\d",
    "A(?i)t",
];
const VARS: [&str; 6] = ["d", "d2", "e", "m", "s", "x"];

fn random_line(r: &mut Rng) -> Item {
    let line: [&str; 4] = match r.below(8) {
        0 | 1 => ["disk", r.pick(&DISKS), "size", r.pick(&SIZES)],
        2 => ["disk", r.pick(&DISKS), "vendor", r.pick(&VENDORS)],
        3 => ["network", r.pick(&NICS), "serial", r.pick(&MACS)],
        4 => ["network", r.pick(&NICS), "ipv4", r.pick(&IPS)],
        5 => ["network", r.pick(&NICS), "link", r.pick(&["yes", "no"])],
        6 => ["cpu", "physical_0", "cores", r.pick(&NUMBERS)],
        _ => [
            "system",
            "product",
            "name",
            r.pick(&["vm", "PowerEdge R630", "x(1)"]),
        ],
    };
    let mut item = line.map(HwValue::from);
    if r.chance(10) {
        item[3] = random_number(r);
    }
    item
}

/// A value real detection sends as a JSON number (or boolean, null).
fn random_number(r: &mut Rng) -> HwValue {
    match r.below(9) {
        0 => HwValue::Int(2),
        1 => HwValue::Int(8),
        2 => HwValue::Int(20),
        3 => HwValue::Float(2.5),
        4 => HwValue::Float(8.0),
        5 => HwValue::Bool(true),
        6 => HwValue::Bool(false),
        7 => HwValue::None,
        _ => HwValue::Long(1 << 70),
    }
}

/// What a field holds, so that functions mostly get values they can read
/// (the legacy code raises on `gt(4)` against `sda`; those cases are skipped).
#[derive(Clone, Copy)]
enum Kind {
    Number,
    Address,
    Text,
}

/// A function call, possibly nested, mostly suited to `kind`.
fn random_function(r: &mut Rng, kind: Kind, depth: usize) -> String {
    let sp = |r: &mut Rng| if r.chance(20) { " " } else { "" };
    let leaf = match (kind, r.below(10)) {
        (_, 9) => r.below(4),
        (Kind::Number, _) => 0,
        (Kind::Address, n) => [1, 2, 3][n % 3],
        (Kind::Text, n) => [1, 3][n % 2],
    };
    let choice = if depth >= 2 || r.chance(60) {
        leaf
    } else {
        4 + r.below(4)
    };
    match choice {
        0 => format!(
            "{}({}{})",
            r.pick(&["gt", "ge", "lt", "le"]),
            sp(r),
            r.pick(&NUMBERS)
        ),
        1 => {
            let n = 1 + r.below(3);
            let mut pool: Vec<&str> = DISKS.to_vec();
            pool.extend(NICS);
            pool.extend(["yes", "'no'", "ATA", "10.0.0.5"]);
            let items: Vec<&str> = (0..n).map(|_| r.pick(&pool)).collect();
            format!("in({})", items.join(if r.chance(50) { ", " } else { "," }))
        }
        2 => format!("network({})", r.pick(&NETWORKS)),
        3 => format!("regexp({})", r.pick(&REGEXPS)),
        4 => format!("not({})", random_function(r, kind, depth + 1)),
        5 | 6 => {
            let a = random_function(r, kind, depth + 1);
            let b = if r.chance(80) {
                random_function(r, kind, depth + 1)
            } else {
                r.pick(&["x", "''", "foo(1)"]).to_string()
            };
            format!("{}({a},{}{b})", r.pick(&["and", "or"]), sp(r))
        }
        _ => r.pick(&["foo(1)", "gt()", "(a)", ")", "GT(5)"]).to_string(),
    }
}

fn kind_of(value: &str) -> Kind {
    if value.parse::<Ipv4Addr>().is_ok() {
        Kind::Address
    } else if value.trim().trim_matches('\'').parse::<f64>().is_ok() {
        Kind::Number
    } else {
        Kind::Text
    }
}

fn random_var(r: &mut Rng, kind: Kind) -> String {
    let name = r.pick(&VARS);
    match r.below(10) {
        0..=5 => format!("${name}"),
        6 | 7 => format!("$${name}"),
        8 => format!("${name}={}", random_function(r, kind, 1)),
        _ => format!("$${name}={}", random_function(r, kind, 1)),
    }
}

/// A spec shaped after `line`, each field kept, made a variable or a
/// function, or replaced by another value. A number of the line is kept as
/// a number (which the legacy code only ever compares) or as its text.
fn random_spec(r: &mut Rng, line: &Item) -> Spec {
    let mut spec = line.clone();
    for (i, field) in spec.iter_mut().enumerate() {
        let vary = if i == 0 || i == 2 { 5 } else { 60 };
        if !r.chance(vary) {
            if field.as_str().is_none() && r.chance(50) {
                *field = field.text().into();
            }
            continue;
        }
        let kind = kind_of(&field.text());
        *field = match r.below(10) {
            0..=4 => random_var(r, kind).into(),
            5..=8 => random_function(r, kind, 0).into(),
            _ => random_line(r)[i].clone(),
        };
    }
    spec
}

/// A value for the variables of the `$$` cases: text, sometimes a number.
fn val(r: &mut Rng) -> HwValue {
    match r.below(10) {
        0 => random_number(r),
        n => format!("val{}", n % 3).into(),
    }
}

/// Variables as their Python reprs: `2`, `2.0`, `True` and `'2'` differ.
fn vars_repr(v: &Vars) -> BTreeMap<String, String> {
    v.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
}

fn oracle_vars(j: &Json) -> BTreeMap<String, String> {
    let object = j.as_object().expect("a dict");
    object
        .iter()
        .map(|(k, v)| (k.clone(), field_from_json(v).unwrap().to_string()))
        .collect()
}

fn lines_repr(lines: &[Item]) -> Vec<Vec<String>> {
    lines
        .iter()
        .map(|l| l.iter().map(HwValue::to_string).collect())
        .collect()
}

fn oracle_lines(j: &Json) -> Vec<Vec<String>> {
    let lines = j.as_array().expect("a list");
    lines
        .iter()
        .map(|l| {
            let fields = l.as_array().expect("a line");
            fields
                .iter()
                .map(|f| field_from_json(f).unwrap().to_string())
                .collect()
        })
        .collect()
}

/// Work units (see `MATCH_BUDGET`) beyond which a case is not sent to the
/// oracle: the legacy backtracking is exponential, and our implementation
/// does the same steps, so its budget tells which cases Python would take
/// ages on.
const TRACTABLE: u64 = 1_000;

fn push_tractable(
    cases: &mut Vec<Json>,
    inputs: &mut Vec<(Vec<Item>, Vec<Spec>)>,
    lines: Vec<Item>,
    specs: Vec<Spec>,
) {
    let (mut v, mut f) = (Vars::new(), Vars::new());
    if match_all_unpruned(&lines, &specs, &mut v, &mut f, TRACTABLE)
        == Err(SpecError::TooComplex { budget: TRACTABLE })
    {
        return;
    }
    cases.push(json!({"kind": "all", "lines": lines, "specs": specs}));
    inputs.push((lines, specs));
}

#[test]
fn match_all_agrees_with_oracle() {
    let mut r = Rng(0x5eed_0001);
    let mut cases = Vec::new();
    let mut inputs = Vec::new();
    for _ in 0..2400 {
        let lines: Vec<Item> = (0..3 + r.below(10)).map(|_| random_line(&mut r)).collect();
        let n = 1 + r.below(6);
        let specs: Vec<Spec> = (0..n)
            .map(|_| {
                let base = if r.chance(85) {
                    r.pick(&lines)
                } else {
                    random_line(&mut r)
                };
                random_spec(&mut r, &base)
            })
            .collect();
        push_tractable(&mut cases, &mut inputs, lines, specs);
    }
    // Many `$$` variables bound at once: the legacy rename loop skips some.
    for _ in 0..700 {
        let k = 1 + r.below(10);
        let mut lines: Vec<Item> = Vec::new();
        let mut specs = Vec::new();
        for j in 0..k {
            let name = format!("{}{}", r.pick(&["v", "disk", "mac", "ip", "eth"]), j);
            let var = if r.chance(60) {
                format!("$${name}")
            } else {
                format!("${name}")
            };
            lines.push(["k".into(), name.clone().into(), val(&mut r), "-".into()]);
            specs.push(["k".into(), name.into(), var.into(), "-".into()]);
        }
        if r.chance(30) {
            // A failing spec forcing backtracking through every point.
            specs.push(["k".into(), "$v0".into(), "none".into(), "-".into()]);
        }
        push_tractable(&mut cases, &mut inputs, lines, specs);
    }
    // Backtracking after many variables are bound: the retried branch works
    // on a copy of the variables, whose table layout decides the renames.
    for _ in 0..700 {
        let k = r.below(12);
        let mut lines = Vec::new();
        let mut specs = Vec::new();
        let var = |r: &mut Rng, name: &str| {
            if r.chance(50) {
                format!("$${name}")
            } else {
                format!("${name}")
            }
        };
        for j in 0..k {
            let name = format!("{}{}", r.pick(&["v", "disk", "mac", "ip", "eth", "x"]), j);
            lines.push(["k".into(), name.clone().into(), val(&mut r), "-".into()]);
            specs.push([
                "k".into(),
                name.clone().into(),
                var(&mut r, &name).into(),
                "-".into(),
            ]);
        }
        let w = var(&mut r, "w");
        let at = specs.len().saturating_sub(r.below(3));
        specs.insert(at, ["z".into(), w.clone().into(), "-".into(), "-".into()]);
        specs.push(["q".into(), w.into(), "-".into(), "-".into()]);
        lines.push(["z".into(), "a".into(), "-".into(), "-".into()]);
        lines.push(["z".into(), "b".into(), "-".into(), "-".into()]);
        lines.push(["q".into(), "b".into(), "-".into(), "-".into()]);
        push_tractable(&mut cases, &mut inputs, lines, specs);
    }
    eprintln!("{} tractable cases", cases.len());
    let Some(results) = oracle("spec_oracle.py", &Json::Array(cases)) else {
        return;
    };
    let (mut compared, mut matched, mut skipped, mut crashes) = (0, 0, 0, 0);
    for ((lines, specs), expected) in inputs.iter().zip(&results) {
        let mut vars = Vars::new();
        let mut forced = Vars::new();
        let got = match_all(lines, specs, &mut vars, &mut forced);
        let context = || format!("lines {lines:?}\nspecs {specs:?}\noracle {expected}");
        if let Some(kind) = expected.get("raise") {
            if expected["where"] == "match_all" {
                crashes += 1;
                assert!(
                    matches!(got, Err(SpecError::LegacyCrash { .. })),
                    "oracle crashed ({kind}), we gave {got:?}\n{}",
                    context()
                );
            } else {
                skipped += 1;
            }
            continue;
        }
        compared += 1;
        let ok = got.unwrap_or_else(|e| panic!("{e}\n{}", context()));
        assert_eq!(json!(ok), expected["ok"], "{}", context());
        matched += usize::from(ok);
        assert_eq!(
            vars_repr(&vars),
            oracle_vars(&expected["vars"]),
            "vars\n{}",
            context()
        );
        assert_eq!(
            vars_repr(&forced),
            oracle_vars(&expected["forced"]),
            "forced\n{}",
            context()
        );
    }
    eprintln!(
        "{compared} compared ({matched} matched), {crashes} legacy crashes, {skipped} skipped"
    );
    assert!(compared > 2500 && matched > 1000 && crashes > 5 && skipped < 600);
}

#[test]
fn match_spec_functions_agree_with_oracle() {
    let mut r = Rng(0x5eed_0002);
    let values = [
        "10",
        " 12 ",
        "abc",
        "1e3",
        "inf",
        "nan",
        "-5",
        "'20'",
        "\"7\"",
        "0x10",
        "",
        "10.0.0.5",
        "10.1.2.3",
        "192.168.122.10",
        "010.0.0.1",
        "sda",
        "eth1",
        "em1",
        "28:d2:44:00:00:01",
        "yes",
        "'no'",
        "At",
        "x(1)",
        "5\n",
        "a\n",
    ];
    let mut cases = Vec::new();
    let mut inputs = Vec::new();
    for _ in 0..5000 {
        let kind = [Kind::Number, Kind::Address, Kind::Text][r.below(3)];
        let field = match r.below(10) {
            0..=6 => random_function(&mut r, kind, 0),
            7 | 8 => random_var(&mut r, kind),
            _ => r.pick(&values).to_string(),
        };
        let lines: Vec<Item> = (0..1 + r.below(3))
            .map(|_| {
                let value = if r.chance(15) {
                    random_number(&mut r)
                } else {
                    r.pick(&values).into()
                };
                ["a".into(), r.pick(&["b", "c"]).into(), "c".into(), value]
            })
            .collect();
        let spec: Spec = [
            "a".into(),
            if r.chance(30) {
                "$y".into()
            } else {
                "b".into()
            },
            "c".into(),
            field.into(),
        ];
        let mut vars = Vars::new();
        if r.chance(30) {
            vars.insert("y".into(), "c".into());
        }
        if r.chance(20) {
            let value = if r.chance(20) {
                random_number(&mut r)
            } else {
                r.pick(&values).into()
            };
            vars.insert(r.pick(&VARS).into(), value);
        }
        cases.push(json!({"kind": "spec", "spec": spec, "lines": lines, "vars": vars}));
        inputs.push((spec, lines, vars));
    }
    let Some(results) = oracle("spec_oracle.py", &Json::Array(cases)) else {
        return;
    };
    let (mut compared, mut matched, mut skipped) = (0, 0, 0);
    for ((spec, lines, vars), expected) in inputs.iter().zip(&results) {
        if expected.get("raise").is_some() {
            skipped += 1;
            continue;
        }
        compared += 1;
        let mut lines = lines.clone();
        let mut vars = vars.clone();
        let before = (lines.clone(), vars.clone());
        let line = match_spec(spec, &mut lines, &mut vars);
        let context = format!("spec {spec:?}\ninput {before:?}\noracle {expected}");
        let want = &expected["line"];
        let want_line = (!want.is_null()).then(|| oracle_lines(&json!([want])));
        assert_eq!(line.map(|l| lines_repr(&[l])), want_line, "{context}");
        matched += usize::from(want_line.is_some());
        assert_eq!(
            lines_repr(&lines),
            oracle_lines(&expected["lines"]),
            "{context}"
        );
        assert_eq!(
            vars_repr(&vars),
            oracle_vars(&expected["vars"]),
            "{context}"
        );
    }
    eprintln!("{compared} compared ({matched} matched), {skipped} skipped");
    assert!(compared > 3000 && matched > 800);
}

#[test]
fn sysname_agrees_with_oracle() {
    let mut r = Rng(0x5eed_0003);
    let texts = [
        "Dell Inc.",
        "PowerEdge R630",
        "edeploy_test_vm ()",
        "AB-12 3",
        "",
        "--",
        "x_y",
        "52:54:00:12:34:56",
        "a:b",
        "(1)",
        "$v",
    ];
    let mut cases = Vec::new();
    let mut inputs = Vec::new();
    for _ in 0..2000 {
        let items: Vec<Item> = (0..r.below(8))
            .map(|_| {
                let line: [&str; 4] = match r.below(6) {
                    0 => ["system", "product", "vendor", r.pick(&texts)],
                    1 => ["system", "product", "name", r.pick(&texts)],
                    2 => ["system", "product", "serial", r.pick(&texts)],
                    3 | 4 => ["network", r.pick(&NICS), "serial", r.pick(&texts)],
                    _ => [
                        r.pick(&["network", "system", "disk"]),
                        r.pick(&["eth0", "product", "sda"]),
                        r.pick(&["ipv4", "serial", "name"]),
                        r.pick(&texts),
                    ],
                };
                line.map(HwValue::from)
            })
            .collect();
        cases.push(json!({"kind": "sysname", "items": items}));
        inputs.push(items);
    }
    let Some(results) = oracle("spec_oracle.py", &Json::Array(cases)) else {
        return;
    };
    for (items, expected) in inputs.iter().zip(&results) {
        let result = &expected["result"];
        assert!(result.is_object(), "oracle raised on {items:?}: {expected}");
        let (sysname, macs) = sysname_and_macs(items);
        assert_eq!(json!(sysname), result["sysname"], "{items:?}");
        let want: Vec<String> = result
            .get("serial")
            .map(|s| serde_json::from_value(s.clone()).unwrap())
            .unwrap_or_default();
        assert_eq!(macs, want, "{items:?}");
    }
}

#[test]
fn legacy_quirks_are_kept() {
    // Backtracking merges the successful branch into the failed one: the
    // stale `$x` of the failed branch stays.
    let lines: Vec<Item> = [
        ["a", "p", "-", "-"],
        ["a", "q", "-", "-"],
        ["b", "q", "-", "-"],
    ]
    .iter()
    .map(|l| l.map(HwValue::from))
    .collect();
    let specs: Vec<Spec> = [["a", "$$x", "-", "-"], ["b", "$$x", "-", "-"]]
        .iter()
        .map(|l| l.map(HwValue::from))
        .collect();
    let mut vars = Vars::new();
    let mut forced = Vars::new();
    assert_eq!(match_all(&lines, &specs, &mut vars, &mut forced), Ok(true));
    let expect: Vars = [("$x".into(), "p".into()), ("x".into(), "q".into())].into();
    assert_eq!(vars, expect);
    assert_eq!(forced, [("x".to_string(), "q".into())].into());
}

/// A Python regular expression without commas (a comma splits the legacy
/// function arguments, so no working spec has one), quotes or leading
/// blanks (stripped by the legacy argument parsing).
fn random_pattern(r: &mut Rng, depth: usize) -> String {
    let mut p = String::new();
    for _ in 0..1 + r.below(4) {
        let atom = match r.below(if depth > 1 { 9 } else { 12 }) {
            0..=2 => r
                .pick(&["a", "b", "A", "0", "1", "_", "-", ".", ":", "/", " ", "x"])
                .to_string(),
            3 => r
                .pick(&[
                    r"\d", r"\w", r"\s", r"\D", r"\W", r"\S", r"\b", r"\B", r"\A", r"\Z", r"\.",
                    r"\\", r"\n", r"\t", r"\x41", r"\101", r"\0", r"\e", r"\-", r"\ ", r"\_",
                ])
                .to_string(),
            4 => r
                .pick(&[
                    "[abc]",
                    "[^a-z]",
                    "[a-]",
                    "[]a]",
                    r"[\d_]",
                    r"[\w.-]",
                    "[[:digit:]]",
                    "[^]]",
                    r"[\]]",
                    "[A-Za-z]",
                    r"[\s\S]",
                    "[-a]",
                    r"[\b]",
                    "[.]",
                    "[&&]",
                    "[a-c--b]",
                    "[~~]",
                ])
                .to_string(),
            5 => r.pick(&["^", "$", "."]).to_string(),
            6 => r
                .pick(&["a{", "{x}", "a{2", "a{}", "{1}", "b{0}", "{"])
                .to_string(),
            7 => r
                .pick(&["(?i)", "(?m)", "(?s)", "(?x)", "(?#c)", "(?u)", "(?L)"])
                .to_string(),
            8 if r.chance(10) => r.pick(&["*", "+", "?", "{2}", "*?", "??"]).to_string(),
            8 => r.pick(&["c", "B", "9"]).to_string(),
            9 => format!("({})", random_pattern(r, depth + 1)),
            10 => format!(
                "(?:{}|{})",
                random_pattern(r, depth + 1),
                random_pattern(r, depth + 1)
            ),
            _ => format!(
                "(?P<{}>{})",
                r.pick(&["g", "h", "i", "j", "k"]),
                random_pattern(r, depth + 1)
            ),
        };
        p.push_str(&atom);
        let repeatable = !matches!(atom.as_str(), "^" | "$" | r"\b" | r"\B" | r"\A" | r"\Z")
            && !atom.starts_with("(?")
            && !atom.ends_with(['*', '+', '?', '}']);
        if repeatable && r.chance(30) {
            p.push_str(r.pick(&["*", "+", "?", "{2}", "{0}", "*?", "+?", "{3}"]));
        }
    }
    if r.chance(10) {
        p = format!("{p}|{}", random_pattern(r, depth + 1));
    }
    p
}

#[test]
fn regexp_agrees_with_python() {
    let mut r = Rng(0x5eed_0005);
    let mut cases = Vec::new();
    let mut inputs = Vec::new();
    while inputs.len() < 2500 {
        let pattern = random_pattern(&mut r, 0);
        if pattern.starts_with([' ', '\t']) {
            continue;
        }
        let value: String = (0..r.below(8))
            .map(|_| {
                r.pick(&[
                    'a', 'b', 'c', 'A', 'B', '0', '1', '9', '_', '-', '.', ':', ' ', '\n', '/', 'x',
                ])
            })
            .collect();
        let spec: Spec = [
            "a".into(),
            "b".into(),
            "c".into(),
            format!("regexp({pattern})").into(),
        ];
        let lines: Vec<Item> = vec![["a".into(), "b".into(), "c".into(), value.clone().into()]];
        cases.push(json!({"kind": "spec", "spec": spec, "lines": lines, "vars": {}}));
        inputs.push((spec, lines, pattern, value));
    }
    let Some(results) = oracle("spec_oracle.py", &Json::Array(cases)) else {
        return;
    };
    let (mut compared, mut matched, mut raised, mut accepted) = (0, 0, 0, 0);
    for ((spec, lines, pattern, value), expected) in inputs.iter().zip(&results) {
        if expected.get("raise").is_some() {
            raised += 1;
            if match_spec(spec, &mut lines.clone(), &mut Vars::new()).is_some() {
                accepted += 1;
                eprintln!("invalid for Python, we match: {pattern:?} {value:?}");
            }
            continue;
        }
        compared += 1;
        let want = !expected["line"].is_null();
        let got = match_spec(spec, &mut lines.clone(), &mut Vars::new()).is_some();
        assert_eq!(got, want, "re.search({pattern:?}, {value:?})");
        matched += usize::from(got);
    }
    eprintln!(
        "{compared} compared ({matched} matched), {raised} invalid for Python \
         ({accepted} of which we match)"
    );
    assert!(compared > 2000 && matched > 400);
}

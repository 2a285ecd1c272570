//! Differential tests of `literal`'s printer against Python 2.7 itself, and
//! round-trip properties of the printer and the parser.
//!
//! The oracle is `tests/oracle/pprint_oracle.py`, run once for all cases by
//! `PYENV_VERSION=2.7.18 python2.7`. Without Python 2.7 the oracle tests fail
//! unless `EDEPLOY_SKIP_ORACLE=1` is set.

mod common;
use common::rng::Rng;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use edeploy::literal::{
    format_at, parse, parse_list_streaming, pformat, repr, Dict, Document, ParseError, Streamed,
    Value,
};
use proptest::prelude::*;

/// Which dict keys may be mixed: Python 2 cannot order a non-ASCII str
/// against unicode (it raises), and str < tuple < unicode < str is not an
/// order at all (the result depends on hash order).
#[derive(Clone, Copy, PartialEq)]
enum Keys {
    Bytes,
    Text,
    Mixed,
}

fn gen_len(r: &mut Rng) -> usize {
    match r.below(10) {
        0..=6 => r.below(12),
        7 | 8 => 30 + r.below(60),
        _ => 80 + r.below(70),
    }
}

fn gen_bytes(r: &mut Rng, ascii_only: bool) -> Vec<u8> {
    const SPECIAL: &[u8] = b"'\"\\\t\n\r\x00\x07\x1f\x7f ";
    let n = gen_len(r);
    (0..n)
        .map(|_| match r.below(20) {
            0..=11 => r.pick(b"abcdefghijklmnopqrstuvwxyz0123456789-_:./"),
            12..=15 => r.pick(SPECIAL),
            16 | 17 if !ascii_only => 0x80 + r.below(128) as u8,
            _ => 0x20 + r.below(95) as u8,
        })
        .collect()
}

fn gen_text(r: &mut Rng) -> String {
    let n = gen_len(r);
    (0..n)
        .map(|_| match r.below(20) {
            0..=9 => r.pick(b"abcdefghijklmnopqrstuvwxyz0123456789 ") as char,
            10..=12 => r.pick(b"'\"\\\t\n\r\x00\x7f") as char,
            13 | 14 => char::from_u32(0x80 + r.below(0x80) as u32).unwrap_or('x'),
            15 | 16 => char::from_u32(0x100 + r.below(0xd700) as u32).unwrap_or('x'),
            17 => char::from_u32(0xe000 + r.below(0x2000) as u32).unwrap_or('x'),
            _ => char::from_u32(0x10000 + r.below(0x100000) as u32).unwrap_or('x'),
        })
        .collect()
}

fn gen_float(r: &mut Rng, allow_nan: bool) -> f64 {
    const SPECIAL: &[f64] = &[
        0.0,
        -0.0,
        1.0,
        -1.5,
        0.1,
        1e16,
        1e15,
        9999999999999998.0,
        1e-4,
        1e-5,
        0.00012345,
        123456789012345678.0,
        5e-324,
        1.7976931348623157e308,
        2.2250738585072014e-308,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    match r.below(6) {
        0 => r.pick(SPECIAL),
        1 if allow_nan => f64::NAN,
        2 => (r.below(2_000_001) as f64 - 1e6) / 1000.0,
        3 => (r.below(1000) as f64) * 10f64.powi(r.below(60) as i32 - 30),
        _ => loop {
            let f = f64::from_bits(r.next());
            if !f.is_nan() || allow_nan {
                break f;
            }
        },
    }
}

fn gen_int(r: &mut Rng) -> Value {
    match r.below(5) {
        0 => Value::Int(r.below(100) as i64 - 50),
        1 => Value::Int(r.pick(&[i64::MIN, i64::MAX, 0, -1])),
        2 => Value::Int(r.next() as i64),
        3 => Value::Long(r.below(100) as i128 - 50),
        _ => Value::Long(((r.next() as i128) << 64 | r.next() as i128) >> r.below(100)),
    }
}

fn gen_scalar(r: &mut Rng, keys: Keys, nan: bool) -> Value {
    match r.below(12) {
        0 => Value::None,
        1 => Value::Bool(r.chance(50)),
        2 | 3 => gen_int(r),
        4 => Value::Float(gen_float(r, nan)),
        5..=7 if keys != Keys::Text => Value::Str(gen_bytes(r, keys == Keys::Mixed)),
        _ if keys == Keys::Bytes => Value::Str(gen_bytes(r, false)),
        _ => Value::Unicode(gen_text(r)),
    }
}

fn gen_key(r: &mut Rng, keys: Keys, depth: usize) -> Value {
    if keys != Keys::Mixed && depth < 3 && r.chance(15) {
        let n = r.below(4);
        return Value::Tuple((0..n).map(|_| gen_key(r, keys, depth + 1)).collect());
    }
    gen_scalar(r, keys, false)
}

fn gen_value(r: &mut Rng, depth: usize, nan: bool) -> Value {
    let container = depth < 4 && r.chance(if depth == 0 { 80 } else { 35 });
    if !container {
        let keys = r.pick(&[Keys::Bytes, Keys::Text, Keys::Mixed]);
        return gen_scalar(r, keys, nan);
    }
    let n = if r.chance(80) {
        r.below(6)
    } else {
        r.below(14)
    };
    match r.below(3) {
        0 => Value::List((0..n).map(|_| gen_value(r, depth + 1, nan)).collect()),
        1 => Value::Tuple((0..n).map(|_| gen_value(r, depth + 1, nan)).collect()),
        _ => {
            let keys = r.pick(&[Keys::Bytes, Keys::Text, Keys::Mixed]);
            Value::Dict(
                (0..n)
                    .map(|_| (gen_key(r, keys, 0), gen_value(r, depth + 1, nan)))
                    .collect(),
            )
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The oracle's tagged JSON encoding of a value.
fn encode(v: &Value, out: &mut String) {
    let seq = |tag: &str, items: &mut dyn Iterator<Item = &Value>, out: &mut String| {
        out.push_str(&format!("[\"{tag}\",["));
        for (i, e) in items.enumerate() {
            if i > 0 {
                out.push(',');
            }
            encode(e, out);
        }
        out.push_str("]]");
    };
    match v {
        Value::None => out.push_str("[\"n\"]"),
        Value::Bool(b) => out.push_str(&format!("[\"b\",{}]", *b as u8)),
        Value::Int(i) => out.push_str(&format!("[\"i\",\"{i}\"]")),
        Value::Long(i) => out.push_str(&format!("[\"L\",\"{i}\"]")),
        Value::Float(f) => out.push_str(&format!("[\"f\",\"{:016x}\"]", f.to_bits())),
        Value::Str(b) => out.push_str(&format!("[\"s\",\"{}\"]", hex(b))),
        Value::Unicode(s) => out.push_str(&format!("[\"u\",\"{}\"]", hex(s.as_bytes()))),
        Value::List(items) => seq("l", &mut items.iter(), out),
        Value::Tuple(items) => seq("t", &mut items.iter(), out),
        Value::Dict(d) => {
            out.push_str("[\"d\",[");
            for (i, (k, v)) in d.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('[');
                encode(k, out);
                out.push(',');
                encode(v, out);
                out.push(']');
            }
            out.push_str("]]");
        }
    }
}

/// Runs the oracle script once with `input` on stdin; None when Python 2.7
/// is missing and skipping is allowed.
fn run_python(mode: &[&str], input: String) -> Option<Vec<u8>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/pprint_oracle.py");
    let child = Command::new("python2.7")
        .env("PYENV_VERSION", "2.7.18")
        .arg(&script)
        .args(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var("EDEPLOY_SKIP_ORACLE").as_deref() == Ok("1") => {
            eprintln!("python2.7 unavailable ({e}); oracle skipped (EDEPLOY_SKIP_ORACLE=1)");
            return None;
        }
        Err(e) => panic!("cannot run python2.7 ({e}); set EDEPLOY_SKIP_ORACLE=1 to skip"),
    };
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("python2.7 output");
    writer.join().expect("writer").expect("write to python2.7");
    assert!(
        output.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(output.stdout)
}

/// Python's repr, saferepr and pprint of every case, three blocks each.
fn run_oracle(cases: &[(Value, usize, usize)]) -> Option<Vec<Vec<u8>>> {
    let mut input = String::new();
    for (v, indent, allowance) in cases {
        input.push('[');
        encode(v, &mut input);
        input.push_str(&format!(",{indent},{allowance}]\n"));
    }
    let stdout = run_python(&[], input)?;
    let mut blocks = Vec::new();
    let mut rest = stdout.as_slice();
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').expect("length line");
        let len: usize = std::str::from_utf8(&rest[..nl]).unwrap().parse().unwrap();
        blocks.push(rest[nl + 1..nl + 1 + len].to_vec());
        rest = &rest[nl + 1 + len..];
    }
    assert_eq!(blocks.len(), 3 * cases.len(), "oracle answered every case");
    Some(blocks)
}

fn has_dict(v: &Value) -> bool {
    match v {
        Value::Dict(_) => true,
        Value::List(items) | Value::Tuple(items) => items.iter().any(has_dict),
        _ => false,
    }
}

fn has_non_finite(v: &Value) -> bool {
    match v {
        Value::Float(f) => !f.is_finite(),
        Value::List(items) | Value::Tuple(items) => items.iter().any(has_non_finite),
        Value::Dict(d) => d
            .iter()
            .any(|(k, v)| has_non_finite(k) || has_non_finite(v)),
        _ => false,
    }
}

/// Structural identity: same types, same float bits, same dict items.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::None, Value::None) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Long(x), Value::Long(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Unicode(x), Value::Unicode(y)) => x == y,
        (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Dict(x), Value::Dict(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(k2, v2)| same(k, k2) && same(v, v2)))
        }
        _ => false,
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Values whose exact printing is easy to get wrong, checked before the
/// random ones.
fn hand_picked() -> Vec<Value> {
    let s = Value::str;
    let cmdb_entry: Dict = [
        (s("hostname"), s("host00123")),
        (s("ip"), s("10.0.1.23")),
        (s("mac"), s("52:54:00:aa:bb:cc")),
        (s("used"), Value::Int(1)),
    ]
    .into_iter()
    .collect();
    vec![
        Value::Dict(cmdb_entry.clone()),
        Value::List(vec![Value::Dict(cmdb_entry.clone()); 3]),
        Value::Tuple(vec![Value::Str(vec![b'x'; 100])]),
        Value::Tuple(vec![]),
        Value::List(vec![]),
        Value::Dict(Dict::new()),
        Value::Str(b"it's".to_vec()),
        Value::Str(b"it's \"quoted\"".to_vec()),
        Value::Unicode("it's \u{e9}\u{1234}\u{1f600}".into()),
        Value::Long(-1),
        Value::Int(i64::MIN),
        Value::Long(i128::MIN),
        Value::Float(1e16),
        Value::Float(1e-5),
        Value::Float(0.0001),
        Value::Float(-0.0),
        Value::Float(f64::NAN),
        Value::Dict(
            [
                (Value::None, Value::Int(0)),
                (Value::Int(2), Value::Int(1)),
                (Value::Float(1.5), Value::Int(2)),
                (Value::Long(1 << 70), Value::Int(3)),
                (s("b"), Value::Int(4)),
                (Value::Unicode("a".into()), Value::Int(5)),
                (Value::Bool(false), Value::Int(6)),
            ]
            .into_iter()
            .collect(),
        ),
        Value::Dict(
            [
                (s("z"), Value::Int(1)),
                (Value::Tuple(vec![Value::Int(1)]), Value::Int(2)),
                (s("a"), Value::Int(3)),
            ]
            .into_iter()
            .collect(),
        ),
        Value::Dict(
            [
                (Value::Long((1 << 53) + 1), Value::Int(1)),
                (Value::Float(9007199254740992.0), Value::Int(2)),
            ]
            .into_iter()
            .collect(),
        ),
    ]
}

#[test]
fn repr_and_pprint_match_python27() {
    let mut r = Rng(0x5eed_2024);
    let mut cases: Vec<(Value, usize, usize)> =
        hand_picked().into_iter().map(|v| (v, 0, 0)).collect();
    // Dense float batches: 17-digit values are where the shortest digits
    // are not unique and Python picks the closest ones.
    for batch in 0..10 {
        let floats = (0..400)
            .map(|_| {
                Value::Float(match batch % 3 {
                    0 => gen_float(&mut r, false),
                    1 => (1e15 + r.below(1 << 53) as f64) + r.below(8) as f64 / 8.0,
                    _ => {
                        f64::from_bits(r.next() & !(0x7ff << 52) | (r.below(2046) as u64 + 1) << 52)
                    }
                })
            })
            .collect();
        cases.push((Value::List(floats), 0, 0));
    }
    while cases.len() < 2500 {
        let v = gen_value(&mut r, 0, true);
        let (indent, allowance) = match r.below(4) {
            0 => (r.below(90), r.below(12)),
            1 => (r.below(20), r.below(3)),
            _ => (0, 0),
        };
        cases.push((v, indent, allowance));
    }
    let Some(blocks) = run_oracle(&cases) else {
        return;
    };
    let mut failures = Vec::new();
    for (i, (v, indent, allowance)) in cases.iter().enumerate() {
        let ours_repr = repr(v);
        let mut ours_pretty = Vec::new();
        format_at(&mut ours_pretty, v, *indent, *allowance);
        ours_pretty.push(b'|');
        ours_pretty.extend_from_slice(&pformat(v));
        let (safe, builtin, pretty) = (&blocks[3 * i], &blocks[3 * i + 1], &blocks[3 * i + 2]);
        if ours_repr != *safe || (!has_dict(v) && ours_repr != *builtin) {
            failures.push(format!(
                "case {i}: repr\n ours:   {}\n python: {}\n",
                show(&ours_repr),
                show(safe)
            ));
        }
        if ours_pretty != *pretty {
            failures.push(format!(
                "case {i}: pprint at indent {indent}, allowance {allowance}\n--- ours\n{}\n--- python\n{}\n",
                show(&ours_pretty),
                show(pretty)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches of {} cases; first ones:\n{}",
        failures.len(),
        cases.len(),
        failures.iter().take(5).cloned().collect::<String>()
    );
}

#[test]
fn pformat_output_parses_back_to_the_same_value() {
    let mut r = Rng(0xc0ff_ee00);
    for i in 0..2000 {
        let v = gen_value(&mut r, 0, false);
        if has_non_finite(&v) {
            continue;
        }
        let text = pformat(&v);
        match parse(Path::new("case"), &text) {
            Ok(Document::Literal(back)) => assert!(
                same(&v, &back),
                "case {i}: {}\nparsed back as {back:?}",
                show(&text)
            ),
            other => panic!("case {i}: {}\n{other:?}", show(&text)),
        }
    }
}

fn arb_value() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<i128>().prop_map(Value::Long),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Str),
        ".{0,30}".prop_map(Value::Unicode),
    ];
    scalar.prop_recursive(4, 48, 8, |inner| {
        let key = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            "[a-z'\" ]{0,12}".prop_map(|s| Value::Str(s.into_bytes())),
            proptest::collection::vec(any::<u8>(), 0..3).prop_map(Value::Str),
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Tuple),
            proptest::collection::vec((key, inner), 0..8)
                .prop_map(|items| Value::Dict(items.into_iter().collect())),
        ]
    })
}

proptest! {
    // Failures are reported, not saved as files in the source tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(512) })]

    #[test]
    fn prop_parse_inverts_pformat(v in arb_value()) {
        let text = pformat(&v);
        match parse(Path::new("p"), &text) {
            Ok(Document::Literal(back)) => prop_assert!(same(&v, &back), "{}", show(&text)),
            other => prop_assert!(false, "{}: {:?}", show(&text), other),
        }
        // The bare repr is an expression too.
        let r = repr(&v);
        match parse(Path::new("p"), &r) {
            Ok(Document::Literal(back)) => prop_assert!(same(&v, &back), "{}", show(&r)),
            other => prop_assert!(false, "{}: {:?}", show(&r), other),
        }
    }

    #[test]
    fn prop_format_at_never_panics(v in arb_value(), indent in 0usize..200, allowance in 0usize..200) {
        let mut out = Vec::new();
        format_at(&mut out, &v, indent, allowance);
        prop_assert!(!out.is_empty());
    }
}

/// Elements streamed, or the error, for comparing with `parse`.
fn stream(src: &[u8]) -> Result<(Streamed, Vec<Value>), ParseError> {
    let mut items = Vec::new();
    let top = parse_list_streaming(Path::new("c"), src, &mut |v| {
        items.push(v);
        Ok(())
    })?;
    Ok((top, items))
}

#[test]
fn big_cmdb_streams_and_reprints_like_pformat() {
    let n = 65_536;
    let entries: Vec<Value> = (0..n).map(cmdb_entry).collect();
    let whole = Value::List(entries);
    let text = pformat(&whole);
    let (top, items) = stream(&text).expect("streamed");
    assert_eq!(top, Streamed::List);
    assert_eq!(items.len(), n);
    let mut out = Vec::with_capacity(text.len());
    reprint_list(&mut out, &items);
    assert!(out == text, "element-wise reprint differs from pformat");
}

fn cmdb_entry(i: usize) -> Value {
    let s = |t: &str| Value::Str(t.as_bytes().to_vec());
    Value::Dict(
        [
            (s("hostname"), s(&format!("host{i:05}"))),
            (s("ip"), s(&format!("10.0.{}.{}", i / 256, i % 256))),
            (
                s("mac"),
                s(&format!(
                    "52:54:00:{:02x}:{:02x}:{:02x}",
                    i >> 16,
                    (i >> 8) & 255,
                    i & 255
                )),
            ),
            (s("used"), Value::Int((i % 2) as i64)),
        ]
        .into_iter()
        .collect(),
    )
}

/// How a caller prints a long top-level list one element at a time.
fn reprint_list(out: &mut Vec<u8>, items: &[Value]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",\n ");
        }
        format_at(out, item, 1, 1);
    }
    out.extend_from_slice(b"]\n");
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The oracle's tagged encoding back into a value.
fn decode(j: &serde_json::Value) -> Value {
    let tag = j[0].as_str().unwrap();
    let text = || j[1].as_str().unwrap();
    let items = || j[1].as_array().unwrap().iter().map(decode).collect();
    match tag {
        "n" => Value::None,
        "b" => Value::Bool(j[1].as_u64().unwrap() == 1),
        "i" => Value::Int(text().parse().unwrap()),
        "L" => Value::Long(text().parse().unwrap()),
        "f" => Value::Float(f64::from_bits(u64::from_str_radix(text(), 16).unwrap())),
        "s" => Value::Str(unhex(text())),
        "u" => Value::Unicode(String::from_utf8(unhex(text())).unwrap()),
        "l" => Value::List(items()),
        "t" => Value::Tuple(items()),
        "d" => Value::Dict(
            j[1].as_array()
                .unwrap()
                .iter()
                .map(|kv| (decode(&kv[0]), decode(&kv[1])))
                .collect(),
        ),
        other => panic!("tag {other}"),
    }
}

/// Random Python 2 literal sources: every string, escape and number form,
/// white space and comments, with some invalid pieces mixed in.
struct Source<'a> {
    r: &'a mut Rng,
    out: Vec<u8>,
}

impl Source<'_> {
    fn put(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    fn ws(&mut self, bracketed: bool) {
        const SAME_LINE: &[&[u8]] = &[b"", b"", b" ", b"  ", b"\t", b" \\\n "];
        const ANY: &[&[u8]] = &[b"\n", b"\n  ", b" # note\n ", b"\r\n", b"\n\n"];
        let r = self.r.below(10);
        if bracketed && r < 3 {
            let w = self.r.pick(ANY);
            self.put(w);
        } else {
            let w = self.r.pick(SAME_LINE);
            self.put(w);
        }
    }

    fn number(&mut self) {
        const SIGNS: &[&[u8]] = &[b"", b"", b"", b"-", b"+", b"- ", b"--", b"-+"];
        let sign = self.r.pick(SIGNS);
        self.put(sign);
        let digits = |r: &mut Rng, set: &[u8], n: usize| -> Vec<u8> {
            (0..n).map(|_| r.pick(set)).collect()
        };
        let long = self.r.chance(10);
        let n = 1 + self.r.below(if long { 45 } else { 6 });
        match self.r.below(9) {
            0 => {
                self.put(b"0x");
                let d = digits(self.r, b"0123456789abcdefABCDEF", n);
                self.put(&d);
            }
            1 => {
                let p = self.r.pick(&[&b"0o"[..], b"0O", b"0"]);
                self.put(p);
                let d = digits(self.r, b"01234567", n);
                self.put(&d);
            }
            2 => {
                self.put(b"0b");
                let d = digits(self.r, b"01", n);
                self.put(&d);
            }
            3 | 4 => {
                let d = digits(self.r, b"0123456789", n);
                self.put(&d);
                self.put(b".");
                let len = self.r.below(4);
                let f = digits(self.r, b"0123456789", len);
                self.put(&f);
                if self.r.chance(40) {
                    let e = self.r.pick(&[&b"e"[..], b"E", b"e+", b"e-", b"E-"]);
                    self.put(e);
                    let len = 1 + self.r.below(3);
                    let x = digits(self.r, b"0123456789", len);
                    self.put(&x);
                }
            }
            5 => {
                self.put(b".");
                let d = digits(self.r, b"0123456789", n);
                self.put(&d);
            }
            _ => {
                let d = digits(self.r, b"0123456789", n);
                self.put(&d);
            }
        }
        if self.r.chance(15) {
            let l = self.r.pick(b"lL");
            self.out.push(l);
        }
    }

    fn string(&mut self) {
        const PREFIXES: &[&[u8]] = &[
            b"", b"", b"", b"u", b"U", b"b", b"B", b"r", b"R", b"ur", b"Ur", b"uR", b"br", b"BR",
        ];
        const PIECES: &[&[u8]] = &[
            b"abc",
            b"host-01",
            b" ",
            b"'",
            b"\"",
            b"\\'",
            b"\\\"",
            b"\\\\",
            b"\\n",
            b"\\t",
            b"\\a\\b\\f\\v\\r",
            b"\\x41",
            b"\\xfF",
            b"\\x4",
            b"\\777",
            b"\\0",
            b"\\12",
            b"\\400",
            b"\\u00e9",
            // Not at the end of a ur'' body: Python 2.7 then reads past it.
            b"\\u12x",
            b"\\U0001F600",
            b"\\U00110000",
            b"\\8",
            b"\\q",
            b"\\\\u0041",
            b"\\\\\\u0041",
            b"\\\n",
            b"\\\r\n",
            b"\n",
            b"\xe9",
            b"\xc3\xa9",
            b"\xff",
            b"\t",
            b"#",
        ];
        let prefix = self.r.pick(PREFIXES);
        self.put(prefix);
        let quote = self.r.pick(&[&b"'"[..], b"\"", b"'''", b"\"\"\""]);
        self.put(quote);
        for _ in 0..self.r.below(6) {
            let piece = self.r.pick(PIECES);
            self.put(piece);
        }
        self.put(quote);
    }

    fn key(&mut self, depth: usize) {
        match self.r.below(6) {
            0 | 1 => self.number(),
            2 if depth < 3 => {
                self.put(b"(");
                self.key(depth + 1);
                self.put(b", ");
                self.key(depth + 1);
                self.put(b")");
            }
            3 => {
                let name = self.r.pick(&[&b"True"[..], b"False", b"None"]);
                self.put(name);
            }
            _ => self.string(),
        }
    }

    fn value(&mut self, depth: usize, bracketed: bool) {
        let container = depth < 4 && self.r.chance(if depth == 0 { 70 } else { 30 });
        if !container {
            match self.r.below(8) {
                0..=2 => self.number(),
                3 => {
                    let name = self.r.pick(&[&b"True"[..], b"False", b"None"]);
                    self.put(name);
                }
                _ => {
                    self.string();
                    while self.r.chance(20) {
                        self.ws(bracketed);
                        self.string();
                    }
                }
            }
            return;
        }
        let kind = self.r.below(3);
        let (open, close) = [(b'[', b']'), (b'(', b')'), (b'{', b'}')][kind];
        self.out.push(open);
        let n = self.r.below(5);
        for i in 0..n {
            self.ws(true);
            if kind == 2 {
                self.key(0);
                self.ws(true);
                self.put(b":");
                self.ws(true);
            }
            self.value(depth + 1, true);
            self.ws(true);
            if i + 1 < n || self.r.chance(30) {
                self.put(b",");
            }
        }
        self.ws(true);
        self.out.push(close);
    }
}

#[test]
fn parse_matches_python27_eval() {
    let mut r = Rng(0xeba1_5eed);
    let mut sources = Vec::new();
    while sources.len() < 3000 {
        let mut g = Source {
            r: &mut r,
            out: Vec::new(),
        };
        match g.r.below(12) {
            0 => g.put(b"# -*- coding: utf-8 -*-\n"),
            1 => g.put(b"# coding: latin-1\n"),
            2 => g.put(b"\xef\xbb\xbf"),
            3 => g.put(b"# a comment\n\n"),
            _ => {}
        }
        g.value(0, false);
        if g.r.chance(10) {
            g.put(b", ");
            g.value(1, false);
        }
        let end = g.r.pick(&[&b""[..], b"\n", b"  # end\n", b"\r\n"]);
        g.put(end);
        let src = g.out;
        // Known, documented divergences are not generated: \N{...} and
        // surrogate escapes (unsupported here), indented first lines
        // (accepted here, an IndentationError for Python).
        sources.push(src);
    }
    let input: String = sources.iter().map(|s| hex(s) + "\n").collect();
    let Some(stdout) = run_python(&["eval"], input) else {
        return;
    };
    let answers: Vec<serde_json::Value> = stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(answers.len(), sources.len());
    let (mut accepted, mut failures) = (0, Vec::new());
    for (src, answer) in sources.iter().zip(&answers) {
        let ours = parse(Path::new("gen"), src);
        let text = show(src);
        match (answer[0].as_str().unwrap(), &ours) {
            ("ok", Ok(Document::Literal(v))) => {
                accepted += 1;
                let py = decode(&answer[1]);
                if !same(v, &py) {
                    failures.push(format!("{text:?}\n ours:   {v:?}\n python: {py:?}"));
                }
            }
            ("err", Err(_)) => {}
            // Python's longs are unbounded, ours stop at 128 bits.
            ("ok", Err(e)) if e.message.contains("beyond 128 bits") => {}
            (_, Err(e)) => failures.push(format!("{text:?}\n ours: error {e}\n python: {answer}")),
            _ => failures.push(format!("{text:?}\n ours: {ours:?}\n python: {answer}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} disagreements with eval() on {} sources; first ones:\n{}",
        failures.len(),
        sources.len(),
        failures[..failures.len().min(6)].join("\n")
    );
    assert!(
        accepted > 600,
        "only {accepted} sources were valid: generator too noisy"
    );
}

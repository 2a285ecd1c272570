use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use super::*;
use proptest::prelude::*;

fn s(text: &str) -> Value {
    Value::str(text)
}

fn u(text: &str) -> Value {
    Value::Unicode(text.to_string())
}

fn dict(items: Vec<(Value, Value)>) -> Value {
    Value::Dict(items.into_iter().collect())
}

/// Strict identity (types, float bits), dict order aside; Python's ==
/// would equate 1, 1.0 and True.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Dict(x), Value::Dict(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(k2, v2)| same(k, k2) && same(v, v2)))
        }
        _ => format!("{a:?}") == format!("{b:?}"),
    }
}

fn assert_same(got: &Value, want: &Value) {
    assert!(same(got, want), "got {got:?}\nwant {want:?}");
}

fn lit(src: &[u8]) -> Value {
    match parse(Path::new("t"), src) {
        Ok(Document::Literal(v)) => v,
        other => panic!("{}: {other:?}", String::from_utf8_lossy(src)),
    }
}

fn check(src: &str, want: Value) {
    assert_same(&lit(src.as_bytes()), &want);
}

fn fail(src: &[u8]) -> ParseError {
    match parse(Path::new("f.cmdb"), src) {
        Err(e) => e,
        Ok(doc) => panic!("{}: parsed as {doc:?}", String::from_utf8_lossy(src)),
    }
}

/// The error's line, column and a fragment of its message.
fn check_err(src: &str, line: usize, column: usize, message: &str) {
    let e = fail(src.as_bytes());
    assert_eq!((e.line, e.column), (line, column), "{src:?}: {e}");
    assert!(e.message.contains(message), "{src:?}: {e}");
}

#[test]
fn containers() {
    check("[]", Value::List(vec![]));
    check("[1, 2,]", Value::List(vec![Value::Int(1), Value::Int(2)]));
    check("()", Value::Tuple(vec![]));
    check("(1,)", Value::Tuple(vec![Value::Int(1)]));
    check("(1)", Value::Int(1));
    check("((1))", Value::Int(1));
    check(
        "(1, (2,),)",
        Value::Tuple(vec![Value::Int(1), Value::Tuple(vec![Value::Int(2)])]),
    );
    check("{}", dict(vec![]));
    check(
        "{'a': [1], 2: (3,), }",
        dict(vec![
            (s("a"), Value::List(vec![Value::Int(1)])),
            (Value::Int(2), Value::Tuple(vec![Value::Int(3)])),
        ]),
    );
    check(
        "[{'ip': '10.0.0.1',\n  'used': 1},\n {}]\n",
        Value::List(vec![
            dict(vec![(s("ip"), s("10.0.0.1")), (s("used"), Value::Int(1))]),
            dict(vec![]),
        ]),
    );
}

#[test]
fn dict_items_as_pprint_writes_them() {
    // The fast lane for `'key': 'text'` / `'key': 123` items and its
    // fallbacks must all agree with the general path.
    let one = |k: Value, v: Value| dict(vec![(k, v)]);
    check("{'a': 'b'}", one(s("a"), s("b")));
    check("{\"a\":\"b\",}", one(s("a"), s("b")));
    check("{'a': 'b' 'c'}", one(s("a"), s("bc")));
    check("{'a': 'b'\n}", one(s("a"), s("b")));
    check("{'a': 0}", one(s("a"), Value::Int(0)));
    check("{'a': 017}", one(s("a"), Value::Int(15)));
    check("{'a': 1L}", one(s("a"), Value::Long(1)));
    check("{'a': 1.5}", one(s("a"), Value::Float(1.5)));
    check("{'a': -1}", one(s("a"), Value::Int(-1)));
    check(
        "{'a': 999999999999999999}",
        one(s("a"), Value::Int(999_999_999_999_999_999)),
    );
    check(
        "{'a': 9999999999999999999}",
        one(s("a"), Value::Long(9_999_999_999_999_999_999)),
    );
    check("{'': ''}", one(s(""), s("")));
    check("{'a\\n': 'b\\n'}", one(s("a\n"), s("b\n")));
    check("{'a': u'b'}", one(s("a"), u("b")));
    check("{'a' : 'b'}", one(s("a"), s("b")));
    check("{'a': 1, 'a': 2}", one(s("a"), Value::Int(2)));
    check(
        "[{'a': 1,\n  'b': 'x'},\n {'c': None}]",
        Value::List(vec![
            dict(vec![(s("a"), Value::Int(1)), (s("b"), s("x"))]),
            one(s("c"), Value::None),
        ]),
    );
    check_err(
        "{'a': 'b' x}",
        1,
        11,
        "expected ',' or '}' after dict value",
    );
    check_err("{'a': 1x}", 1, 7, "invalid number literal");
}

#[test]
fn top_level_forms() {
    check("1, 2", Value::Tuple(vec![Value::Int(1), Value::Int(2)]));
    check("1,", Value::Tuple(vec![Value::Int(1)]));
    check("  \t[1]", Value::List(vec![Value::Int(1)]));
    check(
        "# state\n\n[1] # done\n\n",
        Value::List(vec![Value::Int(1)]),
    );
    check(
        "[1,\r\n 2]\r\n",
        Value::List(vec![Value::Int(1), Value::Int(2)]),
    );
    check("[1,\r 2]", Value::List(vec![Value::Int(1), Value::Int(2)]));
    check(
        "[1, \\\n 2]",
        Value::List(vec![Value::Int(1), Value::Int(2)]),
    );
    check("'a' \\\n 'b'", s("ab"));
    check("[\x0c1]", Value::List(vec![Value::Int(1)]));
    check("\u{feff}[1]", Value::List(vec![Value::Int(1)]));
    check("True", Value::Bool(true));
    check(
        "[False, None]",
        Value::List(vec![Value::Bool(false), Value::None]),
    );
}

#[test]
fn generate_call() {
    let model = dict(vec![(s("hostname"), s("host001-010"))]);
    for src in [
        "generate({'hostname': 'host001-010'})",
        "  generate ( {'hostname': 'host001-010'} , )\n",
        "generate(\n  {'hostname':\n   'host001-010'}\n)\n",
    ] {
        match parse(Path::new("t"), src.as_bytes()) {
            Ok(Document::Generate(v)) => assert_same(&v, &model),
            other => panic!("{src}: {other:?}"),
        }
    }
    check_err("[generate({})]", 1, 2, "only allowed around the whole file");
    check_err("generate()", 1, 10, "exactly one argument");
    check_err("generate({}, {})", 1, 14, "exactly one argument");
    check_err("generate {}", 1, 10, "expected '(' after 'generate'");
    check_err("generate({}) x", 1, 14, "unexpected trailing data");
    check_err(
        "generate({}",
        1,
        12,
        "end of file inside '(' opened at line 1, column 9",
    );
}

#[test]
fn string_quotes_and_prefixes() {
    check(r#"'a"b'"#, s("a\"b"));
    check(r#""a'b""#, s("a'b"));
    check("'''a\n'b''c'''", s("a\n'b''c"));
    check(r#""""a"b""""#, s("a\"b"));
    check("''''''", s(""));
    check("''", s(""));
    check("u'x'", u("x"));
    check("U'x'", u("x"));
    check("b'x'", s("x"));
    check("B'x'", s("x"));
    check(r"r'\n'", s("\\n"));
    check(r"R'\n'", s("\\n"));
    check(r"br'\n'", s("\\n"));
    check(r"BR'\n'", s("\\n"));
    check(r"ur'\n'", u("\\n"));
    check(r"Ur'\n'", u("\\n"));
    check(r"uR'\n'", u("\\n"));
    check_err("rb'x'", 1, 1, "invalid string prefix 'rb'");
    check_err("bu'x'", 1, 1, "invalid string prefix 'bu'");
    check_err("[x]", 1, 2, "unknown name 'x'");
}

#[test]
fn str_escapes() {
    check(
        r#"'\\ \' \" \a \b \f \n \r \t \v'"#,
        s("\\ ' \" \x07 \x08 \x0c \n \r \t \x0b"),
    );
    check(r"'\0\1\12\123\1234'", s("\0\x01\nS\x534"));
    check(r"'\777\400'", Value::Str(vec![0xff, 0x00]));
    check(r"'\x41\xfF'", Value::Str(vec![b'A', 0xff]));
    // Unknown escapes keep their backslash; \u is unknown in a str.
    check(r"'\8 \N{x} \u0041 \q'", s("\\8 \\N{x} \\u0041 \\q"));
    check("'a\\\nb'", s("ab"));
    check("'a\\\r\nb'", s("ab"));
    check("'''a\r\nb\rc'''", s("a\nb\nc"));
}

#[test]
fn raw_strings() {
    check(r"r'\''", s("\\'"));
    check(r#"r"\"""#, s("\\\""));
    check("r'a\\\nb'", s("a\\\nb"));
    check(r"r'\x41\\'", s("\\x41\\\\"));
    check_err(r"r'\'", 1, 1, "unterminated string");
}

#[test]
fn unicode_literals() {
    check(r"u'\u00e9\U0001F600\x41\101\n'", u("\u{e9}\u{1f600}AA\n"));
    check(r"u'\400\777'", u("\u{100}\u{1ff}"));
    check(r"u'\q'", u("\\q"));
    check("u'a\\\nb'", u("ab"));
    // ur'' decodes \u only after an odd run of backslashes.
    check(r"ur'\u0041\n'", u("A\\n"));
    check(r"ur'\\u0041'", u("\\\\u0041"));
    check(r"ur'\\\u0041'", u("\\\\A"));
    check_err(r"[u'\u004']", 1, 4, "truncated \\uXXXX escape");
    check_err(r"u'\U0000004'", 1, 3, "truncated \\UXXXXXXXX escape");
    check_err(r"u'\x4'", 1, 3, "truncated \\xXX escape");
    check_err(r"ur'\u12'", 1, 4, "truncated \\uXXXX escape");
    check_err(r"u'\U00110000'", 1, 3, "illegal Unicode character");
    check_err(r"u'\ud800'", 1, 3, "surrogate");
    check_err(
        r"u'\N{LATIN SMALL LETTER E}'",
        1,
        3,
        "\\N{...} escapes are not supported",
    );
    check_err(r"'\x4'", 1, 2, "invalid \\x escape");
}

#[test]
fn source_encoding_of_unicode_literals() {
    // Like eval() of a byte string: raw bytes are Latin-1 by default...
    assert_same(&lit(b"u'\xc3\xa9'"), &u("\u{c3}\u{a9}"));
    assert_same(&lit(b"u'\\\xe9'"), &u("\\\u{e9}"));
    // ...and decoded as declared, by a PEP 263 line or a BOM.
    assert_same(&lit(b"# -*- coding: utf-8 -*-\nu'\xc3\xa9'"), &u("\u{e9}"));
    assert_same(
        &lit(b"#!/x\n# vim: fileencoding=utf8\nu'\xc3\xa9'"),
        &u("\u{e9}"),
    );
    assert_same(&lit(b"\xef\xbb\xbfu'\xc3\xa9'"), &u("\u{e9}"));
    assert_same(&lit(b"# coding=latin-1\nu'\xe9'"), &u("\u{e9}"));
    // A declaration after code is just a comment.
    assert_same(
        &lit(b"[1,\n# coding: utf-8\nu'\xc3\xa9']"),
        &Value::List(vec![Value::Int(1), u("\u{c3}\u{a9}")]),
    );
    // str literals always keep their bytes.
    assert_same(&lit(b"'\xc3\xa9\xff'"), &Value::Str(vec![0xc3, 0xa9, 0xff]));
    // Only u'' literals must then be valid UTF-8.
    assert_same(
        &lit(b"# coding: utf-8\n# \xff\n['\xff']"),
        &Value::List(vec![Value::Str(vec![0xff])]),
    );
    let e = fail(b"# coding: utf-8\n['ok', u'a\xff']");
    assert_eq!((e.line, e.column), (2, 10), "{e}");
    assert!(
        e.message.contains("invalid UTF-8 in unicode literal"),
        "{e}"
    );
    let e = fail(b"# coding: ascii\n'\xe9'");
    assert_eq!((e.line, e.column), (2, 2), "{e}");
    check_err(
        "# coding: koi8-r\n1",
        1,
        11,
        "unsupported source encoding 'koi8-r'",
    );
    check_err("\u{feff}# coding: latin-1\n1", 1, 11, "encoding problem");
}

#[test]
fn string_concatenation() {
    check("'a' \"b\" '''c'''", s("abc"));
    check("('a'\n 'b')", s("ab"));
    check("'a' u'b' 'c'", u("abc"));
    check("u'\\xe9' 'a'", u("\u{e9}a"));
    assert_same(
        &lit(b"['a' r'\\n' 'b', 1]"),
        &Value::List(vec![s("a\\nb"), Value::Int(1)]),
    );
    check_err(
        "'\u{e9}' u'a'",
        1,
        5,
        "non-ASCII str literal with a unicode literal",
    );
    check_err(
        "u'a' '\u{e9}'",
        1,
        6,
        "non-ASCII str literal with a unicode literal",
    );
    // A newline ends the top-level expression.
    check_err("'a'\n'b'", 2, 1, "unexpected trailing data");
}

#[test]
fn integers() {
    check(
        "[0, 7, -7, +7, 00]",
        Value::List([0, 7, -7, 7, 0].into_iter().map(Value::Int).collect()),
    );
    check("0x1F", Value::Int(31));
    check("0XfF", Value::Int(255));
    check("0o17", Value::Int(15));
    check("0O17", Value::Int(15));
    check("017", Value::Int(15));
    check("0b101", Value::Int(5));
    check("0B1", Value::Int(1));
    check("1L", Value::Long(1));
    check("0xffl", Value::Long(255));
    check("-0L", Value::Long(0));
    check("9223372036854775807", Value::Int(i64::MAX));
    check("9223372036854775808", Value::Long(1 << 63));
    check("-9223372036854775808", Value::Int(i64::MIN));
    check("-(9223372036854775808)", Value::Long(-(1 << 63)));
    check("--9223372036854775808", Value::Long(1 << 63));
    check("0x8000000000000000", Value::Long(1 << 63));
    check("-0x8000000000000000", Value::Int(i64::MIN));
    check(
        "170141183460469231731687303715884105727",
        Value::Long(i128::MAX),
    );
    check(
        "-170141183460469231731687303715884105728",
        Value::Long(i128::MIN),
    );
    check("- - 5", Value::Int(5));
    check("-+-1", Value::Int(1));
    check("-True", Value::Int(-1));
    check("+False", Value::Int(0));
    check_err("170141183460469231731687303715884105728", 1, 1, "too large");
    check_err(
        "[1, 99999999999999999999999999999999999999999]",
        1,
        5,
        "too large",
    );
    check_err(
        "-(-170141183460469231731687303715884105728)",
        1,
        1,
        "too large",
    );
    check_err("08", 1, 1, "octal digit expected");
    check_err("0x", 1, 1, "invalid number literal");
    check_err("0b2", 1, 1, "invalid number literal");
    check_err("0o8", 1, 1, "invalid number literal");
    check_err("1_0", 1, 1, "invalid number literal");
    check_err("0L0", 1, 1, "invalid number literal");
    check_err("1j", 1, 1, "complex numbers are not supported");
    check_err("[-'a']", 1, 2, "bad operand type for unary -: 'str'");
    check_err("+None", 1, 1, "bad operand type for unary +: 'NoneType'");
    check_err("-(1,)", 1, 1, "bad operand type for unary -: 'tuple'");
}

#[test]
fn floats() {
    check("1.5", Value::Float(1.5));
    check("1e3", Value::Float(1000.0));
    check("1E-5", Value::Float(1e-5));
    check("1e+5", Value::Float(1e5));
    check(".5", Value::Float(0.5));
    check("5.", Value::Float(5.0));
    check("1.e2", Value::Float(100.0));
    check("09.5", Value::Float(9.5));
    check("0e5", Value::Float(0.0));
    check("-0.0", Value::Float(-0.0));
    check("- .5", Value::Float(-0.5));
    check("1e400", Value::Float(f64::INFINITY));
    check("-1e400", Value::Float(f64::NEG_INFINITY));
    check("1e-400", Value::Float(0.0));
    check("4.9e-324", Value::Float(5e-324));
    check_err("1e", 1, 1, "bad exponent");
    check_err("1.5L", 1, 1, "invalid number literal");
    check_err("1e5L", 1, 1, "invalid number literal");
    check_err("1.5.2", 1, 1, "invalid number literal");
}

#[test]
fn syntax_errors_have_positions() {
    check_err(
        "[1 2]",
        1,
        4,
        "expected ',' or ']' after list element, found '2'",
    );
    check_err("[1,,]", 1, 4, "expected a value, found ','");
    check_err("(1 2)", 1, 4, "expected ',' or ')' after tuple element");
    check_err("{1 2}", 1, 4, "expected ':' after dict key");
    check_err("{1: 2 3}", 1, 7, "expected ',' or '}' after dict value");
    check_err("{,}", 1, 2, "expected a value");
    check_err("[\n  1,\n  'abc\n]", 3, 3, "unterminated string");
    check_err("['''abc\n", 1, 2, "unterminated string");
    check_err("[1] [2]", 1, 5, "unexpected trailing data: '['");
    check_err("[1]\n  x", 2, 3, "unexpected trailing data");
    check_err("", 1, 1, "expected a value, found end of file");
    check_err("  # nothing\n", 2, 1, "expected a value, found end of file");
    check_err(
        "[1,\n 2",
        2,
        3,
        "end of file inside '[' opened at line 1, column 1",
    );
    check_err(
        "{'a': 1",
        1,
        8,
        "end of file inside '{' opened at line 1, column 1",
    );
    check_err(
        "[1]\\",
        1,
        4,
        "unexpected character after line continuation",
    );
    check_err(
        "[1] \\ \n",
        1,
        5,
        "unexpected character after line continuation",
    );
    check_err("{[1]: 2}", 1, 2, "unhashable dict key (a list)");
    check_err("{(1, {}): 2}", 1, 2, "unhashable dict key (a dict)");
    check_err("[1, \0]", 1, 5, "NUL byte");
    check_err("[1, @]", 1, 5, "expected a value, found '@'");
    check_err("1,\n2", 2, 1, "unexpected trailing data");
    // Columns count characters, not bytes; \r\n is one line break.
    check_err("['\u{e9}\u{e9}', x]", 1, 8, "unknown name 'x'");
    check_err("[1,\r\n 2,\r\n x]", 3, 2, "unknown name 'x'");
    check_err("[1,\r 2,\r x]", 3, 2, "unknown name 'x'");
    check_err("[\u{e9}]", 1, 2, "found '\u{e9}'");
    assert!(fail(b"[\xff]").message.contains("found byte 0xff"));
    let e = fail(b"[1 2]");
    assert_eq!(
        e.to_string(),
        "f.cmdb:1:4: expected ',' or ']' after list element, found '2'"
    );
}

#[test]
fn nesting_is_bounded() {
    let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(parse(Path::new("t"), ok.as_bytes()).is_ok());
    let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    check_err(&deep, 1, MAX_DEPTH + 1, "nesting deeper than 64 levels");
    // Hostile depths must fail cleanly, not overflow the stack.
    for open in ["[", "(", "{1: ", "-(", "(-", "{(", "[{1: ["] {
        for prefix in ["", "generate("] {
            let src = format!("{prefix}{}", open.repeat(100_000));
            let e = fail(src.as_bytes());
            assert!(e.message.contains("nesting deeper"), "{open}: {e}");
        }
    }
    let signs = format!("{}1", "-".repeat(1_000_000));
    check(&signs, Value::Int(1));
}

#[test]
fn large_dicts_dedup_keys_like_python() {
    // Duplicates keep the first key object and the last value.
    check(
        "{1: 'a', True: 'b', 1.0: 'c', 2: 'd'}",
        dict(vec![(Value::Int(1), s("c")), (Value::Int(2), s("d"))]),
    );
    let mut src = String::from("{");
    for i in 0..1000 {
        src.push_str(&format!("'k{}': {i}, ", i % 300));
    }
    src.push_str("1: 'x', 1.0: 'y', True: 'z'}");
    let Value::Dict(d) = lit(src.as_bytes()) else {
        panic!()
    };
    assert_eq!(d.len(), 301);
    assert_same(d.get_str("k5").unwrap(), &Value::Int(905));
    let one: Vec<_> = d.iter().filter(|(k, _)| **k == Value::Int(1)).collect();
    assert_eq!(format!("{one:?}"), "[(Int(1), Str([122]))]");
}

#[test]
fn python_equality_and_order() {
    assert_eq!(Value::Int(1), Value::Float(1.0));
    assert_eq!(Value::Bool(true), Value::Long(1));
    assert_eq!(s("a"), u("a"));
    assert_ne!(Value::Str(vec![0xe9]), u("\u{e9}"));
    assert_ne!(Value::List(vec![]), Value::Tuple(vec![]));
    // Exact int/float comparison, as Python does.
    assert_ne!(Value::Long((1 << 53) + 1), Value::Float(9007199254740992.0));
    assert_eq!(
        py_cmp(
            &Value::Long((1 << 53) + 1),
            &Value::Float(9007199254740992.0)
        ),
        Ordering::Greater
    );
    assert_eq!(
        py_cmp(&Value::Long(i128::MAX), &Value::Float(1e300)),
        Ordering::Less
    );
    assert_eq!(py_cmp(&Value::Int(-3), &Value::Float(-2.5)), Ordering::Less);
    assert_ne!(Value::Int(0), Value::Float(f64::NAN));
    // None < numbers < other types by name; str and unicode by text.
    let mut keys = vec![
        u("b"),
        Value::Tuple(vec![]),
        s("a"),
        Value::Float(0.5),
        Value::None,
        Value::Int(-1),
    ];
    keys.sort_by(py_cmp);
    assert_eq!(
        format!("{keys:?}"),
        r#"[None, Int(-1), Float(0.5), Str([97]), Tuple([]), Unicode("b")]"#
    );
}

#[test]
fn inconsistent_python_orders_do_not_panic() {
    // 'z' < (1,) < u'a' < 'z': Python 2 has no consistent order here.
    let mut items = Vec::new();
    for i in 0..40 {
        items.push((s(&format!("z{i}")), Value::Int(i)));
        items.push((Value::Tuple(vec![Value::Int(i)]), Value::Int(i)));
        items.push((u(&format!("a{i}")), Value::Int(i)));
    }
    let d: Dict = items.into_iter().collect();
    assert_eq!(d.sorted_items().len(), 120);
    assert!(!pformat(&Value::Dict(d)).is_empty());
}

#[test]
fn dict_api() {
    let mut d = Dict::new();
    assert!(d.is_empty());
    d.insert(s("b"), Value::Int(1));
    d.insert(s("a"), Value::Int(2));
    d.insert(u("b"), Value::Int(3));
    assert_eq!(d.len(), 2);
    assert_same(d.get_str("b").unwrap(), &Value::Int(3));
    assert_eq!(format!("{d:?}"), "{Str([98]): Int(3), Str([97]): Int(2)}");
    let mut e = Dict::new();
    e.insert(s("c"), Value::None);
    d.update(&e);
    assert_eq!(d.remove(&s("a")), Some(Value::Int(2)));
    assert_eq!(d.remove(&s("a")), None);
    assert_eq!(
        format!("{:?}", d.sorted_items()),
        "[(Str([98]), Int(3)), (Str([99]), None)]"
    );
    assert_eq!(
        String::from_utf8(repr(&Value::Dict(d))).unwrap(),
        "{'b': 3, 'c': None}"
    );
}

fn repr_str(v: &Value) -> String {
    String::from_utf8(repr(v)).unwrap()
}

#[test]
fn repr_scalars() {
    let cases: &[(Value, &str)] = &[
        (Value::None, "None"),
        (Value::Bool(true), "True"),
        (Value::Int(-5), "-5"),
        (Value::Long(5), "5L"),
        (
            Value::Long(i128::MIN),
            "-170141183460469231731687303715884105728L",
        ),
        (Value::Float(1e16), "1e+16"),
        (Value::Float(1e15), "1000000000000000.0"),
        (Value::Float(0.0001), "0.0001"),
        (Value::Float(0.00001), "1e-05"),
        (Value::Float(-0.0), "-0.0"),
        (Value::Float(1e22), "1e+22"),
        (Value::Float(0.1), "0.1"),
        (Value::Float(1.0 / 3.0), "0.3333333333333333"),
        (Value::Float(123456789.125), "123456789.125"),
        (Value::Float(2.5e-7), "2.5e-07"),
        (Value::Float(1e-300), "1e-300"),
        (Value::Float(f64::INFINITY), "inf"),
        (Value::Float(f64::NEG_INFINITY), "-inf"),
        (Value::Float(f64::NAN), "nan"),
        (s("it's"), r#""it's""#),
        (s("say \"hi\""), r#"'say "hi"'"#),
        (s("both ' and \""), r#"'both \' and "'"#),
        (
            Value::Str(b"\t\n\r\x00\x7f\xff\\".to_vec()),
            r"'\t\n\r\x00\x7f\xff\\'",
        ),
        (
            u("\u{1234}\u{1f600}\u{80} 'x' \"y\""),
            r#"u'\u1234\U0001f600\x80 \'x\' "y"'"#,
        ),
        (u("caf\u{e9}"), r"u'caf\xe9'"),
        (Value::Tuple(vec![]), "()"),
        (Value::Tuple(vec![Value::Int(1)]), "(1,)"),
        (Value::List(vec![Value::Int(1), Value::None]), "[1, None]"),
        (
            dict(vec![
                (s("b"), Value::Int(1)),
                (Value::Float(2.5), Value::Long(1)),
                (s("a"), Value::List(vec![])),
            ]),
            "{2.5: 1L, 'a': [], 'b': 1}",
        ),
    ];
    for (v, want) in cases {
        assert_eq!(repr_str(v), *want, "{v:?}");
    }
}

#[test]
fn pformat_wraps_like_python() {
    let entry = dict(vec![
        (s("used"), Value::Int(1)),
        (s("mac"), s("52:54:00:aa:bb:cc")),
        (s("ip"), s("10.0.1.23")),
        (s("hostname"), s("host00123")),
    ]);
    assert_eq!(
        String::from_utf8(pformat(&entry)).unwrap(),
        "{'hostname': 'host00123',\n 'ip': '10.0.1.23',\n 'mac': '52:54:00:aa:bb:cc',\n 'used': 1}\n"
    );
    let nested = dict(vec![
        (
            s("a"),
            Value::List(vec![
                Value::Int(1),
                Value::Int(2),
                dict(vec![(s("b"), s(&"c".repeat(70)))]),
            ]),
        ),
        (Value::Tuple(vec![Value::Int(1), s("k")]), Value::None),
        (Value::Float(2.5), Value::Long(1)),
    ]);
    assert_eq!(
        String::from_utf8(pformat(&nested)).unwrap(),
        format!(
            "{{2.5: 1L,\n 'a': [1,\n       2,\n       {{'b': '{}'}}],\n (1, 'k'): None}}\n",
            "c".repeat(70)
        )
    );
    // Long strings are never split; a 1-tuple keeps its comma.
    let long = Value::Tuple(vec![s(&"x".repeat(100))]);
    assert_eq!(
        String::from_utf8(pformat(&long)).unwrap(),
        format!("('{}',)\n", "x".repeat(100))
    );
    // A repr of exactly 80 columns is split: the room is 80 - 1 - indent
    // - allowance (LEGACY-SEMANTICS §10 says 80 - indent - allowance).
    let pair = |n| Value::List(vec![Value::Int(1), s(&"y".repeat(n))]);
    assert_eq!(
        pformat(&pair(72)),
        format!("[1, '{}']\n", "y".repeat(72)).into_bytes()
    );
    assert_eq!(
        pformat(&pair(73)),
        format!("[1,\n '{}']\n", "y".repeat(73)).into_bytes()
    );
    // Fits exactly in 80 - 1 - indent - allowance columns, or not.
    let fits = Value::List(vec![s(&"y".repeat(75))]);
    assert_eq!(pformat(&fits).len(), 80);
    let mut out = Vec::new();
    format_at(&mut out, &fits, 1, 0);
    assert_eq!(out, repr(&fits));
    out.clear();
    format_at(&mut out, &fits, 1, 1);
    assert_eq!(out, repr(&fits));
    out.clear();
    format_at(
        &mut out,
        &Value::List(vec![Value::Int(1), s(&"y".repeat(74))]),
        1,
        1,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("[1,\n  '{}']", "y".repeat(74))
    );
    // Beyond the width everything splits, without underflow.
    let mut out = Vec::new();
    format_at(
        &mut out,
        &Value::List(vec![Value::Int(1), Value::Int(2)]),
        100,
        usize::MAX,
    );
    assert_eq!(out, b"[1,\n                                                                                                     2]");
}

#[test]
fn streaming_matches_parse() {
    let src = b"# cmdb\n[{'a': 1},\n {'b': [2, 3]},\n 'x' 'y', -4,\n]\n";
    let mut seen = Vec::new();
    let top = parse_list_streaming(Path::new("c"), src, &mut |v| {
        seen.push(v);
        Ok(())
    });
    assert_eq!(top, Ok(Streamed::List));
    assert_same(&Value::List(seen), &lit(src));

    let mut count = 0;
    let top = parse_list_streaming(Path::new("c"), b"( [1, 2] )", &mut |_| {
        count += 1;
        Ok(())
    });
    assert_eq!((top, count), (Ok(Streamed::List), 2));

    let top = parse_list_streaming(
        Path::new("c"),
        b"generate({'ip': '10.0.0.1-9'})\n",
        &mut |_| panic!("no element for generate"),
    );
    assert_eq!(
        top,
        Ok(Streamed::Generate(dict(vec![(s("ip"), s("10.0.0.1-9"))])))
    );

    let stop = |src: &[u8]| parse_list_streaming(Path::new("c"), src, &mut |_| Ok(())).unwrap_err();
    assert!(stop(b"{'a': 1}")
        .message
        .contains("expected a list at the top level"));
    assert!(stop(b"[1], [2]")
        .message
        .contains("the top level is a tuple"));
    assert!(stop(b"([1],)").message.contains("the top level is a tuple"));
    assert!(stop(b"[1] [2]")
        .message
        .contains("unexpected trailing data"));
    assert!(stop(b"([1]").message.contains("end of file inside '('"));
    let e = stop(b"[1, 2 3]");
    assert_eq!((e.line, e.column), (1, 7));

    // The callback's error comes back unchanged and stops the parse.
    let mine = ParseError {
        file: PathBuf::from("mine"),
        line: 9,
        column: 9,
        message: "stop".into(),
    };
    let mut calls = 0;
    let got = parse_list_streaming(Path::new("c"), b"[1, 2, 3]", &mut |_| {
        calls += 1;
        Err(mine.clone())
    });
    assert_eq!((got, calls), (Err(mine), 1));
}

/// Every outcome of `parse` on a top-level list or generate() is also
/// the outcome of streaming, and streaming fails on anything else.
fn assert_stream_agrees(src: &[u8]) {
    let mut seen = Vec::new();
    let streamed = parse_list_streaming(Path::new("f"), src, &mut |v| {
        seen.push(v);
        Ok(())
    });
    match (parse(Path::new("f"), src), streamed) {
        (Ok(Document::Literal(Value::List(items))), Ok(Streamed::List)) => {
            assert_same(&Value::List(seen), &Value::List(items))
        }
        (Ok(Document::Generate(m)), Ok(Streamed::Generate(n))) => assert_same(&m, &n),
        (Ok(Document::Literal(v)), Err(_)) => {
            assert!(
                !matches!(v, Value::List(_)),
                "{}",
                String::from_utf8_lossy(src)
            )
        }
        (Err(_), Err(_)) => {}
        (p, st) => panic!(
            "{}: parse {p:?}, stream {st:?}",
            String::from_utf8_lossy(src)
        ),
    }
}

const SEEDS: &[&str] = &[
    "[{'hostname': 'host00123',\n  'ip': '10.0.1.23',\n  'used': 1},\n {'x': (1, 2L, -3.5e-7)}]\n",
    "generate({'hostname': 'host001-010', 'ip': '10.0.0.1-10', 'k': [1, 2]})\n",
    "[('disk', 'sda', 'size', '100'), (u'caf\\xe9', r'\\d+', b'\\x41', ur'\\u0041')]",
    "# comment\n[  # more\n 0x1F, 017, 0b11, .5, 1e3, True, None, \"\"\"tri\nple\"\"\", 'a' 'b',\n]",
    "([1], [2])",
    "{1: {2: {3: [4, (5,)]}}}",
];

proptest! {
    // Failures are reported, not saved as files in the source tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(2000) })]

    #[test]
    fn parse_never_panics_on_random_bytes(src in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse(Path::new("r"), &src);
        assert_stream_agrees(&src);
    }

    #[test]
    fn parse_never_panics_on_mutated_files(
        seed in 0..SEEDS.len(),
        edits in proptest::collection::vec(
            (any::<prop::sample::Index>(), 0u8..3, prop::sample::select(
                b"[](){}:,'\"\\#\n\r -+.0123456789eLlxXuUrRbBjJ_aN\xc3\xa9\xff\x00".to_vec()
            )),
            1..6,
        ),
    ) {
        let mut src = SEEDS[seed].as_bytes().to_vec();
        for (at, op, byte) in edits {
            let i = at.index(src.len() + 1);
            match op {
                0 => src.insert(i, byte),
                1 if i < src.len() => { src.remove(i); }
                _ if i < src.len() => src[i] = byte,
                _ => src.push(byte),
            }
        }
        if let Ok(Document::Literal(v) | Document::Generate(v)) = parse(Path::new("m"), &src) {
            // Whatever parses prints, and the print parses back.
            let text = pformat(&v);
            if !format!("{v:?}").contains("inf") && !format!("{v:?}").contains("NaN") {
                match parse(Path::new("p"), &text) {
                    Ok(Document::Literal(back)) => assert_same(&back, &v),
                    other => panic!("{}: {other:?}", String::from_utf8_lossy(&text)),
                }
            }
        }
        assert_stream_agrees(&src);
    }
}

//! Differential tests of `generate()` against the legacy Python 2.7 library
//! (`hardware.generate.generate`): thousands of seeded random models, run in
//! one batched python2.7 process.
//!
//! The oracle must be installed (`PYENV_VERSION=2.7.18 python2.7` with
//! `hardware`); without it this test fails unless `EDEPLOY_SKIP_ORACLE=1`.

mod common;
use common::rng::Rng;

use edeploy::generate::{generate, GenerateError};
use edeploy::literal::{Dict, Value};
use serde_json::{json, Value as Json};

fn oracle(script: &str, cases: &Json) -> Option<Vec<Json>> {
    common::oracle::run(script, "hardware.generate", cases)
}

/// A number for a range bound, sometimes zero-padded.
fn number(r: &mut Rng, around: usize) -> String {
    let n = around + r.below(6);
    match r.below(6) {
        0 => format!("0{n}"),
        1 => format!("00{n}"),
        _ => n.to_string(),
    }
}

fn simple_range(r: &mut Rng) -> String {
    let (x, y) = (r.below(20), r.below(20));
    let a = number(r, x);
    let b = number(r, y);
    format!("{a}-{b}")
}

/// `A-B(:C-D)*` with text around.
fn text_range(r: &mut Rng) -> String {
    let mut s = String::new();
    s.push_str(r.pick(&["", "host", "x-", "a1", "10.0.", "n ", ":", "-"]));
    s.push_str(&simple_range(r));
    while r.chance(25) {
        s.push(':');
        s.push_str(&simple_range(r));
    }
    s.push_str(r.pick(&["", "", "b", "-3", ":", "::4-5", ".lan", "x\n", "\n", " y"]));
    s
}

fn octet(r: &mut Rng) -> String {
    let part = |r: &mut Rng| match r.below(10) {
        0..=3 => {
            let a = r.below(4);
            let b = r.below(4);
            if r.chance(20) {
                format!("0{a}-{b}")
            } else {
                format!("{a}-{b}")
            }
        }
        4..=6 => r.below(256).to_string(),
        7 => r.pick(&["", "5-", "1-2-3", "00"]).to_string(),
        8 => r.pick(&["-5", "-"]).to_string(),
        _ => format!("{}-{}", r.below(3), r.below(3)),
    };
    let mut o = part(r);
    while r.chance(20) {
        o.push(':');
        o.push_str(&part(r));
    }
    o
}

fn ipv4(r: &mut Rng) -> String {
    let mut s = [octet(r), octet(r), octet(r), octet(r)].join(".");
    if r.chance(5) {
        s.push('\n');
    }
    s
}

fn plain(r: &mut Rng) -> String {
    r.pick(&[
        "x",
        "D7-H.1.0.0",
        "10.0.0.1",
        "1 - 2",
        "4-",
        "1-2\n3-4",
        "\n1-2",
        "10.0.0.1:2",
        "1.2.3.4-",
        "",
    ])
    .to_string()
}

fn s(v: &str) -> Value {
    Value::str(v)
}

fn random_value(r: &mut Rng) -> Value {
    match r.below(18) {
        0..=6 => s(&text_range(r)),
        7..=11 => s(&ipv4(r)),
        12..=15 => s(&plain(r)),
        _ => Value::List((0..r.below(6)).map(|i| s(&format!("e{i}"))).collect()),
    }
}

/// Values the legacy code repeats through a 16-million element list (half a
/// second each): only in two models (the unit tests cover the others).
fn exotic_value(kind: usize) -> Value {
    match kind {
        0 => Value::Tuple(vec![s("t"), s("1-2")]),
        _ => Value::Dict([(s("k"), s("1-2"))].into_iter().collect()),
    }
}

fn tagged(v: &Value) -> Json {
    match v {
        Value::Str(b) => json!({"s": String::from_utf8(b.clone()).unwrap()}),
        Value::Unicode(u) => json!({"u": u}),
        Value::Int(i) => json!({"i": i}),
        Value::None => json!({"n": null}),
        Value::List(l) => json!({"l": l.iter().map(tagged).collect::<Vec<_>>()}),
        Value::Tuple(t) => json!({"t": t.iter().map(tagged).collect::<Vec<_>>()}),
        Value::Dict(d) => {
            let mut items: Vec<(String, Json)> = d
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_text().unwrap().to_string(),
                        json!([tagged(k), tagged(v)]),
                    )
                })
                .collect();
            items.sort_by(|a, b| a.0.cmp(&b.0));
            json!({"d": items.into_iter().map(|(_, kv)| kv).collect::<Vec<_>>()})
        }
        other => panic!("unexpected value {other:?}"),
    }
}

/// The model as given to the oracle: dict items in insertion order.
fn tagged_model(d: &Dict) -> Json {
    json!({"d": d.iter().map(|(k, v)| json!([tagged(k), tagged(v)])).collect::<Vec<_>>()})
}

#[test]
fn generate_agrees_with_oracle() {
    let mut r = Rng(0x5eed_0004);
    let keys = [
        "ip", "hostname", "gateway", "mac", "a", "b", "netmask", "eth", "x", "vlan",
    ];
    let mut cases = Vec::new();
    let mut models = Vec::new();
    while models.len() < 2000 {
        let mut d = Dict::new();
        for _ in 0..1 + r.below(8) {
            d.insert(s(r.pick(&keys)), random_value(&mut r));
        }
        if models.len() % 1000 == 0 {
            d.insert(s(r.pick(&keys)), exotic_value(models.len() / 1000));
        }
        let model = Value::Dict(d.clone());
        // Models without anything finite make the legacy code build 16
        // million entries; we refuse them (checked in the unit tests).
        if generate(&model).err() == Some(GenerateError::TooManyEntries) {
            continue;
        }
        cases.push(tagged_model(&d));
        models.push(model);
    }
    let Some(results) = oracle("generate_oracle.py", &Json::Array(cases)) else {
        return;
    };
    let (mut entries, mut raised) = (0, 0);
    for (model, expected) in models.iter().zip(&results) {
        let got = generate(model);
        if let Some(kind) = expected.get("raise") {
            raised += 1;
            assert!(
                matches!(got, Err(GenerateError::InvalidRange { .. })),
                "oracle raised {kind} on {model:?}, we gave {got:?}"
            );
            continue;
        }
        let got: Vec<Json> = got
            .unwrap_or_else(|e| panic!("{e} on {model:?}, oracle {expected}"))
            .map(|e| tagged(&e))
            .collect();
        entries += got.len();
        assert_eq!(json!(got), expected["entries"], "model {model:?}");
    }
    eprintln!(
        "{} models, {entries} entries, {raised} legacy crashes",
        models.len()
    );
    assert!(entries > 15_000 && raised > 50);
}

//! Property tests of the CGI input path (`cgi::read_request`): whatever the
//! CGI variables and the body, it returns a request or a `CgiError` (never a
//! panic), never reads past `CONTENT_LENGTH` (nor the body of a GET), keeps
//! every field within its limit, and a well-formed multipart body gives back
//! exactly the fields it was built from, however stdin delivers it.
//!
//! Each property runs a fixed number of cases ([`CASES`]) and prints how
//! many it ran and what they gave. A failure prints the smallest failing
//! input; the seed can be fixed with `PROPTEST_RNG_SEED`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicU64, Ordering};

use edeploy::cgi::{
    read_request, CgiError, Limits, Request, Upload, BODY_OVERHEAD, MAX_TEXT_FIELD,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const CASES: u32 = 2000;

const LIMITS: Limits = Limits {
    max_hw_size: 64 * 1024,
    max_log_size: 256 * 1024,
};

thread_local! {
    /// Outcomes of `read_request` in the current property: `ok` or the
    /// refusal's status.
    static OUTCOMES: RefCell<BTreeMap<String, u64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Runs `test` on `CASES` values of `strategy` and prints how many cases
/// ran, were rejected (by `prop_assume!`), and what they gave.
fn check<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    OUTCOMES.with(|o| o.borrow_mut().clear());
    let ran = Cell::new(0u64);
    let rejected = Cell::new(0u64);
    let result = runner.run(&strategy, |value| {
        ran.set(ran.get() + 1);
        let r = test(value);
        if matches!(r, Err(TestCaseError::Reject(_))) {
            rejected.set(rejected.get() + 1);
        }
        r
    });
    let outcomes = OUTCOMES.with(|o| o.take());
    eprintln!(
        "{name}: {} cases run, {} rejected, outcomes {outcomes:?}",
        ran.get(),
        rejected.get()
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// A body delivered by reads of the given sizes (cycled), counting what the
/// parser pulled.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    reads: usize,
    taken: &'a AtomicU64,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self
            .sizes
            .get(self.reads % self.sizes.len().max(1))
            .copied()
            .unwrap_or(usize::MAX);
        self.reads += 1;
        let n = size.max(1).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.taken.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// CGI variables as the server passes them: bytes, possibly not UTF-8.
type Env = Vec<(&'static str, Vec<u8>)>;

/// Runs `read_request` and checks what must hold whatever the input;
/// returns the result.
fn run(
    env: &Env,
    body: &[u8],
    sizes: Vec<usize>,
) -> Result<Result<Request, CgiError>, TestCaseError> {
    let map: HashMap<&str, OsString> = env
        .iter()
        .map(|(k, v)| (*k, OsString::from_vec(v.clone())))
        .collect();
    let taken = AtomicU64::new(0);
    let reader = Chunked {
        data: body,
        sizes,
        reads: 0,
        taken: &taken,
    };
    let result = read_request(&|k| map.get(k).cloned(), reader, LIMITS);
    let taken = taken.load(Ordering::Relaxed);
    let var = |k: &str| map.get(k).map(|v| v.to_string_lossy().into_owned());
    let method = var("REQUEST_METHOD").unwrap_or_default();
    if method != "POST" {
        prop_assert_eq!(taken, 0, "a {:?} read the body", method);
    }
    // CONTENT_LENGTH as CGI defines it: decimal digits.
    let length = var("CONTENT_LENGTH")
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
    prop_assert!(
        taken <= length.unwrap_or(0),
        "read {} bytes, CONTENT_LENGTH {:?}",
        taken,
        length
    );
    let outcome = match &result {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.status().to_string(),
    };
    OUTCOMES.with(|o| *o.borrow_mut().entry(outcome).or_default() += 1);
    match &result {
        Ok(r) => {
            prop_assert!(["GET", "HEAD", "POST"].contains(&r.method.as_str()));
            for text in [&r.section, &r.failure, &r.session].into_iter().flatten() {
                prop_assert!(text.len() as u64 <= MAX_TEXT_FIELD);
            }
            if let Some(f) = &r.file {
                prop_assert!(f.data.len() as u64 <= LIMITS.for_file(&f.filename));
            }
        }
        Err(e) => {
            prop_assert!(
                [400, 405, 411, 413, 415, 500].contains(&e.status()),
                "{:?}",
                e
            );
            prop_assert!(!e.to_string().is_empty());
            if matches!(e, CgiError::BodyTooLarge { .. }) {
                prop_assert_eq!(taken, 0, "read a body refused as too large");
            }
        }
    }
    Ok(result)
}

fn post_env(content_type: &str, length: u64) -> Env {
    vec![
        ("REQUEST_METHOD", b"POST".to_vec()),
        ("CONTENT_TYPE", content_type.as_bytes().to_vec()),
        ("CONTENT_LENGTH", length.to_string().into_bytes()),
        ("REMOTE_ADDR", b"192.0.2.1".to_vec()),
    ]
}

/// Read sizes for [`Chunked`]: one big read, or many small ones.
fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![usize::MAX]),
        prop::collection::vec(1usize..64, 1..8),
        prop::collection::vec(1usize..5000, 1..4),
    ]
}

/// One form field: name, file name and content type (for a file), value.
#[derive(Clone, Debug)]
struct Part {
    name: String,
    file: Option<(String, Option<String>)>,
    value: Vec<u8>,
}

/// A multipart body as curl builds it.
fn multipart(boundary: &str, parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{}\"", p.name).as_bytes(),
        );
        if let Some((filename, content_type)) = &p.file {
            body.extend_from_slice(format!("; filename=\"{filename}\"").as_bytes());
            if let Some(t) = content_type {
                body.extend_from_slice(format!("\r\nContent-Type: {t}").as_bytes());
            }
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(&p.value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

const CURL_BOUNDARY: &str = "------------------------a3b2f4e5d6c7b8a9";

/// The body of `curl -F section=SERVER -F file=@hw.json`.
fn curl_body() -> Vec<u8> {
    let hw = br#"[["system", "product", "name", "vm"], ["network", "eth0", "serial", "52:54:00:12:34:56"], ["disk", "vda", "size", "20"]]"#;
    multipart(
        CURL_BOUNDARY,
        &[
            Part {
                name: "section".into(),
                file: None,
                value: b"SERVER".to_vec(),
            },
            Part {
                name: "file".into(),
                file: Some(("hw.json".into(), Some("application/octet-stream".into()))),
                value: hw.to_vec(),
            },
        ],
    )
}

/// Byte strings that mean something to a multipart parser.
fn tricky_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        Just(b"\r\n".to_vec()),
        Just(b"\r\n\r\n".to_vec()),
        Just(b"--".to_vec()),
        Just(format!("\r\n--{CURL_BOUNDARY}").into_bytes()),
        Just(format!("--{CURL_BOUNDARY}--").into_bytes()),
        Just(b"Content-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n".to_vec()),
        Just(b"name=\"section\"".to_vec()),
        Just(b"\xff\xfe".to_vec()),
    ]
}

#[test]
fn arbitrary_bodies_never_panic() {
    let strategy = (
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2048),
            prop::collection::vec(tricky_bytes(), 0..32).prop_map(|v| v.concat()),
            prop::collection::vec(tricky_bytes(), 0..8).prop_map(|v| {
                let mut body = format!("--{CURL_BOUNDARY}\r\n").into_bytes();
                body.extend(v.concat());
                body
            }),
        ],
        read_sizes(),
    );
    check("arbitrary bodies", strategy, |(body, sizes)| {
        let env = post_env(
            &format!("multipart/form-data; boundary={CURL_BOUNDARY}"),
            body.len() as u64,
        );
        // The checks that hold for every input are in `run`.
        let _ = run(&env, &body, sizes)?;
        Ok(())
    });
}

/// An edit of a body.
#[derive(Clone, Debug)]
enum Mutation {
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    Repeat(Index, usize),
}

impl Mutation {
    fn apply(&self, body: &mut Vec<u8>) {
        let len = body.len();
        match self {
            Mutation::Set(i, b) if len > 0 => body[i.index(len)] = *b,
            Mutation::Insert(i, bytes) => {
                let at = i.index(len + 1);
                body.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete(i, n) if len > 0 => {
                let at = i.index(len);
                body.drain(at..(at + n).min(len));
            }
            Mutation::Truncate(i) => body.truncate(i.index(len + 1)),
            Mutation::Repeat(i, n) if len > 0 => {
                let at = i.index(len);
                let piece: Vec<u8> = body[at..(at + n).min(len)].to_vec();
                body.splice(at..at, piece);
            }
            _ => {}
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<Index>(), tricky_bytes()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 1usize..200).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 1usize..200).prop_map(|(i, n)| Mutation::Repeat(i, n)),
    ]
}

#[test]
fn mutated_curl_bodies_never_panic() {
    let strategy = (
        prop::collection::vec(mutation(), 1..8),
        prop_oneof![
            3 => Just(None),
            1 => (0u64..4096).prop_map(Some),
        ],
        read_sizes(),
    );
    let valid = curl_body();
    check(
        "mutated curl bodies",
        strategy,
        |(mutations, length, sizes)| {
            let mut body = valid.clone();
            for m in &mutations {
                m.apply(&mut body);
            }
            let length = length.unwrap_or(body.len() as u64);
            let env = post_env(
                &format!("multipart/form-data; boundary={CURL_BOUNDARY}"),
                length,
            );
            // The checks that hold for every input are in `run`.
            let _ = run(&env, &body, sizes)?;
            Ok(())
        },
    );
}

/// A CGI variable: absent, arbitrary bytes or text, one of the `near`
/// values (repeat one to make it likelier), or one with text around it.
fn env_value(near: &'static [&'static str]) -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        1 => Just(None),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Some),
        1 => any::<String>().prop_map(|s| Some(s.into_bytes())),
        6 => prop::sample::select(near).prop_map(|v| Some(v.as_bytes().to_vec())),
        2 => (prop::sample::select(near), any::<String>(), any::<bool>()).prop_map(
            |(base, extra, before)| {
                let v = if before {
                    format!("{extra}{base}")
                } else {
                    format!("{base}{extra}")
                };
                Some(v.into_bytes())
            }
        ),
    ]
}

#[test]
fn arbitrary_cgi_variables_never_panic() {
    let strategy = (
        prop_oneof![
            // Mostly POST: other methods stop early.
            6 => Just(Some(b"POST".to_vec())),
            1 => env_value(&["GET", "HEAD", "PUT", "post", ""]),
        ],
        env_value(&[
            "multipart/form-data; boundary=------------------------a3b2f4e5d6c7b8a9",
            "multipart/form-data; boundary=\"------------------------a3b2f4e5d6c7b8a9\"",
            "MULTIPART/FORM-DATA;boundary=------------------------a3b2f4e5d6c7b8a9;x=y",
            "multipart/form-data; boundary=",
            "multipart/form-data",
            "application/x-www-form-urlencoded",
            "text/plain",
            "",
        ]),
        env_value(&[
            "0",
            "1",
            "247",
            "65536",
            "99999999999999999999999",
            "-1",
            " 12 ",
            "1e3",
        ]),
        env_value(&[
            "section=SERVER&failure=vm",
            "file=x",
            "session=%ff",
            "a=%zz&&==;",
        ]),
        prop_oneof![
            Just(curl_body()),
            Just(b"section=SERVER&failure=vm".to_vec()),
            prop::collection::vec(any::<u8>(), 0..512),
        ],
        read_sizes(),
    );
    check(
        "arbitrary CGI variables",
        strategy,
        |(method, content_type, length, query, body, sizes)| {
            let env: Env = [
                ("REQUEST_METHOD", method),
                ("CONTENT_TYPE", content_type),
                ("CONTENT_LENGTH", length),
                ("QUERY_STRING", query),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            let result = run(&env, &body, sizes)?;
            // What is refused before any reading.
            if let Err(CgiError::BodyTooLarge { length, limit }) = &result {
                prop_assert!(length > limit);
                prop_assert!(*limit == LIMITS.max_body() || *limit == BODY_OVERHEAD);
            }
            Ok(())
        },
    );
}

/// The fields of a well-formed form, in any order, with ignored ones.
#[derive(Clone, Debug)]
struct Form {
    boundary: String,
    quoted: bool,
    parts: Vec<Part>,
    section: Option<String>,
    failure: Option<String>,
    session: Option<String>,
    file: Option<(String, Vec<u8>)>,
}

/// A file name curl would send unescaped: no quote, backslash or control
/// character; any other character, `.log.gz` suffix or not.
fn filename() -> impl Strategy<Value = String> {
    (
        "[^\"\\\\\\p{Cc}]{0,30}",
        prop::sample::select(vec!["", ".json", ".log.gz", ".py"]),
    )
        .prop_map(|(stem, suffix)| format!("{stem}{suffix}"))
}

fn file_data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..4096),
        prop::collection::vec(tricky_bytes(), 0..16).prop_map(|v| v.concat()),
    ]
}

fn text_value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,200}",
        Just(String::new()),
        "[\r\n-]{0,20}",
        any::<String>(),
    ]
}

fn form() -> impl Strategy<Value = Form> {
    (
        "[0-9A-Za-z_-]{1,70}",
        any::<bool>(),
        prop::option::of(text_value()),
        prop::option::of(text_value()),
        prop::option::of(text_value()),
        prop::option::of((
            filename(),
            prop::option::of("[a-z]{1,12}/[a-z.+-]{1,20}"),
            file_data(),
        )),
        prop::collection::vec(("[a-z_]{1,12}", text_value()), 0..3),
    )
        .prop_filter("known names are the fields under test", |f| {
            f.6.iter()
                .all(|(n, _)| !["section", "failure", "session", "file"].contains(&n.as_str()))
        })
        .prop_flat_map(
            |(boundary, quoted, section, failure, session, file, extra)| {
                let mut parts = Vec::new();
                for (name, value) in [
                    ("section", &section),
                    ("failure", &failure),
                    ("session", &session),
                ] {
                    if let Some(v) = value {
                        parts.push(Part {
                            name: name.into(),
                            file: None,
                            value: v.clone().into_bytes(),
                        });
                    }
                }
                if let Some((filename, content_type, data)) = &file {
                    parts.push(Part {
                        name: "file".into(),
                        file: Some((filename.clone(), content_type.clone())),
                        value: data.clone(),
                    });
                }
                for (name, value) in extra {
                    parts.push(Part {
                        name,
                        file: None,
                        value: value.into_bytes(),
                    });
                }
                let file = file.map(|(name, _, data)| (name, data));
                Just(parts).prop_shuffle().prop_map(move |parts| Form {
                    boundary: boundary.clone(),
                    quoted,
                    parts,
                    section: section.clone(),
                    failure: failure.clone(),
                    session: session.clone(),
                    file: file.clone(),
                })
            },
        )
}

#[test]
fn well_formed_bodies_round_trip() {
    check("round trip", (form(), read_sizes()), |(form, sizes)| {
        let delimiter = format!("\r\n--{}", form.boundary);
        let framed = |v: &[u8]| {
            let mut data = b"\r\n".to_vec();
            data.extend_from_slice(v);
            data.windows(delimiter.len())
                .all(|w| w != delimiter.as_bytes())
        };
        // A value containing the delimiter would end its part early.
        prop_assume!(form.parts.iter().all(|p| framed(&p.value)));
        let body = multipart(&form.boundary, &form.parts);
        let boundary = if form.quoted {
            format!("\"{}\"", form.boundary)
        } else {
            form.boundary.clone()
        };
        let env = post_env(
            &format!("multipart/form-data; boundary={boundary}"),
            body.len() as u64,
        );
        let request = match run(&env, &body, sizes)? {
            Ok(r) => r,
            Err(e) => return Err(TestCaseError::fail(format!("refused: {e:?}"))),
        };
        prop_assert_eq!(request.method, "POST");
        prop_assert_eq!(request.remote_addr, "192.0.2.1");
        prop_assert_eq!(request.section, form.section);
        prop_assert_eq!(request.failure, form.failure);
        prop_assert_eq!(request.session, form.session);
        let file = request
            .file
            .map(|Upload { filename, data }| (filename, data));
        prop_assert_eq!(file, form.file);
        Ok(())
    });
}

/// CONTENT_LENGTH against the actual body: longer is refused as truncated
/// (after reading the whole body), over the limit before reading, shorter
/// is malformed unless only the final CR LF is cut off, equal parses.
#[test]
fn content_length_decides_how_much_is_read() {
    let valid = curl_body();
    let len = valid.len() as u64;
    let strategy = (
        prop_oneof![
            0..len,
            Just(len),
            len + 1..len * 3,
            LIMITS.max_body() - 10..LIMITS.max_body() + 10,
            any::<u64>(),
        ],
        read_sizes(),
    );
    check("CONTENT_LENGTH values", strategy, |(length, sizes)| {
        let env = post_env(
            &format!("multipart/form-data; boundary={CURL_BOUNDARY}"),
            length,
        );
        let result = run(&env, &valid, sizes)?;
        match result {
            _ if length > LIMITS.max_body() => {
                prop_assert!(
                    matches!(result, Err(CgiError::BodyTooLarge { .. })),
                    "{:?}",
                    result
                )
            }
            Err(CgiError::Truncated { expected, received }) => {
                prop_assert!(length > len);
                prop_assert_eq!((expected, received), (length, len));
            }
            _ if length > len => return Err(TestCaseError::fail(format!("{result:?}"))),
            // The closing delimiter may end before the last CR LF.
            Ok(r) => {
                prop_assert!(length + 2 >= len, "{} of {} bytes: {:?}", length, len, r);
                prop_assert_eq!(r.section.as_deref(), Some("SERVER"));
                prop_assert_eq!(r.file.map(|f| f.filename), Some("hw.json".to_owned()));
            }
            Err(e) => {
                prop_assert!(length < len, "{:?}", e);
                prop_assert_eq!(e.status(), 400);
            }
        }
        Ok(())
    });
}

/// A complete form followed by fewer bytes than CONTENT_LENGTH announced is
/// refused however stdin delivers it, not only when the parser happened to
/// read past the closing delimiter.
#[test]
fn body_shorter_than_content_length_is_truncated_whatever_the_reads() {
    let body = curl_body();
    let len = body.len() as u64;
    for sizes in [
        vec![usize::MAX],
        vec![10],
        vec![1],
        vec![len as usize - 3, 1],
    ] {
        let env = post_env(
            &format!("multipart/form-data; boundary={CURL_BOUNDARY}"),
            len + 5,
        );
        let result = run(&env, &body, sizes.clone()).unwrap();
        assert!(
            matches!(result, Err(CgiError::Truncated { expected, received })
                if expected == len + 5 && received == len),
            "reads of {sizes:?}: {result:?}"
        );
    }
}

//! CGI request parsing on real and hostile bodies, through the library API
//! (environment and stdin injected, the process environment untouched).
//!
//! The well-formed bodies are produced by running the initrd's own `curl -F`
//! commands against a one-shot local listener, so they are byte for byte
//! what the legacy client sends.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use edeploy::cgi::{read_request, CgiError, Limits, Request, BODY_OVERHEAD, MAX_TEXT_FIELD};
use edeploy::logs::safe_base_name;

const LIMITS: Limits = Limits {
    max_hw_size: 1 << 20,
    max_log_size: 8 << 20,
};

/// A request as curl sends it: its content type and body.
struct Captured {
    content_type: String,
    body: Vec<u8>,
}

/// Runs `curl -s -S <args> http://127.0.0.1:<port>/upload.py` against a
/// one-shot listener and returns what it sent.
fn curl(args: &[&str], dir: &std::path::Path) -> Captured {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut headers = HashMap::new();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("POST /upload.py "), "{line}");
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.insert(k.to_ascii_lowercase(), v.trim().to_owned());
        }
        let mut out = stream;
        if headers.get("expect").is_some_and(|e| e == "100-continue") {
            out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
        }
        let len: usize = headers["content-length"].parse().unwrap();
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        Captured {
            content_type: headers["content-type"].clone(),
            body,
        }
    });
    let status = Command::new("curl")
        .args(["-s", "-S", "-o", "/dev/null"])
        .args(args)
        .arg(format!("http://127.0.0.1:{port}/upload.py"))
        .current_dir(dir)
        .status()
        .expect("curl is needed to generate the request bodies");
    assert!(status.success());
    server.join().unwrap()
}

/// Counts the bytes the parser pulls from the body.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn post(
    content_type: &str,
    content_length: Option<&str>,
    body: &[u8],
    limits: Limits,
) -> (Result<Request, CgiError>, u64) {
    let mut env: HashMap<&str, OsString> = HashMap::new();
    env.insert("REQUEST_METHOD", "POST".into());
    env.insert("CONTENT_TYPE", content_type.into());
    env.insert("REMOTE_ADDR", "192.0.2.7".into());
    if let Some(l) = content_length {
        env.insert("CONTENT_LENGTH", l.into());
    }
    let count = Arc::new(AtomicU64::new(0));
    let reader = Counting {
        inner: body,
        count: count.clone(),
    };
    let r = read_request(&|k| env.get(k).cloned(), reader, limits);
    (r, count.load(Ordering::Relaxed))
}

fn post_captured(c: &Captured) -> Result<Request, CgiError> {
    let len = c.body.len().to_string();
    post(&c.content_type, Some(&len), &c.body, LIMITS).0
}

fn fixtures() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hw.json"),
        br#"[["system", "product", "name", "edeploy_test_vm ()"], ["network", "eth0", "serial", "52:54:12:34:00:03"]]"#,
    )
    .unwrap();
    // Binary data with CR LF and dashes, as a gzip log can contain.
    let mut log = b"\x1f\x8b\x08\x00\r\n--\r\n\r\n--\xff\x00".to_vec();
    log.extend((0..=255u8).cycle().take(70_000));
    std::fs::write(dir.path().join("Dell-R630-ABC123.log.gz"), &log).unwrap();
    std::fs::write(
        dir.path().join("health.py"),
        b"[('system', 'product', 'name', 'vm'),\n ('cpu', 'logical', 'number', '4')]\n",
    )
    .unwrap();
    dir
}

#[test]
fn hardware_upload_with_section() {
    let dir = fixtures();
    let c = curl(&["-F", "section=SERVER", "-F", "file=@hw.json"], dir.path());
    let r = post_captured(&c).unwrap();
    assert_eq!(r.method, "POST");
    assert_eq!(r.remote_addr, "192.0.2.7");
    assert_eq!(r.section.as_deref(), Some("SERVER"));
    assert_eq!(r.failure, None);
    assert_eq!(r.session, None);
    let file = r.file.unwrap();
    assert_eq!(file.filename, "hw.json");
    assert!(!file.is_log());
    assert_eq!(
        file.data,
        std::fs::read(dir.path().join("hw.json")).unwrap()
    );
}

#[test]
fn failure_report_with_blank_section() {
    // The initrd sends `-F section=${SECTION}` even when SECTION is empty: a
    // blank multipart field is present and empty, as in Python's cgi module.
    let dir = fixtures();
    let c = curl(
        &[
            "-F",
            "section=",
            "-F",
            "failure=PROFILE",
            "-F",
            "file=@hw.json",
        ],
        dir.path(),
    );
    let r = post_captured(&c).unwrap();
    assert_eq!(r.section.as_deref(), Some(""));
    assert_eq!(r.failure.as_deref(), Some("PROFILE"));
    assert_eq!(r.file.unwrap().filename, "hw.json");
}

#[test]
fn log_upload_keeps_binary_data() {
    let dir = fixtures();
    let c = curl(
        &[
            "-F",
            "section=SERVER",
            "-F",
            "file=@Dell-R630-ABC123.log.gz",
        ],
        dir.path(),
    );
    let r = post_captured(&c).unwrap();
    let file = r.file.unwrap();
    assert_eq!(file.filename, "Dell-R630-ABC123.log.gz");
    assert!(file.is_log());
    assert_eq!(
        file.data,
        std::fs::read(dir.path().join("Dell-R630-ABC123.log.gz")).unwrap()
    );
}

#[test]
fn health_upload_with_session() {
    let dir = fixtures();
    let c = curl(
        &["-F", "file=@health.py", "-F", "session=bench-1"],
        dir.path(),
    );
    let r = post_captured(&c).unwrap();
    assert_eq!(r.session.as_deref(), Some("bench-1"));
    assert_eq!(r.section, None);
    assert_eq!(r.file.unwrap().filename, "health.py");
}

#[test]
fn literal_curl_body() {
    // Captured once from curl 7.88 (`-F section= -F failure=PROF -F file=@hw.json`),
    // so this test does not depend on curl.
    let body = b"--------------------------7af6a1c71b685c87\r\n\
Content-Disposition: form-data; name=\"section\"\r\n\r\n\r\n\
--------------------------7af6a1c71b685c87\r\n\
Content-Disposition: form-data; name=\"failure\"\r\n\r\nPROF\r\n\
--------------------------7af6a1c71b685c87\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"hw.json\"\r\n\
Content-Type: application/octet-stream\r\n\r\n{\"a\":1}\r\n\
--------------------------7af6a1c71b685c87--\r\n";
    let ct = "multipart/form-data; boundary=------------------------7af6a1c71b685c87";
    let (r, read) = post(ct, Some("402"), body, LIMITS);
    assert_eq!(body.len(), 402);
    assert_eq!(read, 402);
    let r = r.unwrap();
    assert_eq!(r.section.as_deref(), Some(""));
    assert_eq!(r.failure.as_deref(), Some("PROF"));
    assert_eq!(r.file.unwrap().data, b"{\"a\":1}");
}

fn hw_capture() -> Captured {
    let dir = fixtures();
    curl(&["-F", "section=SERVER", "-F", "file=@hw.json"], dir.path())
}

#[test]
fn truncated_multipart_is_400() {
    let c = hw_capture();
    // The CRLF after the closing delimiter is optional: cutting it is fine.
    for cut in [1, 2] {
        let body = &c.body[..c.body.len() - cut];
        let (r, _) = post(&c.content_type, Some(&body.len().to_string()), body, LIMITS);
        assert!(r.is_ok());
    }
    for cut in [3, 10, 50, c.body.len() / 2, c.body.len() - 1] {
        let body = &c.body[..c.body.len() - cut];
        let len = body.len().to_string();
        let (r, _) = post(&c.content_type, Some(&len), body, LIMITS);
        let e = r.unwrap_err();
        assert!(matches!(e, CgiError::BadMultipart(_)), "cut {cut}: {e:?}");
        assert_eq!(e.status(), 400);
    }
}

#[test]
fn content_length_too_long_is_truncated() {
    let c = hw_capture();
    let len = (c.body.len() + 10).to_string();
    let (r, read) = post(&c.content_type, Some(&len), &c.body, LIMITS);
    let e = r.unwrap_err();
    assert!(
        matches!(e, CgiError::Truncated { expected, received }
            if expected == c.body.len() as u64 + 10 && received == c.body.len() as u64),
        "{e:?}"
    );
    assert_eq!(e.status(), 400);
    assert_eq!(read, c.body.len() as u64);
    assert!(e.to_string().contains("CONTENT_LENGTH"), "{e}");
}

#[test]
fn content_length_too_short_is_400_and_reads_no_further() {
    let c = hw_capture();
    let short = c.body.len() - 10;
    let (r, read) = post(&c.content_type, Some(&short.to_string()), &c.body, LIMITS);
    let e = r.unwrap_err();
    assert!(matches!(e, CgiError::BadMultipart(_)), "{e:?}");
    assert_eq!(e.status(), 400);
    assert_eq!(read, short as u64);
}

#[test]
fn missing_content_length_is_411() {
    let c = hw_capture();
    let (r, read) = post(&c.content_type, None, &c.body, LIMITS);
    let e = r.unwrap_err();
    assert!(matches!(e, CgiError::LengthRequired));
    assert_eq!(e.status(), 411);
    assert_eq!(read, 0);
}

#[test]
fn missing_boundary_is_400() {
    let c = hw_capture();
    let len = c.body.len().to_string();
    for ct in [
        "multipart/form-data",
        "multipart/form-data; charset=utf-8",
        "multipart/form-data; boundary=",
    ] {
        let (r, read) = post(ct, Some(&len), &c.body, LIMITS);
        let e = r.unwrap_err();
        assert!(matches!(e, CgiError::MissingBoundary), "{ct}: {e:?}");
        assert_eq!(e.status(), 400);
        assert_eq!(read, 0);
    }
    for ct in [
        "multipart/form-data; boundary=\"\"",
        "multipart/form-data; boundary=\"x",
    ] {
        let (r, read) = post(ct, Some(&len), &c.body, LIMITS);
        let e = r.unwrap_err();
        assert!(matches!(e, CgiError::BadMultipart(_)), "{ct}: {e:?}");
        assert_eq!(read, 0);
    }
    let long = format!("multipart/form-data; boundary={}", "b".repeat(71));
    let (r, _) = post(&long, Some(&len), &c.body, LIMITS);
    assert!(matches!(r, Err(CgiError::BadMultipart(_))), "{r:?}");
}

#[test]
fn wrong_boundary_is_400() {
    let c = hw_capture();
    let len = c.body.len().to_string();
    let (r, _) = post(
        "multipart/form-data; boundary=nothere",
        Some(&len),
        &c.body,
        LIMITS,
    );
    assert_eq!(r.unwrap_err().status(), 400);
}

#[test]
fn wrong_content_type_is_415() {
    let c = hw_capture();
    let len = c.body.len().to_string();
    for ct in [
        "text/plain",
        "application/json",
        "multipart/mixed; boundary=x",
    ] {
        let (r, read) = post(ct, Some(&len), &c.body, LIMITS);
        let e = r.unwrap_err();
        assert!(
            matches!(e, CgiError::UnsupportedMediaType(_)),
            "{ct}: {e:?}"
        );
        assert_eq!(e.status(), 415);
        assert_eq!(read, 0);
    }
}

/// A multipart body with one `file` field of `size` bytes.
fn body_with_file(filename: &str, size: usize) -> (String, Vec<u8>) {
    let mut body = format!(
        "--B\r\nContent-Disposition: form-data; name=\"section\"\r\n\r\nSERVER\r\n\
         --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend(std::iter::repeat_n(b'x', size));
    body.extend_from_slice(b"\r\n--B--\r\n");
    ("multipart/form-data; boundary=B".to_owned(), body)
}

#[test]
fn oversized_hardware_file_stops_reading_early() {
    let limits = Limits {
        max_hw_size: 100_000,
        max_log_size: 64 << 20,
    };
    // Allowed as a whole body (a log could be that large), but the hardware
    // file is over its own limit: parsing must stop right after the limit.
    let (ct, body) = body_with_file("hw.json", 32 << 20);
    let (r, read) = post(&ct, Some(&body.len().to_string()), &body, limits);
    let e = r.unwrap_err();
    assert!(
        matches!(&e, CgiError::FieldTooLarge { field, limit: 100_000 } if field == "file"),
        "{e:?}"
    );
    assert_eq!(e.status(), 413);
    assert!(read < 100_000 + 3 * 65_536, "read {read} bytes");
}

#[test]
fn log_file_has_its_own_limit() {
    let limits = Limits {
        max_hw_size: 1000,
        max_log_size: 200_000,
    };
    let (ct, body) = body_with_file("a.log.gz", 150_000);
    let (r, _) = post(&ct, Some(&body.len().to_string()), &body, limits);
    assert_eq!(r.unwrap().file.unwrap().data.len(), 150_000);
    let (ct, body) = body_with_file("a.log.gz", 200_001);
    let (r, _) = post(&ct, Some(&body.len().to_string()), &body, limits);
    assert_eq!(r.unwrap_err().status(), 413);
    let (ct, body) = body_with_file("a.json", 1001);
    let (r, _) = post(&ct, Some(&body.len().to_string()), &body, limits);
    assert_eq!(r.unwrap_err().status(), 413);
    let (ct, body) = body_with_file("a.json", 1000);
    let (r, _) = post(&ct, Some(&body.len().to_string()), &body, limits);
    assert_eq!(r.unwrap().file.unwrap().data.len(), 1000);
}

#[test]
fn body_over_limit_is_refused_before_reading() {
    let (ct, body) = body_with_file("hw.json", 10);
    let huge = (LIMITS.max_log_size + BODY_OVERHEAD + 1).to_string();
    let (r, read) = post(&ct, Some(&huge), &body, LIMITS);
    let e = r.unwrap_err();
    assert!(matches!(e, CgiError::BodyTooLarge { .. }), "{e:?}");
    assert_eq!(e.status(), 413);
    assert_eq!(read, 0);
}

#[test]
fn oversized_text_field_is_413() {
    let value = "s".repeat(MAX_TEXT_FIELD as usize + 1);
    let body = format!(
        "--B\r\nContent-Disposition: form-data; name=\"section\"\r\n\r\n{value}\r\n--B--\r\n"
    );
    let (r, _) = post(
        "multipart/form-data; boundary=B",
        Some(&body.len().to_string()),
        body.as_bytes(),
        LIMITS,
    );
    let e = r.unwrap_err();
    assert!(
        matches!(&e, CgiError::FieldTooLarge { field, .. } if field == "section"),
        "{e:?}"
    );
    // An unknown field is bounded the same way.
    let body = body.replace("name=\"section\"", "name=\"junk\"");
    let (r, _) = post(
        "multipart/form-data; boundary=B",
        Some(&body.len().to_string()),
        body.as_bytes(),
        LIMITS,
    );
    assert_eq!(r.unwrap_err().status(), 413);
}

fn multipart(parts: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(b"--B\r\n");
        body.extend_from_slice(p);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--B--\r\n");
    body
}

fn post_parts(parts: &[&[u8]]) -> Result<Request, CgiError> {
    let body = multipart(parts);
    post(
        "multipart/form-data; boundary=B",
        Some(&body.len().to_string()),
        &body,
        LIMITS,
    )
    .0
}

#[test]
fn non_utf8_is_400_never_a_panic() {
    let cases: [&[u8]; 4] = [
        b"Content-Disposition: form-data; name=\"file\"; filename=\"a\xff.json\"\r\n\r\n[]",
        b"Content-Disposition: form-data; name=\"sec\xfftion\"\r\n\r\nx",
        b"Content-Disposition: form-data; name=\"section\"\r\n\r\nA\xff\xfe",
        b"Content-Disposition: form-data; name=\"session\"\r\n\r\n\xc3\x28",
    ];
    for case in cases {
        let e = post_parts(&[case]).unwrap_err();
        assert!(matches!(e, CgiError::NotUtf8(_)), "{e:?}");
        assert_eq!(e.status(), 400);
    }
    // Binary file content is fine.
    let r = post_parts(&[
        b"Content-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n\xff\xfe\x00",
    ])
    .unwrap();
    assert_eq!(r.file.unwrap().data, b"\xff\xfe\x00");
}

#[test]
fn path_components_are_kept_raw_for_the_caller_to_reduce() {
    let r = post_parts(&[
        b"Content-Disposition: form-data; name=\"file\"; filename=\"../../etc/cron.d/x.log.gz\"\r\n\r\ndata",
        b"Content-Disposition: form-data; name=\"session\"\r\n\r\n../../../tmp",
        b"Content-Disposition: form-data; name=\"section\"\r\n\r\n../SERVER",
    ])
    .unwrap();
    let file = r.file.unwrap();
    assert_eq!(file.filename, "../../etc/cron.d/x.log.gz");
    assert_eq!(safe_base_name(&file.filename), Ok("x.log.gz"));
    assert_eq!(r.session.as_deref(), Some("../../../tmp"));
    assert_eq!(r.section.as_deref(), Some("../SERVER"));
    assert!(safe_base_name("../..").is_err());
}

#[test]
fn curl_sends_path_in_filename_when_asked() {
    let dir = fixtures();
    let c = curl(
        &[
            "-F",
            "file=@hw.json;filename=../../x.log.gz",
            "-F",
            "session=../s",
        ],
        dir.path(),
    );
    let r = post_captured(&c).unwrap();
    assert_eq!(r.file.unwrap().filename, "../../x.log.gz");
    assert_eq!(r.session.as_deref(), Some("../s"));
}

#[test]
fn quotes_and_newlines_in_values_are_data() {
    let r = post_parts(&[
        b"Content-Disposition: form-data; name=\"failure\"\r\n\r\na'b\"c\r\nd$(reboot)`x`",
        b"Content-Disposition: form-data; name=\"file\"; filename=\"a\\\"b.json\"\r\n\r\n[]",
    ])
    .unwrap();
    assert_eq!(r.failure.as_deref(), Some("a'b\"c\r\nd$(reboot)`x`"));
    assert_eq!(r.file.unwrap().filename, "a\"b.json");
}

#[test]
fn duplicate_fields_are_400() {
    let file = b"Content-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n[]";
    let e = post_parts(&[file, file]).unwrap_err();
    assert!(
        matches!(e, CgiError::DuplicateField(ref f) if f == "file"),
        "{e:?}"
    );
    let sec = b"Content-Disposition: form-data; name=\"section\"\r\n\r\nA";
    assert_eq!(post_parts(&[sec, sec]).unwrap_err().status(), 400);
}

#[test]
fn post_without_file_is_not_an_error() {
    let r = post_parts(&[b"Content-Disposition: form-data; name=\"section\"\r\n\r\nS"]).unwrap();
    assert_eq!(r.section.as_deref(), Some("S"));
    assert!(r.file.is_none());
    // A file field without a file name is still the file (the name is "").
    let r = post_parts(&[b"Content-Disposition: form-data; name=\"file\"\r\n\r\n[]"]).unwrap();
    assert_eq!(r.file.unwrap().filename, "");
}

fn with_env(vars: &[(&str, &str)], body: &[u8]) -> Result<Request, CgiError> {
    let env: HashMap<String, OsString> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    read_request(&|k| env.get(k).cloned(), body, LIMITS)
}

#[test]
fn methods() {
    let r = with_env(&[("REQUEST_METHOD", "GET")], b"").unwrap();
    assert!(r.file.is_none());
    assert_eq!(r.remote_addr, "-");
    assert!(with_env(&[("REQUEST_METHOD", "HEAD")], b"").is_ok());
    for m in ["PUT", "DELETE", "post", "OPTIONS", ""] {
        let e = with_env(&[("REQUEST_METHOD", m)], b"").unwrap_err();
        assert!(matches!(e, CgiError::MethodNotAllowed(_)), "{m}: {e:?}");
        assert_eq!(e.status(), 405);
    }
    let e = with_env(&[], b"").unwrap_err();
    assert_eq!(e.status(), 405);
}

#[test]
fn query_string_with_file_or_garbage() {
    let e = with_env(
        &[("REQUEST_METHOD", "GET"), ("QUERY_STRING", "file=x")],
        b"",
    )
    .unwrap_err();
    assert!(matches!(e, CgiError::FileNotMultipart));
    let e = with_env(
        &[("REQUEST_METHOD", "GET"), ("QUERY_STRING", "section=%ff")],
        b"",
    )
    .unwrap_err();
    assert!(matches!(e, CgiError::NotUtf8(_)));
    let long = format!("section={}", "a".repeat(MAX_TEXT_FIELD as usize));
    let e = with_env(&[("REQUEST_METHOD", "GET"), ("QUERY_STRING", &long)], b"").unwrap_err();
    assert_eq!(e.status(), 413);
}

#[test]
fn non_utf8_environment_is_400() {
    use std::os::unix::ffi::OsStringExt;
    let env = |k: &str| match k {
        "REQUEST_METHOD" => Some(OsString::from("POST")),
        "CONTENT_TYPE" => Some(OsString::from_vec(
            b"multipart/form-data; boundary=\xff".to_vec(),
        )),
        "CONTENT_LENGTH" => Some(OsString::from("0")),
        _ => None,
    };
    let e = read_request(&env, &b""[..], LIMITS).unwrap_err();
    assert!(
        matches!(e, CgiError::NotUtf8(ref v) if v == "CONTENT_TYPE"),
        "{e:?}"
    );
}

#[test]
fn urlencoded_post_without_content_type() {
    let body = b"section=S2&failure=P";
    let env = |k: &str| match k {
        "REQUEST_METHOD" => Some(OsString::from("POST")),
        "CONTENT_LENGTH" => Some(OsString::from(body.len().to_string())),
        _ => None,
    };
    let r = read_request(&env, &body[..], LIMITS).unwrap();
    assert_eq!(r.section.as_deref(), Some("S2"));
    assert_eq!(r.failure.as_deref(), Some("P"));
}

#[test]
fn discard_rest_reads_at_most_an_acceptable_body() {
    let small = Limits {
        max_hw_size: 1000,
        max_log_size: 1000,
    };
    let data = vec![0u8; 200_000];
    for (length, consumed, expect) in [
        ("5000", 100, 4900),
        ("5000", 5000, 0),
        ("5000", 6000, 0),
        ("500000", 0, 0),
        ("junk", 0, 0),
    ] {
        let env = |k: &str| (k == "CONTENT_LENGTH").then(|| OsString::from(length));
        let mut reader = &data[..];
        edeploy::cgi::discard_rest(&env, &mut reader, consumed, small);
        assert_eq!(data.len() - reader.len(), expect, "{length} {consumed}");
    }
}

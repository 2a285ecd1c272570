//! CGI requests: what Apache (mod_cgi or mod_cgid) hands to `upload.py` and
//! `upload-health.py`, read into a [`Request`] without trusting any of it.
//!
//! The initrd talks to us with `curl -s -S -F section=… [-F failure=…]
//! -F file=@/hw.json` (and `-F file=@/<vendor>-<product>-<serial>.log.gz`,
//! `-F file=@/health.py [-F session=…]`): a `multipart/form-data` POST. The
//! body is parsed with `multer`, driven by a tiny blocking executor
//! ([`block_on`]) because a CGI process has nothing else to do while it
//! waits for stdin. Every size is bounded before it is read: the whole body by
//! `CONTENT_LENGTH` (checked against the limits first), the `file` field by
//! `max_hw_size` or `max_log_size` depending on its name, every other field
//! by [`MAX_TEXT_FIELD`]. Reading stops at the first byte over a limit, so a
//! gigabyte upload costs one read buffer, not a gigabyte.
//!
//! # Status codes
//!
//! The legacy initrd runs `curl` without `-f` and executes whatever body it
//! receives (`/configure`), whatever the HTTP status. Every answer it must
//! execute — the configure script, the error scripts for 'No file passed to
//! the CGI', an invalid hardware file, an unknown section, no matching
//! profile, and the empty answer to a failure report — is therefore sent with
//! status 200, exactly as the legacy server did, so that proxies, logs and the
//! initrd see what they always saw.
//!
//! A non-200 status is used only for requests the initrd never makes, where it
//! cannot change anything for it: a method other than GET/HEAD/POST (405), a
//! POST without `CONTENT_LENGTH` (411), a body or field over the configured
//! limits (413), a content type that is not a form (415), and a body that is
//! not a well-formed form — missing boundary, truncated multipart,
//! `CONTENT_LENGTH` that does not match the body, non-UTF-8 text (400). Those
//! answers still carry an error script as body, so even a client that runs
//! it blindly stops with the message instead of doing something else.
//!
//! mod_cgid drops a script's answer when the script did not read the whole
//! body, so a refused body is drained afterwards when it is no larger than
//! an acceptable one ([`discard_rest`]); a larger one is abandoned at once
//! and the client sees the connection reset.
//!
//! A GET (or a POST without a `file` field) is not an error here: the caller
//! answers 'No file passed to the CGI' with status 200, as the legacy did.
//!
//! # Blank fields
//!
//! As Python 2's `cgi.FieldStorage` (with its default `keep_blank_values=0`):
//! a blank value in a query string or urlencoded body counts as absent, but a
//! blank multipart field (`curl -F section=`) is present with the value `""`.

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io::{self, Read, Write};
use std::panic::UnwindSafe;
use std::path::Path;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;

use crate::journal::Decision;
use crate::logs::{self, LogError, UtcTime};
use crate::script;

/// Largest accepted value of a text field (`section`, `failure`, `session`,
/// and anything we ignore), and of a query string.
pub const MAX_TEXT_FIELD: u64 = 4096;

/// Room in a body for the multipart framing and the small fields around the
/// file; also the largest accepted urlencoded body.
pub const BODY_OVERHEAD: u64 = 64 * 1024;

/// Size of one read from stdin, hence the most the parser buffers at once
/// beyond the field being collected.
const READ_CHUNK: usize = 64 * 1024;

/// Suffix that marks a `file` upload as an installation log.
pub const LOG_SUFFIX: &str = ".log.gz";

/// Upload size limits (from `edeploy.conf`, see `config::Config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest hardware description (`file` not ending in `.log.gz`).
    pub max_hw_size: u64,
    /// Largest installation log (`file` ending in `.log.gz`).
    pub max_log_size: u64,
}

impl Limits {
    /// Largest accepted `CONTENT_LENGTH` of a multipart body.
    pub fn max_body(&self) -> u64 {
        self.max_file().saturating_add(BODY_OVERHEAD)
    }

    fn max_file(&self) -> u64 {
        self.max_hw_size.max(self.max_log_size)
    }

    /// The limit for a `file` field with this file name.
    pub fn for_file(&self, filename: &str) -> u64 {
        if filename.ends_with(LOG_SUFFIX) {
            self.max_log_size
        } else {
            self.max_hw_size
        }
    }
}

/// One CGI request, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `REQUEST_METHOD`: `GET`, `HEAD` or `POST`.
    pub method: String,
    /// `REMOTE_ADDR`, or `-` when the server did not set it.
    pub remote_addr: String,
    pub section: Option<String>,
    pub failure: Option<String>,
    pub session: Option<String>,
    pub file: Option<Upload>,
}

/// The `file` field of a multipart form.
#[derive(Clone, PartialEq, Eq)]
pub struct Upload {
    /// The file name as sent by the client (`""` when it sent none); not
    /// sanitised: callers that use it as a path must reduce it first.
    pub filename: String,
    pub data: Vec<u8>,
}

impl Upload {
    /// An installation log (stored in LOGDIR) rather than a hardware file.
    pub fn is_log(&self) -> bool {
        self.filename.ends_with(LOG_SUFFIX)
    }
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload")
            .field("filename", &self.filename)
            .field("len", &self.data.len())
            .finish()
    }
}

/// Why a request was refused before reaching the application.
#[derive(Debug)]
pub enum CgiError {
    /// `REQUEST_METHOD` other than GET, HEAD or POST (or unset).
    MethodNotAllowed(String),
    /// A POST without `CONTENT_LENGTH`.
    LengthRequired,
    /// `CONTENT_LENGTH` that is not a decimal number.
    BadContentLength(String),
    /// `CONTENT_LENGTH` over what the content type allows.
    BodyTooLarge { length: u64, limit: u64 },
    /// A field over its limit; reading stopped there.
    FieldTooLarge { field: String, limit: u64 },
    /// A POST whose content type is not a form.
    UnsupportedMediaType(String),
    /// `multipart/form-data` without a boundary parameter.
    MissingBoundary,
    /// A body that is not a well-formed multipart form (incomplete, or
    /// shorter than its framing because `CONTENT_LENGTH` was too small).
    BadMultipart(String),
    /// The body ended before `CONTENT_LENGTH` bytes (too large a
    /// `CONTENT_LENGTH`, or the client went away).
    Truncated { expected: u64, received: u64 },
    /// Text that must be UTF-8 and is not.
    NotUtf8(String),
    /// A field given twice.
    DuplicateField(String),
    /// `file` sent as a plain form value instead of a multipart file.
    FileNotMultipart,
    /// Reading stdin failed.
    Io(io::Error),
}

impl CgiError {
    /// The HTTP status to answer with (see the module documentation).
    pub fn status(&self) -> u16 {
        match self {
            CgiError::MethodNotAllowed(_) => 405,
            CgiError::LengthRequired => 411,
            CgiError::BodyTooLarge { .. } | CgiError::FieldTooLarge { .. } => 413,
            CgiError::UnsupportedMediaType(_) => 415,
            CgiError::BadContentLength(_)
            | CgiError::MissingBoundary
            | CgiError::BadMultipart(_)
            | CgiError::Truncated { .. }
            | CgiError::NotUtf8(_)
            | CgiError::DuplicateField(_)
            | CgiError::FileNotMultipart => 400,
            CgiError::Io(_) => 500,
        }
    }
}

impl fmt::Display for CgiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CgiError::MethodNotAllowed(m) if m.is_empty() => {
                write!(f, "REQUEST_METHOD is not set: not run as a CGI?")
            }
            CgiError::MethodNotAllowed(m) => {
                write!(f, "method {} not allowed: use POST (or GET)", escape(m))
            }
            CgiError::LengthRequired => write!(f, "POST without CONTENT_LENGTH"),
            CgiError::BadContentLength(v) => {
                write!(f, "invalid CONTENT_LENGTH {}", escape(v))
            }
            CgiError::BodyTooLarge { length, limit } => write!(
                f,
                "request body of {length} bytes is over the limit of {limit} bytes"
            ),
            CgiError::FieldTooLarge { field, limit } => write!(
                f,
                "field {} is over the limit of {limit} bytes",
                escape(field)
            ),
            CgiError::UnsupportedMediaType(t) => write!(
                f,
                "content type {} not supported: use multipart/form-data",
                escape(t)
            ),
            CgiError::MissingBoundary => {
                write!(f, "multipart/form-data without a boundary parameter")
            }
            CgiError::BadMultipart(why) => write!(f, "malformed multipart body: {why}"),
            CgiError::Truncated { expected, received } => write!(
                f,
                "request body truncated: CONTENT_LENGTH announced {expected} bytes, \
                 only {received} received"
            ),
            CgiError::NotUtf8(what) => write!(f, "{what} is not valid UTF-8"),
            CgiError::DuplicateField(name) => {
                write!(f, "field {} given more than once", escape(name))
            }
            CgiError::FileNotMultipart => write!(
                f,
                "the file field must be a file upload in a multipart/form-data POST"
            ),
            CgiError::Io(e) => write!(f, "cannot read the request body: {e}"),
        }
    }
}

impl std::error::Error for CgiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CgiError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads the request of this process: its environment and stdin.
///
/// Then discards what is left of the body (see [`discard_rest`]), so that
/// Apache delivers the answer.
pub fn read_process_request(limits: Limits) -> Result<Request, CgiError> {
    let env = |name: &str| std::env::var_os(name);
    let mut stdin = Counted {
        inner: io::stdin(),
        count: 0,
    };
    let result = read_request(&env, &mut stdin, limits);
    if !matches!(result, Err(CgiError::Truncated { .. } | CgiError::Io(_))) {
        discard_rest(&env, &mut stdin.inner, stdin.count, limits);
    }
    result
}

/// Reads and drops the rest of the body when it is no larger than a body we
/// would accept ([`Limits::max_body`]); a larger rest is left unread.
///
/// mod_cgid writes the whole body to the script before reading its answer,
/// and drops the answer (resetting the connection) when the script stopped
/// reading early. Discarding costs time, not memory, and never more than a
/// valid request would; beyond that, a quick reset beats reading a
/// gigabyte. Parsing itself ([`read_request`]) still stops at the first byte
/// over a limit.
pub fn discard_rest<R: Read>(
    env: &dyn Fn(&str) -> Option<OsString>,
    body: &mut R,
    consumed: u64,
    limits: Limits,
) {
    let length = env("CONTENT_LENGTH")
        .and_then(|v| v.into_string().ok())
        .and_then(|v| parse_length(&v).ok());
    if let Some(rest) = length.map(|l| l.saturating_sub(consumed)) {
        if rest > 0 && rest <= limits.max_body() {
            // A read error only means there is nothing more to discard.
            let _ = io::copy(&mut body.take(rest), &mut io::sink());
        }
    }
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Reads a request from the CGI variables given by `env` and the body in
/// `body` (of which at most `CONTENT_LENGTH` bytes are read).
pub fn read_request<R: Read + Send + Unpin>(
    env: &dyn Fn(&str) -> Option<OsString>,
    body: R,
    limits: Limits,
) -> Result<Request, CgiError> {
    let method = env_text(env, "REQUEST_METHOD")?.unwrap_or_default();
    let remote_addr = env_text(env, "REMOTE_ADDR")?
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "-".to_owned());
    let mut fields = Fields::default();
    match method.as_str() {
        "GET" | "HEAD" => {
            let query = env_text(env, "QUERY_STRING")?.unwrap_or_default();
            if query.len() as u64 > MAX_TEXT_FIELD {
                return Err(CgiError::FieldTooLarge {
                    field: "QUERY_STRING".to_owned(),
                    limit: MAX_TEXT_FIELD,
                });
            }
            parse_urlencoded(query.as_bytes(), &mut fields)?;
        }
        "POST" => read_post(env, body, limits, &mut fields)?,
        _ => return Err(CgiError::MethodNotAllowed(method)),
    }
    Ok(Request {
        method,
        remote_addr,
        section: fields.section,
        failure: fields.failure,
        session: fields.session,
        file: fields.file,
    })
}

/// A CGI variable as text; absent is `None`, non-UTF-8 is an error.
fn env_text(
    env: &dyn Fn(&str) -> Option<OsString>,
    name: &str,
) -> Result<Option<String>, CgiError> {
    match env(name) {
        None => Ok(None),
        Some(v) => v
            .into_string()
            .map(Some)
            .map_err(|_| CgiError::NotUtf8(name.to_owned())),
    }
}

#[derive(Default)]
struct Fields {
    section: Option<String>,
    failure: Option<String>,
    session: Option<String>,
    file: Option<Upload>,
}

impl Fields {
    /// The slot of a known text field; `None` for fields we ignore, as the
    /// legacy script ignored them.
    fn text_slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        match name {
            "section" => Some(&mut self.section),
            "failure" => Some(&mut self.failure),
            "session" => Some(&mut self.session),
            _ => None,
        }
    }

    fn set_text(&mut self, name: &str, value: Vec<u8>) -> Result<(), CgiError> {
        let Some(slot) = self.text_slot(name) else {
            return Ok(());
        };
        if slot.is_some() {
            return Err(CgiError::DuplicateField(name.to_owned()));
        }
        let value = String::from_utf8(value)
            .map_err(|_| CgiError::NotUtf8(format!("field {}", escape(name))))?;
        *slot = Some(value);
        Ok(())
    }
}

fn read_post<R: Read + Send + Unpin>(
    env: &dyn Fn(&str) -> Option<OsString>,
    body: R,
    limits: Limits,
    fields: &mut Fields,
) -> Result<(), CgiError> {
    let length = match env_text(env, "CONTENT_LENGTH")? {
        None => return Err(CgiError::LengthRequired),
        Some(v) if v.trim().is_empty() => return Err(CgiError::LengthRequired),
        Some(v) => parse_length(&v)?,
    };
    // Python's FieldStorage treats a POST without a type as urlencoded.
    let content_type = env_text(env, "CONTENT_TYPE")?.unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "multipart/form-data" => {
            let boundary = multer::parse_boundary(&content_type).map_err(|e| match e {
                multer::Error::NoBoundary => CgiError::MissingBoundary,
                e => CgiError::BadMultipart(format!("bad CONTENT_TYPE: {e}")),
            })?;
            // RFC 2046: 1 to 70 characters. An empty one would make every
            // body look like an empty form.
            if boundary.is_empty() {
                return Err(CgiError::MissingBoundary);
            }
            if boundary.len() > 70 {
                return Err(CgiError::BadMultipart(
                    "boundary longer than 70 characters".to_owned(),
                ));
            }
            if length > limits.max_body() {
                return Err(CgiError::BodyTooLarge {
                    length,
                    limit: limits.max_body(),
                });
            }
            let mut stream = BodyStream::new(body, length);
            block_on(read_multipart(&mut stream, boundary, limits, fields))?;
            // multer stops at the closing delimiter; whether it polled the
            // body's end by then depends on how the reads fell. Reading the
            // rest (within the length checked above) refuses a body shorter
            // than CONTENT_LENGTH every time.
            stream.read_rest()
        }
        "application/x-www-form-urlencoded" | "" => {
            if length > BODY_OVERHEAD {
                return Err(CgiError::BodyTooLarge {
                    length,
                    limit: BODY_OVERHEAD,
                });
            }
            let mut data = Vec::new();
            body.take(length)
                .read_to_end(&mut data)
                .map_err(CgiError::Io)?;
            if (data.len() as u64) < length {
                return Err(CgiError::Truncated {
                    expected: length,
                    received: data.len() as u64,
                });
            }
            parse_urlencoded(&data, fields)
        }
        _ => Err(CgiError::UnsupportedMediaType(content_type)),
    }
}

fn parse_length(v: &str) -> Result<u64, CgiError> {
    let t = v.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CgiError::BadContentLength(v.to_owned()));
    }
    // All digits: the only possible failure is overflow, which is too large.
    Ok(t.parse::<u64>().unwrap_or(u64::MAX))
}

/// `a=1&b=2;c=3` as Python 2's `parse_qsl` reads it: `+` is a space, `%XX`
/// a byte (invalid escapes kept as is), pairs without `=` or with a blank
/// value skipped.
fn parse_urlencoded(data: &[u8], fields: &mut Fields) -> Result<(), CgiError> {
    for pair in data.split(|&b| b == b'&' || b == b';') {
        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (name, value) = (&pair[..eq], &pair[eq + 1..]);
        if value.is_empty() {
            continue;
        }
        let name = String::from_utf8(percent_decode(name))
            .map_err(|_| CgiError::NotUtf8("a form field name".to_owned()))?;
        if name == "file" {
            return Err(CgiError::FileNotMultipart);
        }
        let value = percent_decode(value);
        if value.len() as u64 > MAX_TEXT_FIELD {
            return Err(CgiError::FieldTooLarge {
                field: name,
                limit: MAX_TEXT_FIELD,
            });
        }
        fields.set_text(&name, value)?;
    }
    Ok(())
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        let escaped = match (b, s.get(i + 1), s.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(if b == b'+' { b' ' } else { b });
                i += 1;
            }
        }
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

async fn read_multipart<R: Read + Send + Unpin>(
    stream: &mut BodyStream<R>,
    boundary: String,
    limits: Limits,
    fields: &mut Fields,
) -> Result<(), CgiError> {
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limits.max_body())
            .per_field(MAX_TEXT_FIELD)
            .for_field("file", limits.max_file()),
    );
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    while let Some(mut field) = multipart.next_field().await.map_err(from_multer)? {
        // multer drops a name or file name that is not UTF-8; refuse the
        // field instead of silently reading it as unnamed.
        let disposition = field
            .headers()
            .get("content-disposition")
            .map(|v| v.as_bytes());
        if disposition.is_some_and(|d| std::str::from_utf8(d).is_err()) {
            return Err(CgiError::NotUtf8(
                "the Content-Disposition of a form field".to_owned(),
            ));
        }
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            if fields.file.is_some() {
                return Err(CgiError::DuplicateField(name));
            }
            let filename = field.file_name().unwrap_or_default().to_owned();
            let limit = limits.for_file(&filename);
            let mut data = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(from_multer)? {
                if (data.len() as u64).saturating_add(chunk.len() as u64) > limit {
                    return Err(CgiError::FieldTooLarge { field: name, limit });
                }
                data.extend_from_slice(&chunk);
            }
            fields.file = Some(Upload { filename, data });
        } else {
            // multer bounds these to MAX_TEXT_FIELD.
            let mut value = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(from_multer)? {
                value.extend_from_slice(&chunk);
            }
            fields.set_text(&name, value)?;
        }
    }
    Ok(())
}

fn from_multer(e: multer::Error) -> CgiError {
    match e {
        multer::Error::FieldSizeExceeded { limit, field_name } => CgiError::FieldTooLarge {
            field: field_name.unwrap_or_default(),
            limit,
        },
        multer::Error::StreamSizeExceeded { limit } => CgiError::BodyTooLarge {
            length: limit.saturating_add(1),
            limit,
        },
        multer::Error::StreamReadFailed(e) => match e.downcast::<BodyError>() {
            Ok(body) => match *body {
                BodyError::Truncated { expected, received } => {
                    CgiError::Truncated { expected, received }
                }
                BodyError::Io(e) => CgiError::Io(e),
            },
            Err(e) => CgiError::BadMultipart(e.to_string()),
        },
        multer::Error::IncompleteStream
        | multer::Error::IncompleteFieldData { .. }
        | multer::Error::IncompleteHeaders => CgiError::BadMultipart(format!(
            "{e} (body cut short, or CONTENT_LENGTH smaller than the body)"
        )),
        e => CgiError::BadMultipart(e.to_string()),
    }
}

/// What went wrong while reading stdin (carried through multer's boxed
/// stream error, then turned back into a [`CgiError`]).
#[derive(Debug)]
enum BodyError {
    Truncated { expected: u64, received: u64 },
    Io(io::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Truncated { expected, received } => {
                write!(f, "body truncated at {received} of {expected} bytes")
            }
            BodyError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// The request body as a stream of chunks, never reading past
/// `CONTENT_LENGTH`.
///
/// After each chunk it reports `Pending` once (waking itself at once): multer
/// drains its input until `Pending`, so without this pause it would buffer the
/// whole body before checking a single field limit.
struct BodyStream<R> {
    reader: R,
    expected: u64,
    received: u64,
    pause: bool,
}

impl<R> BodyStream<R> {
    fn new(reader: R, expected: u64) -> BodyStream<R> {
        BodyStream {
            reader,
            expected,
            received: 0,
            pause: false,
        }
    }
}

impl<R: Read> BodyStream<R> {
    /// Reads and drops what is left of the body (after the form's closing
    /// delimiter, the epilogue); an early end is [`CgiError::Truncated`].
    fn read_rest(&mut self) -> Result<(), CgiError> {
        let left = self.expected.saturating_sub(self.received);
        let n =
            io::copy(&mut (&mut self.reader).take(left), &mut io::sink()).map_err(CgiError::Io)?;
        self.received += n;
        if self.received < self.expected {
            return Err(CgiError::Truncated {
                expected: self.expected,
                received: self.received,
            });
        }
        Ok(())
    }
}

impl<R: Read + Unpin> Stream for BodyStream<R> {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.pause {
            this.pause = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let left = this.expected - this.received;
        if left == 0 {
            return Poll::Ready(None);
        }
        let mut buf = vec![0; left.min(READ_CHUNK as u64) as usize];
        let n = loop {
            match this.reader.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Some(Err(BodyError::Io(e)))),
            }
        };
        if n == 0 {
            return Poll::Ready(Some(Err(BodyError::Truncated {
                expected: this.expected,
                received: this.received,
            })));
        }
        buf.truncate(n);
        this.received += n as u64;
        this.pause = true;
        Poll::Ready(Some(Ok(Bytes::from(buf))))
    }
}

/// Wakes the thread blocked in [`block_on`].
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread, parking while it is pending.
/// Everything it polls reads stdin synchronously, so this is all the
/// executor a CGI process needs.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => thread::park(),
        }
    }
}

/// An answer of upload.py or upload-health.py: a status and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// Status 200 with `body` (a configure script, or nothing).
    pub fn ok(body: Vec<u8>) -> Answer {
        Answer { status: 200, body }
    }

    /// `status` with an error script printing `message` as body, so even a
    /// client that runs any answer stops with the message.
    pub fn error(status: u16, message: &str) -> Answer {
        Answer {
            status,
            body: script::error_script(message),
        }
    }
}

/// Runs `serve` and writes its answer on stdout. A bug still produces an
/// answer (500, error script) rather than an empty reply from Apache; the
/// panic message itself goes to stderr, the error log.
pub fn respond(program: &str, serve: impl FnOnce() -> Answer + UnwindSafe) -> ExitCode {
    let answer = std::panic::catch_unwind(serve).unwrap_or_else(|_| {
        Answer::error(
            500,
            &format!("internal error in {program}.py, see the server log"),
        )
    });
    let mut out = io::stdout().lock();
    match write_response(&mut out, answer.status, &answer.body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log_event(program, "error", "-", &format!("cannot answer: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// Stores a `.log.gz` upload in `log_dir` (see [`logs::store_log`]) and
/// answers it: nothing on success; 400 for a file name the client should not
/// have sent, 500 for a server-side failure. `log` records the event; the
/// decision is for the journal.
pub fn answer_log(log_dir: &Path, file: &Upload, log: &dyn Fn(&str, &str)) -> (Answer, Decision) {
    match logs::store_log(log_dir, &file.filename, &file.data) {
        Ok(stored) => {
            let saved = format!("log saved as {}", stored.path.display());
            match &stored.rotated {
                Some(r) => log(
                    "info",
                    &format!("{saved} (previous one rotated to {})", r.display()),
                ),
                None => log("info", &saved),
            }
            let name = stored.path.file_name().unwrap_or_default();
            let decision = Decision::LogStored {
                file: name.to_string_lossy().into_owned(),
            };
            (Answer::ok(Vec::new()), decision)
        }
        Err(e) => {
            let reason = e.to_string();
            log("error", &reason);
            let status = match e {
                LogError::Name(_) | LogError::NotALog(_) => 400,
                _ => 500,
            };
            (
                Answer::error(status, &reason),
                Decision::Refused { status, reason },
            )
        }
    }
}

/// Writes a CGI response: a `Status:` line unless 200, the content type the
/// legacy server used, a blank line, the body.
pub fn write_response<W: Write>(out: &mut W, status: u16, body: &[u8]) -> io::Result<()> {
    let mut head = String::new();
    if status != 200 {
        head.push_str(&format!("Status: {status} {}\n", reason(status)));
        if status == 405 {
            head.push_str("Allow: GET, HEAD, POST\n");
        }
    }
    head.push_str("Content-Type: text/x-python\n\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        500 => "Internal Server Error",
        _ => "Error",
    }
}

/// Where our stderr goes, which decides what a log line must say itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// Straight into the error log (mod_cgid, or a terminal): the line
    /// carries the date, the program and level, our pid and the client.
    ErrorLog,
    /// A pipe that Apache reads (mod_cgi), which logs each line as
    /// `[date] [cgi:error] [pid N] [client ADDR:PORT] AH01215: stderr from
    /// …/upload.py: LINE`: the line then leaves out the date and the
    /// client, which Apache adds.
    Apache,
}

impl LogTarget {
    /// The target of this process's stderr: a pipe is Apache's mod_cgi.
    /// (mod_cgid gives the program the error log file itself; a piped
    /// `ErrorLog` under mod_cgid would be mistaken for mod_cgi, which only
    /// shortens its lines.)
    pub fn of_stderr() -> LogTarget {
        // SAFETY: fstat fills the zeroed struct it is given; a failure
        // leaves it zeroed, which is no pipe.
        let is_pipe = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstat(libc::STDERR_FILENO, &mut st) == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFIFO
        };
        if is_pipe {
            LogTarget::Apache
        } else {
            LogTarget::ErrorLog
        }
    }
}

/// Logs one event on stderr as one line in the style of Apache's error log
/// (see [`format_log_line`]). Control characters in the message are escaped
/// so hostile input cannot forge lines.
pub fn log_event(program: &str, level: &str, remote_addr: &str, message: &str) {
    let line = format_log_line(
        LogTarget::of_stderr(),
        SystemTime::now(),
        program,
        level,
        std::process::id(),
        remote_addr,
        message,
    );
    // Nothing sensible to do if stderr is gone.
    let _ = io::stderr().write_all(line.as_bytes());
}

/// The line [`log_event`] writes, newline included: `[time]
/// [program:level] [pid N] [client ADDR] message` into the error log,
/// `[program:level] [pid N] message` for Apache's mod_cgi.
pub fn format_log_line(
    target: LogTarget,
    now: SystemTime,
    program: &str,
    level: &str,
    pid: u32,
    remote_addr: &str,
    message: &str,
) -> String {
    let message = escape_controls(message);
    if target == LogTarget::Apache {
        return format!("[{program}:{level}] [pid {pid}] {message}\n");
    }
    let t = UtcTime::from_system_time(now);
    format!(
        "[{} {} {:02} {:02}:{:02}:{:02}.{:06} {}] [{program}:{level}] [pid {pid}] \
         [client {}] {message}\n",
        t.weekday_name(),
        t.month_name(),
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.micros,
        t.year,
        escape_controls(remote_addr),
    )
}

/// Text for error messages and logs: quoted, control characters escaped.
pub fn escape(s: &str) -> String {
    format!("{s:?}")
}

fn escape_controls(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const LIMITS: Limits = Limits {
        max_hw_size: 1000,
        max_log_size: 5000,
    };

    fn run(vars: &[(&str, &str)], body: &[u8]) -> Result<Request, CgiError> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        read_request(&|k| map.get(k).cloned(), body, LIMITS)
    }

    #[test]
    fn get_reads_query_string_and_drops_blanks() {
        let r = run(
            &[
                ("REQUEST_METHOD", "GET"),
                ("QUERY_STRING", "section=A%20B+c&failure=&x=1&session"),
                ("REMOTE_ADDR", "10.0.0.2"),
            ],
            b"",
        )
        .unwrap();
        assert_eq!(r.section.as_deref(), Some("A B c"));
        assert_eq!(r.failure, None);
        assert_eq!(r.session, None);
        assert_eq!(r.remote_addr, "10.0.0.2");
        assert!(r.file.is_none());
    }

    #[test]
    fn percent_decode_keeps_invalid_escapes() {
        assert_eq!(percent_decode(b"%41%4g%%2"), b"A%4g%%2");
        assert_eq!(percent_decode(b"a+b%2B"), b"a b+");
    }

    #[test]
    fn urlencoded_post() {
        let r = run(
            &[
                ("REQUEST_METHOD", "POST"),
                ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
                ("CONTENT_LENGTH", "17"),
            ],
            b"failure=web&x=yz",
        );
        assert!(matches!(
            r,
            Err(CgiError::Truncated {
                expected: 17,
                received: 16
            })
        ));
        let r = run(
            &[
                ("REQUEST_METHOD", "POST"),
                ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
                ("CONTENT_LENGTH", "11"),
            ],
            b"failure=webEXTRA",
        )
        .unwrap();
        assert_eq!(r.failure.as_deref(), Some("web"));
    }

    #[test]
    fn content_length_forms() {
        for (v, status) in [
            ("", 411),
            (" ", 411),
            ("-1", 400),
            ("1e3", 400),
            ("0x10", 400),
        ] {
            let e = run(
                &[
                    ("REQUEST_METHOD", "POST"),
                    ("CONTENT_TYPE", "multipart/form-data; boundary=x"),
                    ("CONTENT_LENGTH", v),
                ],
                b"",
            )
            .unwrap_err();
            assert_eq!(e.status(), status, "{v:?}: {e}");
        }
        let e = run(
            &[
                ("REQUEST_METHOD", "POST"),
                ("CONTENT_TYPE", "multipart/form-data; boundary=x"),
                ("CONTENT_LENGTH", "99999999999999999999999"),
            ],
            b"",
        )
        .unwrap_err();
        assert!(matches!(
            e,
            CgiError::BodyTooLarge {
                length: u64::MAX,
                ..
            }
        ));
    }

    #[test]
    fn file_limit_depends_on_name() {
        assert_eq!(LIMITS.for_file("a.log.gz"), 5000);
        assert_eq!(LIMITS.for_file("hw.json"), 1000);
        assert_eq!(LIMITS.for_file("a.log.gz.json"), 1000);
        assert_eq!(LIMITS.max_body(), 5000 + BODY_OVERHEAD);
    }

    #[test]
    fn response_headers() {
        let mut out = Vec::new();
        write_response(&mut out, 200, b"body").unwrap();
        assert_eq!(out, b"Content-Type: text/x-python\n\nbody");
        let mut out = Vec::new();
        write_response(&mut out, 405, b"").unwrap();
        assert_eq!(
            out,
            b"Status: 405 Method Not Allowed\nAllow: GET, HEAD, POST\n\
              Content-Type: text/x-python\n\n"
        );
        let mut out = Vec::new();
        write_response(&mut out, 413, b"x").unwrap();
        assert!(out.starts_with(b"Status: 413 Content Too Large\nContent-Type"));
    }

    #[test]
    fn log_line_is_one_apache_style_line() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
        let line = |target| {
            format_log_line(
                target,
                t,
                "upload",
                "error",
                42,
                "10.0.0.1",
                "bad\nname\x1b",
            )
        };
        assert_eq!(
            line(LogTarget::ErrorLog),
            "[Tue Nov 14 22:13:20.123456 2023] [upload:error] [pid 42] [client 10.0.0.1] \
             bad\\nname\\u{1b}\n"
        );
        assert_eq!(
            line(LogTarget::Apache),
            "[upload:error] [pid 42] bad\\nname\\u{1b}\n"
        );
    }
}

//! `status` (installed as `status.py`): the fleet status page.
//!
//! Run by the web server as a CGI program (GATEWAY_INTERFACE set), it answers
//! a GET with the HTML page, or with JSON for `?format=json`; `?view=` picks
//! the fleet views (`machines`, `machine`, `health`, and the downloads `log`
//! and `health-result`, see `edeploy::status::fleet`). Run by hand it prints
//! the status page (`status [--json]`). It reads the same configuration as
//! `upload.py`, writes nothing but its caches (CMDB summaries, the machines
//! index: see `edeploy::status`) and, as a CGI, runs at the lowest CPU
//! priority (`SCHED_IDLE`) and takes turns with the other views
//! (`edeploy::status::pace`).

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use edeploy::cgi::{self, Limits};
use edeploy::cli::{self, Status};
use edeploy::status::pace::{self, Turn};
use edeploy::status::{fleet, pages};
use edeploy::{config, status};

const PROGRAM: &str = "status";

/// Headers every answer carries. The pages need no script, image or font,
/// so the policy allows none: even a value that escaped escaping could not
/// run. The machines view's filter is a form that submits to the page
/// itself.
const COMMON_HEADERS: &str = "Cache-Control: no-store\n\
     X-Content-Type-Options: nosniff\n\
     Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'\n";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Html,
    Json,
}

/// The query's parameters, decoded (`+` and `%XX`).
fn parameters(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// `format=json` anywhere in the query string asks for JSON.
fn format_of(params: &[(String, String)]) -> Format {
    if params.iter().any(|(k, v)| k == "format" && v == "json") {
        Format::Json
    } else {
        Format::Html
    }
}

/// What a view answers.
enum Reply {
    Page(&'static str, Vec<u8>),
    /// A listed file: its content type, whether to save it rather than
    /// show it, and the file.
    File(&'static str, bool, fleet::Download),
    NotFound(String),
}

/// Longest search text, in bytes.
const MAX_SEARCH: usize = 256;

/// The view the query asks for.
fn render(params: &[(String, String)]) -> Result<Reply> {
    let format = format_of(params);
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let (conf, required) = config::default_path();
    let script_dir = config::program_dir();
    let section = get("section").unwrap_or("SERVER");
    let section_config = || status::section_config(&conf, required, &script_dir, section);
    let page = |html: String, json: serde_json::Result<Vec<u8>>| -> Result<Reply> {
        Ok(match format {
            Format::Html => Reply::Page("text/html; charset=utf-8", html.into_bytes()),
            Format::Json => Reply::Page("application/json", json?),
        })
    };
    match get("view") {
        None | Some("status") => {
            let status = status::gather(&conf, required, &script_dir);
            page(status::to_html(&status), status::to_json(&status))
        }
        Some("machines") => {
            let cfg = match section_config() {
                Ok(cfg) => cfg,
                Err(e) => return Ok(Reply::NotFound(e)),
            };
            let search = get("q").map(|q| {
                let mut end = q.len().min(MAX_SEARCH);
                while !q.is_char_boundary(end) {
                    end -= 1;
                }
                q[..end].to_owned()
            });
            let filter = fleet::Filter {
                profile: get("profile").map(str::to_owned),
                standing: get("standing").map(str::to_owned),
                search,
                page: get("page").and_then(|p| p.parse().ok()).unwrap_or(1),
            };
            let machines = fleet::machines(&cfg, section, filter);
            let sections = status::section_names(&conf, required);
            page(
                pages::machines_html(&machines, &sections),
                to_json(&machines),
            )
        }
        Some("machine") => {
            let cfg = match section_config() {
                Ok(cfg) => cfg,
                Err(e) => return Ok(Reply::NotFound(e)),
            };
            let name = get("name").unwrap_or_default();
            match fleet::machine(&cfg, section, name) {
                Some(machine) => page(pages::machine_html(&machine), to_json(&machine)),
                None => Ok(Reply::NotFound(format!(
                    "no machine {name:?} in section [{section}]"
                ))),
            }
        }
        Some("health") => {
            let cfg = match status::section_config(&conf, required, &script_dir, "SERVER") {
                Ok(cfg) => cfg,
                Err(e) => return Ok(Reply::NotFound(e)),
            };
            let health = fleet::health(&cfg.health_dir);
            page(pages::health_html(&health), to_json(&health))
        }
        Some("log") => {
            let cfg = match section_config() {
                Ok(cfg) => cfg,
                Err(e) => return Ok(Reply::NotFound(e)),
            };
            let name = get("name").unwrap_or_default();
            Ok(match fleet::open_log(&cfg, name) {
                Some(file) => Reply::File("application/gzip", true, file),
                None => Reply::NotFound(format!("no log {name:?}")),
            })
        }
        Some("health-result") => {
            let cfg = match status::section_config(&conf, required, &script_dir, "SERVER") {
                Ok(cfg) => cfg,
                Err(e) => return Ok(Reply::NotFound(e)),
            };
            let path = get("path").unwrap_or_default();
            Ok(match fleet::open_health(&cfg, path) {
                Some(file) => Reply::File("text/plain; charset=utf-8", false, file),
                None => Reply::NotFound(format!("no health result {path:?}")),
            })
        }
        Some(other) => Ok(Reply::NotFound(format!("no view {other:?}"))),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(value)?;
    out.push(b'\n');
    Ok(out)
}

/// A file name for a `Content-Disposition` header: anything but plain
/// characters becomes `_` (the listed name came from the network).
fn header_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

enum Body {
    Bytes(Vec<u8>),
    File(std::fs::File, u64),
}

struct Answer {
    status: &'static str,
    content_type: &'static str,
    extra: String,
    body: Body,
}

fn plain(status: &'static str, extra: &str, message: &str) -> Answer {
    Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        extra: extra.to_owned(),
        body: Body::Bytes(format!("{message}\n").into_bytes()),
    }
}

fn serve_cgi() -> Answer {
    let method = std::env::var("REQUEST_METHOD").unwrap_or_default();
    if method != "GET" && method != "HEAD" {
        // mod_cgid drops the answer of a script that left its body unread:
        // read a small one (no file is accepted, so only the form overhead).
        let none = Limits {
            max_hw_size: 0,
            max_log_size: 0,
        };
        cgi::discard_rest(
            &|name| std::env::var_os(name),
            &mut std::io::stdin(),
            0,
            none,
        );
        return plain(
            "405 Method Not Allowed",
            "Allow: GET, HEAD\n",
            "status.py only answers GET",
        );
    }
    let query = std::env::var("QUERY_STRING").unwrap_or_default();
    match render(&parameters(&query)) {
        Ok(Reply::Page(content_type, body)) => Answer {
            status: "200 OK",
            content_type,
            extra: String::new(),
            body: Body::Bytes(body),
        },
        Ok(Reply::File(content_type, save, download)) => {
            let disposition = if save { "attachment" } else { "inline" };
            Answer {
                status: "200 OK",
                content_type,
                extra: format!(
                    "Content-Disposition: {disposition}; filename=\"{}\"\n\
                     Content-Length: {}\n",
                    header_file_name(&download.name),
                    download.size
                ),
                body: Body::File(download.file, download.size),
            }
        }
        Ok(Reply::NotFound(message)) => plain("404 Not Found", "", &message),
        Err(e) => {
            let remote = std::env::var("REMOTE_ADDR").unwrap_or_else(|_| "-".to_owned());
            cgi::log_event(PROGRAM, "error", &remote, &format!("{e:#}"));
            plain(
                "500 Internal Server Error",
                "",
                "cannot render the status page, see the server log",
            )
        }
    }
}

/// A view is for people, and provisioning requests must not wait for it:
/// under a flood of views (a dashboard refreshing, a script in a loop),
/// views at the normal priority took the CPU the uploads needed. As
/// `SCHED_IDLE` tasks they take what the uploads leave: 30 of them weigh
/// less than a tenth of one upload. At nice 19 they still weighed nearly
/// half of it, and uploads under a 32-connection flood took about twice
/// as long as with idle views. Nice 19 first, for a kernel that would
/// refuse `SCHED_IDLE`.
fn yield_to_provisioning() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system calls on this process; `param` outlives the
    // call that reads it. A failure leaves the priority as it was: no
    // process is refused a lower one.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

/// Lets Apache end the exchange now: the answer is complete once the
/// program's output is closed, even though the program goes on (keeping
/// its turn for the spacing of views).
fn close_output() {
    // SAFETY: plain system calls on descriptors this process owns; the
    // standard streams are flushed and not written again.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
        if null >= 0 {
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
        }
    }
}

fn cgi_main() -> ExitCode {
    yield_to_provisioning();
    let turn = Turn::take(pace::MAX_WAIT).ok();
    // A bug must still produce an answer; the panic message goes to stderr
    // (the error log).
    let answer = match turn {
        Some(_) => std::panic::catch_unwind(serve_cgi).unwrap_or_else(|_| {
            plain(
                "500 Internal Server Error",
                "",
                "internal error in status.py, see the server log",
            )
        }),
        None => plain(
            "503 Service Unavailable",
            "Retry-After: 10\n",
            "too many status views at once, try again later",
        ),
    };
    let mut head = String::new();
    if answer.status != "200 OK" {
        head.push_str(&format!("Status: {}\n", answer.status));
    }
    head.push_str(&answer.extra);
    head.push_str(&format!("Content-Type: {}\n", answer.content_type));
    head.push_str(COMMON_HEADERS);
    head.push('\n');
    // Worked out: the next view may start once the spacing has passed,
    // while this answer is still being sent.
    let released = turn.map(Turn::release_after_spacing);
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(head.as_bytes())
        .and_then(|()| match answer.body {
            Body::Bytes(body) => out.write_all(&body),
            // At most the size announced, should the file grow meanwhile.
            Body::File(file, size) => std::io::copy(&mut file.take(size), &mut out).map(|_| ()),
        });
    match written.and_then(|()| out.flush()) {
        Ok(()) => {
            drop(out);
            if let Some(released) = released {
                close_output();
                released.wait();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            cgi::log_event(PROGRAM, "error", "-", &format!("cannot answer: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    if cli::is_cgi() {
        return cgi_main();
    }
    let format = if Status::parse().json {
        Format::Json
    } else {
        Format::Html
    };
    let params = match format {
        Format::Json => parameters("format=json"),
        Format::Html => Vec::new(),
    };
    match render(&params) {
        Ok(Reply::Page(_, body)) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(&body).and_then(|()| out.flush()).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Ok(Reply::File(..) | Reply::NotFound(_)) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("status: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format_of_query(query: &str) -> Format {
        format_of(&parameters(query))
    }

    #[test]
    fn json_only_when_asked() {
        assert!(format_of_query("format=json") == Format::Json);
        assert!(format_of_query("a=1&format=json") == Format::Json);
        assert!(format_of_query("") == Format::Html);
        assert!(format_of_query("format=jsonx") == Format::Html);
        assert!(format_of_query("xformat=json") == Format::Html);
    }

    #[test]
    fn header_file_names_are_plain() {
        assert_eq!(header_file_name("a-b_c.1.log.gz"), "a-b_c.1.log.gz");
        assert_eq!(header_file_name("x\"; y=\r\né.log.gz"), "x___y____.log.gz");
    }
}

//! `status` (installed as `status.py`): the fleet status page.
//!
//! Run by the web server as a CGI program (GATEWAY_INTERFACE set), it answers
//! a GET with the HTML page, or with JSON for `?format=json`. Run by hand it
//! prints the same (`status [--json]`). It reads the same configuration as
//! `upload.py`, writes nothing but its cache of CMDB summaries (see
//! `edeploy::status`) and, as a CGI, runs at the lowest CPU priority
//! (`SCHED_IDLE`) and takes turns with the other views
//! (`edeploy::status::pace`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use edeploy::cgi::{self, Limits};
use edeploy::cli::{self, Status};
use edeploy::status::pace::{self, Turn};
use edeploy::{config, status};

const PROGRAM: &str = "status";

/// Headers every answer carries. The page needs no script, image, font or
/// form, so the policy allows none: even a value that escaped escaping
/// could not run.
const COMMON_HEADERS: &str = "Cache-Control: no-store\n\
     X-Content-Type-Options: nosniff\n\
     Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'\n";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Html,
    Json,
}

/// `format=json` anywhere in the query string asks for JSON.
fn format_of_query(query: &str) -> Format {
    if query.split('&').any(|kv| kv == "format=json") {
        Format::Json
    } else {
        Format::Html
    }
}

/// The page, with its content type.
fn render(format: Format) -> Result<(&'static str, Vec<u8>)> {
    let (conf, required) = config::default_path();
    let script_dir = config::program_dir();
    let status = status::gather(&conf, required, &script_dir);
    Ok(match format {
        Format::Html => (
            "text/html; charset=utf-8",
            status::to_html(&status).into_bytes(),
        ),
        Format::Json => ("application/json", status::to_json(&status)?),
    })
}

struct Answer {
    status: &'static str,
    content_type: &'static str,
    extra: &'static str,
    body: Vec<u8>,
}

fn plain(status: &'static str, extra: &'static str, message: &str) -> Answer {
    Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        extra,
        body: format!("{message}\n").into_bytes(),
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
    match render(format_of_query(&query)) {
        Ok((content_type, body)) => Answer {
            status: "200 OK",
            content_type,
            extra: "",
            body,
        },
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
    head.push_str(answer.extra);
    head.push_str(&format!("Content-Type: {}\n", answer.content_type));
    head.push_str(COMMON_HEADERS);
    head.push('\n');
    let mut out = std::io::stdout().lock();
    match out
        .write_all(head.as_bytes())
        .and_then(|()| out.write_all(&answer.body))
        .and_then(|()| out.flush())
    {
        Ok(()) => {
            drop(out);
            if let Some(turn) = turn {
                close_output();
                turn.finish();
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
    match render(format) {
        Ok((_, body)) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(&body).and_then(|()| out.flush()).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("status: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_only_when_asked() {
        assert!(format_of_query("format=json") == Format::Json);
        assert!(format_of_query("a=1&format=json") == Format::Json);
        assert!(format_of_query("") == Format::Html);
        assert!(format_of_query("format=jsonx") == Format::Html);
        assert!(format_of_query("xformat=json") == Format::Html);
    }
}

//! Status views take turns (issue 11): a view, as a CGI, does its work only
//! while it holds the turn of its program (an exclusive `flock` on its own
//! executable, see `edeploy::status::pace`), and one that cannot get it in
//! time is answered "busy" instead of adding to a flood. Alone in its test
//! binary because it holds the turn of the `status` program that other
//! tests run.

use std::fs::File;
use std::process::{Command, Output, Stdio};

use edeploy::status::pace::MAX_WAIT;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn view() -> Output {
    Command::new(env!("CARGO_BIN_EXE_status"))
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", "GET")
        .env("QUERY_STRING", "format=json")
        .env(
            "EDEPLOY_CONF",
            format!("{ROOT}/tests/apache/config/missing.conf"),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_view_waits_for_its_turn_and_is_answered_busy_past_the_limit() {
    let program = File::open(env!("CARGO_BIN_EXE_status")).unwrap();
    program.lock().unwrap();
    let started = std::time::Instant::now();
    let busy = view();
    let page = String::from_utf8_lossy(&busy.stdout);
    assert!(
        page.starts_with("Status: 503 Service Unavailable\nRetry-After: 10\n"),
        "{page}"
    );
    assert!(started.elapsed() >= MAX_WAIT);
    program.unlock().unwrap();
    let served = view();
    let page = String::from_utf8_lossy(&served.stdout);
    assert!(page.starts_with("Content-Type: application/json"), "{page}");
}

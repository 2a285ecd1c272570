//! The null CGI of benches/load.rs: reads the request body as `upload.py`
//! must, and prints a fixed answer, so that what remains is the cost of
//! Apache starting a CGI program. Built by the benchmark with `rustc -O`.

use std::io::{Read, Write};

const ANSWER: &[u8] = b"Content-Type: text/x-python\r\n\r\n#!/usr/bin/env python\n#EDEPLOY_PROFILE = null\nprint('null')\n";

fn main() {
    let mut body = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut body);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(ANSWER).and_then(|_| out.flush());
}

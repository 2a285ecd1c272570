//! The HTTP client of the Apache benchmarks: one request per connection,
//! as the initrd's curl makes them.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

const BOUNDARY: &str = "------------------------bench0123456789abcdef";

/// The port of a `http://127.0.0.1:PORT/...` URL (the private Apache's).
pub fn port(url: &str) -> u16 {
    url.strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// The request `curl -s -S -F section=SERVER -F file=@hw.json URL` sends
/// (without `Expect: 100-continue`), asking to close the connection after.
pub fn request(port: u16, script: &str, hw: &str) -> Vec<u8> {
    let body = format!(
        "--{BOUNDARY}\r\n\
         Content-Disposition: form-data; name=\"section\"\r\n\r\n\
         SERVER\r\n\
         --{BOUNDARY}\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"hw.json\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n\
         {hw}\r\n\
         --{BOUNDARY}--\r\n"
    );
    format!(
        "POST //cgi-bin/edeploy//{script} HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\n\
         User-Agent: curl/7.88.1\r\n\
         Accept: */*\r\n\
         Connection: close\r\n\
         Content-Length: {}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n\
         {body}",
        body.len()
    )
    .into_bytes()
}

/// Sends one request on a new connection; returns the status and body.
pub fn exchange(port: u16, request: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    stream.write_all(request).map_err(|e| e.to_string())?;
    let _ = stream.shutdown(Shutdown::Write);
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).map_err(|e| e.to_string())?;
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&reply[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let body = &reply[end + 4..];
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or("bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let data = body.get(eol + 2..eol + 2 + size).ok_or("short chunk")?;
        out.extend_from_slice(data);
        body = body.get(eol + 4 + size..).ok_or("short chunk")?;
    }
}

//! `upload-health.py`: the CGI that receives health-check results.
//!
//! The health-check initrd posts its hardware and benchmark description
//! (`curl -s -S -F file=@/health.py [-F session=…] …/upload-health.py`); we
//! file it under HEALTHDIR (see `edeploy::health`). Like `upload.py` it also
//! accepts `.log.gz` uploads, stored in LOGDIR. It reads the `SERVER` section
//! of the configuration (`$EDEPLOY_CONF`, else `/etc/edeploy.conf`, else the
//! legacy defaults next to the program), as the legacy script did.
//!
//! The initrd never executes this answer (it does not save it), so failures
//! get meaningful statuses: 400 for a bad request or hardware file, 500 for a
//! server-side problem, each with an error script as body like `upload.py`.
//!
//! Run by hand (GATEWAY_INTERFACE unset) it only answers `--help` and
//! `--version`.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use clap::Parser;
use edeploy::cgi::{self, Answer, Limits, Request};
use edeploy::cli::{self, UploadHealth};
use edeploy::config::{self, Config};
use edeploy::{health, hw, literal};

const PROGRAM: &str = "upload-health";

fn main() -> ExitCode {
    if cli::is_cgi() {
        return cgi::respond(PROGRAM, serve);
    }
    // Only --help and --version: anything else is a usage error (exit 2).
    UploadHealth::parse();
    eprintln!(
        "upload-health: a CGI program, run by the web server (GATEWAY_INTERFACE is not set); \
         see --help"
    );
    ExitCode::from(2)
}

fn serve() -> Answer {
    let now = SystemTime::now();
    let cfg = match load_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            let remote = std::env::var("REMOTE_ADDR").unwrap_or_else(|_| "-".to_owned());
            let msg = format!("{e:#}");
            cgi::log_event(PROGRAM, "error", &remote, &msg);
            return Answer::error(500, &msg);
        }
    };
    let limits = Limits {
        max_hw_size: cfg.max_hw_size,
        max_log_size: cfg.max_log_size,
    };
    let req = match cgi::read_process_request(limits) {
        Ok(req) => req,
        Err(e) => {
            let remote = std::env::var("REMOTE_ADDR").unwrap_or_else(|_| "-".to_owned());
            cgi::log_event(
                PROGRAM,
                "error",
                &remote,
                &format!("refused ({}): {e}", e.status()),
            );
            return Answer::error(e.status(), &e.to_string());
        }
    };
    handle(&cfg, &req, now)
}

fn handle(cfg: &Config, req: &Request, now: SystemTime) -> Answer {
    let log = |level: &str, msg: &str| cgi::log_event(PROGRAM, level, &req.remote_addr, msg);
    let Some(file) = &req.file else {
        log("info", "no file passed");
        return Answer::error(200, "No file passed to the CGI");
    };
    if file.is_log() {
        return cgi::answer_log(&cfg.log_dir, file, &log);
    }
    let items = match hw::parse_hw_with(Path::new(&file.filename), &file.data, &cfg.hw_limits) {
        Ok(items) => items,
        Err(e) => {
            let msg = format!("Invalid hardware file: {e}");
            log("error", &msg);
            return Answer::error(400, &msg);
        }
    };
    let (sysname, _) = hw::sysname_and_macs(&items);
    let contents = literal::pformat(&hw::items_value(&items));
    match health::store_health(
        &cfg.health_dir,
        req.session.as_deref(),
        &sysname,
        &contents,
        now,
    ) {
        Ok(path) => {
            log(
                "info",
                &format!("{sysname}: health result saved as {}", path.display()),
            );
            Answer::ok(Vec::new())
        }
        Err(e) => {
            log("error", &format!("{sysname}: {e}"));
            let status = match e {
                health::HealthError::Session(_) | health::HealthError::SystemName(_) => 400,
                _ => 500,
            };
            Answer::error(status, &e.to_string())
        }
    }
}

/// The `SERVER` section of `$EDEPLOY_CONF` or `/etc/edeploy.conf`; without
/// either file, the legacy defaults relative to this program.
fn load_config() -> anyhow::Result<Config> {
    let dir = config::program_dir();
    config::load_default("SERVER", &dir, || Config::legacy_defaults(&dir))
        .context("cannot read the configuration")
}

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
use edeploy::journal::{self, Decision, Record};
use edeploy::{health, hw, literal, logs};

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
    let remote = std::env::var("REMOTE_ADDR").unwrap_or_else(|_| "-".to_owned());
    let cfg = match load_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            // No configuration: no journal either.
            let msg = format!("{e:#}");
            cgi::log_event(PROGRAM, "error", &remote, &msg);
            return Answer::error(500, &msg);
        }
    };
    let limits = Limits {
        max_hw_size: cfg.max_hw_size,
        max_log_size: cfg.max_log_size,
    };
    let (answer, sysname, decision) = match cgi::read_process_request(limits) {
        Ok(req) => handle(&cfg, &req, now),
        Err(e) => {
            let (status, reason) = (e.status(), e.to_string());
            cgi::log_event(
                PROGRAM,
                "error",
                &remote,
                &format!("refused ({status}): {reason}"),
            );
            (
                Answer::error(status, &reason),
                None,
                Decision::Refused { status, reason },
            )
        }
    };
    // Recorded as upload.py records its requests; a journal that cannot be
    // written costs a warning, nothing else.
    let record = Record::new(
        "upload-health.py",
        &remote,
        Some("SERVER"),
        sysname.as_deref(),
        decision,
    );
    if let Err(e) = journal::record(&cfg, &record) {
        cgi::log_event(PROGRAM, "warn", &remote, &e.to_string());
    }
    answer
}

/// The answer, the machine's name when known, and the journal's decision.
fn handle(cfg: &Config, req: &Request, now: SystemTime) -> (Answer, Option<String>, Decision) {
    let log = |level: &str, msg: &str| cgi::log_event(PROGRAM, level, &req.remote_addr, msg);
    let refused = |status: u16, reason: String| {
        (
            Answer::error(status, &reason),
            None,
            Decision::Refused { status, reason },
        )
    };
    let Some(file) = &req.file else {
        log("info", "no file passed");
        return refused(200, "No file passed to the CGI".to_owned());
    };
    if file.is_log() {
        let (answer, decision) = cgi::answer_log(&cfg.log_dir, file, &log);
        let sysname = match &decision {
            Decision::LogStored { file } => logs::machine_of_log(file).map(str::to_owned),
            _ => None,
        };
        return (answer, sysname, decision);
    }
    let items = match hw::parse_hw_with(Path::new(&file.filename), &file.data, &cfg.hw_limits) {
        Ok(items) => items,
        Err(e) => {
            let msg = format!("Invalid hardware file: {e}");
            log("error", &msg);
            return refused(400, msg);
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
            // Relative to HEALTHDIR, which the path names resolved.
            let root = std::fs::canonicalize(&cfg.health_dir);
            let relative = root.as_deref().map(|root| path.strip_prefix(root));
            let file = match relative {
                Ok(Ok(relative)) => relative.display().to_string(),
                _ => path.display().to_string(),
            };
            (
                Answer::ok(Vec::new()),
                Some(sysname),
                Decision::HealthStored { file },
            )
        }
        Err(e) => {
            log("error", &format!("{sysname}: {e}"));
            let status = match e {
                health::HealthError::Session(_) | health::HealthError::SystemName(_) => 400,
                _ => 500,
            };
            let (answer, _, decision) = refused(status, e.to_string());
            (answer, Some(sysname), decision)
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

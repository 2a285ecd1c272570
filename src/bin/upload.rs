//! `upload` (installed as `upload.py`): the provisioning endpoint.
//!
//! Run by Apache as a CGI program (GATEWAY_INTERFACE set), it answers the
//! initrd's multipart POST and records its decision in the journal; run by
//! hand it is the legacy command line `upload -f HW_FILE [-F PROFILE]
//! [--dry-run]` used by USB-key installs (see `edeploy::cli::Upload`).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use edeploy::cgi::{self, Answer, Limits, Request};
use edeploy::cli::{self, Upload};
use edeploy::config::{self, Config};
use edeploy::hw::{self, Item};
use edeploy::journal::{self, Decision, Record};
use edeploy::provision::{self, Outcome, ProvisionError};
use edeploy::{logs, script};

const PROGRAM: &str = "upload";

/// The configuration of the command line: the directory of --config-dir,
/// else `SERVER` of $EDEPLOY_CONF or /etc/edeploy.conf, else the bundled
/// examples; with where it came from, for the log.
fn cli_config(args: &Upload) -> Result<(Config, String)> {
    if let Some(dir) = &args.config_dir {
        let cfg = Config::for_dir(dir);
        let what = format!("directory {} (--config-dir)", cfg.config_dir.display());
        return Ok((cfg, what));
    }
    let bundled = Path::new(config::BUNDLED_CONFIG);
    Ok(
        match config::load_default_from("SERVER", &config::program_dir(), || {
            Config::for_dir(bundled)
        })? {
            (cfg, Some(file)) => (cfg, format!("{} [SERVER]", file.display())),
            (cfg, None) => (
                cfg,
                format!(
                    "none (no /etc/edeploy.conf): the bundled {}",
                    bundled.display()
                ),
            ),
        },
    )
}

/// The configuration of the CGI: without a configuration file, the legacy
/// defaults next to the program.
fn cgi_config(section: &str) -> Result<Config> {
    let dir = config::program_dir();
    Ok(config::load_default(section, &dir, || {
        Config::legacy_defaults(&dir)
    })?)
}

/// Parses a hardware description within the configured limits.
fn parse_items(cfg: &Config, name: &Path, src: &[u8]) -> Result<Vec<Item>> {
    hw::parse_hw_with(name, src, &cfg.hw_limits).map_err(|e| anyhow!("Invalid hardware file: {e}"))
}

/// Logs what a request did; the configure script, or `None` for a failure
/// report.
fn log_outcome(sysname: &str, outcome: Outcome, log: &dyn Fn(&str, &str)) -> Option<Vec<u8>> {
    match outcome {
        Outcome::Configured(c) => {
            for w in &c.warnings {
                log("warn", &format!("{sysname}: {w}"));
            }
            let entry = c
                .cmdb_entry
                .map(|i| format!(", CMDB entry {i}"))
                .unwrap_or_default();
            log(
                "info",
                &format!("{}: profile {} matched{entry}", c.sysname, c.profile),
            );
            Some(c.script)
        }
        Outcome::FailureReported {
            profile,
            quota_restored,
            warnings,
        } => {
            for w in &warnings {
                log("warn", &format!("{sysname}: {w}"));
            }
            let what = if quota_restored {
                "one installation given back"
            } else {
                "no numeric quota to give back"
            };
            log(
                "info",
                &format!("{sysname}: failure reported for profile {profile}: {what}"),
            );
            None
        }
    }
}

/// What the journal records of an outcome.
fn decision_of(outcome: &Outcome) -> Decision {
    match outcome {
        Outcome::Configured(c) => Decision::configured(&c.profile, c.cmdb_entry, &c.vars),
        Outcome::FailureReported {
            profile,
            quota_restored,
            ..
        } => Decision::FailureReport {
            profile: profile.clone(),
            quota_given_back: *quota_restored,
        },
    }
}

/// What the command line prints: the configure script (empty for a
/// failure report), or the error script of an error already logged.
enum Printed {
    Script(Vec<u8>),
    Error(String),
}

/// Runs the command line; `Err` for what stops it before a machine's
/// request is served.
fn run_cli(args: &Upload) -> Result<Printed> {
    let log = |level: &str, msg: &str| eprintln!("upload: {level}: {msg}");
    let (cfg, source) = cli_config(args)?;
    log("info", &format!("configuration: {source}"));
    let src = read_limited(&args.hw_file, cfg.max_hw_size)?;
    let items = parse_items(&cfg, &args.hw_file, &src)?;
    let sysname = hw::sysname_and_macs(&items).0;
    match provision::provision(&cfg, &items, args.failure.as_deref(), args.dry_run) {
        Ok(outcome) => Ok(Printed::Script(
            log_outcome(&sysname, outcome, &log).unwrap_or_default(),
        )),
        Err(e) => {
            let msg = format!("{e:#}");
            log("error", &format!("{sysname}: {msg}"));
            Ok(Printed::Error(msg))
        }
    }
}

/// A request's answer, and what the journal records of it.
struct Served {
    answer: Answer,
    sysname: Option<String>,
    decision: Decision,
}

impl Served {
    /// An error answer (status 200 for the errors the initrd runs).
    fn refused(status: u16, reason: String) -> Served {
        Served {
            answer: Answer::error(status, &reason),
            sysname: None,
            decision: Decision::Refused { status, reason },
        }
    }
}

/// Records `served` in the journal of `cfg` and gives its answer. A journal
/// that cannot be written costs a warning in the log, nothing else.
fn journal(cfg: &Config, remote: &str, section: Option<&str>, served: Served) -> Answer {
    let record = Record::new(
        "upload.py",
        remote,
        section,
        served.sysname.as_deref(),
        served.decision,
    );
    if let Err(e) = journal::record(cfg, &record) {
        cgi::log_event(PROGRAM, "warn", remote, &e.to_string());
    }
    served.answer
}

/// Serves a CGI request. Every answer the initrd executes has status 200,
/// as with the legacy server (see `edeploy::cgi`).
fn serve_cgi() -> Answer {
    let remote = std::env::var("REMOTE_ADDR").unwrap_or_else(|_| "-".to_owned());
    let server = match cgi_config("SERVER") {
        Ok(cfg) => cfg,
        Err(e) => {
            // No configuration: no journal either.
            let msg = format!("{e:#}");
            cgi::log_event(PROGRAM, "error", &remote, &msg);
            return Answer::error(500, &msg);
        }
    };
    let limits = Limits {
        max_hw_size: server.max_hw_size,
        max_log_size: server.max_log_size,
    };
    let req = match cgi::read_process_request(limits) {
        Ok(req) => req,
        Err(e) => {
            let msg = e.to_string();
            cgi::log_event(
                PROGRAM,
                "error",
                &remote,
                &format!("refused ({}): {msg}", e.status()),
            );
            return journal(&server, &remote, None, Served::refused(e.status(), msg));
        }
    };
    let log = |level: &str, msg: &str| cgi::log_event(PROGRAM, level, &req.remote_addr, msg);
    // The initrd sends `section=` even when it has none.
    let section = req
        .section
        .as_deref()
        .filter(|s| !s.is_empty() && *s != "SERVER");
    let cfg = match section {
        None => server,
        Some(section) => match cgi_config(section) {
            Ok(cfg) => cfg,
            Err(e) => {
                let msg = format!("{e:#}");
                log("error", &msg);
                let served = Served::refused(200, msg);
                return journal(&server, &req.remote_addr, Some(section), served);
            }
        },
    };
    let served = serve_request(&cfg, &req, &log);
    let section = section.unwrap_or("SERVER");
    journal(&cfg, &req.remote_addr, Some(section), served)
}

/// Serves a request whose section's configuration is `cfg`.
fn serve_request(cfg: &Config, req: &Request, log: &dyn Fn(&str, &str)) -> Served {
    let Some(file) = &req.file else {
        log("info", "no file passed");
        return Served::refused(200, "No file passed to the CGI".to_owned());
    };
    if file.is_log() {
        let (answer, decision) = cgi::answer_log(&cfg.log_dir, file, log);
        let sysname = match &decision {
            Decision::LogStored { file } => logs::machine_of_log(file).map(str::to_owned),
            _ => None,
        };
        return Served {
            answer,
            sysname,
            decision,
        };
    }
    if file.data.len() as u64 > cfg.max_hw_size {
        let msg = format!(
            "hardware file larger than the {} bytes allowed (MAXHWSIZE)",
            cfg.max_hw_size
        );
        log("error", &msg);
        return Served::refused(413, msg);
    }
    let items = match parse_items(cfg, Path::new(&file.filename), &file.data) {
        Ok(items) => items,
        Err(e) => {
            let msg = format!("{e:#}");
            log("error", &msg);
            return Served::refused(200, msg);
        }
    };
    let sysname = hw::sysname_and_macs(&items).0;
    let failure = req.failure.as_deref().filter(|f| !f.is_empty());
    match provision::provision(cfg, &items, failure, false) {
        Ok(outcome) => {
            let decision = decision_of(&outcome);
            let script = log_outcome(&sysname, outcome, log);
            Served {
                answer: Answer::ok(script.unwrap_or_default()),
                sysname: Some(sysname),
                decision,
            }
        }
        Err(e) => {
            let msg = e.to_string();
            log("error", &format!("{sysname}: {msg}"));
            // Explained after the answer is decided, without the lock.
            let decision = match &e {
                ProvisionError::NoMatch { profiles, .. } => {
                    Decision::no_match(cfg, &items, profiles)
                }
                _ => Decision::Refused {
                    status: 200,
                    reason: msg.clone(),
                },
            };
            Served {
                answer: Answer::error(200, &msg),
                sysname: Some(sysname),
                decision,
            }
        }
    }
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut src = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut src)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if src.len() as u64 > limit {
        bail!(
            "{}: larger than the {limit} bytes allowed (MAXHWSIZE)",
            path.display()
        );
    }
    Ok(src)
}

fn main() -> ExitCode {
    if cli::is_cgi() {
        return cgi::respond(PROGRAM, serve_cgi);
    }
    let args = Upload::parse();
    let (script, code) = match run_cli(&args) {
        Ok(Printed::Script(script)) => (script, ExitCode::SUCCESS),
        Ok(Printed::Error(msg)) => (script::error_script(&msg), ExitCode::FAILURE),
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("upload: error: {msg}");
            (script::error_script(&msg), ExitCode::FAILURE)
        }
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&script).and_then(|()| stdout.flush()) {
        Ok(()) => code,
        Err(_) => ExitCode::FAILURE,
    }
}

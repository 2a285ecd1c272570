//! `upload` (installed as `upload.py`): the provisioning endpoint.
//!
//! Run by Apache as a CGI program (GATEWAY_INTERFACE set), it answers the
//! initrd's multipart POST; run by hand it is the legacy command line
//! `upload -f HW_FILE [-F PROFILE] [--dry-run]` used by USB-key installs
//! (see `edeploy::cli::Upload`).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use edeploy::cgi::{self, Answer, Limits};
use edeploy::cli::{self, Upload};
use edeploy::config::{self, Config};
use edeploy::provision::{self, Outcome};
use edeploy::{hw, script};

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

/// What a machine's request gets.
enum Served {
    /// The configure script.
    Script(Vec<u8>),
    /// Nothing: a failure report.
    Nothing,
    /// An error, already logged: the machine gets an error script.
    Error(String),
}

/// Parses the hardware description and serves the request, logging the
/// decision with the machine's name.
fn serve_hw(
    cfg: &Config,
    name: &Path,
    src: &[u8],
    failure: Option<&str>,
    dry_run: bool,
    log: &dyn Fn(&str, &str),
) -> Served {
    let items = match hw::parse_hw_with(name, src, &cfg.hw_limits) {
        Ok(items) => items,
        Err(e) => {
            let msg = format!("Invalid hardware file: {e}");
            log("error", &msg);
            return Served::Error(msg);
        }
    };
    let (sysname, _) = hw::sysname_and_macs(&items);
    match provision::provision(cfg, &items, failure, dry_run) {
        Ok(Outcome::Configured(c)) => {
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
            Served::Script(c.script)
        }
        Ok(Outcome::FailureReported {
            profile,
            quota_restored,
            warnings,
        }) => {
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
            Served::Nothing
        }
        Err(e) => {
            let msg = format!("{e:#}");
            log("error", &format!("{sysname}: {msg}"));
            Served::Error(msg)
        }
    }
}

/// Runs the command line; `Err` for what stops it before a machine's
/// request is served.
fn run_cli(args: &Upload) -> Result<Served> {
    let log = |level: &str, msg: &str| eprintln!("upload: {level}: {msg}");
    let (cfg, source) = cli_config(args)?;
    log("info", &format!("configuration: {source}"));
    let src = read_limited(&args.hw_file, cfg.max_hw_size)?;
    Ok(serve_hw(
        &cfg,
        &args.hw_file,
        &src,
        args.failure.as_deref(),
        args.dry_run,
        &log,
    ))
}

/// Serves a CGI request. Every answer the initrd executes has status 200,
/// as with the legacy server (see `edeploy::cgi`).
fn serve_cgi() -> Answer {
    let error = Answer::error;
    let remote = std::env::var("REMOTE_ADDR").unwrap_or_else(|_| "-".to_owned());
    let server = match cgi_config("SERVER") {
        Ok(cfg) => cfg,
        Err(e) => {
            let msg = format!("{e:#}");
            cgi::log_event(PROGRAM, "error", &remote, &msg);
            return error(500, &msg);
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
            return error(e.status(), &msg);
        }
    };
    let log = |level: &str, msg: &str| cgi::log_event(PROGRAM, level, &req.remote_addr, msg);
    // The initrd sends `section=` even when it has none.
    let cfg = match req
        .section
        .as_deref()
        .filter(|s| !s.is_empty() && *s != "SERVER")
    {
        None => server,
        Some(section) => match cgi_config(section) {
            Ok(cfg) => cfg,
            Err(e) => {
                let msg = format!("{e:#}");
                log("error", &msg);
                return error(200, &msg);
            }
        },
    };
    let Some(file) = &req.file else {
        log("info", "no file passed");
        return error(200, "No file passed to the CGI");
    };
    if file.is_log() {
        return cgi::answer_log(&cfg.log_dir, file, &log);
    }
    if file.data.len() as u64 > cfg.max_hw_size {
        let msg = format!(
            "hardware file larger than the {} bytes allowed (MAXHWSIZE)",
            cfg.max_hw_size
        );
        log("error", &msg);
        return error(413, &msg);
    }
    let failure = req.failure.as_deref().filter(|f| !f.is_empty());
    match serve_hw(
        &cfg,
        Path::new(&file.filename),
        &file.data,
        failure,
        false,
        &log,
    ) {
        Served::Script(script) => Answer::ok(script),
        Served::Nothing => Answer::ok(Vec::new()),
        Served::Error(msg) => error(200, &msg),
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
        Ok(Served::Script(script)) => (script, ExitCode::SUCCESS),
        Ok(Served::Nothing) => (Vec::new(), ExitCode::SUCCESS),
        Ok(Served::Error(msg)) => (script::error_script(&msg), ExitCode::FAILURE),
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

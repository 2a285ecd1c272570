//! `upload` (installed as `upload.py`): the provisioning endpoint.
//!
//! Run by Apache as a CGI program (GATEWAY_INTERFACE set), it answers the
//! initrd's multipart POST; run by hand it is the legacy command line
//! `upload -f HW_FILE [-F PROFILE] [--dry-run]` used by USB-key installs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use edeploy::cgi::{self, Answer, Limits};
use edeploy::config::{self, Config};
use edeploy::provision::{self, Outcome};
use edeploy::{hw, script};

const PROGRAM: &str = "upload";

const USAGE: &str = "usage: upload -f HW_FILE [-F PROFILE] [--dry-run]

Matches the hardware description HW_FILE (the initrd's JSON, or a Python
literal list of 4-tuples) against the profiles of CONFIGDIR and prints the
configure script. -F PROFILE reports a failed installation of PROFILE
instead. --dry-run writes nothing. The configuration file is $EDEPLOY_CONF,
else /etc/edeploy.conf, else the bundled legacy-config/ is CONFIGDIR.";

struct Args {
    hw_file: PathBuf,
    failure: Option<String>,
    dry_run: bool,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Args>> {
    let mut hw_file = None;
    let mut failure = None;
    let mut dry_run = false;
    let mut args = args;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--dry-run" => dry_run = true,
            "-f" => hw_file = Some(args.next().context("-f needs a file name")?.into()),
            "-F" => failure = Some(args.next().context("-F needs a profile name")?),
            other => bail!("unexpected argument '{other}'\n\n{USAGE}"),
        }
    }
    let hw_file = hw_file.with_context(|| format!("no hardware file given\n\n{USAGE}"))?;
    Ok(Some(Args {
        hw_file,
        failure,
        dry_run,
    }))
}

/// The configuration of the command line: `SERVER` of $EDEPLOY_CONF or
/// /etc/edeploy.conf, else the bundled examples.
fn cli_config() -> Result<Config> {
    Ok(config::load_default(
        "SERVER",
        &config::program_dir(),
        || Config::for_dir(Path::new(config::BUNDLED_CONFIG)),
    )?)
}

/// The configuration of the CGI: without a configuration file, the legacy
/// defaults next to the program.
fn cgi_config(section: &str) -> Result<Config> {
    let dir = config::program_dir();
    Ok(config::load_default(section, &dir, || {
        Config::legacy_defaults(&dir)
    })?)
}

/// Parses the hardware description and serves the request: the configure
/// script, or `None` for a failure report.
fn serve_hw(
    cfg: &Config,
    name: &Path,
    src: &[u8],
    failure: Option<&str>,
    dry_run: bool,
    log: &dyn Fn(&str, &str),
) -> Result<Option<Vec<u8>>> {
    let items = hw::parse_hw_with(name, src, &cfg.hw_limits)
        .map_err(|e| anyhow!("Invalid hardware file: {e}"))?;
    match provision::provision(cfg, &items, failure, dry_run)? {
        Outcome::Configured(c) => {
            for w in &c.warnings {
                log("warn", w);
            }
            let entry = c
                .cmdb_entry
                .map(|i| format!(", CMDB entry {i}"))
                .unwrap_or_default();
            log(
                "info",
                &format!("{}: profile {} matched{entry}", c.sysname, c.profile),
            );
            Ok(Some(c.script))
        }
        Outcome::FailureReported {
            profile,
            quota_restored,
            warnings,
        } => {
            for w in &warnings {
                log("warn", w);
            }
            let what = if quota_restored {
                "one installation given back"
            } else {
                "no numeric quota to give back"
            };
            log(
                "info",
                &format!("failure reported for profile {profile}: {what}"),
            );
            Ok(None)
        }
    }
}

fn run_cli(args: &Args) -> Result<Option<Vec<u8>>> {
    let cfg = cli_config()?;
    let src = read_limited(&args.hw_file, cfg.max_hw_size)?;
    let log = |level: &str, msg: &str| eprintln!("upload: {level}: {msg}");
    serve_hw(
        &cfg,
        &args.hw_file,
        &src,
        args.failure.as_deref(),
        args.dry_run,
        &log,
    )
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
        Ok(script) => Answer::ok(script.unwrap_or_default()),
        Err(e) => {
            let msg = format!("{e:#}");
            log("error", &msg);
            error(200, &msg)
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
    if std::env::var_os("GATEWAY_INTERFACE").is_some() {
        return cgi::respond(PROGRAM, serve_cgi);
    }
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("upload: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut stdout = std::io::stdout().lock();
    match run_cli(&args) {
        Ok(answer) => {
            if let Some(script) = answer {
                if stdout
                    .write_all(&script)
                    .and_then(|_| stdout.flush())
                    .is_err()
                {
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("upload: error: {e:#}");
            let _ = stdout.write_all(&script::error_script(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

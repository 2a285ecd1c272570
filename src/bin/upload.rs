//! `upload` (installed as `upload.py`): the provisioning endpoint.
//!
//! Run by Apache as a CGI program (GATEWAY_INTERFACE set), it answers the
//! initrd's multipart POST; run by hand it is the legacy command line
//! `upload -f HW_FILE [-F PROFILE] [--dry-run]` used by USB-key installs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use edeploy::config::{Config, ConfigErrorKind};
use edeploy::hw;
use edeploy::provision::{self, Outcome};
use edeploy::script;

const USAGE: &str = "usage: upload -f HW_FILE [-F PROFILE] [--dry-run]

Matches the hardware description HW_FILE (the initrd's JSON, or a Python
literal list of 4-tuples) against the profiles of CONFIGDIR and prints the
configure script. -F PROFILE reports a failed installation of PROFILE
instead. --dry-run writes nothing. The configuration file is $EDEPLOY_CONF,
else /etc/edeploy.conf, else the bundled legacy-config/ is CONFIGDIR.";

/// The examples shipped with the sources, used when no configuration exists.
const BUNDLED_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/legacy-config");

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

/// The directory of this program, links resolved: the legacy defaults for
/// CONFIGDIR and HEALTHDIR are relative to it.
fn script_dir() -> PathBuf {
    std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `section` of $EDEPLOY_CONF, else of /etc/edeploy.conf, else (command line
/// only) the bundled examples.
fn load_config(section: &str, allow_bundled: bool) -> Result<Config> {
    let explicit = std::env::var_os("EDEPLOY_CONF").map(PathBuf::from);
    let path = explicit
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/edeploy.conf"));
    match Config::load(&path, section, &script_dir()) {
        Ok(cfg) => Ok(cfg),
        Err(e) if explicit.is_none() && allow_bundled && e.kind == ConfigErrorKind::Io(std::io::ErrorKind::NotFound) => {
            Ok(Config::for_dir(Path::new(BUNDLED_CONFIG)))
        }
        Err(e) => Err(e.into()),
    }
}

fn run_cli(args: &Args) -> Result<Option<Vec<u8>>> {
    let cfg = load_config("SERVER", true)?;
    let src = read_limited(&args.hw_file, cfg.max_hw_size)?;
    let items = hw::parse_hw(&args.hw_file, &src).map_err(|e| anyhow::anyhow!("Invalid hardware file: {e}"))?;
    let outcome = provision::provision(&cfg, &items, args.failure.as_deref(), args.dry_run)?;
    Ok(match outcome {
        Outcome::Configured(c) => {
            for w in &c.warnings {
                eprintln!("upload: warning: {w}");
            }
            Some(c.script)
        }
        Outcome::FailureReported { .. } => None,
    })
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut src = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut src)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if src.len() as u64 > limit {
        bail!("{}: larger than the {limit} bytes allowed (MAXHWSIZE)", path.display());
    }
    Ok(src)
}

fn main() -> ExitCode {
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
                if stdout.write_all(&script).and_then(|_| stdout.flush()).is_err() {
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("upload: {e:#}");
            let _ = stdout.write_all(&script::error_script(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

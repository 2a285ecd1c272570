//! `edeploy`: operator tools around the provisioning server.
//!
//! The legacy server says little when a machine does not get a profile. These
//! commands answer the operator's questions from the same code the server
//! runs: does this machine match these specs and if not why
//! (`try-match`), which profile would the server give it (`explain`), is this
//! configuration directory sound (`check`), was this machine provisioned
//! (`cmdb-used`, the legacy `verify-cmdb.py`).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use edeploy::check::{self, Severity};
use edeploy::config::{self, Config};
use edeploy::explain::{self, failure_text, write_report, Verdict};
use edeploy::generate;
use edeploy::hw::{self, Item};
use edeploy::literal::{self, Document, ParseError, Streamed, Value};
use edeploy::spec;
use edeploy::store;

const USAGE: &str = "usage: edeploy COMMAND [ARGS...]

Operator tools for the eDeploy provisioning server.

Commands:
  try-match HW_FILE SPECS_FILE   does the machine match the specs? if not, why
  explain HW_FILE [CONFIG]       which profile the server would give the machine
  check [--strict] [CONFIGDIR]   validate a configuration directory
  cmdb-used KEY VALUE CMDB...    is a CMDB entry with KEY == VALUE used?
  help [COMMAND]                 this text, or the help of COMMAND

`edeploy COMMAND --help` describes a command. Exit status: 0 for yes or
success, 1 for no (no match, errors found, entry not used), 2 for a usage
error or an input that cannot be read.";

const TRY_MATCH_USAGE: &str = "usage: edeploy try-match HW_FILE SPECS_FILE

Matches the hardware description HW_FILE (the initrd's JSON, or a saved .hw
Python literal) against SPECS_FILE (a profile's .specs) with the server's
matcher. On a match, prints the variables (exit 0). Otherwise prints the
first spec that cannot be satisfied: the hardware lines closest to it and
the field each fails, or the lines it would need that earlier specs use or
that disagree with variables they bound (exit 1).";

const EXPLAIN_USAGE: &str = "usage: edeploy explain [--section NAME] HW_FILE [CONFIG]

Replays the server's choice of a profile for the machine HW_FILE, writing
nothing, and prints for each profile of the state file: matched (with the
variables and the CMDB entry it would be given), skipped (no installation
left), no .specs file, the spec that failed and why, or CMDB exhausted; then
the answer the machine would get. CONFIG is an edeploy.conf (section NAME,
default SERVER); without it $EDEPLOY_CONF, else /etc/edeploy.conf, else the
bundled legacy-config/ is used. Exit 0 when a profile would be installed, 1
when the machine would get an error.";

const CHECK_USAGE: &str = "usage: edeploy check [--strict] [CONFIGDIR]

Validates the state file and every *.specs, *.cmdb and *.configure file of
CONFIGDIR (default: CONFIGDIR of $EDEPLOY_CONF, else /etc/edeploy.conf, else
the bundled legacy-config/): syntax errors, profiles without specs or
configure file, unknown functions, invalid regexps and networks, CMDB entries
sharing an ip or hostname, generate() models whose ranges and lists have
different lengths, exhausted quotas and CMDBs, and a commit that a killed
request left unfinished (the state and CMDB disagree until the next request
completes it). Prints one line per finding, `path:line:column:
error|warning: message`, then a summary. Exit 1 when there are errors (or
warnings, with --strict), else 0.";

const CMDB_USED_USAGE: &str = "usage: edeploy cmdb-used KEY VALUE CMDB...

Exit 0 when an entry of one of the CMDB files has KEY equal to VALUE and
'used' equal to 1 (the machine was provisioned), else 1: the legacy
verify-cmdb.py check. Prints the entry found, or why none was.";

/// A command's outcome: `Ok(true)` exit 0, `Ok(false)` exit 1.
type Answer = Result<bool>;

/// A usage error: printed with the command's usage, exit 2.
#[derive(Debug)]
struct Usage {
    message: String,
    usage: &'static str,
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n\n{}", self.message, self.usage)
    }
}

impl std::error::Error for Usage {}

fn usage(message: impl Into<String>, usage: &'static str) -> anyhow::Error {
    anyhow!(Usage {
        message: message.into(),
        usage,
    })
}

/// A command's arguments: options with their values, then the others.
struct Args {
    options: Vec<(String, String)>,
    positional: Vec<String>,
}

impl Args {
    fn has(&self, option: &str) -> bool {
        self.options.iter().any(|(k, _)| k == option)
    }

    /// The last value given to `option`.
    fn value(&self, option: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == option)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits the arguments into options (from `known`, each with a value when
/// it ends with `=`) and positional ones; `--help` returns `None`.
fn split_args(args: &[String], known: &[&str], help: &'static str) -> Result<Option<Args>> {
    let mut options = Vec::new();
    let mut positional = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        if arg == "--" {
            positional.extend(args.by_ref().cloned());
            break;
        }
        if arg.starts_with('-') && arg.len() > 1 {
            let flag = known.iter().find(|k| k.trim_end_matches('=') == arg);
            match flag {
                Some(k) if k.ends_with('=') => {
                    let value = args
                        .next()
                        .ok_or_else(|| usage(format!("{arg} needs a value"), help))?;
                    options.push((arg.clone(), value.clone()));
                }
                Some(_) => options.push((arg.clone(), String::new())),
                None => return Err(usage(format!("unknown option '{arg}'"), help)),
            }
        } else {
            positional.push(arg.clone());
        }
    }
    Ok(Some(Args {
        options,
        positional,
    }))
}

fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut src = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut src)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if src.len() as u64 > limit {
        bail!("{}: larger than the {limit} bytes allowed", path.display());
    }
    Ok(src)
}

/// A hardware file within the limits the server would apply.
fn read_hw(path: &Path, max_size: u64, limits: &hw::HwLimits) -> Result<Vec<Item>> {
    let src = read_file(path, max_size)?;
    Ok(hw::parse_hw_with(path, &src, limits)?)
}

/// A specs file read as the server reads it, with its text.
fn read_specs(path: &Path) -> Result<(Vec<spec::Spec>, Vec<u8>)> {
    let src = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value = match literal::parse(path, &src)? {
        Document::Literal(v) => v,
        Document::Generate(_) => {
            return Err(ParseError {
                file: path.to_path_buf(),
                line: 1,
                column: 1,
                message: "generate() is only allowed in CMDB files".into(),
            }
            .into())
        }
    };
    Ok((spec::specs_from_value(path, &value)?, src))
}

fn try_match(args: &[String], out: &mut dyn Write) -> Answer {
    let Some(args) = split_args(args, &[], TRY_MATCH_USAGE)? else {
        writeln!(out, "{TRY_MATCH_USAGE}")?;
        return Ok(true);
    };
    let [hw_file, specs_file] = args.positional.as_slice() else {
        return Err(usage("expected HW_FILE and SPECS_FILE", TRY_MATCH_USAGE));
    };
    let limits = hw::HwLimits::default();
    let items = read_hw(Path::new(hw_file), config::DEFAULT_MAX_HW_SIZE, &limits)?;
    let specs_file = Path::new(specs_file);
    let (specs, src) = read_specs(specs_file)?;
    match explain::explain_specs(&items, &specs)? {
        Verdict::Match { vars, forced } => {
            out.write_all(&literal::pformat(&Value::Dict(spec::vars_dict(&vars))))?;
            if !forced.is_empty() {
                let names: Vec<&str> = forced.keys().map(String::as_str).collect();
                writeln!(out, "# looked up in the CMDB ($$): {}", names.join(", "))?;
            }
            Ok(true)
        }
        Verdict::NoMatch(failure) => {
            writeln!(out, "{}", failure_text(specs_file, &src, &failure))?;
            Ok(false)
        }
    }
}

/// The configuration given on the command line, or the default one.
fn load_config(file: Option<&str>, section: &str) -> Result<Config> {
    Ok(match file {
        Some(file) => Config::load(Path::new(file), section, &config::program_dir())?,
        None => config::load_default(section, &config::program_dir(), || {
            Config::for_dir(Path::new(config::BUNDLED_CONFIG))
        })?,
    })
}

fn explain_cmd(args: &[String], out: &mut dyn Write) -> Answer {
    let Some(args) = split_args(args, &["--section="], EXPLAIN_USAGE)? else {
        writeln!(out, "{EXPLAIN_USAGE}")?;
        return Ok(true);
    };
    let section = args.value("--section").unwrap_or("SERVER");
    let (hw_file, config_file) = match args.positional.as_slice() {
        [hw] => (hw, None),
        [hw, config] => (hw, Some(config.as_str())),
        _ => {
            return Err(usage(
                "expected HW_FILE and at most one CONFIG",
                EXPLAIN_USAGE,
            ))
        }
    };
    let cfg = load_config(config_file, section)?;
    let items = read_hw(Path::new(hw_file), cfg.max_hw_size, &cfg.hw_limits)?;
    let (sysname, _) = hw::sysname_and_macs(&items);
    let report = explain::explain_config(&cfg, &items)?;
    writeln!(out, "machine: {sysname}")?;
    writeln!(out, "state: {}", report.state_file.display())?;
    write_report(&report, out)?;
    Ok(report.answer.is_ok())
}

fn check_cmd(args: &[String], out: &mut dyn Write) -> Answer {
    let Some(args) = split_args(args, &["--strict"], CHECK_USAGE)? else {
        writeln!(out, "{CHECK_USAGE}")?;
        return Ok(true);
    };
    let strict = args.has("--strict");
    let dir = match args.positional.as_slice() {
        [] => load_config(None, "SERVER")?.config_dir,
        [dir] => PathBuf::from(dir),
        _ => return Err(usage("expected at most one CONFIGDIR", CHECK_USAGE)),
    };
    let report = check::check_dir(&dir);
    for finding in &report.findings {
        writeln!(out, "{finding}")?;
    }
    let errors = report.count(Severity::Error);
    let warnings = report.count(Severity::Warning);
    writeln!(
        out,
        "{}: {} file(s) checked, {errors} error(s), {warnings} warning(s)",
        dir.display(),
        report.files
    )?;
    Ok(errors == 0 && !(strict && warnings > 0))
}

fn cmdb_used(args: &[String], out: &mut dyn Write) -> Answer {
    let Some(args) = split_args(args, &[], CMDB_USED_USAGE)? else {
        writeln!(out, "{CMDB_USED_USAGE}")?;
        return Ok(true);
    };
    let [key, value, files @ ..] = args.positional.as_slice() else {
        return Err(usage("expected KEY, VALUE and CMDB files", CMDB_USED_USAGE));
    };
    if files.is_empty() {
        return Err(usage("expected at least one CMDB file", CMDB_USED_USAGE));
    }
    let wanted = Value::str(value);
    let used = Value::Int(1);
    let shown = explain::py_str(value);
    let mut unused = Vec::new();
    for file in files {
        let path = Path::new(file);
        let src =
            store::read_version(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut found = None;
        let mut index = 0;
        let mut each = |entry: Value| {
            if let Value::Dict(d) = &entry {
                if found.is_none() && d.get_str(key) == Some(&wanted) {
                    if d.get_str("used") == Some(&used) {
                        found = Some(index);
                    } else {
                        unused.push(format!("{}: entry {index}", path.display()));
                    }
                }
            }
            index += 1;
            Ok(())
        };
        if let Streamed::Generate(model) = literal::parse_list_streaming(path, &src, &mut each)? {
            let entries =
                generate::generate(&model).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            for entry in entries {
                each(entry)?;
            }
        }
        if let Some(i) = found {
            writeln!(
                out,
                "{}: entry {i} has {key} {shown} and is used",
                path.display()
            )?;
            return Ok(true);
        }
    }
    match unused.as_slice() {
        [] => writeln!(out, "no entry has {key} {shown} in {}", files.join(", "))?,
        entries => writeln!(
            out,
            "{} has {key} {shown} but is not used",
            entries.join(", ")
        )?,
    }
    Ok(false)
}

fn help(args: &[String], out: &mut dyn Write) -> Answer {
    let text = match args.first().map(String::as_str) {
        None => USAGE,
        Some("try-match") => TRY_MATCH_USAGE,
        Some("explain") => EXPLAIN_USAGE,
        Some("check") => CHECK_USAGE,
        Some("cmdb-used") => CMDB_USED_USAGE,
        Some(other) => return Err(usage(format!("unknown command '{other}'"), USAGE)),
    };
    writeln!(out, "{text}")?;
    Ok(true)
}

fn run(args: &[String], out: &mut dyn Write) -> Answer {
    let Some((command, rest)) = args.split_first() else {
        return Err(usage("no command given", USAGE));
    };
    match command.as_str() {
        "try-match" => try_match(rest, out),
        "explain" => explain_cmd(rest, out),
        "check" => check_cmd(rest, out),
        "cmdb-used" => cmdb_used(rest, out),
        "help" | "-h" | "--help" => help(rest, out),
        other => Err(usage(format!("unknown command '{other}'"), USAGE)),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut stdout = io::stdout().lock();
    let result = run(&args, &mut stdout);
    let _ = stdout.flush();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("edeploy: {e:#}");
            ExitCode::from(2)
        }
    }
}

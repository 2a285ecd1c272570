//! `edeploy`: operator tools around the provisioning server.
//!
//! The legacy server says little when a machine does not get a profile. These
//! commands answer the operator's questions from the same code the server
//! runs: does this machine match these specs and if not why
//! (`try-match`), which profile would the server give it (`explain`), is this
//! configuration directory sound (`check`), was this machine provisioned
//! (`cmdb-used`, the legacy `verify-cmdb.py`), which known machines would
//! a configuration change move (`plan`).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use edeploy::check::{self, Positions, Severity};
use edeploy::cli::{self, Check, CmdbUsed, Command, EdeployRun, Explain, GenDocs, Plan, TryMatch};
use edeploy::config::{self, Config};
use edeploy::explain::{self, failure_text, write_report, Verdict};
use edeploy::hw::{self, Item};
use edeploy::literal::{self, Streamed, Value};
use edeploy::plan::{self, Last};
use edeploy::spec::SpecError;
use edeploy::{docs, generate, spec, store};

/// A command's outcome: `Ok(true)` exit 0, `Ok(false)` exit 1, `Err` exit 2.
type Answer = Result<bool>;

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

/// A specs file read as the server reads it, with its text. An entry of
/// the wrong shape is located as `edeploy check` locates it.
fn read_specs(path: &Path) -> Result<(Vec<spec::Spec>, Vec<u8>)> {
    let src = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    match spec::parse_specs(path, &src) {
        Ok(specs) => Ok((specs, src)),
        Err(SpecError::Invalid { index, message, .. }) => {
            let positions = Positions::new(&src);
            let (at, entry) = match index {
                Some(i) => (positions.at(&[0, i]), format!("entry {i}: ")),
                None => (positions.at(&[0]), String::new()),
            };
            match at {
                Some((line, column)) => {
                    bail!("{}:{line}:{column}: {entry}{message}", path.display())
                }
                None => bail!("{}: {entry}{message}", path.display()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn try_match(args: &TryMatch, out: &mut dyn Write) -> Answer {
    let limits = hw::HwLimits::default();
    let read_hw = |path| read_hw(path, config::DEFAULT_MAX_HW_SIZE, &limits);
    let specs_file = args.specs_file.as_path();
    let read = read_hw(&args.hw_file).and_then(|items| Ok((items, read_specs(specs_file)?)));
    let (items, (specs, src)) = match read {
        Ok(read) => read,
        // Arguments in the wrong order only make one of the files look
        // unreadable: say what is wrong instead.
        Err(_) if read_hw(specs_file).is_ok() && read_specs(&args.hw_file).is_ok() => bail!(
            "the arguments are swapped: {} is the hardware description and {} the specs \
             (usage: edeploy try-match HW_FILE SPECS_FILE)",
            specs_file.display(),
            args.hw_file.display()
        ),
        Err(e) => return Err(e),
    };
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
fn load_config(file: Option<&Path>, section: &str) -> Result<Config> {
    Ok(match file {
        Some(file) => Config::load(file, section, &config::program_dir())?,
        None => config::load_default(section, &config::program_dir(), || {
            Config::for_dir(Path::new(config::BUNDLED_CONFIG))
        })?,
    })
}

fn explain_cmd(args: &Explain, out: &mut dyn Write) -> Answer {
    let cfg = load_config(args.config.as_deref(), &args.section)?;
    let items = read_hw(&args.hw_file, cfg.max_hw_size, &cfg.hw_limits)?;
    let (sysname, _) = hw::sysname_and_macs(&items);
    let report = explain::explain_config(&cfg, &items)?;
    writeln!(out, "machine: {sysname}")?;
    writeln!(out, "state: {}", report.state_file.display())?;
    write_report(&report, out)?;
    Ok(report.answer.is_ok())
}

fn check_cmd(args: &Check, out: &mut dyn Write) -> Answer {
    let dir = match &args.config_dir {
        Some(dir) => dir.clone(),
        None => load_config(None, "SERVER")?.config_dir,
    };
    // A directory that cannot be read is an input that cannot be read
    // (exit 2), not a finding.
    std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
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
    Ok(errors == 0 && !(args.strict && warnings > 0))
}

fn cmdb_used(args: &CmdbUsed, out: &mut dyn Write) -> Answer {
    let (key, value, files) = (&args.key, &args.value, &args.cmdb);
    let wanted = Value::str(value);
    let used = Value::Int(1);
    let shown = explain::py_str(value);
    let mut unused = Vec::new();
    for path in files {
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
        [] => {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            writeln!(out, "no entry has {key} {shown} in {}", names.join(", "))?
        }
        entries => writeln!(
            out,
            "{} has {key} {shown} but is not used",
            entries.join(", ")
        )?,
    }
    Ok(false)
}

/// Each machine's last decision from the decisions journal of `cfg`; none
/// known without one, or when it cannot be read (with a warning).
fn last_decisions(cfg: &Config) -> HashMap<String, Last> {
    let Some(path) = &cfg.journal else {
        return HashMap::new();
    };
    plan::last_decisions(path).unwrap_or_else(|e| {
        eprintln!("edeploy: warning: {}: {e}", path.display());
        HashMap::new()
    })
}

fn plan_cmd(args: &Plan, out: &mut dyn Write) -> Answer {
    let cfg = load_config(None, &args.section)?;
    let last = last_decisions(&cfg);
    let plan = plan::plan(&cfg, args.config.as_deref(), &|sysname: &str| {
        last.get(sysname).cloned()
    })?;
    for row in &plan.rows {
        if let plan::Decision::Unreadable { error } = &row.now {
            eprintln!("edeploy: warning: {error}");
        }
    }
    // Standard output is line buffered: a write per line of 10,000
    // machines' JSON took longer than the plan itself.
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    if args.json {
        serde_json::to_writer_pretty(&mut out, &plan.to_json(args.changed))?;
        writeln!(out)?;
    } else {
        plan.write_table(&mut out, args.changed)?;
    }
    out.flush()?;
    Ok(plan.changed() == 0)
}

fn gen_docs(args: &GenDocs, out: &mut dyn Write) -> Answer {
    for file in docs::write_all(&args.outdir)
        .with_context(|| format!("cannot write into {}", args.outdir.display()))?
    {
        writeln!(out, "{}", file.display())?;
    }
    Ok(true)
}

fn run(run: &EdeployRun, out: &mut dyn Write) -> Answer {
    match run {
        EdeployRun::Tool(Command::TryMatch(args)) => try_match(args, out),
        EdeployRun::Tool(Command::Explain(args)) => explain_cmd(args, out),
        EdeployRun::Tool(Command::Check(args)) => check_cmd(args, out),
        EdeployRun::Tool(Command::CmdbUsed(args)) => cmdb_used(args, out),
        EdeployRun::Tool(Command::Plan(args)) => plan_cmd(args, out),
        EdeployRun::GenDocs(args) => gen_docs(args, out),
    }
}

fn main() -> ExitCode {
    let invocation = cli::parse_edeploy();
    let mut stdout = io::stdout().lock();
    let result = run(&invocation, &mut stdout);
    let _ = stdout.flush();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("edeploy: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

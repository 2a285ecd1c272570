//! The command lines of the programs, defined once with clap.
//!
//! The binaries parse their arguments with these definitions, and
//! [`crate::docs`] makes the man pages and shell completions from the same
//! ones, so help, completions and man pages cannot drift from what the
//! programs accept. A CGI run (GATEWAY_INTERFACE set) never parses its
//! arguments: Apache passes none we want, and an argument error must not
//! become the answer.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// Whether the program runs as a CGI: then its arguments are not parsed.
pub fn is_cgi() -> bool {
    std::env::var_os("GATEWAY_INTERFACE").is_some()
}

/// `upload` (`upload.py`): the provisioning endpoint and its legacy
/// command line.
#[derive(Debug, Parser)]
#[command(
    name = "upload",
    version,
    about = "eDeploy provisioning: match a machine's hardware and print its configure script",
    long_about = "Matches the hardware description HW_FILE (the initrd's JSON, or a Python \
literal list of 4-tuples) against the profiles of the configuration and prints the configure \
script, as the CGI upload.py answers the initrd. -F PROFILE reports a failed installation of \
PROFILE instead (one installation is given back to its count). The configuration file is \
$EDEPLOY_CONF, else /etc/edeploy.conf, else the bundled legacy-config/ is CONFIGDIR; \
--config-dir uses a directory without any configuration file. The configuration used is \
logged on stderr.\n\nRun by a web server (GATEWAY_INTERFACE set), the program is the CGI \
upload.py and reads no arguments.",
    after_help = "Exit status: 0 when a script (or nothing, for -F) was printed, 1 when the \
machine gets an error script, 2 for a usage error."
)]
pub struct Upload {
    /// The machine's hardware description
    #[arg(short = 'f', value_name = "HW_FILE")]
    pub hw_file: PathBuf,
    /// Report a failed installation of PROFILE instead of matching
    #[arg(short = 'F', value_name = "PROFILE")]
    pub failure: Option<String>,
    /// Write nothing: no .hw file, no CMDB or state change
    #[arg(long)]
    pub dry_run: bool,
    /// Use DIR for every file (CONFIGDIR, HWDIR, LOGDIR) and read no
    /// configuration file
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
}

/// `upload-health` (`upload-health.py`): a CGI only.
#[derive(Debug, Parser)]
#[command(
    name = "upload-health",
    version,
    about = "eDeploy health-check uploads (the CGI upload-health.py)",
    long_about = "The CGI upload-health.py: run by a web server (GATEWAY_INTERFACE set), it \
stores the health-check results the initrd posts (file=@health.py, optional session=NAME) as \
HEALTHDIR/[SESSION/]YYYY_MM_DD-HHhMM/<sysname>.hw, and .log.gz uploads in LOGDIR. \
It takes no arguments besides --help and --version. The configuration file is $EDEPLOY_CONF, \
else /etc/edeploy.conf, else the legacy defaults next to the program."
)]
pub struct UploadHealth {}

/// `status` (`status.py`): the fleet status page.
#[derive(Debug, Parser)]
#[command(
    name = "status",
    version,
    about = "eDeploy status page: profiles, quotas, CMDB usage, latest hardware and logs",
    long_about = "Prints the eDeploy status page (profiles, quotas, CMDB usage, latest \
hardware files and logs of every section) as HTML, or as JSON with --json. The configuration \
file is $EDEPLOY_CONF, else /etc/edeploy.conf.\n\nRun by a web server (GATEWAY_INTERFACE \
set), the program is the CGI status.py (?format=json for JSON) and reads no arguments."
)]
pub struct Status {
    /// Print JSON instead of HTML
    #[arg(long)]
    pub json: bool,
}

/// `edeploy`: the operator tools.
#[derive(Debug, Parser)]
#[command(
    name = "edeploy",
    version,
    about = "Operator tools for the eDeploy provisioning server",
    long_about = "Operator tools for the eDeploy provisioning server. They answer the \
operator's questions from the same code the server runs: does this machine match these specs \
and if not why (try-match), which profile would the server give it (explain), is this \
configuration directory sound (check), was this machine provisioned (cmdb-used, the legacy \
verify-cmdb.py). `edeploy help COMMAND` describes a command.",
    after_help = EXIT_STATUS,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Edeploy {
    #[command(subcommand)]
    pub command: Command,
}

/// The exit statuses of `edeploy`, in its help and man page.
pub const EXIT_STATUS: &str = "Exit status: 0 for yes or success, 1 for no (no match, errors \
found, entry not used), 2 for a usage error or an input that cannot be read.";

/// The commands of `edeploy`.
#[derive(Debug, Subcommand)]
pub enum Command {
    TryMatch(TryMatch),
    Explain(Explain),
    Check(Check),
    CmdbUsed(CmdbUsed),
    Plan(Plan),
}

/// Does the machine match the specs? If not, why
#[derive(Debug, Args)]
#[command(
    long_about = "Matches the hardware description HW_FILE (the initrd's JSON, or a \
saved .hw Python literal) against SPECS_FILE (a profile's .specs) with the server's matcher. \
On a match, prints the variables (exit 0). Otherwise prints the first spec that cannot be \
satisfied: the hardware lines closest to it and the field each fails, or the lines it would \
need that earlier specs use or that disagree with variables they bound (exit 1)."
)]
pub struct TryMatch {
    /// The machine's hardware description (JSON or .hw)
    pub hw_file: PathBuf,
    /// The profile's .specs file
    pub specs_file: PathBuf,
}

/// Which profile the server would give the machine
#[derive(Debug, Args)]
#[command(
    long_about = "Replays the server's choice of a profile for the machine HW_FILE, \
writing nothing, and prints for each profile of the state file: matched (with the variables \
and the CMDB entry it would be given), skipped (no installation left), no .specs file, the \
spec that failed and why, or CMDB exhausted; then the answer the machine would get. CONFIG is \
an edeploy.conf (section NAME, default SERVER); without it $EDEPLOY_CONF, else \
/etc/edeploy.conf, else the bundled legacy-config/ is used. Exit 0 when a profile would be \
installed, 1 when the machine would get an error."
)]
pub struct Explain {
    /// The section of the configuration file
    #[arg(long, value_name = "NAME", default_value = "SERVER")]
    pub section: String,
    /// The machine's hardware description (JSON or .hw)
    pub hw_file: PathBuf,
    /// The configuration file (default: $EDEPLOY_CONF, else /etc/edeploy.conf)
    pub config: Option<PathBuf>,
}

/// Validate a configuration directory
#[derive(Debug, Args)]
#[command(
    long_about = "Validates the state file and every *.specs, *.cmdb and *.configure \
file of CONFIGDIR (default: CONFIGDIR of $EDEPLOY_CONF, else /etc/edeploy.conf, else the \
bundled legacy-config/): syntax errors, profiles without specs or configure file, unknown \
functions, invalid regexps and networks, CMDB entries sharing an ip or hostname, generate() \
models whose ranges and lists have different lengths, exhausted quotas and CMDBs, and a commit \
that a killed request left unfinished (the state and CMDB disagree until the next request \
completes it). Prints one line per finding, `path:line:column: error|warning: message`, then a \
summary. Exit 1 when there are errors (or warnings, with --strict), 2 when CONFIGDIR cannot be \
read, else 0."
)]
pub struct Check {
    /// Fail on warnings too
    #[arg(long)]
    pub strict: bool,
    /// The configuration directory
    #[arg(value_name = "CONFIGDIR")]
    pub config_dir: Option<PathBuf>,
}

/// Is a CMDB entry with KEY == VALUE used?
#[derive(Debug, Args)]
#[command(
    long_about = "Exit 0 when an entry of one of the CMDB files has KEY equal to VALUE \
and 'used' equal to 1 (the machine was provisioned), else 1: the legacy verify-cmdb.py check. \
Prints the entry found, or why none was."
)]
pub struct CmdbUsed {
    /// The key to look up (e.g. hostname)
    pub key: String,
    /// The value it must have
    pub value: String,
    /// The CMDB files to search, in order
    #[arg(required = true)]
    pub cmdb: Vec<PathBuf>,
}

/// Which stored machines a configuration moves
#[derive(Debug, Args)]
#[command(
    long_about = "Replays the server's choice of a profile on every machine stored in \
HWDIR (its .hw files), writing nothing and taking no lock, against the live configuration \
(CONFIGDIR of section NAME of $EDEPLOY_CONF, else /etc/edeploy.conf, else the bundled \
legacy-config/) or, with --config, against DIR, a proposed copy of CONFIGDIR (state, .specs, \
.cmdb, .configure). Prints per machine the profile it would get now and the one it got last \
(from the decisions journal), then per profile the machines it would get against its count \
and free CMDB entries, and why machines would get nothing.\n\n\
Machines compete for counts and CMDB entries: they are replayed in the order they were last \
seen (oldest .hw file first), each taking what the server would give it after the earlier \
ones; a machine already installed with a profile (its own used CMDB entry, or its last \
decision) keeps it at no cost. A machine changes when it would get another profile than it \
got last; when its last decision is unknown, than the live configuration gives it (so only \
with --config). A .hw file that cannot be read is reported and skipped.\n\n\
Exit status: 0 when no machine would change, 1 when some would, 2 for a usage error or a \
configuration that cannot be read."
)]
pub struct Plan {
    /// A proposed configuration directory to replay instead of CONFIGDIR
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// The section of the configuration file
    #[arg(long, value_name = "NAME", default_value = "SERVER")]
    pub section: String,
    /// List only the machines that would change
    #[arg(long)]
    pub changed: bool,
    /// Print the plan as JSON
    #[arg(long)]
    pub json: bool,
}

/// `edeploy gen-docs OUTDIR`: a hidden command for the packages, kept out
/// of [`Edeploy`] so that the completions and the man page do not offer it.
#[derive(Debug, Args)]
pub struct GenDocs {
    /// Where man/ and completions/ are written
    pub outdir: PathBuf,
}

/// What the `edeploy` command line asks for.
#[derive(Debug)]
pub enum EdeployRun {
    /// An operator tool.
    Tool(Command),
    /// `gen-docs OUTDIR`.
    GenDocs(GenDocs),
}

/// The `edeploy` command line: [`Edeploy`] and the hidden `gen-docs`.
/// Exits as clap does (status 2) on a usage error, 0 after `--help`.
pub fn parse_edeploy() -> EdeployRun {
    parse_edeploy_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

fn parse_edeploy_from(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<EdeployRun, clap::Error> {
    let gen_docs = GenDocs::augment_args(clap::Command::new("gen-docs"))
        .about("Write the man pages and shell completions into OUTDIR (for packaging)")
        .hide(true);
    let matches = Edeploy::command()
        .subcommand(gen_docs)
        .try_get_matches_from(args)?;
    Ok(match matches.subcommand() {
        Some(("gen-docs", sub)) => EdeployRun::GenDocs(GenDocs::from_arg_matches(sub)?),
        _ => EdeployRun::Tool(Edeploy::from_arg_matches(&matches)?.command),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_consistent() {
        Upload::command().debug_assert();
        UploadHealth::command().debug_assert();
        Status::command().debug_assert();
        Edeploy::command().debug_assert();
    }

    #[test]
    fn upload_reads_the_initrd_command_line() {
        let args = Upload::try_parse_from(["upload.py", "-f", "/hw.json", "-F", "hp"]).unwrap();
        assert_eq!(args.hw_file, PathBuf::from("/hw.json"));
        assert_eq!(args.failure.as_deref(), Some("hp"));
        assert!(!args.dry_run);
        let args = Upload::try_parse_from(["upload.py", "-f/hw.json"]).unwrap();
        assert_eq!(args.hw_file, PathBuf::from("/hw.json"));
        assert_eq!(args.failure, None);
        assert!(Upload::try_parse_from(["upload.py"]).is_err());
        assert!(Upload::try_parse_from(["upload.py", "-f"]).is_err());
    }

    #[test]
    fn gen_docs_is_parsed_but_not_offered() {
        assert!(Edeploy::command().find_subcommand("gen-docs").is_none());
        match parse_edeploy_from(["edeploy", "gen-docs", "/tmp/x"]).unwrap() {
            EdeployRun::GenDocs(g) => assert_eq!(g.outdir, PathBuf::from("/tmp/x")),
            other => panic!("{other:?}"),
        }
        match parse_edeploy_from(["edeploy", "check", "--strict"]).unwrap() {
            EdeployRun::Tool(Command::Check(c)) => assert!(c.strict && c.config_dir.is_none()),
            other => panic!("{other:?}"),
        }
        let e = parse_edeploy_from(["edeploy", "gen-docs"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}

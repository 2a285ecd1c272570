//! Why a machine does or does not match: the explanations behind
//! `edeploy try-match` and `edeploy explain`.
//!
//! The legacy server only says that nothing matched. Operators need to know
//! which spec line failed and which hardware line came closest. Every verdict
//! here is the real matcher's ([`spec::match_all`], [`spec::match_spec`]),
//! called on whole or partial inputs, so an explanation can never disagree
//! with what the server does: the failing spec is the first one whose prefix
//! `match_all` rejects, and each field of a hardware line is judged by
//! `match_spec` on a one-line input where the other fields are wildcards.
//! `explain_config` replays the server's profile loop (`provision`) without
//! writing anything, and without the lock (see `store` for why none is
//! needed and what a reader may see).

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::check::Positions;
use crate::cmdb::{self, CmdbError};
use crate::config::Config;
use crate::hw::{HwValue, Item};
use crate::literal::{self, Dict, Value};
use crate::provision::{read_cmdb, read_if_exists, ProvisionError};
use crate::spec::{self, Budget, Spec, SpecError, Vars};
use crate::state::{Quota, State, StateError};
use crate::store;

/// Most near-miss lines listed for a spec no line satisfies.
const MAX_CLOSEST: usize = 3;
/// Most blocked lines listed for a spec that conflicts with earlier ones.
const MAX_BLOCKED: usize = 5;

/// The outcome of matching specs against a machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The specs match: the variables the server would use (`forced` are the
    /// `$$` ones, matched against the CMDB).
    Match {
        vars: Vars,
        forced: Vars,
    },
    NoMatch(Failure),
}

/// The first spec that cannot be satisfied, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// 0-based index of the spec in its file.
    pub index: usize,
    pub spec: Spec,
    pub cause: Cause,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// No hardware line satisfies the spec on its own. `closest` are the
    /// lines passing the most leading fields, best first (none when no line
    /// passes even the first field).
    NoLine { closest: Vec<Near> },
    /// Some lines satisfy the spec on its own, but none is left once the
    /// earlier specs are matched, whichever lines backtracking gave them.
    Blocked {
        lines: Vec<Blocked>,
        /// How many more blocked lines there are than listed.
        more: usize,
    },
}

/// A hardware line and the first of its fields that fails the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Near {
    pub line: Item,
    pub miss: Miss,
}

/// A field of a hardware line that fails a spec field.
#[derive(Debug, Clone, PartialEq)]
pub struct Miss {
    /// 0-based field index.
    pub field: usize,
    /// The hardware line's value for that field.
    pub value: HwValue,
    pub why: Why,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    /// Plain text (or a number) that differs.
    Differs { expected: HwValue },
    /// A function call (or the function of `$var=call`) that is false.
    Fails { call: String },
    /// A field the server can never satisfy (unknown function, bad regexp).
    Invalid { problem: String },
    /// A variable already bound to another value.
    Bound {
        /// Key in the variables: `x` for `$x`, `$x` for `$$x`.
        var: String,
        value: HwValue,
        /// The earlier spec that binds it (0-based), when known.
        by: Option<usize>,
    },
}

/// A line satisfying the failing spec alone, and why it cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked {
    pub line: Item,
    pub by: BlockedBy,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BlockedBy {
    /// A variable bound by an earlier spec has another value.
    Variable(Miss),
    /// The line is used by an earlier spec (index and spec, when known).
    Taken(Option<(usize, Spec)>),
}

/// Matches `specs` against the machine's `lines` and explains a failure.
///
/// Errors are the matcher's ([`SpecError::TooComplex`],
/// [`SpecError::LegacyCrash`]): the server fails the same way.
pub fn explain_specs(lines: &[Item], specs: &[Spec]) -> Result<Verdict, SpecError> {
    let mut vars = Vars::new();
    let mut forced = Vars::new();
    if spec::match_all(lines, specs, &mut vars, &mut forced)? {
        return Ok(Verdict::Match { vars, forced });
    }
    let (index, bound) =
        failing_prefix(specs, |prefix, v, f| spec::match_all(lines, prefix, v, f))?;
    let Some(failing) = specs.get(index) else {
        // No specs always match; unreachable through match_all.
        return Ok(Verdict::Match { vars, forced });
    };
    let cause = cause(lines, &specs[..index], failing, &bound);
    Ok(Verdict::NoMatch(Failure {
        index,
        spec: failing.clone(),
        cause,
    }))
}

/// The 0-based index of the first spec of `specs` that the machine's
/// `lines` cannot satisfy (the one [`explain_specs`] names), `None` when
/// they all match. All the matching draws on `budget`, so that a caller
/// explaining many profiles bounds its whole cost (the server does, to
/// record why a machine matched nothing).
pub fn first_failing_spec(
    lines: &[Item],
    specs: &[Spec],
    budget: &mut Budget,
) -> Result<Option<usize>, SpecError> {
    let (mut vars, mut forced) = (Vars::new(), Vars::new());
    if spec::match_all_within(lines, specs, &mut vars, &mut forced, budget)? {
        return Ok(None);
    }
    let (index, _) = failing_prefix(specs, |prefix, v, f| {
        spec::match_all_within(lines, prefix, v, f, budget)
    })?;
    Ok(Some(index))
}

/// For specs that do not match as a whole: the index of the spec after the
/// longest prefix `matches` accepts, and the variables that prefix binds.
/// A prefix fails only if every longer one does (the matcher searches the
/// longer one's first specs exactly as the shorter one), so bisect.
fn failing_prefix(
    specs: &[Spec],
    mut matches: impl FnMut(&[Spec], &mut Vars, &mut Vars) -> Result<bool, SpecError>,
) -> Result<(usize, Vars), SpecError> {
    let mut ok = 0;
    let mut failed = specs.len();
    let mut bound = Vars::new();
    while failed - ok > 1 {
        let mid = ok + (failed - ok) / 2;
        let mut v = Vars::new();
        let mut f = Vars::new();
        if matches(&specs[..mid], &mut v, &mut f)? {
            ok = mid;
            bound = unrename(v, f);
        } else {
            failed = mid;
        }
    }
    Ok((failed.saturating_sub(1), bound))
}

/// The variables as they are while matching: `match_all` renames each `$$x`
/// variable (key `$x`) to `x` once it succeeds; undo that.
fn unrename(mut vars: Vars, forced: Vars) -> Vars {
    for (k, v) in forced {
        if vars.get(&k) == Some(&v) {
            vars.remove(&k);
        }
        vars.insert(format!("${k}"), v);
    }
    vars
}

fn cause(lines: &[Item], earlier: &[Spec], failing: &Spec, bound: &Vars) -> Cause {
    let fresh = Vars::new();
    let alone: Vec<&Item> = lines
        .iter()
        .filter(|l| line_passes(failing, l, &fresh))
        .collect();
    if alone.is_empty() {
        return Cause::NoLine {
            closest: closest(lines, failing),
        };
    }
    let taken = replay(lines, earlier, bound);
    let blocked = alone.iter().map(|&line| {
        let by = match first_miss(failing, line, bound, earlier) {
            Some(miss) => BlockedBy::Variable(miss),
            None => BlockedBy::Taken(
                taken
                    .iter()
                    .position(|t| t == line)
                    .and_then(|j| Some((j, earlier.get(j)?.clone()))),
            ),
        };
        Blocked {
            line: line.clone(),
            by,
        }
    });
    let lines: Vec<Blocked> = blocked.take(MAX_BLOCKED).collect();
    Cause::Blocked {
        lines,
        more: alone.len().saturating_sub(MAX_BLOCKED),
    }
}

/// Which line each earlier spec uses once every variable has its final
/// value: one assignment the matcher could have found (it may have picked
/// another among equivalent ones).
fn replay(lines: &[Item], earlier: &[Spec], bound: &Vars) -> Vec<Item> {
    let mut rest = lines.to_vec();
    let mut taken = Vec::with_capacity(earlier.len());
    for s in earlier {
        let mut vars = bound.clone();
        match spec::match_spec(s, &mut rest, &mut vars) {
            Some(line) => taken.push(line),
            None => break,
        }
    }
    taken
}

/// The lines passing the most leading fields of `spec` (then the most
/// fields), at least the first one, with their first failing field.
fn closest(lines: &[Item], spec: &Spec) -> Vec<Near> {
    let fresh = Vars::new();
    let mut scored: Vec<(usize, usize, usize, Miss)> = Vec::new();
    for (pos, line) in lines.iter().enumerate() {
        let passes: Vec<bool> = (0..4)
            .map(|i| field_passes(spec, i, line, &fresh))
            .collect();
        let leading = passes.iter().take_while(|&&p| p).count();
        if leading == 0 {
            continue;
        }
        let total = passes.iter().filter(|&&p| p).count();
        if let Some(miss) = first_miss(spec, line, &fresh, &[]) {
            scored.push((leading, total, pos, miss));
        }
    }
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    scored
        .into_iter()
        .take(MAX_CLOSEST)
        .filter_map(|(_, _, pos, miss)| {
            Some(Near {
                line: lines.get(pos)?.clone(),
                miss,
            })
        })
        .collect()
}

/// Does the matcher accept `line` for `spec` with `vars` bound?
fn line_passes(spec: &Spec, line: &Item, vars: &Vars) -> bool {
    let mut vars = vars.clone();
    spec::match_spec(spec, &mut vec![line.clone()], &mut vars).is_some()
}

/// Does field `i` of `line` pass field `i` of `spec`? The matcher judges a
/// spec whose other fields are fresh variables, which accept anything.
fn field_passes(spec: &Spec, i: usize, line: &Item, vars: &Vars) -> bool {
    let mut probe = spec.clone();
    for (j, field) in probe.iter_mut().enumerate() {
        if j != i {
            *field = HwValue::Str(format!("${}", wildcard(j, vars)));
        }
    }
    line_passes(&probe, line, vars)
}

/// A variable name no spec binds: hardware lines are ASCII, so a probe
/// holding it never equals a line in the matcher's exact-line pass.
fn wildcard(j: usize, vars: &Vars) -> String {
    let mut name = format!("\u{2063}{j}");
    while vars.contains_key(&name) {
        name.push('\u{2063}');
    }
    name
}

/// The first field of `line` failing `spec` with `vars` bound, and why.
/// `earlier` are the specs that bound `vars`, to name the one binding a
/// conflicting variable.
fn first_miss(spec: &Spec, line: &Item, vars: &Vars, earlier: &[Spec]) -> Option<Miss> {
    let field = (0..4).find(|&i| !field_passes(spec, i, line, vars))?;
    let spec_field = spec.get(field)?;
    let value = line.get(field)?.clone();
    let Some(text) = spec_field.as_str() else {
        let expected = spec_field.clone();
        return Some(Miss {
            field,
            value,
            why: Why::Differs { expected },
        });
    };
    let fresh = Vars::new();
    let why = match text.strip_prefix('$') {
        Some(var) => {
            let (name, call) = split_assignment(var);
            match call {
                Some(call) if !field_passes(spec, field, line, &fresh) => {
                    match spec::check_field(spec_field) {
                        Err(p) => Why::Invalid { problem: p.0 },
                        Ok(()) => Why::Fails {
                            call: call.to_string(),
                        },
                    }
                }
                _ => Why::Bound {
                    var: name.to_string(),
                    value: vars.get(name).cloned().unwrap_or(HwValue::None),
                    by: earlier.iter().position(|s| binds(s, name)),
                },
            }
        }
        None => match spec::check_field(spec_field) {
            Err(p) => Why::Invalid { problem: p.0 },
            Ok(()) if looks_like_call(text) => Why::Fails {
                call: text.to_string(),
            },
            Ok(()) => Why::Differs {
                expected: spec_field.clone(),
            },
        },
    };
    Some(Miss { field, value, why })
}

/// `name=call` when the variable text holds exactly one `=`, as the matcher
/// reads it.
fn split_assignment(var: &str) -> (&str, Option<&str>) {
    match var.split_once('=') {
        Some((name, call)) if !call.contains('=') => (name, Some(call)),
        _ => (var, None),
    }
}

/// Does `spec` bind the variable `name`?
fn binds(spec: &Spec, name: &str) -> bool {
    spec.iter()
        .filter_map(|f| f.as_str()?.strip_prefix('$'))
        .any(|var| split_assignment(var).0 == name)
}

/// Only chooses the wording ("fails gt(100)" or "is not 'x'"); whether the
/// field passes is always the matcher's answer.
fn looks_like_call(text: &str) -> bool {
    const FUNCTIONS: [&str; 11] = [
        "gt", "ge", "lt", "le", "in", "network", "regexp", "range", "not", "and", "or",
    ];
    text.ends_with(')')
        && text
            .split_once('(')
            .is_some_and(|(name, _)| FUNCTIONS.contains(&name))
}

/// Python's repr of a string, as the files show it.
pub fn py_str(s: &str) -> String {
    String::from_utf8_lossy(&literal::repr(&Value::str(s))).into_owned()
}

/// Python's repr of a spec or hardware line, as the files show it.
pub fn py_tuple(fields: &[HwValue; 4]) -> String {
    let tuple = Value::Tuple(fields.iter().map(HwValue::to_value).collect());
    String::from_utf8_lossy(&literal::repr(&tuple)).into_owned()
}

/// `$x` for the variable key `x`, `$$x` for `$x`.
fn var_name(key: &str) -> String {
    format!("${key}")
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.field + 1;
        let value = &self.value;
        match &self.why {
            Why::Differs { expected } => {
                write!(f, "field {n} {value} is not {expected}")?;
                if value.as_str().is_none() && expected.as_str() == Some(&value.to_string()) {
                    write!(
                        f,
                        " (a number never equals text: write {value} or bind it to a $variable)"
                    )?;
                }
                Ok(())
            }
            Why::Fails { call } if value.as_str().is_none() => write!(
                f,
                "field {n} {value} fails {call} (functions never apply to a number, \
                 the legacy server fails there: compare with a number or bind it)"
            ),
            Why::Fails { call } => write!(f, "field {n} {value} fails {call}"),
            Why::Invalid { problem } => write!(f, "field {n} {value}: {problem}"),
            Why::Bound {
                var,
                value: bound,
                by,
            } => {
                write!(
                    f,
                    "field {n} {value}: {} is already {}",
                    var_name(var),
                    bound
                )?;
                match by {
                    Some(j) => write!(f, " (bound by spec {})", j + 1),
                    None => Ok(()),
                }
            }
        }
    }
}

impl fmt::Display for Failure {
    /// One line for the verdict, then one indented line per detail.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.index + 1;
        let spec = py_tuple(&self.spec);
        match &self.cause {
            Cause::NoLine { closest } => {
                write!(f, "no hardware line satisfies spec {n} {spec}")?;
                let mut near = closest.iter();
                match near.next() {
                    Some(first) => write!(
                        f,
                        " \u{2014} closest: {}: {}",
                        py_tuple(&first.line),
                        first.miss
                    )?,
                    None => write!(
                        f,
                        " \u{2014} no hardware line passes its field 1 {}",
                        self.spec[0]
                    )?,
                }
                for other in near {
                    write!(
                        f,
                        "\n  also close: {}: {}",
                        py_tuple(&other.line),
                        other.miss
                    )?;
                }
                Ok(())
            }
            Cause::Blocked { lines, more } => {
                let earlier = match self.index {
                    1 => "spec 1".to_string(),
                    i => format!("specs 1-{i}"),
                };
                write!(
                    f,
                    "spec {n} {spec} cannot be satisfied together with {earlier} \
                     (backtracking exhausted: no choice of lines for them leaves one for it)"
                )?;
                for b in lines {
                    let line = py_tuple(&b.line);
                    match &b.by {
                        BlockedBy::Variable(miss) => write!(f, "\n  {line}: {miss}")?,
                        BlockedBy::Taken(Some((j, s))) => write!(
                            f,
                            "\n  {line} satisfies it alone but is used by spec {} {}",
                            j + 1,
                            py_tuple(s)
                        )?,
                        BlockedBy::Taken(None) => write!(
                            f,
                            "\n  {line} satisfies it alone but is used by an earlier spec"
                        )?,
                    }
                }
                if *more > 0 {
                    write!(f, "\n  ... and {more} more lines")?;
                }
                Ok(())
            }
        }
    }
}

/// One profile of the state file, as the server would see it.
#[derive(Debug)]
pub struct ProfileReport {
    pub profile: String,
    pub quota: Quota,
    pub outcome: ProfileOutcome,
}

#[derive(Debug)]
pub enum ProfileOutcome {
    /// Count 0: not tried.
    NoQuota,
    /// No `<profile>.specs`: never matches.
    NoSpecs { file: PathBuf },
    /// The specs do not match.
    Failed {
        file: PathBuf,
        /// The specs file's text, to locate the failing spec.
        src: Vec<u8>,
        failure: Failure,
    },
    /// The profile would be installed: the script's `var` (with
    /// `edeploy-profile`) and the CMDB entry given, when there is a CMDB.
    Matched {
        vars: Dict,
        cmdb: Option<(PathBuf, usize)>,
    },
    /// The specs match but the CMDB has no entry for the machine: the
    /// request fails (later profiles are not tried).
    CmdbExhausted { file: PathBuf, message: String },
    /// The request fails on this profile (unreadable or invalid file).
    Error(String),
    /// An earlier profile ended the request.
    NotTried,
}

/// What the server would do with a machine.
#[derive(Debug)]
pub struct ConfigReport {
    pub state_file: PathBuf,
    pub profiles: Vec<ProfileReport>,
    /// The profile installed, or the error message the machine receives.
    pub answer: Result<String, String>,
}

/// Why no report could be made: the server fails the same way before
/// trying any profile.
#[derive(Debug)]
pub enum ExplainError {
    Io { path: PathBuf, source: io::Error },
    State(StateError),
}

impl fmt::Display for ExplainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExplainError::Io { path, source } => write!(f, "{}: {}", path.display(), source),
            ExplainError::State(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ExplainError {}

/// Replays the server's choice of a profile for `items` (LEGACY-SEMANTICS
/// §4, as `provision` does it) without writing anything, and says for each
/// profile what happened. No lock is taken: a writer never waits for it.
pub fn explain_config(cfg: &Config, items: &[Item]) -> Result<ConfigReport, ExplainError> {
    let state_file = cfg.config_dir.join("state");
    let src = store::read_version(&state_file).map_err(|source| ExplainError::Io {
        path: state_file.clone(),
        source,
    })?;
    let state = State::parse(&state_file, &src).map_err(ExplainError::State)?;

    let mut profiles = Vec::new();
    let mut tried = Vec::new();
    let mut answer = None;
    for entry in state.entries() {
        let outcome = if answer.is_some() {
            ProfileOutcome::NotTried
        } else if !entry.quota.available() {
            ProfileOutcome::NoQuota
        } else {
            tried.push(entry.profile.clone());
            let outcome = try_profile(cfg, &state, &entry.profile, items);
            answer = match &outcome {
                ProfileOutcome::Matched { .. } => Some(Ok(entry.profile.clone())),
                ProfileOutcome::CmdbExhausted { message, .. } => Some(Err(message.clone())),
                ProfileOutcome::Error(message) => Some(Err(message.clone())),
                _ => None,
            };
            outcome
        };
        profiles.push(ProfileReport {
            profile: entry.profile.clone(),
            quota: entry.quota,
            outcome,
        });
    }
    let answer = answer.unwrap_or_else(|| {
        let error = if tried.is_empty() {
            ProvisionError::NoQuota {
                state_file: state_file.clone(),
            }
        } else {
            ProvisionError::NoMatch {
                config_dir: cfg.config_dir.clone(),
                profiles: tried,
            }
        };
        Err(error.to_string())
    });
    Ok(ConfigReport {
        state_file,
        profiles,
        answer,
    })
}

/// One step of the server's profile loop.
fn try_profile(cfg: &Config, state: &State, profile: &str, items: &[Item]) -> ProfileOutcome {
    let file = |extension| state.profile_file(profile, extension);
    let (specs_file, cmdb_file, configure) = match (file("specs"), file("cmdb"), file("configure"))
    {
        (Ok(specs), Ok(cmdb), Ok(configure)) => (specs, cmdb, configure),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            return ProfileOutcome::Error(e.to_string())
        }
    };
    let src = match read_if_exists(&specs_file) {
        Ok(Some(src)) => src,
        Ok(None) => return ProfileOutcome::NoSpecs { file: specs_file },
        Err(e) => return ProfileOutcome::Error(format!("{}: {e}", specs_file.display())),
    };
    let specs = match spec::parse_specs(&specs_file, &src) {
        Ok(specs) => specs,
        Err(e) => return ProfileOutcome::Error(e.to_string()),
    };
    let (vars, forced) = match explain_specs(items, &specs) {
        Ok(Verdict::Match { vars, forced }) => (vars, forced),
        Ok(Verdict::NoMatch(failure)) => {
            return ProfileOutcome::Failed {
                file: specs_file,
                src,
                failure,
            }
        }
        Err(e) => return ProfileOutcome::Error(e.to_string()),
    };
    let vars = spec::vars_dict(&vars);
    let forced = spec::vars_dict(&forced);
    let (mut vars, cmdb) = match read_cmdb(cfg, &cmdb_file) {
        Ok(Some(src)) => {
            match cmdb::select_within(&cmdb_file, &src, &vars, &forced, cfg.max_cmdb_size) {
                Ok(Some(selection)) => (selection.vars, Some((cmdb_file, selection.index))),
                Ok(None) => (vars, None),
                Err(e @ CmdbError::Exhausted { .. }) => {
                    return ProfileOutcome::CmdbExhausted {
                        file: cmdb_file,
                        message: e.to_string(),
                    }
                }
                Err(e) => return ProfileOutcome::Error(e.to_string()),
            }
        }
        Ok(None) => (vars, None),
        Err(e) => return ProfileOutcome::Error(format!("{}: {e}", cmdb_file.display())),
    };
    if let Err(e) = std::fs::File::open(&configure) {
        return ProfileOutcome::Error(format!("{}: {e}", configure.display()));
    }
    vars.insert(Value::str("edeploy-profile"), Value::str(profile));
    ProfileOutcome::Matched { vars, cmdb }
}

/// `path:line:col: ` for spec `index` of a specs file whose text is `src`.
fn spec_location(path: &Path, src: &[u8], index: usize) -> String {
    match Positions::new(src).at(&[0, index]) {
        Some((line, column)) => format!("{}:{line}:{column}: ", path.display()),
        None => format!("{}: ", path.display()),
    }
}

/// A failure located in its specs file `path` (text `src`), as `edeploy
/// try-match` prints it.
pub fn failure_text(path: &Path, src: &[u8], failure: &Failure) -> String {
    format!("{}{failure}", spec_location(path, src, failure.index))
}

/// The report as `edeploy explain` prints it (and the status page shows
/// it): one paragraph per profile, then the answer.
pub fn write_report(report: &ConfigReport, out: &mut dyn Write) -> io::Result<()> {
    for p in &report.profiles {
        let count = match p.quota {
            Quota::Unlimited => "'*'".to_string(),
            Quota::Remaining(n) => n.to_string(),
        };
        write!(out, "profile {} (count {count}): ", p.profile)?;
        match &p.outcome {
            ProfileOutcome::NoQuota => writeln!(out, "skipped: no installation left")?,
            ProfileOutcome::NoSpecs { file } => {
                writeln!(out, "no {}: never matches", file.display())?
            }
            ProfileOutcome::Failed { file, src, failure } => {
                let text = failure_text(file, src, failure).replace('\n', "\n  ");
                writeln!(out, "no match\n  {text}")?
            }
            ProfileOutcome::Matched { vars, cmdb } => {
                writeln!(out, "matched")?;
                if let Some((file, index)) = cmdb {
                    writeln!(
                        out,
                        "  CMDB entry {index} of {} would be given",
                        file.display()
                    )?;
                }
                let mut text = Vec::new();
                literal::format_at(&mut text, &Value::Dict(vars.clone()), 8, 0);
                writeln!(out, "  var = {}", String::from_utf8_lossy(&text))?;
            }
            ProfileOutcome::CmdbExhausted { file, message } => writeln!(
                out,
                "matched, but {} has no entry for it: {message}",
                file.display()
            )?,
            ProfileOutcome::Error(message) => writeln!(out, "error: {message}")?,
            ProfileOutcome::NotTried => writeln!(out, "not tried")?,
        }
    }
    match &report.answer {
        Ok(profile) => writeln!(out, "answer: profile {profile} would be installed"),
        Err(message) => writeln!(out, "answer: error: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hardware line or a spec, as the context wants.
    fn item<T: for<'a> From<&'a str>>(f: [&str; 4]) -> [T; 4] {
        f.map(T::from)
    }

    fn no_match(lines: &[Item], specs: &[Spec]) -> Failure {
        match explain_specs(lines, specs) {
            Ok(Verdict::NoMatch(f)) => f,
            other => panic!("expected no match, got {other:?}"),
        }
    }

    #[test]
    fn match_gives_the_matcher_variables() {
        let lines = [item(["disk", "sda", "size", "200"])];
        let specs = [item(["disk", "$disk", "size", "gt(100)"])];
        let Ok(Verdict::Match { vars, forced }) = explain_specs(&lines, &specs) else {
            panic!("expected a match");
        };
        assert_eq!(vars.get("disk").and_then(HwValue::as_str), Some("sda"));
        assert!(forced.is_empty());
    }

    #[test]
    fn closest_line_and_failing_function() {
        let lines = [
            item(["cpu", "logical", "number", "2"]),
            item(["disk", "sda", "size", "20"]),
            item(["disk", "sdb", "count", "50"]),
        ];
        let specs = [
            item(["cpu", "logical", "number", "2"]),
            item(["disk", "$disk", "size", "gt(100)"]),
        ];
        let f = no_match(&lines, &specs);
        assert_eq!(f.index, 1);
        let Cause::NoLine { closest } = &f.cause else {
            panic!("{f:?}");
        };
        // sda passes three leading fields, sdb two.
        assert_eq!(closest.len(), 2);
        assert_eq!(closest[0].line[1], "sda");
        assert_eq!(closest[0].miss.field, 3);
        assert_eq!(closest[1].miss.field, 2);
        assert_eq!(
            f.to_string(),
            "no hardware line satisfies spec 2 ('disk', '$disk', 'size', 'gt(100)') \u{2014} \
             closest: ('disk', 'sda', 'size', '20'): field 4 '20' fails gt(100)\n  \
             also close: ('disk', 'sdb', 'count', '50'): field 3 'count' is not 'size'"
        );
    }

    /// Real detection sends numbers: the explanation says why text and
    /// functions do not match them.
    #[test]
    fn numbers_in_hardware_are_explained() {
        let lines = [
            [
                HwValue::from("cpu"),
                "physical".into(),
                "number".into(),
                HwValue::Int(2),
            ],
            [
                "cpu".into(),
                "logical_0".into(),
                "loops".into(),
                HwValue::Int(408),
            ],
        ];
        let f = no_match(&lines, &[item(["cpu", "physical", "number", "2"])]);
        assert_eq!(
            f.to_string(),
            "no hardware line satisfies spec 1 ('cpu', 'physical', 'number', '2') \u{2014} \
             closest: ('cpu', 'physical', 'number', 2): field 4 2 is not '2' (a number never \
             equals text: write 2 or bind it to a $variable)\n  \
             also close: ('cpu', 'logical_0', 'loops', 408): field 2 'logical_0' is not 'physical'"
        );
        let f = no_match(&lines, &[item(["cpu", "logical_0", "loops", "gt(100)"])]);
        assert!(
            f.to_string()
                .contains("field 4 408 fails gt(100) (functions never apply to a number"),
            "{f}"
        );
        let numeric = [
            HwValue::from("cpu"),
            "physical".into(),
            "number".into(),
            HwValue::Float(2.0),
        ];
        let Ok(Verdict::Match { .. }) = explain_specs(&lines, &[numeric]) else {
            panic!("2.0 in a spec equals the machine's 2");
        };
    }

    #[test]
    fn variable_bound_earlier_blocks_the_line() {
        let lines = [
            item(["network", "eth0", "ipv4", "10.0.0.1"]),
            item(["network", "eth1", "link", "yes"]),
        ];
        let specs = [
            item(["network", "$eth", "ipv4", "network(10.0.0.0/24)"]),
            item(["network", "$eth", "link", "yes"]),
        ];
        let f = no_match(&lines, &specs);
        assert_eq!(f.index, 1);
        let text = f.to_string();
        assert!(
            text.contains("('network', 'eth1', 'link', 'yes'): field 2 'eth1': $eth is already 'eth0' (bound by spec 1)"),
            "{text}"
        );
        assert!(text.contains("backtracking exhausted"), "{text}");
    }

    #[test]
    fn line_taken_by_an_earlier_spec() {
        let lines = [item(["disk", "sda", "size", "20"])];
        let specs = [
            item(["disk", "$d1", "size", "20"]),
            item(["disk", "$d2", "size", "20"]),
        ];
        let f = no_match(&lines, &specs);
        assert_eq!(
            f.to_string().lines().nth(1),
            Some(
                "  ('disk', 'sda', 'size', '20') satisfies it alone but is used by spec 1 \
                 ('disk', '$d1', 'size', '20')"
            )
        );
    }

    #[test]
    fn forced_variables_are_seen_under_their_matching_name() {
        let lines = [
            item(["system", "product", "serial", "S1"]),
            item(["disk", "sda", "serial", "S2"]),
        ];
        let specs = [
            item(["system", "product", "serial", "$$serial"]),
            item(["disk", "$disk", "serial", "$$serial"]),
        ];
        let f = no_match(&lines, &specs);
        let text = f.to_string();
        assert!(
            text.contains("$$serial is already 'S1' (bound by spec 1)"),
            "{text}"
        );
    }

    #[test]
    fn first_spec_failing_and_invalid_fields() {
        let lines = [item(["disk", "sda", "size", "20"])];
        let f = no_match(&lines, &[item(["disk", "$d", "size", "foo(1)"])]);
        assert_eq!(f.index, 0);
        let text = f.to_string();
        assert!(
            text.contains("field 4 '20': \"foo(1)\": unknown function, the field never matches"),
            "{text}"
        );
        let f = no_match(&lines, &[item(["memory", "total", "size", "1"])]);
        assert!(f
            .to_string()
            .ends_with("no hardware line passes its field 1 'memory'"));
    }

    #[test]
    fn assignment_failing_its_function() {
        let lines = [item(["disk", "sda", "size", "20"])];
        let f = no_match(&lines, &[item(["disk", "$d", "size", "$size=gt(30)"])]);
        assert!(f.to_string().ends_with("field 4 '20' fails gt(30)"), "{f}");
    }

    mod random {
        use super::*;
        use proptest::prelude::*;

        fn field() -> impl Strategy<Value = String> {
            prop_oneof![
                "[ab]".prop_map(String::from),
                "[12]".prop_map(String::from),
                Just("$x".to_string()),
                Just("$y".to_string()),
                Just("$$z".to_string()),
                Just("gt(1)".to_string()),
                Just("$y=le(1)".to_string()),
            ]
        }

        fn value() -> impl Strategy<Value = String> {
            "[ab12]".prop_map(String::from)
        }

        proptest! {
            /// The failing spec is where the matcher's verdict on prefixes
            /// flips, and a verdict is never different from the matcher's.
            #[test]
            fn verdicts_are_the_matchers(
                lines in prop::collection::vec([value(), value(), value(), value()], 0..6),
                specs in prop::collection::vec([field(), field(), field(), field()], 1..7),
            ) {
                let lines: Vec<Item> =
                    lines.into_iter().map(|l| l.map(HwValue::Str)).collect();
                let specs: Vec<Spec> =
                    specs.into_iter().map(|l| l.map(HwValue::Str)).collect();
                let matches = |n: usize| {
                    let (mut v, mut f) = (Vars::new(), Vars::new());
                    spec::match_all(&lines, &specs[..n], &mut v, &mut f)
                };
                let Ok(whole) = matches(specs.len()) else {
                    return Ok(());
                };
                let first = first_failing_spec(&lines, &specs, &mut Budget::request());
                match explain_specs(&lines, &specs) {
                    Ok(Verdict::Match { .. }) => {
                        prop_assert!(whole);
                        prop_assert_eq!(first, Ok(None));
                    }
                    Ok(Verdict::NoMatch(f)) => {
                        prop_assert!(!whole);
                        prop_assert_eq!(first, Ok(Some(f.index)));
                        prop_assert_eq!(matches(f.index), Ok(true));
                        prop_assert_eq!(matches(f.index + 1), Ok(false));
                        prop_assert!(!f.to_string().is_empty());
                    }
                    Err(e) => prop_assert!(false, "{e}"),
                }
            }
        }
    }
}

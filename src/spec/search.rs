//! How specs pick hardware lines: the first line a spec accepts
//! ([`find_line`]), and the legacy backtracking over all the specs
//! (LEGACY-SEMANTICS §3), whose first solution is the answer.
//!
//! The legacy search is exponential where specs bind many variables over
//! similar lines (and it retries the same choices in cycles, up to its
//! depth limit), so it is pruned here: a call that cannot succeed is
//! answered `false` at once. Only failing branches are cut, and they change
//! nothing, so the answer, the variables (stale keys of abandoned branches
//! included) and the legacy crashes stay those of the legacy order.

use std::collections::HashMap;
use std::rc::Rc;

use super::functions::call_holds;
use super::syntax::{classify, parse_call, split_assignment, Call, Field};
use super::{Budget, Spec, SpecError, Vars};
use crate::hw::{HwValue, Item};
use crate::pydict::PyDict;

/// Depth of the legacy recursion, after which a branch fails.
pub(super) const MAX_LEVEL: usize = 50;

/// A spec field, read once: what a line's field must be for the spec to
/// take the line (in the pass after the exact one).
pub(super) enum Check<'s> {
    /// Plain text: the same text.
    Text(&'s str),
    /// A number (or boolean, None) in the specs file: equal, as Python
    /// compares (the legacy code raises on it past the exact pass).
    Value(&'s HwValue),
    /// A known function, true of the value.
    Call(Rc<Call>),
    /// `$name`, or `$name=call` (the call true of the value): the variable
    /// is bound to the value, or must already be equal to it.
    Var {
        name: &'s str,
        call: Option<Rc<Call>>,
    },
    /// Never passes: an unknown function, or `$name=` followed by no call.
    Never,
}

impl<'s> Check<'s> {
    pub(super) fn of(field: &'s HwValue) -> Check<'s> {
        let Some(text) = field.as_str() else {
            return Check::Value(field);
        };
        if let Some(var) = text.strip_prefix('$') {
            return match split_assignment(var) {
                None => Check::Var {
                    name: var,
                    call: None,
                },
                Some((name, func)) => match func.ends_with(')').then(|| parse_call(func)) {
                    Some(Some(call)) => Check::Var {
                        name,
                        call: Some(call),
                    },
                    _ => Check::Never,
                },
            };
        }
        if !text.ends_with(')') {
            return Check::Text(text);
        }
        match classify(text) {
            Field::NotCall => Check::Text(text),
            Field::Unknown => Check::Never,
            Field::Call(call) => Check::Call(call),
        }
    }

    /// What does not depend on the variables.
    fn holds(&self, value: &HwValue) -> bool {
        match self {
            Check::Text(text) => value == text,
            Check::Value(v) => value == *v,
            Check::Call(call)
            | Check::Var {
                call: Some(call), ..
            } => call_holds(call, value),
            Check::Var { call: None, .. } => true,
            Check::Never => false,
        }
    }
}

/// The checks of a spec's four fields.
fn checks(spec: &Spec) -> [Check<'_>; 4] {
    [0, 1, 2, 3].map(|i| Check::of(&spec[i]))
}

/// Are the variables of `checks` unbound or equal to the line's values?
/// (Against the variables bound before this line: a variable twice in one
/// spec takes the later field's value, as in the legacy code.)
fn consistent<'a>(
    checks: &[Check<'_>; 4],
    line: &Item,
    bound: impl Fn(&str) -> Option<&'a HwValue>,
) -> bool {
    checks.iter().zip(line).all(|(check, value)| match check {
        Check::Var { name, .. } => bound(name).is_none_or(|b| b == value),
        _ => true,
    })
}

/// The variables a line passing `checks` binds, in field order.
fn binds<'s, 'l>(checks: &[Check<'s>; 4], line: &'l Item) -> Vec<(&'s str, &'l HwValue)> {
    checks
        .iter()
        .zip(line)
        .filter_map(|(check, value)| match check {
            Check::Var { name, .. } => Some((*name, value)),
            _ => None,
        })
        .collect()
}

/// Finds the line for `spec` (`item` gives a line's fields): the first line
/// equal to it, else the first whose four fields pass; returns its position
/// with the variables to bind, in field order.
pub(super) fn find_line<'s, 'l, 'a, T>(
    spec: &'s Spec,
    lines: &'l [T],
    item: impl Fn(&'l T) -> &'l Item,
    bound: impl Fn(&str) -> Option<&'a HwValue>,
) -> Option<(usize, Vec<(&'s str, &'l HwValue)>)> {
    if let Some(pos) = lines.iter().position(|l| item(l) == spec) {
        return Some((pos, Vec::new()));
    }
    let checks = checks(spec);
    let pos = lines.iter().position(|l| {
        let line = item(l);
        checks.iter().zip(line).all(|(c, v)| c.holds(v)) && consistent(&checks, line, &bound)
    })?;
    Some((pos, binds(&checks, item(&lines[pos]))))
}

/// The legacy search (pruned when `prune`), its recursion stopped at
/// `max_level` ([`MAX_LEVEL`], the legacy's; the tests use small limits to
/// reach them).
pub(super) fn run(
    lines: &[Item],
    specs: &[Spec],
    vars: &mut Vars,
    forced: &mut Vars,
    budget: &mut Budget,
    prune: bool,
    max_level: usize,
) -> Result<bool, SpecError> {
    let mut dict = PyDict::new();
    for (k, v) in vars.iter() {
        dict.insert(k, v);
    }
    let mut forced_dict = PyDict::new();
    for (k, v) in forced.iter() {
        forced_dict.insert(k, v);
    }
    let fixed = if specs.len().saturating_mul(lines.len()) <= MAX_TABLE {
        vec![0; specs.len() * lines.len()]
    } else {
        Vec::new()
    };
    // A step compares whole values: long ones make it dearer.
    let longest = lines
        .iter()
        .flatten()
        .filter_map(HwValue::as_str)
        .map(str::len)
        .max()
        .unwrap_or(0);
    let checks: Vec<[Check<'_>; 4]> = specs.iter().map(checks).collect();
    let (spec_kinds, line_kinds) = kinds(&checks, lines);
    let mut fixed = fixed;
    if !fixed.is_empty() {
        // Lines of other kinds: known at once. A spec's row is filled,
        // then cleared again for the lines of its kind (a few of them).
        let mut of_kind: Vec<Vec<usize>> = Vec::new();
        for (l, &kind) in line_kinds.iter().enumerate() {
            if let Some(k) = usize::try_from(kind).ok().filter(|_| kind != NO_KIND) {
                if of_kind.len() <= k {
                    of_kind.resize_with(k + 1, Vec::new);
                }
                of_kind[k].push(l);
            }
        }
        for (row, &kind) in fixed.chunks_mut(lines.len().max(1)).zip(&spec_kinds) {
            if kind != NO_KIND {
                row.fill(KNOWN);
                let same = usize::try_from(kind).ok().and_then(|k| of_kind.get(k));
                for &l in same.into_iter().flatten() {
                    row[l] = 0;
                }
            }
        }
    }
    let mut m = Matcher {
        lines,
        specs,
        spec_kinds,
        line_kinds,
        weight: 1 + u64::try_from(longest / BYTES_PER_UNIT).unwrap_or(u64::MAX),
        checks,
        fixed,
        forced: &mut forced_dict,
        left: budget.left,
        budget: budget.total,
        prune,
        backtracking: false,
        failed: HashMap::new(),
        candidates: Vec::new(),
        position: Vec::new(),
        max_level,
    };
    let ok = m.match_all((0..lines.len()).collect(), 0, &mut dict, 0);
    budget.left = m.left;
    let ok = ok?;
    *vars = dict.to_map();
    *forced = forced_dict.to_map();
    Ok(ok)
}

/// The first field of each spec that requires a text there, and of each
/// line, as numbers: equal numbers for equal texts, [`NO_KIND`] for a spec
/// without such a field and for a line whose first field is none of them.
/// A spec cannot take a line of another kind (neither by equality nor by
/// its checks), and most lines are of another kind than most specs: told
/// apart by one comparison of numbers instead of two of texts.
fn kinds(checks: &[[Check<'_>; 4]], lines: &[Item]) -> (Vec<u32>, Vec<u32>) {
    let mut texts: Vec<&str> = Vec::new();
    let spec_kinds = checks
        .iter()
        .map(|c| match c[0] {
            Check::Text(text) => {
                let at = texts.iter().position(|t| *t == text).unwrap_or_else(|| {
                    texts.push(text);
                    texts.len() - 1
                });
                u32::try_from(at).unwrap_or(NO_KIND)
            }
            _ => NO_KIND,
        })
        .collect();
    let line_kinds = lines
        .iter()
        .map(|line| {
            line[0]
                .as_str()
                .and_then(|kind| texts.iter().position(|t| *t == kind))
                .and_then(|at| u32::try_from(at).ok())
                .unwrap_or(NO_KIND)
        })
        .collect();
    (spec_kinds, line_kinds)
}

/// See [`kinds`].
const NO_KIND: u32 = u32::MAX;

/// Bytes of the longest hardware value that make a step cost one more unit.
const BYTES_PER_UNIT: usize = 256;

/// Largest table of what each spec makes of each line; past it, this is
/// computed each time.
const MAX_TABLE: usize = 1 << 22;

struct Matcher<'s, 'f> {
    lines: &'s [Item],
    specs: &'s [Spec],
    /// The kind each spec requires of a line's first field, and each
    /// line's (see [`kinds`]).
    spec_kinds: Vec<u32>,
    line_kinds: Vec<u32>,
    checks: Vec<[Check<'s>; 4]>,
    /// For spec `s` and line `l`, at `s * lines + l`: 0 not known yet, else
    /// [`KNOWN`] with [`EQUAL`] (the line equals the spec) and [`FIXED`]
    /// (its fields pass but for the variables). Functions are evaluated once.
    fixed: Vec<u8>,
    forced: &'f mut PyDict,
    left: u64,
    budget: u64,
    /// Units of the budget a step costs: more for longer values.
    weight: u64,
    /// Whether to cut branches that cannot succeed (always, but for the
    /// reference [`match_all_unpruned`]).
    prune: bool,
    /// Set when a spec first finds no line: the search backtracks from then
    /// on, and pruning pays for itself. A match found greedily never pays.
    backtracking: bool,
    /// Calls that failed, with the lowest level at which each did.
    failed: HashMap<CallKey, usize>,
    /// The legacy's recursion limit ([`MAX_LEVEL`]).
    max_level: usize,
    /// For each spec, the lines it may take whatever the variables (see
    /// [`Matcher::candidates`]); made with `position`.
    candidates: Vec<Option<Rc<[usize]>>>,
    /// Scratch for [`Matcher::feasible`]: each line's position among the
    /// lines left, `usize::MAX` for none.
    position: Vec<usize>,
}

/// What a call of the legacy `match_all` depends on: its lines in order,
/// its first spec and its variables (values by repr, which is stricter than
/// Python's equality). The same call fails again at the same or a deeper
/// level, where it may explore less but never more.
#[derive(PartialEq, Eq, Hash)]
struct CallKey {
    lines: Vec<usize>,
    spec: usize,
    vars: Vec<(String, String)>,
}

/// Failed calls remembered at most; past it the search goes on unpruned
/// by memory (still bounded by the budget).
const MAX_REMEMBERED: usize = 1 << 20;

/// A backtracking point: the lines (indices, the matched one moved last),
/// the index of the spec to retry from and the variables before it matched.
struct Point {
    lines: Vec<usize>,
    spec: usize,
    vars: PyDict,
}

const KNOWN: u8 = 1;
const EQUAL: u8 = 2;
const FIXED: u8 = 4;

impl Matcher<'_, '_> {
    /// What spec `s` makes of line `l` regardless of the variables. Called
    /// for every line a spec looks at, again and again while backtracking:
    /// a look in the table, inlined; the work is done once, in [`Matcher::compute`].
    #[inline]
    fn fixed(&mut self, s: usize, l: usize) -> u8 {
        let at = s * self.lines.len() + l;
        match self.fixed.get(at) {
            Some(&known) if known != 0 => known,
            _ => self.compute(s, l, at),
        }
    }

    #[inline(never)]
    fn compute(&mut self, s: usize, l: usize, at: usize) -> u8 {
        let mut flags = KNOWN;
        let kind = self.spec_kinds[s];
        if kind != NO_KIND && kind != self.line_kinds[l] {
            if let Some(slot) = self.fixed.get_mut(at) {
                *slot = flags;
            }
            return flags;
        }
        let (spec, line) = (&self.specs[s], &self.lines[l]);
        if line == spec {
            flags |= EQUAL;
        }
        if self.checks[s].iter().zip(line).all(|(c, v)| c.holds(v)) {
            flags |= FIXED;
        }
        if let Some(slot) = self.fixed.get_mut(at) {
            *slot = flags;
        }
        flags
    }

    /// Does spec `s` accept line `l` with `vars` bound (either pass)?
    fn accepts(&mut self, s: usize, l: usize, vars: &PyDict) -> bool {
        let flags = self.fixed(s, l);
        flags & EQUAL != 0
            || (flags & FIXED != 0 && consistent(&self.checks[s], &self.lines[l], |k| vars.get(k)))
    }

    /// [`find_line`] for spec `s` among `lines`: the position of the line,
    /// and whether it was taken by the exact pass (then it binds nothing).
    fn find(&mut self, s: usize, lines: &[usize], vars: &PyDict) -> Option<(usize, bool)> {
        if let Some(pos) = lines.iter().position(|&l| self.fixed(s, l) & EQUAL != 0) {
            return Some((pos, true));
        }
        let pos = lines.iter().position(|&l| {
            self.fixed(s, l) & FIXED != 0
                && consistent(&self.checks[s], &self.lines[l], |k| vars.get(k))
        })?;
        Some((pos, false))
    }

    fn charge(&mut self, units: usize) -> Result<(), SpecError> {
        let units = u64::try_from(units)
            .unwrap_or(u64::MAX)
            .saturating_mul(self.weight);
        self.left = self.left.checked_sub(units).ok_or(SpecError::TooComplex {
            budget: self.budget,
        })?;
        Ok(())
    }

    /// The legacy `match_all` from spec `first_spec` on; `lines` are
    /// indices into `self.lines`, in the legacy list's order.
    ///
    /// Once backtracking, a call first asks whether it can succeed at all:
    /// not if it failed before at this level or above, nor if its specs
    /// cannot each get a line of their own (see [`Matcher::feasible`]).
    /// Such a call would search and fail, and a failed call changes nothing
    /// (its variables are a copy), so answering `false` at once gives the
    /// legacy's answer, and its first solution, sooner.
    fn match_all(
        &mut self,
        lines: Vec<usize>,
        first_spec: usize,
        vars: &mut PyDict,
        level: usize,
    ) -> Result<bool, SpecError> {
        if level == self.max_level {
            return Ok(false);
        }
        if !(self.prune && self.backtracking) {
            return self.search(lines, first_spec, vars, level);
        }
        let mut bound: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        bound.sort_unstable();
        let key = CallKey {
            lines: lines.clone(),
            spec: first_spec,
            vars: bound,
        };
        self.charge(key.lines.len() + key.vars.len())?;
        if self.failed.get(&key).is_some_and(|&l| l <= level) {
            return Ok(false);
        }
        if !self.feasible(&lines, first_spec, vars)? {
            return Ok(false);
        }
        let ok = self.search(lines, first_spec, vars, level)?;
        if !ok && self.failed.len() < MAX_REMEMBERED {
            let at = self.failed.entry(key).or_insert(level);
            *at = (*at).min(level);
        }
        Ok(ok)
    }

    /// The legacy loop: each spec takes the first line it accepts; a spec
    /// that binds a new variable leaves a point to retry it with its line
    /// moved last; a spec without a line retries the points, newest first.
    fn search(
        &mut self,
        mut lines: Vec<usize>,
        first_spec: usize,
        vars: &mut PyDict,
        level: usize,
    ) -> Result<bool, SpecError> {
        let mut saved = vars.copy();
        let mut points: Vec<Point> = Vec::new();
        // Set once the specs left cannot all be matched: the path goes on
        // (its bindings are the variables that the legacy merges a retried
        // branch into, stale keys and all) to the spec that finds no line,
        // but leaves no more points: retried, they would only fail (they
        // hold fewer lines and more bindings).
        let mut doomed = false;
        for index in first_spec..self.specs.len() {
            self.charge(1 + lines.len())?;
            let Some((pos, exact)) = self.find(index, &lines, vars) else {
                self.backtracking = true;
                return self.retry(points, vars, level);
            };
            let line = lines.remove(pos);
            if !exact {
                for (k, v) in binds(&self.checks[index], &self.lines[line]) {
                    vars.insert(k, v);
                }
            }
            if doomed {
                continue;
            }
            if *vars != saved {
                self.charge(lines.len() + 1)?;
                let mut retry = lines.clone();
                retry.push(line);
                points.push(Point {
                    lines: retry,
                    spec: index,
                    vars: std::mem::replace(&mut saved, vars.copy()),
                });
            }
            if self.prune && self.backtracking {
                doomed = !self.feasible(&lines, index + 1, vars)?;
            }
        }
        vars.move_forced(self.forced)
            .map_err(|message| SpecError::LegacyCrash { message })?;
        Ok(true)
    }

    /// A spec found no line: retries the points, newest first.
    fn retry(
        &mut self,
        mut points: Vec<Point>,
        vars: &mut PyDict,
        level: usize,
    ) -> Result<bool, SpecError> {
        while let Some(p) = points.pop() {
            let mut v = p.vars;
            if self.match_all(p.lines, p.spec, &mut v, level + 1)? {
                // The legacy code merges the successful branch's variables
                // into the failed one's: stale `$x` keys stay, unrenamed.
                vars.update(&v);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Can the specs from `first` on still all be matched? Each takes a
    /// line of its own, among those it accepts now; later it accepts fewer
    /// (lines are only removed, variables only bound), so if no assignment
    /// of distinct lines exists now (Hall's condition, checked by bipartite
    /// matching), none ever will.
    fn feasible(
        &mut self,
        lines: &[usize],
        first: usize,
        vars: &PyDict,
    ) -> Result<bool, SpecError> {
        let rest = first..self.specs.len();
        self.charge(rest.len().saturating_mul(lines.len() + 1))?;
        if self.position.is_empty() {
            // Made at the first need: a greedy match never has one.
            self.position = vec![usize::MAX; self.lines.len()];
            self.candidates = vec![None; self.specs.len()];
        }
        for (p, &l) in lines.iter().enumerate() {
            self.position[l] = p;
        }
        let mut accepted: Vec<Vec<usize>> = Vec::with_capacity(rest.len());
        // Only the lines a spec may take are looked at (a few of the
        // lines, most being of other kinds): the same positions as
        // trying it on every line left, in the same order.
        for s in rest {
            let mut positions = Vec::new();
            for &l in self.candidates(s).iter() {
                let p = self.position[l];
                if p != usize::MAX && self.accepts(s, l, vars) {
                    positions.push(p);
                }
            }
            if positions.is_empty() {
                break;
            }
            positions.sort_unstable();
            accepted.push(positions);
        }
        for &l in lines {
            self.position[l] = usize::MAX;
        }
        let all = accepted.len() == self.specs.len() - first;
        Ok(all && distinct_lines(&accepted, lines.len()))
    }

    /// The lines spec `s` takes by equality or by its checks but for the
    /// variables, in order.
    fn candidates(&mut self, s: usize) -> Rc<[usize]> {
        if let Some(known) = &self.candidates[s] {
            return known.clone();
        }
        let kind = self.spec_kinds[s];
        let mut found = Vec::new();
        for l in 0..self.lines.len() {
            if (kind == NO_KIND || kind == self.line_kinds[l])
                && self.fixed(s, l) & (EQUAL | FIXED) != 0
            {
                found.push(l);
            }
        }
        let found: Rc<[usize]> = found.into();
        self.candidates[s] = Some(found.clone());
        found
    }
}

/// Whether each spec can be given a line of its own from `accepted[spec]`
/// (positions below `lines`): Kuhn's augmenting paths, iterative so that a
/// long specs file cannot exhaust the stack.
fn distinct_lines(accepted: &[Vec<usize>], lines: usize) -> bool {
    const FREE: usize = usize::MAX;
    let mut owner = vec![FREE; lines];
    let mut seen = vec![0usize; lines];
    for (round, start) in (1..).zip(0..accepted.len()) {
        // (spec, next of its lines to try); `via[k]` is the line that
        // `path[k]` takes if the path succeeds.
        let mut path = vec![(start, 0usize)];
        let mut via: Vec<usize> = Vec::new();
        let found = loop {
            let Some((spec, next)) = path.last_mut() else {
                break false;
            };
            let Some(&line) = accepted[*spec].get(*next) else {
                path.pop();
                via.pop();
                continue;
            };
            *next += 1;
            if seen[line] == round {
                continue;
            }
            seen[line] = round;
            via.push(line);
            match owner[line] {
                FREE => break true,
                other => path.push((other, 0)),
            }
        };
        if !found {
            return false;
        }
        for (&(spec, _), &line) in path.iter().zip(&via) {
            owner[line] = spec;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::{match_all, match_all_unpruned, match_all_with_budget, Vars};
    use super::*;

    /// A hardware line or a spec, as the context wants.
    fn item<T: for<'a> From<&'a str>>(f: [&str; 4]) -> [T; 4] {
        f.map(T::from)
    }

    fn specs<T: for<'a> From<&'a str>>(list: &[[&str; 4]]) -> Vec<[T; 4]> {
        list.iter().map(|s| item(*s)).collect()
    }

    #[test]
    fn pruning_cuts_exponential_backtracking() {
        // Every variable spec leaves a retry point and the last spec never
        // matches: the legacy code explores these for hours.
        let mut lines = Vec::new();
        let mut s = Vec::new();
        for i in 0..12 {
            lines.push(item(["k", &format!("n{i}"), "v", "-"]));
            s.push(item(["k", &format!("n{i}"), &format!("$v{i}"), "-"]));
        }
        s.push(item(["none", "-", "-", "-"]));
        let (v, f) = (&mut Vars::new(), &mut Vars::new());
        let got = match_all_unpruned(&lines, &s, v, f, 100_000);
        assert_eq!(got, Err(SpecError::TooComplex { budget: 100_000 }));
        assert_eq!(match_all_with_budget(&lines, &s, v, f, 10_000), Ok(false));
    }

    #[test]
    fn budget_bounds_the_work() {
        let lines = specs(&[
            ["a", "1", "-", "-"],
            ["a", "2", "-", "-"],
            ["b", "2", "-", "-"],
        ]);
        let s = specs(&[["a", "$x", "-", "-"], ["b", "$x", "-", "-"]]);
        let (v, f) = (&mut Vars::new(), &mut Vars::new());
        let got = match_all_with_budget(&lines, &s, v, f, 10);
        assert_eq!(got, Err(SpecError::TooComplex { budget: 10 }));
        assert_eq!(match_all_with_budget(&lines, &s, v, f, 1_000), Ok(true));
    }

    mod pruning {
        use super::*;
        use proptest::prelude::*;

        /// Cases the unpruned reference cannot finish within this are
        /// left out (a debug build runs it slowly).
        const REFERENCE_BUDGET: u64 = 100_000;

        fn line() -> impl Strategy<Value = Item> {
            (0..3usize, 0..4usize, 0..2usize, 0..4usize).prop_map(|(a, b, c, d)| {
                let value = match d {
                    3 => HwValue::Int(2),
                    d => HwValue::from(["1", "2", "x"][d]),
                };
                [
                    HwValue::from(["disk", "net", "cpu"][a]),
                    HwValue::from(["sda", "sdb", "eth0", "eth1"][b]),
                    HwValue::from(["size", "id"][c]),
                    value,
                ]
            })
        }

        fn field() -> impl Strategy<Value = HwValue> {
            prop_oneof![
                3 => prop::sample::select(vec!["$a", "$b", "$c", "$$a", "$$d", "$e"]),
                2 => prop::sample::select(vec!["disk", "net", "sda", "size", "id", "1", "2"]),
                1 => prop::sample::select(vec!["gt(1)", "$b=lt(2)", "in(sda, eth0)"]),
            ]
            .prop_map(HwValue::from)
        }

        /// Disks described by two lines each (size, model), few distinct
        /// values: specs that tie a disk's size to its model through a
        /// shared variable make the greedy choice fail and backtracking
        /// find another disk, or no disk at all.
        fn disks() -> impl Strategy<Value = Vec<Item>> {
            prop::collection::vec((0..4usize, 0..3usize), 1..9).prop_map(|disks| {
                let mut lines = Vec::new();
                for (i, (size, model)) in disks.into_iter().enumerate() {
                    let size = match size {
                        3 => HwValue::Int(100),
                        s => HwValue::from(["100", "200", "300"][s]),
                    };
                    let name = HwValue::Str(format!("sd{i}"));
                    lines.push(["disk".into(), name.clone(), "size".into(), size]);
                    let model = HwValue::from(["A", "B", "C"][model]);
                    lines.push(["disk".into(), name, "model".into(), model]);
                }
                lines
            })
        }

        fn disk_spec() -> impl Strategy<Value = Spec> {
            let disk = prop::sample::select(vec!["$d0", "$d1", "$d2", "$$d0", "$$d1", "$d"]);
            let size = prop::sample::select(vec!["$s", "$t", "$$s", "100", "200", "gt(150)"]);
            let model = prop::sample::select(vec!["$m", "$n", "A", "B", "C", "$$m"]);
            (any::<bool>(), disk, size, model).prop_map(|(is_size, d, s, m)| {
                let (key, value) = if is_size { ("size", s) } else { ("model", m) };
                ["disk".into(), d.into(), key.into(), value.into()]
            })
        }

        /// Pruning only cuts branches that fail: the answer, the variables
        /// (stale keys and skipped renames included) and the legacy crashes
        /// are those of the unpruned legacy search.
        fn agrees_with_reference(lines: &[Item], specs: &[Spec]) -> Result<(), TestCaseError> {
            let (mut v, mut f) = (Vars::new(), Vars::new());
            let reference = match_all_unpruned(lines, specs, &mut v, &mut f, REFERENCE_BUDGET);
            let too_long = Err(SpecError::TooComplex {
                budget: REFERENCE_BUDGET,
            });
            prop_assume!(reference != too_long);
            let (mut pv, mut pf) = (Vars::new(), Vars::new());
            let pruned = match_all(lines, specs, &mut pv, &mut pf);
            prop_assert_eq!(&pruned, &reference);
            if reference == Ok(true) {
                prop_assert_eq!(pv, v);
                prop_assert_eq!(pf, f);
            }
            Ok(())
        }

        /// [`agrees_with_reference`] with the recursion stopped at
        /// `max_level`: a call that failed deep, for lack of levels, may
        /// succeed higher up, so the memory of failed calls must not cut it.
        fn agrees_at_level(
            lines: &[Item],
            specs: &[Spec],
            max_level: usize,
        ) -> Result<(), TestCaseError> {
            let run = |prune, v: &mut Vars, f: &mut Vars| {
                let budget = &mut Budget::new(REFERENCE_BUDGET);
                run(lines, specs, v, f, budget, prune, max_level)
            };
            let (mut v, mut f) = (Vars::new(), Vars::new());
            let reference = run(false, &mut v, &mut f);
            let too_long = Err(SpecError::TooComplex {
                budget: REFERENCE_BUDGET,
            });
            prop_assume!(reference != too_long);
            let (mut pv, mut pf) = (Vars::new(), Vars::new());
            prop_assert_eq!(&run(true, &mut pv, &mut pf), &reference);
            if reference == Ok(true) {
                prop_assert_eq!(pv, v);
                prop_assert_eq!(pf, f);
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn pruned_search_gives_the_legacy_answer_at_any_level_limit(
                lines in disks(),
                specs in prop::collection::vec(disk_spec(), 1..8),
                max_level in 1..6usize,
            ) {
                agrees_at_level(&lines, &specs, max_level)?;
            }

            #[test]
            fn pruned_search_gives_the_legacy_answer_on_disks(
                lines in disks(),
                specs in prop::collection::vec(disk_spec(), 1..8),
            ) {
                agrees_with_reference(&lines, &specs)?;
            }

            #[test]
            fn pruned_search_gives_the_legacy_answer(
                lines in prop::collection::vec(line(), 0..14),
                specs in prop::collection::vec([field(), field(), field(), field()], 1..9),
            ) {
                agrees_with_reference(&lines, &specs)?;
            }
        }
    }
}

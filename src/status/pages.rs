//! The fleet views as HTML: the machines list, a machine's page and the
//! health results, with the status page's style and escaping (every value
//! goes through [`escape_html`], every link's parameters through URL
//! encoding first), and no script.

use std::fmt::Write as _;

use super::fleet::{Hardware, Health, MachinePage, Machines, Standing};
use super::{escape_html, STYLE};
use crate::journal::Record;

const FLEET_STYLE: &str = "\
body.wide{max-width:none}
h1.machine{font-family:ui-monospace,monospace;font-size:1.45em;word-break:break-all}
nav{margin:0 0 1em;padding:.4em 0;border-bottom:1px solid #ccc}
nav a{margin-right:1.2em;text-decoration:none;color:#36c;font-weight:600}
nav a.here{color:#222;border-bottom:3px solid #36c}
.badge{display:inline-block;padding:.05em .5em;border-radius:.8em;font-size:.85em;font-weight:600;white-space:nowrap}
.b-installed{background:#dff3e0;color:#17622a}
.b-unmatched{background:#ffe9b3;color:#7a4d00}
.b-failed{background:#fbd5d5;color:#8f1111}
.b-refused{background:#f3d9f0;color:#75176a}
.b-unknown{background:#e6e6e6;color:#444}
tr.st-unmatched td{background:#fff8e3}
tr.st-unmatched td:first-child{border-left:4px solid #e0a100}
tr.st-failed td,tr.st-refused td{background:#fdf0f0}
tr.st-failed td:first-child,tr.st-refused td:first-child{border-left:4px solid #c62828}
table.machines{font-size:13px}
table.machines td{white-space:nowrap}
table.machines td.wrap{white-space:normal;min-width:12em;max-width:22em}
table.machines td.name{white-space:normal;min-width:16em;max-width:20em;overflow-wrap:anywhere}
table.machines td.serial{white-space:normal;max-width:9em;overflow-wrap:anywhere}
.sub{color:#666;font-size:.88em}
.mono{font-family:ui-monospace,monospace;font-size:.92em}
.up{color:#17822f}.down{color:#aaa}
.chips a{display:inline-block;margin:0 .4em .4em 0;padding:.15em .7em;border:1px solid #ccd;border-radius:1em;background:#fff;text-decoration:none;color:#234}
.chips a.here{background:#36c;color:#fff;border-color:#36c}
form.filter{background:#fff;border:1px solid #ccc;padding:.6em .8em;margin:.5em 0 1em;display:flex;gap:.8em;align-items:center;flex-wrap:wrap}
form.filter input[type=search]{width:18em;padding:.25em}
.pages{margin:.6em 0}
.pages a,.pages span{margin-right:.8em}
pre.explain{background:#fff;border:1px solid #ccc;padding:.7em;white-space:pre-wrap;font-size:12.5px;line-height:1.4}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(16em,1fr));gap:.8em;margin:.8em 0}
.card{background:#fff;border:1px solid #ccc;padding:.5em .8em}
.card h4{margin:0 0 .3em;font-size:.85em;color:#555;text-transform:uppercase;letter-spacing:.03em}
.verdict{padding:.6em .9em;margin:.8em 0;border-left:5px solid #c62828;background:#fdf0f0}
.verdict.ok{border-color:#2e7d32;background:#eef8ef}
.verdict.warn{border-color:#e0a100;background:#fff8e3}
";

/// `?key=value&...`, URL-encoded (then HTML-escaped by the caller).
pub fn query(params: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::for_suffix(String::from("?"), 1);
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

/// An `href` attribute's value for `params`.
fn href(params: &[(&str, &str)]) -> String {
    escape_html(&query(params))
}

fn start(h: &mut String, title: &str, here: &str, section: &str) {
    start_body(h, title, here, section, "");
}

/// [`start`], with `class` on the body (`wide`: the whole window).
fn start_body(h: &mut String, title: &str, here: &str, section: &str, class: &str) {
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} \u{2014} eDeploy</title>\n<style>\n{STYLE}{FLEET_STYLE}</style>\n</head>\n\
         <body class=\"{class}\">\n",
        escape_html(title)
    );
    let links = [
        ("status", "Status", query(&[])),
        (
            "machines",
            "Machines",
            query(&[("view", "machines"), ("section", section)]),
        ),
        ("health", "Health results", query(&[("view", "health")])),
    ];
    h.push_str("<nav>");
    for (key, label, target) in links {
        let class = if key == here { " class=\"here\"" } else { "" };
        let _ = write!(h, "<a href=\"{}\"{class}>{label}</a>", escape_html(&target));
    }
    h.push_str("</nav>\n");
}

fn end(h: &mut String) {
    h.push_str("</body>\n</html>\n");
}

fn errors(h: &mut String, errors: &[String]) {
    for e in errors {
        let _ = writeln!(h, "<p class=\"error\">{}</p>", escape_html(e));
    }
}

/// `2026-12-03 06:50:01 UTC` for a journal time.
pub fn when(t: &str) -> String {
    match (t.get(..10), t.get(11..19)) {
        (Some(day), Some(time)) if t.len() >= 20 => format!("{day} {time} UTC"),
        _ => t.to_owned(),
    }
}

fn badge(standing: &str) -> String {
    let label = match standing {
        "installed" | "configured" => "installed",
        "unmatched" | "no_match" => "no match",
        "failed" | "failure_report" => "failure",
        "refused" => "refused",
        "log_stored" => "log",
        "health_stored" => "health",
        _ => "unknown",
    };
    let class = match standing {
        "installed" | "configured" => "installed",
        "unmatched" | "no_match" => "unmatched",
        "failed" | "failure_report" => "failed",
        "refused" => "refused",
        _ => "unknown",
    };
    format!("<span class=\"badge b-{class}\">{label}</span>")
}

/// `1 run`, `2 runs`.
fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn none() -> &'static str {
    "<span class=\"none\">-</span>"
}

fn opt(v: &Option<String>) -> String {
    v.as_deref().map_or_else(|| none().to_owned(), escape_html)
}

/// Bytes as GiB, as the memory of a machine reads.
fn gib(bytes: u64) -> String {
    let g = bytes as f64 / f64::from(1u32 << 30);
    if g >= 10.0 {
        format!("{g:.0} GiB")
    } else {
        format!("{g:.1} GiB")
    }
}

/// `3 (2×480 GB, 960 GB)`: the count, then the sizes, equal ones grouped.
fn disks(hw: &Hardware) -> String {
    if hw.disks.is_empty() {
        return none().to_owned();
    }
    let mut groups: Vec<(&str, usize)> = Vec::new();
    for d in &hw.disks {
        let size = d.size.as_deref().unwrap_or("?");
        match groups.iter_mut().find(|(s, _)| *s == size) {
            Some((_, n)) => *n += 1,
            None => groups.push((size, 1)),
        }
    }
    let sizes: Vec<String> = groups
        .iter()
        .map(|(size, n)| match n {
            1 => format!("{} GB", escape_html(size)),
            n => format!("{n}\u{00d7}{} GB", escape_html(size)),
        })
        .collect();
    format!(
        "{} <span class=\"sub\">({})</span>",
        hw.disks.len(),
        sizes.join(", ")
    )
}

/// NICs listed in a row of the machines view (all on a machine's page).
const NICS_IN_ROW: usize = 2;

/// The NICs, those with a link first, at most `limit` of them.
fn nics(hw: &Hardware, limit: usize, h: &mut String) {
    if hw.nics.is_empty() {
        h.push_str(none());
        return;
    }
    let mut sorted: Vec<_> = hw.nics.iter().collect();
    sorted.sort_by_key(|n| n.link.as_deref() != Some("yes"));
    for (i, n) in sorted.iter().take(limit).enumerate() {
        if i > 0 {
            h.push_str("<br>");
        }
        let link = match n.link.as_deref() {
            Some("yes") => "<span class=\"up\" title=\"link up\">\u{25cf}</span>",
            Some(_) => "<span class=\"down\" title=\"no link\">\u{25cb}</span>",
            None => "",
        };
        let _ = write!(
            h,
            "{link} <span class=\"mono\">{}</span>",
            escape_html(n.mac.as_deref().unwrap_or(&n.name))
        );
        if let Some(ip) = &n.ipv4 {
            let _ = write!(h, " <span class=\"sub\">{}</span>", escape_html(ip));
        }
    }
    if sorted.len() > limit {
        let _ = write!(
            h,
            "<br><span class=\"sub\">+{} more</span>",
            sorted.len() - limit
        );
    }
}

fn cpus(hw: &Hardware) -> String {
    match (&hw.cpus, &hw.threads) {
        (Some(c), Some(t)) => format!(
            "{} <span class=\"sub\">/ {} threads</span>",
            escape_html(c),
            escape_html(t)
        ),
        (Some(c), None) => escape_html(c),
        (None, Some(t)) => format!("{} threads", escape_html(t)),
        (None, None) => none().to_owned(),
    }
}

/// The machines view.
pub fn machines_html(m: &Machines, sections: &[String]) -> String {
    let mut h = String::with_capacity(64 * 1024);
    start_body(&mut h, "Machines", "machines", &m.section, "wide");
    let _ = writeln!(
        h,
        "<h1>Machines</h1>\n<p class=\"meta\">Section <code>[{}]</code> &middot; {} \
         from <code>{}</code> and the journal <code>{}</code> &middot; \
         <a href=\"{}\">JSON</a></p>",
        escape_html(&m.section),
        plural(m.total, "machine"),
        escape_html(&m.hw_dir),
        escape_html(m.journal.as_deref().unwrap_or("(off)")),
        href(&with_format(&filter_params(m, m.page))),
    );
    if sections.len() > 1 {
        h.push_str("<p class=\"chips\">Sections: ");
        for s in sections {
            let class = if *s == m.section {
                " class=\"here\""
            } else {
                ""
            };
            let _ = write!(
                h,
                "<a href=\"{}\"{class}>{}</a>",
                href(&[("view", "machines"), ("section", s)]),
                escape_html(s)
            );
        }
        h.push_str("</p>\n");
    }
    errors(&mut h, &m.errors);
    if m.pending > 0 || m.journal_pending {
        // Each view indexes some more: the page reloads itself until all.
        h = h.replacen(
            "</head>",
            "<meta http-equiv=\"refresh\" content=\"1\">\n</head>",
            1,
        );
        let journal = if m.journal_pending {
            ", decisions from the first part of the journal"
        } else {
            ""
        };
        let _ = writeln!(
            h,
            "<p class=\"error\">Indexing: {} of {} machines shown{journal}; \
             the page reloads itself until all are.</p>",
            m.total,
            m.total + m.pending
        );
    }
    // One chip per standing, with its count.
    h.push_str("<p class=\"chips\">");
    let all_class = if m.filter.standing.is_none() {
        " class=\"here\""
    } else {
        ""
    };
    let _ = write!(
        h,
        "<a href=\"{}\"{all_class}>all {}</a>",
        href(&[("view", "machines"), ("section", &m.section)]),
        m.total
    );
    for s in ["installed", "unmatched", "failed", "refused", "unknown"] {
        let n = m.standings.get(s).copied().unwrap_or(0);
        let class = if m.filter.standing.as_deref() == Some(s) {
            " class=\"here\""
        } else {
            ""
        };
        let _ = write!(
            h,
            "<a href=\"{}\"{class}>{s} {n}</a>",
            href(&[
                ("view", "machines"),
                ("section", &m.section),
                ("standing", s)
            ])
        );
    }
    h.push_str("</p>\n");
    filter_form(&mut h, m);
    let _ = writeln!(
        h,
        "<p class=\"meta\">{} matching, newest first.</p>",
        m.matching
    );
    pagination(&mut h, m);
    if !m.machines.is_empty() {
        h.push_str(
            "<table class=\"machines\">\n<thead><tr><th>Machine</th><th>Serial</th><th>CPUs</th>\
             <th>Memory</th><th>Disks</th><th>NICs</th><th>Last seen</th><th>Last decision</th>\
             <th>Profile</th><th>Hostname / IP</th></tr></thead>\n<tbody>\n",
        );
        for machine in &m.machines {
            let st = machine.standing.as_str();
            let _ = write!(
                h,
                "<tr class=\"st-{st}\"><td class=\"name\"><a href=\"{}\" class=\"mono\">{}</a>",
                href(&[
                    ("view", "machine"),
                    ("section", &m.section),
                    ("name", &machine.sysname)
                ]),
                escape_html(&machine.sysname)
            );
            match &machine.hardware {
                Some(hw) => {
                    let model = hw.model();
                    let _ = write!(
                        h,
                        "<br><span class=\"sub\">{}</span></td><td class=\"mono serial\">{}</td>\
                         <td>{}</td><td class=\"num\">{}</td><td>{}</td><td>",
                        escape_html(&model),
                        opt(&hw.serial),
                        cpus(hw),
                        hw.memory.map_or_else(|| none().to_owned(), gib),
                        disks(hw),
                    );
                    nics(hw, NICS_IN_ROW, &mut h);
                    h.push_str("</td>");
                }
                None => {
                    let why = match &machine.hw_error {
                        Some(e) => format!("<span class=\"sub\">{}</span>", escape_html(e)),
                        None => "<span class=\"none\">no hardware file</span>".to_owned(),
                    };
                    let _ = write!(h, "</td><td colspan=\"5\" class=\"wrap\">{why}</td>");
                }
            }
            // Day, then time: a narrower column.
            let seen = machine.last_seen.as_deref().map_or_else(
                || none().to_owned(),
                |t| match when(t).split_once(' ') {
                    Some((day, time)) => format!(
                        "{}<br><span class=\"sub\">{}</span>",
                        escape_html(day),
                        escape_html(time)
                    ),
                    None => escape_html(t),
                },
            );
            let decision = match &machine.last_decision {
                Some(d) => format!(
                    "{} <span class=\"sub\">{}</span>",
                    badge(&d.kind),
                    escape_html(&d.detail)
                ),
                None => badge("unknown"),
            };
            let (profile, host) = match &machine.installed {
                Some(i) => (
                    escape_html(&i.profile),
                    format!(
                        "{}<br><span class=\"sub\">{}</span>",
                        opt(&i.hostname),
                        opt(&i.ip)
                    ),
                ),
                None => (none().to_owned(), none().to_owned()),
            };
            let _ = writeln!(
                h,
                "<td>{seen}</td><td class=\"wrap\">{decision}</td><td>{profile}</td>\
                 <td>{host}</td></tr>"
            );
        }
        h.push_str("</tbody>\n</table>\n");
        pagination(&mut h, m);
    }
    end(&mut h);
    h
}

fn filter_params(m: &Machines, page: usize) -> Vec<(&'static str, String)> {
    let mut p = vec![
        ("view", "machines".to_owned()),
        ("section", m.section.clone()),
    ];
    if let Some(v) = &m.filter.profile {
        p.push(("profile", v.clone()));
    }
    if let Some(v) = &m.filter.standing {
        p.push(("standing", v.clone()));
    }
    if let Some(v) = &m.filter.search {
        p.push(("q", v.clone()));
    }
    if page > 1 {
        p.push(("page", page.to_string()));
    }
    p
}

fn with_format<'a>(p: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    let mut v: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    v.push(("format", "json"));
    v
}

fn filter_form(h: &mut String, m: &Machines) {
    let _ = write!(
        h,
        "<form class=\"filter\" method=\"get\"><input type=\"hidden\" name=\"view\" \
         value=\"machines\"><input type=\"hidden\" name=\"section\" value=\"{}\">\
         <label>Profile <select name=\"profile\"><option value=\"\">any</option>",
        escape_html(&m.section)
    );
    for p in &m.profiles {
        let selected = if m.filter.profile.as_deref() == Some(p) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            h,
            "<option value=\"{0}\"{selected}>{0}</option>",
            escape_html(p)
        );
    }
    h.push_str(
        "</select></label> <label>Standing <select name=\"standing\"><option value=\"\">any</option>",
    );
    for s in ["installed", "unmatched", "failed", "refused", "unknown"] {
        let selected = if m.filter.standing.as_deref() == Some(s) {
            " selected"
        } else {
            ""
        };
        let _ = write!(h, "<option{selected}>{s}</option>");
    }
    let _ = writeln!(
        h,
        "</select></label> <label>Search <input type=\"search\" name=\"q\" value=\"{}\" \
         placeholder=\"MAC, serial, hostname or IP\"></label> <button>Filter</button></form>",
        escape_html(m.filter.search.as_deref().unwrap_or(""))
    );
}

fn pagination(h: &mut String, m: &Machines) {
    if m.pages <= 1 {
        return;
    }
    h.push_str("<p class=\"pages\">");
    if m.page > 1 {
        let _ = write!(
            h,
            "<a href=\"{}\">\u{2190} newer</a>",
            href(&owned(&filter_params(m, m.page - 1)))
        );
    }
    let _ = write!(h, "<span>page {} of {}</span>", m.page, m.pages);
    if m.page < m.pages {
        let _ = write!(
            h,
            "<a href=\"{}\">older \u{2192}</a>",
            href(&owned(&filter_params(m, m.page + 1)))
        );
    }
    h.push_str("</p>\n");
}

fn owned<'a>(p: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    p.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A machine's page.
pub fn machine_html(p: &MachinePage) -> String {
    let m = &p.machine;
    let mut h = String::with_capacity(64 * 1024);
    start(&mut h, &m.sysname, "machines", &p.section);
    let _ = writeln!(
        h,
        "<h1 class=\"machine\">{}</h1>\n<p class=\"meta\">{} Section <code>[{}]</code> &middot; \
         <a href=\"{}\">JSON</a></p>",
        escape_html(&m.sysname),
        badge(m.standing.as_str()),
        escape_html(&p.section),
        href(&[
            ("view", "machine"),
            ("section", &p.section),
            ("name", &m.sysname),
            ("format", "json")
        ]),
    );
    errors(&mut h, &p.errors);
    if let Some(d) = &m.last_decision {
        let class = match m.standing {
            Standing::Installed => "verdict ok",
            Standing::Unmatched => "verdict warn",
            _ => "verdict",
        };
        let _ = writeln!(
            h,
            "<div class=\"{class}\"><strong>Last decision</strong> ({}): {} {}{}</div>",
            escape_html(&when(&d.time)),
            badge(&d.kind),
            d.profile
                .as_deref()
                .map(|p| format!("profile <code>{}</code> &middot; ", escape_html(p)))
                .unwrap_or_default(),
            escape_html(&d.detail)
        );
    }
    h.push_str("<div class=\"cards\">\n");
    if let Some(hw) = &m.hardware {
        let model = hw.model();
        let _ = writeln!(
            h,
            "<div class=\"card\"><h4>System</h4>{}<br>serial <span class=\"mono\">{}</span></div>\n\
             <div class=\"card\"><h4>CPUs &middot; memory</h4>{} &middot; {}</div>\n\
             <div class=\"card\"><h4>Disks</h4>{}</div>",
            escape_html(&model),
            opt(&hw.serial),
            cpus(hw),
            hw.memory.map_or_else(|| none().to_owned(), gib),
            disks(hw),
        );
        h.push_str("<div class=\"card\"><h4>NICs</h4>");
        nics(hw, usize::MAX, &mut h);
        h.push_str("</div>\n");
    }
    match &m.installed {
        Some(i) => {
            let _ = writeln!(
                h,
                "<div class=\"card\"><h4>Installed</h4>profile <code>{}</code>, {}<br>{} {}<br>\
                 <span class=\"sub\">CMDB entry {}</span></div>",
                escape_html(&i.profile),
                escape_html(&when(&i.time)),
                opt(&i.hostname),
                opt(&i.ip),
                i.cmdb_entry
                    .map_or_else(|| "none".to_owned(), |e| e.to_string())
            );
        }
        None => h.push_str(
            "<div class=\"card\"><h4>Installed</h4><span class=\"none\">never, as far as the \
             journal knows</span></div>\n",
        ),
    }
    let _ = writeln!(
        h,
        "<div class=\"card\"><h4>Last seen</h4>{}<br><span class=\"sub\">{}</span></div>",
        m.last_seen
            .as_deref()
            .map_or_else(|| none().to_owned(), |t| escape_html(&when(t))),
        m.hw_file
            .as_deref()
            .map_or_else(|| "no hardware file".to_owned(), escape_html),
    );
    h.push_str("</div>\n");

    h.push_str("<h2>Why each profile matches or not</h2>\n");
    match &p.explain {
        Some(text) => {
            let _ = writeln!(
                h,
                "<p class=\"meta\">The server's matcher replayed now on the stored hardware \
                 (<code>edeploy explain</code>), against the current state and specs.</p>\n\
                 <pre class=\"explain\">{}</pre>",
                escape_html(text)
            );
        }
        None => h.push_str("<p class=\"none\">No hardware file to match.</p>\n"),
    }

    let _ = writeln!(
        h,
        "<h2>Decision history</h2>\n<p class=\"meta\">{}{}.</p>",
        plural(p.history_total, "journal line"),
        if p.history_total > p.history.len() {
            format!(", the newest {} shown", p.history.len())
        } else {
            String::new()
        }
    );
    if !p.history.is_empty() {
        history_table(&mut h, &p.history);
    }

    h.push_str("<h2>Installation logs</h2>\n");
    if p.logs.is_empty() {
        h.push_str("<p class=\"none\">No log uploaded.</p>\n");
    } else {
        h.push_str(
            "<table class=\"files\">\n<thead><tr><th>Log</th><th>Uploaded</th><th>Size</th></tr>\
             </thead>\n<tbody>\n",
        );
        for l in &p.logs {
            let _ = writeln!(
                h,
                "<tr><td class=\"path\"><a href=\"{}\">{}</a></td><td>{}</td>\
                 <td class=\"num\">{}</td></tr>",
                href(&[("view", "log"), ("section", &p.section), ("name", &l.name)]),
                escape_html(&l.name),
                escape_html(&when(&l.modified)),
                l.size
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }

    h.push_str("<h2>Health results</h2>\n");
    if p.health.is_empty() {
        h.push_str("<p class=\"none\">No health-check result.</p>\n");
    } else {
        h.push_str(
            "<table class=\"files\">\n<thead><tr><th>Session</th><th>Run</th><th>Result</th>\
             <th>Size</th></tr></thead>\n<tbody>\n",
        );
        for r in &p.health {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"path\"><a href=\"{}\">{}</a></td>\
                 <td class=\"num\">{}</td></tr>",
                opt(&r.session),
                escape_html(&r.run),
                href(&[("view", "health-result"), ("path", &r.path)]),
                escape_html(&r.path),
                r.size
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }

    let _ = writeln!(
        h,
        "<h2>Hardware</h2>\n<p class=\"meta\">{} lines of <code>{}</code>.</p>",
        p.hardware_lines.len(),
        escape_html(m.hw_file.as_deref().unwrap_or("-"))
    );
    if !p.hardware_lines.is_empty() {
        h.push_str(
            "<table class=\"hw\">\n<thead><tr><th>Class</th><th>Name</th><th>Key</th>\
             <th>Value</th></tr></thead>\n<tbody>\n",
        );
        for line in &p.hardware_lines {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
                escape_html(&line[0]),
                escape_html(&line[1]),
                escape_html(&line[2]),
                escape_html(&line[3])
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }
    end(&mut h);
    h
}

fn history_table(h: &mut String, history: &[Record]) {
    h.push_str(
        "<table class=\"history\">\n<thead><tr><th>Time</th><th>Decision</th><th>Profile</th>\
         <th>Details</th><th>Client</th><th>CGI</th></tr></thead>\n<tbody>\n",
    );
    for r in history {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"wrap\">{}</td><td>{}</td>\
             <td>{}</td></tr>",
            escape_html(&when(&r.time)),
            badge(r.decision.kind()),
            r.decision
                .profile()
                .map_or_else(|| none().to_owned(), escape_html),
            escape_html(&super::fleet::detail(&r.decision)),
            escape_html(&r.client),
            escape_html(&r.cgi),
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

/// The health view.
pub fn health_html(health: &Health) -> String {
    let mut h = String::with_capacity(32 * 1024);
    start(&mut h, "Health results", "health", "SERVER");
    let _ = writeln!(
        h,
        "<h1>Health results</h1>\n<p class=\"meta\">Sessions of <code>{}</code>, newest first \
         &middot; <a href=\"{}\">JSON</a></p>",
        escape_html(&health.health_dir),
        href(&[("view", "health"), ("format", "json")])
    );
    errors(&mut h, &health.errors);
    if health.sessions.is_empty() {
        h.push_str("<p class=\"none\">No health-check result yet.</p>\n");
    }
    for s in &health.sessions {
        let name = match &s.name {
            Some(n) => format!("Session <code>{}</code>", escape_html(n)),
            None => "Without a session".to_owned(),
        };
        let _ = writeln!(
            h,
            "<h2>{name}</h2>\n<p class=\"meta\">{}, {}.</p>",
            plural(s.runs.len(), "run"),
            plural(s.machines, "machine")
        );
        for run in &s.runs {
            let _ = writeln!(
                h,
                "<h3>Run {} <span class=\"sub\">({})</span></h3>",
                escape_html(&run.name),
                plural(run.results.len(), "machine")
            );
            h.push_str(
                "<table class=\"files\">\n<thead><tr><th>Machine</th><th>Result</th>\
                 <th>Stored</th><th>Size</th></tr></thead>\n<tbody>\n",
            );
            for r in &run.results {
                let _ = writeln!(
                    h,
                    "<tr><td><a class=\"mono\" href=\"{}\">{}</a></td><td class=\"path\">\
                     <a href=\"{}\">{}</a></td><td>{}</td><td class=\"num\">{}</td></tr>",
                    href(&[
                        ("view", "machine"),
                        ("section", "SERVER"),
                        ("name", &r.sysname)
                    ]),
                    escape_html(&r.sysname),
                    href(&[("view", "health-result"), ("path", &r.path)]),
                    escape_html(&r.path),
                    escape_html(&when(&r.modified)),
                    r.size
                );
            }
            h.push_str("</tbody>\n</table>\n");
        }
    }
    end(&mut h);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_url_encoded_then_escaped() {
        assert_eq!(
            href(&[("name", "a&b \"<x>\"")]),
            "?name=a%26b+%22%3Cx%3E%22"
        );
        assert_eq!(query(&[("q", "é/'")]), "?q=%C3%A9%2F%27");
    }

    #[test]
    fn times_and_sizes_for_people() {
        assert_eq!(
            when("2026-12-03T06:50:01.123456Z"),
            "2026-12-03 06:50:01 UTC"
        );
        assert_eq!(when("odd"), "odd");
        assert_eq!(gib(137438953472), "128 GiB");
        assert_eq!(gib(1 << 29), "0.5 GiB");
    }
}

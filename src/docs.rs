//! Man pages and shell completions for the packages.
//!
//! They are made from the clap definitions of [`crate::cli`] and the key
//! table of [`crate::config`], the same ones the programs use, so the
//! installed documentation cannot describe options or keys the programs do
//! not have. `edeploy gen-docs OUTDIR` writes them (see [`write_all`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

use crate::cli;
use crate::config::KEYS;

/// Writes `outdir/man/{edeploy.1,upload.8,edeploy.conf.5}` and
/// `outdir/completions/{edeploy.bash,_edeploy,edeploy.fish}`, creating
/// the directories; returns the files written.
pub fn write_all(outdir: &Path) -> io::Result<Vec<PathBuf>> {
    let man = outdir.join("man");
    let completions = outdir.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    let files = [
        (man.join("edeploy.1"), edeploy_man()),
        (man.join("upload.8"), upload_man()),
        (man.join("edeploy.conf.5"), edeploy_conf_man()),
        (completions.join("edeploy.bash"), completion(Shell::Bash)),
        (completions.join("_edeploy"), completion(Shell::Zsh)),
        (completions.join("edeploy.fish"), completion(Shell::Fish)),
    ];
    let mut written = Vec::new();
    for (path, content) in files {
        fs::write(&path, content)?;
        written.push(path);
    }
    Ok(written)
}

/// The completion script of `edeploy` for `shell`.
pub fn completion(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cli::Edeploy::command(), "edeploy", &mut out);
    out
}

/// edeploy(1): the command, then each command's full help (one page for
/// all: the commands are short).
pub fn edeploy_man() -> Vec<u8> {
    let cmd = cli::Edeploy::command().disable_help_subcommand(true);
    let man = Man::new(cmd.clone()).manual("eDeploy");
    let mut out = Vec::new();
    render_head(&man, &mut out);
    man.render_options_section(&mut out)
        .expect("writing to memory");
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // Preformatted at a fixed width: the page is the same whatever
        // terminal generated it.
        let mut sub = sub
            .clone()
            .bin_name(format!("edeploy {}", sub.get_name()))
            .term_width(78);
        roff.control("SS", [format!("edeploy {}", sub.get_name()).as_str()]);
        roff.control("nf", []);
        roff.text([roman(sub.render_long_help().to_string())]);
        roff.control("fi", []);
    }
    section(&mut roff, "EXIT STATUS", cli::EXIT_STATUS);
    environment(&mut roff);
    see_also(&mut roff, "edeploy.conf(5), upload(8)");
    roff.to_writer(&mut out).expect("writing to memory");
    out
}

/// upload(8): the command line, and the CGI programs it is installed as.
pub fn upload_man() -> Vec<u8> {
    let man = Man::new(cli::Upload::command())
        .section("8")
        .manual("eDeploy");
    let mut out = Vec::new();
    man.render_title(&mut out).expect("writing to memory");
    man.render_name_section(&mut out)
        .expect("writing to memory");
    // clap_mangen drops the value names of short options in a synopsis.
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([
        bold("upload"),
        roman(" "),
        bold("-f"),
        roman(" "),
        italic("HW_FILE"),
        roman(" ["),
        bold("-F"),
        roman(" "),
        italic("PROFILE"),
        roman("] ["),
        bold("--dry-run"),
        roman("] ["),
        bold("--config-dir"),
        roman(" "),
        italic("DIR"),
        roman("]"),
    ]);
    roff.control("br", []);
    roff.text([
        bold("upload.py"),
        roman(" (a CGI program, run by the web server)"),
    ]);
    roff.to_writer(&mut out).expect("writing to memory");
    man.render_description_section(&mut out)
        .expect("writing to memory");
    man.render_options_section(&mut out)
        .expect("writing to memory");
    let mut roff = Roff::new();
    roff.control("SH", ["CGI USE"]);
    roff.text([roman(
        "Installed as upload.py in the cgi-bin directory of HTTP_PATH, the program answers \
         the eDeploy initrd. Every answer the initrd executes has status 200, as with the \
         legacy server; requests the initrd never makes get meaningful statuses (405, 411, \
         413, 415, 400), still with an error script as body. Each request logs one line to \
         the web server's error log with the client address, the machine and the decision.",
    )]);
    for (request, answer) in [
        (
            "POST upload.py file=@hw.json [section=S]",
            "the configure script (text/x-python), or an error script",
        ),
        (
            "POST upload.py file=@hw.json failure=PROFILE",
            "an empty answer; one installation is given back to PROFILE",
        ),
        (
            "POST upload.py file=@NAME.log.gz",
            "an empty answer; the log is stored in LOGDIR (an older one renamed \
             NAME.<mtime>.log.gz)",
        ),
        (
            "GET upload.py",
            "the error script 'No file passed to the CGI' (an install check)",
        ),
        (
            "POST upload-health.py file=@health.py [session=S]",
            "stored as HEALTHDIR/[S/]YYYY_MM_DD-HHhMM/<sysname>.hw, by the program \
             upload-health installed as upload-health.py",
        ),
        (
            "GET status.py [?format=json]",
            "the status page of every section, by the program status installed as status.py",
        ),
    ] {
        roff.control("TP", []);
        roff.text([bold(request)]);
        roff.text([roman(answer)]);
    }
    section(
        &mut roff,
        "EXIT STATUS",
        "On the command line: 0 when a configure script (or nothing, for -F) was printed, 1 \
         when the machine gets an error script (printed too), 2 for a usage error. As a CGI: \
         0 once an answer is written.",
    );
    environment(&mut roff);
    roff.control("SH", ["FILES"]);
    roff.control("TP", []);
    roff.text([bold("/etc/edeploy.conf")]);
    roff.text([roman("the configuration, see edeploy.conf(5)")]);
    roff.control("TP", []);
    roff.text([
        italic("CONFIGDIR"),
        roman("/state, *.specs, *.cmdb, *.configure"),
    ]);
    roff.text([roman(
        "the profiles in priority order with their counts, and each profile's files",
    )]);
    see_also(&mut roff, "edeploy(1), edeploy.conf(5)");
    roff.to_writer(&mut out).expect("writing to memory");
    out
}

/// edeploy.conf(5): the syntax and the key table of [`KEYS`].
pub fn edeploy_conf_man() -> Vec<u8> {
    let mut roff = Roff::new();
    roff.control(
        "TH",
        [
            "EDEPLOY.CONF",
            "5",
            "",
            concat!("edeploy ", env!("CARGO_PKG_VERSION")),
            "eDeploy",
        ],
    );
    roff.control("SH", ["NAME"]);
    roff.text([roman(
        "edeploy.conf - configuration of the eDeploy provisioning server",
    )]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([
        bold("/etc/edeploy.conf"),
        roman(", or the file named by "),
        bold("EDEPLOY_CONF"),
    ]);
    section(
        &mut roff,
        "DESCRIPTION",
        "The file is read the way Python's ConfigParser reads it, as the legacy server did: \
         sections are case-sensitive, keys case-insensitive, `=` or `:`, `#`/`;` comment \
         lines, `;` comments after white space, indented continuation lines, `[DEFAULT]` \
         inherited, `%(key)s` interpolation. The request's `section` field picks the section \
         (default `SERVER`); a section that does not exist is an error.",
    );
    roff.control("SH", ["KEYS"]);
    for key in KEYS {
        roff.control("TP", []);
        let mut head = vec![bold(key.name), roman(" (default: ")];
        head.extend(markdown(key.default));
        head.push(roman(")"));
        roff.text(head);
        roff.text(markdown(key.meaning));
    }
    section(
        &mut roff,
        "PERMISSIONS",
        "The web server user must be able to write `state`, the `*.cmdb` files and CONFIGDIR \
         itself (files are replaced through a temporary or spare file in the same directory), \
         HWDIR, LOGDIR, HEALTHDIR and LOCKFILE.",
    );
    roff.control("SH", ["EXAMPLE"]);
    roff.control("nf", []);
    roff.text([roman(
        "[SERVER]\nCONFIGDIR = /var/lib/edeploy/config\nHWDIR = /var/lib/edeploy/hw\n\
         LOGDIR = /var/lib/edeploy/logs\nHEALTHDIR = /var/lib/edeploy/health\n\
         LOCKFILE = /run/lock/edeploy.lock",
    )]);
    roff.control("fi", []);
    see_also(&mut roff, "edeploy(1), upload(8)");
    roff.render().into_bytes()
}

/// The title, NAME, SYNOPSIS and DESCRIPTION of a page.
fn render_head(man: &Man, out: &mut Vec<u8>) {
    man.render_title(out).expect("writing to memory");
    man.render_name_section(out).expect("writing to memory");
    man.render_synopsis_section(out).expect("writing to memory");
    man.render_description_section(out)
        .expect("writing to memory");
}

/// A section of one paragraph of Markdown-ish text.
fn section(roff: &mut Roff, title: &str, text: &str) {
    roff.control("SH", [title]);
    roff.text(markdown(text));
}

fn environment(roff: &mut Roff) {
    roff.control("SH", ["ENVIRONMENT"]);
    roff.control("TP", []);
    roff.text([bold("EDEPLOY_CONF")]);
    roff.text([roman(
        "the configuration file to read instead of /etc/edeploy.conf (it must then exist)",
    )]);
    roff.control("TP", []);
    roff.text([bold("GATEWAY_INTERFACE")]);
    roff.text([roman(
        "set by the web server: the CGI programs then answer the request and read no arguments",
    )]);
}

fn see_also(roff: &mut Roff, pages: &str) {
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(pages)]);
}

/// Text with `code` in backquotes, the code in bold.
fn markdown(text: &str) -> Vec<Inline> {
    text.split('`')
        .enumerate()
        .filter(|(_, part)| !part.is_empty())
        .map(|(i, part)| if i % 2 == 1 { bold(part) } else { roman(part) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(page: Vec<u8>) -> String {
        String::from_utf8(page).unwrap()
    }

    #[test]
    fn conf_page_has_every_key() {
        let page = text(edeploy_conf_man());
        assert!(page.contains(".TH EDEPLOY.CONF 5 "), "{page}");
        for key in KEYS {
            assert!(
                page.contains(&format!("\\fB{}\\fR (default: ", key.name)),
                "{page}"
            );
        }
        assert!(
            page.contains("\\fBpxemngr addsystem <sysname> <macs>\\fR"),
            "{page}"
        );
    }

    #[test]
    fn edeploy_page_describes_every_command() {
        let page = text(edeploy_man());
        assert!(page.contains(".TH edeploy 1 "), "{page}");
        for command in ["try-match", "explain", "check", "cmdb-used"] {
            assert!(
                page.contains(&format!(".SS \"edeploy {command}\"")),
                "{page}"
            );
        }
        assert!(page.contains("\\-\\-strict"), "{page}");
        assert!(!page.contains("gen\\-docs"), "{page}");
        assert!(page.contains(".SH \"EXIT STATUS\""), "{page}");
    }

    #[test]
    fn upload_page_covers_cli_and_cgi() {
        let page = text(upload_man());
        assert!(page.contains(".TH upload 8 "), "{page}");
        assert!(page.contains("\\fB\\-F\\fR \\fIPROFILE\\fR"), "{page}");
        assert!(page.contains(".SH \"CGI USE\""), "{page}");
        assert!(page.contains("upload\\-health.py"), "{page}");
    }

    #[test]
    fn markdown_code_is_bold() {
        assert_eq!(
            markdown("a `b` c"),
            vec![roman("a "), bold("b"), roman(" c")]
        );
    }
}

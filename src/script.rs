//! The scripts the server answers with: the configure script run by the
//! installer initrd on the matched machine, or an error script.
//!
//! A configure script is the profile's `.configure` text preceded by helpers
//! and by the matched variables, as in the legacy server. Profiles written in
//! Python (the legacy case) get a Python script; a `.configure` starting with
//! a `sh`/`bash` shebang gets a POSIX shell script with the same helpers.
//! The initrd greps the `#EDEPLOY_PROFILE = <name>` line (always line 2) to
//! report failures. Every value inserted in a script comes from hardware
//! reports or operator files and is quoted so that it can never change the
//! script's code.
//!
//! Shell scripts expose the variables in two ways:
//! - `var KEY` prints the value of the variable named `KEY` in the
//!   `.configure` file sense (original key, no newline added); status 1 for
//!   an unknown key.
//! - Each key is also exported as a shell variable: characters other than
//!   ASCII letters, digits and `_` become `_`, and `_` is prepended to a name
//!   starting with a digit (`edeploy-profile` → `$edeploy_profile`). A key
//!   that already is such a name wins over a mapped one; otherwise the first
//!   key in sorted order wins. Names without a lowercase letter (`PATH`,
//!   `IFS`, `UID`: the shell's own variables are all upper case) and names
//!   starting with `_edeploy` (the helpers' own) are not exported: use
//!   `var KEY` for those.
//!
//! Values are printed as Python's `str()` would, except floats (their
//! `repr()`); NUL bytes, which no shell variable can hold, are dropped.
//!
//! Shell helpers: `run CMD...` (runs `CMD` with `eval` in a subshell, stdin
//! from /dev/null, output on stderr, exits the script on failure);
//! `set_role ROLE VERSION DISK`; `config NAME [MODE [BASEDIR [FMOD [UID
//! [GID]]]]]` writes its standard input to BASEDIR+NAME (MODE `w` truncates,
//! `a` appends; FMOD is octal text, default `0644`; BASEDIR defaults to
//! `/post_rsync`); `inject_facts [BASEDIR [PREFIX]]` writes every variable
//! as a fact; `grub_options OPTIONS...` writes its arguments to
//! `/grub_options`.

use crate::literal::{self, Dict, Value};
use crate::pydict;

/// Python helpers put between the header and `var = ...`. Valid under
/// Python 2.6+ and 3; no `from __future__` import, which would change how
/// the legacy `.configure` text (`print 'x'`) is compiled.
pub const PYTHON_PRELUDE: &str = r#"
import os
import subprocess
import sys
import time

try:
    import commands
except ImportError:
    pass


def _edeploy_import(name):
    for module in ('hardware.' + name, name):
        try:
            return __import__(module, globals(), locals(), [name])
        except Exception:
            pass
    return None

for _edeploy_name in ('hpacucli', 'ipmi', 'megacli'):
    _edeploy_module = _edeploy_import(_edeploy_name)
    if _edeploy_module is not None:
        globals()[_edeploy_name] = _edeploy_module


def _edeploy_log(text):
    if not isinstance(text, str):
        text = text.decode('utf-8', 'replace')
    sys.stderr.write(text)
    sys.stderr.flush()


def run(cmd):
    _edeploy_log('+ ' + cmd + '\n')
    sys.stdout.flush()
    proc = subprocess.Popen('{ ' + cmd + '\n} </dev/null 2>&1', shell=True,
                            stdout=subprocess.PIPE)
    output = proc.communicate()[0]
    if output:
        _edeploy_log(output)
        if output[-1:] not in ('\n', b'\n'):
            _edeploy_log('\n')
    status = proc.returncode
    if status != 0:
        _edeploy_log("Command '%s' failed\n" % cmd)
        _edeploy_log('!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n')
        _edeploy_log('!!! Configure script exited prematurely !!!\n')
        _edeploy_log('!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n')
        if 0 < status < 256:
            sys.exit(status)
        sys.exit(1)


def set_role(role, version, disk):
    f = open('/vars', 'a')
    try:
        f.write('ROLE=%s\nVERS=%s\nDISK=%s\n' % (role, version, disk))
        f.write('PROFILE=%s\n' % var['edeploy-profile'])
    finally:
        f.close()


def config(name, mode='w', basedir='/post_rsync', fmod=0o644, uid=0, gid=0):
    path = basedir + name
    dir_ = '/'.join(path.split('/')[:-1])
    if dir_ and not os.path.exists(dir_):
        os.makedirs(dir_)
    f = open(path, mode)
    os.fchmod(f.fileno(), fmod)
    os.fchown(f.fileno(), uid, gid)
    return f


def inject_facts(vars, basedir='/post_rsync', prefix='hw_'):
    f = config('/etc/facter/facts.d/edeploy.yaml', basedir=basedir)
    try:
        f.write('---\n')
        for key in vars:
            f.write('%s%s: %s\n' % (prefix, key, vars[key]))
    finally:
        f.close()


def grub_options(options):
    f = open('/grub_options', 'w')
    try:
        f.write(options)
    finally:
        f.close()

"#;

/// Shell helpers that do not depend on the variables (see the module doc).
pub const SHELL_HELPERS: &str = r#"
run() {
    printf '+ %s\n' "$*" >&2
    ( eval "$*" ) </dev/null >&2 && return 0
    _edeploy_status=$?
    printf "Command '%s' failed\n" "$*" >&2
    printf '%s\n' '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!' \
        '!!! Configure script exited prematurely !!!' \
        '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!' >&2
    exit "$_edeploy_status"
}

set_role() {
    {
        printf 'ROLE=%s\nVERS=%s\nDISK=%s\nPROFILE=' "$1" "$2" "$3"
        var edeploy-profile
        printf '\n'
    } >> /vars
}

config() {
    _edeploy_path=${3-/post_rsync}$1
    case $_edeploy_path in
    ?*/*) mkdir -p -- "${_edeploy_path%/*}" || return ;;
    esac
    : >> "$_edeploy_path" || return
    chown "${5-0}:${6-0}" "$_edeploy_path" || return
    chmod "${4-0644}" "$_edeploy_path" || return
    case ${2-w} in
    a*) cat >> "$_edeploy_path" ;;
    *) cat > "$_edeploy_path" ;;
    esac
}

grub_options() {
    printf '%s' "$*" > /grub_options
}
"#;

/// The configure script for `profile` (see the module doc).
///
/// `vars` is printed as `var = <pprint>` for Python profiles. The URLs, when
/// given and not empty, are appended to `/vars` at the end of the script as
/// `PXEMNGR_URL=<url>` and `METADATA_URL=<url>` (pass `pxemngr_url` only when
/// USEPXEMNGR is on).
pub fn configure_script(
    profile: &str,
    vars: &Dict,
    configure: &[u8],
    pxemngr_url: Option<&str>,
    metadata_url: Option<&str>,
) -> Vec<u8> {
    let urls: Vec<(&str, &str)> = [("PXEMNGR_URL", pxemngr_url), ("METADATA_URL", metadata_url)]
        .into_iter()
        .filter_map(|(name, url)| url.filter(|u| !u.is_empty()).map(|u| (name, u)))
        .collect();
    match shell_shebang(configure) {
        Some(shebang) => shell_script(profile, vars, shebang, configure, &urls),
        None => python_script(profile, vars, configure, &urls),
    }
}

fn python_script(profile: &str, vars: &Dict, configure: &[u8], urls: &[(&str, &str)]) -> Vec<u8> {
    let mut out = b"#!/usr/bin/env python\n#EDEPLOY_PROFILE = ".to_vec();
    out.extend_from_slice(header_name(profile, true).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(PYTHON_PRELUDE.as_bytes());
    out.extend_from_slice(b"var = ");
    out.extend_from_slice(&literal::pformat(&Value::Dict(vars.clone())));
    out.extend_from_slice(configure);
    for (name, url) in urls {
        out.extend_from_slice(b"\nrun(");
        out.extend_from_slice(&python_append_command(name, url));
        out.extend_from_slice(b")\n\n");
    }
    out
}

fn shell_script(
    profile: &str,
    vars: &Dict,
    shebang: &[u8],
    configure: &[u8],
    urls: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = shebang.to_vec();
    out.extend_from_slice(b"\n#EDEPLOY_PROFILE = ");
    out.extend_from_slice(header_name(profile, false).as_bytes());
    out.extend_from_slice(b"\n\n");
    let items: Vec<(Vec<u8>, Vec<u8>)> = vars
        .sorted_items()
        .into_iter()
        .map(|(k, v)| (str_bytes(k), str_bytes(v)))
        .collect();
    for (name, value) in shell_exports(&items) {
        out.extend_from_slice(b"export ");
        out.extend_from_slice(&name);
        out.push(b'=');
        out.extend_from_slice(&shell_quote(value));
        out.push(b'\n');
    }
    out.extend_from_slice(b"\nvar() {\n    case $1 in\n");
    for (key, value) in &items {
        out.extend_from_slice(b"    ");
        out.extend_from_slice(&shell_quote(key));
        out.extend_from_slice(b") printf '%s' ");
        out.extend_from_slice(&shell_quote(value));
        out.extend_from_slice(b" ;;\n");
    }
    out.extend_from_slice(b"    *) return 1 ;;\n    esac\n}\n\ninject_facts() {\n    {\n        printf '%s\\n' '---'\n");
    for (key, _) in facts_order(vars).iter().filter_map(|&i| items.get(i)) {
        out.extend_from_slice(b"        printf '%s%s: ' \"${2-hw_}\" ");
        out.extend_from_slice(&shell_quote(key));
        out.extend_from_slice(b"; var ");
        out.extend_from_slice(&shell_quote(key));
        out.extend_from_slice(b"; printf '\\n'\n");
    }
    out.extend_from_slice(
        b"    } | config /etc/facter/facts.d/edeploy.yaml w \"${1-/post_rsync}\"\n}\n",
    );
    out.extend_from_slice(SHELL_HELPERS.as_bytes());
    let body = configure
        .iter()
        .position(|&b| b == b'\n')
        .and_then(|i| configure.get(i + 1..))
        .unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(body);
    for (name, url) in urls {
        out.extend_from_slice(b"\n");
        out.extend_from_slice(&shell_append_command(name, url));
        out.push(b'\n');
    }
    out
}

/// The first line of `configure` when it is a `sh` or `bash` shebang:
/// `#!/bin/sh`, `#!/bin/bash`, `#!/usr/bin/env sh` or `#!/usr/bin/env bash`,
/// with optional spaces after `#!` and optional arguments.
/// The order of the facts: the legacy `inject_facts` went through `var`,
/// which Python 2 evaluates from its pprinted display (sorted keys), so
/// the facts came in that dict's table order. Sorted where a key's hash is
/// not reproduced.
fn facts_order(vars: &Dict) -> Vec<usize> {
    let keys: Vec<&Value> = vars.sorted_items().into_iter().map(|(k, _)| k).collect();
    pydict::display_order(&keys, false).unwrap_or_else(|| (0..keys.len()).collect())
}

fn shell_shebang(configure: &[u8]) -> Option<&[u8]> {
    let line = configure.split(|&b| b == b'\n').next()?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line
        .strip_prefix(b"#!")?
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty());
    let shell = match words.next()? {
        b"/usr/bin/env" => words.next()?,
        interpreter => interpreter.strip_prefix(b"/bin/")?,
    };
    matches!(shell, b"sh" | b"bash").then_some(line)
}

/// The profile name as it may appear in the one-line header comment:
/// control characters (line breaks, NUL) become spaces and, for Python 2
/// (which rejects non-ASCII source without a coding line), non-ASCII
/// characters become `?`.
fn header_name(profile: &str, ascii_only: bool) -> String {
    profile
        .chars()
        .map(|c| match c {
            c if c.is_ascii_control() => ' ',
            c if ascii_only && !c.is_ascii() => '?',
            c => c,
        })
        .collect()
}

/// Python's `str(value)` as bytes (floats: `repr`), without NUL bytes.
fn str_bytes(value: &Value) -> Vec<u8> {
    let mut text = match value {
        Value::Str(b) => b.clone(),
        Value::Unicode(s) => s.as_bytes().to_vec(),
        Value::None => b"None".to_vec(),
        Value::Bool(true) => b"True".to_vec(),
        Value::Bool(false) => b"False".to_vec(),
        Value::Int(i) => i.to_string().into_bytes(),
        Value::Long(i) => i.to_string().into_bytes(),
        Value::Float(_) | Value::List(_) | Value::Tuple(_) | Value::Dict(_) => literal::repr(value),
    };
    text.retain(|&b| b != 0);
    text
}

/// `'text'` for the shell, `'` written as `'\''`.
fn shell_quote(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    out.push(b'\'');
    for &b in text {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// A key as a shell variable name (see the module doc for the rules).
fn shell_name(key: &[u8]) -> Vec<u8> {
    let mut name: Vec<u8> = key
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                b
            } else {
                b'_'
            }
        })
        .collect();
    if name.first().is_none_or(u8::is_ascii_digit) {
        name.insert(0, b'_');
    }
    name
}

fn exportable(name: &[u8]) -> bool {
    name.iter().any(u8::is_ascii_lowercase) && !name.starts_with(b"_edeploy")
}

/// The exported (name, value) pairs for sorted (key, value) items.
fn shell_exports(items: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, &[u8])> {
    let mut taken: Vec<(Vec<u8>, &[u8])> = Vec::new();
    for exact_keys_first in [true, false] {
        for (key, value) in items {
            let name = shell_name(key);
            if (name == *key) == exact_keys_first
                && exportable(&name)
                && !taken.iter().any(|(n, _)| *n == name)
            {
                taken.push((name, value));
            }
        }
    }
    taken.sort();
    taken
}

/// A URL byte that may stand as is inside `echo "..."` in a Python `'...'`.
fn plain_url_byte(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) && !matches!(b, b'"' | b'$' | b'`' | b'\\' | b'\'')
}

/// A `printf` format printing `text` and a newline: `%` is doubled, the
/// plain URL bytes stay, every other byte is an octal escape, so the format
/// is safe inside single quotes in the shell and inside any Python string.
fn printf_format(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    for b in text.bytes() {
        match b {
            b'%' => out.extend_from_slice(b"%%"),
            b if plain_url_byte(b) => out.push(b),
            _ => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
        }
    }
    out.extend_from_slice(b"\\n");
    out
}

/// The Python string literal of the command appending `NAME=url` to /vars:
/// the legacy `'echo "NAME=url" >> /vars'` when the URL is plain, else a
/// `printf` whose format escapes everything else.
fn python_append_command(name: &str, url: &str) -> Vec<u8> {
    if url.bytes().all(plain_url_byte) {
        return format!("'echo \"{name}={url}\" >> /vars'").into_bytes();
    }
    let mut out = b"\"printf '".to_vec();
    for b in printf_format(&format!("{name}={url}")) {
        if b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.extend_from_slice(b"' >> /vars\"");
    out
}

fn shell_append_command(name: &str, url: &str) -> Vec<u8> {
    let mut out = b"printf '".to_vec();
    out.extend_from_slice(&printf_format(&format!("{name}={url}")));
    out.extend_from_slice(b"' >> /vars");
    out
}

/// A shell script printing `message` (NUL characters dropped) and exiting
/// with status 1. The here-document delimiter is quoted (no expansion) and
/// chosen absent from the message, so no text can end it early.
pub fn error_script(message: &str) -> Vec<u8> {
    let message = message.replace('\0', "");
    let delimiter = heredoc_delimiter(&message);
    format!("#!/bin/sh\n\ncat <<'{delimiter}'\n{message}\n{delimiter}\n\nexit 1\n").into_bytes()
}

/// `EOF`, or when the message contains it, `EOF` followed by more `_` than
/// the longest run of `_` in the message (hence not in the message).
fn heredoc_delimiter(message: &str) -> String {
    if !message.contains("EOF") {
        return "EOF".to_string();
    }
    let mut longest = 0;
    let mut run = 0;
    for c in message.chars() {
        run = if c == '_' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    format!("EOF{}", "_".repeat(longest + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_shell_shebangs() {
        for yes in [
            &b"#!/bin/sh\necho"[..],
            b"#!/bin/bash",
            b"#! /bin/sh -e\n",
            b"#!/usr/bin/env bash\r\n",
            b"#!/usr/bin/env  sh\n",
        ] {
            assert!(
                shell_shebang(yes).is_some(),
                "{}",
                String::from_utf8_lossy(yes)
            );
        }
        for no in [
            &b""[..],
            b"#!/usr/bin/env python\n",
            b"#!/bin/shell\n",
            b"#!/bin/ksh\n",
            b"#!/usr/local/bin/bash\n",
            b"#!/usr/bin/env\n",
            b"# !/bin/sh\n",
            b"\n#!/bin/sh\n",
            b"run('ls')\n",
        ] {
            assert!(
                shell_shebang(no).is_none(),
                "{}",
                String::from_utf8_lossy(no)
            );
        }
        assert_eq!(
            shell_shebang(b"#!/bin/sh -x\r\nls\n"),
            Some(&b"#!/bin/sh -x"[..])
        );
    }

    #[test]
    fn header_name_is_one_line() {
        assert_eq!(header_name("vm\ntouch /x\r\0é", true), "vm touch /x  ?");
        assert_eq!(header_name("vm\né", false), "vm é");
    }

    #[test]
    fn shell_names_and_exports() {
        assert_eq!(shell_name(b"edeploy-profile"), b"edeploy_profile");
        assert_eq!(shell_name(b"1st"), b"_1st");
        assert_eq!(shell_name(b""), b"_");
        assert_eq!(shell_name(b"caf\xc3\xa9"), b"caf__");
        let items: Vec<(Vec<u8>, Vec<u8>)> = [
            ("PATH", "p"),
            ("a-b", "mapped"),
            ("a_b", "exact"),
            ("_edeploy_path", "x"),
            ("ip", "1"),
            ("x.y", "first"),
            ("x:y", "second"),
        ]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
        let exports: Vec<(String, String)> = shell_exports(&items)
            .into_iter()
            .map(|(n, v)| {
                (
                    String::from_utf8(n).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect();
        let want = [("a_b", "exact"), ("ip", "1"), ("x_y", "first")];
        assert_eq!(exports, want.map(|(n, v)| (n.to_string(), v.to_string())));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote(b"it's"), b"'it'\\''s'");
        assert_eq!(str_bytes(&Value::Long(12)), b"12");
        assert_eq!(str_bytes(&Value::Bool(true)), b"True");
        assert_eq!(str_bytes(&Value::Str(b"a\0b".to_vec())), b"ab");
        assert_eq!(
            printf_format("a%b'c\\d\u{e9}\n"),
            b"a%%b\\047c\\134d\\303\\251\\012\\n"
        );
        assert_eq!(
            python_append_command("METADATA_URL", "http://10.0.0.1/"),
            b"'echo \"METADATA_URL=http://10.0.0.1/\" >> /vars'"
        );
        assert_eq!(
            python_append_command("PXEMNGR_URL", "http://x/\"$"),
            b"\"printf 'PXEMNGR_URL=http://x/\\\\042\\\\044\\\\n' >> /vars\""
        );
    }

    #[test]
    fn error_script_delimiter() {
        assert_eq!(
            error_script("No file passed to the CGI"),
            b"#!/bin/sh\n\ncat <<'EOF'\nNo file passed to the CGI\nEOF\n\nexit 1\n"
        );
        assert_eq!(heredoc_delimiter("a\nEOF\nb"), "EOF_");
        assert_eq!(heredoc_delimiter("EOF_\n__EOF___x"), "EOF____");
        let script = String::from_utf8(error_script("x\nEOF\nEOF_\n")).unwrap();
        assert!(
            script.contains("cat <<'EOF__'\nx\nEOF\nEOF_\n\nEOF__\n"),
            "{script}"
        );
    }
}

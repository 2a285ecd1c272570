//! Registration of a machine with pxemngr (`USEPXEMNGR`):
//! `pxemngr addsystem <sysname> <mac>...`.
//!
//! Everything passed comes from the machine, so it is validated first: a
//! MAC address must be six hex pairs, and the system name must be a plain
//! name (`[A-Za-z0-9_-]`, not starting with `-`), which is what the
//! legacy naming rule gives for any machine whose first MAC is a real one.
//! A machine that only reports a MAC-like `--settings=/tmp/x` would
//! otherwise hand pxemngr an option as its name.
//!
//! No `--` is passed to end the options: `pxemngr` is a shell script that
//! execs `pxe/addsystem`, a Python script reading `sys.argv` itself (name
//! first, then MACs), not a Django command, so it would take `--` for the
//! system name. Validation is what keeps values from being read as options,
//! by pxemngr or by anything it passes them to; pxemngr also uses the name
//! as a file name in its PXE directory, hence no `/` or other punctuation.
//!
//! Refused values never fail the request: they are left out (the whole
//! registration when the name is refused) and reported as warnings.
//!
//! pxemngr runs (through duct) in a process group of its own, with its output in a pipe
//! that is read without blocking, and the whole group is killed once it
//! exits or at the deadline, whichever comes first: a child it leaves
//! behind can neither hold the request (by keeping the pipe open) nor
//! outlive it. Only a process that leaves the group (`setsid`) escapes.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The command, looked up in `PATH` as the legacy `os.system` did.
const PROGRAM: &str = "pxemngr";

/// How long `pxemngr addsystem` may take before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// How much of pxemngr's output (its end) is kept for the warning.
const OUTPUT_KEPT: usize = 2000;

/// How often, at most, the process is checked for exit while it runs.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The arguments of `pxemngr` for a machine, and the warnings for what
/// was refused. `None` when nothing is to be run.
pub fn addsystem_args(sysname: &str, macs: &[String]) -> (Option<Vec<String>>, Vec<String>) {
    let mut warnings = Vec::new();
    if let Err(why) = check_sysname(sysname) {
        warnings.push(format!(
            "pxemngr: machine not registered: system name {sysname:?} {why}"
        ));
        return (None, warnings);
    }
    let mut args = vec!["addsystem".to_owned(), sysname.to_owned()];
    for mac in macs {
        if is_mac(mac) {
            args.push(mac.clone());
        } else if mac.len() == 17 {
            // Values of other lengths (InfiniBand GUIDs...) were never
            // passed, by the legacy server either: only these are news.
            warnings.push(format!(
                "pxemngr: {sysname}: {mac:?} left out: a MAC address is six hex pairs"
            ));
        }
    }
    if args.len() == 2 {
        warnings.push(format!(
            "pxemngr: machine {sysname} not registered: no MAC address"
        ));
        return (None, warnings);
    }
    (Some(args), warnings)
}

/// Registers the machine; returns the problems to log (none when it was
/// registered). Never fails: provisioning goes on without pxemngr.
pub fn register(sysname: &str, macs: &[String]) -> Vec<String> {
    register_with(Path::new(PROGRAM), sysname, macs, TIMEOUT)
}

fn register_with(program: &Path, sysname: &str, macs: &[String], timeout: Duration) -> Vec<String> {
    let (args, mut warnings) = addsystem_args(sysname, macs);
    if let Some(args) = args {
        if let Err(e) = run(program, &args, timeout) {
            warnings.push(e);
        }
    }
    warnings
}

/// Why `name` cannot be given to pxemngr as a system name.
fn check_sysname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("is empty")
    } else if name.starts_with('-') {
        Err("starts with '-' (an option)")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Err("has characters other than letters, digits, '_' and '-'")
    } else {
        Ok(())
    }
}

/// Six hex pairs separated by `:` (or `-`, which pxemngr also reads).
fn is_mac(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 17
        && b.iter().enumerate().all(|(i, &c)| match i % 3 {
            2 => c == b':' || c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Runs `program args` in a process group of its own for at most
/// `timeout`, then kills what is left of the group.
fn run(program: &Path, args: &[String], timeout: Duration) -> Result<(), String> {
    let what = format!("{PROGRAM} {}", args.join(" "));
    let fail = |e: io::Error| format!("{what}: cannot run: {e}");
    // One pipe for stdout and stderr: the output only goes to the warning.
    let (mut reader, writer) = io::pipe().map_err(fail)?;
    set_nonblocking(&reader).map_err(fail)?;
    let stdout = writer.try_clone().map_err(fail)?;
    // The expression, holding our copies of the write end, is dropped with
    // the statement: then only pxemngr and its children keep the pipe open.
    // As an OsStr: duct would run a bare `Path` from the current directory.
    let handle = duct::cmd(program.as_os_str(), args)
        .stdin_null()
        .stdout_file(stdout)
        .stderr_file(writer)
        .unchecked()
        .before_spawn(|command| {
            command.process_group(0);
            Ok(())
        })
        .start()
        .map_err(fail)?;
    // A single command has a single pid (never 0: killpg(0) is our group).
    let Some(&pid) = handle.pids().first().filter(|&&pid| pid != 0) else {
        let _ = handle.kill();
        return Err(format!("{what}: started without a process id"));
    };

    let mut output = Vec::new();
    let deadline = Instant::now() + timeout;
    let timed_out = loop {
        if has_exited(pid) {
            break false;
        }
        let now = Instant::now();
        if now >= deadline {
            break true;
        }
        wait_readable(&reader, (deadline - now).min(POLL_INTERVAL));
        drain(&mut reader, &mut output);
    };
    // pxemngr is not reaped yet, so its pid still names its group: the kill
    // cannot reach anyone else.
    kill_group(pid);
    let status = handle.wait().map(|output| output.status);
    drain(&mut reader, &mut output);
    let output = String::from_utf8_lossy(&output);
    let output = output.trim();
    if timed_out {
        return Err(format!(
            "{what}: killed after {}s: {output}",
            timeout.as_secs_f32()
        ));
    }
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("{what}: {status}: {output}")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// Whether the child has exited, without reaping it (`WNOWAIT`). An error
/// counts as exited: the caller then kills the group and reaps the child.
fn has_exited(pid: u32) -> bool {
    // SAFETY: waitid fills the zeroed siginfo_t we own; si_pid reads the
    // field it set (0 when the child has not exited).
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let done = libc::waitid(
            libc::P_PID,
            pid,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        done != 0 || info.si_pid() != 0
    }
}

/// SIGKILL to every process of the group `pgid`.
fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // SAFETY: a plain system call with integer arguments. ESRCH (no one
    // left) is not an error here.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on a file descriptor we own, with integer arguments.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits at most `timeout` for `fd` to have something to read (or be closed).
fn wait_readable(fd: &impl AsRawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one pollfd we own, for the duration of the call.
    let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
    if ready > 0 && pfd.revents & libc::POLLHUP != 0 && pfd.revents & libc::POLLIN == 0 {
        // Every writer is gone: poll would return at once from now on.
        std::thread::sleep(timeout);
    }
}

/// Reads what the non-blocking `reader` has now, keeping the last
/// [`OUTPUT_KEPT`] bytes.
fn drain(reader: &mut impl Read, kept: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > OUTPUT_KEPT {
                    kept.drain(..kept.len() - OUTPUT_KEPT);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn macs(m: &[&str]) -> Vec<String> {
        m.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn macs_are_six_hex_pairs() {
        for good in [
            "52:54:00:12:34:56",
            "AA-bb-CC-dd-EE-ff",
            "00:1b:38:71-0a:b6",
        ] {
            assert!(is_mac(good), "{good}");
        }
        for bad in [
            "--settings=/tmp/x",
            "52:54:00:12:34:5g",
            "52:54:00:12:34:5",
            "52:54:00:12:34:567",
            "5254:0012:3456:78",
            " 2:54:00:12:34:56",
            "",
        ] {
            assert!(!is_mac(bad), "{bad}");
        }
    }

    #[test]
    fn option_like_values_never_reach_the_arguments() {
        // A machine reporting only a MAC-like option: its name is that value.
        let (args, warnings) = addsystem_args("--settings=/tmp/x", &macs(&["--settings=/tmp/x"]));
        assert_eq!(args, None);
        assert_eq!(
            warnings,
            [
                "pxemngr: machine not registered: system name \"--settings=/tmp/x\" \
              starts with '-' (an option)"
            ]
        );
        // A good name: the bad MAC is left out, the others are passed.
        let (args, warnings) = addsystem_args(
            "vm-52-54-00-12-34-56",
            &macs(&[
                "52:54:00:12:34:56",
                "--pythonpath=/tmp",
                "guid-of-20-characters",
            ]),
        );
        assert_eq!(
            args.unwrap(),
            ["addsystem", "vm-52-54-00-12-34-56", "52:54:00:12:34:56"]
        );
        assert_eq!(
            warnings,
            [
                "pxemngr: vm-52-54-00-12-34-56: \"--pythonpath=/tmp\" left out: \
              a MAC address is six hex pairs"
            ]
        );
        for bad in ["", "-vm", "vm/../../etc", "vm x", "vm\n", "vm=1"] {
            let (args, warnings) = addsystem_args(bad, &macs(&["52:54:00:12:34:56"]));
            assert_eq!(args, None, "{bad:?}");
            assert_eq!(warnings.len(), 1, "{bad:?}");
        }
        let (args, warnings) = addsystem_args("vm-", &macs(&["x"]));
        assert_eq!(args, None);
        assert_eq!(
            warnings,
            ["pxemngr: machine vm- not registered: no MAC address"]
        );
    }

    /// An executable shell script `body` in a temporary directory.
    fn script(body: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pxemngr");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, path)
    }

    /// Whether process `pid` is gone (or a zombie), waiting up to 2 s for it.
    fn gone(pid: &str) -> bool {
        let stat = format!("/proc/{}/stat", pid.trim());
        for _ in 0..200 {
            match std::fs::read_to_string(&stat) {
                Err(_) => return true,
                Ok(s)
                    if s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z') =>
                {
                    return true
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        false
    }

    #[test]
    fn arguments_output_and_status() {
        let (dir, path) =
            script("printf '%s|' \"$@\" > \"$0.args\"\necho to stdout\necho to stderr >&2\nexit 3");
        let args = macs(&["addsystem", "vm", "52:54:00:12:34:56"]);
        let err = run(&path, &args, Duration::from_secs(5)).unwrap_err();
        assert_eq!(
            err,
            "pxemngr addsystem vm 52:54:00:12:34:56: exit status: 3: to stdout\nto stderr"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("pxemngr.args")).unwrap(),
            "addsystem|vm|52:54:00:12:34:56|"
        );
        let (_dir, path) = script("exit 0");
        assert_eq!(run(&path, &args, Duration::from_secs(5)), Ok(()));
        let missing = Path::new("/nonexistent/pxemngr");
        let err = run(missing, &args, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains(": cannot run: "), "{err}");
    }

    #[test]
    fn a_lingering_child_neither_holds_the_request_nor_outlives_it() {
        let (dir, path) = script("sleep 30 &\necho $! > \"$0.pid\"\necho started\nexit 0");
        let start = Instant::now();
        let warnings = register_with(&path, "vm", &macs(&["52:54:00:12:34:56"]), TIMEOUT);
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(warnings, Vec::<String>::new());
        let pid = std::fs::read_to_string(dir.path().join("pxemngr.pid")).unwrap();
        assert!(gone(&pid), "the child {pid} of pxemngr is still running");
    }

    #[test]
    fn a_hanging_pxemngr_is_killed_with_its_children_at_the_deadline() {
        let (dir, path) = script(
            "sleep 30 &\necho $! > \"$0.pid\"\necho $$ > \"$0.self\"\necho waiting\nsleep 30",
        );
        let timeout = Duration::from_millis(500);
        let start = Instant::now();
        let warnings = register_with(&path, "vm", &macs(&["52:54:00:12:34:56"]), timeout);
        let elapsed = start.elapsed();
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_secs(2),
            "{elapsed:?}"
        );
        assert_eq!(
            warnings,
            ["pxemngr addsystem vm 52:54:00:12:34:56: killed after 0.5s: waiting"]
        );
        for file in ["pxemngr.pid", "pxemngr.self"] {
            let pid = std::fs::read_to_string(dir.path().join(file)).unwrap();
            assert!(gone(&pid), "{file}: {pid} is still running");
        }
    }

    #[test]
    fn much_output_neither_blocks_nor_is_all_kept() {
        let (_dir, path) = script("head -c 1000000 /dev/zero | tr '\\0' x\necho end\nexit 1");
        let args = macs(&["addsystem", "vm", "52:54:00:12:34:56"]);
        let start = Instant::now();
        let err = run(&path, &args, Duration::from_secs(5)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(4));
        assert!(err.ends_with("xxxend"), "{err}");
        assert!(err.len() < OUTPUT_KEPT + 100, "{}", err.len());
    }
}

//! The lock and the crash-safe file replacement behind every write.
//!
//! Several CGI processes may serve requests at once, and an operator tool may
//! read the files meanwhile: the state, CMDB and `.hw` files must never be
//! seen half-written, whatever is killed when. The legacy server wrote them in
//! place and used an `O_EXCL` lock file that a killed process left behind,
//! blocking every later request; here the lock is `flock(2)` (released by the
//! kernel when its holder dies) and files are replaced by `rename(2)`, or,
//! for the files written under the lock, exchanged with a spare.
//!
//! Only writers take the lock. Read-only paths (the status page, `edeploy
//! explain`, `check` and `cmdb-used`, `upload --dry-run`) take none: with
//! a shared lock, a steady stream of them kept a provisioning request out
//! for as long as the stream lasted, since some reader always held it.
//! They need none, because no file is ever written in place: each file a
//! reader reads ([`read_version`]) is one whole version of it, the one
//! before or after any commit. What a reader can see is several files from
//! different moments: a request commits its CMDB, then the state, so a
//! reader of the state and then of a CMDB may see that CMDB one or more
//! installations ahead of the state (an entry used whose quota the state
//! has not yet spent; never the reverse), and two CMDBs from two moments.
//! That is harmless for a view: every figure is true of a moment during
//! the view and nothing is decided from it; the next view catches up. A
//! dry run may likewise predict from a state that a request committing
//! meanwhile has already changed, as it could the instant after a locked
//! read; the real request reads everything again under the lock.

use std::ffi::OsString;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A held exclusive `flock(2)` on the lock file, released when dropped (or
/// when the process dies, however it dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Waits for and takes the lock for writing: no other holder at all.
    pub fn exclusive(path: &Path) -> io::Result<Lock> {
        let file = open_lock_file(path)?;
        file.lock().map_err(|e| context(e, "cannot lock", path))?;
        Ok(Lock { _file: file })
    }
}

/// Opens the lock file, creating it if needed. A lock file we may not write
/// (created by another user) is opened read-only: `flock` does not care.
fn open_lock_file(path: &Path) -> io::Result<File> {
    match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && path.exists() => {
            File::open(path).map_err(|e| context(e, "cannot open lock file", path))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = parent_dir(path);
            Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot create lock file {}: directory {} does not exist",
                    path.display(),
                    dir.display()
                ),
            ))
        }
        Err(e) => Err(context(e, "cannot open lock file", path)),
    }
}

/// Adds what was done and to which path to an I/O error (std's carry none).
fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Reads the whole of one version of `path`, a file that writers replace
/// while readers read it without the lock.
///
/// A replacement by `rename` alone would make any `read` safe: the old
/// file is never written again. A spare is ([`prepare_file_locked`]): the
/// file a reader looked up may be exchanged away, then reused by the next
/// writer, before the reader's `open` completes (the lease probe only sees
/// opens that are complete). So the file opened is checked to still be the
/// one the name gives: then it was the current version when the check was
/// made, after our open, and no writer reuses it while we hold it open. If
/// not, it is opened again.
pub fn read_version(path: &Path) -> io::Result<Vec<u8>> {
    read_version_with(path, || {}).map(|(contents, _)| contents)
}

/// [`read_version`], with the metadata of the version read: its inode,
/// size and times identify it. `None` when the file changed while it was
/// read (written in place by someone else than our writers), so that the
/// content may not be that version's.
pub fn read_version_and_metadata(path: &Path) -> io::Result<(Vec<u8>, Option<fs::Metadata>)> {
    read_version_with(path, || {})
}

/// Most tries of [`read_version`]: each failure needs a writer's commit
/// between the reader's `open` and its check, a few microseconds apart.
const READ_TRIES: usize = 100;

/// [`read_version`], with `after_open` run between the `open` and the check
/// (the tests replace the file there).
fn read_version_with(
    path: &Path,
    mut after_open: impl FnMut(),
) -> io::Result<(Vec<u8>, Option<fs::Metadata>)> {
    for _ in 0..READ_TRIES {
        let mut file = File::open(path)?;
        after_open();
        let opened = file.metadata()?;
        let named = fs::metadata(path)?;
        if (opened.dev(), opened.ino()) == (named.dev(), named.ino()) {
            let mut contents = Vec::new();
            io::Read::read_to_end(&mut file, &mut contents)?;
            let after = file.metadata()?;
            let times = |m: &fs::Metadata| {
                (
                    m.size(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                )
            };
            let unchanged = times(&opened) == times(&after);
            return Ok((contents, unchanged.then_some(after)));
        }
    }
    Err(io::Error::other(format!(
        "{} was replaced {READ_TRIES} times while being opened",
        path.display()
    )))
}

/// Replaces `path` by a new file holding `contents`, for a cache: atomically
/// (readers see the old or the new file, and concurrent writers each write
/// a whole file of their own: the last rename wins), but not durably, so
/// that a cache costs no disk flush; after a crash it may be empty or
/// missing, which its readers must take as a miss. A symbolic link at
/// `path` is replaced, never followed. The file is readable by its owner
/// only: a cache may hold what the file it summarises shows only to some.
pub fn replace_cache_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let (tmp_path, file) = create_temp(path, 0o600)?;
    let mut prepared = Prepared {
        tmp_path,
        target: path.to_path_buf(),
        file,
        exchange: false,
        committed: false,
    };
    prepared
        .file
        .write_all(contents)
        .map_err(|e| context(e, "cannot write", &prepared.tmp_path))?;
    prepared.rename()
}

/// Replaces the content of `path` atomically: readers see the old or the new
/// content, never a mix, and a crash leaves one of them on disk.
///
/// The new content goes to a fresh temporary file in the same directory,
/// which is flushed to disk, given the permission bits (and, when allowed,
/// the owner) of the file it replaces, then renamed over it; the directory
/// is flushed last. A symbolic link is followed: its target is replaced, as
/// the legacy in-place write did. On error the temporary file is removed and
/// the old file is untouched (an error from the final directory flush means
/// the new content is in place but maybe not yet durable).
pub fn replace_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    prepare_file(path, contents)?.commit()
}

/// Like [`replace_file`], but a symbolic link at `path` is replaced itself,
/// never followed, and the new file gets default permissions: for files
/// whose names come from the network (logs, health results), which must
/// never lead a write outside their directory.
pub fn replace_file_no_follow(path: &Path, contents: &[u8]) -> io::Result<()> {
    prepare_with(path, |tmp| tmp.write_all(contents))?.commit()
}

/// The first half of [`replace_file`]: the new content written to its
/// temporary file, which [`commit_all`] flushes and renames.
///
/// Preparing every file of a transaction before committing any makes a
/// failed write (a full disk) change none of them: renames need no space.
pub fn prepare_file(path: &Path, contents: &[u8]) -> io::Result<Prepared> {
    let target = resolve(path)?;
    let old = metadata_if_exists(&target)?;
    prepare_replacing(&target, old.as_ref(), contents)
}

/// [`prepare_file`] once the target is resolved and its metadata (if it
/// exists) read.
fn prepare_replacing(
    target: &Path,
    old: Option<&fs::Metadata>,
    contents: &[u8],
) -> io::Result<Prepared> {
    prepare_with(target, |tmp| {
        if let Some(meta) = old {
            same_owner_and_mode(tmp, meta)?;
        }
        tmp.write_all(contents)
    })
}

/// Like [`prepare_file`], for a file that is only written under the
/// exclusive lock (the state, a CMDB). The new content goes to a spare
/// file kept next to the target, `.<name>.spare`, which [`commit_all`]
/// exchanges with the target (`renameat2(RENAME_EXCHANGE)`): the previous
/// content becomes the next spare, and no inode is created or freed. On
/// ext4 without a journal, creating a file scans past every inode freed in
/// the last minutes, and a create and a rename per write made that the
/// main cost of a request under load.
///
/// The spare is reused only when no one has it open, so that a reader
/// that opened the target before it was exchanged keeps reading intact
/// content. Otherwise (or where leases or exchanges are not supported) this
/// is [`prepare_file`].
pub fn prepare_file_locked(path: &Path, contents: &[u8]) -> io::Result<Prepared> {
    let target = resolve(path)?;
    let Some(old) = metadata_if_exists(&target)? else {
        return prepare_replacing(&target, None, contents);
    };
    let Some((tmp_path, file, spare)) = open_spare(&target, &old) else {
        return prepare_replacing(&target, Some(&old), contents);
    };
    let mut prepared = Prepared {
        tmp_path,
        target,
        file,
        exchange: true,
        committed: false,
    };
    // Written over the old content, then cut to length: truncating first
    // would free every block (a discard each, with `-o discard`) only to
    // allocate them again.
    let len = contents.len() as u64;
    prepared
        .file
        .write_all(contents)
        .and_then(|()| {
            if spare.len() > len {
                prepared.file.set_len(len)
            } else {
                Ok(())
            }
        })
        .and_then(|()| new_modification_time(&prepared.file, &spare))
        .map_err(|e| context(e, "cannot write", &prepared.tmp_path))?;
    start_writeback(&prepared.file);
    Ok(prepared)
}

/// Makes sure that `file`, just rewritten in place, has a modification
/// time other than `before`'s. Readers recognise a version of a file by
/// its inode, size and times (the status page's cache), and a spare
/// rewritten within one tick of the clock the kernel stamps files with
/// could otherwise keep them all.
fn new_modification_time(file: &File, before: &fs::Metadata) -> io::Result<()> {
    let now = file.metadata()?;
    if (now.mtime(), now.mtime_nsec()) != (before.mtime(), before.mtime_nsec()) {
        return Ok(());
    }
    let later = before.modified()? + std::time::Duration::from_nanos(1);
    file.set_modified(later)
}

/// The spare of `target` (whose metadata is `old`), opened for writing if
/// no one else has it open, and given the target's owner and mode, with
/// its metadata before that; `None` if it cannot be used that way.
fn open_spare(target: &Path, old: &fs::Metadata) -> Option<(PathBuf, File, fs::Metadata)> {
    let path = hidden_sibling(target, ".spare")?;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .ok()?;
    let meta = file.metadata().ok()?;
    // Another name for the same file would see it rewritten.
    if !meta.is_file() || meta.nlink() != 1 {
        return None;
    }
    if !opened_only_here(&file) {
        return None;
    }
    if (meta.uid(), meta.gid(), meta.mode()) != (old.uid(), old.gid(), old.mode()) {
        same_owner_and_mode(&file, old).ok()?;
    }
    Some((path, file, meta))
}

/// Whether no other open file refers to `file`: the kernel grants a write
/// lease (`F_SETLEASE`) only then. The lease is dropped at once: it is only
/// this probe. The spare is reached by no other name, so no reader can open
/// it after; one that opens it by that name during the probe breaks the
/// lease, which is signalled with SIGURG (ignored by default) rather than
/// SIGIO (which would kill us).
fn opened_only_here(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // Not in the libc crate; the same on every Linux architecture.
    const F_SETSIG: libc::c_int = 10;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a file descriptor we own, with integer arguments.
    unsafe {
        libc::fcntl(fd, F_SETSIG, libc::SIGURG) == 0
            && libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) == 0
            && libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) == 0
    }
}

/// Gives `file` the owner (when allowed) and permission bits of `meta`.
fn same_owner_and_mode(file: &File, meta: &fs::Metadata) -> io::Result<()> {
    // chown first: it clears set-id bits that chmod then restores.
    match std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid())) {
        Err(e) if e.kind() != io::ErrorKind::PermissionDenied => return Err(e),
        _ => {}
    }
    file.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))
}

fn metadata_if_exists(path: &Path) -> io::Result<Option<fs::Metadata>> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(context(e, "cannot read", path)),
    }
}

/// Asks the kernel to start writing `file` out now: its data is on its way
/// to the disk while the other files of the transaction are written, and
/// with a journal their blocks are allocated before the first `fsync`,
/// whose commit then covers them all. Only a hint: errors come back from
/// `fsync`.
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a file descriptor we own; it reads no
    // memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Copies `from` to `to` as [`replace_file`] does, keeping the permission
/// bits and times of `from` (Python's `shutil.copy2`), for the CMDB `.orig`
/// backup.
pub fn copy_file_atomic(from: &Path, to: &Path) -> io::Result<()> {
    let mut src = File::open(from).map_err(|e| context(e, "cannot open", from))?;
    let meta = src
        .metadata()
        .map_err(|e| context(e, "cannot read", from))?;
    let target = resolve(to)?;
    prepare_with(&target, |tmp| {
        tmp.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        io::copy(&mut src, tmp).map_err(|e| context(e, "cannot copy", from))?;
        tmp.set_times(
            FileTimes::new()
                .set_accessed(meta.accessed()?)
                .set_modified(meta.modified()?),
        )
    })?
    .commit()
}

/// The file a write to `path` must replace: the target of a symbolic link.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::canonicalize(path).map_err(|e| context(e, "cannot resolve symbolic link", path))
        }
        _ => Ok(path.to_path_buf()),
    }
}

/// Distinguishes temporary files of the threads of one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Longest part of the target's name kept in the temporary name, so that
/// the latter stays under `NAME_MAX` (255).
const TEMP_NAME_KEEP: usize = 200;

/// `.<name of target><suffix>` in the directory of `target` (the name cut
/// to `TEMP_NAME_KEEP` bytes); `None` if `target` has no file name.
fn hidden_sibling(target: &Path, suffix: &str) -> Option<PathBuf> {
    let name = target.file_name()?.as_encoded_bytes();
    let mut hidden = OsString::from(".");
    hidden.push(String::from_utf8_lossy(name.get(..TEMP_NAME_KEEP).unwrap_or(name)).as_ref());
    hidden.push(suffix);
    Some(parent_dir(target).join(hidden))
}

/// Creates a new temporary file next to `target` (`O_EXCL`: never an
/// existing file, nor a symbolic link planted by someone else), with the
/// permission bits `mode` less the umask.
fn create_temp(target: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    let dir = parent_dir(target);
    let mut last_error = None;
    for _ in 0..100 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let suffix = format!(".{}.{n}.tmp", std::process::id());
        let tmp_path = hidden_sibling(target, &suffix).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a file name", target.display()),
            )
        })?;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp_path)
        {
            Ok(file) => return Ok((tmp_path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(context(e, "cannot create a temporary file in", dir)),
        }
    }
    let e = last_error.unwrap_or_else(|| io::Error::other("no free temporary name"));
    Err(context(e, "cannot create a temporary file in", dir))
}

/// Removes the temporary files left by writers killed before their rename:
/// `.<name>.<pid>.<n>.tmp` whose pid no longer exists. A file of a live
/// process is never touched, so no lock is needed: no one writes a dead
/// process's file, and a new process given the same pid cannot make the
/// same name while the old file exists. Returns how many were removed.
pub fn remove_stale_temps(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = temp_owner(name.as_encoded_bytes()) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(context(e, "cannot remove", &entry.path())),
            }
        }
    }
    Ok(removed)
}

/// The writer's pid in a temporary file name made by `create_temp`.
fn temp_owner(name: &[u8]) -> Option<u32> {
    let stem = name.strip_prefix(b".")?.strip_suffix(b".tmp")?;
    let mut parts = stem.rsplitn(3, |&b| b == b'.');
    let counter = parts.next()?;
    let pid = parts.next()?;
    parts.next()?;
    if !counter.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(pid).ok()?.parse().ok()
}

/// A new content in a temporary file next to the file it is to replace.
/// Dropped without [`commit_all`], the temporary (or spare) file is removed,
/// so that a failed write holds no disk space, and the old file stays as it
/// was.
#[derive(Debug)]
pub struct Prepared {
    tmp_path: PathBuf,
    target: PathBuf,
    file: File,
    /// `tmp_path` is the target's spare, to be exchanged with it.
    exchange: bool,
    committed: bool,
}

impl Prepared {
    /// Flushes, renames the temporary file over the target, then flushes
    /// the directory (an error from that flush means the new content is in
    /// place but maybe not yet durable).
    pub fn commit(self) -> io::Result<()> {
        commit_all(vec![self])?.sync()
    }

    /// Makes the new content durable, without renaming it yet.
    fn flush(&self) -> io::Result<()> {
        self.file
            .sync_all()
            .map_err(|e| context(e, "cannot write", &self.tmp_path))
    }

    fn rename(&mut self) -> io::Result<()> {
        let exchanged = self.exchange && exchange(&self.tmp_path, &self.target).is_ok();
        if !exchanged {
            fs::rename(&self.tmp_path, &self.target)
                .map_err(|e| context(e, "cannot rename over", &self.target))?;
        }
        self.committed = true;
        Ok(())
    }
}

/// Flushes every prepared file, then renames each over its target, in
/// order. A flush error renames nothing; a rename error stops there, the
/// files not yet renamed are left as they were. The renames are durable
/// once [`Renamed::sync`] has flushed their directories, which needs no
/// lock: a later writer's renames it may flush too are of files already
/// flushed themselves.
pub fn commit_all(files: Vec<Prepared>) -> io::Result<Renamed> {
    for file in &files {
        file.flush()?;
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for mut file in files {
        file.rename()?;
        let dir = parent_dir(&file.target).to_path_buf();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    Ok(Renamed { dirs })
}

/// Files renamed into place by [`commit_all`], durable once synced.
#[must_use = "the renames are not durable until `sync` is called"]
#[derive(Debug)]
pub struct Renamed {
    dirs: Vec<PathBuf>,
}

impl Renamed {
    /// Flushes each directory involved once: the files of one transaction
    /// (CMDB and state) cost one directory flush, not one each.
    pub fn sync(self) -> io::Result<()> {
        for dir in &self.dirs {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| context(e, "cannot flush directory", dir))?;
        }
        Ok(())
    }
}

/// Swaps the files named `a` and `b`, atomically.
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let b = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let done = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the error that matters, if any, is being returned.
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

/// The common part of the replacements: a temporary file filled by `fill`.
fn prepare_with(
    target: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<Prepared> {
    let (tmp_path, file) = create_temp(target, 0o666)?;
    let mut prepared = Prepared {
        tmp_path,
        target: target.to_path_buf(),
        file,
        exchange: false,
        committed: false,
    };
    fill(&mut prepared.file).map_err(|e| context(e, "cannot write", &prepared.tmp_path))?;
    start_writeback(&prepared.file);
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::Duration;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn no_follow_replaces_a_symlink_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::write(&outside, "keep").unwrap();
        let dir = tmp.path().join("logs");
        fs::create_dir(&dir).unwrap();
        let link = dir.join("a.log.gz");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        replace_file_no_follow(&link, b"new").unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_file());
        assert_eq!(fs::read(&link).unwrap(), b"new");
        assert_eq!(leftovers(&dir), Vec::<String>::new());
    }

    #[test]
    fn stale_temps_of_dead_writers_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        let mut dead = dead;
        dead.wait().unwrap();
        let live = std::process::id();
        for name in [
            format!(".state.{dead_pid}.0.tmp"),
            format!(".vm.cmdb.{live}.3.tmp"),
            "state".to_string(),
            ".hidden.tmp".to_string(),
            format!(".x.{dead_pid}.y.tmp"),
        ] {
            fs::write(tmp.path().join(name), "x").unwrap();
        }
        assert_eq!(remove_stale_temps(tmp.path()).unwrap(), 1);
        let mut left = leftovers(tmp.path());
        left.sort();
        assert_eq!(
            left,
            [
                ".hidden.tmp".to_string(),
                format!(".vm.cmdb.{live}.3.tmp"),
                format!(".x.{dead_pid}.y.tmp")
            ]
        );
        assert_eq!(temp_owner(b".a.b.c.12.7.tmp"), Some(12));
    }

    #[test]
    fn replace_creates_then_replaces_keeping_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        replace_file(&path, b"[('vm', '*')]\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"[('vm', '*')]\n");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        replace_file(&path, b"[]\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"[]\n");
        assert_eq!(mode(&path), 0o640);
        assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
    }

    #[test]
    fn prepared_file_replaces_only_when_committed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        fs::write(&path, b"old").unwrap();
        let dropped = prepare_file(&path, b"dropped").unwrap();
        assert_eq!(leftovers(tmp.path()).len(), 1);
        drop(dropped);
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
        let kept = prepare_file(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"old");
        kept.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
    }

    fn inode(path: &Path) -> u64 {
        fs::symlink_metadata(path).unwrap().ino()
    }

    /// Why spares cannot be used in `dir` (no exchange or no lease on its
    /// file system: then `prepare_file_locked` is `prepare_file`), if so.
    fn spares_unsupported(dir: &Path) -> Option<String> {
        let (a, b) = (dir.join("probe-a"), dir.join("probe-b"));
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        let why = match exchange(&a, &b) {
            Err(e) => Some(format!("renameat2(RENAME_EXCHANGE): {e}")),
            Ok(()) if !opened_only_here(&OpenOptions::new().write(true).open(&a).unwrap()) => {
                Some("F_SETLEASE refused".to_string())
            }
            Ok(()) => None,
        };
        fs::remove_file(a).unwrap();
        fs::remove_file(b).unwrap();
        if let Some(why) = &why {
            eprintln!("skipped, spares are not used on this file system: {why}");
        }
        why
    }

    fn replace_locked(path: &Path, contents: &[u8]) {
        prepare_file_locked(path, contents)
            .unwrap()
            .commit()
            .unwrap();
    }

    #[test]
    fn locked_writes_exchange_the_target_with_its_spare() {
        let tmp = tempfile::tempdir().unwrap();
        if spares_unsupported(tmp.path()).is_some() {
            return;
        }
        let path = tmp.path().join("state");
        let spare = tmp.path().join(".state.spare");
        // No target yet: an ordinary replacement, no spare.
        replace_locked(&path, b"first version, the longest");
        assert!(!spare.exists());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();

        replace_locked(&path, b"second");
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(fs::read(&spare).unwrap(), b"first version, the longest");
        assert_eq!(mode(&path), 0o640, "the spare took the target's mode");
        let inodes = [inode(&path), inode(&spare)];

        // Later writes reuse the same two files: nothing is created or freed,
        // and a shorter content is cut to length.
        for (i, text) in [&b"third, longer than the second"[..], b"4th", b"fifth"]
            .into_iter()
            .enumerate()
        {
            replace_locked(&path, text);
            assert_eq!(fs::read(&path).unwrap(), text);
            assert_eq!(inode(&path), inodes[(i + 1) % 2]);
            assert_eq!(inode(&spare), inodes[i % 2]);
            assert_eq!(mode(&path), 0o640);
        }
        assert_eq!(leftovers(tmp.path()), Vec::<String>::new());

        // Prepared but not committed: the target is untouched and the spare
        // gone (after a failed write, it would hold disk space).
        drop(prepare_file_locked(&path, b"dropped").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"fifth");
        assert!(!spare.exists());
    }

    #[test]
    fn a_reader_of_the_old_content_keeps_reading_it() {
        let tmp = tempfile::tempdir().unwrap();
        if spares_unsupported(tmp.path()).is_some() {
            return;
        }
        let path = tmp.path().join("vm.cmdb");
        fs::write(&path, b"old").unwrap();
        replace_locked(&path, b"new");
        let mut reader = File::open(&path).unwrap();
        replace_locked(&path, b"newer");
        // The reader's file is the spare now; it is open, so the next write
        // must not reuse it.
        replace_locked(&path, b"newest, and longer");
        let mut text = Vec::new();
        io::Read::read_to_end(&mut reader, &mut text).unwrap();
        assert_eq!(text, b"new");
        assert_eq!(fs::read(&path).unwrap(), b"newest, and longer");
        assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
        // Once it is closed, the spare is reused again.
        drop(reader);
        let spare = tmp.path().join(".vm.cmdb.spare");
        let before = inode(&spare);
        replace_locked(&path, b"last");
        assert_eq!(inode(&path), before);
    }

    #[test]
    fn a_reader_never_reads_a_spare_being_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        if spares_unsupported(tmp.path()).is_some() {
            return;
        }
        let path = tmp.path().join("vm.cmdb");
        let spare = tmp.path().join(".vm.cmdb.spare");
        fs::write(&path, b"old").unwrap();
        replace_locked(&path, b"first version");
        // The race: the reader looked up the name, a writer exchanged the
        // file away and the next one reused it as its spare, all before the
        // reader's open completed. Played here after the open: the reader
        // then holds the spare while a writer is half-way through it.
        let mut raced = false;
        let (text, _) = read_version_with(&path, || {
            if !raced {
                raced = true;
                replace_locked(&path, b"second version");
                let mut half = OpenOptions::new().write(true).open(&spare).unwrap();
                half.write_all(b"THIRD").unwrap();
            }
        })
        .unwrap();
        assert!(raced);
        assert_eq!(text, b"second version");
        // Without the check, the half-written spare would have been read.
        assert_eq!(fs::read(&spare).unwrap(), b"THIRD version");

        assert_eq!(read_version(&path).unwrap(), b"second version");
        let err = read_version_with(&path, || replace_locked(&path, b"again")).unwrap_err();
        assert!(err.to_string().contains("replaced 100 times"), "{err}");
        let missing = read_version(&tmp.path().join("nope")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_rewritten_spare_never_keeps_its_modification_time() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vm.cmdb");
        fs::write(&path, b"x").unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        // Written within the clock tick of the previous version: moved on.
        let before = file.metadata().unwrap();
        new_modification_time(&file, &before).unwrap();
        let after = file.metadata().unwrap();
        assert_eq!(
            after.modified().unwrap(),
            before.modified().unwrap() + Duration::from_nanos(1)
        );
        // Already another time: left as it is.
        new_modification_time(&file, &before).unwrap();
        assert_eq!(
            file.metadata().unwrap().modified().unwrap(),
            after.modified().unwrap()
        );
    }

    #[test]
    fn cache_files_are_replaced_whole_and_never_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(".vm.cmdb.status");
        replace_cache_file(&path, b"first").unwrap();
        replace_cache_file(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(mode(&path), 0o600);
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        replace_cache_file(&path, b"third").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(fs::read(&path).unwrap(), b"third");
        // Where it cannot be renamed, the temporary file goes too.
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        fs::write(path.join("x"), b"").unwrap();
        assert!(replace_cache_file(&path, b"fourth").is_err());
        assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
    }

    #[test]
    fn a_spare_that_is_a_link_is_never_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        let victim = tmp.path().join("victim");
        let spare = tmp.path().join(".state.spare");
        fs::write(&path, b"old").unwrap();
        fs::write(&victim, b"keep").unwrap();

        std::os::unix::fs::symlink(&victim, &spare).unwrap();
        replace_locked(&path, b"new");
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(fs::symlink_metadata(&spare)
            .unwrap()
            .file_type()
            .is_symlink());

        fs::remove_file(&spare).unwrap();
        fs::hard_link(&victim, &spare).unwrap();
        replace_locked(&path, b"newer");
        assert_eq!(fs::read(&path).unwrap(), b"newer");
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
    }

    #[test]
    fn replace_follows_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real.cmdb");
        let link = tmp.path().join("vm.cmdb");
        fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink("real.cmdb", &link).unwrap();
        replace_file(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
    }

    #[test]
    fn replace_into_missing_directory_fails_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("nope").join("state");
        let err = replace_file(&path, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn copy_keeps_mode_and_times() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("vm.cmdb");
        let to = tmp.path().join("vm.cmdb.orig");
        fs::write(&from, b"generate({'ip': '10.0.0.1-9'})\n").unwrap();
        fs::set_permissions(&from, fs::Permissions::from_mode(0o604)).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        File::options()
            .write(true)
            .open(&from)
            .unwrap()
            .set_modified(old)
            .unwrap();
        fs::write(&to, b"previous backup").unwrap();
        copy_file_atomic(&from, &to).unwrap();
        assert_eq!(fs::read(&to).unwrap(), fs::read(&from).unwrap());
        assert_eq!(mode(&to), 0o604);
        assert_eq!(fs::metadata(&to).unwrap().modified().unwrap(), old);
        assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
    }

    #[test]
    fn concurrent_writers_never_tear() {
        const SIZE: usize = 256 * 1024;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vm.cmdb");
        replace_file(&path, &vec![b'a'; SIZE]).unwrap();
        std::thread::scope(|s| {
            for w in 0..4u8 {
                let path = &path;
                s.spawn(move || {
                    for i in 0..25u8 {
                        let fill = b'b' + (w * 25 + i) % 24;
                        replace_file(path, &vec![fill; SIZE]).unwrap();
                    }
                });
            }
            for _ in 0..2 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..200 {
                        let content = fs::read(path).unwrap();
                        assert_eq!(content.len(), SIZE);
                        let first = content[0];
                        assert!(content.iter().all(|&b| b == first), "torn file");
                    }
                });
            }
        });
        assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
    }

    /// Runs one `#[ignore]`d test of this module in a child process,
    /// through `sh -c <prefix>` (to set limits), with `env`.
    fn child_test(name: &str, shell_prefix: &str, env: (&str, &Path)) -> Command {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{shell_prefix} exec \"$0\" \"$@\""))
            .arg(exe)
            .args([
                name,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(env.0, env.1);
        cmd
    }

    #[test]
    fn failed_write_keeps_old_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        fs::write(&path, b"old content").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        // A file size limit makes the write fail even for root, for whom a
        // read-only directory is no obstacle.
        let out = child_test(
            "store::tests::failed_write_child",
            "trap '' XFSZ; ulimit -f 8;",
            ("EDEPLOY_STORE_TEST_FILE", &path),
        )
        .output()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fs::read(&path).unwrap(), b"old content");
        assert_eq!(mode(&path), 0o640);
        assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
    }

    #[test]
    #[ignore = "child process of failed_write_keeps_old_file"]
    fn failed_write_child() {
        let path = PathBuf::from(std::env::var_os("EDEPLOY_STORE_TEST_FILE").unwrap());
        let err = replace_file(&path, &vec![b'x'; 1 << 20]).unwrap_err();
        assert!(err.to_string().contains("cannot write"), "{err}");
    }

    #[test]
    fn lock_excludes_across_processes_and_dies_with_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("edeploy.lock");
        let mut holder = child_test(
            "store::tests::lock_holder_child",
            "",
            ("EDEPLOY_STORE_TEST_LOCK", &path),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
        let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.unwrap().ends_with("edeploy-test-locked")),
            "the child did not take the lock"
        );

        let probe = File::open(&path).unwrap();
        assert!(matches!(
            probe.try_lock_shared(),
            Err(fs::TryLockError::WouldBlock)
        ));

        let (tx, rx) = mpsc::channel();
        let waiter_path = path.clone();
        let waiter = std::thread::spawn(move || {
            let lock = Lock::exclusive(&waiter_path);
            tx.send(lock.is_ok()).unwrap();
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(300)),
            Err(mpsc::RecvTimeoutError::Timeout)
        );

        holder.kill().unwrap(); // SIGKILL: no destructor runs in the child
        holder.wait().unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        waiter.join().unwrap();
    }

    #[test]
    #[ignore = "child process of lock_excludes_across_processes_and_dies_with_holder"]
    fn lock_holder_child() {
        let path = PathBuf::from(std::env::var_os("EDEPLOY_STORE_TEST_LOCK").unwrap());
        let _lock = Lock::exclusive(&path).unwrap();
        println!("edeploy-test-locked");
        io::stdout().flush().unwrap();
        // Parked until the parent kills us; bounded in case the parent died.
        std::thread::sleep(Duration::from_secs(60));
    }

    #[test]
    fn lock_in_missing_directory_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run").join("httpd");
        let err = Lock::exclusive(&dir.join("edeploy.lock")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string()
                .contains(&format!("directory {} does not exist", dir.display())),
            "{err}"
        );
    }
}

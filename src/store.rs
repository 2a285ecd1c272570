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
//! # Commits of several files
//!
//! A request replaces its CMDB and the state together: one rename each,
//! which no kill may separate. [`commit_all`] therefore writes a redo
//! record first, `CONFIGDIR/.edeploy-commit`, naming each new file (the
//! spare or temporary file holding the new content) and its target, with
//! the device, inode number and length of the new content and of the
//! target it replaces, and a hash of the new content. The record and the
//! new files are flushed at once (their device flushes overlap, one wait
//! instead of two), so a power cut may keep the record and lose part of a
//! new file: a record whose new files are not all there whole (by inode,
//! length and hash) while none is in place yet is ignored, as its commit
//! had renamed nothing and answered no one. Once the record is written the
//! commit is otherwise decided:
//! every holder of the exclusive lock first calls [`recover`], which puts
//! in place each new file of the record that is not there yet. Recovery
//! is idempotent because it acts on identities, not on names: a target
//! that already is the new inode is done; one that still is the old inode,
//! while the new inode is still at its source name with its length, is
//! exchanged (or renamed) now; anything else was changed by someone else
//! since (an operator's edit) and is left alone. Each step is one atomic
//! rename, so a recovery killed midway is simply resumed by the next one.
//!
//! The record is one kept file, overwritten in place (no inode created or
//! freed per request), with a checksum: a record torn by a crash while it
//! was written belonged to a commit that had not renamed anything yet, and
//! is ignored. So the previous commit's renames must be durable before its
//! record is overwritten: its committer marks it so in the same file once
//! it has flushed the directory, and [`commit_all`] flushes the
//! directories itself only when that mark is missing. The mark also tells
//! a request whose answer another committed (src/batch.rs) that the
//! answer is durable; [`recover`] flushes a finished commit left unmarked.
//!
//! Readers that do not take the exclusive lock (the status page, `explain`,
//! a dry run) may see, after a crash and until the next request, the CMDB
//! of an interrupted commit new and the state old; `edeploy check` reports
//! such a pending record. Requests never do: they recover first.
//!
//! # Temporary files of killed writers
//!
//! A writer killed before its rename leaves its temporary file
//! `.<name>.<pid>.<n>.tmp`. [`sweep_now_and_then`] removes those of dead
//! processes, at most once per [`SWEEP_INTERVAL`], so that no request has
//! to read a directory of many thousands of `.hw` files each time.
//!
//! # Readers
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

use std::ffi::{CString, OsStr, OsString};
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

    /// Waits for and takes the lock for reading: other readers may hold it
    /// too, no writer does.
    pub fn shared(path: &Path) -> io::Result<Lock> {
        let file = open_lock_file(path)?;
        file.lock_shared()
            .map_err(|e| context(e, "cannot lock", path))?;
        Ok(Lock { _file: file })
    }

    /// Takes the lock for writing if no one holds it; `None` if someone does.
    pub fn try_exclusive(path: &Path) -> io::Result<Option<Lock>> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Lock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(context(e, "cannot lock", path)),
        }
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

/// Test-only fault injection: a debug build run with `EDEPLOY_CRASH_AT=N`
/// kills itself with SIGKILL at the N-th crash point it passes, after
/// naming it on stderr (unless `EDEPLOY_CRASH_ONCE` says another process
/// did). Crash points precede every write, flush and rename of the store,
/// so the crash tests can stop a request at each of them in turn. Release
/// builds have none: a deployed server cannot be made to
/// stop there, whatever its environment holds.
#[cfg(debug_assertions)]
pub fn crash_point(what: &str, path: &Path) {
    static CRASH_AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    static PASSED: AtomicU64 = AtomicU64::new(0);
    let at = CRASH_AT.get_or_init(|| std::env::var("EDEPLOY_CRASH_AT").ok()?.parse().ok());
    if let Some(at) = *at {
        if PASSED.fetch_add(1, Ordering::Relaxed) + 1 == at && first_to_crash() {
            eprintln!("edeploy: crash point {at}: {what} {}", path.display());
            // SAFETY: raising a signal reads no memory of ours.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
    }
}

/// With `EDEPLOY_CRASH_ONCE=FILE` too, only the first process to reach its
/// crash point dies: the one that creates FILE. The crash tests of a batch
/// kill its committer that way, whichever of the waiting requests it is.
#[cfg(debug_assertions)]
fn first_to_crash() -> bool {
    std::env::var_os("EDEPLOY_CRASH_ONCE").is_none_or(|file| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(file)
            .is_ok()
    })
}

/// Release builds have no crash points (see the debug version).
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn crash_point(_what: &str, _path: &Path) {}

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
    read_version_with(path, u64::MAX, || {}).map(|(contents, _)| contents)
}

/// [`read_version`] of a file of at most `limit` bytes: a larger one is an
/// error of kind [`io::ErrorKind::FileTooLarge`] naming the limit and what
/// sets it (`setting`), found before it is read.
pub fn read_version_within(path: &Path, limit: u64, setting: &str) -> io::Result<Vec<u8>> {
    read_version_with(path, limit, || {})
        .map(|(contents, _)| contents)
        .map_err(|e| match e.kind() {
            io::ErrorKind::FileTooLarge => {
                io::Error::new(e.kind(), format!("larger than {setting} ({limit} bytes)"))
            }
            _ => e,
        })
}

/// Smallest buffer [`prefault`] maps at once.
const PREFAULT_MIN: usize = 256 << 10;

/// Maps the pages of `buf`'s free capacity at once, if it is large (a
/// CMDB of tens of thousands of entries): the read that fills it would
/// otherwise fault them in one by one, and each fault is an exception (a
/// few microseconds on a virtual machine): 1,700 of them for 6.8 MB.
/// Best effort: a kernel without `MADV_POPULATE_WRITE` (before Linux
/// 5.14) faults them in as before.
fn prefault(buf: &mut Vec<u8>) {
    let spare = buf.spare_capacity_mut();
    if spare.len() < PREFAULT_MIN {
        return;
    }
    const PAGE: usize = 4096;
    let start = spare.as_mut_ptr() as usize;
    let first = start.next_multiple_of(PAGE);
    let len = (start + spare.len() - first) / PAGE * PAGE;
    // SAFETY: the range lies within memory this Vec owns; populating page
    // tables changes no byte of it.
    unsafe {
        libc::madvise(first as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE);
    }
}

/// [`read_version`], with the metadata of the version read: its inode,
/// size and times identify it. `None` when the file changed while it was
/// read (written in place by someone else than our writers), so that the
/// content may not be that version's.
pub fn read_version_and_metadata(path: &Path) -> io::Result<(Vec<u8>, Option<fs::Metadata>)> {
    read_version_with(path, u64::MAX, || {})
}

/// Most tries of [`read_version`]: each failure needs a writer's commit
/// between the reader's `open` and its check, a few microseconds apart.
const READ_TRIES: usize = 100;

/// [`read_version`], with `after_open` run between the `open` and the check
/// (the tests replace the file there).
fn read_version_with(
    path: &Path,
    limit: u64,
    mut after_open: impl FnMut(),
) -> io::Result<(Vec<u8>, Option<fs::Metadata>)> {
    let too_large = || io::Error::from(io::ErrorKind::FileTooLarge);
    for _ in 0..READ_TRIES {
        let file = File::open(path)?;
        after_open();
        let opened = file.metadata()?;
        let named = fs::metadata(path)?;
        if (opened.dev(), opened.ino()) == (named.dev(), named.ino()) {
            if opened.size() > limit {
                return Err(too_large());
            }
            // Sized once: a CMDB is megabytes, grown by doubling it would be
            // copied and faulted in again at each step.
            let mut contents = Vec::with_capacity(usize::try_from(opened.size()).unwrap_or(0) + 1);
            prefault(&mut contents);
            // Written in place by someone else meanwhile, it may have grown.
            let mut file = io::Read::take(file, limit.saturating_add(1));
            io::Read::read_to_end(&mut file, &mut contents)?;
            if contents.len() as u64 > limit {
                return Err(too_large());
            }
            let file = file.into_inner();
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
        volatile: false,
        committed: false,
        hash: None,
    };
    prepared
        .file
        .write_all(contents)
        .map_err(|e| context(e, "cannot write", &prepared.tmp_path))?;
    prepared.rename()
}

/// Rewrites, in place, a cache file that only holders of the exclusive
/// lock read or write (a CMDB's layout): no inode is created or freed, as
/// with [`prepare_file_locked`]. Not durable, nor atomic: a crash may
/// leave it cut short or mixed, which its reader must take as a miss (a
/// layout names its text by length and hash). A file that is not a
/// regular file of one name is replaced by [`replace_cache_file`], never
/// written through.
pub fn rewrite_locked_cache_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let Some((mut file, meta)) = open_to_rewrite(path) else {
        return replace_cache_file(path, contents);
    };
    crash_point("write", path);
    write_over(&mut file, contents, meta.len()).map_err(|e| context(e, "cannot write", path))
}

/// Writes `contents` over the start of `file`, `old_len` bytes long, then
/// cuts it to length: truncating first would free every block (a discard
/// each, with `-o discard`) only to allocate them again.
fn write_over(file: &mut File, contents: &[u8], old_len: u64) -> io::Result<()> {
    file.write_all(contents)?;
    if old_len > contents.len() as u64 {
        file.set_len(contents.len() as u64)?;
    }
    Ok(())
}

/// Suffix of the files kept for reuse: `.<name>.recycled` (see [`Recycler`]).
const RECYCLED: &str = ".recycled";

/// Most files a directory keeps for reuse; a [`Recycler`] that finds more
/// removes the rest.
const RECYCLED_MAX: usize = 128;

/// The files of a directory kept for reuse instead of removed.
///
/// On ext4 without a journal, creating a file scans past every inode freed
/// in the last minutes (see [`prepare_file_locked`]): in a directory where
/// each request made and removed small files of its own (the queue of
/// src/batch.rs, two per waiting request), inode allocation grew into a
/// main cost of a boot storm. A file no one reads any more is renamed to
/// `.<name>.recycled` instead ([`Recycler::recycle`]); a new file of the
/// directory is one of those, renamed to a temporary name and rewritten,
/// and is created only when none is left.
///
/// Only for files that no process can be reading when they are recycled
/// (the caller's lock makes sure), and that nothing needs after a crash:
/// their content is never flushed.
pub struct Recycler {
    dir: PathBuf,
    /// Recycled names not tried yet, the next one last.
    names: Vec<OsString>,
}

impl Recycler {
    /// The files kept for reuse in `dir`, as listed now.
    pub fn list(dir: &Path) -> Recycler {
        let names = match fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .filter(|name| Recycler::is_recycled(name))
                .collect(),
            Err(_) => Vec::new(),
        };
        Recycler::from_names(dir, names)
    }

    /// The files kept for reuse in `dir` whose names (see
    /// [`Recycler::is_recycled`]) the caller found reading it.
    pub fn from_names(dir: &Path, mut names: Vec<OsString>) -> Recycler {
        for extra in names.drain(RECYCLED_MAX.min(names.len())..) {
            // Best effort: one left is tried again by the next reader.
            let _ = fs::remove_file(dir.join(extra));
        }
        // Concurrent takers each start elsewhere in the list, so that they
        // seldom try the same file.
        if !names.is_empty() {
            let at = std::process::id() as usize % names.len();
            names.rotate_left(at);
        }
        Recycler {
            dir: dir.to_path_buf(),
            names,
        }
    }

    /// Whether `name` is that of a file kept for reuse.
    pub fn is_recycled(name: &OsStr) -> bool {
        let name = name.as_encoded_bytes();
        name.starts_with(b".") && name.ends_with(RECYCLED.as_bytes())
    }

    /// Keeps `path`, which no process reads any more, for reuse by the
    /// next new file of its directory; removes it if it cannot be renamed.
    /// Best effort: a file left behind is the caller's leftover as before.
    pub fn recycle(path: &Path) {
        let kept = hidden_sibling(path, RECYCLED).filter(|kept| fs::rename(path, kept).is_ok());
        if kept.is_none() {
            let _ = fs::remove_file(path);
        }
    }

    /// Replaces `path` (in this directory) with `contents` as
    /// [`replace_cache_file`] does, in a recycled file if one is left.
    pub fn replace_cache_file(&mut self, path: &Path, contents: &[u8]) -> io::Result<()> {
        let mut prepared = self.prepare(path, contents, 0o600)?;
        prepared.rename()
    }

    /// A new file for [`commit_all`] that only live processes read and that
    /// nothing needs after a reboot (the answer to a waiting request): in a
    /// recycled file if one is left, renamed with the commit, but never
    /// flushed, nor its directory.
    pub fn prepare_volatile(&mut self, path: &Path, contents: &[u8]) -> io::Result<Prepared> {
        self.prepare(path, contents, 0o666)
    }

    /// `contents` in a temporary file for `path`, a new one created with
    /// the permission bits `mode` less the umask if none is left to reuse.
    fn prepare(&mut self, path: &Path, contents: &[u8], mode: u32) -> io::Result<Prepared> {
        let (tmp_path, file, old_len) = self.temp_for(path, mode)?;
        let mut prepared = Prepared {
            tmp_path,
            target: path.to_path_buf(),
            file,
            exchange: false,
            volatile: true,
            committed: false,
            hash: None,
        };
        crash_point("write", &prepared.tmp_path);
        write_over(&mut prepared.file, contents, old_len)
            .map_err(|e| context(e, "cannot write", &prepared.tmp_path))?;
        Ok(prepared)
    }

    /// A temporary file for the new content of `target`, open for writing
    /// at its start, and its length: a recycled file renamed to a new
    /// temporary name, or else a new file (of length 0).
    fn temp_for(&mut self, target: &Path, mode: u32) -> io::Result<(PathBuf, File, u64)> {
        while let Some(name) = self.names.pop() {
            let Some(tmp_path) = hidden_sibling(target, &temp_suffix()) else {
                break;
            };
            // Fails when another taker renamed it first.
            if fs::rename(self.dir.join(name), &tmp_path).is_err() {
                continue;
            }
            let reusable = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp_path)
                .and_then(|file| Ok((file.metadata()?, file)));
            match reusable {
                // Another name for the same file would see it rewritten.
                Ok((meta, file)) if meta.is_file() && meta.nlink() == 1 => {
                    return Ok((tmp_path, file, meta.len()));
                }
                _ => {
                    let _ = fs::remove_file(&tmp_path);
                }
            }
        }
        let (tmp_path, file) = create_temp(target, mode)?;
        Ok((tmp_path, file, 0))
    }
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
/// whose names come from the network (`.hw` files, logs), which must never
/// lead a write outside their directory.
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
    prepare_replacing(&target, old.as_ref(), &[contents])
}

/// [`prepare_file`] once the target is resolved and its metadata (if it
/// exists) read.
fn prepare_replacing(
    target: &Path,
    old: Option<&fs::Metadata>,
    parts: &[&[u8]],
) -> io::Result<Prepared> {
    let mut prepared = prepare_with(target, |tmp| {
        if let Some(meta) = old {
            same_owner_and_mode(tmp, meta)?;
        }
        parts.iter().try_for_each(|part| tmp.write_all(part))
    })?;
    prepared.hash = Some(content_hash(parts));
    Ok(prepared)
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
    prepare_file_locked_from_parts(path, &[contents])
}

/// [`prepare_file_locked`] for the content made of `parts` one after the
/// other: a large CMDB is written from the pieces of its new text, never
/// copied whole.
pub fn prepare_file_locked_from_parts(path: &Path, parts: &[&[u8]]) -> io::Result<Prepared> {
    let target = resolve(path)?;
    let Some(old) = metadata_if_exists(&target)? else {
        return prepare_replacing(&target, None, parts);
    };
    let Some((tmp_path, file, spare)) = open_spare(&target, &old) else {
        return prepare_replacing(&target, Some(&old), parts);
    };
    let mut prepared = Prepared {
        tmp_path,
        target,
        file,
        exchange: true,
        volatile: false,
        committed: false,
        hash: None,
    };
    // Written over the old content, then cut to length: truncating first
    // would free every block (a discard each, with `-o discard`) only to
    // allocate them again.
    let len: u64 = parts.iter().map(|part| part.len() as u64).sum();
    crash_point("write", &prepared.tmp_path);
    parts
        .iter()
        .try_for_each(|part| prepared.file.write_all(part))
        .and_then(|()| {
            if spare.len() > len {
                crash_point("cut", &prepared.tmp_path);
                prepared.file.set_len(len)
            } else {
                Ok(())
            }
        })
        .and_then(|()| new_modification_time(&prepared.file, &spare))
        .map_err(|e| context(e, "cannot write", &prepared.tmp_path))?;
    start_writeback(&prepared.file);
    prepared.hash = Some(content_hash(parts));
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

/// `path` opened for writing in place (created, readable by its owner
/// only, if missing), with its metadata; `None` unless it is a regular file
/// of that one name: a symbolic link is never followed, and another name
/// for the same file would see it rewritten. Opening does not wait for a
/// lease (see [`opened_only_here`]).
fn open_to_rewrite(path: &Path) -> Option<(File, fs::Metadata)> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    (meta.is_file() && meta.nlink() == 1).then_some((file, meta))
}

/// The spare of `target` (whose metadata is `old`), opened for writing if
/// no one else has it open, and given the target's owner and mode, with
/// its metadata before that; `None` if it cannot be used that way.
fn open_spare(target: &Path, old: &fs::Metadata) -> Option<(PathBuf, File, fs::Metadata)> {
    let path = hidden_sibling(target, ".spare")?;
    let (file, meta) = open_to_rewrite(&path)?;
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
pub(crate) fn hidden_sibling(target: &Path, suffix: &str) -> Option<PathBuf> {
    Some(parent_dir(target).join(hidden_name(target.file_name()?, suffix)))
}

/// `.<name><suffix>`, the name cut to `TEMP_NAME_KEEP` bytes.
fn hidden_name(name: &OsStr, suffix: &str) -> OsString {
    let name = name.as_encoded_bytes();
    let mut hidden = OsString::from(".");
    hidden.push(String::from_utf8_lossy(name.get(..TEMP_NAME_KEEP).unwrap_or(name)).as_ref());
    hidden.push(suffix);
    hidden
}

/// The suffix of a new temporary name: `.<pid>.<n>.tmp`, which
/// [`remove_stale_temps`] recognises.
fn temp_suffix() -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".{}.{n}.tmp", std::process::id())
}

/// Creates a new temporary file next to `target` (`O_EXCL`: never an
/// existing file, nor a symbolic link planted by someone else), with the
/// permission bits `mode` less the umask.
fn create_temp(target: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    let dir = parent_dir(target);
    let mut last_error = None;
    for _ in 0..100 {
        let tmp_path = hidden_sibling(target, &temp_suffix()).ok_or_else(|| {
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

/// How often at most [`sweep_now_and_then`] reads the directories.
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the temporary files of dead writers from each of `dirs` (see
/// [`remove_stale_temps`]), if the last sweep is older than
/// [`SWEEP_INTERVAL`]; returns how many were removed, `None` when it was
/// not time yet.
///
/// The time of the last sweep is the modification time of `stamp` (the
/// lock file, which every request has and nothing else dates), set before
/// sweeping so that concurrent requests do not all sweep. A stamp we may not
/// date (another user's) means no sweep: reading large directories at every
/// request would cost more than the leftovers.
pub fn sweep_now_and_then(
    stamp: &Path,
    dirs: &[&Path],
    record: Option<&Path>,
) -> io::Result<Option<usize>> {
    let now = std::time::SystemTime::now();
    let due = |meta: &fs::Metadata| match meta.modified().map(|t| now.duration_since(t)) {
        Ok(Ok(age)) => age >= SWEEP_INTERVAL,
        // Dated in the future: the clock was set back.
        Ok(Err(_)) => true,
        Err(_) => false,
    };
    let file = match File::open(stamp) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(context(e, "cannot open", stamp)),
    };
    let meta = file
        .metadata()
        .map_err(|e| context(e, "cannot read", stamp))?;
    if !due(&meta) || file.set_modified(now).is_err() {
        return Ok(None);
    }
    let mut removed = 0;
    for (i, dir) in dirs.iter().enumerate() {
        if !dirs[..i].contains(dir) {
            removed += remove_stale_temps(dir, record)?;
        }
    }
    Ok(Some(removed))
}

/// Removes the temporary files left by writers killed before their rename:
/// `.<name>.<pid>.<n>.tmp` whose pid no longer exists. A file of a live
/// process is never touched, so no lock is needed: no one writes a dead
/// process's file, and a new process given the same pid cannot make the
/// same name while the old file exists. Returns how many were removed.
///
/// The new files named by the commit `record` (when given) are kept: a
/// dead writer's temporary may be the new content of a commit that the
/// next request completes. They are recognised by device and inode number,
/// whatever path spelling the record has. The record is read after the
/// files were found dead, so it is theirs or a later one (which no longer
/// needs them); when it cannot be read whole (it is being written) nothing
/// is removed.
pub fn remove_stale_temps(dir: &Path, record: Option<&Path>) -> io::Result<usize> {
    let mut stale = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| context(e, "cannot read directory", dir))? {
        let entry = entry.map_err(|e| context(e, "cannot read directory", dir))?;
        let name = entry.file_name();
        let Some(pid) = temp_owner(name.as_encoded_bytes()) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            stale.push(entry.path());
        }
    }
    if stale.is_empty() {
        return Ok(0);
    }
    let keep: Vec<(u64, u64)> = match record {
        Some(record) => match read_record(record)? {
            Record::Missing => Vec::new(),
            Record::Damaged => return Ok(0),
            Record::Entries(_, entries) => entries.iter().map(|e| (e.dev, e.new.0)).collect(),
        },
        None => Vec::new(),
    };
    let needed =
        |path: &Path| fs::symlink_metadata(path).is_ok_and(|m| keep.contains(&(m.dev(), m.ino())));
    let mut removed = 0;
    for path in stale.iter().filter(|p| !needed(p)) {
        match fs::remove_file(path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(context(e, "cannot remove", path)),
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
    /// Never flushed: a file that only live processes read (see
    /// [`Recycler::prepare_volatile`]).
    volatile: bool,
    /// The file is to stay: renamed, or named by a commit record.
    committed: bool,
    /// [`content_hash`] of the new content, when it was written from
    /// memory (else [`commit_all`] reads it back).
    hash: Option<u64>,
}

/// The hash of a new content that a commit record keeps (xxh3, 64 bits):
/// [`recover`] tells by it a new file that a power cut left incomplete.
fn content_hash(parts: &[&[u8]]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    parts.iter().for_each(|part| hasher.update(part));
    hasher.digest()
}

impl Prepared {
    /// Flushes, renames the temporary file over the target, then flushes
    /// the directory (an error from that flush means the new content is in
    /// place but maybe not yet durable).
    ///
    /// A spare is renamed, not exchanged: an exchange outside a commit
    /// record would put back the old inode that an earlier record names as
    /// "old", and its recovery could then undo this write.
    pub fn commit(mut self) -> io::Result<()> {
        self.exchange = false;
        self.flush()?;
        self.rename()?;
        Renamed {
            dirs: vec![parent_dir(&self.target).to_path_buf()],
            mark: None,
        }
        .sync()
    }

    /// Makes the new content durable, without renaming it yet.
    fn flush(&self) -> io::Result<()> {
        crash_point("flush", &self.tmp_path);
        self.flush_now()
    }

    /// [`Prepared::flush`] past its crash point.
    fn flush_now(&self) -> io::Result<()> {
        self.file
            .sync_all()
            .map_err(|e| context(e, "cannot write", &self.tmp_path))
    }

    fn rename(&mut self) -> io::Result<()> {
        crash_point(
            if self.exchange { "exchange" } else { "rename" },
            &self.target,
        );
        put_in_place(self.exchange, &self.tmp_path, &self.target)?;
        self.committed = true;
        Ok(())
    }

    /// What the commit record says of this file: its new content as it is
    /// now, and the target it replaces.
    fn record_entry(&self) -> io::Result<Entry> {
        let new = self
            .file
            .metadata()
            .map_err(|e| context(e, "cannot read", &self.tmp_path))?;
        let old = match fs::symlink_metadata(&self.target) {
            Ok(meta) => Some((meta.ino(), meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(context(e, "cannot read", &self.target)),
        };
        let hash = match self.hash {
            _ if self.volatile => None,
            Some(hash) => Some(hash),
            None => Some(source_hash(&self.tmp_path)?),
        };
        Ok(Entry {
            exchange: self.exchange,
            volatile: self.volatile,
            dev: new.dev(),
            new: (new.ino(), new.len()),
            old,
            hash,
            source: self.tmp_path.clone(),
            target: self.target.clone(),
        })
    }
}

/// Puts the file at `source` in place of `target`: by exchanging them when
/// `exchange` and the file system can, else by renaming.
fn put_in_place(exchange_them: bool, source: &Path, target: &Path) -> io::Result<()> {
    if !(exchange_them && exchange(source, target).is_ok()) {
        fs::rename(source, target).map_err(|e| context(e, "cannot rename over", target))?;
    }
    Ok(())
}

/// Name of the commit record in CONFIGDIR (see the module documentation).
pub const COMMIT_RECORD: &str = ".edeploy-commit";

/// Replaces each target of `files` by its new content, all or none, as one
/// commit recorded in `record` (see the module documentation): flushes the
/// directories if the previous commit did not mark itself durable, writes
/// the record, flushes it with every new file and the new files' names
/// (all at once; none of the volatile files), then renames each file over
/// its target, in order. Call [`recover`] under the same lock before.
///
/// An error before the renames changes no target: a failed flush withdraws
/// the record. From the first rename on, the commit is decided: an error
/// (or a crash) afterwards leaves it to the next [`recover`]. The renames
/// are durable once [`Renamed::sync`] has flushed their directories, which
/// needs no lock: a later writer's renames it may flush too are of files
/// already flushed themselves.
pub fn commit_all(record: &Path, mut files: Vec<Prepared>) -> io::Result<Renamed> {
    for (i, file) in files.iter().enumerate() {
        if files[..i].iter().any(|f| f.target == file.target) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is written twice in one commit", file.target.display()),
            ));
        }
    }
    let entries = files
        .iter()
        .map(Prepared::record_entry)
        .collect::<io::Result<Vec<Entry>>>()?;
    let log = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(record)
        .map_err(|e| context(e, "cannot open", record))?;
    let log_len = log
        .metadata()
        .map_err(|e| context(e, "cannot read", record))?
        .len();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for file in files.iter().filter(|f| !f.volatile) {
        add_dir(&mut dirs, &file.target);
    }
    // A new record's own name and the previous commit's renames must be
    // durable before the record is (over)written: a record torn by a power
    // cut then loses nothing. The previous committer marks its commit once
    // it has flushed it (after releasing the lock); only when it has not
    // yet are its directories flushed here, under the lock.
    let mut before = Vec::new();
    if log_len == 0 {
        add_dir(&mut before, record);
    }
    let previous = read_at_most(&log, RECORD_BLOCK as u64, RECORD_MAX)
        .map_err(|e| context(e, "cannot read", record))?;
    if let Some((id, previous)) = decode_record(&previous) {
        let mark =
            read_at_most(&log, 0, MARK_LEN).map_err(|e| context(e, "cannot read", record))?;
        if decode_mark(&mark) != Some(id.as_str()) {
            for e in previous.iter().filter(|e| !e.volatile) {
                add_dir(&mut before, &e.target);
            }
        }
    }
    sync_dirs(&before, "flush the directory before the commit record")?;
    // The new files' own names, flushed with them.
    let mut names = Vec::new();
    for file in files.iter().filter(|f| !f.exchange && !f.volatile) {
        add_dir(&mut names, &file.target);
    }
    // From the first byte of the record on, the next holder of the lock
    // may complete the commit: the new files must stay, whatever happens.
    for file in &mut files {
        file.committed = true;
    }
    let id = format!(
        "{}.{}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let text = encode_record(&id, &entries);
    let end = (RECORD_BLOCK + text.len()) as u64;
    crash_point("write the commit record", record);
    std::os::unix::fs::FileExt::write_all_at(&log, &text, RECORD_BLOCK as u64)
        .and_then(|()| {
            if log_len > end {
                log.set_len(end)
            } else {
                Ok(())
            }
        })
        .map_err(|e| context(e, "cannot write", record))?;
    // The record, the new files and their names are flushed at once, so
    // that their device flushes overlap: until a rename is done, recovery
    // completes the commit only if every new file is there whole (its
    // length and hash), so a power cut that kept the record but not all of
    // them undoes the commit, which had answered no one yet.
    // The crash points of the flushes first, in a fixed order.
    for file in files.iter().filter(|f| !f.volatile) {
        crash_point("flush", &file.tmp_path);
    }
    crash_point("flush the commit record", record);
    for dir in &names {
        crash_point("flush the directory of new files", dir);
    }
    let flushed = std::thread::scope(|scope| {
        let mut flushes: Vec<_> = files
            .iter()
            .filter(|f| !f.volatile)
            .map(|f| scope.spawn(|| f.flush_now()))
            .collect();
        flushes.push(scope.spawn(|| {
            log.sync_data()
                .map_err(|e| context(e, "cannot write", record))
        }));
        for dir in &names {
            flushes.push(scope.spawn(|| flush_dir(dir)));
        }
        flushes.into_iter().try_for_each(|flush| {
            flush
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a flush failed")))
        })
    });
    if let Err(e) = flushed {
        // Nothing renamed yet: the commit is withdrawn (a missing record)
        // and its files removed, as when a flush failed before the record.
        if log.set_len(RECORD_BLOCK as u64).is_ok() {
            for file in &mut files {
                file.committed = false;
            }
        }
        return Err(e);
    }
    for file in &mut files {
        file.rename()?;
    }
    Ok(Renamed {
        dirs,
        mark: Some((record.to_path_buf(), id)),
    })
}

/// Adds the directory of `path` to `dirs` if it is not there yet.
fn add_dir(dirs: &mut Vec<PathBuf>, path: &Path) {
    let dir = parent_dir(path);
    if !dirs.iter().any(|d| d == dir) {
        dirs.push(dir.to_path_buf());
    }
}

/// Up to `max` bytes of `file` from `offset` on. The buffer grows with
/// what is read: a record is a block or two, and a buffer of `max` bytes
/// zeroed each time cost every request dozens of page faults.
fn read_at_most(file: &File, offset: u64, max: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let max = usize::try_from(max).unwrap_or(usize::MAX).min(1 << 20);
    let mut buf = Vec::new();
    let mut chunk = [0; 2 * RECORD_BLOCK];
    while buf.len() < max {
        let want = chunk.len().min(max - buf.len());
        match file.read_at(&mut chunk[..want], offset + buf.len() as u64) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

/// Length of the mark at the start of the record file (see [`Renamed`]).
const MARK_LEN: u64 = 64;

/// `synced ID`, padded: the commit ID is durable.
fn encode_mark(id: &str) -> Vec<u8> {
    let mut mark = format!("synced {id}\n").into_bytes();
    mark.resize(mark.len().max(MARK_LEN as usize), b'\n');
    mark
}

fn decode_mark(mark: &[u8]) -> Option<&str> {
    let line = mark.strip_prefix(b"synced ")?;
    let end = line.iter().position(|&b| b == b'\n')?;
    std::str::from_utf8(&line[..end]).ok()
}

/// Writes the mark saying that the commit `id` of `record` is durable. Best
/// effort: without it, the next commit flushes the directories itself.
fn mark_durable(record: &Path, id: &str) {
    crash_point("mark the commit durable", record);
    let written = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(record)
        .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, &encode_mark(id), 0));
    // Nothing depends on it but the next commit's speed.
    drop(written);
}

/// Flushes each directory of `dirs` (`what` names the crash point).
fn sync_dirs(dirs: &[PathBuf], what: &str) -> io::Result<()> {
    for dir in dirs {
        crash_point(what, dir);
        flush_dir(dir)?;
    }
    Ok(())
}

fn flush_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| context(e, "cannot flush directory", dir))
}

/// Files renamed into place by [`commit_all`], durable once synced.
///
/// Once they are, the commit is marked so in its record file: the mark
/// (`synced ID`) is written at its start, outside the record (the lock
/// may be held or not), and spares the next commit a directory flush.
#[must_use = "the renames are not durable until `sync` is called"]
#[derive(Debug)]
pub struct Renamed {
    dirs: Vec<PathBuf>,
    /// The record file and the commit's id, to mark it durable.
    mark: Option<(PathBuf, String)>,
}

impl Renamed {
    /// Flushes each directory involved once: the files of one transaction
    /// (CMDB and state) cost one directory flush, not one each.
    pub fn sync(self) -> io::Result<()> {
        sync_dirs(&self.dirs, "flush the directory")?;
        if let Some((record, id)) = &self.mark {
            mark_durable(record, id);
        }
        Ok(())
    }
}

/// Swaps the files named `a` and `b`, atomically.
pub(crate) fn exchange(a: &Path, b: &Path) -> io::Result<()> {
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

/// One file of a commit record: where its new content is, which target it
/// replaces, and how to recognise both.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// The source is the target's spare: exchanged, not renamed.
    exchange: bool,
    /// A file of [`Recycler::prepare_volatile`]: renamed, never flushed,
    /// and gone after a reboot (then nothing needs it).
    volatile: bool,
    /// Device of the source and target (one directory).
    dev: u64,
    /// Inode number and length of the new content.
    new: (u64, u64),
    /// Inode number and length of the target it replaces, if it existed.
    old: Option<(u64, u64)>,
    /// [`content_hash`] of the new content; none for a volatile file, and
    /// in a record of version 1 (written once its files were flushed).
    hash: Option<u64>,
    source: PathBuf,
    target: PathBuf,
}

/// First line of a commit record.
const RECORD_HEADER: &[u8] = b"edeploy commit record 2\n";
/// First line of a record of the version before, without hashes: read
/// (recovery after an upgrade), never written.
const RECORD_HEADER_1: &[u8] = b"edeploy commit record 1\n";
/// The record starts at this offset of its file (after the mark, see
/// [`Renamed`]) and is padded to a multiple of it: the record file keeps its
/// length, and flushing it writes data only.
const RECORD_BLOCK: usize = 4096;
/// Longest record read: far more than any commit needs.
const RECORD_MAX: u64 = 1 << 20;

/// The record of a commit of `entries`:
///
/// ```text
/// edeploy commit record 2
/// id PID.NANOSECONDS.N
/// exchange DEV NEW_INO NEW_LEN OLD_INO OLD_LEN HASH SOURCE TARGET
/// rename DEV NEW_INO NEW_LEN - - HASH SOURCE TARGET      (no target before)
/// volatile DEV NEW_INO NEW_LEN - - - SOURCE TARGET       (renamed, not flushed)
/// end N CHECKSUM
/// ```
///
/// HASH is the new content's [`content_hash`] in hexadecimal (a record of
/// version 1 has no HASH field). Paths are escaped (`\xNN` for bytes outside `!`..`~` and for `\`), the
/// checksum is FNV-1a 64 of everything before the `end` line, and newlines
/// pad the record to whole blocks.
fn encode_record(id: &str, entries: &[Entry]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut text = RECORD_HEADER.to_vec();
    text.extend_from_slice(format!("id {id}\n").as_bytes());
    for e in entries {
        let old = match e.old {
            Some((ino, len)) => format!("{ino} {len}"),
            None => "- -".to_owned(),
        };
        let kind = match (e.exchange, e.volatile) {
            (true, _) => "exchange",
            (false, true) => "volatile",
            (false, false) => "rename",
        };
        let hash = e
            .hash
            .map_or_else(|| "-".to_owned(), |h| format!("{h:016x}"));
        text.extend_from_slice(
            format!("{kind} {} {} {} {old} {hash} ", e.dev, e.new.0, e.new.1).as_bytes(),
        );
        escape_path(e.source.as_os_str().as_bytes(), &mut text);
        text.push(b' ');
        escape_path(e.target.as_os_str().as_bytes(), &mut text);
        text.push(b'\n');
    }
    let sum = fnv1a(&text);
    text.extend_from_slice(format!("end {} {sum:016x}\n", entries.len()).as_bytes());
    let padded = text.len().div_ceil(RECORD_BLOCK) * RECORD_BLOCK;
    text.resize(padded, b'\n');
    text
}

fn escape_path(path: &[u8], out: &mut Vec<u8>) {
    for &b in path {
        if b.is_ascii_graphic() && b != b'\\' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
}

fn unescape_path(text: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'\\' {
            let hex = tail.strip_prefix(b"x")?.get(..2)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            rest = &tail[3..];
        } else {
            out.push(b);
            rest = tail;
        }
    }
    (!out.is_empty() && !out.contains(&0)).then(|| PathBuf::from(OsString::from_vec(out)))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The id and entries of a record, `None` if it is not a whole record.
fn decode_record(text: &[u8]) -> Option<(String, Vec<Entry>)> {
    let (version, rest) = match text.strip_prefix(RECORD_HEADER) {
        Some(rest) => (2, rest),
        None => (1, text.strip_prefix(RECORD_HEADER_1)?),
    };
    let rest = rest.strip_prefix(b"id ")?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    let id = std::str::from_utf8(&rest[..end]).ok()?.to_owned();
    if id.is_empty() || id.contains(' ') {
        return None;
    }
    let mut rest = &rest[end + 1..];
    let mut entries = Vec::new();
    loop {
        let end = rest.iter().position(|&b| b == b'\n')?;
        let line = std::str::from_utf8(&rest[..end]).ok()?;
        let fields: Vec<&str> = line.split(' ').collect();
        if let ["end", count, sum] = fields.as_slice() {
            let body = &text[..text.len() - rest.len()];
            let whole =
                *sum == format!("{:016x}", fnv1a(body)) && *count == entries.len().to_string();
            return whole.then_some((id, entries));
        }
        let (kind, dev, new_ino, new_len, old_ino, old_len, hash, source, target) =
            match (version, fields.as_slice()) {
                (1, [kind, dev, new_ino, new_len, old_ino, old_len, source, target]) => (
                    kind, dev, new_ino, new_len, old_ino, old_len, &"-", source, target,
                ),
                (2, [kind, dev, new_ino, new_len, old_ino, old_len, hash, source, target]) => (
                    kind, dev, new_ino, new_len, old_ino, old_len, hash, source, target,
                ),
                _ => return None,
            };
        let number = |s: &str| s.parse::<u64>().ok();
        let old = match (*old_ino, *old_len) {
            ("-", "-") => None,
            (ino, len) => Some((number(ino)?, number(len)?)),
        };
        let (exchange, volatile) = match *kind {
            "exchange" => (true, false),
            "rename" => (false, false),
            "volatile" => (false, true),
            _ => return None,
        };
        let hash = match *hash {
            "-" => None,
            hex => Some(u64::from_str_radix(hex, 16).ok()?),
        };
        if version == 2 && hash.is_none() != volatile {
            return None;
        }
        entries.push(Entry {
            exchange,
            volatile,
            dev: number(dev)?,
            new: (number(new_ino)?, number(new_len)?),
            old,
            hash,
            source: unescape_path(source.as_bytes())?,
            target: unescape_path(target.as_bytes())?,
        });
        rest = &rest[end + 1..];
    }
}

/// A commit record as found on disk.
#[derive(Debug)]
enum Record {
    Missing,
    /// Not a whole record: torn by a crash while it was written, before its
    /// commit renamed anything.
    Damaged,
    /// Its id and entries.
    Entries(String, Vec<Entry>),
}

fn read_record(record: &Path) -> io::Result<Record> {
    let file = match File::open(record) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Record::Missing),
        Err(e) => return Err(context(e, "cannot open", record)),
    };
    let text = read_at_most(&file, RECORD_BLOCK as u64, RECORD_MAX)
        .map_err(|e| context(e, "cannot read", record))?;
    Ok(match decode_record(&text) {
        Some((id, entries)) => Record::Entries(id, entries),
        None if text.is_empty() => Record::Missing,
        None => Record::Damaged,
    })
}

/// Where an entry of a record stands.
#[derive(Debug, PartialEq)]
enum Progress {
    /// The target is the new content.
    Done,
    /// The target is still the old content and the new one is at its
    /// source: to be put in place.
    Pending,
    /// Neither: someone else changed the target or the source since.
    Changed,
}

fn progress(e: &Entry) -> io::Result<Progress> {
    let stat = |path: &Path| match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(context(err, "cannot read", path)),
    };
    let is = |meta: &Option<fs::Metadata>, (ino, len): (u64, u64)| {
        meta.as_ref()
            .is_some_and(|m| m.is_file() && (m.dev(), m.ino(), m.len()) == (e.dev, ino, len))
    };
    let target = stat(&e.target)?;
    if target
        .as_ref()
        .is_some_and(|m| (m.dev(), m.ino()) == (e.dev, e.new.0))
    {
        return Ok(Progress::Done);
    }
    let old_there = match e.old {
        Some(old) => is(&target, old),
        None => target.is_none(),
    };
    Ok(if old_there && is(&stat(&e.source)?, e.new) {
        Progress::Pending
    } else {
        Progress::Changed
    })
}

/// What [`recover`] or [`pending_commit`] found.
#[derive(Debug, Default, PartialEq)]
pub struct Recovery {
    /// Targets whose new content an interrupted commit had not yet put in
    /// place: [`recover`] did.
    pub completed: Vec<PathBuf>,
    /// Targets of that interrupted commit that someone else changed since:
    /// left as they are.
    pub changed: Vec<PathBuf>,
    /// The record was torn: its commit had renamed nothing, nothing to do.
    pub damaged: bool,
}

/// Paths as the log and `edeploy check` name them: `a, b`.
pub fn path_list(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

impl Recovery {
    /// Whether there was nothing to report.
    pub fn is_clean(&self) -> bool {
        *self == Recovery::default()
    }
}

/// Completes the commit of `record` if it was interrupted (see the module
/// documentation). Must be called under the exclusive lock, before anything
/// else is read or written: the files only agree once it has run.
///
/// A commit whose renames are all done but not yet marked durable (its
/// committer died before flushing the directories) is flushed here: the
/// next holder of the lock may hand out what it committed.
pub fn recover(record: &Path) -> io::Result<Recovery> {
    let (id, entries, found) = examine(record)?;
    if found.completed.is_empty() {
        if !id.is_empty() && !marked_durable(record, &id)? {
            let mut dirs = Vec::new();
            for e in entries.iter().filter(|e| !e.volatile) {
                add_dir(&mut dirs, &e.target);
            }
            sync_dirs(&dirs, "recover: flush the directory")?;
            mark_durable(record, &id);
        }
        return Ok(found);
    }
    // The record may have been seen only in the page cache of a writer
    // killed before it flushed it: durable before anything depends on it.
    crash_point("recover: flush the commit record", record);
    File::open(record)
        .and_then(|f| f.sync_data())
        .map_err(|e| context(e, "cannot write", record))?;
    let mut dirs = Vec::new();
    for e in entries
        .iter()
        .filter(|e| found.completed.contains(&e.target))
    {
        let what = if e.exchange {
            "recover: exchange"
        } else {
            "recover: rename"
        };
        crash_point(what, &e.target);
        put_in_place(e.exchange, &e.source, &e.target)?;
    }
    // Those done before the crash may not be durable yet either.
    for e in entries.iter().filter(|e| !e.volatile) {
        add_dir(&mut dirs, &e.target);
    }
    sync_dirs(&dirs, "recover: flush the directory")?;
    mark_durable(record, &id);
    Ok(found)
}

/// Whether every commit recorded so far is durable, as far as the record
/// says, without the exclusive lock: the last one is marked so (or there is
/// none, or its record is torn: then it renamed nothing, and the one before
/// it was flushed before the record was written). `false` when the last
/// commit may be unfinished, or finished but not yet flushed: [`recover`]
/// completes it. Only meaningful while no writer holds the lock.
pub fn commits_are_durable(record: &Path) -> io::Result<bool> {
    match read_record(record)? {
        Record::Missing | Record::Damaged => Ok(true),
        Record::Entries(id, _) => marked_durable(record, &id),
    }
}

/// Whether the commit `id` of `record` is marked durable.
fn marked_durable(record: &Path, id: &str) -> io::Result<bool> {
    let file = File::open(record).map_err(|e| context(e, "cannot open", record))?;
    let mark = read_at_most(&file, 0, MARK_LEN).map_err(|e| context(e, "cannot read", record))?;
    Ok(decode_mark(&mark) == Some(id))
}

/// Whether the new content of `e` is at its source whole, as far as its
/// record says (volatile files, and those of a record of version 1, are
/// taken as whole).
fn source_is_whole(e: &Entry) -> io::Result<bool> {
    let Some(hash) = e.hash else {
        return Ok(true);
    };
    match fs::symlink_metadata(&e.source) {
        Ok(m) if m.is_file() && (m.dev(), m.ino(), m.len()) == (e.dev, e.new.0, e.new.1) => {}
        Ok(_) => return Ok(false),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(context(err, "cannot read", &e.source)),
    }
    Ok(source_hash(&e.source)? == hash)
}

/// [`content_hash`] of the file at `path`.
fn source_hash(path: &Path) -> io::Result<u64> {
    let text = fs::read(path).map_err(|e| context(e, "cannot read", path))?;
    Ok(content_hash(&[&text]))
}

/// What [`recover`] would do now, without doing it: for `edeploy check`,
/// which takes no lock and writes nothing.
pub fn pending_commit(record: &Path) -> io::Result<Recovery> {
    Ok(examine(record)?.2)
}

/// The id and entries of `record` and where its commit stands.
fn examine(record: &Path) -> io::Result<(String, Vec<Entry>, Recovery)> {
    let (id, entries) = match read_record(record)? {
        Record::Missing => return Ok((String::new(), Vec::new(), Recovery::default())),
        Record::Damaged => {
            let damaged = Recovery {
                damaged: true,
                ..Recovery::default()
            };
            return Ok((String::new(), Vec::new(), damaged));
        }
        Record::Entries(id, entries) => (id, entries),
    };
    let progress = entries
        .iter()
        .map(progress)
        .collect::<io::Result<Vec<Progress>>>()?;
    // Before its first rename, a record may be durable while a new file is
    // not (see [`commit_all`]): then the commit never happened.
    if !progress.contains(&Progress::Done) {
        for e in &entries {
            if !source_is_whole(e)? {
                let damaged = Recovery {
                    damaged: true,
                    ..Recovery::default()
                };
                return Ok((String::new(), Vec::new(), damaged));
            }
        }
    }
    let mut found = Recovery::default();
    for (e, progress) in entries.iter().zip(progress) {
        match progress {
            Progress::Done => {}
            Progress::Pending => found.completed.push(e.target.clone()),
            // Taken by its reader already, or lost with a reboot.
            Progress::Changed if e.volatile => {}
            Progress::Changed => found.changed.push(e.target.clone()),
        }
    }
    // A whole commit is the usual record of the last request; targets
    // changed after it are the operator's business.
    if found.completed.is_empty() {
        found.changed.clear();
    }
    Ok((id, entries, found))
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
        volatile: false,
        committed: false,
        hash: None,
    };
    crash_point("write", &prepared.tmp_path);
    fill(&mut prepared.file).map_err(|e| context(e, "cannot write", &prepared.tmp_path))?;
    start_writeback(&prepared.file);
    Ok(prepared)
}

/// Opens the directory `name` of `dir`, creating it if needed, never
/// through a symbolic link: a link or anything but a directory there is
/// an error (`ELOOP` or `ENOTDIR`, see [`is_not_a_directory`]). Walking
/// down from directory to directory this way, a component of the path
/// replaced by a link meanwhile cannot lead elsewhere: the path is never
/// walked again.
pub fn open_subdir_no_follow(dir: &File, name: &str) -> io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let c_name = c_name(name)?;
    // SAFETY: a NUL-terminated name that outlives the call, and a
    // directory descriptor we own.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c_name.as_ptr(), 0o777) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: as above.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c_name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Whether an error of [`open_subdir_no_follow`] means the entry is not a
/// real directory (a symbolic link, a file).
pub fn is_not_a_directory(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
}

/// Whether the entry `name` of `dir` is a regular file (not following a
/// symbolic link); `None` when there is none.
pub fn is_file_at(dir: &File, name: &str) -> io::Result<Option<bool>> {
    use std::os::fd::AsRawFd;
    let c_name = c_name(name)?;
    // SAFETY: fstatat fills the zeroed stat we own; the name is
    // NUL-terminated and outlives the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let done = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c_name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if done != 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::NotFound => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(st.st_mode & libc::S_IFMT == libc::S_IFREG))
}

/// Like [`replace_file_no_follow`], for the entry `name` of the directory
/// open as `dir` (from [`open_subdir_no_follow`]; `dir_path` names it in
/// errors): the temporary file is created in that very directory and
/// renamed over `name` there, whatever became of the path to it.
pub fn replace_file_at(dir: &File, dir_path: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let c_target = c_name(name)?;
    let dirfd = dir.as_raw_fd();
    let mut last_error = None;
    for _ in 0..100 {
        let tmp_name = hidden_name(OsStr::new(name), &temp_suffix());
        let tmp_path = dir_path.join(&tmp_name);
        let c_tmp = CString::new(tmp_name.into_encoded_bytes())?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a NUL-terminated name that outlives the call, and a
        // directory descriptor we own.
        let fd = unsafe { libc::openat(dirfd, c_tmp.as_ptr(), flags, 0o666 as libc::c_uint) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::AlreadyExists {
                last_error = Some(e);
                continue;
            }
            return Err(context(e, "cannot create a temporary file in", dir_path));
        }
        // SAFETY: a new descriptor, owned by nothing else.
        let mut file = unsafe { File::from_raw_fd(fd) };
        let written = file
            .write_all(contents)
            .and_then(|()| file.sync_all())
            .map_err(|e| context(e, "cannot write", &tmp_path));
        let renamed = written.and_then(|()| {
            // SAFETY: as above, for both names.
            let done = unsafe { libc::renameat(dirfd, c_tmp.as_ptr(), dirfd, c_target.as_ptr()) };
            if done == 0 {
                Ok(())
            } else {
                let e = io::Error::last_os_error();
                Err(context(e, "cannot rename over", &dir_path.join(name)))
            }
        });
        if renamed.is_err() {
            // Best effort: the error that matters is being returned.
            // SAFETY: as above.
            unsafe { libc::unlinkat(dirfd, c_tmp.as_ptr(), 0) };
            return renamed;
        }
        return dir
            .sync_all()
            .map_err(|e| context(e, "cannot flush directory", dir_path));
    }
    let e = last_error.unwrap_or_else(|| io::Error::other("no free temporary name"));
    Err(context(e, "cannot create a temporary file in", dir_path))
}

/// A file name for the `*at` system calls.
fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?}: NUL in a file name"),
        )
    })
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
    fn a_large_file_is_read_whole_into_its_prefaulted_buffer() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("p.cmdb");
        // Past the size that is prefaulted, and not a whole number of pages.
        let text: Vec<u8> = (0..PREFAULT_MIN * 3 + 123)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        fs::write(&path, &text).unwrap();
        assert_eq!(read_version(&path).unwrap(), text);
        let mut buf = Vec::with_capacity(PREFAULT_MIN + 1);
        buf.push(1u8);
        prefault(&mut buf);
        assert_eq!(buf, [1]);
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
    fn writes_at_a_directory_stay_in_it() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), "keep").unwrap();
        let root = File::open(tmp.path()).unwrap();
        // A link is never opened as a directory, a file neither.
        std::os::unix::fs::symlink(&outside, tmp.path().join("link")).unwrap();
        let e = open_subdir_no_follow(&root, "link").unwrap_err();
        assert!(is_not_a_directory(&e), "{e}");
        let e = open_subdir_no_follow(&root, "outside/victim").unwrap_err();
        assert!(is_not_a_directory(&e), "{e}");
        // A new directory is created; moved, it is still where writes go.
        let dir = open_subdir_no_follow(&root, "session").unwrap();
        assert_eq!(is_file_at(&dir, "vm.hw").unwrap(), None);
        fs::rename(tmp.path().join("session"), tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, tmp.path().join("session")).unwrap();
        replace_file_at(&dir, &tmp.path().join("session"), "vm.hw", b"new").unwrap();
        assert_eq!(fs::read(tmp.path().join("moved/vm.hw")).unwrap(), b"new");
        assert_eq!(is_file_at(&dir, "vm.hw").unwrap(), Some(true));
        // A link at the target is replaced, never followed.
        std::os::unix::fs::symlink(outside.join("victim"), tmp.path().join("moved/l.hw")).unwrap();
        assert_eq!(is_file_at(&dir, "l.hw").unwrap(), Some(false));
        replace_file_at(&dir, Path::new("moved"), "l.hw", b"x").unwrap();
        assert_eq!(fs::read(tmp.path().join("moved/l.hw")).unwrap(), b"x");
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"keep");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
        assert_eq!(leftovers(&tmp.path().join("moved")), Vec::<String>::new());
        // The error names the directory as the caller knows it.
        fs::create_dir(tmp.path().join("moved/d.hw")).unwrap();
        let e = replace_file_at(&dir, Path::new("/health/s"), "d.hw", b"x").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot rename over /health/s/d.hw: "),
            "{e}"
        );
        assert_eq!(leftovers(&tmp.path().join("moved")), Vec::<String>::new());
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
        assert_eq!(remove_stale_temps(tmp.path(), None).unwrap(), 1);
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
    /// file system: then `prepare_file_locked` is `prepare_file`), if so;
    /// a test failure when `CI` is set.
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
            // On CI the file systems have both: a skip would hide a bug.
            assert!(
                std::env::var_os("CI").is_none_or(|v| v.is_empty()),
                "spares are not used on this file system: {why}; CI is set, where this test \
                 must run"
            );
            eprintln!("skipped, spares are not used on this file system: {why}");
        }
        why
    }

    /// A commit of one file under the lock, its record next to it.
    fn replace_locked(path: &Path, contents: &[u8]) {
        let record = path.with_file_name(COMMIT_RECORD);
        let prepared = prepare_file_locked(path, contents).unwrap();
        commit_all(&record, vec![prepared]).unwrap().sync().unwrap();
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
    fn commit_records_round_trip_and_torn_ones_are_refused() {
        use std::os::unix::ffi::OsStringExt;
        let odd = PathBuf::from(OsString::from_vec(b"/d/a b\n\\\xff.cmdb".to_vec()));
        let entries = vec![
            Entry {
                exchange: true,
                volatile: false,
                dev: 2049,
                new: (12, 34),
                old: Some((56, 78)),
                hash: Some(0x0123_4567_89ab_cdef),
                source: PathBuf::from("/srv/config/.state.spare"),
                target: PathBuf::from("/srv/config/state"),
            },
            Entry {
                exchange: false,
                volatile: true,
                dev: 7,
                new: (1, 0),
                old: None,
                hash: None,
                source: odd.with_extension("tmp"),
                target: odd,
            },
        ];
        let text = encode_record("41.1700000000.3", &entries);
        assert_eq!(text.len(), RECORD_BLOCK);
        let id = "41.1700000000.3".to_owned();
        assert_eq!(decode_record(&text), Some((id.clone(), entries.clone())));
        let readable = String::from_utf8_lossy(&text);
        assert!(
            readable.contains(
                "exchange 2049 12 34 56 78 0123456789abcdef /srv/config/.state.spare \
                 /srv/config/state\n"
            ),
            "{readable}"
        );
        // A record of version 1 (no hashes), left by the version before
        // an upgrade, is still read.
        let old = readable
            .replacen("record 2", "record 1", 1)
            .replacen("0123456789abcdef ", "", 1)
            .replacen("0 - - - ", "0 - - ", 1);
        let old = old.trim_end_matches('\n');
        let body = &old[..old.rfind("end ").unwrap()];
        let v1 = format!("{body}end 2 {:016x}\n", fnv1a(body.as_bytes()));
        let mut unhashed = entries.clone();
        unhashed[0].hash = None;
        assert_eq!(decode_record(v1.as_bytes()), Some((id.clone(), unhashed)));
        assert!(
            readable.contains(r"/d/a\x20b\x0a\x5c\xff.cmdb"),
            "{readable}"
        );

        // Whatever a crash leaves of it, or any damage, is never a record.
        let end = text.iter().rposition(|&b| b != b'\n').unwrap() + 1;
        for cut in 0..end {
            assert_eq!(decode_record(&text[..cut]), None, "cut at {cut}");
        }
        for i in 0..end {
            let mut damaged = text.clone();
            damaged[i] ^= 0x20;
            assert_eq!(decode_record(&damaged), None, "byte {i} changed");
        }
        // A shorter record written over a longer one: what follows its end
        // does not matter.
        let mut over = encode_record("7.8.9", &entries[..1]);
        over.extend_from_slice(&text);
        assert_eq!(
            decode_record(&over),
            Some(("7.8.9".to_owned(), entries[..1].to_vec()))
        );

        // The mark, written without the lock, is refused unless whole.
        let mark = encode_mark(&id);
        assert_eq!(decode_mark(&mark), Some(id.as_str()));
        let whole = mark.iter().position(|&b| b == b'\n').unwrap();
        for cut in 0..=whole {
            assert_eq!(decode_mark(&mark[..cut]), None, "cut at {cut}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_without_panic(tail in proptest::collection::vec(0u8..=255, 0..300)) {
            let mut text = RECORD_HEADER.to_vec();
            text.extend_from_slice(&tail);
            let _ = decode_record(&text);
            let _ = decode_record(&tail);
        }
    }

    /// A site with a state and a CMDB under spares, committed together
    /// once; returns (dir, record, state, cmdb).
    fn two_files() -> Option<(tempfile::TempDir, PathBuf, PathBuf, PathBuf)> {
        let tmp = tempfile::tempdir().unwrap();
        if spares_unsupported(tmp.path()).is_some() {
            return None;
        }
        let record = tmp.path().join(COMMIT_RECORD);
        let state = tmp.path().join("state");
        let cmdb = tmp.path().join("vm.cmdb");
        fs::write(&state, "[('vm', 3)]\n").unwrap();
        fs::write(&cmdb, "[{'ip': '10.0.0.1'}]\n").unwrap();
        commit(
            &record,
            &[
                (&cmdb, "[{'ip': '10.0.0.1', 'used': 1}]\n"),
                (&state, "[('vm', 2)]\n"),
            ],
        );
        Some((tmp, record, state, cmdb))
    }

    fn commit(record: &Path, files: &[(&Path, &str)]) {
        let prepared = files
            .iter()
            .map(|(path, text)| prepare_file_locked(path, text.as_bytes()).unwrap())
            .collect();
        commit_all(record, prepared).unwrap().sync().unwrap();
    }

    fn spare_of(path: &Path) -> PathBuf {
        hidden_sibling(path, ".spare").unwrap()
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn a_commit_interrupted_after_its_record_is_completed_once() {
        let Some((_tmp, record, state, cmdb)) = two_files() else {
            return;
        };
        assert!(recover(&record).unwrap().is_clean());
        assert!(pending_commit(&record).unwrap().is_clean());

        // The next commit, killed between its two exchanges: undoing the
        // second exchange leaves what the kill would have left.
        commit(
            &record,
            &[
                (&cmdb, "[{'ip': '10.0.0.1', 'used': 1}, 'second']\n"),
                (&state, "[('vm', 1)]\n"),
            ],
        );
        exchange(&spare_of(&state), &state).unwrap();
        assert_eq!(read(&state), "[('vm', 2)]\n");
        let pending = pending_commit(&record).unwrap();
        assert_eq!(pending.completed, std::slice::from_ref(&state));
        assert_eq!(read(&state), "[('vm', 2)]\n", "check changes nothing");

        let done = recover(&record).unwrap();
        assert_eq!(done.completed, std::slice::from_ref(&state));
        assert_eq!(read(&state), "[('vm', 1)]\n");
        assert_eq!(read(&cmdb), "[{'ip': '10.0.0.1', 'used': 1}, 'second']\n");
        // Idempotent: the spares now hold the old contents, which a second
        // recovery must not bring back.
        assert!(recover(&record).unwrap().is_clean());
        assert_eq!(read(&state), "[('vm', 1)]\n");
        assert_eq!(read(&spare_of(&state)), "[('vm', 2)]\n");

        // Killed before its first exchange: both are done.
        commit(&record, &[(&cmdb, "third\n"), (&state, "[('vm', 0)]\n")]);
        exchange(&spare_of(&state), &state).unwrap();
        exchange(&spare_of(&cmdb), &cmdb).unwrap();
        assert_eq!(
            recover(&record).unwrap().completed,
            [cmdb.clone(), state.clone()]
        );
        assert_eq!(
            (read(&cmdb), read(&state)),
            ("third\n".into(), "[('vm', 0)]\n".into())
        );
        assert!(recover(&record).unwrap().is_clean());
    }

    #[test]
    fn recovery_leaves_what_someone_else_changed_since() {
        let Some((tmp, record, state, cmdb)) = two_files() else {
            return;
        };
        commit(&record, &[(&cmdb, "new cmdb\n"), (&state, "[('vm', 1)]\n")]);
        exchange(&spare_of(&state), &state).unwrap();
        exchange(&spare_of(&cmdb), &cmdb).unwrap();
        // The operator replaced the state by another file, and edited the
        // CMDB in place: their versions stay.
        let edited = tmp.path().join("edited");
        fs::write(&edited, "[('vm', 10)]\n").unwrap();
        fs::rename(&edited, &state).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(&cmdb)
            .unwrap()
            .write_all(b"#\n")
            .unwrap();
        let found = recover(&record).unwrap();
        assert_eq!(found.completed, Vec::<PathBuf>::new());
        assert_eq!(read(&state), "[('vm', 10)]\n");
        assert!(read(&cmdb).ends_with("#\n"));
        assert!(found.is_clean(), "nothing pending: {found:?}");

        // Only one of the two changed: the other is completed, the changed
        // one reported.
        commit(
            &record,
            &[(&cmdb, "newer cmdb\n"), (&state, "[('vm', 0)]\n")],
        );
        exchange(&spare_of(&state), &state).unwrap();
        exchange(&spare_of(&cmdb), &cmdb).unwrap();
        fs::write(&edited, "[('vm', 20)]\n").unwrap();
        fs::rename(&edited, &state).unwrap();
        let found = recover(&record).unwrap();
        assert_eq!(
            (found.completed, found.changed),
            (vec![cmdb.clone()], vec![state.clone()])
        );
        assert_eq!(
            (read(&cmdb), read(&state)),
            ("newer cmdb\n".into(), "[('vm', 20)]\n".into())
        );
    }

    #[test]
    fn a_commit_whose_new_file_a_power_cut_did_not_keep_whole_never_happened() {
        let Some((_tmp, record, state, cmdb)) = two_files() else {
            return;
        };
        let old = (read(&cmdb), read(&state));
        // Killed before its first exchange, after a power cut that kept
        // the record (flushed with the new files) but not all of the new
        // CMDB: same inode and length, other bytes.
        commit(
            &record,
            &[(&cmdb, "newer cmdb\n"), (&state, "[('vm', 1)]\n")],
        );
        exchange(&spare_of(&state), &state).unwrap();
        exchange(&spare_of(&cmdb), &cmdb).unwrap();
        let spare = fs::OpenOptions::new()
            .write(true)
            .open(spare_of(&cmdb))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&spare, b"\0\0", 3).unwrap();
        // Closed: a spare open elsewhere is not reused.
        drop(spare);
        assert!(pending_commit(&record).unwrap().damaged);
        let found = recover(&record).unwrap();
        assert!(found.damaged && found.completed.is_empty(), "{found:?}");
        assert_eq!((read(&cmdb), read(&state)), old);

        // Its new state's name lost: the same.
        commit(
            &record,
            &[(&cmdb, "newest cmdb\n"), (&state, "[('vm', 0)]\n")],
        );
        exchange(&spare_of(&state), &state).unwrap();
        exchange(&spare_of(&cmdb), &cmdb).unwrap();
        fs::remove_file(spare_of(&state)).unwrap();
        let found = recover(&record).unwrap();
        assert!(found.damaged && found.completed.is_empty(), "{found:?}");
        assert_eq!((read(&cmdb), read(&state)), old);
    }

    /// The inode number of `path` itself.
    fn ino(path: &Path) -> u64 {
        fs::symlink_metadata(path).unwrap().ino()
    }

    #[test]
    fn recycled_files_are_reused_whole_and_never_taken_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // None kept yet: a new file.
        let first = dir.join("1.intent");
        Recycler::list(dir)
            .replace_cache_file(&first, b"a long first content\n")
            .unwrap();
        let inode = ino(&first);
        Recycler::recycle(&first);
        assert!(!first.exists());
        let kept = dir.join(".1.intent.recycled");
        assert!(Recycler::is_recycled(kept.file_name().unwrap()));
        assert!(!Recycler::is_recycled(OsStr::new("1.intent")));
        assert!(!Recycler::is_recycled(OsStr::new(".1.intent.1.2.tmp")));

        // The next file is that one, cut to its new content.
        let second = dir.join("2.answer");
        let mut recycler = Recycler::list(dir);
        let prepared = recycler.prepare_volatile(&second, b"short\n").unwrap();
        assert!(!kept.exists());
        let renamed = commit_all(&dir.join(COMMIT_RECORD), vec![prepared]).unwrap();
        renamed.sync().unwrap();
        assert_eq!(fs::read(&second).unwrap(), b"short\n");
        assert_eq!(ino(&second), inode);
        // Taken once: the same recycler, or another, creates a new one.
        let third = dir.join("3.intent");
        recycler.replace_cache_file(&third, b"third\n").unwrap();
        assert_ne!(ino(&third), inode);
        assert_eq!(fs::read(&third).unwrap(), b"third\n");

        // Beyond the most a directory keeps, the rest is removed.
        let names: Vec<OsString> = (0..RECYCLED_MAX + 3)
            .map(|i| {
                let name = OsString::from(format!(".{i}.answer.recycled"));
                fs::write(dir.join(&name), b"x").unwrap();
                name
            })
            .collect();
        let recycler = Recycler::from_names(dir, names);
        assert_eq!(recycler.names.len(), RECYCLED_MAX);
        let left = fs::read_dir(dir)
            .unwrap()
            .filter(|e| Recycler::is_recycled(&e.as_ref().unwrap().file_name()))
            .count();
        assert_eq!(left, RECYCLED_MAX);
    }

    #[test]
    fn a_locked_cache_file_is_rewritten_in_its_own_inode_and_never_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let cache = dir.join(".p.cmdb.layout");
        rewrite_locked_cache_file(&cache, b"a long first layout\n").unwrap();
        let inode = ino(&cache);
        assert_eq!(fs::metadata(&cache).unwrap().mode() & 0o777, 0o600);
        // Shorter: cut to length, in the same file.
        rewrite_locked_cache_file(&cache, b"second\n").unwrap();
        assert_eq!(fs::read(&cache).unwrap(), b"second\n");
        assert_eq!(ino(&cache), inode);
        rewrite_locked_cache_file(&cache, b"a third, longer than the second\n").unwrap();
        assert_eq!(
            fs::read(&cache).unwrap(),
            b"a third, longer than the second\n"
        );
        assert_eq!(ino(&cache), inode);

        // A symbolic link is replaced, its target left alone; so is a file
        // with another name, which would see the rewrite.
        let elsewhere = dir.join("elsewhere");
        fs::write(&elsewhere, b"not a cache\n").unwrap();
        let linked = dir.join(".q.cmdb.layout");
        std::os::unix::fs::symlink(&elsewhere, &linked).unwrap();
        rewrite_locked_cache_file(&linked, b"layout\n").unwrap();
        assert!(fs::symlink_metadata(&linked).unwrap().is_file());
        assert_eq!(fs::read(&linked).unwrap(), b"layout\n");
        assert_eq!(fs::read(&elsewhere).unwrap(), b"not a cache\n");
        let hard = dir.join(".r.cmdb.layout");
        fs::hard_link(&elsewhere, &hard).unwrap();
        rewrite_locked_cache_file(&hard, b"layout\n").unwrap();
        assert_eq!(fs::read(&hard).unwrap(), b"layout\n");
        assert_eq!(fs::read(&elsewhere).unwrap(), b"not a cache\n");
        assert_ne!(ino(&hard), ino(&elsewhere));
    }

    #[test]
    fn a_later_plain_commit_is_not_undone_by_an_older_record() {
        let Some((_tmp, record, state, _cmdb)) = two_files() else {
            return;
        };
        // Same length as the recorded state: only identities tell them apart.
        let prepared = prepare_file_locked(&state, b"[('vm', 7)]\n").unwrap();
        prepared.commit().unwrap();
        assert!(recover(&record).unwrap().is_clean());
        assert_eq!(read(&state), "[('vm', 7)]\n");
    }

    #[test]
    fn a_torn_record_is_ignored() {
        let Some((_tmp, record, state, cmdb)) = two_files() else {
            return;
        };
        let mut text = fs::read(&record).unwrap();
        text.truncate(RECORD_BLOCK + 40);
        fs::write(&record, &text).unwrap();
        let found = recover(&record).unwrap();
        assert!(found.damaged && found.completed.is_empty(), "{found:?}");
        assert_eq!(read(&state), "[('vm', 2)]\n");
        assert_eq!(read(&cmdb), "[{'ip': '10.0.0.1', 'used': 1}]\n");
        // The next commit rewrites it whole.
        commit(&record, &[(&state, "[('vm', 1)]\n")]);
        assert!(recover(&record).unwrap().is_clean());
        assert!(decode_record(&fs::read(&record).unwrap()[RECORD_BLOCK..]).is_some());
    }

    /// A record file holding a record of `entries` (and no mark).
    fn write_record(record: &Path, entries: &[Entry]) {
        let mut text = vec![b'\n'; RECORD_BLOCK];
        text.extend_from_slice(&encode_record("1.2.3", entries));
        fs::write(record, text).unwrap();
    }

    #[test]
    fn a_synced_commit_is_marked_durable_in_its_record_file() {
        let Some((_tmp, record, state, _cmdb)) = two_files() else {
            return;
        };
        let text = fs::read(&record).unwrap();
        let (id, _) = decode_record(&text[RECORD_BLOCK..]).unwrap();
        assert_eq!(decode_mark(&text[..MARK_LEN as usize]), Some(id.as_str()));
        // Renamed but not yet synced: not marked.
        let prepared = prepare_file_locked(&state, b"[('vm', 1)]\n").unwrap();
        let renamed = commit_all(&record, vec![prepared]).unwrap();
        let text = fs::read(&record).unwrap();
        let (new_id, _) = decode_record(&text[RECORD_BLOCK..]).unwrap();
        assert_ne!(new_id, id);
        assert_eq!(decode_mark(&text[..MARK_LEN as usize]), Some(id.as_str()));
        renamed.sync().unwrap();
        let text = fs::read(&record).unwrap();
        assert_eq!(
            decode_mark(&text[..MARK_LEN as usize]),
            Some(new_id.as_str())
        );
    }

    #[test]
    fn volatile_files_are_completed_with_their_commit_and_never_reported_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let record = tmp.path().join(COMMIT_RECORD);
        let state = tmp.path().join("state");
        let queue = tmp.path().join("queue");
        fs::create_dir(&queue).unwrap();
        let answer = queue.join("1.2.3.answer");
        fs::write(&state, "old state\n").unwrap();
        let files = vec![
            prepare_file(&state, b"new state\n").unwrap(),
            Recycler::list(&queue)
                .prepare_volatile(&answer, b"the answer\n")
                .unwrap(),
        ];
        let entries: Vec<Entry> = files.iter().map(|f| f.record_entry().unwrap()).collect();
        assert!(!entries[0].volatile && entries[1].volatile);
        // Killed right after its record, the mark of no commit in it.
        write_record(&record, &entries);
        let mut files = files;
        for f in &mut files {
            f.committed = true;
        }
        drop(files);
        assert!(!commits_are_durable(&record).unwrap());
        let done = recover(&record).unwrap();
        assert_eq!(done.completed, [state.clone(), answer.clone()]);
        assert_eq!(fs::read(&answer).unwrap(), b"the answer\n");
        assert!(commits_are_durable(&record).unwrap());
        // The answer taken by its reader: nothing to complete or report.
        fs::remove_file(&answer).unwrap();
        assert!(pending_commit(&record).unwrap().is_clean());
        assert!(recover(&record).unwrap().is_clean());
    }

    #[test]
    fn a_finished_commit_left_unmarked_is_flushed_and_marked_by_recovery() {
        let Some((_tmp, record, state, _cmdb)) = two_files() else {
            return;
        };
        let prepared = prepare_file_locked(&state, b"[('vm', 1)]\n").unwrap();
        // Its committer died before flushing the directory.
        drop(commit_all(&record, vec![prepared]).unwrap());
        assert!(!commits_are_durable(&record).unwrap());
        assert!(recover(&record).unwrap().is_clean());
        assert!(commits_are_durable(&record).unwrap());
    }

    #[test]
    fn a_commit_with_temporaries_is_completed_and_they_are_kept_until_then() {
        let tmp = tempfile::tempdir().unwrap();
        let record = tmp.path().join(COMMIT_RECORD);
        let (state, cmdb) = (tmp.path().join("state"), tmp.path().join("vm.cmdb"));
        fs::write(&state, "old state\n").unwrap();
        // A target that does not exist yet is created by a rename.
        let files = vec![
            prepare_file(&cmdb, b"new cmdb\n").unwrap(),
            prepare_file(&state, b"new state\n").unwrap(),
        ];
        let sources: Vec<PathBuf> = files.iter().map(|f| f.tmp_path.clone()).collect();
        let entries: Vec<Entry> = files.iter().map(|f| f.record_entry().unwrap()).collect();
        assert_eq!(entries[0].old, None);
        // Killed right after its record: its files are as a dead writer's,
        // which no sweep may remove while the record needs them.
        write_record(&record, &entries);
        let dead = Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        let mut dead = dead;
        dead.wait().unwrap();
        // Renamed as the dead writer's (dropping `files` then removes
        // nothing).
        let mut orphans = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            let orphan = tmp.path().join(format!(".x.{dead_pid}.{i}.tmp"));
            fs::rename(source, &orphan).unwrap();
            orphans.push(orphan);
        }
        drop(files);
        let mut entries = entries;
        for (e, orphan) in entries.iter_mut().zip(&orphans) {
            e.source = orphan.clone();
        }
        write_record(&record, &entries);
        let unrelated = tmp.path().join(format!(".y.{dead_pid}.0.tmp"));
        fs::write(&unrelated, "x").unwrap();
        assert_eq!(remove_stale_temps(tmp.path(), Some(&record)).unwrap(), 1);
        assert!(orphans.iter().all(|o| o.exists()) && !unrelated.exists());
        // A record being written (or torn): nothing is removed.
        fs::write(&unrelated, "x").unwrap();
        let mut torn = vec![b'\n'; RECORD_BLOCK];
        torn.extend_from_slice(b"edeploy commit record 1\nid 1.2.3\nexch");
        fs::write(&record, torn).unwrap();
        assert_eq!(remove_stale_temps(tmp.path(), Some(&record)).unwrap(), 0);
        write_record(&record, &entries);

        let found = recover(&record).unwrap();
        assert_eq!(found.completed, [cmdb.clone(), state.clone()]);
        assert_eq!(
            (read(&cmdb), read(&state)),
            ("new cmdb\n".into(), "new state\n".into())
        );
        assert!(recover(&record).unwrap().is_clean());
        assert_eq!(leftovers(tmp.path()), [format!(".y.{dead_pid}.0.tmp")]);
    }

    #[test]
    fn sweeps_happen_at_most_once_per_interval() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        let stamp = tmp.path().join("edeploy.lock");
        let dead = Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        let mut dead = dead;
        dead.wait().unwrap();
        let litter =
            |dir: &Path| fs::write(dir.join(format!(".m.hw.{dead_pid}.0.tmp")), "x").unwrap();
        litter(&a);
        litter(&b);
        let dirs = [&*a, &b, &a];
        // No stamp yet (no request ever took the lock): nothing read.
        assert_eq!(sweep_now_and_then(&stamp, &dirs, None).unwrap(), None);
        // Dated now: not before the interval has passed.
        fs::write(&stamp, "").unwrap();
        assert_eq!(sweep_now_and_then(&stamp, &dirs, None).unwrap(), None);
        assert_eq!(leftovers(&a).len(), 1);
        let old = std::time::SystemTime::now() - SWEEP_INTERVAL - Duration::from_secs(1);
        File::open(&stamp).unwrap().set_modified(old).unwrap();
        assert_eq!(sweep_now_and_then(&stamp, &dirs, None).unwrap(), Some(2));
        assert!(leftovers(&a).is_empty() && leftovers(&b).is_empty());
        litter(&a);
        assert_eq!(sweep_now_and_then(&stamp, &dirs, None).unwrap(), None);
        assert_eq!(leftovers(&a).len(), 1);
        // Dated in the future (the clock was set back): swept, dated anew.
        let future = std::time::SystemTime::now() + Duration::from_secs(86400);
        File::open(&stamp).unwrap().set_modified(future).unwrap();
        assert_eq!(sweep_now_and_then(&stamp, &dirs, None).unwrap(), Some(1));
        assert_eq!(sweep_now_and_then(&stamp, &dirs, None).unwrap(), None);
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
        let (text, _) = read_version_with(&path, u64::MAX, || {
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
        let err =
            read_version_with(&path, u64::MAX, || replace_locked(&path, b"again")).unwrap_err();
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

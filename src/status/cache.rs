//! The status page's cache of CMDB summaries: what a view computed from a
//! CMDB (its counts and last used entries), kept next to it in
//! `.<name>.cmdb.status` and used by later views of the same version.
//!
//! A view of a 65,536-entry CMDB otherwise reads and scans its 9 MB every
//! time, and a flood of views took the CPU provisioning requests needed.
//! With the cache, a view of an unchanged CMDB costs one `stat` and a small
//! read, whatever the CMDB's size; each new version (one per installation)
//! is summarised once.
//!
//! A version is recognised by its file's identity: device, inode, size and
//! modification and change times (nanoseconds). Our writers always give a
//! new version another inode or another modification time (see
//! `store::prepare_file_locked`); an editor that rewrites the file in place
//! changes its times. The summary is stored with the identity of the
//! version it was computed from, taken when that version was read (not when
//! the name was looked up), and only if the file did not change during the
//! read.
//!
//! Safe against concurrent views: each writes a whole new file and renames
//! it over the cache (`store::replace_cache_file`), so a cache file is
//! always one view's whole summary with its own identity; the last rename
//! wins. Safe against corrupt or hostile cache files: one that is not
//! exactly what this module writes (JSON of this format, the same file
//! name, consistent counts, at most [`MAX_SIZE`] bytes) is a miss, and is
//! replaced. The cache is not durable (a crash may leave it empty: a miss).
//! When the cache cannot be written (CONFIGDIR read-only to the user
//! running the view), views compute the summary every time.
//!
//! When a new version appears, the views that find it missing would all
//! compute it at once: one does, holding an exclusive `flock` on CONFIGDIR
//! (the directory itself, so no file is added), and the others wait for it
//! and read its result. No writer takes that lock: it never delays a
//! provisioning request.

use std::fs::{self, File, TryLockError};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{summarize, Cmdb, USED_SHOWN};
use crate::store;

/// The format of the cache files this version writes; others are misses.
const FORMAT: u32 = 1;

/// Largest cache file read: a summary of [`USED_SHOWN`] entries is tens of
/// kilobytes, unless the CMDB holds huge values (then it is not cached).
pub const MAX_SIZE: u64 = 1 << 20;

/// The identity of one version of a file (see the module's doc), as the
/// caches of the status pages record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Key {
    dev: u64,
    ino: u64,
    size: u64,
    pub(crate) mtime: i64,
    pub(crate) mtime_nsec: i64,
    pub(crate) ctime: i64,
    ctime_nsec: i64,
}

impl Key {
    pub(crate) fn of(meta: &fs::Metadata) -> Key {
        Key {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }
}

/// A cache file's content.
#[derive(Serialize, Deserialize)]
struct Cached {
    format: u32,
    key: Key,
    cmdb: Cmdb,
}

/// `.<name>.status` next to the CMDB `path`; `None` when the name would
/// be too long for a file name.
pub fn cache_file(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    (name.len() <= 240).then(|| parent(path).join(format!(".{name}.status")))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The summary of the CMDB `path`: the cached one when it is of the
/// current version, else computed (by this view or one it waits for).
pub fn cmdb_usage(path: &Path) -> Cmdb {
    let (Some(cache), Ok(meta)) = (cache_file(path), fs::metadata(path)) else {
        return compute(path, None);
    };
    let key = Key::of(&meta);
    let file = path.display().to_string();
    if let Some(hit) = load(&cache, &file, &key) {
        return hit;
    }
    // Another view may be computing this version: wait for it (without
    // using the CPU), then take its result.
    let dir = File::open(parent(path)).ok();
    let computing = dir.as_ref().map(File::try_lock);
    if let (Some(dir), Some(Err(TryLockError::WouldBlock))) = (&dir, &computing) {
        if dir.lock_shared().is_ok() {
            let _ = dir.unlock();
        }
        if let Some(hit) = load(&cache, &file, &key) {
            return hit;
        }
    }
    // Released when `dir` is closed, after the cache is written.
    compute(path, Some(&cache))
}

/// Reads and summarises the CMDB, and caches the summary in `cache`.
fn compute(path: &Path, cache: Option<&Path>) -> Cmdb {
    let (src, meta) = match store::read_version_and_metadata(path) {
        Ok(read) => read,
        Err(e) => return summarize(path, Err(e)),
    };
    let cmdb = summarize(path, Ok(&src));
    if let (Some(cache), Some(meta)) = (cache, meta) {
        save(cache, Key::of(&meta), &cmdb);
    }
    cmdb
}

/// The cached summary of `file` if `cache` holds that of version `key`.
fn load(cache: &Path, file: &str, key: &Key) -> Option<Cmdb> {
    let mut text = Vec::new();
    File::open(cache)
        .ok()?
        .take(MAX_SIZE + 1)
        .read_to_end(&mut text)
        .ok()?;
    if text.len() as u64 > MAX_SIZE {
        return None;
    }
    let cached: Cached = serde_json::from_slice(&text).ok()?;
    let c = &cached.cmdb;
    let sound = cached.format == FORMAT
        && cached.key == *key
        && c.file == file
        && c.used <= c.total
        && c.free == c.total - c.used
        && c.used_entries.len() <= USED_SHOWN.min(c.used);
    sound.then_some(cached.cmdb)
}

/// Writes the cache; a failure only means the next view computes again.
fn save(cache: &Path, key: Key, cmdb: &Cmdb) {
    let cached = Cached {
        format: FORMAT,
        key,
        cmdb: cmdb.clone(),
    };
    let Ok(text) = serde_json::to_vec(&cached) else {
        return;
    };
    if text.len() as u64 <= MAX_SIZE {
        let _ = store::replace_cache_file(cache, &text);
    }
}

//! What the server knows of a CMDB text it printed itself, kept next to the
//! file, so that the next batch finds its few entries without parsing tens
//! of thousands.
//!
//! A batch must read the whole CMDB to choose entries and print it whole
//! again (the file is one pprinted list). Parsing it is most of a lock
//! hold with a large CMDB. But a text the server printed has a known
//! shape, and a layout names such a text by its length and 128-bit xxh3
//! hash: a text that differs (an operator's edit, a crash, a lost or stale
//! or half-written layout) is not recognised and is parsed whole, as
//! always. The layout is a cache, rewritten in place once its CMDB is
//! committed and never flushed: nothing depends on it surviving.
//!
//! A layout is only made for a list of at least [`MIN_ENTRIES`] entries,
//! each a dict of str keys and str or int values, as pprint prints it.
//! Such a text has these properties, which the batch's pool relies on:
//!
//! - An entry starts after `[` or at `\n {`, and nothing else starts so: a
//!   repr holds no raw newline, and every other line of an entry is
//!   indented by two spaces or more.
//! - An entry including the item `key: value` holds its text `'key':
//!   value` (the repr of a str is the only text of an equal value, and no
//!   value of another type equals a str or an int here).
//! - The list cannot fit on one line, whatever entries are replaced.
//! - Entries are only ever marked used: none before the first unused one
//!   is unused.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{self, Xxh3};

use crate::store;

/// Fewest entries for a layout: a list of 20 dicts has a repr of at least
/// 80 characters, so pprint never puts it on one line.
pub const MIN_ENTRIES: usize = 20;

/// Marks a layout file, and its format.
const MAGIC: &[u8] = b"edeploy-cmdb-layout-1\n";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    len: u64,
    hash: u128,
    /// Entries in the list.
    pub(super) count: usize,
    /// The first entry without `used`: its index and where its text (its
    /// `{`) starts. `None`: every entry is used.
    pub(super) first_unused: Option<(usize, usize)>,
}

impl Layout {
    /// The layout of the text made of `parts`, which has `count` entries
    /// and its first unused one where said.
    pub(super) fn of(
        parts: &[&[u8]],
        count: usize,
        first_unused: Option<(usize, usize)>,
    ) -> Layout {
        let mut hash = Xxh3::new();
        parts.iter().for_each(|part| hash.update(part));
        Layout {
            len: parts.iter().map(|part| part.len() as u64).sum(),
            hash: hash.digest128(),
            count,
            first_unused,
        }
    }

    /// Where the layout of the CMDB `file` is kept: `.<name>.layout`
    /// beside it.
    pub fn path(file: &Path) -> Option<PathBuf> {
        store::hidden_sibling(file, ".layout")
    }

    /// The layout kept for the CMDB `file`, if any can be read: it is a
    /// cache, any problem with it only means a whole parse.
    pub fn read(file: &Path) -> Option<Layout> {
        let bytes = fs::read(Layout::path(file)?).ok()?;
        Layout::decode(&bytes)
    }

    /// Keeps this layout for the CMDB `file`, just committed with its
    /// text. Rewritten in place (`store::rewrite_locked_cache_file`: only
    /// holders of the lock read it), never replaced: on ext4 without a
    /// journal each inode freed made every file created in the next
    /// minutes (a new machine's `.hw`) slower. A layout not written, or cut
    /// short by a crash, only costs the next batch a parse.
    pub fn write(&self, file: &Path) {
        if let Some(path) = Layout::path(file) {
            let _ = store::rewrite_locked_cache_file(&path, &self.encode());
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        // Serialising a struct of integers into a Vec cannot fail.
        bytes.extend(postcard::to_stdvec(self).unwrap_or_default());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Layout> {
        postcard::from_bytes(bytes.strip_prefix(MAGIC)?).ok()
    }

    /// Whether `text` is the one this layout describes.
    pub(super) fn describes(&self, text: &[u8]) -> bool {
        self.len == text.len() as u64
            && self.count >= MIN_ENTRIES
            && xxh3::xxh3_128(text) == self.hash
    }
}

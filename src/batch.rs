//! Group commit: the request that holds the lock commits the requests
//! waiting for it too, in one rewrite of the state and of each CMDB and one
//! set of flushes, across CGI processes.
//!
//! Every request rewrites whole files (the CMDB is one pprinted list, as
//! the legacy server wrote it), so a lock hold grows with the CMDB, and a
//! boot storm queues behind it. Writing them once for all the requests
//! that arrived meanwhile makes the cost of the files per batch, not per
//! request, as the group commit of a database does.
//!
//! # Protocol
//!
//! The queue is a directory next to the lock file, `LOCKFILE.queue`.
//!
//! 1. A request whose match is made (its `Intent`) takes the lock at once if
//!    it is free: it is alone, it commits alone, and queues nothing (no
//!    waiting for company, no file more than before).
//! 2. Otherwise it writes its intent to `STAMP.PID.N.intent` (renamed into
//!    place whole; STAMP is the monotonic clock, so names sort in order of
//!    arrival) and waits for the lock.
//! 3. Once the lock is released, the waiters take it shared, all at once,
//!    and look for their answer, `STAMP.PID.N.answer`: one that finds it,
//!    and the last commit marked durable, was committed by another
//!    request; it recycles both files (see below), releases the lock and
//!    sends the answer.
//! 4. A waiter without an answer takes the lock for writing, completes an
//!    interrupted commit (`store::recover`, which every holder of the lock
//!    for writing runs first), and looks for its answer again.
//! 5. Otherwise it is the combiner. It withdraws its own intent, reads the
//!    queued intents that have no answer, in name order (its own among
//!    them, at most [`MAX_BATCH`]), and decides each exactly as the serial
//!    server would, against the state as the earlier ones left it
//!    (`provision::decide`). It writes the state and each CMDB once, and
//!    an answer file for each waiter, and commits them all through one
//!    commit record (`store::commit_all`): the answers are entries of the
//!    record, renamed with the state and CMDBs. It flushes the directory,
//!    marks the commit durable, and only then releases the lock.
//!
//! The queue's files are not removed but kept for reuse
//! (`store::Recycler`): on ext4 without a journal, creating a file scans
//! past every inode freed in the last minutes, and the two files each
//! waiting request made and removed grew into a main cost of a boot storm.
//! A file is recycled only under the lock, where no combiner reads it.
//!
//! # Why it is safe
//!
//! - *An intent is applied once.* It is applied exactly when its answer
//!   exists: both are renamed by the same commit, which the next holder of
//!   the lock completes if the combiner died (`store::recover`), before it
//!   looks at the queue. A combiner skips intents that have an answer, and
//!   withdraws its own before it decides anything.
//! - *No answer is lost.* A waiter whose combiner died before the commit
//!   record finds no answer when it takes the lock, and commits itself
//!   (with the others still waiting). The intent of a process that died
//!   while waiting is dropped by the next combiner, unapplied, as a
//!   request killed while waiting for the lock did nothing; one that died
//!   after its intent was committed leaves it applied, as a request killed
//!   after its commit does.
//! - *Every answer sent is durable.* Waiters read their answer under the
//!   lock (shared: no combiner runs meanwhile): the combiner releases it
//!   only after the directory flush and the mark saying so, and a commit
//!   left unmarked by a dead combiner sends its waiters to
//!   `store::recover`, which flushes it. The answers themselves are never
//!   flushed (`store::Recycler::prepare_volatile`): after a power cut no
//!   one waits for them.
//! - *The serial order.* The combiner decides in arrival order, each
//!   intent against what the earlier ones left, with the serial server's
//!   own code; a guess that no longer holds is answered "match again", as
//!   the serial server released the lock to match again. So a batch
//!   equals the requests served one by one in the order they were decided.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::literal::{self, Dict, Document, Value};
use crate::provision::{self, Intent, ProvisionError, Reply, Tried};
use crate::store::{self, Lock, Recycler};

/// Most intents decided in one batch (more only when more arrived before
/// the combiner's own): bounds a lock hold.
pub const MAX_BATCH: usize = 32;

/// The queue directory of the lock file `lock_file`.
pub fn queue_dir(lock_file: &Path) -> PathBuf {
    let mut name = lock_file.as_os_str().to_owned();
    name.push(".queue");
    PathBuf::from(name)
}

/// Commits `intent`, alone or in a batch, and returns its reply; what
/// recovery did and queue problems go to `warnings`.
pub(crate) fn commit(
    cfg: &Config,
    intent: &Intent,
    warnings: &mut Vec<String>,
) -> Result<Reply, ProvisionError> {
    let lock_error = |source| ProvisionError::Io {
        path: cfg.lock_file.clone(),
        source,
    };
    let record = cfg.config_dir.join(store::COMMIT_RECORD);
    let (lock, queued) = match Lock::try_exclusive(&cfg.lock_file).map_err(lock_error)? {
        Some(lock) => (lock, None),
        None => {
            let queue = queue_dir(&cfg.lock_file);
            let queued = match Queued::enqueue(&queue, intent) {
                Ok(queued) => Some(queued),
                Err(e) => {
                    warnings.push(format!("cannot queue this request, committed alone: {e}"));
                    None
                }
            };
            if let Some(queued) = &queued {
                match queued.answer_once_released(&cfg.lock_file, &record) {
                    Ok(Some(reply)) => return Ok(reply),
                    Ok(None) => {}
                    Err(e) => {
                        queued.withdraw();
                        return Err(e);
                    }
                }
            }
            match Lock::exclusive(&cfg.lock_file) {
                Ok(lock) => (lock, queued),
                Err(e) => {
                    // No later batch is to apply it: this request gives up.
                    if let Some(queued) = &queued {
                        queued.withdraw();
                    }
                    return Err(lock_error(e));
                }
            }
        }
    };
    // Whatever a killed request left half-committed is completed first:
    // everything below reads files that agree, and answers that are durable.
    let recovery = store::recover(&record).map_err(|source| ProvisionError::Io {
        path: record.clone(),
        source,
    })?;
    warnings.extend(describe_recovery(&recovery));
    if let Some(queued) = &queued {
        if let Some(reply) = queued.take_answer()? {
            return Ok(reply);
        }
        // Under the lock for writing, no combiner reads it: kept for reuse.
        Recycler::recycle(&queued.intent);
    }
    let reply = combine(cfg, &record, intent, queued.as_ref(), warnings)?;
    drop(lock);
    Ok(reply)
}

/// Under the lock: decides `own` with the intents queued, commits them all
/// and hands each waiter its answer; returns `own`'s reply.
fn combine(
    cfg: &Config,
    record: &Path,
    own: &Intent,
    queued: Option<&Queued>,
    warnings: &mut Vec<String>,
) -> Result<Reply, ProvisionError> {
    let queue = queue_dir(&cfg.lock_file);
    let own_name = queued.map_or_else(new_name, |q| q.name.clone());
    let (mut waiting, mut recycler) = match waiting(&queue) {
        Ok(found) => found,
        Err(e) => {
            warnings.push(format!("cannot read the queue {}: {e}", queue.display()));
            (Vec::new(), Recycler::from_names(&queue, Vec::new()))
        }
    };
    // In order of arrival, this request among them.
    // Those that arrived before it are all decided before it.
    let at = waiting.partition_point(|w| w.name < own_name);
    waiting.truncate(at.max(MAX_BATCH - 1));
    let mut intents: Vec<&Intent> = waiting.iter().map(|w| &w.intent).collect();
    intents.insert(at, own);
    let mut decisions = provision::decide(cfg, &intents, true)?;
    let own_reply = decisions.replies.remove(at);

    let answers = waiting.iter().zip(&decisions.replies).map(|(w, reply)| {
        (
            queue.join(format!("{}.answer", w.name)),
            encode_reply(reply),
        )
    });
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ProvisionError::Io { path, source }
    };
    if decisions.files.is_empty() {
        // Nothing to make durable: the answers need no commit.
        for (path, text) in answers {
            recycler
                .replace_cache_file(&path, &text)
                .map_err(io(&path))?;
        }
        return Ok(own_reply);
    }
    let mut files = decisions.files;
    for (path, text) in answers {
        files.push(recycler.prepare_volatile(&path, &text).map_err(io(&path))?);
    }
    let renamed = store::commit_all(record, files).map_err(io(&cfg.config_dir))?;
    renamed.sync().map_err(io(&cfg.config_dir))?;
    for (file, layout) in &decisions.layouts {
        layout.write(file);
    }
    Ok(own_reply)
}

/// Log lines for what [`store::recover`] did, if anything.
fn describe_recovery(recovery: &store::Recovery) -> Vec<String> {
    let mut lines = Vec::new();
    if !recovery.completed.is_empty() {
        lines.push(format!(
            "completed the commit of an interrupted request: {}",
            store::path_list(&recovery.completed)
        ));
    }
    if !recovery.changed.is_empty() {
        lines.push(format!(
            "interrupted commit: changed by someone else since, left as is: {}",
            store::path_list(&recovery.changed)
        ));
    }
    if recovery.damaged {
        lines.push(
            "ignored a commit record torn by a crash (its commit had changed nothing)".to_owned(),
        );
    }
    lines
}

/// A new intent name, `STAMP.PID.N`: sorts in order of arrival.
fn new_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
    }
    let nanos = i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec);
    format!(
        "{nanos:020}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The pid in an intent name.
fn owner(name: &str) -> Option<u32> {
    name.split('.').nth(1)?.parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// This request's intent in the queue.
struct Queued {
    name: String,
    intent: PathBuf,
    answer: PathBuf,
}

impl Queued {
    /// Writes `intent` to the queue `dir` (created if needed).
    fn enqueue(dir: &Path, intent: &Intent) -> io::Result<Queued> {
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let name = new_name();
        let queued = Queued {
            intent: dir.join(format!("{name}.intent")),
            answer: dir.join(format!("{name}.answer")),
            name,
        };
        let text = encode_intent(intent)?;
        Recycler::list(dir).replace_cache_file(&queued.intent, &text)?;
        Ok(queued)
    }

    /// Waits until no one holds the lock for writing, then takes the answer
    /// a combiner committed, if there is one and it is durable. The lock
    /// is taken shared: the waiters of a batch take their answers all at
    /// once rather than one after the other, and no combiner runs
    /// meanwhile. `None`: the request must take the lock for writing.
    fn answer_once_released(
        &self,
        lock_file: &Path,
        record: &Path,
    ) -> Result<Option<Reply>, ProvisionError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ProvisionError::Io { path, source }
        };
        let _shared = Lock::shared(lock_file).map_err(io(lock_file))?;
        if !store::commits_are_durable(record).map_err(io(record))? {
            return Ok(None);
        }
        self.take_answer()
    }

    /// With the lock (and, taken for writing, after recovery): the answer a
    /// combiner committed, if any; both files are recycled then (no
    /// combiner reads them meanwhile: it holds the lock for writing).
    fn take_answer(&self) -> Result<Option<Reply>, ProvisionError> {
        let text = match fs::read(&self.answer) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ProvisionError::Io {
                    path: self.answer.clone(),
                    source,
                })
            }
        };
        Recycler::recycle(&self.intent);
        Recycler::recycle(&self.answer);
        decode_reply(&text).map(Some).ok_or_else(|| {
            ProvisionError::Decided(format!("{}: unreadable answer", self.answer.display()))
        })
    }

    /// Removes the intent: no combiner may decide it any more.
    fn withdraw(&self) {
        // A leftover of a dead process is removed by the next combiner.
        let _ = fs::remove_file(&self.intent);
    }
}

/// An intent read from the queue.
struct Waiting {
    name: String,
    intent: Intent,
}

/// Under the lock for writing: the intents of `queue` without an answer,
/// in order of arrival, and the queue's files kept for reuse. The files of
/// dead processes, and answers without their intent (taken by their owner,
/// who was killed before removing them), are recycled.
fn waiting(queue: &Path) -> io::Result<(Vec<Waiting>, Recycler)> {
    let entries = match fs::read_dir(queue) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok((Vec::new(), Recycler::from_names(queue, Vec::new())))
        }
        Err(e) => return Err(e),
    };
    let mut intents = Vec::new();
    let mut answers = Vec::new();
    let mut recycled = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if Recycler::is_recycled(&name) {
            recycled.push(name);
            continue;
        }
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".intent") {
            intents.push(stem.to_owned());
        } else if let Some(stem) = name.strip_suffix(".answer") {
            answers.push(stem.to_owned());
        }
    }
    intents.sort();
    let remove = |name: &str, kind: &str| Recycler::recycle(&queue.join(format!("{name}.{kind}")));
    for answer in answers.iter().filter(|a| !intents.contains(a)) {
        remove(answer, "answer");
    }
    let mut waiting = Vec::new();
    for name in intents {
        if !owner(&name).is_some_and(alive) {
            remove(&name, "intent");
            remove(&name, "answer");
            continue;
        }
        if answers.contains(&name) {
            continue;
        }
        let path = queue.join(format!("{name}.intent"));
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // Only we write intents, whole: one we cannot read is not ours.
        let Some(intent) = decode_intent(&path, &text) else {
            remove(&name, "intent");
            continue;
        };
        waiting.push(Waiting { name, intent });
    }
    Ok((waiting, Recycler::from_names(queue, recycled)))
}

/// An intent as queued.
#[derive(Serialize, Deserialize)]
struct IntentText {
    failure: Option<String>,
    profiles: Vec<TriedText>,
}

#[derive(Serialize, Deserialize)]
struct TriedText {
    profile: String,
    specs: Option<Vec<u8>>,
    /// The variables and forced variables, as [`dict_text`] writes them.
    matched: Option<(String, String)>,
}

/// A reply as answered; a configure script follows the JSON line.
#[derive(Serialize, Deserialize)]
enum ReplyText {
    Configured {
        profile: String,
        vars: String,
        cmdb_entry: Option<usize>,
    },
    FailureReported {
        profile: String,
        quota_restored: bool,
    },
    Retry {
        forget: Option<String>,
    },
    Failed {
        message: String,
    },
}

fn encode_intent(intent: &Intent) -> io::Result<Vec<u8>> {
    let mut profiles = Vec::new();
    for (profile, tried) in &intent.profiles {
        let matched = match &tried.matched {
            Some((vars, forced)) => Some((dict_text(vars)?, dict_text(forced)?)),
            None => None,
        };
        profiles.push(TriedText {
            profile: profile.clone(),
            specs: tried.specs.clone(),
            matched,
        });
    }
    let text = IntentText {
        failure: intent.failure.clone(),
        profiles,
    };
    serde_json::to_vec(&text).map_err(io::Error::other)
}

fn decode_intent(path: &Path, text: &[u8]) -> Option<Intent> {
    let text: IntentText = serde_json::from_slice(text).ok()?;
    let mut profiles = std::collections::HashMap::new();
    for t in text.profiles {
        let matched = match t.matched {
            Some((vars, forced)) => Some((parse_dict(path, &vars)?, parse_dict(path, &forced)?)),
            None => None,
        };
        profiles.insert(
            t.profile,
            Tried {
                specs: t.specs,
                matched,
            },
        );
    }
    Some(Intent {
        failure: text.failure,
        profiles,
    })
}

fn encode_reply(reply: &Reply) -> Vec<u8> {
    let (text, script) = match reply {
        Reply::Configured {
            profile,
            vars,
            cmdb_entry,
            script,
        } => match dict_text(vars) {
            Ok(vars) => (
                ReplyText::Configured {
                    profile: profile.clone(),
                    vars,
                    cmdb_entry: *cmdb_entry,
                },
                &script[..],
            ),
            Err(e) => (
                ReplyText::Failed {
                    message: e.to_string(),
                },
                &[][..],
            ),
        },
        Reply::FailureReported {
            profile,
            quota_restored,
        } => (
            ReplyText::FailureReported {
                profile: profile.clone(),
                quota_restored: *quota_restored,
            },
            &[][..],
        ),
        Reply::Retry { forget } => (
            ReplyText::Retry {
                forget: forget.clone(),
            },
            &[][..],
        ),
        Reply::Failed(e) => (
            ReplyText::Failed {
                message: e.to_string(),
            },
            &[][..],
        ),
    };
    // Plain data, no map with non-string keys: serializing cannot fail.
    let mut out = serde_json::to_vec(&text).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(script);
    out
}

fn decode_reply(text: &[u8]) -> Option<Reply> {
    let end = text.iter().position(|&b| b == b'\n')?;
    let script = &text[end + 1..];
    Some(match serde_json::from_slice(&text[..end]).ok()? {
        ReplyText::Configured {
            profile,
            vars,
            cmdb_entry,
        } => Reply::Configured {
            profile,
            vars: parse_dict(Path::new("answer"), &vars)?,
            cmdb_entry,
            script: script.to_vec(),
        },
        ReplyText::FailureReported {
            profile,
            quota_restored,
        } => Reply::FailureReported {
            profile,
            quota_restored,
        },
        ReplyText::Retry { forget } => Reply::Retry { forget },
        ReplyText::Failed { message } => Reply::Failed(ProvisionError::Decided(message)),
    })
}

/// A dict as the Python literal of its items in order (a list of pairs):
/// read back, it iterates in the same order, which the configure script's
/// facts follow.
fn dict_text(dict: &Dict) -> io::Result<String> {
    let items = dict
        .iter()
        .map(|(k, v)| Value::Tuple(vec![k.clone(), v.clone()]))
        .collect();
    String::from_utf8(literal::repr(&Value::List(items))).map_err(io::Error::other)
}

fn parse_dict(path: &Path, text: &str) -> Option<Dict> {
    let Ok(Document::Literal(Value::List(items))) = literal::parse(path, text.as_bytes()) else {
        return None;
    };
    let mut dict = Dict::new();
    for item in items {
        let Value::Tuple(mut pair) = item else {
            return None;
        };
        let (Some(v), Some(k), None) = (pair.pop(), pair.pop(), pair.pop()) else {
            return None;
        };
        dict.insert(k, v);
    }
    Some(dict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_and_replies_read_back_as_written() {
        let mut vars = Dict::new();
        for (k, v) in [("zeta", "1"), ("alpha", "é\n'\""), ("mid", "x")] {
            vars.insert(Value::str(k), Value::str(v));
        }
        vars.insert(Value::str("n"), Value::Int(7));
        let mut forced = Dict::new();
        forced.insert(Value::Unicode("u".into()), Value::Unicode("ü".into()));
        let mut profiles = std::collections::HashMap::new();
        profiles.insert(
            "web".to_owned(),
            Tried {
                specs: Some(b"[('a', 'b', 'c', '$$x')]\n\xff".to_vec()),
                matched: Some((vars.clone(), forced.clone())),
            },
        );
        profiles.insert(
            "db".to_owned(),
            Tried {
                specs: None,
                matched: None,
            },
        );
        let intent = Intent {
            failure: None,
            profiles,
        };
        let text = encode_intent(&intent).unwrap();
        let back = decode_intent(Path::new("q"), &text).unwrap();
        assert_eq!(
            format!("{:?}", back.profiles.get("db")),
            format!("{:?}", intent.profiles.get("db"))
        );
        let (v, f) = back.profiles["web"].matched.clone().unwrap();
        assert_eq!(format!("{v:?}"), format!("{vars:?}"));
        assert_eq!(format!("{f:?}"), format!("{forced:?}"));
        assert_eq!(back.profiles["web"].specs, intent.profiles["web"].specs);

        let reply = Reply::Configured {
            profile: "web".into(),
            vars: vars.clone(),
            cmdb_entry: Some(3),
            script: b"#!/usr/bin/env python\n\nprint('\xff')\n".to_vec(),
        };
        let back = decode_reply(&encode_reply(&reply)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{reply:?}"));
        let failed = Reply::Failed(ProvisionError::Unsettled);
        let back = decode_reply(&encode_reply(&failed)).unwrap();
        let Reply::Failed(e) = back else {
            panic!("{back:?}")
        };
        assert_eq!(e.to_string(), ProvisionError::Unsettled.to_string());
        assert!(decode_reply(b"{\"Retry\":{\"forget\":null}}").is_none());
    }

    #[test]
    fn names_sort_in_order_of_arrival() {
        let names: Vec<String> = (0..50).map(|_| new_name()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(owner(&names[0]), Some(std::process::id()));
    }
}

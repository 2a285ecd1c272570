//! Pacing of status views: one at a time while it works out its answer,
//! and at most one every [`MIN_SPACING`].
//!
//! A view runs at idle CPU priority, but Apache starts each CGI at the
//! normal one: under a flood of views (a dashboard refreshing in a loop, a
//! script, an attacker) the web server's own work of starting hundreds of
//! programs a second took the CPU that provisioning requests needed, and a
//! flood of a CGI that does nothing at all slowed uploads more than the
//! views did. Pacing bounds that work: a client waiting for its turn sleeps
//! and sends nothing new, so the views a flood can start per second are
//! bounded by the pace, not by how fast Apache can fork. A view alone is
//! not delayed: the spacing is waited for after its answer is sent. Nor
//! does a slow client hold the others up: the turn is given up once the
//! answer is worked out and the spacing has passed, while a download (a
//! log of up to MAXLOGSIZE) is still being sent.
//!
//! The turn is an exclusive `flock` on the running program's own file
//! (`/proc/self/exe`): every view of one installation shares it, whatever
//! its configuration, and no file is added anywhere. A view that cannot
//! get its turn within [`MAX_WAIT`] is answered "busy" (503), and a view
//! whose program file cannot be locked is not paced.

use std::fs::File;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The least time between the starts of two views.
pub const MIN_SPACING: Duration = Duration::from_millis(50);

/// The longest a view waits for its turn before it is answered "busy".
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// A view's turn: held from before its work starts until its spacing has
/// passed ([`Turn::finish`]) or it is dropped.
#[derive(Debug)]
pub struct Turn {
    file: Option<File>,
    started: Instant,
}

/// Why a view got no turn.
#[derive(Debug, PartialEq, Eq)]
pub enum Busy {
    /// Other views held the turn for all of [`MAX_WAIT`].
    TimedOut,
}

impl Turn {
    /// Waits for the turn of views of this program, at most `max_wait`.
    pub fn take(max_wait: Duration) -> Result<Turn, Busy> {
        match File::open("/proc/self/exe") {
            Ok(file) => Turn::take_on(file, max_wait),
            Err(_) => Ok(Turn::unpaced()),
        }
    }

    /// Waits for an exclusive lock on `file`, at most `max_wait`. The wait
    /// is a blocking `flock` in a thread of its own, so waiters sleep and
    /// the one waiting longest is not passed over by polling luck; when
    /// the time is up the thread is left blocked (the process is about to
    /// answer and exit, which ends it and its claim).
    pub fn take_on(file: File, max_wait: Duration) -> Result<Turn, Busy> {
        let started = Instant::now();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let locked = file.lock().map(|()| file);
            // The receiver may have given up: then the lock goes with the
            // process.
            let _ = tx.send(locked);
        });
        match rx.recv_timeout(max_wait) {
            Ok(Ok(file)) => Ok(Turn {
                file: Some(file),
                started: Instant::now(),
            }),
            // A file that cannot be locked (no flock on that file system)
            // does not stop the view.
            Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => Ok(Turn {
                file: None,
                started,
            }),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Busy::TimedOut),
        }
    }

    fn unpaced() -> Turn {
        Turn {
            file: None,
            started: Instant::now(),
        }
    }

    /// Gives the turn up [`MIN_SPACING`] after the view started, or now if
    /// that has passed: call it once the answer is worked out, then send
    /// it, and [`Released::wait`] before the process ends (which would give
    /// the turn up sooner).
    pub fn release_after_spacing(self) -> Released {
        let Some(file) = self.file else {
            return Released(None);
        };
        let until = self.started + MIN_SPACING;
        Released(Some(thread::spawn(move || {
            thread::sleep(until.saturating_duration_since(Instant::now()));
            drop(file);
        })))
    }
}

/// A turn being given up (see [`Turn::release_after_spacing`]).
#[derive(Debug)]
pub struct Released(Option<thread::JoinHandle<()>>);

impl Released {
    /// Waits until the turn is given up.
    pub fn wait(self) {
        if let Some(handle) = self.0 {
            // The thread only sleeps and closes a file.
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_file(dir: &tempfile::TempDir) -> File {
        let path = dir.path().join("program");
        std::fs::write(&path, b"").unwrap();
        File::open(path).unwrap()
    }

    #[test]
    fn one_view_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = Turn::take_on(lock_file(&dir), MAX_WAIT).unwrap();
        assert!(first.file.is_some());
        // Another open file description of the same file: another view.
        let second = Turn::take_on(lock_file(&dir), Duration::from_millis(50));
        assert_eq!(second.unwrap_err(), Busy::TimedOut);
        drop(first);
        let third = Turn::take_on(lock_file(&dir), MAX_WAIT).unwrap();
        assert!(third.file.is_some());
    }

    #[test]
    fn the_turn_is_kept_for_the_spacing() {
        let dir = tempfile::tempdir().unwrap();
        let first = Turn::take_on(lock_file(&dir), MAX_WAIT).unwrap();
        let first_started = first.started;
        // The first view's answer is still being sent (it has not waited
        // for its release): the second starts all the same, after the
        // spacing.
        let released = first.release_after_spacing();
        let second = Turn::take_on(lock_file(&dir), MAX_WAIT).unwrap();
        released.wait();
        assert!(second.file.is_some());
        assert!(second.started - first_started >= MIN_SPACING);
    }

    #[test]
    fn the_running_program_paces_its_views() {
        let turn = Turn::take(MAX_WAIT).unwrap();
        assert!(turn.file.is_some());
        assert!(Turn::take(Duration::from_millis(50)).is_err());
    }
}

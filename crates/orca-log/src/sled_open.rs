//! Opening a sled database that was just closed.

use std::time::{Duration, Instant};

/// How long an open waits for a lock that a closed handle still holds.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens `config`, waiting up to two seconds while its lock is still held.
///
/// sled takes its file lock without waiting, and a handle that was just dropped releases it only
/// once sled's I/O threads have let go of the file: a reopen right after a close (a quick
/// restart in the same process) can find it still taken. A lock another process holds is
/// reported once the wait is over.
pub fn open_sled(config: &sled::Config) -> sled::Result<sled::Db> {
    let started = Instant::now();
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

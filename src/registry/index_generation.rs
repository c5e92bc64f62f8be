//! The index generation the registry vouches for, and the lock writers of a
//! shared index take.
//!
//! The registry is the source of truth for which works exist; the index
//! holds their fingerprints. Every change to the index bumps its generation
//! (the manifest's counter). A writer, after committing its change, raises
//! the registry's `index_generation` row to the index's new generation — in
//! the same transaction as the registry rows of a new work. A process that
//! screens against an index snapshot older than that row would miss works
//! the registry already holds, so screening refuses such a verdict
//! ([`crate::screening::current_index`]).
//!
//! The row only goes up: a writer publishing an older generation (a process
//! pointed at a stale copy of the index) changes nothing.
//!
//! Writers of an index that several processes or machines share serialise
//! on [`Registry::lock_index_writes`]: on PostgreSQL a session-level
//! advisory lock; on SQLite nothing beyond the index's own file lock (a
//! SQLite registry lives next to its one index).

use std::time::Duration;

use super::Registry;
use super::db::{Db, values};
use super::error::{DbContext, Result, invalid};
use super::model::to_db_time;

/// Reads the published generation (0 when nothing was published yet).
pub(crate) fn read(db: &mut dyn Db) -> Result<u64> {
    let row = db
        .query_opt("SELECT generation FROM index_generation WHERE id = 1", &[])
        .db(|| "reading the published index generation".into())?;
    let Some(row) = row else {
        return Ok(0);
    };
    let generation: i64 = row
        .get(0)
        .db(|| "reading the published index generation".into())?;
    Ok(u64::try_from(generation).unwrap_or(0))
}

/// Raises the published generation to `generation` (never lowers it).
/// Returns whether it changed.
pub(crate) fn publish(db: &mut dyn Db, generation: u64, at: &str) -> Result<bool> {
    let generation = i64::try_from(generation)
        .map_err(|_| invalid("index generation", format!("{generation} is too large")))?;
    let changed = db
        .execute(
            "UPDATE index_generation SET generation = ?1, published_at = ?2 \
             WHERE id = 1 AND generation < ?1",
            &values![generation, at],
        )
        .db(|| format!("publishing index generation {generation}"))?;
    Ok(changed > 0)
}

/// Held while one process writes an index that a shared registry describes
/// (see [`Registry::lock_index_writes`]); released on drop.
#[must_use = "the lock is released when dropped"]
pub struct IndexWriteLock {
    #[cfg(feature = "postgres")]
    session: Option<super::postgres::SessionLock>,
}

impl std::fmt::Debug for IndexWriteLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexWriteLock").finish_non_exhaustive()
    }
}

impl IndexWriteLock {
    /// Checks that the lock is still held: on PostgreSQL, that its database
    /// session is still open (a broken connection releases the lock, and
    /// another process may then write).
    pub fn check(&mut self) -> Result<()> {
        #[cfg(feature = "postgres")]
        if let Some(session) = self.session.as_mut() {
            return session.check();
        }
        Ok(())
    }
}

impl Registry {
    /// The index generation the registry vouches for: an index snapshot at
    /// a lower generation lacks some change the registry already reflects.
    /// One indexed read.
    pub fn index_generation(&self) -> Result<u64> {
        self.read(|db| read(db))
    }

    /// Raises the published index generation to `generation` (a lower one
    /// changes nothing); returns whether it changed. For writers of the
    /// index, after their change is committed and while they hold
    /// [`Registry::lock_index_writes`].
    pub fn publish_index_generation(&self, generation: u64) -> Result<bool> {
        let at = to_db_time(self.now())?;
        self.write_unserialised("publishing the index generation", |db| {
            publish(db, generation, &at)
        })
    }

    /// Takes the registry-wide lock of index writes, waiting at most `wait`
    /// for another process to release it (then a busy error,
    /// [`super::RegistryError::is_busy`]).
    ///
    /// On PostgreSQL it is the session-level advisory lock
    /// [`super::postgres::INDEX_WRITE_LOCK`] on a connection opened for it:
    /// released when the returned value is dropped, or by the server when
    /// the process dies. On SQLite it is a no-op: the registry file belongs
    /// to one data directory, whose index file lock serialises its writers.
    pub fn lock_index_writes(&self, wait: Duration) -> Result<IndexWriteLock> {
        #[cfg(feature = "postgres")]
        {
            let connector = match &*self.lock() {
                super::Conn::Postgres(pg) => Some(pg.connector()),
                super::Conn::Sqlite(_) => None,
            };
            if let Some(connector) = connector {
                let session = connector.session_lock(
                    super::postgres::INDEX_WRITE_LOCK,
                    wait,
                    "index write lock",
                )?;
                return Ok(IndexWriteLock {
                    session: Some(session),
                });
            }
        }
        let _ = wait;
        Ok(IndexWriteLock {
            #[cfg(feature = "postgres")]
            session: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{on_postgres, open_temp, sample_work, test_location};
    use super::super::{Registry, RegistryLocation};
    use std::time::Duration;

    /// On PostgreSQL the index write lock excludes a second registry (a
    /// second replica) until released, and the server releases it when the
    /// holder's session ends (a process that died).
    #[test]
    fn index_write_lock_excludes_another_registry_until_released_or_its_session_ends() {
        if !on_postgres() {
            eprintln!(
                "index_write_lock_excludes_another_registry_until_released_or_its_session_ends: \
                 PostgreSQL only (EARMARK_TEST_REGISTRY=postgres)"
            );
            return;
        }
        let location = test_location();
        let dir = tempfile::tempdir().unwrap();
        let a = Registry::open_at(&location, dir.path()).unwrap();
        let b = Registry::open_at(&location, dir.path()).unwrap();
        let held = a.lock_index_writes(Duration::from_secs(5)).unwrap();
        let err = b.lock_index_writes(Duration::from_millis(200)).unwrap_err();
        assert!(err.is_busy(), "{err}");
        assert!(err.to_string().contains("index write lock"), "{err}");
        drop(held);
        let held = b.lock_index_writes(Duration::from_secs(5)).unwrap();
        // The holder's session ends without unlocking (as when its process is killed).
        let RegistryLocation::Postgres(url) = &location else {
            unreachable!()
        };
        let mut admin = postgres::Client::connect(url, postgres::NoTls).unwrap();
        let ended: i64 = admin
            .query_one(
                // Only in this test's database: other tests run beside it
                // in other databases of the same cluster.
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_locks \
                 WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() \
                 AND database = (SELECT oid FROM pg_database \
                 WHERE datname = current_database())) AS t",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(ended, 1);
        let _taken = a.lock_index_writes(Duration::from_secs(10)).unwrap();
        drop(held);
    }

    #[test]
    fn published_generation_only_rises_and_can_come_with_a_new_work() {
        let (_dir, reg) = open_temp();
        assert_eq!(reg.index_generation().unwrap(), 0);
        assert!(reg.publish_index_generation(3).unwrap());
        assert_eq!(reg.index_generation().unwrap(), 3);
        assert!(!reg.publish_index_generation(2).unwrap());
        assert!(!reg.publish_index_generation(3).unwrap());
        assert_eq!(reg.index_generation().unwrap(), 3);
        reg.add_work_indexed(sample_work("w1"), &[], "admin", 5)
            .unwrap();
        assert_eq!(reg.index_generation().unwrap(), 5);
        // A refused registration publishes nothing (one transaction).
        assert!(
            reg.add_work_indexed(sample_work("w1"), &[], "admin", 9)
                .is_err()
        );
        assert_eq!(reg.index_generation().unwrap(), 5);
        let mut lock = reg.lock_index_writes(Duration::from_secs(1)).unwrap();
        lock.check().unwrap();
    }
}

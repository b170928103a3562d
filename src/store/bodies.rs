//! Delivery bodies, kept outside SQLite in append-only segment files
//! (`data_dir/bodies/<segment>.seg`).
//!
//! A webhook body is the biggest thing hookd stores (a GitHub push is ~8 KB),
//! and inside SQLite each one costs several pages written to the WAL, then
//! copied again by the checkpoint. Here the store's writer thread appends the
//! bodies of a whole group commit to the current segment with one write and
//! one `fdatasync`, *before* it commits the transaction whose rows point at
//! them (segment, offset, length). So a committed delivery's body is always
//! on disk; a crash between the two leaves unreferenced bytes at the end of a
//! segment, which nothing reads.
//!
//! Segments are never appended to after a restart (the writer starts a new
//! one), so a torn tail is never built upon. Pruning deletes a segment older
//! than the one being written once no stored row points into it; a segment
//! that one kept delivery still points into stays whole.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::StoreError;

/// A segment stops taking bodies once it is this large (checked between
/// group commits, so one may end a little past it).
pub(crate) const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// What the group commit's body buffer keeps of its capacity between batches.
const PENDING_KEPT: usize = 1024 * 1024;

/// Where a body was put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyRef {
    pub segment: i64,
    pub offset: i64,
    pub len: i64,
}

/// The file of segment `id`.
pub(crate) fn segment_path(dir: &Path, id: i64) -> PathBuf {
    dir.join(format!("{id:016}.seg"))
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |e| StoreError::Task(format!("{what}: {e}"))
}

/// The segment ids present in `dir`, ascending (files that are not
/// segments are left alone).
pub(crate) fn segments(dir: &Path) -> Result<Vec<i64>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(format!("list {}", dir.display()))(e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(format!("list {}", dir.display())))?;
        let name = entry.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<i64>().ok());
        if let Some(id) = id {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Reads one body back.
pub(crate) fn read(dir: &Path, at: BodyRef) -> Result<Vec<u8>, StoreError> {
    let path = segment_path(dir, at.segment);
    let (Ok(offset), Ok(len)) = (u64::try_from(at.offset), usize::try_from(at.len)) else {
        return Err(StoreError::Task(format!(
            "invalid body location {at:?} in {}",
            path.display()
        )));
    };
    let file = File::open(&path).map_err(io_error(format!(
        "open body segment {} (was it deleted by hand?)",
        path.display()
    )))?;
    let mut body = vec![0; len];
    file.read_exact_at(&mut body, offset)
        .map_err(io_error(format!(
            "read {len} bytes at offset {offset} of body segment {}",
            path.display()
        )))?;
    Ok(body)
}

/// Deletes the segments older than `current` that no stored row points at
/// (`referenced`). Returns how many were deleted.
pub(crate) fn delete_unreferenced(
    dir: &Path,
    referenced: &[i64],
    current: i64,
) -> Result<usize, StoreError> {
    let doomed = segments(dir)?
        .into_iter()
        .filter(|id| *id < current && !referenced.contains(id));
    let mut deleted = 0;
    for id in doomed {
        let path = segment_path(dir, id);
        match std::fs::remove_file(&path) {
            Ok(()) => deleted += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io_error(format!("delete body segment {}", path.display()))(
                    e,
                ))
            }
        }
    }
    Ok(deleted)
}

/// The writer thread's side: the segment being appended to, and the bodies
/// of the group commit in progress.
pub(crate) struct BodyLog {
    dir: PathBuf,
    segment: i64,
    len: u64,
    file: Option<File>,
    /// Set after a failed write: the next batch starts a new segment rather
    /// than build on bytes of unknown state.
    broken: bool,
    pending: Vec<u8>,
}

impl BodyLog {
    /// Opens the log in `dir` (created if needed). Appends go to a new
    /// segment after both the newest one present and `referenced` (the
    /// newest one stored rows point at: a segment file removed by hand must
    /// not have its number reused for other bodies), created on the first
    /// append.
    pub(crate) fn open(dir: &Path, referenced: Option<i64>) -> Result<BodyLog, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_error(format!("create {}", dir.display())))?;
        let present = segments(dir)?.last().copied().unwrap_or(0);
        let newest = present.max(referenced.unwrap_or(0));
        Ok(BodyLog {
            dir: dir.to_path_buf(),
            segment: newest + 1,
            len: 0,
            file: None,
            broken: false,
            pending: Vec::new(),
        })
    }

    /// The segment appends go to now (never deleted by pruning).
    pub(crate) fn current(&self) -> i64 {
        self.segment
    }

    /// Starts a group commit: moves to a new segment when the current one is
    /// full or a write to it failed.
    pub(crate) fn begin(&mut self) {
        self.pending.clear();
        if self.broken || self.len >= SEGMENT_BYTES {
            self.segment += 1;
            self.len = 0;
            self.file = None;
            self.broken = false;
        }
    }

    /// Adds a body to the group commit; where it will be once flushed.
    pub(crate) fn append(&mut self, body: &[u8]) -> BodyRef {
        let at = BodyRef {
            segment: self.segment,
            offset: (self.len + self.pending.len() as u64) as i64,
            len: body.len() as i64,
        };
        self.pending.extend_from_slice(body);
        at
    }

    /// How much the group commit holds so far (a mark for [`Self::rewind`]).
    pub(crate) fn mark(&self) -> usize {
        self.pending.len()
    }

    /// Drops what was appended after `mark` (a job's savepoint rolled back).
    pub(crate) fn rewind(&mut self, mark: usize) {
        self.pending.truncate(mark);
    }

    /// Writes the group commit's bodies and syncs them: call before the
    /// transaction that points at them commits. On error the transaction
    /// must not commit.
    pub(crate) fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.write_pending();
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn write_pending(&mut self) -> Result<(), StoreError> {
        let path = segment_path(&self.dir, self.segment);
        if self.file.is_none() {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io_error(format!("create body segment {}", path.display())))?;
            // The new file's directory entry must be durable too.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error(format!("sync directory {}", self.dir.display())))?;
            self.file = Some(file);
        }
        let Some(file) = self.file.as_ref() else {
            return Err(StoreError::Task(format!(
                "body segment {} not open",
                path.display()
            )));
        };
        file.write_all_at(&self.pending, self.len)
            .and_then(|()| file.sync_data())
            .map_err(io_error(format!(
                "write {} bytes of delivery bodies to {}",
                self.pending.len(),
                path.display()
            )))?;
        self.len += self.pending.len() as u64;
        self.pending.clear();
        // A burst's buffer is not kept for good (idle memory).
        self.pending.shrink_to(PENDING_KEPT);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_across_batches_segments_and_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = BodyLog::open(dir.path(), None).expect("open");
        log.begin();
        let a = log.append(b"first body");
        let mark = log.mark();
        log.append(b"rolled back");
        log.rewind(mark);
        let b = log.append(b"second");
        log.flush().expect("flush");
        assert_eq!(read(dir.path(), a).expect("a"), b"first body");
        assert_eq!(read(dir.path(), b).expect("b"), b"second");
        assert_eq!(b.offset, a.len, "the rolled-back body left no gap");

        // A full segment: the next batch starts a new one.
        log.len = SEGMENT_BYTES;
        log.begin();
        let c = log.append(b"third");
        log.flush().expect("flush");
        assert_eq!(c.segment, a.segment + 1);
        assert_eq!(c.offset, 0);

        // A restart never appends to an old segment.
        drop(log);
        let mut log = BodyLog::open(dir.path(), None).expect("reopen");
        log.begin();
        let d = log.append(b"fourth");
        log.flush().expect("flush");
        assert_eq!(d.segment, c.segment + 1);
        assert_eq!(
            segments(dir.path()).expect("list"),
            vec![a.segment, c.segment, d.segment]
        );
        for (at, want) in [(a, &b"first body"[..]), (c, b"third"), (d, b"fourth")] {
            assert_eq!(read(dir.path(), at).expect("read"), want);
        }

        // Pruning keeps the segments rows point at and the current one.
        assert_eq!(
            delete_unreferenced(dir.path(), &[c.segment], log.current()).expect("prune"),
            1
        );
        assert!(read(dir.path(), a).is_err());
        assert_eq!(read(dir.path(), c).expect("c"), b"third");
        assert_eq!(
            delete_unreferenced(dir.path(), &[], log.current()).expect("prune all"),
            1
        );
        assert_eq!(read(dir.path(), d).expect("d"), b"fourth");
    }

    #[test]
    fn an_empty_batch_creates_no_file_and_a_missing_segment_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = BodyLog::open(dir.path(), None).expect("open");
        log.begin();
        log.flush().expect("flush");
        assert!(segments(dir.path()).expect("list").is_empty());
        let err = read(
            dir.path(),
            BodyRef {
                segment: 7,
                offset: 0,
                len: 3,
            },
        )
        .expect_err("missing");
        assert!(err.to_string().contains("0000000000000007.seg"), "{err}");
    }
}

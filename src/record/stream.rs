//! Rows appended to the run directory as the run goes. The recorder keeps only the rows not
//! yet on disk: at an evaluation, once [`FLUSH_EVERY`] has passed since the last flush, it
//! writes them as the next segment of each table (`segments/updates-000001.parquet`, ...),
//! each a complete Parquet file renamed into place, so a killed process leaves every row up to
//! its last flush readable. [`StreamingRecorder::finish`] flushes the rest and joins the
//! segments into `updates.parquet`, `evals.parquet` and `jobs.parquet`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use polars::prelude::*;

use super::rows::{EvalRecord, Sink, UpdateRecord, VecSink};
use crate::sched::JobRecord;

/// The longest a row waits in memory, measured at evaluations.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// The segments folder of a run directory.
pub const SEGMENTS: &str = "segments";

/// The tables, by file stem.
const TABLES: [&str; 3] = ["updates", "evals", "jobs"];

pub struct StreamingRecorder {
    dir: PathBuf,
    pending: VecSink,
    segments: usize,
    last_flush: Instant,
    /// The first write that failed; the run reports it when it ends.
    error: Option<PolarsError>,
    pub updates: u64,
    pub evals: u64,
    pub last_eval: Option<EvalRecord>,
}

impl StreamingRecorder {
    pub fn new(run_dir: &Path) -> Self {
        StreamingRecorder {
            dir: run_dir.to_owned(),
            pending: VecSink::default(),
            segments: 0,
            last_flush: Instant::now(),
            error: None,
            updates: 0,
            evals: 0,
            last_eval: None,
        }
    }

    /// Writes the pending rows as the next segment of each table that has any.
    pub fn flush(&mut self) -> PolarsResult<()> {
        self.last_flush = Instant::now();
        let pending = std::mem::take(&mut self.pending);
        if pending.updates.is_empty() && pending.evals.is_empty() && pending.jobs.is_empty() {
            return Ok(());
        }
        self.segments += 1;
        let folder = self.dir.join(SEGMENTS);
        std::fs::create_dir_all(&folder)?;
        let frames = [
            (!pending.updates.is_empty()).then(|| super::updates_frame(&pending.updates)),
            (!pending.evals.is_empty()).then(|| super::evals_frame(&pending.evals)),
            (!pending.jobs.is_empty()).then(|| super::jobs_frame(&pending.jobs)),
        ];
        for (table, frame) in TABLES.iter().zip(frames) {
            if let Some(frame) = frame {
                let path = folder.join(format!("{table}-{:06}.parquet", self.segments));
                super::write_parquet(&path, &mut frame?)?;
            }
        }
        Ok(())
    }

    /// Flushes what is pending and joins each table's segments into its file; the segments go.
    pub fn finish(mut self) -> PolarsResult<()> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        self.flush()?;
        let folder = self.dir.join(SEGMENTS);
        let empty = VecSink::default();
        for table in TABLES {
            let mut frame = match read_segments(&folder, table)? {
                Some(frame) => frame,
                None => match table {
                    "updates" => super::updates_frame(&empty.updates)?,
                    "evals" => super::evals_frame(&empty.evals)?,
                    _ => super::jobs_frame(&empty.jobs)?,
                },
            };
            super::write_parquet(&self.dir.join(format!("{table}.parquet")), &mut frame)?;
        }
        if folder.exists() {
            std::fs::remove_dir_all(&folder)?;
        }
        Ok(())
    }

    fn note(&mut self, result: PolarsResult<()>) {
        if let (Err(error), None) = (result, &self.error) {
            self.error = Some(error);
        }
    }
}

/// A table's segments, in order, as one frame (None when it has none).
pub fn read_segments(folder: &Path, table: &str) -> PolarsResult<Option<DataFrame>> {
    if !folder.exists() {
        return Ok(None);
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(folder)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(&format!("{table}-")) && name.ends_with(".parquet")
        })
        .collect();
    paths.sort();
    let mut joined: Option<DataFrame> = None;
    for path in paths {
        let frame = super::read_parquet(&path)?;
        match &mut joined {
            None => joined = Some(frame),
            Some(all) => {
                all.vstack_mut(&frame)?;
            }
        }
    }
    Ok(joined)
}

impl Sink for StreamingRecorder {
    fn update(&mut self, record: UpdateRecord) {
        self.updates += 1;
        self.pending.updates.push(record);
    }

    fn eval(&mut self, record: EvalRecord) {
        self.evals += 1;
        self.last_eval = Some(record.clone());
        self.pending.evals.push(record);
        if self.last_flush.elapsed() >= FLUSH_EVERY {
            let result = self.flush();
            self.note(result);
        }
    }

    fn job(&mut self, record: JobRecord) {
        self.pending.jobs.push(record);
    }

    fn check(&mut self) -> anyhow::Result<()> {
        match self.error.take() {
            Some(error) => Err(anyhow::Error::new(error)
                .context(format!("writing the run's log segments in {}", self.dir.join(SEGMENTS).display()))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(task: u64) -> UpdateRecord {
        UpdateRecord {
            task,
            client: 1,
            leaf: None,
            base_version: 0,
            applied_version: task + 1,
            staleness: 0,
            dispatched_at: 0.0,
            arrived_at: 1.0,
            first_loss: 2.0,
            last_loss: 1.0,
            train_ms: 3.0,
            worker: 0,
            server_ms: 0.1,
        }
    }

    #[test]
    fn segments_on_disk_join_into_one_table_in_order() {
        let dir = std::env::temp_dir().join(format!("fedsim-stream-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut recorder = StreamingRecorder::new(&dir);
        for task in 0..3 {
            recorder.update(update(task));
        }
        recorder.flush().unwrap();
        // What a killed run would leave: the first segment, readable.
        let on_disk = read_segments(&dir.join(SEGMENTS), "updates").unwrap().unwrap();
        assert_eq!(on_disk.height(), 3);
        for task in 3..5 {
            recorder.update(update(task));
        }
        recorder.finish().unwrap();
        let updates = super::super::read_parquet(&dir.join("updates.parquet")).unwrap();
        let tasks: Vec<u64> = updates.column("task").unwrap().u64().unwrap().into_no_null_iter().collect();
        assert_eq!(tasks, [0, 1, 2, 3, 4]);
        assert!(dir.join("evals.parquet").exists() && dir.join("jobs.parquet").exists());
        assert!(!dir.join(SEGMENTS).exists(), "segments are joined and removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

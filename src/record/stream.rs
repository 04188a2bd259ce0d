//! Rows appended to the run directory as the run goes. The recorder keeps only the rows not
//! yet on disk: at an evaluation, once [`FLUSH_EVERY`] has passed since the last flush, it
//! writes them as the next segment of each table (`segments/updates-000001.parquet`, ...),
//! each a complete Parquet file renamed into place, so a killed process leaves every row up to
//! its last flush readable. A checkpoint (where the run asks for them: every
//! `run.checkpoint_every` versions and `run.checkpoint_minutes` of wall time) flushes first and
//! records how many segments it covers, so a resumed run drops the later ones and appends.
//! [`StreamingRecorder::finish`] flushes the rest and joins the segments into
//! `updates.parquet`, `evals.parquet` and `jobs.parquet`; the segments stay while a checkpoint
//! does (the run can still be resumed), until [`tidy`] removes both from a complete run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use polars::prelude::*;

use super::checkpoint::{self, Provenance};
use super::rows::{EvalRecord, Sink, UpdateRecord, VecSink};
use super::RecordError;
use crate::saved::RunSnapshot;
use crate::sched::JobRecord;

/// The longest a row waits in memory, measured at evaluations.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// The segments folder of a run directory.
pub const SEGMENTS: &str = "segments";

/// The tables, by file stem.
const TABLES: [&str; 3] = ["updates", "evals", "jobs"];

/// When a run takes checkpoints, and what they must match to be resumed.
pub struct CheckpointSettings {
    /// Every this many versions (0: never by versions).
    pub every: u64,
    /// Every this much wall time (zero: never by time).
    pub period: Duration,
    pub provenance: Provenance,
}

pub struct StreamingRecorder {
    dir: PathBuf,
    checkpoints: Option<CheckpointSettings>,
    last_checkpoint: Instant,
    pub checkpoints_written: u64,
    /// Wall time spent writing checkpoints (flushes included).
    pub checkpoint_time: Duration,
    /// The size of the last checkpoint written, in bytes.
    pub checkpoint_bytes: u64,
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
            checkpoints: None,
            last_checkpoint: Instant::now(),
            checkpoints_written: 0,
            checkpoint_time: Duration::ZERO,
            checkpoint_bytes: 0,
            pending: VecSink::default(),
            segments: 0,
            last_flush: Instant::now(),
            error: None,
            updates: 0,
            evals: 0,
            last_eval: None,
        }
    }

    /// Takes checkpoints as `settings` say.
    pub fn with_checkpoints(mut self, settings: CheckpointSettings) -> Self {
        self.checkpoints = Some(settings);
        self
    }

    /// Continues the logs of `run_dir` from a checkpoint taken when `segments` segments were
    /// on disk: later segments (rows of the run after that checkpoint) are removed.
    pub fn resume(run_dir: &Path, segments: usize) -> PolarsResult<Self> {
        let mut recorder = StreamingRecorder::new(run_dir);
        recorder.segments = segments;
        let folder = run_dir.join(SEGMENTS);
        if folder.exists() {
            for entry in std::fs::read_dir(&folder)? {
                let path = entry?.path();
                if segment_index(&path).is_none_or(|index| index > segments) {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        if let Some(evals) = read_segments(&folder, "evals")? {
            recorder.evals = evals.height() as u64;
            recorder.last_eval = last_eval(&evals)?;
        }
        recorder.updates = read_segments(&folder, "updates")?.map_or(0, |u| u.height() as u64);
        Ok(recorder)
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

    /// Flushes what is pending and joins each table's segments into its file. The segments go,
    /// unless a checkpoint is there to resume from (they are its logs).
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
        if folder.exists() && !checkpoint::path(&self.dir).exists() {
            std::fs::remove_dir_all(&folder)?;
        }
        Ok(())
    }

    /// A failed write of the log segments, naming their folder.
    fn segments_error(&self, source: PolarsError) -> RecordError {
        RecordError::Segments { folder: self.dir.join(SEGMENTS), source }
    }

    fn note(&mut self, result: PolarsResult<()>) {
        if let (Err(error), None) = (result, &self.error) {
            self.error = Some(error);
        }
    }
}

/// Removes the checkpoint and the log segments of a run that is complete (its tables, weights
/// and run.json written): nothing is left to resume.
pub fn tidy(run_dir: &Path) -> std::io::Result<()> {
    let file = checkpoint::path(run_dir);
    if file.exists() {
        std::fs::remove_file(file)?;
    }
    let folder = run_dir.join(SEGMENTS);
    if folder.exists() {
        std::fs::remove_dir_all(folder)?;
    }
    Ok(())
}

/// A segment file's number (`updates-000003.parquet`: 3).
fn segment_index(path: &Path) -> Option<usize> {
    let name = path.file_name()?.to_str()?.strip_suffix(".parquet")?;
    name.rsplit_once('-')?.1.parse().ok()
}

/// The last row of an evals table (per-class accuracies left out: only the summary reads it).
fn last_eval(evals: &DataFrame) -> PolarsResult<Option<EvalRecord>> {
    let Some(row) = evals.height().checked_sub(1) else { return Ok(None) };
    let float =
        |name: &str| -> PolarsResult<f64> { Ok(evals.column(name)?.f64()?.get(row).unwrap_or(f64::NAN)) };
    Ok(Some(EvalRecord {
        version: evals.column("version")?.u64()?.get(row).unwrap_or(0),
        virtual_time: float("virtual_time")?,
        accuracy: float("accuracy")?,
        loss: float("loss")?,
        per_class_accuracy: Vec::new(),
        wall_s: float("wall_s")?,
    }))
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

    fn checkpoint_due(&mut self, version: u64) -> bool {
        self.checkpoints.as_ref().is_some_and(|c| {
            (c.every > 0 && version % c.every == 0)
                || (!c.period.is_zero() && self.last_checkpoint.elapsed() >= c.period)
        })
    }

    fn checkpoint(&mut self, snapshot: &RunSnapshot) -> Result<(), RecordError> {
        let Some(settings) = &self.checkpoints else { return Ok(()) };
        let provenance = settings.provenance.clone();
        let started = Instant::now();
        self.check()?;
        self.flush().map_err(|e| self.segments_error(e))?;
        checkpoint::write(&self.dir, &provenance, self.segments, snapshot)?;
        self.checkpoint_bytes = std::fs::metadata(checkpoint::path(&self.dir)).map_or(0, |m| m.len());
        crate::faults::reached("checkpoint");
        self.checkpoints_written += 1;
        self.checkpoint_time += started.elapsed();
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    fn check(&mut self) -> Result<(), RecordError> {
        match self.error.take() {
            Some(error) => Err(self.segments_error(error)),
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
        tidy(&dir).unwrap();
        let updates = super::super::read_parquet(&dir.join("updates.parquet")).unwrap();
        let tasks: Vec<u64> = updates.column("task").unwrap().u64().unwrap().into_no_null_iter().collect();
        assert_eq!(tasks, [0, 1, 2, 3, 4]);
        assert!(dir.join("evals.parquet").exists() && dir.join("jobs.parquet").exists());
        assert!(!dir.join(SEGMENTS).exists(), "segments are joined and removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Reading Parquet files that come from outside (run tables, trace files) without letting a
//! damaged file abort or panic the process.

use std::path::Path;
use std::sync::Arc;

use polars::prelude::*;

use super::parquet_check;

/// Reads a Parquet file. Its page headers are checked first ([`parquet_check`]): on some
/// damaged counts polars would abort the process. The check's parser and polars' reader also
/// panic on some damaged files (fuzzing found a validity bitmap longer than its column and a
/// footer's malformed boolean); such a panic becomes an error saying the file is damaged, and
/// its message stays off stderr.
pub fn read_parquet(path: &Path) -> PolarsResult<DataFrame> {
    let bytes = polars_buffer::Buffer::from(std::fs::read(path)?);
    let damaged = |fault: String| PolarsError::ComputeError(format!("the file is damaged ({fault})").into());
    let _quiet = QuietPanics::enter();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let metadata = parquet_check::check_structure(&bytes).map_err(damaged)?;
        let mut reader = ParquetReader::new(std::io::Cursor::new(bytes.clone()));
        reader.set_metadata(Arc::new(metadata));
        reader.finish()
    }))
    .unwrap_or_else(|panic| {
        let message = crate::faults::panic_message(&*panic).unwrap_or_default();
        Err(damaged(format!("the Parquet reader failed: {message}")))
    })
}

/// While one is alive, panics are not printed (they are caught and reported as errors); the
/// hook that does this wraps the previous one, installed the first time.
struct QuietPanics;

static QUIET_SECTIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl QuietPanics {
    fn enter() -> QuietPanics {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if QUIET_SECTIONS.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    previous(info);
                }
            }));
        });
        QUIET_SECTIONS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        QuietPanics
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        QUIET_SECTIONS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

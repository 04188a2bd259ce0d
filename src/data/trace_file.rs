//! Trace files: per-client tables given as CSV (a header naming the columns, then one row per
//! line) or Parquet (columns by name, any numeric type). Both read into numbers by row; every
//! problem names the row and column (CSV rows count lines, the header being row 1; Parquet rows
//! count from 1). Callers name the file. What the rows mean is the event engine's
//! (`sim::delay::device_factors`, `sim::availability::trace_windows`).

use std::path::Path;

use crate::sim::availability::{self, TraceWindows};
use crate::sim::delay;
use crate::sim::trace::Row;

/// A device trace file (client, speed, bandwidth) for `num_clients` clients.
pub fn read_device_trace(file: &str, num_clients: usize) -> Result<Vec<(f64, f64)>, String> {
    delay::device_factors(read_columns(file, &delay::TRACE_COLUMNS)?, num_clients)
}

/// An availability trace file (client, start, end) for `num_clients` clients.
pub fn read_availability_trace(file: &str, num_clients: usize) -> Result<TraceWindows, String> {
    availability::trace_windows(read_columns(file, &availability::TRACE_COLUMNS)?, num_clients)
}

/// Reads `columns` of a trace file, CSV or (by extension) Parquet.
pub fn read_columns(file: &str, columns: &[&str]) -> Result<Vec<Row>, String> {
    if Path::new(file).extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet")) {
        read_parquet(file, columns)
    } else {
        read_csv(file, columns)
    }
}

fn read_csv(file: &str, columns: &[&str]) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .map(|(_, l)| l.split(',').map(|c| c.trim().to_lowercase()).collect())
        .unwrap_or_default();
    if header != columns {
        return Err(format!("row 1: the header must be {}", columns.join(",")));
    }
    lines
        .map(|(index, line)| {
            let row = index + 1;
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != columns.len() {
                return Err(format!(
                    "row {row}: expected {} columns ({}), found {}",
                    columns.len(),
                    columns.join(","),
                    fields.len()
                ));
            }
            let values = fields
                .iter()
                .zip(columns)
                .map(|(text, column)| {
                    text.parse::<f64>()
                        .map_err(|_| format!("row {row}, column {column}: '{text}' is not a number"))
                })
                .collect::<Result<Vec<f64>, String>>()?;
            Ok((row, values))
        })
        .collect()
}

fn read_parquet(file: &str, columns: &[&str]) -> Result<Vec<Row>, String> {
    use polars::prelude::*;
    let frame = super::parquet::read_parquet(Path::new(file))
        .map_err(|e| format!("not a readable Parquet file ({e})"))?;
    let mut values: Vec<Vec<Option<f64>>> = Vec::with_capacity(columns.len());
    for column in columns {
        let series = frame
            .column(column)
            .map_err(|_| format!("column {column}: missing (the columns must be {})", columns.join(",")))?;
        let numbers = Some(series)
            .filter(|s| s.dtype().is_primitive_numeric())
            .and_then(|s| s.cast(&DataType::Float64).ok())
            .ok_or_else(|| format!("column {column}: is {}, not numbers", series.dtype()))?;
        let numbers = numbers.f64().map_err(|e| format!("column {column}: {e}"))?;
        values.push(numbers.iter().collect());
    }
    (0..frame.height())
        .map(|i| {
            let row = i + 1;
            let cells = values
                .iter()
                .zip(columns)
                .map(|(column, name)| column[i].ok_or_else(|| format!("row {row}, column {name}: empty")))
                .collect::<Result<Vec<f64>, String>>()?;
            Ok((row, cells))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::availability::{measured_online_share, Availability, AvailabilityModel, FOREVER};
    use crate::sim::time::SimTime;
    use std::sync::Arc;

    #[test]
    fn csv_and_parquet_give_the_same_rows_and_name_bad_cells() {
        let dir = std::env::temp_dir().join(format!("fedsim-trace-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("t.csv");
        std::fs::write(&csv, "client,speed\n0,1.5\n\n2,0.5\n").unwrap();
        let rows = read_columns(csv.to_str().unwrap(), &["client", "speed"]).unwrap();
        assert_eq!(rows, [(2, vec![0.0, 1.5]), (4, vec![2.0, 0.5])]);
        let parquet = dir.join("t.parquet");
        let mut frame = polars::prelude::df!("speed" => [1.5f32, 0.5], "client" => [0u32, 2]).unwrap();
        let file = std::fs::File::create(&parquet).unwrap();
        polars::prelude::ParquetWriter::new(file).finish(&mut frame).unwrap();
        let rows = read_columns(parquet.to_str().unwrap(), &["client", "speed"]).unwrap();
        assert_eq!(rows, [(1, vec![0.0, 1.5]), (2, vec![2.0, 0.5])]);
        let missing = read_columns(parquet.to_str().unwrap(), &["client", "bandwidth"]).unwrap_err();
        assert_eq!(missing, "column bandwidth: missing (the columns must be client,bandwidth)");
        std::fs::write(&csv, "client,speed\n0,fast\n").unwrap();
        let bad = read_columns(csv.to_str().unwrap(), &["client", "speed"]).unwrap_err();
        assert_eq!(bad, "row 2, column speed: 'fast' is not a number");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn trace(name: &str, text: &str, clients: usize) -> Result<TraceWindows, String> {
        let path = std::env::temp_dir().join(format!("fedsim-trace-{}-{name}.csv", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let result = read_availability_trace(path.to_str().unwrap(), clients);
        let _ = std::fs::remove_file(&path);
        result
    }

    #[test]
    fn a_trace_lists_online_windows_and_bad_rows_are_named() {
        let t = |u: f64| SimTime::from_units(u);
        let windows = trace("ok", "client,start,end\n1,5,6\n0,0,2\n0,2,3\n1,1,2\n", 3).unwrap();
        assert_eq!(windows.clients[0], [(t(0.0), t(3.0))], "touching windows merge");
        assert_eq!(windows.clients[1], [(t(1.0), t(2.0)), (t(5.0), t(6.0))], "sorted");
        assert!(windows.clients[2].is_empty());
        let model = AvailabilityModel::Trace { file: "ok".into(), windows: Arc::new(windows) };
        let mut a = Availability::new(&model, 3, 0);
        assert!(a.online(0, t(0.0)) && a.offline_at(0, t(0.0)) == Some(t(3.0)));
        assert!(!a.online(1, t(0.5)) && a.next_online(1, t(0.5)) == t(1.0));
        assert_eq!(a.next_online(1, t(3.0)), t(5.0));
        assert_eq!(a.next_online(1, t(7.0)), FOREVER, "offline for ever after the last window");
        assert_eq!(a.next_online(2, t(0.0)), FOREVER);
        let share = measured_online_share(&model, 3, 0, t(6.0));
        assert!((share - 5.0 / 18.0).abs() < 1e-9, "{share}");
        for (text, error) in [
            ("start,end\n0,1\n", "row 1: the header must be client,start,end"),
            ("client,start,end\n0,1\n", "row 2: expected 3 columns"),
            ("client,start,end\n0,0,1\n7,0,1\n", "row 3, column client: '7' is not a client 0..2"),
            ("client,start,end\n0,-1,1\n", "row 2, column start: '-1' is not a finite, non-negative"),
            ("client,start,end\n0,1,nan\n", "row 2, column end: 'NaN' is not a finite"),
            ("client,start,end\n0,2,1\n", "row 2, column end: 1 is not after start 2"),
            ("client,start,end\n0,0,2\n1,0,1\n0,1,3\n", "rows 2 and 4: client 0's online windows overlap"),
            ("client,start,end\n", "no online window"),
            ("", "row 1: the header"),
        ] {
            let message = trace("bad", text, 3).unwrap_err();
            assert!(message.contains(error), "{text:?}: {message}");
        }
        assert!(read_availability_trace("/no/such/trace.csv", 3).is_err());
        // The same windows as Parquet.
        let parquet =
            std::env::temp_dir().join(format!("fedsim-availability-{}.parquet", std::process::id()));
        let mut frame =
            polars::prelude::df!("client" => [1i64, 0, 1], "start" => [5.0, 0.0, 1.0], "end" => [6.0, 3.0, 2.0]).unwrap();
        polars::prelude::ParquetWriter::new(std::fs::File::create(&parquet).unwrap())
            .finish(&mut frame)
            .unwrap();
        let from_parquet = read_availability_trace(parquet.to_str().unwrap(), 3).unwrap();
        let _ = std::fs::remove_file(&parquet);
        assert_eq!(from_parquet.clients[0], [(t(0.0), t(3.0))]);
        assert_eq!(from_parquet.clients[1], [(t(1.0), t(2.0)), (t(5.0), t(6.0))]);
    }
}

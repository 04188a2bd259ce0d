//! Trace files: per-client tables given as CSV (a header naming the columns, then one row per
//! line) or Parquet (columns by name, any numeric type). Both read into numbers by row; every
//! problem names the row and column (CSV rows count lines, the header being row 1; Parquet rows
//! count from 1). Callers name the file.

use std::path::Path;

/// One data row: its number as errors name it, and its values in the order asked for.
pub type Row = (usize, Vec<f64>);

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
    let frame = crate::record::read_parquet(Path::new(file))
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

/// A client id cell: a whole number in 0..num_clients.
pub fn client(row: usize, value: f64, num_clients: usize) -> Result<usize, String> {
    if value.fract() == 0.0 && value >= 0.0 && (value as usize) < num_clients {
        Ok(value as usize)
    } else {
        Err(format!(
            "row {row}, column client: '{value}' is not a client 0..{}",
            num_clients.saturating_sub(1)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(client(5, 2.5, 4).unwrap_err(), "row 5, column client: '2.5' is not a client 0..3");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

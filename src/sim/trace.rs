//! Trace rows: per-client tables (device factors, online windows) as numbers by row, each row
//! with its number as errors name it. Reading them from CSV or Parquet files is
//! `data::trace_file`'s: the event engine does no I/O.

/// One data row: its number as errors name it, and its values in the order asked for.
pub type Row = (usize, Vec<f64>);

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
    fn a_client_cell_is_a_whole_number_below_the_count() {
        assert_eq!(client(2, 3.0, 4), Ok(3));
        assert_eq!(client(5, 2.5, 4).unwrap_err(), "row 5, column client: '2.5' is not a client 0..3");
        assert!(client(1, 4.0, 4).is_err() && client(1, -1.0, 4).is_err());
    }
}

//! Checks a Parquet file's structure before polars decodes it. polars trusts the value counts
//! in page headers: a damaged one (a negative count read as 2^64 - k) makes it reserve 2^61
//! bytes, and an allocation failure aborts the process where no `catch_unwind` can turn it
//! into an error. So the footer and every page header are read first, with polars' own
//! Parquet parser, and counts and sizes that no well-formed file has are refused.

use std::io::Cursor;

use polars_buffer::Buffer;
use polars_parquet::parquet::metadata::FileMetadata;
use polars_parquet::parquet::page::{CompressedPage, DataPageHeader};
use polars_parquet::parquet::read::{get_page_iterator, read_metadata};

/// Pages larger than this are refused (fedsim writes pages of about 1 MiB).
const MAX_PAGE_BYTES: usize = 256 << 20;

/// Files with more rows are refused: far above any run's log (the paper's 12,687 versions
/// write about 10^5 update rows), and small enough that a decoder's buffers for them can be
/// allocated instead of aborting the process.
const MAX_ROWS: usize = 1 << 28;

/// The file's footer when every count in the file is one a decoder can trust (polars then
/// decodes with it rather than parsing the footer again); otherwise what is wrong.
pub fn check_structure(bytes: &Buffer<u8>) -> Result<FileMetadata, String> {
    let metadata = read_metadata(&mut Cursor::new(bytes.clone())).map_err(|e| format!("footer: {e}"))?;
    let rows_in_groups = metadata.row_groups.iter().try_fold(0usize, |sum, g| sum.checked_add(g.num_rows()));
    let Some(rows_in_groups) = rows_in_groups.filter(|&rows| rows <= MAX_ROWS) else {
        return Err(format!("more than {MAX_ROWS} rows (the most that is read)"));
    };
    if rows_in_groups != metadata.num_rows {
        return Err(format!("the footer counts {} rows, its row groups {rows_in_groups}", metadata.num_rows));
    }
    for (group_index, group) in metadata.row_groups.iter().enumerate() {
        for column in group.parquet_columns() {
            let name = &column.descriptor().path_in_schema.join(".");
            let at = || format!("row group {group_index}, column {name}");
            let values = column.num_values();
            // A flat column holds one value (or null) per row; fedsim writes no nested ones.
            if column.descriptor().descriptor.max_rep_level != 0 {
                return Err(format!("{}: a nested column (fedsim's tables are flat)", at()));
            }
            if values < 0 || values as u64 != group.num_rows() as u64 {
                return Err(format!("{}: {values} values in {} rows", at(), group.num_rows()));
            }
            let pages = get_page_iterator(column, Cursor::new(bytes.clone()), Vec::new(), MAX_PAGE_BYTES)
                .map_err(|e| format!("{}: {e}", at()))?;
            let mut seen: i64 = 0;
            for page in pages {
                let page = page.map_err(|e| format!("{}: {e}", at()))?;
                let CompressedPage::Data(page) = page else { continue };
                if page.uncompressed_size() > MAX_PAGE_BYTES {
                    return Err(format!("{}: a page of {} bytes", at(), page.uncompressed_size()));
                }
                let (count, nulls) = match page.header() {
                    DataPageHeader::V1(h) => (h.num_values, 0),
                    DataPageHeader::V2(h) => {
                        if h.num_rows < 0 || h.num_rows > h.num_values {
                            return Err(format!("{}: a page of {} rows", at(), h.num_rows));
                        }
                        (h.num_values, h.num_nulls)
                    }
                };
                if count < 0 || nulls < 0 || nulls > count || seen + count as i64 > values {
                    return Err(format!("{}: a page of {count} values ({nulls} null) after {seen}", at()));
                }
                seen += count as i64;
            }
            if seen != values {
                return Err(format!("{}: pages hold {seen} values, the footer says {values}", at()));
            }
        }
    }
    Ok(metadata)
}

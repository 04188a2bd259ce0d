//! Mutation fuzzing of every reader of outside bytes, on stable Rust: the config parser (TOML
//! and the reference's JSON), the CIFAR-10 and IDX readers, the run-directory reader that
//! reports use (run.json, config.toml, Parquet tables) and the checkpoint reader. Each target
//! takes seed inputs (its corpus: `tests/fuzz-corpus/`, the shipped configs, the prepared
//! data), mutates them with a seeded ChaCha stream (bit flips, interesting bytes, inserted,
//! deleted, duplicated and spliced ranges, truncation; for text also lines and numbers) and
//! asserts that the reader returns, Ok or Err, without panicking and within 10 s.
//!
//! CI runs each target for `FEDSIM_FUZZ_SECONDS` (default 3); `just fuzz` runs each for 600.
//! A failing input is written to `target/fuzz-failures/` and named in the panic; findings are
//! added to the corpus once fixed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{repo, scratch};

/// How long each target runs.
fn budget() -> Duration {
    let seconds = std::env::var("FEDSIM_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    Duration::from_secs_f64(seconds)
}

fn corpus(target: &str) -> PathBuf {
    repo().join("tests/fuzz-corpus").join(target)
}

/// The files of a corpus folder.
fn files_in(folder: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(folder)
        .map(|d| d.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

const INTERESTING: [u8; 8] = [0x00, 0xff, 0x7f, 0x80, b'"', b'[', b'=', b'\n'];
const NUMBERS: [&str; 10] = [
    "0",
    "-1",
    "1e309",
    "nan",
    "inf",
    "-0.0",
    "18446744073709551616",
    "9223372036854775807",
    "1e-320",
    "\"x\"",
];

/// One to four random edits of `input` (`other` for splicing).
fn mutate(input: &[u8], other: &[u8], text: bool, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = bytes.len();
        let at = if len == 0 { 0 } else { rng.random_range(0..len) };
        let span = rng.random_range(1..=64).min(len - at.min(len)).max(usize::from(len > 0));
        match rng.random_range(0..if text { 10 } else { 8 }) {
            0 if len > 0 => bytes[at] ^= 1 << rng.random_range(0..8),
            1 if len > 0 => bytes[at] = INTERESTING[rng.random_range(0..INTERESTING.len())],
            2 => {
                let insert: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                bytes.splice(at..at, insert);
            }
            3 if len > 0 => {
                bytes.drain(at..(at + span).min(len));
            }
            4 if len > 0 => {
                let copy = bytes[at..(at + span).min(len)].to_vec();
                let to = rng.random_range(0..=len);
                bytes.splice(to..to, copy);
            }
            5 => bytes.truncate(rng.random_range(0..=len)),
            6 if !other.is_empty() => {
                let from = rng.random_range(0..other.len());
                let piece = &other[from..(from + rng.random_range(1..256)).min(other.len())];
                bytes.splice(at..(at + span).min(len), piece.iter().copied());
            }
            7 if len >= 8 => {
                // A length or count field: a word set to an extreme.
                let word = [0u8, 0xff, 0x7f][rng.random_range(0..3)];
                let start = at.min(len - 4);
                bytes[start..start + 4].fill(word);
            }
            8 => {
                // A line deleted or duplicated.
                let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
                let pick = rng.random_range(0..lines.len());
                let mut out: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
                if rng.random() {
                    out.remove(pick);
                } else {
                    out.insert(pick, lines[pick].to_vec());
                }
                bytes = out.join(&b'\n');
            }
            9 => {
                // A number replaced by an extreme one.
                if let Some(start) = (at..len).find(|&i| bytes[i].is_ascii_digit()) {
                    let end =
                        (start..len).find(|&i| !bytes[i].is_ascii_digit() && bytes[i] != b'.').unwrap_or(len);
                    let number = NUMBERS[rng.random_range(0..NUMBERS.len())].as_bytes().to_vec();
                    bytes.splice(start..end, number);
                }
            }
            _ => {}
        }
    }
    bytes
}

/// Runs `target` on mutations of `seeds` for the budget; a panic or a case over 10 s fails,
/// naming the file its input was saved to. `target` says whether the reader accepted the
/// input. Returns the number of cases run.
fn fuzz(name: &str, seeds: &[Vec<u8>], text: bool, mut target: impl FnMut(&[u8]) -> bool) -> u64 {
    assert!(!seeds.is_empty(), "{name}: no seed inputs");
    let budget = budget();
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(name.len() as u64 * 7919);
    let (mut cases, mut accepted) = (0u64, 0u64);
    while started.elapsed() < budget {
        let seed = &seeds[rng.random_range(0..seeds.len())];
        let other = &seeds[rng.random_range(0..seeds.len())];
        let input = mutate(seed, other, text, &mut rng);
        let case_started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
        accepted += matches!(outcome, Ok(true)) as u64;
        let slow = case_started.elapsed() > Duration::from_secs(10);
        if outcome.is_err() || slow {
            let folder = repo().join("target/fuzz-failures");
            std::fs::create_dir_all(&folder).unwrap();
            let file = folder.join(format!("{name}-{cases}"));
            std::fs::write(&file, &input).unwrap();
            panic!(
                "{name}: case {cases} {} (input in {})",
                if slow { "took over 10 s" } else { "panicked" },
                file.display()
            );
        }
        cases += 1;
    }
    eprintln!(
        "fuzz {name}: {cases} cases in {:.0} s, {accepted} accepted, the rest refused with an error; none panicked",
        started.elapsed().as_secs_f64()
    );
    cases
}

#[test]
fn fuzz_config_parser() {
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(repo().join("sim-configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    seeds.extend(files_in(&corpus("config")));
    let cases = fuzz("config", &seeds, true, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        fedsim::config::Config::from_toml(&text, "fuzz", "fuzz.toml", &[]).is_ok()
    });
    assert!(cases > 0);
}

#[test]
fn fuzz_reference_json_import() {
    let seeds = files_in(&corpus("json"));
    fuzz("json", &seeds, true, |bytes| {
        match fedsim::config::import::reference_config(&String::from_utf8_lossy(bytes)) {
            Ok(imported) => toml::to_string(&imported.config).is_ok(),
            Err(_) => false,
        }
    });
}

#[test]
fn fuzz_cifar_reader() {
    // The prepared test file (30 MB): mutations keep most of it, so the label scan runs.
    let file = crate::dirs().root.join(fedsim::data::cifar::DIR_NAME).join(fedsim::data::cifar::TEST_FILE);
    let seeds = vec![std::fs::read(&file).unwrap()];
    fuzz("cifar", &seeds, false, |bytes| {
        fedsim::data::cifar::check_records(Path::new("test_batch.bin"), bytes).is_ok()
    });
}

#[test]
fn fuzz_idx_reader() {
    use std::io::Read as _;
    let folder = crate::dirs().fashion_mnist;
    let mut seeds = Vec::new();
    for name in ["t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"] {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&std::fs::read(folder.join(name)).unwrap()[..])
            .read_to_end(&mut raw)
            .unwrap();
        seeds.push(raw);
    }
    fuzz("idx", &seeds, false, |bytes| {
        [0x0000_0801, 0x0000_0803]
            .iter()
            .any(|&magic| fedsim::data::idx::parse(Path::new("fuzz-idx"), bytes, magic).is_ok())
    });
}

/// The files of a run directory that reports read.
const RUN_FILES: [&str; 5] = ["run.json", "config.toml", "updates.parquet", "evals.parquet", "jobs.parquet"];

#[test]
fn fuzz_run_directory_reader() {
    // A small run's files; each case puts its bytes in place of each file in turn, the others
    // intact. Seeds: the files and past findings (run-findings/).
    let seed_dir = corpus("run");
    let originals: Vec<Vec<u8>> =
        RUN_FILES.iter().map(|n| std::fs::read(seed_dir.join(n)).unwrap()).collect();
    let mut seeds = originals.clone();
    seeds.extend(files_in(&corpus("run-findings")));
    let work = scratch("fuzz-run-dir");
    assert!(fedsim::report::logs::RunLogs::load(&seed_dir).is_ok(), "the seed run reads");
    // polars aborted the process on one input (an allocation failure cannot be caught; such
    // inputs are now refused before polars decodes them), so each case's input is on disk
    // before it runs: after an abort it is in `current`.
    let current = repo().join("target/fuzz-failures/run-dir-current");
    std::fs::create_dir_all(current.parent().unwrap()).unwrap();
    fuzz("run-dir", &seeds, false, |bytes| {
        std::fs::write(&current, bytes).unwrap();
        let mut any = false;
        for name in RUN_FILES {
            for (other, original) in RUN_FILES.iter().zip(&originals) {
                std::fs::write(work.join(other), if *other == name { bytes } else { original }).unwrap();
            }
            any |= fedsim::report::logs::RunLogs::load(&work).is_ok();
        }
        any
    });
}

/// Fuzzing found three Parquet files polars cannot read safely: on the first its reader panics
/// (a validity bitmap longer than its column), on the second it reserves 2^61 bytes and the
/// allocation failure aborts the process (a page header's negative value count), on the third
/// its footer parser panics (a malformed boolean). Reading any is an error naming the table,
/// in every table's place.
#[test]
fn parquet_files_that_broke_polars_are_errors() {
    for finding in
        ["bitmap-past-its-column.parquet", "updates-negative-count.parquet", "footer-bad-bool.parquet"]
    {
        let bytes = std::fs::read(corpus("run-findings").join(finding)).unwrap();
        let work = scratch("fuzz-finding");
        for table in ["updates", "evals", "jobs"] {
            for name in RUN_FILES {
                std::fs::copy(corpus("run").join(name), work.join(name)).unwrap();
            }
            std::fs::write(work.join(format!("{table}.parquet")), &bytes).unwrap();
            let Err(error) = fedsim::report::logs::RunLogs::load(&work) else {
                panic!("{finding} in place of the {table} table is read")
            };
            let error = error.to_string();
            assert!(error.contains(&format!("{table}.parquet")) && error.contains("damaged"), "{error}");
        }
    }
    // The page-header check catches the second before polars decodes, and names the column.
    let direct = fedsim::record::read_parquet(&corpus("run-findings").join("updates-negative-count.parquet"));
    let error = direct.expect_err("the damaged table is read").to_string();
    assert!(error.contains("row group 0, column"), "{error}");
}

#[test]
fn fuzz_checkpoint_reader() {
    let seeds = files_in(&corpus("checkpoint"));
    assert!(fedsim::record::checkpoint::parse(&seeds[0]).is_ok(), "the seed checkpoint reads");
    fuzz("checkpoint", &seeds, false, |bytes| fedsim::record::checkpoint::parse(bytes).is_ok());
}

/// The checkpoint's JSON header mutated as text (numbers, lines, bytes) inside an otherwise
/// well-formed file, so that the reader's checks past the header parse are reached.
#[test]
fn fuzz_checkpoint_header() {
    let seeds = files_in(&corpus("checkpoint"));
    let split = |file: &[u8]| {
        let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        (file[8..8 + n].to_vec(), file[8 + n..].to_vec())
    };
    let (_, data) = split(&seeds[0]);
    let headers: Vec<Vec<u8>> = seeds.iter().map(|s| split(s).0).collect();
    fuzz("checkpoint-header", &headers, true, |header| {
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        file.extend_from_slice(&data);
        fedsim::record::checkpoint::parse(&file).is_ok()
    });
}

//! The layering rules of docs/ARCHITECTURE.md, read off the source: a part may not import what
//! sits above it. A failure names the file, the line and the rule it breaks.

use std::path::{Path, PathBuf};

use crate::repo;

/// (folder, what its files must not name, why).
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "src/sim",
        &["tch::", "use tch", "crate::record", "crate::exec", "std::fs", "polars"],
        "the event engine knows no tensors, files, records or executor",
    ),
    (
        "src/sched",
        &["tch::", "use tch", "crate::record", "crate::exec"],
        "policies plan without tensors, records or executor",
    ),
    (
        "src/fl",
        &["tch::", "use tch", "crate::record", "crate::exec"],
        "server rules are maths on weights, not on the executor or records",
    ),
    ("src/report", &["crate::exec"], "reports read saved runs only"),
    ("src/nn", &["crate::exec"], "models and training know nothing of the executor"),
];

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Whether `line` names `pattern` as a path of its own (not as the tail of a longer name, such
/// as `match::` for `tch::`).
fn names(line: &str, pattern: &str) -> bool {
    line.match_indices(pattern)
        .any(|(at, _)| !line[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_'))
}

#[test]
fn no_part_imports_what_sits_above_it() {
    let mut broken = Vec::new();
    for (folder, forbidden, why) in RULES {
        let mut files = Vec::new();
        rust_files(&repo().join(folder), &mut files);
        assert!(!files.is_empty(), "{folder} holds no Rust files: update the rules");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for pattern in forbidden.iter().filter(|p| names(code, p)) {
                    broken.push(format!("{}:{}: names {pattern} ({why})", file.display(), number + 1));
                }
            }
        }
    }
    assert!(broken.is_empty(), "layering rules broken:\n{}", broken.join("\n"));
}

#[test]
fn the_rule_reader_tells_a_path_from_the_tail_of_a_name() {
    assert!(names("use tch::Tensor;", "tch::") && names("let t = tch::no_grad(f);", "tch::"));
    assert!(!names("Dispatch::Now", "tch::") && !names("a.match::<T>()", "tch::"));
    assert!(names("crate::record::read_parquet(p)", "crate::record"));
}

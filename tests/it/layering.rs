//! The layering rules of docs/ARCHITECTURE.md, read off the source: a part may not import what
//! sits above it. A failure names the file, the line and the rule it breaks.

use std::collections::{BTreeMap, BTreeSet};
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

/// What only the command line may name: the commands sit on top of the library.
const COMMANDS: &[&str] = &["crate::commands", "crate::cli"];

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

/// Each line of `files` that names one of `forbidden` in its code (comments aside), as
/// "file:line: names PATTERN (why)".
fn lines_naming(files: &[PathBuf], forbidden: &[&str], why: &str) -> Vec<String> {
    let mut broken = Vec::new();
    for file in files {
        for (number, line) in std::fs::read_to_string(file).unwrap().lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for pattern in forbidden.iter().filter(|p| names(code, p)) {
                broken.push(format!("{}:{}: names {pattern} ({why})", file.display(), number + 1));
            }
        }
    }
    broken
}

#[test]
fn no_part_imports_what_sits_above_it() {
    let mut broken = Vec::new();
    for (folder, forbidden, why) in RULES {
        let mut files = Vec::new();
        rust_files(&repo().join(folder), &mut files);
        assert!(!files.is_empty(), "{folder} holds no Rust files: update the rules");
        broken.extend(lines_naming(&files, forbidden, why));
    }
    assert!(broken.is_empty(), "layering rules broken:\n{}", broken.join("\n"));
}

#[test]
fn only_the_command_line_names_the_commands() {
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    let commands = repo().join("src/commands");
    files.retain(|f| !f.starts_with(&commands) && !f.ends_with("cli.rs"));
    let broken = lines_naming(&files, COMMANDS, "the library calls no command");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// A file's module path under src/ ("exec::table", "exec" for exec/mod.rs, "" for lib.rs).
fn module_of(file: &Path, src: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let parts = match parts.last().map(String::as_str) {
        Some("mod") | Some("lib") | Some("main") => &parts[..parts.len() - 1],
        _ => &parts[..],
    };
    parts.join("::")
}

/// The modules a file's code names through `crate::` and `super::` paths (the longest prefix
/// that is a module), itself and its ancestors left out.
fn imports(code: &str, module: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let parent: Vec<&str> = module.split("::").filter(|p| !p.is_empty()).collect();
    let parent = &parent[..parent.len().saturating_sub(1)];
    let mut found = BTreeSet::new();
    for (prefix, base) in [("crate::", &[][..]), ("super::", parent)] {
        for (at, _) in code.match_indices(prefix) {
            if code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: Vec<&str> = code[at + prefix.len()..]
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::")
                .collect();
            let named = (1..=path.len())
                .rev()
                .map(|k| base.iter().chain(&path[..k]).copied().collect::<Vec<_>>().join("::"))
                .find(|m| modules.contains(m));
            if let Some(named) = named.filter(|m| m != module && !module.starts_with(&format!("{m}::"))) {
                found.insert(named);
            }
        }
    }
    found
}

/// Modules that import each other, through any chain: the import graph's cycles.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reaches = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(m) = todo.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|m| (m, reaches(m))).collect();
    let mut circles: Vec<Vec<String>> = Vec::new();
    for (m, from_m) in &reach {
        if !from_m.contains(*m) || circles.iter().any(|c| c.contains(m)) {
            continue;
        }
        circles.push(from_m.iter().filter(|other| reach[other].contains(*m)).cloned().collect());
    }
    circles
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f, &src)).collect();
    let graph: BTreeMap<String, BTreeSet<String>> = files
        .iter()
        .map(|file| {
            let module = module_of(file, &src);
            let text = std::fs::read_to_string(file).unwrap();
            // Unit tests may reach anywhere in their module's part.
            let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            let code: String =
                text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
            let found = imports(&code, &module, &modules);
            (module, found)
        })
        .collect();
    let circles = circles(&graph);
    assert!(circles.is_empty(), "modules in import circles (see docs/ARCHITECTURE.md): {circles:?}");
}

#[test]
fn the_circle_finder_finds_a_circle_and_reads_paths_as_modules() {
    let modules: BTreeSet<String> = ["a", "a::b", "a::c", "d"].iter().map(|s| s.to_string()).collect();
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        imports("use super::c::X; crate::a::b::f(); crate::d::g()", "a::b", &modules),
        set(&["a::c", "d"])
    );
    assert_eq!(imports("use crate::d; my_crate::a::c::g()", "a", &modules), set(&["d"]));
    let edge = |from: &str, to: &[&str]| (from.to_owned(), to.iter().map(|s| s.to_string()).collect());
    let graph = BTreeMap::from([edge("a", &["b"]), edge("b", &["c"]), edge("c", &["a"]), edge("d", &["a"])]);
    assert_eq!(circles(&graph), vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]);
    assert!(circles(&BTreeMap::from([edge("a", &["b"]), edge("b", &[])])).is_empty());
}

#[test]
fn the_rule_reader_tells_a_path_from_the_tail_of_a_name() {
    assert!(names("use tch::Tensor;", "tch::") && names("let t = tch::no_grad(f);", "tch::"));
    assert!(!names("Dispatch::Now", "tch::") && !names("a.match::<T>()", "tch::"));
    assert!(names("crate::record::read_parquet(p)", "crate::record"));
}

/// Library errors are typed, one type per area (ConfigError, RecordError, ExecError...), so a
/// caller can tell them apart; anyhow, which erases the type, is for the command layer only.
#[test]
fn only_the_command_line_uses_anyhow() {
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    let commands = repo().join("src/commands");
    files.retain(|f| !f.starts_with(&commands) && !f.ends_with("cli.rs") && !f.ends_with("main.rs"));
    let broken = lines_naming(&files, &["anyhow"], "typed errors below the command layer");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

//! Tidy checks on the source itself (as rust-analyzer's `tidy.rs`): every `crate::` path in
//! `src/` names a top-level module the table of `docs/ARCHITECTURE.md` allows, the table is
//! acyclic and names exactly the modules there are. The table is read from the document, so the
//! two cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The document whose table is the rule.
const ARCHITECTURE: &str = "docs/ARCHITECTURE.md";

/// The files of `src/` that belong to no module of the table: the binary (it sees the library
/// from outside, as `mcp_pyrepl::`) and the module list.
const OUTSIDE: [&str; 2] = ["main.rs", "lib.rs"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rows of the allowed-edges table: module -> modules it may use.
fn allowed_edges() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(root().join(ARCHITECTURE)).expect("docs/ARCHITECTURE.md");
    let section = text.split("\n## Allowed edges").nth(1).expect("an `## Allowed edges` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut table = BTreeMap::new();
    for line in section.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').collect();
        let module = backticked(cells[1]).pop().expect("a module in the first cell");
        let uses = backticked(cells[2]).into_iter().collect();
        assert!(table.insert(module.clone(), uses).is_none(), "{ARCHITECTURE}: `{module}` has two rows");
    }
    assert!(!table.is_empty(), "{ARCHITECTURE}: the allowed-edges table has no rows");
    table
}

/// The `names` in backticks in `cell`.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to.
fn module_of(relative: &Path) -> String {
    let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The top-level modules a line names through `crate::` paths, including the branches of a
/// `use crate::{a::X, b::Y}` group (which may continue on the lines after `rest`).
fn named_modules(line: &str, rest: &[&str]) -> Vec<String> {
    let code = line.split("//").next().unwrap_or(line);
    let mut named = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `mcp_pyrepl::...` or another crate's `...crate::`
        }
        let after = &code[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut text = group.to_owned();
            for more in rest {
                if text.contains('}') {
                    break;
                }
                text.push_str(more.split("//").next().unwrap_or(more));
            }
            let mut depth = 0;
            let mut item = String::new();
            for c in text.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        named.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            named.push(item);
        } else {
            named.push(after.to_owned());
        }
    }
    named
        .iter()
        .map(|path| {
            path.trim().split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("").to_owned()
        })
        .filter(|module| !module.is_empty())
        .collect()
}

#[test]
fn every_crate_path_follows_the_architecture_table() {
    let table = allowed_edges();
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut modules = BTreeSet::new();
    let mut broken = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        if OUTSIDE.iter().any(|outside| relative == Path::new(outside)) {
            continue;
        }
        let module = module_of(relative);
        modules.insert(module.clone());
        let Some(allowed) = table.get(&module) else {
            broken
                .push(format!("src/{}: module `{module}` has no row in {ARCHITECTURE}", relative.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for used in named_modules(line, &lines[index + 1..]) {
                if used != module && !allowed.contains(&used) {
                    let rule = if allowed.is_empty() { "nothing".to_owned() } else { join(allowed) };
                    broken.push(format!(
                        "src/{}:{}: `{module}` uses `{used}`, but {ARCHITECTURE} allows `{module}` only {rule}",
                        relative.display(),
                        index + 1
                    ));
                }
            }
        }
    }
    let rows: BTreeSet<String> = table.keys().cloned().collect();
    for stale in rows.difference(&modules) {
        broken.push(format!("{ARCHITECTURE}: the table has a row for `{stale}`, which is no module of src/"));
    }
    for (module, uses) in &table {
        for used in uses.difference(&rows) {
            broken.push(format!("{ARCHITECTURE}: `{module}` may use `{used}`, which has no row"));
        }
    }
    assert!(broken.is_empty(), "the module graph breaks {ARCHITECTURE}:\n{}", broken.join("\n"));
}

#[test]
fn the_architecture_table_is_acyclic_and_ordered_bottom_up() {
    let table = allowed_edges();
    let text = std::fs::read_to_string(root().join(ARCHITECTURE)).unwrap();
    let section = text.split("\n## Allowed edges").nth(1).unwrap();
    let order: Vec<String> = section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| backticked(line.split('|').nth(1).unwrap()).pop().unwrap())
        .collect();
    // Each row may only use rows above it: then no path of edges can come back to its start.
    for (position, module) in order.iter().enumerate() {
        for used in &table[module] {
            let above = order[..position].contains(used);
            assert!(above, "{ARCHITECTURE}: `{module}` uses `{used}`, which is not in a row above it");
        }
    }
}

fn join(modules: &BTreeSet<String>) -> String {
    modules.iter().map(|module| format!("`{module}`")).collect::<Vec<_>>().join(", ")
}

#[test]
fn crate_paths_are_read_from_uses_groups_and_plain_paths() {
    let lines = ["use crate::{graph::CellId,", "    kernel::{Kernel, Output}, util};"];
    assert_eq!(named_modules(lines[0], &lines[1..]), ["graph", "kernel", "util"]);
    assert_eq!(named_modules("    let x = crate::util::shorten(a, 3); // crate::mcp", &[]), ["util"]);
    assert_eq!(named_modules("use mcp_pyrepl::config::Settings;", &[]), Vec::<String>::new());
}

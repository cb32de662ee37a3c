//! Tidy rules that clippy cannot express, checked over the workspace's manifests and sources.
//!
//! Each rule is a plain test that reads files (or `cargo metadata`) and names every offender
//! with its path and line, so a failure says exactly what to fix. The rules only read.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates that would let the engine do I/O, run on an async runtime or draw OS randomness.
const ENGINE_FORBIDDEN_DEPENDENCIES: &[&str] =
    &["tokio", "async-std", "smol", "mio", "hyper", "reqwest", "rusqlite", "rand", "getrandom"];

/// Words that mean the engine reads a clock, sleeps, does I/O, draws OS randomness or
/// iterates a hash map.
const ENGINE_FORBIDDEN_WORDS: &[&str] = &[
    "tokio",
    "Instant::now",
    "SystemTime::now",
    "thread::sleep",
    "HashMap",
    "HashSet",
    "thread_rng",
    "OsRng",
    "std::fs",
    "std::net",
];

/// The folders whose `.rs` files must open with a `//!` module comment.
const MODULE_COMMENT_FOLDERS: &[&str] = &["engine", "sim", "scenarios", "runtime", "cli", "tests"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace root").to_owned()
}

#[test]
fn engine_depends_on_no_async_runtime_io_or_randomness_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let closure = normal_dependency_closure(&metadata, "tempest-engine");
    let found: Vec<String> = closure
        .iter()
        .filter(|(name, _)| ENGINE_FORBIDDEN_DEPENDENCIES.contains(&name.as_str()))
        .map(|(name, via)| format!("{name} (via {via})"))
        .collect();
    assert!(
        found.is_empty(),
        "tempest-engine must not depend on an async runtime, I/O or OS randomness crate; \
         its dependencies include: {}",
        found.join(", ")
    );
}

/// The packages `root` needs to build as a library (normal and build dependencies, not dev
/// ones), by name, each with the package that pulled it in.
fn normal_dependency_closure(metadata: &Value, root: &str) -> BTreeMap<String, String> {
    let name_of: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("metadata lists packages")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("metadata has a resolve graph")
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root_id = *name_of
        .iter()
        .find(|(_, name)| **name == root)
        .unwrap_or_else(|| panic!("package {root} is in the workspace"))
        .0;
    let mut closure = BTreeMap::new();
    let mut seen = BTreeSet::from([root_id]);
    let mut queue = vec![root_id];
    while let Some(id) = queue.pop() {
        for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
            let is_dev_only =
                dep["dep_kinds"].as_array().into_iter().flatten().all(|kind| kind["kind"].as_str() == Some("dev"));
            let dep_id = dep["pkg"].as_str().unwrap();
            if is_dev_only || !seen.insert(dep_id) {
                continue;
            }
            closure.insert(name_of[dep_id].to_owned(), name_of[id].to_owned());
            queue.push(dep_id);
        }
    }
    closure
}

#[test]
fn engine_sources_use_no_clock_sleep_io_os_randomness_or_hash_map() {
    let engine_src = workspace_root().join("engine/src");
    let mut offenders = Vec::new();
    for file in rust_files(&engine_src) {
        let text = std::fs::read_to_string(&file).expect("engine sources are UTF-8");
        let code = strip_comments_and_literals(&text);
        for (line_index, line) in code.lines().enumerate() {
            for word in ENGINE_FORBIDDEN_WORDS {
                if line.contains(word) {
                    offenders.push(format!("{}:{}: {word}", relative(&file).display(), line_index + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "the engine must stay pure (no clock, sleep, I/O, OS randomness, tokio or hash-order \
         iteration); found outside comments:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn every_rust_file_opens_with_a_module_comment() {
    let root = workspace_root();
    let mut missing = BTreeSet::new();
    for folder in MODULE_COMMENT_FOLDERS {
        for file in rust_files(&root.join(folder)) {
            let text = std::fs::read_to_string(&file).expect("sources are UTF-8");
            if is_generated(&text) {
                continue;
            }
            let first = text.lines().find(|line| !line.trim().is_empty());
            if !first.is_some_and(|line| line.starts_with("//!")) {
                missing.insert(relative(&file).to_string_lossy().replace('\\', "/"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "every module opens with a `//!` comment saying what it owns and what it must never \
         do; these do not: {missing:?}"
    );
}

/// Every `.rs` file under `dir`, skipping build output and hidden folders.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut queue = vec![dir.to_owned()];
    while let Some(dir) = queue.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entries are readable").path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    queue.push(path);
                }
            } else if name.ends_with(".rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Generated files say so near the top, by convention with `@generated`.
fn is_generated(text: &str) -> bool {
    text.lines().take(5).any(|line| line.contains("@generated"))
}

fn relative(path: &Path) -> &Path {
    path.strip_prefix(workspace_root()).unwrap_or(path)
}

/// Rust source with comments blanked out, and string and char literals emptied, keeping
/// line breaks so line numbers still match. A literal names a thing without using it.
fn strip_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut code = String::with_capacity(text.len());
    let mut index = 0;
    let keep_newlines = |code: &mut String, skipped: &[char]| {
        code.extend(skipped.iter().filter(|c| **c == '\n'));
    };
    while index < chars.len() {
        let rest = &chars[index..];
        let skip = match rest {
            ['/', '/', ..] => rest.iter().position(|c| *c == '\n').unwrap_or(rest.len()),
            ['/', '*', ..] => block_comment_len(rest),
            ['"', ..] => quoted_len(rest, '"'),
            ['b', '"', ..] => 1 + quoted_len(&rest[1..], '"'),
            ['r', '"' | '#', ..] | ['b', 'r', '"' | '#', ..]
                if is_raw_string_start(rest) && !continues_identifier(&chars, index) =>
            {
                raw_string_len(rest)
            }
            ['\'', '\\', ..] => quoted_len(rest, '\''),
            ['\'', _, '\'', ..] => 3,
            _ => 0,
        };
        if skip == 0 {
            code.push(chars[index]);
            index += 1;
        } else {
            keep_newlines(&mut code, &rest[..skip]);
            code.push(' ');
            index += skip;
        }
    }
    code
}

fn block_comment_len(rest: &[char]) -> usize {
    let mut depth = 0;
    let mut index = 0;
    while index < rest.len() {
        match &rest[index..] {
            ['/', '*', ..] => {
                depth += 1;
                index += 2;
            }
            ['*', '/', ..] => {
                depth -= 1;
                index += 2;
                if depth == 0 {
                    return index;
                }
            }
            _ => index += 1,
        }
    }
    rest.len()
}

/// Length of a literal opened by `quote` at `rest[0]`, through its closing quote.
fn quoted_len(rest: &[char], quote: char) -> usize {
    let mut index = 1;
    while index < rest.len() {
        match rest[index] {
            '\\' => index += 2,
            c if c == quote => return index + 1,
            _ => index += 1,
        }
    }
    rest.len()
}

fn is_raw_string_start(rest: &[char]) -> bool {
    let after_prefix = if rest[0] == 'b' { &rest[2..] } else { &rest[1..] };
    let hashes = after_prefix.iter().take_while(|c| **c == '#').count();
    after_prefix.get(hashes) == Some(&'"')
}

fn continues_identifier(chars: &[char], index: usize) -> bool {
    index > 0 && (chars[index - 1].is_alphanumeric() || chars[index - 1] == '_')
}

fn raw_string_len(rest: &[char]) -> usize {
    let prefix_len = if rest[0] == 'b' { 2 } else { 1 };
    let hashes = rest[prefix_len..].iter().take_while(|c| **c == '#').count();
    let body_start = prefix_len + hashes + 1;
    let mut index = body_start;
    while index < rest.len() {
        if rest[index] == '"' && rest[index + 1..].iter().take(hashes).filter(|c| **c == '#').count() == hashes {
            return index + 1 + hashes;
        }
        index += 1;
    }
    rest.len()
}

#[test]
fn stripping_keeps_code_and_drops_comments_and_literals() {
    let source = "let a = HashMap::new(); // HashMap here\n\
                  /* std::fs /* nested */ tokio */ let b = \"std::net\";\n\
                  let c = r#\"OsRng \"quoted\"\"#; let d = '\"'; fn f<'a>(x: &'a str) {}\n\
                  /// thread_rng in a doc comment\n\
                  let e = Instant::now();";
    let code = strip_comments_and_literals(source);
    assert_eq!(code.lines().count(), 5, "{code}");
    assert!(code.lines().next().unwrap().contains("HashMap::new()"));
    for gone in ["HashMap here", "std::fs", "tokio", "std::net", "OsRng", "thread_rng"] {
        assert!(!code.contains(gone), "{gone} left in:\n{code}");
    }
    assert!(code.contains("fn f<'a>(x: &'a str)"), "{code}");
    assert!(code.contains("Instant::now()"), "{code}");
}

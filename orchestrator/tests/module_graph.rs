//! The orchestrator's modules depend on each other in one direction only: storage at the
//! bottom, domain services above it, the HTTP and WebSocket layer on top. This test reads the
//! crate's sources, builds the graph of which top-level module names which (`use crate::…`,
//! `super::…`, and `crate::…` paths in code), and fails naming the cycle when one appears.
//!
//! Submodules count as their top-level module (`store::nodes` is `store`): a module and its
//! children form one unit. The crate root (`lib.rs`, `main.rs`) only declares and wires the
//! modules, so it is not a node; a path through a root re-export (`crate::Store`) counts as a
//! dependency on the module the root takes it from.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("source directory readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The module path of a source file relative to `src/`: `store/nodes.rs` is `["store",
/// "nodes"]`, `store/mod.rs` is `["store"]`, `lib.rs` is `[]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().expect("a file name");
    let stem = file.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of a file without comments (doc links such as [`crate::x`] are not dependencies)
/// and without string literals.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if bytes[i] == b'"' {
            // Raw strings (r"…", r#"…"#) hold no escapes; plain strings skip escaped quotes.
            let raw_hashes = raw_string_hashes(bytes, i);
            i += 1;
            while i < bytes.len() {
                if raw_hashes.is_none() && bytes[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if bytes[i] == b'"' {
                    let hashes = raw_hashes.unwrap_or(0);
                    if bytes[i + 1..].iter().take(hashes).all(|b| *b == b'#')
                        && bytes.len() > i + hashes
                    {
                        i += 1 + hashes;
                        break;
                    }
                }
                i += 1;
            }
            out.push_str("\"\"");
        } else if bytes[i] == b'\'' {
            // A char literal ('x', '\n', '"') is skipped; a lifetime ('a) is kept as it is.
            let close = if bytes.get(i + 1) == Some(&b'\\') {
                bytes[i + 2..]
                    .iter()
                    .position(|b| *b == b'\'')
                    .map(|p| i + 2 + p)
            } else if bytes.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(end) => {
                    out.push_str("' '");
                    i = end + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            // Copy one whole UTF-8 character.
            let len = utf8_len(bytes[i]);
            out.push_str(&text[i..i + len]);
            i += len;
        }
    }
    out
}

/// For a `"` at `quote`, the number of `#` of the raw string it opens, or `None` for a
/// plain string.
fn raw_string_hashes(bytes: &[u8], quote: usize) -> Option<usize> {
    let mut j = quote;
    let mut hashes = 0;
    while j > 0 && bytes[j - 1] == b'#' {
        hashes += 1;
        j -= 1;
    }
    let is_raw = j > 0
        && (bytes[j - 1] == b'r')
        && (j < 2 || !(bytes[j - 2].is_ascii_alphanumeric() || bytes[j - 2] == b'_'));
    is_raw.then_some(hashes)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Paths written in `code`, as their segments: `crate::a::b`, `super::c`, and the members of
/// groups (`use crate::{a::{b, c}, d}` gives `crate::a::b`, `crate::a::c`, `crate::d`).
fn paths(code: &str) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == b':');
        let rest = &code[i..];
        if starts_word && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            let (found, end) = expand(code, i, Vec::new());
            out.extend(found);
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Reads the path starting at `start` (segments separated by `::`, possibly ending in a
/// `{…}` group) and returns every full path it names, with the index after it.
fn expand(code: &str, start: usize, prefix: Vec<String>) -> (Vec<Vec<String>>, usize) {
    let bytes = code.as_bytes();
    let mut segments = prefix;
    let mut i = start;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            // A group: each comma-separated member extends the segments read so far.
            let mut found = Vec::new();
            i += 1;
            loop {
                while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    return (found, i + 1);
                }
                let (member, end) = expand(code, i, segments.clone());
                found.extend(member);
                // Skip an `as alias` and anything else up to the next member.
                i = end;
                while i < bytes.len() && bytes[i] != b',' && bytes[i] != b'}' {
                    i += 1;
                }
            }
        }
        let word_start = i;
        while i < bytes.len() && (is_ident(bytes[i]) || bytes[i] == b'*') {
            i += 1;
        }
        if i > word_start {
            segments.push(code[word_start..i].to_string());
        }
        if code[i..].starts_with("::") {
            i += 2;
            continue;
        }
        return (vec![segments], i);
    }
}

/// The dependency graph between top-level modules: for each module, the modules it names.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = sources(src);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_path(f.strip_prefix(src).unwrap()).first().cloned())
        .collect();
    // What the root re-exports, by name: `pub use store::{Store, StoreError};`.
    let mut reexports: BTreeMap<String, String> = BTreeMap::new();
    let lib = code_only(&std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs readable"));
    for line in lib.split(';') {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("pub use ") {
            let (found, _) = expand(rest, 0, Vec::new());
            for path in found {
                if let (Some(module), Some(name)) = (path.first(), path.last())
                    && modules.contains(module)
                {
                    reexports.insert(name.clone(), module.clone());
                }
            }
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let here = module_path(file.strip_prefix(src).unwrap());
        let Some(top) = here.first().cloned() else {
            continue;
        };
        let targets = edges.entry(top.clone()).or_default();
        let code = code_only(&std::fs::read_to_string(file).expect("source readable"));
        for path in paths(&code) {
            let target = match path.first().map(String::as_str) {
                Some("crate") => path.get(1).cloned(),
                // `super::` from a file leaves its own module; from `a/b.rs` it is `a`, from a
                // top-level file it is the root. Inline `mod tests { use super::*; }` stays
                // inside the file and therefore inside its top-level module.
                Some("super") => {
                    let ups = path.iter().take_while(|s| *s == "super").count();
                    if here.len() > ups {
                        Some(top.clone())
                    } else {
                        path.get(ups).cloned()
                    }
                }
                _ => None,
            };
            let Some(target) = target else { continue };
            let target = if modules.contains(&target) {
                Some(target)
            } else {
                reexports.get(&target).cloned()
            };
            if let Some(target) = target
                && target != top
            {
                targets.insert(target);
            }
        }
    }
    edges
}

/// A cycle of the graph, as the modules along it with the first repeated at the end.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let from = stack.iter().position(|m| m == next).expect("on the stack");
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, marks, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in edges.keys() {
        if !marks.contains_key(node) {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(node, edges, &mut marks, &mut stack) {
                return Some(cycle);
            }
        }
    }
    None
}

#[test]
fn orchestrator_modules_depend_in_one_direction() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(
        edges.len() > 5,
        "the sources were not found or not read: {edges:?}"
    );
    if let Some(cycle) = find_cycle(&edges) {
        let layout: Vec<String> = edges
            .iter()
            .map(|(m, deps)| {
                format!(
                    "  {m} -> {}",
                    deps.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        panic!(
            "the orchestrator's modules import each other in a cycle: {}\nmodule graph:\n{}",
            cycle.join(" -> "),
            layout.join("\n")
        );
    }
}

#[test]
fn the_store_depends_on_no_service_and_no_http_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    let store = edges.get("store").expect("a store module");
    let above = [
        "api",
        "agent",
        "attestation",
        "catalog",
        "chain",
        "lifecycle",
        "marketplace",
    ];
    let wrong: Vec<&String> = store
        .iter()
        .filter(|m| above.contains(&m.as_str()))
        .collect();
    assert!(
        wrong.is_empty(),
        "the store imports modules above it: {wrong:?}"
    );
    for service in [
        "lifecycle",
        "marketplace",
        "catalog",
        "attestation",
        "chain",
        "agent",
    ] {
        if let Some(deps) = edges.get(service) {
            assert!(
                !deps.contains("api"),
                "{service} imports the HTTP layer: {deps:?}"
            );
        }
    }
}

#[test]
fn a_cycle_is_found_and_named() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("api", vec!["lifecycle", "store"]),
        ("lifecycle", vec!["store", "clock"]),
        ("store", vec!["clock", "lifecycle"]),
        ("clock", vec![]),
    ]
    .into_iter()
    .map(|(m, deps)| {
        (
            m.to_string(),
            deps.into_iter().map(str::to_string).collect(),
        )
    })
    .collect();
    assert_eq!(
        find_cycle(&edges),
        Some(vec![
            "lifecycle".to_string(),
            "store".to_string(),
            "lifecycle".to_string()
        ])
    );
    let mut acyclic = edges.clone();
    acyclic.get_mut("store").unwrap().remove("lifecycle");
    assert_eq!(find_cycle(&acyclic), None);
}

#[test]
fn paths_are_read_from_groups_inline_calls_and_super_but_not_comments_or_strings() {
    let code = code_only(
        "//! see [`crate::doc_only`]\n\
         use crate::{a::{B, c as d}, e};\n\
         use super::f::G;\n\
         fn x() { crate::h::now(); let s = \"crate::in_string\"; let c = '\"'; crate::i::j(); }\n\
         /* crate::in_block */",
    );
    let found: BTreeSet<String> = paths(&code).into_iter().map(|p| p.join("::")).collect();
    let expected: BTreeSet<String> = [
        "crate::a::B",
        "crate::a::c",
        "crate::e",
        "super::f::G",
        "crate::h::now",
        "crate::i::j",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(found, expected);
}

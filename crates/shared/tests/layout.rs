//! The core's layout, checked on its source files: the top level is `lib.rs` and the domain
//! folders only; a folder uses only the folders before it in [`ORDER`] (so there are no
//! cycles between them); and no file names the `worker` crate.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The domain folders, in dependency order: each may use itself and those before it.
const ORDER: [&str; 6] = ["wire", "image", "tagging", "webhook", "api", "storage"];

/// The names `lib.rs` re-exports, and the folder each comes from.
const ROOT_EXPORTS: [(&str, &str); 7] = [
    ("ImageId", "wire"),
    ("ImageMessage", "wire"),
    ("Status", "wire"),
    ("TagRecord", "wire"),
    ("Label", "wire"),
    ("ImageType", "image"),
    ("TagError", "tagging"),
];

/// Files exempt from the order: the contract generator (test only) reads every name of
/// every folder to write `local/contract.json`.
const EXEMPT: [&str; 1] = ["wire/contract.rs"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments (a doc link is not a dependency), line by line.
fn code_lines(source: &str) -> impl Iterator<Item = (usize, &str)> {
    source.lines().enumerate().filter_map(|(i, line)| {
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        (!code.trim().is_empty()).then_some((i + 1, code))
    })
}

/// The folder a path's first segment after `crate::` belongs to, if it is one.
fn folder_of(segment: &str) -> Option<&'static str> {
    ORDER.iter().copied().find(|f| *f == segment).or_else(|| {
        ROOT_EXPORTS
            .iter()
            .find(|(name, _)| *name == segment)
            .map(|(_, f)| *f)
    })
}

fn ident_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// Every folder a line of code names through `crate::`, including each top-level item of
/// a `crate::{a, b::c}` group.
fn folders_used(code: &str) -> BTreeSet<&'static str> {
    let mut used = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => {
                        used.extend(folder_of(ident_at(&group[i..])));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            used.extend(folder_of(ident_at(rest)));
        }
    }
    used
}

/// Every use of a folder to the right of `folder`, as `file:line: uses X`.
fn violations(folder: &str, file: &str, source: &str) -> Vec<String> {
    let Some(rank) = ORDER.iter().position(|f| *f == folder) else {
        return vec![format!("{file}: not in a domain folder")];
    };
    let mut found = Vec::new();
    for (line, code) in code_lines(source) {
        for used in folders_used(code) {
            let used_rank = ORDER.iter().position(|f| *f == used).unwrap_or(0);
            if used_rank > rank {
                found.push(format!("{file}:{line}: {folder} uses {used}"));
            }
        }
        let mut rest = code;
        while let Some(at) = rest.find("worker::") {
            let before = rest[..at].chars().next_back();
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                found.push(format!("{file}:{line}: names the worker crate"));
            }
            rest = &rest[at + "worker::".len()..];
        }
    }
    found
}

#[test]
fn the_top_level_is_lib_and_the_domain_folders() {
    let mut entries: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    let mut expected: Vec<String> = ORDER.iter().map(|f| f.to_string()).collect();
    expected.push("lib.rs".into());
    expected.sort();
    assert_eq!(entries, expected);
}

#[test]
fn folders_use_only_folders_before_them_and_never_worker() {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = Vec::new();
    let mut checked = 0;
    for path in files {
        let relative = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if EXEMPT.contains(&relative.as_str()) {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        if relative == "lib.rs" {
            found.extend(violations("storage", &relative, &source));
            continue;
        }
        let folder = relative.split('/').next().unwrap_or_default();
        found.extend(violations(folder, &relative, &source));
        checked += 1;
    }
    assert!(checked > 30, "only {checked} files found");
    assert!(found.is_empty(), "layout violations:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_what_it_must() {
    let uses = |code: &str| folders_used(code).into_iter().collect::<Vec<_>>();
    assert_eq!(uses("use crate::storage::images::View;"), ["storage"]);
    assert_eq!(
        uses("use crate::{api::ApiError, ImageId, wire::{keys, time}};"),
        ["api", "wire"]
    );
    assert_eq!(uses("let x = crate::TagError::Gone;"), ["tagging"]);
    assert_eq!(uses("use shared_crate::storage;"), Vec::<&str>::new());
    assert!(violations("wire", "f.rs", "// see crate::storage::images\n").is_empty());
    assert_eq!(
        violations("image", "f.rs", "use crate::tagging::error::TagError;\n"),
        ["f.rs:1: image uses tagging"]
    );
    assert_eq!(
        violations(
            "storage",
            "f.rs",
            "use crate::wire::id::ImageId;\nuse worker::Env;\n"
        ),
        ["f.rs:2: names the worker crate"]
    );
    assert_eq!(
        violations(
            "webhook",
            "f.rs",
            "use crate::{ImageId, api::status_url};\n"
        ),
        ["f.rs:1: webhook uses api"]
    );
    assert!(violations("storage", "f.rs", "use tagger_worker::x;\n").is_empty());
}

//! docs.rs builds with every feature (`[package.metadata.docs.rs] all-features = true`), so an
//! item that needs a feature must say which, or a reader copies code that does not compile
//! without it: every feature-gated public item of `dbmetrics` and `dbmetrics-runtime` carries
//! `#[cfg_attr(docsrs, doc(cfg(feature = "...")))]`, the badge rustdoc shows.
//!
//! Feature-gated items are those under `#[cfg(feature = "x")]` (or `any(..)` of features)
//! themselves, and the public items and trait implementations of a module declared under it
//! (`#[cfg(feature = "x")] mod deadpool;`, every file of a folder module). Hidden items
//! (`#[doc(hidden)]`), implementations for private types and test modules are left out.

use std::path::{Path, PathBuf};

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

/// The predicate of a `#[cfg(..)]` line that needs a feature (`feature = "x"`,
/// `any(feature = "x", feature = "y")`); `None` for other lines and for `not(..)`, which
/// docs.rs (all features) never shows.
fn gate(line: &str) -> Option<&str> {
    let predicate = line.trim().strip_prefix("#[cfg(")?.strip_suffix(")]")?;
    (predicate.contains("feature = ") && !predicate.starts_with("not(")).then_some(predicate)
}

/// The badge for `predicate`.
fn badge(predicate: &str) -> String {
    format!("#[cfg_attr(docsrs, doc(cfg({predicate})))]")
}

/// Types of `lines` that are not public: rustdoc shows no implementation for them.
fn private_types(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| {
            let t = l.trim_start();
            let t = match t.strip_prefix("pub(") {
                Some(rest) => rest.split_once(')')?.1.trim_start(),
                None if t.starts_with("pub ") => return None,
                None => t,
            };
            let rest = t
                .strip_prefix("struct ")
                .or_else(|| t.strip_prefix("enum "))?;
            Some(
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()?
                    .to_owned(),
            )
        })
        .collect()
}

/// The self type's name of an `impl .. for Type<..> {` line.
fn self_type(line: &str) -> &str {
    let after = line
        .rsplit_once(" for ")
        .map_or("", |(_, t)| t)
        .trim_start();
    let after = after.trim_start_matches('&').trim_start_matches("'p ");
    after
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .next()
        .unwrap_or("")
        .rsplit("::")
        .next()
        .unwrap_or("")
}

/// The lines of `text` before its unit-test module.
fn without_tests(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    match lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
    {
        Some(end) => lines[..end].to_vec(),
        None => lines,
    }
}

/// A public item or a trait implementation: what rustdoc shows.
fn is_documented_item(line: &str) -> bool {
    let t = line.trim_start();
    (t.starts_with("pub ") && !t.starts_with("pub("))
        || (t.starts_with("impl") && t.contains(" for "))
}

/// The attribute lines right above line `i`.
fn attributes<'a>(lines: &[&'a str], i: usize) -> Vec<&'a str> {
    lines[..i]
        .iter()
        .rev()
        .take_while(|l| l.trim_start().starts_with("#[") || l.trim_start().starts_with("///"))
        .copied()
        .collect()
}

#[test]
fn every_feature_gated_item_says_which_feature_it_needs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in ["dbmetrics/src", "dbmetrics-runtime/src"] {
        rust_files(&root.join(krate), &mut files);
    }
    files.sort();

    // Modules declared under a feature: every item in them needs it.
    let mut gated_files = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let lines = without_tests(&text);
        for (i, line) in lines.iter().enumerate() {
            let Some(feature) = gate(line) else { continue };
            let Some(next) = lines[i + 1..]
                .iter()
                .find(|l| !l.trim_start().starts_with("#["))
            else {
                continue;
            };
            if let Some(name) = next
                .trim()
                .strip_prefix("mod ")
                .and_then(|m| m.strip_suffix(';'))
            {
                let dir = file.parent().unwrap();
                let single = dir.join(format!("{name}.rs"));
                if single.exists() {
                    gated_files.push((single, feature.to_owned()));
                }
                let folder = dir.join(name);
                if folder.is_dir() {
                    let mut inside = Vec::new();
                    rust_files(&folder, &mut inside);
                    gated_files.extend(inside.into_iter().map(|f| (f, feature.to_owned())));
                }
            }
        }
    }

    let mut missing = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let lines = without_tests(&text);
        let rel = file.strip_prefix(&root).unwrap().display().to_string();
        // items under a gate of their own
        for (i, line) in lines.iter().enumerate() {
            let Some(feature) = gate(line) else { continue };
            let Some((j, item)) = lines
                .iter()
                .enumerate()
                .skip(i + 1)
                .find(|(_, l)| !l.trim_start().starts_with("#["))
            else {
                continue;
            };
            let attrs = attributes(&lines, j);
            if !is_documented_item(item) || attrs.iter().any(|a| a.contains("#[doc(hidden)]")) {
                continue;
            }
            checked += 1;
            if !attrs.iter().any(|a| a.trim() == badge(feature)) {
                missing.push(format!("{rel}:{}: {} ({feature})", j + 1, item.trim()));
            }
        }
        // every item of a gated module
        let private = private_types(&lines);
        for (_, feature) in gated_files.iter().filter(|(f, _)| f == file) {
            for (i, line) in lines.iter().enumerate() {
                let top_level = !line.starts_with(' ') || line.trim_start().starts_with("impl");
                if !top_level || !is_documented_item(line) {
                    continue;
                }
                if line.trim_start().starts_with("impl")
                    && private.iter().any(|p| p == self_type(line))
                {
                    continue;
                }
                let attrs = attributes(&lines, i);
                if attrs.iter().any(|a| a.contains("#[doc(hidden)]")) {
                    continue;
                }
                checked += 1;
                if !attrs.iter().any(|a| a.trim() == badge(feature)) {
                    missing.push(format!("{rel}:{}: {} ({feature})", i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} gated items found: the scan is broken"
    );
    assert!(
        missing.is_empty(),
        "feature-gated items without `#[cfg_attr(docsrs, doc(cfg(feature = \"...\")))]`:\n{}",
        missing.join("\n")
    );
}

//! What the documentation and the help texts say is true: every path they name exists, the
//! options `wvs --help` says `wvs adm` takes are not among those it refuses, and the release
//! profile ships a stripped binary. No root needed.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const WVS: &str = env!("CARGO_BIN_EXE_wvs");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every text file of the project a reader or `--help` shows: Markdown, TOML, shell
/// scripts and Rust sources (whose doc comments become `--help` and rustdoc).
fn texts(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || ["target", "node_modules", "dist"].contains(&name) {
            continue;
        }
        if p.is_dir() {
            texts(&p, out);
        } else if ["md", "toml", "sh", "rs", "js", "html"]
            .iter()
            .any(|x| name.ends_with(&format!(".{x}")))
        {
            out.push(p);
        }
    }
}

#[test]
fn every_path_the_docs_name_exists() {
    let root = root();
    let mut files = Vec::new();
    texts(&root, &mut files);
    assert!(files.len() > 50, "found the sources: {}", files.len());
    let dirs = [
        "scripts/",
        "examples/",
        "docs/",
        "tests/",
        "sdk/",
        "web/src/",
        "plugins/",
    ];
    let mut missing = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for d in dirs {
            for (i, _) in text.match_indices(d) {
                // Only paths that start a word (not ../scripts/ or host/tests/...).
                if i > 0 {
                    let prev = text.as_bytes()[i - 1];
                    if prev.is_ascii_alphanumeric() || b"/._-$".contains(&prev) {
                        continue;
                    }
                }
                let path: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || "/._-".contains(*c))
                    .collect();
                let path = path.trim_end_matches(['.', '/']);
                // A directory named alone ("docs/") or a glob-like mention is not a path.
                if path.len() <= d.len() || path.contains("..") {
                    continue;
                }
                if !root.join(path).exists() {
                    missing.push(format!(
                        "{}: {path}",
                        f.strip_prefix(&root).unwrap_or(f).display()
                    ));
                }
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "named but missing:\n{}",
        missing.join("\n")
    );
}

#[test]
fn wvs_help_lists_only_adm_options_that_adm_takes() {
    let out = Command::new(WVS)
        .args(["help", "adm"])
        .output()
        .expect("wvs help adm");
    let help = String::from_utf8_lossy(&out.stdout);
    let start = help
        .find("Takes ipvsadm's options (")
        .expect("the options list")
        + 25;
    let end = start + help[start..].find(')').expect("end of the list");
    let listed: Vec<&str> = help[start..end]
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with('-'))
        .collect();
    assert!(listed.len() > 20, "{listed:?}");
    let adm = Command::new(WVS)
        .args(["adm", "-h"])
        .output()
        .expect("wvs adm -h");
    let adm_help =
        String::from_utf8_lossy(&adm.stdout).to_string() + &String::from_utf8_lossy(&adm.stderr);
    let refused = &adm_help[adm_help.find("Not supported:").expect("the refused list")..];
    for o in listed {
        let word = |s: &str| {
            s.split(|c: char| c.is_whitespace() || c == ',' || c == '/')
                .any(|w| w == o)
        };
        assert!(
            !word(refused),
            "{o} is listed by `wvs help adm` but refused: {refused}"
        );
    }
}

#[test]
fn the_release_profile_ships_a_stripped_binary() {
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let release = &cargo[cargo.find("[profile.release]").expect("release profile")..];
    let release = &release[..release[1..].find("\n[").map_or(release.len(), |i| i + 1)];
    assert!(
        release.contains("strip = \"debuginfo\"") || release.contains("strip = true"),
        "the release binary keeps its debug info: {release}"
    );
}

#[test]
fn the_readme_is_short_and_gives_the_two_commands() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 100,
        "README.md has {lines} lines: reference material belongs in docs/"
    );
    for cmd in ["./scripts/demo.sh", "./scripts/test.sh"] {
        assert!(readme.contains(cmd), "README.md does not give {cmd}");
    }
    let ci = std::fs::read_to_string(root().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.contains("./scripts/test.sh"),
        ".ci/run runs the README's test command"
    );
}

/// The oracle's comparison takes out exactly the differences docs/ipvs-differences.md
/// documents (each row marked `oracle:ID`), no more and no fewer.
#[test]
fn the_oracle_takes_out_only_documented_differences() {
    let root = root();
    let compare = std::fs::read_to_string(root.join("tests/oracle/scenarios/compare.py"))
        .expect("compare.py");
    let doc = std::fs::read_to_string(root.join("docs/ipvs-differences.md")).expect("doc");
    let known = compare
        .split_once("KNOWN = {")
        .and_then(|(_, rest)| rest.split_once("\n}"))
        .map(|(body, _)| body)
        .expect("KNOWN in compare.py");
    let mut ids: Vec<&str> = known
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"'))
        .filter_map(|l| l.split_once("\": (").map(|(id, _)| id))
        .collect();
    ids.sort_unstable();
    let mut documented: Vec<&str> = doc
        .split("`oracle:")
        .skip(1)
        .filter_map(|s| s.split_once('`').map(|(id, _)| id))
        .filter(|id| *id != "ID")
        .collect();
    documented.sort_unstable();
    documented.dedup();
    assert!(
        !ids.is_empty(),
        "no known differences parsed from compare.py"
    );
    assert_eq!(
        ids, documented,
        "compare.py's KNOWN and the table's oracle: ids"
    );
}

/// `wvs adm -h` names every option `wvs adm` parses (its option table in
/// host/src/adm/parse.rs): as `--long` (or `-s`) among what it does, or in the list of
/// what it refuses.
#[test]
fn wvs_adm_help_names_every_option_it_parses() {
    let src = std::fs::read_to_string(root().join("host/src/adm/parse.rs")).expect("parse.rs");
    let re = regex::Regex::new(r#"opt\((?:Some\('(.)'\)|None), "([a-z0-9-]+)""#).expect("re");
    let adm = Command::new(WVS)
        .args(["adm", "-h"])
        .output()
        .expect("wvs adm -h");
    let help =
        String::from_utf8_lossy(&adm.stdout).to_string() + &String::from_utf8_lossy(&adm.stderr);
    let at = help.find("Not supported:").expect("the refused list");
    let (does, refused) = help.split_at(at);
    let word = |text: &str, w: &str| {
        text.split(|c: char| c.is_whitespace() || ",/()|[]:".contains(c))
            .any(|x| x == w)
    };
    let mut n = 0;
    let mut missing = Vec::new();
    for c in re.captures_iter(&src) {
        let long = format!("--{}", &c[2]);
        let short = c.get(1).map(|s| format!("-{}", s.as_str()));
        let named = word(does, &long)
            || short
                .as_deref()
                .is_some_and(|s| word(does, s) || word(refused, s))
            || word(refused, &long);
        if !named {
            missing.push(long);
        }
        n += 1;
    }
    assert!(n > 50, "the option table was read: {n}");
    assert!(missing.is_empty(), "`wvs adm -h` does not name {missing:?}");
}

/// docs/ipvs-differences.md says "not yet" only of options `wvs adm` refuses, and
/// docs/adm.md says what differs from ipvsadm's output instead of "byte for byte" alone.
#[test]
fn the_docs_say_exactly_what_adm_refuses_and_what_differs() {
    let diff = std::fs::read_to_string(root().join("docs/ipvs-differences.md")).expect("doc");
    let adm = Command::new(WVS)
        .args(["adm", "-h"])
        .output()
        .expect("wvs adm -h");
    let help = String::from_utf8_lossy(&adm.stdout).to_string();
    let refused = &help[help.find("Not supported:").expect("the refused list")..];
    let re = regex::Regex::new(r"`(-[A-Za-z0-9-]+)`").expect("re");
    for row in diff.lines().filter(|l| l.contains("| Not yet |")) {
        let first = row.split('|').nth(1).unwrap_or_default();
        for c in re.captures_iter(first) {
            assert!(
                refused.contains(&c[1]),
                "ipvs-differences.md says {} is not yet there, but `wvs adm` takes it",
                &c[1]
            );
        }
    }
    let doc = std::fs::read_to_string(root().join("docs/adm.md")).expect("adm.md");
    for must in ["What\ndiffers", "size=", "`-v`", "never resolved"] {
        assert!(
            doc.replace("What differs", "What\ndiffers").contains(must),
            "docs/adm.md does not say {must:?}"
        );
    }
    // Every example the repository has is in docs/architecture.md's map.
    let arch = std::fs::read_to_string(root().join("docs/architecture.md")).expect("doc");
    for e in std::fs::read_dir(root().join("examples"))
        .expect("examples")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            arch.contains(&name),
            "docs/architecture.md does not name examples/{name}"
        );
    }
}

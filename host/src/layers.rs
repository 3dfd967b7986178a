//! wvs's layers, and the test that keeps them (docs/architecture.md draws them).
//!
//! A module names only modules of lower layers (`crate::x` in code outside tests). The
//! core (wvs-core) is a crate of its own, so it cannot name the daemon at all; inside it,
//! the words and the packet views come first, then the specs, the plugin runtime, the
//! services, the connections, and the datapath over all of them. The daemon's modules come
//! after the whole core: what the forms and the sandbox need, then the I/O, the health
//! checks, the control library, the API, `wvs adm`, and `run`, which ties them together.

/// The core's layers, lowest first: each module's top-level name.
pub const CORE_LAYERS: &[&[&str]] = &[
    &["consts"],
    &["model", "wire", "synproxy"],
    &["spec", "stats", "xmit"],
    &["plugin"],
    &["service"],
    &["conn"],
    &["offload"],
    &["datapath"],
    // The shared test topology (tests and the `testkit` feature).
    &["testkit"],
];

/// The daemon's layers, lowest first; `"core"` stands for every module of
/// [`CORE_LAYERS`] (the daemon re-exports them under their names).
pub const LAYERS: &[&[&str]] = &[
    &["core"],
    &["privs", "schema"],
    &["config", "budget"],
    &["io"],
    &["health"],
    &["control"],
    &["api"],
    &["adm"],
    &["run"],
];

/// What the core must not depend on: formats, async runtimes, the HTTP stack, netlink,
/// BPF loading, and the daemon itself.
pub const CORE_FORBIDS: &[&str] = &[
    "serde",
    "serde_json",
    "toml",
    "utoipa",
    "axum",
    "tokio",
    "hyper",
    "tower",
    "rtnetlink",
    "futures",
    "aya",
    "wvs",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn core_layer(module: &str) -> Option<usize> {
        CORE_LAYERS.iter().position(|l| l.contains(&module))
    }

    fn layer(module: &str) -> Option<usize> {
        let module = if core_layer(module).is_some() {
            "core"
        } else {
            module
        };
        LAYERS.iter().position(|l| l.contains(&module))
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// The text without comments and without `#[cfg(test)]` items (braces matched).
    fn code(text: &str) -> String {
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect();
        let mut out = String::new();
        let mut i = 0;
        while i < lines.len() {
            if lines[i].trim() == "#[cfg(test)]" {
                let (mut depth, mut started) = (0i64, false);
                while i < lines.len() {
                    let l = lines[i];
                    depth += l.matches('{').count() as i64 - l.matches('}').count() as i64;
                    started |= l.contains('{');
                    i += 1;
                    if (started && depth <= 0) || (!started && l.trim_end().ends_with(';')) {
                        break;
                    }
                }
                continue;
            }
            out.push_str(lines[i]);
            out.push('\n');
            i += 1;
        }
        out
    }

    /// The top-level modules `code` names: `crate::x` paths and `use crate::{x, …}` groups.
    fn named(code: &str) -> Vec<String> {
        let mut v = Vec::new();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for part in group[..end].split(',') {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    v.push(name);
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                v.push(name);
            }
        }
        v.retain(|n| !n.is_empty() && n != "self" && n != "super");
        v
    }

    /// The imports of the sources under `src` that do not go down `layer`'s layers, and
    /// how many files were read.
    fn against(src: &Path, layer: fn(&str) -> Option<usize>) -> (Vec<String>, usize) {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        let mut wrong = Vec::new();
        let mut seen = 0;
        for f in &files {
            let rel = f.strip_prefix(src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let me = first.trim_end_matches(".rs").to_string();
            if ["lib", "main", "layers"].contains(&me.as_str()) {
                continue;
            }
            let name = rel.file_name().unwrap().to_string_lossy();
            if name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let Some(mine) = layer(&me) else {
                wrong.push(format!("{}: module {me} is in no layer", rel.display()));
                continue;
            };
            seen += 1;
            for other in named(&code(&std::fs::read_to_string(f).unwrap())) {
                if other == me {
                    continue;
                }
                match layer(&other) {
                    Some(l) if l < mine => {}
                    _ => wrong.push(format!("{}: {me} names crate::{other}", rel.display())),
                }
            }
        }
        (wrong, seen)
    }

    #[test]
    fn every_import_goes_down_the_layers() {
        let host = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (src, layer, at_least) in [
            (host.join("src"), layer as fn(&str) -> Option<usize>, 30),
            (host.join("core").join("src"), core_layer, 30),
        ] {
            let (wrong, seen) = against(&src, layer);
            assert!(
                seen >= at_least,
                "only {seen} files read from {}",
                src.display()
            );
            assert!(
                wrong.is_empty(),
                "imports against the layers in {}:\n{}",
                src.display(),
                wrong.join("\n")
            );
        }
    }

    #[test]
    fn the_core_depends_on_no_format_runtime_or_daemon() {
        let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("core");
        let manifest = std::fs::read_to_string(core.join("Cargo.toml")).unwrap();
        let mut section = "";
        let mut deps = Vec::new();
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
            } else if section == "[dependencies]"
                && let Some((name, _)) = line.split_once('=')
                && !line.starts_with('#')
            {
                deps.push(name.trim().trim_end_matches(".workspace").to_string());
            }
        }
        assert!(deps.len() > 5, "{deps:?}");
        let bad: Vec<_> = deps
            .iter()
            .filter(|d| CORE_FORBIDS.contains(&d.as_str()))
            .collect();
        assert!(bad.is_empty(), "wvs-core depends on {bad:?}");
        let mut files = Vec::new();
        rust_files(&core.join("src"), &mut files);
        for f in files {
            let text = code(&std::fs::read_to_string(&f).unwrap());
            for word in ["wvs::", "serde::", "tokio::", "utoipa::"] {
                assert!(!text.contains(word), "{} names {word}", f.display());
            }
        }
    }

    #[test]
    fn the_checks_find_what_they_look_for() {
        let text = "use crate::{a, b::c};\n// crate::d\nfn f() { crate::e::g(); }\n\
                    #[cfg(test)]\nmod tests {\n    use crate::h;\n}\n";
        assert_eq!(named(&code(text)), ["a", "b", "e"]);
        assert_eq!(layer("run"), Some(LAYERS.len() - 1));
        assert_eq!(layer("conn"), Some(0));
        assert_eq!(core_layer("datapath"), Some(CORE_LAYERS.len() - 2));
        assert_eq!(layer("nothing"), None);
    }
}

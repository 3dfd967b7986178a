//! End to end, the REST API against its OpenAPI document, with the tools API users reach
//! for: the document validates under `openapi-spec-validator`; a Python client generated
//! from it by `openapi-python-client` drives a service through real traffic; and
//! schemathesis, driven by the document against a running daemon with the token, finds no
//! failure with every check on, its stateful phase following the document's links. The
//! tools come from PyPI into a throwaway virtual environment made here. Needs root and
//! network access to the package index (for the virtual environment).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Topo, VIP, Wvs};

const TOKEN: &str = "openapi-contract-test-token";
const API: &str = "http://127.0.0.1:9080";
/// The tools, pinned: a new release of a checker should not turn CI red by itself.
const TOOLS: &[&str] = &[
    "schemathesis==4.32.5",
    "openapi-spec-validator==0.9.0",
    "openapi-python-client==0.29.1",
];
const HERE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/openapi");

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A virtual environment with the tools, made in `dir`.
fn venv(dir: &Path) -> PathBuf {
    let (ok, out) = run(Command::new("python3").args(["-m", "venv"]).arg(dir));
    assert!(ok, "python3 -m venv: {out}");
    let pip = dir.join("bin/pip");
    eprintln!(
        "openapi: installing {} into {}",
        TOOLS.join(" "),
        dir.display()
    );
    let (ok, out) = run(Command::new("timeout")
        .arg("900")
        .arg(&pip)
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(TOOLS));
    assert!(ok, "pip install: {out}");
    dir.join("bin")
}

/// Run a command in the balancer's namespace (where the API listens).
fn in_lb(topo: &Topo, program: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &topo.ns("lb")]).arg(program);
    c
}

#[test]
fn the_openapi_document_is_a_contract() {
    let topo = Topo::new("oapi", false);
    let wvs = Wvs::start_with_env(&topo, None, &[], &[("WVS_API_TOKEN", TOKEN)]);
    let bin = venv(&topo.dir.join("venv"));

    // 1. The document validates.
    let doc = topo.dir.join("openapi.json");
    let out = topo.exec(
        "lb",
        &["curl", "-sSf", &format!("{API}/api/v1/openapi.json")],
    );
    assert!(out.status.success(), "GET openapi.json");
    std::fs::write(&doc, &out.stdout).expect("write the document");
    let (ok, out) = run(Command::new(bin.join("openapi-spec-validator")).arg(&doc));
    assert!(ok && out.contains("OK"), "openapi-spec-validator: {out}");

    // 2. A generated client adds a service with real servers, edits a weight, reads the
    // counters after real traffic, and deletes the service.
    let gen_dir = topo.dir.join("client");
    std::fs::create_dir_all(&gen_dir).expect("client dir");
    let (ok, out) = run(Command::new(bin.join("openapi-python-client"))
        .current_dir(&gen_dir)
        .args(["generate", "--meta", "none", "--config"])
        .arg(Path::new(HERE).join("client-config.yml"))
        .arg("--path")
        .arg(&doc));
    assert!(ok, "openapi-python-client: {out}");
    assert!(
        !out.contains("Warning"),
        "the generator warned about the document: {out}"
    );
    let client = |step: &str| {
        let (ok, out) = run(in_lb(&topo, &bin.join("python3"))
            .env("PYTHONPATH", &gen_dir)
            .arg(Path::new(HERE).join("client_e2e.py"))
            .args([API, TOKEN, step]));
        assert!(ok, "client_e2e.py {step}: {out}");
        out
    };
    assert!(client("setup").contains("setup: ok"));
    let tally = Topo::tally((0..50).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(
        tally.into_iter().collect::<Vec<_>>(),
        [
            ("rs1".to_string(), 30),
            ("rs2".to_string(), 10),
            ("rs3".to_string(), 10)
        ],
        "wrr 3:1:1 as the client set it"
    );
    let counters: serde_json::Value =
        serde_json::from_str(client("check").trim()).expect("the client's JSON");
    assert_eq!(counters["conns"], 50, "{counters}");
    assert_eq!(counters["reals"]["198.19.0.11:80"], 30, "{counters}");
    assert!(
        counters["inpkts"].as_u64().unwrap_or(0) >= 50 * 5,
        "{counters}"
    );
    assert!(client("delete").contains("delete: ok"));

    // 3. schemathesis: every check, every phase (examples, coverage, fuzzing, and the
    // stateful phase over the document's links), against the same daemon.
    let wasm = env!("WVS_EXAMPLE_LAT2_WASM");
    let seed = std::env::var("WVS_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let examples = std::env::var("WVS_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "40".into());
    let (ok, out) = run(in_lb(&topo, &bin.join("schemathesis"))
        .current_dir(&topo.dir)
        .env("PYTHONPATH", HERE)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("WVS_TEST_WASM", wasm)
        .args(["run", &format!("{API}/api/v1/openapi.json")])
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", &examples, "--seed", &seed])
        .args(["--request-timeout", "30", "--no-color"]));
    eprintln!("{out}");
    assert!(ok, "schemathesis failed (seed {seed}): see above");
    for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"] {
        assert!(
            out.contains(&format!("✅ {phase}")),
            "the {phase} phase did not pass: see above"
        );
    }
    assert!(
        !out.contains("Failures:") && !out.contains("Errors:"),
        "see above"
    );
    drop(wvs);
}

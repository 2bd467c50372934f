//! MCP at `/mcp`, driven by a client no one here wrote: the official TypeScript SDK
//! (`@modelcontextprotocol/sdk`, installed by this test from `tests/mcp/package-lock.json`)
//! lists the tools and calls `memory_store` → `memory_search` and `task_create` → `task_claim`.
//! With authentication on, `/mcp` passes the same gate as the REST mirror.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::Server;
use serde_json::json;

fn prepared() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp");
    if !dir
        .join("node_modules/@modelcontextprotocol/sdk/package.json")
        .exists()
    {
        common::run_ok(&dir, "npm", &["ci", "--no-audit", "--no-fund"]);
    }
    dir
}

fn drive(dir: &Path, args: &[&str]) -> (bool, String) {
    let (ok, out, err) = common::node_script(dir, args);
    (ok, format!("{out}{err}"))
}

#[test]
fn the_official_mcp_sdk_lists_and_calls_the_coordination_tools() {
    let dir = prepared();
    let s = Server::start(&[]);
    let url = s.url("/mcp");
    let (ok, report) = drive(&dir, &[&url]);
    assert!(ok, "MCP client run failed:\n{report}");
    for check in ["tools/list", "memory", "tasks", "errors"] {
        assert!(
            report.contains(&format!("\"what\":\"{check}\"")),
            "{report}"
        );
    }
    // What the tools did is the same state the REST mirror sees.
    let r = s.ok("GET", "/api/v1/coordination/memory/notes/design", None);
    assert_eq!(r["value"], json!({"text": "actors"}));
    drop(s);

    // Auth on: the tenant's coordinate key works; a read-only key is refused at the gate.
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("auth.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nkeys = [\n {{ name = \"agents\", sha256 = \"{}\", scopes = [\"coordinate\"], tenant = \"acme\" }},\n {{ name = \"reader\", sha256 = \"{}\", scopes = [\"read\"], tenant = \"acme\" }},\n]\n",
            common::sha256_hex("agents-key"),
            common::sha256_hex("reader-key")
        ),
    )
    .unwrap();
    let s = Server::start(&[("RUVECTOR_CONFIG", cfg.to_str().unwrap())]);
    let url = s.url("/mcp");
    let (ok, report) = drive(&dir, &[&url, "agents-key"]);
    assert!(ok, "with a coordinate key:\n{report}");
    let (ok, report) = drive(&dir, &[&url, "reader-key"]);
    assert!(!ok, "a read-only key must be refused:\n{report}");
    let (ok, _) = drive(&dir, &[&url]);
    assert!(!ok, "no credential must be refused");
}

//! agentic-flow compatibility: its own `FederationHubClient` (npm `agentic-flow` 2.1.3, the file
//! unpacked from the published package and not modified) against `/api/v1/federation`, driven by
//! `tests/federation/run.mjs` under node. The test installs what it needs: `npm ci` for `ws`
//! (from the committed lockfile) and `npm pack agentic-flow@2.1.3` for the client file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::Server;

/// The node side, installed once.
fn prepared() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/federation");
    if !dir.join("node_modules/ws/package.json").exists() {
        common::run_ok(&dir, "npm", &["ci", "--no-audit", "--no-fund"]);
    }
    let client = dir.join("vendor/package/dist/federation/FederationHubClient.js");
    if !client.exists() {
        let vendor = dir.join("vendor");
        std::fs::create_dir_all(&vendor).unwrap();
        common::run_ok(&vendor, "npm", &["pack", "agentic-flow@2.1.3", "--silent"]);
        common::run_ok(
            &vendor,
            "tar",
            &[
                "xzf",
                "agentic-flow-2.1.3.tgz",
                "package/package.json",
                "package/dist/federation/FederationHubClient.js",
                "package/dist/utils/logger.js",
            ],
        );
    }
    dir
}

/// Runs the node script; returns its report lines.
fn drive(dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = common::node_script(dir, args);
    assert!(ok, "FederationHubClient run failed:\n{out}{err}");
    out
}

#[test]
fn agentic_flows_own_federation_client_works_unmodified() {
    let dir = prepared();
    // Auth off: any tenantId is accepted, and tenants stay apart.
    let s = Server::start(&[]);
    let endpoint = s.ws_url("/api/v1/federation");
    let report = drive(&dir, &["open", &endpoint]);
    for check in ["connect", "broadcast", "pull", "clock", "tenants", "errors"] {
        assert!(
            report.contains(&format!("\"what\":\"{check}\"")),
            "{check} missing:\n{report}"
        );
    }
    drop(s);

    // Auth on: a key bound to tenant acme (scope coordinate) works for acme only; a bad token
    // is refused with an error frame (the client's connect() rejects with our message).
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("auth.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nkeys = [\n {{ name = \"acme-agents\", sha256 = \"{}\", scopes = [\"coordinate\"], tenant = \"acme\" }},\n]\n",
            common::sha256_hex("acme-token")
        ),
    )
    .unwrap();
    let s = Server::start(&[("RUVECTOR_CONFIG", cfg.to_str().unwrap())]);
    let endpoint = s.ws_url("/api/v1/federation");
    let report = drive(&dir, &["auth", &endpoint, "acme-token"]);
    assert!(report.contains("\"what\":\"bad token\""), "{report}");
    assert!(report.contains("\"what\":\"other tenant\""), "{report}");
}

//! The deployment files (issue 15) against the code and a running server: the Dockerfile's
//! stages, COPY sources, binary and profile; every manifest parses, its probes are paths the
//! server answers on the port it listens on (PORT honoured); the dashboard and the alert rules
//! name only metrics the server exports — scraped from a fresh server with no traffic, so every
//! metric must be there from start — and the alert rules pass `promtool check rules` when
//! promtool is installed (`.ci/run` installs Debian's `prometheus` package for it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{wait_for, Server};
use serde_yaml_ng::Value as Yaml;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                let (op, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((op.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

fn binary_name() -> String {
    let cargo = read("Cargo.toml");
    let bin = cargo.split("[[bin]]").nth(1).expect("a [[bin]] section");
    bin.lines()
        .find_map(|l| l.trim().strip_prefix("name = "))
        .expect("bin name")
        .trim_matches('"')
        .to_owned()
}

#[test]
fn the_dockerfile_builds_from_paths_that_exist_and_ships_the_cargo_binary() {
    let steps = instructions(&read("Dockerfile"));
    let bin = binary_name();
    assert!(
        read("Cargo.toml").contains("[profile.dist]"),
        "the dist profile exists"
    );
    let mut stages: Vec<String> = Vec::new();
    let mut copied_binary = false;
    let mut env: HashMap<String, String> = HashMap::new();
    let mut final_user = String::new();
    for (op, rest) in &steps {
        match op.as_str() {
            "FROM" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                    _ => format!("#{}", stages.len()),
                };
                stages.push(name);
                final_user.clear();
            }
            "COPY" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let (from, paths): (Option<&str>, Vec<&str>) =
                    match words[0].strip_prefix("--from=") {
                        Some(stage) => (Some(stage), words[1..].to_vec()),
                        None => (None, words.clone()),
                    };
                let sources = &paths[..paths.len() - 1];
                match from {
                    Some(stage) => {
                        assert!(
                            stages[..stages.len() - 1].iter().any(|s| s == stage),
                            "COPY --from={stage}: no earlier stage of that name ({stages:?})"
                        );
                        for s in sources {
                            if s.contains("/target/") {
                                assert!(
                                    s.ends_with(&format!("/target/dist/{bin}")),
                                    "the copied binary {s} is the dist build of {bin}"
                                );
                                copied_binary = true;
                            }
                        }
                    }
                    None => {
                        for s in sources {
                            assert!(
                                root().join(s).exists(),
                                "COPY source {s} does not exist in the repository"
                            );
                        }
                    }
                }
            }
            "ENV" => {
                for pair in rest.split_whitespace() {
                    if let Some((k, v)) = pair.split_once('=') {
                        env.insert(k.to_owned(), v.to_owned());
                    }
                }
            }
            "USER" => final_user = rest.clone(),
            "RUN" if rest.contains("cargo build") => {
                assert!(
                    rest.contains("--profile dist") && rest.contains(&format!("--bin {bin}")),
                    "{rest}"
                );
            }
            "ENTRYPOINT" => assert!(rest.contains(&format!("/{bin}\"")), "{rest}"),
            "EXPOSE" => assert_eq!(Some(rest), env.get("PORT"), "EXPOSE is PORT"),
            "HEALTHCHECK" => assert!(rest.contains("/health/ready"), "{rest}"),
            "VOLUME" => assert!(
                rest.contains(
                    env.get("RUVECTOR__STORAGE__DATA_DIR")
                        .expect("data dir env")
                ),
                "the data directory is the volume"
            ),
            _ => {}
        }
    }
    assert!(copied_binary, "the runtime stage copies the binary");
    assert!(
        stages.len() >= 3,
        "a dependency-caching stage, a build and a runtime: {stages:?}"
    );
    assert!(
        !final_user.is_empty() && final_user != "root" && final_user != "0",
        "the runtime runs as a non-root user"
    );
    let config = env.get("RUVECTOR_CONFIG").expect("RUVECTOR_CONFIG");
    let shipped = config
        .strip_prefix("/etc/ruvector/")
        .expect("config under /etc/ruvector");
    assert!(
        root().join("config").join(shipped).exists(),
        "{config} is shipped"
    );
}

/// Every YAML document under `deploy/`, by file.
fn manifests() -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    let mut dirs = vec![root().join("deploy")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                let text = std::fs::read_to_string(&p).unwrap();
                for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                    let v = <Yaml as serde::Deserialize>::deserialize(doc)
                        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                    out.push((p.display().to_string(), v));
                }
            }
        }
    }
    out
}

/// The containers of a workload manifest (Cloud Run service or StatefulSet).
fn containers(doc: &Yaml) -> Vec<&Yaml> {
    doc["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

/// (file, probe kind, path, port) of every probe, with named ports resolved.
fn probes() -> Vec<(String, String, String, u64)> {
    let mut out = Vec::new();
    for (file, doc) in manifests() {
        for c in containers(&doc) {
            let ports: HashMap<String, u64> = c["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or("").to_owned(),
                        p["containerPort"].as_u64().expect("containerPort"),
                    )
                })
                .collect();
            let env_port = c["env"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == "PORT")
                .map(|e| e["value"].as_str().unwrap().parse::<u64>().unwrap());
            for kind in ["startupProbe", "livenessProbe", "readinessProbe"] {
                let probe = &c[kind]["httpGet"];
                let path = probe["path"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: {kind} has an HTTP path"));
                let port = match &probe["port"] {
                    Yaml::Number(n) => n.as_u64().unwrap(),
                    Yaml::String(name) => *ports
                        .get(name)
                        .unwrap_or_else(|| panic!("{file}: {kind} names port {name}")),
                    other @ (Yaml::Null
                    | Yaml::Bool(_)
                    | Yaml::Sequence(_)
                    | Yaml::Mapping(_)
                    | Yaml::Tagged(_)) => panic!("{file}: {kind} port {other:?}"),
                };
                assert!(
                    ports.values().any(|p| *p == port),
                    "{file}: {kind} probes port {port}, which the container does not expose"
                );
                if let Some(p) = env_port {
                    assert_eq!(p, port, "{file}: PORT is the probed port");
                }
                out.push((file.clone(), kind.to_owned(), path.to_owned(), port));
            }
        }
    }
    out
}

#[test]
fn manifests_parse_and_their_probes_are_answered_on_the_port_the_server_takes_from_port() {
    let docs = manifests();
    let kinds: BTreeSet<String> = docs
        .iter()
        .filter_map(|(_, d)| d["kind"].as_str().map(str::to_owned))
        .collect();
    for want in [
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "Secret",
    ] {
        assert!(kinds.contains(want), "deploy/ has a {want}: {kinds:?}");
    }
    let sts = docs
        .iter()
        .find(|(_, d)| d["kind"] == "StatefulSet")
        .map(|(_, d)| d)
        .unwrap();
    assert!(
        sts["spec"]["volumeClaimTemplates"]
            .as_sequence()
            .is_some_and(|v| !v.is_empty()),
        "a volume claim per replica"
    );
    let probes = probes();
    assert!(probes.len() >= 6, "{probes:?}");
    let port = common::redis_server::free_port();
    let s = Server::start(&[("PORT", &port.to_string())]);
    assert_eq!(
        u64::from(s.addr().port()),
        u64::from(port),
        "PORT is honoured"
    );
    for (file, kind, path, probe_port) in probes {
        assert_eq!(probe_port, 8080, "{file}: {kind} on the image's PORT");
        assert!(
            wait_for(Duration::from_secs(20), || s.call("GET", &path, None).0
                == 200),
            "{file}: {kind} {path} is not answered 200"
        );
    }
}

/// The metric names a PromQL text mentions (`ruvector_…`, histogram suffixes dropped).
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("ruvector_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_owned());
        i = end;
    }
    out
}

/// Metric names a fresh server exports before any traffic.
fn exported(s: &Server) -> BTreeSet<String> {
    s.metrics()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(names_in)
        .collect()
}

#[test]
fn every_metric_is_exported_from_start_and_dashboards_and_alerts_name_only_those() {
    let s = Server::start(&[]);
    let exported = exported(&s);
    // Every `ruvector_` name in the sources is in the catalogue, hence exported from start.
    let mut in_sources = BTreeSet::new();
    let mut dirs = vec![root().join("src"), root().join("actors/src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, _) in text.match_indices("\"ruvector_") {
                    let rest = &text[i + 1..];
                    let end = rest.find('"').unwrap_or(rest.len());
                    in_sources.insert(rest[..end].to_owned());
                }
            }
        }
    }
    let missing: Vec<&String> = in_sources.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "used in the sources but not exported from start (add them to src/metric_catalog.rs): {missing:?}"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/ruvector-streaming.json")).unwrap();
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            queried.extend(names_in(t["expr"].as_str().unwrap()));
        }
    }
    let rules = read("deploy/prometheus/alerts.yaml");
    let alerts: Yaml = serde_yaml_ng::from_str(&rules).unwrap();
    let operations = read("docs/OPERATIONS.md").to_lowercase();
    for group in alerts["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            queried.extend(names_in(rule["expr"].as_str().unwrap()));
            let runbook = rule["annotations"]["runbook"].as_str().unwrap();
            let anchor = runbook.split('#').nth(1).unwrap().replace('-', " ");
            assert!(
                operations.contains(&format!("### {anchor}")),
                "{runbook}: docs/OPERATIONS.md has no such section"
            );
        }
    }
    assert!(queried.len() > 20, "{queried:?}");
    let unknown: Vec<&String> = queried.difference(&exported).collect();
    assert!(unknown.is_empty(), "queried but not exported: {unknown:?}");
}

#[test]
fn the_alert_rules_pass_promtool_when_it_is_installed() {
    let rules = root().join("deploy/prometheus/alerts.yaml");
    let promtool = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("promtool"))
        .find(|p| p.exists());
    let Some(promtool) = promtool else {
        // Parsed and checked against the exported metrics by the test above.
        eprintln!("promtool not installed: alert rules only parsed");
        return;
    };
    let out = std::process::Command::new(promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_deploy_files_the_readme_names_exist() {
    // The README's layout names deploy/'s parts; they are all there.
    for p in [
        "deploy/cloudrun/service.yaml",
        "deploy/k8s/statefulset.yaml",
        "deploy/grafana/ruvector-streaming.json",
        "deploy/prometheus/alerts.yaml",
        "deploy/local-regions.sh",
        "docs/OPERATIONS.md",
    ] {
        assert!(Path::new(&root().join(p)).exists(), "{p}");
    }
}

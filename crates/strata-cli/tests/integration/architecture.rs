//! The crate map of ARCHITECTURE.md, checked against the workspace.
//!
//! Each crate may depend (normal and build dependencies) only on the
//! workspace crates listed for it here; dev-dependencies are free for tests,
//! except on strata-cli, which nothing depends on. A crate missing from the
//! map, or from ARCHITECTURE.md's code map, fails the test: a new room is
//! placed on the map before it is built on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The allowed edges: crate → the workspace crates it may depend on.
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        // The pure cores: no other workspace crate.
        ("strata-core", &[][..]),
        ("strata-stats", &[][..]),
        ("strata-model", &["strata-core"][..]),
        ("strata-http", &[][..]),
        // The calendar clock every plane reads (simulated under a demo).
        ("strata-clock", &[][..]),
        // The planes.
        (
            "strata-sdk",
            &["strata-core", "strata-model", "strata-clock"][..],
        ),
        (
            "strata-pipeline",
            &["strata-http", "strata-model", "strata-clock"][..],
        ),
        ("strata-analysis", &["strata-stats", "strata-model"][..]),
        // The control plane links neither the pipeline nor the analysis
        // engine (no DataFusion in the control plane); the statistics engine
        // (pure functions) serves its power calculator.
        (
            "strata-server",
            &[
                "strata-core",
                "strata-model",
                "strata-http",
                "strata-stats",
                "strata-clock",
            ][..],
        ),
        // The portal renders the control plane's services and the
        // platform's types; never the pipeline or the analysis engine.
        (
            "strata-portal",
            &[
                "strata-core",
                "strata-model",
                "strata-server",
                "strata-clock",
            ][..],
        ),
        // The composition root and the binary assemble the rest.
        (
            "strata-app",
            &[
                "strata-core",
                "strata-model",
                "strata-http",
                "strata-server",
                "strata-pipeline",
                "strata-analysis",
                "strata-stats",
                "strata-portal",
                "strata-clock",
            ][..],
        ),
        // The simulator drives users through the SDK and the HTTP API only;
        // its offline data sets are the pipeline's records and files.
        (
            "strata-sim",
            &[
                "strata-core",
                "strata-sdk",
                "strata-clock",
                "strata-pipeline",
            ][..],
        ),
        (
            "strata-cli",
            &[
                "strata-core",
                "strata-model",
                "strata-stats",
                "strata-server",
                "strata-pipeline",
                "strata-analysis",
                "strata-app",
                "strata-clock",
                "strata-sim",
            ][..],
        ),
    ])
}

struct Package {
    name: String,
    /// (dependency, kind) for workspace dependencies; kind is `normal`,
    /// `build` or `dev`.
    deps: Vec<(String, String)>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/strata-cli is two levels below the workspace root")
        .to_path_buf()
}

fn workspace_packages() -> Vec<Package> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let members: BTreeSet<String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_owned())
        .collect();
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| Package {
            name: p["name"].as_str().expect("name").to_owned(),
            deps: p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter_map(|d| {
                    let name = d["name"].as_str()?;
                    members.contains(name).then(|| {
                        let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
                        (name.to_owned(), kind)
                    })
                })
                .collect(),
        })
        .collect()
}

/// The violations of the map in `packages`.
fn violations(packages: &[Package]) -> Vec<String> {
    let allowed = allowed();
    let mut out = Vec::new();
    for p in packages {
        let Some(ok) = allowed.get(p.name.as_str()) else {
            out.push(format!(
                "{} is not on the crate map: add it to this test's map and to ARCHITECTURE.md",
                p.name
            ));
            continue;
        };
        for (dep, kind) in &p.deps {
            if dep == "strata-cli" {
                out.push(format!("{} depends on strata-cli ({kind})", p.name));
            } else if kind != "dev" && !ok.contains(&dep.as_str()) {
                out.push(format!(
                    "{} may not depend on {dep} ({kind}); allowed: {ok:?}",
                    p.name
                ));
            }
        }
    }
    out
}

#[test]
fn every_dependency_edge_is_one_the_map_allows() {
    let packages = workspace_packages();
    assert!(
        packages.iter().any(|p| p.name == "strata-server"),
        "the workspace was not read"
    );
    let v = violations(&packages);
    assert!(v.is_empty(), "dependency rules broken:\n{}", v.join("\n"));
}

#[test]
fn the_check_catches_a_forbidden_edge() {
    // The control plane linking the pipeline is what the map forbids; the
    // check must see it (a check that cannot fail proves nothing).
    let bad = vec![
        Package {
            name: "strata-server".into(),
            deps: vec![("strata-pipeline".into(), "normal".into())],
        },
        Package {
            name: "strata-core".into(),
            deps: vec![("strata-cli".into(), "dev".into())],
        },
        Package {
            name: "strata-new".into(),
            deps: vec![],
        },
        Package {
            name: "strata-sdk".into(),
            deps: vec![("strata-server".into(), "dev".into())],
        },
    ];
    let v = violations(&bad);
    assert_eq!(v.len(), 3, "{v:#?}");
    assert!(v[0].contains("strata-server may not depend on strata-pipeline"));
    assert!(v[1].contains("strata-core depends on strata-cli"));
    assert!(v[2].contains("strata-new is not on the crate map"));
}

#[test]
fn architecture_md_has_a_section_for_every_crate() {
    let text = std::fs::read_to_string(workspace_root().join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md is readable");
    for p in workspace_packages() {
        let heading = format!("### `crates/{}`", p.name);
        assert!(
            text.contains(&heading),
            "ARCHITECTURE.md lacks a section {heading:?}"
        );
    }
}

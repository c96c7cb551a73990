//! The language-neutral conformance suite (`testdata/assignment/`) through the
//! binary: `strata assign --contexts` must give every expected assignment.
//! It evaluates without a sticky lookup, so the suite's sticky cases (those
//! with a `sticky` list) are the engine's and the server's to pass, and it
//! prints no `unit_attr`; it prints the holdout exposures the cases list.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn strata_assign_passes_the_conformance_suite() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/assignment/cases");
    let tmp = tempfile::tempdir().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut checked = 0;
    let mut holdout_checked = 0;
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let config = tmp.path().join("snapshot.json");
        std::fs::write(&config, doc["snapshot"].to_string()).unwrap();
        // One process per surface, contexts in file order.
        let mut by_surface: BTreeMap<Option<String>, Vec<&Value>> = BTreeMap::new();
        for case in doc["cases"].as_array().unwrap() {
            if case.get("sticky").is_some() {
                continue;
            }
            by_surface
                .entry(case["surface"].as_str().map(str::to_owned))
                .or_default()
                .push(case);
        }
        for (surface, cases) in by_surface {
            let input = tmp.path().join("contexts.ndjson");
            let lines: Vec<String> = cases.iter().map(|c| c["context"].to_string()).collect();
            std::fs::write(&input, lines.join("\n")).unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
            cmd.args(["assign", "--config"])
                .arg(&config)
                .arg("--contexts")
                .arg(&input);
            if let Some(s) = &surface {
                cmd.args(["--surface", s]);
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let got: Vec<Value> = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(got.len(), cases.len(), "{name}");
            for (line, case) in got.iter().zip(&cases) {
                let mut expected = case["expected"].clone();
                for r in expected.as_object_mut().unwrap().values_mut() {
                    r.as_object_mut().unwrap().remove("unit_attr");
                }
                assert_eq!(
                    line["assignments"], expected,
                    "{name}: context {} surface {surface:?}",
                    case["context"]
                );
                if let Some(holdout) = case.get("expected_holdout") {
                    // An empty list is not printed.
                    let printed = line.get("holdout").cloned().unwrap_or(Value::Array(vec![]));
                    assert_eq!(
                        &printed, holdout,
                        "{name}: holdout of context {} surface {surface:?}",
                        case["context"]
                    );
                    holdout_checked += 1;
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 200, "only {checked} cases");
    assert!(
        holdout_checked >= 40,
        "only {holdout_checked} holdout cases"
    );
}

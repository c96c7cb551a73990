//! The language-neutral conformance suite under `testdata/assignment/`:
//! every implementation of the spec must pass it unchanged.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use strata_core::hash::{bucket, hash};
use strata_core::{Assignment, CompiledSnapshot, Context, StickyAssignment, StickyMap};

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/assignment")
}

/// The JSON files of a directory of the suite, as (file name, document),
/// sorted by name.
pub fn json_files(dir: &str) -> Vec<(String, Value)> {
    let mut files: Vec<(String, Value)> = std::fs::read_dir(suite().join(dir))
        .unwrap_or_else(|e| panic!("testdata/assignment/{dir}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), value)
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

#[derive(Deserialize)]
struct Scenario {
    snapshot: Value,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    context: Value,
    surface: Option<String>,
    expected: BTreeMap<String, Value>,
    /// Kept sticky assignments: the case evaluates with them as the lookup.
    #[serde(default)]
    sticky: Option<Vec<StickyAssignment>>,
    #[serde(default)]
    expected_sticky: Vec<StickyAssignment>,
    /// The holdout exposures (spec section 11), in the cases that list them.
    #[serde(default)]
    expected_holdout: Option<Vec<Value>>,
}

/// The results of `snapshot` for `ctx` in the suite's format, and the
/// sticky entries to store when the case has a sticky lookup.
fn results(
    snapshot: &CompiledSnapshot,
    with_fallback: &[&str],
    case: &Case,
    ctx: &Context,
) -> (BTreeMap<String, Value>, Vec<StickyAssignment>) {
    let surface = case.surface.as_deref();
    let (assignments, entries): (Vec<Assignment>, _) = match &case.sticky {
        None => (snapshot.evaluate(ctx, surface), Vec::new()),
        Some(kept) => {
            let mut map = StickyMap::new();
            for k in kept {
                map.insert(k.clone());
            }
            let e = snapshot.evaluate_sticky(ctx, surface, &map);
            let entries = e.new_entries.iter().map(|x| x.to_owned()).collect();
            (e.assignments, entries)
        }
    };
    let results = assignments
        .into_iter()
        .map(|a| {
            let mut decision = json!({"variant": a.variant, "assigned": a.assigned, "flag": a.flag,
                "log_exposure": a.log_exposure});
            if with_fallback.contains(&a.experiment) {
                decision["unit_attr"] = json!(a.unit_attr);
            }
            (a.experiment.to_owned(), decision)
        })
        .collect();
    (results, entries)
}

#[test]
fn scenarios_give_the_expected_assignments() {
    let files = json_files("cases");
    assert!(
        files.len() >= 15,
        "the suite has only {} scenarios",
        files.len()
    );
    let mut checked = 0;
    let mut holdout_checked = 0;
    let mut failures = Vec::new();
    for (name, doc) in files {
        let scenario: Scenario =
            serde_json::from_value(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
        let snapshot = CompiledSnapshot::from_json(&scenario.snapshot.to_string())
            .unwrap_or_else(|e| panic!("{name}: snapshot rejected: {e}"));
        let with_fallback: Vec<&str> = scenario.snapshot["experiments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e.get("fallback_unit").is_some_and(|f| !f.is_null()))
            .filter_map(|e| e["key"].as_str())
            .collect();
        for (i, case) in scenario.cases.iter().enumerate() {
            let ctx = Context::try_from(case.context.clone())
                .unwrap_or_else(|e| panic!("{name}[{i}]: {e}"));
            let (got, entries) = results(&snapshot, &with_fallback, case, &ctx);
            if let Some(expected) = &case.expected_holdout {
                let holdout: Vec<Value> = snapshot
                    .holdout_exposures(&ctx, case.surface.as_deref())
                    .iter()
                    .map(|x| json!({"unit_attr": x.unit_attr, "unit_id": x.unit_id, "variant": x.variant()}))
                    .collect();
                if &holdout != expected {
                    failures.push(format!(
                        "{name} case {i}: context {} surface {:?}\n  expected holdout {}\n  got              {}",
                        case.context,
                        case.surface,
                        json!(expected),
                        json!(holdout)
                    ));
                }
                holdout_checked += 1;
            }
            if got != case.expected || entries != case.expected_sticky {
                failures.push(format!(
                    "{name} case {i}: context {} surface {:?}\n  expected {} {}\n  got      {} {}",
                    case.context,
                    case.surface,
                    json!(case.expected),
                    json!(case.expected_sticky),
                    json!(got),
                    json!(entries)
                ));
            }
            checked += 1;
        }
    }
    assert!(checked >= 200, "only {checked} cases");
    assert!(
        holdout_checked >= 40,
        "only {holdout_checked} cases list holdout exposures"
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn invalid_snapshots_are_rejected_with_the_expected_kind() {
    let files = json_files("invalid");
    assert!(files.len() >= 20, "only {} invalid snapshots", files.len());
    for (name, doc) in files {
        let want = doc["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no error kind"));
        match CompiledSnapshot::from_json(&doc["snapshot"].to_string()) {
            Ok(_) => panic!("{name}: accepted, expected {want}"),
            Err(e) => assert_eq!(e.kind(), want, "{name}: {e}"),
        }
    }
}

#[test]
fn murmur3_known_answers() {
    let text = std::fs::read_to_string(suite().join("murmur3.json")).unwrap();
    let vectors: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(vectors.len() >= 60);
    for v in vectors {
        let (unit, salt) = (v["unit"].as_str().unwrap(), v["salt"].as_str().unwrap());
        assert_eq!(
            u64::from(hash(unit, salt)),
            v["hash"].as_u64().unwrap(),
            "{v}"
        );
        assert_eq!(
            u64::from(bucket(unit, salt)),
            v["bucket"].as_u64().unwrap(),
            "{v}"
        );
    }
}

/// The assignment consistency gate: the digest of the assignments of a
/// committed corpus under a reference snapshot. A failure here means every
/// running experiment would reshuffle; regenerate the golden file only as a
/// deliberate, reviewed spec change (see testdata/assignment/README.md).
#[test]
fn consistency_gate() {
    let dir = suite().join("consistency");
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let snapshot_text =
        std::fs::read_to_string(dir.join(golden["snapshot"].as_str().unwrap())).unwrap();
    let snapshot = CompiledSnapshot::from_json(&snapshot_text).unwrap();
    let ids = std::fs::read_to_string(dir.join(golden["ids"].as_str().unwrap())).unwrap();
    let ids: Vec<&str> = ids.split_terminator('\n').collect();
    assert_eq!(ids.len() as u64, golden["count"].as_u64().unwrap());
    assert!(ids.len() >= 100_000);
    let non_ascii = ids.iter().filter(|id| !id.is_ascii()).count();
    assert!(non_ascii * 4 >= ids.len(), "only {non_ascii} non-ascii ids");

    let mut canonical = String::with_capacity(ids.len() * 64);
    let mut assigned = 0usize;
    for id in &ids {
        let mut got = snapshot.evaluate(&Context::for_user(*id), None);
        got.sort_by(|a, b| a.experiment.as_bytes().cmp(b.experiment.as_bytes()));
        canonical.push_str(id);
        for a in &got {
            let log = u8::from(a.log_exposure);
            write!(
                canonical,
                "\t{}={}/{}/{log}",
                a.experiment, a.variant, a.assigned
            )
            .unwrap();
        }
        canonical.push('\n');
        assigned += got.len();
    }
    assert!(
        assigned > ids.len(),
        "the reference snapshot assigns too little to be a useful gate"
    );
    let samples: Vec<&str> = canonical.lines().take(20).collect();
    let want_samples: Vec<&str> = golden["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(samples, want_samples);
    let digest: String = Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        digest,
        golden["sha256"].as_str().unwrap(),
        "assignments changed"
    );
}

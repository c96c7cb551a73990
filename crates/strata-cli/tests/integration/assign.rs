//! `strata assign` end to end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/snapshot.json")
}

fn strata(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait")
}

fn lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// Asserts a failure with exactly one line on stderr, starting with `error: ` and containing `want`.
fn assert_error(out: &Output, want: &str) {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(want),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn one_unit_prints_its_assignments() {
    let config = example();
    let out = strata(
        &[
            "assign",
            "--config",
            config.to_str().unwrap(),
            "--unit",
            "user-42",
            "--attr",
            "country=US",
            "--attr",
            "platform=ios",
            "--surface",
            "checkout",
        ],
        None,
    );
    assert_eq!(
        lines(&out),
        vec![json!({"unit": "user-42", "assignments": {
            "exp_checkout_v2": {"variant": "treatment_b", "assigned": "treatment_b", "flag": "f_1a", "log_exposure": true},
            "exp_new_onboarding": {"variant": "short_flow", "assigned": "short_flow", "flag": "f_4d", "log_exposure": false},
        }, "holdout": [{"unit_attr": "user_id", "unit_id": "user-42", "variant": "rest"}]})]
    );
}

#[test]
fn attr_values_are_json_when_they_parse() {
    // account_age_days must be a number for `gte 30`, beta a boolean for exists;
    // an opted-out unit keeps its assignment but is served control.
    let config = example();
    let base = [
        "assign",
        "--config",
        config.to_str().unwrap(),
        "--surface",
        "checkout",
        "--unit",
        "user-42",
    ];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(&["--attr", "country=US", "--attr", "platform=ios"]);
        args.extend_from_slice(extra);
        lines(&strata(&args, None)).remove(0)
    };
    let young_beta = with(&["--attr", "beta=true", "--attr", "account_age_days=3"]);
    assert!(young_beta["assignments"].get("exp_checkout_v2").is_none());
    let old_beta = with(&["--attr", "beta=true", "--attr", "account_age_days=31"]);
    assert_eq!(
        old_beta["assignments"]["exp_checkout_v2"]["variant"],
        "treatment_b"
    );
    let as_string = with(&["--attr", "beta=true", "--attr", "account_age_days=\"31\""]);
    assert!(
        as_string["assignments"].get("exp_checkout_v2").is_none(),
        "a string never compares with a number"
    );
    let opted = with(&["--attr", "opted_out=true"]);
    assert_eq!(
        opted["assignments"]["exp_checkout_v2"],
        json!({"variant": "control", "assigned": "treatment_b", "flag": "f_1a", "log_exposure": true})
    );
}

#[test]
fn units_file_streams_one_line_per_input_line_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..500)
        .map(|i| format!("u-{i}"))
        .chain(["", "日本語", "a:b"].map(String::from))
        .collect();
    let path = dir.path().join("ids.txt");
    std::fs::write(&path, ids.join("\r\n") + "\n").unwrap();
    let config = example();
    let out = lines(&strata(
        &[
            "assign",
            "--config",
            config.to_str().unwrap(),
            "--units",
            path.to_str().unwrap(),
        ],
        None,
    ));
    assert_eq!(out.len(), ids.len());
    for (line, id) in out.iter().zip(&ids) {
        assert_eq!(line["unit"], json!(id));
    }
    // The empty id identifies no unit; everyone else gets the concluded rollout
    // unless held out (2 %).
    assert_eq!(out[500]["assignments"], json!({}));
    let with_rollout = out
        .iter()
        .filter(|l| l["assignments"].get("exp_new_onboarding").is_some())
        .count();
    assert!((480..=502).contains(&with_rollout), "{with_rollout}");
    // Reading the same ids from stdin gives the same bytes.
    let from_stdin = strata(
        &[
            "assign",
            "--config",
            config.to_str().unwrap(),
            "--units",
            "-",
        ],
        Some(&ids.join("\n")),
    );
    assert_eq!(
        from_stdin.stdout,
        strata(
            &[
                "assign",
                "--config",
                config.to_str().unwrap(),
                "--units",
                path.to_str().unwrap()
            ],
            None
        )
        .stdout
    );
}

#[test]
fn contexts_file_uses_each_context() {
    let config = example();
    let input = [
        json!({"user_id": "user-42", "country": "US", "platform": "ios"}),
        json!({"device_id": "dev-1", "app_version": "4.3.0"}),
        json!({"user_id": 42, "opted_out": true}),
    ]
    .map(|v| v.to_string())
    .join("\n");
    let out = lines(&strata(
        &[
            "assign",
            "--config",
            config.to_str().unwrap(),
            "--contexts",
            "-",
            "--surface",
            "search",
        ],
        Some(&input),
    ));
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["unit"], "user-42");
    assert_eq!(out[1]["unit"], Value::Null);
    assert!(
        out[1]["assignments"].get("exp_search_ranking").is_some(),
        "{}",
        out[1]
    );
    assert_eq!(out[2]["unit"], 42);
}

#[test]
fn bad_input_is_one_clear_line_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let config = example();
    let config = config.to_str().unwrap();
    let missing = dir.path().join("missing.json");
    assert_error(
        &strata(
            &[
                "assign",
                "--config",
                missing.to_str().unwrap(),
                "--unit",
                "u",
            ],
            None,
        ),
        "cannot read config",
    );
    let not_json = dir.path().join("bad.json");
    std::fs::write(&not_json, "{\"version\": 1,\n\"experiments\": [}").unwrap();
    assert_error(
        &strata(
            &[
                "assign",
                "--config",
                not_json.to_str().unwrap(),
                "--unit",
                "u",
            ],
            None,
        ),
        "bad.json: invalid snapshot json at line 2, column 17",
    );
    let invalid = dir.path().join("invalid.json");
    std::fs::write(
        &invalid,
        json!({"version": 1, "experiments": [{"key": "a", "flag": "f", "salt": "s", "status": "running",
            "variants": [{"key": "c", "weight": 0}]}]})
        .to_string(),
    )
    .unwrap();
    assert_error(
        &strata(
            &[
                "assign",
                "--config",
                invalid.to_str().unwrap(),
                "--unit",
                "u",
            ],
            None,
        ),
        "invalid.json: experiment \"a\": field variants: total weight is zero",
    );
    assert_error(
        &strata(
            &[
                "assign", "--config", config, "--unit", "u", "--attr", "country",
            ],
            None,
        ),
        "expected key=value",
    );
    assert_error(
        &strata(
            &["assign", "--config", config, "--contexts", "-"],
            Some("{\"user_id\": \"a\"}\n{oops}\n"),
        ),
        "-:2: invalid json",
    );
    assert_error(
        &strata(
            &["assign", "--config", config, "--contexts", "-"],
            Some("[1]\n"),
        ),
        "-:1: a context must be a json object",
    );
    let missing_units = dir.path().join("nope.txt");
    assert_error(
        &strata(
            &[
                "assign",
                "--config",
                config,
                "--units",
                missing_units.to_str().unwrap(),
            ],
            None,
        ),
        "cannot open",
    );
    let binary = dir.path().join("ids.bin");
    std::fs::write(&binary, b"ok\n\xff\xfe\n").unwrap();
    assert_error(
        &strata(
            &[
                "assign",
                "--config",
                config,
                "--units",
                binary.to_str().unwrap(),
            ],
            None,
        ),
        "ids.bin:2: unit id is not valid utf-8",
    );
    // No input selected: clap's usage error, exit code 2.
    let out = strata(&["assign", "--config", config], None);
    assert_eq!(out.status.code(), Some(2));
}

//! `tempest run` and `sweep` with `--mode`: the full-stack mode as scripts call it. A seed
//! gives the same digest in every process (and the library's in-process world agrees), a
//! sweep passes its checks and writes its summary, and bad modes, unsupported scenarios and
//! fast-only flags exit 2 naming what is wrong.

mod common;

use common::{stderr, stdout, tempest, Scratch};
use std::process::Output;
use tempest_runtime::fullstack::{self, workload, Options};

/// The digest from the `digest:` line of a full-stack `tempest run`.
fn digest(output: &Output) -> String {
    let text = stdout(output);
    text.lines()
        .find_map(|line| line.strip_prefix("outcome digest: "))
        .unwrap_or_else(|| panic!("no digest line in:\n{text}"))
        .to_owned()
}

#[test]
fn same_seed_gives_same_full_stack_digest_across_processes() {
    let dir = Scratch::new("full-stack-digest");
    // Seed 7 of steps crashes the server twice under latency: the case that once depended on
    // how many tasks the process had spawned before.
    for (scenario, seed) in [("steps", 7_u64), ("hello_llm", 0)] {
        let seed_text = seed.to_string();
        let args = ["run", scenario, "--seed", &seed_text, "--mode", "full-stack"];
        let first = tempest(&dir, &args);
        let second = tempest(&dir, &args);
        assert_eq!(first.status.code(), Some(0), "{scenario} seed {seed}: {}{}", stdout(&first), stderr(&first));
        assert_eq!(digest(&first), digest(&second), "{scenario} seed {seed}");
        let workload = match scenario {
            "steps" => workload::steps(seed),
            _ => workload::from_scenario(tempest_scenarios::find(scenario).expect("built in").into(), seed),
        };
        let in_process = fullstack::run(&workload, &Options::seeded(seed));
        assert_eq!(digest(&first), in_process.digest, "{scenario} seed {seed}");
    }
}

#[test]
fn full_stack_sweep_passes_and_writes_its_summary() {
    let dir = Scratch::new("full-stack-sweep");
    let json = dir.path("summary.json");
    let json_arg = json.display().to_string();
    let output = tempest(
        &dir,
        &[
            "sweep",
            "hello_llm",
            "--seeds",
            "4",
            "--seed-base",
            "a1",
            "--mode",
            "full-stack",
            "--jobs",
            "2",
            "--json",
            &json_arg,
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}{}", stdout(&output), stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("full-stack sweep of hello_llm over seeds 0xa1"), "{text}");
    assert!(text.contains("seeds per second:"), "{text}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("summary written")).expect("summary is JSON");
    assert_eq!(summary["mode"], "full-stack");
    assert_eq!(summary["seeds"], 4);
    assert_eq!(summary["passed"], 4);
    assert_eq!(summary["failed"], serde_json::json!([]));
}

#[test]
fn bad_mode_exits_2_naming_the_value_and_the_modes() {
    let dir = Scratch::new("full-stack-bad-mode");
    for args in [
        &["run", "hello_llm", "--seed", "1", "--mode", "bogus"][..],
        &["sweep", "--all", "--seeds", "2", "--mode", "bogus"][..],
    ] {
        let output = tempest(&dir, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let message = stderr(&output);
        for expected in ["bogus", "fast", "full-stack"] {
            assert!(message.contains(expected), "{args:?}: {message}");
        }
    }
}

#[test]
fn unsupported_scenarios_and_fast_only_flags_exit_2_naming_them() {
    let dir = Scratch::new("full-stack-unsupported");
    let cases: [(&[&str], &[&str]); 4] = [
        (&["run", "long_sleep", "--seed", "1", "--mode", "full-stack"], &["long_sleep", "steps", "hello_llm"]),
        (&["sweep", "human_approval", "--seeds", "2", "--mode", "full-stack"], &["human_approval", "not supported"]),
        (&["run", "no_such", "--seed", "1", "--mode", "full-stack"], &["no_such", "unknown"]),
        (&["run", "steps", "--seed", "1", "--mode", "full-stack", "--plan", "p.json"], &["--plan"]),
    ];
    for (args, expected) in cases {
        let output = tempest(&dir, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        let message = stderr(&output);
        for word in expected {
            assert!(message.contains(word), "{args:?}: {message}");
        }
    }
}

//! What the binary's end-to-end tests share: a scratch directory per test, running the real
//! `tempest` in it, reading what it printed, and the rule for external tools.
//!
//! Owns only test plumbing; it asserts nothing about Tempest itself.

// Each test binary compiles this module and uses only a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// A directory of its own for each test, so files the binary writes land nowhere else;
/// removed when the test ends.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tempest-cli-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the temp dir is writable");
        Scratch(dir)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("the scratch dir is writable");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn tempest(dir: &Scratch, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tempest")).args(args).current_dir(&dir.0).output().expect("tempest runs")
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Whether external `tool` can be used. Without it a test fails under
/// `TEMPEST_REQUIRE_TOOLS=1` (CI installs it), and otherwise says loudly that the checks
/// needing it are skipped, then runs the rest.
pub(crate) fn tool(tool: &str) -> bool {
    // Found on PATH, as the shell would: tools disagree on how to print a version
    // (`tmux -V`, `chromium --version`), so none is run just to look for it.
    let found =
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    if !found {
        assert!(
            std::env::var("TEMPEST_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{tool} is not installed, and TEMPEST_REQUIRE_TOOLS=1 requires it (apt-get install -y {tool})"
        );
        // Straight to the stderr stream, past the test harness's capture of `eprintln!`, so
        // the skip shows even when the test passes.
        use std::io::Write as _;
        let _ =
            writeln!(std::io::stderr().lock(), "skipped: {tool} not installed; the checks that need it did not run");
    }
    found
}

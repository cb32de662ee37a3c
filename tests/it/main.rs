//! Cross-crate tests: one test binary, so the suite links once.

mod checks_can_fail;
mod coverage;
mod determinism;
mod golden;
mod histories;
mod properties;
mod tidy;

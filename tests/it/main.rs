//! Cross-crate tests: one test binary, so the suite links once.

mod properties;
mod tidy;

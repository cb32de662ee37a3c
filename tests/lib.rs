//! Cross-crate tests live in `it/`. This library only carries the README's example as a
//! doc-test, so the example in the README cannot drift from the real API.

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

//! Engine tests that cross modules: one scripted host, history snapshots per feature.
mod smoke;

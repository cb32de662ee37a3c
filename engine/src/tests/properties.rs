//! Property tests: placeholder while the other areas are written.

//! trybuild UI tests of the dbmetrics macros: see `tests/ui.rs` and the cases in `ui/`.
#![forbid(unsafe_code)]

//! Compiler-message tests of stakplane's macros; the cases are in
//! `tests/ui/`, run by `tests/ask_diagnostic.rs`. Nothing to link here.

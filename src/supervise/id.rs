//! [`ChildId`]: a child's id within its supervisor.

use std::borrow::Borrow;
use std::fmt;
use std::rc::Rc;

/// A child's id within its supervisor (OTP's child id).
///
/// Cheap to clone (a shared string). Dynamic children of a
/// `simple_one_for_one` supervisor get `"<template id>.<n>"`, `n` counting
/// from 1 per supervisor.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildId(Rc<str>);

impl ChildId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ChildId {
    fn from(s: &str) -> Self {
        ChildId(Rc::from(s))
    }
}

impl From<String> for ChildId {
    fn from(s: String) -> Self {
        ChildId(Rc::from(s))
    }
}

impl Borrow<str> for ChildId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

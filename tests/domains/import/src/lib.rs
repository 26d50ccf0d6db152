//! The import example's tooling, kept with its domain: what only the import example knows (how
//! to make a request, what a correct outcome is, its own faults) lives here, on top of the
//! generic local runner and test harness.

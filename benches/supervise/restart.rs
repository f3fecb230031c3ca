//! Group `restart_one_for_one` (being written).

pub fn restart_one_for_one(_c: &mut criterion::Criterion) {}

use dbmetrics::{DatabaseMetrics, track_query};

#[track_query(select, "content", metrics = metrics)]
const fn answer(metrics: &DatabaseMetrics) -> u8 {
    42
}

fn main() {}

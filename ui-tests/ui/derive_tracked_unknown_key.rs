use dbmetrics::{DatabaseMetrics, TrackedRepository};

#[derive(TrackedRepository)]
#[tracked(tabel = "content")]
struct ContentRepository {
    metrics: DatabaseMetrics,
}

fn main() {}

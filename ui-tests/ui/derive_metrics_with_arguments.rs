use dbmetrics::{DatabaseMetrics, TrackedRepository};

#[derive(TrackedRepository)]
struct ContentRepository {
    #[metrics(primary)]
    metrics: DatabaseMetrics,
}

fn main() {}

use dbmetrics::{DatabaseMetrics, TrackedRepository};

#[derive(TrackedRepository)]
struct ContentRepository {
    primary: DatabaseMetrics,
    replica: DatabaseMetrics,
}

fn main() {}

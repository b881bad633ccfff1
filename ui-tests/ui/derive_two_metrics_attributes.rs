use dbmetrics::{DatabaseMetrics, TrackedRepository};

#[derive(TrackedRepository)]
struct ContentRepository {
    #[metrics]
    primary: DatabaseMetrics,
    #[metrics]
    replica: DatabaseMetrics,
}

fn main() {}

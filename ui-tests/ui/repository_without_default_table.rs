use dbmetrics::{DatabaseMetrics, TrackedRepository, track_query};

#[derive(TrackedRepository)]
struct ContentRepository {
    metrics: DatabaseMetrics,
}

impl ContentRepository {
    #[track_query(select)]
    async fn count(&self) -> Result<i64, std::io::Error> {
        Ok(1)
    }
}

fn main() {
    let _ = ContentRepository::count;
}

use dbmetrics::{DatabaseMetrics, TrackedRepository, track_query};

#[derive(TrackedRepository)]
#[tracked(table = "users")]
struct UserRepository {
    #[metrics]
    primary: DatabaseMetrics,
    #[metrics]
    replica: DatabaseMetrics,
}

impl UserRepository {
    #[track_query(select)]
    async fn count(&self) -> Result<i64, std::io::Error> {
        Ok(1)
    }
}

fn main() {}

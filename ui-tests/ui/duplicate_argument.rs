use dbmetrics::{DatabaseMetrics, track_query};

#[track_query(select, "content", table = "other", metrics = metrics)]
async fn count(metrics: &DatabaseMetrics) -> Result<i64, std::io::Error> {
    Ok(1)
}

fn main() {}

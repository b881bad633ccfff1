use dbmetrics::{DatabaseMetrics, track_query};

#[track_query(table = "content", metrics = metrics)]
async fn count(metrics: &DatabaseMetrics) -> Result<i64, std::io::Error> {
    Ok(1)
}

fn main() {}

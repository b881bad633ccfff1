use dbmetrics::{DatabaseMetrics, track_query};

#[track_query(select, "content", metrics = metrics, ok_if = "not_found")]
async fn find(metrics: &DatabaseMetrics) -> Result<Option<i64>, std::io::Error> {
    Ok(None)
}

fn main() {}

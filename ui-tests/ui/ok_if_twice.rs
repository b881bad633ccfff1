use dbmetrics::{DatabaseMetrics, track_query};

fn is_missing(r: &Result<Option<i64>, std::io::Error>) -> bool {
    matches!(r, Ok(None))
}

#[track_query(select, "content", metrics = metrics, ok_if = is_missing, ok_if = |r| r.is_err())]
async fn find(metrics: &DatabaseMetrics) -> Result<Option<i64>, std::io::Error> {
    Ok(None)
}

fn main() {}

use dbmetrics::{DatabaseMetrics, track_transaction};

#[track_transaction("archive", metrics = metrics, error_if = |r: &Result<u64, std::io::Error>| r.as_ref().map_or(0, |n| *n))]
async fn archive(metrics: &DatabaseMetrics) -> Result<u64, std::io::Error> {
    Ok(0)
}

fn main() {}

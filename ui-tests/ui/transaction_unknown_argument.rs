use dbmetrics::{DatabaseMetrics, track_transaction};

#[track_transaction("archive_content", table = "content", metrics = metrics)]
async fn archive(metrics: &DatabaseMetrics) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}

use dbmetrics::{DatabaseMetrics, track_query};

#[track_query(op = "truncate", table = "content", metrics = metrics)]
async fn wipe(metrics: &DatabaseMetrics) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}

use dbmetrics::{DatabaseMetrics, track_query};

#[track_query(select, "content", metrics = metrics)]
async fn count(metrics: &DatabaseMetrics) -> Result<i64, std::io::Error> {
    let n = ;
    Ok(n)
}

fn main() {}

use dbmetrics::{DatabaseMetrics, track_query};

#[track_query(select, "content", metrics = metrics)]
fn count(metrics: &DatabaseMetrics) -> Result<i64, std::io::Error> {
    Ok("not a number")
}

fn main() {}

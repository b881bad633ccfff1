use dbmetrics::{DatabaseMetrics, track_query};

// the predicate takes `&` the returned value: here a `Result`, not an `Option`
#[track_query(select, "content", metrics = metrics, ok_if = Option::is_none)]
async fn find(metrics: &DatabaseMetrics) -> Result<Option<i64>, std::io::Error> {
    Ok(None)
}

fn main() {}

use dbmetrics::track_query;

struct NotMetrics;

#[track_query(select, "content", metrics = metrics)]
async fn count(metrics: &NotMetrics) -> Result<i64, std::io::Error> {
    Ok(1)
}

fn main() {}

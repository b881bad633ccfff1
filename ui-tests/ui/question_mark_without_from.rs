use dbmetrics::{DatabaseMetrics, track_query};

#[derive(Debug)]
struct RepoError;

#[track_query(select, "content", metrics = metrics)]
async fn count(
    metrics: &DatabaseMetrics,
    client: &tokio_postgres::Client,
) -> Result<i64, RepoError> {
    let row = client.query_one("SELECT 1::INT8", &[]).await?;
    Ok(row.get(0))
}

fn main() {}

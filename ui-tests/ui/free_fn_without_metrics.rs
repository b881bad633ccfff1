use dbmetrics::track_query;

#[track_query(select, "content")]
async fn count(client: &tokio_postgres::Client) -> Result<i64, tokio_postgres::Error> {
    let row = client.query_one("SELECT count(*) FROM content", &[]).await?;
    Ok(row.get(0))
}

fn main() {}

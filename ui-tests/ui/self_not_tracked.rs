use dbmetrics::track_query;

struct ContentRepository {
    pool: deadpool_postgres::Pool,
}

impl ContentRepository {
    #[track_query(select, "content")]
    async fn count(&self) -> Result<i64, deadpool_postgres::PoolError> {
        let _client = self.pool.get().await?;
        Ok(1)
    }
}

fn main() {}

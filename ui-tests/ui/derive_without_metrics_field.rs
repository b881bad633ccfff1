use dbmetrics::TrackedRepository;

#[derive(TrackedRepository)]
struct ContentRepository {
    pool: deadpool_postgres::Pool,
}

fn main() {}

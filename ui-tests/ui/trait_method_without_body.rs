use dbmetrics::track_query;

trait Repository {
    #[track_query(select, "content")]
    fn get(&self, id: i64) -> Result<String, std::io::Error>;
}

fn main() {}

use dbmetrics::track_query;

#[track_query(select, "content")]
struct ContentRepository;

fn main() {}

use dbmetrics::TrackedRepository;

#[derive(TrackedRepository)]
struct ContentRepository {
    #[metrics]
    metrics: String,
}

fn main() {}

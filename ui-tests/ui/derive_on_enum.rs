use dbmetrics::TrackedRepository;

#[derive(TrackedRepository)]
enum Repository {
    A,
    B,
}

fn main() {}

use dbmetrics::track_transaction;

#[track_transaction("archive_content")]
async fn archive() -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}

//! The README's code, compiled. Its quick start is `examples/src/bin/quickstart.rs`, verbatim:
//! CI compiles (and the demo check runs) the file, and a test keeps the README's copy equal to
//! it. Its sqlx and bb8 blocks (Drivers) are the code between the `README:` markers below,
//! compiled here, run against PostgreSQL, and kept equal to the README's copies.

#[test]
fn the_quick_start_in_the_readme_is_the_example_file() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/src/bin/quickstart.rs")).unwrap();
    let start = readme
        .find("```rust,ignore\n//! The README's quick start")
        .expect("the README has the quick start block")
        + "```rust,ignore\n".len();
    let end = start + readme[start..].find("```\n").expect("the block ends");
    assert_eq!(
        &readme[start..end],
        example,
        "README.md's quick start differs from examples/src/bin/quickstart.rs: copy the file into it"
    );
}

/// The text between `// README: {name} begin` and `// README: {name} end` in this file, without
/// the indentation of its first line.
fn snippet(name: &str) -> String {
    let this = include_str!("readme.rs");
    let begin = format!("// README: {name} begin\n");
    let start = this.find(&begin).expect("the begin marker") + begin.len();
    let end = start
        + this[start..]
            .find(&format!("// README: {name} end"))
            .expect("the end marker");
    let lines: Vec<&str> = this[start..end].lines().collect();
    let indent = lines[0].len() - lines[0].trim_start().len();
    let mut text = String::new();
    for line in &lines[..lines.len() - 1] {
        text.push_str(line.get(indent..).unwrap_or(""));
        text.push('\n');
    }
    text
}

#[test]
fn the_driver_snippets_in_the_readme_are_compiled_here() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for name in [
        "sqlx repository",
        "sqlx setup",
        "bb8 repository",
        "bb8 setup",
    ] {
        let block = format!("```rust,ignore\n{}```\n", snippet(name));
        assert!(
            readme.contains(&block),
            "README.md has no block equal to the snippet {name:?} of tests/tests/readme.rs:\n{block}"
        );
    }
}

/// The notes table both snippets read (the quick start's).
async fn notes_table() {
    let client = dbmetrics_tests::database().pool(1).get().await.unwrap();
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS notes (id BIGINT PRIMARY KEY, body TEXT)")
        .await
        .unwrap();
}

/// A `postgres://` URL for the test database.
fn url(config: &tokio_postgres::Config) -> String {
    let encode = |s: &[u8]| -> String {
        s.iter()
            .map(|&b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let user = encode(config.get_user().unwrap_or("postgres").as_bytes());
    let password = config
        .get_password()
        .map(|p| format!(":{}", encode(p)))
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("postgres");
    match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => {
            format!("postgres://{user}{password}@{host}:{port}/{db}")
        }
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(dir)) => format!(
            "postgres://{user}{password}@localhost:{port}/{db}?host={}",
            encode(dir.to_string_lossy().as_bytes())
        ),
        None => format!("postgres://{user}{password}@localhost:{port}/{db}"),
    }
}

mod sqlx_readme {
    // README: sqlx repository begin
    use dbmetrics::{DatabaseMetrics, TrackedPool, TrackedRepository, track_query};

    #[derive(Clone, TrackedRepository)]
    #[tracked(table = "notes")]
    struct NoteRepository {
        pool: TrackedPool<sqlx::PgPool>, // not the default (deadpool's): name the pool type
        #[metrics]
        metrics: DatabaseMetrics,
    }

    impl NoteRepository {
        #[track_query(select)]
        async fn body(&self, id: i64) -> Result<Option<String>, sqlx::Error> {
            sqlx::query_scalar("SELECT body FROM notes WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool) // &TrackedPool<PgPool> is a sqlx::Executor
                .await
        }
    }
    // README: sqlx repository end

    pub(super) async fn run(
        url: String,
    ) -> Result<dbmetrics::DatabaseHealthChecker, Box<dyn std::error::Error>> {
        // README: sqlx setup begin
        use dbmetrics::{
            DatabaseHealthChecker, create_infrastructure_enhancer, setup_database_monitoring,
        };

        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await?;
        let metrics = setup_database_monitoring(&pool, "content_service")?;
        let tracked =
            create_infrastructure_enhancer(metrics.clone()).enhance_pool(pool.clone(), "default");

        let mut conn = tracked.get().await?; // counted, wait and use timed
        sqlx::query("SELECT 1").execute(&mut *conn).await?; // derefs to PgConnection
        drop(conn);
        sqlx::query("SELECT 1").execute(&tracked).await?; // &TrackedPool<PgPool> is an Executor
        let rows = sqlx::query("SELECT 1").fetch_all(&tracked).await?;
        assert_eq!(rows.len(), 1);

        let repo = NoteRepository {
            pool: tracked,
            metrics,
        };
        let body = repo.body(-1).await?; // recorded: select on notes
        assert_eq!(body, None);

        let checker = DatabaseHealthChecker::new(pool.clone(), "content_service"); // same JSON shapes
        // README: sqlx setup end
        Ok(checker)
    }
}

mod bb8_readme {
    // README: bb8 repository begin
    use bb8_postgres::PostgresConnectionManager;
    use dbmetrics::{DatabaseMetrics, TrackedPool, TrackedRepository, track_query};
    use tokio_postgres::NoTls;

    #[derive(Debug, thiserror::Error)]
    enum RepoError {
        #[error("no connection")]
        Pool(#[from] bb8::RunError<tokio_postgres::Error>),
        #[error("database error")]
        Db(#[from] tokio_postgres::Error),
    }

    #[derive(Clone, TrackedRepository)]
    #[tracked(table = "notes")]
    struct NoteRepository {
        pool: TrackedPool<bb8::Pool<PostgresConnectionManager<NoTls>>>, // not the default: name it
        #[metrics]
        metrics: DatabaseMetrics,
    }

    impl NoteRepository {
        #[track_query(select)]
        async fn body(&self, id: i64) -> Result<Option<String>, RepoError> {
            let client = self.pool.get().await?; // derefs to tokio_postgres::Client
            let row = client
                .query_opt("SELECT body FROM notes WHERE id = $1", &[&id])
                .await?;
            Ok(row.map(|row| row.get(0)))
        }
    }
    // README: bb8 repository end

    pub(super) async fn run(
        config: tokio_postgres::Config,
    ) -> Result<dbmetrics::DatabaseHealthChecker, Box<dyn std::error::Error>> {
        // README: bb8 setup begin
        use dbmetrics::{
            DatabaseHealthChecker, create_infrastructure_enhancer, setup_database_monitoring,
        };

        let manager = PostgresConnectionManager::new(config, NoTls); // config: tokio_postgres::Config
        let pool = bb8::Pool::builder().max_size(8).build(manager).await?;
        let metrics = setup_database_monitoring(&pool, "content_service")?;
        let tracked =
            create_infrastructure_enhancer(metrics.clone()).enhance_pool(pool.clone(), "default");

        let client = tracked.get().await?; // counted and timed; derefs to tokio_postgres::Client
        client.query("SELECT 1", &[]).await?;
        drop(client);

        let repo = NoteRepository {
            pool: tracked,
            metrics,
        };
        let body = repo.body(-1).await?; // recorded: select on notes
        assert_eq!(body, None);

        let checker = DatabaseHealthChecker::new(pool.clone(), "content_service");
        // README: bb8 setup end
        Ok(checker)
    }
}

/// The README's sqlx and bb8 snippets run against PostgreSQL, one after the other (both are
/// the service `content_service`, pool `default`): each records its checkouts and its select.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_snippets_of_the_readme_run() {
    dbmetrics_tests::prometheus();
    notes_table().await;
    let count = |suffix: &str, labels: &[(&str, &str)]| {
        dbmetrics_tests::scrape().value(&format!("content_service_database_{suffix}"), labels)
    };
    let selects = [
        ("operation", "select"),
        ("table", "notes"),
        ("result", "success"),
    ];
    let config = dbmetrics_tests::database().config.clone();

    let checker = sqlx_readme::run(url(&config)).await.unwrap();
    let summary = checker.get_health_summary().await;
    assert!(summary.connectivity, "{summary:?}");
    assert_eq!(summary.pool_max_size, 8);
    drop(checker);
    // get, two executor queries, the repository's query: four checkouts
    assert_eq!(
        count("connections_acquired_total", &[("pool", "default")]),
        4.0
    );
    assert_eq!(count("query_duration_seconds_count", &selects), 1.0);

    let checker = bb8_readme::run(config).await.unwrap();
    let summary = checker.get_health_summary().await;
    assert!(summary.connectivity, "{summary:?}");
    assert_eq!(summary.pool_max_size, 8);
    // get, the repository's get: two more
    assert_eq!(
        count("connections_acquired_total", &[("pool", "default")]),
        6.0
    );
    assert_eq!(count("query_duration_seconds_count", &selects), 2.0);
}
